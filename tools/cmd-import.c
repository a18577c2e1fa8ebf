/* cmd-import.c — `stasis import`: an OCI image (a local image layout, or a
 * registry repository) as a base snapshot (store/import.h does the work). */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "store/oci.h"

static json_t *digest_json(const struct digest *d)
{
        char s[DIGEST_STR_LEN + 1];

        return d ? json_string(digest_str(d, s)) : json_null();
}

/* parse_layout_ref(): "oci:DIR[:TAG]" -> DIR (malloc'd) and TAG ("" if none).
 * The tag is what follows the last ':' unless that holds a '/'. */
static int parse_layout_ref(const char *s, char **ret_dir, const char **ret_tag)
{
        const char *p = s + 4, *colon = strrchr(p, ':');
        char *dir;

        if (colon && strchr(colon, '/'))
                colon = NULL;
        dir = colon ? strndup(p, (size_t)(colon - p)) : strdup(p);
        if (!dir)
                return -ENOMEM;
        if (!dir[0]) {
                free(dir);
                return -EINVAL;
        }
        *ret_dir = dir;
        *ret_tag = colon ? colon + 1 : "";
        return 0;
}

int cmd_import(const struct cli_command *cmd, int argc, char **argv)
{
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                { "tag", required_argument, NULL, OPT_TAG },
                { "chunk-size", required_argument, NULL, OPT_CHUNK_SIZE },
                { "level", required_argument, NULL, OPT_LEVEL },
                { "threads", required_argument, NULL, OPT_THREADS },
                { "json", no_argument, NULL, OPT_JSON },
                {},
        };
        _cleanup_(backend_freep) struct backend *b = NULL, *reg = NULL;
        _cleanup_(json_decrefp) json_t *out = NULL;
        _cleanup_(freep) char *dir = NULL;
        struct image_source *src = NULL;
        const char *store = NULL, *tag = NULL, *image, *ref = "";
        uint64_t chunk_size = 0, level = 0, threads = 0;
        struct import_stats st = {};
        struct cli_progress progress;
        struct oci_ref oref = {};
        struct digest d;
        char ctx[512], what[512], ds[DIGEST_STR_LEN + 1], refbuf[DIGEST_STR_LEN + 1];
        bool json = false;
        int c, r;

        while ((c = getopt_long(argc, argv, CLI_SHORTOPTS, options, NULL)) >= 0) {
                switch (c) {
                case OPT_STORE:
                        store = optarg;
                        break;
                case OPT_TAG:
                        r = cli_opt_tag(cmd, optarg, &tag);
                        if (r)
                                return r;
                        break;
                case OPT_CHUNK_SIZE:
                        r = cli_opt_chunk_size(cmd, optarg, &chunk_size);
                        if (r)
                                return r;
                        break;
                case OPT_LEVEL:
                        r = cli_opt_level(cmd, optarg, &level);
                        if (r)
                                return r;
                        break;
                case OPT_THREADS:
                        r = cli_opt_threads(cmd, optarg, &threads);
                        if (r)
                                return r;
                        break;
                case OPT_JSON:
                        json = true;
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
        image = argv[optind];
        if (strncmp(image, "oci://", 6) == 0) {
                if (oci_ref_parse(image, &oref) < 0)
                        return cli_usage(cmd, "%s: expected oci://HOST[:PORT]/REPO[:TAG|@sha256:HEX]", image);
        } else if (strncmp(image, "oci:", 4) == 0) {
                r = parse_layout_ref(image, &dir, &ref);
                if (r == -ENOMEM)
                        return log_error_errno(r, "import: %m"), EXIT_FAIL;
                if (r < 0)
                        return cli_usage(cmd, "%s: expected oci:DIR[:TAG]", image);
        } else
                return cli_usage(cmd, "%s: expected oci:DIR[:TAG] or oci://HOST/REPO[:TAG]", image);

        snprintf(what, sizeof what, "import %s", image);
        cli_set_context(ctx, what);
        if (dir) {
                if (image_source_layout_open(dir, &src) < 0)
                        return EXIT_FAIL; /* logged */
        } else {
                struct registry_opts ro = {};
                if (registry_opts_from_env(&ro) < 0 || backend_oci_open(oref.host, oref.repo, &ro, &reg) < 0)
                        return EXIT_FAIL; /* logged */
                if (image_source_backend(reg, &src) < 0)
                        return log_error_errno(ENOMEM, "%m"), EXIT_FAIL;
                ref = oref.has_digest ? digest_str(&oref.digest, refbuf) : oref.tag[0] ? oref.tag : "latest";
        }
        if (cli_open_store(store, true, &b) < 0) {
                image_source_free(src);
                return EXIT_FAIL;
        }

        cli_progress_init(&progress, "import");
        r = store_import(b,
                         &(struct import_opts){
                                 .src = src,
                                 .ref = ref,
                                 .what = image,
                                 .chunk_size = (uint32_t)chunk_size,
                                 .level = (int)level,
                                 .threads = (unsigned)threads,
                                 .tag = tag,
                                 .progress = cli_progress,
                                 .progress_ctx = &progress,
                         },
                         &d, &st);
        cli_progress_done(&progress);
        image_source_free(src);
        if (r < 0)
                return EXIT_FAIL; /* store_import() logged why */

        if (!json) {
                char a[32], p[32];

                printf("%s\n", digest_str(&d, ds));
                if (fflush(stdout) == EOF)
                        return log_error_errno(errno, "write stdout: %m"), EXIT_FAIL;
                if (isatty(STDERR_FILENO))
                        fprintf(stderr,
                                "stasis: imported %" PRIu64 " layers: %" PRIu64 " files, %s logical, %" PRIu64
                                " new chunks (%s packed), %" PRIu64 " reused, %.2f s\n",
                                st.layers, st.files, format_bytes(st.bytes_logical, a), st.chunks_new,
                                format_bytes(st.bytes_packed, p), st.chunks_reused, (double)st.wall_ns / 1e9);
                return EXIT_OK;
        }
        out = json_object();
        if (!out)
                return EXIT_FAIL;
#define SET(k, v)                                                        \
        do {                                                             \
                if (json_object_set_new(out, k, v) < 0)                  \
                        return log_error_errno(ENOMEM, "%m"), EXIT_FAIL; \
        } while (0)
#define U64(k, v) SET(k, json_integer((json_int_t)(v)))
        SET("digest", digest_json(&d));
        SET("tag", tag ? json_string(tag) : json_null());
        SET("image", json_string(image));
        SET("image_manifest", digest_json(&st.image_manifest));
        U64("layers", st.layers);
        U64("entries", st.entries);
        U64("whiteouts", st.whiteouts);
        U64("files", st.files);
        U64("dirs", st.dirs);
        U64("symlinks", st.symlinks);
        U64("others", st.others);
        U64("bytes_logical", st.bytes_logical);
        U64("bytes_layers", st.bytes_layers);
        U64("bytes_tar", st.bytes_tar);
        U64("chunks_total", st.chunks_total);
        U64("chunks_new", st.chunks_new);
        U64("chunks_reused", st.chunks_reused);
        U64("bytes_new", st.bytes_new);
        U64("bytes_packed", st.bytes_packed);
        U64("packs_new", st.packs_new);
        SET("already_imported", json_boolean(st.already));
        U64("known_snapshots", st.known_snapshots);
        U64("tree_bytes", st.tree_bytes);
        U64("wall_ns", st.wall_ns);
#undef U64
#undef SET
        return cli_print_json(out) < 0 ? EXIT_FAIL : EXIT_OK;
}
