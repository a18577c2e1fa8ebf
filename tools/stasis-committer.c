/* stasis-committer.c — drop-in for OpenSandbox's image-committer
 * (../shared/OPENSANDBOX.md is the contract; committer.h has the parts).
 *
 *   stasis-committer [OPTIONS] <pod> <namespace> <container>:<uri>...
 *   stasis-committer [OPTIONS] unpause <pod> <namespace> <container>...
 *   stasis-committer status [OPTIONS] <snapshot> <namespace> <phase> [<container>:<uri>[@<digest>]...]
 *
 * A commit finds each container's stasis mount by its Kubernetes labels
 * (no mount: fail before anything is frozen), freezes every container
 * through its stasisd (POST /api/v1/freeze; 409 NoFreezer is a warning),
 * checkpoints each into its node store (POST /api/v1/checkpoint), thaws them
 * in reverse order (POST /api/v1/unfreeze; on every path out, SIGINT and
 * SIGTERM included), then pushes each snapshot to its target (POST
 * /api/v1/push), so the uploads never keep a container frozen. With --snapshot NAME it also writes the SandboxSnapshot
 * status: Committing before, Succeed or Failed after.
 *
 * Global state: stop_signal alone, because a signal handler can reach
 * nothing else. The handler only stores the signal number; interruptible
 * requests poll it (libcurl's progress callback) and the flow checks it
 * between steps. Everything else lives in struct run on main()'s stack. */
#include <curl/curl.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "committer.h"

#define FREEZE_TIMEOUT_S 60L
#define UNFREEZE_TIMEOUT_S 60L

static volatile sig_atomic_t stop_signal; /* the only global: see the header comment */

static void on_stop(int sig) { stop_signal = sig; }

enum freeze_state {
        FZ_NONE,      /* never asked */
        FZ_MAYBE,     /* asked; the answer did not arrive */
        FZ_FROZEN,
        FZ_NO_FREEZER,
};

struct target {
        char *name, *uri, *host, *oci, *auth /* secret */, *digest;
        bool insecure;
        struct cm_mount mount;
        enum freeze_state fz;
};

struct run {
        const char *pod, *ns;
        const char *run_dir, *registry_config, *termination_log;
        const char *snapshot, *server, *token_file, *ca_cert, *node;
        const char *phase, *reason_opt, *message_opt; /* status mode */
        long timeout_s;
        struct target *t;
        size_t n;
        struct kube_conn kube;
        /* the first failure: its reason and its one-line message */
        char reason[64];
        char message[CM_ERR_MAX + 128];
};

enum { USE_COMMIT, USE_UNPAUSE, USE_STATUS, USE_ALL };

/* usage(): the one usage line of a mode (OPENSANDBOX.md: "a usage line"). */
static void usage(FILE *f, int which)
{
        static const char *const lines[] = {
                "stasis-committer [OPTIONS] <pod> <namespace> <container>:<uri>...",
                "stasis-committer [OPTIONS] unpause <pod> <namespace> <container>...",
                "stasis-committer status [OPTIONS] <snapshot> <namespace> <phase> [<container>:<uri>[@<digest>]...]",
        };

        for (int i = 0; i < USE_ALL; i++)
                if (which == USE_ALL || which == i)
                        fprintf(f, "%s%s\n", i == 0 || which != USE_ALL ? "usage: " : "       ", lines[i]);
}

static void help(void)
{
        usage(stdout, USE_ALL);
        printf("\nOptions:\n"
               "  --termination-log PATH  where the result goes (default %s)\n"
               "  --registry-config PATH  docker config with the registry's credentials\n"
               "                          (default %s; missing: anonymous)\n"
               "  --run-dir DIR           stasis node directory (default $STASIS_RUN_DIR, else %s)\n"
               "  --timeout SECONDS       deadline of each checkpoint (default: none)\n"
               "  --snapshot NAME         also write SandboxSnapshot NAME's status (in <namespace>)\n"
               "  --server URL            API server (default: in-cluster config)\n"
               "  --token-file PATH       bearer token (default: the service account's)\n"
               "  --ca-cert PATH          API server CA (default: the service account's ca.crt)\n"
               "  --node NAME             sourceNodeName (default $NODE_NAME)\n"
               "  --reason R, --message M status mode, phase Failed: the condition\n"
               "  --pod NAME              status mode: sourcePodName\n"
               "  -v, --verbose           debug output on stderr\n"
               "Environment: SNAPSHOT_REGISTRY_INSECURE (bool; unset or invalid: guessed from the\n"
               "registry host), CONTAINERD_SOCKET and CONTAINERD_NAMESPACE (accepted, unused).\n",
               CM_TERMINATION_LOG_DEFAULT, CM_REGISTRY_CONFIG_DEFAULT, CM_RUN_DIR_DEFAULT);
}

