/* committer.h — stasis-committer, the drop-in for OpenSandbox's
 * image-committer (../shared/OPENSANDBOX.md is the contract). Owns:
 *   - committer-util.c: the pure parts — splitting <container>:<uri>, the
 *     registry's insecure heuristic, the docker-config credentials lookup,
 *     SNAPSHOT_DIGEST_<NAME> mangling, the termination message, the
 *     failure reasons;
 *   - committer-api.c: the stasisd control-API client (HTTP over the
 *     mount's unix socket, libcurl) and the mount registry lookup by label;
 *   - committer-kube.c: the SandboxSnapshot status writer (merge patch of
 *     the status subresource, libcurl + TLS + bearer token).
 * Single-threaded by design (one run is one thread); no global state. An
 * interruptible call takes a pointer to the caller's stop flag, which the
 * caller's signal handler sets. Never logs a secret: credentials and tokens
 * travel in request bodies and headers only, never in messages. */
#ifndef STASIS_COMMITTER_H
#define STASIS_COMMITTER_H

#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "store/util.h"

#define CM_TERMINATION_MAX 4096 /* the kubelet's limit; the message stays under it */
#define CM_ERR_MAX 512
#define CM_REGISTRY_CONFIG_DEFAULT "/var/run/opensandbox/registry/config.json"
#define CM_TERMINATION_LOG_DEFAULT "/dev/termination-log"
#define CM_RUN_DIR_DEFAULT "/run/stasis"
#define CM_SA_DIR_DEFAULT "/var/run/secrets/kubernetes.io/serviceaccount"

#define CM_LABEL_POD "io.kubernetes.pod.name"
#define CM_LABEL_NAMESPACE "io.kubernetes.pod.namespace"
#define CM_LABEL_CONTAINER "io.kubernetes.container.name"

/* ---- committer-util.c ---- */

/* cm_split_target(): "<container>:<uri>" split at the first ':' into two
 * malloc'd strings. -EINVAL if there is no ':' or either side is empty. */
int cm_split_target(const char *arg, char **ret_name, char **ret_uri);

/* cm_uri_host(): the registry host of a target URI: everything before the
 * first '/' (an "oci://" prefix is skipped). -EINVAL if there is no '/'. */
int cm_uri_host(const char *uri, char **ret_host);

/* cm_oci_ref(): the checkpoint's push target, "oci://" + uri (unchanged if
 * uri already starts with oci://). */
int cm_oci_ref(const char *uri, char **ret);

/* cm_parse_bool(): Go's strconv.ParseBool: 1 t T TRUE true True, 0 f F
 * FALSE false False. -EINVAL for anything else (NULL included). */
int cm_parse_bool(const char *s, bool *ret);

/* cm_host_looks_insecure(): the fallback heuristic: host contains "local",
 * starts with "127.", "10." or "192.168.", or lies in 172.16.–172.31. */
bool cm_host_looks_insecure(const char *host);

/* cm_registry_insecure(): SNAPSHOT_REGISTRY_INSECURE's value (env, may be
 * NULL) if it is a valid bool, else the heuristic on host. */
bool cm_registry_insecure(const char *env, const char *host);

/* cm_registry_auth(): the credentials for host from the docker config at
 * path, as base64("user:pass") for the checkpoint body. *ret = NULL means
 * anonymous: the file is missing, has no auths[host] (exact match), or
 * that entry carries neither "auth" nor "username"+"password". -EINVAL (a
 * malformed file or entry; *ret_err says which, never what), -errno. */
int cm_registry_auth(const char *path, const char *host, char **ret, char *ret_err);

/* cm_env_name(): SNAPSHOT_DIGEST_ suffix of a container name: ASCII
 * uppercase, '-' turned into '_'. */
int cm_env_name(const char *container, char **ret);

/* cm_is_digest(): "sha256:" followed by 64 lowercase hex digits. */
bool cm_is_digest(const char *s);

struct cm_result {
        const char *name;   /* container */
        const char *image;  /* target URI as given */
        const char *digest; /* manifest digest */
};

/* cm_termination_message(): {"containers":[{name,image,digest}...]} and a
 * '\n', in the order given. -E2BIG if it would not stay under
 * CM_TERMINATION_MAX bytes. */
int cm_termination_message(const struct cm_result *res, size_t n, char **ret);

