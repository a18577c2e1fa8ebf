/* backend.h — where blobs live: the backend vtable and its three
 * implementations (local OCI-layout directory, in-memory, fault injector).
 * A backend stores immutable, content-addressed blobs plus one index (the OCI
 * image-layout index.json: the store's roots and tags). Every operation may be
 * called concurrently from several threads; the local backend is also safe
 * across processes (flock on the store's lock file, atomic renames).
 * Backends never verify content: callers hash what they read (STYLE.md). */
#ifndef STASIS_BACKEND_H
#define STASIS_BACKEND_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "digest.h"

#define BACKEND_OPS_VERSION 1

struct backend;

struct blob_info {
        struct digest digest;
        uint64_t size;
        struct timespec mtime; /* last write or freshen */
};

/* index_transaction() callback: may change index; returns 1 to store it, 0 to
 * leave it untouched, -errno to abort (returned by index_transaction). */
typedef int (*index_fn)(json_t *index, void *ctx);
typedef int (*blob_list_fn)(const struct blob_info *info, void *ctx);

struct backend_ops {
        unsigned version; /* BACKEND_OPS_VERSION; entries past it are NULL */
        const char *name;

        /* has(): 1 present, 0 absent, -errno. */
        int (*has)(struct backend *b, const struct digest *d);
        /* size(): 0 and *ret_size; -ENOENT if absent; -errno. */
        int (*size)(struct backend *b, const struct digest *d, uint64_t *ret_size);
        /* read(): up to len bytes at offset off into buf. Returns the count
         * (short only at the end of the blob), -ENOENT if absent, -errno. */
        ssize_t (*read)(struct backend *b, const struct digest *d, uint64_t off, void *buf,
                        size_t len);
        /* write(): store data as blob d, atomically and durably (temp file,
         * fsync, rename, directory fsync). If d is already present it is only
         * freshened. The caller guarantees sha256(data) == d. 0 or -errno. */
        int (*write)(struct backend *b, const struct digest *d, const void *data, size_t len);
        /* freshen(): set d's mtime to now so gc's grace period spares it;
         * 0, -ENOENT if absent, -errno. */
        int (*freshen)(struct backend *b, const struct digest *d);
        /* remove(): 0, -ENOENT, -errno. Only gc calls it, under the index lock. */
        int (*remove)(struct backend *b, const struct digest *d);
        /* list(): call fn for every blob (any order); a negative return from
         * fn stops the walk and is returned. */
        int (*list)(struct backend *b, blob_list_fn fn, void *ctx);
        /* index_read(): a copy of the index (an OCI image index; an empty one
         * if the store has none yet). 0 or -errno. */
        int (*index_read)(struct backend *b, json_t **ret);
        /* index_transaction(): under the store's exclusive lock, load the
         * index, call fn, and if fn returned 1 replace the index atomically.
         * Returns fn's result (>= 0) or -errno. fn runs with the lock held:
         * it may call every other operation but index_*(). */
        int (*index_transaction)(struct backend *b, index_fn fn, void *ctx);

        void (*free)(struct backend *b);
};

struct backend {
        const struct backend_ops *ops;
};

/* Convenience wrappers; all accept b == NULL (-EINVAL). */
int backend_has(struct backend *b, const struct digest *d);
int backend_size(struct backend *b, const struct digest *d, uint64_t *ret_size);
ssize_t backend_read(struct backend *b, const struct digest *d, uint64_t off, void *buf,
                     size_t len);
int backend_write(struct backend *b, const struct digest *d, const void *data, size_t len);
int backend_freshen(struct backend *b, const struct digest *d);
int backend_remove(struct backend *b, const struct digest *d);
int backend_list(struct backend *b, blob_list_fn fn, void *ctx);
int backend_index_read(struct backend *b, json_t **ret);
int backend_index_transaction(struct backend *b, index_fn fn, void *ctx);
struct backend *backend_free(struct backend *b);

/* backend_read_all(): a whole blob into a malloc'd buffer, refusing blobs
 * larger than max (-EFBIG). Does not verify: see blob_read_verified(). */
int backend_read_all(struct backend *b, const struct digest *d, size_t max, void **ret,
                     size_t *ret_len);
/* blob_read_verified(): backend_read_all() plus a SHA-256 check; -EBADMSG on
 * mismatch (logged, naming the blob). blob_read_sized(): the same for a
 * blob whose size a descriptor gives: no size lookup first (from a registry
 * that is a HEAD, a round trip); -EBADMSG (logged) if the blob has another
 * size. */
int blob_read_sized(struct backend *b, const struct digest *d, uint64_t size, size_t max, void **ret,
                    size_t *ret_len);
int blob_read_verified(struct backend *b, const struct digest *d, size_t max, void **ret,
                       size_t *ret_len);
/* blob_write_data(): hash data and write it; *ret_digest (may be NULL) gets its address. */
int blob_write_data(struct backend *b, const void *data, size_t len, struct digest *ret_digest);

/* Local OCI image layout: DIR/oci-layout, DIR/index.json, DIR/blobs/sha256/,
 * DIR/stasis.lock (flock) and DIR/tmp/ for in-flight writes.
 * create: make the layout if DIR is missing or empty; otherwise -ENOENT for a
 * missing store and -EINVAL (logged) for a directory that is not a layout. */
int backend_local_open(const char *dir, bool create, struct backend **ret);

/* In-memory store for unit tests. Thread-safe. */
struct backend *backend_memory_new(void);

/* Fault injector, SQLite-style: wraps inner (and owns it). Calls are counted
 * across the ops selected by op_mask; the nth one (1-based) gets the fault,
 * then counting starts again only if repeat is set. */
enum fault_kind {
        FAULT_NONE,
        FAULT_FAIL,       /* return -err without calling inner */
        FAULT_SHORT_READ, /* read(): return half of what inner returned */
        FAULT_FLIP_BIT,   /* read(): flip one bit in what inner returned */
};
enum {
        FAULT_OP_HAS = 1u << 0,
        FAULT_OP_SIZE = 1u << 1,
        FAULT_OP_READ = 1u << 2,
        FAULT_OP_WRITE = 1u << 3,
        FAULT_OP_FRESHEN = 1u << 4,
        FAULT_OP_REMOVE = 1u << 5,
        FAULT_OP_LIST = 1u << 6,
        FAULT_OP_INDEX = 1u << 7,
        FAULT_OP_ALL = 0xffu,
};
struct fault_spec {
        enum fault_kind kind;
        unsigned op_mask;
        uint64_t nth;
        int err;     /* for FAULT_FAIL, a positive errno */
        bool repeat; /* fault every nth call, not only the first nth */
};
struct backend *backend_fault_new(struct backend *inner, const struct fault_spec *spec);
/* backend_fault_set(): change the spec and reset the counter. */
void backend_fault_set(struct backend *b, const struct fault_spec *spec);
/* backend_fault_calls(): calls counted so far; backend_fault_hits(): faults injected. */
uint64_t backend_fault_calls(struct backend *b);
uint64_t backend_fault_hits(struct backend *b);

#endif
