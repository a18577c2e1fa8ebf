/* backend-memory.c — the in-memory store for unit tests: a chained hash table
 * of blobs keyed by digest, and one index. Thread-safe.
 *
 * Lock order: index_lock, then lock. index_lock serializes transactions and
 * is held while fn runs (fn may use the blob operations, which take only
 * lock); lock guards the table and the index pointer and is never held while
 * calling out. The index is deep-copied in and out, so no caller ever aliases
 * the stored one. */
#include "backend.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "backend-private.h"
#include "util.h"

struct mem_blob {
        struct mem_blob *next;
        struct digest digest;
        struct timespec mtime;
        size_t len;
        uint8_t data[];
};

struct memory_backend {
        struct backend base;
        pthread_mutex_t index_lock; /* held for a whole index_transaction() */
        pthread_mutex_t lock;
        struct mem_blob **buckets;  /* lock */
        size_t n_buckets;           /* lock; a power of two */
        size_t n_blobs;             /* lock */
        json_t *index;              /* lock; never handed out */
};

static struct memory_backend *to_memory(struct backend *b)
{
        return container_of(b, struct memory_backend, base);
}

static size_t bucket_of(const struct memory_backend *m, const struct digest *d)
{
        uint64_t h;
        memcpy(&h, d->b, sizeof h); /* a digest is already uniformly spread */
        return (size_t)h & (m->n_buckets - 1);
}

/* find(): the blob, or NULL; call with lock held. */
static struct mem_blob *find(struct memory_backend *m, const struct digest *d)
{
        for (struct mem_blob *e = m->buckets[bucket_of(m, d)]; e; e = e->next)
                if (digest_eq(&e->digest, d))
                        return e;
        return NULL;
}

/* grow(): double the table once it is fuller than one blob per bucket;
 * failing to grow only makes chains longer. Call with lock held. */
static void grow(struct memory_backend *m)
{
        size_t n = m->n_buckets * 2;
        struct mem_blob **nb;

        if (m->n_blobs < m->n_buckets)
                return;
        nb = calloc(n, sizeof *nb);
        if (!nb)
                return;
        for (size_t i = 0; i < m->n_buckets; i++) {
                struct mem_blob *e = m->buckets[i], *next;
                for (; e; e = next) {
                        uint64_t h;
                        next = e->next;
                        memcpy(&h, e->digest.b, sizeof h);
                        e->next = nb[(size_t)h & (n - 1)];
                        nb[(size_t)h & (n - 1)] = e;
                }
        }
        free(m->buckets);
        m->buckets = nb;
        m->n_buckets = n;
}

static int memory_has(struct backend *b, const struct digest *d)
{
        struct memory_backend *m = to_memory(b);
        int r;

        pthread_mutex_lock(&m->lock);
        r = find(m, d) ? 1 : 0;
        pthread_mutex_unlock(&m->lock);
        return r;
}

static int memory_size(struct backend *b, const struct digest *d, uint64_t *ret_size)
{
        struct memory_backend *m = to_memory(b);
        struct mem_blob *e;
        int r = -ENOENT;

        pthread_mutex_lock(&m->lock);
        e = find(m, d);
        if (e) {
                *ret_size = e->len;
                r = 0;
        }
        pthread_mutex_unlock(&m->lock);
        return r;
}

static ssize_t memory_read(struct backend *b, const struct digest *d, uint64_t off, void *buf,
                           size_t len)
{
        struct memory_backend *m = to_memory(b);
        struct mem_blob *e;
        ssize_t r = -ENOENT;

        pthread_mutex_lock(&m->lock);
        e = find(m, d);
        if (e) {
                size_t n = off < e->len ? MIN(len, e->len - (size_t)off) : 0;
                if (n)
                        memcpy(buf, e->data + off, n);
                r = (ssize_t)n;
        }
        pthread_mutex_unlock(&m->lock);
        return r;
}

static int memory_write(struct backend *b, const struct digest *d, const void *data, size_t len)
{
        struct memory_backend *m = to_memory(b);
        struct mem_blob *e, *n;
        struct timespec now;
        size_t i;

        clock_gettime(CLOCK_REALTIME, &now);
        /* Copy outside the lock; thrown away if the blob is there already. */
        n = malloc(sizeof *n + len);
        if (!n)
                return -ENOMEM;
        n->digest = *d;
        n->mtime = now;
        n->len = len;
        if (len)
                memcpy(n->data, data, len);

        pthread_mutex_lock(&m->lock);
        e = find(m, d);
        if (e) {
                e->mtime = now;
        } else {
                grow(m);
                i = bucket_of(m, d);
                n->next = m->buckets[i];
                m->buckets[i] = n;
                m->n_blobs++;
                n = NULL;
        }
        pthread_mutex_unlock(&m->lock);
        free(n);
        return 0;
}

