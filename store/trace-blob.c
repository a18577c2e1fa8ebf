/* trace-blob.c — see trace-blob.h: the access-trace blob's byte format. */
#include "trace-blob.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "chunk.h"
#include "util.h"

static int entry_cmp(const void *a, const void *b)
{
        const struct trace_entry *x = a, *y = b;

        if (x->ino != y->ino)
                return x->ino < y->ino ? -1 : 1;
        return x->chunk < y->chunk ? -1 : x->chunk > y->chunk;
}

/* check_entries(): 0 if every inode is set and no pair repeats, -EBADMSG if
 * not, -ENOMEM. Sorts a copy: O(n log n) for at most 65536 entries. */
static int check_entries(const struct trace_entry *e, size_t n)
{
        _cleanup_(freep) struct trace_entry *s = NULL;

        for (size_t i = 0; i < n; i++)
                if (e[i].ino == 0)
                        return -EBADMSG;
        if (n < 2)
                return 0;
        s = malloc(n * sizeof *s);
        if (!s)
                return -ENOMEM;
        memcpy(s, e, n * sizeof *s);
        qsort(s, n, sizeof *s, entry_cmp);
        for (size_t i = 1; i < n; i++)
                if (entry_cmp(&s[i - 1], &s[i]) == 0)
                        return -EBADMSG;
        return 0;
}

static void put_le32(uint8_t *p, uint32_t v)
{
        v = htole32(v);
        memcpy(p, &v, 4);
}

static void put_le64(uint8_t *p, uint64_t v)
{
        v = htole64(v);
        memcpy(p, &v, 8);
}

static uint32_t get_le32(const uint8_t *p)
{
        uint32_t v;
        memcpy(&v, p, 4);
        return le32toh(v);
}

static uint64_t get_le64(const uint8_t *p)
{
        uint64_t v;
        memcpy(&v, p, 8);
        return le64toh(v);
}

int trace_blob_encode(uint32_t chunk_size, const struct trace_entry *e, size_t n, void **ret,
                      size_t *ret_len)
{
        uint8_t *b;
        size_t len;
        int r;

        if ((!e && n) || !ret || !ret_len || !chunk_size_valid(chunk_size) || n > TRACE_BLOB_ENTRIES_MAX)
                return -EINVAL;
        r = check_entries(e, n);
        if (r < 0)
                return r == -EBADMSG ? -EINVAL : r;
        len = TRACE_BLOB_HEADER + n * TRACE_BLOB_ENTRY;
        b = calloc(1, len);
        if (!b)
                return -ENOMEM;
        memcpy(b, TRACE_BLOB_MAGIC, 8);
        put_le32(b + 8, TRACE_BLOB_VERSION);
        put_le32(b + 12, chunk_size);
        put_le32(b + 16, (uint32_t)n);
        for (size_t i = 0; i < n; i++) {
                uint8_t *p = b + TRACE_BLOB_HEADER + i * TRACE_BLOB_ENTRY;
                put_le64(p, e[i].ino);
                put_le32(p + 8, e[i].chunk);
        }
        *ret = b;
        *ret_len = len;
        return 0;
}

int trace_blob_parse(const void *blob, size_t len, uint32_t *ret_chunk_size, struct trace_entry **ret,
                     size_t *ret_n)
{
        _cleanup_(freep) struct trace_entry *e = NULL;
        const uint8_t *b = blob;
        uint32_t cs, n;
        int r;

        if ((!blob && len) || !ret_chunk_size || !ret || !ret_n)
                return -EINVAL;
        if (len < TRACE_BLOB_HEADER || memcmp(b, TRACE_BLOB_MAGIC, 8) != 0 ||
            get_le32(b + 8) != TRACE_BLOB_VERSION || get_le32(b + 20) != 0)
                return -EBADMSG;
        cs = get_le32(b + 12);
        n = get_le32(b + 16);
        if (!chunk_size_valid(cs) || n > TRACE_BLOB_ENTRIES_MAX ||
            len != TRACE_BLOB_HEADER + (size_t)n * TRACE_BLOB_ENTRY)
                return -EBADMSG;
        if (n) {
                e = calloc(n, sizeof *e);
                if (!e)
                        return -ENOMEM;
        }
        for (uint32_t i = 0; i < n; i++) {
                const uint8_t *p = b + TRACE_BLOB_HEADER + (size_t)i * TRACE_BLOB_ENTRY;
                e[i].ino = get_le64(p);
                e[i].chunk = get_le32(p + 8);
        }
        r = check_entries(e, n);
        if (r < 0)
                return r;
        *ret_chunk_size = cs;
        *ret_n = n;
        *ret = TAKE_PTR(e);
        return 0;
}
