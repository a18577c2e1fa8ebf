/* fs.c — FUSE handlers. Each handler is a thin adapter: it gets struct fs
 * from fuse_req_userdata(), calls one do_*() function that returns -errno,
 * and replies exactly once. See fs-internal.h for the inode numbering and
 * the lock rules, layer.c for how a change reaches the state directory.
 *
 * Data path (block copy-on-write): a regular file's bytes come from its
 * data file in the layer for chunks marked present there, and from the base
 * tree (through the node cache) for the others, up to base_limit, the
 * smallest size the file has had since it entered the layer; beyond it a
 * non-present chunk reads as zeros. The first write to a non-present chunk
 * copies up that one chunk (fetching the base bytes only if the write does
 * not cover them) and then marks it present; the data is in the data file
 * before the mark, and both before the reply. */
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <fcntl.h>
#include <inttypes.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>

#include <linux/falloc.h>

#include "fs-internal.h"
#include "trace.h"

/* The largest WRITE we take, and the smallest that do_write() treats as part
 * of a sequential stream (the kernel's writeback sends full-size WRITEs for
 * long dirty runs). A power of two, so a full-size WRITE never straddles a
 * chunk boundary it could have covered; 512 KiB rather than 1 MiB because
 * with the earlier disk start the smaller WRITEs measured no slower
 * (docs/writable-layer.md). */
#define FS_MAX_WRITE (512u << 10)
#define WRITE_STREAM_MIN (FS_MAX_WRITE / 2)

#define ACL_ACCESS "system.posix_acl_access"
#define ACL_DEFAULT "system.posix_acl_default"

static struct fs *req_fs(fuse_req_t req) { return fuse_req_userdata(req); }

/* file_of(): the struct fs_file that do_open() put in the handle slot. */
static struct fs_file *file_of(const struct fuse_file_info *fi)
{
        return (struct fs_file *)(uintptr_t)fi->fh; // NOLINT(performance-no-int-to-ptr): FUSE's handle slot is a u64
}

static struct timespec now_real(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return ts;
}

static bool broken(struct fs *fs) { return atomic_load(&fs->broken); }

int barrier_enter(struct fs *fs)
{
        pthread_rwlock_rdlock(&fs->barrier);
        if (atomic_load(&fs->readonly)) {
                pthread_rwlock_unlock(&fs->barrier);
                return -EROFS;
        }
        return 0;
}
void barrier_leave(struct fs *fs) { pthread_rwlock_unlock(&fs->barrier); }

/* ---- inode table (kernel side) ---- */

/* inode_find(): the inode the kernel knows as nodeid ino, or NULL. The
 * pointer stays valid while the kernel holds a lookup count, that is for
 * the duration of any request naming ino. */
static struct fs_inode *inode_find(struct fs *fs, uint64_t ino)
{
        struct fs_inode *p;

        pthread_mutex_lock(&fs->lock);
        p = ino_get(fs, ino);
        pthread_mutex_unlock(&fs->lock);
        return p;
}

/* inode_forget(): -n lookups; the inode goes at 0 unless the layer still
 * needs it. A count going negative means our bookkeeping is wrong: abort
 * rather than serve a freed inode. */
static void inode_forget(struct fs *fs, uint64_t ino, uint64_t n)
{
        struct fs_inode *p;
        bool dead = false;

        if (ino == FUSE_ROOT_ID)
                return;
        pthread_mutex_lock(&fs->lock);
        p = ino_get(fs, ino);
        if (!p || p->nlookup < n) {
                log_error("forget of inode %" PRIu64 " by %" PRIu64 " below zero", ino, n);
                abort();
        }
        p->nlookup -= n;
        if (p->nlookup == 0)
                ino_maybe_free(fs, p, &dead);
        pthread_mutex_unlock(&fs->lock);
        if (dead)
                wl_data_discard(fs, ino);
}

/* ---- attributes ---- */

/* base_blocks(): the blocks of p's base extents below base_limit, in the
 * chunks the layer does not hold. fs->lock held. */
static uint64_t base_blocks(const struct fs *fs, const struct fs_inode *p)
{
        uint64_t cs = fs->chunk_size, bytes = 0;

        for (uint32_t i = 0, n = tree_extent_count(fs->tree, &p->base); i < n; i++) {
                uint64_t off, len, end;
                tree_extent(fs->tree, &p->base, i, &off, &len);
                end = MIN(off + len, p->base_limit);
                while (off < end) {
                        uint64_t ci = off / cs, next = MIN((ci + 1) * cs, end);
                        if (ci >= p->n_present || !p->present[ci])
                                bytes += next - off;
                        off = next;
                }
        }
        return DIV_ROUND_UP(bytes, 512);
}

/* layer_blocks(): st_blocks of a regular file the layer holds data of: what
 * its data file has allocated, plus the base's bytes it still reads, so a
 * sparse file shows as one (du, cp's sparse detection). Never 0 for a file
 * with a size: its last writes may still be in the kernel's cache, not yet
 * in the data file, and a file of size > 0 with no blocks reads as all
 * holes to `tar --sparse` (ext4 counts such delayed blocks too). If the data
 * file cannot be asked, every block (the old answer, never too few).
 * fs->lock held. */
static uint64_t layer_blocks(const struct fs *fs, struct fs_inode *p)
{
        uint64_t b;

        if (!p->blocks_known) {
                if (wl_data_blocks(fs, p->ino, &b) < 0)
                        return DIV_ROUND_UP(p->attr.size, 4096) * 8;
                p->blocks = b + (p->in_base ? base_blocks(fs, p) : 0);
                p->blocks_known = true;
        }
        return p->attr.size ? MAX(p->blocks, 8u) : p->blocks;
}

static void fill_stat(const struct fs *fs, struct fs_inode *p, const struct tree_attr *a, struct stat *st)
{
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
                if (p && p->has_data) {
                        blocks = layer_blocks(fs, p);
                } else if (!p || p->in_base) {
                        struct tree_inode ti;
                        const struct tree_inode *b = p ? &p->base : NULL;
                        if (!b && tree_inode(fs->tree, a->ino, &ti) == 0)
                                b = &ti;
                        for (uint32_t i = 0, n = b ? tree_extent_count(fs->tree, b) : 0; i < n; i++) {
                                uint64_t off, len;
                                tree_extent(fs->tree, b, i, &off, &len);
                                blocks += DIV_ROUND_UP(len, 512);
                        }
                }
        }
        st->st_blocks = (blkcnt_t)blocks;
}

static void fill_entry(const struct fs *fs, struct fs_inode *p, struct fuse_entry_param *e)
{
        memset(e, 0, sizeof *e);
        e->ino = p->ino;
        e->generation = 0;
        e->attr_timeout = FS_BASE_TIMEOUT;
        e->entry_timeout = FS_BASE_TIMEOUT;
        fill_stat(fs, p, &p->attr, &e->attr);
}

/* ref_locked(): +1 lookup of ino for an entry about to be handed to the
 * kernel; fills e. fs->lock held. */
static int ref_locked(struct fs *fs, uint64_t ino, uint64_t parent, struct fuse_entry_param *e)
{
        struct fs_inode *p;
        int r = ino_load(fs, ino, &p);

        if (r < 0)
                return r == -ENOENT ? -EIO : r;
        if (p->nlookup == 0 && !p->modified && S_ISDIR(p->attr.mode))
                p->parent = parent;
        p->nlookup++;
        fill_entry(fs, p, e);
        return 0;
}

/* ---- handlers ---- */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
        struct fs *fs = userdata;

        /* Under writeback cache the kernel would leave suid/sgid clearing
         * to us on WRITEs that lack the writer's credentials, so never ask
         * for KILLPRIV (v1). KILLPRIV_V2 is asked for in kernel-io.c: with
         * it the kernel sends a suid file's WRITEs through, with the
         * writer's credentials, marked when the bits must go. */
        conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV;
        /* Data from the cache is verified and copied, never spliced. We are
         * the only writer: no need to invalidate on attribute changes. O_TRUNC
         * arrives as a SETATTR, one truncate path. */
        conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE |
                        FUSE_CAP_AUTO_INVAL_DATA | FUSE_CAP_READDIRPLUS_AUTO |
                        FUSE_CAP_ATOMIC_O_TRUNC);
        if (conn->capable & FUSE_CAP_READDIRPLUS)
                conn->want |= FUSE_CAP_READDIRPLUS;
        if (conn->capable & FUSE_CAP_ASYNC_READ)
                conn->want |= FUSE_CAP_ASYNC_READ;
        if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
                conn->want |= FUSE_CAP_CACHE_SYMLINKS;
        if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
                conn->want |= FUSE_CAP_PARALLEL_DIROPS;
        /* A directory handle holds nothing here: opendir answers ENOSYS and
         * the kernel stops sending OPENDIR and RELEASEDIR (two round trips
         * per directory a walk opens), keeping readdir cached as we asked. */
        fs->no_opendir = (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) != 0;
        /* Large WRITEs: the kernel's writeback sends up to FS_MAX_WRITE at
         * once (libfuse negotiates max_pages from this). */
        conn->max_write = FS_MAX_WRITE;
        if (conn->capable & FUSE_CAP_WRITEBACK_CACHE) {
                conn->want |= FUSE_CAP_WRITEBACK_CACHE;
                fs->writeback = true;
        }
        /* ACLs travel as system.posix_acl_* xattrs; the kernel enforces
         * them, we keep the mode in sync and apply umask or the default ACL
         * at creation (hence DONT_MASK). */
        if ((conn->capable & FUSE_CAP_POSIX_ACL) && (conn->capable & FUSE_CAP_DONT_MASK)) {
                conn->want |= FUSE_CAP_POSIX_ACL | FUSE_CAP_DONT_MASK;
                fs->acl = true;
        }
}

