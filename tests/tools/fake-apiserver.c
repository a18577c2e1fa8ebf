/* fake-apiserver.c — a stand-in Kubernetes API server for the committer's
 * status tests (no real one can run on these machines). It serves only the
 * SandboxSnapshot resource (sandbox.opensandbox.io/v1alpha1), following the
 * real API server's semantics where it serves at all:
 *   GET   /apis/sandbox.opensandbox.io/v1alpha1/namespaces/NS/sandboxsnapshots/NAME[/status]
 *   PATCH .../NAME/status   Content-Type application/merge-patch+json (else 415)
 *     - RFC 7386 merge patch; on the status subresource only .status
 *       changes, everything else in the patch is ignored;
 *     - metadata.resourceVersion in the patch is a precondition: 409
 *       Conflict when it differs from the stored one;
 *     - the result's status is validated against the CRD's status schema
 *       (phase enum; conditions[] with required type (Ready|Failed) and
 *       status (True|False|Unknown), lastTransitionTime a date-time;
 *       containers[] with required containerName): 422 Invalid, with the
 *       causes. Unknown fields are pruned, as a structural schema does;
 *     - resourceVersion is bumped on every write that changes the object
 *       (a no-op patch leaves it, as the real server does).
 *   Unknown objects: 404 NotFound. Every /apis request needs
 *   "Authorization: Bearer TOKEN": 401 Unauthorized otherwise. Errors are
 *   metav1.Status objects. TLS only.
 * Test controls (no token needed):
 *   GET  /fake/objects    every object, as stored
 *   GET  /fake/history    [{event, name, namespace, resourceVersion, phase}]:
 *                         event "status-patch" per write, "conflict" per 409,
 *                         "concurrent-write" per injected write
 *   POST /fake/conflict   the next status PATCH first sees a concurrent
 *                         write (resourceVersion bumped), so a patch that
 *                         carries the old resourceVersion gets a 409
 *
 *   fake-apiserver --cert PEM --key PEM --token-file F --seed JSON --port-file F
 *
 * --seed is a JSON array of SandboxSnapshot objects. It listens on
 * 127.0.0.1 at a free port, writes the port to --port-file once it serves,
 * and runs until SIGTERM or SIGINT. One MHD thread serves every request, so
 * the state needs no lock. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "store/util.h"

#define PREFIX "/apis/sandbox.opensandbox.io/v1alpha1/namespaces/"
#define BODY_MAX (1u << 20)

struct server {
        json_t *objects; /* array of objects */
        json_t *history; /* array of writes */
        char *token;
        bool conflict_armed;
        long next_rv;
};

struct req {
        char *body;
        size_t len;
        bool too_big;
};

static void json_decrefp_(json_t **j) { json_decref(*j); }

static enum MHD_Result send_json(struct MHD_Connection *conn, unsigned code, json_t *j /* taken */)
{
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        struct MHD_Response *resp;
        enum MHD_Result ret;

        json_decref(j);
        if (!s)
                return MHD_NO;
        resp = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
        if (!resp) {
                free(s);
                return MHD_NO;
        }
        MHD_add_response_header(resp, "Content-Type", "application/json");
        ret = MHD_queue_response(conn, code, resp);
        MHD_destroy_response(resp);
        return ret;
}

/* send_status(): a metav1.Status failure. causes may be NULL (taken). */
static enum MHD_Result send_status(struct MHD_Connection *conn, unsigned code, const char *reason,
                                   const char *name, const char *message, json_t *causes)
{
        json_t *details = json_pack("{s:s, s:s, s:s}", "name", name ? name : "", "group",
                                    "sandbox.opensandbox.io", "kind", "sandboxsnapshots");

        if (details && causes)
                json_object_set_new(details, "causes", causes);
        else
                json_decref(causes);
        return send_json(conn, code,
                         json_pack("{s:s, s:s, s:{}, s:s, s:s, s:s, s:o*, s:i}", "kind", "Status", "apiVersion",
                                   "v1", "metadata", "status", "Failure", "message", message, "reason", reason,
                                   "details", details, "code", (int)code));
}

/* ---- objects ---- */

static json_t *find_object(struct server *s, const char *ns, const char *name)
{
        size_t i;
        json_t *o;

        json_array_foreach(s->objects, i, o) {
                json_t *m = json_object_get(o, "metadata");
                const char *n = json_string_value(json_object_get(m, "name"));
                const char *x = json_string_value(json_object_get(m, "namespace"));
                if (n && x && strcmp(n, name) == 0 && strcmp(x, ns) == 0)
                        return o;
        }
        return NULL;
}

