/* layer.c — the writable layer: the in-memory model of what changed (inode
 * table, materialized directories and xattrs), its journal, its data files
 * and chunk maps in the mount's state directory. docs/writable-layer.md
 * describes the on-disk format; in short:
 *
 *   STATE/HEAD                 "stasis-state 1" / "base <digest|empty>" /
 *                              "layers <id>...": written once by rename
 *   STATE/layers/<id>/journal  append-only transactions of model operations
 *   STATE/layers/<id>/data/<ino>      sparse data file; its size is the file's
 *   STATE/layers/<id>/data/<ino>.map  64-byte header (base_limit) and one
 *                              byte per chunk: 1 = present (and dirty) here
 *
 * Durability against kill -9 comes from ordering, not from fsync: every
 * change is in the kernel's page cache (one write() per transaction, data
 * pwrite()s, the map byte after the data) before its FUSE reply. fsync and
 * fsyncdir add fdatasync of the journal, data file, map and data dir, for
 * host crashes. A torn journal tail (only a host crash makes one) fails its
 * XXH3 and is dropped with the transactions after it. A fresh state dir is
 * made without fsync (a mount waits for no disk write); its skeleton (HEAD,
 * the directories, the journal) becomes durable at the first fsync or
 * fsyncdir, before that one is acknowledged.
 *
 * One code path changes the model: a handler validates under fs->lock,
 * builds a transaction of operations, and wl_txn_commit() applies it with
 * the same apply_op() that replays the journal at mount. So what is served
 * and what a restart rebuilds cannot drift apart. */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <linux/falloc.h>

#include "fs-internal.h"

#define JOURNAL_MAGIC "STSWJNL1"
#define JOURNAL_HDR 16u
#define MAP_MAGIC "STSWMAP1"
#define MAP_HDR 64u
#define TXN_MAGIC 0x58544c57u /* "WLTX" */
#define TXN_HDR 24u
#define OP_HDR 24u
#define LAYER_ID "1"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the layer's records are little-endian");

/* The ATTR operation's value. */
struct wl_attr_rec {
        uint32_t mode, uid, gid, nlink;
        uint64_t size, rdev, parent;
        int64_t atime_sec, mtime_sec, ctime_sec;
        uint32_t atime_nsec, mtime_nsec, ctime_nsec, reserved;
};

/* ---- inode table ---- */

static size_t hash_ino(uint64_t ino, size_t n) { return (size_t)((ino * 0x9e3779b97f4a7c15ull) >> 20) & (n - 1); }

static void table_grow(struct fs *fs)
{
        size_t n = fs->n_buckets * 2;
        struct fs_inode **b = calloc(n, sizeof *b);

        if (!b)
                return; /* a long chain is only slower */
        for (size_t i = 0; i < fs->n_buckets; i++)
                for (struct fs_inode *p = fs->buckets[i], *next; p; p = next) {
                        size_t h = hash_ino(p->ino, n);
                        next = p->next;
                        p->next = b[h];
                        b[h] = p;
                }
        free(fs->buckets);
        fs->buckets = b;
        fs->n_buckets = n;
}

struct fs_inode *ino_get(struct fs *fs, uint64_t ino)
{
        struct fs_inode *p;

        for (p = fs->buckets[hash_ino(ino, fs->n_buckets)]; p; p = p->next)
                if (p->ino == ino)
                        return p;
        return NULL;
}

static struct fs_inode *ino_insert(struct fs *fs, uint64_t ino)
{
        struct fs_inode *p = calloc(1, sizeof *p);
        size_t h;

        if (!p)
                return NULL;
        p->ino = ino;
        p->attr.ino = ino;
        p->parent = TREE_ROOT_INO;
        h = hash_ino(ino, fs->n_buckets);
        p->next = fs->buckets[h];
        fs->buckets[h] = p;
        if (++fs->n_inodes > fs->n_buckets)
                table_grow(fs);
        return p;
}

int ino_load(struct fs *fs, uint64_t ino, struct fs_inode **ret)
{
        struct fs_inode *p = ino_get(fs, ino);
        struct tree_inode ti;

        if (!p) {
                if (tree_inode(fs->tree, ino, &ti) < 0)
                        return -ENOENT;
                p = ino_insert(fs, ino);
                if (!p)
                        return -ENOMEM;
                p->in_base = true;
                p->base = ti;
                p->attr = ti.attr;
                p->base_limit = ti.attr.size;
        }
        *ret = p;
        return 0;
}

static void dir_free(struct wl_dir *d)
{
        if (!d)
                return;
        for (size_t i = 0; i < d->n; i++)
                free(d->ents[i].name);
        free(d->ents);
        free(d->buckets);
        free(d);
}

static void xattrs_free(struct fs_inode *p)
{
        for (size_t i = 0; i < p->n_xattrs; i++) {
                free(p->xattrs[i].name);
                free(p->xattrs[i].value);
        }
        free(p->xattrs);
        p->xattrs = NULL;
        p->n_xattrs = 0;
}

static void inode_destroy(struct fs_inode *p)
{
        dir_free(p->dir);
        xattrs_free(p);
        free(p->symlink);
        free(p->present);
        free(p);
}

/* drop_data(): p's data file is to go: no chunk of it counts any more. */
static void drop_data(struct fs *fs, struct fs_inode *p)
{
        if (p->has_data && p->present) {
                for (size_t i = 0; i < p->n_present; i++)
                        if (p->present[i])
                                atomic_fetch_sub(&fs->dirty_chunks, 1);
        }
        free(p->present);
        p->present = NULL;
        p->n_present = 0;
        p->has_data = false;
}

void ino_maybe_free(struct fs *fs, struct fs_inode *p, bool *ret_dead)
{
        bool dead = p->modified && p->attr.nlink == 0;
        struct fs_inode **pp;

        if (ret_dead)
                *ret_dead = false;
        if (p->ino == TREE_ROOT_INO || p->nopen || p->creating_data)
                return;
        if (p->modified && !dead)
                return;
        if (p->nlookup) {
                /* No name and no open file: nothing can reach its bytes, so
                 * its data file goes now, not at the kernel's FORGET (which
                 * comes when it comes: an rm's space must be there for the
                 * next write, as on a local filesystem). The inode stays
                 * for the kernel's lookups; an OPEN of it (a reopen through
                 * /proc of an O_PATH descriptor) gets ESTALE (do_open()). */
                if (dead && p->has_data && ret_dead) {
                        drop_data(fs, p);
                        p->data_gone = true;
                        *ret_dead = true;
                }
                return;
        }
        for (pp = &fs->buckets[hash_ino(p->ino, fs->n_buckets)]; *pp; pp = &(*pp)->next)
                if (*pp == p)
                        break;
        if (!*pp)
                return;
        *pp = p->next;
        fs->n_inodes--;
        if (ret_dead)
                *ret_dead = dead && p->has_data;
        drop_data(fs, p);
        inode_destroy(p);
}

void wl_free_all(struct fs *fs)
{
        for (size_t i = 0; i < fs->n_buckets; i++)
                for (struct fs_inode *p = fs->buckets[i], *next; p; p = next) {
                        next = p->next;
                        inode_destroy(p);
                }
        memset(fs->buckets, 0, fs->n_buckets * sizeof *fs->buckets);
        fs->n_inodes = 0;
}

int child_attr(struct fs *fs, uint64_t ino, struct tree_attr *ret)
{
        struct fs_inode *p = ino_get(fs, ino);
        struct tree_inode ti;

        if (p) {
                *ret = p->attr;
                return 0;
        }
        if (tree_inode(fs->tree, ino, &ti) < 0)
                return -EIO;
        *ret = ti.attr;
        return 0;
}

/* ---- directories ---- */

static uint32_t hash_name(const char *s, size_t len)
{
        uint32_t h = 2166136261u;

        for (size_t i = 0; i < len; i++)
                h = (h ^ (uint8_t)s[i]) * 16777619u;
        return h;
}

static int dir_rehash(struct wl_dir *d, size_t nb)
{
        int32_t *b = malloc(nb * sizeof *b);

        if (!b)
                return -ENOMEM;
        for (size_t i = 0; i < nb; i++)
                b[i] = -1;
        for (size_t i = 0; i < d->n; i++) {
                size_t h;
                if (!d->ents[i].name)
                        continue;
                h = hash_name(d->ents[i].name, strlen(d->ents[i].name)) & (nb - 1);
                d->ents[i].hnext = b[h];
                b[h] = (int32_t)i;
        }
        free(d->buckets);
        d->buckets = b;
        d->n_buckets = nb;
        return 0;
}

