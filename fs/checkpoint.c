/* checkpoint.c — fs_checkpoint(): the mount's current content as a new
 * snapshot in its own store (issue 6).
 *
 * The barrier (fs->barrier exclusive: no change is in progress and none
 * starts) is held only while the model is copied (memory only: every
 * reachable inode's attributes, xattrs, symlink target, directory entries,
 * and a regular file's chunk presence) and the chunks the writable layer
 * holds are frozen: listed, not read. No data byte is read, hashed or
 * copied under it. After it, changes go on while the checkpoint reads the
 * frozen chunks from the layer's data files; a change to a chunk not read
 * yet first saves that one chunk to a temporary file (copy-before-write,
 * ck_before_change(), as a device-mapper snapshot origin does), and a data
 * file removed meanwhile stays until the checkpoint ends. So the snapshot is
 * the instant of the barrier, the stall does not grow with the dirty bytes,
 * and a writer pays at most one chunk copy per chunk it touches first.
 *
 * Workers (one per core) hash the chunks and pack the new ones,
 * deduplicated against the base tree and the store's newest snapshots: a
 * chunk the layer holds with the base's bytes costs nothing. Chunks the
 * layer does not hold keep the base tree's reference without being read.
 * Then the tree is built and published with no lock held.
 *
 * Not done (DESIGN.md's nine steps): the layer switch and fold; the mount
 * keeps its base and layer, so every checkpoint hashes what the layer holds
 * since the mount (new bytes are still stored once). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
        /* target, and the xattrs' names and values, point into the base
         * tree (immutable while the fs lives): not copied, not freed. */
        bool target_borrowed, xattrs_borrowed;
        /* Regular files. */
        bool has_data, in_base;
        struct tree_inode base;
        uint64_t base_limit;
        uint8_t *present; /* n_present bytes */
        size_t n_present;
        /* Filled by the data phase: per chunk a packer ref (from[] SRC_PACKER),
         * a chunk index of the base tree (SRC_BASE) or of the last
         * checkpoint's (SRC_LAST), or TREE_HOLE. */
        uint32_t *chunks;
        uint8_t *from;
        uint32_t nchunks;
        uint64_t (*extents)[2];
        size_t n_extents;
};

struct ck_dirent {
        uint32_t dir;  /* index into inodes */
        uint32_t child;
        char *name;
        bool borrowed; /* name points into the base tree: not freed */
};

struct ck {
        struct fs *fs;
        struct ck_inode *inodes;
        size_t n_inodes, cap_inodes;
        struct ck_dirent *dirents;
        size_t n_dirents, cap_dirents;
        uint32_t *index; /* ino -> 1 + index into inodes; 0: not seen */
        size_t cap_index;
        uint64_t next_ino;
        struct packer *packer;
        struct snapshot **recent; /* the store's newest snapshots, known to the packer */
        size_t n_recent;
        atomic_uint_fast64_t bytes_dirty;
        struct ck_job *jobs; /* the data phase's */
        size_t n_jobs;
        atomic_size_t next; /* its next job */
        atomic_int err;     /* its first error */
        struct ck_last *last; /* fs->ck_last at the barrier (stays until we replace it) */
};

