/* fs-internal.h — what fs.c (FUSE handlers), layer.c (the writable layer:
 * model, journal, data files), acl.c and read.c (chunk fetch, readahead)
 * share. Not a public header.
 *
 * Inode numbering (the one place it is written down):
 *   kernel nodeid == stasis inode number ("ino") == st_ino, and
 *   FUSE_ROOT_ID == 1 == TREE_ROOT_INO. Base inodes keep the persistent
 *   number the tree gives them (stable across generations; a hardlink group
 *   is one inode, so copy-on-write is keyed by inode and a hardlinked base
 *   file stays one nodeid). The writable layer numbers the inodes it creates
 *   from the tree's next_ino upward; the counter is persisted in the layer's
 *   journal (NEXTINO and every ATTR of a new inode), so a number is never
 *   reused for another file, neither while the mount lives nor after a
 *   remount of the same state dir, and the FUSE generation stays 0. The
 *   layer's data file of an inode is named by the same number
 *   (layers/<id>/data/<ino>). There is thus no translation table: struct
 *   fs_inode holds the kernel's lookup count and the layer's state of an
 *   inode, and exists while either is non-trivial.
 *
 * Locks, in the order they may be taken (never the other way round):
 *   fs->barrier       rwlock: every handler that changes the model or a
 *                     data file holds it shared around its do_*() (never
 *                     across fuse_reply_*); a checkpoint holds it
 *                     exclusively while it copies the model and reads the
 *                     dirty chunks (checkpoint.c), so it sees one instant
 *   fs->lock          the inode table, every fs_inode field marked "lock",
 *                     next_ino, the copy-up in-flight list, fs->jseq, the
 *                     journal's room (held across its fallocate())
 *   fs->jlock         journal write order (jnext), never held across I/O
 *   fs->ck_lock       the running checkpoint's frozen chunks; held across
 *                     the pread/pwrite of one chunk being saved or read
 *   fs->fetch_lock    fs->inflight (one base fetch per chunk at a time)
 *   fs->ra_lock       the readahead queue and ra_stop
 *   fs->dead_lock     the data files of removed inodes (layer.c), taken
 *                     alone
 * fetch_lock and ra_lock are never taken with fs->lock held. No lock is
 * held across fuse_reply_*, store or cache I/O, or writes to the layer's
 * files; a journal record is built and applied under fs->lock, takes a
 * sequence number there, and is written in sequence order after the
 * unlock (see layer.c).
 * Everything else is immutable after fs_new() or atomic. */
#ifndef STASIS_FS_INTERNAL_H
#define STASIS_FS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "fs.h"
#include "store/chunk.h"
#include "store/tree.h"
#include "store/util.h"

/* ---- the in-memory model of the writable layer ---- */

/* A directory entry of a materialized directory. Cookies are readdir
 * offsets: base entries keep the offsets the base listing gave them (i + 3),
 * new entries get increasing ones, so a readdir in progress neither repeats
 * nor skips an entry that stayed. */
struct wl_dirent {
        uint64_t cookie, ino;
        char *name;   /* NULL: deleted (a slot awaiting compaction) */
        int32_t hnext; /* hash chain, index into ents; -1 ends */
};

struct wl_dir {
        struct wl_dirent *ents; /* ascending cookie */
        size_t n, cap, n_live;
        int32_t *buckets;
        size_t n_buckets;
        uint64_t next_cookie;
};

struct wl_xattr {
        char *name;
        void *value;
        size_t len;
};

struct fs_inode {
        uint64_t ino;            /* immutable */
        struct fs_inode *next;   /* hash chain; lock */
        uint64_t nlookup;        /* kernel lookups; lock */
        uint64_t parent;         /* a directory holding it (".."); lock */
        struct wl_dir *dir;      /* materialized listing, NULL: the base's; lock */
        struct wl_xattr *xattrs; /* materialized xattrs if xattrs_own; lock */
        size_t n_xattrs;         /* lock */
        char *symlink;           /* a layer symlink's target; lock */
        /* Regular files. */
        uint64_t base_limit;     /* base bytes at offsets >= this are gone; lock */
        uint8_t *present;        /* one byte per chunk: in the layer; lock */
        size_t n_present;        /* bytes allocated in present; lock */
        struct tree_attr attr;   /* current attributes; lock. A regular file
                                  * with a data file: size == the data file's */
        struct tree_inode base;  /* immutable; valid if in_base */
        uint64_t blocks;         /* st_blocks of a file with a data file, if blocks_known; lock */
        uint32_t nopen;          /* open handles; lock */
        uint32_t nwopen;         /* of them, open for writing; lock */
        bool in_base;            /* immutable: the base tree has this ino */
        bool modified;           /* attr differs from the base (or new); lock */
        bool xattrs_own;         /* lock */
        bool has_data;           /* layers/<id>/data/<ino> exists; lock */
        bool data_gone;          /* no name, no handle: its data file went; lock */
        bool creating_data;      /* someone creates it now; lock */
        bool times_dirty;        /* a WRITE changed mtime, not journaled yet; lock */
        bool sync_map, sync_dir; /* map bytes, a new data file: not fsynced yet; lock */
        bool blocks_known;       /* blocks is current (a data change clears it); lock */
};

