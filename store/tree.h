/* tree.h — the snapshot tree blob: every inode, directory entry, xattr,
 * symlink target, extent and chunk reference of one snapshot, in one
 * little-endian binary image, stored zstd-compressed.
 * A struct tree_builder collects a tree and serializes it (one thread).
 * A struct tree is a loaded, fully validated tree: after tree_load() every
 * lookup is O(log n) or O(1) with no further parsing or checking. A loaded
 * tree is immutable and safe to share between threads.
 * Owns the format; does no I/O.
 *
 * Format, version 1 (all integers little-endian; every section 8-aligned):
 *   header      struct tree_hdr (below)
 *   packs       n_packs    x 32-byte SHA-256 pack digests
 *   chunks      n_chunks   x struct tree_chunk_rec, sorted by address, unique
 *   inodes      n_inodes   x struct tree_inode_rec, sorted by ino, unique; ino 1 is the root
 *   dirents     n_dirents  x struct tree_dirent_rec; each directory's entries are
 *                          contiguous and sorted by name (memcmp, then length)
 *   fchunks     n_fchunks  x le32 chunk index, TREE_HOLE for an all-hole chunk;
 *                          a regular file has ceil(size / chunk_size) of them
 *   extents     n_extents  x struct tree_extent_rec: each file's data extents,
 *                          sorted, disjoint, non-adjacent, within [0, size]
 *   xattrs      n_xattrs   x struct tree_xattr_rec; per inode sorted by name
 *   strings     strings_len bytes: names, xattr names and values, symlink
 *                          targets; every string is followed by a NUL byte
 *
 * Validation (tree_parse) rejects with -EBADMSG and one log line naming the
 * problem: bad magic/version, sections out of bounds or overlapping, counts
 * that do not fit the blob, any index out of range, a name that is empty,
 * ".", "..", longer than 255 bytes or containing '/' or NUL, unsorted or
 * duplicate names, a directory reached twice or not at all, a non-directory
 * whose nlink differs from its reference count, a chunk whose lengths do not
 * fit the chunk size or whose frame bound is impossible, a file whose chunk
 * list does not match its size or whose hole chunks disagree with its extents,
 * a symlink target empty or over 4095 bytes, an xattr name empty or over 255
 * bytes or a value over 65536 bytes, an unknown file type. */
#ifndef STASIS_TREE_H
#define STASIS_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "digest.h"

#define TREE_MAGIC "STSTREE\0"
#define TREE_VERSION 1u
#define TREE_ROOT_INO 1u
#define TREE_HOLE UINT32_MAX
#define TREE_NAME_MAX 255u
#define TREE_SYMLINK_MAX 4095u
#define TREE_XATTR_NAME_MAX 255u
#define TREE_XATTR_VALUE_MAX 65536u
/* The builder's frames (after the first, which holds the header alone):
 * each inflates on its own (tree_load()). */
#define TREE_FRAME_SIZE (1u << 20)
/* Largest uncompressed tree tree_load() accepts. */
#define TREE_RAW_MAX (2ull << 30)

/* On-disk records (documentation of the layout; all fields little-endian). */
struct tree_hdr {
        char magic[8];
        uint32_t version;
        uint32_t chunk_size;
        uint64_t next_ino; /* every ino in the tree is below it */
        uint64_t n_packs, n_chunks, n_inodes, n_dirents, n_fchunks, n_extents, n_xattrs;
        uint64_t strings_len;
};
struct tree_chunk_rec {
        uint8_t addr[32];
        uint64_t xxh3;
        uint64_t offset; /* of the frame in the pack */
        uint32_t pack;   /* index into packs */
        uint32_t clen;   /* frame length */
        uint32_t ulen;   /* uncompressed length, 1..chunk_size */
        uint32_t reserved;
};
struct tree_inode_rec {
        uint64_t ino;
        uint64_t size; /* regular: bytes; symlink: target length; dir: 0 */
        uint64_t rdev;
        int64_t atime_sec, mtime_sec, ctime_sec;
        uint32_t atime_nsec, mtime_nsec, ctime_nsec;
        uint32_t mode, uid, gid, nlink;
        uint32_t xattr_first, xattr_count;
        /* dir: dirents; regular: fchunks (count = ceil(size/chunk_size));
         * symlink: data_first = string offset, data_count = length. */
        uint32_t data_first, data_count;
        uint32_t extent_first, extent_count; /* regular files only */
        uint32_t reserved;
};
struct tree_dirent_rec {
        uint64_t ino;
        uint32_t name_off, name_len;
};
struct tree_extent_rec {
        uint64_t off, len;
};
struct tree_xattr_rec {
        uint32_t name_off, name_len, value_off, value_len;
};

