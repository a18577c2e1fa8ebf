/* registry-auth.c — see registry.h: credentials from a docker config.json,
 * WWW-Authenticate challenge parsing, base64. No state; thread-safe.
 *
 * Config lookup order: the path given (--registry-config), else
 * $DOCKER_CONFIG/config.json, else $HOME/.docker/config.json; a missing
 * default file means anonymous. In "auths", a key matches HOST when it equals
 * HOST after dropping an http:// or https:// prefix and any path
 * ("https://HOST/v1/" is docker login's old form). An entry gives either
 * "auth" (base64 of user:password) or "username" and "password"; an
 * "identitytoken" is used as the password (it is what token services take as
 * a refresh token with basic auth, good enough for distribution's flow).
 * credsStore / credHelpers are not run (no external programs). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "registry.h"
#include "util.h"

#define CONFIG_MAX (4u << 20)

static void wipe_free(char *s)
{
        if (!s)
                return;
        /* volatile writes: the compiler may not drop the wipe of a secret
         * that is about to be freed */
        for (volatile char *p = s; *p; p++)
                *p = 0;
        free(s);
}

void reg_creds_release(struct reg_creds *c)
{
        if (!c)
                return;
        wipe_free(c->user);
        wipe_free(c->secret);
        c->user = c->secret = NULL;
}

char *reg_base64(const void *data, size_t len)
{
        size_t n = 4 * DIV_ROUND_UP(len, 3) + 1;
        char *out;

        if (len > (size_t)INT32_MAX)
                return NULL;
        out = malloc(n);
        if (!out)
                return NULL;
        (void)EVP_EncodeBlock((unsigned char *)out, data, (int)len);
        return out;
}

/* base64_decode(): a NUL-terminated malloc'd string; -EINVAL on junk. */
static int base64_decode(const char *in, char **ret)
{
        size_t len = strlen(in), pad = 0;
        _cleanup_(freep) char *out = NULL;
        int n;

        if (len == 0 || len % 4 != 0 || len > (size_t)INT32_MAX)
                return -EINVAL;
        out = malloc(len / 4 * 3 + 1);
        if (!out)
                return -ENOMEM;
        n = EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)in, (int)len);
        if (n < 0)
                return -EINVAL;
        if (in[len - 1] == '=')
                pad++;
        if (in[len - 2] == '=')
                pad++;
        n -= (int)pad;
        out[n] = 0;
        if (strlen(out) != (size_t)n) /* a NUL inside: not user:password */
                return -EINVAL;
        *ret = TAKE_PTR(out);
        return 0;
}

/* key_matches(): "https://host/v1/" -> "host", compared with host. */
static bool key_matches(const char *key, const char *host)
{
        const char *k = key;
        size_t n;

        if (strncmp(k, "https://", 8) == 0)
                k += 8;
        else if (strncmp(k, "http://", 7) == 0)
                k += 7;
        n = strcspn(k, "/");
        return n == strlen(host) && strncmp(k, host, n) == 0;
}