static int memory_freshen(struct backend *b, const struct digest *d)
{
        struct memory_backend *m = to_memory(b);
        struct mem_blob *e;
        struct timespec now;
        int r = -ENOENT;

        clock_gettime(CLOCK_REALTIME, &now);
        pthread_mutex_lock(&m->lock);
        e = find(m, d);
        if (e) {
                e->mtime = now;
                r = 0;
        }
        pthread_mutex_unlock(&m->lock);
        return r;
}

static int memory_remove(struct backend *b, const struct digest *d)
{
        struct memory_backend *m = to_memory(b);
        struct mem_blob **p, *e = NULL;

        pthread_mutex_lock(&m->lock);
        for (p = &m->buckets[bucket_of(m, d)]; *p; p = &(*p)->next)
                if (digest_eq(&(*p)->digest, d)) {
                        e = *p;
                        *p = e->next;
                        m->n_blobs--;
                        break;
                }
        pthread_mutex_unlock(&m->lock);
        if (!e)
                return -ENOENT;
        free(e);
        return 0;
}

static int memory_list(struct backend *b, blob_list_fn fn, void *ctx)
{
        struct memory_backend *m = to_memory(b);
        _cleanup_(freep) struct blob_info *infos = NULL;
        size_t n = 0;

        /* Walk a snapshot, so fn may call back into the backend (gc removes
         * blobs while it lists them). */
        pthread_mutex_lock(&m->lock);
        infos = calloc(m->n_blobs ? m->n_blobs : 1, sizeof *infos);
        if (infos)
                for (size_t i = 0; i < m->n_buckets; i++)
                        for (struct mem_blob *e = m->buckets[i]; e; e = e->next)
                                infos[n++] = (struct blob_info){ .digest = e->digest,
                                                                 .size = e->len,
                                                                 .mtime = e->mtime };
        pthread_mutex_unlock(&m->lock);
        if (!infos)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                int r = fn(&infos[i], ctx);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int memory_index_read(struct backend *b, json_t **ret)
{
        struct memory_backend *m = to_memory(b);
        json_t *copy;

        pthread_mutex_lock(&m->lock);
        copy = json_deep_copy(m->index);
        pthread_mutex_unlock(&m->lock);
        if (!copy)
                return -ENOMEM;
        *ret = copy;
        return 0;
}

static int memory_index_transaction(struct backend *b, index_fn fn, void *ctx)
{
        struct memory_backend *m = to_memory(b);
        json_t *index, *old;
        int r;

        pthread_mutex_lock(&m->index_lock);
        r = memory_index_read(b, &index);
        if (r < 0)
                goto unlock;
        r = fn(index, ctx);
        if (r <= 0) {
                json_decref(index);
                goto unlock;
        }
        if (backend_index_check(index) < 0) {
                json_decref(index);
                r = log_error_errno(EINVAL, "memory store: refusing to store an index without "
                                    "a \"manifests\" array");
                goto unlock;
        }
        /* fn's object is still the caller's; keep a copy nobody else holds. */
        old = json_deep_copy(index);
        json_decref(index);
        if (!old) {
                r = -ENOMEM;
                goto unlock;
        }
        pthread_mutex_lock(&m->lock);
        index = m->index;
        m->index = old;
        pthread_mutex_unlock(&m->lock);
        json_decref(index);
unlock:
        pthread_mutex_unlock(&m->index_lock);
        return r;
}

static void memory_free(struct backend *b)
{
        struct memory_backend *m;

        if (!b)
                return;
        m = to_memory(b);
        for (size_t i = 0; i < m->n_buckets; i++) {
                struct mem_blob *e = m->buckets[i], *next;
                for (; e; e = next) {
                        next = e->next;
                        free(e);
                }
        }
        free(m->buckets);
        json_decref(m->index);
        pthread_mutex_destroy(&m->lock);
        pthread_mutex_destroy(&m->index_lock);
        free(m);
}

static const struct backend_ops memory_ops = {
        .version = BACKEND_OPS_VERSION,
        .name = "memory",
        .has = memory_has,
        .size = memory_size,
        .read = memory_read,
        .write = memory_write,
        .freshen = memory_freshen,
        .remove = memory_remove,
        .list = memory_list,
        .index_read = memory_index_read,
        .index_transaction = memory_index_transaction,
        .free = memory_free,
};

struct backend *backend_memory_new(void)
{
        struct memory_backend *m = calloc(1, sizeof *m);

        if (!m)
                return NULL;
        m->base.ops = &memory_ops;
        m->n_buckets = 64;
        m->buckets = calloc(m->n_buckets, sizeof *m->buckets);
        m->index = backend_index_new_empty();
        if (!m->buckets || !m->index) {
                free(m->buckets);
                json_decref(m->index);
                free(m);
                return NULL;
        }
        pthread_mutex_init(&m->lock, NULL);
        pthread_mutex_init(&m->index_lock, NULL);
        return &m->base;
}
