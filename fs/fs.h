/* fs.h — the stasis FUSE filesystem (libfuse3 low-level API): owns the
 * kernel-facing inode table and lookup counts, file handles, the lazy chunk
 * read path (node cache first, then the mount's own store) and the bounded
 * background readahead. Thread-safe: every handler may run on any thread of
 * a multithreaded session loop. Knows nothing of HTTP, daemons or mount
 * registries; does not mount (the caller owns the struct fuse_session).
 *
 * The filesystem is the snapshot's base layer (immutable, lazy) under a
 * writable layer kept in the mount's state directory (block copy-on-write:
 * a write copies up the one chunk it touches; docs/writable-layer.md). Every
 * change stasisd replied to survives kill -9 of stasisd; what fsync or
 * fsyncdir acknowledged survives a host crash.
 *
 * Counters are plain atomics, readable at any time with fs_get_counters():
 *   chunks_fetched    chunks read from the store (pack frames decoded)
 *   bytes_fetched     pack bytes read from the store
 *   pack_reads        reads of packs those bytes took (Range GETs from a
 *                     registry): one per chunk, or one per coalesced run
 *   cache_hits        chunks a READ got from the node cache
 *   cache_misses      chunks a READ had to fetch from the store
 *   bytes_served      bytes replied to READs
 *   errors            READs answered with EIO (bad or missing data)
 *   readahead_chunks  chunks fetched into the cache by readahead
 *   dirty_chunks      chunks present (and dirty) in the writable layer
 *   dirty_bytes       their bytes (dirty_chunks x chunk size)
 *   copied_up         chunks copied up from the base for a partial write
 *   bytes_written     bytes of WRITEs
 *   journal_bytes     bytes appended to the layer's journal since mount
 *   prefetch_chunks   chunks the access-trace prefetcher fetched into the
 *                     cache (also in chunks_fetched; trace.h)
 *   prefetch_hits     of those, chunks a READ then got from the cache, each
 *                     once: the prefetcher sets a per-chunk bit, a READ's
 *                     cache hit clears it (one atomic load per hit) */
#ifndef STASIS_FS_H
#define STASIS_FS_H

#include <stdbool.h>
#include <stdint.h>

#include "store/backend.h"
#include "store/cache.h"
#include "store/snapshot.h"

/* Readahead: FS_READAHEAD_WINDOW bytes ahead but at least
 * FS_READAHEAD_CHUNKS chunks, and at most FS_READAHEAD_BYTES. */
#define FS_READAHEAD_CHUNKS 4u
#define FS_READAHEAD_WINDOW (1u << 20)
#define FS_READAHEAD_BYTES (4u << 20)
/* From a registry, where a request's round trip costs more than its bytes:
 * a larger window (also the most), read by more threads at once. */
#define FS_READAHEAD_WINDOW_REMOTE (16u << 20)
#define FS_READAHEAD_WORKERS_REMOTE 4u
/* Entry and attribute timeouts, in seconds: stasisd is the only writer
 * behind its mount, so the kernel may cache as long as it likes. */
#define FS_BASE_TIMEOUT 86400.0

/* The writable layer's journal is rewritten as an image of the model once
 * this much was appended to it (see docs/writable-layer.md). */
#define FS_JOURNAL_MAX (64ull << 20)

struct fs;
struct fuse_session;
struct fuse_args;

struct fs_opts {
        struct backend *store;  /* borrowed: the mount's own store */
        struct snapshot *snap;  /* borrowed: its tree loaded */
        struct cache *cache;    /* borrowed; NULL: no node cache (and no readahead) */
        unsigned readahead_chunks; /* 0: the window's worth; capped by FS_READAHEAD_BYTES */
        bool no_readahead;
        unsigned workers;       /* readahead threads; 0: 2, or FS_READAHEAD_WORKERS_REMOTE */
        const char *state_dir;  /* the mount's state directory (required) */
        const char *base_name;  /* what HEAD records as the base: a digest, or "empty" */
        bool no_prefetch;       /* do not prefetch the snapshot's access trace */
        bool remote;            /* the store is a registry: a read's round trip costs more than its bytes */
        uint64_t journal_max;   /* compact the layer's journal after this many
                                 * appended bytes (and twice its last image); 0:
                                 * FS_JOURNAL_MAX */
};