int reg_creds_from_auth(const char *auth, struct reg_creds *ret)
{
        _cleanup_(freep) char *plain = NULL;
        struct reg_creds c = {};
        char *colon;
        int r;

        if (!auth || !ret)
                return -EINVAL;
        if (!*auth) {
                *ret = c;
                return 0;
        }
        r = base64_decode(auth, &plain);
        if (r < 0)
                return r;
        colon = strchr(plain, ':');
        if (!colon) {
                wipe_free(TAKE_PTR(plain));
                return -EINVAL;
        }
        *colon = 0;
        c.user = strdup(plain);
        c.secret = strdup(colon + 1);
        *colon = ':';
        wipe_free(TAKE_PTR(plain));
        if (!c.user || !c.secret) {
                reg_creds_release(&c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

static int creds_from_entry(const json_t *e, struct reg_creds *ret)
{
        const char *auth = json_string_value(json_object_get(e, "auth"));
        const char *user = json_string_value(json_object_get(e, "username"));
        const char *pass = json_string_value(json_object_get(e, "password"));
        const char *idt = json_string_value(json_object_get(e, "identitytoken"));
        struct reg_creds c = {};

        if (auth && *auth)
                return reg_creds_from_auth(auth, ret);
        else if (user && (pass || idt)) {
                c.user = strdup(user);
                c.secret = strdup(pass ? pass : idt);
        } else
                return 0; /* nothing usable: anonymous */
        if (!c.user || !c.secret) {
                reg_creds_release(&c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

int reg_creds_load(const char *path, const char *host, struct reg_creds *ret, char *ret_err)
{
        _cleanup_(json_decrefp) json_t *j = NULL;
        _cleanup_(freep) char *buf = NULL, *def = NULL;
        const char *key;
        json_error_t jerr;
        json_t *auths, *e;
        size_t len;
        bool explicit = path != NULL;
        int r;

        *ret = (struct reg_creds){};
        if (!path) {
                const char *dc = getenv("DOCKER_CONFIG"), *home = getenv("HOME");
                int n;

                if (dc && *dc)
                        n = asprintf(&def, "%s/config.json", dc);
                else if (home && *home)
                        n = asprintf(&def, "%s/.docker/config.json", home);
                else
                        return 0;
                if (n < 0)
                        return -ENOMEM;
                path = def;
        }
        r = read_file_at(AT_FDCWD, path, CONFIG_MAX, &buf, &len);
        if (r == -ENOENT && !explicit)
                return 0;
        if (r < 0) {
                snprintf(ret_err, REG_ERR_MAX, "registry config %s: %s", path, strerror(-r));
                return r;
        }
        j = json_loadb(buf, len, 0, &jerr);
        if (!j || !json_is_object(j)) {
                snprintf(ret_err, REG_ERR_MAX, "registry config %s: not a JSON object (line %d)", path,
                         jerr.line);
                return -EINVAL;
        }
        auths = json_object_get(j, "auths");
        if (auths && !json_is_object(auths)) {
                snprintf(ret_err, REG_ERR_MAX, "registry config %s: \"auths\" is not an object", path);
                return -EINVAL;
        }
        json_object_foreach(auths, key, e) {
                if (!key_matches(key, host))
                        continue;
                r = creds_from_entry(e, ret);
                if (r < 0) {
                        /* never quote the entry: it holds the secret */
                        snprintf(ret_err, REG_ERR_MAX,
                                 "registry config %s: the entry for %s is malformed", path, host);
                        return r;
                }
                log_debug("registry %s: credentials from %s", host, path);
                return 0;
        }
        return 0;
}

int oci_registry_auth(const char *config_path, const char *host, char **ret)
{
        _cleanup_(reg_creds_release) struct reg_creds c = {};
        char err[REG_ERR_MAX] = "", *plain = NULL, *out;
        int r;

        if (!host || !ret)
                return -EINVAL;
        r = reg_creds_load(config_path, host, &c, err);
        if (r < 0)
                return log_error_errno(r, "%s", err[0] ? err : "registry config: %m");
        if (!c.user) {
                out = strdup("");
                if (!out)
                        return -ENOMEM;
                *ret = out;
                return 0;
        }
        if (asprintf(&plain, "%s:%s", c.user, c.secret) < 0)
                return -ENOMEM;
        out = reg_base64(plain, strlen(plain));
        wipe_free(plain);
        if (!out)
                return -ENOMEM;
        *ret = out;
        return 0;
}

/* copy_field(): a challenge field; longer than the room is cut (and then
 * fails where it is used, as a token request to a wrong realm). */
static void copy_field(char *dst, size_t cap, const char *v, size_t vl)
{
        vl = MIN(vl, cap - 1);
        memcpy(dst, v, vl);
        dst[vl] = 0;
}

/* Challenges: SCHEME 1*SP param *( "," param ), param = key "=" ( token | quoted ). */
int reg_challenge_parse(const char *h, struct reg_challenge *ret)
{
        struct reg_challenge c = {};
        const char *p = h;
        size_t n;

        while (*p == ' ')
                p++;
        n = strcspn(p, " ");
        if (n == 5 && strncasecmp(p, "Basic", 5) == 0)
                c.scheme = REG_AUTH_BASIC;
        else if (n == 6 && strncasecmp(p, "Bearer", 6) == 0)
                c.scheme = REG_AUTH_BEARER;
        else
                return -EOPNOTSUPP;
        p += n;
        for (;;) {
                char key[32], val[1024];
                size_t kl, vl = 0;

                while (*p == ' ' || *p == ',')
                        p++;
                if (!*p)
                        break;
                kl = strcspn(p, "= ,");
                if (p[kl] != '=' || kl >= sizeof key)
                        return -EBADMSG;
                memcpy(key, p, kl);
                key[kl] = 0;
                p += kl + 1;
                if (*p == '"') {
                        p++;
                        while (*p && *p != '"') {
                                if (*p == '\\' && p[1])
                                        p++;
                                if (vl + 1 >= sizeof val)
                                        return -EBADMSG;
                                val[vl++] = *p++;
                        }
                        if (*p != '"')
                                return -EBADMSG;
                        p++;
                } else {
                        while (*p && *p != ',' && *p != ' ') {
                                if (vl + 1 >= sizeof val)
                                        return -EBADMSG;
                                val[vl++] = *p++;
                        }
                }
                val[vl] = 0;
                if (strcasecmp(key, "realm") == 0)
                        copy_field(c.realm, sizeof c.realm, val, vl);
                else if (strcasecmp(key, "service") == 0)
                        copy_field(c.service, sizeof c.service, val, vl);
                else if (strcasecmp(key, "scope") == 0)
                        copy_field(c.scope, sizeof c.scope, val, vl);
        }
        if (c.scheme == REG_AUTH_BEARER && !c.realm[0])
                return -EBADMSG;
        *ret = c;
        return 0;
}
