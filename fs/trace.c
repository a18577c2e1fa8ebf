/* trace.c — the access trace (trace.h). Not implemented yet: records
 * nothing and prefetches nothing. */
#include <stdlib.h>

#include "fs-internal.h"
#include "trace.h"

int fs_trace_new(struct fs *fs, const struct fs_opts *o)
{
        (void)o;
        fs->trace = NULL;
        return 0;
}

void fs_trace_free(struct fs *fs) { fs->trace = NULL; }

void fs_trace_read(struct fs *fs, const struct tree_inode *inode, uint64_t off, size_t len)
{
        (void)fs;
        (void)inode;
        (void)off;
        (void)len;
}

int fs_trace_blob(struct fs *fs, void **ret, size_t *ret_len)
{
        (void)fs;
        *ret = NULL;
        *ret_len = 0;
        return 0;
}

void fs_trace_counters(const struct fs *fs, struct fs_counters *ret)
{
        (void)fs;
        ret->prefetch_chunks = ret->prefetch_hits = 0;
}