/* An open regular file (fi->fh). */
struct fs_file {
        struct fs_inode *inode;         /* pinned by nopen */
        atomic_int fd;                  /* the data file, opened lazily; -1 */
        atomic_uint_fast64_t next_off;  /* where a sequential READ would start */
        atomic_uint_fast32_t ra_next;   /* first chunk readahead has not queued */
        bool writable;                  /* counted in inode->nwopen; immutable */
};

/* Per-thread scratch, from fs->tls: a zstd context and buffers for one
 * chunk and one frame. */
struct fs_tls {
        struct chunk_codec *codec;
        uint8_t *chunk; /* chunk_size bytes */
        uint8_t *frame; /* chunk_bound(chunk_size) bytes */
        uint8_t *span;  /* coalesced reads' buffer (read.c), made on first use */
        size_t span_cap;
        uint32_t *claimed; /* a span read's chunks (read.c), made on first use */
};

/* A chunk being copied up (fs->copying). */
struct wl_copy {
        uint64_t ino;
        uint32_t chunk;
        struct wl_copy *next;
};

/* A journal file's room: pos is where it ends once every transaction
 * applied so far is written, end where its allocated blocks end. */
struct wl_room {
        uint64_t pos, end;
};

struct fs {
        /* Immutable after fs_new(). */
        struct backend *store;
        struct snapshot *snap;
        const struct tree *tree;
        struct cache *cache;
        struct uring *uring; /* FUSE over io_uring, if prepared (kernel-io.c) */
        struct fuse_session *se; /* for notifications to the kernel (fs_session_new()) */
        _Atomic uint64_t init_unique; /* the kernel's INIT request, for its reply (kernel-io.c) */
        uint32_t chunk_size, n_chunks, n_packs;
        unsigned ra_chunks; /* 0: readahead off */
        pthread_key_t tls;
        int state_fd, layer_fd, data_fd; /* STATE/, STATE/layers/<id>/, .../data/ */
        bool tls_ok;
        bool acl;       /* FUSE_CAP_POSIX_ACL negotiated; set once in init */
        bool writeback; /* FUSE_CAP_WRITEBACK_CACHE negotiated; set once in init */
        bool no_opendir; /* the kernel opens directories itself (FUSE_CAP_NO_OPENDIR_SUPPORT) */
        atomic_bool killpriv_v2; /* FUSE_HANDLE_KILLPRIV_V2 negotiated (kernel-io.c) */
        atomic_bool uring_on;    /* FUSE over io_uring asked for in INIT (kernel-io.c) */
        bool remote;     /* fs_opts.remote: coalesce sequential fetches, across gaps */
        char state_dir[4096];

        /* Writers shared, a checkpoint exclusive (writer-preferring). */
        pthread_rwlock_t barrier;
        atomic_bool readonly; /* paused: changes get EROFS; set under the barrier */
        atomic_bool init_offers_v2, init_offers_uring; /* what INIT offers (kernel-io.c) */

        /* The model. */
        pthread_mutex_t lock;
        pthread_cond_t cond;       /* copy-ups and data-file creation finishing */
        struct fs_inode **buckets; /* lock */
        size_t n_buckets, n_inodes; /* lock */
        uint64_t next_ino;         /* lock */
        struct wl_copy *copying;   /* lock */
        uint64_t jseq;             /* next journal sequence number to hand out; lock */

