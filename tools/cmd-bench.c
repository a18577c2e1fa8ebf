/* cmd-bench.c — `stasis bench`: the operator's benchmark of this node.
 *
 * Measures, on the operator's own DIR and store, what a pool sizing decision
 * needs: a full commit (time, throughput, bytes new), for an oci:// store the
 * push, then a resume: mount-ready time (an empty node cache; `stasis mount`
 * returns only when reads work), the first byte of one file, a cold read of
 * every file (every chunk comes from the store) and a warm read right after,
 * and stasisd's peak RSS; then a checkpoint after a synthetic change (a new
 * file of BENCH_CHANGE incompressible bytes, fsynced): its time, stall and
 * new bytes. Its snapshot is untagged, so `stasis gc` removes it; for an
 * oci:// store it is skipped (it would push to the operator's registry).
 *
 * It drives this same binary (/proc/self/exe) as child processes, exactly as
 * an operator would (commit, push, mount, umount), so the figures include
 * what the commands cost, and it keeps nothing but the committed snapshot:
 * the cache, state dir and mountpoint live in a private temporary directory
 * (under $TMPDIR, else /var/tmp) removed at the end. An oci:// store is fed
 * through a temporary local store and `stasis push`. Running as root, the
 * guest page cache is dropped before the commit and the mount (only the
 * guest's: a virtual disk may still be cached by the host).
 *
 * Output: progress lines on stderr when it is a TTY; a table on stdout, or
 * with --json one JSON document. Single-threaded. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"

#define BENCH_BUF (1u << 20)
/* The synthetic change the checkpoint takes. */
#define BENCH_CHANGE (16u << 20)

struct walk {
        char *buf;
        uint64_t files, bytes, dirs, others;
        int err;        /* first error, -errno */
        char first[PATH_MAX]; /* first non-empty regular file (relative) */
};

struct bench {
        bool tty;
        char tmp[256]; /* $TMPDIR/stasis-bench.XXXXXX: short, so paths under it fit */
        char exe[PATH_MAX];
        int step, steps;
};

static void progress(struct bench *b, const char *what)
{
        b->step++;
        if (b->tty)
                fprintf(stderr, "stasis: bench: [%d/%d] %s...\n", b->step, b->steps, what);
}

static int walk_dir(struct walk *w, int dfd, const char *rel, bool read_data)
{
        DIR *d = fdopendir(dfd);
        struct dirent *de;

        if (!d) {
                int r = -errno;
                (void)close(dfd);
                return r;
        }
        while ((de = readdir(d))) {
                char path[PATH_MAX];
                struct stat st;

                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                if (snprintf(path, sizeof path, "%s%s%s", rel, *rel ? "/" : "", de->d_name) >= (int)sizeof path)
                        continue;
                if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        if (!w->err)
                                w->err = -errno;
                        continue;
                }
                if (S_ISDIR(st.st_mode)) {
                        int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
                        int r;

                        w->dirs++;
                        if (fd < 0) {
                                if (!w->err)
                                        w->err = -errno;
                                continue;
                        }
                        r = walk_dir(w, fd, path, read_data);
                        if (r < 0 && !w->err)
                                w->err = r;
                } else if (S_ISREG(st.st_mode)) {
                        w->files++;
                        if (!w->first[0] && st.st_size > 0)
                                snprintf(w->first, sizeof w->first, "%s", path);
                        if (!read_data) {
                                w->bytes += (uint64_t)st.st_size;
                                continue;
                        }
                        int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
                        ssize_t n;

                        if (fd < 0) {
                                if (!w->err)
                                        w->err = -errno;
                                continue;
                        }
                        while ((n = read(fd, w->buf, BENCH_BUF)) > 0)
                                w->bytes += (uint64_t)n;
                        if (n < 0 && !w->err)
                                w->err = -errno;
                        (void)close(fd);
                } else {
                        w->others++;
                }
        }
        (void)closedir(d);
        return 0;
}

/* walk(): scan (read_data false: sizes only) or read every regular file
 * under root; returns the time taken in ns, or a negative errno. */
static int64_t walk(const char *root, bool read_data, struct walk *w)
{
        uint64_t t0 = now_ns();
        int fd, r;

        w->files = w->bytes = w->dirs = w->others = 0;
        w->err = 0;
        w->first[0] = '\0';
        fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        r = walk_dir(w, fd, "", read_data);
        if (r < 0)
                return r;
        if (w->err)
                return w->err;
        return (int64_t)(now_ns() - t0);
}

