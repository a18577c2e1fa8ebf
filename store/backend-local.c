/* backend-local.c — the local store: a directory in OCI image layout.
 *
 *   DIR/oci-layout          {"imageLayoutVersion":"1.0.0"}, written last on create
 *   DIR/index.json          the OCI image index; only ever replaced by rename
 *   DIR/blobs/sha256/<hex>  immutable blobs, mode 0444
 *   DIR/stasis.lock         flock(LOCK_EX) held by index_transaction()
 *   DIR/tmp/                in-flight writes (never listed)
 *
 * Every operation works relative to directory fds opened once, so a store
 * that is renamed while open keeps working. Writes are durable when they
 * return: the file is fsync'd before it is linked in, and the directory after.
 * Thread-safe and process-safe: the only shared state is in the filesystem,
 * and flock locks belong to an open file description, so two threads of one
 * process that each open stasis.lock exclude each other as processes do. */
#include "backend.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend-private.h"
#include "util.h"

#define OCI_LAYOUT_CONTENT "{\"imageLayoutVersion\":\"1.0.0\"}"
#define INDEX_MAX (64u << 20)

/* Blobs this large, in a page-aligned buffer (packs), are written with
 * O_DIRECT: they go from the buffer to the disk without a copy into the page
 * cache, which on a commit is ~5% of the CPU time. */
#define DIRECT_MIN (1u << 20)
#define DIRECT_ALIGN 4096u

struct local_backend {
        struct backend base;
        char *path;   /* for log messages */
        int dir_fd;   /* DIR */
        int blobs_fd; /* DIR/blobs/sha256 */
        int tmp_fd;   /* DIR/tmp, or -1 if it could not be made (read-only store) */
};

static struct local_backend *to_local(struct backend *b)
{
        return container_of(b, struct local_backend, base);
}

/* A name for a temp file that no other thread or process picks. */
static void temp_name(const char *prefix, char buf[static 128])
{
        uint64_t rnd;
        if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd)
                rnd = now_ns();
        snprintf(buf, 128, "%s.%d.%016llx", prefix, (int)getpid(), (unsigned long long)rnd);
}

/* write_file_at(): atomically make dst_fd/dst hold data: a temp file in tmp/
 * opened with O_EXCL, fsync'd, then renamed over dst (replace) or linked to
 * it (!replace: an existing dst wins, and that is not an error); then dst's
 * directory is fsync'd. The temp file never outlives a failure. */
