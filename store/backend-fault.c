/* backend-fault.c — the fault injector (see backend.h), after SQLite's
 * test VFS: it passes every call to the inner backend, counts the calls of
 * the ops in spec.op_mask, and spoils the nth one. Thread-safe: the spec and
 * the counters sit under one mutex, which is never held while calling inner.
 *
 * FAULT_SHORT_READ and FAULT_FLIP_BIT only make sense for read(), so for
 * them only reads are counted, whatever else op_mask names. A read that
 * returns 0 bytes (or an error) cannot be spoiled; it is counted as a call
 * but not as a hit. */
#include "backend.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "util.h"

struct fault_backend {
        struct backend base;
        struct backend *inner; /* owned */
        pthread_mutex_t lock;
        struct fault_spec spec; /* lock */
        uint64_t calls;         /* lock */
        uint64_t hits;          /* lock */
};

static const struct backend_ops fault_ops;

static struct fault_backend *to_fault(struct backend *b)
{
        return container_of(b, struct fault_backend, base);
}

/* check(): count a call of op; the fault it gets (FAULT_NONE mostly) and,
 * for FAULT_FAIL, the error in *ret_err. FAULT_FAIL counts as a hit here;
 * the read faults count once they really changed something (hit()). */
static enum fault_kind check(struct fault_backend *f, unsigned op, int *ret_err)
{
        enum fault_kind k = FAULT_NONE;
        unsigned mask;

        pthread_mutex_lock(&f->lock);
        mask = f->spec.op_mask;
        if (f->spec.kind == FAULT_SHORT_READ || f->spec.kind == FAULT_FLIP_BIT)
                mask &= FAULT_OP_READ;
        if (mask & op) {
                f->calls++;
                if (f->spec.kind != FAULT_NONE && f->spec.nth > 0 &&
                    (f->spec.repeat ? f->calls % f->spec.nth == 0 : f->calls == f->spec.nth)) {
                        k = f->spec.kind;
                        *ret_err = f->spec.err > 0 ? f->spec.err : EIO;
                        if (k == FAULT_FAIL)
                                f->hits++;
                }
        }
        pthread_mutex_unlock(&f->lock);
        return k;
}

static void hit(struct fault_backend *f)
{
        pthread_mutex_lock(&f->lock);
        f->hits++;
        pthread_mutex_unlock(&f->lock);
}

#define FAIL_IF_FAULT(f, op)                                                \
        do {                                                                \
                int _err_ = 0;                                              \
                if (check((f), (op), &_err_) == FAULT_FAIL)                 \
                        return -_err_;                                      \
        } while (0)

static int fault_has(struct backend *b, const struct digest *d)
{
        struct fault_backend *f = to_fault(b);
        FAIL_IF_FAULT(f, FAULT_OP_HAS);
        return backend_has(f->inner, d);
}

static int fault_size(struct backend *b, const struct digest *d, uint64_t *ret_size)
{
        struct fault_backend *f = to_fault(b);
        FAIL_IF_FAULT(f, FAULT_OP_SIZE);
        return backend_size(f->inner, d, ret_size);
}

static ssize_t fault_read(struct backend *b, const struct digest *d, uint64_t off, void *buf,
                          size_t len)
{
        struct fault_backend *f = to_fault(b);
        enum fault_kind k;
        ssize_t n;
        int err = 0;

        k = check(f, FAULT_OP_READ, &err);
        if (k == FAULT_FAIL)
                return -err;
        n = backend_read(f->inner, d, off, buf, len);
        if (n <= 0)
                return n;
        switch (k) {
        case FAULT_SHORT_READ:
                hit(f);
                return n / 2;
        case FAULT_FLIP_BIT:
                hit(f);
                ((uint8_t *)buf)[n / 2] ^= 1;
                return n;
        default:
                return n;
        }
}