/* fail(): record the run's first failure and log it: one line. Later
 * failures (while cleaning up) are logged too, but keep the first reason. */
_printf_(3, 4) static int fail(struct run *run, const char *reason, const char *fmt, ...)
{
        char msg[sizeof run->message];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        if (!run->reason[0]) {
                snprintf(run->reason, sizeof run->reason, "%s", reason);
                snprintf(run->message, sizeof run->message, "%s", msg);
        }
        log_error("%s", msg);
        return -1;
}

static int fail_interrupted(struct run *run)
{
        return fail(run, "Interrupted", "interrupted by %s; every container this run froze is thawed",
                    stop_signal == SIGINT ? "SIGINT" : "SIGTERM");
}

static void target_release(struct target *t)
{
        free(t->name);
        free(t->uri);
        free(t->host);
        free(t->oci);
        if (t->auth)
                for (volatile char *c = t->auth; *c; c++)
                        *c = 0;
        free(t->auth);
        free(t->digest);
        cm_mount_release(&t->mount);
}

static void run_release(struct run *run)
{
        for (size_t i = 0; i < run->n; i++)
                target_release(&run->t[i]);
        free(run->t);
        kube_conn_release(&run->kube);
}

/* ---- status ---- */

static int status_write(struct run *run, const char *phase, bool with_digests)
{
        _cleanup_(freep) struct cm_status_container *c = calloc(run->n ? run->n : 1, sizeof *c);
        char err[CM_ERR_MAX] = "";
        struct cm_status_update u = {
                .phase = phase, .pod = run->pod, .node = run->node, .containers = c,
                .n_containers = run->n, .now = time(NULL),
        };
        int r;

        if (!c)
                return -ENOMEM;
        /* a run that failed on its arguments knows only the targets before the bad one */
        u.n_containers = 0;
        for (size_t i = 0; i < run->n && run->t[i].name && run->t[i].uri; i++)
                c[u.n_containers++] = (struct cm_status_container){ run->t[i].name, run->t[i].uri,
                                                                    with_digests ? run->t[i].digest : NULL };
        if (strcmp(phase, "Failed") == 0) {
                u.reason = run->reason_opt ? run->reason_opt : run->reason;
                u.message = run->message_opt ? run->message_opt : run->message;
        }
        r = kube_status_write(&run->kube, run->ns, run->snapshot, &u, err);
        if (r < 0)
                return log_error_errno(r, "status %s not written: %s", phase, err);
        log_debug("SandboxSnapshot %s/%s: %s", run->ns, run->snapshot, phase);
        return 0;
}

/* ---- talking to stasisd ---- */

static bool missing_endpoint(const struct cm_reply *rep)
{
        return rep->status == 404 || rep->status == 405;
}

/* api_error(): a failed request (r < 0) as a reason and a message. */
static int api_error(struct run *run, const struct target *t, const char *what, int r, const struct cm_reply *rep)
{
        if (r == -EINTR)
                return fail_interrupted(run);
        if (r == -ETIMEDOUT)
                return fail(run, "Timeout", "container %s: %s timed out: %s", t->name, what, rep->error);
        if (r == -ECONNREFUSED || r == -ENOENT)
                return fail(run, "DaemonUnreachable", "container %s: stasisd of mount %s does not answer on %s",
                            t->name, t->mount.mountpoint, t->mount.socket);
        return fail(run, "DaemonUnreachable", "container %s: %s: %s", t->name, what, rep->error);
}

