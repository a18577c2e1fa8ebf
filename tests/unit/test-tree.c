/* test-tree.c — the snapshot tree format: build, round trip, every query,
 * dedup and dropping of dead chunks, and rejection of corrupt images. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <zstd.h>

#include "store/chunk.h"
#include "store/digest.h"
#include "store/tree.h"
#include "store/util.h"

#define CS CHUNK_SIZE_MIN
#define DEEP 10000u

/* ---- helpers ---- */

static struct tree_attr attr(uint64_t ino, uint32_t mode)
{
        return (struct tree_attr){
                .ino = ino,
                .mode = mode,
                .uid = 1000 + (uint32_t)ino,
                .gid = 2000 + (uint32_t)ino,
                .nlink = 1,
                .atime = { .tv_sec = 1700000000 + (time_t)ino, .tv_nsec = 1 },
                .mtime = { .tv_sec = -5, .tv_nsec = 999999999 },
                .ctime = { .tv_sec = 42, .tv_nsec = (long)ino },
        };
}

static uint32_t add(struct tree_builder *tb, struct tree_attr a)
{
        uint32_t h;
        cr_assert_eq(tree_builder_add_inode(tb, &a, &h), 0);
        return h;
}

static void dirent(struct tree_builder *tb, uint32_t dir, const char *name, uint64_t ino)
{
        cr_assert_eq(tree_builder_add_dirent(tb, dir, name, strlen(name), ino), 0, "%s", name);
}

static struct digest dig(const char *s)
{
        struct digest d;
        digest_sha256(s, strlen(s), &d);
        return d;
}

static uint32_t chunk(struct tree_builder *tb, const char *seed, uint32_t pack, uint32_t ulen)
{
        struct tree_chunk c = {
                .addr = dig(seed),
                .xxh3 = chunk_xxh3(seed, strlen(seed)),
                .offset = 1000 + ulen,
                .pack = pack,
                .clen = ulen / 2 + 1,
                .ulen = ulen,
        };
        uint32_t idx;
        cr_assert_eq(tree_builder_add_chunk(tb, &c, &idx), 0);
        return idx;
}

static uint32_t pack(struct tree_builder *tb, const char *seed)
{
        struct digest d = dig(seed);
        uint32_t idx;
        cr_assert_eq(tree_builder_add_pack(tb, &d, &idx), 0);
        return idx;
}

static char long_target[TREE_SYMLINK_MAX + 1];

/* The full sample: every inode type, hardlinks, xattrs, holes, multi-chunk
 * files, a DEEP-level directory chain, and dead chunks/packs. reverse adds
 * everything in a different order, which must not change the image. */
static struct tree_builder *sample(bool reverse)
{
        struct tree_builder *tb = tree_builder_new(CS);
        uint32_t root, sub, f_small, f_big, f_link, f_sparse, f_empty, sym, lsym, chr, blk, fifo, sock, deep;
        uint32_t p0, p1, pdead, c_small, c_a, c_b, c_tail, c_dead, c_dup;
        static const char cap[] = { 1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0 };
        struct tree_attr a;

        cr_assert_not_null(tb);
        memset(long_target, 'x', TREE_SYMLINK_MAX);

        /* packs and chunks (the dead ones first when reversed) */
        if (reverse) {
                pdead = pack(tb, "pack-dead");
                p1 = pack(tb, "pack-1");
                p0 = pack(tb, "pack-0");
                c_dead = chunk(tb, "dead", pdead, 10);
        } else {
                p0 = pack(tb, "pack-0");
                p1 = pack(tb, "pack-1");
                pdead = pack(tb, "pack-dead");
        }
        cr_assert_eq(pack(tb, "pack-1"), p1, "pack dedup");
        c_small = chunk(tb, "small", p0, 100);
        c_a = chunk(tb, "big-a", p1, CS);
        c_b = chunk(tb, "big-b", p0, CS);
        c_tail = chunk(tb, "big-tail", p1, 500);
        if (!reverse)
                c_dead = chunk(tb, "dead", pdead, 10);
        c_dup = chunk(tb, "big-a", p0, CS);
        cr_assert_eq(c_dup, c_a, "chunk dedup");
        (void)c_dead;

        if (reverse) {
                /* inodes in descending order; the deep chain first */
                uint32_t prev = UINT32_MAX;
                for (uint32_t i = DEEP; i >= 1; i--) {
                        uint32_t h = add(tb, attr(1000 + i, S_IFDIR | 0755));
                        if (prev != UINT32_MAX)
                                dirent(tb, h, "d", 1000 + i + 1);
                        prev = h;
                }
                deep = prev;
        }
        a = attr(1, S_IFDIR | 0755);
        a.nlink = 4;
        a.size = 4096; /* normalized to 0 */
        root = add(tb, a);
        sub = add(tb, attr(10, S_IFDIR | 01777));
        f_small = add(tb, (a = attr(2, S_IFREG | 04755), a.size = 100, a));
        f_big = add(tb, (a = attr(3, S_IFREG | 0644), a.size = 3 * CS + 500, a));
        f_link = add(tb, (a = attr(4, S_IFREG | 0600), a.size = CS, a.nlink = 7, a));
        f_sparse = add(tb, (a = attr(5, S_IFREG | 0644), a.size = 2 * CS + 1, a));
        f_empty = add(tb, attr(6, S_IFREG | 0));
        sym = add(tb, attr(7, S_IFLNK | 0777));
        lsym = add(tb, attr(8, S_IFLNK | 0777));
        chr = add(tb, (a = attr(11, S_IFCHR | 0666), a.rdev = makedev(1, 3), a));
        blk = add(tb, (a = attr(12, S_IFBLK | 0660), a.rdev = makedev(8, 1), a));
        fifo = add(tb, (a = attr(13, S_IFIFO | 0644), a.rdev = 99 /* dropped */, a));
        sock = add(tb, attr(14, S_IFSOCK | 0755));
        if (!reverse) {
                uint32_t prev = UINT32_MAX;
                deep = UINT32_MAX;
                for (uint32_t i = 1; i <= DEEP; i++) {
                        uint32_t h = add(tb, attr(1000 + i, S_IFDIR | 0755));
                        if (prev != UINT32_MAX)
                                dirent(tb, prev, "d", 1000 + i);
                        else
                                deep = h;
                        prev = h;
                }
        }

        /* names, added out of order */
        dirent(tb, root, "sub", 10);
        dirent(tb, root, "small", 2);
        dirent(tb, root, "big", 3);
        dirent(tb, root, "link1", 4);
        dirent(tb, sub, "link2", 4);
        dirent(tb, sub, "link3", 4);
        dirent(tb, root, "sparse", 5);
        dirent(tb, root, "empty", 6);
        dirent(tb, root, "sym", 7);
        dirent(tb, sub, "long", 8);
        dirent(tb, sub, "chr", 11);
        dirent(tb, sub, "blk", 12);
        dirent(tb, sub, "fifo", 13);
        dirent(tb, sub, "sock", 14);
        dirent(tb, root, "deep", 1001);
        dirent(tb, root, "a", 6); /* a second link to the empty file */
        (void)deep;

        cr_assert_eq(tree_builder_set_symlink(tb, sym, "small", 5), 0);
        cr_assert_eq(tree_builder_set_symlink(tb, lsym, long_target, TREE_SYMLINK_MAX), 0);

        cr_assert_eq(tree_builder_add_xattr(tb, f_small, "user.b", "2", 1), 0);
        cr_assert_eq(tree_builder_add_xattr(tb, f_small, "security.capability", cap, sizeof cap), 0);
        cr_assert_eq(tree_builder_add_xattr(tb, f_small, "user.a", "1", 1), 0);
        cr_assert_eq(tree_builder_add_xattr(tb, f_small, "user.empty", NULL, 0), 0);
        cr_assert_eq(tree_builder_add_xattr(tb, root, "trusted.x", "root", 4), 0);
        cr_assert_eq(tree_builder_add_xattr(tb, sym, "user.onlink", "v", 1), 0);

