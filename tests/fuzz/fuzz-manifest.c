/* fuzz-manifest.c — libFuzzer target for the snapshot manifest and config
 * JSON: snapshot_manifest_parse() and snapshot_config_parse() on the input.
 * Whatever parses must satisfy the parsers' promises; everything is freed.
 * Seeds (tests/fuzz/corpus/fuzz-manifest/) are a real manifest and config
 * from snapshot_publish() plus near misses. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/chunk.h"
#include "store/snapshot.h"
#include "store/util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        (void)argc;
        (void)argv;
        log_set_max_level(0); /* rejections log by design; keep the output readable */
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct snapshot *s = NULL;
        struct snapshot_config c;
        const char *empty = "";

        if (!data)
                data = (const uint8_t *)empty;
        if (snapshot_manifest_parse(data, size, &s) == 0) {
                struct digest d;
                digest_sha256(data, size, &d);
                if (!s || !digest_eq(&d, &s->digest) || s->config.labels)
                        abort();
                for (uint32_t i = 0; i < s->n_packs; i++)
                        if (s->pack_sizes[i] > (UINT64_C(1) << 53))
                                abort();
                if (s->tree_size > (UINT64_C(1) << 53) || s->tree)
                        abort();
                s = snapshot_free(s);
        } else if (s) {
                abort(); /* ret written on failure */
        }
        if (snapshot_config_parse(data, size, &c) == 0) {
                if (!chunk_size_valid(c.chunk_size) || !json_is_object(c.labels) ||
                    !json_is_object(c.stats) || (c.image && !json_is_object(c.image)) ||
                    c.generation > (UINT64_C(1) << 53) || (c.has_parent && c.generation == 0) ||
                    strnlen(c.created, sizeof c.created) >= sizeof c.created)
                        abort();
                snapshot_config_release(&c);
        }
        return 0;
}
