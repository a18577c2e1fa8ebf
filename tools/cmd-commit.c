/* cmd-commit.c — `stasis commit`: import a directory as a snapshot. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static int add_label(json_t *labels, const char *kv)
{
        const char *eq = strchr(kv, '=');
        _cleanup_(freep) char *key = NULL;

        if (!eq || eq == kv)
                return -EINVAL;
        key = strndup(kv, (size_t)(eq - kv));
        if (!key)
                return -ENOMEM;
        if (json_object_set_new(labels, key, json_string(eq + 1)) < 0)
                return -EINVAL; /* not UTF-8 */
        return 0;
}

static json_t *digest_json(const struct digest *d)
{
        char s[DIGEST_STR_LEN + 1];

        return d ? json_string(digest_str(d, s)) : json_null();
}

int cmd_commit(const struct cli_command *cmd, int argc, char **argv)
{
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                { "parent", required_argument, NULL, OPT_PARENT },
                { "chunk-size", required_argument, NULL, OPT_CHUNK_SIZE },
                { "tag", required_argument, NULL, OPT_TAG },
                { "label", required_argument, NULL, OPT_LABEL },
                { "level", required_argument, NULL, OPT_LEVEL },
                { "threads", required_argument, NULL, OPT_THREADS },
                { "json", no_argument, NULL, OPT_JSON },
                {},
        };
        _cleanup_(backend_freep) struct backend *b = NULL;
        _cleanup_(snapshot_freep) struct snapshot *snap = NULL;
        _cleanup_(json_decrefp) json_t *labels = NULL, *out = NULL;
        const char *store = NULL, *parent_ref = NULL, *tag = NULL;
        uint64_t chunk_size = 0, level = 0, threads = 0;
        struct digest parent, d;
        struct commit_stats st = {};
        struct cli_progress progress;
        char ctx[512], what[512], ds[DIGEST_STR_LEN + 1];
        bool json = false;
        int c, r;

        labels = json_object();
        if (!labels)
                return log_error_errno(ENOMEM, "commit: %m"), EXIT_FAIL;
        while ((c = getopt_long(argc, argv, CLI_SHORTOPTS, options, NULL)) >= 0) {
                switch (c) {
                case OPT_STORE:
                        store = optarg;
                        break;
                case OPT_PARENT:
                        parent_ref = optarg;
                        break;
                case OPT_CHUNK_SIZE:
                        r = cli_opt_chunk_size(cmd, optarg, &chunk_size);
                        if (r)
                                return r;
                        break;
                case OPT_TAG:
                        r = cli_opt_tag(cmd, optarg, &tag);
                        if (r)
                                return r;
                        break;
                case OPT_LABEL:
                        if (add_label(labels, optarg) < 0)
                                return cli_usage(cmd, "--label %s: expected KEY=VALUE", optarg);
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

        snprintf(what, sizeof what, "commit %s", argv[optind]);
        cli_set_context(ctx, what);

        r = cli_open_store(store, true, &b);
        if (r < 0)
                return EXIT_FAIL;
        if (parent_ref && cli_resolve(b, parent_ref, &parent) < 0)
                return EXIT_FAIL;

        cli_progress_init(&progress, "commit");
        r = store_commit(b,
                         &(struct commit_opts){
                                 .dir = argv[optind],
                                 .parent = parent_ref ? &parent : NULL,
                                 .chunk_size = (uint32_t)chunk_size,
                                 .level = (int)level,
                                 .threads = (unsigned)threads,
                                 .tag = tag,
                                 .labels = json_object_size(labels) ? labels : NULL,
                                 .progress = cli_progress,
                                 .progress_ctx = &progress,
                         },
                         &d, &st);
        cli_progress_done(&progress);
        if (r < 0)
                return EXIT_FAIL; /* store_commit() logged why */

        /* The generation lives in the new snapshot's config. */
        r = snapshot_open(b, &d, &snap);
        if (r < 0)
                return EXIT_FAIL;

        if (!json) {
                char a[32], p[32];

                printf("%s\n", digest_str(&d, ds));
                if (fflush(stdout) == EOF)
                        return log_error_errno(errno, "write stdout: %m"), EXIT_FAIL;
                if (isatty(STDERR_FILENO))
                        fprintf(stderr,
                                "stasis: committed generation %" PRIu64 ": %" PRIu64 " files, %s logical, "
                                "%" PRIu64 " new chunks (%s packed), %" PRIu64 " reused, %.2f s\n",
                                snap->config.generation, st.files, format_bytes(st.bytes_logical, a),
                                st.chunks_new, format_bytes(st.bytes_packed, p), st.chunks_reused,
                                (double)st.wall_ns / 1e9);
                return EXIT_OK;
        }

        out = json_object();
        if (!out)
                return EXIT_FAIL;
#define SET(k, v)                                                      \
        do {                                                           \
                if (json_object_set_new(out, k, v) < 0)                \
                        return log_error_errno(ENOMEM, "%m"), EXIT_FAIL; \
        } while (0)
#define U64(k, v) SET(k, json_integer((json_int_t)(v)))
        SET("digest", digest_json(&d));
        SET("tag", tag ? json_string(tag) : json_null());
        SET("parent", digest_json(snap->config.has_parent ? &snap->config.parent : NULL));
        U64("generation", snap->config.generation);
        U64("chunk_size", snap->config.chunk_size);
        U64("files", st.files);
        U64("dirs", st.dirs);
        U64("symlinks", st.symlinks);
        U64("others", st.others);
        U64("bytes_logical", st.bytes_logical);
        U64("bytes_read", st.bytes_read);
        U64("chunks_total", st.chunks_total);
        U64("chunks_new", st.chunks_new);
        U64("chunks_reused", st.chunks_reused);
        U64("bytes_new", st.bytes_new);
        U64("bytes_packed", st.bytes_packed);
        U64("packs_new", st.packs_new);
        U64("tree_bytes", st.tree_bytes);
        U64("wall_ns", st.wall_ns);
        U64("cpu_ns", st.cpu_ns);
#undef U64
#undef SET
        return cli_print_json(out) < 0 ? EXIT_FAIL : EXIT_OK;
}
