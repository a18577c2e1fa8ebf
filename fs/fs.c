/* fs.c — FUSE handlers and the inode table. Each handler is a thin adapter:
 * it gets struct fs from fuse_req_userdata(), calls one do_*() function that
 * returns -errno, and replies exactly once. See fs-internal.h for the inode
 * numbering and the lock rules. */
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "fs-internal.h"

/* ---- inode table ---- */

static size_t bucket_of(const struct fs *fs, uint64_t ino)
{
        return (size_t)((ino * 0x9e3779b97f4a7c15ull) >> 20) & (fs->n_buckets - 1);
}

static int table_grow(struct fs *fs)
{
        size_t n = fs->n_buckets * 2;
        struct fs_inode **b = calloc(n, sizeof *b);

        if (!b)
                return -ENOMEM;
        for (size_t i = 0; i < fs->n_buckets; i++)
                for (struct fs_inode *p = fs->buckets[i], *next; p; p = next) {
                        size_t h = (size_t)((p->ino * 0x9e3779b97f4a7c15ull) >> 20) & (n - 1);
                        next = p->next;
                        p->next = b[h];
                        b[h] = p;
                }
        free(fs->buckets);
        fs->buckets = b;
        fs->n_buckets = n;
        return 0;
}

/* inode_find(): the inode the kernel knows as nodeid ino, or NULL. The
 * pointer stays valid while the kernel holds a lookup count, that is for
 * the duration of any request naming ino. */
static struct fs_inode *inode_find(struct fs *fs, uint64_t ino)
{
        struct fs_inode *p;

        if (ino == FUSE_ROOT_ID)
                return &fs->root;
        pthread_mutex_lock(&fs->inodes_lock);
        for (p = fs->buckets[bucket_of(fs, ino)]; p; p = p->next)
                if (p->ino == ino)
                        break;
        pthread_mutex_unlock(&fs->inodes_lock);
        return p;
}

/* inode_ref(): +1 lookup count for the inode about to be handed to the
 * kernel (fuse_reply_entry or a readdirplus entry), creating it. */
static int inode_ref(struct fs *fs, const struct tree_inode *ti, uint64_t parent)
{
        struct fs_inode *p, *n = NULL;
        size_t h;

        if (ti->attr.ino == FUSE_ROOT_ID)
                return 0; /* pinned; never forgotten */
        pthread_mutex_lock(&fs->inodes_lock);
        h = bucket_of(fs, ti->attr.ino);
        for (p = fs->buckets[h]; p; p = p->next)
                if (p->ino == ti->attr.ino)
                        break;
        if (!p) {
                pthread_mutex_unlock(&fs->inodes_lock);
                /* Allocate outside the lock, then look again. */
                n = calloc(1, sizeof *n);
                if (!n)
                        return -ENOMEM;
                *n = (struct fs_inode){ .ino = ti->attr.ino, .parent = parent, .base = *ti };
                pthread_mutex_lock(&fs->inodes_lock);
                h = bucket_of(fs, ti->attr.ino);
                for (p = fs->buckets[h]; p; p = p->next)
                        if (p->ino == ti->attr.ino)
                                break;
                if (!p) {
                        p = TAKE_PTR(n);
                        p->next = fs->buckets[h];
                        fs->buckets[h] = p;
                        fs->n_inodes++;
                        if (fs->n_inodes > fs->n_buckets)
                                (void)table_grow(fs); /* a long chain is only slower */
                }
        }
        p->nlookup++;
        pthread_mutex_unlock(&fs->inodes_lock);
        free(n);
        return 0;
}

/* inode_forget(): -n lookups; the inode goes at 0. A count going negative
 * means our bookkeeping is wrong: abort rather than serve a freed inode. */
static void inode_forget(struct fs *fs, uint64_t ino, uint64_t n)
{
        struct fs_inode **pp, *dead = NULL;

        if (ino == FUSE_ROOT_ID)
                return;
        pthread_mutex_lock(&fs->inodes_lock);
        for (pp = &fs->buckets[bucket_of(fs, ino)]; *pp; pp = &(*pp)->next)
                if ((*pp)->ino == ino)
                        break;
        if (!*pp || (*pp)->nlookup < n) {
                log_error("forget of inode %" PRIu64 " by %" PRIu64 " below zero", ino, n);
                abort();
        }
        (*pp)->nlookup -= n;
        if ((*pp)->nlookup == 0) {
                dead = *pp;
                *pp = dead->next;
                fs->n_inodes--;
        }
        pthread_mutex_unlock(&fs->inodes_lock);
        free(dead);
}