/* run(): run this binary with argv (argv[0] is the command name), wait, and
 * return its exit status (or -errno). Its stdout goes to out_path if given,
 * else to /dev/null; its stderr to err_path. *ns gets the wall time. */
static int run(struct bench *b, char *const *argv, const char *out_path, const char *err_path, uint64_t *ns)
{
        uint64_t t0 = now_ns();
        int status;
        pid_t pid;

        fflush(stdout);
        fflush(stderr);
        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                int o = open(out_path ? out_path : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                int e = open(err_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
                char *args[32];
                size_t i;

                if (o < 0 || e < 0 || dup2(o, STDOUT_FILENO) < 0 || dup2(e, STDERR_FILENO) < 0)
                        _exit(127);
                args[0] = (char *)"stasis";
                for (i = 0; i < ELEMENTSOF(args) - 2 && argv[i]; i++)
                        args[i + 1] = argv[i];
                args[i + 1] = NULL;
                execv(b->exe, args);
                _exit(127);
        }
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        if (ns)
                *ns = now_ns() - t0;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* Show what a failed child said, then fail with one line naming the step. */
static int child_failed(const char *step, const char *err_path, int st)
{
        char line[1024];
        FILE *f = fopen(err_path, "re");

        if (f) {
                while (fgets(line, sizeof line, f))
                        fputs(line, stderr);
                (void)fclose(f);
        }
        if (st < 0)
                return log_error_errno(st, "bench: %s: %m", step);
        log_error("bench: %s failed (exit %d)", step, st);
        return -EIO;
}

static bool drop_caches(void)
{
        int fd;
        bool ok;

        sync();
        fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        ok = write(fd, "3", 1) == 1;
        (void)close(fd);
        return ok;
}

static uint64_t peak_rss_kb(const char *state)
{
        char path[PATH_MAX + 32], line[256];
        uint64_t kb = 0;
        long pid = 0;
        FILE *f;

        snprintf(path, sizeof path, "%s/stasisd.pid", state);
        f = fopen(path, "re");
        if (!f)
                return 0;
        if (fgets(line, sizeof line, f))
                pid = strtol(line, NULL, 10);
        (void)fclose(f);
        if (pid <= 0)
                return 0;
        snprintf(path, sizeof path, "/proc/%ld/status", pid);
        f = fopen(path, "re");
        if (!f)
                return 0;
        while (fgets(line, sizeof line, f))
                if (strncmp(line, "VmHWM:", 6) == 0) {
                        kb = strtoull(line + 6, NULL, 10);
                        break;
                }
        (void)fclose(f);
        return kb;
}

static void rm_tree(int dfd)
{
        DIR *d = fdopendir(dfd);
        struct dirent *de;

        if (!d) {
                (void)close(dfd);
                return;
        }
        while ((de = readdir(d))) {
                int fd;

                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                if (unlinkat(dirfd(d), de->d_name, 0) == 0 || (errno != EISDIR && errno != EPERM))
                        continue;
                fd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
                if (fd >= 0)
                        rm_tree(fd);
                (void)unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR);
        }
        (void)closedir(d);
}

static double per_s(uint64_t bytes, uint64_t ns)
{
        return ns ? (double)bytes * 1e9 / (double)ns : 0;
}

static json_t *read_json(const char *path)
{
        json_error_t e;

        return json_load_file(path, 0, &e);
}

static uint64_t jint(const json_t *o, const char *k)
{
        json_t *v = json_object_get(o, k);

        return json_is_integer(v) ? (uint64_t)json_integer_value(v) : 0;
}

/* write_change(): the synthetic change: a new file on the mount, BENCH_CHANGE
 * pseudo-random (incompressible) bytes, fsynced. */
static int write_change(const char *mp, char *buf)
{
        char path[PATH_MAX];
        _cleanup_(closep) int fd = -1;
        uint64_t x = 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
        int r = 0;

        snprintf(path, sizeof path, "%s/.stasis-bench-change", mp);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        for (uint32_t done = 0; done < BENCH_CHANGE && r >= 0; done += BENCH_BUF) {
                for (size_t i = 0; i + 8 <= BENCH_BUF; i += 8) { /* xorshift64 */
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        memcpy(buf + i, &x, 8);
                }
                r = write_full(fd, buf, BENCH_BUF);
        }
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        return r;
}

static int bench_main(struct bench *b, const char *store, const char *dir, bool json)
{
        char path[2 * PATH_MAX], errf[300], outf[300], mp[300], cache[300], state[300];
        char local_store[300], ref[PATH_MAX + 128], h1[32], h2[32];
        _cleanup_(json_decrefp) json_t *cj = NULL, *out = NULL, *notes = NULL, *ckj = NULL, *ck = NULL;
        _cleanup_(freep) char *buf = NULL;
        struct walk w = {};
        uint64_t commit_ns = 0, push_ns = 0, ready_ns = 0, first_ns = 0, ck_ns = 0, hwm_kb;
        int64_t cold_ns, warm_ns, t;
        uint64_t cold_bytes, warm_bytes, src_files, src_bytes;
        bool oci = strncmp(store, "oci://", 6) == 0, dropped = false, mounted = false;
        const char *digest;
        int st, r = 0;

        buf = malloc(BENCH_BUF);
        notes = json_array();
        if (!buf || !notes)
                return log_error_errno(ENOMEM, "bench: %m");
        w.buf = buf;
        snprintf(errf, sizeof errf, "%s/children.log", b->tmp);
        snprintf(outf, sizeof outf, "%s/out.json", b->tmp);
        snprintf(mp, sizeof mp, "%s/mnt", b->tmp);
        snprintf(cache, sizeof cache, "%s/cache", b->tmp);
        snprintf(state, sizeof state, "%s/state", b->tmp);
        snprintf(local_store, sizeof local_store, "%s/store", b->tmp);
        if (mkdir(mp, 0755) < 0 || mkdir(cache, 0700) < 0 || mkdir(state, 0700) < 0)
                return log_error_errno(errno, "bench: %s: %m", b->tmp);

        /* 1. the source tree */
        progress(b, "scanning DIR");
        t = walk(dir, false, &w);
        if (t < 0)
                return log_error_errno((int)t, "bench: %s: %m", dir);
        src_files = w.files;
        src_bytes = w.bytes;
        if (!w.first[0])
                return log_error_errno(EINVAL, "bench: %s holds no non-empty regular file to read", dir);

        /* 2. commit (cold where we may drop the guest page cache) */
        progress(b, "committing DIR");
        dropped = drop_caches();
        {
                char *argv[] = { (char *)"commit", (char *)"--store", (char *)(oci ? local_store : store),
                                 (char *)"--label", (char *)"stasis.bench=1", (char *)"--json", (char *)dir, NULL };
                st = run(b, argv, outf, errf, &commit_ns);
                if (st != 0)
                        return child_failed("commit", errf, st);
        }
        cj = read_json(outf);
        digest = json_string_value(json_object_get(cj, "digest"));
        if (!digest)
                return log_error_errno(EPROTO, "bench: commit printed no digest");

        /* 3. an oci:// store: push the snapshot there, mount it from there */
        if (oci) {
                progress(b, "pushing to the registry");
                snprintf(ref, sizeof ref, "%s:stasis-bench-%ld", store, (long)getpid());
                char *argv[] = { (char *)"push", (char *)"--store", local_store, (char *)digest, ref, NULL };
                st = run(b, argv, NULL, errf, &push_ns);
                if (st != 0)
                        return child_failed("push", errf, st);
        } else {
                snprintf(ref, sizeof ref, "%s", digest);
        }

        /* 4. resume: mount with an empty node cache */
        progress(b, "mounting the snapshot");
        dropped = drop_caches() && dropped;
        {
                /* an oci:// REF names its registry: no --store then */
                char *argv[] = { (char *)"mount", (char *)"--cache", cache, (char *)"--state", state, ref, mp,
                                 (char *)"--store", (char *)store, NULL };
                if (oci)
                        argv[7] = NULL;
                st = run(b, argv, NULL, errf, &ready_ns);
                if (st != 0)
                        return child_failed("mount", errf, st);
                mounted = true;
        }

        /* 5. first byte, cold read, warm read */
        progress(b, "reading through the mount");
        {
                uint64_t t0 = now_ns();
                char c;
                int fd;

                snprintf(path, sizeof path, "%s/%s", mp, w.first);
                fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0 || read(fd, &c, 1) != 1)
                        r = log_error_errno(errno ? errno : EIO, "bench: first byte of %s: %m", path);
                first_ns = now_ns() - t0;
                if (fd >= 0)
                        (void)close(fd);
        }
        cold_ns = r < 0 ? r : walk(mp, true, &w);
        cold_bytes = w.bytes;
        warm_ns = cold_ns < 0 ? cold_ns : walk(mp, true, &w);
        warm_bytes = w.bytes;
        hwm_kb = peak_rss_kb(state);
        if (r == 0 && (cold_ns < 0 || warm_ns < 0))
                r = log_error_errno((int)(cold_ns < 0 ? cold_ns : warm_ns), "bench: reading %s: %m", mp);
        if (r == 0 && (cold_bytes != src_bytes || warm_bytes != src_bytes))
                r = log_error_errno(EIO, "bench: read %" PRIu64 " bytes through the mount, DIR has %" PRIu64,
                                    cold_bytes, src_bytes);

        /* 6. checkpoint after a synthetic change (not into a registry) */
        if (r == 0 && oci)
                (void)json_array_append_new(notes, json_string("checkpoint after a synthetic change: skipped for an "
                                                               "oci:// store (it would push to the registry)"));
        else if (r == 0) {
                progress(b, "checkpoint after a synthetic change");
                r = write_change(mp, buf);
                if (r < 0)
                        r = log_error_errno(r, "bench: writing the change on %s: %m", mp);
        }
        if (r == 0 && !oci) {
                char *argv[] = { (char *)"checkpoint", (char *)"--json", mp, NULL };
                st = run(b, argv, outf, errf, &ck_ns);
                if (st != 0)
                        r = child_failed("checkpoint", errf, st);
                else if (!(ckj = read_json(outf)) || !json_string_value(json_object_get(ckj, "digest")))
                        r = log_error_errno(EPROTO, "bench: checkpoint printed no digest");
                else
                        ck = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I}", "digest",
                                       json_string_value(json_object_get(ckj, "digest")), "wall_ns", (json_int_t)ck_ns,
                                       "stall_ns", (json_int_t)jint(ckj, "stall_ns"), "bytes_changed",
                                       (json_int_t)BENCH_CHANGE, "bytes_dirty", (json_int_t)jint(ckj, "bytes_dirty"),
                                       "bytes_new", (json_int_t)jint(ckj, "bytes_new"), "chunks_new",
                                       (json_int_t)jint(ckj, "chunks_new"));
        }
        if (!dropped)
                (void)json_array_append_new(notes, json_string("guest page cache not dropped (needs root): "
                                                               "the commit may read DIR from memory"));
        if (oci)
                (void)json_array_append_new(notes, json_string("commit went to a temporary local store, then "
                                                               "stasis push; the mount reads from the registry"));

        progress(b, "unmounting");
        if (mounted) {
                char *argv[] = { (char *)"umount", mp, NULL };
                st = run(b, argv, NULL, errf, NULL);
                if (st != 0 && r == 0)
                        r = child_failed("umount", errf, st);
        }
        if (r < 0)
                return r;

        out = json_pack("{s:s, s:s, s:I, s:I, s:I, s:b, s:{s:s, s:I, s:f, s:I, s:I, s:I, s:I},"
                        " s:o, s:s, s:I, s:I, s:s,"
                        " s:{s:I, s:I, s:f}, s:{s:I, s:I, s:f}, s:I, s:o, s:O}",
                        "dir", dir, "store", store, "files", (json_int_t)src_files,
                        "bytes", (json_int_t)src_bytes, "chunk_size", (json_int_t)jint(cj, "chunk_size"),
                        "cold_cache_dropped", dropped,
                        "commit", "digest", digest, "wall_ns", (json_int_t)commit_ns,
                        "bytes_per_s", per_s(src_bytes, commit_ns), "bytes_new", (json_int_t)jint(cj, "bytes_new"),
                        "bytes_packed", (json_int_t)jint(cj, "bytes_packed"),
                        "chunks_total", (json_int_t)jint(cj, "chunks_total"),
                        "tree_bytes", (json_int_t)jint(cj, "tree_bytes"),
                        "push", oci ? json_pack("{s:s, s:I}", "ref", ref, "wall_ns", (json_int_t)push_ns) : json_null(),
                        "mount_ref", ref, "mount_ready_ns", (json_int_t)ready_ns,
                        "first_byte_ns", (json_int_t)first_ns, "first_byte_file", w.first,
                        "cold_read", "wall_ns", (json_int_t)cold_ns, "bytes", (json_int_t)cold_bytes,
                        "bytes_per_s", per_s(cold_bytes, (uint64_t)cold_ns),
                        "warm_read", "wall_ns", (json_int_t)warm_ns, "bytes", (json_int_t)warm_bytes,
                        "bytes_per_s", per_s(warm_bytes, (uint64_t)warm_ns),
                        "stasisd_peak_rss_bytes", (json_int_t)hwm_kb * 1024, "checkpoint", ck ? json_incref(ck) : json_null(),
                        "notes", notes);
        if (!out)
                return log_error_errno(ENOMEM, "bench: building the result: %m");
        if (json)
                return cli_print_json(out) < 0 ? -EIO : 0;

        printf("stasis bench of %s (%" PRIu64 " files, %s) on store %s\n", dir, src_files,
               format_bytes(src_bytes, h1), store);
        printf("  %-26s %10.3f s   %s/s, %s new\n", "commit", (double)commit_ns / 1e9,
               format_bytes((uint64_t)per_s(src_bytes, commit_ns), h1), format_bytes(jint(cj, "bytes_new"), h2));
        if (oci)
                printf("  %-26s %10.3f s\n", "push", (double)push_ns / 1e9);
        printf("  %-26s %10.1f ms\n", "mount ready", (double)ready_ns / 1e6);
        printf("  %-26s %10.2f ms   %s\n", "first byte (cold)", (double)first_ns / 1e6, w.first);
        printf("  %-26s %10.3f s   %s/s\n", "read every file (cold)", (double)cold_ns / 1e9,
               format_bytes((uint64_t)per_s(cold_bytes, (uint64_t)cold_ns), h1));
        printf("  %-26s %10.3f s   %s/s\n", "read every file (warm)", (double)warm_ns / 1e9,
               format_bytes((uint64_t)per_s(warm_bytes, (uint64_t)warm_ns), h1));
        printf("  %-26s %10s\n", "stasisd peak RSS", format_bytes(hwm_kb * 1024, h1));
        if (ck)
                printf("  %-26s %10.3f s   stall %.1f ms, %s changed, %s new\n", "checkpoint", (double)ck_ns / 1e9,
                       (double)jint(ck, "stall_ns") / 1e6, format_bytes(BENCH_CHANGE, h1),
                       format_bytes(jint(ck, "bytes_new"), h2));
        else
                printf("  %-26s %10s\n", "checkpoint", "skipped (oci:// store)");
        if (!dropped)
                printf("note: the guest page cache was not dropped (needs root)\n");
        if (fflush(stdout) == EOF)
                return log_error_errno(errno, "write stdout: %m");
        return 0;
}

