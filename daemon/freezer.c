/* freezer.c — see freezer.h. */
#include "freezer.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store/util.h"

extern char **environ;

enum freezer_kind { FREEZER_CGROUP2, FREEZER_CGROUP1, FREEZER_RUNC };

struct freezer {
        enum freezer_kind kind; /* immutable */
        char arg[PATH_MAX];     /* the cgroup directory or the runc id; immutable */
        char spec[PATH_MAX + 8]; /* the label value; immutable */
        char marker[PATH_MAX];  /* "": none; immutable */
        pthread_mutex_t lock;
        bool frozen; /* we froze it and have not thawed it; lock */
};

static int write_str(const char *dir, const char *file, const char *s)
{
        char p[PATH_MAX + 64];
        _cleanup_(closep) int fd = -1;

        snprintf(p, sizeof p, "%s/%s", dir, file);
        fd = open(p, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        return write_full(fd, s, strlen(s));
}

static int read_str(const char *dir, const char *file, char *buf, size_t size)
{
        char p[PATH_MAX + 64];
        _cleanup_(closep) int fd = -1;
        ssize_t n;

        snprintf(p, sizeof p, "%s/%s", dir, file);
        fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        n = pread_full(fd, buf, size - 1, 0);
        if (n < 0)
                return (int)n;
        buf[n] = 0;
        return 0;
}

/* settled(): 1 once a v1 cgroup reports itself frozen (want) or thawed. */
static int settled(const struct freezer *f, bool want)
{
        char buf[512];
        int r;

        r = read_str(f->arg, "freezer.state", buf, sizeof buf);
        if (r < 0)
                return r;
        return strncmp(buf, want ? "FROZEN" : "THAWED", 6) == 0;
}

/* cgroup2_wait(): until cgroup.events says frozen 1 (want) or frozen 0.
 * The kernel notifies a change of it as POLLPRI to a reader that has read
 * it (kernfs), so this wakes when the cgroup settles, not on a timer (a
 * 1 ms sleep made the freeze take 1.1 ms when the tasks needed a moment). */
static int cgroup2_wait(const struct freezer *f, bool want, uint64_t deadline)
{
        char p[PATH_MAX + 64], buf[512];
        _cleanup_(closep) int fd = -1;

        snprintf(p, sizeof p, "%s/cgroup.events", f->arg);
        fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        for (;;) {
                ssize_t n = pread_full(fd, buf, sizeof buf - 1, 0);
                uint64_t now;

                if (n < 0)
                        return (int)n;
                buf[n] = 0;
                if (strstr(buf, want ? "frozen 1" : "frozen 0"))
                        return 0;
                now = now_ns();
                if (now > deadline)
                        return -ETIMEDOUT;
                /* at most 10 ms without a notification: read again anyway */
                if (poll(&(struct pollfd){ .fd = fd, .events = POLLPRI }, 1,
                         (int)MIN((deadline - now) / 1000000 + 1, 10)) < 0 && errno != EINTR)
                        return -errno;
        }
}

static int cgroup_set(const struct freezer *f, bool want)
{
        uint64_t deadline = now_ns() + FREEZER_TIMEOUT_NS;
        int r;

        if (f->kind == FREEZER_CGROUP2) {
                r = write_str(f->arg, "cgroup.freeze", want ? "1" : "0");
                return r < 0 ? r : cgroup2_wait(f, want, deadline);
        }
        r = write_str(f->arg, "freezer.state", want ? "FROZEN" : "THAWED");
        if (r < 0)
                return r;
        for (;;) {
                r = settled(f, want);
                if (r != 0)
                        return r < 0 ? r : 0;
                if (now_ns() > deadline)
                        return -ETIMEDOUT;
                /* v1 may need the state written again while it is FREEZING */
                if (want)
                        (void)write_str(f->arg, "freezer.state", "FROZEN");
                nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
        }
}

static int runc(const struct freezer *f, const char *verb)
{
        const char *bin = getenv("STASIS_RUNC");
        char *argv[] = { (char *)(bin && *bin ? bin : "runc"), (char *)verb, (char *)f->arg, NULL };
        pid_t pid;
        int status, r;

        r = posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ);
        if (r != 0)
                return -r;
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

/* marker_write(): the marker says "frozen by a daemon: SPEC". Plain write,
 * no fsync: it is for a daemon killed -9, and a host crash ends the
 * sandbox's freeze anyway. */
static int marker_write(const struct freezer *f)
{
        _cleanup_(closep) int fd = -1;
        char line[sizeof f->spec + 1];

        if (!f->marker[0])
                return 0;
        fd = open(f->marker, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        snprintf(line, sizeof line, "%s\n", f->spec);
        return write_full(fd, line, strlen(line));
}

static int set_locked(struct freezer *f, bool want)
{
        int r;

        if (f->frozen == want)
                return 0;
        if (want) {
                r = marker_write(f);
                if (r < 0) /* a full state dir: freeze all the same, without the net */
                        log_warning_errno(r, "freeze marker %s (a kill -9 of stasisd now would leave the sandbox frozen): %m",
                                          f->marker);
        }
        if (f->kind == FREEZER_RUNC)
                r = runc(f, want ? "pause" : "resume");
        else
                r = cgroup_set(f, want);
        if (r < 0 && want && f->kind != FREEZER_RUNC) /* do not leave it half frozen */
                (void)cgroup_set(f, false);
        if (r >= 0)
                f->frozen = want;
        if (!f->frozen && f->marker[0])
                (void)unlink(f->marker);
        return r;
}

int freezer_new(const char *spec, const char *marker, struct freezer **ret)
{
        struct freezer *f;
        char p[PATH_MAX + 64];
        enum freezer_kind kind;
        const char *arg;

        if (!spec || !ret)
                return -EINVAL;
        if (strncmp(spec, "cgroup:", 7) == 0 && spec[7] == '/') {
                arg = spec + 7;
                snprintf(p, sizeof p, "%s/cgroup.freeze", arg);
                if (access(p, F_OK) == 0)
                        kind = FREEZER_CGROUP2;
                else {
                        snprintf(p, sizeof p, "%s/freezer.state", arg);
                        if (access(p, F_OK) < 0)
                                return -ENOENT;
                        kind = FREEZER_CGROUP1;
                }
        } else if (strncmp(spec, "runc:", 5) == 0 && spec[5]) {
                arg = spec + 5;
                kind = FREEZER_RUNC;
        } else
                return -EINVAL;
        if (strlen(arg) >= sizeof f->arg || (marker && strlen(marker) >= sizeof f->marker))
                return -ENAMETOOLONG;
        f = calloc(1, sizeof *f);
        if (!f)
                return -ENOMEM;
        f->kind = kind;
        snprintf(f->arg, sizeof f->arg, "%s", arg);
        snprintf(f->spec, sizeof f->spec, "%s", spec);
        if (marker)
                snprintf(f->marker, sizeof f->marker, "%s", marker);
        pthread_mutex_init(&f->lock, NULL);
        *ret = f;
        return 0;
}

int freezer_thaw_marked(const char *marker)
{
        _cleanup_(freep) char *spec = NULL;
        struct freezer *f = NULL;
        int r;

        r = read_file_at(AT_FDCWD, marker, PATH_MAX + 8, &spec, NULL);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        spec[strcspn(spec, "\n")] = 0;
        r = freezer_new(spec, marker, &f);
        if (r == -ENOENT || r == -EINVAL) { /* its cgroup is gone (or no method): nothing to thaw */
                (void)unlink(marker);
                return 0;
        }
        if (r < 0)
                return r;
        f->frozen = true; /* by the daemon that wrote the marker */
        r = freezer_thaw(f);
        if (r >= 0)
                log_info("thawed %s, left frozen by a daemon that died", spec);
        pthread_mutex_destroy(&f->lock);
        free(f);
        return r;
}

struct freezer *freezer_free(struct freezer *f)
{
        if (!f)
                return NULL;
        (void)freezer_thaw(f);
        pthread_mutex_destroy(&f->lock);
        free(f);
        return NULL;
}

int freezer_freeze(struct freezer *f)
{
        int r;

        if (!f)
                return -EINVAL;
        pthread_mutex_lock(&f->lock);
        r = set_locked(f, true);
        pthread_mutex_unlock(&f->lock);
        return r;
}

int freezer_thaw(struct freezer *f)
{
        int r;

        if (!f)
                return -EINVAL;
        pthread_mutex_lock(&f->lock);
        r = set_locked(f, false);
        pthread_mutex_unlock(&f->lock);
        return r;
}

bool freezer_frozen(struct freezer *f)
{
        bool b;

        pthread_mutex_lock(&f->lock);
        b = f->frozen;
        pthread_mutex_unlock(&f->lock);
        return b;
}

const char *freezer_method(const struct freezer *f)
{
        return f->kind == FREEZER_CGROUP2 ? "cgroup2" : f->kind == FREEZER_CGROUP1 ? "cgroup1" : "runc";
}