/* ---- attributes ---- */

static void fill_stat(const struct fs *fs, const struct tree_inode *ti, struct stat *st)
{
        const struct tree_attr *a = &ti->attr;
        uint64_t blocks = 0;

        memset(st, 0, sizeof *st);
        st->st_ino = a->ino;
        st->st_mode = a->mode;
        st->st_nlink = a->nlink;
        st->st_uid = a->uid;
        st->st_gid = a->gid;
        st->st_rdev = a->rdev;
        st->st_size = (off_t)a->size;
        st->st_atim = a->atime;
        st->st_mtim = a->mtime;
        st->st_ctim = a->ctime;
        st->st_blksize = 4096;
        if (S_ISREG(a->mode)) {
                uint32_t n = tree_extent_count(fs->tree, ti);
                for (uint32_t i = 0; i < n; i++) {
                        uint64_t off, len;
                        tree_extent(fs->tree, ti, i, &off, &len);
                        blocks += DIV_ROUND_UP(len, 512);
                }
        }
        st->st_blocks = (blkcnt_t)blocks;
}

static void fill_entry(const struct fs *fs, const struct tree_inode *ti, struct fuse_entry_param *e)
{
        memset(e, 0, sizeof *e);
        e->ino = ti->attr.ino;
        e->generation = 0;
        e->attr_timeout = FS_BASE_TIMEOUT;
        e->entry_timeout = FS_BASE_TIMEOUT;
        fill_stat(fs, ti, &e->attr);
}

static struct fs *req_fs(fuse_req_t req) { return fuse_req_userdata(req); }

/* file_of(): the struct fs_file that do_open() put in the handle slot. */
static struct fs_file *file_of(const struct fuse_file_info *fi)
{
        return (struct fs_file *)(uintptr_t)fi->fh; // NOLINT(performance-no-int-to-ptr): FUSE's handle slot is a u64
}

/* ---- handlers ---- */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
        (void)userdata;
        /* Under writeback cache (issue 5) the kernel would leave suid/sgid
         * clearing to us on WRITEs that lack the writer's credentials: we do
         * it ourselves, so never ask the kernel to delegate it. */
        conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV;
        /* The base is immutable: the kernel may cache everything. Data from
         * the cache is verified and copied, never spliced. */
        conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE |
                        FUSE_CAP_AUTO_INVAL_DATA | FUSE_CAP_READDIRPLUS_AUTO);
        if (conn->capable & FUSE_CAP_READDIRPLUS)
                conn->want |= FUSE_CAP_READDIRPLUS;
        if (conn->capable & FUSE_CAP_ASYNC_READ)
                conn->want |= FUSE_CAP_ASYNC_READ;
        if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
                conn->want |= FUSE_CAP_CACHE_SYMLINKS;
        if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
                conn->want |= FUSE_CAP_PARALLEL_DIROPS;
        /* ACLs travel as system.posix_acl_* xattrs; let the kernel enforce them. */
        if (conn->capable & FUSE_CAP_POSIX_ACL)
                conn->want |= FUSE_CAP_POSIX_ACL;
}

