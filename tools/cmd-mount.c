/* cmd-mount.c — stasis mount, umount and status: front-ends of stasisd.
 *
 * mount runs stasisd (found as $STASISD, else next to this binary) and
 * returns when the daemon reports its mount live, so reads work as soon as
 * it exits 0. umount detaches the FUSE mount, waits for the daemon to go,
 * and cleans up after a daemon that died (kill -9 leaves a mount whose
 * every access fails with ENOTCONN, and a stale registry entry). status asks
 * the daemon's control API over its unix socket.
 *
 * Mounts are found through the node registry that stasisd keeps:
 * $STASIS_RUN_DIR (else /run/stasis)/mounts/<key>.json, matched by its
 * "mountpoint" field (see daemon/stasisd.c for the fields). */
#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>

#include "cli.h"

#define RUN_DEFAULT "/run/stasis"
#define UMOUNT_WAIT_NS (10 * NSEC_PER_SEC)

enum {
        OPT_CACHE = 0x200,
        OPT_CACHE_SIZE,
        OPT_STATE,
        OPT_FOREGROUND,
        OPT_NO_PREFETCH,
        OPT_EMPTY,
        OPT_LAZY,
        OPT_FORCE,
};

static const char *run_dir(void)
{
        const char *e = getenv("STASIS_RUN_DIR");
        return e && *e ? e : RUN_DEFAULT;
}

static void json_decrefp_(json_t **j) { json_decref(*j); }

/* parent_path(): path made absolute and resolved without touching its last
 * component, which may be a dead mount (stat fails with ENOTCONN) or a
 * wedged one (stat would wait for ever). abs_path(): resolved whole if it
 * can be (a symlink to a mount point), else as parent_path(). */
static int parent_path(const char *path, char ret[static PATH_MAX])
{
        char a[PATH_MAX], b[PATH_MAX], dir[PATH_MAX];
        const char *base;
        size_t len;

        len = strlen(path);
        if (len == 0 || len >= PATH_MAX)
                return -EINVAL;
        memcpy(a, path, len + 1);
        while (len > 1 && a[len - 1] == '/')
                a[--len] = 0;
        memcpy(b, a, len + 1);
        base = basename(a);
        if (!realpath(dirname(b), dir))
                return -errno;
        if (strcmp(base, "/") == 0 || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
                return -EINVAL;
        if ((size_t)snprintf(ret, PATH_MAX, "%s/%s", strcmp(dir, "/") ? dir : "", base) >= PATH_MAX)
                return -ENAMETOOLONG;
        return 0;
}

static int abs_path(const char *path, char ret[static PATH_MAX])
{
        if (realpath(path, ret))
                return 0;
        return parent_path(path, ret);
}

/* registry_find(): the registry entry of mountpoint mp; *ret_path gets its
 * file name. -ENOENT if there is none. */
static int registry_find(const char *mp, json_t **ret, char ret_path[static PATH_MAX])
{
        char dir[PATH_MAX];
        struct dirent *de;
        DIR *d;

        snprintf(dir, sizeof dir, "%s/mounts", run_dir());
        d = opendir(dir);
        if (!d)
                return errno == ENOENT ? -ENOENT : -errno;
        while ((de = readdir(d))) {
                char p[PATH_MAX];
                json_t *j;
                const char *m;
                size_t l = strlen(de->d_name);

                if (l < 6 || strcmp(de->d_name + l - 5, ".json") != 0)
                        continue;
                if ((size_t)snprintf(p, sizeof p, "%s/%s", dir, de->d_name) >= sizeof p)
                        continue;
                j = json_load_file(p, 0, NULL);
                m = json_string_value(json_object_get(j, "mountpoint"));
                if (m && strcmp(m, mp) == 0) {
                        closedir(d);
                        *ret = j;
                        memcpy(ret_path, p, strlen(p) + 1); /* p fits: same size */
                        return 0;
                }
                json_decref(j);
        }
        closedir(d);
        return -ENOENT;
}

/* pid_alive(): a process that has not exited (a zombie counts as gone). */
static bool pid_alive(pid_t pid)
{
        return proc_state(pid, NULL) != PROC_GONE;
}

static bool wait_exit(pid_t pid, uint64_t timeout_ns)
{
        uint64_t end = now_ns() + timeout_ns;

        while (pid_alive(pid)) {
                if (now_ns() > end)
                        return false;
                usleep(10000);
        }
        return true;
}

/* detach(): unmount mp; lazily if lazy. As root with umount2(), else with
 * fusermount3. 0, -EINVAL if nothing is mounted there, -errno. */
static int detach(const char *mp, bool lazy)
{
        pid_t pid;
        int status;

        if (geteuid() == 0)
                return umount2(mp, lazy ? MNT_DETACH : 0) < 0 ? -errno : 0;
        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                int fd = open("/dev/null", O_WRONLY);
                if (fd >= 0)
                        dup2(fd, STDERR_FILENO);
                execlp("fusermount3", "fusermount3", lazy ? "-uz" : "-u", "--", mp, (char *)NULL);
                _exit(127);
        }
        if (waitpid(pid, &status, 0) < 0)
                return -errno;
        return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EBUSY;
}

