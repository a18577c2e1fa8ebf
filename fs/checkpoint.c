/* checkpoint.c — fs_checkpoint(): the mount's current content as a new
 * snapshot in its own store (issue 6, first version).
 *
 * Under the write barrier (fs->barrier exclusive: no change is in progress
 * and none starts), the model is copied under fs->lock (memory only: every
 * reachable inode's attributes, xattrs, symlink target, directory entries,
 * and a regular file's chunk presence), then fs->lock is dropped and the
 * chunks the layer holds are read (fs_read_file(), which composes layer,
 * base and zeros exactly as a READ does) and handed to the packer, which
 * hashes them and packs the new ones, deduplicated against the base tree: a
 * chunk the layer holds with the base's bytes costs nothing. Chunks the
 * layer does not hold keep the base tree's reference without being read.
 * Then the barrier is released, and the tree is built and published with no
 * lock held.
 *
 * What this version does not do yet (DESIGN.md's nine steps): switch
 * writable layers, so the barrier covers the reading, hashing, compressing
 * and pack writing of the dirty chunks (the stall is O(dirty bytes), not
 * O(1)); fold (the mount keeps its base and layer, and every checkpoint
 * diffs against the same base again: correct, not minimal); parallel
 * hashing. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fs-internal.h"
#include "trace.h"
#include "store/packer.h"

/* A reachable inode, copied from the model. */
struct ck_inode {
        struct tree_attr attr;
        uint32_t refs; /* directory entries naming it */
        char *target;  /* a symlink's */
        struct wl_xattr *xattrs;
        size_t n_xattrs;
        /* Regular files. */
        bool has_data, in_base;
        struct tree_inode base;
        uint64_t base_limit;
        uint8_t *present; /* n_present bytes */
        size_t n_present;
        /* Filled by the data phase: per chunk a base tree chunk index (bit
         * of from_base set), a packer ref, or TREE_HOLE. */
        uint32_t *chunks;
        uint8_t *from_base;
        uint32_t nchunks;
        uint64_t (*extents)[2];
        size_t n_extents;
};

struct ck_dirent {
        uint32_t dir;  /* index into inodes */
        uint32_t child;
        char *name;
};

struct ck {
        struct fs *fs;
        struct ck_inode *inodes;
        size_t n_inodes, cap_inodes;
        struct ck_dirent *dirents;
        size_t n_dirents, cap_dirents;
        uint32_t *index; /* ino -> 1 + index into inodes; 0: not seen */
        uint64_t next_ino;
        struct packer *packer;
        struct snapshot **recent; /* the store's newest snapshots, known to the packer */
        size_t n_recent;
        struct chunk_codec *codec;
        uint64_t bytes_dirty;
};

static void ck_release(struct ck *c)
{
        for (size_t i = 0; i < c->n_inodes; i++) {
                struct ck_inode *in = &c->inodes[i];
                free(in->target);
                for (size_t x = 0; x < in->n_xattrs; x++) {
                        free(in->xattrs[x].name);
                        free(in->xattrs[x].value);
                }
                free(in->xattrs);
                free(in->present);
                free(in->chunks);
                free(in->from_base);
                free(in->extents);
        }
        free(c->inodes);
        for (size_t i = 0; i < c->n_dirents; i++)
                free(c->dirents[i].name);
        free(c->dirents);
        free(c->index);
        packer_free(c->packer); /* refers to the trees below */
        for (size_t i = 0; i < c->n_recent; i++)
                snapshot_free(c->recent[i]);
        free(c->recent);
        chunk_codec_free(c->codec);
}

static int xattr_copy(struct wl_xattr *dst, const char *name, const void *value, size_t len)
{
        dst->name = strdup(name);
        dst->value = malloc(MAX(len, (size_t)1));
        dst->len = len;
        if (!dst->name || !dst->value)
                return -ENOMEM;
        memcpy(dst->value, value, len);
        return 0;
}