/* In-memory views. */
struct tree_chunk {
        struct digest addr;
        uint64_t xxh3;
        uint64_t offset;
        uint32_t pack, clen, ulen;
};

struct tree_attr {
        uint64_t ino;
        uint32_t mode, uid, gid, nlink;
        uint64_t size, rdev;
        struct timespec atime, mtime, ctime;
};

/* A resolved inode: attributes plus its position, for the queries below. */
struct tree_inode {
        struct tree_attr attr;
        uint32_t idx;
};

/* ---- building ---- */
struct tree_builder;
struct tree_builder *tree_builder_new(uint32_t chunk_size);
struct tree_builder *tree_builder_free(struct tree_builder *tb);

/* add_pack(): index of pack d, adding it if new. */
int tree_builder_add_pack(struct tree_builder *tb, const struct digest *d, uint32_t *ret_idx);
/* add_chunk(): index of chunk c->addr, adding it if new (c->pack is a
 * builder pack index). Indices are final only in the serialized form; use the
 * returned index with set_chunks(), the builder renumbers at finish. */
int tree_builder_add_chunk(struct tree_builder *tb, const struct tree_chunk *c, uint32_t *ret_idx);
/* add_inode(): a new inode (unique a->ino, not 0); *ret_handle names it below. */
int tree_builder_add_inode(struct tree_builder *tb, const struct tree_attr *a, uint32_t *ret_handle);
int tree_builder_set_symlink(struct tree_builder *tb, uint32_t handle, const char *target, size_t len);
int tree_builder_add_xattr(struct tree_builder *tb, uint32_t handle, const char *name,
                           const void *value, size_t len);
/* set_chunks(): a regular file's chunk list (builder chunk indices or TREE_HOLE). */
int tree_builder_set_chunks(struct tree_builder *tb, uint32_t handle, const uint32_t *chunks, size_t n);
/* add_extent(): append a data extent; extents are added in ascending order. */
int tree_builder_add_extent(struct tree_builder *tb, uint32_t handle, uint64_t off, uint64_t len);
int tree_builder_add_dirent(struct tree_builder *tb, uint32_t dir_handle, const char *name,
                            size_t name_len, uint64_t child_ino);
void tree_builder_set_next_ino(struct tree_builder *tb, uint64_t next_ino);
/* finish(): sort, serialize, self-check with tree_parse(), compress with zstd
 * at level; *ret is malloc'd. Drops chunks and packs that no file references,
 * so a tree never names dead data. */
int tree_builder_finish(struct tree_builder *tb, int level, void **ret, size_t *ret_len,
                        struct digest *ret_digest);
struct tree;
/* finish_tree(): finish(), and *ret_tree (if not NULL) the tree itself, as
 * tree_load() of the blob would return it, without decompressing and
 * validating it again. */
int tree_builder_finish_tree(struct tree_builder *tb, int level, void **ret, size_t *ret_len,
                             struct digest *ret_digest, struct tree **ret_tree);

