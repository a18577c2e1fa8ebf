/* cmd-verify.c — `stasis verify`: re-hash what the store's snapshots reach. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>

#include "cli.h"

struct verify_out {
        json_t *problems; /* --json: collected too */
        uint64_t n;
};

/* One line per problem on stderr, always: the lines are the point. */
static void on_problem(void *ctx, const char *blob, const char *chunk, const char *what)
{
        struct verify_out *o = ctx;

        o->n++;
        if (chunk)
                fprintf(stderr, "stasis: verify: blob %s: chunk %s: %s\n", blob ? blob : "?", chunk,
                        what ? what : "corrupt");
        else
                fprintf(stderr, "stasis: verify: blob %s: %s\n", blob ? blob : "?", what ? what : "corrupt");
        if (o->problems)
                (void)json_array_append_new(o->problems, json_pack("{s:s?, s:s?, s:s?}", "blob", blob,
                                                                   "chunk", chunk, "what", what));
}

int cmd_verify(const struct cli_command *cmd, int argc, char **argv)
{
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                { "json", no_argument, NULL, OPT_JSON },
                {},
        };
        _cleanup_(backend_freep) struct backend *b = NULL;
        _cleanup_(json_decrefp) json_t *problems = NULL, *out = NULL;
        struct verify_out o = {};
        struct verify_stats st = {};
        const char *store = NULL;
        struct digest d;
        bool json = false;
        char ctx[512], what[512], h[32];
        int c, r;

        while ((c = getopt_long(argc, argv, CLI_SHORTOPTS, options, NULL)) >= 0) {
                switch (c) {
                case OPT_STORE:
                        store = optarg;
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
        r = cli_nargs(cmd, argc, argv, 0, 1);
        if (r)
                return r;
        snprintf(what, sizeof what, "verify%s%s", optind < argc ? " " : "", optind < argc ? argv[optind] : "");
        cli_set_context(ctx, what);
        if (cli_open_store(store, false, &b) < 0)
                return EXIT_FAIL;
        if (optind < argc && cli_resolve(b, argv[optind], &d) < 0)
                return EXIT_FAIL;
        if (json) {
                problems = json_array();
                if (!problems)
                        return EXIT_FAIL;
                o.problems = problems;
        }

        r = store_verify(b, optind < argc ? &d : NULL, on_problem, &o, &st);
        if (r < 0)
                return log_error_errno(r, "%m"), EXIT_FAIL;

        if (json) {
                out = json_pack("{s:b, s:I, s:I, s:I, s:I, s:O}", "ok", r == 0 && o.n == 0,
                                "snapshots", (json_int_t)st.snapshots, "blobs", (json_int_t)st.blobs,
                                "chunks", (json_int_t)st.chunks, "bytes", (json_int_t)st.bytes,
                                "problems", problems);
                if (!out || cli_print_json(out) < 0)
                        return EXIT_FAIL;
        } else {
                printf("verified %" PRIu64 " snapshots, %" PRIu64 " blobs, %" PRIu64 " chunks (%s): ",
                       st.snapshots, st.blobs, st.chunks, format_bytes(st.bytes, h));
                if (r == 0 && o.n == 0)
                        printf("ok\n");
                else
                        printf("%" PRIu64 " problem%s\n", MAX((uint64_t)r, o.n), MAX((uint64_t)r, o.n) == 1 ? "" : "s");
                if (fflush(stdout) == EOF)
                        return log_error_errno(errno, "write stdout: %m"), EXIT_FAIL;
        }
        return r == 0 && o.n == 0 ? EXIT_OK : EXIT_FAIL;
}
