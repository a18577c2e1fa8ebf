/* registry.c — see registry.h: the HTTP client of the OCI store.
 *
 * Locking: one mutex per registry guards the handle pool, the learned auth
 * scheme and challenge, and the token cache; it is never held during network
 * I/O. A request holds one easy handle for its whole life (retries,
 * redirects, a token fetch included), so at most `connections` requests run
 * at once and the rest wait for a handle.
 *
 * curl codes are converted here, at the edge, to -errno (curl_errno()).
 *
 * libcurl is not linked: it is dlopen'd the first time a registry is made
 * (curl_load()), and every call goes through the table `curl`. Loading
 * libcurl's dependency chain (krb5, gnutls, ldap, ssh2, nghttp2, ...) costs
 * each exec of stasis and stasisd milliseconds, and a local mount never
 * speaks HTTP (docs/dependencies.md has the numbers). */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "registry.h"
#include "util.h"

#define N_TOKENS 8
#define MAX_REDIRECTS 5
#define ERROR_BODY_MAX 4096
#define TOKEN_BODY_MAX (1u << 20)
#define BACKOFF_BASE_MS 100u
#define BACKOFF_CAP_MS 5000u
#define RETRY_AFTER_CAP_SEC 10u
#define LOW_SPEED_BYTES 1024L
#define LOW_SPEED_SEC 30L

struct token {
        char *scope;
        char *value; /* secret */
        uint64_t expires_ns;
};

struct registry {
        char host[OCI_HOST_MAX];
        char base[OCI_HOST_MAX + 16]; /* "https://host" or "http://host" */
        char *ca_cert;
        char *ca_pem; /* a CA bundle as text (registry_opts.ca_pem), or NULL */
        size_t ca_pem_len;
        bool insecure;
        unsigned retries;
        uint64_t fetch_timeout_ns;
        struct reg_creds creds; /* immutable after registry_new() */

        pthread_mutex_t lock;
        pthread_cond_t cond;
        CURL **handles;  /* lock: created on first use */
        bool *busy;      /* lock */
        unsigned n_handles;
        int scheme;                     /* lock: REG_AUTH_* the registry asked for */
        struct reg_challenge challenge; /* lock: the last Bearer challenge */
        struct token tokens[N_TOKENS];  /* lock */
        unsigned next_token;            /* lock: round-robin slot to replace */

        atomic_uint_fast64_t requests, retries_done, token_fetches;
};

void reg_response_release(struct reg_response *r)
{
        if (!r)
                return;
        free(r->body);
        *r = (struct reg_response){ .content_length = UINT64_MAX };
}

const char *registry_host(const struct registry *r) { return r->host; }

uint64_t registry_fetch_timeout_ns(const struct registry *r) { return r->fetch_timeout_ns; }

void registry_counters(struct registry *r, uint64_t *ret_requests, uint64_t *ret_retries)
{
        *ret_requests = atomic_load(&r->requests);
        *ret_retries = atomic_load(&r->retries_done);
}

/* set_error(): resp->error, truncated if need be (a message, not data). */
static void set_error(struct reg_response *r, const char *fmt, ...) _printf_(2, 3);
static void set_error(struct reg_response *r, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        (void)vsnprintf(r->error, sizeof r->error, fmt, ap);
        va_end(ap);
}

static void errf(char *buf, size_t n, const char *fmt, ...) _printf_(3, 4);
static void errf(char *buf, size_t n, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        (void)vsnprintf(buf, n, fmt, ap);
        va_end(ap);
}

static void wipe_free(char *s)
{
        if (!s)
                return;
        for (volatile char *p = s; *p; p++)
                *p = 0;
        free(s);
}

/* ---- libcurl, loaded on first use ---- */

#define CURL_SONAME "libcurl.so.4"

/* The libcurl functions this file calls, typed from curl.h's own prototypes:
 * typeof(curl_easy_setopt) names the function, since curl.h's type-checking
 * macros of the same names are function-like and expand only before a "(".
 * Calls through the table skip those checks (the arguments are the ones that
 * passed them when libcurl was linked). Written once, by the first
 * curl_load() (dl_lib_load()), and only read after that: process-wide by
 * nature, like the library itself. */
struct curl_fns {
        typeof(curl_global_init) *global_init;
        typeof(curl_global_cleanup) *global_cleanup;
        typeof(curl_easy_init) *easy_init;
        typeof(curl_easy_cleanup) *easy_cleanup;
        typeof(curl_easy_reset) *easy_reset;
        typeof(curl_easy_setopt) *easy_setopt;
        typeof(curl_easy_perform) *easy_perform;
        typeof(curl_easy_getinfo) *easy_getinfo;
        typeof(curl_easy_escape) *easy_escape;
        typeof(curl_slist_append) *slist_append;
        typeof(curl_slist_free_all) *slist_free_all;
};