struct fs_counters {
        uint64_t chunks_fetched, bytes_fetched, pack_reads;
        uint64_t cache_hits, cache_misses;
        uint64_t bytes_served, errors, readahead_chunks;
        uint64_t reads, inodes; /* READ requests; inodes in the table */
        uint64_t dirty_chunks, dirty_bytes, copied_up, bytes_written, journal_bytes;
        uint64_t prefetch_chunks, prefetch_hits; /* trace.c */
};

/* fs_new(): no file data is read; opens (creating, or replaying) the
 * writable layer in o->state_dir; starts the readahead workers. */
int fs_new(const struct fs_opts *o, struct fs **ret);
/* fs_free(): stops the workers; call after the session loop returned. */
struct fs *fs_free(struct fs *fs);

/* fs_session_new(): a FUSE session whose userdata is fs; NULL on failure
 * (libfuse logs why). The caller mounts, loops, unmounts and destroys it. */
struct fuse_session *fs_session_new(struct fs *fs, struct fuse_args *args);

/* fs_session_io(): after fuse_session_mount(), before the loop: the
 * session's reads and writes of /dev/fuse go through fs (fs/kernel-io.c: it
 * negotiates FUSE_HANDLE_KILLPRIV_V2, which saves a GETXATTR per write(),
 * and FUSE over io_uring where the kernel offers it, fs/uring.c). A
 * negative errno if libfuse refused; the session still works without it. */
int fs_session_io(struct fs *fs, struct fuse_session *se);
/* fs_session_io_end(): after fuse_session_unmount(), before
 * fuse_session_destroy(): stops the io_uring queues, if any. */
void fs_session_io_end(struct fs *fs);
/* fs_session_uring(): requests come over io_uring (negotiated in INIT). */
bool fs_session_uring(const struct fs *fs);

void fs_get_counters(const struct fs *fs, struct fs_counters *ret);

/* A checkpoint (checkpoint.c). Besides the base, the chunks of this many of
 * the store's newest snapshots are reused by reference. */
#define FS_CHECKPOINT_RECENT 8u
/* Threads hashing and packing a checkpoint's chunks: one per core, at most. */
#define FS_CHECKPOINT_WORKERS 8u
/* A checkpoint (checkpoint.c). */
struct fs_checkpoint_opts {
        struct backend *store;           /* where to publish: the store the base came from */
        const struct snapshot *parent;   /* the base snapshot; NULL: none */
        const char *tag;                 /* may be NULL */
        json_t *labels;                  /* may be NULL */
        /* Called once the packer knows the chunks it can reuse (the
         * base's and recent snapshots': reading them is most of a
         * checkpoint's fixed cost) and right before the barrier, if
         * non-NULL: where the caller freezes the sandbox and flushes the
         * kernel's dirty pages, so that neither waits on that work. A
         * negative errno fails the checkpoint. */
        int (*before_barrier)(void *ctx);
        /* Called right after the barrier is released (e.g. to thaw the
         * sandbox), on success and failure alike (before_barrier's too),
         * if non-NULL. */
        void (*after_barrier)(void *ctx);
        void *ctx;
        bool readonly; /* pause: leave the fs read-only (fs_set_readonly()),
                        * from the instant the snapshot shows, on success */
        /* The previous checkpoint of this mount to the same target, if any:
         * when the new tree equals prev_tree, nothing is published and the
         * result is prev_digest (re-tagged if tag is set). */
        const struct digest *prev_tree, *prev_digest;
        /* The access trace to store with the snapshot (snapshot_new.trace);
         * NULL: none. */
        const void *trace;
        size_t trace_len;
};
struct fs_checkpoint_result {
        struct digest digest, tree_digest;
        uint64_t generation;
        uint64_t bytes_dirty;   /* bytes of the chunks read from the writable layer */
        uint64_t bytes_new;     /* compressed bytes of new chunks packed */
        uint64_t chunks_new, chunks_reused; /* of the chunks read */
        uint64_t barrier_ns;    /* how long changes were held off */
        uint64_t barrier_bytes; /* data bytes read while they were: 0 */
        uint64_t chunks_saved;  /* chunks a change saved first (copy-before-write) */
        uint64_t duration_ns;
        /* where duration_ns went: the packer's index of known chunks, the
         * barrier's end to the last chunk packed, the tree, the publish */
        uint64_t prepare_ns, data_ns, tree_ns, publish_ns;
        bool reused; /* the tree equalled prev_tree: result is prev_digest */
        bool has_parent;      /* the snapshot's parent (of prev_digest's, if reused) */
        struct digest parent;
};