        {
                uint32_t small[] = { c_small };
                uint32_t big[] = { c_a, TREE_HOLE, c_b, c_tail };
                uint32_t link[] = { c_a };
                uint32_t sparse[] = { TREE_HOLE, TREE_HOLE, TREE_HOLE };
                uint32_t wrong[] = { c_b };
                cr_assert_eq(tree_builder_set_chunks(tb, f_small, small, 1), 0);
                cr_assert_eq(tree_builder_set_chunks(tb, f_big, wrong, 1), 0); /* replaced below */
                cr_assert_eq(tree_builder_set_chunks(tb, f_big, big, 4), 0);
                cr_assert_eq(tree_builder_set_chunks(tb, f_link, link, 1), 0);
                cr_assert_eq(tree_builder_set_chunks(tb, f_sparse, sparse, 3), 0);
                cr_assert_eq(tree_builder_set_chunks(tb, f_empty, NULL, 0), 0);
        }
        cr_assert_eq(tree_builder_add_extent(tb, f_small, 0, 100), 0);
        if (reverse) {
                cr_assert_eq(tree_builder_add_extent(tb, f_link, 0, CS), 0);
                cr_assert_eq(tree_builder_add_extent(tb, f_big, 0, 4096), 0);
                cr_assert_eq(tree_builder_add_extent(tb, f_big, 8192, CS - 8192), 0);
                cr_assert_eq(tree_builder_add_extent(tb, f_big, 2 * CS + 4096, CS + 500 - 4096), 0);
        } else {
                cr_assert_eq(tree_builder_add_extent(tb, f_big, 0, 4096), 0);
                cr_assert_eq(tree_builder_add_extent(tb, f_big, 8192, CS - 8192), 0);
                cr_assert_eq(tree_builder_add_extent(tb, f_link, 0, CS), 0);
                cr_assert_eq(tree_builder_add_extent(tb, f_big, 2 * CS + 4096, CS + 500 - 4096), 0);
        }
        (void)chr;
        (void)blk;
        (void)fifo;
        (void)sock;
        tree_builder_set_next_ino(tb, 20000);
        return tb;
}

static struct tree *load_sample(struct digest *ret_digest, void **ret_blob, size_t *ret_len)
{
        struct tree_builder *tb = sample(false);
        struct tree *t = NULL;
        struct digest d, d2;
        void *blob;
        size_t len;

        cr_assert_eq(tree_builder_finish(tb, 3, &blob, &len, &d), 0);
        digest_sha256(blob, len, &d2);
        cr_assert(digest_eq(&d, &d2));
        cr_assert_eq(tree_load(blob, len, &d, &t), 0);
        tree_builder_free(tb);
        if (ret_digest)
                *ret_digest = d;
        if (ret_blob) {
                *ret_blob = blob;
                *ret_len = len;
        } else
                free(blob);
        return t;
}

static struct tree_inode path(const struct tree *t, const char *p)
{
        struct tree_inode i;
        cr_assert_eq(tree_path_lookup(t, p, &i), 0, "%s", p);
        return i;
}

/* ---- round trip ---- */

Test(tree, round_trip_attrs)
{
        struct tree *t = load_sample(NULL, NULL, NULL);
        struct tree_inode i;

        cr_assert_eq(tree_chunk_size(t), CS);
        cr_assert_eq(tree_next_ino(t), 20000);
        cr_assert_eq(tree_n_inodes(t), 13 + DEEP);

        i = path(t, "");
        cr_assert_eq(i.attr.ino, 1);
        cr_assert_eq(i.attr.mode, S_IFDIR | 0755);
        cr_assert_eq(i.attr.nlink, 4, "dir nlink kept");
        cr_assert_eq(i.attr.size, 0, "dir size normalized");

        i = path(t, "small");
        cr_assert_eq(i.attr.ino, 2);
        cr_assert_eq(i.attr.mode, S_IFREG | 04755);
        cr_assert_eq(i.attr.uid, 1002);
        cr_assert_eq(i.attr.gid, 2002);
        cr_assert_eq(i.attr.size, 100);
        cr_assert_eq(i.attr.nlink, 1);
        cr_assert_eq(i.attr.atime.tv_sec, 1700000002);
        cr_assert_eq(i.attr.atime.tv_nsec, 1);
        cr_assert_eq(i.attr.mtime.tv_sec, -5);
        cr_assert_eq(i.attr.mtime.tv_nsec, 999999999);
        cr_assert_eq(i.attr.ctime.tv_sec, 42);
        cr_assert_eq(i.attr.ctime.tv_nsec, 2);

        i = path(t, "sub/chr");
        cr_assert_eq(i.attr.mode, S_IFCHR | 0666);
        cr_assert_eq(i.attr.rdev, makedev(1, 3));
        i = path(t, "sub/blk");
        cr_assert_eq(i.attr.mode, S_IFBLK | 0660);
        cr_assert_eq(i.attr.rdev, makedev(8, 1));
        i = path(t, "sub/fifo");
        cr_assert_eq(i.attr.mode, S_IFIFO | 0644);
        cr_assert_eq(i.attr.rdev, 0, "rdev dropped on a fifo");
        i = path(t, "sub/sock");
        cr_assert_eq(i.attr.mode, S_IFSOCK | 0755);
        i = path(t, "sub");
        cr_assert_eq(i.attr.mode, S_IFDIR | 01777);

        /* hardlinks: nlink is the reference count */
        cr_assert_eq(path(t, "link1").attr.ino, 4);
        cr_assert_eq(path(t, "sub/link2").attr.ino, 4);
        cr_assert_eq(path(t, "sub/link3").attr.nlink, 3);
        cr_assert_eq(path(t, "a").attr.ino, 6);
        cr_assert_eq(path(t, "empty").attr.nlink, 2);

        /* by number and by position */
        cr_assert_eq(tree_inode(t, 13, &i), 0);
        cr_assert_eq(i.attr.mode & S_IFMT, S_IFIFO);
        cr_assert_eq(tree_inode(t, 9, &i), -ENOENT);
        cr_assert_eq(tree_inode(t, 0, &i), -ENOENT);
        cr_assert_eq(tree_inode(t, UINT64_MAX, &i), -ENOENT);
        for (uint32_t k = 0, prev = 0; k < tree_n_inodes(t); k++) {
                cr_assert_eq(tree_inode_at(t, k, &i), 0);
                cr_assert_eq(i.idx, k);
                cr_assert_gt(i.attr.ino, prev);
                prev = (uint32_t)i.attr.ino;
        }
        cr_assert_eq(tree_inode_at(t, tree_n_inodes(t), &i), -ENOENT);
        tree_free(t);
}

