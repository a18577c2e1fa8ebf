/* cmd-diff.c — `stasis diff`: what changed between two snapshots. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

struct diff_out {
        bool json;
        json_t *changes; /* --json: the array being built */
};

static int on_change(void *ctx, enum diff_kind kind, const char *path, const char *what,
                     const uint64_t (*ranges)[2], size_t n_ranges)
{
        static const char letter[] = { [DIFF_ADDED] = 'A', [DIFF_REMOVED] = 'D', [DIFF_CHANGED] = 'M' };
        struct diff_out *o = ctx;
        char k[2] = { (unsigned)kind < ELEMENTSOF(letter) ? letter[kind] : '?', 0 };

        if (o->json) {
                _cleanup_(json_decrefp) json_t *c = NULL, *rs = NULL;

                rs = json_array();
                if (!rs)
                        return -ENOMEM;
                for (size_t i = 0; i < n_ranges; i++)
                        if (json_array_append_new(rs, json_pack("[I, I]", (json_int_t)ranges[i][0],
                                                                (json_int_t)ranges[i][1])) < 0)
                                return -ENOMEM;
                c = json_pack("{s:s, s:s, s:s?, s:O}", "kind", k, "path", path, "what",
                              what && *what ? what : NULL, "ranges", rs);
                if (!c || json_array_append(o->changes, c) < 0)
                        return -ENOMEM;
                return 0;
        }

        printf("%s %s", k, path);
        if (n_ranges > 0) {
                printf(" [");
                for (size_t i = 0; i < n_ranges; i++)
                        printf("%s%" PRIu64 "+%" PRIu64, i ? ", " : "", ranges[i][0], ranges[i][1]);
                printf("]");
        }
        if (what && *what)
                printf(" (%s)", what);
        printf("\n");
        return ferror(stdout) ? -EIO : 0;
}

int cmd_diff(const struct cli_command *cmd, int argc, char **argv)
{
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                { "json", no_argument, NULL, OPT_JSON },
                {},
        };
        _cleanup_(backend_freep) struct backend *b = NULL;
        _cleanup_(json_decrefp) json_t *changes = NULL, *out = NULL;
        struct diff_out o = {};
        const char *store = NULL;
        struct digest a, bb;
        char ctx[512], what[1024], as[DIGEST_STR_LEN + 1], bs[DIGEST_STR_LEN + 1];
        int c, r;

        while ((c = getopt_long(argc, argv, CLI_SHORTOPTS, options, NULL)) >= 0) {
                switch (c) {
                case OPT_STORE:
                        store = optarg;
                        break;
                case OPT_JSON:
                        o.json = true;
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
        snprintf(what, sizeof what, "diff %s %s", argv[optind], argv[optind + 1]);
        cli_set_context(ctx, what);
        if (cli_open_store(store, false, &b) < 0 || cli_resolve(b, argv[optind], &a) < 0 ||
            cli_resolve(b, argv[optind + 1], &bb) < 0)
                return EXIT_FAIL;

        if (o.json) {
                changes = json_array();
                if (!changes)
                        return EXIT_FAIL;
                o.changes = changes;
        }
        r = store_diff(b, &a, &bb, on_change, &o);
        if (r == -EIO)
                return log_error_errno(r, "write stdout: %m"), EXIT_FAIL;
        if (r == -ENOMEM)
                return log_error_errno(r, "%m"), EXIT_FAIL;
        if (r < 0)
                return EXIT_FAIL; /* store_diff() logged why */
        if (o.json) {
                out = json_pack("{s:s, s:s, s:O}", "from", digest_str(&a, as), "to", digest_str(&bb, bs),
                                "changes", changes);
                if (!out)
                        return EXIT_FAIL;
                return cli_print_json(out) < 0 ? EXIT_FAIL : EXIT_OK;
        }
        if (fflush(stdout) == EOF)
                return log_error_errno(errno, "write stdout: %m"), EXIT_FAIL;
        return EXIT_OK;
}
