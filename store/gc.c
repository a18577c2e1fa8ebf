/* gc.c — store_gc() (see snapshot.h).
 *
 * Two steps, each under the store's lock (one index transaction each):
 *  1. keep_last: group the stasis roots into chains by following config
 *     parent links, keep the keep_last newest generations of each chain and
 *     drop every other entry of those digests from index.json. This step
 *     stores the smaller index before step 2 deletes anything, so a failure
 *     between the two can never leave index.json naming deleted blobs.
 *  2. mark and sweep: mark everything every index entry and every pinned
 *     snapshot reaches (manifest, config, layers; image indexes
 *     recursively), then remove each unmarked blob older than the grace
 *     period. Pinned snapshots are the ones live mounts use (the CLI reads
 *     the node's mount registry): a mount reads its base's blobs for as
 *     long as it runs, tagged or not.
 * Safety first: if any root's manifest cannot be read and classified, gc
 * deletes nothing (-EBADMSG or the read error). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "snapshot-private.h"
#include "snapshot.h"
#include "util.h"

#define GC_DEPTH_MAX 8

struct gc_node {
        struct digest d;
        uint64_t generation;
        char created[32];
        size_t chain; /* node index of the chain's oldest reached ancestor; SIZE_MAX unresolved */
};

struct gc {
        struct backend *b;
        const struct gc_opts *o;
        struct gc_stats st;
        struct digest_set *drop; /* roots step 1 dropped (dry run: would drop) */
        int err;                 /* first removal error; the sweep goes on */

        /* step 1 */
        struct gc_node *nodes;
        size_t n_nodes, cap_nodes;
        struct digest_set *node_of;
};

static void snapshot_freep(struct snapshot **s)
{
        snapshot_free(*s);
}

/* read_manifest_json(): a root's manifest, verified; logs. */
static int read_manifest_json(struct backend *b, const struct digest *d, json_t **ret)
{
        _cleanup_(freep) void *buf = NULL;
        char ds[DIGEST_STR_LEN + 1];
        json_t *m;
        size_t len;
        int r;

        r = blob_read_verified(b, d, MANIFEST_MAX, &buf, &len);
        if (r == -ENOENT)
                return log_error_errno(r, "gc: index.json names %s but it is not in the store; refusing to delete anything",
                                       digest_str(d, ds));
        if (r < 0)
                return log_error_errno(r, "gc: cannot read manifest %s (%m); refusing to delete anything",
                                       digest_str(d, ds));
        m = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(m)) {
                json_decref(m);
                return log_error_errno(-EBADMSG, "gc: manifest %s is not a JSON object; refusing to delete anything",
                                       digest_str(d, ds));
        }
        *ret = m;
        return 0;
}

static bool is_snapshot(const json_t *m)
{
        const char *a = json_string_value(json_object_get(m, "artifactType"));
        return a && strcmp(a, MEDIA_SNAPSHOT) == 0;
}

/* ---- step 1: chains ---- */

static int node_add(struct gc *g, const struct snapshot *s, size_t *ret)
{
        struct gc_node *n;

        if (g->n_nodes == g->cap_nodes) {
                size_t cap = g->cap_nodes ? g->cap_nodes * 2 : 16;
                n = reallocarray(g->nodes, cap, sizeof *n);
                if (!n)
                        return -ENOMEM;
                g->nodes = n;
                g->cap_nodes = cap;
        }
        n = &g->nodes[g->n_nodes];
        *n = (struct gc_node){ .d = s->digest, .generation = s->config.generation, .chain = SIZE_MAX };
        snprintf(n->created, sizeof n->created, "%s", s->config.created);
        if (digest_set_put(g->node_of, &s->digest, g->n_nodes) < 0)
                return -ENOMEM;
        *ret = g->n_nodes++;
        return 0;
}

