/* committer-kube.c — see committer.h: the SandboxSnapshot status writer.
 *
 * The CRD's rules, as OpenSandbox's controller keeps them:
 *   - phase: Pending -> Committing -> Succeed | Failed. A terminal phase
 *     (Succeed, Failed) never changes again, and a phase never goes back.
 *   - conditions: only conditions whose status is "True" are stored. On
 *     success {Ready, True, SnapshotReady, "Snapshot is ready"}; on failure
 *     {Failed, True, <Reason>, <message>}; every other transition removes
 *     both (they are no longer true). A condition that stays true keeps its
 *     lastTransitionTime.
 *   - containers: [{containerName, imageUri, imageDigest}], the digest only
 *     on success; sourcePodName, sourceNodeName, observedGeneration (the
 *     object's metadata.generation when we read it).
 * A JSON merge patch (RFC 7386) replaces arrays whole, so every patch
 * carries the whole conditions list; it also carries the
 * metadata.resourceVersion we read, so a concurrent writer makes the API
 * server answer 409 and we start again from a fresh GET.
 * No state; the bearer token is a secret and never appears in a message. */
#include <curl/curl.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "committer.h"

#define GROUP_PATH "/apis/sandbox.opensandbox.io/v1alpha1"
#define REPLY_MAX (4u << 20)
#define REQUEST_TIMEOUT_S 30L
#define CONFLICT_RETRIES 5

static void json_decrefp_(json_t **j) { json_decref(*j); }

static void wipe_freep(char **p)
{
        if (!*p)
                return;
        for (volatile char *c = *p; *c; c++)
                *c = 0;
        free(*p);
}

void kube_conn_release(struct kube_conn *k)
{
        if (!k)
                return;
        free(k->server);
        wipe_freep(&k->token);
        free(k->ca_file);
        *k = (struct kube_conn){};
}

int kube_conn_load(const char *server, const char *token_file, const char *ca_file,
                   const char *sa_dir, struct kube_conn *ret, char *ret_err)
{
        _cleanup_(freep) char *tf = NULL;
        struct kube_conn k = {};
        size_t len;
        int r;

        if (!ret || !ret_err)
                return -EINVAL;
        if (!sa_dir)
                sa_dir = CM_SA_DIR_DEFAULT;
        if (server)
                k.server = strdup(server);
        else {
                const char *host = getenv("KUBERNETES_SERVICE_HOST");
                const char *port = getenv("KUBERNETES_SERVICE_PORT");
                if (!host || !*host || !port || !*port) {
                        snprintf(ret_err, CM_ERR_MAX,
                                 "no API server: not in a pod (KUBERNETES_SERVICE_HOST/PORT unset) and no --server");
                        return -EINVAL;
                }
                if (asprintf(&k.server, strchr(host, ':') ? "https://[%s]:%s" : "https://%s:%s", host,
                             port) < 0)
                        k.server = NULL;
        }
        if (!k.server)
                return -ENOMEM;
        if (!token_file) {
                if (asprintf(&tf, "%s/token", sa_dir) < 0) {
                        kube_conn_release(&k);
                        return -ENOMEM;
                }
                token_file = tf;
        }
        r = read_file_at(AT_FDCWD, token_file, 64 * 1024, &k.token, &len);
        if (r < 0) {
                snprintf(ret_err, CM_ERR_MAX, "service-account token %s: %s", token_file, strerror(-r));
                kube_conn_release(&k);
                return r;
        }
        while (len > 0 && (k.token[len - 1] == '\n' || k.token[len - 1] == '\r' || k.token[len - 1] == ' '))
                k.token[--len] = 0;
        if (len == 0 || strpbrk(k.token, "\r\n")) {
                snprintf(ret_err, CM_ERR_MAX, "service-account token %s is empty or not one line", token_file);
                kube_conn_release(&k);
                return -EINVAL;
        }
        if (ca_file)
                k.ca_file = strdup(ca_file);
        else if (asprintf(&k.ca_file, "%s/ca.crt", sa_dir) < 0)
                k.ca_file = NULL;
        if (!k.ca_file) {
                kube_conn_release(&k);
                return -ENOMEM;
        }
        if (access(k.ca_file, R_OK) < 0) {
                r = -errno;
                snprintf(ret_err, CM_ERR_MAX, "API server CA %s: %s", k.ca_file, strerror(errno));
                kube_conn_release(&k);
                return r;
        }
        *ret = k;
        return 0;
}

