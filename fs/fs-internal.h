/* fs-internal.h — what fs.c (FUSE handlers, inode table) and read.c (chunk
 * fetch, readahead) share. Not a public header.
 *
 * Inode numbering (the one place it is written down):
 *   kernel nodeid == stasis inode number ("ino"), and FUSE_ROOT_ID == 1 ==
 *   TREE_ROOT_INO. Base inodes keep the persistent number the tree gives
 *   them (stable across generations; a hardlink group is one inode). The
 *   writable layer (issue 5) will number the inodes it creates from the
 *   tree's next_ino upward, persisted in its state directory, so a nodeid is
 *   never reused for another file while the mount lives and the generation
 *   stays 0. st_ino reported to userspace is the same number. There is thus
 *   no translation table: struct fs_inode exists only to hold the lookup
 *   count (and, later, the writable-layer state) of inodes the kernel knows.
 *
 * Locks (never nested; never held across fuse_reply_*, store or cache I/O):
 *   fs->inodes_lock   the inode hash table and every fs_inode.nlookup
 *   fs->fetch_lock    fs->inflight (one fetch per chunk at a time)
 *   fs->ra_lock       the readahead queue and ra_stop
 * Everything else is immutable after fs_new() or atomic. */
#ifndef STASIS_FS_INTERNAL_H
#define STASIS_FS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "fs.h"
#include "store/chunk.h"
#include "store/tree.h"
#include "store/util.h"

struct fs_inode {
        uint64_t ino;           /* == nodeid; immutable */
        uint64_t parent;        /* ino of a directory holding it (for ".."); immutable */
        struct tree_inode base; /* its base-layer inode; immutable */
        uint64_t nlookup;       /* inodes_lock */
        struct fs_inode *next;  /* hash chain; inodes_lock */
};

/* An open regular file (fi->fh). */
struct fs_file {
        struct fs_inode *inode;    /* pinned by the kernel while open */
        atomic_uint_fast64_t next_off;  /* where a sequential READ would start */
        atomic_uint_fast32_t ra_next;   /* first chunk readahead has not queued */
};

/* Per-thread scratch, from fs->tls: a zstd context and buffers for one
 * chunk and one frame. */
struct fs_tls {
        struct chunk_codec *codec;
        uint8_t *chunk; /* chunk_size bytes */
        uint8_t *frame; /* chunk_bound(chunk_size) bytes */
};

struct fs {
        /* Immutable after fs_new(). */
        struct backend *store;
        struct snapshot *snap;
        const struct tree *tree;
        struct cache *cache;
        uint32_t chunk_size, n_chunks, n_packs;
        unsigned ra_chunks; /* 0: readahead off */
        pthread_key_t tls;
        bool tls_ok;

        /* Inode table. */
        pthread_mutex_t inodes_lock;
        struct fs_inode **buckets; /* inodes_lock */
        size_t n_buckets, n_inodes; /* inodes_lock */
        struct fs_inode root;      /* never freed; nlookup unused */

        /* Per pack: 0 not checked yet, 1 present in our store, -1 absent. */
        _Atomic int8_t *pack_state;
        /* Per chunk: a failure was logged already (rate limit: once per chunk). */
        atomic_uchar *logged;

        pthread_mutex_t fetch_lock;
        pthread_cond_t fetch_cond;
        uint8_t *inflight; /* per chunk; fetch_lock */

        pthread_mutex_t ra_lock;
        pthread_cond_t ra_cond;
        uint32_t *ra_queue;         /* ring; ra_lock */
        size_t ra_head, ra_len, ra_cap; /* ra_lock */
        bool ra_stop;               /* ra_lock */
        pthread_t *ra_threads;      /* immutable */
        unsigned n_ra_threads;

        atomic_uint_fast64_t chunks_fetched, bytes_fetched, cache_hits, cache_misses;
        atomic_uint_fast64_t bytes_served, errors, readahead_chunks, reads;
        atomic_uint_fast64_t total_blocks; /* statfs, computed once; 0: not yet */
};

/* read.c */
struct fs_tls *fs_tls_get(struct fs *fs);
void fs_tls_free(void *p);
int fs_readahead_start(struct fs *fs, unsigned workers);
void fs_readahead_stop(struct fs *fs);
/* fs_read_data(): len bytes of regular file inode at off into dst (off <
 * size, off + len <= size); holes as zeros. Queues readahead through f if
 * non-NULL. 0, -EIO, -ENOMEM. */
int fs_read_data(struct fs *fs, const struct tree_inode *inode, struct fs_file *f, uint64_t off,
                 size_t len, uint8_t *dst);

#endif