static int do_lookup(struct fs *fs, uint64_t parent, const char *name, struct fuse_entry_param *e)
{
        struct fs_inode *dir = inode_find(fs, parent);
        struct tree_inode ti;
        uint64_t ino;
        int r;

        if (!dir)
                return -ESTALE;
        if (!S_ISDIR(dir->base.attr.mode))
                return -ENOTDIR;
        if (strlen(name) > TREE_NAME_MAX)
                return -ENAMETOOLONG;
        r = tree_lookup(fs->tree, &dir->base, name, strlen(name), &ino);
        if (r < 0)
                return r;
        r = tree_inode(fs->tree, ino, &ti);
        if (r < 0)
                return -EIO;
        fill_entry(fs, &ti, e);
        return inode_ref(fs, &ti, parent);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
        struct fuse_entry_param e;
        int r = do_lookup(req_fs(req), parent, name, &e);

        if (r == -ENOENT) {
                /* A negative entry the kernel may cache as long as the base lives. */
                memset(&e, 0, sizeof e);
                e.entry_timeout = FS_BASE_TIMEOUT;
                fuse_reply_entry(req, &e);
        } else if (r < 0)
                fuse_reply_err(req, -r);
        else
                fuse_reply_entry(req, &e);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
        inode_forget(req_fs(req), ino, nlookup);
        fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
        struct fs *fs = req_fs(req);

        for (size_t i = 0; i < count; i++)
                inode_forget(fs, forgets[i].ino, forgets[i].nlookup);
        fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        struct fs *fs = req_fs(req);
        struct fs_inode *p = inode_find(fs, ino);
        struct stat st;

        (void)fi;
        if (!p) {
                fuse_reply_err(req, ESTALE);
                return;
        }
        fill_stat(fs, &p->base, &st);
        fuse_reply_attr(req, &st, FS_BASE_TIMEOUT);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
        struct fs *fs = req_fs(req);
        struct fs_inode *p = inode_find(fs, ino);
        const char *target;
        size_t len;

        if (!p)
                fuse_reply_err(req, ESTALE);
        else if (tree_symlink(fs->tree, &p->base, &target, &len) < 0)
                fuse_reply_err(req, EINVAL);
        else
                fuse_reply_readlink(req, target);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        struct fs_inode *p = inode_find(req_fs(req), ino);

        if (!p) {
                fuse_reply_err(req, ESTALE);
                return;
        }
        if (!S_ISDIR(p->base.attr.mode)) {
                fuse_reply_err(req, ENOTDIR);
                return;
        }
        fi->fh = 0;
        fi->keep_cache = 1;
        fi->cache_readdir = 1; /* an immutable base directory */
        fuse_reply_open(req, fi);
}

/* do_readdir(): entries of dir from offset off into buf. Offsets are
 * stable: "." is 1, ".." is 2, entry i (in the tree's sorted order) is i + 3;
 * a READDIR at offset k resumes after the entry whose offset is k. For
 * readdirplus every entry but "." and ".." counts as a lookup. */
static int do_readdir(struct fs *fs, uint64_t ino, size_t size, off_t off, bool plus, char *buf,
                      size_t *ret_len)
{
        struct fs_inode *dir = inode_find(fs, ino);
        size_t used = 0;
        uint32_t n;

        if (!dir)
                return -ESTALE;
        if (!S_ISDIR(dir->base.attr.mode))
                return -ENOTDIR;
        n = tree_dir_count(fs->tree, &dir->base);
        for (uint64_t k = (uint64_t)off; k < (uint64_t)n + 2; k++) {
                struct fuse_entry_param e;
                struct tree_inode ti;
                const char *name;
                size_t len, need;
                uint64_t child;
                char dot[3];
                int r;

                if (k < 2) {
                        struct fs_inode *d = k == 0 ? dir : inode_find(fs, dir->parent);
                        memset(&e, 0, sizeof e); /* e.ino 0: the kernel makes no inode */
                        e.attr.st_ino = d ? d->ino : dir->ino;
                        e.attr.st_mode = S_IFDIR;
                        memcpy(dot, "..", 3);
                        dot[k == 0 ? 1 : 2] = 0;
                        name = dot;
                } else {
                        r = tree_dirent(fs->tree, &dir->base, (uint32_t)(k - 2), &name, &len, &child);
                        if (r < 0)
                                return -EIO;
                        r = tree_inode(fs->tree, child, &ti);
                        if (r < 0)
                                return -EIO;
                        fill_entry(fs, &ti, &e);
                }
                if (plus)
                        need = fuse_add_direntry_plus(NULL, buf + used, size - used, name, &e,
                                                      (off_t)(k + 1));
                else
                        need = fuse_add_direntry(NULL, buf + used, size - used, name, &e.attr,
                                                 (off_t)(k + 1));
                if (need > size - used)
                        break; /* not added: not counted */
                if (plus && k >= 2) {
                        r = inode_ref(fs, &ti, dir->ino);
                        if (r < 0 && !used)
                                return r;
                        if (r < 0)
                                break; /* reply what is counted */
                }
                used += need;
        }
        *ret_len = used;
        return 0;
}

static void readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
        _cleanup_(freep) char *buf = malloc(size);
        size_t len = 0;
        int r;

        if (!buf) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        r = do_readdir(req_fs(req), ino, size, off, plus, buf, &len);
        if (r < 0)
                fuse_reply_err(req, -r);
        else
                fuse_reply_buf(req, buf, len);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
        (void)fi;
        readdir_common(req, ino, size, off, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi)
{
        (void)fi;
        readdir_common(req, ino, size, off, true);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        (void)ino;
        (void)fi;
        fuse_reply_err(req, 0);
}

