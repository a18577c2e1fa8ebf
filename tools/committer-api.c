/* committer-api.c — see committer.h: the mount registry lookup by label,
 * and POSTs to a mount's stasisd over its unix socket with libcurl
 * (CURLOPT_UNIX_SOCKET_PATH; the URL's host is a placeholder). No state. */
#include <curl/curl.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "committer.h"

#define REPLY_MAX (1u << 20)
#define CONNECT_TIMEOUT_S 10L

static void json_decrefp_(json_t **j) { json_decref(*j); }
static void closedirp_(DIR **d)
{
        if (*d)
                closedir(*d);
}

void cm_mount_release(struct cm_mount *m)
{
        if (!m)
                return;
        free(m->container);
        free(m->entry);
        free(m->mountpoint);
        free(m->socket);
        *m = (struct cm_mount){};
}

static bool label_is(const json_t *labels, const char *key, const char *want)
{
        const char *v = json_string_value(json_object_get(labels, key));
        return v && strcmp(v, want) == 0;
}

int cm_mount_find(const char *run_dir, const char *pod, const char *ns, const char *container,
                  struct cm_mount *ret)
{
        _cleanup_(closedirp_) DIR *d = NULL;
        _cleanup_(json_decrefp_) json_t *found = NULL;
        _cleanup_(freep) char *found_path = NULL;
        struct cm_mount m = {};
        char dir[PATH_MAX];
        struct dirent *de;

        if (!run_dir || !pod || !ns || !container || !ret)
                return -EINVAL;
        if ((size_t)snprintf(dir, sizeof dir, "%s/mounts", run_dir) >= sizeof dir)
                return -ENAMETOOLONG;
        d = opendir(dir);
        if (!d)
                return -errno;
        while ((de = readdir(d))) {
                _cleanup_(json_decrefp_) json_t *j = NULL;
                _cleanup_(freep) char *p = NULL;
                size_t l = strlen(de->d_name);
                json_t *labels;

                if (de->d_name[0] == '.' || l < 6 || strcmp(de->d_name + l - 5, ".json") != 0)
                        continue;
                if (asprintf(&p, "%s/%s", dir, de->d_name) < 0)
                        return -ENOMEM;
                j = json_load_file(p, 0, NULL);
                labels = json_object_get(j, "labels");
                if (!label_is(labels, CM_LABEL_POD, pod) || !label_is(labels, CM_LABEL_NAMESPACE, ns) ||
                    !label_is(labels, CM_LABEL_CONTAINER, container))
                        continue;
                if (found)
                        return -ENOTUNIQ;
                found = TAKE_PTR(j);
                found_path = TAKE_PTR(p);
        }
        if (!found)
                return -ENOENT;
        m.container = strdup(container);
        m.entry = TAKE_PTR(found_path);
        m.mountpoint = strdup(json_string_value(json_object_get(found, "mountpoint")) ?: "");
        m.socket = strdup(json_string_value(json_object_get(found, "socket")) ?: "");
        if (!m.container || !m.mountpoint || !m.socket) {
                cm_mount_release(&m);
                return -ENOMEM;
        }
        if (!*m.socket) {
                cm_mount_release(&m);
                return -EBADMSG;
        }
        *ret = m;
        return 0;
}

void cm_reply_release(struct cm_reply *r)
{
        if (!r)
                return;
        json_decref(r->body);
        *r = (struct cm_reply){};
}

struct sink {
        char *buf;
        size_t len;
        bool overflow;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
        struct sink *s = userdata;
        size_t n = size * nmemb;
        char *nb;

        if (s->len + n > REPLY_MAX) {
                s->overflow = true;
                return 0;
        }
        nb = realloc(s->buf, s->len + n + 1);
        if (!nb)
                return 0;
        memcpy(nb + s->len, data, n);
        s->len += n;
        nb[s->len] = 0;
        s->buf = nb;
        return n;
}

static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
        const struct cm_call *c = userdata;
        (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
        return c->stop && *c->stop ? 1 : 0;
}

static void curl_easy_cleanupp_(CURL **h)
{
        if (*h)
                curl_easy_cleanup(*h);
}
static void curl_slist_free_allp_(struct curl_slist **l) { curl_slist_free_all(*l); }

int cm_api_post(const char *socket, const char *path, const json_t *body, const struct cm_call *c,
                struct cm_reply *ret)
{
        _cleanup_(curl_easy_cleanupp_) CURL *h = NULL;
        _cleanup_(curl_slist_free_allp_) struct curl_slist *hl = NULL;
        _cleanup_(freep) char *req = NULL, *url = NULL;
        struct cm_call none = {};
        struct cm_reply rep = {};
        struct sink s = {};
        char errbuf[CURL_ERROR_SIZE] = "";
        CURLcode cc;
        int r = 0;

        if (!socket || !path || !ret)
                return -EINVAL;
        if (!c)
                c = &none;
        req = body ? json_dumps(body, JSON_COMPACT) : strdup("{}");
        if (!req || asprintf(&url, "http://stasisd%s", path) < 0)
                return -ENOMEM;
        h = curl_easy_init();
        if (!h)
                return -ENOMEM;
        hl = curl_slist_append(NULL, "Content-Type: application/json");
        if (!hl)
                return -ENOMEM;
        (void)curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, socket);
        (void)curl_easy_setopt(h, CURLOPT_URL, url);
        (void)curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http");
        (void)curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        (void)curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
        (void)curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
        (void)curl_easy_setopt(h, CURLOPT_USERAGENT, "stasis-committer/0.1");
        (void)curl_easy_setopt(h, CURLOPT_POST, 1L);
        (void)curl_easy_setopt(h, CURLOPT_POSTFIELDS, req);
        (void)curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(req));
        (void)curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
        if (c->timeout_s > 0)
                (void)curl_easy_setopt(h, CURLOPT_TIMEOUT, c->timeout_s);
        (void)curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        (void)curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
        (void)curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        (void)curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
        (void)curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)c);

        cc = curl_easy_perform(h);
        switch (cc) {
        case CURLE_OK:
                break;
        case CURLE_ABORTED_BY_CALLBACK:
                snprintf(rep.error, sizeof rep.error, "interrupted");
                r = -EINTR;
                break;
        case CURLE_OPERATION_TIMEDOUT:
                snprintf(rep.error, sizeof rep.error, "no answer within %ld s", c->timeout_s);
                r = -ETIMEDOUT;
                break;
        case CURLE_COULDNT_CONNECT:
                snprintf(rep.error, sizeof rep.error, "cannot connect to %s", socket);
                r = -ECONNREFUSED;
                break;
        default:
                snprintf(rep.error, sizeof rep.error, "%s", s.overflow ? "answer too long" : *errbuf ? errbuf : curl_easy_strerror(cc));
                r = -EIO;
                break;
        }
        if (r < 0) {
                free(s.buf);
                *ret = rep;
                return r;
        }
        (void)curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &rep.status);
        if (s.buf)
                rep.body = json_loadb(s.buf, s.len, 0, NULL);
        free(s.buf);
        if (rep.body) {
                const char *reason = json_string_value(json_object_get(rep.body, "reason"));
                const char *error = json_string_value(json_object_get(rep.body, "error"));
                if (reason)
                        snprintf(rep.reason, sizeof rep.reason, "%s", reason);
                if (error)
                        snprintf(rep.error, sizeof rep.error, "%s", error);
        }
        if (rep.status >= 400 && !rep.error[0])
                snprintf(rep.error, sizeof rep.error, "HTTP %ld", rep.status);
        *ret = rep;
        return 0;
}