Test(tree, round_trip_dirs)
{
        struct tree *t = load_sample(NULL, NULL, NULL);
        struct tree_inode root = path(t, ""), sub = path(t, "sub"), f = path(t, "small");
        static const char *const want[] = { "a", "big", "deep", "empty", "link1", "small", "sparse", "sub", "sym" };
        const char *name;
        size_t len;
        uint64_t ino;

        cr_assert_eq(tree_dir_count(t, &root), ELEMENTSOF(want));
        for (uint32_t k = 0; k < ELEMENTSOF(want); k++) {
                struct tree_inode c;
                cr_assert_eq(tree_dirent(t, &root, k, &name, &len, &ino), 0);
                cr_assert_str_eq(name, want[k]);
                cr_assert_eq(len, strlen(want[k]));
                cr_assert_eq(tree_lookup(t, &root, name, len, &ino), 0);
                c = path(t, want[k]);
                cr_assert_eq(c.attr.ino, ino);
        }
        cr_assert_eq(tree_dirent(t, &root, ELEMENTSOF(want), &name, &len, &ino), -ENOENT);
        cr_assert_eq(tree_dir_count(t, &sub), 7);
        cr_assert_eq(tree_dir_count(t, &f), 0);
        cr_assert_eq(tree_dirent(t, &f, 0, &name, &len, &ino), -ENOTDIR);

        cr_assert_eq(tree_lookup(t, &root, "sub", 3, &ino), 0);
        cr_assert_eq(ino, 10);
        cr_assert_eq(tree_lookup(t, &root, "subx", 3, &ino), 0, "length counts, not NUL");
        cr_assert_eq(tree_lookup(t, &root, "su", 2, &ino), -ENOENT);
        cr_assert_eq(tree_lookup(t, &root, "subb", 4, &ino), -ENOENT);
        cr_assert_eq(tree_lookup(t, &root, "0", 1, &ino), -ENOENT);
        cr_assert_eq(tree_lookup(t, &root, "zzz", 3, &ino), -ENOENT);
        cr_assert_eq(tree_lookup(t, &f, "a", 1, &ino), -ENOTDIR);

        /* path lookup */
        {
                struct tree_inode i;
                cr_assert_eq(path(t, "//sub///link2/").attr.ino, 4);
                cr_assert_eq(path(t, "/").attr.ino, 1);
                cr_assert_eq(tree_path_lookup(t, "nope", &i), -ENOENT);
                cr_assert_eq(tree_path_lookup(t, "small/x", &i), -ENOTDIR);
                cr_assert_eq(tree_path_lookup(t, "sub/../small", &i), -ENOENT);
        }

        /* the deep chain */
        {
                size_t plen = 5 + 2 * (DEEP - 1) + 1;
                char *p = malloc(plen), *q = p;
                struct tree_inode i;
                q += sprintf(q, "deep");
                for (uint32_t k = 1; k < DEEP; k++)
                        q += sprintf(q, "/d");
                i = path(t, p);
                cr_assert_eq(i.attr.ino, 1000 + DEEP);
                cr_assert_eq(tree_dir_count(t, &i), 0);
                free(p);
        }
        tree_free(t);
}

Test(tree, round_trip_symlinks_xattrs)
{
        struct tree *t = load_sample(NULL, NULL, NULL);
        struct tree_inode s = path(t, "sym"), l = path(t, "sub/long"), f = path(t, "small"), root = path(t, "");
        static const char cap[] = { 1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0 };
        static const char *const names[] = { "security.capability", "user.a", "user.b", "user.empty" };
        const char *target, *name;
        const void *value;
        size_t len;

        cr_assert_eq(tree_symlink(t, &s, &target, &len), 0);
        cr_assert_str_eq(target, "small");
        cr_assert_eq(len, 5);
        cr_assert_eq(s.attr.size, 5);
        cr_assert_eq(tree_symlink(t, &l, &target, &len), 0);
        cr_assert_eq(len, TREE_SYMLINK_MAX);
        cr_assert_eq(strlen(target), TREE_SYMLINK_MAX);
        cr_assert_eq(memcmp(target, long_target, TREE_SYMLINK_MAX), 0);
        cr_assert_eq(tree_symlink(t, &f, &target, &len), -EINVAL);

        cr_assert_eq(tree_xattr_count(t, &f), 4);
        for (uint32_t k = 0; k < 4; k++) {
                cr_assert_eq(tree_xattr(t, &f, k, &name, &value, &len), 0);
                cr_assert_str_eq(name, names[k]);
        }
        cr_assert_eq(tree_xattr(t, &f, 4, &name, &value, &len), -ENOENT);
        cr_assert_eq(tree_xattr_get(t, &f, "security.capability", &value, &len), 0);
        cr_assert_eq(len, sizeof cap);
        cr_assert_eq(memcmp(value, cap, sizeof cap), 0);
        cr_assert_eq(tree_xattr_get(t, &f, "user.b", &value, &len), 0);
        cr_assert_eq(len, 1);
        cr_assert_eq(memcmp(value, "2", 2), 0, "value followed by NUL");
        cr_assert_eq(tree_xattr_get(t, &f, "user.empty", &value, &len), 0);
        cr_assert_eq(len, 0);
        cr_assert_eq(tree_xattr_get(t, &f, "user.c", &value, &len), -ENODATA);
        cr_assert_eq(tree_xattr_get(t, &f, "user", &value, &len), -ENODATA);
        cr_assert_eq(tree_xattr_get(t, &root, "trusted.x", &value, &len), 0);
        cr_assert_eq(len, 4);
        cr_assert_eq(tree_xattr_get(t, &s, "user.onlink", &value, &len), 0);
        cr_assert_eq(tree_xattr_count(t, &l), 0);
        cr_assert_eq(tree_xattr_get(t, &l, "user.a", &value, &len), -ENODATA);
        tree_free(t);
}

Test(tree, round_trip_chunks)
{
        struct tree *t = load_sample(NULL, NULL, NULL);
        struct tree_inode big = path(t, "big"), sparse = path(t, "sparse"), empty = path(t, "empty"),
                          link = path(t, "link1"), small = path(t, "small"), sub = path(t, "sub");
        struct tree_chunk c;
        struct digest d;
        uint32_t idx;
        uint64_t off, len;

        /* dead chunk and pack dropped, dup merged */
        cr_assert_eq(tree_n_chunks(t), 4);
        cr_assert_eq(tree_n_packs(t), 2);
        d = dig("dead");
        cr_assert_eq(tree_chunk_find(t, &d, &idx), -ENOENT);
        cr_assert_null(tree_pack(t, 2));
        cr_assert_eq(tree_chunk(t, 4, &c), -ENOENT);

        /* chunks sorted by address, each in the pack it was added with */
        for (uint32_t k = 1; k < tree_n_chunks(t); k++) {
                struct tree_chunk a, b;
                cr_assert_eq(tree_chunk(t, k - 1, &a), 0);
                cr_assert_eq(tree_chunk(t, k, &b), 0);
                cr_assert_lt(digest_cmp(&a.addr, &b.addr), 0);
        }
        cr_assert_lt(digest_cmp(tree_pack(t, 0), tree_pack(t, 1)), 0);

        cr_assert_eq(tree_file_nchunks(t, &big), 4);
        cr_assert_eq(tree_file_chunk(t, &big, 1), TREE_HOLE);
        cr_assert_eq(tree_file_chunk(t, &big, 4), TREE_HOLE, "out of range");
        {
                static const char *const seeds[] = { "big-a", NULL, "big-b", "big-tail" };
                static const char *const packs[] = { "pack-1", NULL, "pack-0", "pack-1" };
                static const uint32_t ulens[] = { CS, 0, CS, 500 };
                for (uint32_t k = 0; k < 4; k++) {
                        struct digest pd;
                        if (!seeds[k])
                                continue;
                        idx = tree_file_chunk(t, &big, k);
                        cr_assert_eq(tree_chunk(t, idx, &c), 0);
                        d = dig(seeds[k]);
                        cr_assert(digest_eq(&c.addr, &d), "chunk %u", k);
                        cr_assert_eq(c.ulen, ulens[k]);
                        cr_assert_eq(c.clen, ulens[k] / 2 + 1);
                        cr_assert_eq(c.offset, 1000 + ulens[k]);
                        cr_assert_eq(c.xxh3, chunk_xxh3(seeds[k], strlen(seeds[k])));
                        pd = dig(packs[k]);
                        cr_assert(digest_eq(tree_pack(t, c.pack), &pd), "chunk %u pack", k);
                        cr_assert_eq(tree_chunk_find(t, &d, &idx), 0);
                        cr_assert_eq(idx, tree_file_chunk(t, &big, k));
                }
        }
        cr_assert_eq(tree_file_chunk(t, &link, 0), tree_file_chunk(t, &big, 0), "shared chunk");

        cr_assert_eq(tree_extent_count(t, &big), 3);
        tree_extent(t, &big, 0, &off, &len);
        cr_assert(off == 0 && len == 4096);
        tree_extent(t, &big, 1, &off, &len);
        cr_assert(off == 8192 && len == CS - 8192);
        tree_extent(t, &big, 2, &off, &len);
        cr_assert(off == 2 * CS + 4096 && len == CS + 500 - 4096);
        tree_extent(t, &big, 3, &off, &len);
        cr_assert(off == 0 && len == 0);

        cr_assert_eq(tree_file_nchunks(t, &sparse), 3);
        for (uint32_t k = 0; k < 3; k++)
                cr_assert_eq(tree_file_chunk(t, &sparse, k), TREE_HOLE);
        cr_assert_eq(tree_extent_count(t, &sparse), 0);
        cr_assert_eq(tree_file_nchunks(t, &empty), 0);
        cr_assert_eq(tree_file_nchunks(t, &small), 1);
        cr_assert_eq(tree_file_nchunks(t, &sub), 0);
        cr_assert_eq(tree_extent_count(t, &sub), 0);
        tree_free(t);
}

