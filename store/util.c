/* util.c — see util.h. */
#include "util.h"

#include <dirent.h>
#include <dlfcn.h>

#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>

static int log_max_level = LOG_LVL_WARNING; /* set once at program start */
static const char *log_prefix = "stasis: ";
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int log_copy_fd = -1; /* under log_lock */

void log_set_max_level(int level) { log_max_level = level; }
int log_get_max_level(void) { return log_max_level; }
void log_set_prefix(const char *prefix) { log_prefix = prefix ? prefix : ""; }

int log_internal(int level, int err, const char *fmt, ...)
{
        char msg[2048], line[2200];
        va_list ap;
        int e = abs(err), n;
        (void)level;

        errno = e;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        n = snprintf(line, sizeof line, "%s%s\n", log_prefix, msg);
        if (n >= (int)sizeof line) { /* cut short: still one whole line */
                n = (int)sizeof line - 1;
                line[n - 1] = '\n';
        }
        /* One write per sink, so concurrent lines never interleave. */
        pthread_mutex_lock(&log_lock);
        (void)!write(STDERR_FILENO, line, (size_t)n);
        if (log_copy_fd >= 0)
                (void)!write(log_copy_fd, line, (size_t)n);
        pthread_mutex_unlock(&log_lock);
        errno = e;
        return -e;
}

void log_copy_to(int fd)
{
        pthread_mutex_lock(&log_lock);
        log_copy_fd = fd;
        pthread_mutex_unlock(&log_lock);
}

int log_move_to(int fd)
{
        int r = 0;

        pthread_mutex_lock(&log_lock);
        if (dup2(fd, STDERR_FILENO) < 0)
                r = -errno;
        else
                log_copy_fd = -1;
        pthread_mutex_unlock(&log_lock);
        return r;
}

int array_grow(void **p, size_t *alloc, size_t need, size_t size)
{
        size_t n;
        void *q;

        if (need <= *alloc)
                return 0;
        n = MAX(*alloc * 2, MAX(need, (size_t)16));
        q = reallocarray(*p, n, size);
        if (!q)
                return -ENOMEM;
        *p = q;
        *alloc = n;
        return 0;
}

static uint64_t clock_ns(clockid_t id)
{
        struct timespec ts;
        clock_gettime(id, &ts);
        return (uint64_t)ts.tv_sec * NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}
uint64_t now_ns(void) { return clock_ns(CLOCK_MONOTONIC); }
uint64_t cpu_ns(void) { return clock_ns(CLOCK_PROCESS_CPUTIME_ID); }

char *format_rfc3339(int64_t sec, char buf[static 32])
{
        time_t t = (time_t)sec;
        struct tm tm;
        if (!gmtime_r(&t, &tm) || !strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
                snprintf(buf, 32, "1970-01-01T00:00:00Z");
        return buf;
}

char *format_bytes(uint64_t n, char buf[static 32])
{
        static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
        double v = (double)n;
        size_t u = 0;
        while (v >= 1024 && u + 1 < ELEMENTSOF(units)) {
                v /= 1024;
                u++;
        }
        if (u == 0)
                snprintf(buf, 32, "%" PRIu64 " B", n);
        else
                snprintf(buf, 32, "%.1f %s", v, units[u]);
        return buf;
}

int parse_size(const char *s, uint64_t *ret)
{
        char *end;
        unsigned long long v;
        unsigned shift = 0;

        if (!s || !ret || *s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno)
                return -EINVAL;
        switch (*end) {
        case '\0': break;
        case 'k': case 'K': shift = 10; end++; break;
        case 'm': case 'M': shift = 20; end++; break;
        case 'g': case 'G': shift = 30; end++; break;
        case 't': case 'T': shift = 40; end++; break;
        default: return -EINVAL;
        }
        if (*end == 'i' || *end == 'I') /* "4MiB" */
                end++;
        if (*end == 'b' || *end == 'B')
                end++;
        if (*end)
                return -EINVAL;
        if (shift && v > (UINT64_MAX >> shift))
                return -EINVAL;
        *ret = (uint64_t)v << shift;
        return 0;
}

/* read_loop(): read() (off < 0) or pread() at off until len bytes or end
 * of file; the count, or -errno. */
static ssize_t read_loop(int fd, void *buf, size_t len, int64_t off)
{
        size_t done = 0;
        while (done < len) {
                ssize_t n = off < 0 ? read(fd, (char *)buf + done, len - done)
                                    : pread(fd, (char *)buf + done, len - done, (off_t)(off + (int64_t)done));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                done += (size_t)n;
        }
        return (ssize_t)done;
}

ssize_t pread_full(int fd, void *buf, size_t len, uint64_t off)
{
        if (off > INT64_MAX)
                return -EINVAL;
        return read_loop(fd, buf, len, (int64_t)off);
}

ssize_t read_full(int fd, void *buf, size_t len)
{
        return read_loop(fd, buf, len, -1);
}

int pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
        size_t done = 0;
        while (done < len) {
                ssize_t n = pwrite(fd, (const char *)buf + done, len - done, (off_t)(off + done));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -EIO;
                done += (size_t)n;
        }
        return 0;
}

