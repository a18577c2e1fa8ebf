/* fuzz-regress-main.c — a main() for libFuzzer targets in non-fuzzing builds.
 * Runs LLVMFuzzerTestOneInput() once over every file named on the command
 * line, or every regular file in a named directory (one level), so that the
 * committed seed corpus and any crash reproducers added to it are regression
 * tests under gcc and ASan, without libFuzzer. Exits 0 after running them all;
 * a target that finds a bug aborts (or trips a sanitizer) by itself.
 * Owns nothing; single-threaded. Part of the build plumbing, not of stasis. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int run_file(int dirfd, const char *name, const char *shown)
{
        int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                fprintf(stderr, "fuzz-regress: open %s: %s\n", shown, strerror(errno));
                return -1;
        }
        struct stat st;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                (void)close(fd);
                return 0; /* not a regular file: nothing to run */
        }
        size_t size = (size_t)st.st_size;
        uint8_t *buf = malloc(size ? size : 1);
        if (!buf) {
                (void)close(fd);
                fprintf(stderr, "fuzz-regress: out of memory for %s\n", shown);
                return -1;
        }
        size_t got = 0;
        while (got < size) {
                ssize_t n = read(fd, buf + got, size - got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                got += (size_t)n;
        }
        (void)close(fd);
        /* A copy of exactly the input's length, so ASan sees reads past the end. */
        uint8_t *exact = malloc(got ? got : 1);
        if (!exact) {
                free(buf);
                fprintf(stderr, "fuzz-regress: out of memory for %s\n", shown);
                return -1;
        }
        if (got)
                memcpy(exact, buf, got);
        free(buf);
        (void)LLVMFuzzerTestOneInput(got ? exact : NULL, got);
        free(exact);
        return 1;
}

int main(int argc, char **argv)
{
        unsigned ran = 0;
        int failed = 0;

        if (LLVMFuzzerInitialize)
                (void)LLVMFuzzerInitialize(&argc, &argv);

        for (int i = 1; i < argc; i++) {
                struct stat st;
                if (stat(argv[i], &st) < 0) {
                        fprintf(stderr, "fuzz-regress: %s: %s\n", argv[i], strerror(errno));
                        failed = 1;
                        continue;
                }
                if (!S_ISDIR(st.st_mode)) {
                        int r = run_file(AT_FDCWD, argv[i], argv[i]);
                        if (r < 0)
                                failed = 1;
                        ran += r > 0;
                        continue;
                }
                DIR *d = opendir(argv[i]);
                if (!d) {
                        fprintf(stderr, "fuzz-regress: %s: %s\n", argv[i], strerror(errno));
                        failed = 1;
                        continue;
                }
                struct dirent *de;
                while ((de = readdir(d))) {
                        if (de->d_name[0] == '.')
                                continue;
                        int r = run_file(dirfd(d), de->d_name, de->d_name);
                        if (r < 0)
                                failed = 1;
                        ran += r > 0;
                }
                (void)closedir(d);
        }
        printf("fuzz-regress: ran %u input(s)\n", ran);
        return failed;
}