static int write_file_at(struct local_backend *l, int dst_fd, const char *dst, const void *data,
                         size_t len, mode_t mode, bool replace)
{
        _cleanup_(closep) int fd = -1;
        char tmp[128];
        int r;

        if (l->tmp_fd < 0)
                return log_error_errno(EROFS, "store %s: cannot write %s: no tmp/ directory",
                                       l->path, dst);
        for (int attempt = 0;; attempt++) {
                temp_name(dst, tmp);
                fd = openat(l->tmp_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
                if (fd >= 0)
                        break;
                if (errno != EEXIST || attempt >= 16)
                        return log_error_errno(errno, "store %s: create tmp/%s: %m", l->path,
                                               tmp);
        }
        r = write_full(fd, data, len);
        if (r < 0) {
                log_error_errno(r, "store %s: write tmp/%s: %m", l->path, tmp);
                goto fail;
        }
        /* The mode given to openat() went through the umask. */
        if (fchmod(fd, mode) < 0 || fsync(fd) < 0) {
                r = log_error_errno(errno, "store %s: sync tmp/%s: %m", l->path, tmp);
                goto fail;
        }
        if (replace) {
                if (renameat(l->tmp_fd, tmp, dst_fd, dst) < 0) {
                        r = log_error_errno(errno, "store %s: rename tmp/%s to %s: %m", l->path,
                                            tmp, dst);
                        goto fail;
                }
        } else {
                if (linkat(l->tmp_fd, tmp, dst_fd, dst, 0) < 0 && errno != EEXIST) {
                        r = log_error_errno(errno, "store %s: link tmp/%s to %s: %m", l->path,
                                            tmp, dst);
                        goto fail;
                }
                (void)unlinkat(l->tmp_fd, tmp, 0);
        }
        if (fsync(dst_fd) < 0)
                return log_error_errno(errno, "store %s: sync directory of %s: %m", l->path, dst);
        return 0;
fail:
        (void)unlinkat(l->tmp_fd, tmp, 0);
        return r;
}

static int local_has(struct backend *b, const struct digest *d)
{
        struct local_backend *l = to_local(b);
        char hex[DIGEST_HEX_LEN + 1];
        struct stat st;

        if (fstatat(l->blobs_fd, digest_hex(d, hex), &st, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno == ENOENT)
                        return 0;
                return log_error_errno(errno, "store %s: stat blob %s: %m", l->path, hex);
        }
        return S_ISREG(st.st_mode) ? 1 : 0;
}

static int local_size(struct backend *b, const struct digest *d, uint64_t *ret_size)
{
        struct local_backend *l = to_local(b);
        char hex[DIGEST_HEX_LEN + 1];
        struct stat st;

        if (fstatat(l->blobs_fd, digest_hex(d, hex), &st, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno == ENOENT)
                        return -ENOENT;
                return log_error_errno(errno, "store %s: stat blob %s: %m", l->path, hex);
        }
        if (!S_ISREG(st.st_mode))
                return -ENOENT;
        *ret_size = (uint64_t)st.st_size;
        return 0;
}

static ssize_t local_read(struct backend *b, const struct digest *d, uint64_t off, void *buf,
                          size_t len)
{
        struct local_backend *l = to_local(b);
        char hex[DIGEST_HEX_LEN + 1];
        _cleanup_(closep) int fd = -1;
        ssize_t n;

        fd = openat(l->blobs_fd, digest_hex(d, hex), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) {
                if (errno == ENOENT)
                        return -ENOENT;
                return log_error_errno(errno, "store %s: open blob %s: %m", l->path, hex);
        }
        if (len == 0)
                return 0;
        n = pread_full(fd, buf, len, off);
        if (n < 0)
                return log_error_errno((int)n, "store %s: read blob %s: %m", l->path, hex);
        return n;
}

static int local_freshen(struct backend *b, const struct digest *d)
{
        struct local_backend *l = to_local(b);
        char hex[DIGEST_HEX_LEN + 1];

        if (utimensat(l->blobs_fd, digest_hex(d, hex), NULL, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno == ENOENT)
                        return -ENOENT;
                return log_error_errno(errno, "store %s: freshen blob %s: %m", l->path, hex);
        }
        return 0;
}

/* write_blob_data(): len bytes to fd. If fd is O_DIRECT, the whole blocks
 * go directly and the tail (or everything, if the device refuses the
 * alignment) through the page cache. */
static int write_blob_data(int fd, const void *data, size_t len)
{
        int fl = fcntl(fd, F_GETFL);
        size_t done = 0;

        if (fl < 0)
                return -errno;
        if (fl & O_DIRECT) {
                size_t whole = len / DIRECT_ALIGN * DIRECT_ALIGN;
                while (done < whole) {
                        ssize_t n = write(fd, (const char *)data + done, whole - done);
                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n < 0 && errno != EINVAL)
                                return -errno;
                        if (n <= 0 || (size_t)n % DIRECT_ALIGN)
                                break; /* the rest through the page cache */
                        done += (size_t)n;
                }
                if (fcntl(fd, F_SETFL, fl & ~O_DIRECT) < 0)
                        return -errno;
                if (done < len && lseek(fd, (off_t)done, SEEK_SET) < 0)
                        return -errno;
        }
        if (done == len) /* also an empty blob, whose data may be NULL */
                return 0;
        return write_full(fd, (const char *)data + done, len - done);
}

/* write_blob_tmpfile(): the O_TMPFILE way: nothing named exists until the
 * fully written, fsync'd file is linked in, so a crash leaves no litter.
 * -EOPNOTSUPP (not logged) if the filesystem or /proc cannot do it. */
static int write_blob_tmpfile(struct local_backend *l, const char *hex, const void *data,
                              size_t len)
{
        _cleanup_(closep) int fd = -1;
        char proc[64];
        int r;

        fd = -1;
        if (len >= DIRECT_MIN && (uintptr_t)data % DIRECT_ALIGN == 0)
                fd = openat(l->tmp_fd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC | O_DIRECT, 0444);
        if (fd < 0) /* small, unaligned, or no O_DIRECT here */
                fd = openat(l->tmp_fd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0444);
        if (fd < 0) {
                if (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)
                        return -EOPNOTSUPP;
                return log_error_errno(errno, "store %s: create temp file in tmp/: %m",
                                       l->path);
        }
        r = write_blob_data(fd, data, len);
        if (r < 0)
                return log_error_errno(r, "store %s: write blob %s: %m", l->path, hex);
        if (fchmod(fd, 0444) < 0 || fsync(fd) < 0)
                return log_error_errno(errno, "store %s: sync blob %s: %m", l->path, hex);
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        if (linkat(AT_FDCWD, proc, l->blobs_fd, hex, AT_SYMLINK_FOLLOW) < 0) {
                if (errno == EEXIST) /* written meanwhile by someone else: same bytes */
                        return 0;
                if (errno == ENOENT) /* no /proc */
                        return -EOPNOTSUPP;
                return log_error_errno(errno, "store %s: link blob %s: %m", l->path, hex);
        }
        if (fsync(l->blobs_fd) < 0)
                return log_error_errno(errno, "store %s: sync blobs/sha256: %m", l->path);
        return 0;
}

