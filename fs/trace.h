/* trace.h — the access trace (issue 6): which base chunks a mount read in
 * its first seconds, recorded while it runs, stored with the snapshot a
 * checkpoint makes, and prefetched in the background when that snapshot is
 * mounted. Owns struct fs_trace (fs->trace). Not a public header: fs.c,
 * read.c and checkpoint.c call it. */
#ifndef STASIS_FS_TRACE_H
#define STASIS_FS_TRACE_H

#include <stddef.h>

#include "fs.h"
#include "store/tree.h"

struct fs_trace;

/* fs_trace_new(): start recording, and unless o->no_prefetch, prefetch what
 * o->snap's stored trace names (in the background). Sets fs->trace; 0 or
 * -errno. fs_trace_free(): stops and frees (at fs_free()). */
int fs_trace_new(struct fs *fs, const struct fs_opts *o);
void fs_trace_free(struct fs *fs);
/* fs_trace_read(): a READ of [off, off + len) of base file inode. */
void fs_trace_read(struct fs *fs, const struct tree_inode *inode, uint64_t off, size_t len);
/* fs_trace_blob(): the trace recorded so far, as stored with a snapshot
 * (*ret malloc'd; NULL and 0 when there is none). 0 or -ENOMEM. */
int fs_trace_blob(struct fs *fs, void **ret, size_t *ret_len);
/* fs_trace_counters(): the prefetch_* fields of ret. */
void fs_trace_counters(const struct fs *fs, struct fs_counters *ret);

#endif