/* chain_of(): node of root (a stasis snapshot) with its chain resolved. */
static int chain_of(struct gc *g, const struct digest *root, size_t *ret)
{
        _cleanup_(freep) size_t *path = NULL;
        size_t n_path = 0, cap_path = 0, chain = SIZE_MAX, idx;
        struct digest cur = *root;
        char ds[DIGEST_STR_LEN + 1];
        int r;

        for (;;) {
                _cleanup_(snapshot_freep) struct snapshot *s = NULL;

                if (digest_set_get(g->node_of, &cur, &idx)) {
                        /* Known: resolved earlier, or on this path (a cycle). */
                        chain = g->nodes[idx].chain != SIZE_MAX ? g->nodes[idx].chain : idx;
                        break;
                }
                r = snapshot_open(g->b, &cur, &s);
                if (r < 0) {
                        if (n_path == 0)
                                return log_error_errno(r, "gc: snapshot %s in index.json is unreadable (%m); refusing to delete anything",
                                                       digest_str(&cur, ds));
                        log_warning("gc: parent %s is unreadable; its chain ends there",
                                    digest_str(&cur, ds));
                        chain = path[n_path - 1];
                        break;
                }
                r = node_add(g, s, &idx);
                if (r < 0)
                        return r;
                if (n_path == cap_path) {
                        size_t *p = reallocarray(path, cap_path ? cap_path * 2 : 16, sizeof *p);
                        if (!p)
                                return -ENOMEM;
                        path = p;
                        cap_path = cap_path ? cap_path * 2 : 16;
                }
                path[n_path++] = idx;
                if (!s->config.has_parent) {
                        chain = idx;
                        break;
                }
                r = backend_has(g->b, &s->config.parent);
                if (r < 0)
                        return log_error_errno(r, "gc: look up %s: %m", digest_str(&s->config.parent, ds));
                if (r == 0) {
                        chain = idx;
                        break;
                }
                cur = s->config.parent;
        }
        for (size_t i = 0; i < n_path; i++)
                g->nodes[path[i]].chain = chain;
        if (!digest_set_get(g->node_of, root, &idx))
                return -EINVAL;
        *ret = idx;
        return 0;
}

static int root_cmp(const void *a, const void *b, void *userdata)
{
        const struct gc_node *nodes = userdata;
        const struct gc_node *x = &nodes[*(const size_t *)a], *y = &nodes[*(const size_t *)b];
        int c;

        if (x->chain != y->chain)
                return x->chain < y->chain ? -1 : 1;
        if (x->generation != y->generation)
                return x->generation > y->generation ? -1 : 1; /* newest first */
        c = strcmp(y->created, x->created);
        if (c)
                return c;
        return digest_cmp(&x->d, &y->d);
}

static int gc_drop(json_t *index, void *userdata)
{
        struct gc *g = userdata;
        _cleanup_(digest_set_freep) struct digest_set *seen = NULL;
        _cleanup_(freep) size_t *roots = NULL;
        size_t n_roots = 0, kept = 0;
        json_t *arr;
        bool created;
        int r;

        r = index_manifests(index, &arr, &created);
        if (r < 0)
                return r;
        seen = digest_set_new();
        roots = calloc(json_array_size(arr) + 1, sizeof *roots);
        if (!seen || !roots)
                return -ENOMEM;

        for (size_t i = 0; i < json_array_size(arr); i++) {
                _cleanup_(json_decrefp) json_t *m = NULL;
                struct digest d;
                size_t idx = 0;

                if (index_entry_digest(json_array_get(arr, i), &d) < 0)
                        return log_error_errno(-EBADMSG, "gc: index.json manifests[%zu] has no valid digest; refusing to delete anything",
                                               i);
                r = digest_set_put(seen, &d, 0);
                if (r < 0)
                        return r;
                if (r == 0)
                        continue;
                r = read_manifest_json(g->b, &d, &m);
                if (r < 0)
                        return r;
                if (!is_snapshot(m))
                        continue; /* not ours: never dropped */
                r = chain_of(g, &d, &idx);
                if (r < 0)
                        return r;
                roots[n_roots++] = idx;
        }

        qsort_r(roots, n_roots, sizeof *roots, root_cmp, g->nodes);
        for (size_t i = 0; i < n_roots; i++) {
                const struct gc_node *n = &g->nodes[roots[i]];
                if (i == 0 || n->chain != g->nodes[roots[i - 1]].chain)
                        kept = 0;
                if (kept++ < g->o->keep_last)
                        continue;
                if (digest_set_put(g->drop, &n->d, 0) < 0)
                        return -ENOMEM;
                g->st.roots_dropped++;
        }
        if (g->st.roots_dropped == 0 || g->o->dry_run)
                return 0;
        for (size_t i = json_array_size(arr); i-- > 0;) {
                struct digest d;
                if (index_entry_digest(json_array_get(arr, i), &d) == 0 && digest_set_get(g->drop, &d, NULL))
                        json_array_remove(arr, i);
        }
        return 1;
}