        /* The journal. */
        pthread_mutex_t jlock;
        pthread_cond_t jcond;
        pthread_mutex_t skel_lock; /* skeleton_sync() */
        uint64_t jnext;  /* sequence number whose turn it is to write; jlock */
        uint64_t journal_max; /* compact after appending this much; immutable */
        atomic_uint_fast64_t journal_image;    /* bytes of the last image */
        atomic_uint_fast64_t journal_at_image; /* journal_bytes when it was taken */
        /* Data-file descriptors kept by open handles (file_fd()), and how
         * many may be: the open-file limit less room for the rest. */
        atomic_uint fd_kept;
        unsigned fd_cap; /* immutable */
        int journal_fd;  /* jlock and lock; written only by the holder of a
                          * turn (a compaction), read for a write only by
                          * the holder, and under lock for its room */
        int next_fd;     /* lock: a compaction's new file, while switching */
        /* Room for the journal (layer.c, room_check()): blocks allocated
         * ahead of its end, so that a transaction applied to the model can
         * always be written. lock. While a compaction switches files, its
         * new file (room_next) takes every transaction too. */
        struct wl_room room, room_next; /* lock */
        bool switching;  /* lock: room_next is in use */
        bool room_none;  /* lock: the state dir's filesystem cannot preallocate */
        atomic_bool compacting;
        atomic_bool broken; /* a journal write failed: refuse changes */
        atomic_bool skel_pending; /* a fresh state dir's skeleton is not durable yet (layer.c) */

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
        unsigned ra_batch;          /* chunks per coalesced read; immutable */
        uint32_t ra_span;           /* compressed bytes per coalesced read; immutable */
        pthread_t *ra_threads;      /* immutable */
        unsigned n_ra_threads;
        bool ra_stop;               /* ra_lock */
        bool reaper_ok, reaper_stop; /* dead_lock (the reaper, layer.c) */

        /* Span reads (remote mounts, read.c): the tree's chunks in pack
         * order and each chunk's position in it, made on the first miss and
         * immutable after; where the last span ended and how many bytes the
         * next one reads. */
        pthread_mutex_t span_lock;
        uint32_t *by_pack, *pack_pos; /* span_lock until set */
        uint32_t span_from, span_next, span_bytes; /* span_lock */

        atomic_uint_fast64_t chunks_fetched, bytes_fetched, cache_hits, cache_misses;
        atomic_uint_fast64_t bytes_served, errors, readahead_chunks, reads, pack_reads;
        atomic_uint_fast64_t dirty_chunks, dirty_bytes, copied_up, bytes_written, journal_bytes;
        atomic_uint_fast64_t journal_synced; /* journal_bytes at the last fdatasync */
        uint64_t journal_end; /* the journal file's bytes, whole transactions; jlock */
        /* Data files of removed inodes, each with the journal_bytes that
         * says so: removed once journal_synced passes it (layer.c). */
        pthread_mutex_t dead_lock;
        pthread_mutex_t reap_lock; /* one reap() at a time, taken before dead_lock */
        pthread_cond_t dead_cond;
        struct wl_dead {
                uint64_t ino, pos;
        } *dead;
        size_t n_dead, dead_cap;
        atomic_size_t n_dead_pending; /* n_dead, read without the lock */
        atomic_uint_fast64_t n_reaped; /* data files removed by reap() */
        pthread_t reaper;

        struct fs_trace *trace; /* trace.c's; NULL: not recording */

        /* A checkpoint reading the chunks it froze (checkpoint.c): a change
         * to one of them saves it first (ck_before_change()). ck_active is
         * set and cleared under the barrier (exclusive) with ck_lock held. */
        pthread_mutex_t ck_lock;
        struct ck_frozen *ck; /* ck_lock */
        atomic_bool ck_active;
        /* What the last checkpoint stored, for the next (checkpoint.c). */
        struct ck_last *ck_last; /* ck_lock; replaced only by fs_checkpoint() */
        atomic_bool ck_have_last;
        atomic_uint_fast64_t ck_saved; /* chunks saved by a change during a checkpoint */
};

/* read.c */
struct fs_tls *fs_tls_get(struct fs *fs);
void fs_tls_free(void *p);
void fs_readahead_init(struct fs *fs); /* sets the coalescing limits */
int fs_readahead_start(struct fs *fs, unsigned workers);
void fs_readahead_stop(struct fs *fs);
/* fs_read_data(): len bytes of base regular file inode at off into dst (off <
 * size, off + len <= size); holes as zeros. Queues readahead through f if
 * non-NULL. 0, -EIO, -ENOMEM. */