static void ck_release(struct ck *c)
{
        for (size_t i = 0; i < c->n_inodes; i++) {
                struct ck_inode *in = &c->inodes[i];
                if (!in->target_borrowed)
                        free(in->target);
                for (size_t x = 0; x < in->n_xattrs && !in->xattrs_borrowed; x++) {
                        free(in->xattrs[x].name);
                        free(in->xattrs[x].value);
                }
                free(in->xattrs);
                free(in->present);
                free(in->chunks);
                free(in->from);
                free(in->extents);
        }
        free(c->inodes);
        for (size_t i = 0; i < c->n_dirents; i++)
                if (!c->dirents[i].borrowed)
                        free(c->dirents[i].name);
        free(c->dirents);
        free(c->index);
        free(c->jobs);
        packer_free(c->packer); /* refers to the trees below */
        for (size_t i = 0; i < c->n_recent; i++)
                snapshot_free(c->recent[i]);
        free(c->recent);
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
                in->xattrs_borrowed = true;
                for (uint32_t x = 0; x < n; x++) {
                        const char *name;
                        const void *value;
                        size_t len;
                        r = tree_xattr(fs->tree, &ti, x, &name, &value, &len);
                        if (r < 0)
                                return r;
                        in->xattrs[x] = (struct wl_xattr){ .name = (char *)name, .value = (void *)value, .len = len };
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
                if (p && p->symlink) {
                        in->target = strdup(t);
                        if (!in->target)
                                return -ENOMEM;
                } else {
                        in->target = (char *)t;
                        in->target_borrowed = true;
                }
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

/* add_dirent(): borrow says name points into the base tree (kept, not
 * copied); the layer's names change after the barrier, so they are copied. */
static int add_dirent(struct ck *c, uint32_t dir, uint32_t child, const char *name, bool borrow)
{
        if (c->n_dirents == c->cap_dirents) {
                size_t n = c->cap_dirents ? 2 * c->cap_dirents : 256;
                struct ck_dirent *v = realloc(c->dirents, n * sizeof *v);
                if (!v)
                        return -ENOMEM;
                c->dirents = v;
                c->cap_dirents = n;
        }
        c->dirents[c->n_dirents] = (struct ck_dirent){ .dir = dir, .child = child,
                                                       .name = borrow ? (char *)name : strdup(name),
                                                       .borrowed = borrow };
        if (!c->dirents[c->n_dirents].name)
                return -ENOMEM;
        c->n_dirents++;
        return 0;
}

static int visit_child(struct ck *c, uint32_t dir, const char *name, uint64_t ino, bool borrow)
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
        return add_dirent(c, dir, idx, name, borrow);
}

/* copy_model(): every inode reachable from the root, breadth first
 * (fs->lock held). Unlinked inodes (open, or deleted base files) are not
 * reachable and so not in the snapshot. */
/* alloc_touched(): n zeroed elements, every page written now. */
static void *alloc_touched(size_t n, size_t size)
{
        void *p;

        if (n > SIZE_MAX / size)
                return NULL;
        p = malloc(MAX(n * size, (size_t)1));
        if (p)
                memset(p, 0, n * size);
        return p;
}

/* ck_reserve(): the model copy's arrays, allocated and touched before the
 * barrier. On these VMs the first touch of a page costs a host fault too
 * (~2 µs per 4 KiB): copying the bench's 21,000-inode model into memory
 * that realloc() kept doubling took 4-23 ms under the barrier, most of it
 * page faults (perf). Sized from the inode-number space (each inode is
 * added once) and the base's directory entries, with slack; copy_model()
 * grows them as before if the mount grew past that meanwhile. */
static int ck_reserve(struct ck *c)
{
        struct fs *fs = c->fs;
        size_t ni, nd;

        pthread_mutex_lock(&fs->lock);
        ni = MAX(fs->next_ino, tree_next_ino(fs->tree));
        pthread_mutex_unlock(&fs->lock);
        ni += ni / 8 + 256;
        nd = MAX((size_t)tree_n_dirents(fs->tree), ni);
        nd += nd / 8 + 1024;
        c->inodes = alloc_touched(ni, sizeof *c->inodes);
        c->dirents = alloc_touched(nd, sizeof *c->dirents);
        c->index = alloc_touched(ni, sizeof *c->index);
        if (!c->inodes || !c->dirents || !c->index)
                return -ENOMEM;
        c->cap_inodes = ni;
        c->cap_dirents = nd;
        c->cap_index = ni;
        return 0;
}

static int copy_model(struct ck *c)
{
        struct fs *fs = c->fs;
        uint32_t root;
        int r;

        c->next_ino = MAX(fs->next_ino, tree_next_ino(fs->tree));
        if (c->next_ino > c->cap_index) { /* grew past ck_reserve()'s */
                free(c->index);
                c->index = calloc(c->next_ino, sizeof *c->index);
                if (!c->index)
                        return -ENOMEM;
                c->cap_index = c->next_ino;
        }
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
                                r = visit_child(c, (uint32_t)i, de->name, de->ino, false);
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
                                        r = visit_child(c, (uint32_t)i, name, child, true);
                                if (r < 0)
                                        return r;
                        }
                }
        }
        return 0;
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

/* ---- the frozen chunks (fs->ck) ---- */

enum { CK_DONE, CK_FROZEN, CK_SAVED, CK_ZERO };
enum { SRC_PACKER, SRC_BASE, SRC_LAST };
/* Not known: read the chunk. (TREE_HOLE, UINT32_MAX: known to be zeros;
 * chunk indices stay below both.) */
#define CK_NOREF (UINT32_MAX - 1)

/* A regular file the layer holds data of, at the barrier. */
struct ck_file {
        uint64_t ino;
        uint64_t size;   /* at the barrier */
        uint32_t nchunks;
        uint8_t *state;  /* per chunk: CK_DONE (read, or not the layer's), CK_FROZEN, CK_SAVED,
                          * CK_ZERO (a hole in the data file when a change came) */
        uint64_t *saved; /* per chunk: its offset in the save file (CK_SAVED) */
        uint8_t *touched;  /* per chunk: changed since the barrier */
        uint32_t *last;    /* per chunk: the last checkpoint's chunk index, unchanged since; CK_NOREF */
};

/* What this mount's last checkpoint stored (fs->ck_last): per file the
 * layer holds data of, the chunk of the snapshot's tree that each of its
 * chunks has, as long as no change touched it since (ck_before_change()
 * forgets it). The next checkpoint takes those references unread: it reads
 * and hashes only what changed since the last one (the fold's saving,
 * without switching layers). In memory only: a restarted stasisd reads
 * everything once more. */
struct ck_last_file {
        uint64_t ino;
        uint32_t nchunks;
        uint32_t *ref; /* a chunk of snap's tree, TREE_HOLE, or CK_NOREF: read it */
};

struct ck_last {
        struct snapshot *snap; /* its tree loaded */
        struct ck_last_file *files; /* ascending ino */
        size_t n;
};

struct ck_frozen {
        struct ck_file *files; /* ascending ino */
        size_t n;
        int save_fd;       /* an O_TMPFILE in the state dir: gone with the last close */
        uint64_t save_end;
        uint8_t *buf;      /* one chunk, for saving */
        int err;           /* a save failed: the checkpoint fails */
        uint64_t *removed; /* data files to remove at the end */
        size_t n_removed, cap_removed;
};

static struct ck_file *ck_find(struct ck_frozen *k, uint64_t ino)
{
        size_t lo = 0, hi = k->n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (k->files[mid].ino == ino)
                        return &k->files[mid];
                if (k->files[mid].ino < ino)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return NULL;
}

