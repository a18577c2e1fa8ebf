/* committer-util.c — see committer.h: the parts of stasis-committer that
 * need no daemon and no network. No state. */
#include <ctype.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "committer.h"

#define CONFIG_MAX (4u << 20)

const struct cm_reason cm_reasons[] = {
        { "BadArguments", "The committer's command line is malformed (a <container>:<uri> without ':', a URI without a registry host)." },
        { "RegistryConfigInvalid", "The registry credentials file (/var/run/opensandbox/registry/config.json) exists but is not a valid docker config, or its entry for the registry is malformed." },
        { "MountNotFound", "A container has no stasis mount on this node (no entry in /run/stasis/mounts labelled with its pod, namespace and container). Nothing was frozen." },
        { "MountAmbiguous", "More than one stasis mount carries the same pod, namespace and container labels. Nothing was frozen." },
        { "DaemonUnreachable", "The container's stasisd did not answer on its control socket (not running, or /run/stasis is not mounted into the Job)." },
        { "DaemonTooOld", "The container's stasisd does not implement the freeze, checkpoint or push endpoint." },
        { "FreezeFailed", "stasisd could not freeze the container. Nothing was captured; every container runs on." },
        { "UnfreezeFailed", "stasisd could not thaw a container that this run froze. The container may be stalled: check it (`stasis-committer unpause` retries)." },
        { "CheckpointFailed", "stasisd could not write the snapshot (the writable layer switch or the local commit failed). The sandbox runs on unchanged." },
        { "CheckpointBusy", "Another checkpoint of the same mount was running." },
        { "PushFailed", "The snapshot was written but uploading it to the registry failed (registry down or refusing the upload)." },
        { "RegistryAuthFailed", "The registry refused the credentials (or asked for some and none were configured)." },
        { "Timeout", "A step took longer than its deadline (--timeout, or stasisd's own)." },
        { "Interrupted", "The committer got SIGINT or SIGTERM (Job deleted or deadline hit); it thawed every container it froze." },
        { "ReportFailed", "The result could not be written to the termination log." },
        { "StatusUpdateFailed", "The SandboxSnapshot status could not be written (API server unreachable, token refused, or conflicts to the end)." },
};
const size_t cm_n_reasons = ELEMENTSOF(cm_reasons);

bool cm_reason_known(const char *reason)
{
        for (size_t i = 0; reason && i < cm_n_reasons; i++)
                if (strcmp(cm_reasons[i].reason, reason) == 0)
                        return true;
        return false;
}

int cm_split_target(const char *arg, char **ret_name, char **ret_uri)
{
        _cleanup_(freep) char *name = NULL, *uri = NULL;
        const char *colon;

        if (!arg || !ret_name || !ret_uri)
                return -EINVAL;
        colon = strchr(arg, ':');
        if (!colon || colon == arg || !colon[1])
                return -EINVAL;
        name = strndup(arg, (size_t)(colon - arg));
        uri = strdup(colon + 1);
        if (!name || !uri)
                return -ENOMEM;
        *ret_name = TAKE_PTR(name);
        *ret_uri = TAKE_PTR(uri);
        return 0;
}

int cm_uri_host(const char *uri, char **ret_host)
{
        const char *slash;
        char *h;

        if (!uri || !ret_host)
                return -EINVAL;
        if (strncmp(uri, "oci://", 6) == 0)
                uri += 6;
        slash = strchr(uri, '/');
        if (!slash || slash == uri)
                return -EINVAL;
        h = strndup(uri, (size_t)(slash - uri));
        if (!h)
                return -ENOMEM;
        *ret_host = h;
        return 0;
}

int cm_oci_ref(const char *uri, char **ret)
{
        char *s = NULL;

        if (!uri || !ret)
                return -EINVAL;
        if (asprintf(&s, "%s%s", strncmp(uri, "oci://", 6) == 0 ? "" : "oci://", uri) < 0)
                return -ENOMEM;
        *ret = s;
        return 0;
}

int cm_parse_bool(const char *s, bool *ret)
{
        static const char *const yes[] = { "1", "t", "T", "TRUE", "true", "True" };
        static const char *const no[] = { "0", "f", "F", "FALSE", "false", "False" };

        if (!s || !ret)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                if (strcmp(s, yes[i]) == 0) {
                        *ret = true;
                        return 0;
                }
                if (strcmp(s, no[i]) == 0) {
                        *ret = false;
                        return 0;
                }
        }
        return -EINVAL;
}

bool cm_host_looks_insecure(const char *host)
{
        const char *p;
        unsigned oct = 0;
        int digits = 0;

        if (!host)
                return false;
        if (strstr(host, "local") || strncmp(host, "127.", 4) == 0 || strncmp(host, "10.", 3) == 0 ||
            strncmp(host, "192.168.", 8) == 0)
                return true;
        if (strncmp(host, "172.", 4) != 0)
                return false;
        /* 172.16. through 172.31.: the second octet, then a dot */
        for (p = host + 4; isdigit((unsigned char)*p) && digits < 3; p++, digits++)
                oct = oct * 10 + (unsigned)(*p - '0');
        return digits > 0 && *p == '.' && oct >= 16 && oct <= 31;
}

bool cm_registry_insecure(const char *env, const char *host)
{
        bool b;

        if (cm_parse_bool(env, &b) == 0)
                return b;
        return cm_host_looks_insecure(host);
}

static void json_decrefp_(json_t **j) { json_decref(*j); }

/* wipe_freep(): for secrets, zeroed before they are freed. */
static void wipe_freep(char **p)
{
        if (!*p)
                return;
        for (volatile char *c = *p; *c; c++)
                *c = 0;
        free(*p);
}