/* abort_connection(): end the FUSE connection of the mount at mp, as
 * `echo 1 > /sys/fs/fuse/connections/N/abort` does: every request waiting
 * for stasisd, and every later one, fails at once (ENOTCONN), and a thread
 * stuck waiting for its own mount's answer is let go. Through fusectl (the
 * mount's owner may write there; as root it is mounted if it is not), else
 * as root with umount2(MNT_FORCE), which aborts the connection first. */
static int abort_connection(const char *mp)
{
        char p[128];
        dev_t dev = 0;
        int fd, r;

        r = stasis_mount_dev(mp, &dev);
        if (r < 0)
                return r;
        /* the kernel names a connection by its dev_t, as it encodes it */
        snprintf(p, sizeof p, "/sys/fs/fuse/connections/%u/abort", (major(dev) << 20) | minor(dev));
        fd = open(p, O_WRONLY | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT && geteuid() == 0 &&
            mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, NULL) == 0)
                fd = open(p, O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
                r = write(fd, "1", 1) == 1 ? 0 : -errno;
                close(fd);
                if (r == 0)
                        return 0;
        }
        if (geteuid() == 0 && umount2(mp, MNT_FORCE) < 0 && errno != EBUSY)
                return -errno;
        return geteuid() == 0 ? 0 : -EPERM;
}

static bool is_stasis_mount(const char *mp)
{
        dev_t dev = 0;
        return stasis_mount_dev(mp, &dev) == 0;
}

static bool is_dead_mount(const char *mp)
{
        struct stat st;
        return stat(mp, &st) < 0 && errno == ENOTCONN;
}

/* state_in_use(): a live stasisd holds the state dir's lock (stasisd.c,
 * state_lock()): a later mount of the same state dir, on another
 * mountpoint, after the one being cleaned up was killed. */
static bool state_in_use(const char *state)
{
        char p[PATH_MAX + 16];
        _cleanup_(closep) int fd = -1;

        snprintf(p, sizeof p, "%s/stasisd.lock", state);
        fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        if (flock(fd, LOCK_SH | LOCK_NB) < 0)
                return errno == EWOULDBLOCK;
        (void)flock(fd, LOCK_UN);
        return false;
}

static int find_stasisd(char ret[static PATH_MAX])
{
        const char *e = getenv("STASISD");
        char self[PATH_MAX];
        ssize_t n;

        if (e && *e) {
                snprintf(ret, PATH_MAX, "%s", e);
                return 0;
        }
        n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n < 0)
                return -errno;
        self[n] = 0;
        dirname(self);
        if ((size_t)snprintf(ret, PATH_MAX, "%s/stasisd", self) < PATH_MAX && access(ret, X_OK) == 0)
                return 0;
        if ((size_t)snprintf(ret, PATH_MAX, "%s/daemon/stasisd", self) < PATH_MAX && access(ret, X_OK) == 0)
                return 0;
        return -ENOENT;
}

/* thaw_left(): a sandbox the dead daemon left frozen (STATE/sandbox-frozen,
 * daemon/stasisd.c) is thawed by `stasisd --thaw-left-frozen STATE`, which
 * knows the freezers. */
static void thaw_left(const char *state)
{
        char marker[PATH_MAX + 32], daemon[PATH_MAX];
        char *argv[] = { daemon, (char *)"--thaw-left-frozen", (char *)state, NULL };
        pid_t pid;
        int status;

        snprintf(marker, sizeof marker, "%s/sandbox-frozen", state);
        if (access(marker, F_OK) < 0)
                return;
        if (find_stasisd(daemon) < 0 || posix_spawn(&pid, daemon, NULL, NULL, argv, environ) != 0) {
                log_error("%s: the sandbox was left frozen, and stasisd is not there to thaw it", state);
                return;
        }
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
}

