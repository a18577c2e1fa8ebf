/* commit.c — store_commit(): a directory into a snapshot.
 *
 * The pipeline:
 *   walker (the calling thread)  lstat()s every entry in sorted order, collects
 *                                inodes, names and xattrs, and queues jobs: one
 *                                per small file, one per JOB_BYTES range of a
 *                                large one, so a single big file still keeps
 *                                every core busy;
 *   workers (one per CPU)        read a job's chunks (O_NOATIME) and hand them
 *                                to the packer (packer.h), which hashes them,
 *                                reuses what the parent has, and compresses and
 *                                packs only new chunks, a job's as one run (its
 *                                chunks adjacent in the pack);
 *   prefetcher                   asks the kernel to start reading the jobs
 *                                the workers take next (POSIX_FADV_WILLNEED),
 *                                up to PREFETCH_AHEAD bytes ahead, so that a
 *                                worker on a cold cache finds its file read
 *                                instead of idling its CPU until it is;
 *   finish (the calling thread)  builds the tree and publishes the snapshot.
 *
 * qlock and prog_lock nest with nothing; no lock is held across I/O.
 *
 * Inode numbers: the root is TREE_ROOT_INO. With a parent, a path that was
 * there before with the same file type keeps its number (so a generation
 * keeps inode numbers stable for the filesystem); everything else gets a new
 * number from the parent's next_ino on. A hardlink group is one inode. */
#include "commit.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include "chunk.h"
#include "packer.h"
#include "tree.h"
#include "util.h"

/* Besides the parent, dedup against this many of the store's newest snapshots. */
#define COMMIT_KNOWN 4

/* Large files are split into jobs of this many bytes. */
#define JOB_BYTES (8u << 20)

/* How far the prefetcher may run ahead of the workers, in job bytes. */
#define PREFETCH_AHEAD (64u << 20)

struct xattr {
        char *name;
        void *value;
        size_t len;
};

struct inode {
        struct stat st;
        uint64_t ino;       /* persistent number */
        uint32_t refs;      /* dirents naming it */
        uint32_t nsubdirs;  /* directories only */
        char *path;         /* first path, relative to the root ("" for the root) */
        char *target;       /* symlinks */
        struct xattr *xattrs;
        size_t n_xattrs, a_xattrs;
        /* regular files */
        uint32_t nchunks;
        uint32_t *chunks;   /* packer refs or TREE_HOLE */
        uint64_t (*extents)[2];
        size_t n_extents;
        atomic_uint jobs_left;
};

struct dirent_rec {
        uint32_t dir;   /* inode index */
        uint32_t child; /* inode index */
        char *name;
};

struct job {
        struct inode *in; /* inodes never move: the walker may grow c->inodes meanwhile */
        uint32_t first, count; /* chunk range */
        bool extents;          /* this job finds the file's extents itself */
        uint64_t at;           /* bytes of all jobs queued before this one */
};

struct commit {
        struct backend *b;
        const struct commit_opts *o;
        int dirfd;
        uint32_t cs;
        const struct tree *ptree; /* parent's tree, or NULL */
        const struct snapshot *parent;

        /* walker-owned until the workers are joined; workers reach an inode
         * only through its job */
        struct inode **inodes;
        size_t n_inodes, a_inodes;
        struct dirent_rec *dirents;
        size_t n_dirents, a_dirents;
        uint64_t next_ino;

        /* the job queue */
        pthread_mutex_t qlock;
        pthread_cond_t qcond;
        struct job *jobs;
        size_t n_jobs, a_jobs, next_job;
        bool walk_done;
        uint64_t queued_bytes; /* job bytes queued so far */
        uint64_t taken_at;     /* .at of the job a worker took last */
        pthread_cond_t pcond;  /* the prefetcher's: a job queued or taken */
        bool pf_waiting;       /* the prefetcher waits on pcond */
        uint64_t pf_wake_at;   /* ... for a worker to take a job at or past this */
        atomic_int error; /* first error, 0 if none */

        struct packer *packer;

        /* progress: prog_lock */
        pthread_mutex_t prog_lock;
        uint64_t prog_last_ns;
        atomic_uint_fast64_t bytes_done, bytes_total;

        atomic_uint_fast64_t bytes_read;
};

static void set_error(struct commit *c, int r)
{
        int expected = 0;
        atomic_compare_exchange_strong(&c->error, &expected, r);
}

/* ---- walking ---- */

