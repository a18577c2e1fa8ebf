/* benchio.c — precise timers for the stasis read/write benchmarks.
 *
 * Owns: the timed I/O loops of the resume, read-path and registry cases, so
 * that a figure of a few milliseconds is not swamped by starting date(1),
 * head(1) or tar(1). Every command prints one line of numbers on stdout;
 * times are wall nanoseconds from CLOCK_MONOTONIC. Single-threaded; libc only.
 * bench/run.sh builds it (cc -O2) into the work dir.
 *
 *   benchio run CMD [ARG...]   fork+exec CMD, wait: "NS EXIT_STATUS"
 *                              (stdout of CMD goes to stderr)
 *   benchio first FILE [OFF]   open FILE and pread one byte at OFF (default 0):
 *                              "NS" (open + lookups of its path + the read)
 *   benchio read PATH          read every regular file under PATH (or PATH
 *                              itself) in 1 MiB reads, directory order:
 *                              "BYTES NS FILES"
 *   benchio readlist DIR       read the files named on stdin (paths relative
 *                              to DIR, each ended by a NUL, as find -print0
 *                              writes them), in that order, in 1 MiB reads:
 *                              "BYTES NS FILES" (the list is read before the
 *                              clock starts)
 *   benchio stat PATH          lstat every entry under PATH: "ENTRIES NS"
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static char *buf;
static uint64_t n_bytes, n_files, n_entries;
static int failed;

static int read_one(const char *path)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        ssize_t r;

        if (fd < 0) {
                fprintf(stderr, "benchio: open %s: %s\n", path, strerror(errno));
                failed = 1;
                return 0;
        }
        while ((r = read(fd, buf, 1 << 20)) > 0)
                n_bytes += (uint64_t)r;
        if (r < 0) {
                fprintf(stderr, "benchio: read %s: %s\n", path, strerror(errno));
                failed = 1;
        }
        close(fd);
        n_files++;
        return 0;
}

static int on_read(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
        (void)ftw;
        if (type == FTW_F && S_ISREG(st->st_mode))
                return read_one(path);
        return 0;
}

static int on_stat(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
        (void)path, (void)st, (void)type, (void)ftw;
        n_entries++;
        return 0;
}

int main(int argc, char **argv)
{
        uint64_t t0, t1;

        if (argc >= 3 && strcmp(argv[1], "run") == 0) {
                int status;
                pid_t pid;

                t0 = now_ns();
                pid = fork();
                if (pid < 0)
                        return perror("benchio: fork"), 1;
                if (pid == 0) {
                        dup2(2, 1);
                        execvp(argv[2], argv + 2);
                        fprintf(stderr, "benchio: exec %s: %s\n", argv[2], strerror(errno));
                        _exit(127);
                }
                if (waitpid(pid, &status, 0) < 0)
                        return perror("benchio: waitpid"), 1;
                t1 = now_ns();
                printf("%" PRIu64 " %d\n", t1 - t0, WIFEXITED(status) ? WEXITSTATUS(status) : 128);
                return 0;
        }
        if ((argc == 3 || argc == 4) && strcmp(argv[1], "first") == 0) {
                char c;
                off_t off = argc == 4 ? (off_t)strtoll(argv[3], NULL, 10) : 0;
                int fd;
                ssize_t r;

                t0 = now_ns();
                fd = open(argv[2], O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        return fprintf(stderr, "benchio: open %s: %s\n", argv[2], strerror(errno)), 1;
                r = pread(fd, &c, 1, off);
                t1 = now_ns();
                close(fd);
                if (r != 1)
                        return fprintf(stderr, "benchio: read %s: %s\n", argv[2], r < 0 ? strerror(errno) : "short"), 1;
                printf("%" PRIu64 "\n", t1 - t0);
                return 0;
        }
        if (argc == 3 && strcmp(argv[1], "read") == 0) {
                struct stat st;

                buf = malloc(1 << 20);
                if (!buf)
                        return 1;
                t0 = now_ns();
                if (lstat(argv[2], &st) == 0 && S_ISREG(st.st_mode))
                        read_one(argv[2]);
                else if (nftw(argv[2], on_read, 64, FTW_PHYS) != 0)
                        return fprintf(stderr, "benchio: walk %s: %s\n", argv[2], strerror(errno)), 1;
                t1 = now_ns();
                printf("%" PRIu64 " %" PRIu64 " %" PRIu64 "\n", n_bytes, t1 - t0, n_files);
                free(buf);
                return failed;
        }
        if (argc == 3 && strcmp(argv[1], "readlist") == 0) {
                char **paths = NULL, *line = NULL;
                size_t n = 0, cap = 0, len = 0;
                ssize_t r;

                buf = malloc(1 << 20);
                if (!buf)
                        return 1;
                while ((r = getdelim(&line, &len, '\0', stdin)) > 0) {
                        char *path;

                        if (line[r - 1] == '\0')
                                r--;
                        if (r == 0)
                                continue;
                        if (n == cap) {
                                char **p = realloc(paths, (cap = cap ? 2 * cap : 64) * sizeof(*paths));

                                if (!p)
                                        return 1;
                                paths = p;
                        }
                        if (asprintf(&path, "%s/%.*s", argv[2], (int)r, line) < 0)
                                return 1;
                        paths[n++] = path;
                }
                free(line);
                t0 = now_ns();
                for (size_t i = 0; i < n; i++)
                        read_one(paths[i]);
                t1 = now_ns();
                printf("%" PRIu64 " %" PRIu64 " %" PRIu64 "\n", n_bytes, t1 - t0, n_files);
                for (size_t i = 0; i < n; i++)
                        free(paths[i]);
                free(paths);
                free(buf);
                return failed;
        }
        if (argc == 3 && strcmp(argv[1], "stat") == 0) {
                t0 = now_ns();
                if (nftw(argv[2], on_stat, 64, FTW_PHYS) != 0)
                        return fprintf(stderr, "benchio: walk %s: %s\n", argv[2], strerror(errno)), 1;
                t1 = now_ns();
                printf("%" PRIu64 " %" PRIu64 "\n", n_entries, t1 - t0);
                return 0;
        }
        fprintf(stderr, "usage: benchio run CMD... | first FILE [OFF] | read PATH | readlist DIR <LIST | stat PATH\n");
        return 2;
}
