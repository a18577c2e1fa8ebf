/* backend-oci.c — the OCI registry store behind the backend vtable (see
 * oci.h and docs/registry.md).
 *
 *   has/size   HEAD /v2/REPO/blobs/D; on 404, HEAD /v2/REPO/manifests/D
 *              (a registry keeps manifests apart from blobs)
 *   read       GET /v2/REPO/blobs/D with a Range; adjacent reads of one blob
 *              are coalesced: a read that starts where the last range of
 *              that blob ended fetches twice that range's window (at most
 *              OCI_COALESCE_MAX) and keeps it for the reads that follow.
 *              A random read fetches exactly what it asks for, and so
 *              does every read after backend_oci_exact_reads() (a mount,
 *              which coalesces its own once its tree is loaded).
 *   write      an OCI image manifest is held in memory until an index
 *              update names it (then PUT by tag, blobs being in by then);
 *              any other blob: HEAD, then a cross-repository mount if a
 *              mount_from repository is set, else POST + PUT ?digest= for
 *              blobs up to OCI_UPLOAD_CHUNK, POST + PATCH chunks + PUT for
 *              larger ones (never the single-POST monolithic form)
 *   index_read the repository's tags (GET tags/list, HEAD each manifest)
 *              as an OCI image index with ref.name annotations
 *   index_transaction
 *              index_read, fn, then PUT the manifests whose tag is new or
 *              moved (untagged new roots by digest). A registry has no lock:
 *              concurrent writers of one tag race, and the last PUT wins.
 *              Tags cannot be removed (-EOPNOTSUPP).
 *   freshen    a presence check (registries have no mtimes)
 *   remove, list  -EOPNOTSUPP (registry GC is the registry's business)
 *
 * Locking: lock guards the manifest table and the read segments and is
 * never held over network I/O; index_lock serializes index transactions of
 * this process. Lock order: index_lock, then lock. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend-private.h"
#include "registry.h"
#include "snapshot.h"
#include "util.h"

#define N_SEGMENTS 8
#define N_MANIFESTS 32
#define TAGS_MAX (16u << 20)
#define ACCEPT_MANIFESTS                                                           \
        "Accept: application/vnd.oci.image.manifest.v1+json, "                    \
        "application/vnd.oci.image.index.v1+json, "                               \
        "application/vnd.docker.distribution.manifest.v2+json, "                  \
        "application/vnd.docker.distribution.manifest.list.v2+json"

struct segment {
        struct digest d;
        uint64_t off;
        size_t len;    /* bytes held */
        size_t window; /* bytes asked for */
        bool eof;      /* the blob ends at off + len */
        uint64_t used; /* LRU tick */
        uint8_t *data; /* NULL: empty slot */
};

struct manifest_entry {
        struct digest d;
        char *data; /* NULL: known to be a manifest, bytes not fetched */
        size_t len;
        bool pending; /* written here, not yet PUT */
        uint64_t used;
};

struct oci_backend {
        struct backend base;
        struct registry *reg;
        char repo[OCI_REPO_MAX];
        char scope[OCI_REPO_MAX + 32];
        char *mount_from;
        atomic_bool exact_reads; /* backend_oci_exact_reads() */
        pthread_mutex_t index_lock;
        pthread_mutex_t lock;
        struct segment seg[N_SEGMENTS];            /* lock */
        struct manifest_entry man[N_MANIFESTS];    /* lock */
        uint64_t tick;                             /* lock */
        char first_error[OCI_ERR_MAX];             /* lock: backend_oci_take_error() */
        atomic_uint_fast64_t bytes_uploaded, blobs_uploaded, blobs_mounted, blobs_present;
        atomic_uint_fast64_t bytes_downloaded, range_requests;
};

static const struct backend_ops oci_ops;

static struct oci_backend *to_oci(struct backend *b)
{
        return container_of(b, struct oci_backend, base);
}

bool backend_is_oci(const struct backend *b) { return b && b->ops == &oci_ops; }

void backend_oci_exact_reads(struct backend *b, bool on)
{
        if (backend_is_oci(b))
                atomic_store(&to_oci(b)->exact_reads, on);
}

/* note_error(): keep the first failure's sentence for
 * backend_oci_take_error(); registry messages never hold a secret. */
_printf_(2, 3) static void note_error(struct oci_backend *ob, const char *fmt, ...)
{
        va_list ap;

        pthread_mutex_lock(&ob->lock);
        if (!ob->first_error[0]) {
                va_start(ap, fmt);
                vsnprintf(ob->first_error, sizeof ob->first_error, fmt, ap);
                va_end(ap);
        }
        pthread_mutex_unlock(&ob->lock);
}

void backend_oci_take_error(struct backend *b, char *ret)
{
        struct oci_backend *ob;

        ret[0] = 0;
        if (!backend_is_oci(b))
                return;
        ob = to_oci(b);
        pthread_mutex_lock(&ob->lock);
        snprintf(ret, OCI_ERR_MAX, "%s", ob->first_error);
        ob->first_error[0] = 0;
        pthread_mutex_unlock(&ob->lock);
}

/* ---- manifests held in memory ---- */

/* man_find(): call with lock held. */
static struct manifest_entry *man_find(struct oci_backend *ob, const struct digest *d)
{
        for (unsigned i = 0; i < N_MANIFESTS; i++)
                if ((ob->man[i].data || ob->man[i].len) && digest_eq(&ob->man[i].d, d)) {
                        ob->man[i].used = ++ob->tick;
                        return &ob->man[i];
                }
        return NULL;
}

/* man_put(): remember manifest d (data may be NULL: only its size known).
 * Pending entries are never evicted; -ENOSPC if all slots are pending. */