static struct ck_last_file *last_find(struct ck_last *l, uint64_t ino)
{
        size_t lo = 0, hi = l->n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (l->files[mid].ino == ino)
                        return &l->files[mid];
                if (l->files[mid].ino < ino)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return NULL;
}

static void ck_last_free(struct ck_last *l)
{
        if (!l)
                return;
        for (size_t i = 0; i < l->n; i++)
                free(l->files[i].ref);
        free(l->files);
        snapshot_free(l->snap);
        free(l);
}

void fs_checkpoint_forget(struct fs *fs)
{
        pthread_mutex_lock(&fs->ck_lock);
        ck_last_free(fs->ck_last);
        fs->ck_last = NULL;
        atomic_store(&fs->ck_have_last, false);
        pthread_mutex_unlock(&fs->ck_lock);
}

const struct snapshot *fs_last_checkpoint(struct fs *fs)
{
        /* Replaced only by fs_checkpoint(), which the caller serializes. */
        return fs->ck_last ? fs->ck_last->snap : NULL;
}

/* range(): the chunks [*first, *end) of [off, off + len) (len UINT64_MAX:
 * to the end) among n chunks. */
static void range(uint32_t cs, uint32_t n, uint64_t off, uint64_t len, uint32_t *first, uint32_t *end)
{
        *first = (uint32_t)MIN(off / cs, (uint64_t)n);
        *end = n;
        if (len != UINT64_MAX && off + len < (uint64_t)n * cs)
                *end = (uint32_t)DIV_ROUND_UP(off + len, cs);
}

static size_t chunk_len(uint64_t size, uint32_t cs, uint32_t ci)
{
        uint64_t off = (uint64_t)ci * cs;
        return (size_t)MIN((uint64_t)cs, size - off);
}

/* read_chunk(): n bytes of chunk ci from fd, zeros past its end. */
static int read_chunk(int fd, uint8_t *buf, size_t n, uint64_t off)
{
        ssize_t got = pread_full(fd, buf, n, off);

        if (got < 0)
                return (int)got;
        memset(buf + got, 0, n - (size_t)got);
        return 0;
}

/* A data file's holes as SEEK_DATA tells them, one lseek() per run of
 * holes or per chunk of data: no data in [from, data). */
struct holes {
        uint64_t from, data;
};
#define HOLES_INIT { UINT64_MAX, 0 }

/* in_hole(): [off, off + len) of fd holds no data: a hole (a sparse file's,
 * a truncate's that grew it), so its bytes are zeros and need not be read.
 * SEEK_DATA never reports a hole where there is data, written back or not;
 * where the filesystem cannot tell, everything is data. */
static bool in_hole(int fd, struct holes *h, uint64_t off, uint64_t len)
{
        if (off < h->from || off >= h->data) {
                off_t d = lseek(fd, (off_t)off, SEEK_DATA);
                h->from = off;
                h->data = d >= 0 ? (uint64_t)d : errno == ENXIO ? UINT64_MAX : off;
        }
        return off + len <= h->data;
}

void ck_before_change(struct fs *fs, uint64_t ino, int fd, uint64_t off, uint64_t len)
{
        uint32_t cs = fs->chunk_size, first, end;
        struct holes holes = HOLES_INIT;
        struct ck_last_file *lf;
        struct ck_frozen *k;
        struct ck_file *f;

        if (!atomic_load(&fs->ck_active) && !atomic_load(&fs->ck_have_last))
                return;
        pthread_mutex_lock(&fs->ck_lock);
        /* The last checkpoint's references to these chunks are stale now. */
        lf = fs->ck_last ? last_find(fs->ck_last, ino) : NULL;
        if (lf) {
                range(cs, lf->nchunks, off, len, &first, &end);
                for (uint32_t ci = first; ci < end; ci++)
                        lf->ref[ci] = CK_NOREF;
        }
        k = fs->ck;
        f = k ? ck_find(k, ino) : NULL;
        if (!f) {
                pthread_mutex_unlock(&fs->ck_lock);
                return;
        }
        range(cs, f->nchunks, off, len, &first, &end);
        for (uint32_t ci = first; ci < end; ci++)
                f->touched[ci] = 1;
        for (uint32_t ci = first; !k->err && ci < end; ci++) {
                size_t n;
                int r;
                if (f->state[ci] != CK_FROZEN)
                        continue;
                n = chunk_len(f->size, cs, ci);
                /* Unchanged since the barrier, so a hole now was one then:
                 * nothing to save (truncating a large sparse file must not
                 * copy its holes into the save file). */
                if (in_hole(fd, &holes, (uint64_t)ci * cs, n)) {
                        f->state[ci] = CK_ZERO;
                        continue;
                }
                r = read_chunk(fd, k->buf, n, (uint64_t)ci * cs);
                if (r >= 0)
                        r = pwrite_full(k->save_fd, k->buf, n, k->save_end);
                if (r < 0) {
                        log_error_errno(r, "checkpoint: save chunk %" PRIu32 " of inode %" PRIu64 " before a change: %m",
                                        ci, ino);
                        k->err = r;
                        break;
                }
                f->saved[ci] = k->save_end;
                f->state[ci] = CK_SAVED;
                k->save_end += n;
                atomic_fetch_add(&fs->ck_saved, 1);
        }
        pthread_mutex_unlock(&fs->ck_lock);
}