static int freeze_one(struct run *run, struct target *t)
{
        struct cm_call c = { .timeout_s = FREEZE_TIMEOUT_S, .stop = &stop_signal };
        struct cm_reply rep = {};
        int r;

        t->fz = FZ_MAYBE;
        r = cm_api_post(t->mount.socket, "/api/v1/freeze", NULL, &c, &rep);
        if (r < 0) {
                r = api_error(run, t, "freeze", r, &rep);
                cm_reply_release(&rep);
                return r;
        }
        if (rep.status / 100 == 2)
                t->fz = FZ_FROZEN;
        else if (rep.status == 409 && strcmp(rep.reason, "NoFreezer") == 0) {
                t->fz = FZ_NO_FREEZER;
                log_warning("warning: container %s: its mount names no way to freeze it (%s); "
                            "checkpointing it without freezing", t->name, rep.error);
        } else if (missing_endpoint(&rep)) {
                t->fz = FZ_NONE;
                r = fail(run, "DaemonTooOld", "container %s: stasisd on %s has no POST /api/v1/freeze (HTTP %ld)",
                         t->name, t->mount.socket, rep.status);
        } else
                r = fail(run, "FreezeFailed", "container %s: freeze failed: %s", t->name, rep.error);
        cm_reply_release(&rep);
        return r;
}

static const char *checkpoint_reason(const struct cm_reply *rep)
{
        static const char *const same[] = { "FreezeFailed", "CheckpointFailed", "PushFailed",
                                            "RegistryAuthFailed", "Timeout" };

        if (missing_endpoint(rep))
                return "DaemonTooOld";
        if (strcmp(rep->reason, "Busy") == 0)
                return "CheckpointBusy";
        for (size_t i = 0; i < ELEMENTSOF(same); i++)
                if (strcmp(rep->reason, same[i]) == 0)
                        return same[i];
        return "CheckpointFailed";
}

/* post_checked(): POST path with body to t's stasisd; 0 with *ret holding a
 * 2xx answer, else -1 with the run's failure recorded (what: "checkpoint"). */
static int post_checked(struct run *run, struct target *t, const char *path, const char *what, const json_t *body,
                        struct cm_reply *ret)
{
        struct cm_call c = { .timeout_s = run->timeout_s, .stop = &stop_signal };
        struct cm_reply rep = {};
        int r;

        r = cm_api_post(t->mount.socket, path, body, &c, &rep);
        if (r < 0) {
                r = api_error(run, t, what, r, &rep);
                cm_reply_release(&rep);
                return r;
        }
        if (rep.status / 100 != 2) {
                if (missing_endpoint(&rep))
                        r = fail(run, "DaemonTooOld", "container %s: stasisd on %s has no POST %s (HTTP %ld)",
                                 t->name, t->mount.socket, path, rep.status);
                else
                        r = fail(run, checkpoint_reason(&rep), "container %s: %s to %s failed: %s", t->name, what,
                                 t->uri, rep.error);
                cm_reply_release(&rep);
                return r;
        }
        *ret = rep;
        return 0;
}

/* capture_one(): a checkpoint of t's mount into its node store (POST
 * /api/v1/checkpoint), while every container of the run is frozen: the
 * snapshot's digest into t->digest. Unchanged since the last one, stasisd
 * answers the same digest. */
static int capture_one(struct run *run, struct target *t)
{
        struct cm_reply rep = {};
        const char *d;
        int r;

        r = post_checked(run, t, "/api/v1/checkpoint", "checkpoint", NULL, &rep);
        if (r < 0)
                return r;
        d = json_string_value(json_object_get(rep.body, "digest"));
        if (!cm_is_digest(d)) {
                r = fail(run, "CheckpointFailed", "container %s: stasisd answered the checkpoint without a sha256 digest",
                         t->name);
                cm_reply_release(&rep);
                return r;
        }
        t->digest = strdup(d);
        cm_reply_release(&rep);
        if (!t->digest)
                return fail(run, "CheckpointFailed", "container %s: out of memory", t->name);
        return 0;
}

/* push_one(): push t's snapshot to its target URI (POST /api/v1/push),
 * the containers thawed; only the blobs the registry lacks go up. The
 * digest reported is the pushed manifest's, which is the snapshot's. */