static int man_put(struct oci_backend *ob, const struct digest *d, const void *data, size_t len,
                   bool pending)
{
        struct manifest_entry *e, *victim = NULL;
        char *copy = NULL;

        if (data) {
                copy = malloc(len ? len : 1);
                if (!copy)
                        return -ENOMEM;
                memcpy(copy, data, len);
        }
        pthread_mutex_lock(&ob->lock);
        e = man_find(ob, d);
        if (e) {
                if (copy && !e->data) {
                        e->data = TAKE_PTR(copy);
                        e->len = len;
                }
                e->pending = e->pending || pending;
                pthread_mutex_unlock(&ob->lock);
                free(copy);
                return 0;
        }
        for (unsigned i = 0; i < N_MANIFESTS; i++) {
                struct manifest_entry *m = &ob->man[i];
                if (m->pending)
                        continue;
                if (!victim || m->used < victim->used)
                        victim = m;
        }
        if (!victim) {
                pthread_mutex_unlock(&ob->lock);
                free(copy);
                return -ENOSPC;
        }
        free(victim->data);
        *victim = (struct manifest_entry){ .d = *d, .data = TAKE_PTR(copy), .len = len,
                                           .pending = pending, .used = ++ob->tick };
        pthread_mutex_unlock(&ob->lock);
        return 0;
}

/* man_copy(): a copy of a held manifest's bytes; -ENOENT if not held. */
static int man_copy(struct oci_backend *ob, const struct digest *d, char **ret, size_t *ret_len)
{
        struct manifest_entry *e;
        char *copy = NULL;
        int r = -ENOENT;

        pthread_mutex_lock(&ob->lock);
        e = man_find(ob, d);
        if (e && e->data) {
                copy = malloc(e->len ? e->len : 1);
                if (copy) {
                        memcpy(copy, e->data, e->len);
                        *ret_len = e->len;
                        r = 0;
                } else
                        r = -ENOMEM;
        }
        pthread_mutex_unlock(&ob->lock);
        if (r == 0)
                *ret = copy;
        return r;
}

/* looks_like_manifest(): an OCI image manifest (what snapshot_publish()
 * writes): held back until its tag is set, as the registry wants it by
 * the manifests endpoint. */
static bool looks_like_manifest(const void *data, size_t len)
{
        _cleanup_(json_decrefp) json_t *j = NULL;
        const char *mt;

        if (len < 2 || len > MANIFEST_MAX || ((const char *)data)[0] != '{' ||
            !memmem(data, len, MEDIA_OCI_MANIFEST, strlen(MEDIA_OCI_MANIFEST)))
                return false;
        j = json_loadb(data, len, 0, NULL);
        mt = json_string_value(json_object_get(j, "mediaType"));
        return mt && strcmp(mt, MEDIA_OCI_MANIFEST) == 0 && json_is_array(json_object_get(j, "layers"));
}

/* ---- requests ---- */

static int url_of(struct oci_backend *ob, const char *kind, const char *ref, char **ret)
{
        return asprintf(ret, "/v2/%s/%s/%s", ob->repo, kind, ref) < 0 ? -ENOMEM : 0;
}

/* head(): HEAD kind/ref; 1 with *ret_size, 0 if absent, -errno (logged for
 * answers errno cannot say). */
static int head(struct oci_backend *ob, const char *kind, const char *ref, uint64_t deadline_ns,
                uint64_t *ret_size)
{
        _cleanup_(freep) char *url = NULL;
        struct reg_response resp = {};
        struct reg_request q = {
                .method = "HEAD",
                .scope = ob->scope,
                .deadline_ns = deadline_ns,
                .headers = { strcmp(kind, "manifests") == 0 ? ACCEPT_MANIFESTS : NULL },
        };
        int r;

        r = url_of(ob, kind, ref, &url);
        if (r < 0)
                return r;
        q.url = url;
        r = registry_do(ob->reg, &q, &resp);
        if (r < 0) {
                log_debug("%s", resp.error);
                note_error(ob, "%s", resp.error[0] ? resp.error : strerror(-r));
                reg_response_release(&resp);
                return r;
        }
        if (resp.status == 200) {
                if (ret_size)
                        *ret_size = resp.has_content_length ? resp.content_length : 0;
                r = 1;
        } else if (resp.status == 404)
                r = 0;
        else {
                r = reg_status_errno(&resp);
                log_error_errno(r, "registry %s: HEAD %s/%s/%s: %s", registry_host(ob->reg), ob->repo, kind,
                                ref, resp.error);
                note_error(ob, "registry %s: HEAD %s/%s/%s: %s", registry_host(ob->reg), ob->repo, kind, ref,
                           resp.error);
        }
        reg_response_release(&resp);
        return r;
}

/* fetch_deadline(): reads end by the registry's fetch timeout, retries included. */
static uint64_t fetch_deadline(struct oci_backend *ob)
{
        return now_ns() + registry_fetch_timeout_ns(ob->reg);
}

/* stat_blob(): 1 and *ret_size, *ret_manifest; 0 absent; -errno. */
static int stat_blob(struct oci_backend *ob, const struct digest *d, uint64_t *ret_size, bool *ret_manifest)
{
        char ds[DIGEST_STR_LEN + 1];
        struct manifest_entry *e;
        uint64_t size = 0;
        bool known = false;
        int r;

        pthread_mutex_lock(&ob->lock);
        e = man_find(ob, d);
        if (e && e->data) {
                size = e->len;
                known = true;
        }
        pthread_mutex_unlock(&ob->lock);
        if (known) {
                *ret_size = size;
                *ret_manifest = true;
                return 1;
        }
        digest_str(d, ds);
        r = head(ob, "blobs", ds, fetch_deadline(ob), &size);
        if (r < 0)
                return r;
        if (r > 0) {
                *ret_size = size;
                *ret_manifest = false;
                return 1;
        }
        r = head(ob, "manifests", ds, fetch_deadline(ob), &size);
        if (r <= 0)
                return r;
        *ret_size = size;
        *ret_manifest = true;
        return 1;
}