static void bump_rv(struct server *s, json_t *o)
{
        char rv[32];

        snprintf(rv, sizeof rv, "%ld", s->next_rv++);
        json_object_set_new(json_object_get(o, "metadata"), "resourceVersion", json_string(rv));
}

static void record(struct server *s, json_t *o, const char *what)
{
        json_t *m = json_object_get(o, "metadata");
        const char *phase = json_string_value(json_object_get(json_object_get(o, "status"), "phase"));

        json_array_append_new(s->history,
                              json_pack("{s:s, s:O, s:O, s:O, s:s}", "event", what, "name",
                                        json_object_get(m, "name"), "namespace", json_object_get(m, "namespace"),
                                        "resourceVersion", json_object_get(m, "resourceVersion"), "phase",
                                        phase ? phase : ""));
}

/* merge_patch(): RFC 7386 — returns the new target (target is consumed). */
static json_t *merge_patch(json_t *target, json_t *patch)
{
        const char *k;
        json_t *v;

        if (!json_is_object(patch)) {
                json_decref(target);
                return json_deep_copy(patch);
        }
        if (!json_is_object(target)) {
                json_decref(target);
                target = json_object();
        }
        json_object_foreach(patch, k, v) {
                if (json_is_null(v)) {
                        json_object_del(target, k);
                        continue;
                }
                json_t *old = json_incref(json_object_get(target, k));
                json_object_set_new(target, k, merge_patch(old, v));
        }
        return target;
}

/* ---- the CRD's status schema ---- */

static void cause(json_t *causes, const char *field, const char *type, const char *msg)
{
        json_array_append_new(causes, json_pack("{s:s, s:s, s:s}", "reason", type, "message", msg,
                                                "field", field));
}

static bool in_enum(const char *v, const char *const *e)
{
        for (; v && *e; e++)
                if (strcmp(v, *e) == 0)
                        return true;
        return false;
}

static bool is_datetime(const char *s)
{
        struct tm tm = {};
        const char *p;

        if (!s || !(p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm)))
                return false;
        if (*p == '.')
                for (p++; *p >= '0' && *p <= '9'; p++)
                        ;
        if (*p == 'Z')
                return p[1] == 0;
        return (*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':';
}

/* prune(): drop the keys of o that the schema does not know. */
static void prune(json_t *o, const char *const *known)
{
        const char *k;
        json_t *v;
        void *tmp;

        json_object_foreach_safe(o, tmp, k, v) {
                (void)v;
                if (!in_enum(k, known))
                        json_object_del(o, k);
        }
}

static void check_string(json_t *o, const char *key, const char *field, json_t *causes)
{
        json_t *v = json_object_get(o, key);

        if (v && !json_is_string(v))
                cause(causes, field, "FieldValueTypeInvalid", "must be of type string");
}