static int do_open(struct fs *fs, uint64_t ino, struct fuse_file_info *fi)
{
        struct fs_inode *p = inode_find(fs, ino);
        struct fs_file *f;

        if (!p)
                return -ESTALE;
        if (S_ISDIR(p->base.attr.mode))
                return -EISDIR;
        if (!S_ISREG(p->base.attr.mode))
                return -EINVAL;
        /* Read-only until the writable layer lands (issue 5). */
        if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
                return -EROFS;
        f = calloc(1, sizeof *f);
        if (!f)
                return -ENOMEM;
        f->inode = p;
        fi->fh = (uint64_t)(uintptr_t)f;
        fi->keep_cache = 1; /* the base is immutable: keep the page cache */
        return 0;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        int r = do_open(req_fs(req), ino, fi);

        if (r < 0)
                fuse_reply_err(req, -r);
        else if (fuse_reply_open(req, fi) == -ENOENT) /* the open was interrupted */
                free(file_of(fi));
}

static ssize_t do_read(struct fs *fs, struct fs_file *f, size_t size, off_t off, uint8_t **ret)
{
        const struct tree_inode *ti = &f->inode->base;
        _cleanup_(freep) uint8_t *buf = NULL;
        uint64_t len;
        int r;

        atomic_fetch_add(&fs->reads, 1);
        if (off < 0)
                return -EINVAL;
        if ((uint64_t)off >= ti->attr.size) {
                *ret = NULL;
                return 0;
        }
        len = MIN((uint64_t)size, ti->attr.size - (uint64_t)off);
        buf = malloc(len);
        if (!buf)
                return -ENOMEM;
        r = fs_read_data(fs, ti, f, (uint64_t)off, len, buf);
        if (r < 0) {
                if (r == -EIO)
                        atomic_fetch_add(&fs->errors, 1);
                return r;
        }
        atomic_fetch_add(&fs->bytes_served, len);
        *ret = TAKE_PTR(buf);
        return (ssize_t)len;
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
        _cleanup_(freep) uint8_t *buf = NULL;
        ssize_t n;

        (void)ino;
        n = do_read(req_fs(req), file_of(fi), size, off, &buf);
        if (n < 0)
                fuse_reply_err(req, (int)-n);
        else
                fuse_reply_buf(req, (const char *)buf, (size_t)n);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        (void)ino;
        free(file_of(fi));
        fuse_reply_err(req, 0);
}

/* do_lseek(): SEEK_DATA and SEEK_HOLE from the tree's extents, exact for
 * the immutable base. */
static int do_lseek(struct fs *fs, struct fs_file *f, off_t off, int whence, off_t *ret)
{
        const struct tree_inode *ti = &f->inode->base;
        uint64_t size = ti->attr.size, o = (uint64_t)off;
        uint32_t n = tree_extent_count(fs->tree, ti);

        if (off < 0)
                return -ENXIO;
        if (whence != SEEK_DATA && whence != SEEK_HOLE)
                return -EINVAL;
        if (o >= size)
                return -ENXIO;
        for (uint32_t i = 0; i < n; i++) {
                uint64_t eo, el;
                tree_extent(fs->tree, ti, i, &eo, &el);
                if (eo + el <= o)
                        continue;
                if (whence == SEEK_DATA)
                        *ret = (off_t)MAX(o, eo);
                else
                        *ret = (off_t)(o >= eo ? MIN(eo + el, size) : o);
                return 0;
        }
        if (whence == SEEK_DATA)
                return -ENXIO;
        *ret = off; /* in the hole after the last extent */
        return 0;
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
                     struct fuse_file_info *fi)
{
        off_t res = 0;
        int r;

        (void)ino;
        r = do_lseek(req_fs(req), file_of(fi), off, whence, &res);
        if (r < 0)
                fuse_reply_err(req, -r);
        else
                fuse_reply_lseek(req, res);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
        struct fs *fs = req_fs(req);
        uint64_t blocks = atomic_load(&fs->total_blocks);
        struct statvfs sv = {
                .f_bsize = 4096,
                .f_frsize = 4096,
                .f_namemax = TREE_NAME_MAX,
                .f_files = tree_n_inodes(fs->tree),
                .f_flag = ST_RDONLY,
        };