Test(tree, deterministic)
{
        struct tree_builder *a = sample(false), *b = sample(true);
        void *ba, *bb;
        size_t la, lb;
        struct digest da, db;

        cr_assert_eq(tree_builder_finish(a, 3, &ba, &la, &da), 0);
        cr_assert_eq(tree_builder_finish(b, 3, &bb, &lb, &db), 0);
        cr_assert(digest_eq(&da, &db), "same tree, same image, whatever the order of adds");
        free(bb);
        /* finish() twice gives the same again */
        cr_assert_eq(tree_builder_finish(b, 3, &bb, &lb, &db), 0);
        cr_assert(digest_eq(&da, &db));
        free(ba);
        free(bb);
        tree_builder_free(a);
        tree_builder_free(b);
}

Test(tree, builder_rejects)
{
        struct tree_builder *tb = tree_builder_new(CS);
        struct tree_attr a = attr(1, S_IFDIR | 0755);
        uint32_t h, f, idx;
        struct tree_chunk c = { .ulen = CS + 1, .clen = 10 };
        void *blob;
        size_t len;

        cr_assert_null(tree_builder_new(12345));
        cr_assert_null(tree_builder_new(CHUNK_SIZE_MAX * 2));
        cr_assert_eq(tree_builder_finish(tb, 3, &blob, &len, NULL), -EINVAL, "empty");
        h = add(tb, a);
        f = add(tb, (a = attr(2, S_IFREG | 0644), a));
        a = attr(3, 0170000 | 0644);
        cr_assert_eq(tree_builder_add_inode(tb, &a, &idx), -EINVAL, "bad type");
        a = attr(0, S_IFREG);
        cr_assert_eq(tree_builder_add_inode(tb, &a, &idx), -EINVAL, "ino 0");
        a = attr(3, S_IFREG);
        a.mtime.tv_nsec = 1000000000;
        cr_assert_eq(tree_builder_add_inode(tb, &a, &idx), -EINVAL, "nsec");
        cr_assert_eq(tree_builder_add_dirent(tb, h, "", 0, 2), -EINVAL);
        cr_assert_eq(tree_builder_add_dirent(tb, h, ".", 1, 2), -EINVAL);
        cr_assert_eq(tree_builder_add_dirent(tb, h, "..", 2, 2), -EINVAL);
        cr_assert_eq(tree_builder_add_dirent(tb, h, "a/b", 3, 2), -EINVAL);
        cr_assert_eq(tree_builder_add_dirent(tb, h, "a\0b", 3, 2), -EINVAL);
        cr_assert_eq(tree_builder_add_dirent(tb, f, "x", 1, 2), -EINVAL, "not a dir");
        cr_assert_eq(tree_builder_add_chunk(tb, &c, &idx), -EINVAL, "no pack / ulen");
        cr_assert_eq(tree_builder_set_symlink(tb, f, "x", 1), -EINVAL);
        cr_assert_eq(tree_builder_add_extent(tb, f, 0, 0), -EINVAL);
        cr_assert_eq(tree_builder_add_xattr(tb, f, "", "v", 1), -EINVAL);
        {
                uint32_t bad[] = { 5 };
                cr_assert_eq(tree_builder_set_chunks(tb, f, bad, 1), -EINVAL, "unknown chunk");
        }
        /* the self-check in finish(): a hole where extents say data, and
         * data where they say hole */
        {
                struct tree_builder *b2 = tree_builder_new(CS);
                uint32_t r2, f2, p2, c2, hole = TREE_HOLE;
                r2 = add(b2, attr(1, S_IFDIR | 0755));
                f2 = add(b2, (a = attr(2, S_IFREG | 0644), a.size = 100, a));
                dirent(b2, r2, "f", 2);
                p2 = pack(b2, "p");
                c2 = chunk(b2, "c", p2, 100);
                cr_assert_eq(tree_builder_set_chunks(b2, f2, &hole, 1), 0);
                cr_assert_eq(tree_builder_add_extent(b2, f2, 50, 1), 0);
                cr_assert_eq(tree_builder_finish(b2, 3, &blob, &len, NULL), -EINVAL);
                cr_assert_eq(tree_builder_set_chunks(b2, f2, &c2, 1), 0);
                cr_assert_eq(tree_builder_finish(b2, 3, &blob, &len, NULL), 0, "control");
                free(blob);
                tree_builder_free(b2);
                b2 = tree_builder_new(CS);
                r2 = add(b2, attr(1, S_IFDIR | 0755));
                f2 = add(b2, (a = attr(2, S_IFREG | 0644), a.size = 100, a));
                dirent(b2, r2, "f", 2);
                p2 = pack(b2, "p");
                c2 = chunk(b2, "c", p2, 100);
                cr_assert_eq(tree_builder_set_chunks(b2, f2, &c2, 1), 0);
                cr_assert_eq(tree_builder_finish(b2, 3, &blob, &len, NULL), -EINVAL);
                tree_builder_free(b2);
        }
        /* a file in no directory, a dangling entry: refused at finish */
        cr_assert_eq(tree_builder_finish(tb, 3, &blob, &len, NULL), -EINVAL);
        dirent(tb, h, "f", 2);
        dirent(tb, h, "g", 77);
        cr_assert_eq(tree_builder_finish(tb, 3, &blob, &len, NULL), -EINVAL);
        tree_builder_free(tb);
}

/* ---- corruption ---- */

/* The small tree every corruption starts from:
 *   1 /        aaa -> 2 (dir), bbb -> 3, ccc -> 4 (symlink), ddd -> 3
 *   2 /aaa     xxx -> 5 (fifo)
 *   3 file     size 100: one chunk, extents [0,10) [20,30), xattr user.k=v
 *   4 symlink  "target"
 *   5 fifo */
struct img {
        uint8_t *raw;
        size_t len;
        uint64_t n[8]; /* packs chunks inodes dirents fchunks extents xattrs strings */
        size_t packs, chunks, inodes, dirents, fchunks, extents, xattrs, strings;
};

/* raw_size(): the image's size: the content sizes of blob's frames, summed */
static unsigned long long raw_size(const void *blob, size_t len)
{
        unsigned long long sum = 0;
        for (size_t off = 0, n; off < len; off += n) {
                n = ZSTD_findFrameCompressedSize((const uint8_t *)blob + off, len - off);
                cr_assert(!ZSTD_isError(n));
                sum += ZSTD_getFrameContentSize((const uint8_t *)blob + off, n);
        }
        return sum;
}

static void small_blob(void **ret, size_t *ret_len)
{
        struct tree_builder *tb = tree_builder_new(CS);
        uint32_t root, d, f, s, p, c, chunks[1];
        struct tree_attr a;

        root = add(tb, attr(1, S_IFDIR | 0755));
        d = add(tb, attr(2, S_IFDIR | 0755));
        f = add(tb, (a = attr(3, S_IFREG | 0644), a.size = 100, a));
        s = add(tb, attr(4, S_IFLNK | 0777));
        add(tb, attr(5, S_IFIFO | 0644));
        dirent(tb, root, "aaa", 2);
        dirent(tb, root, "bbb", 3);
        dirent(tb, root, "ccc", 4);
        dirent(tb, root, "ddd", 3);
        dirent(tb, d, "xxx", 5);
        p = pack(tb, "p");
        c = chunk(tb, "c", p, 100);
        chunks[0] = c;
        cr_assert_eq(tree_builder_set_chunks(tb, f, chunks, 1), 0);
        cr_assert_eq(tree_builder_add_extent(tb, f, 0, 10), 0);
        cr_assert_eq(tree_builder_add_extent(tb, f, 20, 10), 0);
        cr_assert_eq(tree_builder_add_xattr(tb, f, "user.k", "v", 1), 0);
        cr_assert_eq(tree_builder_set_symlink(tb, s, "target", 6), 0);
        cr_assert_eq(tree_builder_finish(tb, 3, ret, ret_len, NULL), 0);
        tree_builder_free(tb);
}