int fs_read_data(struct fs *fs, const struct tree_inode *inode, struct fs_file *f, uint64_t off,
                 size_t len, uint8_t *dst);

/* ---- layer.c: the model (call with fs->lock held unless said otherwise) ---- */

/* Journal operations (docs/writable-layer.md has the byte layout). */
enum wl_op_type {
        WL_OP_ATTR = 1,    /* ino: attributes (creates a new inode) */
        WL_OP_LINK = 2,    /* ino: dir, ino2: child, name */
        WL_OP_UNLINK = 3,  /* ino: dir, name */
        WL_OP_SYMLINK = 4, /* ino, value: target */
        WL_OP_XSET = 5,    /* ino, name, value */
        WL_OP_XDEL = 6,    /* ino, name */
        WL_OP_DIRNEW = 7,  /* ino: its listing starts empty */
        WL_OP_XCLEAR = 8,  /* ino: its xattrs start empty */
        WL_OP_NEXTINO = 9, /* ino: next_ino is at least this */
};

/* A transaction being built: ops appended, applied and journaled as one. */
struct wl_txn {
        uint8_t *buf;
        size_t len, cap;
        int err;     /* building failed (ENOMEM), no room, or applying failed */
        bool grows;  /* adds a name, inode or xattr: may not use the journal's
                      * last WL_ROOM_FLOOR bytes of room (kept for the rest) */
        bool frees;  /* removes a name: may use the last bytes of that room,
                      * which no other change may (layer.c, room_check()) */
        uint64_t seq;
};

void wl_txn_attr(struct wl_txn *t, const struct tree_attr *a, uint64_t parent);
void wl_txn_op(struct wl_txn *t, enum wl_op_type type, uint64_t ino, uint64_t ino2,
               const char *name, const void *value, size_t value_len);
/* wl_txn_apply(): apply t to the model and give it its journal sequence
 * number; fs->lock held. Where the journal has no room for it (a full
 * disk), t->err becomes -ENOSPC (or -EDQUOT) and the model is left as it
 * was. Then, after the unlock, wl_txn_write() writes it in sequence order
 * (every transaction that took a number must be written, even a failed
 * one, which only advances the order) and frees its buffer. 0, or -errno:
 * t->err, or the write failed, in which case the change may be in memory
 * but not on disk, and the fs refuses further changes. wl_txn_commit():
 * both, and the unlock between. */
void wl_txn_apply(struct fs *fs, struct wl_txn *t);
int wl_txn_write(struct fs *fs, struct wl_txn *t);
int wl_txn_commit(struct fs *fs, struct wl_txn *t);

struct fs_inode *ino_get(struct fs *fs, uint64_t ino);
/* ino_load(): the table's inode, else one made from the base tree and
 * inserted. -ENOENT, -ENOMEM. */
int ino_load(struct fs *fs, uint64_t ino, struct fs_inode **ret);
/* ino_maybe_free(): drop p if nothing holds it; *ret_dead (may be NULL) gets
 * whether its data files are to be removed (call wl_data_remove() after the
 * unlock). */
void ino_maybe_free(struct fs *fs, struct fs_inode *p, bool *ret_dead);
int dir_lookup(struct fs *fs, struct fs_inode *dir, const char *name, uint64_t *ret_ino);
size_t dir_count(struct fs *fs, struct fs_inode *dir);
/* child_attr(): current attributes of ino without inserting it. */
int child_attr(struct fs *fs, uint64_t ino, struct tree_attr *ret);

/* ---- layer.c: state dir and data files (no lock held) ---- */
int wl_open(struct fs *fs, const char *state_dir, const char *base);
void wl_close(struct fs *fs);
/* wl_free_all(): free every inode of the table (at fs_free()). */
void wl_free_all(struct fs *fs);
/* wl_data_ensure(): create p's data file if missing; if this call made it
 * and ret_fd is non-NULL, *ret_fd gets it open O_RDWR (else -1). */
