/* fuzz-trace.c — libFuzzer target for the access-trace blob (a store's or
 * registry's untrusted input at mount time): trace_blob_parse() on the
 * input. Whatever parses must satisfy the format's promises and encode back
 * to the same bytes; everything is freed. Seeds
 * (tests/fuzz/corpus/fuzz-trace/) are valid traces and near misses. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/chunk.h"
#include "store/trace-blob.h"
#include "store/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct trace_entry *e = NULL;
        void *again = NULL;
        uint32_t cs = 0;
        size_t n = 0, len = 0;

        if (trace_blob_parse(data, size, &cs, &e, &n) != 0) {
                if (e)
                        abort(); /* ret written on failure */
                return 0;
        }
        if (!chunk_size_valid(cs) || n > TRACE_BLOB_ENTRIES_MAX || (n && !e) ||
            size != TRACE_BLOB_HEADER + n * TRACE_BLOB_ENTRY)
                abort();
        for (size_t i = 0; i < n; i++)
                if (e[i].ino == 0)
                        abort();
        /* One blob per trace: encoding what parsed gives the input back. */
        if (trace_blob_encode(cs, e, n, &again, &len) != 0 || len != size || memcmp(again, data, size) != 0)
                abort();
        free(again);
        free(e);
        return 0;
}
