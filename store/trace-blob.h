/* trace-blob.h — the access-trace blob stored with a snapshot (media type
 * application/vnd.stasis.trace.v1, docs/access-trace.md): which chunks of
 * which files a mount read first, in that order. Owns the byte format only:
 * encoding and strict parsing. Thread-safe (no state); does no I/O; knows
 * nothing of how a trace is recorded or prefetched (fs/trace.c).
 *
 * Format v1, little-endian, exactly TRACE_BLOB_HEADER + 12 * count bytes:
 *   0   8  magic "STSTRACE"
 *   8   4  version (1)
 *   12  4  chunk size the chunk indices count in (a valid chunk size)
 *   16  4  count of entries, at most TRACE_BLOB_ENTRIES_MAX
 *   20  4  reserved, 0
 *   24     count entries of 12 bytes: u64 inode number (not 0), u32 chunk
 *          index within that file; no (inode, chunk) pair twice
 * An entry names a file by its persistent inode number, so a trace recorded
 * on one generation maps onto the next one's tree. */
#ifndef STASIS_TRACE_BLOB_H
#define STASIS_TRACE_BLOB_H

#include <stddef.h>
#include <stdint.h>

#define TRACE_BLOB_MAGIC "STSTRACE"
#define TRACE_BLOB_VERSION 1u
#define TRACE_BLOB_HEADER 24u
#define TRACE_BLOB_ENTRY 12u
#define TRACE_BLOB_ENTRIES_MAX 65536u
#define TRACE_BLOB_MAX ((size_t)TRACE_BLOB_HEADER + (size_t)TRACE_BLOB_ENTRY * TRACE_BLOB_ENTRIES_MAX)

struct trace_entry {
        uint64_t ino;
        uint32_t chunk;
};

/* trace_blob_encode(): n entries (in trace order) as a v1 blob (*ret
 * malloc'd). -EINVAL for anything trace_blob_parse() would reject (a bad
 * chunk size, too many entries, inode 0, a pair twice); -ENOMEM. */
int trace_blob_encode(uint32_t chunk_size, const struct trace_entry *e, size_t n, void **ret,
                      size_t *ret_len);
/* trace_blob_parse(): a blob from a store or registry (untrusted). Strict:
 * wrong magic, version, length, chunk size, count, reserved bytes, inode 0
 * or a repeated pair are -EBADMSG (not logged: the caller names the blob).
 * On success *ret is a malloc'd array of *ret_n entries (NULL when 0). */
int trace_blob_parse(const void *blob, size_t len, uint32_t *ret_chunk_size, struct trace_entry **ret,
                     size_t *ret_n);

#endif