/* cleanup_dead(): what a killed stasisd leaves: a mount answering ENOTCONN,
 * its registry entry, its socket and pid file (unless a live daemon has the
 * state dir now: they are its), and a sandbox it froze. */
static int cleanup_dead(const char *mp, json_t *entry, const char *entry_path)
{
        const char *sock = json_string_value(json_object_get(entry, "socket"));
        const char *state = json_string_value(json_object_get(entry, "state_dir"));
        bool theirs = state && state_in_use(state);
        int r = 0;

        for (int i = 0; i < 16 && is_dead_mount(mp); i++) {
                r = detach(mp, true);
                if (r < 0)
                        return log_error_errno(r, "%s: detach dead mount: %m", mp);
        }
        if (sock && !theirs)
                (void)unlink(sock);
        if (state && !theirs) {
                char p[PATH_MAX + 16];
                snprintf(p, sizeof p, "%s/stasisd.pid", state);
                (void)unlink(p);
                thaw_left(state);
        }
        if (entry_path)
                (void)unlink(entry_path);
        return r;
}

int cmd_mount(const struct cli_command *cmd, int argc, char **argv)
{
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                { "cache", required_argument, NULL, OPT_CACHE },
                { "cache-size", required_argument, NULL, OPT_CACHE_SIZE },
                { "state", required_argument, NULL, OPT_STATE },
                { "label", required_argument, NULL, OPT_LABEL },
                { "foreground", no_argument, NULL, OPT_FOREGROUND },
                { "no-prefetch", no_argument, NULL, OPT_NO_PREFETCH },
                { "empty", no_argument, NULL, OPT_EMPTY },
                {},
        };
        const char *args[64 + 2 * 32];
        char daemon[PATH_MAX], mp[PATH_MAX], ctx[512], verbose[8] = "-";
        size_t n = 0, n_verbose = 0;
        bool empty = false;
        uint64_t size;
        pid_t pid;
        int c, r, status;

        opterr = 0;
        while ((c = getopt_long(argc, argv, CLI_SHORTOPTS "o:", options, NULL)) >= 0) {
                if (n + 4 >= ELEMENTSOF(args) - 4)
                        return cli_usage(cmd, "too many options");
                switch (c) {
                case OPT_STORE:
                        args[++n] = "--store";
                        args[++n] = cli_store_path(optarg);
                        break;
                case OPT_CACHE:
                        args[++n] = "--cache";
                        args[++n] = optarg;
                        break;
                case OPT_CACHE_SIZE:
                        if (parse_size(optarg, &size) < 0)
                                return cli_usage(cmd, "bad --cache-size '%s'", optarg);
                        args[++n] = "--cache-size";
                        args[++n] = optarg;
                        break;
                case OPT_STATE:
                        args[++n] = "--state";
                        args[++n] = optarg;
                        break;
                case OPT_LABEL:
                        if (!strchr(optarg, '=') || optarg[0] == '=')
                                return cli_usage(cmd, "bad --label '%s' (K=V)", optarg);
                        args[++n] = "--label";
                        args[++n] = optarg;
                        break;
                case 'o':
                        args[++n] = "-o";
                        args[++n] = optarg;
                        break;
                case OPT_FOREGROUND:
                        args[++n] = "--foreground";
                        break;
                case OPT_NO_PREFETCH:
                        args[++n] = "--no-prefetch";
                        break;
                case OPT_EMPTY:
                        args[++n] = "--empty";
                        empty = true;
                        break;
                default:
                        r = cli_common_option(cmd, c, argv);
                        if (r != CLI_CONTINUE)
                                return r;
                        if (c == 'v' && n_verbose < 5)
                                verbose[++n_verbose] = 'v';
                        break;
                }
        }
        r = cli_nargs(cmd, argc, argv, empty ? 1 : 2, empty ? 1 : 2);
        if (r)
                return r;
        cli_set_context(ctx, "mount");
        {
                /* no --store given: pass the CLI's default on explicitly */
                bool have_store = false;
                for (size_t i = 1; i <= n; i++)
                        if (args[i] && strcmp(args[i], "--store") == 0)
                                have_store = true;
                if (!have_store) {
                        args[++n] = "--store";
                        args[++n] = cli_store_path(NULL);
                }
        }
        if (n_verbose)
                args[++n] = verbose;

        r = abs_path(argv[argc - 1], mp);
        if (r < 0)
                return log_error_errno(r, "mountpoint %s: %m", argv[argc - 1]), EXIT_FAIL;
        /* A mount left by a killed daemon is in the way: clean it up first. */
        if (is_dead_mount(mp)) {
                _cleanup_(json_decrefp_) json_t *e = NULL;
                char ep[PATH_MAX];
                bool have = registry_find(mp, &e, ep) == 0;
                r = cleanup_dead(mp, e, have ? ep : NULL);
                if (r < 0)
                        return EXIT_FAIL;
        }

        r = find_stasisd(daemon);
        if (r < 0)
                return log_error_errno(r, "stasisd not found (set $STASISD): %m"), EXIT_FAIL;
        args[0] = daemon;
        if (!empty)
                args[++n] = argv[optind];
        args[++n] = mp;
        args[++n] = NULL;

        fflush(stdout);
        fflush(stderr);
        pid = fork();
        if (pid < 0)
                return log_error_errno(-errno, "fork: %m"), EXIT_FAIL;
        if (pid == 0) {
                execv(daemon, (char *const *)args);
                log_error_errno(-errno, "exec %s: %m", daemon);
                _exit(EXIT_FAIL);
        }
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return log_error_errno(-errno, "waitpid: %m"), EXIT_FAIL;
        if (WIFEXITED(status))
                return WEXITSTATUS(status) == 0 ? EXIT_OK : WEXITSTATUS(status) == 2 ? EXIT_USAGE : EXIT_FAIL;
        log_error("stasisd died with signal %d", WTERMSIG(status));
        return EXIT_FAIL;
}