static struct curl_fns curl; /* filled by curl_load() */
static struct dl_lib curl_lib = DL_LIB(CURL_SONAME, "libcurl4");
#define CURL_SYM(f) { "curl_" #f, &curl.f }
static const struct dl_sym curl_syms[] = {
        CURL_SYM(global_init),  CURL_SYM(global_cleanup), CURL_SYM(easy_init),
        CURL_SYM(easy_cleanup), CURL_SYM(easy_reset),     CURL_SYM(easy_setopt),
        CURL_SYM(easy_perform), CURL_SYM(easy_getinfo),   CURL_SYM(easy_escape),
        CURL_SYM(slist_append), CURL_SYM(slist_free_all),
};
#undef CURL_SYM

/* curl_load(): make `curl` usable; once per process, the first time a
 * registry is made. 0, or -ELIBACC (no libcurl) / -ELIBBAD (not the libcurl
 * we need), with the reason in ret_err (REG_ERR_MAX bytes). */
static int curl_load(const char *host, char *ret_err)
{
        int r = dl_lib_load(&curl_lib, curl_syms, ELEMENTSOF(curl_syms));

        if (r < 0)
                errf(ret_err, REG_ERR_MAX, "registry %s: %s", host, curl_lib.err);
        return r;
}

/* ---- one transfer ---- */

struct xfer {
        const struct reg_request *q;
        struct reg_response *resp;
        CURL *h;
        size_t body_cap;
        uint64_t skipped;
        bool overflow;
        char www_auth[2048];
        unsigned retry_after;
};

static bool header_is(const char *line, size_t len, const char *name, const char **ret_val,
                      size_t *ret_len)
{
        size_t n = strlen(name);
        const char *v;
        size_t vl;

        if (len <= n || line[n] != ':' || strncasecmp(line, name, n) != 0)
                return false;
        v = line + n + 1;
        vl = len - n - 1;
        while (vl > 0 && (*v == ' ' || *v == '\t'))
                v++, vl--;
        while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
                vl--;
        *ret_val = v;
        *ret_len = vl;
        return true;
}

static void copy_val(char *dst, size_t cap, const char *v, size_t vl)
{
        if (vl >= cap)
                vl = cap - 1;
        memcpy(dst, v, vl);
        dst[vl] = 0;
}

static size_t on_header(char *line, size_t size, size_t n, void *ctx)
{
        struct xfer *x = ctx;
        struct reg_response *r = x->resp;
        size_t len = size * n, vl;
        const char *v;

        if (len >= 5 && strncmp(line, "HTTP/", 5) == 0) {
                /* a new response (after 100 Continue, say): forget the last */
                r->location[0] = r->digest[0] = r->content_type[0] = 0;
                r->has_content_length = false;
                r->content_length = UINT64_MAX;
                x->www_auth[0] = 0;
                x->retry_after = 0;
        } else if (header_is(line, len, "location", &v, &vl))
                copy_val(r->location, sizeof r->location, v, vl);
        else if (header_is(line, len, "docker-content-digest", &v, &vl))
                copy_val(r->digest, sizeof r->digest, v, vl);
        else if (header_is(line, len, "content-type", &v, &vl))
                copy_val(r->content_type, sizeof r->content_type, v, vl);
        else if (header_is(line, len, "www-authenticate", &v, &vl)) {
                /* keep the first Bearer or Basic challenge */
                if (!x->www_auth[0])
                        copy_val(x->www_auth, sizeof x->www_auth, v, vl);
        } else if (header_is(line, len, "retry-after", &v, &vl)) {
                char buf[16];
                copy_val(buf, sizeof buf, v, vl);
                x->retry_after = (unsigned)MIN(strtoul(buf, NULL, 10), RETRY_AFTER_CAP_SEC);
        } else if (header_is(line, len, "content-length", &v, &vl)) {
                char buf[24], *end;
                unsigned long long cl;
                copy_val(buf, sizeof buf, v, vl);
                errno = 0;
                cl = strtoull(buf, &end, 10);
                if (!errno && end != buf && !*end) {
                        r->content_length = cl;
                        r->has_content_length = true;
                }
        }
        return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *ctx)
{
        struct xfer *x = ctx;
        struct reg_response *r = x->resp;
        size_t len = size * n;
        long status = 0;

        (void)curl.easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 300) {
                /* error bodies: keep the start, for the message */
                size_t room;
                if (!r->body) {
                        r->body = malloc(ERROR_BODY_MAX + 1);
                        if (!r->body)
                                return 0;
                        x->body_cap = ERROR_BODY_MAX;
                }
                room = x->body_cap - r->body_len;
                memcpy(r->body + r->body_len, data, MIN(room, len));
                r->body_len += MIN(room, len);
                r->body[r->body_len] = 0;
                return len;
        }
        if (x->q->dst && status == 200 && x->skipped < x->q->range_off) {
                /* the server ignored our Range: skip to the offset */
                size_t skip = (size_t)MIN((uint64_t)len, x->q->range_off - x->skipped);
                x->skipped += skip;
                data += skip;
                len -= skip;
                if (len == 0)
                        return size * n;
        }
        if (x->q->dst) {
                size_t room = x->q->cap - r->body_len;
                if (len > room) {
                        memcpy((char *)x->q->dst + r->body_len, data, room);
                        r->body_len += room;
                        x->overflow = true;
                        return 0; /* stop: the caller has what it asked for */
                }
                memcpy((char *)x->q->dst + r->body_len, data, len);
                r->body_len += len;
                return size * n;
        }
        if (x->q->body_max == 0)
                return len;
        if (r->body_len + len > x->q->body_max) {
                x->overflow = true;
                return 0;
        }
        if (r->body_len + len + 1 > x->body_cap) {
                size_t cap = MAX(x->body_cap * 2, r->body_len + len + 1);
                char *nb;
                cap = MIN(cap, x->q->body_max + 1);
                nb = realloc(r->body, cap);
                if (!nb)
                        return 0;
                r->body = nb;
                x->body_cap = cap;
        }
        memcpy(r->body + r->body_len, data, len);
        r->body_len += len;
        r->body[r->body_len] = 0;
        return len;
}