/* read_xattrs(): path is what the calls use, name what messages say. */
static int read_xattrs(const char *path, const char *name, struct inode *in)
{
        _cleanup_(freep) char *names = NULL;
        ssize_t n = llistxattr(path, NULL, 0);
        if (n < 0)
                return errno == ENOTSUP ? 0 : log_error_errno(errno, "list xattrs of %s: %m", name);
        if (n == 0)
                return 0;
        names = malloc((size_t)n);
        if (!names)
                return -ENOMEM;
        n = llistxattr(path, names, (size_t)n);
        if (n < 0)
                return log_error_errno(errno, "list xattrs of %s: %m", name);
        for (char *p = names; p < names + n; p += strlen(p) + 1) {
                _cleanup_(freep) void *v = NULL;
                ssize_t vl = lgetxattr(path, p, NULL, 0);
                if (vl < 0) {
                        if (errno == ENODATA)
                                continue;
                        return log_error_errno(errno, "read xattr %s of %s: %m", p, name);
                }
                v = malloc((size_t)vl + 1);
                if (!v)
                        return -ENOMEM;
                vl = lgetxattr(path, p, v, (size_t)vl);
                if (vl < 0)
                        return log_error_errno(errno, "read xattr %s of %s: %m", p, name);
                if (array_grow((void **)&in->xattrs, &in->a_xattrs, in->n_xattrs + 1, sizeof *in->xattrs) < 0)
                        return -ENOMEM;
                in->xattrs[in->n_xattrs].name = strdup(p);
                if (!in->xattrs[in->n_xattrs].name)
                        return -ENOMEM;
                in->xattrs[in->n_xattrs].value = TAKE_PTR(v);
                in->xattrs[in->n_xattrs].len = (size_t)vl;
                in->n_xattrs++;
        }
        return 0;
}

/* job_bytes(): the bytes of the file a job covers. */
static uint64_t job_bytes(const struct commit *c, const struct job *j)
{
        uint64_t size = (uint64_t)j->in->st.st_size, start = (uint64_t)j->first * c->cs;
        uint64_t end = MIN(size, (uint64_t)(j->first + j->count) * c->cs);

        return end > start ? end - start : 0;
}

static int queue_push(struct commit *c, const struct job *j)
{
        int r;
        pthread_mutex_lock(&c->qlock);
        r = array_grow((void **)&c->jobs, &c->a_jobs, c->n_jobs + 1, sizeof *c->jobs);
        if (r == 0) {
                struct job *q = &c->jobs[c->n_jobs++];
                *q = *j;
                q->at = c->queued_bytes;
                c->queued_bytes += job_bytes(c, q);
                pthread_cond_signal(&c->qcond);
                if (c->pf_waiting)
                        pthread_cond_signal(&c->pcond);
        }
        pthread_mutex_unlock(&c->qlock);
        return r;
}

/* file_extents(): data extents of fd at HOLE_GRANULE granularity, merged.
 * A filesystem without SEEK_DATA gets one extent covering the file. */
static int file_extents(int fd, uint64_t size, uint64_t (**ret)[2], size_t *ret_n)
{
        uint64_t (*ext)[2] = NULL;
        size_t n = 0, a = 0;
        uint64_t pos = 0;

        while (pos < size) {
                off_t d = lseek(fd, (off_t)pos, SEEK_DATA), h;
                uint64_t start, end;
                if (d < 0) {
                        if (errno == ENXIO)
                                break;
                        if (errno == EINVAL || errno == ENOTSUP) { /* no hole support */
                                d = (off_t)pos;
                                h = (off_t)size;
                                goto add;
                        }
                        free(ext);
                        return -errno;
                }
                h = lseek(fd, d, SEEK_HOLE);
                if (h < 0) {
                        free(ext);
                        return -errno;
                }
        add:
                start = (uint64_t)d / HOLE_GRANULE * HOLE_GRANULE;
                end = MIN(DIV_ROUND_UP((uint64_t)h, HOLE_GRANULE) * HOLE_GRANULE, size);
                if (end <= start)
                        break;
                if (n > 0 && ext[n - 1][0] + ext[n - 1][1] >= start) {
                        ext[n - 1][1] = MAX(ext[n - 1][0] + ext[n - 1][1], end) - ext[n - 1][0];
                } else {
                        if (array_grow((void **)&ext, &a, n + 1, sizeof *ext) < 0) {
                                free(ext);
                                return -ENOMEM;
                        }
                        ext[n][0] = start;
                        ext[n][1] = end - start;
                        n++;
                }
                pos = end;
        }
        *ret = ext;
        *ret_n = n;
        return 0;
}

/* open_noatime(): path below the root, never through a symlink (the tree may
 * change while we read it: a swapped-in symlink must not make us commit a
 * file from outside it), with O_NOATIME where we may. */
static int open_noatime(int dirfd, const char *path, int flags)
{
        int fd = open_beneath(dirfd, path, O_RDONLY | O_NOATIME | O_NOFOLLOW | O_CLOEXEC | flags);
        if (fd == -EPERM) /* O_NOATIME needs ownership or CAP_FOWNER */
                fd = open_beneath(dirfd, path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | flags);
        return fd;
}

