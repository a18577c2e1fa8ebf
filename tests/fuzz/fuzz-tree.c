/* fuzz-tree.c — libFuzzer target for the tree parser: tree_parse() on the
 * input as a raw image and, on success, a walk of everything the public API
 * can reach; then tree_load() on the input as a compressed blob.
 * Seeds (tests/fuzz/corpus/fuzz-tree/) are small valid raw images. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store/tree.h"
#include "store/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Folding every value read into a sink keeps the reads from being optimized
 * away, and touches every byte a pointer gives us (ASan checks them). */
static volatile uint64_t sink;

static void touch(const void *p, size_t len)
{
        const uint8_t *b = p;
        uint64_t s = 0;
        for (size_t i = 0; i < len; i++)
                s += b[i];
        sink += s;
}

static void walk(const struct tree *t)
{
        uint32_t n = tree_n_inodes(t);
        struct tree_inode root, ino;

        sink += tree_chunk_size(t) + tree_next_ino(t);
        for (uint32_t i = 0; i < tree_n_packs(t); i++)
                touch(tree_pack(t, i), sizeof(struct digest));
        for (uint32_t i = 0; i < tree_n_chunks(t); i++) {
                struct tree_chunk c;
                uint32_t idx;
                if (tree_chunk(t, i, &c) < 0 || tree_chunk_find(t, &c.addr, &idx) < 0 || idx != i)
                        abort();
                sink += c.offset + c.clen + c.ulen + c.pack + c.xxh3;
        }
        if (tree_path_lookup(t, "", &root) < 0 || root.attr.ino != TREE_ROOT_INO)
                abort();

        for (uint32_t i = 0; i < n; i++) {
                const char *name, *target;
                const void *value;
                size_t len;
                uint64_t child;

                if (tree_inode_at(t, i, &ino) < 0)
                        abort();
                {
                        struct tree_inode again;
                        if (tree_inode(t, ino.attr.ino, &again) < 0 || again.idx != i)
                                abort();
                }
                for (uint32_t j = 0; j < tree_dir_count(t, &ino); j++) {
                        if (tree_dirent(t, &ino, j, &name, &len, &child) < 0)
                                abort();
                        touch(name, len + 1);
                        uint64_t found;
                        struct tree_inode c;
                        if (tree_lookup(t, &ino, name, len, &found) < 0 || found != child)
                                abort();
                        if (tree_inode(t, child, &c) < 0)
                                abort();
                }
                if (S_ISLNK(ino.attr.mode)) {
                        if (tree_symlink(t, &ino, &target, &len) < 0 || len != ino.attr.size)
                                abort();
                        touch(target, len + 1);
                        /* a path lookup on arbitrary names: must not crash */
                        (void)tree_path_lookup(t, target, &root);
                }
                for (uint32_t j = 0; j < tree_xattr_count(t, &ino); j++) {
                        const void *v2;
                        size_t l2;
                        if (tree_xattr(t, &ino, j, &name, &value, &len) < 0)
                                abort();
                        touch(name, strlen(name) + 1);
                        touch(value, len + 1);
                        if (tree_xattr_get(t, &ino, name, &v2, &l2) < 0 || v2 != value || l2 != len)
                                abort();
                }
                for (uint32_t j = 0; j < tree_file_nchunks(t, &ino); j++) {
                        uint32_t c = tree_file_chunk(t, &ino, j);
                        struct tree_chunk ch;
                        if (c != TREE_HOLE && tree_chunk(t, c, &ch) < 0)
                                abort();
                }
                for (uint32_t j = 0; j < tree_extent_count(t, &ino); j++) {
                        uint64_t off, len64;
                        tree_extent(t, &ino, j, &off, &len64);
                        if (len64 == 0 || off + len64 > ino.attr.size)
                                abort();
                }
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct tree *t = NULL;

        log_set_max_level(0);
        if (tree_parse(data, size, &t) == 0) {
                walk(t);
                t = tree_free(t);
        }
        if (tree_load(data, size, NULL, &t) == 0) {
                walk(t);
                t = tree_free(t);
        }
        return 0;
}
