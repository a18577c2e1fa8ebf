/* cmd-push.c — `stasis push` and `stasis pull`: snapshots between a local
 * store and an OCI registry (store/oci.h does the work). */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "store/oci.h"

static json_t *copy_json(const struct oci_copy_stats *st, const char *ref, const char *tag, bool push,
                         const struct oci_stats *os)
{
        char ds[DIGEST_STR_LEN + 1];

        return json_pack("{s:s, s:s, s:s?, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "digest",
                         digest_str(&st->manifest, ds), "reference", ref, "tag", tag, "blobs_total",
                         (json_int_t)st->blobs_total, push ? "blobs_uploaded" : "blobs_downloaded",
                         (json_int_t)st->blobs_copied, "blobs_skipped", (json_int_t)st->blobs_skipped,
                         "blobs_mounted", (json_int_t)st->blobs_mounted, "bytes_total",
                         (json_int_t)st->bytes_total, push ? "bytes_uploaded" : "bytes_downloaded",
                         (json_int_t)st->bytes_copied, "requests", (json_int_t)os->requests, "retries",
                         (json_int_t)os->retries, "wall_ns", (json_int_t)st->wall_ns);
}

static int open_registry(const struct oci_ref *ref, bool push, const char *mount_from, struct backend **ret)
{
        struct registry_opts o = { .push = push, .mount_from = mount_from };

        if (registry_opts_from_env(&o) < 0)
                return -EINVAL;
        return backend_oci_open(ref->host, ref->repo, &o, ret); /* logs */
}

static int parse_jobs(const char *s, unsigned *ret)
{
        uint64_t v;

        if (cli_parse_u64(s, &v) < 0 || v == 0 || v > 64)
                return -EINVAL;
        *ret = (unsigned)v;
        return 0;
}

int cmd_push(const struct cli_command *cmd, int argc, char **argv)
{
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                { "json", no_argument, NULL, OPT_JSON },
                { "jobs", required_argument, NULL, OPT_JOBS },
                { "mount-from", required_argument, NULL, OPT_MOUNT_FROM },
                {},
        };
        _cleanup_(backend_freep) struct backend *src = NULL, *dst = NULL;
        _cleanup_(json_decrefp) json_t *out = NULL;
        const char *store = NULL, *mount_from = NULL;
        struct oci_copy_stats st = {};
        struct oci_stats os = {};
        struct oci_ref ref;
        struct digest d;
        unsigned jobs = 0;
        bool json = false;
        char ctx[512], what[512], ds[DIGEST_STR_LEN + 1], a[32], b[32];
        int c, r;

        while ((c = getopt_long(argc, argv, CLI_SHORTOPTS, options, NULL)) >= 0) {
                switch (c) {
                case OPT_STORE:
                        store = optarg;
                        break;
                case OPT_JSON:
                        json = true;
                        break;
                case OPT_JOBS:
                        if (parse_jobs(optarg, &jobs) < 0)
                                return cli_usage(cmd, "--jobs %s: expected 1 to 64", optarg);
                        break;
                case OPT_MOUNT_FROM:
                        mount_from = optarg;
                        break;
                default:
                        r = cli_common_option(cmd, c, argv);
                        if (r != CLI_CONTINUE)
                                return r;
                }
        }
        r = cli_nargs(cmd, argc, argv, 2, 2);
        if (r)
                return r;
        if (oci_ref_parse(argv[optind + 1], &ref) < 0 || ref.has_digest || !ref.tag[0])
                return cli_usage(cmd, "%s: expected oci://HOST[:PORT]/REPO:TAG", argv[optind + 1]);
        snprintf(what, sizeof what, "push %s", argv[optind + 1]);
        cli_set_context(ctx, what);
        if (cli_open_store(store, false, &src) < 0)
                return EXIT_FAIL;
        if (cli_resolve(src, argv[optind], &d) < 0)
                return EXIT_FAIL;
        if (open_registry(&ref, true, mount_from, &dst) < 0)
                return EXIT_FAIL;
        r = oci_push(src, &d, dst, ref.tag, jobs, &st);
        if (r < 0)
                return EXIT_FAIL; /* logged */
        backend_oci_stats(dst, &os);
        if (json) {
                out = copy_json(&st, argv[optind + 1], ref.tag, true, &os);
                if (!out || cli_print_json(out) < 0)
                        return EXIT_FAIL;
                return EXIT_OK;
        }
        printf("%s\n", digest_str(&st.manifest, ds));
        if (fflush(stdout) == EOF)
                return log_error_errno(errno, "write stdout: %m"), EXIT_FAIL;
        log_info("%" PRIu64 " of %" PRIu64 " blobs uploaded (%s of %s), %" PRIu64 " skipped, %" PRIu64 " mounted",
                 st.blobs_copied, st.blobs_total, format_bytes(st.bytes_copied, a), format_bytes(st.bytes_total, b),
                 st.blobs_skipped, st.blobs_mounted);
        return EXIT_OK;
}