static int oci_has(struct backend *b, const struct digest *d)
{
        uint64_t size;
        bool man;
        return stat_blob(to_oci(b), d, &size, &man);
}

static int oci_size(struct backend *b, const struct digest *d, uint64_t *ret_size)
{
        uint64_t size;
        bool man;
        int r = stat_blob(to_oci(b), d, &size, &man);

        if (r < 0)
                return r;
        if (r == 0)
                return -ENOENT;
        *ret_size = size;
        return 0;
}

int oci_manifest_get(struct backend *b, const char *ref, void **ret, size_t *ret_len,
                     struct digest *ret_digest)
{
        struct oci_backend *ob;
        _cleanup_(freep) char *url = NULL;
        struct reg_response resp = {};
        struct reg_request q = { .method = "GET", .headers = { ACCEPT_MANIFESTS }, .body_max = MANIFEST_MAX };
        struct digest d;
        int r;

        if (!backend_is_oci(b) || !ref || !ret || !ret_len)
                return -EINVAL;
        ob = to_oci(b);
        r = url_of(ob, "manifests", ref, &url);
        if (r < 0)
                return r;
        q.url = url;
        q.scope = ob->scope;
        q.deadline_ns = fetch_deadline(ob);
        r = registry_do(ob->reg, &q, &resp);
        if (r < 0) {
                log_error_errno(r, "%s", resp.error);
                reg_response_release(&resp);
                return r;
        }
        if (resp.status == 404) {
                reg_response_release(&resp);
                return -ENOENT;
        }
        if (resp.status != 200) {
                r = reg_status_errno(&resp);
                log_error_errno(r, "registry %s: GET manifest %s:%s: %s", registry_host(ob->reg), ob->repo, ref,
                                resp.error);
                reg_response_release(&resp);
                return r;
        }
        atomic_fetch_add(&ob->bytes_downloaded, resp.body_len);
        if (resp.digest[0] && digest_parse(resp.digest, &d) == 0)
                ;
        else
                digest_sha256(resp.body ? resp.body : "", resp.body_len, &d);
        {
                /* hold it under its real address, whatever the header says */
                struct digest real;
                digest_sha256(resp.body ? resp.body : "", resp.body_len, &real);
                (void)man_put(ob, &real, resp.body ? resp.body : "", resp.body_len, false);
        }
        if (!resp.body) {
                resp.body = strdup("");
                if (!resp.body)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(resp.body);
        *ret_len = resp.body_len;
        if (ret_digest)
                *ret_digest = d;
        reg_response_release(&resp);
        return 0;
}

int oci_manifest_head(struct backend *b, const char *ref, struct digest *ret)
{
        struct oci_backend *ob;
        _cleanup_(freep) char *url = NULL;
        struct reg_response resp = {};
        struct reg_request q = { .method = "HEAD", .headers = { ACCEPT_MANIFESTS } };
        struct digest d;
        int r;

        if (!backend_is_oci(b) || !ref || !ret)
                return -EINVAL;
        ob = to_oci(b);
        r = url_of(ob, "manifests", ref, &url);
        if (r < 0)
                return r;
        q.url = url;
        q.scope = ob->scope;
        q.deadline_ns = fetch_deadline(ob);
        r = registry_do(ob->reg, &q, &resp);
        if (r < 0) {
                log_debug("%s", resp.error);
        } else if (resp.status == 200) {
                r = resp.digest[0] && digest_parse(resp.digest, &d) == 0 ? 1 : 0;
                if (r > 0)
                        *ret = d;
        } else if (resp.status == 404)
                r = 0;
        else {
                r = reg_status_errno(&resp);
                log_debug("registry %s: HEAD manifest %s:%s: %s", registry_host(ob->reg), ob->repo, ref,
                          resp.error);
        }
        reg_response_release(&resp);
        return r;
}

/* ---- reads ---- */

/* seg_victim(): an empty slot, else the least recently used; lock held. */
static struct segment *seg_victim(struct oci_backend *ob)
{
        struct segment *v = &ob->seg[0];