/* ---- step 2: mark and sweep ---- */

static int mark_manifest(struct gc *g, struct digest_set *marked, const struct digest *d,
                         unsigned depth)
{
        _cleanup_(json_decrefp) json_t *m = NULL;
        const json_t *layers, *manifests, *config;
        char ds[DIGEST_STR_LEN + 1];
        struct digest x;
        int r;

        r = digest_set_put(marked, d, 0);
        if (r <= 0)
                return r;
        if (depth > GC_DEPTH_MAX)
                return log_error_errno(-EBADMSG, "gc: %s nests indexes over %d levels deep; refusing to delete anything",
                                       digest_str(d, ds), GC_DEPTH_MAX);
        r = read_manifest_json(g->b, d, &m);
        if (r < 0)
                return r;
        config = json_object_get(m, "config");
        layers = json_object_get(m, "layers");
        manifests = json_object_get(m, "manifests");
        if ((layers && !json_is_array(layers)) || (manifests && !json_is_array(manifests)))
                return log_error_errno(-EBADMSG, "gc: manifest %s: layers or manifests is not an array; refusing to delete anything",
                                       digest_str(d, ds));
        if (config) {
                if (index_entry_digest(config, &x) < 0)
                        return log_error_errno(-EBADMSG, "gc: manifest %s: config has no valid digest; refusing to delete anything",
                                               digest_str(d, ds));
                if (digest_set_put(marked, &x, 0) < 0)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < json_array_size(layers); i++) {
                if (index_entry_digest(json_array_get(layers, i), &x) < 0)
                        return log_error_errno(-EBADMSG, "gc: manifest %s: layers[%zu] has no valid digest; refusing to delete anything",
                                               digest_str(d, ds), i);
                if (digest_set_put(marked, &x, 0) < 0)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < json_array_size(manifests); i++) {
                if (index_entry_digest(json_array_get(manifests, i), &x) < 0)
                        return log_error_errno(-EBADMSG, "gc: index %s: manifests[%zu] has no valid digest; refusing to delete anything",
                                               digest_str(d, ds), i);
                r = mark_manifest(g, marked, &x, depth + 1);
                if (r < 0)
                        return r;
        }
        return 0;
}

struct blob_vec {
        struct blob_info *v;
        size_t n, cap;
};

static int collect_blob(const struct blob_info *info, void *userdata)
{
        struct blob_vec *bv = userdata;

        if (bv->n == bv->cap) {
                size_t cap = bv->cap ? bv->cap * 2 : 256;
                struct blob_info *v = reallocarray(bv->v, cap, sizeof *v);
                if (!v)
                        return -ENOMEM;
                bv->v = v;
                bv->cap = cap;
        }
        bv->v[bv->n++] = *info;
        return 0;
}

static bool young(const struct gc *g, const struct timespec *now, const struct timespec *mtime)
{
        int64_t age_ns;

        if (g->o->grace_sec == 0)
                return false;
        age_ns = ((int64_t)now->tv_sec - (int64_t)mtime->tv_sec) * (int64_t)NSEC_PER_SEC +
                 ((int64_t)now->tv_nsec - (int64_t)mtime->tv_nsec);
        return age_ns < 0 || g->o->grace_sec > (uint64_t)INT64_MAX / NSEC_PER_SEC ||
               (uint64_t)age_ns < g->o->grace_sec * NSEC_PER_SEC;
}

