/* snapshot.h — snapshots as OCI artifacts, and the store-wide operations on
 * them: the manifest and config JSON (jansson), references (tags and
 * digests), publishing, chunk reads from packs, the generation chain, verify
 * and gc. Thread-safe for distinct struct snapshot objects; a loaded snapshot
 * may be read from many threads. Does no FUSE and no HTTP.
 *
 * A snapshot is an OCI image manifest:
 *   artifactType  application/vnd.stasis.snapshot.v1
 *   config        application/vnd.stasis.snapshot.config.v1+json
 *   layers[0]     the tree (application/vnd.stasis.tree.v1+zstd)
 *   layers[1..]   every pack the tree references (application/vnd.stasis.pack.v1),
 *                 in the tree's pack order
 *   layers[last]  optional: the access trace (application/vnd.stasis.trace.v1,
 *                 store/trace-blob.h), after the packs
 * Its identity is the manifest's digest. The store's index.json lists roots:
 * every committed snapshot gets an entry; a tag is an entry carrying the
 * annotation org.opencontainers.image.ref.name. */
#ifndef STASIS_SNAPSHOT_H
#define STASIS_SNAPSHOT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "chunk.h"
#include "digest.h"
#include "trace-blob.h"
#include "tree.h"

#define MEDIA_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MEDIA_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MEDIA_SNAPSHOT "application/vnd.stasis.snapshot.v1"
#define MEDIA_SNAPSHOT_CONFIG "application/vnd.stasis.snapshot.config.v1+json"
#define MEDIA_TREE "application/vnd.stasis.tree.v1+zstd"
#define MEDIA_PACK "application/vnd.stasis.pack.v1"
#define MEDIA_TRACE "application/vnd.stasis.trace.v1"
#define ANNOTATION_REF_NAME "org.opencontainers.image.ref.name"
#define ANNOTATION_CREATED "org.opencontainers.image.created"

/* Limits on what we parse. */
#define MANIFEST_MAX (4u << 20)
#define CONFIG_MAX (4u << 20)
#define TREE_BLOB_MAX (1u << 30)
/* Packs are closed once they reach this many bytes. */
#define PACK_TARGET (32u << 20)

struct snapshot_config {
        uint32_t chunk_size;
        bool has_parent;
        struct digest parent;
        uint64_t generation; /* 0 for a snapshot without parent */
        char created[32];    /* RFC 3339 */
        json_t *labels;      /* object of strings, never NULL once parsed */
        json_t *stats;       /* object, never NULL once parsed */
        json_t *image;       /* OCI image config this snapshot started from, or NULL */
};

struct snapshot {
        struct digest digest; /* the manifest's */
        struct digest config_digest;
        struct digest tree_digest;
        uint64_t tree_size;
        uint32_t n_packs;
        struct digest *packs;
        uint64_t *pack_sizes;
        bool has_trace; /* the manifest names an access trace (its last layer) */
        struct digest trace_digest;
        uint64_t trace_size;
        struct snapshot_config config;
        struct tree *tree; /* NULL until snapshot_load_tree() */
};

/* Parsing, for snapshot_open() and the fuzzers. Strict: wrong schemaVersion,
 * media types, missing or mistyped fields, bad digests, negative or absurd
 * sizes, more than 1,000,000 layers are -EBADMSG (logged). */
int snapshot_manifest_parse(const void *json, size_t len, struct snapshot **ret);
int snapshot_config_parse(const void *json, size_t len, struct snapshot_config *ret);
void snapshot_config_release(struct snapshot_config *c);

/* snapshot_open(): read and verify the manifest and config blobs. */
int snapshot_open(struct backend *b, const struct digest *manifest, struct snapshot **ret);
/* snapshot_load_tree(): read, verify and validate the tree blob; checks that
 * the tree's pack list equals the manifest's. */
int snapshot_load_tree(struct backend *b, struct snapshot *s);
struct snapshot *snapshot_free(struct snapshot *s);
/* snapshot_load_trace(): read, verify and parse s's access trace (entries in
 * trace order, in units of *ret_chunk_size; trace-blob.h). 0 with *ret NULL
 * and *ret_n 0 if s has none; -ENOENT, -EBADMSG (logged), -errno. */
int snapshot_load_trace(struct backend *b, const struct snapshot *s, uint32_t *ret_chunk_size,
                        struct trace_entry **ret, size_t *ret_n);