static int push_one(struct run *run, struct target *t)
{
        _cleanup_(json_decrefp) json_t *body = NULL;
        struct cm_reply rep = {};
        json_t *reg;
        const char *d;
        int r;

        reg = json_pack("{s:b}", "insecure", t->insecure);
        body = json_pack("{s:s, s:s, s:o}", "digest", t->digest, "push", t->oci, "registry", reg);
        if (!body || (t->auth && json_object_set_new(reg, "auth", json_string(t->auth)) < 0))
                return fail(run, "PushFailed", "container %s: out of memory", t->name);
        r = post_checked(run, t, "/api/v1/push", "push", body, &rep);
        /* the body held the credentials */
        if (t->auth) {
                json_t *a = json_object_get(reg, "auth");
                explicit_bzero((char *)json_string_value(a), json_string_length(a));
        }
        if (r < 0)
                return r;
        d = json_string_value(json_object_get(rep.body, "digest"));
        if (!d || strcmp(d, t->digest) != 0)
                r = fail(run, "PushFailed", "container %s: stasisd pushed %s, not the snapshot %s", t->name,
                         d ? d : "nothing", t->digest);
        else
                log_debug("container %s: %s pushed to %s, %" PRIi64 " bytes uploaded", t->name, t->digest, t->oci,
                          (int64_t)json_integer_value(json_object_get(rep.body, "bytes_uploaded")));
        cm_reply_release(&rep);
        return r;
}

/* thaw_all(): unfreeze, in reverse order, every container this run may
 * have frozen. Never interrupted: this is what a signal leads to. */
static int thaw_all(struct run *run)
{
        struct cm_call c = { .timeout_s = UNFREEZE_TIMEOUT_S };
        int ret = 0;

        for (size_t i = run->n; i-- > 0;) {
                struct target *t = &run->t[i];
                struct cm_reply rep = {};
                int r;

                if (t->fz != FZ_FROZEN && t->fz != FZ_MAYBE)
                        continue;
                r = cm_api_post(t->mount.socket, "/api/v1/unfreeze", NULL, &c, &rep);
                if (r < 0)
                        ret = fail(run, "UnfreezeFailed", "container %s: unfreeze failed, it may still be frozen: %s",
                                   t->name, rep.error);
                else if (rep.status / 100 == 2 ||
                         (t->fz == FZ_MAYBE && (rep.status == 409 || missing_endpoint(&rep))))
                        t->fz = FZ_NONE;
                else
                        ret = fail(run, "UnfreezeFailed", "container %s: unfreeze failed, it may still be frozen: %s",
                                   t->name, rep.error);
                cm_reply_release(&rep);
        }
        return ret;
}

/* ---- commit ---- */

static int prepare(struct run *run, char **targets, size_t n)
{
        const char *env_insecure = getenv("SNAPSHOT_REGISTRY_INSECURE");
        _cleanup_(freep) struct cm_result *res = NULL;
        _cleanup_(freep) char *msg = NULL;
        char err[CM_ERR_MAX];
        int r;

        run->t = calloc(n, sizeof *run->t);
        res = calloc(n, sizeof *res);
        if (!run->t || !res)
                return fail(run, "BadArguments", "out of memory");
        run->n = n;
        for (size_t i = 0; i < n; i++) {
                struct target *t = &run->t[i];

                r = cm_split_target(targets[i], &t->name, &t->uri);
                if (r < 0)
                        return fail(run, "BadArguments", "'%s' is not <container>:<uri>", targets[i]);
                for (size_t j = 0; j < i; j++)
                        if (strcmp(run->t[j].name, t->name) == 0)
                                return fail(run, "BadArguments", "container %s is named twice", t->name);
                r = cm_uri_host(t->uri, &t->host);
                if (r < 0)
                        return fail(run, "BadArguments", "container %s: '%s' has no registry host (HOST/REPO:TAG)",
                                    t->name, t->uri);
                if (cm_oci_ref(t->uri, &t->oci) < 0)
                        return fail(run, "BadArguments", "out of memory");
                t->insecure = cm_registry_insecure(env_insecure, t->host);
                r = cm_registry_auth(run->registry_config, t->host, &t->auth, err);
                if (r < 0)
                        return fail(run, "RegistryConfigInvalid", "%s", err);
                log_debug("container %s -> %s (%s, %s)", t->name, t->oci, t->insecure ? "insecure" : "TLS",
                          t->auth ? "with credentials" : "anonymous");
                res[i] = (struct cm_result){ t->name, t->uri,
                                             "sha256:0000000000000000000000000000000000000000000000000000000000000000" };
        }
        /* The message must fit whatever the digests are: check before any freeze. */
        r = cm_termination_message(res, n, &msg);
        if (r == -E2BIG)
                return fail(run, "BadArguments", "the termination message for these %zu containers would not fit in %d bytes",
                            n, CM_TERMINATION_MAX);
        if (r < 0)
                return fail(run, "BadArguments", "out of memory");
        return 0;
}