static int gc_sweep(json_t *index, void *userdata)
{
        struct gc *g = userdata;
        _cleanup_(digest_set_freep) struct digest_set *marked = NULL, *roots = NULL, *pinned = NULL;
        _cleanup_(freep) struct blob_info *blobs = NULL;
        struct blob_vec bv = {};
        char ds[DIGEST_STR_LEN + 1];
        struct timespec now;
        json_t *arr;
        bool created;
        int r;

        r = index_manifests(index, &arr, &created);
        if (r < 0)
                return r;
        marked = digest_set_new();
        roots = digest_set_new();
        pinned = digest_set_new();
        if (!marked || !roots || !pinned)
                return -ENOMEM;

        for (size_t i = 0; i < json_array_size(arr); i++) {
                struct digest d;

                if (index_entry_digest(json_array_get(arr, i), &d) < 0)
                        return log_error_errno(-EBADMSG, "gc: index.json manifests[%zu] has no valid digest; refusing to delete anything",
                                               i);
                /* A dry run did not drop them, but reports as if it had. */
                if (g->o->dry_run && digest_set_get(g->drop, &d, NULL))
                        continue;
                if (digest_set_put(roots, &d, 0) < 0)
                        return -ENOMEM;
                r = mark_manifest(g, marked, &d, 0);
                if (r < 0)
                        return r;
        }
        g->st.roots_kept = digest_set_size(roots);
        for (size_t i = 0; i < g->o->n_pinned; i++) {
                const struct digest *d = &g->o->pinned[i];

                r = digest_set_put(pinned, d, 0);
                if (r < 0)
                        return -ENOMEM;
                if (r == 0)
                        continue; /* listed twice */
                r = backend_has(g->b, d);
                if (r < 0)
                        return log_error_errno(r, "gc: look up %s: %m", digest_str(d, ds));
                if (r == 0) {
                        log_warning("gc: snapshot %s, which a mount uses, is not in the store",
                                    digest_str(d, ds));
                        continue;
                }
                g->st.roots_pinned++;
                r = mark_manifest(g, marked, d, 0);
                if (r < 0)
                        return r;
        }

        r = backend_list(g->b, collect_blob, &bv);
        blobs = bv.v;
        if (r < 0)
                return log_error_errno(r, "gc: list blobs: %m");
        clock_gettime(CLOCK_REALTIME, &now);
        for (size_t i = 0; i < bv.n; i++) {
                const struct blob_info *bi = &blobs[i];

                if (digest_set_get(marked, &bi->digest, NULL)) {
                        g->st.blobs_kept++;
                        continue;
                }
                if (young(g, &now, &bi->mtime)) {
                        g->st.blobs_young++;
                        continue;
                }
                if (!g->o->dry_run) {
                        r = backend_remove(g->b, &bi->digest);
                        if (r == -ENOENT)
                                continue;
                        if (r < 0) {
                                log_error_errno(r, "gc: remove %s: %m", digest_str(&bi->digest, ds));
                                if (!g->err)
                                        g->err = r;
                                continue;
                        }
                }
                g->st.blobs_removed++;
                g->st.bytes_removed += bi->size;
        }
        return 0;
}

int store_gc(struct backend *b, const struct gc_opts *o, struct gc_stats *ret)
{
        _cleanup_(digest_set_freep) struct digest_set *drop = NULL, *node_of = NULL;
        struct gc g;
        int r;

        if (!b || !o || (o->n_pinned && !o->pinned))
                return -EINVAL;
        drop = digest_set_new();
        node_of = digest_set_new();
        if (!drop || !node_of)
                return -ENOMEM;
        g = (struct gc){ .b = b, .o = o, .drop = drop, .node_of = node_of };

        if (o->keep_last > 0) {
                r = backend_index_transaction(b, gc_drop, &g);
                free(g.nodes);
                if (r < 0)
                        return log_error_errno(r, "gc: keep-last: %m");
        }
        r = backend_index_transaction(b, gc_sweep, &g);
        if (r < 0)
                return log_error_errno(r, "gc: %m");
        if (g.err < 0)
                return g.err;
        if (ret)
                *ret = g.st;
        return 0;
}