bool ck_defer_remove(struct fs *fs, uint64_t ino)
{
        struct ck_frozen *k;
        bool defer = false;

        if (!atomic_load(&fs->ck_active))
                return false;
        pthread_mutex_lock(&fs->ck_lock);
        k = fs->ck;
        if (k && ck_find(k, ino)) {
                defer = true;
                if (k->n_removed == k->cap_removed) {
                        size_t n = k->cap_removed ? 2 * k->cap_removed : 16;
                        uint64_t *v = realloc(k->removed, n * sizeof *v);
                        if (v) {
                                k->removed = v;
                                k->cap_removed = n;
                        }
                }
                if (k->n_removed < k->cap_removed)
                        k->removed[k->n_removed++] = ino;
                /* else the next mount removes the orphan */
        }
        pthread_mutex_unlock(&fs->ck_lock);
        return defer;
}

static void ck_frozen_free(struct ck_frozen *k)
{
        if (!k)
                return;
        for (size_t i = 0; i < k->n; i++) {
                free(k->files[i].state);
                free(k->files[i].saved);
                free(k->files[i].touched);
                free(k->files[i].last);
        }
        free(k->files);
        if (k->save_fd >= 0)
                close(k->save_fd);
        free(k->buf);
        free(k->removed);
        free(k);
}

static int cmp_file(const void *a, const void *b)
{
        const struct ck_file *x = a, *y = b;
        return x->ino < y->ino ? -1 : x->ino > y->ino;
}

/* freeze(): list the chunks of the copied model the layer holds (under the
 * barrier: memory only). Those the last checkpoint stored and nothing
 * changed since keep its reference; the others are frozen, to be read. */
static int freeze(struct ck *c, struct ck_frozen *k)
{
        struct fs *fs = c->fs;
        uint32_t cs = fs->chunk_size;
        int r = 0;

        for (size_t i = 0; i < c->n_inodes; i++)
                if (S_ISREG(c->inodes[i].attr.mode) && c->inodes[i].has_data)
                        k->n++;
        k->files = calloc(MAX(k->n, (size_t)1), sizeof *k->files);
        if (!k->files)
                return -ENOMEM;
        k->n = 0;
        pthread_mutex_lock(&fs->ck_lock);
        for (size_t i = 0; i < c->n_inodes && r >= 0; i++) {
                struct ck_inode *in = &c->inodes[i];
                const struct tree *lt = fs->ck_last ? fs->ck_last->snap->tree : NULL;
                struct ck_last_file *lf;
                struct ck_file *f;
                if (!S_ISREG(in->attr.mode) || !in->has_data)
                        continue;
                f = &k->files[k->n++];
                f->ino = in->attr.ino;
                f->size = in->attr.size;
                f->nchunks = (uint32_t)DIV_ROUND_UP(f->size, cs);
                f->state = calloc(MAX(f->nchunks, 1u), 1);
                f->saved = calloc(MAX(f->nchunks, 1u), sizeof *f->saved);
                f->touched = calloc(MAX(f->nchunks, 1u), 1);
                f->last = malloc(MAX(f->nchunks, 1u) * sizeof *f->last);
                if (!f->state || !f->saved || !f->touched || !f->last) {
                        r = -ENOMEM;
                        break;
                }
                lf = lt ? last_find(fs->ck_last, f->ino) : NULL;
                for (uint32_t ci = 0; ci < f->nchunks; ci++) {
                        struct tree_chunk ch;
                        f->last[ci] = CK_NOREF;
                        if (in->in_base && !(ci < in->n_present && in->present[ci]))
                                continue; /* not the layer's */
                        if (lf && ci < lf->nchunks && lf->ref[ci] == TREE_HOLE)
                                f->last[ci] = TREE_HOLE; /* zeros, and no change since */
                        else if (lf && ci < lf->nchunks && lf->ref[ci] != CK_NOREF &&
                                 tree_chunk(lt, lf->ref[ci], &ch) >= 0 && ch.ulen == chunk_len(f->size, cs, ci))
                                f->last[ci] = lf->ref[ci];
                        else
                                f->state[ci] = CK_FROZEN;
                }
        }
        pthread_mutex_unlock(&fs->ck_lock);
        if (r < 0)
                return r;
        qsort(k->files, k->n, sizeof *k->files, cmp_file);
        return 0;
}

/* capture(): the frozen chunk ci of f into buf: from the data file if no
 * change came first, else from where the change saved it. 1 if the chunk is
 * a hole (zeros; buf untouched), so a large sparse file costs what it holds,
 * not its size. */
static int capture(struct fs *fs, struct ck_file *f, int fd, struct holes *holes, uint32_t ci, uint8_t *buf,
                   size_t n)
{
        struct ck_frozen *k = fs->ck;
        uint64_t off = (uint64_t)ci * fs->chunk_size;
        int r;

        pthread_mutex_lock(&fs->ck_lock);
        if (k->err)
                r = k->err;
        else if (f->state[ci] == CK_ZERO) {
                r = 1;
                f->state[ci] = CK_DONE;
        } else if (f->state[ci] == CK_FROZEN) {
                /* Frozen means no change since the barrier (a change saves
                 * the chunk first, under this lock): what holes says of it,
                 * seen since the barrier, still holds. */
                r = in_hole(fd, holes, off, n) ? 1 : read_chunk(fd, buf, n, off);
                f->state[ci] = CK_DONE;
        } else if (f->state[ci] == CK_SAVED) {
                r = read_chunk(k->save_fd, buf, n, f->saved[ci]);
                f->state[ci] = CK_DONE;
        } else
                r = -EIO; /* read twice: a bug */
        pthread_mutex_unlock(&fs->ck_lock);
        return r;
}