/* fs_checkpoint(): publish what the mount shows now as a new snapshot,
 * parent o->parent, in o->store. Holds the write barrier (every changing
 * FUSE handler waits) only while it copies the model and lists the chunks
 * the writable layer holds (memory only); then reads, hashes and packs
 * them while changes go on (a change to a chunk not read yet saves it
 * first), and builds and publishes the tree. The caller flushes the
 * kernel's dirty pages in o->before_barrier (syncfs), never under the
 * barrier. The mount
 * keeps its base and layer (no fold yet). One call at a time; concurrent
 * with every handler. 0, or -errno (logged). */
int fs_checkpoint(struct fs *fs, const struct fs_checkpoint_opts *o, struct fs_checkpoint_result *ret);

/* fs_flush_kernel(): every page the kernel holds dirty for the mount at
 * mountpoint is written to us when this returns (syncfs, then a close of
 * each file open for writing, which waits for its WRITEs). Call with no
 * lock held, not from a FUSE handler. 0 or -errno (logged). */
int fs_flush_kernel(struct fs *fs, const char *mountpoint);
/* The same in two steps, so that starting the helper (an exec, ~2 ms) is
 * not part of a stall: fs_flush_start() starts it, ready and waiting;
 * fs_flush_finish() lists the files open for writing, hands it the list
 * and waits for the flush; fs_flush_abort() lets it go without a flush.
 * Either frees f. */
struct fs_flush;
int fs_flush_start(const char *mountpoint, struct fs_flush **ret);
int fs_flush_finish(struct fs *fs, struct fs_flush *f);
void fs_flush_abort(struct fs_flush *f);
/* fs_flush_kernel() runs the flush's requests on the mount in a helper, the
 * daemon's own executable run as `EXE FS_FLUSH_HELPER_ARG MOUNTPOINT` with
 * the inode list on stdin (a count, then the inode numbers); its main()
 * hands that to fs_flush_helper(), whose return value is the exit status
 * (0, or an errno). */
#define FS_FLUSH_HELPER_ARG "--flush-kernel-helper"
int fs_flush_helper(const char *mountpoint);

/* fs_last_checkpoint(): the snapshot the last successful fs_checkpoint()
 * published (tree loaded), the parent for the next one; NULL if none. Valid
 * until the next fs_checkpoint() or fs_checkpoint_forget(). */
const struct snapshot *fs_last_checkpoint(struct fs *fs);
/* fs_checkpoint_forget(): the next checkpoint reads every chunk the layer
 * holds again, and has no last checkpoint. */
void fs_checkpoint_forget(struct fs *fs);

/* fs_set_readonly(): while set, every change (and an open for writing)
 * fails with EROFS (a paused mount). Waits for changes in progress. */
void fs_set_readonly(struct fs *fs, bool readonly);

/* fs_read_file(): READ without the kernel: len bytes of inode ino at off
 * into dst, through the cache and the store exactly as a READ. Returns the
 * count (short at end of file), -EIO for data that could not be fetched or
 * verified, -ENOENT, -EISDIR, -errno. For tests and tools. */
ssize_t fs_read_file(struct fs *fs, uint64_t ino, uint64_t off, void *dst, size_t len);

#endif