/* ---- reading ---- */
struct tree;
/* tree_load(): blob is the stored (compressed) form: zstd frames, each
 * declaring its content size, the first holding at least the header, the
 * image at most TREE_RAW_MAX (docs/tree-format.md). If expect is non-NULL
 * the blob must hash to it. Then as tree_parse(). A large blob is hashed and
 * inflated on several threads, all joined before it returns. */
int tree_load(const void *blob, size_t len, const struct digest *expect, struct tree **ret);
/* tree_load_from(): tree_load() of a blob of len bytes that read() returns
 * (up to n bytes at off; the count, 0 only past the end, or -errno): a large
 * blob is read piece by piece while the pieces already read are hashed and
 * inflated. A read error is returned as is (not logged). */
typedef ssize_t (*tree_read_fn)(void *ctx, uint64_t off, void *buf, size_t n);
int tree_load_from(tree_read_fn read, void *ctx, size_t len, const struct digest *expect, struct tree **ret);
/* tree_parse(): the uncompressed image; copies it. -EBADMSG (logged) if invalid. */
int tree_parse(const void *raw, size_t len, struct tree **ret);
struct tree *tree_free(struct tree *t);

uint32_t tree_chunk_size(const struct tree *t);
uint64_t tree_next_ino(const struct tree *t);
uint32_t tree_n_packs(const struct tree *t);
uint32_t tree_n_chunks(const struct tree *t);
uint32_t tree_n_inodes(const struct tree *t);
uint32_t tree_n_dirents(const struct tree *t);

const struct digest *tree_pack(const struct tree *t, uint32_t idx);
int tree_chunk(const struct tree *t, uint32_t idx, struct tree_chunk *ret);
/* chunk_find(): 0 and its index, -ENOENT. */
int tree_chunk_find(const struct tree *t, const struct digest *addr, uint32_t *ret_idx);

/* inode(): by persistent inode number; -ENOENT. inode_at(): by position
 * 0..n_inodes-1 (ascending ino). */
int tree_inode(const struct tree *t, uint64_t ino, struct tree_inode *ret);
int tree_inode_at(const struct tree *t, uint32_t idx, struct tree_inode *ret);

/* Directories. lookup(): -ENOENT, -ENOTDIR. dirent(): entry i (0-based) of dir,
 * name NUL-terminated. */
int tree_lookup(const struct tree *t, const struct tree_inode *dir, const char *name,
                size_t name_len, uint64_t *ret_ino);
uint32_t tree_dir_count(const struct tree *t, const struct tree_inode *dir);
int tree_dirent(const struct tree *t, const struct tree_inode *dir, uint32_t i,
                const char **ret_name, size_t *ret_len, uint64_t *ret_ino);
/* path_lookup(): "a/b/c" from the root, no symlinks followed; "" is the root. */
int tree_path_lookup(const struct tree *t, const char *path, struct tree_inode *ret);

/* symlink(): NUL-terminated target; -EINVAL if not a symlink. */
int tree_symlink(const struct tree *t, const struct tree_inode *ino, const char **ret, size_t *ret_len);

uint32_t tree_xattr_count(const struct tree *t, const struct tree_inode *ino);
int tree_xattr(const struct tree *t, const struct tree_inode *ino, uint32_t i,
               const char **ret_name, const void **ret_value, size_t *ret_len);
/* xattr_get(): by name; -ENODATA if absent. */
int tree_xattr_get(const struct tree *t, const struct tree_inode *ino, const char *name,
                   const void **ret_value, size_t *ret_len);

/* Regular files. file_chunk(): chunk index of the i-th chunk, or TREE_HOLE. */
uint32_t tree_file_nchunks(const struct tree *t, const struct tree_inode *ino);
uint32_t tree_file_chunk(const struct tree *t, const struct tree_inode *ino, uint32_t i);
uint32_t tree_extent_count(const struct tree *t, const struct tree_inode *ino);
void tree_extent(const struct tree *t, const struct tree_inode *ino, uint32_t i, uint64_t *ret_off,
                 uint64_t *ret_len);

#endif