static bool curl_retryable(CURLcode c)
{
        switch (c) {
        case CURLE_COULDNT_CONNECT:
        case CURLE_OPERATION_TIMEDOUT:
        case CURLE_SEND_ERROR:
        case CURLE_RECV_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_PARTIAL_FILE:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
                return true;
        default:
                return false;
        }
}

/* curl_errno(): the edge where curl's codes become -errno. */
static int curl_errno(CURLcode c)
{
        switch (c) {
        case CURLE_OK:
                return 0;
        case CURLE_OUT_OF_MEMORY:
                return -ENOMEM;
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
                return -EHOSTUNREACH;
        case CURLE_COULDNT_CONNECT:
                return -ECONNREFUSED;
        case CURLE_OPERATION_TIMEDOUT:
                return -ETIMEDOUT;
        case CURLE_SEND_ERROR:
        case CURLE_RECV_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_PARTIAL_FILE:
                return -ECONNRESET;
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CIPHER:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_ISSUER_ERROR:
                return -EPROTO;
        case CURLE_WRITE_ERROR:
                return -EFBIG;
        case CURLE_URL_MALFORMAT:
        case CURLE_UNSUPPORTED_PROTOCOL:
                return -EINVAL;
        default:
                return -EIO;
        }
}

static uint64_t remaining_ms(uint64_t deadline_ns)
{
        uint64_t now = now_ns();
        if (!deadline_ns)
                return UINT64_MAX;
        if (now >= deadline_ns)
                return 0;
        return (deadline_ns - now) / 1000000 + 1;
}