/* dir_compact(): drop deleted slots (cookies keep their order). */
static int dir_compact(struct wl_dir *d)
{
        size_t j = 0;

        for (size_t i = 0; i < d->n; i++)
                if (d->ents[i].name)
                        d->ents[j++] = d->ents[i];
        d->n = j;
        return dir_rehash(d, d->n_buckets);
}

static int32_t dir_find(const struct wl_dir *d, const char *name)
{
        size_t len = strlen(name);
        int32_t i = d->buckets[hash_name(name, len) & (d->n_buckets - 1)];

        for (; i >= 0; i = d->ents[i].hnext)
                if (strcmp(d->ents[i].name, name) == 0)
                        return i;
        return -1;
}

static int dir_add(struct wl_dir *d, const char *name, uint64_t ino, uint64_t cookie)
{
        struct wl_dirent *e;
        size_t h;

        if (d->n == d->cap) {
                size_t cap = d->cap ? d->cap * 2 : 16;
                struct wl_dirent *n = realloc(d->ents, cap * sizeof *n);
                if (!n)
                        return -ENOMEM;
                d->ents = n;
                d->cap = cap;
        }
        if (d->n_live + 1 > d->n_buckets && dir_rehash(d, d->n_buckets * 2) < 0)
                return -ENOMEM;
        e = &d->ents[d->n];
        e->name = strdup(name);
        if (!e->name)
                return -ENOMEM;
        e->ino = ino;
        e->cookie = cookie ? cookie : d->next_cookie;
        d->next_cookie = MAX(d->next_cookie, e->cookie + 1);
        h = hash_name(name, strlen(name)) & (d->n_buckets - 1);
        e->hnext = d->buckets[h];
        d->buckets[h] = (int32_t)d->n;
        d->n++;
        d->n_live++;
        return 0;
}

static struct wl_dir *dir_new(void)
{
        struct wl_dir *d = calloc(1, sizeof *d);

        if (!d)
                return NULL;
        d->next_cookie = 3; /* 1 ".", 2 "..", as the base listing */
        if (dir_rehash(d, 16) < 0) {
                free(d);
                return NULL;
        }
        return d;
}

/* dir_materialize(): copy a base directory's listing into the layer, each
 * entry keeping its base readdir offset. */
static int dir_materialize(struct fs *fs, struct fs_inode *p)
{
        struct wl_dir *d;
        uint32_t n;

        if (p->dir)
                return 0;
        if (!S_ISDIR(p->attr.mode))
                return -ENOTDIR;
        d = dir_new();
        if (!d)
                return -ENOMEM;
        n = p->in_base ? tree_dir_count(fs->tree, &p->base) : 0;
        for (uint32_t i = 0; i < n; i++) {
                const char *name;
                size_t len;
                uint64_t child;
                if (tree_dirent(fs->tree, &p->base, i, &name, &len, &child) < 0 ||
                    dir_add(d, name, child, (uint64_t)i + 3) < 0) {
                        dir_free(d);
                        return -ENOMEM;
                }
        }
        p->dir = d;
        return 0;
}

int dir_lookup(struct fs *fs, struct fs_inode *dir, const char *name, uint64_t *ret_ino)
{
        int32_t i;

        if (!S_ISDIR(dir->attr.mode))
                return -ENOTDIR;
        if (!dir->dir) {
                if (!dir->in_base)
                        return -ENOENT;
                return tree_lookup(fs->tree, &dir->base, name, strlen(name), ret_ino);
        }
        i = dir_find(dir->dir, name);
        if (i < 0)
                return -ENOENT;
        *ret_ino = dir->dir->ents[i].ino;
        return 0;
}

size_t dir_count(struct fs *fs, struct fs_inode *dir)
{
        if (dir->dir)
                return dir->dir->n_live;
        return dir->in_base ? tree_dir_count(fs->tree, &dir->base) : 0;
}

/* ---- xattrs ---- */

static int xattrs_materialize(struct fs *fs, struct fs_inode *p)
{
        uint32_t n;

        if (p->xattrs_own)
                return 0;
        n = p->in_base ? tree_xattr_count(fs->tree, &p->base) : 0;
        if (n) {
                p->xattrs = calloc(n, sizeof *p->xattrs);
                if (!p->xattrs)
                        return -ENOMEM;
        }
        for (uint32_t i = 0; i < n; i++) {
                const char *name;
                const void *v;
                size_t len;
                struct wl_xattr *x = &p->xattrs[i];
                if (tree_xattr(fs->tree, &p->base, i, &name, &v, &len) < 0)
                        return -EIO;
                x->name = strdup(name);
                x->value = malloc(len ? len : 1);
                if (!x->name || !x->value)
                        return -ENOMEM;
                memcpy(x->value, v, len);
                x->len = len;
                p->n_xattrs++;
        }
        p->xattrs_own = true;
        return 0;
}

static int xattr_set(struct fs_inode *p, const char *name, const void *v, size_t len)
{
        void *nv = malloc(len ? len : 1);
        struct wl_xattr *x;

        if (!nv)
                return -ENOMEM;
        memcpy(nv, v, len);
        for (size_t i = 0; i < p->n_xattrs; i++)
                if (strcmp(p->xattrs[i].name, name) == 0) {
                        free(p->xattrs[i].value);
                        p->xattrs[i].value = nv;
                        p->xattrs[i].len = len;
                        return 0;
                }
        x = realloc(p->xattrs, (p->n_xattrs + 1) * sizeof *x);
        if (!x) {
                free(nv);
                return -ENOMEM;
        }
        p->xattrs = x;
        x = &p->xattrs[p->n_xattrs];
        x->name = strdup(name);
        if (!x->name) {
                free(nv);
                return -ENOMEM;
        }
        x->value = nv;
        x->len = len;
        p->n_xattrs++;
        return 0;
}

static void xattr_del(struct fs_inode *p, const char *name)
{
        for (size_t i = 0; i < p->n_xattrs; i++)
                if (strcmp(p->xattrs[i].name, name) == 0) {
                        free(p->xattrs[i].name);
                        free(p->xattrs[i].value);
                        p->xattrs[i] = p->xattrs[--p->n_xattrs];
                        return;
                }
}

/* ---- transactions ---- */

static void txn_put(struct wl_txn *t, const void *data, size_t len)
{
        if (t->err)
                return;
        if (t->len + len > t->cap) {
                size_t cap = MAX(t->cap * 2, t->len + len + 256);
                uint8_t *n = realloc(t->buf, cap);
                if (!n) {
                        t->err = -ENOMEM;
                        return;
                }
                t->buf = n;
                t->cap = cap;
        }
        memcpy(t->buf + t->len, data, len);
        t->len += len;
}

void wl_txn_op(struct wl_txn *t, enum wl_op_type type, uint64_t ino, uint64_t ino2,
               const char *name, const void *value, size_t value_len)
{
        uint8_t hdr[OP_HDR];
        uint16_t ty = (uint16_t)type, nl = (uint16_t)(name ? strlen(name) : 0);
        uint32_t vl = (uint32_t)value_len;

        if (!t->len) /* room for the transaction header */
                txn_put(t, (uint8_t[TXN_HDR]){ 0 }, TXN_HDR);
        memcpy(hdr, &ty, 2);
        memcpy(hdr + 2, &nl, 2);
        memcpy(hdr + 4, &vl, 4);
        memcpy(hdr + 8, &ino, 8);
        memcpy(hdr + 16, &ino2, 8);
        txn_put(t, hdr, sizeof hdr);
        if (nl)
                txn_put(t, name, nl);
        if (vl)
                txn_put(t, value, vl);
}

void wl_txn_attr(struct wl_txn *t, const struct tree_attr *a, uint64_t parent)
{
        struct wl_attr_rec r = {
                .mode = a->mode, .uid = a->uid, .gid = a->gid, .nlink = a->nlink,
                .size = a->size, .rdev = a->rdev, .parent = parent,
                .atime_sec = a->atime.tv_sec, .mtime_sec = a->mtime.tv_sec, .ctime_sec = a->ctime.tv_sec,
                .atime_nsec = (uint32_t)a->atime.tv_nsec, .mtime_nsec = (uint32_t)a->mtime.tv_nsec,
                .ctime_nsec = (uint32_t)a->ctime.tv_nsec,
        };

        wl_txn_op(t, WL_OP_ATTR, a->ino, 0, NULL, &r, sizeof r);
}

/* apply_op(): one operation on the model; fs->lock held. The handler
 * validated it (live), or it was valid when it was journaled (replay). */