/* ---- the patch ---- */

int cm_phase_rank(const char *phase)
{
        if (!phase)
                return -1;
        if (strcmp(phase, "Pending") == 0)
                return 0;
        if (strcmp(phase, "Committing") == 0)
                return 1;
        if (strcmp(phase, "Succeed") == 0 || strcmp(phase, "Failed") == 0)
                return 2;
        return -1;
}

/* true_condition(): the existing condition of type t if its status is True. */
static json_t *true_condition(json_t *conds, const char *t)
{
        size_t i;
        json_t *c;

        json_array_foreach(conds, i, c) {
                const char *ct = json_string_value(json_object_get(c, "type"));
                const char *cs = json_string_value(json_object_get(c, "status"));
                if (ct && cs && strcmp(ct, t) == 0 && strcmp(cs, "True") == 0)
                        return c;
        }
        return NULL;
}

static json_t *conditions_for(json_t *old, const struct cm_status_update *u, const char *now)
{
        _cleanup_(json_decrefp_) json_t *out = json_array();
        const char *mine = NULL, *reason = NULL, *message = NULL;
        size_t i;
        json_t *c;

        if (!out)
                return NULL;
        if (strcmp(u->phase, "Succeed") == 0)
                mine = "Ready", reason = "SnapshotReady", message = "Snapshot is ready";
        else if (strcmp(u->phase, "Failed") == 0)
                mine = "Failed", reason = u->reason, message = u->message;
        /* keep every other True condition as it is; drop the False ones */
        json_array_foreach(old, i, c) {
                const char *ct = json_string_value(json_object_get(c, "type"));
                const char *cs = json_string_value(json_object_get(c, "status"));
                if (!ct || !cs || strcmp(cs, "True") != 0 || strcmp(ct, "Ready") == 0 ||
                    strcmp(ct, "Failed") == 0)
                        continue;
                if (json_array_append(out, c) < 0)
                        return NULL;
        }
        if (mine) {
                json_t *prev = true_condition(old, mine);
                const char *since = now;
                const char *pr = prev ? json_string_value(json_object_get(prev, "reason")) : NULL;
                const char *pt = prev ? json_string_value(json_object_get(prev, "lastTransitionTime")) : NULL;

                if (pt && pr && strcmp(pr, reason) == 0) /* still true: same transition */
                        since = pt;
                if (json_array_append_new(out, json_pack("{s:s, s:s, s:s, s:s, s:s}", "type", mine,
                                                         "status", "True", "reason", reason, "message",
                                                         message, "lastTransitionTime", since)) < 0)
                        return NULL;
        }
        return TAKE_PTR(out);
}