/* perform(): one HTTP exchange on handle h; no auth logic, no retries. */
static CURLcode perform(struct registry *reg, CURL *h, const struct reg_request *q, const char *url,
                        const char *auth, struct reg_response *resp, struct xfer *x, char *errbuf)
{
        struct curl_slist *hl = NULL, *t;
        bool has_ct = false;
        uint64_t left = remaining_ms(q->deadline_ns);
        CURLcode c;

        free(resp->body);
        *resp = (struct reg_response){ .content_length = UINT64_MAX };
        *x = (struct xfer){ .q = q, .resp = resp, .h = h };
        errbuf[0] = 0;
        if (left == 0)
                return CURLE_OPERATION_TIMEDOUT;

        curl.easy_reset(h);
        for (size_t i = 0; i < ELEMENTSOF(q->headers) && q->headers[i]; i++) {
                if (strncasecmp(q->headers[i], "content-type:", 13) == 0)
                        has_ct = true;
                t = curl.slist_append(hl, q->headers[i]);
                if (!t)
                        goto oom;
                hl = t;
        }
        if (q->body && !has_ct) {
                t = curl.slist_append(hl, "Content-Type: application/octet-stream");
                if (!t)
                        goto oom;
                hl = t;
        }
        t = curl.slist_append(hl, "Expect:"); /* no 100-continue round trip */
        if (!t)
                goto oom;
        hl = t;
        if (auth) {
                t = curl.slist_append(hl, auth);
                if (!t)
                        goto oom;
                hl = t;
        }

        (void)curl.easy_setopt(h, CURLOPT_URL, url);
        (void)curl.easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
        (void)curl.easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        (void)curl.easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
        (void)curl.easy_setopt(h, CURLOPT_HTTPHEADER, hl);
        (void)curl.easy_setopt(h, CURLOPT_USERAGENT, "stasis/0.1");
        (void)curl.easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L); /* registry_do() follows */
        (void)curl.easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
        (void)curl.easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                               (long)MIN(left, (uint64_t)OCI_CONNECT_TIMEOUT_SEC * 1000));
        (void)curl.easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, LOW_SPEED_BYTES);
        (void)curl.easy_setopt(h, CURLOPT_LOW_SPEED_TIME, LOW_SPEED_SEC);
        if (q->deadline_ns)
                (void)curl.easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)MIN(left, (uint64_t)LONG_MAX));
        if (reg->ca_pem) {
                struct curl_blob blob = { .data = reg->ca_pem, .len = reg->ca_pem_len,
                                          .flags = CURL_BLOB_NOCOPY }; /* lives as long as reg */
                (void)curl.easy_setopt(h, CURLOPT_CAINFO_BLOB, &blob);
        } else if (reg->ca_cert)
                (void)curl.easy_setopt(h, CURLOPT_CAINFO, reg->ca_cert);
        if (reg->insecure) {
                (void)curl.easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
                (void)curl.easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
        }
        (void)curl.easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        (void)curl.easy_setopt(h, CURLOPT_HEADERDATA, x);
        (void)curl.easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        (void)curl.easy_setopt(h, CURLOPT_WRITEDATA, x);

        if (strcmp(q->method, "HEAD") == 0)
                (void)curl.easy_setopt(h, CURLOPT_NOBODY, 1L);
        else if (strcmp(q->method, "GET") == 0)
                (void)curl.easy_setopt(h, CURLOPT_HTTPGET, 1L);
        else {
                (void)curl.easy_setopt(h, CURLOPT_POST, 1L);
                (void)curl.easy_setopt(h, CURLOPT_POSTFIELDS, q->body ? q->body : "");
                (void)curl.easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body_len);
                if (strcmp(q->method, "POST") != 0)
                        (void)curl.easy_setopt(h, CURLOPT_CUSTOMREQUEST, q->method);
        }

        atomic_fetch_add(&reg->requests, 1);
        c = curl.easy_perform(h);
        if (c == CURLE_WRITE_ERROR && x->overflow && q->dst)
                c = CURLE_OK; /* we stopped it: dst is full */
        if (c == CURLE_OK)
                (void)curl.easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
        /* drop the slist (it holds the Authorization line) before returning */
        (void)curl.easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
        curl.slist_free_all(hl);
        return c;
oom:
        curl.slist_free_all(hl);
        return CURLE_OUT_OF_MEMORY;
}

/* ---- handles ---- */

static CURL *handle_get(struct registry *reg, unsigned *ret_slot)
{
        CURL *h = NULL;

        pthread_mutex_lock(&reg->lock);
        for (;;) {
                for (unsigned i = 0; i < reg->n_handles; i++) {
                        if (reg->busy[i])
                                continue;
                        if (!reg->handles[i])
                                reg->handles[i] = curl.easy_init();
                        if (!reg->handles[i])
                                goto out;
                        reg->busy[i] = true;
                        h = reg->handles[i];
                        *ret_slot = i;
                        goto out;
                }
                pthread_cond_wait(&reg->cond, &reg->lock);
        }
out:
        pthread_mutex_unlock(&reg->lock);
        return h;
}

static void handle_put(struct registry *reg, unsigned slot)
{
        pthread_mutex_lock(&reg->lock);
        reg->busy[slot] = false;
        pthread_cond_signal(&reg->cond);
        pthread_mutex_unlock(&reg->lock);
}

/* ---- auth ---- */

/* auth_header(): "Authorization: ..." for scope, malloc'd, or NULL if we
 * have nothing to send (yet). */
static char *auth_header(struct registry *reg, const char *scope)
{
        char *out = NULL;
        uint64_t now = now_ns();

        pthread_mutex_lock(&reg->lock);
        if (reg->scheme == REG_AUTH_BASIC && reg->creds.user) {
                _cleanup_(freep) char *plain = NULL;
                if (asprintf(&plain, "%s:%s", reg->creds.user, reg->creds.secret) >= 0) {
                        char *b64 = reg_base64(plain, strlen(plain));
                        if (b64 && asprintf(&out, "Authorization: Basic %s", b64) < 0)
                                out = NULL;
                        wipe_free(b64);
                        for (volatile char *p = plain; *p; p++)
                                *p = 0;
                }
        } else if (reg->scheme == REG_AUTH_BEARER) {
                for (unsigned i = 0; i < N_TOKENS; i++) {
                        const struct token *t = &reg->tokens[i];
                        if (t->value && strcmp(t->scope, scope ? scope : "") == 0 &&
                            t->expires_ns > now) {
                                if (asprintf(&out, "Authorization: Bearer %s", t->value) < 0)
                                        out = NULL;
                                break;
                        }
                }
        }
        pthread_mutex_unlock(&reg->lock);
        return out;
}