/* validate_status(): prunes, then appends a cause per violation. */
static void validate_status(json_t *st, json_t *causes)
{
        static const char *const top[] = { "phase", "conditions", "containers", "sourcePodName",
                                           "sourceNodeName", "observedGeneration", NULL };
        static const char *const phases[] = { "Pending", "Committing", "Succeed", "Failed", NULL };
        static const char *const ctypes[] = { "Ready", "Failed", NULL };
        static const char *const cstatus[] = { "True", "False", "Unknown", NULL };
        static const char *const ckeys[] = { "type", "status", "reason", "message", "lastTransitionTime",
                                             "observedGeneration", NULL };
        static const char *const kkeys[] = { "containerName", "imageUri", "imageDigest", NULL };
        json_t *v, *c;
        size_t i;
        char f[128];

        if (!st || json_is_null(st))
                return;
        if (!json_is_object(st)) {
                cause(causes, "status", "FieldValueTypeInvalid", "must be of type object");
                return;
        }
        prune(st, top);
        v = json_object_get(st, "phase");
        if (v && !in_enum(json_string_value(v), phases))
                cause(causes, "status.phase", "FieldValueNotSupported",
                      "Unsupported value: supported values: \"Pending\", \"Committing\", \"Succeed\", \"Failed\"");
        check_string(st, "sourcePodName", "status.sourcePodName", causes);
        check_string(st, "sourceNodeName", "status.sourceNodeName", causes);
        v = json_object_get(st, "observedGeneration");
        if (v && !json_is_integer(v))
                cause(causes, "status.observedGeneration", "FieldValueTypeInvalid", "must be of type integer");
        v = json_object_get(st, "conditions");
        if (v && !json_is_array(v))
                cause(causes, "status.conditions", "FieldValueTypeInvalid", "must be of type array");
        json_array_foreach(json_is_array(v) ? v : NULL, i, c) {
                if (!json_is_object(c)) {
                        snprintf(f, sizeof f, "status.conditions[%zu]", i);
                        cause(causes, f, "FieldValueTypeInvalid", "must be of type object");
                        continue;
                }
                prune(c, ckeys);
                snprintf(f, sizeof f, "status.conditions[%zu].type", i);
                if (!json_object_get(c, "type"))
                        cause(causes, f, "FieldValueRequired", "Required value");
                else if (!in_enum(json_string_value(json_object_get(c, "type")), ctypes))
                        cause(causes, f, "FieldValueNotSupported", "Unsupported value: supported values: \"Ready\", \"Failed\"");
                snprintf(f, sizeof f, "status.conditions[%zu].status", i);
                if (!json_object_get(c, "status"))
                        cause(causes, f, "FieldValueRequired", "Required value");
                else if (!in_enum(json_string_value(json_object_get(c, "status")), cstatus))
                        cause(causes, f, "FieldValueNotSupported",
                              "Unsupported value: supported values: \"True\", \"False\", \"Unknown\"");
                snprintf(f, sizeof f, "status.conditions[%zu].reason", i);
                check_string(c, "reason", f, causes);
                snprintf(f, sizeof f, "status.conditions[%zu].message", i);
                check_string(c, "message", f, causes);
                snprintf(f, sizeof f, "status.conditions[%zu].lastTransitionTime", i);
                if (json_object_get(c, "lastTransitionTime") &&
                    !is_datetime(json_string_value(json_object_get(c, "lastTransitionTime"))))
                        cause(causes, f, "FieldValueInvalid", "must be a date-time (RFC 3339)");
        }
        v = json_object_get(st, "containers");
        if (v && !json_is_array(v))
                cause(causes, "status.containers", "FieldValueTypeInvalid", "must be of type array");
        json_array_foreach(json_is_array(v) ? v : NULL, i, c) {
                if (!json_is_object(c)) {
                        snprintf(f, sizeof f, "status.containers[%zu]", i);
                        cause(causes, f, "FieldValueTypeInvalid", "must be of type object");
                        continue;
                }
                prune(c, kkeys);
                snprintf(f, sizeof f, "status.containers[%zu].containerName", i);
                if (!json_is_string(json_object_get(c, "containerName")))
                        cause(causes, f, "FieldValueRequired", "Required value");
                snprintf(f, sizeof f, "status.containers[%zu].imageUri", i);
                check_string(c, "imageUri", f, causes);
                snprintf(f, sizeof f, "status.containers[%zu].imageDigest", i);
                check_string(c, "imageDigest", f, causes);
        }
}

/* ---- requests ---- */