/* add_inode(): copy inode ino from the model (fs->lock held); *ret_idx. */
static int add_inode(struct ck *c, uint64_t ino, uint32_t *ret_idx)
{
        struct fs *fs = c->fs;
        struct fs_inode *p;
        struct ck_inode *in;
        struct tree_inode ti;
        bool base_ok;
        int r;

        if (ino >= c->next_ino)
                return -EIO;
        if (c->n_inodes == c->cap_inodes) {
                size_t n = c->cap_inodes ? 2 * c->cap_inodes : 256;
                struct ck_inode *v = realloc(c->inodes, n * sizeof *v);
                if (!v)
                        return -ENOMEM;
                c->inodes = v;
                c->cap_inodes = n;
        }
        in = &c->inodes[c->n_inodes];
        memset(in, 0, sizeof *in);
        c->index[ino] = (uint32_t)++c->n_inodes;
        *ret_idx = (uint32_t)(c->n_inodes - 1);

        r = child_attr(fs, ino, &in->attr);
        if (r < 0)
                return r;
        p = ino_get(fs, ino);
        base_ok = tree_inode(fs->tree, ino, &ti) >= 0;
        in->in_base = base_ok;
        if (base_ok)
                in->base = ti;

        /* xattrs: the layer's own set, else the base's */
        if (p && p->xattrs_own) {
                if (p->n_xattrs) {
                        in->xattrs = calloc(p->n_xattrs, sizeof *in->xattrs);
                        if (!in->xattrs)
                                return -ENOMEM;
                }
                in->n_xattrs = p->n_xattrs;
                for (size_t x = 0; x < p->n_xattrs; x++) {
                        r = xattr_copy(&in->xattrs[x], p->xattrs[x].name, p->xattrs[x].value,
                                       p->xattrs[x].len);
                        if (r < 0)
                                return r;
                }
        } else if (base_ok) {
                uint32_t n = tree_xattr_count(fs->tree, &ti);
                if (n) {
                        in->xattrs = calloc(n, sizeof *in->xattrs);
                        if (!in->xattrs)
                                return -ENOMEM;
                }
                in->n_xattrs = n;
                for (uint32_t x = 0; x < n; x++) {
                        const char *name;
                        const void *value;
                        size_t len;
                        r = tree_xattr(fs->tree, &ti, x, &name, &value, &len);
                        if (r >= 0)
                                r = xattr_copy(&in->xattrs[x], name, value, len);
                        if (r < 0)
                                return r;
                }
        }

        if (S_ISLNK(in->attr.mode)) {
                const char *t = NULL;
                size_t len = 0;
                if (p && p->symlink)
                        t = p->symlink;
                else if (base_ok && tree_symlink(fs->tree, &ti, &t, &len) < 0)
                        t = NULL;
                if (!t)
                        return -EIO;
                in->target = strdup(t);
                if (!in->target)
                        return -ENOMEM;
                in->attr.size = strlen(t);
        } else if (S_ISDIR(in->attr.mode))
                in->attr.size = 0;
        else if (S_ISREG(in->attr.mode) && p && p->has_data) {
                in->has_data = true;
                in->base_limit = p->base_limit;
                in->n_present = p->n_present;
                if (p->n_present) {
                        in->present = malloc(p->n_present);
                        if (!in->present)
                                return -ENOMEM;
                        memcpy(in->present, p->present, p->n_present);
                }
        }
        if (!S_ISREG(in->attr.mode) && !S_ISCHR(in->attr.mode) && !S_ISBLK(in->attr.mode))
                in->attr.rdev = 0;
        return 0;
}

