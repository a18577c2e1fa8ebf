/* oci.h — the OCI registry store: an OCI distribution registry
 * (oci://HOST[:PORT]/REPO) behind the backend vtable of backend.h, plus push
 * and pull of snapshots between a local store and a registry. Owns the HTTP
 * client (libcurl, a bounded pool of easy handles), registry auth (anonymous,
 * basic, bearer-token challenge flow, docker config.json) and the mapping of
 * the store's index onto registry tags (docs/registry.md). Thread-safe: every
 * operation may run concurrently on one backend. Does not verify content
 * (callers hash what they read, as with every backend), does no FUSE.
 * Secrets (passwords, tokens, auth headers) never appear in a log line or an
 * error message. */
#ifndef STASIS_OCI_H
#define STASIS_OCI_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "digest.h"

#define OCI_HOST_MAX 256
#define OCI_REPO_MAX 256
#define OCI_TAG_MAX 128
#define OCI_ERR_MAX 384 /* an error sentence (backend_oci_connect()) */
/* Defaults; see struct registry_opts. */
#define OCI_FETCH_TIMEOUT_DEFAULT_SEC 30
#define OCI_CONNECT_TIMEOUT_SEC 10
#define OCI_RETRIES_DEFAULT 4
#define OCI_CONNECTIONS_DEFAULT 8
/* Blobs larger than this go up in PATCH chunks of this size. */
#define OCI_UPLOAD_CHUNK (4u << 20)
/* A lazy read may be widened to at most this many bytes (coalescing). */
#define OCI_COALESCE_MAX (4u << 20)

/* Environment equivalents of the CLI's registry options (the CLI sets them
 * from its options, so a daemon it starts inherits them). */
#define OCI_ENV_CONFIG "STASIS_REGISTRY_CONFIG"
#define OCI_ENV_CA_CERT "STASIS_CA_CERT"
#define OCI_ENV_INSECURE "STASIS_INSECURE"
#define OCI_ENV_FETCH_TIMEOUT "STASIS_FETCH_TIMEOUT"

struct registry_opts {
        const char *config_path; /* docker config.json; NULL: $DOCKER_CONFIG/config.json, else ~/.docker/config.json */
        const char *ca_cert;     /* PEM CA bundle that replaces the system's; NULL: system */
        bool insecure;           /* plain HTTP allowed, TLS not verified */
        uint64_t fetch_timeout_ms; /* deadline of one read, retries included; 0: default */
        unsigned retries;        /* after the first attempt; 0: default (UINT_MAX: none) */
        unsigned connections;    /* concurrent requests; 0: default */
        bool push;               /* ask tokens for pull,push (else pull) */
        const char *mount_from;  /* another repository of the registry to mount blobs from, or NULL */
        /* Credentials given in place of a docker config (a control-API
         * request carries them): base64 of "user:password", a config's
         * "auth". Set, no config is read and "" means anonymous. Secret. */
        const char *auth;
        const char *ca_pem;      /* a PEM CA bundle as text, in place of ca_cert's file; NULL: none */
};

/* registry_opts_from_env(): fill o from the OCI_ENV_* variables (unset ones
 * keep their value). -EINVAL (logged) for a bad STASIS_FETCH_TIMEOUT. */
int registry_opts_from_env(struct registry_opts *o);

/* oci_registry_auth(): the credentials for host in the docker config at
 * config_path (NULL: $DOCKER_CONFIG/config.json, else ~/.docker/config.json),
 * as registry_opts.auth takes them: base64 of "user:password", malloc'd; ""
 * if there are none (anonymous). Logs (never the secret) and returns -errno
 * for an unreadable or malformed config. The caller wipes and frees it. */
int oci_registry_auth(const char *config_path, const char *host, char **ret);

/* A parsed reference: oci://HOST[:PORT]/REPO[:TAG|@sha256:HEX]. */
struct oci_ref {
        char host[OCI_HOST_MAX];  /* with the port, if any */
        char repo[OCI_REPO_MAX];
        char tag[OCI_TAG_MAX + 1]; /* "" if none */
        bool has_digest;
        struct digest digest;
};
/* oci_ref_parse(): -EINVAL for anything else (not logged). */
int oci_ref_parse(const char *s, struct oci_ref *ret);