        for (unsigned i = 0; i < N_SEGMENTS; i++) {
                if (!ob->seg[i].data)
                        return &ob->seg[i];
                if (ob->seg[i].used < v->used)
                        v = &ob->seg[i];
        }
        return v;
}

/* fetch_range(): GET len bytes at off of blob d into dst; the count (short
 * only at the end), 0 past the end, -ENOENT, -errno. */
static ssize_t fetch_range(struct oci_backend *ob, const struct digest *d, uint64_t off, void *dst,
                           size_t len)
{
        _cleanup_(freep) char *url = NULL;
        char ds[DIGEST_STR_LEN + 1], range[64];
        struct reg_response resp = {};
        struct reg_request q = {
                .method = "GET",
                .scope = ob->scope,
                .dst = dst,
                .cap = len,
                .range_off = off,
                .headers = { range },
        };
        ssize_t n;
        int r;

        if (len == 0)
                return 0;
        r = url_of(ob, "blobs", digest_str(d, ds), &url);
        if (r < 0)
                return r;
        snprintf(range, sizeof range, "Range: bytes=%" PRIu64 "-%" PRIu64, off, off + len - 1);
        q.url = url;
        q.deadline_ns = fetch_deadline(ob);
        atomic_fetch_add(&ob->range_requests, 1);
        r = registry_do(ob->reg, &q, &resp);
        if (r < 0) {
                log_debug("%s", resp.error);
                reg_response_release(&resp);
                return r;
        }
        if (resp.status == 200 || resp.status == 206) {
                n = (ssize_t)resp.body_len;
                atomic_fetch_add(&ob->bytes_downloaded, resp.body_len);
        } else if (resp.status == 416)
                n = 0;
        else if (resp.status == 404)
                n = -ENOENT;
        else {
                n = reg_status_errno(&resp);
                log_error_errno((int)n, "registry %s: GET blob %s in %s: %s", registry_host(ob->reg), ds, ob->repo,
                                resp.error);
        }
        reg_response_release(&resp);
        return n;
}

static ssize_t read_manifest(struct oci_backend *ob, const struct digest *d, uint64_t off, void *buf,
                             size_t len)
{
        _cleanup_(freep) char *data = NULL;
        size_t mlen = 0;
        int r;

        r = man_copy(ob, d, &data, &mlen);
        if (r == -ENOENT) {
                char ds[DIGEST_STR_LEN + 1];
                void *v = NULL;
                r = oci_manifest_get(&ob->base, digest_str(d, ds), &v, &mlen, NULL);
                data = v;
        }
        if (r < 0)
                return r;
        if (off >= mlen)
                return 0;
        len = MIN(len, mlen - (size_t)off);
        memcpy(buf, data + off, len);
        return (ssize_t)len;
}

static ssize_t oci_read(struct backend *b, const struct digest *d, uint64_t off, void *buf, size_t len)
{
        struct oci_backend *ob = to_oci(b);
        struct segment *victim = NULL;
        _cleanup_(freep) uint8_t *data = NULL;
        size_t window = len;
        bool is_manifest = false;
        ssize_t n;

        pthread_mutex_lock(&ob->lock);
        is_manifest = man_find(ob, d) != NULL;
        for (unsigned i = 0; i < N_SEGMENTS && !is_manifest; i++) {
                struct segment *s = &ob->seg[i];
                if (!s->data || !digest_eq(&s->d, d))
                        continue;
                if (off >= s->off && (off + len <= s->off + s->len || (s->eof && off <= s->off + s->len))) {
                        size_t k = MIN(len, s->len - (size_t)(off - s->off));
                        memcpy(buf, s->data + (off - s->off), k);
                        s->used = ++ob->tick;
                        pthread_mutex_unlock(&ob->lock);
                        return (ssize_t)k;
                }
                /* sequential: this read starts where the segment ends */
                if (s->off + s->len == off && !s->eof)
                        window = MAX(window, MIN(s->window * 2, (size_t)OCI_COALESCE_MAX));
        }
        pthread_mutex_unlock(&ob->lock);
        if (is_manifest)
                return read_manifest(ob, d, off, buf, len);

        if (atomic_load(&ob->exact_reads)) {
                n = fetch_range(ob, d, off, buf, len);
                return n == -ENOENT && off == 0 ? read_manifest(ob, d, off, buf, len) : n;
        }
        if (window <= len || len >= OCI_COALESCE_MAX) {
                n = fetch_range(ob, d, off, buf, len);
                if (n == -ENOENT && off == 0)
                        return read_manifest(ob, d, off, buf, len); /* manifests are not blobs */
                if (n >= 0 && len < OCI_COALESCE_MAX) {
                        /* remember where this read ended, for the next one:
                         * an empty segment there */
                        window = len;
                        data = malloc(1);
                        if (!data)
                                return n;
                        pthread_mutex_lock(&ob->lock);
                        victim = seg_victim(ob);
                        free(victim->data);
                        *victim = (struct segment){ .d = *d, .off = off + (uint64_t)n, .len = 0,
                                                    .window = window, .eof = (size_t)n < len,
                                                    .used = ++ob->tick, .data = TAKE_PTR(data) };
                        pthread_mutex_unlock(&ob->lock);
                }
                return n;
        }

        data = malloc(window);
        if (!data)
                return -ENOMEM;
        n = fetch_range(ob, d, off, data, window);
        if (n < 0)
                return n;
        memcpy(buf, data, MIN((size_t)n, len));
        pthread_mutex_lock(&ob->lock);
        victim = seg_victim(ob);
        free(victim->data);
        *victim = (struct segment){ .d = *d, .off = off, .len = (size_t)n, .window = window,
                                    .eof = (size_t)n < window, .used = ++ob->tick, .data = TAKE_PTR(data) };
        pthread_mutex_unlock(&ob->lock);
        return (ssize_t)MIN((size_t)n, len);
}

/* ---- writes ---- */

/* upload_url(): the absolute-or-/v2 URL to continue an upload at. */
static int upload_next(struct reg_response *resp, char **url)
{
        if (!resp->location[0])
                return -EPROTO;
        free(*url);
        *url = strdup(resp->location);
        return *url ? 0 : -ENOMEM;
}

/* upload(): one upload session for blob d. */
static int upload(struct oci_backend *ob, const struct digest *d, const void *data, size_t len,
                  struct reg_response *resp)
{
        _cleanup_(freep) char *url = NULL, *put = NULL;
        char ds[DIGEST_STR_LEN + 1];
        int r;

        digest_str(d, ds);
        if (ob->mount_from) {
                if (asprintf(&url, "/v2/%s/blobs/uploads/?mount=%s&from=%s", ob->repo, ds, ob->mount_from) < 0)
                        return -ENOMEM;
        } else if (asprintf(&url, "/v2/%s/blobs/uploads/", ob->repo) < 0)
                return -ENOMEM;
        r = registry_do(ob->reg,
                        &(struct reg_request){ .method = "POST", .url = url, .scope = ob->scope,
                                               .headers = { "Content-Length: 0" } },
                        resp);
        if (r < 0)
                return r;
        if (resp->status == 201 && ob->mount_from) {
                atomic_fetch_add(&ob->blobs_mounted, 1);
                log_debug("registry %s: %s mounted from %s", registry_host(ob->reg), ds, ob->mount_from);
                return 0;
        }
        if (resp->status != 202)
                return reg_status_errno(resp);
        r = upload_next(resp, &url);
        if (r < 0)
                return r;