static int apply_op(struct fs *fs, unsigned type, uint64_t ino, uint64_t ino2, const char *name,
                    const void *value, size_t vlen)
{
        struct fs_inode *p = NULL;
        int32_t i;
        int r;

        if (type == WL_OP_NEXTINO) {
                fs->next_ino = MAX(fs->next_ino, ino);
                return 0;
        }
        if (type == WL_OP_ATTR) {
                struct wl_attr_rec a;
                if (vlen != sizeof a)
                        return -EBADMSG;
                memcpy(&a, value, sizeof a);
                if (ino_load(fs, ino, &p) < 0) {
                        if (ino < tree_next_ino(fs->tree) || ino == 0)
                                return -EBADMSG; /* a base number the base lacks */
                        p = ino_insert(fs, ino);
                        if (!p)
                                return -ENOMEM;
                }
                if (!p->in_base)
                        fs->next_ino = MAX(fs->next_ino, ino + 1);
                p->attr.mode = a.mode;
                p->attr.uid = a.uid;
                p->attr.gid = a.gid;
                p->attr.nlink = a.nlink;
                p->attr.rdev = a.rdev;
                if (!p->has_data)
                        p->attr.size = a.size;
                p->attr.atime = (struct timespec){ a.atime_sec, a.atime_nsec };
                p->attr.mtime = (struct timespec){ a.mtime_sec, a.mtime_nsec };
                p->attr.ctime = (struct timespec){ a.ctime_sec, a.ctime_nsec };
                p->parent = a.parent;
                p->modified = true;
                return 0;
        }
        r = ino_load(fs, ino, &p);
        if (r < 0)
                return -EBADMSG;
        switch (type) {
        case WL_OP_DIRNEW:
                dir_free(p->dir);
                p->dir = dir_new();
                return p->dir ? 0 : -ENOMEM;
        case WL_OP_LINK:
        case WL_OP_UNLINK:
                if (!name)
                        return -EBADMSG;
                r = dir_materialize(fs, p);
                if (r < 0)
                        return r;
                i = dir_find(p->dir, name);
                if (type == WL_OP_LINK) {
                        if (i >= 0) { /* replace (rename over) */
                                p->dir->ents[i].ino = ino2;
                                return 0;
                        }
                        return dir_add(p->dir, name, ino2, 0);
                }
                if (i < 0)
                        return -EBADMSG;
                {
                        /* unlink from its hash chain, leave the slot */
                        struct wl_dir *d = p->dir;
                        size_t h = hash_name(name, strlen(name)) & (d->n_buckets - 1);
                        for (int32_t *pp = &d->buckets[h]; *pp >= 0; pp = &d->ents[*pp].hnext)
                                if (*pp == i) {
                                        *pp = d->ents[i].hnext;
                                        break;
                                }
                        free(d->ents[i].name);
                        d->ents[i].name = NULL;
                        d->n_live--;
                        if (d->n > 64 && d->n_live < d->n / 2)
                                return dir_compact(d);
                }
                return 0;
        case WL_OP_SYMLINK:
                free(p->symlink);
                p->symlink = strndup(value, vlen);
                return p->symlink ? 0 : -ENOMEM;
        case WL_OP_XCLEAR:
                xattrs_free(p);
                p->xattrs_own = true;
                return 0;
        case WL_OP_XSET:
        case WL_OP_XDEL:
                if (!name)
                        return -EBADMSG;
                r = xattrs_materialize(fs, p);
                if (r < 0)
                        return r;
                if (type == WL_OP_XSET)
                        return xattr_set(p, name, value, vlen);
                xattr_del(p, name);
                return 0;
        default:
                return -EBADMSG;
        }
}

/* apply_txn(): every operation of one transaction body. */
static int apply_txn(struct fs *fs, const uint8_t *b, size_t len)
{
        size_t pos = 0;

        while (pos < len) {
                uint16_t type, nl;
                uint32_t vl;
                uint64_t ino, ino2;
                char name[TREE_NAME_MAX + 1];
                int r;

                if (len - pos < OP_HDR)
                        return -EBADMSG;
                memcpy(&type, b + pos, 2);
                memcpy(&nl, b + pos + 2, 2);
                memcpy(&vl, b + pos + 4, 4);
                memcpy(&ino, b + pos + 8, 8);
                memcpy(&ino2, b + pos + 16, 8);
                pos += OP_HDR;
                if (nl > TREE_NAME_MAX || len - pos < (size_t)nl + vl)
                        return -EBADMSG;
                memcpy(name, b + pos, nl);
                name[nl] = 0;
                pos += nl;
                r = apply_op(fs, type, ino, ino2, nl ? name : NULL, b + pos, vl);
                if (r < 0)
                        return r;
                pos += vl;
        }
        return 0;
}

static void txn_seal(struct wl_txn *t, uint64_t seq)
{
        uint32_t magic = TXN_MAGIC, len = (uint32_t)(t->len - TXN_HDR);
        uint64_t x = chunk_xxh3(t->buf + TXN_HDR, len);

        memcpy(t->buf, &magic, 4);
        memcpy(t->buf + 4, &len, 4);
        memcpy(t->buf + 8, &seq, 8);
        memcpy(t->buf + 16, &x, 8);
}

/* ---- the journal's room ----
 *
 * A transaction changes the model first and reaches the journal after the
 * unlock; a journal write that failed then would leave memory ahead of the
 * disk, and the layer would have to refuse every later change. So no
 * transaction is applied without room for it in blocks the journal file
 * already owns: fallocate(FALLOC_FL_KEEP_SIZE) keeps WL_ROOM_FLOOR to
 * WL_ROOM_FLOOR + WL_ROOM_GROW bytes allocated past the end of what the
 * applied transactions fill, topped up under fs->lock once per
 * WL_ROOM_GROW bytes. On a full disk the top-up fails: a change that adds
 * a name, an inode or an xattr (t->grows) then gets ENOSPC before it
 * touches the model, and the last WL_ROOM_FLOOR bytes stay for the
 * others, so that rm, rename and setattr still work on a full disk and can
 * free its space. Of those, the last WL_ROOM_RM bytes are for removals
 * (t->frees) alone: a sandbox that chmods in a loop on a full disk must
 * not leave itself unable to rm. A filesystem that cannot preallocate
 * (EOPNOTSUPP) gets no such guarantee: the layer then refuses changes
 * after a failed journal write, as before. */
#define WL_ROOM_FLOOR (1u << 20)
#define WL_ROOM_GROW (1u << 20)
#define WL_ROOM_RM (256u << 10)

/* No bytes, and the room of a removal: what room_open() and a compaction
 * ask for. */
static const struct wl_txn room_any = { .frees = true };

/* room_check(): whether rm (of the journal file fd) can take t's len more
 * bytes, topping it up if not. */
static int room_check(struct fs *fs, struct wl_room *rm, int fd, const struct wl_txn *t)
{
        uint64_t len = t->len;
        uint64_t want = rm->pos + len + WL_ROOM_FLOOR;
        int r;

        if (fs->room_none || want <= rm->end)
                return 0;
        if (fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)rm->end, (off_t)(want + WL_ROOM_GROW - rm->end)) == 0) {
                rm->end = want + WL_ROOM_GROW;
                return 0;
        }
        r = -errno;
        if (r == -EOPNOTSUPP) {
                fs->room_none = true;
                log_warning("writable layer: the state dir's filesystem cannot preallocate the journal; "
                            "a full disk will stop the layer taking changes");
                return 0;
        }
        if (fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)rm->end, (off_t)(want - rm->end)) == 0) {
                rm->end = want;
                return 0;
        }
        if (!t->grows && rm->pos + len + (t->frees ? 0 : WL_ROOM_RM) <= rm->end)
                return 0;
        return r;
}

/* room_open(): fd is the journal now; its room as far as it goes (blocks a
 * previous run allocated past the end are found again: fallocate() of an
 * allocated range needs no new block). */
static void room_open(struct fs *fs, int fd)
{
        struct stat st;

        if (fstat(fd, &st) < 0)
                st.st_size = 0;
        fs->room = (struct wl_room){ .pos = (uint64_t)st.st_size, .end = (uint64_t)st.st_size };
        (void)room_check(fs, &fs->room, fd, &room_any);
}