static bool need_token(struct registry *reg, const char *scope)
{
        uint64_t now = now_ns();
        bool need = false;

        pthread_mutex_lock(&reg->lock);
        if (reg->scheme == REG_AUTH_BEARER) {
                need = true;
                for (unsigned i = 0; i < N_TOKENS; i++)
                        if (reg->tokens[i].value && strcmp(reg->tokens[i].scope, scope ? scope : "") == 0 &&
                            reg->tokens[i].expires_ns > now)
                                need = false;
        }
        pthread_mutex_unlock(&reg->lock);
        return need;
}

static void token_store(struct registry *reg, const char *scope, char *value, uint64_t expires_ns)
{
        struct token *t = NULL;
        char *sc = strdup(scope ? scope : "");

        if (!sc) {
                wipe_free(value);
                return;
        }
        pthread_mutex_lock(&reg->lock);
        for (unsigned i = 0; i < N_TOKENS && !t; i++)
                if (reg->tokens[i].scope && strcmp(reg->tokens[i].scope, sc) == 0)
                        t = &reg->tokens[i];
        for (unsigned i = 0; i < N_TOKENS && !t; i++)
                if (!reg->tokens[i].value)
                        t = &reg->tokens[i];
        if (!t)
                t = &reg->tokens[reg->next_token++ % N_TOKENS];
        free(t->scope);
        wipe_free(t->value);
        *t = (struct token){ .scope = sc, .value = value, .expires_ns = expires_ns };
        pthread_mutex_unlock(&reg->lock);
}

/* fetch_token(): GET realm?service=&scope= (with basic credentials if we
 * have them) on handle h, and cache the token under scope. */
static int fetch_token(struct registry *reg, CURL *h, const struct reg_challenge *ch,
                       const char *scope, struct reg_response *resp)
{
        _cleanup_(freep) char *url = NULL, *esc_service = NULL, *esc_scope = NULL;
        _cleanup_(json_decrefp) json_t *j = NULL;
        char *auth = NULL, errbuf[CURL_ERROR_SIZE];
        const char *want = ch->scope[0] ? ch->scope : scope;
        const char *tok;
        struct reg_request q = {
                .method = "GET",
                .body_max = TOKEN_BODY_MAX,
                .deadline_ns = now_ns() + reg->fetch_timeout_ns,
                .headers = { "Accept: application/json" },
        };
        struct xfer x;
        json_int_t expires;
        CURLcode c;
        char *tv;
        int n;

        esc_service = curl.easy_escape(h, ch->service, 0);
        esc_scope = want ? curl.easy_escape(h, want, 0) : strdup("");
        if (!esc_service || !esc_scope)
                return -ENOMEM;
        n = asprintf(&url, "%s%cservice=%s%s%s", ch->realm, strchr(ch->realm, '?') ? '&' : '?',
                     esc_service, *esc_scope ? "&scope=" : "", esc_scope);
        if (n < 0)
                return -ENOMEM;
        if (reg->creds.user) {
                _cleanup_(freep) char *plain = NULL;
                char *b64;
                if (asprintf(&plain, "%s:%s", reg->creds.user, reg->creds.secret) < 0)
                        return -ENOMEM;
                b64 = reg_base64(plain, strlen(plain));
                for (volatile char *p = plain; *p; p++)
                        *p = 0;
                if (!b64 || asprintf(&auth, "Authorization: Basic %s", b64) < 0) {
                        wipe_free(b64);
                        return -ENOMEM;
                }
                wipe_free(b64);
        }
        q.url = url;
        atomic_fetch_add(&reg->token_fetches, 1);
        c = perform(reg, h, &q, url, auth, resp, &x, errbuf);
        wipe_free(auth);
        if (c != CURLE_OK) {
                int r = curl_errno(c);
                set_error(resp, "registry %s: token service %s: %s", reg->host,
                         ch->realm, errbuf[0] ? errbuf : strerror(-r));
                return r;
        }
        if (resp->status == 401 || resp->status == 403) {
                set_error(resp, "registry %s: authentication failed: the token service refused %s (HTTP %ld)",
                         reg->host, reg->creds.user ? "the credentials" : "anonymous access", resp->status);
                return -EACCES;
        }
        if (resp->status != 200) {
                set_error(resp, "registry %s: token service answered HTTP %ld",
                         reg->host, resp->status);
                return -EPROTO;
        }
        j = json_loadb(resp->body ? resp->body : "", resp->body_len, 0, NULL);
        tok = json_string_value(json_object_get(j, "token"));
        if (!tok || !*tok)
                tok = json_string_value(json_object_get(j, "access_token"));
        if (!tok || !*tok) {
                set_error(resp, "registry %s: the token service sent no token",
                         reg->host);
                return -EPROTO;
        }
        expires = json_integer_value(json_object_get(j, "expires_in"));
        if (expires <= 0)
                expires = 60; /* the distribution spec's default */
        /* renew a little early: the token must still be valid on arrival */
        expires -= MIN(expires / 2, 10);
        tv = strdup(tok);
        /* wipe the body: it held the token */
        if (resp->body)
                memset(resp->body, 0, resp->body_len);
        if (!tv)
                return -ENOMEM;
        token_store(reg, scope, tv, now_ns() + (uint64_t)expires * NSEC_PER_SEC);
        log_debug("registry %s: got a token for %s, valid %" PRIi64 " s", reg->host,
                  scope ? scope : "(no scope)", (int64_t)expires);
        return 0;
}

