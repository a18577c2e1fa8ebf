/* chunk.h — one chunk's encoding: XXH3-64 fingerprints and the zstd frame a
 * chunk is stored as (one frame per chunk, content size in the header).
 * A struct chunk_codec holds zstd contexts and belongs to one thread at a
 * time; give each worker its own. Does no I/O and knows nothing of packs. */
#ifndef STASIS_CHUNK_H
#define STASIS_CHUNK_H

#include <stddef.h>
#include <stdint.h>

#include "digest.h"

#define CHUNK_SIZE_MIN (16u << 10)
#define CHUNK_SIZE_MAX (4u << 20)
/* Chosen by the chunk-size sweep in bench/ (bench/RESULTS.md, "Chunk-size
 * sweep", and docs/store-design.md): the smallest pause for an edit in a
 * large file without paying per-chunk overhead in commit time, store size
 * or lazy reads. */
#define CHUNK_SIZE_DEFAULT (64u << 10)
/* Holes are found and recreated at this granularity. */
#define HOLE_GRANULE 4096u

#define CHUNK_LEVEL_DEFAULT 3

/* chunk_size_valid(): a power of two in [CHUNK_SIZE_MIN, CHUNK_SIZE_MAX]. */
int chunk_size_valid(uint64_t size);

uint64_t chunk_xxh3(const void *data, size_t len);

struct chunk_codec;
/* chunk_codec_new(): level is the zstd compression level used by compress(). */
struct chunk_codec *chunk_codec_new(int level);
struct chunk_codec *chunk_codec_free(struct chunk_codec *c);

/* chunk_codec_scratch(): a buffer of at least len bytes owned by the codec,
 * valid until the next call or chunk_codec_free(); NULL on ENOMEM. Saves a
 * large allocation per chunk on hot paths. */
void *chunk_codec_scratch(struct chunk_codec *c, size_t len);

/* chunk_bound(): worst-case frame size for len bytes of input. */
size_t chunk_bound(size_t len);

/* chunk_compress(): one zstd frame, content size and checksum-free, into dst
 * (cap >= chunk_bound(len)); *ret_len = frame length. */
int chunk_compress(struct chunk_codec *c, const void *src, size_t len, void *dst, size_t cap,
                   size_t *ret_len);

/* chunk_decode(): the inverse, and the only way chunk bytes get out of a pack.
 * The frame must be exactly one zstd frame of clen bytes that declares a content
 * size equal to ulen; ulen must be <= max_ulen. The output must hash to *addr.
 * dst has room for ulen bytes. Returns 0, or -EBADMSG for any mismatch (nothing
 * in dst may then be used), -ENOMEM. */
int chunk_decode(struct chunk_codec *c, const void *frame, size_t clen, size_t ulen,
                 size_t max_ulen, const struct digest *addr, void *dst);

#endif
