/* util.h — small helpers shared by every stasis module: cleanup attributes,
 * -errno logging, monotonic time, human-readable sizes.
 * Thread-safe. The only state is the log level, set once at program start.
 * Owns nothing else and does no I/O besides writing log lines to stderr. */
#ifndef STASIS_UTIL_H
#define STASIS_UTIL_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _unused_ __attribute__((unused))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define DIV_ROUND_UP(x, y) (((x) + (y) - 1) / (y))

#define container_of(ptr, type, member) \
        ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* Hand ownership on: `*ret = TAKE_PTR(p);` leaves p NULL so cleanup skips it. */
#define TAKE_PTR(p)                          \
        ({                                   \
                __typeof__(p) _tp_ = (p);    \
                (p) = NULL;                  \
                _tp_;                        \
        })
#define TAKE_FD(fd)                          \
        ({                                   \
                int _tfd_ = (fd);            \
                (fd) = -1;                   \
                _tfd_;                       \
        })

static inline void freep(void *p) { free(*(void **)p); }
static inline void closep(int *fd)
{
        if (*fd >= 0) {
                int saved = errno;
                (void)close(*fd);
                errno = saved;
        }
}

/* Logging. Levels follow syslog: lower is more severe. The log_*_errno()
 * forms set errno from their argument first, so "%m" names that error, and
 * they return -abs(err) so a caller can log and fail in one statement. */
enum {
        LOG_LVL_ERR = 3,
        LOG_LVL_WARNING = 4,
        LOG_LVL_INFO = 6,
        LOG_LVL_DEBUG = 7,
};

void log_set_max_level(int level);
int log_get_max_level(void);
/* log_set_prefix(): text written before every line ("stasis: " by default). */
void log_set_prefix(const char *prefix);
int log_internal(int level, int err, const char *fmt, ...) _printf_(3, 4);
/* log_copy_to(): every line also goes to fd, until log_move_to(): a daemon
 * that still reports to its caller's stderr keeps its own log complete. */
void log_copy_to(int fd);
/* log_move_to(): stderr becomes fd and the copy stops, between two lines:
 * no line is lost or written twice. -errno if dup2() fails (nothing moved). */
int log_move_to(int fd);

/* Tells clang's static analyzer that the *_errno() forms return < 0, so
 * `return log_error_errno(r, ...)` is never taken for success. No code. */
#ifdef __clang_analyzer__
#define LOG_ANALYZER_ASSUME_NEG_(r) do { if ((r) >= 0) __builtin_unreachable(); } while (0)
#else
#define LOG_ANALYZER_ASSUME_NEG_(r) do { } while (0)
#endif
#define log_full_errno(level, err, ...)                                          \
        ({                                                                       \
                int _lv_ = (level), _e_ = (err);                                 \
                int _r_ = log_get_max_level() >= _lv_ ? log_internal(_lv_, _e_, __VA_ARGS__) \
                                                      : -abs(_e_);               \
                LOG_ANALYZER_ASSUME_NEG_(_r_);                                   \
                _r_;                                                             \
        })
#define log_error_errno(err, ...) log_full_errno(LOG_LVL_ERR, err, __VA_ARGS__)
#define log_warning_errno(err, ...) log_full_errno(LOG_LVL_WARNING, err, __VA_ARGS__)
#define log_info_errno(err, ...) log_full_errno(LOG_LVL_INFO, err, __VA_ARGS__)
#define log_debug_errno(err, ...) log_full_errno(LOG_LVL_DEBUG, err, __VA_ARGS__)
#define log_error(...) ((void)log_full_errno(LOG_LVL_ERR, 0, __VA_ARGS__))
#define log_warning(...) ((void)log_full_errno(LOG_LVL_WARNING, 0, __VA_ARGS__))
#define log_info(...) ((void)log_full_errno(LOG_LVL_INFO, 0, __VA_ARGS__))
#define log_debug(...) ((void)log_full_errno(LOG_LVL_DEBUG, 0, __VA_ARGS__))

/* array_grow(): make *p (an array of elements of size bytes, *alloc of them
 * allocated) hold at least need elements, growing geometrically. 0 or -ENOMEM;
 * *p and *alloc are untouched on failure. */
int array_grow(void **p, size_t *alloc, size_t need, size_t size);