static uint32_t g32(const uint8_t *p)
{
        uint32_t v;
        memcpy(&v, p, 4);
        return le32toh(v);
}
static uint64_t g64(const uint8_t *p)
{
        uint64_t v;
        memcpy(&v, p, 8);
        return le64toh(v);
}
static void p32(uint8_t *p, uint32_t v)
{
        v = htole32(v);
        memcpy(p, &v, 4);
}
static void p64(uint8_t *p, uint64_t v)
{
        v = htole64(v);
        memcpy(p, &v, 8);
}

/* img_new(): the small tree's raw image, its sections located independently
 * of tree.c, and checked to parse. */
static struct img img_new(void)
{
        struct img m = {};
        void *blob;
        size_t len, off;
        unsigned long long n;
        struct tree *t = NULL;
        static const size_t rec[] = { 32, 64, 104, 16, 4, 16, 16, 1 };
        size_t *secs[] = { &m.packs, &m.chunks, &m.inodes, &m.dirents, &m.fchunks, &m.extents, &m.xattrs,
                           &m.strings };

        small_blob(&blob, &len);
        n = raw_size(blob, len); /* the header's frame and the rest */
        cr_assert_lt(n, 1u << 20);
        m.raw = malloc(n);
        m.len = ZSTD_decompress(m.raw, n, blob, len);
        cr_assert_eq(m.len, n);
        free(blob);

        off = sizeof(struct tree_hdr);
        for (int i = 0; i < 8; i++) {
                m.n[i] = g64(m.raw + offsetof(struct tree_hdr, n_packs) + 8 * i);
                if (i == 5)
                        off = (off + 7) & ~(size_t)7;
                *secs[i] = off;
                off += m.n[i] * rec[i];
        }
        cr_assert_eq(off, m.len);
        cr_assert_eq(m.n[2], 5);
        cr_assert_eq(m.n[3], 5);
        cr_assert_eq(m.n[5], 2);
        cr_assert_eq(tree_parse(m.raw, m.len, &t), 0);
        tree_free(t);
        return m;
}

static uint8_t *inode(struct img *m, uint32_t i) { return m->raw + m->inodes + i * 104; }
static uint8_t *dent(struct img *m, uint32_t i) { return m->raw + m->dirents + i * 16; }
#define IF(field) offsetof(struct tree_inode_rec, field)
#define DF(field) offsetof(struct tree_dirent_rec, field)

/* expect_bad(): rejected, with one log line that names the problem. */
static void expect_line(const char *what)
{
        char line[1024];
        cr_assert_not_null(fgets(line, sizeof line, cr_get_redirected_stderr()));
        cr_assert_not_null(strstr(line, what), "logged \"%s\", expected \"%s\"", line, what);
}

static void expect_bad(struct img *m, const char *what)
{
        struct tree *t = NULL;
        cr_assert_eq(tree_parse(m->raw, m->len, &t), -EBADMSG);
        cr_assert_null(t);
        expect_line(what);
        free(m->raw);
}

TestSuite(tree_bad, .init = cr_redirect_stderr);
TestSuite(tree_load, .init = cr_redirect_stderr);

static void set_name(struct img *m, uint32_t entry, const char *name, size_t len)
{
        uint8_t *d = dent(m, entry);
        /* the names are 3 bytes: room for a shorter one and its NUL */
        memcpy(m->raw + m->strings + g32(d + DF(name_off)), name, len);
        m->raw[m->strings + g32(d + DF(name_off)) + len] = 0;
        p32(d + DF(name_len), (uint32_t)len);
}

Test(tree_bad, name_empty) { struct img m = img_new(); set_name(&m, 0, "", 0); expect_bad(&m, "empty name"); }
Test(tree_bad, name_dot) { struct img m = img_new(); set_name(&m, 0, ".", 1); expect_bad(&m, "name is \".\""); }
Test(tree_bad, name_dotdot) { struct img m = img_new(); set_name(&m, 0, "..", 2); expect_bad(&m, "name is \"..\""); }
Test(tree_bad, name_slash) { struct img m = img_new(); set_name(&m, 0, "a/a", 3); expect_bad(&m, "contains '/'"); }
Test(tree_bad, name_nul) { struct img m = img_new(); set_name(&m, 0, "a\0a", 3); expect_bad(&m, "name contains NUL"); }
Test(tree_bad, name_too_long)
{
        struct img m = img_new();
        p32(dent(&m, 0) + DF(name_len), 256);
        expect_bad(&m, "longer than 255");
}

Test(tree_bad, name_no_nul)
{
        /* "aaa" followed by "bbb": drop the NUL between them */
        struct img m = img_new();
        p32(dent(&m, 0) + DF(name_len), 4);
        m.raw[m.strings + g32(dent(&m, 0) + DF(name_off)) + 3] = 'a';
        expect_bad(&m, "not followed by NUL");
}

Test(tree_bad, names_unsorted)
{
        struct img m = img_new();
        uint32_t a = g32(dent(&m, 0) + DF(name_off)), b = g32(dent(&m, 1) + DF(name_off));
        uint64_t ia = g64(dent(&m, 0) + DF(ino)), ib = g64(dent(&m, 1) + DF(ino));
        p32(dent(&m, 0) + DF(name_off), b);
        p32(dent(&m, 1) + DF(name_off), a);
        p64(dent(&m, 0) + DF(ino), ib);
        p64(dent(&m, 1) + DF(ino), ia);
        expect_bad(&m, "not sorted or not unique");
}

Test(tree_bad, names_duplicate)
{
        struct img m = img_new();
        p32(dent(&m, 1) + DF(name_off), g32(dent(&m, 0) + DF(name_off)));
        expect_bad(&m, "not sorted or not unique");
}

Test(tree_bad, dir_cycle)
{
        /* / aaa -> fifo, /aaa xxx -> itself: every count right, but a loop */
        struct img m = img_new();
        p64(dent(&m, 0) + DF(ino), 5);
        p64(dent(&m, 4) + DF(ino), 2);
        expect_bad(&m, "cycle");
}

Test(tree_bad, dir_twice)
{
        struct img m = img_new();
        p64(dent(&m, 3) + DF(ino), 2);
        expect_bad(&m, "reached twice");
}

Test(tree_bad, root_referenced)
{
        struct img m = img_new();
        p64(dent(&m, 4) + DF(ino), 1);
        p32(inode(&m, 4) + IF(nlink), 1);
        expect_bad(&m, "refers to the root");
}

Test(tree_bad, dangling_ino)
{
        struct img m = img_new();
        p64(dent(&m, 4) + DF(ino), 6);
        expect_bad(&m, "no inode 6");
}

Test(tree_bad, nlink_mismatch)
{
        struct img m = img_new();
        p32(inode(&m, 2) + IF(nlink), 1);
        expect_bad(&m, "nlink 1 but 2 references");
}

Test(tree_bad, unreferenced_inode)
{
        /* the fifo's only entry renamed to the file: fifo has nlink 1, 0 refs */
        struct img m = img_new();
        p64(dent(&m, 4) + DF(ino), 3);
        p32(inode(&m, 2) + IF(nlink), 3);
        expect_bad(&m, "nlink 1 but 0 references");
}

Test(tree_bad, nlink_zero)
{
        /* the fifo in no directory and nlink 0: references agree, still bad */
        struct img m = img_new();
        p64(dent(&m, 4) + DF(ino), 3);
        p32(inode(&m, 2) + IF(nlink), 3);
        p32(inode(&m, 4) + IF(nlink), 0);
        expect_bad(&m, "inode 5: nlink 0");
        m = img_new();
        p32(inode(&m, 0) + IF(nlink), 0);
        expect_bad(&m, "inode 1: nlink 0");
}