static enum MHD_Result patch_status(struct server *s, struct MHD_Connection *conn, json_t *obj,
                                    const char *name, const struct req *q)
{
        const char *ctype = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
        _cleanup_(json_decrefp_) json_t *patch = NULL, *merged = NULL, *causes = NULL;
        const char *want_rv, *have_rv;
        json_error_t jerr;
        char msg[512];

        if (!ctype || strncmp(ctype, "application/merge-patch+json", 28) != 0 ||
            (ctype[28] && ctype[28] != ';'))
                return send_status(conn, 415, "UnsupportedMediaType", name,
                                   "the body of the request was in an unknown format - accepted media types include: "
                                   "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                                   NULL);
        patch = json_loadb(q->body ? q->body : "", q->len, 0, &jerr);
        if (!json_is_object(patch))
                return send_status(conn, 400, "BadRequest", name, "the request body is not a JSON object", NULL);
        if (s->conflict_armed) { /* someone else wrote first */
                s->conflict_armed = false;
                bump_rv(s, obj);
                record(s, obj, "concurrent-write");
        }
        want_rv = json_string_value(json_object_get(json_object_get(patch, "metadata"), "resourceVersion"));
        have_rv = json_string_value(json_object_get(json_object_get(obj, "metadata"), "resourceVersion"));
        if (want_rv && (!have_rv || strcmp(want_rv, have_rv) != 0)) {
                record(s, obj, "conflict");
                snprintf(msg, sizeof msg,
                         "Operation cannot be fulfilled on sandboxsnapshots.sandbox.opensandbox.io \"%s\": the object "
                         "has been modified; please apply your changes to the latest version and try again",
                         name);
                return send_status(conn, 409, "Conflict", name, msg, NULL);
        }
        /* the status subresource: only .status changes */
        merged = merge_patch(json_deep_copy(json_object_get(obj, "status")), json_object_get(patch, "status"));
        if (!json_object_get(patch, "status")) {
                json_decref(merged);
                merged = json_deep_copy(json_object_get(obj, "status"));
        }
        causes = json_array();
        validate_status(merged, causes);
        if (json_array_size(causes) > 0) {
                snprintf(msg, sizeof msg, "SandboxSnapshot.sandbox.opensandbox.io \"%s\" is invalid: %s: %s", name,
                         json_string_value(json_object_get(json_array_get(causes, 0), "field")),
                         json_string_value(json_object_get(json_array_get(causes, 0), "message")));
                return send_status(conn, 422, "Invalid", name, msg, TAKE_PTR(causes));
        }
        if (!json_equal(merged, json_object_get(obj, "status"))) {
                if (merged)
                        json_object_set(obj, "status", merged);
                else
                        json_object_del(obj, "status");
                bump_rv(s, obj);
                record(s, obj, "status-patch");
        }
        return send_json(conn, 200, json_deep_copy(obj));
}

static bool authorized(const struct server *s, struct MHD_Connection *conn)
{
        const char *a = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");

        return a && strncmp(a, "Bearer ", 7) == 0 && strcmp(a + 7, s->token) == 0;
}

static enum MHD_Result route(struct server *s, struct MHD_Connection *conn, const char *url,
                             const char *method, const struct req *q)
{
        char ns[256], name[256], rest[64] = "";
        json_t *obj;
        int n;

        if (strcmp(url, "/fake/objects") == 0)
                return send_json(conn, 200, json_deep_copy(s->objects));
        if (strcmp(url, "/fake/history") == 0)
                return send_json(conn, 200, json_deep_copy(s->history));
        if (strcmp(url, "/fake/conflict") == 0 && strcmp(method, "POST") == 0) {
                s->conflict_armed = true;
                return send_json(conn, 200, json_pack("{s:b}", "armed", 1));
        }
        if (!authorized(s, conn))
                return send_status(conn, 401, "Unauthorized", NULL, "Unauthorized", NULL);
        if (strncmp(url, PREFIX, strlen(PREFIX)) != 0)
                return send_status(conn, 404, "NotFound", NULL, "the server could not find the requested resource", NULL);
        n = sscanf(url + strlen(PREFIX), "%255[^/]/sandboxsnapshots/%255[^/]%63s", ns, name, rest);
        if (n < 2 || (n == 3 && strcmp(rest, "/status") != 0))
                return send_status(conn, 404, "NotFound", NULL, "the server could not find the requested resource", NULL);
        obj = find_object(s, ns, name);
        if (!obj) {
                char msg[600];
                snprintf(msg, sizeof msg, "sandboxsnapshots.sandbox.opensandbox.io \"%s\" not found", name);
                return send_status(conn, 404, "NotFound", name, msg, NULL);
        }
        if (strcmp(method, "GET") == 0)
                return send_json(conn, 200, json_deep_copy(obj));
        if (strcmp(method, "PATCH") == 0 && n == 3)
                return patch_status(s, conn, obj, name, q);
        return send_status(conn, 405, "MethodNotAllowed", name, "the server does not allow this method on the requested resource", NULL);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                              const char *version, const char *upload, size_t *upload_size, void **req_cls)
{
        struct server *s = cls;
        struct req *q = *req_cls;
        (void)version;

        if (!q) {
                q = calloc(1, sizeof *q);
                if (!q)
                        return MHD_NO;
                *req_cls = q;
                return MHD_YES;
        }
        if (*upload_size) {
                if (q->len + *upload_size > BODY_MAX)
                        q->too_big = true;
                else {
                        char *nb = realloc(q->body, q->len + *upload_size + 1);
                        if (!nb)
                                return MHD_NO;
                        memcpy(nb + q->len, upload, *upload_size);
                        q->len += *upload_size;
                        nb[q->len] = 0;
                        q->body = nb;
                }
                *upload_size = 0;
                return MHD_YES;
        }
        if (q->too_big)
                return send_status(conn, 413, "RequestEntityTooLarge", NULL, "request entity too large", NULL);
        return route(s, conn, url, method, q);
}

static void completed(void *cls, struct MHD_Connection *conn, void **req_cls, enum MHD_RequestTerminationCode toe)
{
        struct req *q = *req_cls;
        (void)cls, (void)conn, (void)toe;

        if (q) {
                free(q->body);
                free(q);
                *req_cls = NULL;
        }
}

static int load_seed(struct server *s, const char *path)
{
        json_error_t jerr;
        size_t i;
        json_t *o;

        s->objects = json_load_file(path, 0, &jerr);
        if (!json_is_array(s->objects)) {
                fprintf(stderr, "fake-apiserver: seed %s: not a JSON array (%s)\n", path, jerr.text);
                return -EINVAL;
        }
        json_array_foreach(s->objects, i, o) {
                json_t *m = json_object_get(o, "metadata");
                if (!json_is_string(json_object_get(m, "name")) || !json_is_string(json_object_get(m, "namespace"))) {
                        fprintf(stderr, "fake-apiserver: seed %s: object %zu lacks metadata.name/namespace\n", path, i);
                        return -EINVAL;
                }
                if (!json_object_get(m, "generation"))
                        json_object_set_new(m, "generation", json_integer(1));
                if (!json_object_get(m, "resourceVersion"))
                        bump_rv(s, o);
        }
        return 0;
}

static int read_all(const char *path, char **ret)
{
        size_t len;
        return read_file_at(AT_FDCWD, path, 1u << 20, ret, &len);
}

int main(int argc, char **argv)
{
        static const struct option options[] = {
                { "cert", required_argument, NULL, 'c' }, { "key", required_argument, NULL, 'k' },
                { "token-file", required_argument, NULL, 't' }, { "seed", required_argument, NULL, 's' },
                { "port-file", required_argument, NULL, 'p' }, {},
        };
        const char *cert_path = NULL, *key_path = NULL, *token_path = NULL, *seed = NULL, *port_file = NULL;
        _cleanup_(freep) char *cert = NULL, *key = NULL;
        struct server s = { .history = json_array(), .next_rv = 1000 };
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        const union MHD_DaemonInfo *info;
        struct MHD_Daemon *d;
        sigset_t set;
        FILE *f;
        int c, sig = 0;

        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0) {
                switch (c) {
                case 'c': cert_path = optarg; break;
                case 'k': key_path = optarg; break;
                case 't': token_path = optarg; break;
                case 's': seed = optarg; break;
                case 'p': port_file = optarg; break;
                default: return 2;
                }
        }
        if (!cert_path || !key_path || !token_path || !seed || !port_file) {
                fprintf(stderr, "usage: fake-apiserver --cert PEM --key PEM --token-file F --seed JSON --port-file F\n");
                return 2;
        }
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
                fprintf(stderr, "fake-apiserver: libmicrohttpd was built without TLS\n");
                return 77;
        }
        if (read_all(cert_path, &cert) < 0 || read_all(key_path, &key) < 0 || read_all(token_path, &s.token) < 0) {
                fprintf(stderr, "fake-apiserver: cannot read the certificate, key or token\n");
                return 1;
        }
        s.token[strcspn(s.token, "\r\n")] = 0;
        if (load_seed(&s, seed) < 0)
                return 1;

        sigemptyset(&set);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGINT);
        pthread_sigmask(SIG_BLOCK, &set, NULL); /* MHD's thread inherits the mask */
        d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_TLS | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                             handle, &s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_HTTPS_MEM_CERT,
                             cert, MHD_OPTION_HTTPS_MEM_KEY, key, MHD_OPTION_NOTIFY_COMPLETED, completed, NULL,
                             MHD_OPTION_END);
        if (!d) {
                fprintf(stderr, "fake-apiserver: cannot start (TLS key or certificate rejected?)\n");
                return 1;
        }
        info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
        f = info ? fopen(port_file, "we") : NULL;
        if (!f || fprintf(f, "%u\n", (unsigned)info->port) < 0 || fclose(f) != 0) {
                fprintf(stderr, "fake-apiserver: cannot write the port to %s\n", port_file);
                MHD_stop_daemon(d);
                return 1;
        }
        sigwait(&set, &sig);
        MHD_stop_daemon(d);
        json_decref(s.objects);
        json_decref(s.history);
        free(s.token);
        return 0;
}