        (void)ino;
        if (!blocks) {
                /* Once, on first use: the sum of all allocated extents. */
                for (uint32_t i = 0; i < tree_n_inodes(fs->tree); i++) {
                        struct tree_inode ti;
                        struct stat st;
                        if (tree_inode_at(fs->tree, i, &ti) < 0)
                                continue;
                        fill_stat(fs, &ti, &st);
                        blocks += ((uint64_t)st.st_blocks + 7) / 8;
                }
                atomic_store(&fs->total_blocks, blocks + 1);
        }
        sv.f_blocks = blocks;
        fuse_reply_statfs(req, &sv);
}

/* do_getxattr(): value of name into *ret_value; size 0 asks for the length. */
static int do_getxattr(struct fs *fs, uint64_t ino, const char *name, size_t size,
                       const void **ret_value, size_t *ret_len)
{
        struct fs_inode *p = inode_find(fs, ino);
        int r;

        if (!p)
                return -ESTALE;
        r = tree_xattr_get(fs->tree, &p->base, name, ret_value, ret_len);
        if (r < 0)
                return r;
        if (size && *ret_len > size)
                return -ERANGE;
        return 0;
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
        const void *value = NULL;
        size_t len = 0;
        int r = do_getxattr(req_fs(req), ino, name, size, &value, &len);

        if (r < 0)
                fuse_reply_err(req, -r);
        else if (size == 0)
                fuse_reply_xattr(req, len);
        else
                fuse_reply_buf(req, value, len);
}

static int do_listxattr(struct fs *fs, uint64_t ino, size_t size, char **ret, size_t *ret_len)
{
        struct fs_inode *p = inode_find(fs, ino);
        _cleanup_(freep) char *buf = NULL;
        size_t total = 0;
        uint32_t n;

        if (!p)
                return -ESTALE;
        n = tree_xattr_count(fs->tree, &p->base);
        for (int pass = 0; pass < 2; pass++) {
                size_t pos = 0;
                for (uint32_t i = 0; i < n; i++) {
                        const char *name;
                        const void *v;
                        size_t vl, nl;
                        if (tree_xattr(fs->tree, &p->base, i, &name, &v, &vl) < 0)
                                return -EIO;
                        nl = strlen(name) + 1;
                        if (pass)
                                memcpy(buf + pos, name, nl);
                        pos += nl;
                }
                total = pos;
                if (pass == 0) {
                        if (size == 0) {
                                *ret = NULL;
                                *ret_len = total;
                                return 0;
                        }
                        if (total > size)
                                return -ERANGE;
                        buf = malloc(total + 1);
                        if (!buf)
                                return -ENOMEM;
                }
        }
        *ret = TAKE_PTR(buf);
        *ret_len = total;
        return 0;
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
        _cleanup_(freep) char *buf = NULL;
        size_t len = 0;
        int r = do_listxattr(req_fs(req), ino, size, &buf, &len);

        if (r < 0)
                fuse_reply_err(req, -r);
        else if (size == 0)
                fuse_reply_xattr(req, len);
        else
                fuse_reply_buf(req, buf, len);
}

static const struct fuse_lowlevel_ops fs_ops = {
        .init = op_init,
        .lookup = op_lookup,
        .forget = op_forget,
        .forget_multi = op_forget_multi,
        .getattr = op_getattr,
        .readlink = op_readlink,
        .opendir = op_opendir,
        .readdir = op_readdir,
        .readdirplus = op_readdirplus,
        .releasedir = op_releasedir,
        .open = op_open,
        .read = op_read,
        .release = op_release,
        .lseek = op_lseek,
        .statfs = op_statfs,
        .getxattr = op_getxattr,
        .listxattr = op_listxattr,
        /* access: default_permissions lets the kernel check modes and ACLs. */
};

/* ---- lifecycle ---- */

static void fs_freep_(struct fs **p) { fs_free(*p); }