void wl_txn_apply(struct fs *fs, struct wl_txn *t)
{
        int r;

        t->seq = fs->jseq++;
        if (t->err || !t->len)
                return;
        r = room_check(fs, &fs->room, fs->journal_fd, t);
        if (r >= 0 && fs->switching)
                r = room_check(fs, &fs->room_next, fs->next_fd, t);
        if (r < 0) {
                t->err = r; /* the model is untouched: nothing to refuse */
                return;
        }
        r = apply_txn(fs, t->buf + TXN_HDR, t->len - TXN_HDR);
        if (r < 0) {
                /* Validation let through what the model cannot take: the
                 * memory may be half-changed. Journal nothing past it. */
                t->err = r;
                atomic_store(&fs->broken, true);
                log_error_errno(r, "writable layer: applying a change failed; refusing further changes: %m");
                return;
        }
        fs->room.pos += t->len;
        if (fs->switching)
                fs->room_next.pos += t->len;
}

static void compact_online(struct fs *fs);

int wl_txn_write(struct fs *fs, struct wl_txn *t)
{
        _cleanup_(freep) uint8_t *buf = TAKE_PTR(t->buf);
        size_t len = t->len;
        int r = t->err;

        if (buf && len)
                txn_seal(&(struct wl_txn){ .buf = buf, .len = len }, t->seq);
        /* Write in sequence order; no lock held across the write. */
        pthread_mutex_lock(&fs->jlock);
        while (fs->jnext != t->seq)
                pthread_cond_wait(&fs->jcond, &fs->jlock);
        pthread_mutex_unlock(&fs->jlock);
        if (r >= 0 && len) {
                if (atomic_load(&fs->broken))
                        r = -EIO;
                else {
                        r = write_full(fs->journal_fd, buf, len);
                        if (r < 0) {
                                atomic_store(&fs->broken, true);
                                log_error_errno(r, "writable layer: journal write failed; refusing further changes: %m");
                        } else
                                atomic_fetch_add(&fs->journal_bytes, len);
                }
        }
        pthread_mutex_lock(&fs->jlock);
        if (r >= 0 && len)
                fs->journal_end += len;
        fs->jnext++;
        pthread_cond_broadcast(&fs->jcond);
        pthread_mutex_unlock(&fs->jlock);
        *t = (struct wl_txn){};
        /* Appended more than max(journal_max, twice the last image) since
         * the last image: this thread writes a new one. */
        if (r >= 0 && len) {
                uint64_t since = atomic_load(&fs->journal_bytes) - atomic_load(&fs->journal_at_image);
                bool expect = false;
                if (since > MAX(fs->journal_max, 2 * atomic_load(&fs->journal_image)) &&
                    atomic_compare_exchange_strong(&fs->compacting, &expect, true))
                        compact_online(fs);
        }
        return r;
}

int wl_txn_commit(struct fs *fs, struct wl_txn *t)
{
        wl_txn_apply(fs, t);
        pthread_mutex_unlock(&fs->lock);
        return wl_txn_write(fs, t);
}

/* ---- data files and chunk maps ---- */

static void data_name(uint64_t ino, const char *suffix, char buf[static 64])
{
        snprintf(buf, 64, "%" PRIu64 "%s", ino, suffix);
}