/* on_challenge(): learn the scheme from a 401 and get what it asks for. */
static int on_challenge(struct registry *reg, CURL *h, const char *www_auth, const char *scope,
                        struct reg_response *resp)
{
        struct reg_challenge ch;
        int r;

        r = reg_challenge_parse(www_auth, &ch);
        if (r < 0) {
                set_error(resp, "registry %s: unsupported authentication challenge", reg->host);
                return -EACCES;
        }
        if (ch.scheme == REG_AUTH_BASIC) {
                if (!reg->creds.user) {
                        set_error(resp, "registry %s: authentication required, and no credentials for it in the "
                                 "registry config", reg->host);
                        return -EACCES;
                }
                pthread_mutex_lock(&reg->lock);
                reg->scheme = REG_AUTH_BASIC;
                pthread_mutex_unlock(&reg->lock);
                return 0;
        }
        pthread_mutex_lock(&reg->lock);
        reg->scheme = REG_AUTH_BEARER;
        reg->challenge = ch;
        reg->challenge.scope[0] = 0; /* per request, not per registry */
        pthread_mutex_unlock(&reg->lock);
        return fetch_token(reg, h, &ch, scope, resp);
}

/* ---- requests ---- */

static void backoff(unsigned attempt, unsigned retry_after, uint64_t deadline_ns)
{
        uint64_t ms = MIN((uint64_t)BACKOFF_BASE_MS << MIN(attempt, 16u), (uint64_t)BACKOFF_CAP_MS);
        uint32_t rnd = 0;
        struct timespec ts;

        /* "equal jitter": half the delay fixed, half random */
        if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != sizeof rnd)
                rnd = (uint32_t)now_ns();
        ms = ms / 2 + rnd % (ms / 2 + 1);
        if (retry_after)
                ms = MAX(ms, (uint64_t)retry_after * 1000);
        if (deadline_ns)
                ms = MIN(ms, remaining_ms(deadline_ns));
        ts = (struct timespec){ .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000 };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

static bool is_redirect(long s) { return s == 301 || s == 302 || s == 303 || s == 307 || s == 308; }