int write_full(int fd, const void *buf, size_t len)
{
        size_t done = 0;
        while (done < len) {
                ssize_t n = write(fd, (const char *)buf + done, len - done);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -EIO;
                done += (size_t)n;
        }
        return 0;
}

int read_file_at(int dirfd, const char *path, size_t max, char **ret, size_t *ret_len)
{
        _cleanup_(closep) int fd = -1;
        _cleanup_(freep) char *buf = NULL;
        struct stat st;
        ssize_t n;

        fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EINVAL;
        if ((uint64_t)st.st_size > max)
                return -EFBIG;
        buf = malloc((size_t)st.st_size + 1);
        if (!buf)
                return -ENOMEM;
        n = pread_full(fd, buf, (size_t)st.st_size, 0);
        if (n < 0)
                return (int)n;
        buf[n] = '\0';
        if (ret_len)
                *ret_len = (size_t)n;
        *ret = TAKE_PTR(buf);
        return 0;
}

int open_beneath(int dirfd, const char *path, int flags)
{
        struct open_how how = {
                .flags = (uint64_t)(unsigned)flags,
                .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);

        if (fd < 0 && errno == ENOSYS)
                fd = openat(dirfd, path, flags);
        return fd < 0 ? -errno : (int)fd;
}

int fsync_dir_at(int dirfd, const char *dir)
{
        _cleanup_(closep) int fd = openat(dirfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fsync(fd) < 0)
                return -errno;
        return 0;
}

int write_replace_at(int dirfd, const char *path, const void *data, size_t len, mode_t mode, bool durable)
{
        _cleanup_(freep) char *tmp = NULL;
        _cleanup_(closep) int fd = -1;
        const char *slash;
        int r;

        if (asprintf(&tmp, "%s.tmp", path) < 0)
                return -ENOMEM;
        fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        if (fd < 0)
                return -errno;
        r = write_full(fd, data, len);
        if (r >= 0 && durable && fsync(fd) < 0)
                r = -errno;
        if (r >= 0 && renameat(dirfd, tmp, dirfd, path) < 0)
                r = -errno;
        if (r < 0) {
                (void)unlinkat(dirfd, tmp, 0);
                return r;
        }
        if (!durable)
                return 0;
        slash = strrchr(path, '/');
        if (!slash)
                return fsync_dir_at(dirfd, ".");
        tmp[slash == path ? 1 : slash - path] = '\0'; /* the directory part */
        return fsync_dir_at(dirfd, tmp);
}

_Static_assert(sizeof(void *) == sizeof(void (*)(void)), "dlsym(): function pointers are void *");

static int dl_load(const char *soname, const char *package, const struct dl_sym *syms, size_t n, char *err,
                   size_t err_len)
{
        void *lib = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
        const char *why;

        if (!lib) {
                why = dlerror();
                snprintf(err, err_len, "cannot load %s (Debian package %s): %s", soname, package,
                         why ? why : "not found");
                return -ELIBACC;
        }
        for (size_t i = 0; i < n; i++) {
                void *p;

                (void)dlerror(); /* clear: dlerror() after dlsym() must be dlsym()'s */
                p = dlsym(lib, syms[i].name);
                if (!p) {
                        why = dlerror();
                        snprintf(err, err_len, "%s has no %s: %s", soname, syms[i].name, why ? why : "not found");
                        (void)dlclose(lib);
                        return -ELIBBAD;
                }
                /* POSIX: dlsym()'s void * holds a function pointer (dlsym(3)) */
                memcpy(syms[i].slot, &p, sizeof p);
        }
        return 0;
}

int dl_lib_load(struct dl_lib *lib, const struct dl_sym *syms, size_t n)
{
        int r;

        pthread_mutex_lock(&lib->lock);
        if (!lib->tried) {
                lib->r = dl_load(lib->soname, lib->package, syms, n, lib->err, sizeof lib->err);
                lib->tried = true;
        }
        r = lib->r;
        pthread_mutex_unlock(&lib->lock);
        return r;
}

/* The device number names the mount's connection under
 * /sys/fs/fuse/connections; reading mountinfo never touches the mount
 * itself, which may hang. The mount point field is unescaped (\ooo). */