/* file_setup(): a regular file's chunk list, extents and, for a file the
 * layer holds no data of, the base's chunks and extents (nothing read).
 * Single-threaded, before the workers start. */
static int file_setup(struct ck *c, struct ck_inode *in)
{
        const struct tree *t = c->fs->tree;
        uint64_t cs = c->fs->chunk_size, size = in->attr.size;
        uint32_t n = (uint32_t)((size + cs - 1) / cs), ne;

        in->nchunks = n;
        if (!n)
                return 0;
        in->chunks = calloc(n, sizeof *in->chunks);
        in->from = calloc(n, 1);
        if (!in->chunks || !in->from)
                return -ENOMEM;
        if (in->has_data) {
                /* at most one extent per chunk (file_extents()) */
                in->extents = calloc(n, sizeof *in->extents);
                return in->extents ? 0 : -ENOMEM;
        }
        /* A new file without data cannot have a size. */
        if (!in->in_base || tree_file_nchunks(t, &in->base) != n)
                return -EIO;
        ne = tree_extent_count(t, &in->base);
        in->extents = calloc(MAX(ne, 1u), sizeof *in->extents);
        if (!in->extents)
                return -ENOMEM;
        for (uint32_t i = 0; i < n; i++) {
                in->chunks[i] = tree_file_chunk(t, &in->base, i);
                in->from[i] = SRC_BASE;
        }
        for (uint32_t e = 0; e < ne; e++)
                tree_extent(t, &in->base, e, &in->extents[e][0], &in->extents[e][1]);
        in->n_extents = ne;
        return 0;
}

/* file_chunks(): chunks [first, end) of a regular file the layer holds data
 * of: their references (chunks[], from[]); workers run it on disjoint
 * ranges, so a large file is hashed and packed on every core. */
static int file_chunks(struct ck *c, struct ck_inode *in, uint32_t first, uint32_t end, struct chunk_codec *codec,
                       struct packer_batch *batch, uint8_t *buf)
{
        struct fs *fs = c->fs;
        const struct tree *t = fs->tree;
        uint64_t cs = fs->chunk_size, size = in->attr.size;
        _cleanup_(closep) int fd = -1;
        struct ck_file *f = ck_find(fs->ck, in->attr.ino);
        struct holes holes = HOLES_INIT;
        int r;