int fs_new(const struct fs_opts *o, struct fs **ret)
{
        _cleanup_(fs_freep_) struct fs *fs = NULL;
        int r;

        if (!o || !o->store || !o->snap || !o->snap->tree || !ret)
                return -EINVAL;
        fs = calloc(1, sizeof *fs);
        if (!fs)
                return -ENOMEM;
        fs->store = o->store;
        fs->snap = o->snap;
        fs->tree = o->snap->tree;
        fs->cache = o->cache;
        fs->chunk_size = tree_chunk_size(fs->tree);
        fs->n_chunks = tree_n_chunks(fs->tree);
        fs->n_packs = tree_n_packs(fs->tree);
        if (o->cache && !o->no_readahead) {
                unsigned n = o->readahead_chunks ? o->readahead_chunks : FS_READAHEAD_CHUNKS;
                fs->ra_chunks = MAX(1u, MIN(n, FS_READAHEAD_BYTES / fs->chunk_size));
        }
        pthread_mutex_init(&fs->inodes_lock, NULL);
        pthread_mutex_init(&fs->fetch_lock, NULL);
        pthread_cond_init(&fs->fetch_cond, NULL);
        pthread_mutex_init(&fs->ra_lock, NULL);
        pthread_cond_init(&fs->ra_cond, NULL);
        r = pthread_key_create(&fs->tls, fs_tls_free);
        if (r != 0)
                return -r;
        fs->tls_ok = true;
        fs->n_buckets = 1024;
        fs->buckets = calloc(fs->n_buckets, sizeof *fs->buckets);
        fs->pack_state = calloc(MAX(fs->n_packs, 1u), sizeof *fs->pack_state);
        fs->logged = calloc(MAX(fs->n_chunks, 1u), sizeof *fs->logged);
        fs->inflight = calloc(MAX(fs->n_chunks, 1u), 1);
        if (!fs->buckets || !fs->pack_state || !fs->logged || !fs->inflight)
                return -ENOMEM;
        r = tree_inode(fs->tree, TREE_ROOT_INO, &fs->root.base);
        if (r < 0)
                return r;
        fs->root.ino = FUSE_ROOT_ID;
        fs->root.parent = FUSE_ROOT_ID;
        if (fs->ra_chunks) {
                r = fs_readahead_start(fs, o->workers ? o->workers : 2);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(fs);
        return 0;
}

struct fs *fs_free(struct fs *fs)
{
        if (!fs)
                return NULL;
        fs_readahead_stop(fs);
        if (fs->tls_ok) {
                fs_tls_free(pthread_getspecific(fs->tls));
                pthread_key_delete(fs->tls);
        }
        for (size_t i = 0; fs->buckets && i < fs->n_buckets; i++)
                for (struct fs_inode *p = fs->buckets[i], *next; p; p = next) {
                        next = p->next;
                        free(p);
                }
        free(fs->buckets);
        free(fs->pack_state);
        free(fs->logged);
        free(fs->inflight);
        free(fs->ra_queue);
        free(fs->ra_threads);
        pthread_mutex_destroy(&fs->inodes_lock);
        pthread_mutex_destroy(&fs->fetch_lock);
        pthread_cond_destroy(&fs->fetch_cond);
        pthread_mutex_destroy(&fs->ra_lock);
        pthread_cond_destroy(&fs->ra_cond);
        free(fs);
        return NULL;
}

struct fuse_session *fs_session_new(struct fs *fs, struct fuse_args *args)
{
        if (!fs || !args)
                return NULL;
        return fuse_session_new(args, &fs_ops, sizeof fs_ops, fs);
}

void fs_get_counters(const struct fs *fs, struct fs_counters *ret)
{
        struct fs *m = (struct fs *)fs; /* the table lock only */

        if (!fs || !ret)
                return;
        pthread_mutex_lock(&m->inodes_lock);
        ret->inodes = fs->n_inodes;
        pthread_mutex_unlock(&m->inodes_lock);
        ret->chunks_fetched = atomic_load(&fs->chunks_fetched);
        ret->bytes_fetched = atomic_load(&fs->bytes_fetched);
        ret->cache_hits = atomic_load(&fs->cache_hits);
        ret->cache_misses = atomic_load(&fs->cache_misses);
        ret->bytes_served = atomic_load(&fs->bytes_served);
        ret->errors = atomic_load(&fs->errors);
        ret->readahead_chunks = atomic_load(&fs->readahead_chunks);
        ret->reads = atomic_load(&fs->reads);
}

ssize_t fs_read_file(struct fs *fs, uint64_t ino, uint64_t off, void *dst, size_t len)
{
        struct tree_inode ti;
        int r;

        if (!fs || (!dst && len))
                return -EINVAL;
        r = tree_inode(fs->tree, ino, &ti);
        if (r < 0)
                return r;
        if (S_ISDIR(ti.attr.mode))
                return -EISDIR;
        if (!S_ISREG(ti.attr.mode))
                return -EINVAL;
        if (off >= ti.attr.size)
                return 0;
        len = (size_t)MIN((uint64_t)len, ti.attr.size - off);
        r = fs_read_data(fs, &ti, NULL, off, len, dst);
        return r < 0 ? r : (ssize_t)len;
}
