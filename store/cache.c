/* cache.c — the node chunk cache; see cache.h for the layout and promises. */
#include <dirent.h>
#include <endian.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>

#include "cache.h"
#include "chunk.h"
#include "util.h"

_Static_assert(sizeof(struct cache_entry_hdr) == 64, "cache entry header is 64 bytes");

/* A stale in-flight temp file (its writer died) is removed by the evictor
 * after this long. */
#define CACHE_TMP_STALE_SEC 3600

struct cache {
        char *path;     /* immutable after open */
        int v1fd;       /* CACHE/v1, immutable */
        int lockfd;     /* CACHE/lock, immutable; flock'd by the evictor */
        uint64_t bound; /* immutable */

        atomic_bool no_tmpfile;         /* O_TMPFILE unsupported here */
        atomic_uint_fast64_t since_evict; /* bytes put since the last evictor run */
        /* Evictions for a full filesystem (full_evict()), one at a time:
         * how many ran, when the last one did (CLOCK_MONOTONIC seconds) and
         * what it freed. */
        pthread_mutex_t full_lock;
        atomic_uint_fast64_t full_gen; /* written under full_lock */
        int64_t full_at;               /* full_lock */
        uint64_t full_freed;           /* full_lock */
        atomic_uint_fast64_t tmp_seq;

        /* Counters; atomics, no lock. */
        atomic_uint_fast64_t hits, misses, puts, bad_entries, evictions, evicted_bytes;

        /* Serializes this process's evictor runs (try-lock only); lock order:
         * full_lock, evict_lock, then the flock on lockfd. */
        pthread_mutex_t evict_lock;
};

static void entry_name(const struct digest *addr, char buf[static 3 + DIGEST_HEX_LEN + 1])
{
        char hex[DIGEST_HEX_LEN + 1];

        digest_hex(addr, hex);
        snprintf(buf, 3 + DIGEST_HEX_LEN + 1, "%.2s/%s", hex, hex);
}

static int config_read(int dirfd, uint64_t *ret)
{
        _cleanup_(freep) char *s = NULL;
        unsigned long long v;
        char *end;
        size_t len;
        int r;

        r = read_file_at(dirfd, "config", 4096, &s, &len);
        if (r < 0)
                return r;
        if (strncmp(s, "size_bound ", 11) != 0 || s[11] < '0' || s[11] > '9')
                return -EBADMSG;
        errno = 0;
        v = strtoull(s + 11, &end, 10);
        if (errno || (*end && *end != '\n') || v < CACHE_SIZE_MIN)
                return -EBADMSG;
        *ret = v;
        return 0;
}

static int config_write(int dirfd, uint64_t bound)
{
        char tmp[64], line[64];
        int fd, r;

        snprintf(tmp, sizeof tmp, ".config.%ld", (long)getpid());
        snprintf(line, sizeof line, "size_bound %" PRIu64 "\n", bound);
        fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        r = write_full(fd, line, strlen(line));
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        close(fd);
        if (r >= 0 && renameat(dirfd, tmp, dirfd, "config") < 0)
                r = -errno;
        if (r < 0)
                (void)unlinkat(dirfd, tmp, 0);
        return r;
}