static int find_mounts(struct run *run)
{
        for (size_t i = 0; i < run->n; i++) {
                struct target *t = &run->t[i];
                int r = cm_mount_find(run->run_dir, run->pod, run->ns, t->name, &t->mount);

                if (r == -ENOENT)
                        return fail(run, "MountNotFound",
                                    "container %s of pod %s/%s has no stasis mount in %s/mounts; nothing was frozen",
                                    t->name, run->ns, run->pod, run->run_dir);
                if (r == -ENOTUNIQ)
                        return fail(run, "MountAmbiguous",
                                    "container %s of pod %s/%s has more than one stasis mount in %s/mounts; nothing was frozen",
                                    t->name, run->ns, run->pod, run->run_dir);
                if (r < 0)
                        return fail(run, "MountNotFound", "container %s: mount registry %s/mounts: %s", t->name,
                                    run->run_dir, strerror(-r));
                log_debug("container %s: mount %s, stasisd on %s", t->name, t->mount.mountpoint, t->mount.socket);
        }
        return 0;
}

static int report(struct run *run)
{
        _cleanup_(freep) struct cm_result *res = calloc(run->n, sizeof *res);
        _cleanup_(freep) char *msg = NULL, *lines = NULL;
        _cleanup_(closep) int fd = -1;
        int r;

        if (!res)
                return fail(run, "ReportFailed", "out of memory");
        for (size_t i = 0; i < run->n; i++)
                res[i] = (struct cm_result){ run->t[i].name, run->t[i].uri, run->t[i].digest };
        r = cm_termination_message(res, run->n, &msg);
        if (r >= 0)
                r = cm_digest_lines(res, run->n, &lines);
        if (r < 0)
                return fail(run, "ReportFailed", "termination message: %s", strerror(-r));
        fd = open(run->termination_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || write_full(fd, msg, strlen(msg)) < 0)
                return fail(run, "ReportFailed", "termination log %s: %m", run->termination_log);
        fputs(lines, stdout);
        if (fflush(stdout) != 0)
                return fail(run, "ReportFailed", "stdout: %m");
        return 0;
}

/* commit(): 0, or -1 with run->reason set; every freeze undone. */
static int commit(struct run *run)
{
        int r = 0;

        if (find_mounts(run) < 0)
                return -1;
        for (size_t i = 0; i < run->n && r >= 0; i++)
                r = stop_signal ? fail_interrupted(run) : freeze_one(run, &run->t[i]);
        for (size_t i = 0; i < run->n && r >= 0; i++)
                r = stop_signal ? fail_interrupted(run) : capture_one(run, &run->t[i]);
        if (thaw_all(run) < 0)
                r = -1;
        /* the uploads run with every container thawed */
        for (size_t i = 0; i < run->n && r >= 0; i++)
                r = stop_signal ? fail_interrupted(run) : push_one(run, &run->t[i]);
        if (r >= 0 && stop_signal)
                r = fail_interrupted(run);
        return r < 0 ? -1 : 0;
}

static int run_commit(struct run *run, char **targets, size_t n)
{
        char err[CM_ERR_MAX] = "";
        int r;

        if (run->snapshot) {
                r = kube_conn_load(run->server, run->token_file, run->ca_cert, NULL, &run->kube, err);
                if (r < 0)
                        return log_error_errno(r, "SandboxSnapshot status: %s", err), 1;
        }
        r = prepare(run, targets, n);
        if (r >= 0 && run->snapshot && status_write(run, "Committing", false) < 0)
                return 1; /* nothing frozen; the snapshot is not ours to fail */
        if (r >= 0)
                r = commit(run);
        if (r >= 0)
                r = report(run);
        if (run->snapshot && status_write(run, r >= 0 ? "Succeed" : "Failed", r >= 0) < 0)
                return 1;
        return r < 0 ? 1 : 0;
}