        if (len > OCI_UPLOAD_CHUNK) {
                for (size_t off = 0; off < len;) {
                        size_t n = MIN((size_t)OCI_UPLOAD_CHUNK, len - off);
                        char cr[80];
                        snprintf(cr, sizeof cr, "Content-Range: %zu-%zu", off, off + n - 1);
                        r = registry_do(ob->reg,
                                        &(struct reg_request){ .method = "PATCH", .url = url, .scope = ob->scope,
                                                               .headers = { cr },
                                                               .body = (const char *)data + off, .body_len = n,
                                                               .no_retry = true },
                                        resp);
                        if (r < 0)
                                return r;
                        if (resp->status != 202)
                                return reg_status_errno(resp);
                        r = upload_next(resp, &url);
                        if (r < 0)
                                return r;
                        off += n;
                        atomic_fetch_add(&ob->bytes_uploaded, n);
                }
                if (asprintf(&put, "%s%cdigest=%s", url, strchr(url, '?') ? '&' : '?', ds) < 0)
                        return -ENOMEM;
                r = registry_do(ob->reg,
                                &(struct reg_request){ .method = "PUT", .url = put, .scope = ob->scope,
                                                       .headers = { "Content-Length: 0" }, .no_retry = true },
                                resp);
        } else {
                if (asprintf(&put, "%s%cdigest=%s", url, strchr(url, '?') ? '&' : '?', ds) < 0)
                        return -ENOMEM;
                r = registry_do(ob->reg,
                                &(struct reg_request){ .method = "PUT", .url = put, .scope = ob->scope,
                                                       .body = data ? data : "", .body_len = len,
                                                       .no_retry = true },
                                resp);
                if (r >= 0 && resp->status == 201)
                        atomic_fetch_add(&ob->bytes_uploaded, len);
        }
        if (r < 0)
                return r;
        if (resp->status != 201)
                return reg_status_errno(resp);
        atomic_fetch_add(&ob->blobs_uploaded, 1);
        return 0;
}

static int oci_write(struct backend *b, const struct digest *d, const void *data, size_t len)
{
        struct oci_backend *ob = to_oci(b);
        struct reg_response resp = {};
        char ds[DIGEST_STR_LEN + 1];
        uint64_t size;
        int r;

        if (looks_like_manifest(data, len))
                return man_put(ob, d, data, len, true);
        digest_str(d, ds);
        r = head(ob, "blobs", ds, fetch_deadline(ob), &size);
        if (r < 0)
                return r;
        if (r > 0) {
                atomic_fetch_add(&ob->blobs_present, 1);
                return 0;
        }
        /* An upload session that breaks is started over, a bounded number of times. */
        for (unsigned attempt = 0;; attempt++) {
                r = upload(ob, d, data, len, &resp);
                if (r >= 0 || attempt >= 2 || r == -EACCES || r == -ENOMEM || r == -EINVAL || r == -EBADMSG)
                        break;
                log_debug("registry %s: upload of %s failed (%s); starting over", registry_host(ob->reg), ds,
                          resp.error[0] ? resp.error : strerror(-r));
        }
        if (r < 0) {
                log_debug("registry %s: upload %s: %s", registry_host(ob->reg), ds,
                          resp.error[0] ? resp.error : strerror(-r));
                note_error(ob, "registry %s: upload of %s to %s: %s", registry_host(ob->reg), ds, ob->repo,
                           resp.error[0] ? resp.error : strerror(-r));
        }
        reg_response_release(&resp);
        return r;
}

static int oci_freshen(struct backend *b, const struct digest *d)
{
        int r = oci_has(b, d);
        return r < 0 ? r : r ? 0 : -ENOENT;
}

static int oci_remove(struct backend *b, const struct digest *d)
{
        (void)b, (void)d;
        return -EOPNOTSUPP;
}

static int oci_list(struct backend *b, blob_list_fn fn, void *ctx)
{
        (void)b, (void)fn, (void)ctx;
        return -EOPNOTSUPP;
}

int oci_manifest_put(struct backend *b, const char *ref, const void *data, size_t len)
{
        struct oci_backend *ob;
        _cleanup_(json_decrefp) json_t *j = NULL;
        _cleanup_(freep) char *url = NULL, *ct = NULL;
        struct reg_response resp = {};
        char ds[DIGEST_STR_LEN + 1];
        const char *mt;
        struct digest d, got;
        int r;

        if (!backend_is_oci(b) || !data)
                return -EINVAL;
        ob = to_oci(b);
        digest_sha256(data, len, &d);
        digest_str(&d, ds);
        j = json_loadb(data, len, 0, NULL);
        mt = json_string_value(json_object_get(j, "mediaType"));
        if (asprintf(&ct, "Content-Type: %s", mt ? mt : MEDIA_OCI_MANIFEST) < 0)
                return -ENOMEM;
        r = url_of(ob, "manifests", ref ? ref : ds, &url);
        if (r < 0)
                return r;
        r = registry_do(ob->reg,
                        &(struct reg_request){ .method = "PUT", .url = url, .scope = ob->scope,
                                               .headers = { ct }, .body = data, .body_len = len,
                                               .deadline_ns = fetch_deadline(ob) },
                        &resp);
        if (r < 0) {
                log_error_errno(r, "%s", resp.error);
                note_error(ob, "%s", resp.error[0] ? resp.error : strerror(-r));
                reg_response_release(&resp);
                return r;
        }
        if (resp.status != 201) {
                r = reg_status_errno(&resp);
                log_error_errno(r, "registry %s: PUT manifest %s:%s: %s", registry_host(ob->reg), ob->repo,
                                ref ? ref : ds, resp.error);
                note_error(ob, "registry %s: PUT manifest %s:%s: %s", registry_host(ob->reg), ob->repo,
                           ref ? ref : ds, resp.error);
                reg_response_release(&resp);
                return r;
        }
        if (resp.digest[0] && (digest_parse(resp.digest, &got) < 0 || !digest_eq(&got, &d))) {
                log_error("registry %s: stored manifest %s as %s", registry_host(ob->reg), ds, resp.digest);
                reg_response_release(&resp);
                return -EBADMSG;
        }
        reg_response_release(&resp);
        /* published: no longer pending */
        pthread_mutex_lock(&ob->lock);
        {
                struct manifest_entry *e = man_find(ob, &d);
                if (e)
                        e->pending = false;
        }
        pthread_mutex_unlock(&ob->lock);
        (void)man_put(ob, &d, data, len, false);
        return 0;
}

/* ---- the index: tags ---- */

static int oci_index_read(struct backend *b, json_t **ret)
{
        struct oci_backend *ob = to_oci(b);
        _cleanup_(json_decrefp) json_t *index = NULL, *tags = NULL;
        _cleanup_(freep) char *url = NULL;
        struct reg_response resp = {};
        json_t *t, *arr;
        size_t i;
        int r;

        index = backend_index_new_empty();
        if (!index)
                return -ENOMEM;
        if (asprintf(&url, "/v2/%s/tags/list", ob->repo) < 0)
                return -ENOMEM;
        r = registry_do(ob->reg,
                        &(struct reg_request){ .method = "GET", .url = url, .scope = ob->scope,
                                               .body_max = TAGS_MAX, .deadline_ns = fetch_deadline(ob) },
                        &resp);
        if (r < 0) {
                log_error_errno(r, "%s", resp.error);
                reg_response_release(&resp);
                return r;
        }
        if (resp.status == 404) { /* no such repository yet: no tags */
                reg_response_release(&resp);
                *ret = TAKE_PTR(index);
                return 0;
        }
        if (resp.status != 200) {
                r = reg_status_errno(&resp);
                log_error_errno(r, "registry %s: list tags of %s: %s", registry_host(ob->reg), ob->repo, resp.error);
                reg_response_release(&resp);
                return r;
        }
        tags = json_loadb(resp.body ? resp.body : "", resp.body_len, 0, NULL);
        reg_response_release(&resp);
        if (!json_is_object(tags))
                return log_error_errno(-EBADMSG, "registry %s: tags/list of %s is not JSON",
                                       registry_host(ob->reg), ob->repo);
        arr = json_object_get(index, "manifests");
        json_array_foreach(json_object_get(tags, "tags"), i, t) {
                _cleanup_(freep) char *murl = NULL;
                const char *tag = json_string_value(t);
                struct digest d;
                json_t *e;

                if (!tag || !tag_valid(tag))
                        continue;
                r = url_of(ob, "manifests", tag, &murl);
                if (r < 0)
                        return r;
                r = registry_do(ob->reg,
                                &(struct reg_request){ .method = "HEAD", .url = murl, .scope = ob->scope,
                                                       .headers = { ACCEPT_MANIFESTS },
                                                       .deadline_ns = fetch_deadline(ob) },
                                &resp);
                if (r < 0) {
                        log_error_errno(r, "%s", resp.error);
                        reg_response_release(&resp);
                        return r;
                }
                if (resp.status != 200 || digest_parse(resp.digest, &d) < 0) {
                        /* deleted meanwhile, or no digest header: not a root we can name */
                        reg_response_release(&resp);
                        continue;
                }
                e = json_pack("{s:s, s:s, s:I, s:{s:s}}", "mediaType",
                              resp.content_type[0] ? resp.content_type : MEDIA_OCI_MANIFEST, "digest",
                              resp.digest, "size", (json_int_t)(resp.has_content_length ? resp.content_length : 0),
                              "annotations", ANNOTATION_REF_NAME, tag);
                reg_response_release(&resp);
                if (!e || json_array_append_new(arr, e) < 0)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(index);
        return 0;
}

static const char *entry_tag(const json_t *e)
{
        return json_string_value(json_object_get(json_object_get(e, "annotations"), ANNOTATION_REF_NAME));
}

/* publish_entry(): PUT the manifest of index entry e by its tag (or digest). */
static int publish_entry(struct oci_backend *ob, const json_t *e)
{
        _cleanup_(freep) char *data = NULL;
        const char *ds = json_string_value(json_object_get(e, "digest"));
        const char *tag = entry_tag(e);
        struct digest d;
        size_t len = 0;
        int r;

        if (!ds || digest_parse(ds, &d) < 0)
                return -EBADMSG;
        r = man_copy(ob, &d, &data, &len);
        if (r == -ENOENT) {
                void *v = NULL;
                r = oci_manifest_get(&ob->base, ds, &v, &len, NULL);
                data = v;
        }
        if (r < 0)
                return r;
        {
                struct digest got;
                digest_sha256(data, len, &got);
                if (!digest_eq(&got, &d))
                        return log_error_errno(-EBADMSG, "registry %s: manifest %s: hash mismatch",
                                               registry_host(ob->reg), ds);
        }
        return oci_manifest_put(&ob->base, tag, data, len);
}

static bool index_has(const json_t *arr, const char *digest, const char *tag)
{
        size_t i;
        json_t *e;

        json_array_foreach(arr, i, e) {
                const char *d = json_string_value(json_object_get(e, "digest"));
                const char *t = entry_tag(e);
                if (!d || strcmp(d, digest) != 0)
                        continue;
                if (!tag || (t && strcmp(t, tag) == 0))
                        return true;
        }
        return false;
}

static bool index_has_tag(const json_t *arr, const char *tag)
{
        size_t i;
        json_t *e;

        json_array_foreach(arr, i, e) {
                const char *t = entry_tag(e);
                if (t && strcmp(t, tag) == 0)
                        return true;
        }
        return false;
}

static int oci_index_transaction(struct backend *b, index_fn fn, void *ctx)
{
        struct oci_backend *ob = to_oci(b);
        _cleanup_(json_decrefp) json_t *old = NULL, *cur = NULL;
        json_t *oa, *na, *e;
        size_t i;
        int r, result;

        pthread_mutex_lock(&ob->index_lock);
        r = oci_index_read(b, &old);
        if (r < 0)
                goto out;
        cur = json_deep_copy(old);
        if (!cur) {
                r = -ENOMEM;
                goto out;
        }
        result = fn(cur, ctx);
        if (result <= 0) {
                r = result;
                goto out;
        }
        r = backend_index_check(cur);
        if (r < 0)
                goto out;
        oa = json_object_get(old, "manifests");
        na = json_object_get(cur, "manifests");
        json_array_foreach(oa, i, e) {
                const char *t = entry_tag(e);
                if (t && !index_has_tag(na, t)) {
                        r = log_error_errno(-EOPNOTSUPP, "registry %s: cannot remove tag %s of %s",
                                            registry_host(ob->reg), t, ob->repo);
                        goto out;
                }
        }
        /* untagged new roots first (by digest), then tags: a tag is the last word */
        for (int pass = 0; pass < 2; pass++)
                json_array_foreach(na, i, e) {
                        const char *d = json_string_value(json_object_get(e, "digest"));
                        const char *t = entry_tag(e);

                        if (!d || (pass == 0) != !t)
                                continue;
                        if (index_has(oa, d, t) || (!t && index_has(oa, d, NULL)))
                                continue;
                        r = publish_entry(ob, e);
                        if (r < 0)
                                goto out;
                }
        r = result;
out:
        pthread_mutex_unlock(&ob->index_lock);
        return r;
}

static void oci_free(struct backend *b)
{
        struct oci_backend *ob;

        if (!b)
                return;
        ob = to_oci(b);
        registry_free(ob->reg);
        for (unsigned i = 0; i < N_SEGMENTS; i++)
                free(ob->seg[i].data);
        for (unsigned i = 0; i < N_MANIFESTS; i++)
                free(ob->man[i].data);
        free(ob->mount_from);
        pthread_mutex_destroy(&ob->lock);
        pthread_mutex_destroy(&ob->index_lock);
        free(ob);
}

static const struct backend_ops oci_ops = {
        .version = BACKEND_OPS_VERSION,
        .name = "oci",
        .has = oci_has,
        .size = oci_size,
        .read = oci_read,
        .write = oci_write,
        .freshen = oci_freshen,
        .remove = oci_remove,
        .list = oci_list,
        .index_read = oci_index_read,
        .index_transaction = oci_index_transaction,
        .free = oci_free,
};

void backend_oci_stats(struct backend *b, struct oci_stats *ret)
{
        struct oci_backend *ob;

        *ret = (struct oci_stats){};
        if (!backend_is_oci(b))
                return;
        ob = to_oci(b);
        registry_counters(ob->reg, &ret->requests, &ret->retries);
        ret->bytes_uploaded = atomic_load(&ob->bytes_uploaded);
        ret->blobs_uploaded = atomic_load(&ob->blobs_uploaded);
        ret->blobs_mounted = atomic_load(&ob->blobs_mounted);
        ret->blobs_present = atomic_load(&ob->blobs_present);
        ret->bytes_downloaded = atomic_load(&ob->bytes_downloaded);
        ret->range_requests = atomic_load(&ob->range_requests);
}

/* repo_valid(): the distribution spec's name grammar,
 * [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)* */
static bool repo_valid(const char *s)
{
        size_t n = strlen(s);
        bool need_alnum = true;

        if (n == 0 || n >= OCI_REPO_MAX)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];
                if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
                        need_alnum = false;
                        continue;
                }
                if (need_alnum)
                        return false;
                if (c == '/' || c == '.') {
                        need_alnum = true;
                        continue;
                }
                if (c == '_') {
                        if (s[i + 1] == '_')
                                i++;
                        need_alnum = true;
                        continue;
                }
                if (c == '-') {
                        while (s[i + 1] == '-')
                                i++;
                        need_alnum = true;
                        continue;
                }
                return false;
        }
        return !need_alnum;
}