static int do_lookup(struct fs *fs, uint64_t parent, const char *name, struct fuse_entry_param *e)
{
        struct fs_inode *dir;
        uint64_t ino;
        int r;

        if (strlen(name) > TREE_NAME_MAX)
                return -ENAMETOOLONG;
        pthread_mutex_lock(&fs->lock);
        dir = ino_get(fs, parent);
        if (!dir)
                r = -ESTALE;
        else
                r = dir_lookup(fs, dir, name, &ino);
        if (r >= 0)
                r = ref_locked(fs, ino, parent, e);
        pthread_mutex_unlock(&fs->lock);
        return r;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
        struct fuse_entry_param e;
        int r = do_lookup(req_fs(req), parent, name, &e);

        if (r == -ENOENT) {
                /* A negative entry: every create goes through this kernel. */
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

static int do_getattr(struct fs *fs, uint64_t ino, struct stat *st)
{
        struct fs_inode *p;

        pthread_mutex_lock(&fs->lock);
        p = ino_get(fs, ino);
        if (p)
                fill_stat(fs, p, &p->attr, st);
        pthread_mutex_unlock(&fs->lock);
        return p ? 0 : -ESTALE;
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        struct stat st;
        int r = do_getattr(req_fs(req), ino, &st);

        (void)fi;
        if (r < 0)
                fuse_reply_err(req, -r);
        else
                fuse_reply_attr(req, &st, FS_BASE_TIMEOUT);
}

/* in_group(): the caller is in group gid (its fsgid or a supplementary
 * group, from /proc/PID/status: libfuse's fuse_req_getgroups() reads that
 * file into a buffer it does not NUL-terminate before strstr()). */
static bool in_group(fuse_req_t req, gid_t gid)
{
        const struct fuse_ctx *ctx = fuse_req_ctx(req);
        _cleanup_(closep) int fd = -1;
        char path[64], buf[16384];
        const char *g;
        ssize_t n;

        if (ctx->gid == gid)
                return true;
        snprintf(path, sizeof path, "/proc/%ld/status", (long)ctx->pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        n = pread_full(fd, buf, sizeof buf - 1, 0); /* procfs: size 0, read to EOF */
        if (n < 0)
                return false;
        buf[n] = 0;
        g = strstr(buf, "\nGroups:");
        if (!g)
                return false;
        for (g += 8; *g && *g != '\n';) {
                char *end;
                unsigned long v = strtoul(g, &end, 10);
                if (end == g) {
                        g++;
                        continue;
                }
                if (v == gid)
                        return true;
                g = end;
        }
        return false;
}

/* file_fd(): the data file of an open handle, opened on first use and
 * kept with the handle while fewer than fs->fd_cap are kept; past that
 * (a sandbox holding more written files open than the open-file limit
 * allows) it is opened for this request only: *own gets it, for the
 * caller to close. Descriptors in use thus stay below the cap plus one per
 * request in flight, and a write never fails with EMFILE. */
static int file_fd_adopt(struct fs *fs, struct fs_file *f, int fd, int *own)
{
        int expect = -1;

        if (atomic_fetch_add(&fs->fd_kept, 1) >= fs->fd_cap) {
                atomic_fetch_sub(&fs->fd_kept, 1);
                *own = fd;
                return fd;
        }
        if (!atomic_compare_exchange_strong(&f->fd, &expect, fd)) {
                atomic_fetch_sub(&fs->fd_kept, 1);
                close(fd);
                return expect;
        }
        return fd;
}

static int file_fd(struct fs *fs, struct fs_file *f, int *own)
{
        int fd = atomic_load(&f->fd);

        if (fd >= 0)
                return fd;
        fd = wl_data_open(fs, f->inode->ino, O_RDWR);
        if (fd < 0)
                return fd;
        return file_fd_adopt(fs, f, fd, own);
}

/* data_fd(): p's data file, made if missing, for a change through handle f
 * (NULL: a path's, *own gets it): file_fd()'s, or the descriptor that made
 * it (a new file's first WRITE opens its data file once, not twice). */
static int data_fd(struct fs *fs, struct fs_inode *p, struct fs_file *f, int *own)
{
        int fd = -1, r;

        r = wl_data_ensure(fs, p, f ? &fd : NULL);
        if (r < 0)
                return r;
        if (fd >= 0)
                return file_fd_adopt(fs, f, fd, own);
        return f ? file_fd(fs, f, own) : (*own = wl_data_open(fs, p->ino, O_RDWR));
}

/* truncate_data(): size of p's data becomes size. */
static int truncate_data(struct fs *fs, struct fs_inode *p, struct fs_file *f, uint64_t size)
{
        _cleanup_(closep) int own = -1;
        bool lower = false;
        int fd;

        fd = data_fd(fs, p, f, &own);
        if (fd < 0)
                return fd;
        /* Data first; the base limit after it (a crash between is repaired
         * at load: base_limit <= the data file's size). */
        ck_before_change(fs, p->ino, fd, size, UINT64_MAX);
        if (ftruncate(fd, (off_t)size) < 0)
                return -errno;
        pthread_mutex_lock(&fs->lock);
        p->attr.size = size;
        p->blocks_known = false;
        if (size < p->base_limit) {
                p->base_limit = size;
                lower = true;
        }
        pthread_mutex_unlock(&fs->lock);
        if (lower)
                return wl_set_base_limit(fs, p, size);
        return 0;
}

/* kill_suidgid(): whether the request being handled must clear suid/sgid.
 * Under KILLPRIV_V2 the kernel says so (a caller without CAP_FSETID);
 * otherwise the kernel clears the bits itself with a SETATTR. */
static bool kill_suidgid(struct fs *fs)
{
        return atomic_load(&fs->killpriv_v2) && fs_req_kill();
}

/* kill_mask(): the mode bits that a write, truncate, fallocate or chown by
 * the caller of req clears when the kernel leaves it to us (kill), as the
 * VFS would (setattr_should_drop_suidgid()): suid, and sgid if the file has
 * group exec or the caller is neither in its group nor root. Sgid without
 * group exec otherwise stays (it marks mandatory locking). The file's mode
 * and group are read under fs->lock; in_group() reads /proc without it. */
static mode_t kill_mask(fuse_req_t req, struct fs *fs, struct fs_inode *p, bool kill)
{
        mode_t m;
        gid_t gid;

        if (!kill)
                return 0;
        pthread_mutex_lock(&fs->lock);
        m = p->attr.mode;
        gid = p->attr.gid;
        pthread_mutex_unlock(&fs->lock);
        if ((m & S_ISGID) && !(m & S_IXGRP) && fuse_req_ctx(req)->uid != 0 && !in_group(req, gid))
                return S_ISUID | S_ISGID;
        return S_ISUID | ((m & S_IXGRP) ? S_ISGID : 0);
}

static int do_setattr(fuse_req_t req, struct fs *fs, uint64_t ino, const struct stat *in, int valid,
                      struct fuse_file_info *fi, struct stat *ret)
{
        const struct fuse_ctx *ctx = fuse_req_ctx(req);
        struct fs_inode *p = inode_find(fs, ino);
        struct timespec now = now_real();
        struct wl_txn t = {};
        struct tree_attr a;
        bool sgid_ok = true;
        mode_t kill = 0;
        int r;

        if (!p)
                return -ESTALE;
        if (broken(fs))
                return -EIO;
        /* chown clears suid and sgid on non-directories (under KILLPRIV_V2
         * the kernel leaves it to us, and leaves it for ever when
         * KILLPRIV_V2 is off). A truncate does when the kernel marks the
         * request (kernel-io.c). */
        if ((valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) && !(valid & FUSE_SET_ATTR_MODE))
                kill = kill_mask(req, fs, p, true);
        if (valid & FUSE_SET_ATTR_SIZE)
                kill |= kill_mask(req, fs, p, kill_suidgid(fs));
        if (valid & FUSE_SET_ATTR_MODE)
                sgid_ok = ctx->uid == 0 || in_group(req, (valid & FUSE_SET_ATTR_GID) ? in->st_gid : p->attr.gid);
        if (valid & FUSE_SET_ATTR_SIZE) {
                if (S_ISDIR(p->attr.mode))
                        return -EISDIR;
                if (!S_ISREG(p->attr.mode))
                        return -EINVAL;
                r = truncate_data(fs, p, fi ? file_of(fi) : NULL, (uint64_t)in->st_size);
                if (r < 0)
                        return r;
        }

        pthread_mutex_lock(&fs->lock);
        a = p->attr;
        if (valid & FUSE_SET_ATTR_MODE) {
                a.mode = (a.mode & S_IFMT) | (in->st_mode & 07777);
                /* As setattr_copy(): no sgid for a group the caller is not in. */
                if (!sgid_ok)
                        a.mode &= ~(mode_t)S_ISGID;
        }
        if (valid & FUSE_SET_ATTR_UID)
                a.uid = in->st_uid;
        if (valid & FUSE_SET_ATTR_GID)
                a.gid = in->st_gid;
        if (!S_ISDIR(a.mode))
                a.mode &= ~kill;
        if (valid & FUSE_SET_ATTR_ATIME_NOW)
                a.atime = now;
        else if (valid & FUSE_SET_ATTR_ATIME)
                a.atime = in->st_atim;
        if (valid & FUSE_SET_ATTR_MTIME_NOW)
                a.mtime = now;
        else if (valid & FUSE_SET_ATTR_MTIME)
                a.mtime = in->st_mtim;
        else if (valid & FUSE_SET_ATTR_SIZE)
                a.mtime = now;
        a.ctime = (valid & FUSE_SET_ATTR_CTIME) ? in->st_ctim : now;
        a.size = p->attr.size;
        if (fs->acl && (valid & FUSE_SET_ATTR_MODE) && a.mode != p->attr.mode) {
                const void *v = NULL;
                size_t len = 0;
                bool have = false;
                if (p->xattrs_own) {
                        for (size_t i = 0; i < p->n_xattrs; i++)
                                if (strcmp(p->xattrs[i].name, ACL_ACCESS) == 0) {
                                        v = p->xattrs[i].value;
                                        len = p->xattrs[i].len;
                                        have = true;
                                }
                } else if (p->in_base)
                        have = tree_xattr_get(fs->tree, &p->base, ACL_ACCESS, &v, &len) == 0;
                if (have) {
                        _cleanup_(freep) void *acl = malloc(len ? len : 1);
                        if (acl) {
                                memcpy(acl, v, len);
                                acl_chmod(acl, len, a.mode);
                                wl_txn_op(&t, WL_OP_XSET, ino, 0, ACL_ACCESS, acl, len);
                        } else
                                t.err = -ENOMEM;
                }
        }
        {
                bool times = p->times_dirty;
                p->times_dirty = false;
                wl_txn_attr(&t, &a, p->parent);
                wl_txn_apply(fs, &t);
                if (t.err < 0)
                        p->times_dirty = times;
        }
        fill_stat(fs, p, &p->attr, ret);
        pthread_mutex_unlock(&fs->lock);
        return wl_txn_write(fs, &t);
}

/* WITH_SPACE(fs, r, call): r = call, and once more if that failed for want
 * of space while data files of removed inodes waited for the journal to be
 * durable (wl_data_discard()): they are freed first (wl_reap_space()), and
 * so is what the reaper freed since the call began. */
#define WITH_SPACE(fs, r, call)                                                         \
        do {                                                                            \
                uint64_t reaped_ = wl_reaped(fs);                                       \
                (r) = (call);                                                           \
                if (((r) == -ENOSPC || (r) == -EDQUOT) && wl_reap_space(fs, reaped_))   \
                        (r) = (call);                                                   \
        } while (0)

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
        struct fs *fs = req_fs(req);
        struct stat st;
        int r;

        r = barrier_enter(fs);
        if (r == 0) {
                WITH_SPACE(fs, r, do_setattr(req, fs, ino, attr, to_set, fi, &st));
                barrier_leave(fs);
        }

        if (r < 0)
                fuse_reply_err(req, -r);
        else
                fuse_reply_attr(req, &st, FS_BASE_TIMEOUT);
}

static int do_readlink(struct fs *fs, uint64_t ino, char **ret)
{
        struct fs_inode *p;
        const char *target = NULL;
        size_t len;
        int r = 0;

        pthread_mutex_lock(&fs->lock);
        p = ino_get(fs, ino);
        if (!p)
                r = -ESTALE;
        else if (!S_ISLNK(p->attr.mode))
                r = -EINVAL;
        else if (p->symlink)
                target = p->symlink;
        else if (!p->in_base || tree_symlink(fs->tree, &p->base, &target, &len) < 0)
                r = -EIO;
        if (r >= 0) {
                *ret = strdup(target);
                if (!*ret)
                        r = -ENOMEM;
        }
        pthread_mutex_unlock(&fs->lock);
        return r;
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
        _cleanup_(freep) char *target = NULL;
        int r = do_readlink(req_fs(req), ino, &target);

        if (r < 0)
                fuse_reply_err(req, -r);
        else
                fuse_reply_readlink(req, target);
}

/* xattr_lookup(): p's xattr name; fs->lock held. */
static int xattr_lookup(struct fs *fs, struct fs_inode *p, const char *name, const void **ret,
                        size_t *ret_len)
{
        if (p->xattrs_own) {
                for (size_t i = 0; i < p->n_xattrs; i++)
                        if (strcmp(p->xattrs[i].name, name) == 0) {
                                *ret = p->xattrs[i].value;
                                *ret_len = p->xattrs[i].len;
                                return 0;
                        }
                return -ENODATA;
        }
        if (!p->in_base)
                return -ENODATA;
        return tree_xattr_get(fs->tree, &p->base, name, ret, ret_len);
}

/* do_make(): a new inode named name in parent: mknod, mkdir, symlink, create. */
static int do_make(fuse_req_t req, struct fs *fs, uint64_t parent, const char *name, mode_t mode,
                   dev_t rdev, const char *target, struct fuse_entry_param *e, struct fs_inode **ret)
{
        const struct fuse_ctx *ctx = fuse_req_ctx(req);
        struct timespec now = now_real();
        _cleanup_(freep) void *acl = NULL;
        struct wl_txn t = {};
        struct fs_inode *dir, *p;
        struct tree_attr a = {}, da;
        uint64_t ino, exist;
        const void *dflt;
        size_t dlen = 0, acl_len = 0;
        bool have_dflt = false;
        int r;

        if (strlen(name) > TREE_NAME_MAX)
                return -ENAMETOOLONG;
        if (target && (strlen(target) == 0 || strlen(target) > TREE_SYMLINK_MAX))
                return strlen(target) ? -ENAMETOOLONG : -ENOENT;
        if (broken(fs))
                return -EIO;
        pthread_mutex_lock(&fs->lock);
        dir = ino_get(fs, parent);
        if (!dir) {
                r = -ESTALE;
                goto fail;
        }
        if (!S_ISDIR(dir->attr.mode)) {
                r = -ENOTDIR;
                goto fail;
        }
        if (dir->attr.nlink == 0) {
                r = -ENOENT;
                goto fail;
        }
        r = dir_lookup(fs, dir, name, &exist);
        if (r >= 0) {
                r = -EEXIST;
                goto fail;
        }
        ino = fs->next_ino++;
        a.ino = ino;
        a.mode = mode;
        a.uid = ctx->uid;
        a.gid = ctx->gid;
        if (dir->attr.mode & S_ISGID) {
                a.gid = dir->attr.gid;
                if (S_ISDIR(mode))
                        a.mode |= S_ISGID;
        }
        if (fs->acl && !S_ISLNK(mode))
                have_dflt = xattr_lookup(fs, dir, ACL_DEFAULT, &dflt, &dlen) == 0;
        if (have_dflt) {
                mode_t m = a.mode;
                r = acl_create(dflt, dlen, &m, &acl, &acl_len);
                if (r < 0)
                        goto fail;
                a.mode = m;
        } else if (!S_ISLNK(mode))
                a.mode &= ~(mode_t)(ctx->umask & 0777);
        a.nlink = S_ISDIR(mode) ? 2 : 1;
        a.rdev = rdev;
        a.size = target ? strlen(target) : 0;
        a.atime = a.mtime = a.ctime = now;

        t.grows = true;
        wl_txn_op(&t, WL_OP_NEXTINO, ino + 1, 0, NULL, NULL, 0);
        wl_txn_attr(&t, &a, parent);
        if (target)
                wl_txn_op(&t, WL_OP_SYMLINK, ino, 0, NULL, target, strlen(target));
        if (S_ISDIR(mode))
                wl_txn_op(&t, WL_OP_DIRNEW, ino, 0, NULL, NULL, 0);
        if (acl)
                wl_txn_op(&t, WL_OP_XSET, ino, 0, ACL_ACCESS, acl, acl_len);
        if (have_dflt && S_ISDIR(mode))
                wl_txn_op(&t, WL_OP_XSET, ino, 0, ACL_DEFAULT, dflt, dlen);
        wl_txn_op(&t, WL_OP_LINK, parent, ino, name, NULL, 0);
        da = dir->attr;
        da.mtime = da.ctime = now;
        if (S_ISDIR(mode))
                da.nlink++;
        wl_txn_attr(&t, &da, dir->parent);
        wl_txn_apply(fs, &t);
        p = ino_get(fs, ino);
        if (t.err >= 0 && p) {
                p->nlookup++;
                if (ret)
                        p->nopen++; /* create: the handle, before anyone can forget it */
                fill_entry(fs, p, e);
        } else if (t.err >= 0)
                t.err = -EIO;
        pthread_mutex_unlock(&fs->lock);
        r = wl_txn_write(fs, &t);
        if (r >= 0 && ret)
                *ret = p;
        return r;
fail:
        pthread_mutex_unlock(&fs->lock);
        return r;
}

static void reply_entry_or_err(fuse_req_t req, int r, const struct fuse_entry_param *e)
{
        if (r < 0)
                fuse_reply_err(req, -r);
        else
                fuse_reply_entry(req, e);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
        struct fuse_entry_param e;
        int r;

        if (!S_ISREG(mode) && !S_ISCHR(mode) && !S_ISBLK(mode) && !S_ISFIFO(mode) && !S_ISSOCK(mode))
                r = -EINVAL;
        else {
                r = barrier_enter(req_fs(req));
                if (r == 0) {
                        WITH_SPACE(req_fs(req), r, do_make(req, req_fs(req), parent, name, mode, rdev, NULL, &e, NULL));
                        barrier_leave(req_fs(req));
                }
        }
        reply_entry_or_err(req, r, &e);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
        struct fuse_entry_param e;
        int r;

        r = barrier_enter(req_fs(req));
        if (r == 0) {
                WITH_SPACE(req_fs(req), r,
                           do_make(req, req_fs(req), parent, name, S_IFDIR | (mode & 07777), 0, NULL, &e, NULL));
                barrier_leave(req_fs(req));
        }

        reply_entry_or_err(req, r, &e);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
        struct fuse_entry_param e;
        int r;

        r = barrier_enter(req_fs(req));
        if (r == 0) {
                WITH_SPACE(req_fs(req), r, do_make(req, req_fs(req), parent, name, S_IFLNK | 0777, 0, link, &e, NULL));
                barrier_leave(req_fs(req));
        }

        reply_entry_or_err(req, r, &e);
}

/* do_remove(): unlink (dir false) or rmdir (dir true). */
static int do_remove(struct fs *fs, uint64_t parent, const char *name, bool isdir)
{
        struct timespec now = now_real();
        struct wl_txn t = {};
        struct fs_inode *dir, *p;
        struct tree_attr a, da;
        uint64_t ino;
        bool dead = false;
        int r;

        if (strlen(name) > TREE_NAME_MAX)
                return -ENAMETOOLONG;
        if (broken(fs))
                return -EIO;
        pthread_mutex_lock(&fs->lock);
        dir = ino_get(fs, parent);
        r = dir ? dir_lookup(fs, dir, name, &ino) : -ESTALE;
        if (r >= 0)
                r = ino_load(fs, ino, &p);
        if (r < 0)
                goto fail;
        if (isdir && !S_ISDIR(p->attr.mode))
                r = -ENOTDIR;
        else if (!isdir && S_ISDIR(p->attr.mode))
                r = -EISDIR;
        else if (isdir && dir_count(fs, p) > 0)
                r = -ENOTEMPTY;
        if (r < 0) {
                ino_maybe_free(fs, p, NULL);
                goto fail;
        }
        a = p->attr;
        a.nlink = isdir ? 0 : a.nlink - 1;
        a.ctime = now;
        da = dir->attr;
        da.mtime = da.ctime = now;
        if (isdir)
                da.nlink--;
        t.frees = true;
        wl_txn_op(&t, WL_OP_UNLINK, parent, 0, name, NULL, 0);
        wl_txn_attr(&t, &a, p->parent);
        wl_txn_attr(&t, &da, dir->parent);
        wl_txn_apply(fs, &t);
        ino_maybe_free(fs, p, t.err >= 0 ? &dead : NULL);
        pthread_mutex_unlock(&fs->lock);
        r = wl_txn_write(fs, &t);
        if (r >= 0 && dead)
                wl_data_discard(fs, ino); /* after the journal says so */
        return r;
fail:
        pthread_mutex_unlock(&fs->lock);
        return r;
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
        int r;

        r = barrier_enter(req_fs(req));
        if (r == 0) {
                WITH_SPACE(req_fs(req), r, do_remove(req_fs(req), parent, name, false));
                barrier_leave(req_fs(req));
        }
        fuse_reply_err(req, -r);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
        int r;

        r = barrier_enter(req_fs(req));
        if (r == 0) {
                WITH_SPACE(req_fs(req), r, do_remove(req_fs(req), parent, name, true));
                barrier_leave(req_fs(req));
        }
        fuse_reply_err(req, -r);
}

/* A rename's attribute changes, at most one record per inode. */
struct chg {
        struct fs_inode *p;
        struct tree_attr a;
        uint64_t parent;
};

static struct chg *chg_of(struct chg *c, size_t *n, struct fs_inode *p)
{
        for (size_t i = 0; i < *n; i++)
                if (c[i].p == p)
                        return &c[i];
        c[*n] = (struct chg){ .p = p, .a = p->attr, .parent = p->parent };
        return &c[(*n)++];
}

static int do_rename(struct fs *fs, uint64_t oldp, const char *oldname, uint64_t newp,
                     const char *newname, unsigned flags)
{
        struct timespec now = now_real();
        struct wl_txn t = {};
        struct fs_inode *od, *nd, *src = NULL, *dst = NULL;
        struct chg c[4];
        size_t n = 0;
        uint64_t sino, dino;
        bool dead = false;
        int r;

        if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE))
                return -EINVAL;
        if ((flags & RENAME_NOREPLACE) && (flags & RENAME_EXCHANGE))
                return -EINVAL;
        if (strlen(oldname) > TREE_NAME_MAX || strlen(newname) > TREE_NAME_MAX)
                return -ENAMETOOLONG;
        if (broken(fs))
                return -EIO;
        pthread_mutex_lock(&fs->lock);
        od = ino_get(fs, oldp);
        nd = ino_get(fs, newp);
        if (!od || !nd) {
                r = -ESTALE;
                goto fail;
        }
        r = dir_lookup(fs, od, oldname, &sino);
        if (r >= 0)
                r = ino_load(fs, sino, &src);
        if (r < 0)
                goto fail;
        r = dir_lookup(fs, nd, newname, &dino);
        if (r >= 0)
                r = ino_load(fs, dino, &dst);
        else if (r == -ENOENT)
                r = 0;
        if (r < 0)
                goto fail_free;
        if (dst && (flags & RENAME_NOREPLACE)) {
                r = -EEXIST;
                goto fail_free;
        }
        if (!dst && (flags & RENAME_EXCHANGE)) {
                r = -ENOENT;
                goto fail_free;
        }
        if (dst == src) { /* the same inode: nothing to do (POSIX) */
                r = 0;
                goto fail_free;
        }
        if (dst && !(flags & RENAME_EXCHANGE)) {
                if (S_ISDIR(src->attr.mode) && !S_ISDIR(dst->attr.mode))
                        r = -ENOTDIR;
                else if (!S_ISDIR(src->attr.mode) && S_ISDIR(dst->attr.mode))
                        r = -EISDIR;
                else if (S_ISDIR(dst->attr.mode) && dir_count(fs, dst) > 0)
                        r = -ENOTEMPTY;
                if (r < 0)
                        goto fail_free;
        }

        chg_of(c, &n, od)->a.mtime = now;
        chg_of(c, &n, od)->a.ctime = now;
        chg_of(c, &n, nd)->a.mtime = now;
        chg_of(c, &n, nd)->a.ctime = now;
        chg_of(c, &n, src)->a.ctime = now;
        if (flags & RENAME_EXCHANGE) {
                wl_txn_op(&t, WL_OP_LINK, oldp, dst->ino, oldname, NULL, 0);
                wl_txn_op(&t, WL_OP_LINK, newp, src->ino, newname, NULL, 0);
                chg_of(c, &n, dst)->a.ctime = now;
                if (od != nd) {
                        if (S_ISDIR(src->attr.mode)) {
                                chg_of(c, &n, od)->a.nlink--;
                                chg_of(c, &n, nd)->a.nlink++;
                                chg_of(c, &n, src)->parent = newp;
                        }
                        if (S_ISDIR(dst->attr.mode)) {
                                chg_of(c, &n, nd)->a.nlink--;
                                chg_of(c, &n, od)->a.nlink++;
                                chg_of(c, &n, dst)->parent = oldp;
                        }
                }
        } else {
                if (dst) {
                        struct chg *d = chg_of(c, &n, dst);
                        d->a.ctime = now;
                        if (S_ISDIR(dst->attr.mode)) {
                                d->a.nlink = 0;
                                chg_of(c, &n, nd)->a.nlink--;
                        } else
                                d->a.nlink--;
                }
                wl_txn_op(&t, WL_OP_UNLINK, oldp, 0, oldname, NULL, 0);
                wl_txn_op(&t, WL_OP_LINK, newp, src->ino, newname, NULL, 0);
                if (S_ISDIR(src->attr.mode) && od != nd) {
                        chg_of(c, &n, od)->a.nlink--;
                        chg_of(c, &n, nd)->a.nlink++;
                        chg_of(c, &n, src)->parent = newp;
                }
        }
        for (size_t i = 0; i < n; i++)
                wl_txn_attr(&t, &c[i].a, c[i].parent);
        wl_txn_apply(fs, &t);
        if (t.err < 0) { /* no room: neither changed; still written (its turn) */
                if (dst)
                        ino_maybe_free(fs, dst, NULL);
                ino_maybe_free(fs, src, NULL);
        } else if (dst && !(flags & RENAME_EXCHANGE)) {
                dino = dst->ino;
                ino_maybe_free(fs, dst, &dead);
        }
        pthread_mutex_unlock(&fs->lock);
        r = wl_txn_write(fs, &t);
        if (r >= 0 && dead)
                wl_data_discard(fs, dino);
        return r;
fail_free:
        if (dst)
                ino_maybe_free(fs, dst, NULL);
        ino_maybe_free(fs, src, NULL);
fail:
        pthread_mutex_unlock(&fs->lock);
        return r;
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
        int r;

        r = barrier_enter(req_fs(req));
        if (r == 0) {
                WITH_SPACE(req_fs(req), r, do_rename(req_fs(req), parent, name, newparent, newname, flags));
                barrier_leave(req_fs(req));
        }
        fuse_reply_err(req, -r);
}