/* ---- unpause ---- */

static int run_unpause(struct run *run, char **names, size_t n)
{
        struct cm_call c = { .timeout_s = UNFREEZE_TIMEOUT_S };
        int ret = 0;

        for (size_t i = 0; i < n; i++) {
                static const char *const paths[] = { "/api/v1/unfreeze", "/api/v1/unpause" };
                struct cm_mount m = {};
                int r = cm_mount_find(run->run_dir, run->pod, run->ns, names[i], &m);

                if (r < 0) {
                        ret = fail(run, "MountNotFound", "container %s of pod %s/%s: %s", names[i], run->ns, run->pod,
                                   r == -ENOTUNIQ ? "more than one stasis mount" : "no stasis mount");
                        continue;
                }
                for (size_t p = 0; p < ELEMENTSOF(paths); p++) {
                        struct cm_reply rep = {};

                        r = cm_api_post(m.socket, paths[p], NULL, &c, &rep);
                        if (r < 0)
                                ret = fail(run, "DaemonUnreachable", "container %s: %s: %s", names[i], paths[p], rep.error);
                        else if (missing_endpoint(&rep))
                                ret = fail(run, "DaemonTooOld", "container %s: stasisd on %s has no POST %s (HTTP %ld)",
                                           names[i], m.socket, paths[p], rep.status);
                        else if (rep.status / 100 != 2 && strcmp(rep.reason, "NoFreezer") != 0)
                                ret = fail(run, "UnfreezeFailed", "container %s: %s failed: %s", names[i], paths[p],
                                           rep.error);
                        cm_reply_release(&rep);
                        if (r < 0)
                                break;
                }
                cm_mount_release(&m);
        }
        return ret < 0 ? 1 : 0;
}

/* ---- status ---- */

static int run_status(struct run *run, char **targets, size_t n)
{
        char err[CM_ERR_MAX] = "";
        int r;

        run->t = calloc(n ? n : 1, sizeof *run->t);
        if (!run->t)
                return log_error_errno(-ENOMEM, "%m"), 1;
        run->n = n;
        for (size_t i = 0; i < n; i++) {
                struct target *t = &run->t[i];
                char *at;

                if (cm_split_target(targets[i], &t->name, &t->uri) < 0)
                        return fail(run, "BadArguments", "'%s' is not <container>:<uri>[@<digest>]", targets[i]), 1;
                at = strrchr(t->uri, '@');
                if (at && strncmp(at + 1, "sha256:", 7) == 0) {
                        t->digest = strdup(at + 1);
                        if (!t->digest)
                                return log_error_errno(-ENOMEM, "%m"), 1;
                        *at = 0;
                }
        }
        r = kube_conn_load(run->server, run->token_file, run->ca_cert, NULL, &run->kube, err);
        if (r < 0)
                return log_error_errno(r, "SandboxSnapshot status: %s", err), 1;
        if (strcmp(run->phase, "Failed") == 0 && (!run->reason_opt || !run->message_opt)) {
                usage(stderr, USE_STATUS);
                return log_error("phase Failed needs --reason and --message"), 1;
        }
        return status_write(run, run->phase, strcmp(run->phase, "Succeed") == 0) < 0 ? 1 : 0;
}

/* ---- main ---- */