/* auth_valid(): s is base64 of "user:pass" with no NUL inside. */
static bool auth_valid(const char *s)
{
        size_t len = strlen(s), pad = 0;
        _cleanup_(wipe_freep) char *out = NULL;
        int n;

        if (len == 0 || len % 4 != 0 || len > (size_t)INT32_MAX)
                return false;
        out = calloc(1, len / 4 * 3 + 1);
        if (!out)
                return false;
        n = EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)s, (int)len);
        if (n < 0)
                return false;
        pad = (s[len - 1] == '=') + (s[len - 2] == '=');
        n -= (int)pad;
        out[n] = 0;
        return strlen(out) == (size_t)n && strchr(out, ':') != NULL;
}

static char *b64_encode(const char *s)
{
        size_t len = strlen(s);
        char *out;

        if (len > (size_t)INT32_MAX / 2)
                return NULL;
        out = malloc(4 * DIV_ROUND_UP(len, 3) + 1);
        if (out)
                (void)EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)len);
        return out;
}

int cm_registry_auth(const char *path, const char *host, char **ret, char *ret_err)
{
        _cleanup_(json_decrefp_) json_t *j = NULL;
        _cleanup_(wipe_freep) char *buf = NULL, *plain = NULL;
        const char *auth, *user, *pass;
        json_error_t jerr;
        json_t *auths, *e;
        size_t len;
        char *out;
        int r;

        if (!path || !host || !ret)
                return -EINVAL;
        r = read_file_at(AT_FDCWD, path, CONFIG_MAX, &buf, &len);
        if (r == -ENOENT) {
                *ret = NULL; /* no file: push anonymously */
                return 0;
        }
        if (r < 0) {
                snprintf(ret_err, CM_ERR_MAX, "registry config %s: %s", path, strerror(-r));
                return r;
        }
        j = json_loadb(buf, len, 0, &jerr);
        if (!j || !json_is_object(j)) {
                snprintf(ret_err, CM_ERR_MAX, "registry config %s is not a JSON object (line %d)", path,
                         jerr.line);
                return -EINVAL;
        }
        auths = json_object_get(j, "auths");
        if (auths && !json_is_object(auths)) {
                snprintf(ret_err, CM_ERR_MAX, "registry config %s: \"auths\" is not an object", path);
                return -EINVAL;
        }
        e = json_object_get(auths, host); /* exact match, as image-committer */
        if (!e) {
                *ret = NULL;
                return 0;
        }
        if (!json_is_object(e))
                goto malformed;
        auth = json_string_value(json_object_get(e, "auth"));
        user = json_string_value(json_object_get(e, "username"));
        pass = json_string_value(json_object_get(e, "password"));
        if (auth && *auth) {
                if (!auth_valid(auth))
                        goto malformed;
                out = strdup(auth);
        } else if (user && *user && pass) {
                if (strchr(user, ':'))
                        goto malformed;
                if (asprintf(&plain, "%s:%s", user, pass) < 0)
                        return -ENOMEM;
                out = b64_encode(plain);
        } else {
                *ret = NULL;
                return 0;
        }
        if (!out)
                return -ENOMEM;
        *ret = out;
        return 0;
malformed:
        /* never quote the entry: it holds the secret */
        snprintf(ret_err, CM_ERR_MAX, "registry config %s: the entry for %s is malformed", path, host);
        return -EINVAL;
}

int cm_env_name(const char *container, char **ret)
{
        char *s;

        if (!container || !ret)
                return -EINVAL;
        s = strdup(container);
        if (!s)
                return -ENOMEM;
        for (char *p = s; *p; p++)
                *p = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
        *ret = s;
        return 0;
}

bool cm_is_digest(const char *s)
{
        if (!s || strncmp(s, "sha256:", 7) != 0 || strlen(s) != 7 + 64)
                return false;
        for (s += 7; *s; s++)
                if (!isdigit((unsigned char)*s) && !(*s >= 'a' && *s <= 'f'))
                        return false;
        return true;
}

int cm_termination_message(const struct cm_result *res, size_t n, char **ret)
{
        _cleanup_(json_decrefp_) json_t *j = NULL;
        json_t *arr;
        char *s, *line = NULL;
        int len;

        if ((!res && n) || !ret)
                return -EINVAL;
        arr = json_array();
        j = json_pack("{s:o}", "containers", arr);
        if (!j)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                if (json_array_append_new(arr, json_pack("{s:s, s:s, s:s}", "name", res[i].name, "image",
                                                         res[i].image, "digest", res[i].digest)) < 0)
                        return -ENOMEM;
        s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (!s)
                return -ENOMEM;
        len = asprintf(&line, "%s\n", s);
        free(s);
        if (len < 0)
                return -ENOMEM;
        if ((size_t)len >= CM_TERMINATION_MAX) {
                free(line);
                return -E2BIG;
        }
        *ret = line;
        return 0;
}

int cm_digest_lines(const struct cm_result *res, size_t n, char **ret)
{
        char *buf = NULL;
        size_t size = 0;
        FILE *f;

        if (!res || n == 0 || !ret)
                return -EINVAL;
        f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                _cleanup_(freep) char *env = NULL;
                if (cm_env_name(res[i].name, &env) < 0) {
                        fclose(f);
                        free(buf);
                        return -ENOMEM;
                }
                fprintf(f, "SNAPSHOT_DIGEST_%s=%s\n", env, res[i].digest);
        }
        fprintf(f, "SNAPSHOT_DIGEST=%s\n", res[0].digest);
        if (fclose(f) != 0) {
                free(buf);
                return -ENOMEM;
        }
        *ret = buf;
        return 0;
}