static int add_dirent(struct ck *c, uint32_t dir, uint32_t child, const char *name)
{
        if (c->n_dirents == c->cap_dirents) {
                size_t n = c->cap_dirents ? 2 * c->cap_dirents : 256;
                struct ck_dirent *v = realloc(c->dirents, n * sizeof *v);
                if (!v)
                        return -ENOMEM;
                c->dirents = v;
                c->cap_dirents = n;
        }
        c->dirents[c->n_dirents] = (struct ck_dirent){ .dir = dir, .child = child, .name = strdup(name) };
        if (!c->dirents[c->n_dirents].name)
                return -ENOMEM;
        c->n_dirents++;
        return 0;
}

static int visit_child(struct ck *c, uint32_t dir, const char *name, uint64_t ino)
{
        uint32_t idx;
        int r;

        if (ino >= c->next_ino)
                return -EIO;
        if (c->index[ino])
                idx = c->index[ino] - 1;
        else {
                r = add_inode(c, ino, &idx);
                if (r < 0)
                        return r;
        }
        c->inodes[idx].refs++;
        return add_dirent(c, dir, idx, name);
}

/* copy_model(): every inode reachable from the root, breadth first
 * (fs->lock held). Unlinked inodes (open, or deleted base files) are not
 * reachable and so not in the snapshot. */
static int copy_model(struct ck *c)
{
        struct fs *fs = c->fs;
        uint32_t root;
        int r;

        c->next_ino = MAX(fs->next_ino, tree_next_ino(fs->tree));
        c->index = calloc(c->next_ino, sizeof *c->index);
        if (!c->index)
                return -ENOMEM;
        r = add_inode(c, TREE_ROOT_INO, &root);
        if (r < 0)
                return r;
        for (size_t i = 0; i < c->n_inodes; i++) {
                uint64_t ino = c->inodes[i].attr.ino;
                struct fs_inode *p;

                if (!S_ISDIR(c->inodes[i].attr.mode))
                        continue;
                p = ino_get(fs, ino);
                if (p && p->dir) {
                        for (size_t e = 0; e < p->dir->n; e++) {
                                const struct wl_dirent *de = &p->dir->ents[e];
                                if (!de->name)
                                        continue;
                                r = visit_child(c, (uint32_t)i, de->name, de->ino);
                                if (r < 0)
                                        return r;
                        }
                } else if (c->inodes[i].in_base) {
                        struct tree_inode ti = c->inodes[i].base;
                        uint32_t n = tree_dir_count(fs->tree, &ti);
                        for (uint32_t e = 0; e < n; e++) {
                                const char *name;
                                size_t len;
                                uint64_t child;
                                r = tree_dirent(fs->tree, &ti, e, &name, &len, &child);
                                if (r >= 0)
                                        r = visit_child(c, (uint32_t)i, name, child);
                                if (r < 0)
                                        return r;
                        }
                }
        }
        return 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (p[i])
                        return false;
        return true;
}

static int add_extent(struct ck_inode *in, uint64_t off, uint64_t len)
{
        if (in->n_extents && in->extents[in->n_extents - 1][0] + in->extents[in->n_extents - 1][1] == off) {
                in->extents[in->n_extents - 1][1] += len;
                return 0;
        }
        /* at most one extent per chunk: room was made for nchunks */
        in->extents[in->n_extents][0] = off;
        in->extents[in->n_extents][1] = len;
        in->n_extents++;
        return 0;
}

/* file_data(): a regular file's chunk list and extents (no fs->lock held;
 * the barrier is). */
