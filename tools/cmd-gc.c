/* cmd-gc.c — `stasis gc`: delete blobs that no kept snapshot reaches.
 *
 * Besides the index's roots, gc spares every snapshot a mount on this node
 * uses (DESIGN.md "Local store"): the mounts registered in
 * $STASIS_RUN_DIR/mounts/ (else /run/stasis/mounts/, see daemon/stasisd.c)
 * whose store is this one. Each entry's "snapshot", its "last_checkpoint"
 * (if stasisd wrote one: a mount's next checkpoint reuses the chunk
 * references of its last one) and the base its state dir's HEAD names (a
 * checkpoint that folds moves the base) are pinned (gc_opts.pinned). An
 * entry stays until `stasis umount` removes it, also when its daemon died:
 * its state dir remounts onto that base. */
#include <dirent.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define RUN_DEFAULT "/run/stasis"

struct pins {
        struct digest *v;
        size_t n, cap;
};

static int pins_add(struct pins *p, const char *s)
{
        struct digest d;

        if (!s || digest_parse(s, &d) < 0)
                return 0; /* "empty", or nothing there */
        if (p->n == p->cap) {
                size_t cap = p->cap ? p->cap * 2 : 8;
                struct digest *v = reallocarray(p->v, cap, sizeof *v);
                if (!v)
                        return -ENOMEM;
                p->v = v;
                p->cap = cap;
        }
        p->v[p->n++] = d;
        return 0;
}

/* head_base(): the "base <digest>" line of a state dir's HEAD
 * (docs/writable-layer.md), into buf; "" if there is none. */
static void head_base(const char *state_dir, char buf[static DIGEST_STR_LEN + 1])
{
        char path[PATH_MAX], line[256];
        FILE *f;

        buf[0] = 0;
        if ((size_t)snprintf(path, sizeof path, "%s/HEAD", state_dir) >= sizeof path)
                return;
        f = fopen(path, "re");
        if (!f)
                return;
        while (fgets(line, sizeof line, f)) {
                size_t n;

                if (strncmp(line, "base ", 5) != 0)
                        continue;
                n = strcspn(line + 5, "\n");
                if (n <= DIGEST_STR_LEN) {
                        memcpy(buf, line + 5, n);
                        buf[n] = 0;
                }
                break;
        }
        fclose(f);
}

/* live_pins(): the snapshots that the mounts of store (a local directory)
 * use. Unreadable entries are skipped: a mount writes its entry by rename. */
static int live_pins(const char *store, struct pins *ret)
{
        const char *run = getenv("STASIS_RUN_DIR");
        char dir[PATH_MAX], real[PATH_MAX];
        struct dirent *de;
        DIR *d;
        int r = 0;

        if (!realpath(store, real))
                return log_error_errno(errno, "store %s: %m", store);
        snprintf(dir, sizeof dir, "%s/mounts", run && *run ? run : RUN_DEFAULT);
        d = opendir(dir);
        if (!d)
                return errno == ENOENT ? 0 : log_error_errno(errno, "mount registry %s: %m", dir);
        while (r >= 0 && (de = readdir(d))) {
                char p[PATH_MAX], base[DIGEST_STR_LEN + 1];
                const char *st, *state;
                size_t l = strlen(de->d_name);
                json_t *j;

                if (l < 6 || strcmp(de->d_name + l - 5, ".json") != 0)
                        continue;
                if ((size_t)snprintf(p, sizeof p, "%s/%s", dir, de->d_name) >= sizeof p)
                        continue;
                j = json_load_file(p, 0, NULL);
                st = json_string_value(json_object_get(j, "store"));
                if (st && strcmp(st, real) == 0) {
                        r = pins_add(ret, json_string_value(json_object_get(j, "snapshot")));
                        if (r >= 0)
                                r = pins_add(ret, json_string_value(json_object_get(j, "last_checkpoint")));
                        state = json_string_value(json_object_get(j, "state_dir"));
                        if (r >= 0 && state) {
                                head_base(state, base);
                                r = pins_add(ret, base);
                        }
                }
                json_decref(j);
        }
        closedir(d);
        return r;
}

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
        struct pins pins = {};
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
        if (strncmp(cli_store_path(store), "oci://", 6) != 0) {
                r = live_pins(cli_store_path(store), &pins);
                if (r < 0) {
                        free(pins.v);
                        return EXIT_FAIL;
                }
                opts.pinned = pins.v;
                opts.n_pinned = pins.n;
        }

        r = store_gc(b, &opts, &st);
        free(pins.v);
        if (r < 0)
                return EXIT_FAIL; /* store_gc() logged why */

        if (json) {
                out = json_pack("{s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "dry_run", opts.dry_run,
                                "roots_kept", (json_int_t)st.roots_kept,
                                "roots_dropped", (json_int_t)st.roots_dropped,
                                "roots_pinned", (json_int_t)st.roots_pinned,
                                "blobs_kept", (json_int_t)st.blobs_kept,
                                "blobs_removed", (json_int_t)st.blobs_removed,
                                "bytes_removed", (json_int_t)st.bytes_removed,
                                "blobs_young", (json_int_t)st.blobs_young);
                if (!out)
                        return EXIT_FAIL;
                return cli_print_json(out) < 0 ? EXIT_FAIL : EXIT_OK;
        }
        printf("gc: %s %" PRIu64 " blobs (%s), kept %" PRIu64 " (%" PRIu64 " spared as younger than %" PRIu64
               " s); snapshots kept %" PRIu64 ", untagged %" PRIu64 ", in use by mounts %" PRIu64 "\n",
               opts.dry_run ? "would remove" : "removed", st.blobs_removed,
               format_bytes(st.bytes_removed, h), st.blobs_kept, st.blobs_young, opts.grace_sec,
               st.roots_kept, st.roots_dropped, st.roots_pinned);
        if (fflush(stdout) == EOF)
                return log_error_errno(errno, "write stdout: %m"), EXIT_FAIL;
        return EXIT_OK;
}