/* insert(): len bytes of 0xff at off, and count field i one higher. */
static void insert(struct img *m, size_t off, size_t len, int i)
{
        uint8_t *r = malloc(m->len + len);
        memcpy(r, m->raw, off);
        memset(r + off, 0xff, len);
        memcpy(r + off + len, m->raw + off, m->len - off);
        free(m->raw);
        m->raw = r;
        m->len += len;
        p64(r + offsetof(struct tree_hdr, n_packs) + 8 * i, m->n[i] + 1);
}

Test(tree_bad, dead_chunk_or_pack)
{
        struct img m = img_new();

        /* a last chunk (address ff..ff) in pack 0, used by no file */
        insert(&m, m.inodes, 64, 1);
        p32(m.raw + m.inodes + offsetof(struct tree_chunk_rec, pack), 0);
        p32(m.raw + m.inodes + offsetof(struct tree_chunk_rec, ulen), 100);
        p32(m.raw + m.inodes + offsetof(struct tree_chunk_rec, clen), 100);
        p32(m.raw + m.inodes + offsetof(struct tree_chunk_rec, reserved), 0);
        p64(m.raw + m.inodes + offsetof(struct tree_chunk_rec, offset), 0);
        expect_bad(&m, "chunk 1: not used");
        /* a last pack (digest ff..ff) used by no chunk */
        m = img_new();
        insert(&m, m.chunks, 32, 0);
        expect_bad(&m, "pack 1: not used");
}

Test(tree_bad, no_root)
{
        struct img m = img_new();
        p32(inode(&m, 0) + IF(mode), S_IFREG | 0644);
        expect_bad(&m, "no root directory");
}

Test(tree_bad, ino_beyond_next)
{
        struct img m = img_new();
        p64(m.raw + offsetof(struct tree_hdr, next_ino), 5);
        expect_bad(&m, "number out of range");
}

Test(tree_bad, inodes_unsorted)
{
        struct img m = img_new();
        p64(inode(&m, 3) + IF(ino), 3); /* a second inode 3 */
        expect_bad(&m, "inodes not sorted");
}

Test(tree_bad, bad_mode)
{
        struct img m = img_new();
        p32(inode(&m, 4) + IF(mode), 0170000 | 0644);
        expect_bad(&m, "invalid mode");
        m = img_new();
        p32(inode(&m, 4) + IF(mode), S_IFIFO | 0200000);
        expect_bad(&m, "invalid mode");
}

Test(tree_bad, bad_nsec)
{
        struct img m = img_new();
        p32(inode(&m, 1) + IF(ctime_nsec), 1000000000);
        expect_bad(&m, "nanoseconds");
}

Test(tree_bad, reserved)
{
        struct img m = img_new();
        p32(inode(&m, 1) + IF(reserved), 1);
        expect_bad(&m, "inode 2: reserved");
        m = img_new();
        p32(m.raw + m.chunks + offsetof(struct tree_chunk_rec, reserved), 1);
        expect_bad(&m, "chunk 0: reserved");
}

Test(tree_bad, offsets_out_of_range)
{
        struct img m = img_new();
        p32(dent(&m, 2) + DF(name_off), (uint32_t)m.n[7]);
        expect_bad(&m, "entry 2: name out of range");
        m = img_new();
        p32(dent(&m, 2) + DF(name_off), UINT32_MAX);
        expect_bad(&m, "entry 2: name out of range");
        m = img_new();
        p32(m.raw + m.xattrs + offsetof(struct tree_xattr_rec, value_off), (uint32_t)m.n[7] - 1);
        p32(m.raw + m.xattrs + offsetof(struct tree_xattr_rec, value_len), 1);
        expect_bad(&m, "xattr 0: value out of range");
        m = img_new();
        p32(inode(&m, 3) + IF(data_first), (uint32_t)m.n[7] - 3);
        expect_bad(&m, "symlink target out of range");
        m = img_new();
        p32(inode(&m, 2) + IF(xattr_count), 2);
        expect_bad(&m, "xattrs out of range");
        m = img_new();
        p32(inode(&m, 0) + IF(data_count), 6);
        expect_bad(&m, "entries out of range");
        m = img_new();
        p32(m.raw + m.fchunks, 1); /* chunk index 1 of 1 */
        expect_bad(&m, "index 1 out of range");
        m = img_new();
        p32(m.raw + m.chunks + offsetof(struct tree_chunk_rec, pack), 1);
        expect_bad(&m, "pack 1 out of range");
        m = img_new();
        p64(m.raw + m.chunks + offsetof(struct tree_chunk_rec, offset), UINT64_MAX - 10);
        expect_bad(&m, "chunk 0: offset out of range");
}

Test(tree_bad, absurd_counts)
{
        for (int i = 0; i < 8; i++) {
                struct img m = img_new();
                p64(m.raw + offsetof(struct tree_hdr, n_packs) + 8 * i, 1ull << 60);
                expect_bad(&m, "section");
                m = img_new();
                p64(m.raw + offsetof(struct tree_hdr, n_packs) + 8 * i, m.n[i] + 1);
                /* one more fchunk fits in the padding: a record nobody owns */
                expect_bad(&m, i == 4 ? "records not owned" : "section");
                m = img_new();
                p64(m.raw + offsetof(struct tree_hdr, n_packs) + 8 * i, UINT32_MAX);
                expect_bad(&m, "section");
        }
}

Test(tree_bad, chunk_lengths)
{
        uint8_t *c;
        struct img m = img_new();
        c = m.raw + m.chunks;
        p32(c + offsetof(struct tree_chunk_rec, ulen), CS + 1);
        expect_bad(&m, "length 16385 does not fit");
        m = img_new();
        c = m.raw + m.chunks;
        p32(c + offsetof(struct tree_chunk_rec, ulen), 99); /* file needs 100 */
        expect_bad(&m, "length 99, expected 100");
        m = img_new();
        c = m.raw + m.chunks;
        p32(c + offsetof(struct tree_chunk_rec, clen), 0);
        expect_bad(&m, "frame of 0 bytes");
        m = img_new();
        c = m.raw + m.chunks;
        p32(c + offsetof(struct tree_chunk_rec, clen), (uint32_t)ZSTD_compressBound(100) + 1);
        expect_bad(&m, "impossible");
        m = img_new();
        p64(inode(&m, 2) + IF(size), CS + 1); /* needs 2 chunks */
        expect_bad(&m, "1 chunks for size 16385");
}

Test(tree_bad, chunk_size)
{
        static const uint32_t bad[] = { 0, 12345, CHUNK_SIZE_MIN / 2, CHUNK_SIZE_MAX * 2, CS + 1 };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                struct img m = img_new();
                p32(m.raw + offsetof(struct tree_hdr, chunk_size), bad[i]);
                expect_bad(&m, "invalid chunk size");
        }
}

Test(tree_bad, extents)
{
        uint8_t *e;
        struct img m = img_new();
        e = m.raw + m.extents + 16;
        p64(e, 5); /* overlaps [0,10) */
        expect_bad(&m, "overlaps");
        m = img_new();
        e = m.raw + m.extents + 16;
        p64(e, 10); /* adjacent */
        expect_bad(&m, "overlaps");
        m = img_new();
        e = m.raw + m.extents + 16;
        p64(e + 8, 81); /* [20,101) beyond size 100 */
        expect_bad(&m, "beyond size");
        m = img_new();
        e = m.raw + m.extents + 16;
        p64(e, UINT64_MAX - 1); /* off+len overflows */
        expect_bad(&m, "beyond size");
        m = img_new();
        e = m.raw + m.extents;
        p64(e + 8, 0); /* empty */
        expect_bad(&m, "extent 0: empty");
        m = img_new();
        p32(inode(&m, 1) + IF(extent_count), 1); /* a dir with extents */
        expect_bad(&m, "extents on a non-regular");
}