static int queue_file(struct commit *c, uint32_t idx)
{
        struct inode *in = c->inodes[idx];
        uint64_t size = (uint64_t)in->st.st_size;
        struct job j = { .in = in };
        int r;

        if (size == 0)
                return 0;
        if (DIV_ROUND_UP(size, c->cs) > UINT32_MAX - 1)
                return log_error_errno(EFBIG, "%s: file too large for chunk size %u", in->path, c->cs);
        in->nchunks = (uint32_t)DIV_ROUND_UP(size, c->cs);
        in->chunks = malloc(sizeof(uint32_t) * in->nchunks);
        if (!in->chunks)
                return -ENOMEM;
        atomic_fetch_add(&c->bytes_total, size);

        if (size <= JOB_BYTES) {
                j.first = 0;
                j.count = in->nchunks;
                j.extents = true;
                atomic_store(&in->jobs_left, 1);
                return queue_push(c, &j);
        }

        /* A large file: find its extents here, then split it. */
        {
                _cleanup_(closep) int fd = open_noatime(c->dirfd, in->path, 0);
                uint32_t per = MAX(JOB_BYTES / c->cs, 1u);
                if (fd < 0)
                        return log_error_errno(fd, "open %s: %m", in->path);
                r = file_extents(fd, size, &in->extents, &in->n_extents);
                if (r < 0)
                        return log_error_errno(r, "find holes in %s: %m", in->path);
                atomic_store(&in->jobs_left, DIV_ROUND_UP(in->nchunks, per));
                for (uint32_t i = 0; i < in->nchunks; i += per) {
                        j.first = i;
                        j.count = MIN(per, in->nchunks - i);
                        j.extents = false;
                        r = queue_push(c, &j);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static int name_cmp(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Persistent number for path: the parent's, if it had this path with the same
 * type and nobody took that number yet in this commit. */
static uint64_t pick_ino(struct commit *c, const char *path, mode_t mode, uint8_t *used, size_t n_used)
{
        struct tree_inode ti;
        if (c->ptree && tree_path_lookup(c->ptree, path, &ti) == 0 &&
            (ti.attr.mode & S_IFMT) == (mode & S_IFMT) && ti.attr.ino < n_used && !used[ti.attr.ino]) {
                used[ti.attr.ino] = 1;
                return ti.attr.ino;
        }
        return c->next_ino++;
}

struct hardlink {
        dev_t dev;
        ino_t ino;
        uint32_t idx;
};

static int hl_cmp(const void *a, const void *b)
{
        const struct hardlink *x = a, *y = b;
        if (x->dev != y->dev)
                return x->dev < y->dev ? -1 : 1;
        if (x->ino != y->ino)
                return x->ino < y->ino ? -1 : 1;
        return 0;
}

static int add_inode(struct commit *c, const struct stat *st, const char *path, uint32_t *ret)
{
        struct inode *in;
        if (c->n_inodes >= UINT32_MAX - 1)
                return -EFBIG;
        if (array_grow((void **)&c->inodes, &c->a_inodes, c->n_inodes + 1, sizeof *c->inodes) < 0)
                return -ENOMEM;
        in = calloc(1, sizeof *in);
        if (!in)
                return -ENOMEM;
        in->st = *st;
        in->path = strdup(path);
        if (!in->path) {
                free(in);
                return -ENOMEM;
        }
        c->inodes[c->n_inodes] = in;
        *ret = (uint32_t)c->n_inodes++;
        return 0;
}

/* walk(): breadth-first over directories, entries in name order. Directory
 * inodes are visited in the order they were found; each is read once. */
static int walk(struct commit *c)
{
        _cleanup_(freep) struct hardlink *links = NULL;
        _cleanup_(freep) uint8_t *used = NULL;
        size_t n_links = 0, a_links = 0, n_used = 0;
        struct stat st;
        uint32_t root;
        int r;

        if (fstat(c->dirfd, &st) < 0)
                return log_error_errno(errno, "stat %s: %m", c->o->dir);
        r = add_inode(c, &st, "", &root);
        if (r < 0)
                return r;
        c->inodes[root]->ino = TREE_ROOT_INO;
        r = read_xattrs(c->o->dir, c->o->dir, c->inodes[root]);
        if (r < 0)
                return r;
        c->next_ino = TREE_ROOT_INO + 1;
        if (c->ptree) {
                c->next_ino = MAX(c->next_ino, tree_next_ino(c->ptree));
                n_used = tree_next_ino(c->ptree);
                if (n_used > (64u << 20)) /* a bitmap of 64 MiB at most */
                        n_used = 0;
                used = calloc(MAX(n_used, (size_t)1), 1);
                if (!used)
                        return -ENOMEM;
                if (n_used > TREE_ROOT_INO)
                        used[TREE_ROOT_INO] = 1;
        }

        for (size_t d = 0; d < c->n_inodes; d++) {
                _cleanup_(freep) char **names = NULL;
                size_t n_names = 0, a_names = 0;
                DIR *dir;
                struct dirent *de;
                int fd;

                if (!S_ISDIR(c->inodes[d]->st.st_mode))
                        continue;
                if (atomic_load(&c->error))
                        return atomic_load(&c->error);
                fd = d == root ? dup(c->dirfd) : open_noatime(c->dirfd, c->inodes[d]->path, O_DIRECTORY);
                if (d == root && fd < 0)
                        fd = -errno;
                if (fd < 0)
                        return log_error_errno(fd, "open directory %s: %m", c->inodes[d]->path);
                dir = fdopendir(fd);
                if (!dir) {
                        close(fd);
                        return log_error_errno(errno, "open directory %s: %m", c->inodes[d]->path);
                }
                while ((errno = 0, de = readdir(dir))) {
                        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                                continue;
                        if (array_grow((void **)&names, &a_names, n_names + 1, sizeof *names) < 0 ||
                            !(names[n_names] = strdup(de->d_name))) {
                                r = -ENOMEM;
                                break;
                        }
                        n_names++;
                }
                if (errno && de == NULL)
                        r = log_error_errno(errno, "read directory %s: %m", c->inodes[d]->path);
                else
                        r = 0;
                if (r < 0) {
                        closedir(dir);
                        goto free_names;
                }
                if (n_names > 1)
                        qsort(names, n_names, sizeof *names, name_cmp);

                for (size_t i = 0; i < n_names; i++) {
                        _cleanup_(freep) char *path = NULL;
                        struct hardlink key, *hl = NULL;
                        uint32_t idx;

                        if (fstatat(dirfd(dir), names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
                                r = log_error_errno(errno, "stat %s/%s: %m", c->inodes[d]->path, names[i]);
                                break;
                        }
                        if (asprintf(&path, "%s%s%s", c->inodes[d]->path, d == root ? "" : "/", names[i]) < 0) {
                                path = NULL;
                                r = -ENOMEM;
                                break;
                        }
                        if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
                                key = (struct hardlink){ .dev = st.st_dev, .ino = st.st_ino };
                                if (n_links > 0)
                                        hl = bsearch(&key, links, n_links, sizeof *links, hl_cmp);
                        }
                        if (hl) {
                                idx = hl->idx;
                        } else {
                                struct inode *in;
                                r = add_inode(c, &st, path, &idx);
                                if (r < 0)
                                        break;
                                in = c->inodes[idx];
                                in->ino = pick_ino(c, path, st.st_mode, used, n_used);
                                if (S_ISLNK(st.st_mode)) {
                                        char buf[TREE_SYMLINK_MAX + 2];
                                        ssize_t n = readlinkat(dirfd(dir), names[i], buf, sizeof buf);
                                        if (n < 0) {
                                                r = log_error_errno(errno, "readlink %s: %m", path);
                                                break;
                                        }
                                        if (n == 0 || (size_t)n > TREE_SYMLINK_MAX) {
                                                r = log_error_errno(ENAMETOOLONG, "symlink %s: target length %zd not storable", path, n);
                                                break;
                                        }
                                        in->target = strndup(buf, (size_t)n);
                                        if (!in->target) {
                                                r = -ENOMEM;
                                                break;
                                        }
                                        in->st.st_size = n;
                                }
                                {
                                        _cleanup_(freep) char *full = NULL;
                                        /* by the directory fd: no path walk to be raced */
                                        if (asprintf(&full, "/proc/self/fd/%d/%s", dirfd(dir), names[i]) < 0) {
                                                full = NULL;
                                                r = -ENOMEM;
                                                break;
                                        }
                                        r = read_xattrs(full, path, c->inodes[idx]);
                                        if (r < 0)
                                                break;
                                }
                                if (S_ISDIR(st.st_mode))
                                        c->inodes[d]->nsubdirs++;
                                if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
                                        if (array_grow((void **)&links, &a_links, n_links + 1, sizeof *links) < 0) {
                                                r = -ENOMEM;
                                                break;
                                        }
                                        size_t at = n_links;
                                        key.idx = idx;
                                        /* keep links[] sorted: insert in place */
                                        while (at > 0 && hl_cmp(&links[at - 1], &key) > 0)
                                                at--;
                                        memmove(&links[at + 1], &links[at], (n_links - at) * sizeof *links);
                                        links[at] = key;
                                        n_links++;
                                }
                                if (S_ISREG(st.st_mode)) {
                                        r = queue_file(c, idx);
                                        if (r < 0)
                                                break;
                                }
                        }
                        c->inodes[idx]->refs++;
                        if (array_grow((void **)&c->dirents, &c->a_dirents, c->n_dirents + 1, sizeof *c->dirents) < 0) {
                                r = -ENOMEM;
                                break;
                        }
                        c->dirents[c->n_dirents++] = (struct dirent_rec){
                                .dir = (uint32_t)d, .child = idx, .name = TAKE_PTR(names[i]),
                        };
                }
                closedir(dir);
        free_names:
                for (size_t i = 0; i < n_names; i++)
                        free(names[i]);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- workers ---- */

struct worker {
        struct commit *c;
        struct chunk_codec *codec;
        struct packer_batch *batch; /* a job's new chunks, packed as one run */
        uint8_t *buf;
};

static void progress(struct commit *c, uint64_t add)
{
        uint64_t done = atomic_fetch_add(&c->bytes_done, add) + add, now;
        if (!c->o->progress)
                return;
        now = now_ns();
        if (pthread_mutex_trylock(&c->prog_lock) != 0)
                return;
        if (now - c->prog_last_ns >= NSEC_PER_SEC / 10) {
                c->prog_last_ns = now;
                c->o->progress(c->o->progress_ctx, "commit", done, atomic_load(&c->bytes_total));
        }
        pthread_mutex_unlock(&c->prog_lock);
}

static bool range_has_data(const struct inode *in, uint64_t start, uint64_t end)
{
        for (size_t i = 0; i < in->n_extents; i++) {
                uint64_t es = in->extents[i][0], ee = es + in->extents[i][1];
                if (es < end && ee > start)
                        return true;
                if (es >= end)
                        break;
        }
        return false;
}

static int process_chunk(struct worker *w, struct inode *in, int fd, uint32_t i)
{
        struct commit *c = w->c;
        uint64_t size = (uint64_t)in->st.st_size;
        uint64_t off = (uint64_t)i * c->cs;
        uint32_t len = (uint32_t)MIN((uint64_t)c->cs, size - off);
        ssize_t n;
        int r;

        if (!range_has_data(in, off, off + len)) {
                in->chunks[i] = TREE_HOLE;
                return 0;
        }
        n = pread_full(fd, w->buf, len, off);
        if (n < 0)
                return log_error_errno((int)n, "read %s: %m", in->path);
        if ((size_t)n != len)
                return log_error_errno(EBUSY, "%s: file shrank while being committed", in->path);
        atomic_fetch_add(&c->bytes_read, len);
        r = packer_add_batched(c->packer, w->codec, w->batch, w->buf, len, &in->chunks[i]);
        if (r < 0)
                return log_error_errno(r, "store %s: %m", in->path);
        return 0;
}

static int process_job(struct worker *w, const struct job *j)
{
        struct commit *c = w->c;
        struct inode *in = j->in;
        _cleanup_(closep) int fd = -1;
        struct stat st;
        int r;

        fd = open_noatime(c->dirfd, in->path, 0);
        if (fd < 0)
                return log_error_errno(fd, "open %s: %m", in->path);
        if (fstat(fd, &st) < 0)
                return log_error_errno(errno, "stat %s: %m", in->path);
        if (st.st_ino != in->st.st_ino || st.st_size != in->st.st_size)
                return log_error_errno(EBUSY, "%s: file changed while being committed", in->path);
        if (j->extents) {
                r = file_extents(fd, (uint64_t)st.st_size, &in->extents, &in->n_extents);
                if (r < 0)
                        return log_error_errno(r, "find holes in %s: %m", in->path);
        }
        for (uint32_t i = j->first; i < j->first + j->count; i++) {
                if (atomic_load(&c->error))
                        return 0;
                r = process_chunk(w, in, fd, i);
                if (r < 0)
                        return r;
                progress(c, MIN((uint64_t)c->cs, (uint64_t)st.st_size - (uint64_t)i * c->cs));
        }
        /* The file must not have changed under us. */
        if (atomic_fetch_sub(&in->jobs_left, 1) == 1) {
                if (fstat(fd, &st) < 0)
                        return log_error_errno(errno, "stat %s: %m", in->path);
                if (st.st_size != in->st.st_size || st.st_mtim.tv_sec != in->st.st_mtim.tv_sec ||
                    st.st_mtim.tv_nsec != in->st.st_mtim.tv_nsec)
                        return log_error_errno(EBUSY, "%s: file changed while being committed", in->path);
        }
        return 0;
}

/* The prefetcher: for each job, from the one a worker takes next to
 * PREFETCH_AHEAD bytes beyond it, open the file and ask for its range
 * (POSIX_FADV_WILLNEED queues the reads and returns). Best effort: a file
 * it cannot open is the worker's to report. On a warm cache it finds the
 * pages there and costs an open and a close per file. */
static void *prefetch_main(void *arg)
{
        struct commit *c = arg;
        size_t p = 0;

        for (;;) {
                struct job j;
                _cleanup_(closep) int fd = -1;

                pthread_mutex_lock(&c->qlock);
                for (;;) {
                        p = MAX(p, c->next_job); /* never behind the workers */
                        if (atomic_load(&c->error) || (p == c->n_jobs && c->walk_done))
                                break;
                        if (p < c->n_jobs && c->jobs[p].at <= c->taken_at + PREFETCH_AHEAD)
                                break;
                        /* Ahead by a full window: sleep until the workers
                         * have taken a quarter of it, not at every job they
                         * take (one wakeup per small file is a context
                         * switch per file, on a warm cache for nothing). */
                        c->pf_wake_at = p < c->n_jobs ? c->jobs[p].at - PREFETCH_AHEAD / 4 * 3 : 0;
                        c->pf_waiting = true;
                        pthread_cond_wait(&c->pcond, &c->qlock);
                        c->pf_waiting = false;
                }
                if (atomic_load(&c->error) || p == c->n_jobs) {
                        pthread_mutex_unlock(&c->qlock);
                        return NULL;
                }
                j = c->jobs[p++];
                pthread_mutex_unlock(&c->qlock);

                fd = open_noatime(c->dirfd, j.in->path, 0);
                if (fd >= 0)
                        (void)posix_fadvise(fd, (off_t)((uint64_t)j.first * c->cs), (off_t)job_bytes(c, &j),
                                            POSIX_FADV_WILLNEED);
        }
}

static void *worker_main(void *arg)
{
        struct worker *w = arg;
        struct commit *c = w->c;

        for (;;) {
                struct job j;
                int r;

                pthread_mutex_lock(&c->qlock);
                while (c->next_job == c->n_jobs && !c->walk_done && !atomic_load(&c->error))
                        pthread_cond_wait(&c->qcond, &c->qlock);
                if (c->next_job == c->n_jobs || atomic_load(&c->error)) {
                        pthread_mutex_unlock(&c->qlock);
                        break;
                }
                j = c->jobs[c->next_job++];
                c->taken_at = j.at;
                if (c->pf_waiting && j.at >= c->pf_wake_at)
                        pthread_cond_signal(&c->pcond);
                pthread_mutex_unlock(&c->qlock);

                r = process_job(w, &j);
                if (r >= 0) /* the job's new chunks, back to back in a pack */
                        r = packer_batch_flush(c->packer, w->batch);
                if (r < 0) {
                        set_error(c, r);
                        pthread_mutex_lock(&c->qlock);
                        pthread_cond_broadcast(&c->qcond);
                        pthread_mutex_unlock(&c->qlock);
                        break;
                }
        }
        return NULL;
}

/* ---- the tree ---- */

static int build_tree(struct commit *c, void **ret_blob, size_t *ret_len, struct digest *ret_digest)
{
        struct tree_builder *tb = tree_builder_new(c->cs);
        _cleanup_(freep) uint32_t *handles = NULL, *bchunk = NULL, *tmp = NULL;
        size_t n_refs = 0;
        int r = -ENOMEM;

        if (!tb)
                return -ENOMEM;
        handles = calloc(MAX(c->n_inodes, (size_t)1), sizeof *handles);
        if (!handles)
                goto fail;
        r = packer_add_to_builder(c->packer, tb, &bchunk, &n_refs);
        if (r < 0)
                goto fail;

        for (size_t i = 0; i < c->n_inodes; i++) {
                struct inode *in = c->inodes[i];
                struct tree_attr a = {
                        .ino = in->ino,
                        .mode = in->st.st_mode,
                        .uid = in->st.st_uid,
                        .gid = in->st.st_gid,
                        .nlink = S_ISDIR(in->st.st_mode) ? 2 + in->nsubdirs : in->refs,
                        .size = S_ISREG(in->st.st_mode) || S_ISLNK(in->st.st_mode) ? (uint64_t)in->st.st_size : 0,
                        .rdev = (S_ISCHR(in->st.st_mode) || S_ISBLK(in->st.st_mode)) ? in->st.st_rdev : 0,
                        .atime = in->st.st_atim,
                        .mtime = in->st.st_mtim,
                        .ctime = in->st.st_ctim,
                };
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
                if (in->nchunks) {
                        free(tmp);
                        tmp = malloc(sizeof(uint32_t) * in->nchunks);
                        if (!tmp) {
                                r = -ENOMEM;
                                goto fail;
                        }
                        for (uint32_t k = 0; k < in->nchunks; k++)
                                tmp[k] = in->chunks[k] == TREE_HOLE ? TREE_HOLE : bchunk[in->chunks[k]];
                        r = tree_builder_set_chunks(tb, handles[i], tmp, in->nchunks);
                        if (r < 0)
                                goto fail;
                        for (size_t e = 0; e < in->n_extents; e++) {
                                r = tree_builder_add_extent(tb, handles[i], in->extents[e][0], in->extents[e][1]);
                                if (r < 0)
                                        goto fail;
                        }
                }
        }
        for (size_t i = 0; i < c->n_dirents; i++) {
                const struct dirent_rec *d = &c->dirents[i];
                r = tree_builder_add_dirent(tb, handles[d->dir], d->name, strlen(d->name),
                                            c->inodes[d->child]->ino);
                if (r < 0)
                        goto fail;
        }
        tree_builder_set_next_ino(tb, c->next_ino);
        r = tree_builder_finish(tb, CHUNK_LEVEL_DEFAULT, ret_blob, ret_len, ret_digest);
fail:
        tree_builder_free(tb);
        return r;
}

static void commit_release(struct commit *c)
{
        for (size_t i = 0; i < c->n_inodes; i++) {
                struct inode *in = c->inodes[i];
                free(in->path);
                free(in->target);
                for (size_t x = 0; x < in->n_xattrs; x++) {
                        free(in->xattrs[x].name);
                        free(in->xattrs[x].value);
                }
                free(in->xattrs);
                free(in->chunks);
                free(in->extents);
                free(in);
        }
        free(c->inodes);
        for (size_t i = 0; i < c->n_dirents; i++)
                free(c->dirents[i].name);
        free(c->dirents);
        free(c->jobs);
        packer_free(c->packer);
        pthread_mutex_destroy(&c->qlock);
        pthread_cond_destroy(&c->qcond);
        pthread_cond_destroy(&c->pcond);
        pthread_mutex_destroy(&c->prog_lock);
}

static json_t *stats_json(const struct commit_stats *s)
{
        return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "files", (json_int_t)s->files, "dirs",
                         (json_int_t)s->dirs, "bytes", (json_int_t)s->bytes_logical, "chunks",
                         (json_int_t)s->chunks_total, "chunksNew", (json_int_t)s->chunks_new,
                         "bytesNew", (json_int_t)s->bytes_new, "bytesPacked",
                         (json_int_t)s->bytes_packed, "packsNew", (json_int_t)s->packs_new);
}

int store_commit(struct backend *b, const struct commit_opts *o, struct digest *ret,
                 struct commit_stats *ret_stats)
{
        struct commit c = { .b = b, .o = o, .dirfd = -1 };
        struct packer_stats ps;
        _cleanup_(freep) pthread_t *threads = NULL;
        pthread_t prefetcher;
        bool prefetching = false;
        _cleanup_(freep) struct worker *workers = NULL;
        _cleanup_(freep) void *blob = NULL;
        struct snapshot *parent = NULL, **recent = NULL;
        size_t n_recent = 0;
        struct commit_stats st = { 0 };
        struct digest tree_digest, result;
        size_t blob_len = 0;
        unsigned nthreads, started = 0;
        uint64_t t0 = now_ns(), c0 = cpu_ns();
        json_t *stats = NULL;
        int r;

        if (!b || !o || !o->dir || !ret)
                return -EINVAL;
        pthread_mutex_init(&c.qlock, NULL);
        pthread_cond_init(&c.qcond, NULL);
        pthread_cond_init(&c.pcond, NULL);
        pthread_mutex_init(&c.prog_lock, NULL);

        if (o->parent) {
                r = snapshot_open(b, o->parent, &parent);
                if (r < 0)
                        goto fail;
                r = snapshot_load_tree(b, parent);
                if (r < 0)
                        goto fail;
                c.parent = parent;
                c.ptree = parent->tree;
        }
        c.cs = o->chunk_size ? o->chunk_size : parent ? parent->config.chunk_size : CHUNK_SIZE_DEFAULT;
        if (!chunk_size_valid(c.cs)) {
                r = log_error_errno(EINVAL, "chunk size %u is not a power of two in [%u, %u]", c.cs,
                                    CHUNK_SIZE_MIN, CHUNK_SIZE_MAX);
                goto fail;
        }
        r = packer_new(b, c.cs, o->level ? o->level : CHUNK_LEVEL_DEFAULT, &c.packer);
        if (r < 0)
                goto fail;
        if (c.ptree) {
                r = packer_add_known(c.packer, c.ptree);
                if (r < 0)
                        goto fail;
        }
        /* Dedup against the store's newest snapshots too, so committing a
         * tree the store already holds costs no pack bytes, parent or not. */
        r = store_recent(b, c.cs, COMMIT_KNOWN, parent ? &parent->tree_digest : NULL, parent ? 1 : 0, &recent,
                         &n_recent);
        if (r < 0)
                goto fail;
        for (size_t i = 0; i < n_recent; i++) {
                r = packer_add_known(c.packer, recent[i]->tree);
                if (r < 0)
                        goto fail;
        }
        c.dirfd = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOATIME);
        if (c.dirfd < 0 && errno == EPERM)
                c.dirfd = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (c.dirfd < 0) {
                r = log_error_errno(errno, "open %s: %m", o->dir);
                goto fail;
        }

        nthreads = o->threads ? o->threads : (unsigned)MAX(sysconf(_SC_NPROCESSORS_ONLN), 1L);
        threads = calloc(nthreads, sizeof *threads);
        workers = calloc(nthreads, sizeof *workers);
        if (!threads || !workers) {
                r = -ENOMEM;
                goto fail;
        }
        for (unsigned i = 0; i < nthreads; i++) {
                struct worker *w = &workers[i];
                w->c = &c;
                w->codec = chunk_codec_new(o->level ? o->level : CHUNK_LEVEL_DEFAULT);
                w->batch = packer_batch_new();
                w->buf = malloc(c.cs);
                if (!w->codec || !w->batch || !w->buf) {
                        r = -ENOMEM;
                        goto join;
                }
                r = -pthread_create(&threads[i], NULL, worker_main, w);
                if (r < 0)
                        goto join;
                started++;
        }

        prefetching = pthread_create(&prefetcher, NULL, prefetch_main, &c) == 0;

        r = walk(&c);
        log_debug("commit: walk done after %.3f s", (double)(now_ns() - t0) / 1e9);
join:
        if (r < 0)
                set_error(&c, r);
        pthread_mutex_lock(&c.qlock);
        c.walk_done = true;
        pthread_cond_broadcast(&c.qcond);
        pthread_cond_broadcast(&c.pcond);
        pthread_mutex_unlock(&c.qlock);
        for (unsigned i = 0; i < started; i++)
                pthread_join(threads[i], NULL);
        if (prefetching) /* it ends once the walk is done and no job is left, or on an error */
                pthread_join(prefetcher, NULL);
        for (unsigned i = 0; i < nthreads; i++) {
                chunk_codec_free(workers[i].codec);
                packer_batch_free(workers[i].batch);
                free(workers[i].buf);
        }
        r = atomic_load(&c.error);
        if (r < 0)
                goto fail;
        log_debug("commit: workers done after %.3f s", (double)(now_ns() - t0) / 1e9);
        r = packer_flush(c.packer);
        if (r < 0)
                goto fail;
        log_debug("commit: packs written after %.3f s", (double)(now_ns() - t0) / 1e9);

        r = build_tree(&c, &blob, &blob_len, &tree_digest);
        if (r < 0) {
                log_error_errno(r, "build tree of %s: %m", o->dir);
                goto fail;
        }

        log_debug("commit: tree built after %.3f s (%zu bytes)", (double)(now_ns() - t0) / 1e9, blob_len);
        for (size_t i = 0; i < c.n_inodes; i++) {
                mode_t m = c.inodes[i]->st.st_mode;
                if (S_ISREG(m)) {
                        st.files++;
                        st.bytes_logical += (uint64_t)c.inodes[i]->st.st_size;
                } else if (S_ISDIR(m))
                        st.dirs++;
                else if (S_ISLNK(m))
                        st.symlinks++;
                else
                        st.others++;
        }
        st.bytes_read = atomic_load(&c.bytes_read);
        packer_get_stats(c.packer, &ps);
        st.chunks_total = ps.chunks_total;
        st.chunks_new = ps.chunks_new;
        st.chunks_reused = ps.chunks_reused;
        st.bytes_new = ps.bytes_new;
        st.bytes_packed = ps.bytes_packed;
        st.packs_new = ps.packs_new;
        st.tree_bytes = blob_len;
        stats = stats_json(&st);
        if (!stats) {
                r = -ENOMEM;
                goto fail;
        }

        r = snapshot_publish(b,
                             &(struct snapshot_new){
                                     .tree_blob = blob,
                                     .tree_len = blob_len,
                                     .tree_digest = tree_digest,
                                     .parent = parent,
                                     .chunk_size = c.cs,
                                     .labels = o->labels,
                                     .stats = stats,
                                     .image = o->image,
                                     .tag = o->tag,
                             },
                             &result);
        if (r < 0)
                goto fail;
        log_debug("commit: published after %.3f s", (double)(now_ns() - t0) / 1e9);
        if (o->progress)
                o->progress(o->progress_ctx, "commit", atomic_load(&c.bytes_total),
                            atomic_load(&c.bytes_total));
        st.wall_ns = now_ns() - t0;
        st.cpu_ns = cpu_ns() - c0;
        *ret = result;
        if (ret_stats)
                *ret_stats = st;
        r = 0;
fail:
        json_decref(stats);
        if (c.dirfd >= 0)
                close(c.dirfd);
        commit_release(&c); /* the packer refers to the trees below */
        snapshot_free(parent);
        for (size_t i = 0; i < n_recent; i++)
                snapshot_free(recent[i]);
        free(recent);
        return r;
}