static int file_data(struct ck *c, struct ck_inode *in, uint8_t *buf)
{
        struct fs *fs = c->fs;
        const struct tree *t = fs->tree;
        uint64_t cs = fs->chunk_size, size = in->attr.size;
        uint32_t n = (uint32_t)((size + cs - 1) / cs);
        int r;

        in->nchunks = n;
        if (!n)
                return 0;
        in->chunks = calloc(n, sizeof *in->chunks);
        in->from_base = calloc(n, 1);
        if (!in->chunks || !in->from_base)
                return -ENOMEM;
        if (!in->has_data) {
                /* Untouched: the base's chunks and extents, nothing read. A
                 * new file without data cannot have a size. */
                uint32_t ne;
                if (!in->in_base || tree_file_nchunks(t, &in->base) != n)
                        return -EIO;
                ne = tree_extent_count(t, &in->base);
                in->extents = calloc(MAX(ne, 1u), sizeof *in->extents);
                if (!in->extents)
                        return -ENOMEM;
                for (uint32_t i = 0; i < n; i++) {
                        in->chunks[i] = tree_file_chunk(t, &in->base, i);
                        in->from_base[i] = 1;
                }
                for (uint32_t e = 0; e < ne; e++)
                        tree_extent(t, &in->base, e, &in->extents[e][0], &in->extents[e][1]);
                in->n_extents = ne;
                return 0;
        }
        in->extents = calloc(n, sizeof *in->extents);
        if (!in->extents)
                return -ENOMEM;
        for (uint32_t i = 0; i < n; i++) {
                uint64_t off = (uint64_t)i * cs, len = MIN(cs, size - off);
                bool present = i < in->n_present && in->present[i];
                ssize_t got;

                /* A chunk the layer does not hold, whole below base_limit
                 * and as long as the base's: the base's reference. */
                if (in->in_base && !present && i < tree_file_nchunks(t, &in->base) &&
                    off + len <= in->base_limit && len == MIN(cs, in->base.attr.size - off)) {
                        in->chunks[i] = tree_file_chunk(t, &in->base, i);
                        in->from_base[i] = 1;
                        if (in->chunks[i] != TREE_HOLE)
                                add_extent(in, off, len);
                        continue;
                }
                got = fs_read_file(fs, in->attr.ino, off, buf, (size_t)len);
                if (got < 0)
                        return (int)got;
                if ((uint64_t)got < len)
                        memset(buf + got, 0, (size_t)(len - (uint64_t)got));
                c->bytes_dirty += len;
                if (all_zero(buf, (size_t)len)) {
                        in->chunks[i] = TREE_HOLE;
                        continue;
                }
                r = packer_add(c->packer, c->codec, buf, (size_t)len, &in->chunks[i]);
                if (r < 0)
                        return r;
                add_extent(in, off, len);
        }
        return 0;
}