Test(tree_bad, hole_extent_disagree)
{
        struct img m = img_new();
        p32(m.raw + m.fchunks, TREE_HOLE); /* hole, but extents say data */
        expect_bad(&m, "hole but extents hold data");
        m = img_new();
        /* data, but no extents: move them to nobody */
        p32(inode(&m, 2) + IF(extent_count), 0);
        expect_bad(&m, "data but no extent");
}

Test(tree_bad, symlinks)
{
        struct img m = img_new();
        p32(inode(&m, 3) + IF(data_count), TREE_SYMLINK_MAX + 1);
        p64(inode(&m, 3) + IF(size), TREE_SYMLINK_MAX + 1);
        expect_bad(&m, "target of 4096 bytes");
        m = img_new();
        p32(inode(&m, 3) + IF(data_count), 0);
        p64(inode(&m, 3) + IF(size), 0);
        expect_bad(&m, "target of 0 bytes");
        m = img_new();
        p64(inode(&m, 3) + IF(size), 5);
        expect_bad(&m, "symlink size 5");
        m = img_new();
        m.raw[m.strings + g32(inode(&m, 3) + IF(data_first)) + 2] = 0;
        expect_bad(&m, "target contains NUL");
}

Test(tree_bad, xattrs)
{
        uint8_t *x;
        struct img m = img_new();
        x = m.raw + m.xattrs;
        p32(x + offsetof(struct tree_xattr_rec, name_len), 0);
        expect_bad(&m, "name of 0 bytes");
        m = img_new();
        x = m.raw + m.xattrs;
        p32(x + offsetof(struct tree_xattr_rec, value_len), TREE_XATTR_VALUE_MAX + 1);
        expect_bad(&m, "value of 65537");
        m = img_new();
        x = m.raw + m.xattrs;
        m.raw[m.strings + g32(x + offsetof(struct tree_xattr_rec, name_off)) + 1] = 0;
        expect_bad(&m, "xattr 0: name contains NUL");
}

Test(tree_bad, special_file_data)
{
        struct img m = img_new();
        p64(inode(&m, 4) + IF(size), 1);
        expect_bad(&m, "size 1 on a directory");
        m = img_new();
        p64(inode(&m, 4) + IF(rdev), 1);
        expect_bad(&m, "rdev on a non-device");
}

Test(tree_bad, magic_version)
{
        struct img m = img_new();
        m.raw[0] ^= 1;
        expect_bad(&m, "bad magic");
        m = img_new();
        p32(m.raw + offsetof(struct tree_hdr, version), 2);
        expect_bad(&m, "unsupported version 2");
        m = img_new();
        p32(m.raw + offsetof(struct tree_hdr, version), 0);
        expect_bad(&m, "unsupported version 0");
}

Test(tree_bad, padding_and_trailing)
{
        struct img m = img_new();
        struct tree *t = NULL;
        uint8_t *longer;

        cr_assert_neq(m.extents, m.fchunks + 4 * m.n[4], "the small image has padding");
        m.raw[m.extents - 1] = 1;
        expect_bad(&m, "nonzero padding");
        m = img_new();
        longer = calloc(1, m.len + 8);
        memcpy(longer, m.raw, m.len);
        cr_assert_eq(tree_parse(longer, m.len + 8, &t), -EBADMSG);
        free(longer);
        free(m.raw);
}

Test(tree_bad, truncated)
{
        struct img m = img_new();
        int lvl = log_get_max_level();
        log_set_max_level(0);
        for (size_t n = 0; n < m.len; n++) {
                struct tree *t = NULL;
                uint8_t *copy = malloc(n + 1);
                memcpy(copy, m.raw, n);
                cr_assert_eq(tree_parse(copy, n, &t), -EBADMSG, "length %zu", n);
                free(copy);
        }
        log_set_max_level(lvl);
        free(m.raw);
}

/* ---- the compressed form ---- */

Test(tree_load, frames)
{
        struct img m = img_new();
        struct tree *t = NULL;
        ZSTD_CCtx *cctx = ZSTD_createCCtx();
        size_t bound = ZSTD_compressBound(m.len) * 2 + 64, n, n2;
        uint8_t *buf = malloc(bound);
        struct digest d, wrong;

        /* good */
        n = ZSTD_compress(buf, bound, m.raw, m.len, 1);
        cr_assert(!ZSTD_isError(n));
        digest_sha256(buf, n, &d);
        cr_assert_eq(tree_load(buf, n, &d, &t), 0);
        t = tree_free(t);
        cr_assert_eq(tree_load(buf, n, NULL, &t), 0);
        t = tree_free(t);

        /* digest mismatch */
        wrong = d;
        wrong.b[31] ^= 1;
        cr_assert_eq(tree_load(buf, n, &wrong, &t), -EBADMSG); expect_line("hashes to");

        /* trailing bytes; a second frame beyond the image */
        memcpy(buf + n, buf, n);
        cr_assert_eq(tree_load(buf, n + 1, NULL, &t), -EBADMSG); expect_line("not a whole zstd frame");
        cr_assert_eq(tree_load(buf, 2 * n, NULL, &t), -EBADMSG); expect_line("more than the image's");
        /* truncated frame */
        log_set_max_level(0);
        for (size_t k = 0; k < n; k++)
                cr_assert_eq(tree_load(buf, k, NULL, &t), -EBADMSG, "length %zu", k);
        log_set_max_level(LOG_LVL_WARNING);

        /* no content size in the frame */
        cr_assert(!ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 0)));
        {
                ZSTD_outBuffer out = { buf, bound, 0 };
                ZSTD_inBuffer in = { m.raw, m.len, 0 };
                n2 = ZSTD_compressStream2(cctx, &out, &in, ZSTD_e_end);
                cr_assert_eq(n2, 0);
                cr_assert_eq(ZSTD_getFrameContentSize(buf, out.pos), ZSTD_CONTENTSIZE_UNKNOWN);
                cr_assert_eq(tree_load(buf, out.pos, NULL, &t), -EBADMSG); expect_line("does not declare");
        }

        /* a frame that declares more than TREE_RAW_MAX, or more than it can
         * hold: header (magic, FHD single-segment + 8-byte FCS), one empty
         * last raw block */
        {
                uint8_t f[4 + 1 + 8 + 3] = { 0x28, 0xb5, 0x2f, 0xfd, 0xe0 };
                p64(f + 5, TREE_RAW_MAX + 1);
                f[13] = 1; /* last block, raw, size 0 */
                cr_assert_eq(ZSTD_findFrameCompressedSize(f, sizeof f), sizeof f);
                cr_assert_eq(ZSTD_getFrameContentSize(f, sizeof f), TREE_RAW_MAX + 1);
                cr_assert_eq(tree_load(f, sizeof f, NULL, &t), -EBADMSG);
                expect_line("more than 2147483648");
                p64(f + 5, 1 << 20);
                cr_assert_eq(tree_load(f, sizeof f, NULL, &t), -EBADMSG);
                expect_line("cannot hold");
                p64(f + 5, 0);
                cr_assert_eq(tree_load(f, sizeof f, NULL, &t), -EBADMSG);
                expect_line("shorter than its header");
        }
        /* a frame that could hold what it declares (16385 RLE blocks of
         * 128 KiB), which is just over TREE_RAW_MAX */
        {
                size_t nb = (TREE_RAW_MAX >> 17) + 1, flen = 13 + 4 * nb;
                uint8_t *f = calloc(1, flen);
                memcpy(f, (uint8_t[]){ 0x28, 0xb5, 0x2f, 0xfd, 0xe0 }, 5);
                p64(f + 5, (uint64_t)nb << 17);
                for (size_t k = 0; k < nb; k++) {
                        uint32_t bh = (1u << 17) << 3 | 1u << 1 | (k == nb - 1);
                        f[13 + 4 * k] = bh & 0xff;
                        f[13 + 4 * k + 1] = (bh >> 8) & 0xff;
                        f[13 + 4 * k + 2] = bh >> 16;
                }
                cr_assert_eq(ZSTD_findFrameCompressedSize(f, flen), flen);
                cr_assert_gt(ZSTD_getFrameContentSize(f, flen), TREE_RAW_MAX);
                cr_assert_eq(tree_load(f, flen, NULL, &t), -EBADMSG);
                expect_line("more than 2147483648");
                free(f);
        }
        /* a skippable frame */
        {
                uint8_t f[8 + 4] = { 0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0 };
                cr_assert_eq(tree_load(f, sizeof f, NULL, &t), -EBADMSG);
                expect_line("skippable");
        }
        /* a valid frame of an invalid image */
        m.raw[0] ^= 1;
        n = ZSTD_compress(buf, bound, m.raw, m.len, 1);
        cr_assert_eq(tree_load(buf, n, NULL, &t), -EBADMSG);
                expect_line("bad magic");
        cr_assert_null(t);

        ZSTD_freeCCtx(cctx);
        free(buf);
        free(m.raw);
}