int cmd_umount(const struct cli_command *cmd, int argc, char **argv)
{
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                { "lazy", no_argument, NULL, OPT_LAZY },
                { "force", no_argument, NULL, OPT_FORCE },
                {},
        };
        _cleanup_(json_decrefp_) json_t *e = NULL;
        char mp[PATH_MAX], ep[PATH_MAX], ctx[512];
        bool lazy = false, force = false, have, detached = false;
        uint64_t grace;
        pid_t pid = 0;
        int c, r;

        opterr = 0;
        while ((c = getopt_long(argc, argv, CLI_SHORTOPTS "lf", options, NULL)) >= 0) {
                if (c == OPT_LAZY || c == 'l') {
                        lazy = true;
                        continue;
                }
                if (c == OPT_FORCE || c == 'f') {
                        force = true;
                        continue;
                }
                r = cli_common_option(cmd, c, argv);
                if (r != CLI_CONTINUE)
                        return r;
        }
        r = cli_nargs(cmd, argc, argv, 1, 1);
        if (r)
                return r;
        cli_set_context(ctx, "umount");
        /* The mount point itself is not looked at (a wedged mount would hang
         * the lookup) unless the name is no mount: then it may be a symlink
         * to one. */
        r = parent_path(argv[optind], mp);
        if (r < 0)
                return log_error_errno(r, "%s: %m", argv[optind]), EXIT_FAIL;
        have = registry_find(mp, &e, ep) == 0;
        if (!have && !is_stasis_mount(mp) && !force) {
                r = abs_path(argv[optind], mp);
                if (r < 0)
                        return log_error_errno(r, "%s: %m", argv[optind]), EXIT_FAIL;
                have = registry_find(mp, &e, ep) == 0;
        }
        if (have)
                pid = (pid_t)json_integer_value(json_object_get(e, "pid"));

        /* --force: end the connection first. Requests waiting for stasisd
         * fail, so does a thread of its own that waits for its own mount,
         * and a live daemon sees its connection end and exits. */
        if (force) {
                r = abort_connection(mp);
                if (r < 0 && r != -ENOENT)
                        return log_error_errno(r, "%s: abort the FUSE connection: %m", mp), EXIT_FAIL;
                lazy = true;
        }
        grace = force ? 2 * NSEC_PER_SEC : UMOUNT_WAIT_NS;
        /* A daemon killed a moment ago (kill -9) may still be exiting: not
         * one to ask for a clean unmount, which open files would refuse
         * (EBUSY). Let it go; its mount is then a dead one (below). */
        if (have && proc_state(pid, NULL) == PROC_EXITING)
                (void)wait_exit(pid, grace);
        if (have && proc_state(pid, NULL) == PROC_RUNNING) {
                r = detach(mp, lazy);
                if (r == -EBUSY)
                        return log_error_errno(r, "%s: busy (files open? --lazy detaches anyway): %m", mp), EXIT_FAIL;
                if (r < 0 && r != -EINVAL)
                        return log_error_errno(r, "%s: unmount: %m", mp), EXIT_FAIL;
                detached = r >= 0;
                if (!wait_exit(pid, grace)) {
                        /* Unmounted but the daemon lingers: ask, then insist. */
                        (void)kill(pid, SIGTERM);
                        if (!wait_exit(pid, grace)) {
                                (void)kill(pid, SIGKILL);
                                (void)wait_exit(pid, UMOUNT_WAIT_NS);
                        }
                }
        }
        /* Whatever a dead daemon left (kill -9: every access gives ENOTCONN;
         * it may take a moment after the kill to show). Detach it lazily:
         * the sandbox may still hold files open on it. */
        for (int i = 0; i < 16 && is_stasis_mount(mp); i++) {
                r = detach(mp, true);
                if (r < 0)
                        return log_error_errno(r, "%s: detach: %m", mp), EXIT_FAIL;
                detached = true;
        }
        if (!have && !detached)
                return log_error_errno(-EINVAL, "%s: not a stasis mount", mp), EXIT_FAIL;
        if (have)
                (void)cleanup_dead(mp, e, ep); /* no-op if the daemon cleaned up */
        return EXIT_OK;
}

