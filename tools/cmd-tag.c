/* cmd-tag.c — `stasis tag`: point a tag at a snapshot. */
#include <getopt.h>
#include <stdio.h>

#include "cli.h"

int cmd_tag(const struct cli_command *cmd, int argc, char **argv)
{
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                {},
        };
        _cleanup_(backend_freep) struct backend *b = NULL;
        const char *store = NULL, *tag;
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
        tag = argv[optind + 1];
        if (!tag_valid(tag))
                return cli_usage(cmd, "'%s' is not a valid tag ([A-Za-z0-9_][A-Za-z0-9._-]{0,127})", tag);

        snprintf(what, sizeof what, "tag %s %s", argv[optind], tag);
        cli_set_context(ctx, what);
        /* The store must exist: REF has to resolve in it. */
        if (cli_open_store(store, false, &b) < 0 || cli_resolve(b, argv[optind], &d) < 0)
                return EXIT_FAIL;
        /* store_tag() logs why it failed. */
        return store_tag(b, &d, tag) < 0 ? EXIT_FAIL : EXIT_OK;
}