        if (!f || f->nchunks != in->nchunks)
                return -EIO;
        fd = wl_data_open(fs, in->attr.ino, O_RDONLY);
        if (fd < 0)
                return fd;
        for (uint32_t i = first; i < end; i++) {
                uint64_t off = (uint64_t)i * cs, len = MIN(cs, size - off);
                bool layer = !in->in_base || (i < in->n_present && in->present[i]);

                if (layer && f->last[i] == TREE_HOLE) {
                        in->chunks[i] = TREE_HOLE; /* the last checkpoint's zeros */
                        continue;
                } else if (layer && f->last[i] != CK_NOREF) {
                        /* What the last checkpoint stored, unchanged since. */
                        in->chunks[i] = f->last[i];
                        in->from[i] = SRC_LAST;
                        continue;
                } else if (layer) {
                        r = capture(fs, f, fd, &holes, i, buf, (size_t)len);
                        if (r < 0)
                                return r;
                        if (r > 0) {
                                in->chunks[i] = TREE_HOLE;
                                continue;
                        }
                        atomic_fetch_add(&c->bytes_dirty, len);
                } else if (off + len <= in->base_limit && i < tree_file_nchunks(t, &in->base) &&
                           len == MIN(cs, in->base.attr.size - off)) {
                        /* The base's chunk, whole: its reference, unread. */
                        in->chunks[i] = tree_file_chunk(t, &in->base, i);
                        in->from[i] = SRC_BASE;
                        continue;
                } else {
                        /* The base's bytes below base_limit, zeros above. */
                        uint64_t nb = 0;
                        if (off < MIN(in->base_limit, in->base.attr.size))
                                nb = MIN(len, MIN(in->base_limit, in->base.attr.size) - off);
                        if (!nb) {
                                /* grown by a truncate: zeros, nothing to read */
                                in->chunks[i] = TREE_HOLE;
                                continue;
                        }
                        r = fs_read_data(fs, &in->base, NULL, off, (size_t)nb, buf);
                        if (r < 0)
                                return r;
                        memset(buf + nb, 0, (size_t)(len - nb));
                }
                if (mem_is_zero(buf, (size_t)len)) {
                        in->chunks[i] = TREE_HOLE;
                        continue;
                }
                r = packer_add_batched(c->packer, codec, batch, buf, (size_t)len, &in->chunks[i]);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* file_extents(): a file the layer holds data of has data where its chunks
 * are not holes (chunk granularity). */
static void file_extents(const struct fs *fs, struct ck_inode *in)
{
        uint64_t cs = fs->chunk_size;

        for (uint32_t i = 0; i < in->nchunks; i++)
                if (in->chunks[i] != TREE_HOLE)
                        add_extent(in, (uint64_t)i * cs, MIN(cs, in->attr.size - (uint64_t)i * cs));
}

/* The data phase: a job is up to CK_JOB_CHUNKS chunks of one file the
 * layer holds data of; workers take jobs in turn. */
#define CK_JOB_CHUNKS 8u
struct ck_job {
        uint32_t inode, first;
};

static void *data_worker(void *arg)
{
        struct ck *c = arg;
        _cleanup_(freep) uint8_t *buf = calloc(1, c->fs->chunk_size); /* zeroed: clang-analyzer cannot see pread() fill it */
        struct chunk_codec *codec = chunk_codec_new(CHUNK_LEVEL_DEFAULT);
        struct packer_batch *batch = packer_batch_new(); /* a job's new chunks, packed as one run */
        int r = 0;

        if (!buf || !codec || !batch)
                r = -ENOMEM;
        for (;;) {
                size_t j = atomic_fetch_add(&c->next, 1);
                struct ck_inode *in;
                if (j >= c->n_jobs || r < 0 || atomic_load(&c->err) < 0)
                        break;
                in = &c->inodes[c->jobs[j].inode];
                r = file_chunks(c, in, c->jobs[j].first, MIN(in->nchunks, c->jobs[j].first + CK_JOB_CHUNKS), codec,
                                batch, buf);
                if (r >= 0)
                        r = packer_batch_flush(c->packer, batch);
                if (r < 0)
                        log_error_errno(r, "checkpoint: data of inode %" PRIu64 ": %m", in->attr.ino);
        }
        if (r < 0) {
                int expect = 0;
                atomic_compare_exchange_strong(&c->err, &expect, r);
        }
        chunk_codec_free(codec);
        packer_batch_free(batch);
        return NULL;
}

static int data_phase(struct ck *c)
{
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        unsigned n = (unsigned)MAX(1L, MIN(ncpu, (long)FS_CHECKPOINT_WORKERS)), started = 0;
        pthread_t th[FS_CHECKPOINT_WORKERS];
        size_t cap = 0;
        int r;

        for (size_t i = 0; i < c->n_inodes; i++) {
                struct ck_inode *in = &c->inodes[i];
                if (!S_ISREG(in->attr.mode))
                        continue;
                r = file_setup(c, in);
                if (r < 0)
                        return log_error_errno(r, "checkpoint: data of inode %" PRIu64 ": %m", in->attr.ino);
                for (uint32_t k = 0; in->has_data && k < in->nchunks; k += CK_JOB_CHUNKS) {
                        if (c->n_jobs == cap) {
                                struct ck_job *nj = reallocarray(c->jobs, cap ? cap * 2 : 1024, sizeof *nj);
                                if (!nj)
                                        return -ENOMEM;
                                c->jobs = nj;
                                cap = cap ? cap * 2 : 1024;
                        }
                        c->jobs[c->n_jobs++] = (struct ck_job){ (uint32_t)i, k };
                }
        }
        for (unsigned i = 0; i < n; i++) {
                if (pthread_create(&th[i], NULL, data_worker, c) != 0)
                        break;
                started++;
        }
        if (!started)
                data_worker(c);
        for (unsigned i = 0; i < started; i++)
                pthread_join(th[i], NULL);
        r = atomic_load(&c->err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < c->n_inodes; i++)
                if (S_ISREG(c->inodes[i].attr.mode) && c->inodes[i].has_data)
                        file_extents(c->fs, &c->inodes[i]);
        return 0;
}

/* tree_ref(): chunk ref of tree t as a chunk of tb (memoized in map). */
static int tree_ref(struct tree_builder *tb, const struct tree *t, uint32_t *map, uint32_t ref, uint32_t *ret)
{
        struct tree_chunk ch;
        uint32_t pk;
        int r;

        if (ref >= tree_n_chunks(t))
                return -EIO;
        if (map[ref] == UINT32_MAX) {
                r = tree_chunk(t, ref, &ch);
                if (r >= 0)
                        r = tree_builder_add_pack(tb, tree_pack(t, ch.pack), &pk);
                if (r < 0)
                        return r;
                ch.pack = pk;
                r = tree_builder_add_chunk(tb, &ch, &map[ref]);
                if (r < 0)
                        return r;
        }
        *ret = map[ref];
        return 0;
}

static uint32_t *new_map(const struct tree *t)
{
        size_t n = MAX(t ? tree_n_chunks(t) : 0, 1u);
        uint32_t *m = malloc(n * sizeof *m);

        if (m)
                memset(m, 0xff, n * sizeof *m);
        return m;
}

static int build_tree(struct ck *c, void **ret_blob, size_t *ret_len, struct digest *ret_digest,
                      struct tree **ret_tree)
{
        const struct tree *t = c->fs->tree, *lt = c->last ? c->last->snap->tree : NULL;
        struct tree_builder *tb = tree_builder_new(c->fs->chunk_size);
        _cleanup_(freep) uint32_t *handles = NULL, *bchunk = NULL, *tmp = NULL, *basemap = NULL, *lastmap = NULL;
        size_t n_refs = 0;
        int r = -ENOMEM;

        if (!tb)
                return -ENOMEM;
        handles = calloc(MAX(c->n_inodes, (size_t)1), sizeof *handles);
        basemap = new_map(t);
        lastmap = new_map(lt);
        if (!handles || !basemap || !lastmap)
                goto fail;
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
                        r = 0;
                        if (ref == TREE_HOLE)
                                tmp[k] = TREE_HOLE;
                        else if (in->from[k] == SRC_PACKER) {
                                if (ref < n_refs)
                                        tmp[k] = bchunk[ref];
                                else
                                        r = -EIO;
                        }
                        else if (in->from[k] == SRC_BASE)
                                r = tree_ref(tb, t, basemap, ref, &tmp[k]);
                        else
                                r = lt ? tree_ref(tb, lt, lastmap, ref, &tmp[k]) : -EIO;
                        if (r < 0)
                                goto fail;
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
        r = tree_builder_finish_tree(tb, CHUNK_LEVEL_DEFAULT, ret_blob, ret_len, ret_digest, ret_tree);
fail:
        tree_builder_free(tb);
        return r;
}

/* last_new(): what the next checkpoint may take from this one, published
 * as digest with *tree (taken): per file the layer held, the new tree's
 * chunk of each of its layer chunks. NULL if that cannot be had (the next
 * one then reads everything). */
static struct ck_last *last_new(struct ck *c, struct backend *b, const struct digest *digest, struct tree **tree)
{
        struct ck_frozen *k = c->fs->ck; /* its file list is ours: fixed since the barrier */
        struct ck_last *l = calloc(1, sizeof *l);
        int r;

        if (!l)
                return NULL;
        r = snapshot_open(b, digest, &l->snap);
        if (r >= 0)
                l->snap->tree = TAKE_PTR(*tree);
        if (r >= 0 && !(l->files = calloc(MAX(k->n, (size_t)1), sizeof *l->files)))
                r = -ENOMEM;
        for (size_t i = 0; i < k->n && r >= 0; i++) {
                const struct ck_file *f = &k->files[i];
                const struct ck_inode *in = &c->inodes[c->index[f->ino] - 1];
                struct ck_last_file *lf = &l->files[l->n];
                struct tree_inode ti;
                if (tree_inode(l->snap->tree, f->ino, &ti) < 0 || tree_file_nchunks(l->snap->tree, &ti) != f->nchunks)
                        continue;
                lf->ino = f->ino;
                lf->nchunks = f->nchunks;
                lf->ref = malloc(MAX(f->nchunks, 1u) * sizeof *lf->ref);
                if (!lf->ref) {
                        r = -ENOMEM;
                        break;
                }
                for (uint32_t ci = 0; ci < f->nchunks; ci++) {
                        bool layer = !in->in_base || (ci < in->n_present && in->present[ci]);
                        uint32_t ref = tree_file_chunk(l->snap->tree, &ti, ci);
                        lf->ref[ci] = layer ? ref : CK_NOREF;
                }
                l->n++;
        }
        if (r < 0) {
                log_warning_errno(r, "checkpoint: keep its chunk references for the next one: %m");
                ck_last_free(l);
                return NULL;
        }
        return l;
}

/* ck_end(): the checkpoint no longer reads the layer: changes stop saving
 * chunks, and the data files removed meanwhile go. With l (the checkpoint
 * was published), l replaces what the last one stored, less the chunks
 * changed since the barrier; otherwise the last one's stays (every change
 * since forgot its references too). */
static void ck_end(struct fs *fs, struct ck_last *l)
{
        struct ck_last *old = NULL;
        struct ck_frozen *k;

        pthread_mutex_lock(&fs->ck_lock);
        k = fs->ck;
        for (size_t i = 0; l && k && i < l->n; i++) {
                struct ck_last_file *lf = &l->files[i];
                const struct ck_file *f = ck_find(k, lf->ino);
                for (uint32_t ci = 0; f && ci < lf->nchunks && ci < f->nchunks; ci++)
                        if (f->touched[ci])
                                lf->ref[ci] = CK_NOREF;
        }
        if (l) {
                old = fs->ck_last;
                fs->ck_last = l;
                atomic_store(&fs->ck_have_last, true);
        }
        fs->ck = NULL;
        atomic_store(&fs->ck_active, false);
        pthread_mutex_unlock(&fs->ck_lock);
        ck_last_free(old);
        if (!k)
                return;
        for (size_t i = 0; i < k->n_removed; i++)
                wl_data_remove(fs, k->removed[i]);
        ck_frozen_free(k);
}

/* ck_save_error(): a change could not save a chunk for the checkpoint. */
static int ck_save_error(struct fs *fs)
{
        int r;

        pthread_mutex_lock(&fs->ck_lock);
        r = fs->ck ? fs->ck->err : 0;
        pthread_mutex_unlock(&fs->ck_lock);
        return r;
}

int fs_checkpoint(struct fs *fs, const struct fs_checkpoint_opts *o, struct fs_checkpoint_result *ret)
{
        struct ck c = { .fs = fs };
        struct fs_checkpoint_result res = {};
        struct packer_stats ps;
        _cleanup_(freep) void *blob = NULL, *trace = NULL;
        struct ck_frozen *k = NULL;
        struct tree *tree = NULL; /* the new tree, as built */
        size_t trace_len = 0;
        struct digest tree_digest;
        json_t *stats = NULL;
        uint64_t t0 = now_ns(), t1, b0, saved0;
        size_t blob_len = 0;
        bool set_ro = false, frozen = false;
        int r;

        if (!fs || !o || !o->store || !ret)
                return -EINVAL;
        k = calloc(1, sizeof *k);
        if (!k)
                return -ENOMEM;
        k->save_fd = openat(fs->state_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        k->buf = malloc(fs->chunk_size);
        if (k->save_fd < 0 || !k->buf) {
                r = k->save_fd < 0 ? -errno : -ENOMEM;
                log_error_errno(r, "checkpoint: a temporary file in %s: %m", fs->state_dir);
                ck_frozen_free(k);
                return r;
        }
        r = packer_new(o->store, fs->chunk_size, CHUNK_LEVEL_DEFAULT, &c.packer);
        if (r >= 0)
                r = packer_add_known(c.packer, fs->tree);
        if (r < 0) {
                ck_frozen_free(k);
                goto fail;
        }
        /* Also known: what earlier checkpoints (and commits) stored, so a
         * checkpoint with nothing new since the last packs nothing. */
        if (store_recent(o->store, fs->chunk_size, FS_CHECKPOINT_RECENT, &fs->snap->tree_digest, 1, &c.recent,
                         &c.n_recent) >= 0)
                for (size_t i = 0; i < c.n_recent && r >= 0; i++)
                        r = packer_add_known(c.packer, c.recent[i]->tree);
        if (r >= 0)
                r = ck_reserve(&c);
        if (r < 0) {
                ck_frozen_free(k);
                goto fail;
        }

        res.prepare_ns = now_ns() - t0;
        if (o->before_barrier) {
                r = o->before_barrier(o->ctx);
                if (r < 0) {
                        ck_frozen_free(k);
                        if (o->after_barrier)
                                o->after_barrier(o->ctx);
                        goto fail;
                }
        }

        /* The barrier: copy the model and freeze the layer's chunks; memory
         * only. */
        pthread_rwlock_wrlock(&fs->barrier);
        b0 = now_ns();
        saved0 = atomic_load(&fs->ck_saved);
        pthread_mutex_lock(&fs->lock);
        r = copy_model(&c);
        pthread_mutex_unlock(&fs->lock);
        if (r >= 0)
                r = freeze(&c, k);
        if (r >= 0) {
                pthread_mutex_lock(&fs->ck_lock);
                fs->ck = k;
                atomic_store(&fs->ck_active, true);
                c.last = fs->ck_last;
                pthread_mutex_unlock(&fs->ck_lock);
                frozen = true;
                if (o->readonly) { /* a pause: nothing changes after this instant */
                        atomic_store(&fs->readonly, true);
                        set_ro = true;
                }
        } else
                ck_frozen_free(k);
        res.barrier_bytes = atomic_load(&c.bytes_dirty); /* read under the barrier: none */
        pthread_rwlock_unlock(&fs->barrier);
        res.barrier_ns = now_ns() - b0;
        if (o->after_barrier)
                o->after_barrier(o->ctx);
        if (r < 0) {
                log_error_errno(r, "checkpoint: copy the model: %m");
                goto fail;
        }

        t1 = now_ns();
        r = data_phase(&c);
        if (r >= 0)
                r = packer_flush(c.packer);
        if (r >= 0)
                r = ck_save_error(fs); /* every chunk is read: no save comes after */
        if (r < 0) {
                log_error_errno(r, "checkpoint: read and pack the layer's chunks: %m");
                goto fail;
        }
        res.data_ns = now_ns() - t1;

        t1 = now_ns();
        r = build_tree(&c, &blob, &blob_len, &tree_digest, &tree);
        if (r < 0) {
                log_error_errno(r, "checkpoint: build the tree: %m");
                goto fail;
        }
        res.tree_ns = now_ns() - t1;
        t1 = now_ns();
        packer_get_stats(c.packer, &ps);
        res.bytes_dirty = atomic_load(&c.bytes_dirty);
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
        res.generation = o->parent ? o->parent->config.generation + 1 : 0;
        res.has_parent = o->parent != NULL;
        if (o->parent)
                res.parent = o->parent->digest;
        if (o->prev_tree && o->prev_digest && digest_eq(&tree_digest, o->prev_tree)) {
                /* Nothing changed since the last checkpoint: the same
                 * snapshot, with its own generation and parent. */
                struct snapshot *same = NULL;
                res.digest = *o->prev_digest;
                res.reused = true;
                r = snapshot_open(o->store, &res.digest, &same);
                if (r >= 0) {
                        res.generation = same->config.generation;
                        res.has_parent = same->config.has_parent;
                        res.parent = same->config.parent;
                }
                snapshot_free(same);
                if (r >= 0 && o->tag)
                        r = store_tag(o->store, &res.digest, o->tag);
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
                        .tree = tree,
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
        res.publish_ns = now_ns() - t1;
        /* A host crash after this must leave a state dir that mounts again
         * (its HEAD durable), else the mount that was checkpointed is
         * refused (a layer without HEAD), though its snapshot is safe. */
        if (wl_skeleton_sync(fs) < 0)
                log_warning("checkpoint: the state dir %s is not synced: a host crash before its first fsync "
                            "leaves it unmountable", fs->state_dir);
        res.tree_digest = tree_digest;
        res.chunks_saved = atomic_load(&fs->ck_saved) - saved0;
        ck_end(fs, last_new(&c, o->store, &res.digest, &tree));
        frozen = false;
        res.duration_ns = now_ns() - t0;
        *ret = res;
        r = 0;
fail:
        if (frozen)
                ck_end(fs, NULL);
        if (r < 0 && set_ro)
                fs_set_readonly(fs, false);
        json_decref(stats);
        tree_free(tree);
        ck_release(&c);
        return r;
}