/* api_call(): METHOD path (with a JSON body, if body is non-NULL) to the
 * daemon listening on the unix socket sock; the JSON body of a 200 answer.
 * Another answer is logged with the API's error sentence and reason, and
 * returns -EPROTO. A plain HTTP/1.1 exchange with
 * "Connection: close": the API's answers are small and carry a
 * Content-Length, so reading to EOF is all the client it takes (libcurl's
 * CURLOPT_UNIX_SOCKET_PATH does the same, and takes its place once the CLI
 * links libcurl for the registry backend). */
static int api_call(const char *sock, const char *method, const char *path, const char *body_out,
                    unsigned timeout_s, json_t **ret)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct timeval tv = { .tv_sec = timeout_s };
        _cleanup_(closep) int fd = -1;
        _cleanup_(freep) char *buf = NULL;
        size_t len = 0, cap = 0;
        char req[512], *body;
        json_error_t jerr;
        unsigned code;
        json_t *j;
        int r;

        if ((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock) >= sizeof sa.sun_path)
                return log_error_errno(-ENAMETOOLONG, "control socket %s: %m", sock);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return log_error_errno(-errno, "socket: %m");
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
                return log_error_errno(-errno, "control socket %s: %m", sock);
        snprintf(req, sizeof req,
                 "%s %s HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
                 "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                 "Connection: close\r\n\r\n",
                 method, path, body_out ? strlen(body_out) : (size_t)0);
        r = write_full(fd, req, strlen(req));
        if (r >= 0 && body_out)
                r = write_full(fd, body_out, strlen(body_out));
        if (r < 0)
                return log_error_errno(r, "control socket %s: send: %m", sock);
        for (;;) {
                ssize_t n;
                if (cap - len < 4096) {
                        char *nb;
                        if (cap >= (16u << 20))
                                return log_error_errno(-EFBIG, "control socket %s: answer too long", sock);
                        cap = cap ? cap * 2 : 16384;
                        nb = realloc(buf, cap + 1);
                        if (!nb)
                                return -ENOMEM;
                        buf = nb;
                }
                n = read(fd, buf + len, cap - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return log_error_errno(-errno, "control socket %s: receive: %m", sock);
                if (n == 0)
                        break;
                len += (size_t)n;
        }
        if (!buf)
                return log_error_errno(-EPROTO, "control socket %s: no answer", sock);
        buf[len] = 0;
        if ((strncmp(buf, "HTTP/1.1 ", 9) != 0 && strncmp(buf, "HTTP/1.0 ", 9) != 0) ||
            !(body = strstr(buf, "\r\n\r\n")))
                return log_error_errno(-EPROTO, "control socket %s: not an HTTP answer", sock);
        code = (unsigned)strtoul(buf + 9, NULL, 10);
        body += 4;
        if (code != 200) {
                j = json_loadb(body, len - (size_t)(body - buf), 0, &jerr);
                if (j && json_string_value(json_object_get(j, "error"))) {
                        r = log_error_errno(-EPROTO, "%s (%s, HTTP %u)", json_string_value(json_object_get(j, "error")),
                                            json_string_value(json_object_get(j, "reason")) ?
                                                    json_string_value(json_object_get(j, "reason")) : "?",
                                            code);
                        json_decref(j);
                        return r;
                }
                json_decref(j);
                return log_error_errno(-EPROTO, "control socket %s: HTTP %u: %s", sock, code, body);
        }
        j = json_loadb(body, len - (size_t)(body - buf), 0, &jerr);
        if (!j)
                return log_error_errno(-EBADMSG, "control socket %s: bad JSON: %s", sock, jerr.text);
        *ret = j;
        return 0;
}