static int do_link(struct fs *fs, uint64_t ino, uint64_t newp, const char *name,
                   struct fuse_entry_param *e)
{
        struct timespec now = now_real();
        struct wl_txn t = {};
        struct fs_inode *p, *dir;
        struct tree_attr a, da;
        uint64_t exist;
        int r = 0;

        if (strlen(name) > TREE_NAME_MAX)
                return -ENAMETOOLONG;
        if (broken(fs))
                return -EIO;
        pthread_mutex_lock(&fs->lock);
        p = ino_get(fs, ino);
        dir = ino_get(fs, newp);
        if (!p || !dir)
                r = -ESTALE;
        else if (S_ISDIR(p->attr.mode))
                r = -EPERM;
        else if (!S_ISDIR(dir->attr.mode))
                r = -ENOTDIR;
        else if (p->attr.nlink == 0 || dir->attr.nlink == 0)
                r = -ENOENT;
        else if (dir_lookup(fs, dir, name, &exist) >= 0)
                r = -EEXIST;
        if (r < 0) {
                pthread_mutex_unlock(&fs->lock);
                return r;
        }
        a = p->attr;
        a.nlink++;
        a.ctime = now;
        da = dir->attr;
        da.mtime = da.ctime = now;
        t.grows = true;
        wl_txn_op(&t, WL_OP_LINK, newp, ino, name, NULL, 0);
        wl_txn_attr(&t, &a, p->parent);
        wl_txn_attr(&t, &da, dir->parent);
        wl_txn_apply(fs, &t);
        if (t.err >= 0) {
                p->nlookup++;
                fill_entry(fs, p, e);
        }
        pthread_mutex_unlock(&fs->lock);
        return wl_txn_write(fs, &t);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
        struct fuse_entry_param e;
        int r;