int registry_do(struct registry *reg, const struct reg_request *q, struct reg_response *resp)
{
        _cleanup_(freep) char *url = NULL;
        char errbuf[CURL_ERROR_SIZE];
        bool same_origin = true, authed = false;
        unsigned attempt = 0, redirects = 0, slot = 0;
        struct xfer x;
        CURL *h;
        int r = 0;

        if (!reg || !q || !q->method || !q->url || !resp)
                return -EINVAL;
        reg_response_release(resp);
        if (q->url[0] == '/') {
                if (asprintf(&url, "%s%s", reg->base, q->url) < 0)
                        return -ENOMEM;
        } else if (!(url = strdup(q->url)))
                return -ENOMEM;

        h = handle_get(reg, &slot);
        if (!h)
                return -ENOMEM;

        /* A bearer registry: get the token for this scope before asking. */
        if (need_token(reg, q->scope)) {
                struct reg_challenge ch;
                pthread_mutex_lock(&reg->lock);
                ch = reg->challenge;
                pthread_mutex_unlock(&reg->lock);
                r = fetch_token(reg, h, &ch, q->scope, resp);
                if (r < 0)
                        goto out;
                authed = true;
        }

        for (;;) {
                char *auth = same_origin ? auth_header(reg, q->scope) : NULL;
                CURLcode c = perform(reg, h, q, url, auth, resp, &x, errbuf);

                wipe_free(auth);
                if (c != CURLE_OK) {
                        r = curl_errno(c);
                        if (!q->no_retry && curl_retryable(c) && attempt < reg->retries &&
                            remaining_ms(q->deadline_ns) > 0) {
                                log_debug("registry %s: %s %s: %s; retrying", reg->host, q->method,
                                          q->url[0] == '/' ? q->url : "(redirect)", errbuf);
                                atomic_fetch_add(&reg->retries_done, 1);
                                backoff(attempt++, 0, q->deadline_ns);
                                continue;
                        }
                        if (c == CURLE_OPERATION_TIMEDOUT && q->deadline_ns &&
                            remaining_ms(q->deadline_ns) == 0)
                                set_error(resp, "registry %s: no answer before the deadline",
                                         reg->host);
                        else
                                set_error(resp, "registry %s: %s", reg->host,
                                         errbuf[0] ? errbuf : strerror(-r));
                        goto out;
                }
                if (resp->status == 401 && same_origin) {
                        if (authed) {
                                set_error(resp, "registry %s: authentication failed (wrong credentials?)", reg->host);
                                r = -EACCES;
                                goto out;
                        }
                        authed = true;
                        r = on_challenge(reg, h, x.www_auth, q->scope, resp);
                        if (r < 0)
                                goto out;
                        continue;
                }
                if (is_redirect(resp->status) &&
                    (strcmp(q->method, "GET") == 0 || strcmp(q->method, "HEAD") == 0)) {
                        char *target = NULL;
                        if (redirects++ >= MAX_REDIRECTS) {
                                set_error(resp, "registry %s: too many redirects",
                                         reg->host);
                                r = -ELOOP;
                                goto out;
                        }
                        (void)curl.easy_getinfo(h, CURLINFO_REDIRECT_URL, &target);
                        if (!target) {
                                set_error(resp, "registry %s: redirect without a Location", reg->host);
                                r = -EPROTO;
                                goto out;
                        }
                        free(url);
                        url = strdup(target);
                        if (!url) {
                                r = -ENOMEM;
                                goto out;
                        }
                        /* Authorization goes only to the registry's own origin */
                        same_origin = strncmp(url, reg->base, strlen(reg->base)) == 0 &&
                                      url[strlen(reg->base)] == '/';
                        log_debug("registry %s: redirected%s", reg->host,
                                  same_origin ? "" : " to another host (no credentials sent)");
                        continue;
                }
                if ((resp->status == 429 || resp->status >= 500) && !q->no_retry &&
                    attempt < reg->retries && remaining_ms(q->deadline_ns) > 0) {
                        log_debug("registry %s: %s %s: HTTP %ld; retrying", reg->host, q->method,
                                  q->url[0] == '/' ? q->url : "(redirect)", resp->status);
                        atomic_fetch_add(&reg->retries_done, 1);
                        backoff(attempt++, x.retry_after, q->deadline_ns);
                        continue;
                }
                if (x.overflow && !q->dst) {
                        set_error(resp, "registry %s: answer larger than %zu bytes",
                                 reg->host, q->body_max);
                        r = -EFBIG;
                        goto out;
                }
                r = 0;
                goto out;
        }
out:
        handle_put(reg, slot);
        return r;
}

int reg_status_errno(struct reg_response *resp)
{
        _cleanup_(json_decrefp) json_t *j = NULL;
        const char *code = NULL, *msg = NULL;
        long s = resp->status;
        int r;

        if (resp->body && resp->body_len) {
                json_t *e;
                j = json_loadb(resp->body, resp->body_len, 0, NULL);
                e = json_array_get(json_object_get(j, "errors"), 0);
                code = json_string_value(json_object_get(e, "code"));
                msg = json_string_value(json_object_get(e, "message"));
        }
        if (s == 401 || s == 403)
                r = -EACCES;
        else if (s == 404)
                r = -ENOENT;
        else if (s == 405)
                r = -EOPNOTSUPP;
        else if (s == 409)
                r = -EBUSY;
        else if (s == 413)
                r = -EFBIG;
        else if (s == 416)
                r = -ERANGE;
        else if (s == 429)
                r = -EAGAIN;
        else if (s == 400)
                r = code && strstr(code, "DIGEST") ? -EBADMSG : -EINVAL;
        else if (s >= 500)
                r = -EIO;
        else
                r = -EPROTO;
        set_error(resp, "HTTP %ld%s%s%s%.160s", s, code ? " " : "",
                 code ? code : "", msg ? ": " : "", msg ? msg : "");
        return r;
}

/* ---- setup ---- */

static int ping(struct registry *reg, const char *scope, struct reg_response *resp)
{
        struct reg_request q = {
                .method = "GET",
                .url = "/v2/",
                .scope = scope,
                .deadline_ns = now_ns() + reg->fetch_timeout_ns,
        };
        int r;

        r = registry_do(reg, &q, resp);
        if (r < 0)
                return r;
        if (resp->status == 200)
                return 0;
        if (resp->status == 401) {
                set_error(resp, "registry %s: authentication failed", reg->host);
                return -EACCES;
        }
        if (resp->status == 404) {
                set_error(resp, "registry %s: no OCI distribution API at %s/v2/ (HTTP 404)", reg->host, reg->base);
                return -EPROTO;
        }
        r = reg_status_errno(resp);
        {
                char what[REG_ERR_MAX];
                snprintf(what, sizeof what, "%s", resp->error);
                set_error(resp, "registry %s: GET /v2/: %s", reg->host, what);
        }
        return r;
}