static int local_write(struct backend *b, const struct digest *d, const void *data, size_t len)
{
        struct local_backend *l = to_local(b);
        char hex[DIGEST_HEX_LEN + 1];
        bool replace = false;
        struct stat st;
        int r;

        digest_hex(d, hex);
        if (fstatat(l->blobs_fd, hex, &st, AT_SYMLINK_NOFOLLOW) == 0) {
                if (S_ISREG(st.st_mode) && (uint64_t)st.st_size == len) {
                        r = local_freshen(b, d);
                        if (r != -ENOENT) /* else gc removed it just now: write it */
                                return r;
                } else {
                        /* Cannot come from a write of ours (those are complete
                         * before they are named), but never trust it. */
                        log_warning("store %s: blob %s has the wrong size, replacing it",
                                    l->path, hex);
                        replace = true;
                }
        } else if (errno != ENOENT) {
                return log_error_errno(errno, "store %s: stat blob %s: %m", l->path, hex);
        }

        if (l->tmp_fd < 0)
                return log_error_errno(EROFS, "store %s: cannot write blob %s: no tmp/ directory",
                                       l->path, hex);
        if (!replace) {
                r = write_blob_tmpfile(l, hex, data, len);
                if (r != -EOPNOTSUPP)
                        return r;
        }
        /* Rename over: a blob that appeared meanwhile has the same bytes. */
        return write_file_at(l, l->blobs_fd, hex, data, len, 0444, true);
}

static int local_remove(struct backend *b, const struct digest *d)
{
        struct local_backend *l = to_local(b);
        char hex[DIGEST_HEX_LEN + 1];

        if (unlinkat(l->blobs_fd, digest_hex(d, hex), 0) < 0) {
                if (errno == ENOENT)
                        return -ENOENT;
                return log_error_errno(errno, "store %s: remove blob %s: %m", l->path, hex);
        }
        if (fsync(l->blobs_fd) < 0)
                return log_error_errno(errno, "store %s: sync blobs/sha256: %m", l->path);
        return 0;
}

static void closedirp(DIR **d)
{
        if (*d)
                (void)closedir(*d);
}