static int build_tree(struct ck *c, void **ret_blob, size_t *ret_len, struct digest *ret_digest)
{
        const struct tree *t = c->fs->tree;
        struct tree_builder *tb = tree_builder_new(c->fs->chunk_size);
        _cleanup_(freep) uint32_t *handles = NULL, *bchunk = NULL, *tmp = NULL, *basemap = NULL;
        uint32_t nbase = tree_n_chunks(t);
        size_t n_refs = 0;
        int r = -ENOMEM;

        if (!tb)
                return -ENOMEM;
        handles = calloc(MAX(c->n_inodes, (size_t)1), sizeof *handles);
        basemap = malloc(MAX(nbase, 1u) * sizeof *basemap);
        if (!handles || !basemap)
                goto fail;
        memset(basemap, 0xff, MAX(nbase, 1u) * sizeof *basemap);
        r = packer_add_to_builder(c->packer, tb, &bchunk, &n_refs);
        if (r < 0)
                goto fail;
        for (size_t i = 0; i < c->n_inodes; i++) {
                struct ck_inode *in = &c->inodes[i];
                struct tree_attr a = in->attr;

                if (!S_ISDIR(a.mode))
                        a.nlink = in->refs;
                r = tree_builder_add_inode(tb, &a, &handles[i]);
                if (r < 0)
                        goto fail;
                if (in->target) {
                        r = tree_builder_set_symlink(tb, handles[i], in->target, strlen(in->target));
                        if (r < 0)
                                goto fail;
                }
                for (size_t x = 0; x < in->n_xattrs; x++) {
                        r = tree_builder_add_xattr(tb, handles[i], in->xattrs[x].name, in->xattrs[x].value,
                                                   in->xattrs[x].len);
                        if (r < 0)
                                goto fail;
                }
                if (!in->nchunks)
                        continue;
                free(tmp);
                tmp = malloc(sizeof(uint32_t) * in->nchunks);
                if (!tmp) {
                        r = -ENOMEM;
                        goto fail;
                }
                for (uint32_t k = 0; k < in->nchunks; k++) {
                        uint32_t ref = in->chunks[k];
                        if (ref == TREE_HOLE)
                                tmp[k] = TREE_HOLE;
                        else if (!in->from_base[k]) {
                                if (ref >= n_refs) {
                                        r = -EIO;
                                        goto fail;
                                }
                                tmp[k] = bchunk[ref];
                        } else {
                                if (ref >= nbase) {
                                        r = -EIO;
                                        goto fail;
                                }
                                if (basemap[ref] == UINT32_MAX) {
                                        struct tree_chunk ch;
                                        uint32_t pk;
                                        r = tree_chunk(t, ref, &ch);
                                        if (r >= 0)
                                                r = tree_builder_add_pack(tb, tree_pack(t, ch.pack), &pk);
                                        if (r >= 0) {
                                                ch.pack = pk;
                                                r = tree_builder_add_chunk(tb, &ch, &basemap[ref]);
                                        }
                                        if (r < 0)
                                                goto fail;
                                }
                                tmp[k] = basemap[ref];
                        }
                }
                r = tree_builder_set_chunks(tb, handles[i], tmp, in->nchunks);
                if (r < 0)
                        goto fail;
                for (size_t e = 0; e < in->n_extents; e++) {
                        r = tree_builder_add_extent(tb, handles[i], in->extents[e][0], in->extents[e][1]);
                        if (r < 0)
                                goto fail;
                }
        }
        for (size_t i = 0; i < c->n_dirents; i++) {
                const struct ck_dirent *d = &c->dirents[i];
                r = tree_builder_add_dirent(tb, handles[d->dir], d->name, strlen(d->name),
                                            c->inodes[d->child].attr.ino);
                if (r < 0)
                        goto fail;
        }
        tree_builder_set_next_ino(tb, c->next_ino);
        r = tree_builder_finish(tb, CHUNK_LEVEL_DEFAULT, ret_blob, ret_len, ret_digest);
fail:
        tree_builder_free(tb);
        return r;
}