/* A library a program needs only sometimes, loaded on first use instead of
 * linked (docs/dependencies.md): libcurl, libmicrohttpd, libarchive. Its
 * functions are called through a table of pointers; struct dl_sym names
 * one slot of it (the storage of a function pointer) and its symbol.
 *
 * dl_lib_load(): the first call dlopens lib->soname and fills every
 * syms[i].slot; it and every later call return that result: 0, or
 * -ELIBACC (not loadable) / -ELIBBAD (a symbol missing: the library closed
 * again), with lib->err saying why (naming the Debian package). The slots
 * are written only by that first call, under lib->lock, so a caller that got
 * 0 reads them without a lock. The library stays loaded for the life of
 * the process. */
struct dl_sym {
        const char *name;
        void *slot;
};
struct dl_lib {
        const char *soname, *package;
        pthread_mutex_t lock;
        bool tried; /* lock */
        int r;      /* set with tried */
        char err[512];
};
#define DL_LIB(so, pkg) { .soname = (so), .package = (pkg), .lock = PTHREAD_MUTEX_INITIALIZER }
int dl_lib_load(struct dl_lib *lib, const struct dl_sym *syms, size_t n);

/* Time. */
#define NSEC_PER_SEC 1000000000ULL
uint64_t now_ns(void);           /* CLOCK_MONOTONIC */
uint64_t cpu_ns(void);           /* CLOCK_PROCESS_CPUTIME_ID */
/* format_rfc3339(): UTC "YYYY-MM-DDTHH:MM:SSZ" of a CLOCK_REALTIME second count. */
char *format_rfc3339(int64_t sec, char buf[static 32]);

/* format_bytes(): "1.5 MiB"; returns buf. */
char *format_bytes(uint64_t n, char buf[static 32]);
/* parse_size(): "4096", "256K", "4M", "1G" (binary units); -EINVAL on junk or overflow. */
int parse_size(const char *s, uint64_t *ret);

/* Full-length I/O that retries on EINTR and short counts.
 * read_full() returns bytes read (less than len only at end of file) or -errno. */
ssize_t pread_full(int fd, void *buf, size_t len, uint64_t off);
ssize_t read_full(int fd, void *buf, size_t len);
int pwrite_full(int fd, const void *buf, size_t len, uint64_t off);
int write_full(int fd, const void *buf, size_t len);
/* read_file_at(): a whole (small) file into a NUL-terminated malloc'd buffer,
 * refusing anything over max bytes with -EFBIG. */
int read_file_at(int dirfd, const char *path, size_t max, char **ret, size_t *ret_len);

/* open_beneath(): openat() of a relative path that must resolve inside
 * dirfd without following any symlink on the way (openat2 with
 * RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), so a tree that changes under us
 * cannot redirect a read outside it. Falls back to plain openat() on kernels
 * without openat2. Returns an fd or -errno. */
int open_beneath(int dirfd, const char *path, int flags);
/* stasis_mount_dev(): the device number (MAJOR:MINOR in mountinfo) of the
 * stasis FUSE mount on mp (an absolute, resolved path), from
 * /proc/self/mountinfo without touching the mount; -ENOENT if none. */
int stasis_mount_dev(const char *mp, dev_t *ret);

/* fsync_dir_at(): fsync the directory that holds path (relative to dirfd). */
int fsync_dir_at(int dirfd, const char *dir);
/* write_replace_at(): path (relative to dirfd, or absolute) holds data whole
 * or not at all, even after a kill -9: written to "<path>.tmp", then renamed
 * over it. One writer per path: the temporary name is fixed, so a crash in
 * between leaves that one file, which the next write replaces. durable: the
 * file is fsync'd before the rename and its directory after, so a host crash
 * keeps it too. 0 or -errno; the temporary file never outlives a failure. */
int write_replace_at(int dirfd, const char *path, const void *data, size_t len, mode_t mode, bool durable);

/* proc_state(): what /proc says of pid. PROC_GONE: no such process, a
 * zombie with no thread left, or (comm non-NULL) another program than comm;
 * PROC_EXITING: killed (SIGKILL pending) or exiting (PF_EXITING, or a
 * zombie leader whose other threads are still exiting, with its files and
 * their locks open), gone in a moment (a stasisd killed a moment ago may
 * take a while: its threads finish their requests first); PROC_RUNNING
 * otherwise, also when /proc cannot tell. */
enum proc_state { PROC_GONE, PROC_EXITING, PROC_RUNNING };
enum proc_state proc_state(pid_t pid, const char *comm);

/* mem_is_zero(): every one of the n bytes at p is 0. */
bool mem_is_zero(const void *p, size_t n);

#endif