/* backend_oci_open(): a backend for repository repo on registry host. Pings
 * the registry (GET /v2/) and authenticates, so unreachable registries and
 * wrong credentials fail here, logged once naming the registry. */
int backend_oci_open(const char *host, const char *repo, const struct registry_opts *o,
                     struct backend **ret);
/* backend_oci_connect(): backend_oci_open() that logs nothing and says why it
 * failed in ret_err (OCI_ERR_MAX bytes, one sentence naming the registry,
 * never a secret): -EACCES for refused credentials, -errno. */
int backend_oci_connect(const char *host, const char *repo, const struct registry_opts *o,
                        struct backend **ret, char *ret_err);
bool backend_is_oci(const struct backend *b);
/* backend_oci_exact_reads(): from now on every read fetches exactly the
 * range asked for and keeps nothing (on), or sequential reads of a blob are
 * coalesced here again (off, the default). For a caller that coalesces its
 * own reads: a mount, once its tree is loaded (fs/read.c). No-op for a
 * backend that is not a registry. */
void backend_oci_exact_reads(struct backend *b, bool on);

/* backend_oci_take_error(): the sentence of the first request that failed
 * on b since the last call (naming the registry, never a secret), into ret
 * (OCI_ERR_MAX bytes); "" if none. For callers that report a failure
 * elsewhere than the log (stasisd's API). */
void backend_oci_take_error(struct backend *b, char *ret);

/* backend_oci_node_new(): a node store in front of a registry, for
 * checkpoints of a mount made from oci://: writes, the index, list and
 * remove go to local (a local store on the node); has, size, read and
 * freshen try local, then remote (the registry). A snapshot published
 * through it keeps its new blobs on the node; oci_push() from it uploads
 * them, and the registry's own blobs are skipped by HEAD. Borrows both. */
int backend_oci_node_new(struct backend *local, struct backend *remote, struct backend **ret);

struct oci_stats {
        uint64_t requests, retries;
        uint64_t bytes_uploaded, blobs_uploaded, blobs_mounted, blobs_present;
        uint64_t bytes_downloaded, range_requests;
};
void backend_oci_stats(struct backend *b, struct oci_stats *ret);

/* oci_manifest_get(): the manifest named by ref (a tag or sha256: digest),
 * fetched with the OCI Accept header. The bytes are not checked against a
 * digest ref: the caller hashes them. *ret_digest gets the registry's
 * Docker-Content-Digest, or the SHA-256 of the bytes if it sent none.
 * -ENOENT if absent. */
int oci_manifest_get(struct backend *b, const char *ref, void **ret, size_t *ret_len,
                     struct digest *ret_digest);
/* oci_manifest_head(): the digest the registry has for manifest ref (its
 * Docker-Content-Digest): 1 with *ret, 0 if absent or the registry named no
 * digest, -errno (not logged above debug level). */
int oci_manifest_head(struct backend *b, const char *ref, struct digest *ret);
/* oci_manifest_put(): PUT an OCI image manifest by ref (a tag, or NULL for
 * its digest). Every blob it names must be in the repository already. */
int oci_manifest_put(struct backend *b, const char *ref, const void *data, size_t len);

/* Copying snapshots. Every blob is checked on the way: pull verifies each
 * against its digest before it is stored locally. */
struct oci_copy_stats {
        uint64_t blobs_total, blobs_copied, blobs_skipped, blobs_mounted;
        uint64_t bytes_total, bytes_copied;
        bool manifest_skipped; /* push: the tag named this manifest already */
        struct digest manifest;
        uint64_t wall_ns;
};
/* oci_push(): snapshot snap from src into the registry dst under tag (NULL:
 * by digest, untagged): blobs the registry lacks (up to jobs at once), then
 * the manifest, unless the registry has it under that tag already. */
int oci_push(struct backend *src, const struct digest *snap, struct backend *dst, const char *tag,
             unsigned jobs, struct oci_copy_stats *ret);
/* oci_pull(): the snapshot ref (tag or sha256: digest) from registry src
 * into the local store dst, verified, and tagged tag there (NULL: untagged root). */
int oci_pull(struct backend *src, const char *ref, struct backend *dst, const char *tag,
             unsigned jobs, struct oci_copy_stats *ret);

#endif