int cache_open(const char *dir, uint64_t size_bound, struct cache **ret)
{
        _cleanup_(closep) int dirfd = -1, v1fd = -1, lockfd = -1;
        struct cache *c;
        uint64_t bound;
        int r;

        if (!dir || !ret)
                return -EINVAL;
        if (size_bound && size_bound < CACHE_SIZE_MIN)
                return log_error_errno(-EINVAL, "cache %s: size bound %" PRIu64 " below the minimum of 1 MiB",
                                       dir, size_bound);
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                return log_error_errno(-errno, "cache %s: mkdir: %m", dir);
        dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0)
                return log_error_errno(-errno, "cache %s: open: %m", dir);
        if (mkdirat(dirfd, "v1", 0755) < 0 && errno != EEXIST)
                return log_error_errno(-errno, "cache %s: mkdir v1: %m", dir);
        v1fd = openat(dirfd, "v1", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (v1fd < 0)
                return log_error_errno(-errno, "cache %s: open v1: %m", dir);
        lockfd = openat(dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (lockfd < 0)
                return log_error_errno(-errno, "cache %s: open lock: %m", dir);

        r = config_read(dirfd, &bound);
        if (r == -ENOENT)
                bound = 0;
        else if (r < 0)
                return log_error_errno(r, "cache %s: bad config file: %m", dir);
        if (size_bound && size_bound != bound) {
                r = config_write(dirfd, size_bound);
                if (r < 0)
                        return log_error_errno(r, "cache %s: write config: %m", dir);
                bound = size_bound;
        } else if (!bound) {
                r = config_write(dirfd, CACHE_SIZE_DEFAULT);
                if (r < 0)
                        return log_error_errno(r, "cache %s: write config: %m", dir);
                bound = CACHE_SIZE_DEFAULT;
        }

        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->path = strdup(dir);
        if (!c->path) {
                free(c);
                return -ENOMEM;
        }
        pthread_mutex_init(&c->evict_lock, NULL);
        pthread_mutex_init(&c->full_lock, NULL);
        c->bound = bound;
        c->v1fd = TAKE_FD(v1fd);
        c->lockfd = TAKE_FD(lockfd);
        *ret = c;
        return 0;
}

struct cache *cache_free(struct cache *c)
{
        if (!c)
                return NULL;
        closep(&c->v1fd);
        closep(&c->lockfd);
        pthread_mutex_destroy(&c->evict_lock);
        pthread_mutex_destroy(&c->full_lock);
        free(c->path);
        free(c);
        return NULL;
}

uint64_t cache_size_bound(const struct cache *c) { return c ? c->bound : 0; }
const char *cache_path(const struct cache *c) { return c ? c->path : NULL; }

void cache_get_stats(const struct cache *c, struct cache_stats *ret)
{
        if (!c || !ret)
                return;
        *ret = (struct cache_stats){
                .hits = atomic_load(&c->hits),
                .misses = atomic_load(&c->misses),
                .puts = atomic_load(&c->puts),
                .bad_entries = atomic_load(&c->bad_entries),
                .evictions = atomic_load(&c->evictions),
                .evicted_bytes = atomic_load(&c->evicted_bytes),
        };
}

static int miss(struct cache *c)
{
        atomic_fetch_add(&c->misses, 1);
        return 0;
}

int cache_get(struct cache *c, const struct digest *addr, void *dst, size_t cap, size_t *ret_len)
{
        char name[3 + DIGEST_HEX_LEN + 1];
        _cleanup_(closep) int fd = -1;
        struct cache_entry_hdr h;
        struct stat st;
        struct iovec iov[2];
        ssize_t n;

        if (!c || !addr || (!dst && cap) || !ret_len)
                return -EINVAL;
        entry_name(addr, name);
        fd = openat(c->v1fd, name, O_RDONLY | O_CLOEXEC | O_NOATIME);
        if (fd < 0 && errno == EPERM) /* O_NOATIME needs ownership */
                fd = openat(c->v1fd, name, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return miss(c);
        if (fstat(fd, &st) < 0 || st.st_size < (off_t)sizeof h)
                goto bad;
        if ((uint64_t)st.st_size - sizeof h > cap)
                return miss(c); /* not for this caller; not bad either */
        iov[0] = (struct iovec){ &h, sizeof h };
        iov[1] = (struct iovec){ dst, (size_t)st.st_size - sizeof h };
        do
                n = preadv(fd, iov, 2, 0);
        while (n < 0 && errno == EINTR);
        /* Entries are small regular files: one preadv reads them whole. */
        if (n != st.st_size)
                goto bad;
        if (memcmp(h.magic, CACHE_ENTRY_MAGIC, 8) != 0 || le32toh(h.version) != 1 ||
            le32toh(h.ulen) != iov[1].iov_len || memcmp(h.addr, addr->b, DIGEST_LEN) != 0 ||
            le64toh(h.xxh3) != chunk_xxh3(dst, iov[1].iov_len))
                goto bad;

        if (time(NULL) - st.st_mtim.tv_sec > CACHE_BUMP_SEC)
                (void)futimens(fd, NULL); /* LRU: a hit makes the entry young */
        atomic_fetch_add(&c->hits, 1);
        *ret_len = iov[1].iov_len;
        return 1;

bad:
        /* Torn, truncated or rotten: never served, and removed so that the
         * next put can replace it. */
        atomic_fetch_add(&c->bad_entries, 1);
        log_warning("cache %s: removing bad entry %s", c->path, name);
        (void)unlinkat(c->v1fd, name, 0);
        return miss(c);
}

int cache_has(struct cache *c, const struct digest *addr)
{
        char name[3 + DIGEST_HEX_LEN + 1];

        if (!c || !addr)
                return -EINVAL;
        entry_name(addr, name);
        return faccessat(c->v1fd, name, F_OK, AT_EACCESS) == 0;
}

static int write_entry(int fd, const struct cache_entry_hdr *h, const void *data, size_t len)
{
        int r = write_full(fd, h, sizeof *h);
        return r < 0 ? r : write_full(fd, data, len);
}

/* put_tmpfile(): O_TMPFILE + linkat: the entry appears whole or not at all.
 * -EOPNOTSUPP if this file system cannot do it. */
static int put_tmpfile(struct cache *c, const char *sub, const char *name,
                       const struct cache_entry_hdr *h, const void *data, size_t len)
{
        _cleanup_(closep) int fd = -1;
        char proc[64];
        int r;

        fd = openat(c->v1fd, sub, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0)
                return errno == EISDIR || errno == EINVAL ? -EOPNOTSUPP : -errno;
        r = write_entry(fd, h, data, len);
        if (r < 0)
                return r;
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        if (linkat(AT_FDCWD, proc, c->v1fd, name, AT_SYMLINK_FOLLOW) < 0)
                return errno == EEXIST ? 0 : -errno;
        return 0;
}

/* put_rename(): temp file + rename, for file systems without O_TMPFILE. */
static int put_rename(struct cache *c, const char *sub, const char *name,
                      const struct cache_entry_hdr *h, const void *data, size_t len)
{
        _cleanup_(closep) int fd = -1;
        char tmp[96];
        int r;

        snprintf(tmp, sizeof tmp, "%s/.tmp-%ld-%" PRIuFAST64, sub, (long)getpid(),
                 (uint_fast64_t)atomic_fetch_add(&c->tmp_seq, 1));
        fd = openat(c->v1fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        r = write_entry(fd, h, data, len);
        if (r < 0)
                goto fail;
        if (renameat(c->v1fd, tmp, c->v1fd, name) < 0) {
                r = -errno;
                goto fail;
        }
        return 0;
fail:
        (void)unlinkat(c->v1fd, tmp, 0);
        return r;
}

static int evict(struct cache *c, bool full, uint64_t *ret_bytes);

/* put(): one insert, making the prefix directory if it is the first. */
static int put(struct cache *c, const char *sub, const char *name, const struct cache_entry_hdr *h,
               const void *data, size_t len)
{
        int r = -ENOENT;

        for (int attempt = 0; attempt < 2; attempt++) {
                if (!atomic_load(&c->no_tmpfile)) {
                        r = put_tmpfile(c, sub, name, h, data, len);
                        if (r == -EOPNOTSUPP) {
                                atomic_store(&c->no_tmpfile, true);
                                r = put_rename(c, sub, name, h, data, len);
                        }
                } else
                        r = put_rename(c, sub, name, h, data, len);
                if (r != -ENOENT || attempt)
                        break;
                /* First entry under this prefix. */
                if (mkdirat(c->v1fd, sub, 0755) < 0 && errno != EEXIST)
                        return -errno;
        }
        return r;
}

/* full_evict(): an insert found the cache's filesystem full before the
 * bound: the space there is the bound now. Evict a tenth of what the cache
 * holds; true if the insert should be tried again (this freed something,
 * or another eviction ran since the insert began: gen is full_gen as it
 * was then). One at a time, so that concurrent inserts wait for it rather
 * than fail; and after one that freed nothing (a disk filled by others),
 * none for a second: every insert must not scan the cache. */
static bool full_evict(struct cache *c, uint64_t gen)
{
        struct timespec now;
        uint64_t before, got;
        int64_t last;
        bool ok = false;

        clock_gettime(CLOCK_MONOTONIC, &now);
        pthread_mutex_lock(&c->full_lock);
        if (atomic_load(&c->full_gen) != gen) {
                ok = true;
                goto out;
        }
        last = c->full_at;
        if (last == now.tv_sec && !c->full_freed)
                goto out;
        before = atomic_load(&c->evicted_bytes);
        if (evict(c, true, NULL) < 0)
                goto out;
        got = atomic_load(&c->evicted_bytes) - before;
        c->full_at = now.tv_sec;
        c->full_freed = got;
        atomic_fetch_add(&c->full_gen, 1);
        ok = got > 0;
        if (ok && (last == 0 || now.tv_sec - last > 60)) /* once per episode */
                log_warning("cache %s: its filesystem is full below the size bound (%" PRIu64
                            " bytes): evicting to make room",
                            c->path, c->bound);
out:
        pthread_mutex_unlock(&c->full_lock);
        return ok;
}

int cache_put(struct cache *c, const struct digest *addr, const void *data, size_t len)
{
        char name[3 + DIGEST_HEX_LEN + 1], sub[3];
        struct cache_entry_hdr h = { .version = htole32(1) };
        uint64_t since, gen;
        int r;

        if (!c || !addr || (!data && len) || len > UINT32_MAX)
                return -EINVAL;
        entry_name(addr, name);
        memcpy(sub, name, 2);
        sub[2] = 0;
        if (faccessat(c->v1fd, name, F_OK, AT_EACCESS) == 0)
                return 0;

        memcpy(h.magic, CACHE_ENTRY_MAGIC, 8);
        h.ulen = htole32((uint32_t)len);
        h.xxh3 = htole64(chunk_xxh3(data, len));
        memcpy(h.addr, addr->b, DIGEST_LEN);

        gen = atomic_load(&c->full_gen);
        r = put(c, sub, name, &h, data, len);
        if ((r == -ENOSPC || r == -EDQUOT) && full_evict(c, gen))
                r = put(c, sub, name, &h, data, len);
        if (r < 0)
                return r;
        atomic_fetch_add(&c->puts, 1);

        since = atomic_fetch_add(&c->since_evict, len) + len;
        if (since >= c->bound / 16) {
                atomic_store(&c->since_evict, 0);
                (void)cache_evict(c, NULL);
        }
        return 0;
}

struct victim {
        int64_t mtime_sec;
        long mtime_nsec;
        uint64_t size;
        uint8_t sub;
        char hex[DIGEST_HEX_LEN + 1];
};

static int victim_cmp(const void *a, const void *b)
{
        const struct victim *x = a, *y = b;

        if (x->mtime_sec != y->mtime_sec)
                return x->mtime_sec < y->mtime_sec ? -1 : 1;
        if (x->mtime_nsec != y->mtime_nsec)
                return x->mtime_nsec < y->mtime_nsec ? -1 : 1;
        return strcmp(x->hex, y->hex);
}

/* scan(): every entry of CACHE/v1 into *ret (malloc'd), removing stale temp
 * files on the way; *ret_total gets the bytes the entries occupy. */
static int scan(struct cache *c, struct victim **ret, size_t *ret_n, uint64_t *ret_total)
{
        _cleanup_(freep) struct victim *v = NULL;
        size_t n = 0, cap = 0;
        uint64_t total = 0;
        time_t now = time(NULL);

        for (unsigned s = 0; s < 256; s++) {
                char sub[3];
                struct dirent *de;
                DIR *d;
                int fd;

                snprintf(sub, sizeof sub, "%02x", s);
                fd = openat(c->v1fd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (fd < 0) {
                        if (errno == ENOENT)
                                continue;
                        return -errno;
                }
                d = fdopendir(fd);
                if (!d) {
                        close(fd);
                        return -errno;
                }
                while ((de = readdir(d))) {
                        struct stat st;

                        if (de->d_name[0] == '.') {
                                if (strncmp(de->d_name, ".tmp-", 5) == 0 &&
                                    fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                                    now - st.st_mtim.tv_sec > CACHE_TMP_STALE_SEC)
                                        (void)unlinkat(fd, de->d_name, 0);
                                continue;
                        }
                        if (strlen(de->d_name) != DIGEST_HEX_LEN ||
                            fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                                continue;
                        if (n == cap) {
                                size_t ncap = cap ? cap * 2 : 1024;
                                struct victim *nv = realloc(v, ncap * sizeof *v);
                                if (!nv) {
                                        closedir(d);
                                        return -ENOMEM;
                                }
                                v = nv;
                                cap = ncap;
                        }
                        v[n] = (struct victim){
                                .mtime_sec = st.st_mtim.tv_sec,
                                .mtime_nsec = st.st_mtim.tv_nsec,
                                .size = (uint64_t)st.st_size,
                                .sub = (uint8_t)s,
                        };
                        memcpy(v[n].hex, de->d_name, DIGEST_HEX_LEN + 1);
                        total += v[n].size;
                        n++;
                }
                closedir(d);
        }
        *ret = TAKE_PTR(v);
        *ret_n = n;
        *ret_total = total;
        return 0;
}

int cache_evict(struct cache *c, uint64_t *ret_bytes)
{
        if (!c)
                return -EINVAL;
        return evict(c, false, ret_bytes);
}

/* evict(): down to 90% of the bound if above it; full: down to 90% of what
 * the cache holds, wherever that is. */
static int evict(struct cache *c, bool full, uint64_t *ret_bytes)
{
        _cleanup_(freep) struct victim *v = NULL;
        uint64_t total = 0, target;
        size_t n = 0;
        int r;

        if (pthread_mutex_trylock(&c->evict_lock) != 0)
                return 0;
        if (flock(c->lockfd, LOCK_EX | LOCK_NB) < 0) {
                r = errno == EWOULDBLOCK ? 0 : -errno;
                pthread_mutex_unlock(&c->evict_lock);
                return r;
        }
        r = scan(c, &v, &n, &total);
        if (r < 0)
                goto fail;
        if (total > c->bound || (full && total > 0)) {
                target = MIN(total, c->bound) / 10 * 9;
                qsort(v, n, sizeof *v, victim_cmp);
                for (size_t i = 0; i < n && total > target; i++) {
                        char name[3 + DIGEST_HEX_LEN + 1];

                        snprintf(name, sizeof name, "%02x/%s", v[i].sub, v[i].hex);
                        if (unlinkat(c->v1fd, name, 0) < 0)
                                continue;
                        total -= v[i].size;
                        atomic_fetch_add(&c->evictions, 1);
                        atomic_fetch_add(&c->evicted_bytes, v[i].size);
                }
        }
        if (ret_bytes)
                *ret_bytes = total;
        r = 1;
fail:
        (void)flock(c->lockfd, LOCK_UN);
        pthread_mutex_unlock(&c->evict_lock);
        return r;
}