static int fault_write(struct backend *b, const struct digest *d, const void *data, size_t len)
{
        struct fault_backend *f = to_fault(b);
        FAIL_IF_FAULT(f, FAULT_OP_WRITE);
        return backend_write(f->inner, d, data, len);
}

static int fault_freshen(struct backend *b, const struct digest *d)
{
        struct fault_backend *f = to_fault(b);
        FAIL_IF_FAULT(f, FAULT_OP_FRESHEN);
        return backend_freshen(f->inner, d);
}

static int fault_remove(struct backend *b, const struct digest *d)
{
        struct fault_backend *f = to_fault(b);
        FAIL_IF_FAULT(f, FAULT_OP_REMOVE);
        return backend_remove(f->inner, d);
}

static int fault_list(struct backend *b, blob_list_fn fn, void *ctx)
{
        struct fault_backend *f = to_fault(b);
        FAIL_IF_FAULT(f, FAULT_OP_LIST);
        return backend_list(f->inner, fn, ctx);
}

static int fault_index_read(struct backend *b, json_t **ret)
{
        struct fault_backend *f = to_fault(b);
        FAIL_IF_FAULT(f, FAULT_OP_INDEX);
        return backend_index_read(f->inner, ret);
}

static int fault_index_transaction(struct backend *b, index_fn fn, void *ctx)
{
        struct fault_backend *f = to_fault(b);
        FAIL_IF_FAULT(f, FAULT_OP_INDEX);
        return backend_index_transaction(f->inner, fn, ctx);
}

static void fault_free(struct backend *b)
{
        struct fault_backend *f;

        if (!b)
                return;
        f = to_fault(b);
        backend_free(f->inner);
        pthread_mutex_destroy(&f->lock);
        free(f);
}

static const struct backend_ops fault_ops = {
        .version = BACKEND_OPS_VERSION,
        .name = "fault",
        .has = fault_has,
        .size = fault_size,
        .read = fault_read,
        .write = fault_write,
        .freshen = fault_freshen,
        .remove = fault_remove,
        .list = fault_list,
        .index_read = fault_index_read,
        .index_transaction = fault_index_transaction,
        .free = fault_free,
};

/* Takes inner even on failure, so `backend_fault_new(backend_memory_new(), &s)`
 * leaks nothing. A NULL spec injects and counts nothing. */
struct backend *backend_fault_new(struct backend *inner, const struct fault_spec *spec)
{
        struct fault_backend *f;

        if (!inner)
                return NULL;
        f = calloc(1, sizeof *f);
        if (!f) {
                backend_free(inner);
                return NULL;
        }
        f->base.ops = &fault_ops;
        f->inner = inner;
        if (spec)
                f->spec = *spec;
        pthread_mutex_init(&f->lock, NULL);
        return &f->base;
}

static struct fault_backend *as_fault(struct backend *b)
{
        return b && b->ops == &fault_ops ? to_fault(b) : NULL;
}

void backend_fault_set(struct backend *b, const struct fault_spec *spec)
{
        struct fault_backend *f = as_fault(b);

        if (!f)
                return;
        pthread_mutex_lock(&f->lock);
        f->spec = spec ? *spec : (struct fault_spec){ .kind = FAULT_NONE };
        f->calls = 0;
        f->hits = 0;
        pthread_mutex_unlock(&f->lock);
}

uint64_t backend_fault_calls(struct backend *b)
{
        struct fault_backend *f = as_fault(b);
        uint64_t n;

        if (!f)
                return 0;
        pthread_mutex_lock(&f->lock);
        n = f->calls;
        pthread_mutex_unlock(&f->lock);
        return n;
}

uint64_t backend_fault_hits(struct backend *b)
{
        struct fault_backend *f = as_fault(b);
        uint64_t n;

        if (!f)
                return 0;
        pthread_mutex_lock(&f->lock);
        n = f->hits;
        pthread_mutex_unlock(&f->lock);
        return n;
}