int wl_data_ensure(struct fs *fs, struct fs_inode *p, int *ret_fd);
int wl_data_open(struct fs *fs, uint64_t ino, int flags);
/* wl_data_blocks(): the 512-byte blocks the data file of ino has allocated. */
int wl_data_blocks(const struct fs *fs, uint64_t ino, uint64_t *ret);
void wl_data_remove(struct fs *fs, uint64_t ino);
/* wl_mark_present(): persist chunks [first, end) as present (fs->lock not held). */
int wl_mark_present(struct fs *fs, struct fs_inode *p, uint32_t first, uint32_t end);
int wl_set_base_limit(struct fs *fs, struct fs_inode *p, uint64_t limit);
int wl_sync(struct fs *fs, struct fs_inode *p, bool data_only);
/* wl_data_discard(): ino is gone (its removal journaled): its data file
 * and map go once the journal is durable past that (a host crash must not
 * keep the file's removal and lose the record). */
void wl_data_discard(struct fs *fs, uint64_t ino);
/* wl_reaped(): how many discarded data files have been removed so far.
 * wl_reap_space(): a change failed with ENOSPC: sync the journal, remove
 * every discarded data file and wait out a removal in flight; true if any
 * went since wl_reaped() said reaped (try again). */
uint64_t wl_reaped(struct fs *fs);
bool wl_reap_space(struct fs *fs, uint64_t reaped);
/* wl_skeleton_sync(): a fresh state dir's HEAD and directories durable, once
 * (the first fsync does it; so does a checkpoint). 0 or -errno (logged). */
int wl_skeleton_sync(struct fs *fs);

/* ---- checkpoint.c: copy-before-write while a checkpoint reads ---- */
/* ck_before_change(): bytes [off, off + len) of ino's data file (fd) are
 * about to change (len UINT64_MAX: to the end): save the chunks among them
 * that a running checkpoint still has to read. Cheap when none runs. Never
 * fails the change: a save that fails fails the checkpoint. */
void ck_before_change(struct fs *fs, uint64_t ino, int fd, uint64_t off, uint64_t len);
/* ck_defer_remove(): true if ino's data files must stay until the running
 * checkpoint ends (it removes them then). */
bool ck_defer_remove(struct fs *fs, uint64_t ino);

/* barrier_enter()/barrier_leave(): around a change (fs->barrier shared). */
int barrier_enter(struct fs *fs); /* 0, or -EROFS (paused; not entered) */
void barrier_leave(struct fs *fs);

/* ---- acl.c ---- */
/* acl_to_mode(): *mode's permission bits as an access ACL sets them;
 * *ret_minimal if the ACL says no more than the mode. -EINVAL for a bad ACL. */
int acl_to_mode(const void *v, size_t len, mode_t *mode, bool *ret_minimal);
/* acl_chmod(): rewrite an access ACL for a new mode (in place). */
void acl_chmod(void *v, size_t len, mode_t mode);
/* acl_create(): from a parent's default ACL, the new inode's access ACL
 * (into *ret_access, malloc'd, NULL if minimal) and mode. */
int acl_create(const void *dflt, size_t len, mode_t *mode, void **ret_access, size_t *ret_len);

/* kernel-io.c: the kernel asked to kill suid/sgid for the request being
 * handled on this thread (a WRITE or truncating SETATTR from a caller
 * without CAP_FSETID; only under killpriv_v2). */
bool fs_req_kill(void);
/* kio_note_request(): note what the handler of this request (in /dev/fuse
 * form, buf[0..n)) needs from it that libfuse drops; before handing it to
 * libfuse, on the handling thread. */
void kio_note_request(const void *buf, size_t n);

/* ---- uring.c: FUSE over io_uring (see there) ---- */
struct uring;
/* uring_enabled(): the kernel offers FUSE over io_uring (fuse.enable_uring). */
bool uring_enabled(void);
/* uring_prepare(): one thread and ring per possible CPU, waiting for INIT;
 * -EOPNOTSUPP if any ring cannot be made (logged). */
int uring_prepare(struct fuse_session *se, int fd, struct uring **ret);
/* uring_start(): INIT asked for io_uring; register with this payload size. */
void uring_start(struct uring *u, size_t payload);
/* uring_unused(): INIT did not ask for it; the threads end. */
void uring_unused(struct uring *u);
/* uring_reply(): if iov is the reply to the request this thread is handling
 * from a ring, take it (*ret as writev() would return) and return true. */
bool uring_reply(const struct iovec *iov, int count, ssize_t *ret);
/* uring_stop(): after the unmount; joins the threads, frees u. NULL. */
struct uring *uring_stop(struct uring *u);

#endif