        r = barrier_enter(req_fs(req));
        if (r == 0) {
                WITH_SPACE(req_fs(req), r, do_link(req_fs(req), ino, newparent, newname, &e));
                barrier_leave(req_fs(req));
        }

        reply_entry_or_err(req, r, &e);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        struct fs_inode *p;

        if (req_fs(req)->no_opendir) {
                /* Success, and no more OPENDIR: the kernel then keeps the
                 * page cache and caches readdir (FOPEN_KEEP_CACHE |
                 * FOPEN_CACHE_DIR are its defaults for an opendir it does
                 * not send), as we would ask below. */
                fuse_reply_err(req, ENOSYS);
                return;
        }
        p = inode_find(req_fs(req), ino);
        if (!p) {
                fuse_reply_err(req, ESTALE);
                return;
        }
        fi->fh = 0;
        fi->keep_cache = 1;
        fi->cache_readdir = 1; /* we are the only writer; changes invalidate it */
        fuse_reply_open(req, fi);
}

/* add_entry(): one entry into buf; counts a lookup for readdirplus (not
 * for "." and ".."). fs->lock held. 0 added, 1 full, -errno. */
static int add_entry(struct fs *fs, struct fs_inode *dir, bool plus, char *buf, size_t size,
                     size_t *used, const char *name, uint64_t ino, uint64_t cookie, bool dot)
{
        struct fuse_entry_param e;
        struct tree_attr a;
        size_t need;
        int r;

        memset(&e, 0, sizeof e);
        if (dot) {
                e.attr.st_ino = ino;
                e.attr.st_mode = S_IFDIR;
        } else {
                r = child_attr(fs, ino, &a);
                if (r < 0)
                        return r;
                e.ino = ino;
                e.attr_timeout = e.entry_timeout = FS_BASE_TIMEOUT;
                fill_stat(fs, ino_get(fs, ino), &a, &e.attr);
        }
        if (plus)
                need = fuse_add_direntry_plus(NULL, buf + *used, size - *used, name, &e, (off_t)cookie);
        else
                need = fuse_add_direntry(NULL, buf + *used, size - *used, name, &e.attr, (off_t)cookie);
        if (need > size - *used)
                return 1; /* not added: not counted */
        if (plus && !dot) {
                r = ref_locked(fs, ino, dir->ino, &e);
                if (r < 0)
                        return r;
        }
        *used += need;
        return 0;
}

/* do_readdir(): entries of dir after offset off into buf. Offsets are
 * stable under concurrent changes: "." is 1, ".." is 2, a base entry i (in
 * the tree's sorted order) is i + 3, and an entry the layer added has a
 * larger offset than any before it (struct wl_dir); a READDIR at offset k
 * resumes after the entry whose offset is k. */
static int do_readdir(struct fs *fs, uint64_t ino, size_t size, off_t off, bool plus, char *buf,
                      size_t *ret_len)
{
        struct fs_inode *dir;
        size_t used = 0;
        int r = 0;

        pthread_mutex_lock(&fs->lock);
        dir = ino_get(fs, ino);
        if (!dir) {
                r = -ESTALE;
                goto out;
        }
        if (!S_ISDIR(dir->attr.mode)) {
                r = -ENOTDIR;
                goto out;
        }
        for (uint64_t k = (uint64_t)off; k < 2 && r == 0; k++)
                r = add_entry(fs, dir, plus, buf, size, &used, k ? ".." : ".", k ? dir->parent : dir->ino,
                              k + 1, true);
        if (dir->dir) {
                const struct wl_dir *d = dir->dir;
                size_t lo = 0, hi = d->n;
                while (lo < hi) { /* first entry with cookie > off */
                        size_t mid = (lo + hi) / 2;
                        if (d->ents[mid].cookie <= (uint64_t)off)
                                lo = mid + 1;
                        else
                                hi = mid;
                }
                for (size_t i = lo; i < d->n && r == 0; i++)
                        if (d->ents[i].name)
                                r = add_entry(fs, dir, plus, buf, size, &used, d->ents[i].name,
                                              d->ents[i].ino, d->ents[i].cookie, false);
        } else if (dir->in_base) {
                uint32_t n = tree_dir_count(fs->tree, &dir->base);
                for (uint64_t k = MAX((uint64_t)off, 2); k < (uint64_t)n + 2 && r == 0; k++) {
                        const char *name;
                        size_t len;
                        uint64_t child;
                        if (tree_dirent(fs->tree, &dir->base, (uint32_t)(k - 2), &name, &len, &child) < 0)
                                r = -EIO;
                        else
                                r = add_entry(fs, dir, plus, buf, size, &used, name, child, k + 1, false);
                }
        }
        if (r > 0 || (r < 0 && used))
                r = 0; /* full, or reply what is counted */
out:
        pthread_mutex_unlock(&fs->lock);
        if (r >= 0)
                *ret_len = used;
        return r;
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

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
        struct fs *fs = req_fs(req);

        (void)ino;
        (void)datasync;
        (void)fi;
        fuse_reply_err(req, -wl_sync(fs, NULL, false));
}

static int file_new(struct fs *fs, struct fs_inode *p, struct fuse_file_info *fi)
{
        struct fs_file *f = calloc(1, sizeof *f);

        if (!f)
                return -ENOMEM;
        f->inode = p;
        atomic_init(&f->fd, -1);
        if ((fi->flags & O_ACCMODE) != O_RDONLY) {
                f->writable = true;
                pthread_mutex_lock(&fs->lock);
                p->nwopen++;
                pthread_mutex_unlock(&fs->lock);
        }
        fi->fh = (uint64_t)(uintptr_t)f;
        fi->keep_cache = 1; /* we are the only writer: keep the page cache */
        return 0;
}

static void file_free(struct fs *fs, struct fs_file *f)
{
        struct fs_inode *p = f->inode;
        uint64_t ino = p->ino;
        int fd = atomic_load(&f->fd);
        bool dead = false;

        if (fd >= 0) {
                close(fd);
                atomic_fetch_sub(&fs->fd_kept, 1);
        }
        pthread_mutex_lock(&fs->lock);
        p->nopen--;
        if (f->writable)
                p->nwopen--;
        ino_maybe_free(fs, p, &dead);
        pthread_mutex_unlock(&fs->lock);
        if (dead)
                wl_data_discard(fs, ino);
        free(f);
}

static int do_open(struct fs *fs, uint64_t ino, struct fuse_file_info *fi)
{
        struct fs_inode *p;
        int r = 0;

        pthread_mutex_lock(&fs->lock);
        p = ino_get(fs, ino);
        if (!p)
                r = -ESTALE;
        else if (S_ISDIR(p->attr.mode))
                r = -EISDIR;
        else if (!S_ISREG(p->attr.mode))
                r = -EINVAL;
        else if (p->data_gone)
                r = -ESTALE;
        else
                p->nopen++;
        pthread_mutex_unlock(&fs->lock);
        if (r < 0)
                return r;
        /* O_APPEND is the kernel's business under writeback cache (it owns
         * the size); READs may come on write-only handles too. */
        r = file_new(fs, p, fi);
        if (r < 0) {
                pthread_mutex_lock(&fs->lock);
                p->nopen--;
                pthread_mutex_unlock(&fs->lock);
        }
        return r;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        struct fs *fs = req_fs(req);
        int r;

        /* Paused: no handle that could write (its WRITEs would fail at
         * writeback, after write() had succeeded). */
        if ((fi->flags & O_ACCMODE) != O_RDONLY && atomic_load(&fs->readonly))
                r = -EROFS;
        else
                r = do_open(fs, ino, fi);

        if (r < 0)
                fuse_reply_err(req, -r);
        else if (fuse_reply_open(req, fi) == -ENOENT) /* the open was interrupted */
                file_free(fs, file_of(fi));
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
        struct fs *fs = req_fs(req);
        struct fuse_entry_param e;
        struct fs_inode *p = NULL;
        int r;

        r = barrier_enter(fs);
        if (r == 0) {
                WITH_SPACE(fs, r, do_make(req, fs, parent, name, S_IFREG | (mode & 07777), 0, NULL, &e, &p));
                barrier_leave(fs);
        }

        if (r >= 0) {
                r = file_new(fs, p, fi);
                if (r < 0) {
                        /* The file exists; the kernel's lookup is ours to drop. */
                        pthread_mutex_lock(&fs->lock);
                        p->nopen--;
                        pthread_mutex_unlock(&fs->lock);
                        inode_forget(fs, p->ino, 1);
                }
        }
        if (r < 0)
                fuse_reply_err(req, -r);
        else if (fuse_reply_create(req, &e, fi) == -ENOENT)
                file_free(fs, file_of(fi));
}