static int local_list(struct backend *b, blob_list_fn fn, void *ctx)
{
        struct local_backend *l = to_local(b);
        _cleanup_(closedirp) DIR *dir = NULL;
        struct dirent *de;
        int fd;

        /* A fresh fd: readdir's position belongs to it, and closedir() closes it. */
        fd = openat(l->blobs_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return log_error_errno(errno, "store %s: open blobs/sha256: %m", l->path);
        dir = fdopendir(fd);
        if (!dir) {
                int r = log_error_errno(errno, "store %s: open blobs/sha256: %m", l->path);
                close(fd);
                return r;
        }
        for (;;) {
                struct blob_info info;
                struct stat st;
                int r;

                errno = 0;
                de = readdir(dir);
                if (!de) {
                        if (errno)
                                return log_error_errno(errno, "store %s: read blobs/sha256: %m",
                                                       l->path);
                        return 0;
                }
                /* Skips ".", "..", and temp files other tools leave here. */
                if (digest_parse_hex(de->d_name, &info.digest) < 0)
                        continue;
                if (fstatat(l->blobs_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        if (errno == ENOENT) /* removed meanwhile */
                                continue;
                        return log_error_errno(errno, "store %s: stat blob %s: %m", l->path,
                                               de->d_name);
                }
                if (!S_ISREG(st.st_mode))
                        continue;
                info.size = (uint64_t)st.st_size;
                info.mtime = st.st_mtim;
                r = fn(&info, ctx);
                if (r < 0)
                        return r;
        }
}

/* index_load(): the current index; an empty one if there is none yet. A
 * corrupt index.json is an error, never silently replaced. */
static int index_load(struct local_backend *l, json_t **ret)
{
        _cleanup_(freep) char *text = NULL;
        json_error_t err;
        json_t *index;
        size_t len;
        int r;

        r = read_file_at(l->dir_fd, "index.json", INDEX_MAX, &text, &len);
        if (r == -ENOENT) {
                index = backend_index_new_empty();
                if (!index)
                        return -ENOMEM;
                *ret = index;
                return 0;
        }
        if (r < 0)
                return log_error_errno(r, "store %s: read index.json: %m", l->path);
        index = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
        if (!index)
                return log_error_errno(EBADMSG,
                                       "store %s: index.json is corrupt (%s at line %d, column %d); "
                                       "leaving it as it is",
                                       l->path, err.text, err.line, err.column);
        if (backend_index_check(index) < 0) {
                json_decref(index);
                return log_error_errno(EBADMSG,
                                       "store %s: index.json is not an OCI image index "
                                       "(no \"manifests\" array); leaving it as it is",
                                       l->path);
        }
        *ret = index;
        return 0;
}

static int local_index_read(struct backend *b, json_t **ret)
{
        /* No lock: index.json is only ever replaced whole, by rename. */
        return index_load(to_local(b), ret);
}

static int local_index_transaction(struct backend *b, index_fn fn, void *ctx)
{
        struct local_backend *l = to_local(b);
        _cleanup_(json_decrefp) json_t *index = NULL;
        _cleanup_(freep) char *text = NULL;
        _cleanup_(closep) int lock_fd = -1;
        int r, result;

        lock_fd = openat(l->dir_fd, "stasis.lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (lock_fd < 0 && (errno == EROFS || errno == EACCES)) /* a read-only store */
                lock_fd = openat(l->dir_fd, "stasis.lock", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (lock_fd < 0)
                return log_error_errno(errno, "store %s: open stasis.lock: %m", l->path);
        while (flock(lock_fd, LOCK_EX) < 0)
                if (errno != EINTR)
                        return log_error_errno(errno, "store %s: lock stasis.lock: %m", l->path);

        r = index_load(l, &index);
        if (r < 0)
                return r;
        result = fn(index, ctx);
        if (result <= 0)
                return result;
        if (backend_index_check(index) < 0)
                return log_error_errno(EINVAL, "store %s: refusing to store an index without "
                                       "a \"manifests\" array", l->path);
        text = json_dumps(index, JSON_COMPACT);
        if (!text)
                return -ENOMEM;
        {
                size_t len = strlen(text);
                char *t = realloc(text, len + 2);
                if (!t)
                        return -ENOMEM;
                text = t;
                text[len] = '\n';
                text[len + 1] = '\0';
        }
        r = write_file_at(l, l->dir_fd, "index.json", text, strlen(text), 0644, true);
        if (r < 0)
                return r;
        /* The lock goes with lock_fd. */
        return result;
}

static void local_free(struct backend *b)
{
        struct local_backend *l;

        if (!b)
                return;
        l = to_local(b);
        closep(&l->dir_fd);
        closep(&l->blobs_fd);
        closep(&l->tmp_fd);
        free(l->path);
        free(l);
}

static const struct backend_ops local_ops = {
        .version = BACKEND_OPS_VERSION,
        .name = "local",
        .has = local_has,
        .size = local_size,
        .read = local_read,
        .write = local_write,
        .freshen = local_freshen,
        .remove = local_remove,
        .list = local_list,
        .index_read = local_index_read,
        .index_transaction = local_index_transaction,
        .free = local_free,
};

static void local_freep(struct local_backend **l)
{
        if (*l)
                local_free(&(*l)->base);
}

/* mkdir_p(): make path and its missing parents. */
static int mkdir_p(const char *path, mode_t mode)
{
        _cleanup_(freep) char *p = strdup(path);

        if (!p)
                return -ENOMEM;
        for (char *s = p + 1; *s; s++) {
                if (*s != '/')
                        continue;
                *s = '\0';
                if (mkdir(p, mode) < 0 && errno != EEXIST)
                        return -errno;
                *s = '/';
        }
        if (mkdir(p, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

static int mkdirat_ok(int fd, const char *name)
{
        if (mkdirat(fd, name, 0755) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

/* layout_state(): 1 if fd holds an OCI layout, 0 if it is empty or holds only
 * what an interrupted create leaves (our own names, no oci-layout yet),
 * -ENOTEMPTY if it holds something else. */
static int layout_state(int fd)
{
        static const char *const ours[] = { "blobs", "tmp", "index.json", "stasis.lock" };
        _cleanup_(closedirp) DIR *dir = NULL;
        struct dirent *de;
        int dfd;

        if (faccessat(fd, "oci-layout", F_OK, AT_SYMLINK_NOFOLLOW) == 0)
                return 1;
        if (errno != ENOENT)
                return -errno;
        dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return -errno;
        dir = fdopendir(dfd);
        if (!dir) {
                int r = -errno;
                close(dfd);
                return r;
        }
        while ((de = readdir(dir))) {
                bool known = strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0;
                /* A concurrent create finished since faccessat() above. */
                if (strcmp(de->d_name, "oci-layout") == 0)
                        return 1;
                for (size_t i = 0; !known && i < ELEMENTSOF(ours); i++)
                        known = strcmp(de->d_name, ours[i]) == 0;
                if (!known)
                        return -ENOTEMPTY;
        }
        return 0;
}

static int check_oci_layout(struct local_backend *l)
{
        _cleanup_(freep) char *text = NULL;
        json_t *j, *v;
        size_t len;
        int r;

        r = read_file_at(l->dir_fd, "oci-layout", 4096, &text, &len);
        if (r < 0)
                return log_error_errno(r, "store %s: read oci-layout: %m", l->path);
        j = json_loadb(text, len, 0, NULL);
        v = json_object_get(j, "imageLayoutVersion");
        r = json_is_string(v) ? 0 : -EINVAL;
        json_decref(j);
        if (r < 0)
                return log_error_errno(r, "store %s: oci-layout is not a valid OCI layout file",
                                       l->path);
        return 0;
}

static int create_layout(struct local_backend *l)
{
        static const char index[] = "{\"schemaVersion\":2,\"mediaType\":\"" OCI_INDEX_MEDIA_TYPE
                                    "\",\"manifests\":[]}\n";
        int r;

        r = fsync_dir_at(l->dir_fd, "blobs");
        if (r < 0)
                return log_error_errno(r, "store %s: sync blobs: %m", l->path);
        /* oci-layout goes last: it marks the layout complete. */
        r = write_file_at(l, l->dir_fd, "index.json", index, strlen(index), 0644, false);
        if (r < 0)
                return r;
        return write_file_at(l, l->dir_fd, "oci-layout", OCI_LAYOUT_CONTENT "\n",
                             strlen(OCI_LAYOUT_CONTENT "\n"), 0644, false);
}

int backend_local_open(const char *dir, bool create, struct backend **ret)
{
        _cleanup_(local_freep) struct local_backend *l = NULL;
        int r, state;

        if (!dir || !*dir || !ret)
                return -EINVAL;
        l = calloc(1, sizeof *l);
        if (!l)
                return -ENOMEM;
        l->base.ops = &local_ops;
        l->dir_fd = l->blobs_fd = l->tmp_fd = -1;
        l->path = strdup(dir);
        if (!l->path)
                return -ENOMEM;

        l->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (l->dir_fd < 0 && errno == ENOENT && create) {
                r = mkdir_p(dir, 0755);
                if (r < 0)
                        return log_error_errno(r, "store %s: create directory: %m", dir);
                l->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        }
        if (l->dir_fd < 0) {
                if (errno == ENOENT)
                        return log_error_errno(ENOENT, "store %s does not exist", dir);
                return log_error_errno(errno, "store %s: open: %m", dir);
        }

        state = layout_state(l->dir_fd);
        if (state == -ENOTEMPTY)
                return log_error_errno(EINVAL, "store %s: directory is not empty and has no "
                                       "oci-layout file: not an OCI image layout, not touching it",
                                       dir);
        if (state < 0)
                return log_error_errno(state, "store %s: %m", dir);
        if (state == 0 && !create)
                return log_error_errno(ENOENT, "store %s does not exist (empty directory)", dir);

        /* Layouts made by other tools may lack blobs/sha256 or tmp/; a
         * read-only store works without tmp/ until something writes. */
        r = mkdirat_ok(l->dir_fd, "blobs");
        if (r >= 0)
                r = mkdirat_ok(l->dir_fd, "blobs/sha256");
        if (r < 0 && r != -EROFS && r != -EACCES)
                return log_error_errno(r, "store %s: create blobs/sha256: %m", dir);
        l->blobs_fd = openat(l->dir_fd, "blobs/sha256", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (l->blobs_fd < 0)
                return log_error_errno(errno, "store %s: open blobs/sha256: %m", dir);
        r = mkdirat_ok(l->dir_fd, "tmp");
        if (r < 0 && r != -EROFS && r != -EACCES)
                return log_error_errno(r, "store %s: create tmp: %m", dir);
        l->tmp_fd = openat(l->dir_fd, "tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (l->tmp_fd < 0 && errno != ENOENT)
                return log_error_errno(errno, "store %s: open tmp: %m", dir);

        if (state == 0) {
                r = create_layout(l);
                if (r < 0)
                        return r;
        } else {
                r = check_oci_layout(l);
                if (r < 0)
                        return r;
        }
        *ret = &TAKE_PTR(l)->base;
        return 0;
}