int registry_new(const char *host, const struct registry_opts *o, const char *scope,
                 struct registry **ret, char *ret_err)
{
        struct reg_response resp = { .content_length = UINT64_MAX };
        struct registry *reg;
        unsigned n = o && o->connections ? o->connections : OCI_CONNECTIONS_DEFAULT;
        int r;

        if (!host || !*host || strlen(host) >= OCI_HOST_MAX || !ret || !ret_err)
                return -EINVAL;
        ret_err[0] = 0;
        r = curl_load(host, ret_err);
        if (r < 0)
                return r;
        if (curl.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                return -ENOMEM;
        reg = calloc(1, sizeof *reg);
        if (!reg) {
                curl.global_cleanup();
                return -ENOMEM;
        }
        pthread_mutex_init(&reg->lock, NULL);
        pthread_cond_init(&reg->cond, NULL);
        snprintf(reg->host, sizeof reg->host, "%s", host);
        reg->insecure = o && o->insecure;
        reg->retries = o && o->retries ? (o->retries == UINT_MAX ? 0 : o->retries) : OCI_RETRIES_DEFAULT;
        reg->fetch_timeout_ns = (o && o->fetch_timeout_ms ? o->fetch_timeout_ms
                                                          : OCI_FETCH_TIMEOUT_DEFAULT_SEC * 1000ull) * 1000000ull;
        reg->n_handles = n;
        reg->handles = calloc(n, sizeof *reg->handles);
        reg->busy = calloc(n, sizeof *reg->busy);
        if (!reg->handles || !reg->busy) {
                r = -ENOMEM;
                goto fail;
        }
        if (o && o->ca_cert && !(reg->ca_cert = strdup(o->ca_cert))) {
                r = -ENOMEM;
                goto fail;
        }
        if (o && o->ca_pem) {
                reg->ca_pem = strdup(o->ca_pem);
                if (!reg->ca_pem) {
                        r = -ENOMEM;
                        goto fail;
                }
                reg->ca_pem_len = strlen(reg->ca_pem);
        }
        if (o && o->auth) {
                r = reg_creds_from_auth(o->auth, &reg->creds);
                if (r < 0) {
                        /* never quote it: it is the secret */
                        errf(ret_err, REG_ERR_MAX, "registry %s: the credentials given are not base64 of user:password",
                             host);
                        goto fail;
                }
        } else {
                r = reg_creds_load(o ? o->config_path : NULL, host, &reg->creds, ret_err);
                if (r < 0)
                        goto fail;
        }

        snprintf(reg->base, sizeof reg->base, "https://%s", host);
        r = ping(reg, scope, &resp);
        if (r == -EPROTO && reg->insecure && resp.status == 0) {
                /* --insecure: a registry that does not speak TLS gets plain HTTP */
                log_debug("registry %s: no TLS (%s); trying plain HTTP", host, resp.error);
                snprintf(reg->base, sizeof reg->base, "http://%s", host);
                r = ping(reg, scope, &resp);
        }
        if (r < 0) {
                errf(ret_err, REG_ERR_MAX, "%s%s", resp.error[0] ? resp.error : strerror(-r),
                         r == -EPROTO && !reg->insecure && resp.status == 0
                                 ? " (TLS failed; --ca-cert FILE trusts a private CA, --insecure allows plain HTTP)"
                                 : "");
                goto fail;
        }
        reg_response_release(&resp);
        log_debug("registry %s: %s, auth %s", host, reg->base,
                  reg->scheme == REG_AUTH_BEARER ? "bearer" : reg->scheme == REG_AUTH_BASIC ? "basic" : "none");
        *ret = reg;
        return 0;
fail:
        reg_response_release(&resp);
        registry_free(reg);
        return r;
}

struct registry *registry_free(struct registry *reg)
{
        if (!reg)
                return NULL;
        for (unsigned i = 0; reg->handles && i < reg->n_handles; i++)
                if (reg->handles[i])
                        curl.easy_cleanup(reg->handles[i]);
        for (unsigned i = 0; i < N_TOKENS; i++) {
                free(reg->tokens[i].scope);
                wipe_free(reg->tokens[i].value);
        }
        free(reg->handles);
        free(reg->busy);
        free(reg->ca_cert);
        free(reg->ca_pem);
        reg_creds_release(&reg->creds);
        pthread_cond_destroy(&reg->cond);
        pthread_mutex_destroy(&reg->lock);
        free(reg);
        curl.global_cleanup();
        return NULL;
}
