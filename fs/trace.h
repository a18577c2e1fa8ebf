/* trace.h — the access trace (issue 6): which base chunks a mount read in
 * its first seconds, recorded while it runs, stored with the snapshot a
 * checkpoint makes, and prefetched in the background when that snapshot is
 * mounted. Owns struct fs_trace (fs->trace): the recording, the prefetch
 * threads and the prefetch counters. Not a public header: fs.c, read.c and
 * checkpoint.c call it. Every function is callable from any thread; the
 * blob format is store/trace-blob.h, the design docs/access-trace.md.
 *
 * Recording: the first FS_TRACE_SECONDS after the mount, at most
 * FS_TRACE_ENTRIES distinct chunks, in first-read order. An entry is
 * (persistent inode number, chunk index within the file), so it maps onto
 * the next generation's tree. Lock-free on the READ path: a bitmap of the
 * chunks seen (one atomic OR per new chunk) and a slot counter.
 *
 * Prefetch: unless o->no_prefetch or the mount has no node cache,
 * FS_PREFETCH_THREADS low-priority threads load the mounted snapshot's
 * trace, map it onto the tree (entries whose inode or chunk no longer exists
 * are skipped) and fetch those chunks into the cache, a window of
 * FS_PREFETCH_WINDOW of them at a time in trace order, each window in pack
 * order with coalesced reads (fs_prefetch_chunks()), at most
 * FS_PREFETCH_CHUNKS chunks and FS_PREFETCH_BYTES bytes (and half the
 * cache's bound); they stop at fs_trace_free(). */
#ifndef STASIS_FS_TRACE_H
#define STASIS_FS_TRACE_H

#include <stdbool.h>
#include <stddef.h>

#include "fs.h"
#include "store/trace-blob.h"
#include "store/tree.h"

#define FS_TRACE_SECONDS 30u
#define FS_TRACE_ENTRIES 16384u /* <= TRACE_BLOB_ENTRIES_MAX */
#define FS_PREFETCH_THREADS 2u
#define FS_PREFETCH_CHUNKS 16384u
#define FS_PREFETCH_BYTES (1ull << 30)
/* The chunks of the trace a prefetch thread takes at once, in trace order,
 * and reads in pack order. */
#define FS_PREFETCH_WINDOW 256u

struct fs_trace;

/* fs_trace_new(): start recording, and unless o->no_prefetch, prefetch what
 * o->snap's stored trace names (in the background). Sets fs->trace; 0 or
 * -errno. fs_trace_free(): stops and frees (at fs_free()). */
int fs_trace_new(struct fs *fs, const struct fs_opts *o);
void fs_trace_free(struct fs *fs);
/* fs_trace_read(): a READ of [off, off + len) of base file inode. */
void fs_trace_read(struct fs *fs, const struct tree_inode *inode, uint64_t off, size_t len);
/* fs_trace_blob(): the trace recorded so far, as stored with a snapshot
 * (*ret malloc'd; NULL and 0 when there is none); if this mount read no
 * base data yet, the mounted snapshot's own trace. 0 or -ENOMEM. Reads
 * the store then: never from a FUSE handler. */
int fs_trace_blob(struct fs *fs, void **ret, size_t *ret_len);
/* fs_trace_counters(): the prefetch_* fields of ret. */
void fs_trace_counters(const struct fs *fs, struct fs_counters *ret);

/* For read.c: fs_trace_fetched(): the prefetcher put chunk idx into the
 * cache. fs_trace_hit(): a READ got chunk idx from the cache (counts a
 * prefetch hit the first time for a chunk the prefetcher brought in). */
void fs_trace_fetched(struct fs *fs, uint32_t idx);
void fs_trace_hit(struct fs *fs, uint32_t idx);
/* fs_trace_stopping(): the prefetch threads are asked to stop (unmount). */
bool fs_trace_stopping(const struct fs *fs);

/* read.c: fs_prefetch_chunks(): make sure chunks idx[0..n) (of fs->tree;
 * n <= FS_PREFETCH_WINDOW) are in the node cache. They are taken in pack
 * order and read as readahead reads (one read for a run of them in a pack:
 * locally back to back, from a registry at most PREFETCH_GAP apart), under
 * the READ path's single flight; a chunk already cached or in flight is
 * skipped, one that fails is left for a READ to report. 0, -ENOMEM, -EINVAL
 * (no cache, or n too large). */
int fs_prefetch_chunks(struct fs *fs, const uint32_t *idx, size_t n);

#endif