/* ---- data ---- */

struct span {
        uint64_t size, base_limit;
        bool has_data, in_base;
        struct tree_inode base;
};

/* do_read(): size bytes at off; present chunks from the data file, the
 * others from the base (below base_limit) or zeros. */
static ssize_t do_read(struct fs *fs, struct fs_file *f, size_t size, off_t off, uint8_t **ret)
{
        struct fs_inode *p = f->inode;
        _cleanup_(freep) uint8_t *buf = NULL, *pres = NULL;
        uint64_t cs = fs->chunk_size, len, first, nch, o;
        struct span s;
        _cleanup_(closep) int own = -1;
        int r, fd = -1;

        atomic_fetch_add(&fs->reads, 1);
        if (off < 0)
                return -EINVAL;
        o = (uint64_t)off;
        pthread_mutex_lock(&fs->lock);
        s = (struct span){ .size = p->attr.size, .base_limit = p->base_limit,
                           .has_data = p->has_data, .in_base = p->in_base, .base = p->base };
        len = o < s.size ? MIN((uint64_t)size, s.size - o) : 0;
        first = o / cs;
        nch = len ? (o + len - 1) / cs - first + 1 : 0;
        if (s.has_data && nch) {
                pres = calloc(nch, 1);
                if (pres)
                        for (uint64_t i = 0; i < nch; i++)
                                pres[i] = first + i < p->n_present ? p->present[first + i] : 0;
        }
        pthread_mutex_unlock(&fs->lock);
        if (!len) {
                *ret = NULL;
                return 0;
        }
        buf = malloc(len);
        if (!buf || (s.has_data && !pres))
                return -ENOMEM;
        if (!s.has_data) {
                /* Untouched base file (a new file always has data). */
                if (!s.in_base)
                        memset(buf, 0, len);
                else {
                        r = fs_read_data(fs, &s.base, f, o, len, buf);
                        if (r < 0) {
                                if (r == -EIO)
                                        atomic_fetch_add(&fs->errors, 1);
                                return r;
                        }
                }
        } else {
                fd = file_fd(fs, f, &own);
                if (fd < 0)
                        return fd;
                for (uint64_t pos = o; pos < o + len;) {
                        uint64_t ci = pos / cs, end = MIN((ci + 1) * cs, o + len);
                        uint8_t *dst = buf + (pos - o);
                        if (!s.in_base || pres[ci - first]) {
                                ssize_t n = pread_full(fd, dst, end - pos, pos);
                                if (n < 0)
                                        return n;
                                memset(dst + n, 0, end - pos - (uint64_t)n);
                        } else {
                                uint64_t bend = s.in_base ? MIN(end, s.base_limit) : 0;
                                if (bend > pos) {
                                        r = fs_read_data(fs, &s.base, NULL, pos, bend - pos, dst);
                                        if (r < 0) {
                                                if (r == -EIO)
                                                        atomic_fetch_add(&fs->errors, 1);
                                                return r;
                                        }
                                } else
                                        bend = pos;
                                memset(dst + (bend - pos), 0, end - bend);
                        }
                        pos = end;
                }
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

static bool copying(struct fs *fs, uint64_t ino, uint32_t ci)
{
        for (struct wl_copy *c = fs->copying; c; c = c->next)
                if (c->ino == ino && c->chunk == ci)
                        return true;
        return false;
}

/* pwrite_sparse(): pwrite_full() of the n bytes at buf to off, but for the
 * 4 KiB blocks (of the file's offsets) that are all zeros: a copy-up
 * writes into a range just punched, so those stay holes, and a chunk
 * copied up from a sparse base file keeps its holes (st_blocks, SEEK_HOLE,
 * disk). */
static int pwrite_sparse(int fd, const uint8_t *buf, size_t n, uint64_t off)
{
        size_t i = 0;

        while (i < n) {
                size_t j = i, blk;
                for (; j < n; j += blk) { /* a run of blocks holding data */
                        blk = MIN((size_t)(4096 - (off + j) % 4096), n - j);
                        if (mem_is_zero(buf + j, blk))
                                break;
                }
                if (j > i) {
                        int r = pwrite_full(fd, buf + i, j - i, off + i);
                        if (r < 0)
                                return r;
                }
                for (; j < n; j += blk) { /* then a run of zero blocks */
                        blk = MIN((size_t)(4096 - (off + j) % 4096), n - j);
                        if (!mem_is_zero(buf + j, blk))
                                break;
                }
                i = j;
        }
        return 0;
}

/* A modification of [off, off + len) of a regular file: claim the chunks
 * not yet present (one copy-up per chunk at a time), copy up those the
 * change does not cover, and after the change mark them present. */
struct cow {
        uint32_t first, end;     /* chunks touched */
        struct wl_copy *claimed; /* the non-present ones, ours to copy */
        size_t n_claimed;
        int fd; /* the data file */
};

static int cow_begin(struct fs *fs, struct fs_inode *p, int fd, uint64_t off, uint64_t len,
                     struct cow *c)
{
        uint64_t cs = fs->chunk_size, size_after, limit;
        bool in_base = p->in_base;
        int r = 0;

        *c = (struct cow){ .first = (uint32_t)(off / cs), .end = (uint32_t)DIV_ROUND_UP(off + len, cs), .fd = fd };
        if (!in_base)
                return 0; /* a new file is all layer: nothing to copy or claim */
        pthread_mutex_lock(&fs->lock);
        for (;;) {
                bool wait = false;
                for (uint32_t ci = c->first; ci < c->end; ci++)
                        if (!(ci < p->n_present && p->present[ci]) && copying(fs, p->ino, ci))
                                wait = true;
                if (!wait)
                        break;
                pthread_cond_wait(&fs->cond, &fs->lock);
        }
        for (uint32_t ci = c->first; ci < c->end; ci++) {
                struct wl_copy *w;
                if (ci < p->n_present && p->present[ci])
                        continue;
                w = malloc(sizeof *w);
                if (!w) {
                        r = -ENOMEM;
                        break;
                }
                *w = (struct wl_copy){ .ino = p->ino, .chunk = ci, .next = fs->copying };
                fs->copying = w;
                c->n_claimed++;
        }
        size_after = MAX(p->attr.size, off + len);
        limit = p->base_limit;
        pthread_mutex_unlock(&fs->lock);
        if (r < 0)
                return r;

        for (uint32_t ci = c->first; ci < c->end && r >= 0; ci++) {
                uint64_t cstart = (uint64_t)ci * cs, cend = MIN(cstart + cs, size_after);
                bool claimed = false;
                pthread_mutex_lock(&fs->lock);
                for (struct wl_copy *w = fs->copying; w; w = w->next)
                        claimed |= w->ino == p->ino && w->chunk == ci;
                pthread_mutex_unlock(&fs->lock);
                if (!claimed || (off <= cstart && off + len >= cend))
                        continue; /* present, or fully overwritten */
                /* Whatever an earlier copy-up cut short left here goes. */
                if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)cstart, (off_t)cs) < 0)
                        r = -errno;
                if (r >= 0 && in_base && cstart < limit) {
                        uint64_t n = MIN(cend, limit) - cstart;
                        _cleanup_(freep) uint8_t *b = malloc(n);
                        if (!b)
                                r = -ENOMEM;
                        if (r >= 0)
                                r = fs_read_data(fs, &p->base, NULL, cstart, n, b);
                        if (r >= 0)
                                r = pwrite_sparse(fd, b, n, cstart);
                        if (r >= 0)
                                atomic_fetch_add(&fs->copied_up, 1);
                        if (r == -EIO)
                                atomic_fetch_add(&fs->errors, 1);
                }
        }
        return r;
}

/* cow_end(): mark the claimed chunks present (if ok) and release them.
 * A chunk's data is durable before its map byte says present: the kernel
 * writes the two files back in no set order, and a map byte that reached
 * the disk before its chunk would, after a power cut, turn the base's
 * bytes around an unsynced write (or under a lost one) into zeros. One
 * fdatasync per chunk a base file first changes in this layer, as
 * overlayfs syncs a file it copies up. */
static int cow_end(struct fs *fs, struct fs_inode *p, struct cow *c, bool ok)
{
        int r = 0;

        if (ok && c->n_claimed && fdatasync(c->fd) < 0)
                r = log_error_errno(-errno, "writable layer: data file of inode %" PRIu64 ": sync: %m", p->ino);
        else if (ok)
                r = wl_mark_present(fs, p, c->first, c->end);
        pthread_mutex_lock(&fs->lock);
        for (struct wl_copy **pp = &fs->copying; *pp;) {
                struct wl_copy *w = *pp;
                if (w->ino == p->ino && w->chunk >= c->first && w->chunk < c->end) {
                        *pp = w->next;
                        free(w);
                } else
                        pp = &w->next;
        }
        pthread_cond_broadcast(&fs->cond);
        pthread_mutex_unlock(&fs->lock);
        return r;
}

/* touch_data(): after a data change: size, times, and the kill bits
 * off, as file_remove_privs() would. Mode changes are journaled;
 * times are journaled at the next flush, fsync or release. Under writeback
 * cache the kernel owns a WRITE's mtime and ctime (it sends them in a
 * SETATTR when it flushes), so a WRITE leaves them alone. */
static int touch_data(struct fs *fs, struct fs_inode *p, uint64_t end, bool grow, mode_t kill,
                      bool times)
{
        struct timespec now = now_real();
        struct wl_txn t = {};
        mode_t m;

        pthread_mutex_lock(&fs->lock);
        if (grow && end > p->attr.size)
                p->attr.size = end;
        p->blocks_known = false;
        if (times) {
                p->attr.mtime = p->attr.ctime = now;
                p->times_dirty = true;
        }
        m = p->attr.mode;
        if (m & kill & (S_ISUID | S_ISGID)) {
                struct tree_attr a = p->attr;
                int r;

                a.mode &= ~(kill & (S_ISUID | S_ISGID));
                p->times_dirty = false;
                wl_txn_attr(&t, &a, p->parent);
                r = wl_txn_commit(fs, &t);
                /* No reply tells the kernel (a WRITE's carries a count):
                 * its cached mode would keep the bits, and an exec on a
                 * suid mount would still honour them. Attributes only
                 * (offset -1), so the writer's locked pages are no
                 * obstacle. */
                if (r >= 0 && fs->se)
                        (void)fuse_lowlevel_notify_inval_inode(fs->se, p->ino, -1, 0);
                return r;
        }
        pthread_mutex_unlock(&fs->lock);
        return 0;
}

