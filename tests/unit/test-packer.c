/* test-packer.c — the packer's batches: a worker's run of new chunks lands
 * back to back in a pack, whatever other workers append meanwhile. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store/backend.h"
#include "store/chunk.h"
#include "store/packer.h"
#include "store/tree.h"

#define CS CHUNK_SIZE_MIN
#define RUN 4

/* fill(): len bytes that compress little, different for each seed */
static void fill(uint8_t *buf, size_t len, unsigned seed)
{
        for (size_t i = 0; i < len; i++)
                buf[i] = (uint8_t)(rand_r(&seed) >> 7);
}

static uint32_t add_file(struct tree_builder *tb, uint32_t root, const char *name, uint64_t ino, const uint32_t *map,
                         const uint32_t *refs)
{
        struct tree_attr a = { .ino = ino, .mode = S_IFREG | 0644, .nlink = 1, .size = (uint64_t)RUN * CS };
        uint32_t h, chunks[RUN];

        cr_assert_eq(tree_builder_add_inode(tb, &a, &h), 0);
        for (int i = 0; i < RUN; i++)
                chunks[i] = map[refs[i]];
        cr_assert_eq(tree_builder_set_chunks(tb, h, chunks, RUN), 0);
        cr_assert_eq(tree_builder_add_extent(tb, h, 0, a.size), 0);
        cr_assert_eq(tree_builder_add_dirent(tb, root, name, strlen(name), ino), 0);
        return h;
}

/* where file ino's chunks are: each must follow the one before in its pack */
static uint64_t check_run(const struct tree *t, uint64_t ino)
{
        struct tree_inode in;
        struct tree_chunk prev = { 0 }, c = { 0 };

        cr_assert_eq(tree_inode(t, ino, &in), 0);
        cr_assert_eq(tree_file_nchunks(t, &in), RUN);
        for (uint32_t i = 0; i < RUN; i++) {
                cr_assert_eq(tree_chunk(t, tree_file_chunk(t, &in, i), &c), 0);
                if (i > 0) {
                        cr_assert_eq(c.pack, prev.pack, "inode %lu chunk %u", (unsigned long)ino, i);
                        cr_assert_eq(c.offset, prev.offset + prev.clen, "inode %lu chunk %u not adjacent",
                                     (unsigned long)ino, i);
                }
                prev = c;
        }
        cr_assert_eq(tree_chunk(t, tree_file_chunk(t, &in, 0), &c), 0);
        return c.offset;
}

Test(packer, a_batch_is_one_run)
{
        struct backend *b = backend_memory_new();
        struct packer *p = NULL;
        struct chunk_codec *codec = chunk_codec_new(1);
        struct packer_batch *ba = packer_batch_new(), *bb = packer_batch_new();
        static uint8_t data[2][RUN][CS];
        uint32_t ra[RUN], rb[RUN], dup, *map = NULL, root;
        size_t n_map = 0;
        struct tree_builder *tb = tree_builder_new(CS);
        struct tree_attr rootattr = { .ino = TREE_ROOT_INO, .mode = S_IFDIR | 0755, .nlink = 2 };
        struct tree *t = NULL;
        void *blob = NULL;
        size_t len;

        cr_assert(b && codec && ba && bb && tb);
        cr_assert_eq(packer_new(b, CS, 1, &p), 0);
        /* two workers' runs, added in turn, chunk by chunk */
        for (int i = 0; i < RUN; i++) {
                fill(data[0][i], CS, 1 + (unsigned)i);
                fill(data[1][i], CS, 100 + (unsigned)i);
                cr_assert_eq(packer_add_batched(p, codec, ba, data[0][i], CS, &ra[i]), 1);
                cr_assert_eq(packer_add_batched(p, codec, bb, data[1][i], CS, &rb[i]), 1);
        }
        /* a chunk the other run has already: a reference, nothing kept */
        cr_assert_eq(packer_add_batched(p, codec, bb, data[0][2], CS, &dup), 0);
        cr_assert_eq(dup, ra[2]);
        /* b's run first, then a plain add, then a's run */
        cr_assert_eq(packer_batch_flush(p, bb), 0);
        {
                uint8_t one[CS];
                uint32_t r1;
                fill(one, CS, 999);
                cr_assert_eq(packer_add(p, codec, one, CS, &r1), 1);
        }
        cr_assert_eq(packer_batch_flush(p, ba), 0);
        cr_assert_eq(packer_batch_flush(p, ba), 0, "an empty batch flushes to nothing");
        cr_assert_eq(packer_flush(p), 0);

        cr_assert_eq(tree_builder_add_inode(tb, &rootattr, &root), 0);
        cr_assert_eq(packer_add_to_builder(p, tb, &map, &n_map), 0);
        cr_assert_eq(n_map, 2 * RUN + 1);
        add_file(tb, root, "a", 2, map, ra);
        add_file(tb, root, "b", 3, map, rb);
        tree_builder_set_next_ino(tb, 4);
        cr_assert_eq(tree_builder_finish(tb, 3, &blob, &len, NULL), 0);
        cr_assert_eq(tree_load(blob, len, NULL, &t), 0);

        /* each run is contiguous, b's before a's, with the plain chunk between */
        cr_assert_lt(check_run(t, 3) + RUN, check_run(t, 2));

        tree_free(t);
        free(blob);
        free(map);
        tree_builder_free(tb);
        packer_batch_free(ba);
        packer_batch_free(bb);
        chunk_codec_free(codec);
        packer_free(p);
        backend_free(b);
}
