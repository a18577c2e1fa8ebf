/* chunk.c — see chunk.h. */
#include "chunk.h"

#include <errno.h>
#include <stdlib.h>
#include <xxhash.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "util.h"

struct chunk_codec {
        ZSTD_CCtx *cctx;
        ZSTD_DCtx *dctx;
        int level;
        void *scratch;
        size_t scratch_len;
};

int chunk_size_valid(uint64_t size)
{
        return size >= CHUNK_SIZE_MIN && size <= CHUNK_SIZE_MAX && (size & (size - 1)) == 0;
}

uint64_t chunk_xxh3(const void *data, size_t len)
{
        return XXH3_64bits(data, len);
}

struct chunk_codec *chunk_codec_new(int level)
{
        struct chunk_codec *c = calloc(1, sizeof *c);
        if (!c)
                return NULL;
        c->level = level;
        c->cctx = ZSTD_createCCtx();
        c->dctx = ZSTD_createDCtx();
        if (!c->cctx || !c->dctx)
                return chunk_codec_free(c);
        /* Parameters set once and kept (ZSTD_compress2()): the same frames
         * as ZSTD_compressCCtx(..., level) byte for byte, for 12-20% less
         * CPU on 64 KiB chunks (that one sets the context up afresh for
         * every call; measured in docs/store-design.md). */
        if (ZSTD_isError(ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_compressionLevel, level)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_contentSizeFlag, 1)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_checksumFlag, 0)))
                return chunk_codec_free(c);
        return c;
}

struct chunk_codec *chunk_codec_free(struct chunk_codec *c)
{
        if (c) {
                ZSTD_freeCCtx(c->cctx);
                ZSTD_freeDCtx(c->dctx);
                free(c->scratch);
                free(c);
        }
        return NULL;
}

void *chunk_codec_scratch(struct chunk_codec *c, size_t len)
{
        if (!c)
                return NULL;
        if (len > c->scratch_len) {
                void *p = realloc(c->scratch, len);
                if (!p)
                        return NULL;
                c->scratch = p;
                c->scratch_len = len;
        }
        return c->scratch;
}

size_t chunk_bound(size_t len)
{
        return ZSTD_compressBound(len);
}

int chunk_compress(struct chunk_codec *c, const void *src, size_t len, void *dst, size_t cap,
                   size_t *ret_len)
{
        size_t n;
        if (!c || !dst || !ret_len || (!src && len))
                return -EINVAL;
        /* The frame header holds the content size (ZSTD_c_contentSizeFlag). */
        n = ZSTD_compress2(c->cctx, dst, cap, src, len);
        if (ZSTD_isError(n))
                return ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall ? -ENOBUFS : -EIO;
        *ret_len = n;
        return 0;
}

int chunk_decode(struct chunk_codec *c, const void *frame, size_t clen, size_t ulen,
                 size_t max_ulen, const struct digest *addr, void *dst)
{
        unsigned long long declared;
        size_t fsize, n;
        struct digest got;

        if (!c || !frame || !addr || !dst)
                return -EINVAL;
        if (ulen > max_ulen || ulen == 0)
                return -EBADMSG;
        /* Exactly one frame, of exactly clen bytes, declaring exactly ulen. */
        fsize = ZSTD_findFrameCompressedSize(frame, clen);
        if (ZSTD_isError(fsize) || fsize != clen)
                return -EBADMSG;
        declared = ZSTD_getFrameContentSize(frame, clen);
        if (declared == ZSTD_CONTENTSIZE_UNKNOWN || declared == ZSTD_CONTENTSIZE_ERROR ||
            declared != ulen)
                return -EBADMSG;
        n = ZSTD_decompressDCtx(c->dctx, dst, ulen, frame, clen);
        if (ZSTD_isError(n) || n != ulen)
                return -EBADMSG;
        digest_sha256(dst, ulen, &got);
        if (!digest_eq(&got, addr))
                return -EBADMSG;
        return 0;
}
