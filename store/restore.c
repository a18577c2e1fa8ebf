/* restore.c — store_restore(): a snapshot into an empty directory, bit-exact.
 *
 * The calling thread walks the tree depth-first and creates every entry;
 * regular files are created empty (O_EXCL) and handed to workers that fetch,
 * verify and write their data and then set their attributes. Holes stay
 * holes: only data extents are written and the size is set by ftruncate().
 * A directory's own attributes are applied after all its entries exist, so
 * its mtime is the snapshot's.
 *
 * Nothing unverified is ever written: every chunk goes through
 * snapshot_read_chunk(). A file whose data cannot be fetched is unlinked and
 * the restore fails, naming it.
 *
 * Order of attribute calls per inode: chown (it clears setuid/setgid and
 * security.capability), chmod, xattrs (POSIX ACLs included), times last. */
#include "commit.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include "chunk.h"
#include "tree.h"
#include "util.h"

#define QUEUE_MAX 64

struct rjob {
        int fd;
        struct tree_inode ti;
        char *path; /* relative to the root */
};

struct restore {
        struct backend *b;
        const struct snapshot *s;
        const struct tree *t;
        const char *dir;
        int rootfd;
        bool owner; /* restore ownership (we are root) */

        pthread_mutex_t lock;
        pthread_cond_t cond;
        struct rjob queue[QUEUE_MAX];
        size_t head, len;
        bool done;
        atomic_int error;

        progress_fn progress;
        void *progress_ctx;
        pthread_mutex_t prog_lock;
        uint64_t prog_last_ns;
        uint64_t total;

        atomic_uint_fast64_t files, bytes_written, chunks_read;
};

/* set_error(): record the first error; true if e was the first. */
static bool set_error(struct restore *r, int e)
{
        int expected = 0;
        return atomic_compare_exchange_strong(&r->error, &expected, e);
}

static int apply_xattrs_fd(struct restore *r, int fd, const struct tree_inode *ti, const char *path)
{
        for (uint32_t i = 0; i < tree_xattr_count(r->t, ti); i++) {
                const char *name;
                const void *value;
                size_t len;
                tree_xattr(r->t, ti, i, &name, &value, &len);
                if (fsetxattr(fd, name, value, len, 0) < 0)
                        return log_error_errno(errno, "set xattr %s on %s: %m", name, path);
        }
        return 0;
}

/* apply_xattrs_at(): xattrs of name in dirfd (a symlink, device, fifo or
 * socket: nothing to open), through the directory fd, so no path is walked. */
static int apply_xattrs_at(struct restore *r, int dirfd, const char *name, const struct tree_inode *ti,
                           const char *path)
{
        char full[64 + TREE_NAME_MAX];
        if (tree_xattr_count(r->t, ti) == 0)
                return 0;
        snprintf(full, sizeof full, "/proc/self/fd/%d/%s", dirfd, name);
        for (uint32_t i = 0; i < tree_xattr_count(r->t, ti); i++) {
                const char *xname;
                const void *value;
                size_t len;
                tree_xattr(r->t, ti, i, &xname, &value, &len);
                if (lsetxattr(full, xname, value, len, 0) < 0)
                        return log_error_errno(errno, "set xattr %s on %s: %m", xname, path);
        }
        return 0;
}

static int apply_attrs_fd(struct restore *r, int fd, const struct tree_inode *ti, const char *path)
{
        const struct tree_attr *a = &ti->attr;
        struct timespec times[2] = { a->atime, a->mtime };
        int e;

        if (r->owner && fchown(fd, a->uid, a->gid) < 0)
                return log_error_errno(errno, "chown %s: %m", path);
        if (fchmod(fd, a->mode & 07777) < 0)
                return log_error_errno(errno, "chmod %s: %m", path);
        e = apply_xattrs_fd(r, fd, ti, path);
        if (e < 0)
                return e;
        if (futimens(fd, times) < 0)
                return log_error_errno(errno, "set times of %s: %m", path);
        return 0;
}

/* Attributes of a symlink, device, fifo or socket, by name in dirfd. */
static int apply_attrs_at(struct restore *r, int dirfd, const char *name, const struct tree_inode *ti,
                          const char *path)
{
        const struct tree_attr *a = &ti->attr;
        struct timespec times[2] = { a->atime, a->mtime };
        bool lnk = S_ISLNK(a->mode);
        int e;

        if (r->owner && fchownat(dirfd, name, a->uid, a->gid, AT_SYMLINK_NOFOLLOW) < 0)
                return log_error_errno(errno, "chown %s: %m", path);
        if (!lnk && fchmodat(dirfd, name, a->mode & 07777, 0) < 0)
                return log_error_errno(errno, "chmod %s: %m", path);
        e = apply_xattrs_at(r, dirfd, name, ti, path);
        if (e < 0)
                return e;
        if (utimensat(dirfd, name, times, AT_SYMLINK_NOFOLLOW) < 0)
                return log_error_errno(errno, "set times of %s: %m", path);
        return 0;
}