int oci_ref_parse(const char *s, struct oci_ref *ret)
{
        struct oci_ref r = {};
        const char *p, *slash, *at, *colon;
        size_t n;

        if (!s || !ret || strncmp(s, "oci://", 6) != 0)
                return -EINVAL;
        p = s + 6;
        slash = strchr(p, '/');
        if (!slash || slash == p || (size_t)(slash - p) >= sizeof r.host)
                return -EINVAL;
        memcpy(r.host, p, (size_t)(slash - p));
        if (strpbrk(r.host, "@?#") || r.host[0] == ':')
                return -EINVAL;
        p = slash + 1;
        at = strchr(p, '@');
        if (at) {
                if (digest_parse(at + 1, &r.digest) < 0)
                        return -EINVAL;
                r.has_digest = true;
                n = (size_t)(at - p);
        } else {
                colon = strrchr(p, ':');
                n = strlen(p);
                if (colon && !strchr(colon, '/')) {
                        if (!tag_valid(colon + 1))
                                return -EINVAL;
                        snprintf(r.tag, sizeof r.tag, "%s", colon + 1);
                        n = (size_t)(colon - p);
                }
        }
        if (n == 0 || n >= sizeof r.repo)
                return -EINVAL;
        memcpy(r.repo, p, n);
        if (!repo_valid(r.repo))
                return -EINVAL;
        *ret = r;
        return 0;
}