int stasis_mount_dev(const char *mp, dev_t *ret)
{
        FILE *f = fopen("/proc/self/mountinfo", "re");
        char *line = NULL;
        size_t cap = 0;
        int r = -ENOENT;

        if (!f)
                return -errno;
        while (r == -ENOENT && getline(&line, &cap, f) > 0) {
                unsigned long maj, min;
                char point[PATH_MAX], *p = line, *w, *sep, *end;
                size_t n = 0;
                /* id parent MAJ:MIN root mountpoint ... - fstype ... */
                for (int i = 0; i < 2 && p; i++)
                        p = strchr(p, ' ') ? strchr(p, ' ') + 1 : NULL;
                if (!p)
                        continue;
                maj = strtoul(p, &end, 10);
                if (*end != ':')
                        continue;
                min = strtoul(end + 1, &end, 10);
                if (*end != ' ')
                        continue;
                for (int i = 0; i < 2 && p; i++)
                        p = strchr(p, ' ') ? strchr(p, ' ') + 1 : NULL;
                if (!p)
                        continue;
                for (w = p; *w && *w != ' ' && n < sizeof point - 1; w++) {
                        if (w[0] == '\\' && w[1] >= '0' && w[1] <= '3' && w[2] && w[3]) {
                                point[n++] = (char)((w[1] - '0') * 64 + (w[2] - '0') * 8 + (w[3] - '0'));
                                w += 3;
                        } else
                                point[n++] = *w;
                }
                point[n] = 0;
                sep = strstr(w, " - ");
                if (sep && strcmp(point, mp) == 0 && strncmp(sep + 3, "fuse.stasis ", 12) == 0) {
                        *ret = makedev((unsigned)maj, (unsigned)min);
                        r = 0;
                }
        }
        free(line);
        fclose(f);
        return r;
}

/* proc_read(): /proc/PID/WHAT as a string (what fits in buf); -errno. */
static int proc_read(pid_t pid, const char *what, char buf[static 2048])
{
        char p[64];
        _cleanup_(closep) int fd = -1;
        ssize_t n;

        snprintf(p, sizeof p, "/proc/%ld/%s", (long)pid, what);
        fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        n = read_full(fd, buf, 2047);
        if (n < 0)
                return (int)n;
        buf[n] = 0;
        return 0;
}

/* proc_threads_left(): whether threads of pid other than its leader are
 * still there. A multithreaded process's leader turns zombie as soon as it
 * has exited itself, while the others may still be exiting (finishing a
 * request), with the descriptors they share, and the locks on them, open. */
static bool proc_threads_left(pid_t pid)
{
        char path[64];
        struct dirent *de;
        unsigned n = 0;
        DIR *d;

        snprintf(path, sizeof path, "/proc/%ld/task", (long)pid);
        d = opendir(path);
        if (!d)
                return false;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.' && strtol(de->d_name, NULL, 10) != (long)pid)
                        n++;
        closedir(d);
        return n > 0;
}

enum proc_state proc_state(pid_t pid, const char *comm)
{
        char buf[2048], name[64], *rp;
        unsigned long flags;
        int r;

        if (pid <= 0 || (kill(pid, 0) < 0 && errno == ESRCH))
                return PROC_GONE;
        r = proc_read(pid, "stat", buf);
        if (r == -ENOENT || r == -ESRCH)
                return PROC_GONE;
        if (r < 0)
                return PROC_RUNNING;
        /* "pid (comm) state ppid pgrp session tty_nr tpgid flags ..." */
        rp = strrchr(buf, ')');
        if (!rp || rp[1] != ' ')
                return PROC_RUNNING;
        if (comm) { /* another program's zombie is none of ours either */
                snprintf(name, sizeof name, "(%s)", comm);
                if (!strstr(buf, name))
                        return PROC_GONE;
        }
        if (rp[2] == 'Z' || rp[2] == 'X')
                return proc_threads_left(pid) ? PROC_EXITING : PROC_GONE;
        rp += 2;
        for (int i = 0; i < 6 && rp; i++)
                rp = strchr(rp, ' ') ? strchr(rp, ' ') + 1 : NULL;
        flags = rp ? strtoul(rp, NULL, 10) : 0;
        if (flags & 0x4 /* PF_EXITING */)
                return PROC_EXITING;
        if (proc_read(pid, "status", buf) < 0)
                return PROC_RUNNING;
        for (const char *k = buf; (k = strstr(k, "Pnd:\t")); k += 5)
                if (strtoull(k + 5, NULL, 16) & (1ull << (SIGKILL - 1)))
                        return PROC_EXITING;
        return PROC_RUNNING;
}

bool mem_is_zero(const void *p, size_t n)
{
        const uint8_t *b = p;

        return n == 0 || (b[0] == 0 && memcmp(b, b + 1, n - 1) == 0);
}
