/* fuzz-import.c — libFuzzer target for the layer applier of `stasis import`
 * (store/import.h): the input is one or more uncompressed tar layers,
 * separated by the line "STASIS-LAYER\n", applied in order to one namespace
 * (whiteouts, opaque directories, hardlinks, symlinks, sparse entries, pax
 * headers all come from libarchive reading the bytes). Whatever the input,
 * nothing may crash or leak; and if every layer applied, the tree must build,
 * pass the tree's own validation and load again. Chunks go through a real
 * packer into the in-memory backend.
 * Seeds (tests/fuzz/corpus/fuzz-import/) are small layers made with
 * tests/tools/mktar, whiteouts included. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SEP "STASIS-LAYER\n"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct backend *b = backend_memory_new();
        struct packer *p = NULL;
        struct import_ns *ns = NULL;
        struct tree *t = NULL;
        void *blob = NULL;
        size_t blob_len = 0, off = 0;
        struct digest d;
        int r = 0;

        log_set_max_level(0); /* hostile input is expected to fail; quietly */
        if (!b || packer_new(b, CHUNK_SIZE_MIN, 1, &p) < 0 || import_ns_new(p, CHUNK_SIZE_MIN, 0, 1, &ns) < 0)
                abort();
        for (unsigned layer = 0; off <= size && layer < 8; layer++) {
                const uint8_t *end = memmem(data + off, size - off, SEP, strlen(SEP));
                size_t len = end ? (size_t)(end - (data + off)) : size - off;

                r = import_ns_apply_tar(ns, data + off, len, "fuzz");
                if (r == -ELIBACC || r == -ELIBBAD)
                        abort(); /* libarchive did not load: nothing would be fuzzed */
                if (r < 0 || !end)
                        break;
                off += len + strlen(SEP);
        }
        if (r >= 0) {
                r = import_ns_build(ns, &blob, &blob_len, &d);
                if (r < 0 && r != -ENOMEM && r != -EFBIG)
                        abort(); /* the applier made a namespace the tree cannot hold */
                if (r >= 0 && tree_load(blob, blob_len, &d, &t) < 0)
                        abort();
        }
        tree_free(t);
        free(blob);
        import_ns_free(ns);
        packer_free(p);
        backend_free(b);
        return 0;
}