int registry_opts_from_env(struct registry_opts *o)
{
        const char *e;

        if (!o)
                return -EINVAL;
        e = getenv(OCI_ENV_CONFIG);
        if (e && *e)
                o->config_path = e;
        e = getenv(OCI_ENV_CA_CERT);
        if (e && *e)
                o->ca_cert = e;
        e = getenv(OCI_ENV_INSECURE);
        if (e && *e && strcmp(e, "0") != 0)
                o->insecure = true;
        e = getenv(OCI_ENV_FETCH_TIMEOUT);
        if (e && *e) {
                char *end;
                double sec;
                errno = 0;
                sec = strtod(e, &end);
                if (errno || *end || !(sec > 0) || sec > 86400)
                        return log_error_errno(-EINVAL, "%s=%s: not a number of seconds (0 < s <= 86400)",
                                               OCI_ENV_FETCH_TIMEOUT, e);
                o->fetch_timeout_ms = (uint64_t)(sec * 1000);
                if (o->fetch_timeout_ms == 0)
                        o->fetch_timeout_ms = 1;
        }
        return 0;
}

int backend_oci_open(const char *host, const char *repo, const struct registry_opts *o,
                     struct backend **ret)
{
        char err[OCI_ERR_MAX] = "";
        int r = backend_oci_connect(host, repo, o, ret, err);

