/* packer.h — chunk bytes in, stored chunk references out: SHA-256 and XXH3,
 * deduplication against known trees (a parent, other snapshots of the store)
 * and against everything this packer already took, zstd compression of new
 * chunks only, and packing them into PACK_TARGET-sized pack blobs written to
 * a backend (a full pack is written by the thread that filled it, outside
 * the lock). Thread-safe: packer_add() runs concurrently from any number of
 * threads, each with its own chunk_codec. Builds no tree and reads no files;
 * packer_add_to_builder() hands the result to a tree_builder. */
#ifndef STASIS_PACKER_H
#define STASIS_PACKER_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "chunk.h"
#include "tree.h"

struct packer;

/* packer_new(): chunks are at most chunk_size bytes, compressed at level. */
int packer_new(struct backend *b, uint32_t chunk_size, int level, struct packer **ret);
struct packer *packer_free(struct packer *p);

/* packer_add_known(): chunks of t are reused by reference instead of being
 * stored again. t must outlive the packer. Call before any packer_add(). */
int packer_add_known(struct packer *p, const struct tree *t);

/* packer_add(): one chunk (1..chunk_size bytes). *ret_ref names it for
 * packer_add_to_builder(). Returns 1 if its bytes were new and are being
 * packed, 0 if it was already known, -errno. */
int packer_add(struct packer *p, struct chunk_codec *codec, const void *data, size_t len,
               uint32_t *ret_ref);

/* A worker's run of new chunks: packer_add_batched() keeps each new frame
 * in the batch instead of appending it at once, and packer_batch_flush()
 * appends them back to back. Two workers appending chunk by chunk interleave
 * their files in a pack; a file flushed as one run has its chunks adjacent,
 * so reading it reads one range (from a registry: one request, no bytes of
 * other files). A batch belongs to one thread; flush it before
 * packer_flush(). */
struct packer_batch;
struct packer_batch *packer_batch_new(void);
struct packer_batch *packer_batch_free(struct packer_batch *b);
int packer_add_batched(struct packer *p, struct chunk_codec *codec, struct packer_batch *batch, const void *data,
                       size_t len, uint32_t *ret_ref);
int packer_batch_flush(struct packer *p, struct packer_batch *b);

/* packer_flush(): write the open pack, if any. Call once all adds are done. */
int packer_flush(struct packer *p);

/* packer_add_to_builder(): add the packs and chunks of every ref to tb;
 * *ret_map (malloc'd, *ret_n entries) maps a ref to its builder chunk index.
 * Only after packer_flush(). */
int packer_add_to_builder(struct packer *p, struct tree_builder *tb, uint32_t **ret_map,
                          size_t *ret_n);

struct packer_stats {
        uint64_t chunks_total;  /* packer_add() calls */
        uint64_t chunks_new;
        uint64_t chunks_reused;
        uint64_t bytes_new;     /* uncompressed bytes of new chunks */
        uint64_t bytes_packed;  /* compressed bytes of new chunks */
        uint64_t packs_new;
};
void packer_get_stats(struct packer *p, struct packer_stats *ret);

#endif