int cmd_pull(const struct cli_command *cmd, int argc, char **argv)
{
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                { "json", no_argument, NULL, OPT_JSON },
                { "jobs", required_argument, NULL, OPT_JOBS },
                { "tag", required_argument, NULL, OPT_TAG },
                {},
        };
        _cleanup_(backend_freep) struct backend *src = NULL, *dst = NULL;
        _cleanup_(json_decrefp) json_t *out = NULL;
        const char *store = NULL, *tag = NULL;
        struct oci_copy_stats st = {};
        struct oci_stats os = {};
        struct oci_ref ref;
        unsigned jobs = 0;
        bool json = false;
        char ctx[512], what[512], ds[DIGEST_STR_LEN + 1], rs[DIGEST_STR_LEN + 1], a[32];
        int c, r;

        while ((c = getopt_long(argc, argv, CLI_SHORTOPTS, options, NULL)) >= 0) {
                switch (c) {
                case OPT_STORE:
                        store = optarg;
                        break;
                case OPT_JSON:
                        json = true;
                        break;
                case OPT_JOBS:
                        if (parse_jobs(optarg, &jobs) < 0)
                                return cli_usage(cmd, "--jobs %s: expected 1 to 64", optarg);
                        break;
                case OPT_TAG:
                        r = cli_opt_tag(cmd, optarg, &tag);
                        if (r)
                                return r;
                        break;
                default:
                        r = cli_common_option(cmd, c, argv);
                        if (r != CLI_CONTINUE)
                                return r;
                }
        }
        r = cli_nargs(cmd, argc, argv, 1, 1);
        if (r)
                return r;
        if (oci_ref_parse(argv[optind], &ref) < 0 || (!ref.has_digest && !ref.tag[0]))
                return cli_usage(cmd, "%s: expected oci://HOST[:PORT]/REPO:TAG or oci://HOST[:PORT]/REPO@sha256:HEX",
                                 argv[optind]);
        if (!tag && ref.tag[0] && !ref.has_digest)
                tag = ref.tag;
        snprintf(what, sizeof what, "pull %s", argv[optind]);
        cli_set_context(ctx, what);
        if (open_registry(&ref, false, NULL, &src) < 0)
                return EXIT_FAIL;
        if (cli_open_store(store, true, &dst) < 0)
                return EXIT_FAIL;
        if (backend_is_oci(dst))
                return log_error_errno(EINVAL, "pull needs a local --store"), EXIT_FAIL;
        r = oci_pull(src, ref.has_digest ? digest_str(&ref.digest, rs) : ref.tag, dst, tag, jobs, &st);
        if (r < 0)
                return EXIT_FAIL; /* logged */
        backend_oci_stats(src, &os);
        if (json) {
                out = copy_json(&st, argv[optind], tag, false, &os);
                if (!out || cli_print_json(out) < 0)
                        return EXIT_FAIL;
                return EXIT_OK;
        }
        printf("%s\n", digest_str(&st.manifest, ds));
        if (fflush(stdout) == EOF)
                return log_error_errno(errno, "write stdout: %m"), EXIT_FAIL;
        log_info("%" PRIu64 " of %" PRIu64 " blobs downloaded (%s), %" PRIu64 " already here", st.blobs_copied,
                 st.blobs_total, format_bytes(st.bytes_copied, a), st.blobs_skipped);
        return EXIT_OK;
}