static void progress(struct restore *r, uint64_t add)
{
        uint64_t done = atomic_fetch_add(&r->bytes_written, add) + add, now;
        if (!r->progress || pthread_mutex_trylock(&r->prog_lock) != 0)
                return;
        now = now_ns();
        if (now - r->prog_last_ns >= NSEC_PER_SEC / 10) {
                r->prog_last_ns = now;
                r->progress(r->progress_ctx, "restore", done, r->total);
        }
        pthread_mutex_unlock(&r->prog_lock);
}

static int write_file(struct restore *r, struct chunk_codec *codec, uint8_t *buf, const struct rjob *j)
{
        uint32_t cs = tree_chunk_size(r->t);
        uint32_t have = TREE_HOLE; /* chunk position in buf */
        const struct tree_inode *ti = &j->ti;
        int e;

        for (uint32_t x = 0; x < tree_extent_count(r->t, ti); x++) {
                uint64_t off, len;
                tree_extent(r->t, ti, x, &off, &len);
                while (len > 0) {
                        uint32_t k = (uint32_t)(off / cs);
                        uint64_t in_chunk = off - (uint64_t)k * cs;
                        uint64_t n = MIN(len, (uint64_t)cs - in_chunk);
                        uint32_t idx = tree_file_chunk(r->t, ti, k);

                        if (idx == TREE_HOLE) /* the tree's validation forbids this */
                                return log_error_errno(EBADMSG, "%s: data extent over a hole chunk", j->path);
                        if (have != k) {
                                char why[CHUNK_WHY_MAX];
                                e = snapshot_read_chunk_why(r->b, r->s, idx, codec, buf, why);
                                if (e < 0) {
                                        /* Workers fail in parallel: only the first says why. */
                                        if (set_error(r, e) && why[0])
                                                log_error("%s", why);
                                        return e;
                                }
                                atomic_fetch_add(&r->chunks_read, 1);
                                have = k;
                        }
                        e = pwrite_full(j->fd, buf + in_chunk, (size_t)n, off);
                        if (e < 0)
                                return log_error_errno(e, "write %s: %m", j->path);
                        progress(r, n);
                        off += n;
                        len -= n;
                }
        }
        if (ftruncate(j->fd, (off_t)ti->attr.size) < 0)
                return log_error_errno(errno, "truncate %s: %m", j->path);
        return apply_attrs_fd(r, j->fd, ti, j->path);
}

static void *worker_main(void *arg)
{
        struct restore *r = arg;
        struct chunk_codec *codec = chunk_codec_new(CHUNK_LEVEL_DEFAULT);
        uint8_t *buf = malloc(tree_chunk_size(r->t));

        if (!codec || !buf)
                set_error(r, -ENOMEM);
        for (;;) {
                struct rjob j;
                int e;

                pthread_mutex_lock(&r->lock);
                while (r->len == 0 && !r->done)
                        pthread_cond_wait(&r->cond, &r->lock);
                if (r->len == 0) {
                        pthread_mutex_unlock(&r->lock);
                        break;
                }
                j = r->queue[r->head];
                r->head = (r->head + 1) % QUEUE_MAX;
                r->len--;
                pthread_cond_broadcast(&r->cond);
                pthread_mutex_unlock(&r->lock);

                /* After an error elsewhere, files still queued are not
                 * written at all; they are removed like a failed one. */
                e = atomic_load(&r->error) ? -ECANCELED
                    : (codec && buf)       ? write_file(r, codec, buf, &j)
                                           : -ENOMEM;
                close(j.fd);
                if (e < 0) {
                        /* Never leave a file holding partial or no data behind. */
                        (void)unlinkat(r->rootfd, j.path, 0);
                        if (e != -ECANCELED)
                                set_error(r, e);
                } else {
                        atomic_fetch_add(&r->files, 1);
                }
                free(j.path);
        }
        chunk_codec_free(codec);
        free(buf);
        return NULL;
}

static int enqueue(struct restore *r, int fd, const struct tree_inode *ti, char *path)
{
        pthread_mutex_lock(&r->lock);
        while (r->len == QUEUE_MAX)
                pthread_cond_wait(&r->cond, &r->lock);
        r->queue[(r->head + r->len) % QUEUE_MAX] = (struct rjob){ .fd = fd, .ti = *ti, .path = path };
        r->len++;
        pthread_cond_broadcast(&r->cond);
        pthread_mutex_unlock(&r->lock);
        return 0;
}