int cli_mount_api(const char *mountpoint, const char *method, const char *path, const char *body,
                  unsigned timeout_s, json_t **ret)
{
        _cleanup_(json_decrefp_) json_t *e = NULL;
        char mp[PATH_MAX], ep[PATH_MAX];
        const char *sock;
        int r;

        r = abs_path(mountpoint, mp);
        if (r < 0)
                return log_error_errno(r, "%s: %m", mountpoint);
        r = registry_find(mp, &e, ep);
        if (r < 0)
                return log_error_errno(r, "%s: not a stasis mount (no registry entry in %s/mounts)", mp, run_dir());
        sock = json_string_value(json_object_get(e, "socket"));
        if (!sock)
                return log_error_errno(-EBADMSG, "%s: registry entry %s names no socket", mp, ep);
        if (!pid_alive((pid_t)json_integer_value(json_object_get(e, "pid"))))
                return log_error_errno(-ESRCH, "%s: stasisd (pid %" PRIu64 ") is dead; run stasis umount %s", mp,
                                       (uint64_t)json_integer_value(json_object_get(e, "pid")), mp);
        return api_call(sock, method, path, body, timeout_s, ret);
}

static uint64_t jint(const json_t *j, const char *k)
{
        return (uint64_t)json_integer_value(json_object_get(j, k));
}

int cmd_status(const struct cli_command *cmd, int argc, char **argv)
{
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                { "json", no_argument, NULL, OPT_JSON },
                {},
        };
        _cleanup_(json_decrefp_) json_t *s = NULL;
        char ctx[512], b1[32], b2[32];
        bool json = false;
        int c, r;

        opterr = 0;
        while ((c = getopt_long(argc, argv, CLI_SHORTOPTS, options, NULL)) >= 0) {
                if (c == OPT_JSON) {
                        json = true;
                        continue;
                }
                r = cli_common_option(cmd, c, argv);
                if (r != CLI_CONTINUE)
                        return r;
        }
        r = cli_nargs(cmd, argc, argv, 1, 1);
        if (r)
                return r;
        cli_set_context(ctx, "status");
        r = cli_mount_api(argv[optind], "GET", "/api/v1/status", NULL, 10, &s);
        if (r < 0)
                return EXIT_FAIL;
        if (json)
                return cli_print_json(s) < 0 ? EXIT_FAIL : EXIT_OK;

        printf("mountpoint        %s\n", json_string_value(json_object_get(s, "mountpoint")));
        printf("snapshot          %s\n", json_string_value(json_object_get(s, "snapshot")));
        printf("store             %s\n", json_string_value(json_object_get(s, "store")));
        printf("cache             %s\n", json_string_value(json_object_get(s, "cache")));
        printf("pid               %" PRIu64 "\n", jint(s, "pid"));
        printf("fuse transport    %s\n", json_string_value(json_object_get(s, "fuse_transport"))
                                               ? json_string_value(json_object_get(s, "fuse_transport"))
                                               : "?");
        printf("uptime            %" PRIu64 " s\n", jint(s, "uptime_s"));
        printf("chunks fetched    %" PRIu64 " (%s of packs read in %" PRIu64 " reads)\n",
               jint(s, "chunks_fetched"), format_bytes(jint(s, "bytes_fetched"), b1), jint(s, "pack_reads"));
        printf("cache             %" PRIu64 " hits, %" PRIu64 " misses\n", jint(s, "cache_hits"),
               jint(s, "cache_misses"));
        printf("readahead         %" PRIu64 " chunks\n", jint(s, "readahead_chunks"));
        printf("prefetch          %" PRIu64 " chunks, %" PRIu64 " hits\n", jint(s, "prefetch_chunks"),
               jint(s, "prefetch_hits"));
        printf("served            %s in %" PRIu64 " reads\n", format_bytes(jint(s, "bytes_served"), b2),
               jint(s, "reads"));
        printf("errors            %" PRIu64 "\n", jint(s, "errors"));
        printf("dirty             %" PRIu64 " chunks (%s) in the writable layer\n", jint(s, "dirty_chunks"),
               format_bytes(jint(s, "dirty_bytes"), b1));
        return EXIT_OK;
}