/* cm_digest_lines(): "SNAPSHOT_DIGEST_<NAME>=<digest>\n" per container,
 * then "SNAPSHOT_DIGEST=<first>\n". */
int cm_digest_lines(const struct cm_result *res, size_t n, char **ret);

/* The failure reasons stasis-committer reports (SandboxSnapshot condition
 * reason, termination on stderr). README's "Kubernetes" section lists them
 * with these meanings. */
struct cm_reason {
        const char *reason;
        const char *meaning;
};
extern const struct cm_reason cm_reasons[];
extern const size_t cm_n_reasons;
bool cm_reason_known(const char *reason);

/* ---- committer-api.c: stasisd over its unix socket ---- */

struct cm_mount {
        char *container;  /* io.kubernetes.container.name */
        char *entry;      /* registry entry file */
        char *mountpoint;
        char *socket;
};
void cm_mount_release(struct cm_mount *m);

/* cm_mount_find(): the mount of pod/namespace/container in run_dir/mounts.
 * -ENOENT: none; -ENOTUNIQ: more than one entry carries those labels. */
int cm_mount_find(const char *run_dir, const char *pod, const char *ns, const char *container,
                  struct cm_mount *ret);

struct cm_call {
        long timeout_s;                      /* 0: none */
        const volatile sig_atomic_t *stop;   /* abort when *stop != 0 (NULL: never) */
};

struct cm_reply {
        long status;     /* HTTP status */
        json_t *body;    /* parsed JSON body, or NULL */
        char reason[64]; /* body's "reason", if any */
        char error[CM_ERR_MAX]; /* body's "error", or what went wrong */
};
void cm_reply_release(struct cm_reply *r);

/* cm_api_post(): POST path with a JSON body (NULL: "{}") to the stasisd at
 * socket. 0 with ret->status set for any HTTP answer; -EINTR when *stop was
 * set, -ETIMEDOUT, -ECONNREFUSED/-ENOENT (no daemon), -EIO, with ret->error
 * saying why. */
int cm_api_post(const char *socket, const char *path, const json_t *body, const struct cm_call *c,
                struct cm_reply *ret);

/* ---- committer-kube.c: SandboxSnapshot status ---- */

struct kube_conn {
        char *server;  /* https://host:port */
        char *token;   /* bearer token (secret: never logged) */
        char *ca_file; /* CA bundle path, or NULL for the system's */
};
void kube_conn_release(struct kube_conn *k);

/* kube_conn_load(): explicit values, else in-cluster config
 * (KUBERNETES_SERVICE_HOST/PORT, sa_dir/token and sa_dir/ca.crt). */
int kube_conn_load(const char *server, const char *token_file, const char *ca_file,
                   const char *sa_dir, struct kube_conn *ret, char *ret_err);

struct cm_status_container {
        const char *name;
        const char *image;
        const char *digest; /* NULL unless the phase is Succeed */
};

struct cm_status_update {
        const char *phase;   /* Pending Committing Succeed Failed */
        const char *reason;  /* Failed: the condition's reason */
        const char *message; /* Failed: its message */
        const char *pod;     /* sourcePodName, or NULL to leave it */
        const char *node;    /* sourceNodeName, or NULL to leave it */
        const struct cm_status_container *containers;
        size_t n_containers; /* 0: leave containers as they are */
        time_t now;          /* lastTransitionTime of new conditions */
};

/* cm_phase_rank(): Pending 0, Committing 1, Succeed/Failed 2; -1 unknown. */
int cm_phase_rank(const char *phase);

/* cm_status_patch(): the merge patch that moves object (as GET returned it)
 * to u, carrying its metadata.resourceVersion. -EPERM if the object's
 * phase is terminal (it never changes again), -EINVAL if u moves the phase
 * backwards or is incomplete; *ret_err says why. */
int cm_status_patch(const json_t *object, const struct cm_status_update *u, json_t **ret,
                    char *ret_err);

/* kube_status_write(): GET the SandboxSnapshot ns/name, PATCH its status
 * subresource with cm_status_patch(), and on 409 start again from a fresh
 * GET (at most a few times). -EPERM (terminal), -ENOENT (404), -EACCES
 * (401/403), -EINVAL (422 or a bad update), -EBUSY (409s to the end),
 * -errno; *ret_err says why in one sentence. */
int kube_status_write(const struct kube_conn *k, const char *ns, const char *name,
                      const struct cm_status_update *u, char *ret_err);

#endif