struct frame {
        struct tree_inode dir;
        int fd;
        uint32_t next;
        char *path;
};

static int check_empty_dir(const char *dir, int *ret_fd)
{
        _cleanup_(closep) int fd = -1;
        DIR *d;
        struct dirent *de;

        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return log_error_errno(errno, "create %s: %m", dir);
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return log_error_errno(errno, "open %s: %m", dir);
        d = fdopendir(dup(fd));
        if (!d)
                return log_error_errno(errno, "open %s: %m", dir);
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
                        closedir(d);
                        return log_error_errno(ENOTEMPTY, "restore into %s: directory is not empty", dir);
                }
        closedir(d);
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* walk(): create everything, depth first, iteratively. */
static int walk(struct restore *r)
{
        _cleanup_(freep) struct frame *stack = NULL;
        _cleanup_(freep) char **first_path = NULL; /* by inode position: hardlink targets */
        _cleanup_(freep) uint8_t *buf = NULL;
        struct chunk_codec *codec = NULL;
        size_t depth = 0, a_stack = 0;
        uint32_t n = tree_n_inodes(r->t);
        struct tree_inode root;
        int e = 0;

        first_path = calloc(MAX(n, 1u), sizeof *first_path);
        if (!first_path)
                return -ENOMEM;
        e = tree_inode(r->t, TREE_ROOT_INO, &root);
        if (e < 0)
                return e;
        a_stack = 64;
        stack = malloc(a_stack * sizeof *stack);
        if (!stack)
                return -ENOMEM;
        stack[depth++] = (struct frame){ .dir = root, .fd = dup(r->rootfd), .path = strdup("") };
        if (stack[0].fd < 0 || !stack[0].path) {
                e = -ENOMEM;
                goto out;
        }

        while (depth > 0 && !atomic_load(&r->error)) {
                struct frame *f = &stack[depth - 1];
                const char *name;
                size_t name_len;
                uint64_t ino;
                struct tree_inode ti;
                _cleanup_(freep) char *path = NULL;

                if (f->next == tree_dir_count(r->t, &f->dir)) {
                        /* All entries exist: the directory's own attributes. */
                        e = apply_attrs_fd(r, f->fd, &f->dir, f->path[0] ? f->path : ".");
                        close(f->fd);
                        free(f->path);
                        depth--;
                        if (e < 0)
                                goto out;
                        continue;
                }
                e = tree_dirent(r->t, &f->dir, f->next++, &name, &name_len, &ino);
                if (e < 0)
                        goto out;
                e = tree_inode(r->t, ino, &ti);
                if (e < 0)
                        goto out;
                if (asprintf(&path, "%s%s%s", f->path, f->path[0] ? "/" : "", name) < 0) {
                        path = NULL;
                        e = -ENOMEM;
                        goto out;
                }

                if (!S_ISDIR(ti.attr.mode) && ti.attr.nlink > 1 && first_path[ti.idx]) {
                        if (linkat(r->rootfd, first_path[ti.idx], f->fd, name, 0) < 0) {
                                e = log_error_errno(errno, "link %s to %s: %m", path, first_path[ti.idx]);
                                goto out;
                        }
                        continue;
                }

                switch (ti.attr.mode & S_IFMT) {
                case S_IFDIR: {
                        int fd;
                        if (mkdirat(f->fd, name, 0700) < 0) {
                                e = log_error_errno(errno, "create directory %s: %m", path);
                                goto out;
                        }
                        fd = openat(f->fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (fd < 0) {
                                e = log_error_errno(errno, "open directory %s: %m", path);
                                goto out;
                        }
                        if (depth == a_stack) {
                                struct frame *s2 = reallocarray(stack, a_stack * 2, sizeof *stack);
                                if (!s2) {
                                        close(fd);
                                        e = -ENOMEM;
                                        goto out;
                                }
                                stack = s2;
                                a_stack *= 2;
                        }
                        stack[depth++] = (struct frame){ .dir = ti, .fd = fd, .path = TAKE_PTR(path) };
                        continue;
                }
                case S_IFREG: {
                        int fd = openat(f->fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
                        char *jp;
                        if (fd < 0) {
                                e = log_error_errno(errno, "create %s: %m", path);
                                goto out;
                        }
                        if (ti.attr.nlink > 1) {
                                /* Its other names are linked to it right after: write
                                 * it here, so a failure never leaves a link to a
                                 * file without its data. */
                                struct rjob j = { .fd = fd, .ti = ti, .path = path };
                                if (!codec)
                                        codec = chunk_codec_new(CHUNK_LEVEL_DEFAULT);
                                if (!buf)
                                        buf = malloc(tree_chunk_size(r->t));
                                e = codec && buf ? write_file(r, codec, buf, &j) : -ENOMEM;
                                close(fd);
                                if (e < 0) {
                                        (void)unlinkat(f->fd, name, 0);
                                        goto out;
                                }
                                atomic_fetch_add(&r->files, 1);
                                break;
                        }
                        jp = strdup(path);
                        if (!jp) {
                                close(fd);
                                e = -ENOMEM;
                                goto out;
                        }
                        enqueue(r, fd, &ti, jp);
                        break;
                }
                case S_IFLNK: {
                        const char *target;
                        size_t tlen;
                        e = tree_symlink(r->t, &ti, &target, &tlen);
                        if (e < 0)
                                goto out;
                        if (symlinkat(target, f->fd, name) < 0) {
                                e = log_error_errno(errno, "create symlink %s: %m", path);
                                goto out;
                        }
                        e = apply_attrs_at(r, f->fd, name, &ti, path);
                        if (e < 0)
                                goto out;
                        break;
                }
                default:
                        if (mknodat(f->fd, name, (ti.attr.mode & S_IFMT) | 0600, (dev_t)ti.attr.rdev) < 0) {
                                e = log_error_errno(errno, "create %s: %m", path);
                                goto out;
                        }
                        e = apply_attrs_at(r, f->fd, name, &ti, path);
                        if (e < 0)
                                goto out;
                        break;
                }
                if (ti.attr.nlink > 1)
                        first_path[ti.idx] = TAKE_PTR(path);
        }
out:
        while (depth > 0) {
                depth--;
                close(stack[depth].fd);
                free(stack[depth].path);
        }
        for (uint32_t i = 0; i < n; i++)
                free(first_path[i]);
        chunk_codec_free(codec);
        return e;
}

int store_restore(struct backend *b, const struct digest *snap, const char *dir,
                  progress_fn progress_cb, void *progress_ctx, struct restore_stats *ret_stats)
{
        struct restore r = { .b = b, .dir = dir, .rootfd = -1, .progress = progress_cb,
                             .progress_ctx = progress_ctx };
        struct snapshot *s = NULL;
        _cleanup_(freep) pthread_t *threads = NULL;
        unsigned nthreads = (unsigned)MAX(sysconf(_SC_NPROCESSORS_ONLN), 1L), started = 0;
        uint64_t t0 = now_ns();
        int e, we;

        if (!b || !snap || !dir)
                return -EINVAL;
        e = snapshot_open(b, snap, &s);
        if (e < 0)
                return e;
        e = snapshot_load_tree(b, s);
        if (e < 0)
                goto out_snap;
        r.s = s;
        r.t = s->tree;
        r.owner = geteuid() == 0;
        if (s->config.stats) {
                json_t *v = json_object_get(s->config.stats, "bytes");
                if (json_is_integer(v) && json_integer_value(v) > 0)
                        r.total = (uint64_t)json_integer_value(v);
        }
        e = check_empty_dir(dir, &r.rootfd);
        if (e < 0)
                goto out_snap;

        pthread_mutex_init(&r.lock, NULL);
        pthread_cond_init(&r.cond, NULL);
        pthread_mutex_init(&r.prog_lock, NULL);
        threads = calloc(nthreads, sizeof *threads);
        if (!threads) {
                e = -ENOMEM;
                goto out;
        }
        for (unsigned i = 0; i < nthreads; i++) {
                if (pthread_create(&threads[i], NULL, worker_main, &r) != 0)
                        break;
                started++;
        }
        if (started == 0) {
                e = -EAGAIN;
                goto out;
        }
        we = walk(&r);
        pthread_mutex_lock(&r.lock);
        r.done = true;
        pthread_cond_broadcast(&r.cond);
        pthread_mutex_unlock(&r.lock);
        for (unsigned i = 0; i < started; i++)
                pthread_join(threads[i], NULL);
        e = atomic_load(&r.error);
        if (e == 0)
                e = we;
        if (e < 0) /* logged where it happened; dir holds a partial tree of verified files */
                goto out;
        if (syncfs(r.rootfd) < 0) {
                e = log_error_errno(errno, "sync %s: %m", dir);
                goto out;
        }
        if (ret_stats)
                *ret_stats = (struct restore_stats){
                        .files = atomic_load(&r.files),
                        .bytes_written = atomic_load(&r.bytes_written),
                        .chunks_read = atomic_load(&r.chunks_read),
                        .wall_ns = now_ns() - t0,
                };
out:
        pthread_mutex_destroy(&r.lock);
        pthread_cond_destroy(&r.cond);
        pthread_mutex_destroy(&r.prog_lock);
        close(r.rootfd);
out_snap:
        snapshot_free(s);
        return e;
}