int main(int argc, char **argv)
{
        enum {
                OPT_TERMINATION_LOG = 0x100, OPT_REGISTRY_CONFIG, OPT_RUN_DIR, OPT_TIMEOUT, OPT_SNAPSHOT,
                OPT_SERVER, OPT_TOKEN_FILE, OPT_CA_CERT, OPT_NODE, OPT_REASON, OPT_MESSAGE, OPT_POD, OPT_HELP,
        };
        static const struct option options[] = {
                { "termination-log", required_argument, NULL, OPT_TERMINATION_LOG },
                { "registry-config", required_argument, NULL, OPT_REGISTRY_CONFIG },
                { "run-dir", required_argument, NULL, OPT_RUN_DIR },
                { "timeout", required_argument, NULL, OPT_TIMEOUT },
                { "snapshot", required_argument, NULL, OPT_SNAPSHOT },
                { "server", required_argument, NULL, OPT_SERVER },
                { "token-file", required_argument, NULL, OPT_TOKEN_FILE },
                { "ca-cert", required_argument, NULL, OPT_CA_CERT },
                { "node", required_argument, NULL, OPT_NODE },
                { "reason", required_argument, NULL, OPT_REASON },
                { "message", required_argument, NULL, OPT_MESSAGE },
                { "pod", required_argument, NULL, OPT_POD },
                { "verbose", no_argument, NULL, 'v' },
                { "help", no_argument, NULL, OPT_HELP },
                {},
        };
        const char *env_run = getenv("STASIS_RUN_DIR");
        struct run run = {
                .run_dir = env_run && *env_run ? env_run : CM_RUN_DIR_DEFAULT,
                .registry_config = CM_REGISTRY_CONFIG_DEFAULT,
                .termination_log = CM_TERMINATION_LOG_DEFAULT,
                .node = getenv("NODE_NAME"),
        };
        struct sigaction sa = { .sa_handler = on_stop };
        char *end;
        int (*mode)(struct run *run, char **args, size_t n);
        int c, ret, skip;

        log_set_prefix("stasis-committer: ");
        while ((c = getopt_long(argc, argv, "v", options, NULL)) >= 0) {
                switch (c) {
                case OPT_TERMINATION_LOG: run.termination_log = optarg; break;
                case OPT_REGISTRY_CONFIG: run.registry_config = optarg; break;
                case OPT_RUN_DIR: run.run_dir = optarg; break;
                case OPT_SNAPSHOT: run.snapshot = optarg; break;
                case OPT_SERVER: run.server = optarg; break;
                case OPT_TOKEN_FILE: run.token_file = optarg; break;
                case OPT_CA_CERT: run.ca_cert = optarg; break;
                case OPT_NODE: run.node = optarg; break;
                case OPT_REASON: run.reason_opt = optarg; break;
                case OPT_MESSAGE: run.message_opt = optarg; break;
                case OPT_POD: run.pod = optarg; break;
                case OPT_TIMEOUT:
                        errno = 0;
                        run.timeout_s = strtol(optarg, &end, 10);
                        if (errno || end == optarg || *end || run.timeout_s < 0) {
                                usage(stderr, USE_ALL);
                                return 1;
                        }
                        break;
                case 'v':
                        log_set_max_level(LOG_LVL_DEBUG);
                        break;
                case OPT_HELP:
                        help();
                        return 0;
                default:
                        usage(stderr, USE_ALL);
                        return 1;
                }
        }
        argc -= optind;
        argv += optind;
        /* No SA_RESTART: a signal must cut a blocking wait short. */
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0)
                return log_error_errno(-errno, "signal handlers: %m"), 1;
        if (argc >= 1 && strcmp(argv[0], "status") == 0) {
                if (argc < 4 || cm_phase_rank(argv[3]) < 0) {
                        usage(stderr, USE_STATUS);
                        return 1;
                }
                run.snapshot = argv[1];
                run.ns = argv[2];
                run.phase = argv[3];
                mode = run_status;
                skip = 4;
        } else if (argc >= 1 && strcmp(argv[0], "unpause") == 0) {
                if (argc < 4) {
                        usage(stderr, USE_UNPAUSE);
                        return 1;
                }
                run.pod = argv[1];
                run.ns = argv[2];
                mode = run_unpause;
                skip = 3;
        } else {
                if (argc < 3) {
                        usage(stderr, USE_COMMIT);
                        return 1;
                }
                run.pod = argv[0];
                run.ns = argv[1];
                mode = run_commit;
                skip = 2;
                log_debug("CONTAINERD_SOCKET=%s CONTAINERD_NAMESPACE=%s (accepted; stasis does not use containerd)",
                          getenv("CONTAINERD_SOCKET") ?: "/run/containerd/containerd.sock",
                          getenv("CONTAINERD_NAMESPACE") ?: "k8s.io");
        }
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                return log_error("libcurl did not initialize"), 1;
        ret = mode(&run, argv + skip, (size_t)argc - (size_t)skip);
        run_release(&run);
        curl_global_cleanup();
        return ret;
}