/* ---- a large tree: frames, threads, a blob read piecewise ---- */

#define BIG_FILES 20000

/* big_blob(): BIG_FILES one-chunk files under the root: a ~4 MB image in
 * several frames, a blob above the size where tree_load() starts threads. */
static void big_blob(void **ret, size_t *ret_len, struct digest *ret_d)
{
        struct tree_builder *tb = tree_builder_new(CS);
        uint32_t root, p, c, f;
        struct tree_attr a;
        char name[32];

        root = add(tb, attr(1, S_IFDIR | 0755));
        p = pack(tb, "p");
        for (uint32_t i = 0; i < BIG_FILES; i++) {
                snprintf(name, sizeof name, "f%06u", i);
                f = add(tb, (a = attr(2 + i, S_IFREG | 0644), a.size = 100, a));
                c = chunk(tb, name, p, 100);
                cr_assert_eq(tree_builder_set_chunks(tb, f, &c, 1), 0);
                cr_assert_eq(tree_builder_add_extent(tb, f, 0, 100), 0);
                dirent(tb, root, name, 2 + i);
        }
        cr_assert_eq(tree_builder_finish(tb, 3, ret, ret_len, ret_d), 0);
        tree_builder_free(tb);
}

struct piecewise {
        const uint8_t *blob;
        size_t len;
        size_t max;       /* bytes per call at most */
        uint64_t fail_at; /* a read at or past this offset fails... */
        ssize_t fail;     /* ...returning this (0: the blob ends there) */
        unsigned calls;
};

static ssize_t piecewise_read(void *ctx, uint64_t off, void *buf, size_t n)
{
        struct piecewise *pw = ctx;
        pw->calls++;
        if (off >= pw->fail_at)
                return pw->fail;
        if (off >= pw->len)
                return 0;
        n = MIN(n, MIN(pw->max, pw->len - (size_t)off));
        memcpy(buf, pw->blob + off, n);
        return (ssize_t)n;
}

Test(tree_load, large_tree_in_frames)
{
        void *blob;
        size_t len, frames = 0;
        struct digest d, wrong;
        struct tree *t = NULL;
        struct tree_inode ino;

        big_blob(&blob, &len, &d);
        cr_assert_gt(len, 256u << 10, "large enough for the threaded path");
        /* the header alone, then frames of TREE_FRAME_SIZE */
        for (size_t off = 0, n; off < len; off += n, frames++) {
                n = ZSTD_findFrameCompressedSize((uint8_t *)blob + off, len - off);
                cr_assert(!ZSTD_isError(n));
                cr_assert_eq(ZSTD_getFrameContentSize((uint8_t *)blob + off, n),
                             off == 0 ? sizeof(struct tree_hdr)
                                      : MIN((unsigned long long)TREE_FRAME_SIZE,
                                            raw_size(blob, len) - sizeof(struct tree_hdr) -
                                                    (frames - 1) * (unsigned long long)TREE_FRAME_SIZE));
        }
        cr_assert_geq(frames, 4);

        cr_assert_eq(tree_load(blob, len, &d, &t), 0);
        cr_assert_eq(tree_n_inodes(t), BIG_FILES + 1);
        cr_assert_eq(tree_inode(t, BIG_FILES + 1, &ino), 0);
        t = tree_free(t);

        /* read piecewise, in odd pieces */
        struct piecewise pw = { .blob = blob, .len = len, .max = 100003, .fail_at = UINT64_MAX };
        cr_assert_eq(tree_load_from(piecewise_read, &pw, len, &d, &t), 0);
        cr_assert_gt(pw.calls, len / 100003);
        cr_assert_eq(tree_n_inodes(t), BIG_FILES + 1);
        t = tree_free(t);

        /* a read error, or a blob that ends early, half way: returned as is */
        pw = (struct piecewise){ .blob = blob, .len = len, .max = len, .fail_at = len / 2, .fail = -EIO };
        cr_assert_eq(tree_load_from(piecewise_read, &pw, len, &d, &t), -EIO);
        cr_assert_null(t);
        pw = (struct piecewise){ .blob = blob, .len = len, .max = 65536, .fail_at = len / 2, .fail = 0 };
        cr_assert_eq(tree_load_from(piecewise_read, &pw, len, NULL, &t), -EIO);
        cr_assert_null(t);

        /* a flipped byte in the magic of the third frame: a hash mismatch if
         * the digest is known (reported first), else that frame is named */
        size_t third = ZSTD_findFrameCompressedSize(blob, len);
        third += ZSTD_findFrameCompressedSize((uint8_t *)blob + third, len - third);
        ((uint8_t *)blob)[third] ^= 0x40;
        cr_assert_eq(tree_load(blob, len, &d, &t), -EBADMSG);
        expect_line("hashes to");
        cr_assert_eq(tree_load(blob, len, NULL, &t), -EBADMSG);
        {
                char want[64];
                snprintf(want, sizeof want, "bytes %zu-%zu of the blob", third, len - 1);
                expect_line(want);
        }
        cr_assert_null(t);
        ((uint8_t *)blob)[third] ^= 0x40;
        wrong = d;
        wrong.b[0] ^= 1;
        pw = (struct piecewise){ .blob = blob, .len = len, .max = len, .fail_at = UINT64_MAX };
        cr_assert_eq(tree_load_from(piecewise_read, &pw, len, &wrong, &t), -EBADMSG);
        cr_assert_null(t);
        free(blob);
}

/* A tree this large is validated on two threads: a problem is still named
 * in one line, the first one the single-threaded order finds. */
Test(tree_load, large_tree_validated_in_parallel)
{
        void *blob;
        size_t len, inodes;
        unsigned long long n;
        uint8_t *raw;
        struct tree *t = NULL;

        big_blob(&blob, &len, NULL);
        n = raw_size(blob, len);
        raw = malloc(n);
        cr_assert_eq(ZSTD_decompress(raw, n, blob, len), n); /* every frame */
        free(blob);
        cr_assert_eq(g64(raw + offsetof(struct tree_hdr, n_inodes)), BIG_FILES + 1);
        inodes = sizeof(struct tree_hdr) + g64(raw + offsetof(struct tree_hdr, n_packs)) * 32 +
                 g64(raw + offsetof(struct tree_hdr, n_chunks)) * 64;
        cr_assert_eq(tree_parse(raw, n, &t), 0);
        t = tree_free(t);

        /* a link count only the entries pass can see is wrong */
        uint8_t *last = raw + inodes + (size_t)BIG_FILES * 104;
        p32(last + IF(nlink), 2);
        cr_assert_eq(tree_parse(raw, n, &t), -EBADMSG);
        expect_line("nlink 2 but 1 references");
        /* and a mode the records pass rejects, before it in that order */
        p32(raw + inodes + 100 * 104 + IF(mode), 0170644);
        cr_assert_eq(tree_parse(raw, n, &t), -EBADMSG);
        expect_line("invalid mode");
        /* one line each time: the next line is the next problem's */
        p32(raw + inodes + 100 * 104 + IF(mode), S_IFREG | 0644);
        cr_assert_eq(tree_parse(raw, n, &t), -EBADMSG);
        expect_line("nlink 2 but 1 references");
        p32(last + IF(nlink), 1);
        cr_assert_eq(tree_parse(raw, n, &t), 0);
        t = tree_free(t);
        free(raw);
}