int cmd_bench(const struct cli_command *cmd, int argc, char **argv)
{
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                { "json", no_argument, NULL, OPT_JSON },
                {},
        };
        struct bench b = { .tty = isatty(STDERR_FILENO) == 1, .steps = 6 };
        const char *store = NULL, *tmpdir;
        char ctx[512], dir[PATH_MAX];
        bool json = false;
        ssize_t n;
        int c, r, fd;

        while ((c = getopt_long(argc, argv, CLI_SHORTOPTS, options, NULL)) >= 0) {
                switch (c) {
                case OPT_STORE:
                        store = optarg;
                        break;
                case OPT_JSON:
                        json = true;
                        break;
                default:
                        r = cli_common_option(cmd, c, argv);
                        if (r != CLI_CONTINUE)
                                return r;
                }
        }
        r = cli_nargs(cmd, argc, argv, 1, 1);
        if (r)
                return r;
        cli_set_context(ctx, "bench");
        if (!realpath(argv[optind], dir))
                return log_error_errno(errno, "bench: %s: %m", argv[optind]), EXIT_FAIL;
        store = cli_store_path(store);
        if (strncmp(store, "oci://", 6) == 0)
                b.steps++;
        n = readlink("/proc/self/exe", b.exe, sizeof b.exe - 1);
        if (n <= 0)
                return log_error_errno(errno, "bench: /proc/self/exe: %m"), EXIT_FAIL;
        b.exe[n] = '\0';
        tmpdir = getenv("TMPDIR");
        if (!tmpdir || !*tmpdir)
                tmpdir = "/var/tmp";
        if (strlen(tmpdir) > 200)
                return log_error_errno(ENAMETOOLONG, "bench: $TMPDIR: %m"), EXIT_FAIL;
        snprintf(b.tmp, sizeof b.tmp, "%s/stasis-bench.XXXXXX", tmpdir);
        if (!mkdtemp(b.tmp))
                return log_error_errno(errno, "bench: %s: %m", b.tmp), EXIT_FAIL;

        r = bench_main(&b, store, dir, json);

        /* Never remove a tree with a live mount in it. */
        {
                char mp[300];
                struct stat a, p;

                snprintf(mp, sizeof mp, "%s/mnt", b.tmp);
                if (stat(mp, &a) == 0 && stat(b.tmp, &p) == 0 && a.st_dev != p.st_dev) {
                        log_error("bench: %s is still mounted; left %s in place", mp, b.tmp);
                        return EXIT_FAIL;
                }
        }
        fd = open(b.tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0)
                rm_tree(fd);
        (void)rmdir(b.tmp);
        return r < 0 ? EXIT_FAIL : EXIT_OK;
}
