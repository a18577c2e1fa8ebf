/* cmd-restore.c — `stasis restore`: materialize a snapshot into a directory. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>

#include "cli.h"

int cmd_restore(const struct cli_command *cmd, int argc, char **argv)
{
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                {},
        };
        _cleanup_(backend_freep) struct backend *b = NULL;
        const char *store = NULL;
        struct restore_stats st = {};
        struct cli_progress progress;
        struct digest d;
        char ctx[512], what[512];
        int c, r;

        while ((c = getopt_long(argc, argv, CLI_SHORTOPTS, options, NULL)) >= 0) {
                switch (c) {
                case OPT_STORE:
                        store = optarg;
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

        snprintf(what, sizeof what, "restore %s", argv[optind]);
        cli_set_context(ctx, what);
        if (cli_open_store(store, false, &b) < 0 || cli_resolve(b, argv[optind], &d) < 0)
                return EXIT_FAIL;

        cli_progress_init(&progress, "restore");
        r = store_restore(b, &d, argv[optind + 1], cli_progress, &progress, &st);
        cli_progress_done(&progress);
        if (r < 0)
                return EXIT_FAIL; /* store_restore() logged why */
        if (isatty(STDERR_FILENO)) {
                char a[32];

                fprintf(stderr, "stasis: restored %" PRIu64 " files, %s written, %" PRIu64 " chunks read, %.2f s\n",
                        st.files, format_bytes(st.bytes_written, a), st.chunks_read,
                        (double)st.wall_ns / 1e9);
        }
        return EXIT_OK;
}
