/* import.h — OCI images into snapshots: reads an image (index -> manifest ->
 * config + layers) through a small source interface, verifies every blob's
 * SHA-256 and every layer's diff_id while it streams, applies the layers in
 * order with OCI whiteouts to an in-memory namespace, chunks file data on the
 * fly through the packer (packer.h), and publishes one snapshot whose config
 * carries the image's config. Nothing is unpacked to disk and no layer is
 * held whole in memory; nothing is ever written outside the store.
 * One store_import() is self-contained and may run concurrently with other
 * store operations on the same backend. An image_source belongs to one
 * import at a time. A struct import_ns belongs to one thread.
 *
 * Sources: a local OCI image layout (oci:DIR:TAG) and a registry repository
 * (oci://HOST/REPO:TAG, over the OCI store of oci.h) plug in through
 * struct image_source_ops; anything else that can name a manifest and read a
 * blob by digest can too. */
#ifndef STASIS_IMPORT_H
#define STASIS_IMPORT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "backend.h"
#include "commit.h"
#include "digest.h"
#include "packer.h"

#define IMPORT_SOURCE_OPS_VERSION 1

/* Limits on what an image may contain (absurd headers are errors). */
#define IMPORT_ENTRY_SIZE_MAX (1ull << 50)
#define IMPORT_PATH_MAX 4096u
#define IMPORT_XATTR_VALUE_MAX (64u << 10)
/* At most this many snapshots of the store are loaded as dedup sources. */
#define IMPORT_KNOWN_DEFAULT 32u

struct image_source;

struct image_source_ops {
        unsigned version; /* IMPORT_SOURCE_OPS_VERSION; entries past it are NULL */
        const char *name;
        /* manifest(): the manifest or image index that ref names (a tag, or
         * "sha256:<hex>"), malloc'd, at most max bytes (-EFBIG beyond). The
         * digest is the one the source names it by; the caller hashes the
         * bytes and checks them against it. -ENOENT if there is none. */
        int (*manifest)(struct image_source *s, const char *ref, size_t max, void **ret,
                        size_t *ret_len, struct digest *ret_digest);
        /* read(): up to len bytes of blob d at off; fewer only at the end of
         * the blob; -ENOENT if absent; -errno. Unverified: callers hash. */
        ssize_t (*read)(struct image_source *s, const struct digest *d, uint64_t off, void *buf,
                        size_t len);
        void (*free)(struct image_source *s);
};

struct image_source {
        const struct image_source_ops *ops;
};

/* image_source_layout_open(): a local OCI image layout directory (oci-layout,
 * index.json, blobs/sha256/). Tags are the index's ref.name annotations.
 * Opens read-only; writes nothing there. -ENOENT, -EINVAL (logged) for a
 * directory that is not a layout. */
int image_source_layout_open(const char *dir, struct image_source **ret);
/* image_source_backend(): an image in a backend, typically a registry
 * repository (backend_oci_open(): manifests through oci_manifest_get(), blobs
 * through backend_read()). Borrows b, which must outlive the source. */
int image_source_backend(struct backend *b, struct image_source **ret);
struct image_source *image_source_free(struct image_source *s);

struct import_opts {
        struct image_source *src;
        const char *ref;          /* tag or sha256: digest in src */
        const char *what;         /* for messages, e.g. "oci:DIR:TAG"; NULL: ref */
        const char *os, *arch;    /* platform an image index is resolved for; NULL: linux, amd64 */
        uint32_t chunk_size;      /* 0: CHUNK_SIZE_DEFAULT */
        int level;                /* zstd level; 0: CHUNK_LEVEL_DEFAULT */
        unsigned threads;         /* compression workers; 0: one per online CPU */
        unsigned known_max;       /* store snapshots to dedup against; 0: IMPORT_KNOWN_DEFAULT */
        const char *tag;          /* NULL: untagged root */
        json_t *labels;           /* may be NULL */
        progress_fn progress;
        void *progress_ctx;
};

struct import_stats {
        struct digest image_manifest; /* the platform manifest that was imported */
        uint64_t layers, entries, whiteouts;
        uint64_t files, dirs, symlinks, others;
        uint64_t bytes_logical;     /* sum of file sizes in the result */
        uint64_t bytes_layers;      /* compressed layer blob bytes read */
        uint64_t bytes_tar;         /* uncompressed layer bytes */
        uint64_t chunks_total, chunks_new, chunks_reused;
        uint64_t bytes_new, bytes_packed, packs_new;
        uint64_t known_snapshots;   /* snapshots deduplicated against */
        bool already;               /* the store had this image already: nothing was read or written */
        uint64_t tree_bytes;
        uint64_t wall_ns;
};

/* store_import(): the image ref of src as a new snapshot of b (a first
 * generation; its config's "image" is the image config object, "created"
 * the image's creation time, its stats the image manifest's digest). If one
 * of the known snapshots was imported from the same image manifest with the
 * same chunk size and labels, that one is the result (tagged if asked) and
 * nothing is read or written: importing an image twice gives one digest and
 * adds no bytes. Every problem is logged once naming the
 * layer and entry; -EBADMSG for corrupt or malicious content, -EPROTONOSUPPORT
 * for an unknown media type. */
int store_import(struct backend *b, const struct import_opts *o, struct digest *ret,
                 struct import_stats *ret_stats);

/* ---- the layer applier (store_import()'s core; public for the fuzzer) ---- */

/* A namespace of paths being built from layers. Data goes through p (which
 * it borrows) with chunk size cs. threads == 0 compresses in the caller. */
struct import_ns;
int import_ns_new(struct packer *p, uint32_t cs, unsigned threads, int level,
                  struct import_ns **ret);
struct import_ns *import_ns_free(struct import_ns *ns);
/* apply_tar(): one uncompressed tar layer from memory, named layer in
 * messages. Layers are applied in order; whiteouts hide lower layers' paths. */
int import_ns_apply_tar(struct import_ns *ns, const void *tar, size_t len, const char *layer);
/* build(): wait for the data, flush the packer and serialize the tree as
 * tree_builder_finish() does (*ret malloc'd). The namespace is spent after. */
int import_ns_build(struct import_ns *ns, void **ret, size_t *ret_len, struct digest *ret_digest);

#endif
