/* backend.c — see backend.h: the NULL-checking wrappers around the vtable and
 * the helpers every caller uses to read and write whole blobs. */
#include "backend.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "backend-private.h"
#include "util.h"

/* An op is callable if the table is new enough to have it and fills it in. */
#define OP(b, op) ((b) && (b)->ops && (b)->ops->version >= 1 && (b)->ops->op)

int backend_has(struct backend *b, const struct digest *d)
{
        if (!b || !d)
                return -EINVAL;
        if (!OP(b, has))
                return -EOPNOTSUPP;
        return b->ops->has(b, d);
}

int backend_size(struct backend *b, const struct digest *d, uint64_t *ret_size)
{
        if (!b || !d || !ret_size)
                return -EINVAL;
        if (!OP(b, size))
                return -EOPNOTSUPP;
        return b->ops->size(b, d, ret_size);
}

ssize_t backend_read(struct backend *b, const struct digest *d, uint64_t off, void *buf,
                     size_t len)
{
        if (!b || !d || (!buf && len))
                return -EINVAL;
        if (!OP(b, read))
                return -EOPNOTSUPP;
        /* The count must fit the return type. */
        return b->ops->read(b, d, off, buf, MIN(len, (size_t)SSIZE_MAX));
}

int backend_write(struct backend *b, const struct digest *d, const void *data, size_t len)
{
        if (!b || !d || (!data && len))
                return -EINVAL;
        if (!OP(b, write))
                return -EOPNOTSUPP;
        return b->ops->write(b, d, data, len);
}

int backend_freshen(struct backend *b, const struct digest *d)
{
        if (!b || !d)
                return -EINVAL;
        if (!OP(b, freshen))
                return -EOPNOTSUPP;
        return b->ops->freshen(b, d);
}

int backend_remove(struct backend *b, const struct digest *d)
{
        if (!b || !d)
                return -EINVAL;
        if (!OP(b, remove))
                return -EOPNOTSUPP;
        return b->ops->remove(b, d);
}

int backend_list(struct backend *b, blob_list_fn fn, void *ctx)
{
        if (!b || !fn)
                return -EINVAL;
        if (!OP(b, list))
                return -EOPNOTSUPP;
        return b->ops->list(b, fn, ctx);
}

int backend_index_read(struct backend *b, json_t **ret)
{
        if (!b || !ret)
                return -EINVAL;
        if (!OP(b, index_read))
                return -EOPNOTSUPP;
        return b->ops->index_read(b, ret);
}

int backend_index_transaction(struct backend *b, index_fn fn, void *ctx)
{
        if (!b || !fn)
                return -EINVAL;
        if (!OP(b, index_transaction))
                return -EOPNOTSUPP;
        return b->ops->index_transaction(b, fn, ctx);
}

struct backend *backend_free(struct backend *b)
{
        if (OP(b, free))
                b->ops->free(b);
        return NULL;
}

/* read_sized(): blob d, which should be size bytes, into a malloc'd buffer.
 * One byte more is asked for, so a blob of another size (grown or shrunk
 * since its size was looked up, or not the size its descriptor gives:
 * by_descriptor, which makes that -EBADMSG, not -EIO) is caught in one
 * read. -EFBIG beyond max. Logged, but not -ENOENT. */
static int read_sized(struct backend *b, const struct digest *d, uint64_t size, size_t max, bool by_descriptor,
                      void **ret, size_t *ret_len)
{
        _cleanup_(freep) void *buf = NULL;
        char name[DIGEST_STR_LEN + 1];
        ssize_t n;

        if (size > max || size >= SSIZE_MAX)
                return log_error_errno(EFBIG, "blob %s: %llu bytes is more than the %zu allowed",
                                       digest_str(d, name), (unsigned long long)size, max);
        buf = malloc((size_t)size + 1);
        if (!buf)
                return -ENOMEM;
        n = backend_read(b, d, 0, buf, (size_t)size + 1);
        if (n < 0)
                return (int)n;
        if ((uint64_t)n != size)
                return log_error_errno(by_descriptor ? EBADMSG : EIO, "blob %s: read %zd bytes, expected %llu%s",
                                       digest_str(d, name), n, (unsigned long long)size,
                                       by_descriptor ? " (its descriptor's size)" : "");
        *ret = TAKE_PTR(buf);
        *ret_len = (size_t)size;
        return 0;
}

/* verified(): 0, or -EBADMSG (logged) if buf does not hash to d. */
static int verified(const struct digest *d, const void *buf, size_t len)
{
        char name[DIGEST_STR_LEN + 1];
        struct digest got;

        digest_sha256(buf, len, &got);
        if (!digest_eq(&got, d))
                return log_error_errno(EBADMSG, "blob %s is corrupt (hash mismatch)", digest_str(d, name));
        return 0;
}

int backend_read_all(struct backend *b, const struct digest *d, size_t max, void **ret,
                     size_t *ret_len)
{
        uint64_t size;
        int r;

        if (!b || !d || !ret || !ret_len)
                return -EINVAL;
        r = backend_size(b, d, &size);
        if (r < 0)
                return r;
        return read_sized(b, d, size, max, false, ret, ret_len);
}

int blob_read_sized(struct backend *b, const struct digest *d, uint64_t size, size_t max, void **ret,
                    size_t *ret_len)
{
        _cleanup_(freep) void *buf = NULL;
        size_t len = 0;
        int r;

        if (!b || !d || !ret || !ret_len)
                return -EINVAL;
        r = read_sized(b, d, size, max, true, &buf, &len);
        if (r >= 0)
                r = verified(d, buf, len);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(buf);
        *ret_len = len;
        return 0;
}

int blob_read_verified(struct backend *b, const struct digest *d, size_t max, void **ret,
                       size_t *ret_len)
{
        _cleanup_(freep) void *buf = NULL;
        size_t len = 0; /* gcc -O3 cannot see backend_read_all() set it */
        int r;

        if (!b || !d || !ret || !ret_len)
                return -EINVAL;
        r = backend_read_all(b, d, max, &buf, &len);
        if (r >= 0)
                r = verified(d, buf, len);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(buf);
        *ret_len = len;
        return 0;
}

int blob_write_data(struct backend *b, const void *data, size_t len, struct digest *ret_digest)
{
        struct digest d;
        int r;

        if (!b || (!data && len))
                return -EINVAL;
        digest_sha256(data ? data : "", len, &d);
        r = backend_write(b, &d, data, len);
        if (r < 0)
                return r;
        if (ret_digest)
                *ret_digest = d;
        return 0;
}

json_t *backend_index_new_empty(void)
{
        return json_pack("{s:i, s:s, s:[]}", "schemaVersion", 2, "mediaType",
                         OCI_INDEX_MEDIA_TYPE, "manifests");
}

int backend_index_check(const json_t *index)
{
        if (!json_is_object(index) || !json_is_array(json_object_get(index, "manifests")))
                return -EBADMSG;
        return 0;
}
