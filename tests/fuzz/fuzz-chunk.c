/* fuzz-chunk.c — libFuzzer target for chunk_decode(), the only way chunk
 * bytes leave a pack. Input: 4 bytes little-endian ulen, 1 byte choosing
 * max_ulen (a chunk size), then the frame. The frame is decoded against a
 * wrong address (must fail, never crash, never write past ulen bytes) and,
 * when zstd itself decodes it to exactly ulen bytes, against the right
 * address (must succeed with those bytes).
 * Seeds (tests/fuzz/corpus/fuzz-chunk/) are chunk_compress() frames with
 * matching headers. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "store/chunk.h"
#include "store/digest.h"
#include "store/util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        (void)argc;
        (void)argv;
        log_set_max_level(0);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct chunk_codec *codec;
        struct digest wrong, right;
        const uint8_t *frame;
        uint8_t *dst, *ref;
        size_t clen, ulen, max_ulen;
        int r;

        if (size < 5)
                return 0;
        ulen = (size_t)data[0] | (size_t)data[1] << 8 | (size_t)data[2] << 16 | (size_t)data[3] << 24;
        max_ulen = (size_t)CHUNK_SIZE_MIN << (data[4] % 9);
        /* Mostly in range, sometimes just past it. */
        ulen %= max_ulen + 2;
        frame = data + 5;
        clen = size - 5;

        codec = chunk_codec_new(1);
        dst = malloc(ulen ? ulen : 1); /* exactly ulen: ASan catches any write past it */
        ref = malloc(ulen ? ulen : 1);
        if (!codec || !dst || !ref)
                abort();

        digest_sha256(data, size, &wrong);
        r = chunk_decode(codec, frame, clen, ulen, max_ulen, &wrong, dst);
        if (r != -EBADMSG)
                abort(); /* the output never hashes to the input's own digest */

        if (ulen > 0 && ulen <= max_ulen && clen > 0 &&
            ZSTD_findFrameCompressedSize(frame, clen) == clen &&
            ZSTD_getFrameContentSize(frame, clen) == ulen) {
                size_t n = ZSTD_decompress(ref, ulen, frame, clen);
                if (!ZSTD_isError(n) && n == ulen) {
                        digest_sha256(ref, ulen, &right);
                        if (chunk_decode(codec, frame, clen, ulen, max_ulen, &right, dst) != 0 ||
                            memcmp(dst, ref, ulen) != 0)
                                abort();
                }
        }

        free(ref);
        free(dst);
        chunk_codec_free(codec);
        return 0;
}