int wl_data_open(struct fs *fs, uint64_t ino, int flags)
{
        char name[64];
        int fd;

        data_name(ino, "", name);
        fd = openat(fs->data_fd, name, flags | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
}

int wl_data_blocks(const struct fs *fs, uint64_t ino, uint64_t *ret)
{
        char name[64];
        struct stat st;

        data_name(ino, "", name);
        if (fstatat(fs->data_fd, name, &st, 0) < 0)
                return -errno;
        *ret = (uint64_t)st.st_blocks;
        return 0;
}

void wl_data_remove(struct fs *fs, uint64_t ino)
{
        char name[64];

        if (ck_defer_remove(fs, ino))
                return;
        data_name(ino, "", name);
        (void)unlinkat(fs->data_fd, name, 0);
        data_name(ino, ".map", name);
        (void)unlinkat(fs->data_fd, name, 0);
}

static int map_write_header(int fd, uint32_t chunk_size, uint64_t base_limit)
{
        uint8_t h[MAP_HDR] = { 0 };
        uint32_t v = 1;

        memcpy(h, MAP_MAGIC, 8);
        memcpy(h + 8, &v, 4);
        memcpy(h + 12, &chunk_size, 4);
        memcpy(h + 16, &base_limit, 8);
        return pwrite_full(fd, h, sizeof h, 0);
}

/* create_file(): name made complete under a temp name, then renamed in;
 * *ret_fd (if non-NULL) gets it open. */
static int create_file(struct fs *fs, uint64_t ino, const char *suffix, uint64_t size,
                       uint64_t base_limit, int *ret_fd)
{
        char tmp[80], name[64];
        _cleanup_(closep) int fd = -1;
        int r = 0;

        data_name(ino, suffix, name);
        snprintf(tmp, sizeof tmp, "%s.tmp", name);
        fd = openat(fs->data_fd, tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        if (*suffix)
                r = map_write_header(fd, fs->chunk_size, base_limit);
        else if (ftruncate(fd, (off_t)size) < 0)
                r = -errno;
        if (r >= 0 && renameat(fs->data_fd, tmp, fs->data_fd, name) < 0)
                r = -errno;
        if (r < 0)
                (void)unlinkat(fs->data_fd, tmp, 0);
        else if (ret_fd)
                *ret_fd = TAKE_FD(fd);
        return r;
}

int wl_data_ensure(struct fs *fs, struct fs_inode *p, int *ret_fd)
{
        _cleanup_(closep) int fd = -1;
        uint64_t size, limit;
        int r;

        if (ret_fd)
                *ret_fd = -1;
        pthread_mutex_lock(&fs->lock);
        while (p->creating_data)
                pthread_cond_wait(&fs->cond, &fs->lock);
        if (p->has_data) {
                pthread_mutex_unlock(&fs->lock);
                return 0;
        }
        p->creating_data = true;
        size = p->attr.size;
        limit = p->in_base ? MIN(p->base.attr.size, p->base_limit) : 0;
        pthread_mutex_unlock(&fs->lock);

        if (p->in_base) {
                /* The map first: a base file's data never exists without
                 * its map (which says which chunks are not the base's). */
                r = create_file(fs, p->ino, ".map", 0, limit, NULL);
                if (r >= 0)
                        r = create_file(fs, p->ino, "", size, 0, &fd);
        } else {
                /* A new file is all layer: no map (its dirty chunks are its
                 * data extents), and an empty data file is its whole state. */
                char name[64];
                data_name(p->ino, "", name);
                fd = openat(fs->data_fd, name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                r = fd < 0 ? -errno : 0;
                if (fd >= 0 && size && ftruncate(fd, (off_t)size) < 0)
                        r = -errno;
        }

        pthread_mutex_lock(&fs->lock);
        p->creating_data = false;
        if (r >= 0) {
                p->has_data = true;
                p->blocks_known = false;
                p->base_limit = limit;
                p->sync_dir = true;
                p->sync_map = p->in_base; /* its header, even with no chunk marked */
        }
        pthread_cond_broadcast(&fs->cond);
        pthread_mutex_unlock(&fs->lock);
        if (r < 0)
                return log_error_errno(r, "writable layer: data file of inode %" PRIu64 ": %m", p->ino);
        if (ret_fd)
                *ret_fd = TAKE_FD(fd);
        return 0;
}

static int present_grow(struct fs_inode *p, size_t n)
{
        uint8_t *b;
        size_t cap;

        if (n <= p->n_present)
                return 0;
        cap = MAX(n, p->n_present * 2);
        b = realloc(p->present, cap);
        if (!b)
                return -ENOMEM;
        memset(b + p->n_present, 0, cap - p->n_present);
        p->present = b;
        p->n_present = cap;
        return 0;
}

/* The map's bytes first, the model after them: a chunk whose map byte
 * could not be written (a full disk) is not present, so a later write to
 * it claims it, copies it up and marks it again instead of trusting a map
 * that does not say so. */
int wl_mark_present(struct fs *fs, struct fs_inode *p, uint32_t first, uint32_t end)
{
        uint32_t lo = UINT32_MAX, hi = 0;
        bool in_base = p->in_base;
        int r;

        pthread_mutex_lock(&fs->lock);
        r = present_grow(p, end);
        if (r >= 0)
                for (uint32_t i = first; i < end; i++)
                        if (!p->present[i]) {
                                lo = MIN(lo, i);
                                hi = i + 1;
                        }
        pthread_mutex_unlock(&fs->lock);
        if (r < 0 || lo >= hi)
                return r;

        if (in_base) { /* a new file has no map */
                _cleanup_(closep) int fd = -1;
                _cleanup_(freep) uint8_t *ones = NULL;
                char name[64];

                /* One byte per chunk: no read-modify-write, so concurrent
                 * markers cannot undo each other on disk. */
                data_name(p->ino, ".map", name);
                fd = openat(fs->data_fd, name, O_WRONLY | O_CLOEXEC);
                if (fd < 0)
                        return log_error_errno(-errno, "writable layer: chunk map %s: %m", name);
                ones = malloc(hi - lo);
                if (!ones)
                        return -ENOMEM;
                memset(ones, 1, hi - lo);
                r = pwrite_full(fd, ones, hi - lo, MAP_HDR + (uint64_t)lo);
                if (r < 0)
                        return log_error_errno(r, "writable layer: chunk map %s: %m", name);
        }

        pthread_mutex_lock(&fs->lock);
        for (uint32_t i = lo; i < hi; i++)
                if (!p->present[i]) {
                        p->present[i] = 1;
                        atomic_fetch_add(&fs->dirty_chunks, 1);
                }
        p->blocks_known = false; /* its base blocks now count in the data file */
        if (in_base)
                p->sync_map = true;
        pthread_mutex_unlock(&fs->lock);
        return 0;
}

int wl_set_base_limit(struct fs *fs, struct fs_inode *p, uint64_t limit)
{
        _cleanup_(closep) int fd = -1;
        char name[64];

        if (!p->in_base)
                return 0;
        pthread_mutex_lock(&fs->lock);
        p->sync_map = true;
        pthread_mutex_unlock(&fs->lock);
        data_name(p->ino, ".map", name);
        fd = openat(fs->data_fd, name, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        return pwrite_full(fd, &limit, sizeof limit, 16);
}

/* wl_skeleton_sync(): a fresh state dir's HEAD, directories and journal made
 * durable, once (before that, a host crash may take the whole state dir:
 * nothing in it was acknowledged as synced). Files first, then each
 * directory that names one, up to the state dir. */
int wl_skeleton_sync(struct fs *fs)
{
        static const char *const dirs[] = { ("layers/" LAYER_ID "/data"), ("layers/" LAYER_ID), "layers", "." };
        int r = 0;

        if (!atomic_load(&fs->skel_pending))
                return 0;
        pthread_mutex_lock(&fs->skel_lock);
        if (atomic_load(&fs->skel_pending)) {
                _cleanup_(closep) int head = openat(fs->state_fd, "HEAD", O_RDONLY | O_CLOEXEC);
                _cleanup_(closep) int jfd = openat(fs->layer_fd, "journal", O_RDONLY | O_CLOEXEC);

                if (head < 0 || jfd < 0 || fsync(head) < 0 || fdatasync(jfd) < 0)
                        r = -errno;
                for (size_t i = 0; r >= 0 && i < ELEMENTSOF(dirs); i++) {
                        _cleanup_(closep) int dfd = openat(fs->state_fd, dirs[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                        if (dfd < 0 || fsync(dfd) < 0)
                                r = -errno;
                }
                if (r >= 0)
                        atomic_store(&fs->skel_pending, false);
                else
                        log_error_errno(r, "state dir %s: sync: %m", fs->state_dir);
        }
        pthread_mutex_unlock(&fs->skel_lock);
        return r;
}

/* synced_mark(): the journal's header records that its first len bytes
 * are durable (they are: written after the fdatasync that made them so,
 * durable itself with the next one). A record replay finds broken before
 * that point is not a torn tail but corruption (replay()). The journal's
 * own descriptor appends (O_APPEND): the header goes through another. */
static void synced_mark(int jfd, uint64_t len)
{
        char path[64];
        _cleanup_(closep) int fd = -1;

        snprintf(path, sizeof path, "/proc/self/fd/%d", jfd);
        fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd >= 0)
                (void)pwrite_full(fd, &len, sizeof len, 8);
}

/* journal_sync(): every transaction written before the call is durable
 * when it returns 0 (a no-op if the journal did not grow since the last). */
static int journal_sync(struct fs *fs)
{
        uint64_t jb = atomic_load(&fs->journal_bytes), end;
        int jfd, r = 0;

        if (jb == atomic_load(&fs->journal_synced) || fs->journal_fd < 0)
                return 0;
        /* A compaction may swap the journal: sync our own handle on the one
         * we saw (the new one was fsynced whole), and mark the end of the
         * last transaction written to it whole (a record being written
         * meanwhile may straddle what the fdatasync takes). */
        pthread_mutex_lock(&fs->jlock);
        jfd = fcntl(fs->journal_fd, F_DUPFD_CLOEXEC, 0);
        end = fs->journal_end;
        pthread_mutex_unlock(&fs->jlock);
        if (jfd < 0 || fdatasync(jfd) < 0) {
                r = -errno;
        } else {
                atomic_store(&fs->journal_synced, jb);
                synced_mark(jfd, end);
        }
        if (jfd >= 0)
                close(jfd);
        return r;
}

/* ---- data files of removed inodes ----
 *
 * A data file goes only once the journal that says its inode is gone is
 * durable. Removed at once, a host crash could keep the file's removal (the
 * state dir's filesystem commits it with whatever else is synced: another
 * file's fsync, ext4's periodic commit) and lose the journal record, which
 * sat in the page cache: a file fsync'd long before, whose removal was
 * never acknowledged, then read back as zeros. So a removed inode is queued
 * with the journal position that says so, and its data file goes when an
 * fsync through the mount has made the journal durable past it, when the
 * reaper thread syncs the journal itself (within a second of the removal,
 * one fdatasync for every file removed meanwhile: an rm -rf does not pay
 * one per file), or at once when a change needs the space (ENOSPC: the
 * handlers call wl_reap_space() and try once more). What a kill -9 leaves
 * queued, the next mount removes (data files no live inode owns). */
#define WL_REAP_DELAY_MS 1000

static void reaper_wake(struct fs *fs)
{
        pthread_mutex_lock(&fs->dead_lock);
        pthread_cond_signal(&fs->dead_cond);
        pthread_mutex_unlock(&fs->dead_lock);
}

/* reap(): remove the queued data files the journal has made durable; with
 * sync, sync it first. One reap at a time (reap_lock), from taking the queue
 * to the last removal: a handler short of space that waits for the lock
 * waits for the space a reap in flight frees (wl_reap_space()). */
static void reap(struct fs *fs, bool sync)
{
        _cleanup_(freep) uint64_t *gone = NULL;
        uint64_t synced;
        size_t n = 0;

        pthread_mutex_lock(&fs->reap_lock);
        if (sync)
                (void)journal_sync(fs); /* what is synced still goes */
        synced = atomic_load(&fs->journal_synced);
        pthread_mutex_lock(&fs->dead_lock);
        gone = malloc(MAX(fs->n_dead, 1u) * sizeof *gone);
        if (gone) {
                size_t keep = 0;
                for (size_t i = 0; i < fs->n_dead; i++) {
                        if (fs->dead[i].pos <= synced)
                                gone[n++] = fs->dead[i].ino;
                        else
                                fs->dead[keep++] = fs->dead[i];
                }
                fs->n_dead = keep;
                atomic_store(&fs->n_dead_pending, keep);
        }
        pthread_mutex_unlock(&fs->dead_lock);
        for (size_t i = 0; i < n; i++)
                wl_data_remove(fs, gone[i]);
        atomic_fetch_add(&fs->n_reaped, n);
        pthread_mutex_unlock(&fs->reap_lock);
}

static void *reaper_run(void *arg)
{
        struct fs *fs = arg;

        pthread_mutex_lock(&fs->dead_lock);
        while (!fs->reaper_stop) {
                struct timespec until;

                if (fs->n_dead == 0) {
                        pthread_cond_wait(&fs->dead_cond, &fs->dead_lock);
                        continue;
                }
                /* Give an fsync, or more removals, a moment to come. */
                clock_gettime(CLOCK_REALTIME, &until);
                until.tv_sec += WL_REAP_DELAY_MS / 1000;
                (void)pthread_cond_timedwait(&fs->dead_cond, &fs->dead_lock, &until);
                if (fs->reaper_stop)
                        break;
                pthread_mutex_unlock(&fs->dead_lock);
                reap(fs, true); /* no sync if an fsync meanwhile did it */
                pthread_mutex_lock(&fs->dead_lock);
        }
        pthread_mutex_unlock(&fs->dead_lock);
        return NULL;
}

void wl_data_discard(struct fs *fs, uint64_t ino)
{
        bool queued = false;

        pthread_mutex_lock(&fs->dead_lock);
        if (fs->reaper_ok && fs->n_dead == fs->dead_cap) {
                size_t cap = fs->dead_cap ? 2 * fs->dead_cap : 64;
                struct wl_dead *v = realloc(fs->dead, cap * sizeof *v);
                if (v) {
                        fs->dead = v;
                        fs->dead_cap = cap;
                }
        }
        if (fs->reaper_ok && fs->n_dead < fs->dead_cap) {
                fs->dead[fs->n_dead++] = (struct wl_dead){ .ino = ino, .pos = atomic_load(&fs->journal_bytes) };
                atomic_store(&fs->n_dead_pending, fs->n_dead);
                pthread_cond_signal(&fs->dead_cond);
                queued = true;
        }
        pthread_mutex_unlock(&fs->dead_lock);
        if (!queued) { /* no reaper or no memory: the slow, safe way */
                (void)journal_sync(fs);
                wl_data_remove(fs, ino);
        }
}

uint64_t wl_reaped(struct fs *fs)
{
        return atomic_load(&fs->n_reaped);
}

bool wl_reap_space(struct fs *fs, uint64_t reaped)
{
        /* With nothing queued, this still waits for a reap in flight. */
        reap(fs, atomic_load(&fs->n_dead_pending) != 0);
        return atomic_load(&fs->n_reaped) != reaped;
}

int wl_sync(struct fs *fs, struct fs_inode *p, bool data_only)
{
        bool map = false, dir = false, has = false;
        int r, r2;

        r = wl_skeleton_sync(fs);
        if (r < 0)
                return r;

        if (p) {
                pthread_mutex_lock(&fs->lock);
                has = p->has_data;
                map = p->sync_map;
                dir = p->sync_dir;
                p->sync_map = p->sync_dir = false;
                pthread_mutex_unlock(&fs->lock);
        }
        if (has) {
                char name[64];
                _cleanup_(closep) int fd = wl_data_open(fs, p->ino, O_RDONLY);
                if (fd >= 0 && fdatasync(fd) < 0)
                        r = -errno;
                if (map) {
                        _cleanup_(closep) int mfd = -1;
                        data_name(p->ino, ".map", name);
                        mfd = openat(fs->data_fd, name, O_RDONLY | O_CLOEXEC);
                        if (mfd >= 0 && fdatasync(mfd) < 0)
                                r = -errno;
                }
                if (dir && fsync(fs->data_fd) < 0)
                        r = -errno;
        }
        /* The journal holds the file's name and attributes (fdatasync needs
         * them too when the file is new). */
        (void)data_only;
        r2 = journal_sync(fs);
        if (r2 < 0)
                r = r2;
        else if (atomic_load(&fs->n_dead_pending))
                reaper_wake(fs); /* data files it may remove now */
        if (r < 0 && p) { /* try again next time */
                pthread_mutex_lock(&fs->lock);
                p->sync_map |= map;
                p->sync_dir |= dir;
                pthread_mutex_unlock(&fs->lock);
        }
        return r;
}

/* ---- the state directory ---- */

/* layer_is_empty(): the state dir holds no layer, or one with nothing in
 * it: a journal of at most its header, no data file. */
static bool layer_is_empty(struct fs *fs)
{
        _cleanup_(closep) int dfd = openat(fs->state_fd, "layers/" LAYER_ID "/data", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        struct stat st;
        DIR *d;
        bool empty = true;

        if (fstatat(fs->state_fd, "layers/" LAYER_ID "/journal", &st, 0) == 0 && st.st_size > JOURNAL_HDR)
                return false;
        if (dfd < 0)
                return errno == ENOENT;
        d = fdopendir(dfd);
        if (!d)
                return false;
        dfd = -1; /* the DIR has it */
        for (struct dirent *de; empty && (de = readdir(d));)
                empty = strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0;
        closedir(d);
        return empty;
}

static int head_check(struct fs *fs, const char *base)
{
        _cleanup_(freep) char *head = NULL, *want = NULL;
        size_t len;
        int r;

        if (asprintf(&want, "stasis-state 1\nbase %s\nlayers " LAYER_ID "\n", base) < 0)
                return -ENOMEM;
        r = read_file_at(fs->state_fd, "HEAD", 4096, &head, &len);
        if (r == -ENOENT || (r >= 0 && len == 0)) {
                /* A fresh state dir, or one whose HEAD a host crash took
                 * before anything was synced (wl_skeleton_sync() makes HEAD
                 * durable first): then its layer was never acknowledged as
                 * durable either, but it was made on a base we no longer
                 * know, so it is refused rather than applied to this one. */
                if (!layer_is_empty(fs))
                        return log_error_errno(-EEXIST, "state dir %s has a writable layer but no HEAD (a host crash "
                                               "before its first fsync?): remove it to start afresh: %m",
                                               fs->state_dir);
                r = write_replace_at(fs->state_fd, "HEAD", want, strlen(want), 0600, false);
                if (r >= 0)
                        atomic_store(&fs->skel_pending, true);
                return r;
        }
        if (r < 0)
                return log_error_errno(r, "state dir %s: HEAD: %m", fs->state_dir);
        if (strcmp(head, want) != 0)
                return log_error_errno(-EEXIST, "state dir %s belongs to another base or format (HEAD: %.200s): %m",
                                       fs->state_dir, head);
        return 0;
}

/* replay(): apply the journal's intact transactions; the first torn or
 * corrupt one ends it (only a host crash leaves one). *ret_end gets where
 * the intact ones end. */
static int replay(struct fs *fs, const uint8_t *b, size_t len, uint64_t *ret_txns, size_t *ret_end)
{
        size_t pos = JOURNAL_HDR;
        uint64_t n = 0, synced;

        /* Shorter than its header: a fresh layer's journal that a host crash
         * caught before it was synced (its one write() is never torn
         * otherwise); no transaction in it was ever acknowledged. */
        *ret_txns = 0;
        *ret_end = len;
        if (len < JOURNAL_HDR)
                return 0;
        if (memcmp(b, JOURNAL_MAGIC, 8) != 0)
                return log_error_errno(-EBADMSG, "state dir %s: journal: bad magic: %m", fs->state_dir);
        while (len - pos >= TXN_HDR) {
                uint32_t magic, tl;
                uint64_t seq, x;
                int r;

                memcpy(&magic, b + pos, 4);
                memcpy(&tl, b + pos + 4, 4);
                memcpy(&seq, b + pos + 8, 8);
                memcpy(&x, b + pos + 16, 8);
                if (magic != TXN_MAGIC || len - pos - TXN_HDR < tl ||
                    chunk_xxh3(b + pos + TXN_HDR, tl) != x)
                        break;
                r = apply_txn(fs, b + pos + TXN_HDR, tl);
                if (r < 0)
                        return log_error_errno(r, "state dir %s: journal transaction %" PRIu64 " at byte %zu: %m",
                                               fs->state_dir, seq, pos);
                pos += TXN_HDR + tl;
                n++;
        }
        memcpy(&synced, b + 8, 8);
        if (pos < synced)
                return log_error_errno(-EUCLEAN,
                                       "state dir %s: journal corrupt at byte %zu (of %zu), before byte %" PRIu64
                                       " that was synced: not a torn tail, which only unsynced bytes make, "
                                       "but damage; refusing to drop the changes after it: %m",
                                       fs->state_dir, pos, len, synced);
        if (pos < len)
                log_warning("state dir %s: journal torn at byte %zu; dropping %zu bytes after it", fs->state_dir,
                            pos, len - pos);
        *ret_txns = n;
        *ret_end = pos;
        return 0;
}

/* load_data(): attach every data file and map to its inode; remove what
 * no live inode owns (temp files, orphans of files unlinked while open). */
static int load_data(struct fs *fs)
{
        _cleanup_(closep) int dfd = openat(fs->data_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d;
        struct dirent *de;
        int r = 0;

        if (dfd < 0)
                return -errno;
        d = fdopendir(dfd);
        if (!d)
                return -errno;
        dfd = -1;
        while ((de = readdir(d))) {
                char *end;
                uint64_t ino;
                struct fs_inode *p;
                struct stat st;
                char name[64];
                _cleanup_(closep) int mfd = -1;
                uint8_t h[MAP_HDR];
                size_t nc;
                ssize_t n;

                if (de->d_name[0] == '.')
                        continue;
                errno = 0;
                ino = strtoull(de->d_name, &end, 10);
                if (*end) {
                        if (strcmp(end, ".map") != 0) /* temp files of creations cut short */
                                (void)unlinkat(fs->data_fd, de->d_name, 0);
                        continue;
                }
                p = ino_get(fs, ino);
                if (!p || !S_ISREG(p->attr.mode) || p->attr.nlink == 0) {
                        wl_data_remove(fs, ino);
                        continue;
                }
                if (fstatat(fs->data_fd, de->d_name, &st, 0) < 0) {
                        r = -errno;
                        break;
                }
                if (!p->in_base) { /* all layer, no map */
                        p->has_data = true;
                        p->base_limit = 0;
                        p->attr.size = (uint64_t)st.st_size;
                        nc = DIV_ROUND_UP((uint64_t)st.st_size, fs->chunk_size);
                        if (present_grow(p, MAX(nc, 1)) < 0) {
                                r = -ENOMEM;
                                break;
                        }
                        memset(p->present, 1, nc);
                        atomic_fetch_add(&fs->dirty_chunks, nc);
                        continue;
                }
                data_name(ino, ".map", name);
                mfd = openat(fs->data_fd, name, O_RDONLY | O_CLOEXEC);
                if (mfd < 0 && errno != ENOENT) {
                        r = log_error_errno(-errno, "state dir %s: chunk map of inode %" PRIu64 ": %m",
                                            fs->state_dir, ino);
                        break;
                }
                n = mfd < 0 ? 0 : pread_full(mfd, h, sizeof h, 0);
                if (n < 0) {
                        r = log_error_errno((int)n, "state dir %s: chunk map of inode %" PRIu64 ": %m",
                                            fs->state_dir, ino);
                        break;
                }
                if (n == 0) {
                        /* No map, or an empty one: the map comes first and
                         * its header is synced by the file's first fsync,
                         * so only a host crash before that leaves this,
                         * and none of the file's changes was acknowledged
                         * as durable: the base's bytes stand. */
                        log_warning("state dir %s: inode %" PRIu64 " has a data file but %s chunk map (a host crash "
                                    "before its first fsync): its unsynced changes are dropped",
                                    fs->state_dir, ino, mfd < 0 ? "no" : "an empty");
                        wl_data_remove(fs, ino);
                        continue;
                }
                if (n != (ssize_t)sizeof h || memcmp(h, MAP_MAGIC, 8) != 0) {
                        r = log_error_errno(-EBADMSG, "state dir %s: chunk map of inode %" PRIu64 ": %m",
                                            fs->state_dir, ino);
                        break;
                }
                memcpy(&p->base_limit, h + 16, 8);
                /* A truncate cut the data file but died before the header. */
                p->base_limit = MIN(p->base_limit, (uint64_t)st.st_size);
                p->has_data = true;
                p->attr.size = (uint64_t)st.st_size;
                {
                        struct stat ms;
                        if (fstat(mfd, &ms) < 0) {
                                r = -errno;
                                break;
                        }
                        nc = ms.st_size > (off_t)MAP_HDR ? (size_t)ms.st_size - MAP_HDR : 0;
                        if (present_grow(p, MAX(nc, 1)) < 0) {
                                r = -ENOMEM;
                                break;
                        }
                        if (nc && pread_full(mfd, p->present, nc, MAP_HDR) != (ssize_t)nc) {
                                r = -EIO;
                                break;
                        }
                        for (size_t i = 0; i < nc; i++)
                                if (p->present[i])
                                        atomic_fetch_add(&fs->dirty_chunks, 1);
                }
        }
        closedir(d);
        return r;
}

/* image_build(): the model as one transaction that recreates it from the
 * base; fs->lock held. */
static int image_build(struct fs *fs, struct wl_txn *t)
{
        wl_txn_op(t, WL_OP_NEXTINO, fs->next_ino, 0, NULL, NULL, 0);
        for (size_t b = 0; b < fs->n_buckets; b++)
                for (struct fs_inode *p = fs->buckets[b]; p; p = p->next) {
                        if (!p->modified && !p->dir && !p->xattrs_own)
                                continue;
                        if (p->modified)
                                wl_txn_attr(t, &p->attr, p->parent);
                        if (p->symlink)
                                wl_txn_op(t, WL_OP_SYMLINK, p->ino, 0, NULL, p->symlink, strlen(p->symlink));
                        if (p->xattrs_own) {
                                wl_txn_op(t, WL_OP_XCLEAR, p->ino, 0, NULL, NULL, 0);
                                for (size_t i = 0; i < p->n_xattrs; i++)
                                        wl_txn_op(t, WL_OP_XSET, p->ino, 0, p->xattrs[i].name,
                                                  p->xattrs[i].value, p->xattrs[i].len);
                        }
                }
        for (size_t b = 0; b < fs->n_buckets; b++)
                for (struct fs_inode *p = fs->buckets[b]; p; p = p->next) {
                        if (!p->dir)
                                continue;
                        wl_txn_op(t, WL_OP_DIRNEW, p->ino, 0, NULL, NULL, 0);
                        for (size_t i = 0; i < p->dir->n; i++)
                                if (p->dir->ents[i].name)
                                        wl_txn_op(t, WL_OP_LINK, p->ino, p->dir->ents[i].ino,
                                                  p->dir->ents[i].name, NULL, 0);
                }
        if (t->err) {
                free(t->buf);
                *t = (struct wl_txn){};
                return -ENOMEM;
        }
        txn_seal(t, 0);
        return 0;
}

/* image_write(): t as a complete journal in journal.tmp, fsynced; *ret_fd
 * gets it, open for appending. */
static int image_write(struct fs *fs, const struct wl_txn *t, int *ret_fd)
{
        _cleanup_(closep) int fd = -1;
        uint8_t hdr[JOURNAL_HDR] = { 0 };
        int r;

        memcpy(hdr, JOURNAL_MAGIC, 8);
        fd = openat(fs->layer_fd, "journal.tmp", O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        r = write_full(fd, hdr, sizeof hdr);
        if (r >= 0)
                r = write_full(fd, t->buf, t->len);
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        if (r < 0) {
                (void)unlinkat(fs->layer_fd, "journal.tmp", 0);
                return r;
        }
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* image_install(): journal.tmp becomes the journal. Once renamed it is the
 * journal, whatever follows: a failed fsync of the directory is left to
 * the next fsync or fsyncdir (wl_skeleton_sync()). */
static int image_install(struct fs *fs)
{
        if (renameat(fs->layer_fd, "journal.tmp", fs->layer_fd, "journal") < 0) {
                int r = -errno;
                (void)unlinkat(fs->layer_fd, "journal.tmp", 0);
                return r;
        }
        if (fsync(fs->layer_fd) < 0) {
                log_warning_errno(-errno, "state dir %s: sync after the journal's compaction: %m", fs->state_dir);
                atomic_store(&fs->skel_pending, true);
        }
        return 0;
}

/* journal_fresh(): a fresh layer's journal: its header alone (the image of
 * an unchanged model, the next inode number, says nothing the base does
 * not), in place and not synced: wl_skeleton_sync() does that. */
static int journal_fresh(struct fs *fs)
{
        _cleanup_(closep) int fd = openat(fs->layer_fd, "journal", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        uint8_t hdr[JOURNAL_HDR] = { 0 };

        if (fd < 0)
                return -errno;
        memcpy(hdr, JOURNAL_MAGIC, 8);
        fs->jseq = fs->jnext = 1;
        atomic_store(&fs->journal_image, 0);
        return write_full(fd, hdr, sizeof hdr);
}

/* compact(): at load (nothing else runs), write the model as a fresh journal. */
static int compact(struct fs *fs)
{
        _cleanup_(closep) int fd = -1;
        struct wl_txn t = {};
        int r = image_build(fs, &t);

        if (r >= 0)
                r = image_write(fs, &t, &fd);
        if (r >= 0)
                r = image_install(fs);
        free(t.buf);
        fs->jseq = fs->jnext = 1;
        atomic_store(&fs->journal_image, t.len);
        return r;
}

/* compact_online(): the same while serving. The image is built under
 * fs->lock (memory only) and takes a journal sequence number c, so it holds
 * every transaction before c and none after; it is written to journal.tmp
 * with no lock held, and when its turn in the write order comes, renamed
 * over the journal, after which transactions from c + 1 go to the new
 * file. A crash before the rename leaves the old journal, which holds
 * everything too. */
static void compact_online(struct fs *fs)
{
        struct wl_txn t = {};
        int r, nfd = -1, ofd = -1;
        uint64_t before = atomic_load(&fs->journal_bytes), at_image;

        pthread_mutex_lock(&fs->lock);
        r = image_build(fs, &t);
        t.seq = fs->jseq++;
        at_image = fs->room.pos; /* the old file's end after every transaction before c */
        pthread_mutex_unlock(&fs->lock);
        if (r >= 0)
                r = image_write(fs, &t, &nfd);

        pthread_mutex_lock(&fs->jlock);
        while (fs->jnext != t.seq)
                pthread_cond_wait(&fs->jcond, &fs->jlock);
        pthread_mutex_unlock(&fs->jlock);
        /* Our turn: no transaction is being written. Those after c, applied
         * already or until the switch, will be written to the new file:
         * from here they take room in both. */
        if (r >= 0) {
                pthread_mutex_lock(&fs->lock);
                fs->room_next = (struct wl_room){ .pos = JOURNAL_HDR + t.len + (fs->room.pos - at_image),
                                                  .end = JOURNAL_HDR + t.len };
                fs->next_fd = nfd;
                r = room_check(fs, &fs->room_next, nfd, &room_any);
                fs->switching = r >= 0;
                pthread_mutex_unlock(&fs->lock);
                if (r < 0)
                        (void)unlinkat(fs->layer_fd, "journal.tmp", 0);
        }
        if (r >= 0)
                r = image_install(fs);
        pthread_mutex_lock(&fs->lock);
        pthread_mutex_lock(&fs->jlock);
        if (r >= 0) {
                ofd = fs->journal_fd;
                fs->journal_fd = nfd;
                fs->journal_end = JOURNAL_HDR + t.len;
                fs->room = fs->room_next;
        } else
                ofd = nfd;
        fs->switching = false;
        fs->next_fd = -1;
        fs->jnext++;
        pthread_cond_broadcast(&fs->jcond);
        pthread_mutex_unlock(&fs->jlock);
        pthread_mutex_unlock(&fs->lock);
        if (ofd >= 0)
                close(ofd);
        if (r < 0)
                log_warning_errno(r, "writable layer: journal compaction failed (the journal keeps growing): %m");
        else {
                atomic_store(&fs->journal_image, t.len);
                log_info("writable layer: journal compacted: %" PRIu64 " bytes appended since the last image, new image %zu bytes",
                         before - atomic_load(&fs->journal_at_image), t.len);
        }
        atomic_store(&fs->journal_at_image, before);
        free(t.buf);
        atomic_store(&fs->compacting, false);
}

static int mkdirat_p(int dirfd, const char *name)
{
        if (mkdirat(dirfd, name, 0700) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

int wl_open(struct fs *fs, const char *state_dir, const char *base)
{
        _cleanup_(freep) char *journal = NULL;
        size_t jlen = 0, jend = 0;
        uint64_t txns = 0, orphans = 0;
        int r;

        snprintf(fs->state_dir, sizeof fs->state_dir, "%s", state_dir);
        fs->state_fd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fs->state_fd < 0)
                return log_error_errno(-errno, "state dir %s: %m", state_dir);
        r = head_check(fs, base);
        if (r < 0)
                return r;
        r = mkdirat_p(fs->state_fd, "layers");
        if (r >= 0)
                r = mkdirat_p(fs->state_fd, "layers/" LAYER_ID);
        if (r >= 0)
                r = mkdirat_p(fs->state_fd, "layers/" LAYER_ID "/data");
        if (r < 0)
                return log_error_errno(r, "state dir %s: layers/: %m", state_dir);
        fs->layer_fd = openat(fs->state_fd, "layers/" LAYER_ID, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        fs->data_fd = openat(fs->state_fd, "layers/" LAYER_ID "/data", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fs->layer_fd < 0 || fs->data_fd < 0)
                return log_error_errno(-errno, "state dir %s: layers/: %m", state_dir);
        (void)unlinkat(fs->layer_fd, "journal.tmp", 0);

        fs->next_ino = tree_next_ino(fs->tree);
        r = read_file_at(fs->layer_fd, "journal", 1ull << 31, &journal, &jlen);
        if (r >= 0) {
                pthread_mutex_lock(&fs->lock);
                r = replay(fs, (const uint8_t *)journal, jlen, &txns, &jend);
                pthread_mutex_unlock(&fs->lock);
                if (r < 0)
                        return r;
        } else if (r != -ENOENT)
                return log_error_errno(r, "state dir %s: journal: %m", state_dir);
        /* A torn tail goes before anything is appended: after it, the next
         * replay would stop at the tear and drop all that came later, synced
         * or not (the compaction below rewrites the journal, but a full disk
         * keeps it as it is). */
        if (jend >= JOURNAL_HDR && jend < jlen) {
                _cleanup_(closep) int jfd = openat(fs->layer_fd, "journal", O_WRONLY | O_CLOEXEC);
                if (jfd < 0 || ftruncate(jfd, (off_t)jend) < 0 || fdatasync(jfd) < 0)
                        return log_error_errno(-errno, "state dir %s: journal: cut at its tear: %m", state_dir);
        } else if (jlen > 0 && jlen < JOURNAL_HDR) { /* its header torn: no transaction was in it */
                r = journal_fresh(fs);
                if (r < 0)
                        return log_error_errno(r, "state dir %s: journal: %m", state_dir);
        }
        /* load_data() and the orphans below remove the data files of inodes
         * the journal says are gone, and after a kill -9 that may be in the
         * page cache only: durable first, so that a host crash cannot keep
         * a removal and lose the record of it (see wl_data_discard()). */
        if (txns) {
                _cleanup_(closep) int jfd = openat(fs->layer_fd, "journal", O_RDONLY | O_CLOEXEC);
                if (jfd < 0 || fdatasync(jfd) < 0)
                        return log_error_errno(-errno, "state dir %s: journal: sync: %m", state_dir);
        }
        pthread_mutex_lock(&fs->lock);
        r = load_data(fs);
        if (r < 0) {
                pthread_mutex_unlock(&fs->lock);
                return log_error_errno(r, "state dir %s: data files: %m", state_dir);
        }
        /* Files unlinked while open when the daemon died: gone now. */
        for (size_t b = 0; b < fs->n_buckets; b++)
                for (struct fs_inode *p = fs->buckets[b], *next; p; p = next) {
                        next = p->next;
                        if (p->modified && p->attr.nlink == 0) {
                                bool dead;
                                uint64_t ino = p->ino;
                                ino_maybe_free(fs, p, &dead);
                                if (dead)
                                        wl_data_remove(fs, ino);
                                orphans++;
                        }
                }
        if (atomic_load(&fs->skel_pending))
                r = journal_fresh(fs);
        else {
                r = compact(fs);
                /* A full disk: the journal as it is holds everything too
                 * (the orphans dropped above are dropped again next time). */
                if (r == -ENOSPC || r == -EDQUOT) {
                        log_warning_errno(r, "state dir %s: journal not compacted, kept as it is: %m", state_dir);
                        r = 0;
                }
        }
        pthread_mutex_unlock(&fs->lock);
        if (r < 0)
                return log_error_errno(r, "state dir %s: journal compaction: %m", state_dir);
        fs->journal_fd = openat(fs->layer_fd, "journal", O_WRONLY | O_APPEND | O_CLOEXEC);
        if (fs->journal_fd < 0)
                return log_error_errno(-errno, "state dir %s: journal: %m", state_dir);
        pthread_mutex_lock(&fs->lock);
        room_open(fs, fs->journal_fd);
        fs->journal_end = fs->room.pos; /* its size: whole transactions */
        pthread_mutex_unlock(&fs->lock);
        /* Without it, a removal syncs the journal itself (wl_data_discard()). */
        fs->reaper_ok = pthread_create(&fs->reaper, NULL, reaper_run, fs) == 0;
        if (txns || orphans)
                log_info("state dir %s: replayed %" PRIu64 " transactions (%zu bytes), %" PRIu64
                         " orphans removed, next inode %" PRIu64, state_dir, txns, jlen, orphans, fs->next_ino);
        return 0;
}

void wl_close(struct fs *fs)
{
        if (fs->reaper_ok) {
                pthread_mutex_lock(&fs->dead_lock);
                fs->reaper_stop = true;
                fs->reaper_ok = false; /* later removals go the slow way */
                pthread_cond_signal(&fs->dead_cond);
                pthread_mutex_unlock(&fs->dead_lock);
                pthread_join(fs->reaper, NULL);
        }
        if (fs->n_dead)
                reap(fs, true);
        free(fs->dead);
        fs->dead = NULL;
        fs->n_dead = fs->dead_cap = 0;
        closep(&fs->journal_fd);
        closep(&fs->data_fd);
        closep(&fs->layer_fd);
        closep(&fs->state_fd);
        fs->journal_fd = fs->data_fd = fs->layer_fd = fs->state_fd = -1;
}