static ssize_t do_write(struct fs *fs, struct fs_file *f, const void *buf, size_t size, off_t off,
                        mode_t kill)
{
        struct fs_inode *p = f->inode;
        _cleanup_(closep) int own = -1;
        struct cow c;
        int fd, r;

        if (off < 0)
                return -EINVAL;
        if (broken(fs))
                return -EIO;
        if (size == 0)
                return 0;
        fd = data_fd(fs, p, f, &own);
        if (fd < 0)
                return fd;
        r = cow_begin(fs, p, fd, (uint64_t)off, size, &c);
        if (r >= 0) {
                ck_before_change(fs, p->ino, fd, (uint64_t)off, size);
                r = pwrite_full(fd, buf, size, (uint64_t)off);
        }
        if (r >= 0)
                r = touch_data(fs, p, (uint64_t)off + size, true, kill, !fs->writeback);
        r = MIN(r, cow_end(fs, p, &c, r >= 0));
        if (r < 0)
                return r;
        /* A WRITE this large is the kernel writing back a long sequential
         * run: start its disk write now, so that an fsync finds the data on
         * its way instead of starting all of it then. This only starts
         * I/O; what is durable is still what fsync says. */
        if (size >= WRITE_STREAM_MIN)
                (void)sync_file_range(fd, off, (off_t)size, SYNC_FILE_RANGE_WRITE);
        atomic_fetch_add(&fs->bytes_written, size);
        return (ssize_t)size;
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
        struct fs *fs = req_fs(req);
        /* Under KILLPRIV_V2 the kernel marks a WRITE that must clear the
         * bits; without it, clear them for any writer but root. */
        bool kill = atomic_load(&fs->killpriv_v2) ? fs_req_kill() : fuse_req_ctx(req)->uid != 0;
        ssize_t n;

        (void)ino;
        n = barrier_enter(fs);
        if (n == 0) {
                WITH_SPACE(fs, n, do_write(fs, file_of(fi), buf, size, off, kill_mask(req, fs, file_of(fi)->inode, kill)));
                barrier_leave(req_fs(req));
        }
        if (n < 0)
                fuse_reply_err(req, (int)-n);
        else
                fuse_reply_write(req, (size_t)n);
}

static int do_fallocate(struct fs *fs, struct fs_file *f, int mode, off_t off, off_t len, mode_t kill)
{
        struct fs_inode *p = f->inode;
        bool zero = mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE);
        _cleanup_(closep) int own = -1;
        struct cow c = {};
        int fd, r = 0;

        if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))
                return -EOPNOTSUPP;
        if (off < 0 || len <= 0)
                return -EINVAL;
        if (broken(fs))
                return -EIO;
        fd = data_fd(fs, p, f, &own);
        if (fd < 0)
                return fd;
        if (zero) {
                uint64_t end = (uint64_t)off + (uint64_t)len;
                pthread_mutex_lock(&fs->lock);
                if (mode & FALLOC_FL_KEEP_SIZE)
                        end = MIN(end, p->attr.size);
                pthread_mutex_unlock(&fs->lock);
                if (end > (uint64_t)off)
                        r = cow_begin(fs, p, fd, (uint64_t)off, end - (uint64_t)off, &c);
        }
        if (r >= 0 && zero)
                ck_before_change(fs, p->ino, fd, (uint64_t)off, (uint64_t)len);
        if (r >= 0 && fallocate(fd, mode, off, len) < 0)
                r = -errno;
        if (r >= 0)
                r = touch_data(fs, p, (uint64_t)off + (uint64_t)len, !(mode & FALLOC_FL_KEEP_SIZE), kill,
                               !fs->writeback);
        if (c.end > c.first)
                r = MIN(r, cow_end(fs, p, &c, r >= 0));
        return r;
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                         struct fuse_file_info *fi)
{
        /* Under KILLPRIV_V2 the kernel leaves fallocate's suid/sgid clearing
         * to us, and a FALLOCATE carries no kill flag: clear them for a
         * caller other than root (CAP_FSETID), as file_modified() would. */
        bool kill = atomic_load(&req_fs(req)->killpriv_v2) && fuse_req_ctx(req)->uid != 0;
        int r;

        (void)ino;
        r = barrier_enter(req_fs(req));
        if (r == 0) {
                WITH_SPACE(req_fs(req), r,
                           do_fallocate(req_fs(req), file_of(fi), mode, offset, length,
                                        kill_mask(req, req_fs(req), file_of(fi)->inode, kill)));
                barrier_leave(req_fs(req));
        }
        fuse_reply_err(req, -r);
}

