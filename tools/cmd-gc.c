/* cmd-gc.c — `stasis gc`: delete blobs that no kept snapshot reaches. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>

#include "cli.h"

int cmd_gc(const struct cli_command *cmd, int argc, char **argv)
{
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                { "grace", required_argument, NULL, OPT_GRACE },
                { "keep-last", required_argument, NULL, OPT_KEEP_LAST },
                { "dry-run", no_argument, NULL, OPT_DRY_RUN },
                { "json", no_argument, NULL, OPT_JSON },
                {},
        };
        _cleanup_(backend_freep) struct backend *b = NULL;
        _cleanup_(json_decrefp) json_t *out = NULL;
        struct gc_opts opts = { .grace_sec = 3600 };
        struct gc_stats st = {};
        const char *store = NULL;
        bool json = false;
        char ctx[512], h[32];
        int c, r;

        while ((c = getopt_long(argc, argv, CLI_SHORTOPTS, options, NULL)) >= 0) {
                switch (c) {
                case OPT_STORE:
                        store = optarg;
                        break;
                case OPT_GRACE:
                        if (cli_parse_u64(optarg, &opts.grace_sec) < 0)
                                return cli_usage(cmd, "--grace %s: expected a number of seconds", optarg);
                        break;
                case OPT_KEEP_LAST:
                        if (cli_parse_u64(optarg, &opts.keep_last) < 0 || opts.keep_last == 0)
                                return cli_usage(cmd, "--keep-last %s: expected a number of at least 1",
                                                 optarg);
                        break;
                case OPT_DRY_RUN:
                        opts.dry_run = true;
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
        r = cli_nargs(cmd, argc, argv, 0, 0);
        if (r)
                return r;
        cli_set_context(ctx, "gc");
        if (cli_open_store(store, false, &b) < 0)
                return EXIT_FAIL;

        r = store_gc(b, &opts, &st);
        if (r < 0)
                return EXIT_FAIL; /* store_gc() logged why */

        if (json) {
                out = json_pack("{s:b, s:I, s:I, s:I, s:I, s:I, s:I}", "dry_run", opts.dry_run,
                                "roots_kept", (json_int_t)st.roots_kept,
                                "roots_dropped", (json_int_t)st.roots_dropped,
                                "blobs_kept", (json_int_t)st.blobs_kept,
                                "blobs_removed", (json_int_t)st.blobs_removed,
                                "bytes_removed", (json_int_t)st.bytes_removed,
                                "blobs_young", (json_int_t)st.blobs_young);
                if (!out)
                        return EXIT_FAIL;
                return cli_print_json(out) < 0 ? EXIT_FAIL : EXIT_OK;
        }
        printf("gc: %s %" PRIu64 " blobs (%s), kept %" PRIu64 " (%" PRIu64 " spared as younger than %" PRIu64
               " s); snapshots kept %" PRIu64 ", untagged %" PRIu64 "\n",
               opts.dry_run ? "would remove" : "removed", st.blobs_removed,
               format_bytes(st.bytes_removed, h), st.blobs_kept, st.blobs_young, opts.grace_sec,
               st.roots_kept, st.roots_dropped);
        if (fflush(stdout) == EOF)
                return log_error_errno(errno, "write stdout: %m"), EXIT_FAIL;
        return EXIT_OK;
}
