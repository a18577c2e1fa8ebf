/* cmd-inspect.c — `stasis inspect` (one snapshot) and `stasis log` (its
 * generation chain). */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

static json_t *digest_json(const struct digest *d)
{
        char s[DIGEST_STR_LEN + 1];

        return d ? json_string(digest_str(d, s)) : json_null();
}

/* Both commands take the same options. Returns CLI_CONTINUE to go on, else
 * the exit status (after --help or a usage error). */
static int parse_ref_options(const struct cli_command *cmd, int argc, char **argv,
                             const char **ret_store, bool *ret_json)
{
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                { "json", no_argument, NULL, OPT_JSON },
                {},
        };
        int c, r;

        while ((c = getopt_long(argc, argv, CLI_SHORTOPTS, options, NULL)) >= 0) {
                switch (c) {
                case OPT_STORE:
                        *ret_store = optarg;
                        break;
                case OPT_JSON:
                        *ret_json = true;
                        break;
                default:
                        r = cli_common_option(cmd, c, argv);
                        if (r != CLI_CONTINUE)
                                return r;
                }
        }
        r = cli_nargs(cmd, argc, argv, 1, 1);
        return r ? r : CLI_CONTINUE;
}

static void print_tags(const json_t *tags)
{
        const json_t *t;
        size_t i;

        if (json_array_size(tags) == 0) {
                fputs("-", stdout);
                return;
        }
        json_array_foreach(tags, i, t)
                printf("%s%s", i ? ", " : "", json_string_value(t));
}

struct counts {
        uint64_t files, dirs, symlinks, others, bytes_logical;
        uint64_t bytes_unique, bytes_compressed, pack_bytes;
};

static int count_tree(const struct snapshot *s, struct counts *ret)
{
        struct counts n = {};
        struct tree_chunk ch;
        struct tree_inode ino;
        int r;

        for (uint32_t i = 0; i < tree_n_inodes(s->tree); i++) {
                r = tree_inode_at(s->tree, i, &ino);
                if (r < 0)
                        return log_error_errno(r, "tree inode %" PRIu32 ": %m", i);
                switch (ino.attr.mode & S_IFMT) {
                case S_IFREG:
                        n.files++;
                        n.bytes_logical += ino.attr.size;
                        break;
                case S_IFDIR:
                        n.dirs++;
                        break;
                case S_IFLNK:
                        n.symlinks++;
                        break;
                default:
                        n.others++;
                }
        }
        for (uint32_t i = 0; i < tree_n_chunks(s->tree); i++) {
                r = tree_chunk(s->tree, i, &ch);
                if (r < 0)
                        return log_error_errno(r, "tree chunk %" PRIu32 ": %m", i);
                n.bytes_unique += ch.ulen;
                n.bytes_compressed += ch.clen;
        }
        for (uint32_t i = 0; i < s->n_packs; i++)
                n.pack_bytes += s->pack_sizes[i];
        *ret = n;
        return 0;
}

int cmd_inspect(const struct cli_command *cmd, int argc, char **argv)
{
        _cleanup_(backend_freep) struct backend *b = NULL;
        _cleanup_(snapshot_freep) struct snapshot *s = NULL;
        _cleanup_(json_decrefp) json_t *tags = NULL, *out = NULL;
        const char *store = NULL, *key;
        bool json = false;
        struct counts n = {};
        struct digest d;
        char ctx[512], what[512], ds[DIGEST_STR_LEN + 1], h[32];
        json_t *v;
        int r;

        r = parse_ref_options(cmd, argc, argv, &store, &json);
        if (r != CLI_CONTINUE)
                return r;
        snprintf(what, sizeof what, "inspect %s", argv[optind]);
        cli_set_context(ctx, what);
        if (cli_open_store(store, false, &b) < 0 || cli_resolve(b, argv[optind], &d) < 0)
                return EXIT_FAIL;
        /* snapshot_open() and snapshot_load_tree() log what is wrong. */
        if (snapshot_open(b, &d, &s) < 0 || snapshot_load_tree(b, s) < 0)
                return EXIT_FAIL;
        if (count_tree(s, &n) < 0 || cli_tags_of(b, &d, &tags) < 0)
                return EXIT_FAIL;

        if (json) {
                out = json_pack("{s:o, s:O, s:o, s:I, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
                                "s:I, s:I, s:I, s:O, s:o}",
                                "digest", digest_json(&d),
                                "tags", tags,
                                "parent", digest_json(s->config.has_parent ? &s->config.parent : NULL),
                                "generation", (json_int_t)s->config.generation,
                                "created", s->config.created,
                                "chunk_size", (json_int_t)s->config.chunk_size,
                                "files", (json_int_t)n.files,
                                "dirs", (json_int_t)n.dirs,
                                "symlinks", (json_int_t)n.symlinks,
                                "others", (json_int_t)n.others,
                                "bytes_logical", (json_int_t)n.bytes_logical,
                                "chunks", (json_int_t)tree_n_chunks(s->tree),
                                "bytes_unique", (json_int_t)n.bytes_unique,
                                "bytes_compressed", (json_int_t)n.bytes_compressed,
                                "packs", (json_int_t)s->n_packs,
                                "pack_bytes", (json_int_t)n.pack_bytes,
                                "tree_bytes", (json_int_t)s->tree_size,
                                "labels", s->config.labels,
                                "image", s->config.image ? json_incref(s->config.image) : json_null());
                if (!out)
                        return log_error_errno(ENOMEM, "build JSON: %m"), EXIT_FAIL;
                return cli_print_json(out) < 0 ? EXIT_FAIL : EXIT_OK;
        }

        printf("digest:      %s\n", digest_str(&d, ds));
        printf("tags:        ");
        print_tags(tags);
        printf("\nparent:      %s\n", s->config.has_parent ? digest_str(&s->config.parent, ds) : "-");
        printf("generation:  %" PRIu64 "\n", s->config.generation);
        printf("created:     %s\n", s->config.created);
        printf("chunk size:  %s\n", format_bytes(s->config.chunk_size, h));
        printf("files:       %" PRIu64 "\n", n.files);
        printf("dirs:        %" PRIu64 "\n", n.dirs);
        printf("symlinks:    %" PRIu64 "\n", n.symlinks);
        printf("other:       %" PRIu64 "\n", n.others);
        printf("logical:     %" PRIu64 " bytes (%s)\n", n.bytes_logical, format_bytes(n.bytes_logical, h));
        printf("chunks:      %" PRIu32 " (%s uncompressed, ", tree_n_chunks(s->tree),
               format_bytes(n.bytes_unique, h));
        printf("%s compressed)\n", format_bytes(n.bytes_compressed, h));
        printf("packs:       %" PRIu32 " (%" PRIu64 " bytes, %s)\n", s->n_packs, n.pack_bytes,
               format_bytes(n.pack_bytes, h));
        printf("tree:        %" PRIu64 " bytes\n", s->tree_size);
        printf("labels:     ");
        if (json_object_size(s->config.labels) == 0)
                printf(" -");
        json_object_foreach(s->config.labels, key, v)
                printf(" %s=%s", key, json_is_string(v) ? json_string_value(v) : "?");
        printf("\n");
        if (s->config.image) {
                /* The image config it was imported from (Entrypoint, Env, ...). */
                const json_t *ic = json_object_get(s->config.image, "config");
                _cleanup_(freep) char *txt = json_dumps(ic ? ic : s->config.image, JSON_COMPACT | JSON_SORT_KEYS);
                printf("image:       %s\n", txt ? txt : "?");
        }
        if (fflush(stdout) == EOF)
                return log_error_errno(errno, "write stdout: %m"), EXIT_FAIL;
        return EXIT_OK;
}