int cm_status_patch(const json_t *object, const struct cm_status_update *u, json_t **ret,
                    char *ret_err)
{
        _cleanup_(json_decrefp_) json_t *patch = NULL;
        json_t *status, *meta, *st, *gen, *conds, *arr;
        const char *cur, *rv;
        char now[32];
        int want;

        if (!object || !u || !ret || !ret_err)
                return -EINVAL;
        want = cm_phase_rank(u->phase);
        if (want < 0) {
                snprintf(ret_err, CM_ERR_MAX, "unknown phase '%s' (Pending, Committing, Succeed or Failed)",
                         u->phase ? u->phase : "");
                return -EINVAL;
        }
        if (strcmp(u->phase, "Failed") == 0 && (!u->reason || !*u->reason || !u->message || !*u->message)) {
                snprintf(ret_err, CM_ERR_MAX, "phase Failed needs a reason and a message");
                return -EINVAL;
        }
        if (strcmp(u->phase, "Succeed") == 0) {
                if (u->n_containers == 0) {
                        snprintf(ret_err, CM_ERR_MAX, "phase Succeed needs the containers and their digests");
                        return -EINVAL;
                }
                for (size_t i = 0; i < u->n_containers; i++)
                        if (!cm_is_digest(u->containers[i].digest)) {
                                snprintf(ret_err, CM_ERR_MAX, "phase Succeed needs a sha256 digest for container %s",
                                         u->containers[i].name);
                                return -EINVAL;
                        }
        }
        meta = json_object_get(object, "metadata");
        st = json_object_get(object, "status");
        cur = json_string_value(json_object_get(st, "phase"));
        if (!cur || !*cur)
                cur = "Pending";
        if (cm_phase_rank(cur) == 2) {
                snprintf(ret_err, CM_ERR_MAX, "its phase is already %s, and a terminal phase never changes", cur);
                return -EPERM;
        }
        if (cm_phase_rank(cur) > want) {
                snprintf(ret_err, CM_ERR_MAX, "its phase is %s; it cannot go back to %s", cur, u->phase);
                return -EINVAL;
        }

        format_rfc3339((int64_t)u->now, now);
        status = json_object();
        patch = json_pack("{s:{}, s:o}", "metadata", "status", status);
        if (!patch)
                return -ENOMEM;
        rv = json_string_value(json_object_get(meta, "resourceVersion"));
        if (rv && json_object_set_new(json_object_get(patch, "metadata"), "resourceVersion", json_string(rv)) < 0)
                return -ENOMEM;
        if (json_object_set_new(status, "phase", json_string(u->phase)) < 0)
                return -ENOMEM;
        gen = json_object_get(meta, "generation");
        if (json_is_integer(gen) && json_object_set(status, "observedGeneration", gen) < 0)
                return -ENOMEM;
        if (u->pod && json_object_set_new(status, "sourcePodName", json_string(u->pod)) < 0)
                return -ENOMEM;
        if (u->node && json_object_set_new(status, "sourceNodeName", json_string(u->node)) < 0)
                return -ENOMEM;
        if (u->n_containers) {
                bool ok = strcmp(u->phase, "Succeed") == 0;
                arr = json_array();
                if (json_object_set_new(status, "containers", arr) < 0)
                        return -ENOMEM;
                for (size_t i = 0; i < u->n_containers; i++) {
                        json_t *c = json_pack("{s:s, s:s}", "containerName", u->containers[i].name,
                                              "imageUri", u->containers[i].image);
                        if (c && ok && json_object_set_new(c, "imageDigest", json_string(u->containers[i].digest)) < 0)
                                json_decref(c), c = NULL;
                        if (json_array_append_new(arr, c) < 0)
                                return -ENOMEM;
                }
        }
        conds = conditions_for(json_object_get(st, "conditions"), u, now);
        if (json_object_set_new(status, "conditions", conds) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(patch);
        return 0;
}

/* ---- HTTP ---- */

struct sink {
        char *buf;
        size_t len;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
        struct sink *s = userdata;
        size_t n = size * nmemb;
        char *nb;

        if (s->len + n > REPLY_MAX)
                return 0;
        nb = realloc(s->buf, s->len + n + 1);
        if (!nb)
                return 0;
        memcpy(nb + s->len, data, n);
        s->len += n;
        nb[s->len] = 0;
        s->buf = nb;
        return n;
}

static void curl_easy_cleanupp_(CURL **h)
{
        if (*h)
                curl_easy_cleanup(*h);
}

/* wipe_slist(): the header list holds the bearer token. */
static void wipe_slistp(struct curl_slist **l)
{
        for (struct curl_slist *p = *l; p; p = p->next)
                for (volatile char *c = p->data; *c; c++)
                        *c = 0;
        curl_slist_free_all(*l);
}

/* kube_do(): one request; 0 with *ret_status and *ret_body (parsed JSON or
 * NULL), -errno with ret_err set if there was no HTTP answer. */
static int kube_do(const struct kube_conn *k, const char *method, const char *path, const char *ctype,
                   const char *body, long *ret_status, json_t **ret_body, char *ret_err)
{
        _cleanup_(curl_easy_cleanupp_) CURL *h = NULL;
        _cleanup_(wipe_slistp) struct curl_slist *hl = NULL;
        _cleanup_(wipe_freep) char *auth = NULL;
        _cleanup_(freep) char *url = NULL, *ct = NULL;
        char errbuf[CURL_ERROR_SIZE] = "";
        struct sink s = {};
        CURLcode cc;
        long status = 0;

        if (asprintf(&url, "%s%s", k->server, path) < 0 || asprintf(&auth, "Authorization: Bearer %s", k->token) < 0 ||
            asprintf(&ct, "Content-Type: %s", ctype ? ctype : "application/json") < 0)
                return -ENOMEM;
        h = curl_easy_init();
        if (!h)
                return -ENOMEM;
        hl = curl_slist_append(NULL, auth);
        if (!hl || !curl_slist_append(hl, "Accept: application/json") ||
            (body && !curl_slist_append(hl, ct)))
                return -ENOMEM;
        (void)curl_easy_setopt(h, CURLOPT_URL, url);
        (void)curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
        (void)curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        (void)curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
        (void)curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
        (void)curl_easy_setopt(h, CURLOPT_USERAGENT, "stasis-committer/0.1");
        (void)curl_easy_setopt(h, CURLOPT_CAINFO, k->ca_file);
        (void)curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
        (void)curl_easy_setopt(h, CURLOPT_TIMEOUT, REQUEST_TIMEOUT_S);
        (void)curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        (void)curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
        if (body) {
                (void)curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
                (void)curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
                (void)curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
        }
        cc = curl_easy_perform(h);
        if (cc != CURLE_OK) {
                free(s.buf);
                snprintf(ret_err, CM_ERR_MAX, "API server %s: %s", k->server, *errbuf ? errbuf : curl_easy_strerror(cc));
                return cc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -EIO;
        }
        (void)curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        *ret_status = status;
        *ret_body = s.buf ? json_loads(s.buf, 0, NULL) : NULL;
        free(s.buf);
        return 0;
}

/* status_errno(): the -errno for an API answer that is not 2xx, and the
 * Status object's message into ret_err. */
static int status_errno(long code, const json_t *body, const char *what, char *ret_err)
{
        const char *msg = json_string_value(json_object_get(body, "message"));

        snprintf(ret_err, CM_ERR_MAX, "%s: HTTP %ld%s%s", what, code, msg ? ": " : "", msg ? msg : "");
        switch (code) {
        case 401:
        case 403:
                return -EACCES;
        case 404:
                return -ENOENT;
        case 409:
                return -EBUSY;
        case 422:
                return -EINVAL;
        default:
                return -EIO;
        }
}

int kube_status_write(const struct kube_conn *k, const char *ns, const char *name,
                      const struct cm_status_update *u, char *ret_err)
{
        _cleanup_(freep) char *path = NULL, *spath = NULL, *what = NULL;
        int r;

        if (!k || !ns || !name || !u || !ret_err)
                return -EINVAL;
        if (asprintf(&path, GROUP_PATH "/namespaces/%s/sandboxsnapshots/%s", ns, name) < 0 ||
            asprintf(&spath, "%s/status", path) < 0 || asprintf(&what, "SandboxSnapshot %s/%s", ns, name) < 0)
                return -ENOMEM;
        for (int attempt = 0; attempt < CONFLICT_RETRIES; attempt++) {
                _cleanup_(json_decrefp_) json_t *obj = NULL, *patch = NULL, *ans = NULL;
                _cleanup_(freep) char *body = NULL;
                char why[CM_ERR_MAX] = "";
                long code = 0;

                r = kube_do(k, "GET", path, NULL, NULL, &code, &obj, ret_err);
                if (r < 0)
                        return r;
                if (code != 200)
                        return status_errno(code, obj, what, ret_err);
                r = cm_status_patch(obj, u, &patch, why);
                if (r < 0) {
                        snprintf(ret_err, CM_ERR_MAX, "%s: %s", what, why);
                        return r;
                }
                body = json_dumps(patch, JSON_COMPACT);
                if (!body)
                        return -ENOMEM;
                r = kube_do(k, "PATCH", spath, "application/merge-patch+json", body, &code, &ans, ret_err);
                if (r < 0)
                        return r;
                if (code == 200 || code == 201)
                        return 0;
                if (code != 409)
                        return status_errno(code, ans, what, ret_err);
                log_debug("%s: conflict (attempt %d), reading it again", what, attempt + 1);
                (void)status_errno(code, ans, what, ret_err);
        }
        return -EBUSY;
}