int fs_checkpoint(struct fs *fs, const struct fs_checkpoint_opts *o, struct fs_checkpoint_result *ret)
{
        struct ck c = { .fs = fs };
        struct fs_checkpoint_result res = {};
        struct packer_stats ps;
        _cleanup_(freep) uint8_t *buf = NULL;
        _cleanup_(freep) void *blob = NULL, *trace = NULL;
        size_t trace_len = 0;
        struct digest tree_digest;
        json_t *stats = NULL;
        uint64_t t0 = now_ns(), b0;
        size_t blob_len = 0;
        bool held = false, set_ro = false;
        int r;

        if (!fs || !o || !o->store || !ret)
                return -EINVAL;
        buf = malloc(fs->chunk_size);
        c.codec = chunk_codec_new(CHUNK_LEVEL_DEFAULT);
        if (!buf || !c.codec) {
                r = -ENOMEM;
                goto fail;
        }
        r = packer_new(o->store, fs->chunk_size, CHUNK_LEVEL_DEFAULT, &c.packer);
        if (r >= 0)
                r = packer_add_known(c.packer, fs->tree);
        if (r < 0)
                goto fail;
        /* Also known: what earlier checkpoints (and commits) stored, so a
         * checkpoint with nothing new since the last packs nothing. */
        if (store_recent(o->store, fs->chunk_size, FS_CHECKPOINT_RECENT, &c.recent, &c.n_recent) >= 0)
                for (size_t i = 0; i < c.n_recent && r >= 0; i++)
                        r = packer_add_known(c.packer, c.recent[i]->tree);
        if (r < 0)
                goto fail;

        pthread_rwlock_wrlock(&fs->barrier);
        held = true;
        b0 = now_ns();
        pthread_mutex_lock(&fs->lock);
        r = copy_model(&c);
        pthread_mutex_unlock(&fs->lock);
        if (r < 0) {
                log_error_errno(r, "checkpoint: copy the model: %m");
                goto fail;
        }
        for (size_t i = 0; i < c.n_inodes; i++) {
                if (!S_ISREG(c.inodes[i].attr.mode))
                        continue;
                r = file_data(&c, &c.inodes[i], buf);
                if (r < 0) {
                        log_error_errno(r, "checkpoint: data of inode %" PRIu64 ": %m", c.inodes[i].attr.ino);
                        goto fail;
                }
        }
        r = packer_flush(c.packer);
        if (r >= 0 && o->readonly) { /* a pause: nothing changes after this instant */
                atomic_store(&fs->readonly, true);
                set_ro = true;
        }
        pthread_rwlock_unlock(&fs->barrier);
        held = false;
        res.barrier_ns = now_ns() - b0;
        if (o->after_barrier)
                o->after_barrier(o->ctx);
        if (r < 0) {
                log_error_errno(r, "checkpoint: write packs: %m");
                goto fail;
        }

        r = build_tree(&c, &blob, &blob_len, &tree_digest);
        if (r < 0) {
                log_error_errno(r, "checkpoint: build the tree: %m");
                goto fail;
        }
        packer_get_stats(c.packer, &ps);
        res.bytes_dirty = c.bytes_dirty;
        res.bytes_new = ps.bytes_packed;
        res.chunks_new = ps.chunks_new;
        res.chunks_reused = ps.chunks_reused;
        stats = json_pack("{s:I, s:I, s:I, s:I, s:I}", "bytesDirty", (json_int_t)res.bytes_dirty,
                          "chunksNew", (json_int_t)ps.chunks_new, "bytesNew", (json_int_t)ps.bytes_new,
                          "bytesPacked", (json_int_t)ps.bytes_packed, "packsNew", (json_int_t)ps.packs_new);
        if (!stats) {
                r = -ENOMEM;
                goto fail;
        }
        if (o->prev_tree && o->prev_digest && digest_eq(&tree_digest, o->prev_tree)) {
                /* Nothing changed since the last checkpoint: the same snapshot. */
                res.digest = *o->prev_digest;
                res.reused = true;
                r = o->tag ? store_tag(o->store, &res.digest, o->tag) : 0;
        } else {
                struct snapshot_new n = {
                        .tree_blob = blob,
                        .tree_len = blob_len,
                        .tree_digest = tree_digest,
                        .parent = o->parent,
                        .chunk_size = fs->chunk_size,
                        .labels = o->labels,
                        .stats = stats,
                        .tag = o->tag,
                        .trace = o->trace,
                        .trace_len = o->trace_len,
                };
                /* The trace: the caller's, else what this mount recorded. */
                r = o->trace ? 0 : fs_trace_blob(fs, &trace, &trace_len);
                if (r >= 0 && !o->trace) {
                        n.trace = trace;
                        n.trace_len = trace_len;
                }
                if (r >= 0)
                        r = snapshot_publish(o->store, &n, &res.digest);
        }
        if (r < 0) {
                log_error_errno(r, "checkpoint: publish: %m");
                goto fail;
        }
        res.tree_digest = tree_digest;
        res.generation = o->parent ? o->parent->config.generation + 1 : 0;
        res.duration_ns = now_ns() - t0;
        *ret = res;
        r = 0;
fail:
        if (held) {
                pthread_rwlock_unlock(&fs->barrier);
                if (o->after_barrier)
                        o->after_barrier(o->ctx);
        }
        if (r < 0 && set_ro)
                fs_set_readonly(fs, false);
        json_decref(stats);
        ck_release(&c);
        return r;
}