int cmd_log(const struct cli_command *cmd, int argc, char **argv)
{
        _cleanup_(backend_freep) struct backend *b = NULL;
        _cleanup_(json_decrefp) json_t *out = NULL;
        const char *store = NULL;
        bool json = false;
        struct digest d;
        char ctx[512], what[512], ds[DIGEST_STR_LEN + 1];
        int r;

        r = parse_ref_options(cmd, argc, argv, &store, &json);
        if (r != CLI_CONTINUE)
                return r;
        snprintf(what, sizeof what, "log %s", argv[optind]);
        cli_set_context(ctx, what);
        if (cli_open_store(store, false, &b) < 0 || cli_resolve(b, argv[optind], &d) < 0)
                return EXIT_FAIL;
        out = json_array();
        if (!out)
                return EXIT_FAIL;

        /* Generations strictly decrease along the chain, which is checked, so
         * the walk ends even if a forged config names itself. */
        uint64_t prev_gen = UINT64_MAX;
        for (uint64_t steps = 0;; steps++) {
                _cleanup_(snapshot_freep) struct snapshot *s = NULL;
                _cleanup_(json_decrefp) json_t *tags = NULL;

                if (steps > 0) {
                        r = backend_has(b, &d);
                        if (r < 0)
                                return log_error_errno(r, "manifest %s: %m", digest_str(&d, ds)), EXIT_FAIL;
                        if (r == 0) {
                                if (json && json_array_append_new(out, json_pack("{s:o, s:b}", "digest",
                                                                                 digest_json(&d), "missing", 1)) < 0)
                                        return EXIT_FAIL;
                                if (!json)
                                        printf("%s  (parent not in store)\n", digest_str(&d, ds));
                                break;
                        }
                }
                if (snapshot_open(b, &d, &s) < 0 || cli_tags_of(b, &d, &tags) < 0)
                        return EXIT_FAIL; /* logged */
                if (s->config.generation >= prev_gen)
                        return log_error_errno(EBADMSG, "snapshot %s: generation %" PRIu64
                                               " is not below its child's", digest_str(&d, ds),
                                               s->config.generation), EXIT_FAIL;
                prev_gen = s->config.generation;
                if (json) {
                        if (json_array_append_new(
                                    out, json_pack("{s:o, s:I, s:s, s:O, s:o}", "digest", digest_json(&d),
                                                   "generation", (json_int_t)s->config.generation,
                                                   "created", s->config.created, "tags", tags, "parent",
                                                   digest_json(s->config.has_parent ? &s->config.parent
                                                                                    : NULL))) < 0)
                                return EXIT_FAIL;
                } else {
                        printf("%s  generation %" PRIu64 "  %s  ", digest_str(&d, ds),
                               s->config.generation, s->config.created);
                        print_tags(tags);
                        printf("\n");
                }
                if (!s->config.has_parent)
                        break;
                if (s->config.generation == 0)
                        return log_error_errno(EBADMSG, "snapshot %s: generation 0 with a parent",
                                               digest_str(&d, ds)), EXIT_FAIL;
                d = s->config.parent;
        }
        if (json)
                return cli_print_json(out) < 0 ? EXIT_FAIL : EXIT_OK;
        if (fflush(stdout) == EOF)
                return log_error_errno(errno, "write stdout: %m"), EXIT_FAIL;
        return EXIT_OK;
}