/* flush_times(): journal the times WRITEs changed. */
static int flush_times(struct fs *fs, struct fs_inode *p)
{
        struct wl_txn t = {};

        pthread_mutex_lock(&fs->lock);
        if (!p->times_dirty) {
                pthread_mutex_unlock(&fs->lock);
                return 0;
        }
        p->times_dirty = false;
        wl_txn_attr(&t, &p->attr, p->parent);
        wl_txn_apply(fs, &t);
        if (t.err < 0)
                p->times_dirty = true; /* no room now: the next flush tries again */
        pthread_mutex_unlock(&fs->lock);
        return wl_txn_write(fs, &t);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        struct fs *fs = req_fs(req);
        struct fs_file *f = file_of(fi);

        (void)ino;
        (void)flush_times(fs, f->inode);
        file_free(fs, f);
        fuse_reply_err(req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
        struct fs *fs = req_fs(req);
        struct fs_inode *p = file_of(fi)->inode;
        int r;

        (void)ino;
        r = flush_times(fs, p);
        if (r >= 0)
                r = wl_sync(fs, p, datasync);
        fuse_reply_err(req, -r);
}

/* What seek_layer() needs of a base file the layer holds data of, copied
 * under fs->lock. */
struct seek_view {
        uint64_t size, base_limit, cs;
        uint8_t *present; /* n chunks */
        size_t n;
};

/* seek_layer(): SEEK_DATA or SEEK_HOLE from o (< size) in a base file: a
 * chunk the layer holds is its data file's (SEEK_DATA/SEEK_HOLE of fd
 * within the chunk; a hole there reads as zeros), a run of chunks it does
 * not hold is the base's extents below base_limit, zeros above (an
 * untouched base file is one such run). One lseek() serves a run of held
 * chunks without data in the data file, and the base's extents are walked
 * once, so a large hole costs no walk chunk by chunk. -ENXIO if no data at
 * or after o. */
static int seek_layer(const struct fs *fs, const struct fs_inode *p, const struct seek_view *v, int fd,
                      uint64_t o, int whence, off_t *ret)
{
        uint32_t ne = tree_extent_count(fs->tree, &p->base), e = 0;
        uint64_t nodata = 0; /* the data file has no data in [o, nodata) */

        while (o < v->size) {
                uint64_t ci = o / v->cs, end = ci + 1, hi, lim, eo = 0, el = 0;
                if (ci < v->n && v->present[ci]) {
                        off_t r;
                        hi = MIN(end * v->cs, v->size);
                        if (whence == SEEK_DATA && o < nodata) {
                                if (nodata >= hi) {
                                        o = hi;
                                        continue;
                                }
                                o = nodata;
                        }
                        r = lseek(fd, (off_t)o, whence);
                        if (r < 0 && errno != ENXIO)
                                return -errno;
                        if (r >= 0 && (uint64_t)r < hi) {
                                *ret = r;
                                return 0;
                        }
                        if (whence == SEEK_DATA)
                                nodata = r < 0 ? UINT64_MAX : (uint64_t)r;
                        o = hi;
                        continue;
                }
                /* The run of chunks the layer does not hold, from ci. */
                while (end < v->n && !v->present[end])
                        end++;
                hi = end < v->n ? MIN(end * v->cs, v->size) : v->size;
                lim = MIN(hi, v->base_limit);
                while (o < lim) {
                        while (e < ne) {
                                tree_extent(fs->tree, &p->base, e, &eo, &el);
                                if (eo + el > o)
                                        break;
                                e++;
                        }
                        if (e == ne || eo >= lim)
                                break; /* a hole to the run's (or the base's) end */
                        if (eo > o) { /* o is in a hole */
                                if (whence == SEEK_HOLE)
                                        break;
                                o = eo;
                        }
                        if (whence == SEEK_DATA) {
                                *ret = (off_t)o;
                                return 0;
                        }
                        o = MIN(eo + el, lim); /* SEEK_HOLE: past this extent */
                }
                if (whence == SEEK_HOLE && o < hi) { /* a hole, or zeros above base_limit */
                        *ret = (off_t)o;
                        return 0;
                }
                o = hi;
        }
        if (whence == SEEK_DATA)
                return -ENXIO;
        *ret = (off_t)v->size;
        return 0;
}

/* do_lseek(): SEEK_DATA and SEEK_HOLE: from the tree's extents for an
 * untouched base file, from its data file for a file the layer made (all
 * its bytes are there), and from both for a base file the layer holds data
 * of (seek_layer()).
 *
 * Only while no handle of the file is open for writing: under writeback
 * cache the kernel keeps written pages, and the size they extend the file
 * to, until it writes them back, and it sends LSEEK without writing them
 * back first (a close, or the release of the last writable handle, does).
 * The data file may then miss data anywhere, so every byte up to our size
 * is data. That is still wrong past our size while the kernel holds an
 * extension it has not written back (the end-of-file hole at our size,
 * ENXIO where it has data): a known gap, docs/writable-layer.md "Sparse
 * files". */
static int do_lseek(struct fs *fs, struct fs_file *f, off_t off, int whence, off_t *ret)
{
        struct fs_inode *p = f->inode;
        _cleanup_(freep) uint8_t *present = NULL;
        struct seek_view v = {};
        uint64_t size, o = (uint64_t)off;
        bool has_data, in_base, writers;

        if (whence != SEEK_DATA && whence != SEEK_HOLE)
                return -EINVAL;
        if (off < 0)
                return -ENXIO;
        pthread_mutex_lock(&fs->lock);
        size = p->attr.size;
        in_base = p->in_base;
        has_data = p->has_data || !in_base;
        writers = p->nwopen > 0;
        if (has_data && in_base && !writers && o < size) {
                v = (struct seek_view){ .size = size, .base_limit = p->base_limit, .cs = fs->chunk_size,
                                        .n = MIN(p->n_present, DIV_ROUND_UP(size, fs->chunk_size)) };
                present = v.present = malloc(MAX(v.n, (size_t)1));
                if (present && v.n)
                        memcpy(present, p->present, v.n);
        }
        pthread_mutex_unlock(&fs->lock);
        if (o >= size)
                return -ENXIO;
        if (writers) {
                *ret = whence == SEEK_DATA ? off : (off_t)size;
                return 0;
        }
        if (has_data) {
                _cleanup_(closep) int fd = -1;
                off_t r;
                if (in_base && !present)
                        return -ENOMEM;
                fd = wl_data_open(fs, p->ino, O_RDONLY);
                if (fd < 0)
                        return fd;
                if (in_base)
                        return seek_layer(fs, p, &v, fd, o, whence, ret);
                r = lseek(fd, off, whence);
                if (r < 0)
                        return -errno;
                *ret = MIN(r, (off_t)size);
                return 0;
        }
        /* An untouched base file: its extents, one run (no data file). */
        v = (struct seek_view){ .size = size, .base_limit = size, .cs = fs->chunk_size };
        return seek_layer(fs, p, &v, -1, o, whence, ret);
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
        struct statvfs sv;

        (void)ino;
        /* The writable layer's room is the state directory's, with the
         * data files of removed files gone first: df right after an rm
         * shows the space free, as on a local filesystem (they wait for
         * the journal's sync, which this costs once; wl_data_discard()). */
        (void)wl_reap_space(fs, wl_reaped(fs));
        if (fstatvfs(fs->state_fd, &sv) < 0) {
                fuse_reply_err(req, errno);
                return;
        }
        sv.f_namemax = TREE_NAME_MAX;
        sv.f_flag = 0;
        fuse_reply_statfs(req, &sv);
}

/* ---- xattrs ---- */

static int do_getxattr(struct fs *fs, uint64_t ino, const char *name, size_t size, void **ret,
                       size_t *ret_len)
{
        struct fs_inode *p;
        const void *v;
        size_t len = 0;
        int r;

        pthread_mutex_lock(&fs->lock);
        p = ino_get(fs, ino);
        r = p ? xattr_lookup(fs, p, name, &v, &len) : -ESTALE;
        if (r >= 0 && size && len > size)
                r = -ERANGE;
        if (r >= 0 && size) {
                *ret = malloc(len ? len : 1);
                if (!*ret)
                        r = -ENOMEM;
                else
                        memcpy(*ret, v, len);
        }
        pthread_mutex_unlock(&fs->lock);
        if (r >= 0)
                *ret_len = len;
        return r;
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
        _cleanup_(freep) void *value = NULL;
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
        struct fs_inode *p;
        _cleanup_(freep) char *buf = NULL;
        size_t total = 0, n;
        int r = 0;

        pthread_mutex_lock(&fs->lock);
        p = ino_get(fs, ino);
        if (!p) {
                r = -ESTALE;
                goto out;
        }
        n = p->xattrs_own ? p->n_xattrs : p->in_base ? tree_xattr_count(fs->tree, &p->base) : 0;
        for (int pass = 0; pass < 2; pass++) {
                size_t pos = 0;
                for (size_t i = 0; i < n; i++) {
                        const char *name;
                        const void *v;
                        size_t vl, nl;
                        if (p->xattrs_own)
                                name = p->xattrs[i].name;
                        else if (tree_xattr(fs->tree, &p->base, (uint32_t)i, &name, &v, &vl) < 0) {
                                r = -EIO;
                                goto out;
                        }
                        nl = strlen(name) + 1;
                        if (pass)
                                memcpy(buf + pos, name, nl);
                        pos += nl;
                }
                total = pos;
                if (pass == 0) {
                        if (size == 0)
                                break;
                        if (total > size) {
                                r = -ERANGE;
                                goto out;
                        }
                        buf = malloc(total + 1);
                        if (!buf) {
                                r = -ENOMEM;
                                goto out;
                        }
                }
        }
out:
        pthread_mutex_unlock(&fs->lock);
        if (r >= 0) {
                *ret = TAKE_PTR(buf);
                *ret_len = total;
        }
        return r;
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

/* do_setxattr(): value NULL removes. An access ACL also sets the mode, and
 * one the mode says all of is not stored (as the kernel's
 * posix_acl_update_mode()). */
static int do_setxattr(struct fs *fs, uint64_t ino, const char *name, const void *value, size_t size,
                       int flags)
{
        struct wl_txn t = {};
        struct fs_inode *p;
        struct tree_attr a;
        const void *old;
        size_t oldlen;
        bool exists, drop = false;
        int r = 0;

        if (strlen(name) > TREE_XATTR_NAME_MAX || !*name)
                return -ERANGE;
        if (value && size > TREE_XATTR_VALUE_MAX)
                return -E2BIG;
        if (broken(fs))
                return -EIO;
        pthread_mutex_lock(&fs->lock);
        p = ino_get(fs, ino);
        if (!p) {
                r = -ESTALE;
                goto fail;
        }
        exists = xattr_lookup(fs, p, name, &old, &oldlen) == 0;
        if (value && (flags & XATTR_CREATE) && exists)
                r = -EEXIST;
        else if ((!value || (flags & XATTR_REPLACE)) && !exists)
                r = -ENODATA;
        if (r < 0)
                goto fail;
        a = p->attr;
        a.ctime = now_real();
        if (fs->acl && value && strcmp(name, ACL_ACCESS) == 0) {
                mode_t m = a.mode;
                r = acl_to_mode(value, size, &m, &drop);
                if (r < 0)
                        goto fail;
                a.mode = m;
        }
        t.grows = value != NULL;
        if (value && !drop)
                wl_txn_op(&t, WL_OP_XSET, ino, 0, name, value, size);
        else if (exists)
                wl_txn_op(&t, WL_OP_XDEL, ino, 0, name, NULL, 0);
        wl_txn_attr(&t, &a, p->parent);
        return wl_txn_commit(fs, &t);
fail:
        pthread_mutex_unlock(&fs->lock);
        return r;
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                        size_t size, int flags)
{
        int r;

        r = barrier_enter(req_fs(req));
        if (r == 0) {
                WITH_SPACE(req_fs(req), r, do_setxattr(req_fs(req), ino, name, value ? value : "", size, flags));
                barrier_leave(req_fs(req));
        }
        fuse_reply_err(req, -r);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
        int r;

        r = barrier_enter(req_fs(req));
        if (r == 0) {
                WITH_SPACE(req_fs(req), r, do_setxattr(req_fs(req), ino, name, NULL, 0, 0));
                barrier_leave(req_fs(req));
        }
        fuse_reply_err(req, -r);
}

static const struct fuse_lowlevel_ops fs_ops = {
        .init = op_init,
        .lookup = op_lookup,
        .forget = op_forget,
        .forget_multi = op_forget_multi,
        .getattr = op_getattr,
        .setattr = op_setattr,
        .readlink = op_readlink,
        .mknod = op_mknod,
        .mkdir = op_mkdir,
        .unlink = op_unlink,
        .rmdir = op_rmdir,
        .symlink = op_symlink,
        .rename = op_rename,
        .link = op_link,
        .open = op_open,
        .read = op_read,
        .write = op_write,
        /* No .flush: the kernel gets ENOSYS once and stops sending FLUSH
         * (one round trip less per close(); under writeback cache it still
         * writes back and waits for the file's WRITEs before that check).
         * WRITE times are journaled at fsync and release. */
        .release = op_release,
        .fsync = op_fsync,
        .opendir = op_opendir,
        .readdir = op_readdir,
        .readdirplus = op_readdirplus,
        .releasedir = op_releasedir,
        .fsyncdir = op_fsyncdir,
        .statfs = op_statfs,
        .setxattr = op_setxattr,
        .getxattr = op_getxattr,
        .listxattr = op_listxattr,
        .removexattr = op_removexattr,
        .create = op_create,
        .fallocate = op_fallocate,
        .lseek = op_lseek,
        /* access: default_permissions lets the kernel check modes and ACLs. */
};

/* ---- lifecycle ---- */

static void fs_freep_(struct fs **p) { fs_free(*p); }

int fs_new(const struct fs_opts *o, struct fs **ret)
{
        _cleanup_(fs_freep_) struct fs *fs = NULL;
        struct fs_inode *root;
        int r;

        if (!o || !o->store || !o->snap || !o->snap->tree || !o->state_dir || !o->base_name || !ret)
                return -EINVAL;
        fs = calloc(1, sizeof *fs);
        if (!fs)
                return -ENOMEM;
        fs->state_fd = fs->layer_fd = fs->data_fd = fs->journal_fd = fs->next_fd = -1;
        atomic_init(&fs->init_unique, UINT64_MAX);
        fs->store = o->store;
        fs->snap = o->snap;
        fs->tree = o->snap->tree;
        fs->cache = o->cache;
        fs->journal_max = o->journal_max ? o->journal_max : FS_JOURNAL_MAX;
        {
                /* Kept data descriptors: the open-file limit less 1024 for
                 * everything else (packs, cache entries, sockets, a request's
                 * own descriptor), half of a limit that small. */
                struct rlimit rl = { .rlim_cur = 1024 };
                (void)getrlimit(RLIMIT_NOFILE, &rl);
                fs->fd_cap = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1u << 30) ? 1u << 30
                             : rl.rlim_cur > 2048                                      ? (unsigned)rl.rlim_cur - 1024
                                                                                       : (unsigned)rl.rlim_cur / 2;
        }
        fs->remote = o->remote;
        fs->chunk_size = tree_chunk_size(fs->tree);
        fs->n_chunks = tree_n_chunks(fs->tree);
        fs->n_packs = tree_n_packs(fs->tree);
        fs_readahead_init(fs);
        if (o->cache && !o->no_readahead) {
                uint32_t window = fs->remote ? FS_READAHEAD_WINDOW_REMOTE : FS_READAHEAD_WINDOW;
                uint32_t most = fs->remote ? FS_READAHEAD_WINDOW_REMOTE : FS_READAHEAD_BYTES;
                unsigned n = o->readahead_chunks ? o->readahead_chunks : MAX(FS_READAHEAD_CHUNKS, window / fs->chunk_size);
                fs->ra_chunks = MAX(1u, MIN(n, most / fs->chunk_size));
        }
        {
                pthread_rwlockattr_t ba;
                pthread_rwlockattr_init(&ba);
                /* A checkpoint waiting for the barrier is not starved by writers. */
                pthread_rwlockattr_setkind_np(&ba, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
                pthread_rwlock_init(&fs->barrier, &ba);
                pthread_rwlockattr_destroy(&ba);
        }
        pthread_mutex_init(&fs->lock, NULL);
        pthread_cond_init(&fs->cond, NULL);
        pthread_mutex_init(&fs->jlock, NULL);
        pthread_cond_init(&fs->jcond, NULL);
        pthread_mutex_init(&fs->dead_lock, NULL);
        pthread_mutex_init(&fs->reap_lock, NULL);
        pthread_cond_init(&fs->dead_cond, NULL);
        pthread_mutex_init(&fs->skel_lock, NULL);
        pthread_mutex_init(&fs->fetch_lock, NULL);
        pthread_cond_init(&fs->fetch_cond, NULL);
        pthread_mutex_init(&fs->ra_lock, NULL);
        pthread_cond_init(&fs->ra_cond, NULL);
        pthread_mutex_init(&fs->span_lock, NULL);
        pthread_mutex_init(&fs->ck_lock, NULL);
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
        pthread_mutex_lock(&fs->lock);
        r = ino_load(fs, TREE_ROOT_INO, &root);
        pthread_mutex_unlock(&fs->lock);
        if (r < 0)
                return r;
        root->parent = FUSE_ROOT_ID;
        r = wl_open(fs, o->state_dir, o->base_name);
        if (r < 0)
                return r;
        if (fs->ra_chunks) {
                r = fs_readahead_start(fs, o->workers ? o->workers : fs->remote ? FS_READAHEAD_WORKERS_REMOTE : 2);
                if (r < 0)
                        return r;
        }
        r = fs_trace_new(fs, o);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(fs);
        return 0;
}

struct fs *fs_free(struct fs *fs)
{
        if (!fs)
                return NULL;
        fs->uring = uring_stop(fs->uring); /* normally done by fs_session_io_end() */
        fs_trace_free(fs);
        fs_readahead_stop(fs);
        fs_checkpoint_forget(fs);
        if (fs->tls_ok) {
                fs_tls_free(pthread_getspecific(fs->tls));
                pthread_key_delete(fs->tls);
        }
        wl_close(fs);
        if (fs->buckets)
                wl_free_all(fs);
        while (fs->copying) {
                struct wl_copy *c = fs->copying;
                fs->copying = c->next;
                free(c);
        }
        free(fs->buckets);
        free(fs->pack_state);
        free(fs->logged);
        free(fs->inflight);
        free(fs->by_pack);
        free(fs->pack_pos);
        free(fs->ra_queue);
        free(fs->ra_threads);
        pthread_rwlock_destroy(&fs->barrier);
        pthread_mutex_destroy(&fs->lock);
        pthread_cond_destroy(&fs->cond);
        pthread_mutex_destroy(&fs->jlock);
        pthread_cond_destroy(&fs->jcond);
        pthread_mutex_destroy(&fs->dead_lock);
        pthread_mutex_destroy(&fs->reap_lock);
        pthread_cond_destroy(&fs->dead_cond);
        pthread_mutex_destroy(&fs->skel_lock);
        pthread_mutex_destroy(&fs->fetch_lock);
        pthread_cond_destroy(&fs->fetch_cond);
        pthread_mutex_destroy(&fs->ra_lock);
        pthread_cond_destroy(&fs->ra_cond);
        pthread_mutex_destroy(&fs->span_lock);
        pthread_mutex_destroy(&fs->ck_lock);
        free(fs);
        return NULL;
}

struct fuse_session *fs_session_new(struct fs *fs, struct fuse_args *args)
{
        if (!fs || !args)
                return NULL;
        fs->se = fuse_session_new(args, &fs_ops, sizeof fs_ops, fs);
        return fs->se;
}

void fs_set_readonly(struct fs *fs, bool readonly)
{
        /* Under the barrier: a change in progress finishes first, and every
         * later one sees the flag. */
        pthread_rwlock_wrlock(&fs->barrier);
        atomic_store(&fs->readonly, readonly);
        pthread_rwlock_unlock(&fs->barrier);
}

void fs_get_counters(const struct fs *fs, struct fs_counters *ret)
{
        struct fs *m = (struct fs *)fs; /* the table lock only */

        if (!fs || !ret)
                return;
        pthread_mutex_lock(&m->lock);
        ret->inodes = fs->n_inodes;
        pthread_mutex_unlock(&m->lock);
        ret->chunks_fetched = atomic_load(&fs->chunks_fetched);
        ret->bytes_fetched = atomic_load(&fs->bytes_fetched);
        ret->pack_reads = atomic_load(&fs->pack_reads);
        ret->cache_hits = atomic_load(&fs->cache_hits);
        ret->cache_misses = atomic_load(&fs->cache_misses);
        ret->bytes_served = atomic_load(&fs->bytes_served);
        ret->errors = atomic_load(&fs->errors);
        ret->readahead_chunks = atomic_load(&fs->readahead_chunks);
        ret->reads = atomic_load(&fs->reads);
        ret->dirty_chunks = atomic_load(&fs->dirty_chunks);
        ret->dirty_bytes = ret->dirty_chunks * fs->chunk_size;
        ret->copied_up = atomic_load(&fs->copied_up);
        ret->bytes_written = atomic_load(&fs->bytes_written);
        ret->journal_bytes = atomic_load(&fs->journal_bytes);
        fs_trace_counters(fs, ret);
}

ssize_t fs_read_file(struct fs *fs, uint64_t ino, uint64_t off, void *dst, size_t len)
{
        struct fs_file f = {};
        _cleanup_(freep) uint8_t *buf = NULL;
        struct fs_inode *p;
        bool dead = false;
        ssize_t n;
        int r;

        if (!fs || (!dst && len))
                return -EINVAL;
        pthread_mutex_lock(&fs->lock);
        r = ino_load(fs, ino, &p);
        if (r >= 0) {
                if (S_ISDIR(p->attr.mode))
                        r = -EISDIR;
                else if (!S_ISREG(p->attr.mode))
                        r = -EINVAL;
                else if (p->data_gone)
                        r = -ENOENT;
                else
                        p->nopen++;
        }
        pthread_mutex_unlock(&fs->lock);
        if (r < 0)
                return r;
        f.inode = p;
        atomic_init(&f.fd, -1);
        n = do_read(fs, &f, len, (off_t)off, &buf);
        if (n > 0)
                memcpy(dst, buf, (size_t)n);
        if (atomic_load(&f.fd) >= 0)
                close(atomic_load(&f.fd));
        pthread_mutex_lock(&fs->lock);
        p->nopen--;
        ino_maybe_free(fs, p, &dead); /* removed while we read it */
        pthread_mutex_unlock(&fs->lock);
        if (dead)
                wl_data_discard(fs, ino);
        return n;
}

/* The flush's requests come from another process: stasisd exec'd again as
 * a helper (fs_flush_helper()). A thread of ours that waits for a request
 * on our own mount would keep the process from exiting after a kill -9: a
 * request a worker had already taken is answered only when the connection
 * aborts, which is when the last /dev/fuse descriptor closes, which is at
 * our exit. (A kill during a checkpoint's flush left a zombie stasisd and
 * a hung mount.) A child that shared our memory would not do either: over
 * io_uring the rings are mapped in that memory, and a mapping holds the
 * ring, the ring holds /dev/fuse, and the child, waiting on the mount,
 * holds the memory. An exec'd helper has its own memory and none of our
 * descriptors; if we die, our exit aborts the connection and the helper's
 * request fails instead of hanging. It costs an exec (~2 ms), which a
 * checkpoint pays before it freezes the sandbox (fs_flush_start()). */

/* Each file open for writing is opened by its FUSE file handle (struct
 * fuse_inode_handle as the kernel encodes it: type FILEID_INO64_GEN, the
 * node id's two halves, the generation, 0 here) and closed. */
static int flush_mount(int mfd, const char *mountpoint, const uint64_t *inos, size_t n)
{
        struct {
                struct file_handle fh;
                uint32_t raw[3];
        } h = { .fh = { .handle_bytes = sizeof h.raw, .handle_type = 0x81 } };
        int r = 0;

        if (syncfs(mfd) < 0)
                return log_error_errno(errno, "flush: syncfs %s: %m", mountpoint);
        /* syncfs() waits for the pages it wrote back, but not for a WRITE
         * the kernel queued behind an earlier one of the same page, which a
         * file rewritten in place has; close() of a handle of the inode
         * waits for every WRITE of it (fuse_flush(): write_inode_now(),
         * then fuse_sync_writes()). */
        for (size_t i = 0; i < n; i++) {
                int fd;

                h.raw[0] = (uint32_t)(inos[i] >> 32);
                h.raw[1] = (uint32_t)inos[i];
                h.raw[2] = 0;
                fd = open_by_handle_at(mfd, &h.fh, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
                if (fd >= 0) {
                        if (close(fd) < 0 && errno != EINTR && !r)
                                r = log_error_errno(errno, "flush: close inode %" PRIu64 ": %m", inos[i]);
                } else if (errno != ESTALE && errno != ENOENT) {
                        /* Without CAP_DAC_READ_SEARCH: what syncfs did is all. */
                        log_warning_errno(errno, "flush: open inode %" PRIu64 " by handle: %m", inos[i]);
                        break;
                }
        }
        return r;
}

/* The helper's stdin: a count n (uint64_t), then n inode numbers. End of
 * input before all of it (the daemon gave up on the flush, or died): no
 * flush. */
static int read_list(uint64_t **ret, size_t *ret_n)
{
        _cleanup_(freep) uint64_t *inos = NULL;
        uint64_t n;
        ssize_t got;

        got = read_full(STDIN_FILENO, &n, sizeof n);
        if (got != (ssize_t)sizeof n)
                return got < 0 ? (int)got : -ECANCELED;
        if (n > SIZE_MAX / sizeof *inos / 2)
                return -EINVAL;
        if (n) {
                inos = malloc((size_t)n * sizeof *inos);
                if (!inos)
                        return -ENOMEM;
                got = read_full(STDIN_FILENO, inos, (size_t)n * sizeof *inos);
                if (got != (ssize_t)(n * sizeof *inos))
                        return got < 0 ? (int)got : -ECANCELED;
        }
        *ret = TAKE_PTR(inos);
        *ret_n = (size_t)n;
        return 0;
}

int fs_flush_helper(const char *mountpoint)
{
        _cleanup_(freep) uint64_t *inos = NULL;
        _cleanup_(closep) int mfd = -1;
        size_t n = 0;
        int r;

        /* Nothing of the daemon's but stdin (the inode list) and stderr. */
        (void)close_range(3, ~0u, 0);
        /* Ready before the list comes: the open is not part of the flush. */
        mfd = open(mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (mfd < 0) {
                r = log_error_errno(errno, "flush helper: open %s: %m", mountpoint);
                return MIN(-r, 255);
        }
        r = read_list(&inos, &n);
        if (r == -ECANCELED)
                return ECANCELED; /* fs_flush_abort(), or the daemon is gone */
        if (r < 0) {
                log_error_errno(r, "flush helper: the inode list: %m");
                return MIN(-r, 255);
        }
        r = flush_mount(mfd, mountpoint, inos, n);
        return r < 0 ? MIN(-r, 255) : 0;
}

struct fs_flush {
        pid_t pid;
        int fd; /* our end of the helper's stdin */
};

int fs_flush_start(const char *mountpoint, struct fs_flush **ret)
{
        _cleanup_(freep) struct fs_flush *f = NULL;
        posix_spawn_file_actions_t fa;
        char *argv[] = { (char *)"stasisd", (char *)FS_FLUSH_HELPER_ARG, (char *)mountpoint, NULL };
        int sv[2], r;

        if (!mountpoint || !ret)
                return -EINVAL;
        f = calloc(1, sizeof *f);
        if (!f)
                return -ENOMEM;
        /* A socket, not a pipe: a send to a helper that died fails with
         * EPIPE instead of raising SIGPIPE (MSG_NOSIGNAL). */
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                return log_error_errno(errno, "flush: socketpair: %m");
        r = posix_spawn_file_actions_init(&fa);
        if (!r)
                r = posix_spawn_file_actions_adddup2(&fa, sv[1], STDIN_FILENO);
        if (!r)
                r = posix_spawn(&f->pid, "/proc/self/exe", &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        close(sv[1]);
        if (r) {
                close(sv[0]);
                return log_error_errno(r, "flush: start the helper: %m");
        }
        f->fd = sv[0];
        *ret = TAKE_PTR(f);
        return 0;
}

/* flush_wait(): reap the helper; its exit status as 0 or -errno. */
static int flush_wait(struct fs_flush *f)
{
        int status;

        close(f->fd);
        while (waitpid(f->pid, &status, 0) < 0)
                if (errno != EINTR)
                        return log_error_errno(errno, "flush: wait for the helper: %m");
        if (!WIFEXITED(status))
                return log_error_errno(EIO, "flush: the helper ended by signal %d",
                                       WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        return -WEXITSTATUS(status);
}

void fs_flush_abort(struct fs_flush *f)
{
        if (!f)
                return;
        (void)flush_wait(f); /* end of input before the count: it exits */
        free(f);
}

/* send_all(): the whole buffer, MSG_NOSIGNAL. */
static int send_all(int fd, const void *buf, size_t len)
{
        const uint8_t *p = buf;

        while (len) {
                ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

int fs_flush_finish(struct fs *fs, struct fs_flush *f)
{
        _cleanup_(freep) uint64_t *inos = NULL;
        uint64_t count;
        size_t n = 0, cap = 0;
        int r = 0, w;

        if (!fs || !f)
                return -EINVAL;
        /* The files open for writing now. */
        pthread_mutex_lock(&fs->lock);
        for (size_t b = 0; b < fs->n_buckets && r >= 0; b++)
                for (struct fs_inode *p = fs->buckets[b]; p && r >= 0; p = p->next) {
                        if (!p->nwopen)
                                continue;
                        if (n == cap) {
                                size_t c = cap ? 2 * cap : 64;
                                uint64_t *v = realloc(inos, c * sizeof *v);
                                if (!v) {
                                        r = -ENOMEM;
                                        break;
                                }
                                inos = v;
                                cap = c;
                        }
                        inos[n++] = p->ino;
                }
        pthread_mutex_unlock(&fs->lock);
        if (r >= 0) {
                count = n;
                r = send_all(f->fd, &count, sizeof count);
                if (r >= 0 && n)
                        r = send_all(f->fd, inos, n * sizeof *inos);
                if (r < 0)
                        log_error_errno(r, "flush: send the inode list to the helper: %m");
        }
        w = flush_wait(f); /* without the whole list it exits, flushing nothing */
        free(f);
        return r < 0 ? r : w;
}

int fs_flush_kernel(struct fs *fs, const char *mountpoint)
{
        struct fs_flush *f;
        int r;

        if (!fs || !mountpoint)
                return -EINVAL;
        r = fs_flush_start(mountpoint, &f);
        return r < 0 ? r : fs_flush_finish(fs, f);
}