        if (r < 0)
                return log_error_errno(r, "%s", err[0] ? err : "registry: cannot connect: %m");
        return 0;
}

int backend_oci_connect(const char *host, const char *repo, const struct registry_opts *o,
                        struct backend **ret, char *ret_err)
{
        struct oci_backend *ob;
        int r;

        if (!host || !repo || !ret || !ret_err)
                return -EINVAL;
        ret_err[0] = 0;
        if (!repo_valid(repo)) {
                snprintf(ret_err, OCI_ERR_MAX, "registry %s: \"%.80s\" is not a repository name", host, repo);
                return -EINVAL;
        }
        ob = calloc(1, sizeof *ob);
        if (!ob)
                return -ENOMEM;
        ob->base.ops = &oci_ops;
        pthread_mutex_init(&ob->lock, NULL);
        pthread_mutex_init(&ob->index_lock, NULL);
        snprintf(ob->repo, sizeof ob->repo, "%s", repo);
        snprintf(ob->scope, sizeof ob->scope, "repository:%s:%s", repo, o && o->push ? "pull,push" : "pull");
        if (o && o->mount_from) {
                if (!repo_valid(o->mount_from)) {
                        oci_free(&ob->base);
                        snprintf(ret_err, OCI_ERR_MAX, "registry %s: \"%.80s\" is not a repository name", host,
                                 o->mount_from);
                        return -EINVAL;
                }
                ob->mount_from = strdup(o->mount_from);
                if (!ob->mount_from) {
                        oci_free(&ob->base);
                        return -ENOMEM;
                }
        }
        r = registry_new(host, o, ob->scope, &ob->reg, ret_err);
        if (r < 0) {
                oci_free(&ob->base);
                if (!ret_err[0])
                        snprintf(ret_err, OCI_ERR_MAX, "registry %s: cannot connect: %s", host, strerror(-r));
                return r;
        }
        *ret = &ob->base;
        return 0;
}

/* ---- the node store in front of a registry (backend_oci_node_new()) ---- */

struct node_backend {
        struct backend base;
        struct backend *local, *remote; /* borrowed */
};

static const struct backend_ops node_ops;

static struct node_backend *to_node(struct backend *b)
{
        return container_of(b, struct node_backend, base);
}

static int node_has(struct backend *b, const struct digest *d)
{
        struct node_backend *n = to_node(b);
        int r = backend_has(n->local, d);

        return r != 0 ? r : backend_has(n->remote, d);
}

static int node_size(struct backend *b, const struct digest *d, uint64_t *ret_size)
{
        struct node_backend *n = to_node(b);
        int r = backend_size(n->local, d, ret_size);

        return r == -ENOENT ? backend_size(n->remote, d, ret_size) : r;
}

static ssize_t node_read(struct backend *b, const struct digest *d, uint64_t off, void *buf, size_t len)
{
        struct node_backend *n = to_node(b);
        int r = backend_has(n->local, d);

        if (r < 0)
                return r;
        return backend_read(r > 0 ? n->local : n->remote, d, off, buf, len);
}

static int node_write(struct backend *b, const struct digest *d, const void *data, size_t len)
{
        return backend_write(to_node(b)->local, d, data, len);
}

/* freshen(): the node's copy; a blob only the registry has is present there
 * (registries have no mtimes), so 0 if it is. */
static int node_freshen(struct backend *b, const struct digest *d)
{
        struct node_backend *n = to_node(b);
        int r = backend_freshen(n->local, d);

        if (r != -ENOENT)
                return r;
        r = backend_has(n->remote, d);
        return r < 0 ? r : r > 0 ? 0 : -ENOENT;
}

static int node_remove(struct backend *b, const struct digest *d) { return backend_remove(to_node(b)->local, d); }

static int node_list(struct backend *b, blob_list_fn fn, void *ctx)
{
        return backend_list(to_node(b)->local, fn, ctx);
}

static int node_index_read(struct backend *b, json_t **ret) { return backend_index_read(to_node(b)->local, ret); }

static int node_index_transaction(struct backend *b, index_fn fn, void *ctx)
{
        return backend_index_transaction(to_node(b)->local, fn, ctx);
}

static void node_free(struct backend *b)
{
        free(b ? to_node(b) : NULL);
}

static const struct backend_ops node_ops = {
        .version = BACKEND_OPS_VERSION,
        .name = "oci-node",
        .has = node_has,
        .size = node_size,
        .read = node_read,
        .write = node_write,
        .freshen = node_freshen,
        .remove = node_remove,
        .list = node_list,
        .index_read = node_index_read,
        .index_transaction = node_index_transaction,
        .free = node_free,
};

int backend_oci_node_new(struct backend *local, struct backend *remote, struct backend **ret)
{
        struct node_backend *n;

        if (!local || !remote || !ret)
                return -EINVAL;
        n = calloc(1, sizeof *n);
        if (!n)
                return -ENOMEM;
        *n = (struct node_backend){ .base.ops = &node_ops, .local = local, .remote = remote };
        *ret = &n->base;
        return 0;
}