/* snapshot_read_chunk(): chunk idx of s's tree from its pack, decoded and
 * verified, into dst (room for chunk_size bytes). -EBADMSG for corrupt data
 * and -ENOENT for a missing pack, each logged once naming chunk and pack. */
int snapshot_read_chunk(struct backend *b, const struct snapshot *s, uint32_t idx,
                        struct chunk_codec *codec, void *dst);
/* snapshot_read_chunk_why(): the same, but nothing is logged: the sentence
 * that would have been is left in why. For callers that run many reads at
 * once and must report one failure only (restore). */
#define CHUNK_WHY_MAX 512
int snapshot_read_chunk_why(struct backend *b, const struct snapshot *s, uint32_t idx,
                            struct chunk_codec *codec, void *dst, char why[static CHUNK_WHY_MAX]);

/* What a new snapshot is made of. */
struct snapshot_new {
        const void *tree_blob; /* compressed tree, as tree_builder_finish() made it */
        size_t tree_len;
        struct digest tree_digest;
        const struct snapshot *parent; /* may be NULL */
        uint32_t chunk_size;
        json_t *labels; /* may be NULL */
        json_t *stats;  /* may be NULL */
        json_t *image;  /* may be NULL */
        const char *tag; /* may be NULL */
        /* created: RFC 3339 UTC "YYYY-MM-DDTHH:MM:SSZ", or NULL for now. An import
         * passes its image's, so importing one image twice gives one digest. */
        const char *created;
        /* An access trace blob (trace-blob.h, docs/access-trace.md) stored
         * with the snapshot as its last layer; NULL or 0 bytes: none. It
         * must parse (-EINVAL if not). */
        const void *trace;
        size_t trace_len;
        /* The tree tree_blob holds, if the caller has it parsed
         * (tree_builder_finish_tree()); NULL: publish loads the blob. */
        const struct tree *tree;
};
/* snapshot_publish(): with every pack the tree names already stored, write the
 * tree, config and manifest blobs, then under the index lock check that every
 * blob is still present and add the root entry (and tag). Blobs first, index
 * last: a reader never sees a manifest with missing blobs. */
int snapshot_publish(struct backend *b, const struct snapshot_new *n, struct digest *ret);

/* References. REF is "sha256:<hex>" (must be in the store) or a tag. */
int store_resolve(struct backend *b, const char *ref, struct digest *ret);
/* store_tag(): point tag at d (moving it if it exists). */
int store_tag(struct backend *b, const struct digest *d, const char *tag);
/* tag_valid(): OCI tag grammar [A-Za-z0-9_][A-Za-z0-9._-]{0,127}. */
bool tag_valid(const char *tag);

/* store_recent(): the newest max snapshots of the store's index with chunk
 * size cs, trees loaded, for deduplication (packer_add_known()). Unreadable
 * ones, and those whose tree digest is one of skip[n_skip] (trees the
 * caller holds already), are skipped. *ret is a malloc'd array of n snapshots: free each with
 * snapshot_free(), then the array. */
int store_recent(struct backend *b, uint32_t cs, unsigned max, const struct digest *skip, size_t n_skip,
                 struct snapshot ***ret, size_t *ret_n);

/* verify: re-hash every reachable blob and every chunk. report() is called
 * once per problem found; returns the number of problems or -errno. */
typedef void (*verify_report_fn)(void *ctx, const char *blob, const char *chunk, const char *what);
struct verify_stats {
        uint64_t snapshots, blobs, chunks, bytes;
};
int store_verify(struct backend *b, const struct digest *only /* NULL: all roots */,
                 verify_report_fn report, void *ctx, struct verify_stats *ret_stats);

/* gc: under the index lock, untag per keep_last, then delete every blob that
 * no index entry and no pinned snapshot reaches and that is older than
 * grace_sec. */
struct gc_opts {
        uint64_t grace_sec;
        uint64_t keep_last; /* 0: keep all */
        bool dry_run;
        /* Snapshots to keep whatever index.json says (those live mounts use;
         * the caller finds them): each one's manifest, config, tree and packs
         * are spared, even once keep_last untagged it. A pinned manifest the
         * store does not hold is skipped with a warning. */
        const struct digest *pinned;
        size_t n_pinned;
};
struct gc_stats {
        uint64_t roots_kept, roots_dropped, blobs_kept, blobs_removed, bytes_removed, blobs_young;
        uint64_t roots_pinned; /* distinct pinned snapshots found in the store */
};
int store_gc(struct backend *b, const struct gc_opts *o, struct gc_stats *ret);

#endif
