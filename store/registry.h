/* registry.h — internal to the OCI store (backend-oci.c, registry-copy.c):
 * an HTTP client for one OCI distribution registry over libcurl. Owns a
 * bounded pool of easy handles (one request per handle at a time, so
 * requests from many threads run concurrently and reuse connections), the
 * registry's base URL (https, or http only with insecure), its credentials
 * (docker config.json) and the bearer tokens it was given (reused until they
 * expire). Retries 429, 5xx and connection faults with exponential backoff
 * and jitter; follows redirects itself, dropping Authorization when the
 * target is another origin. Thread-safe. Logs nothing above debug level:
 * failures come back as -errno plus a message for the caller to log once.
 * Never puts a secret in a message. */
#ifndef STASIS_REGISTRY_H
#define STASIS_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "oci.h"

#define REG_ERR_MAX OCI_ERR_MAX

struct registry;

struct reg_request {
        const char *method; /* GET HEAD POST PUT PATCH DELETE */
        const char *url;    /* "/v2/..." on the registry, or an absolute URL */
        const char *scope;  /* token scope, e.g. "repository:R:pull" */
        const char *headers[6]; /* extra request headers, NULL-terminated */
        const void *body;
        size_t body_len;
        /* The response body goes into dst (at most cap bytes; more is an
         * error unless truncate_ok) if dst is set, else into a malloc'd
         * buffer of at most body_max bytes (0: bodies are discarded, except
         * that error bodies are kept for the message). */
        void *dst;
        size_t cap;
        uint64_t range_off; /* a Range request from this offset: a 200 (whole
                             * blob) answer is skipped to it */
        size_t body_max;
        /* A total deadline (now_ns() clock) for the request and its retries;
         * 0: no total deadline (uploads), only connect and low-speed limits. */
        uint64_t deadline_ns;
        bool no_retry;
};

struct reg_response {
        long status;
        char *body; /* malloc'd (see body_max), NUL-terminated */
        size_t body_len; /* bytes received (into dst or body) */
        uint64_t content_length; /* from the header; UINT64_MAX if none */
        bool has_content_length;
        char location[2048];
        char digest[DIGEST_STR_LEN + 8]; /* Docker-Content-Digest */
        char content_type[128];
        char error[REG_ERR_MAX]; /* what went wrong, for the caller's log line */
};
void reg_response_release(struct reg_response *r);

/* registry_new(): resolve the base URL and credentials, ping /v2/ and
 * authenticate for scope. -EACCES for refused credentials, -errno; *ret_err
 * (REG_ERR_MAX bytes) says why in words. */
int registry_new(const char *host, const struct registry_opts *o, const char *scope,
                 struct registry **ret, char *ret_err);
struct registry *registry_free(struct registry *r);
const char *registry_host(const struct registry *r);

/* registry_do(): one request, with auth, redirects and retries. Returns 0
 * with resp->status set for any HTTP answer (the caller judges the status:
 * 401 after authenticating is reported as -EACCES, though), else -errno with
 * resp->error set. resp is released first. */
int registry_do(struct registry *r, const struct reg_request *q, struct reg_response *resp);

/* reg_status_errno(): the -errno for an HTTP status, and a message with the
 * registry's error code from the body, if any, into resp->error. */
int reg_status_errno(struct reg_response *resp);

/* registry_fetch_timeout_ns(): the deadline a read gets (registry_opts). */
uint64_t registry_fetch_timeout_ns(const struct registry *r);

/* Counters, read with atomics. */
void registry_counters(struct registry *r, uint64_t *ret_requests, uint64_t *ret_retries);

/* Helpers for the docker config and auth (registry-auth.c). */
struct reg_creds {
        char *user;
        char *secret; /* password or identity token; wiped on release */
};
void reg_creds_release(struct reg_creds *c);
/* reg_creds_load(): credentials for host from the docker config at path
 * (NULL: the default places). 0 with empty creds if there are none; -errno
 * with *ret_err set for an unreadable or malformed config. */
int reg_creds_load(const char *path, const char *host, struct reg_creds *ret, char *ret_err);
/* reg_creds_from_auth(): credentials from a config's "auth" value (base64 of
 * "user:password"); "" gives empty creds. -EINVAL for anything else. */
int reg_creds_from_auth(const char *auth, struct reg_creds *ret);

/* A parsed WWW-Authenticate challenge. */
struct reg_challenge {
        enum { REG_AUTH_NONE, REG_AUTH_BASIC, REG_AUTH_BEARER } scheme;
        char realm[1024];
        char service[256];
        char scope[512];
};
int reg_challenge_parse(const char *header, struct reg_challenge *ret);
/* reg_base64(): standard base64 of len bytes, malloc'd; NULL on OOM. */
char *reg_base64(const void *data, size_t len);

#endif
