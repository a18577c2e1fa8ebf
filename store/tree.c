/* tree.c — see tree.h and docs/tree-format.md.
 *
 * The image is never accessed through the record structs of tree.h: every
 * field is stored and loaded with an explicit little-endian access at the
 * offset the struct documents (offsetof(), pinned by the static asserts
 * below), so the format is the same on every host.
 *
 * Section offsets are implicit: they follow from the header's counts, in the
 * order of tree.h, with zero padding after fchunks to keep the next section
 * 8-aligned. The image must end exactly after the strings section.
 *
 * Beyond the rules listed in tree.h, tree_parse() insists on the canonical
 * form the builder writes, so that one tree has exactly one image:
 *   - reserved fields and padding are zero;
 *   - packs are sorted by digest and unique; every pack is used by a chunk and
 *     every chunk by a file, so a tree never names dead data;
 *   - each inode's xattrs, dirents (directories), fchunks and extents (regular
 *     files) start where the previous inode's ended: every record belongs to
 *     exactly one inode; other inode types have data_first == 0;
 *   - dir/device/fifo/socket size is 0; rdev is 0 except for devices.
 * A directory's nlink only has to be >= 1: filesystems disagree about it
 * (btrfs says 1, ext4 2 + subdirectories), so it is recorded as found. */
#include "tree.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <zstd.h>

#include "chunk.h"
#include "util.h"

#define HDR_SIZE sizeof(struct tree_hdr)
#define PACK_SIZE DIGEST_LEN
#define CHUNK_REC sizeof(struct tree_chunk_rec)
#define INODE_REC sizeof(struct tree_inode_rec)
#define DIRENT_REC sizeof(struct tree_dirent_rec)
#define FCHUNK_REC 4u
#define EXTENT_REC sizeof(struct tree_extent_rec)
#define XATTR_REC sizeof(struct tree_xattr_rec)

_Static_assert(sizeof(struct tree_hdr) == 88, "tree_hdr layout");
_Static_assert(offsetof(struct tree_hdr, n_packs) == 24, "tree_hdr layout");
_Static_assert(offsetof(struct tree_hdr, strings_len) == 80, "tree_hdr layout");
_Static_assert(sizeof(struct tree_chunk_rec) == 64, "tree_chunk_rec layout");
_Static_assert(offsetof(struct tree_chunk_rec, reserved) == 60, "tree_chunk_rec layout");
_Static_assert(sizeof(struct tree_inode_rec) == 104, "tree_inode_rec layout");
_Static_assert(offsetof(struct tree_inode_rec, atime_nsec) == 48, "tree_inode_rec layout");
_Static_assert(offsetof(struct tree_inode_rec, reserved) == 100, "tree_inode_rec layout");
_Static_assert(sizeof(struct tree_dirent_rec) == 16, "tree_dirent_rec layout");
_Static_assert(sizeof(struct tree_extent_rec) == 16, "tree_extent_rec layout");
_Static_assert(sizeof(struct tree_xattr_rec) == 16, "tree_xattr_rec layout");

#define F(type, field) offsetof(struct type, field)

/* ---- little-endian access ---- */

static inline uint32_t ld32(const uint8_t *p)
{
        uint32_t v;
        memcpy(&v, p, sizeof v);
        return le32toh(v);
}

static inline uint64_t ld64(const uint8_t *p)
{
        uint64_t v;
        memcpy(&v, p, sizeof v);
        return le64toh(v);
}

static inline void st32(uint8_t *p, uint32_t v)
{
        v = htole32(v);
        memcpy(p, &v, sizeof v);
}

static inline void st64(uint8_t *p, uint64_t v)
{
        v = htole64(v);
        memcpy(p, &v, sizeof v);
}

/* Names and xattr names sort by memcmp over the common length, then the
 * shorter first. */
static int name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
        int c = memcmp(a, b, MIN(alen, blen));
        if (c)
                return c;
        return alen < blen ? -1 : alen > blen;
}

static bool mode_type_valid(uint32_t mode)
{
        switch (mode & S_IFMT) {
        case S_IFREG:
        case S_IFDIR:
        case S_IFLNK:
        case S_IFCHR:
        case S_IFBLK:
        case S_IFIFO:
        case S_IFSOCK:
                return (mode & ~(uint32_t)(S_IFMT | 07777)) == 0;
        default:
                return false;
        }
}

/* Number of chunks of a file of size bytes. */
static uint64_t file_nchunks(uint64_t size, uint32_t chunk_size)
{
        return size / chunk_size + (size % chunk_size != 0);
}

/* ---- layout ---- */

struct layout {
        uint32_t chunk_size;
        uint64_t next_ino;
        uint64_t n_packs, n_chunks, n_inodes, n_dirents, n_fchunks, n_extents, n_xattrs;
        uint64_t strings_len;
        /* byte offsets of the sections */
        size_t packs, chunks, inodes, dirents, fchunks, pad, extents, xattrs, strings, total;
};

/* layout_compute(): section offsets from the counts, overflow-checked.
 * -EOVERFLOW if they cannot be represented. */
static int layout_compute(struct layout *l)
{
        const struct {
                uint64_t n;
                size_t size;
                size_t *off;
        } sec[] = {
                { l->n_packs, PACK_SIZE, &l->packs },     { l->n_chunks, CHUNK_REC, &l->chunks },
                { l->n_inodes, INODE_REC, &l->inodes },   { l->n_dirents, DIRENT_REC, &l->dirents },
                { l->n_fchunks, FCHUNK_REC, &l->fchunks },
        };
        const struct {
                uint64_t n;
                size_t size;
                size_t *off;
        } sec2[] = {
                { l->n_extents, EXTENT_REC, &l->extents }, { l->n_xattrs, XATTR_REC, &l->xattrs },
                { l->strings_len, 1, &l->strings },
        };
        size_t off = HDR_SIZE, bytes;

        for (size_t i = 0; i < ELEMENTSOF(sec); i++) {
                if (sec[i].n > SIZE_MAX || __builtin_mul_overflow((size_t)sec[i].n, sec[i].size, &bytes))
                        return -EOVERFLOW;
                *sec[i].off = off;
                if (__builtin_add_overflow(off, bytes, &off))
                        return -EOVERFLOW;
        }
        l->pad = off;
        if (off % 8 && __builtin_add_overflow(off, 8 - off % 8, &off))
                return -EOVERFLOW;
        for (size_t i = 0; i < ELEMENTSOF(sec2); i++) {
                if (sec2[i].n > SIZE_MAX ||
                    __builtin_mul_overflow((size_t)sec2[i].n, sec2[i].size, &bytes))
                        return -EOVERFLOW;
                *sec2[i].off = off;
                if (__builtin_add_overflow(off, bytes, &off))
                        return -EOVERFLOW;
        }
        l->total = off;
        return 0;
}

/* ---- decoded records (validation and queries) ---- */

struct irec {
        uint64_t ino, size, rdev;
        int64_t atime_sec, mtime_sec, ctime_sec;
        uint32_t atime_nsec, mtime_nsec, ctime_nsec;
        uint32_t mode, uid, gid, nlink;
        uint32_t xattr_first, xattr_count;
        uint32_t data_first, data_count;
        uint32_t extent_first, extent_count;
        uint32_t reserved;
};

static void irec_load(const uint8_t *p, struct irec *r)
{
#define L64(f) r->f = ld64(p + F(tree_inode_rec, f))
#define L32(f) r->f = ld32(p + F(tree_inode_rec, f))
        L64(ino);
        L64(size);
        L64(rdev);
        r->atime_sec = (int64_t)ld64(p + F(tree_inode_rec, atime_sec));
        r->mtime_sec = (int64_t)ld64(p + F(tree_inode_rec, mtime_sec));
        r->ctime_sec = (int64_t)ld64(p + F(tree_inode_rec, ctime_sec));
        L32(atime_nsec);
        L32(mtime_nsec);
        L32(ctime_nsec);
        L32(mode);
        L32(uid);
        L32(gid);
        L32(nlink);
        L32(xattr_first);
        L32(xattr_count);
        L32(data_first);
        L32(data_count);
        L32(extent_first);
        L32(extent_count);
        L32(reserved);
#undef L64
#undef L32
}

static void irec_store(uint8_t *p, const struct irec *r)
{
#define S64(f) st64(p + F(tree_inode_rec, f), (uint64_t)r->f)
#define S32(f) st32(p + F(tree_inode_rec, f), r->f)
        S64(ino);
        S64(size);
        S64(rdev);
        S64(atime_sec);
        S64(mtime_sec);
        S64(ctime_sec);
        S32(atime_nsec);
        S32(mtime_nsec);
        S32(ctime_nsec);
        S32(mode);
        S32(uid);
        S32(gid);
        S32(nlink);
        S32(xattr_first);
        S32(xattr_count);
        S32(data_first);
        S32(data_count);
        S32(extent_first);
        S32(extent_count);
        S32(reserved);
#undef S64
#undef S32
}

static void chunk_rec_load(const uint8_t *p, struct tree_chunk *c, uint32_t *ret_reserved)
{
        memcpy(c->addr.b, p + F(tree_chunk_rec, addr), DIGEST_LEN);
        c->xxh3 = ld64(p + F(tree_chunk_rec, xxh3));
        c->offset = ld64(p + F(tree_chunk_rec, offset));
        c->pack = ld32(p + F(tree_chunk_rec, pack));
        c->clen = ld32(p + F(tree_chunk_rec, clen));
        c->ulen = ld32(p + F(tree_chunk_rec, ulen));
        if (ret_reserved)
                *ret_reserved = ld32(p + F(tree_chunk_rec, reserved));
}

static void chunk_rec_store(uint8_t *p, const struct tree_chunk *c)
{
        memcpy(p + F(tree_chunk_rec, addr), c->addr.b, DIGEST_LEN);
        st64(p + F(tree_chunk_rec, xxh3), c->xxh3);
        st64(p + F(tree_chunk_rec, offset), c->offset);
        st32(p + F(tree_chunk_rec, pack), c->pack);
        st32(p + F(tree_chunk_rec, clen), c->clen);
        st32(p + F(tree_chunk_rec, ulen), c->ulen);
        st32(p + F(tree_chunk_rec, reserved), 0);
}

static void attr_from_irec(const struct irec *r, struct tree_attr *a)
{
        *a = (struct tree_attr){
                .ino = r->ino,
                .mode = r->mode,
                .uid = r->uid,
                .gid = r->gid,
                .nlink = r->nlink,
                .size = r->size,
                .rdev = r->rdev,
                .atime = { .tv_sec = (time_t)r->atime_sec, .tv_nsec = (long)r->atime_nsec },
                .mtime = { .tv_sec = (time_t)r->mtime_sec, .tv_nsec = (long)r->mtime_nsec },
                .ctime = { .tv_sec = (time_t)r->ctime_sec, .tv_nsec = (long)r->ctime_nsec },
        };
}

/* ---- the loaded tree ---- */

struct tree {
        uint8_t *raw; /* owned; malloc'd or bulk_alloc'd (mapped), so 8-aligned */
        size_t len;
        bool mapped;
        struct layout l;
};

/* bulk_alloc(): a buffer that is about to be written whole (a blob being
 * read, an image being inflated), from mmap(MAP_POPULATE): the kernel maps
 * all its pages in one pass instead of taking a fault for each 4 KiB as it
 * is first written, which is about twice as fast, more on a VM where a new
 * page costs the host a fault too (bench/README.md). NULL if it fails. */
#define BULK_MIN (1u << 20)
static void *bulk_alloc(size_t n)
{
        /* fd -1, as MAP_ANONYMOUS asks; cppcheck's posix model wants >= 0 */
        // cppcheck-suppress invalidFunctionArg
        void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
        return p == MAP_FAILED ? NULL : p;
}

static void buf_free(void *p, size_t n, bool mapped)
{
        if (mapped && p)
                (void)munmap(p, n);
        else
                free(p);
}

struct tree *tree_free(struct tree *t)
{
        if (t) {
                buf_free(t->raw, t->len, t->mapped);
                free(t);
        }
        return NULL;
}

static void treep_free(struct tree **t) { tree_free(*t); }

static inline const uint8_t *inode_ptr(const struct tree *t, uint32_t idx)
{
        return t->raw + t->l.inodes + (size_t)idx * INODE_REC;
}

static inline const uint8_t *dirent_ptr(const struct tree *t, uint64_t idx)
{
        return t->raw + t->l.dirents + (size_t)idx * DIRENT_REC;
}

static inline const uint8_t *xattr_ptr(const struct tree *t, uint64_t idx)
{
        return t->raw + t->l.xattrs + (size_t)idx * XATTR_REC;
}

static inline const uint8_t *extent_ptr(const struct tree *t, uint64_t idx)
{
        return t->raw + t->l.extents + (size_t)idx * EXTENT_REC;
}

static inline uint32_t fchunk_at(const struct tree *t, uint64_t idx)
{
        return ld32(t->raw + t->l.fchunks + (size_t)idx * FCHUNK_REC);
}

static inline const char *str_at(const struct tree *t, uint32_t off)
{
        return (const char *)t->raw + t->l.strings + off;
}

/* The inode table's index of ino; UINT32_MAX if absent. Inode numbers are
 * sorted and unique, so ino[i] >= ino[0] + i and ino[i] <= ino[n-1] - (n-1-i):
 * ino can only sit in [ino - ino[n-1] + n-1, ino - ino[0]], a window as wide
 * as the gaps in the numbering. A tree committed at once has none (one probe);
 * one that lived through checkpoints has the gaps of what was deleted. */
static uint32_t inode_index(const struct tree *t, uint64_t ino)
{
        size_t n = t->l.n_inodes, lo, hi;
        uint64_t first, last;

        if (n == 0)
                return UINT32_MAX;
        first = ld64(inode_ptr(t, 0) + F(tree_inode_rec, ino));
        last = ld64(inode_ptr(t, (uint32_t)(n - 1)) + F(tree_inode_rec, ino));
        if (ino < first || ino > last)
                return UINT32_MAX;
        lo = last - ino >= n - 1 ? 0 : (size_t)(n - 1 - (last - ino));
        hi = MIN((uint64_t)n, ino - first + 1);
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                uint64_t v = ld64(inode_ptr(t, (uint32_t)mid) + F(tree_inode_rec, ino));
                if (v == ino)
                        return (uint32_t)mid;
                if (v < ino)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return UINT32_MAX;
}

/* ---- validation ---- */

/* quiet: set on the threads of a parallel validate(), which report nothing;
 * if they find a problem, validate() runs again on one thread to name it. */
static _Thread_local bool quiet;
#define bad(...) (quiet ? -EBADMSG : log_error_errno(EBADMSG, "tree: " __VA_ARGS__))

/* A string [off, off+len) inside the strings section, followed by a NUL. */
static bool str_ok(const struct tree *t, uint64_t off, uint64_t len)
{
        return off <= t->l.strings_len && len < t->l.strings_len - off &&
               str_at(t, (uint32_t)off)[len] == '\0';
}

static int check_name(const struct tree *t, uint64_t ino, uint32_t i, uint32_t off, uint32_t len)
{
        const char *s;
        if (len == 0)
                return bad("inode %" PRIu64 " entry %" PRIu32 ": empty name", ino, i);
        if (len > TREE_NAME_MAX)
                return bad("inode %" PRIu64 " entry %" PRIu32 ": name longer than %u bytes", ino, i,
                           TREE_NAME_MAX);
        if (!str_ok(t, off, len))
                return bad("inode %" PRIu64 " entry %" PRIu32 ": name out of range or not followed by NUL",
                           ino, i);
        s = str_at(t, off);
        if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
                return bad("inode %" PRIu64 " entry %" PRIu32 ": name is \"%.*s\"", ino, i, (int)len, s);
        if (memchr(s, '/', len))
                return bad("inode %" PRIu64 " entry %" PRIu32 ": name contains '/'", ino, i);
        if (memchr(s, '\0', len))
                return bad("inode %" PRIu64 " entry %" PRIu32 ": name contains NUL", ino, i);
        return 0;
}

/* header_layout(): the header at raw (HDR_SIZE bytes) and the layout its
 * counts imply; -EBADMSG with why set (nothing logged) if they are invalid. */
static int header_layout(const uint8_t *raw, struct layout *l, char why[static 160])
{
        uint32_t version;

        if (memcmp(raw + F(tree_hdr, magic), TREE_MAGIC, sizeof(((struct tree_hdr *)0)->magic)))
                return snprintf(why, 160, "bad magic"), -EBADMSG;
        version = ld32(raw + F(tree_hdr, version));
        if (version != TREE_VERSION)
                return snprintf(why, 160, "unsupported version %" PRIu32, version), -EBADMSG;
        *l = (struct layout){
                .chunk_size = ld32(raw + F(tree_hdr, chunk_size)),
                .next_ino = ld64(raw + F(tree_hdr, next_ino)),
                .n_packs = ld64(raw + F(tree_hdr, n_packs)),
                .n_chunks = ld64(raw + F(tree_hdr, n_chunks)),
                .n_inodes = ld64(raw + F(tree_hdr, n_inodes)),
                .n_dirents = ld64(raw + F(tree_hdr, n_dirents)),
                .n_fchunks = ld64(raw + F(tree_hdr, n_fchunks)),
                .n_extents = ld64(raw + F(tree_hdr, n_extents)),
                .n_xattrs = ld64(raw + F(tree_hdr, n_xattrs)),
                .strings_len = ld64(raw + F(tree_hdr, strings_len)),
        };
        if (!chunk_size_valid(l->chunk_size))
                return snprintf(why, 160, "invalid chunk size %" PRIu32, l->chunk_size), -EBADMSG;
        /* Indices are 32-bit; TREE_HOLE is not a chunk index. */
        if (l->n_packs > UINT32_MAX || l->n_chunks >= TREE_HOLE || l->n_inodes > UINT32_MAX ||
            l->n_dirents > UINT32_MAX || l->n_fchunks > UINT32_MAX || l->n_extents > UINT32_MAX ||
            l->n_xattrs > UINT32_MAX || l->strings_len > UINT32_MAX)
                return snprintf(why, 160, "section counts too large"), -EBADMSG;
        if (layout_compute(l) < 0)
                return snprintf(why, 160, "sections need over %zu bytes", SIZE_MAX), -EBADMSG;
        return 0;
}

static int check_header(const uint8_t *raw, size_t len, struct layout *l)
{
        char why[160];

        if (len < HDR_SIZE)
                return bad("image of %zu bytes is shorter than its header", len);
        if (header_layout(raw, l, why) < 0)
                return bad("%s", why);
        if (l->total != len)
                return bad("image is %zu bytes but its sections need %zu", len, l->total);
        for (size_t i = l->pad; i < l->extents; i++)
                if (raw[i])
                        return bad("nonzero padding");
        return 0;
}

static int check_packs_chunks(const struct tree *t)
{
        struct tree_chunk c, prev = {};
        uint32_t reserved;

        for (uint64_t i = 1; i < t->l.n_packs; i++)
                if (memcmp(t->raw + t->l.packs + (i - 1) * PACK_SIZE, t->raw + t->l.packs + i * PACK_SIZE,
                           PACK_SIZE) >= 0)
                        return bad("pack %" PRIu64 ": packs not sorted or not unique", i);

        for (uint64_t i = 0; i < t->l.n_chunks; i++) {
                chunk_rec_load(t->raw + t->l.chunks + i * CHUNK_REC, &c, &reserved);
                if (i > 0 && digest_cmp(&prev.addr, &c.addr) >= 0)
                        return bad("chunk %" PRIu64 ": chunks not sorted or not unique", i);
                if (c.pack >= t->l.n_packs)
                        return bad("chunk %" PRIu64 ": pack %" PRIu32 " out of range", i, c.pack);
                if (c.ulen == 0 || c.ulen > t->l.chunk_size)
                        return bad("chunk %" PRIu64 ": length %" PRIu32 " does not fit chunk size %" PRIu32,
                                   i, c.ulen, t->l.chunk_size);
                if (c.clen == 0 || c.clen > ZSTD_compressBound(c.ulen))
                        return bad("chunk %" PRIu64 ": frame of %" PRIu32 " bytes impossible for %" PRIu32
                                   " bytes of data",
                                   i, c.clen, c.ulen);
                if (c.offset > UINT64_MAX - c.clen)
                        return bad("chunk %" PRIu64 ": offset out of range", i);
                if (reserved)
                        return bad("chunk %" PRIu64 ": reserved field set", i);
                prev = c;
        }
        return 0;
}

/* The regular file r: its chunk list against its size and extents. */
static int check_file(const struct tree *t, const struct irec *r, uint8_t *chunk_used)
{
        uint32_t cs = t->l.chunk_size;
        uint64_t ino = r->ino, prev_end = 0, e = 0;

        if (r->data_count != file_nchunks(r->size, cs))
                return bad("inode %" PRIu64 ": %" PRIu32 " chunks for size %" PRIu64, ino, r->data_count,
                           r->size);
        for (uint32_t i = 0; i < r->extent_count; i++) {
                const uint8_t *p = extent_ptr(t, (uint64_t)r->extent_first + i);
                uint64_t off = ld64(p + F(tree_extent_rec, off)), len = ld64(p + F(tree_extent_rec, len));
                if (len == 0)
                        return bad("inode %" PRIu64 " extent %" PRIu32 ": empty", ino, i);
                if (off > r->size || len > r->size - off)
                        return bad("inode %" PRIu64 " extent %" PRIu32 ": beyond size %" PRIu64, ino, i,
                                   r->size);
                if (i > 0 && off <= prev_end)
                        return bad("inode %" PRIu64 " extent %" PRIu32 ": overlaps, touches or precedes "
                                   "the previous one",
                                   ino, i);
                prev_end = off + len;
        }
        for (uint32_t i = 0; i < r->data_count; i++) {
                uint32_t idx = fchunk_at(t, (uint64_t)r->data_first + i);
                uint64_t start = (uint64_t)i * cs, end = start + MIN((uint64_t)cs, r->size - start);
                bool data;

                /* Does any extent intersect [start, end)? Extents are sorted. */
                while (e < r->extent_count &&
                       ld64(extent_ptr(t, r->extent_first + e) + F(tree_extent_rec, off)) +
                                       ld64(extent_ptr(t, r->extent_first + e) + F(tree_extent_rec, len)) <=
                               start)
                        e++;
                data = e < r->extent_count &&
                       ld64(extent_ptr(t, r->extent_first + e) + F(tree_extent_rec, off)) < end;

                if (idx == TREE_HOLE) {
                        if (data)
                                return bad("inode %" PRIu64 " chunk %" PRIu32 ": hole but extents hold data",
                                           ino, i);
                        continue;
                }
                if (!data)
                        return bad("inode %" PRIu64 " chunk %" PRIu32 ": data but no extent covers it", ino, i);
                if (idx >= t->l.n_chunks)
                        return bad("inode %" PRIu64 " chunk %" PRIu32 ": index %" PRIu32 " out of range", ino, i,
                                   idx);
                uint32_t ulen = ld32(t->raw + t->l.chunks + (size_t)idx * CHUNK_REC + F(tree_chunk_rec, ulen));
                if (ulen != end - start)
                        return bad("inode %" PRIu64 " chunk %" PRIu32 ": length %" PRIu32 ", expected %" PRIu64,
                                   ino, i, ulen, end - start);
                chunk_used[idx] = 1;
        }
        return 0;
}

static int check_symlink(const struct tree *t, const struct irec *r)
{
        if (r->data_count == 0 || r->data_count > TREE_SYMLINK_MAX)
                return bad("inode %" PRIu64 ": symlink target of %" PRIu32 " bytes", r->ino, r->data_count);
        if (!str_ok(t, r->data_first, r->data_count))
                return bad("inode %" PRIu64 ": symlink target out of range or not followed by NUL", r->ino);
        if (memchr(str_at(t, r->data_first), '\0', r->data_count))
                return bad("inode %" PRIu64 ": symlink target contains NUL", r->ino);
        if (r->size != r->data_count)
                return bad("inode %" PRIu64 ": symlink size %" PRIu64 " but target of %" PRIu32 " bytes",
                           r->ino, r->size, r->data_count);
        return 0;
}

static int check_xattrs(const struct tree *t, const struct irec *r)
{
        uint32_t pname = 0, plen = 0;

        for (uint32_t i = 0; i < r->xattr_count; i++) {
                const uint8_t *p = xattr_ptr(t, (uint64_t)r->xattr_first + i);
                uint32_t noff = ld32(p + F(tree_xattr_rec, name_off)), nlen = ld32(p + F(tree_xattr_rec, name_len));
                uint32_t voff = ld32(p + F(tree_xattr_rec, value_off)),
                         vlen = ld32(p + F(tree_xattr_rec, value_len));

                if (nlen == 0 || nlen > TREE_XATTR_NAME_MAX)
                        return bad("inode %" PRIu64 " xattr %" PRIu32 ": name of %" PRIu32 " bytes", r->ino, i,
                                   nlen);
                if (!str_ok(t, noff, nlen))
                        return bad("inode %" PRIu64 " xattr %" PRIu32 ": name out of range or not followed by NUL", r->ino, i);
                if (memchr(str_at(t, noff), '\0', nlen))
                        return bad("inode %" PRIu64 " xattr %" PRIu32 ": name contains NUL", r->ino, i);
                if (vlen > TREE_XATTR_VALUE_MAX)
                        return bad("inode %" PRIu64 " xattr %" PRIu32 ": value of %" PRIu32 " bytes", r->ino, i,
                                   vlen);
                if (!str_ok(t, voff, vlen))
                        return bad("inode %" PRIu64 " xattr %" PRIu32 ": value out of range or not followed by NUL", r->ino, i);
                if (i > 0 && name_cmp(str_at(t, pname), plen, str_at(t, noff), nlen) >= 0)
                        return bad("inode %" PRIu64 " xattr %" PRIu32 ": names not sorted or not unique", r->ino,
                                   i);
                pname = noff;
                plen = nlen;
        }
        return 0;
}

/* Pass over the inode table: per-inode checks, record ownership. */
static int check_inodes(const struct tree *t, uint8_t *chunk_used)
{
        uint64_t xattr_pos = 0, dirent_pos = 0, fchunk_pos = 0, extent_pos = 0, prev_ino = 0;
        struct irec r;
        int k;

        if (t->l.n_inodes == 0)
                return bad("no root directory");
        for (uint32_t i = 0; i < t->l.n_inodes; i++) {
                uint32_t type;
                irec_load(inode_ptr(t, i), &r);
                type = r.mode & S_IFMT;

                if (r.ino == 0 || r.ino >= t->l.next_ino)
                        return bad("inode %" PRIu64 ": number out of range (next %" PRIu64 ")", r.ino,
                                   t->l.next_ino);
                if (i > 0 && r.ino <= prev_ino)
                        return bad("inode %" PRIu64 ": inodes not sorted or not unique", r.ino);
                prev_ino = r.ino;
                if (i == 0 && (r.ino != TREE_ROOT_INO || type != S_IFDIR))
                        return bad("no root directory");
                if (!mode_type_valid(r.mode))
                        return bad("inode %" PRIu64 ": invalid mode 0%" PRIo32, r.ino, r.mode);
                if (r.atime_nsec >= NSEC_PER_SEC || r.mtime_nsec >= NSEC_PER_SEC || r.ctime_nsec >= NSEC_PER_SEC)
                        return bad("inode %" PRIu64 ": nanoseconds out of range", r.ino);
                if (r.nlink == 0)
                        return bad("inode %" PRIu64 ": nlink 0", r.ino);
                if (r.reserved)
                        return bad("inode %" PRIu64 ": reserved field set", r.ino);
                if (r.rdev && type != S_IFCHR && type != S_IFBLK)
                        return bad("inode %" PRIu64 ": rdev on a non-device", r.ino);

                if (r.xattr_first != xattr_pos || r.xattr_count > t->l.n_xattrs - xattr_pos)
                        return bad("inode %" PRIu64 ": xattrs out of range", r.ino);
                xattr_pos += r.xattr_count;
                k = check_xattrs(t, &r);
                if (k < 0)
                        return k;

                if (type != S_IFREG && (r.extent_first != extent_pos || r.extent_count))
                        return bad("inode %" PRIu64 ": extents on a non-regular file", r.ino);
                if (type != S_IFREG && type != S_IFLNK && type != S_IFDIR && (r.data_first || r.data_count))
                        return bad("inode %" PRIu64 ": data on a special file", r.ino);
                if (type != S_IFREG && type != S_IFLNK && r.size)
                        return bad("inode %" PRIu64 ": size %" PRIu64 " on a directory or special file", r.ino,
                                   r.size);

                switch (type) {
                case S_IFDIR:
                        if (r.data_first != dirent_pos || r.data_count > t->l.n_dirents - dirent_pos)
                                return bad("inode %" PRIu64 ": entries out of range", r.ino);
                        dirent_pos += r.data_count;
                        break;
                case S_IFREG:
                        if (r.data_first != fchunk_pos || r.data_count > t->l.n_fchunks - fchunk_pos)
                                return bad("inode %" PRIu64 ": chunk list out of range", r.ino);
                        fchunk_pos += r.data_count;
                        if (r.extent_first != extent_pos || r.extent_count > t->l.n_extents - extent_pos)
                                return bad("inode %" PRIu64 ": extents out of range", r.ino);
                        extent_pos += r.extent_count;
                        k = check_file(t, &r, chunk_used);
                        if (k < 0)
                                return k;
                        break;
                case S_IFLNK:
                        k = check_symlink(t, &r);
                        if (k < 0)
                                return k;
                        break;
                default:
                        break;
                }
        }
        if (xattr_pos != t->l.n_xattrs || dirent_pos != t->l.n_dirents || fchunk_pos != t->l.n_fchunks ||
            extent_pos != t->l.n_extents)
                return bad("records not owned by any inode");
        return 0;
}

/* Directory entries: names, references, the tree shape, nlink. */
static int check_dirents(const struct tree *t)
{
        _cleanup_(freep) uint32_t *refs = NULL, *queue = NULL;
        uint32_t n = (uint32_t)t->l.n_inodes, n_dirs = 0, head = 0, tail = 0;
        struct irec r;
        int k;

        refs = calloc(n, sizeof *refs);
        if (!refs)
                return -ENOMEM;

        for (uint32_t i = 0; i < n; i++) {
                irec_load(inode_ptr(t, i), &r);
                if ((r.mode & S_IFMT) != S_IFDIR)
                        continue;
                /* check_inodes() says more; this pass must not rely on it */
                if (r.data_count > t->l.n_dirents || r.data_first > t->l.n_dirents - r.data_count)
                        return bad("inode %" PRIu64 ": entries out of range", r.ino);
                n_dirs++;
                for (uint32_t j = 0; j < r.data_count; j++) {
                        const uint8_t *p = dirent_ptr(t, (uint64_t)r.data_first + j);
                        uint64_t child = ld64(p + F(tree_dirent_rec, ino));
                        uint32_t noff = ld32(p + F(tree_dirent_rec, name_off)),
                                 nlen = ld32(p + F(tree_dirent_rec, name_len)), c;

                        k = check_name(t, r.ino, j, noff, nlen);
                        if (k < 0)
                                return k;
                        if (j > 0) {
                                const uint8_t *q = p - DIRENT_REC;
                                if (name_cmp(str_at(t, ld32(q + F(tree_dirent_rec, name_off))),
                                             ld32(q + F(tree_dirent_rec, name_len)), str_at(t, noff), nlen) >= 0)
                                        return bad("inode %" PRIu64 " entry %" PRIu32
                                                   ": names not sorted or not unique",
                                                   r.ino, j);
                        }
                        c = inode_index(t, child);
                        if (c == UINT32_MAX)
                                return bad("inode %" PRIu64 " entry %" PRIu32 ": no inode %" PRIu64, r.ino, j,
                                           child);
                        if (c == 0)
                                return bad("inode %" PRIu64 " entry %" PRIu32 ": refers to the root", r.ino, j);
                        if ((ld32(inode_ptr(t, c) + F(tree_inode_rec, mode)) & S_IFMT) == S_IFDIR &&
                            refs[c] > 0)
                                return bad("directory %" PRIu64 " reached twice", child);
                        refs[c]++; /* at most n_dirents <= UINT32_MAX */
                }
        }

        /* Every non-root directory now has at most one parent and the root
         * none; walking down from the root (iteratively) must reach them all,
         * which rules out cycles. */
        queue = malloc(sizeof *queue * MAX(n_dirs, (size_t)1));
        if (!queue)
                return -ENOMEM;
        queue[tail++] = 0;
        while (head < tail) {
                irec_load(inode_ptr(t, queue[head++]), &r);
                for (uint32_t j = 0; j < r.data_count; j++) {
                        uint64_t child = ld64(dirent_ptr(t, (uint64_t)r.data_first + j) + F(tree_dirent_rec, ino));
                        uint32_t c = inode_index(t, child);
                        if ((ld32(inode_ptr(t, c) + F(tree_inode_rec, mode)) & S_IFMT) == S_IFDIR) {
                                if (tail >= n_dirs) /* cannot happen with one parent each */
                                        return bad("directory %" PRIu64 " reached twice", child);
                                queue[tail++] = c;
                        }
                }
        }

        for (uint32_t i = 0; i < n; i++) {
                irec_load(inode_ptr(t, i), &r);
                if ((r.mode & S_IFMT) == S_IFDIR) {
                        if (i > 0 && refs[i] == 0)
                                return bad("directory %" PRIu64 " not in the tree", r.ino);
                } else if (refs[i] != r.nlink)
                        return bad("inode %" PRIu64 ": nlink %" PRIu32 " but %" PRIu32 " references", r.ino,
                                   r.nlink, refs[i]);
        }
        if (tail != n_dirs)
                return bad("%" PRIu32 " directories form a cycle cut off from the root", n_dirs - tail);
        return 0;
}

/* The passes over a tree of at least this many inodes run on two threads. */
#define VALIDATE_THREAD_MIN 16384

struct pass {
        const struct tree *t;
        uint8_t *chunk_used;
        int r;
};

/* The two halves of validate()'s work, about equal on a real tree. Neither
 * relies on the other: each checks the ranges it reads. */
static void *pass_records(void *arg)
{
        struct pass *p = arg;
        quiet = true;
        p->r = check_packs_chunks(p->t);
        if (p->r >= 0)
                p->r = check_inodes(p->t, p->chunk_used);
        return NULL;
}

static void *pass_dirents(void *arg)
{
        struct pass *p = arg;
        quiet = true;
        p->r = check_dirents(p->t);
        return NULL;
}

/* validate(): every rule of tree.h against t->raw; fills nothing. */
static int validate(struct tree *t)
{
        _cleanup_(freep) uint8_t *chunk_used = NULL, *pack_used = NULL;
        int r;

        r = check_header(t->raw, t->len, &t->l);
        if (r < 0)
                return r;
        chunk_used = calloc(t->l.n_chunks + 1, 1);
        pack_used = calloc(t->l.n_packs + 1, 1);
        if (!chunk_used || !pack_used)
                return -ENOMEM;
        if (t->l.n_inodes >= VALIDATE_THREAD_MIN) {
                struct pass a = { .t = t, .chunk_used = chunk_used }, b = { .t = t };
                pthread_t th;
                bool threaded = pthread_create(&th, NULL, pass_dirents, &b) == 0;

                pass_records(&a);
                if (threaded)
                        pthread_join(th, NULL);
                else
                        pass_dirents(&b);
                quiet = false;
                if (a.r == -ENOMEM || b.r == -ENOMEM)
                        return -ENOMEM;
                if (a.r < 0 || b.r < 0) { /* name the problem as one thread would */
                        memset(chunk_used, 0, t->l.n_chunks + 1);
                        r = check_packs_chunks(t);
                        if (r >= 0)
                                r = check_inodes(t, chunk_used);
                        if (r >= 0)
                                r = check_dirents(t);
                        return r < 0 ? r : bad("a check failed on a second thread only");
                }
        } else {
                r = check_packs_chunks(t);
                if (r >= 0)
                        r = check_inodes(t, chunk_used);
                if (r >= 0)
                        r = check_dirents(t);
                if (r < 0)
                        return r;
        }
        for (uint64_t i = 0; i < t->l.n_chunks; i++) {
                if (!chunk_used[i])
                        return bad("chunk %" PRIu64 ": not used by any file", i);
                pack_used[ld32(t->raw + t->l.chunks + i * CHUNK_REC + F(tree_chunk_rec, pack))] = 1;
        }
        for (uint64_t i = 0; i < t->l.n_packs; i++)
                if (!pack_used[i])
                        return bad("pack %" PRIu64 ": not used by any chunk", i);
        return 0;
}

/* parse_owned(): takes raw (malloc'd, or mapped) whatever happens. */
static int parse_owned(uint8_t *raw, size_t len, bool mapped, struct tree **ret)
{
        _cleanup_(treep_free) struct tree *t = NULL;
        int r;

        t = calloc(1, sizeof *t);
        if (!t) {
                buf_free(raw, len, mapped);
                return -ENOMEM;
        }
        t->raw = raw;
        t->len = len;
        t->mapped = mapped;
        r = validate(t);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(t);
        return 0;
}

int tree_parse(const void *raw, size_t len, struct tree **ret)
{
        uint8_t *copy;

        if ((!raw && len) || !ret)
                return -EINVAL;
        copy = malloc(MAX(len, (size_t)1));
        if (!copy)
                return -ENOMEM;
        if (len)
                memcpy(copy, raw, len);
        return parse_owned(copy, len, false, ret);
}

/* ---- loading: read, hash and inflate at once ----
 *
 * The blob is one or more zstd frames, each declaring its content size,
 * whose contents concatenated are the image; the first holds at least the
 * header. The builder writes the header alone, then frames of
 * TREE_FRAME_SIZE: the first hundred bytes say how large the image is, and
 * each frame inflates on its own, into its place, on whichever core is free,
 * as soon as its bytes have been read. A blob of at least TREE_THREAD_MIN
 * is read and hashed on one thread, in pieces of TREE_PIECE, while two
 * others inflate what has arrived: a resume waits for the slowest of the
 * three, not for their sum. Smaller blobs are not worth a thread. */
#define TREE_THREAD_MIN (256u << 10)
#define TREE_PIECE (512u << 10)

struct load {
        /* set before any thread starts */
        tree_read_fn read; /* NULL: the blob is all there */
        void *ctx;
        uint8_t *blob;
        size_t len;
        const struct digest *expect;
        struct digest got; /* the reader's */
        uint8_t *raw;      /* the image, total bytes; set before the inflaters start */
        size_t total;
        bool raw_mapped;   /* raw is bulk_alloc'd */

        pthread_mutex_t lock;
        pthread_cond_t cond;
        /* under lock */
        size_t avail;          /* bytes of blob read so far */
        bool read_done;
        int read_err;          /* the reader's -errno */
        int err;               /* an inflater's -errno (not the data's fault) */
        size_t in_off, out_off; /* where the next frame starts, in blob and image */
        size_t bad_at;         /* blob offset of the first bad frame; SIZE_MAX: none */
        char why[160];         /* what is wrong there */
};

static void dctxp_free(ZSTD_DCtx **d) { ZSTD_freeDCtx(*d); }
static void sha256p_free(struct sha256 **h) { sha256_free(*h); }

/* load_read(): the reader: the blob piece by piece, hashed as it comes. */
static void *load_read(void *arg)
{
        struct load *L = arg;
        _cleanup_(sha256p_free) struct sha256 *h = NULL;
        size_t off = L->read ? 0 : L->len;
        int err = 0;

        if (L->expect && L->read && !(h = sha256_new()))
                err = -ENOMEM;
        while (!err && off < L->len) {
                ssize_t n = L->read(L->ctx, off, L->blob + off, MIN((size_t)TREE_PIECE, L->len - off));
                if (n < 0)
                        err = (int)n;
                else if (n == 0)
                        err = -EIO; /* the blob is shorter than it should be */
                else if (h && sha256_update(h, L->blob + off, (size_t)n) < 0)
                        err = -ENOMEM;
                else
                        off += (size_t)n;
                pthread_mutex_lock(&L->lock);
                L->avail = off;
                pthread_cond_broadcast(&L->cond);
                pthread_mutex_unlock(&L->lock);
        }
        if (!err && L->expect) {
                if (h)
                        err = sha256_final(h, &L->got) < 0 ? -ENOMEM : 0;
                else
                        digest_sha256(L->blob, L->len, &L->got);
        }
        pthread_mutex_lock(&L->lock);
        L->read_done = true;
        L->read_err = err;
        pthread_cond_broadcast(&L->cond);
        pthread_mutex_unlock(&L->lock);
        return NULL;
}

/* mark_bad(): under lock; the frame at blob offset at is bad. The first bad
 * frame is the one reported, whichever thread found it. */
#define mark_bad(L, at, ...)                                               \
        do {                                                               \
                if ((at) < (L)->bad_at) {                                  \
                        (L)->bad_at = (at);                                \
                        snprintf((L)->why, sizeof (L)->why, __VA_ARGS__);  \
                }                                                          \
        } while (0)

/* next_frame(): under lock; waits until the frame at L->in_off has arrived
 * whole. 1 with *ret_n its length and *ret_c its declared content size, 0 if
 * there is no next frame (the end, an error, or a bad frame: marked). */
static int next_frame(struct load *L, size_t *ret_n, size_t *ret_c)
{
        const uint8_t *p;
        unsigned long long c;
        size_t n;

        for (;;) {
                if (L->read_err || L->err || L->bad_at != SIZE_MAX || L->in_off == L->len)
                        return 0;
                p = L->blob + L->in_off;
                n = ZSTD_findFrameCompressedSize(p, L->avail - L->in_off);
                if (!ZSTD_isError(n))
                        break;
                if (L->read_done) {
                        mark_bad(L, L->in_off, "bytes %zu-%zu of the blob are not a whole zstd frame", L->in_off,
                                 L->len - 1);
                        return 0;
                }
                pthread_cond_wait(&L->cond, &L->lock);
        }
        if ((ld32(p) & ZSTD_MAGIC_SKIPPABLE_MASK) == ZSTD_MAGIC_SKIPPABLE_START) {
                mark_bad(L, L->in_off, "skippable zstd frame at byte %zu", L->in_off);
                return 0;
        }
        c = ZSTD_getFrameContentSize(p, n);
        if (c == ZSTD_CONTENTSIZE_UNKNOWN || c == ZSTD_CONTENTSIZE_ERROR) {
                mark_bad(L, L->in_off, "zstd frame at byte %zu does not declare its content size", L->in_off);
                return 0;
        }
        if (c > TREE_RAW_MAX) {
                mark_bad(L, L->in_off, "zstd frame at byte %zu declares %llu bytes, more than %llu", L->in_off, c,
                         TREE_RAW_MAX);
                return 0;
        }
        /* Every block of a frame has a 3-byte header and yields at most
         * ZSTD_BLOCKSIZE_MAX bytes: refuse a declaration the frame cannot
         * hold before allocating for it. */
        if (c > (unsigned long long)(n / 3) * ZSTD_BLOCKSIZE_MAX) {
                mark_bad(L, L->in_off, "zstd frame of %zu bytes at byte %zu cannot hold the %llu bytes it declares",
                         n, L->in_off, c);
                return 0;
        }
        *ret_n = n;
        *ret_c = (size_t)c;
        return 1;
}

/* load_inflate(): an inflater: claims frames in order, inflates each into
 * its place in the image. */
static void *load_inflate(void *arg)
{
        struct load *L = arg;
        _cleanup_(dctxp_free) ZSTD_DCtx *dctx = ZSTD_createDCtx();
        size_t n, c, in, out, k;

        pthread_mutex_lock(&L->lock);
        if (!dctx)
                L->err = -ENOMEM;
        while (next_frame(L, &n, &c) > 0) {
                if (c == 0) {
                        mark_bad(L, L->in_off, "empty zstd frame at byte %zu", L->in_off);
                        break;
                }
                if (c > L->total - L->out_off) {
                        mark_bad(L, L->in_off, "frames hold more than the image's %zu bytes", L->total);
                        break;
                }
                in = L->in_off;
                out = L->out_off;
                L->in_off += n;
                L->out_off += c;
                pthread_mutex_unlock(&L->lock);
                k = ZSTD_decompressDCtx(dctx, L->raw + out, c, L->blob + in, n);
                pthread_mutex_lock(&L->lock);
                if (ZSTD_isError(k) || k != c)
                        mark_bad(L, in, "zstd frame at byte %zu does not decompress: %s", in,
                                 ZSTD_isError(k) ? ZSTD_getErrorName(k) : "short content");
        }
        pthread_mutex_unlock(&L->lock);
        return NULL;
}

/* load_head(): the first frame, which holds the header: the image's size,
 * its buffer, and the first frame's content in place. 1 if the inflaters
 * can go on, 0 if the blob is bad (marked), -errno. */
static int load_head(struct load *L)
{
        _cleanup_(dctxp_free) ZSTD_DCtx *dctx = NULL;
        _cleanup_(freep) uint8_t *head = NULL;
        struct layout l;
        size_t n, c, k;
        int r;

        pthread_mutex_lock(&L->lock);
        r = next_frame(L, &n, &c);
        pthread_mutex_unlock(&L->lock);
        if (r <= 0)
                return 0;
        /* Only this thread touches the state until the inflaters start. */
        if (c < HDR_SIZE) {
                mark_bad(L, 0, "image of %zu bytes is shorter than its header", c);
                return 0;
        }
        head = malloc(c);
        dctx = ZSTD_createDCtx();
        if (!head || !dctx)
                return -ENOMEM;
        k = ZSTD_decompressDCtx(dctx, head, c, L->blob, n);
        if (ZSTD_isError(k) || k != c) {
                mark_bad(L, 0, "zstd frame at byte 0 does not decompress: %s",
                         ZSTD_isError(k) ? ZSTD_getErrorName(k) : "short content");
                return 0;
        }
        if (header_layout(head, &l, L->why) < 0) {
                L->bad_at = 0;
                return 0;
        }
        if (l.total > TREE_RAW_MAX) {
                mark_bad(L, 0, "the header describes an image of %zu bytes, more than %llu", l.total, TREE_RAW_MAX);
                return 0;
        }
        if (l.total < c) {
                mark_bad(L, 0, "frames hold more than the image's %zu bytes", l.total);
                return 0;
        }
        /* as in next_frame(): the whole blob cannot hold more */
        if (l.total > (L->len / 3) * ZSTD_BLOCKSIZE_MAX) {
                mark_bad(L, 0, "blob of %zu bytes cannot hold the image of %zu bytes its header describes", L->len,
                         l.total);
                return 0;
        }
        if (l.total == c) { /* one frame: the image itself */
                L->raw = TAKE_PTR(head);
        } else {
                L->raw_mapped = l.total >= BULK_MIN;
                L->raw = L->raw_mapped ? bulk_alloc(l.total) : malloc(l.total);
                if (!L->raw)
                        return -ENOMEM;
                memcpy(L->raw, head, c);
        }
        L->total = l.total;
        L->in_off = n;
        L->out_off = c;
        return 1;
}

static int load_run(struct load *L, struct tree **ret)
{
        pthread_t reader, inflater;
        bool threaded = L->len >= TREE_THREAD_MIN, have_reader = false, have_inflater = false;
        int r;

        L->bad_at = SIZE_MAX;
        pthread_mutex_init(&L->lock, NULL);
        pthread_cond_init(&L->cond, NULL);
        if (threaded)
                have_reader = pthread_create(&reader, NULL, load_read, L) == 0;
        if (!have_reader)
                load_read(L);

        r = load_head(L);
        if (r > 0) {
                if (threaded)
                        have_inflater = pthread_create(&inflater, NULL, load_inflate, L) == 0;
                load_inflate(L);
                if (have_inflater)
                        pthread_join(inflater, NULL);
        }
        if (have_reader)
                pthread_join(reader, NULL);
        pthread_cond_destroy(&L->cond);
        pthread_mutex_destroy(&L->lock);

        /* What is wrong, in the order a reader of the log wants it: the blob
         * is not what was asked for, could not be read, is no tree. */
        if (L->read_err)
                r = L->read_err;
        else if (L->expect && !digest_eq(&L->got, L->expect)) {
                char a[DIGEST_STR_LEN + 1], b[DIGEST_STR_LEN + 1];
                r = bad("blob hashes to %s, expected %s", digest_str(&L->got, a), digest_str(L->expect, b));
        } else if (L->bad_at != SIZE_MAX)
                r = bad("%s", L->why);
        else if (r < 0 || L->err)
                r = r < 0 ? r : L->err;
        else if (L->out_off != L->total)
                r = bad("frames hold %zu of the image's %zu bytes", L->out_off, L->total);
        else {
                uint8_t *raw = TAKE_PTR(L->raw);
                return parse_owned(raw, L->total, L->raw_mapped, ret);
        }
        buf_free(L->raw, L->total, L->raw_mapped);
        L->raw = NULL;
        return r;
}

int tree_load(const void *blob, size_t len, const struct digest *expect, struct tree **ret)
{
        struct load L = { .blob = (uint8_t *)blob, .len = len, .avail = len, .expect = expect };

        if (!blob || !ret)
                return -EINVAL;
        if (len == 0)
                return bad("empty blob");
        return load_run(&L, ret);
}

int tree_load_from(tree_read_fn read, void *ctx, size_t len, const struct digest *expect, struct tree **ret)
{
        struct load L = { .read = read, .ctx = ctx, .len = len, .expect = expect };
        bool mapped = len >= BULK_MIN;
        int r;

        if (!read || !ret)
                return -EINVAL;
        if (len == 0)
                return bad("empty blob");
        L.blob = mapped ? bulk_alloc(len) : malloc(len);
        if (!L.blob)
                return -ENOMEM;
        r = load_run(&L, ret);
        buf_free(L.blob, len, mapped);
        return r;
}

/* ---- queries ---- */

uint32_t tree_chunk_size(const struct tree *t) { return t ? t->l.chunk_size : 0; }
uint64_t tree_next_ino(const struct tree *t) { return t ? t->l.next_ino : 0; }
uint32_t tree_n_packs(const struct tree *t) { return t ? (uint32_t)t->l.n_packs : 0; }
uint32_t tree_n_chunks(const struct tree *t) { return t ? (uint32_t)t->l.n_chunks : 0; }
uint32_t tree_n_inodes(const struct tree *t) { return t ? (uint32_t)t->l.n_inodes : 0; }
uint32_t tree_n_dirents(const struct tree *t) { return t ? (uint32_t)t->l.n_dirents : 0; }

const struct digest *tree_pack(const struct tree *t, uint32_t idx)
{
        /* struct digest is a byte array: any address is aligned for it. */
        if (!t || idx >= t->l.n_packs)
                return NULL;
        return (const struct digest *)(t->raw + t->l.packs + (size_t)idx * PACK_SIZE);
}

int tree_chunk(const struct tree *t, uint32_t idx, struct tree_chunk *ret)
{
        if (!t || !ret)
                return -EINVAL;
        if (idx >= t->l.n_chunks)
                return -ENOENT;
        chunk_rec_load(t->raw + t->l.chunks + (size_t)idx * CHUNK_REC, ret, NULL);
        return 0;
}

int tree_chunk_find(const struct tree *t, const struct digest *addr, uint32_t *ret_idx)
{
        size_t lo = 0, hi;

        if (!t || !addr || !ret_idx)
                return -EINVAL;
        hi = t->l.n_chunks;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = memcmp(t->raw + t->l.chunks + mid * CHUNK_REC + F(tree_chunk_rec, addr), addr->b,
                               DIGEST_LEN);
                if (c == 0) {
                        *ret_idx = (uint32_t)mid;
                        return 0;
                }
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return -ENOENT;
}

int tree_inode_at(const struct tree *t, uint32_t idx, struct tree_inode *ret)
{
        struct irec r;

        if (!t || !ret)
                return -EINVAL;
        if (idx >= t->l.n_inodes)
                return -ENOENT;
        irec_load(inode_ptr(t, idx), &r);
        attr_from_irec(&r, &ret->attr);
        ret->idx = idx;
        return 0;
}

int tree_inode(const struct tree *t, uint64_t ino, struct tree_inode *ret)
{
        uint32_t idx;

        if (!t || !ret)
                return -EINVAL;
        idx = inode_index(t, ino);
        if (idx == UINT32_MAX)
                return -ENOENT;
        return tree_inode_at(t, idx, ret);
}

/* The record behind a caller's struct tree_inode; NULL if it is not one of
 * ours (a guard against misuse, not validation). */
static bool inode_rec(const struct tree *t, const struct tree_inode *ino, struct irec *r)
{
        if (!t || !ino || ino->idx >= t->l.n_inodes)
                return false;
        irec_load(inode_ptr(t, ino->idx), r);
        return true;
}

int tree_lookup(const struct tree *t, const struct tree_inode *dir, const char *name, size_t name_len,
                uint64_t *ret_ino)
{
        struct irec r;
        size_t lo = 0, hi;

        if (!name || !ret_ino || !inode_rec(t, dir, &r))
                return -EINVAL;
        if ((r.mode & S_IFMT) != S_IFDIR)
                return -ENOTDIR;
        hi = r.data_count;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                const uint8_t *p = dirent_ptr(t, (uint64_t)r.data_first + mid);
                int c = name_cmp(str_at(t, ld32(p + F(tree_dirent_rec, name_off))),
                                 ld32(p + F(tree_dirent_rec, name_len)), name, name_len);
                if (c == 0) {
                        *ret_ino = ld64(p + F(tree_dirent_rec, ino));
                        return 0;
                }
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return -ENOENT;
}

uint32_t tree_dir_count(const struct tree *t, const struct tree_inode *dir)
{
        struct irec r;
        if (!inode_rec(t, dir, &r) || (r.mode & S_IFMT) != S_IFDIR)
                return 0;
        return r.data_count;
}

/* dirent(): -ENOTDIR, -ENOENT past the last entry. */
int tree_dirent(const struct tree *t, const struct tree_inode *dir, uint32_t i, const char **ret_name,
                size_t *ret_len, uint64_t *ret_ino)
{
        struct irec r;
        const uint8_t *p;

        if (!inode_rec(t, dir, &r))
                return -EINVAL;
        if ((r.mode & S_IFMT) != S_IFDIR)
                return -ENOTDIR;
        if (i >= r.data_count)
                return -ENOENT;
        p = dirent_ptr(t, (uint64_t)r.data_first + i);
        if (ret_name)
                *ret_name = str_at(t, ld32(p + F(tree_dirent_rec, name_off)));
        if (ret_len)
                *ret_len = ld32(p + F(tree_dirent_rec, name_len));
        if (ret_ino)
                *ret_ino = ld64(p + F(tree_dirent_rec, ino));
        return 0;
}

int tree_path_lookup(const struct tree *t, const char *path, struct tree_inode *ret)
{
        struct tree_inode cur;
        int r;

        if (!t || !path || !ret)
                return -EINVAL;
        r = tree_inode_at(t, 0, &cur); /* the root, by validation */
        if (r < 0)
                return r;
        for (const char *p = path; *p;) {
                size_t n = strcspn(p, "/");
                uint64_t ino;
                if (n > 0) {
                        r = tree_lookup(t, &cur, p, n, &ino);
                        if (r < 0)
                                return r;
                        r = tree_inode(t, ino, &cur);
                        if (r < 0)
                                return r;
                }
                p += n;
                p += strspn(p, "/");
        }
        *ret = cur;
        return 0;
}

int tree_symlink(const struct tree *t, const struct tree_inode *ino, const char **ret, size_t *ret_len)
{
        struct irec r;

        if (!ret || !inode_rec(t, ino, &r))
                return -EINVAL;
        if ((r.mode & S_IFMT) != S_IFLNK)
                return -EINVAL;
        *ret = str_at(t, r.data_first);
        if (ret_len)
                *ret_len = r.data_count;
        return 0;
}

uint32_t tree_xattr_count(const struct tree *t, const struct tree_inode *ino)
{
        struct irec r;
        return inode_rec(t, ino, &r) ? r.xattr_count : 0;
}

/* xattr(): -ENOENT past the last one; the value is followed by a NUL byte. */
int tree_xattr(const struct tree *t, const struct tree_inode *ino, uint32_t i, const char **ret_name,
               const void **ret_value, size_t *ret_len)
{
        struct irec r;
        const uint8_t *p;

        if (!inode_rec(t, ino, &r))
                return -EINVAL;
        if (i >= r.xattr_count)
                return -ENOENT;
        p = xattr_ptr(t, (uint64_t)r.xattr_first + i);
        if (ret_name)
                *ret_name = str_at(t, ld32(p + F(tree_xattr_rec, name_off)));
        if (ret_value)
                *ret_value = str_at(t, ld32(p + F(tree_xattr_rec, value_off)));
        if (ret_len)
                *ret_len = ld32(p + F(tree_xattr_rec, value_len));
        return 0;
}

int tree_xattr_get(const struct tree *t, const struct tree_inode *ino, const char *name,
                   const void **ret_value, size_t *ret_len)
{
        struct irec r;
        size_t lo = 0, hi, len;

        if (!name || !inode_rec(t, ino, &r))
                return -EINVAL;
        len = strlen(name);
        hi = r.xattr_count;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                const uint8_t *p = xattr_ptr(t, (uint64_t)r.xattr_first + mid);
                int c = name_cmp(str_at(t, ld32(p + F(tree_xattr_rec, name_off))),
                                 ld32(p + F(tree_xattr_rec, name_len)), name, len);
                if (c == 0) {
                        if (ret_value)
                                *ret_value = str_at(t, ld32(p + F(tree_xattr_rec, value_off)));
                        if (ret_len)
                                *ret_len = ld32(p + F(tree_xattr_rec, value_len));
                        return 0;
                }
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return -ENODATA;
}

uint32_t tree_file_nchunks(const struct tree *t, const struct tree_inode *ino)
{
        struct irec r;
        if (!inode_rec(t, ino, &r) || (r.mode & S_IFMT) != S_IFREG)
                return 0;
        return r.data_count;
}

/* file_chunk(): TREE_HOLE also for i out of range or a non-regular inode. */
uint32_t tree_file_chunk(const struct tree *t, const struct tree_inode *ino, uint32_t i)
{
        struct irec r;
        if (!inode_rec(t, ino, &r) || (r.mode & S_IFMT) != S_IFREG || i >= r.data_count)
                return TREE_HOLE;
        return fchunk_at(t, (uint64_t)r.data_first + i);
}

uint32_t tree_extent_count(const struct tree *t, const struct tree_inode *ino)
{
        struct irec r;
        return inode_rec(t, ino, &r) ? r.extent_count : 0;
}

/* extent(): i out of range gives an empty extent at 0. */
void tree_extent(const struct tree *t, const struct tree_inode *ino, uint32_t i, uint64_t *ret_off,
                 uint64_t *ret_len)
{
        struct irec r;
        uint64_t off = 0, len = 0;

        if (inode_rec(t, ino, &r) && i < r.extent_count) {
                const uint8_t *p = extent_ptr(t, (uint64_t)r.extent_first + i);
                off = ld64(p + F(tree_extent_rec, off));
                len = ld64(p + F(tree_extent_rec, len));
        }
        if (ret_off)
                *ret_off = off;
        if (ret_len)
                *ret_len = len;
}

/* ---- building ---- */

struct bnode {
        struct tree_attr a;
        uint64_t sym_off; /* in the pool */
        uint32_t sym_len;
        bool has_chunks;
        uint32_t chunks_first, chunks_count; /* in tb->fchunks */
        /* set by finish(): */
        uint32_t pos; /* index in the image */
        uint32_t refs, n_dirents, n_xattrs, n_extents;
};

struct bdirent {
        uint32_t dir, key; /* key: the dir's position, set by finish() */
        uint32_t name_len, seq;
        uint64_t name_off, ino;
};

struct bxattr {
        uint32_t handle, key;
        uint32_t name_len, value_len, seq;
        uint64_t name_off, value_off;
};

struct bextent {
        uint32_t handle, key, seq;
        uint64_t off, len;
};

/* Open-addressing set of indices into an array of digests; slot 0 = empty. */
struct dset {
        uint32_t *slot;
        size_t cap; /* power of two */
};

struct tree_builder {
        uint32_t chunk_size;
        uint64_t next_ino;

        struct digest *packs;
        size_t n_packs, cap_packs;
        struct dset pack_set;
        struct tree_chunk *chunks;
        size_t n_chunks, cap_chunks;
        struct dset chunk_set;

        struct bnode *nodes;
        size_t n_nodes, cap_nodes;
        uint32_t *fchunks;
        size_t n_fchunks, cap_fchunks;
        struct bdirent *dirents;
        size_t n_dirents, cap_dirents;
        struct bxattr *xattrs;
        size_t n_xattrs, cap_xattrs;
        struct bextent *extents;
        size_t n_extents, cap_extents;
        char *pool;
        size_t n_pool, cap_pool;
};

/* grow(): room for n more elements in *p, doubling. */
static int grow(void *pp, size_t *cap, size_t used, size_t n, size_t elem)
{
        void **p = pp;
        size_t need, ncap;
        void *q;

        if (__builtin_add_overflow(used, n, &need))
                return -ENOMEM;
        if (need <= *cap)
                return 0;
        ncap = MAX(*cap * 2, MAX(need, (size_t)16));
        if (ncap > SIZE_MAX / elem)
                return -ENOMEM;
        q = realloc(*p, ncap * elem);
        if (!q)
                return -ENOMEM;
        *p = q;
        *cap = ncap;
        return 0;
}

#define GROW(tb, name, k) grow(&(tb)->name, &(tb)->cap_##name, (tb)->n_##name, (k), sizeof *(tb)->name)

static uint64_t dhash(const struct digest *d)
{
        uint64_t h;
        memcpy(&h, d->b, sizeof h); /* SHA-256 bits are uniform */
        return h;
}

/* dset_find(): the slot for d: holding it, or the empty one to put it in. */
static uint32_t *dset_find(const struct dset *s, const void *base, size_t stride, const struct digest *d)
{
        size_t mask = s->cap - 1;
        for (size_t i = dhash(d) & mask;; i = (i + 1) & mask) {
                uint32_t v = s->slot[i];
                if (!v || digest_eq((const struct digest *)((const char *)base + (v - 1) * stride), d))
                        return &s->slot[i];
        }
}

/* dset_reserve(): room for n entries at load <= 1/2, rehashing. */
static int dset_reserve(struct dset *s, const void *base, size_t stride, size_t n)
{
        struct dset ns;

        if (n <= s->cap / 2)
                return 0;
        ns.cap = MAX(s->cap * 2, (size_t)64);
        while (n > ns.cap / 2)
                ns.cap *= 2;
        ns.slot = calloc(ns.cap, sizeof *ns.slot);
        if (!ns.slot)
                return -ENOMEM;
        for (size_t i = 0; i < s->cap; i++)
                if (s->slot[i])
                        *dset_find(&ns, base, stride,
                                   (const struct digest *)((const char *)base + (s->slot[i] - 1) * stride)) =
                                s->slot[i];
        free(s->slot);
        *s = ns;
        return 0;
}

struct tree_builder *tree_builder_new(uint32_t chunk_size)
{
        struct tree_builder *tb;

        if (!chunk_size_valid(chunk_size))
                return NULL;
        tb = calloc(1, sizeof *tb);
        if (!tb)
                return NULL;
        tb->chunk_size = chunk_size;
        return tb;
}

struct tree_builder *tree_builder_free(struct tree_builder *tb)
{
        if (tb) {
                free(tb->packs);
                free(tb->pack_set.slot);
                free(tb->chunks);
                free(tb->chunk_set.slot);
                free(tb->nodes);
                free(tb->fchunks);
                free(tb->dirents);
                free(tb->xattrs);
                free(tb->extents);
                free(tb->pool);
                free(tb);
        }
        return NULL;
}

int tree_builder_add_pack(struct tree_builder *tb, const struct digest *d, uint32_t *ret_idx)
{
        uint32_t *slot;
        int r;

        if (!tb || !d || !ret_idx)
                return -EINVAL;
        if (tb->n_packs >= UINT32_MAX - 1)
                return -E2BIG;
        r = dset_reserve(&tb->pack_set, tb->packs, sizeof *tb->packs, tb->n_packs + 1);
        if (r < 0)
                return r;
        slot = dset_find(&tb->pack_set, tb->packs, sizeof *tb->packs, d);
        if (!*slot) {
                r = GROW(tb, packs, 1);
                if (r < 0)
                        return r;
                /* The set holds indices, so moving the array is fine. */
                tb->packs[tb->n_packs++] = *d;
                *slot = (uint32_t)tb->n_packs;
        }
        *ret_idx = *slot - 1;
        return 0;
}

int tree_builder_add_chunk(struct tree_builder *tb, const struct tree_chunk *c, uint32_t *ret_idx)
{
        uint32_t *slot;
        int r;

        if (!tb || !c || !ret_idx)
                return -EINVAL;
        if (c->pack >= tb->n_packs || c->ulen == 0 || c->ulen > tb->chunk_size || c->clen == 0 ||
            c->clen > ZSTD_compressBound(c->ulen) || c->offset > UINT64_MAX - c->clen)
                return -EINVAL;
        if (tb->n_chunks >= TREE_HOLE - 1)
                return -E2BIG;
        r = dset_reserve(&tb->chunk_set, tb->chunks, sizeof *tb->chunks, tb->n_chunks + 1);
        if (r < 0)
                return r;
        slot = dset_find(&tb->chunk_set, tb->chunks, sizeof *tb->chunks, &c->addr);
        if (*slot) {
                /* Same address, same bytes: the first copy's location wins. */
                if (tb->chunks[*slot - 1].ulen != c->ulen)
                        return -EINVAL;
        } else {
                r = GROW(tb, chunks, 1);
                if (r < 0)
                        return r;
                tb->chunks[tb->n_chunks++] = *c;
                *slot = (uint32_t)tb->n_chunks;
        }
        *ret_idx = *slot - 1;
        return 0;
}

/* add_inode(): normalizes what the format fixes: a directory's, device's,
 * fifo's or socket's size is 0; only devices have an rdev; a symlink's size
 * is its target's length (set_symlink()). A non-directory's nlink is
 * recomputed at finish() as the number of entries naming it, so a hardlink
 * group cut by the edge of a committed subtree still makes a valid tree. */
int tree_builder_add_inode(struct tree_builder *tb, const struct tree_attr *a, uint32_t *ret_handle)
{
        struct bnode *n;
        uint32_t type;
        int r;

        if (!tb || !a || !ret_handle)
                return -EINVAL;
        if (a->ino == 0 || !mode_type_valid(a->mode) || a->atime.tv_nsec < 0 ||
            a->atime.tv_nsec >= (long)NSEC_PER_SEC || a->mtime.tv_nsec < 0 ||
            a->mtime.tv_nsec >= (long)NSEC_PER_SEC || a->ctime.tv_nsec < 0 ||
            a->ctime.tv_nsec >= (long)NSEC_PER_SEC)
                return -EINVAL;
        if (tb->n_nodes >= UINT32_MAX - 1)
                return -E2BIG;
        r = GROW(tb, nodes, 1);
        if (r < 0)
                return r;
        n = &tb->nodes[tb->n_nodes];
        *n = (struct bnode){ .a = *a };
        type = a->mode & S_IFMT;
        if (type != S_IFREG && type != S_IFLNK)
                n->a.size = 0;
        if (type != S_IFCHR && type != S_IFBLK)
                n->a.rdev = 0;
        if (type == S_IFLNK)
                n->a.size = 0; /* until set_symlink() */
        *ret_handle = (uint32_t)tb->n_nodes++;
        return 0;
}

static struct bnode *node_of(struct tree_builder *tb, uint32_t handle, uint32_t type)
{
        if (!tb || handle >= tb->n_nodes || (tb->nodes[handle].a.mode & S_IFMT) != type)
                return NULL;
        return &tb->nodes[handle];
}

/* pool_add(): bytes into the string pool; the NUL comes at serialization. */
static int pool_add(struct tree_builder *tb, const void *s, size_t len, uint64_t *ret_off)
{
        int r = GROW(tb, pool, len);
        if (r < 0)
                return r;
        if (len)
                memcpy(tb->pool + tb->n_pool, s, len);
        *ret_off = tb->n_pool;
        tb->n_pool += len;
        return 0;
}

int tree_builder_set_symlink(struct tree_builder *tb, uint32_t handle, const char *target, size_t len)
{
        struct bnode *n = node_of(tb, handle, S_IFLNK);
        uint64_t off;
        int r;

        if (!n || !target || len == 0 || len > TREE_SYMLINK_MAX || memchr(target, '\0', len))
                return -EINVAL;
        r = pool_add(tb, target, len, &off);
        if (r < 0)
                return r;
        n = &tb->nodes[handle];
        n->sym_off = off;
        n->sym_len = (uint32_t)len;
        n->a.size = len;
        return 0;
}

int tree_builder_add_xattr(struct tree_builder *tb, uint32_t handle, const char *name, const void *value,
                           size_t len)
{
        uint64_t noff, voff;
        size_t nlen;
        int r;

        if (!tb || handle >= tb->n_nodes || !name || (!value && len))
                return -EINVAL;
        nlen = strlen(name);
        if (nlen == 0 || nlen > TREE_XATTR_NAME_MAX || len > TREE_XATTR_VALUE_MAX)
                return -EINVAL;
        r = GROW(tb, xattrs, 1);
        if (r < 0)
                return r;
        r = pool_add(tb, name, nlen, &noff);
        if (r < 0)
                return r;
        r = pool_add(tb, value, len, &voff);
        if (r < 0)
                return r;
        tb->xattrs[tb->n_xattrs] = (struct bxattr){
                .handle = handle,
                .name_len = (uint32_t)nlen,
                .value_len = (uint32_t)len,
                .seq = (uint32_t)tb->n_xattrs,
                .name_off = noff,
                .value_off = voff,
        };
        tb->n_xattrs++;
        return 0;
}

/* set_chunks(): replaces an earlier list. */
int tree_builder_set_chunks(struct tree_builder *tb, uint32_t handle, const uint32_t *chunks, size_t n)
{
        struct bnode *node = node_of(tb, handle, S_IFREG);
        int r;

        if (!node || (!chunks && n) || n > UINT32_MAX)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (chunks[i] != TREE_HOLE && chunks[i] >= tb->n_chunks)
                        return -EINVAL;
        r = GROW(tb, fchunks, n);
        if (r < 0)
                return r;
        if (n)
                memcpy(tb->fchunks + tb->n_fchunks, chunks, n * sizeof *chunks);
        node->has_chunks = true;
        node->chunks_first = (uint32_t)tb->n_fchunks;
        node->chunks_count = (uint32_t)n;
        tb->n_fchunks += n;
        return 0;
}

int tree_builder_add_extent(struct tree_builder *tb, uint32_t handle, uint64_t off, uint64_t len)
{
        int r;

        if (!node_of(tb, handle, S_IFREG) || len == 0 || off > UINT64_MAX - len)
                return -EINVAL;
        r = GROW(tb, extents, 1);
        if (r < 0)
                return r;
        tb->extents[tb->n_extents] = (struct bextent){
                .handle = handle,
                .seq = (uint32_t)tb->n_extents,
                .off = off,
                .len = len,
        };
        tb->n_extents++;
        return 0;
}

int tree_builder_add_dirent(struct tree_builder *tb, uint32_t dir_handle, const char *name, size_t name_len,
                            uint64_t child_ino)
{
        uint64_t off;
        int r;

        if (!node_of(tb, dir_handle, S_IFDIR) || !name || name_len == 0 || name_len > TREE_NAME_MAX ||
            (name_len == 1 && name[0] == '.') || (name_len == 2 && name[0] == '.' && name[1] == '.') ||
            memchr(name, '/', name_len) || memchr(name, '\0', name_len) || child_ino == 0)
                return -EINVAL;
        r = GROW(tb, dirents, 1);
        if (r < 0)
                return r;
        r = pool_add(tb, name, name_len, &off);
        if (r < 0)
                return r;
        tb->dirents[tb->n_dirents] = (struct bdirent){
                .dir = dir_handle,
                .name_len = (uint32_t)name_len,
                .seq = (uint32_t)tb->n_dirents,
                .name_off = off,
                .ino = child_ino,
        };
        tb->n_dirents++;
        return 0;
}

void tree_builder_set_next_ino(struct tree_builder *tb, uint64_t next_ino)
{
        if (tb)
                tb->next_ino = next_ino;
}

/* Sorting (glibc qsort_r(), for a context without global state). Records
 * carry their owner's position as key, set by finish(); seq keeps the order
 * of equal keys deterministic, so one tree always gives one image. */
static void sort(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *, void *), void *ctx)
{
        if (n > 1) /* base may be NULL when n is 0 */
                qsort_r(base, n, size, cmp, ctx);
}

static int cmp_handle_ino(const void *x, const void *y, void *ctx)
{
        const struct tree_builder *tb = ctx;
        uint64_t a = tb->nodes[*(const uint32_t *)x].a.ino, b = tb->nodes[*(const uint32_t *)y].a.ino;
        return a < b ? -1 : a > b;
}

static int cmp_u32_digest(const void *x, const void *y, void *ctx)
{
        const struct digest *base = ctx;
        return digest_cmp(&base[*(const uint32_t *)x], &base[*(const uint32_t *)y]);
}

static int cmp_u32_chunk(const void *x, const void *y, void *ctx)
{
        const struct tree_chunk *base = ctx;
        return digest_cmp(&base[*(const uint32_t *)x].addr, &base[*(const uint32_t *)y].addr);
}

static int cmp_dirent(const void *x, const void *y, void *ctx)
{
        const struct tree_builder *tb = ctx;
        const struct bdirent *a = x, *b = y;
        int c;
        if (a->key != b->key)
                return a->key < b->key ? -1 : 1;
        c = name_cmp(tb->pool + a->name_off, a->name_len, tb->pool + b->name_off, b->name_len);
        if (c)
                return c;
        return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static int cmp_xattr(const void *x, const void *y, void *ctx)
{
        const struct tree_builder *tb = ctx;
        const struct bxattr *a = x, *b = y;
        int c;
        if (a->key != b->key)
                return a->key < b->key ? -1 : 1;
        c = name_cmp(tb->pool + a->name_off, a->name_len, tb->pool + b->name_off, b->name_len);
        if (c)
                return c;
        return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static int cmp_extent(const void *x, const void *y, void *ctx _unused_)
{
        const struct bextent *a = x, *b = y;
        if (a->key != b->key)
                return a->key < b->key ? -1 : 1;
        if (a->off != b->off)
                return a->off < b->off ? -1 : 1;
        return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* Position of the inode numbered ino via the ino-sorted order; UINT32_MAX if none. */
static uint32_t builder_pos(const struct tree_builder *tb, const uint32_t *order, uint64_t ino)
{
        size_t lo = 0, hi = tb->n_nodes;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                uint64_t v = tb->nodes[order[mid]].a.ino;
                if (v == ino)
                        return (uint32_t)mid;
                if (v < ino)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return UINT32_MAX;
}

/* put_str(): a string and its NUL at *pos in the strings section. */
static uint32_t put_str(uint8_t *strings, uint64_t *pos, const char *s, uint32_t len)
{
        uint32_t off = (uint32_t)*pos;
        if (len)
                memcpy(strings + off, s, len);
        strings[off + len] = '\0';
        *pos += (uint64_t)len + 1;
        return off;
}

static void cctxp_free(ZSTD_CCtx **c) { ZSTD_freeCCtx(*c); }

int tree_builder_finish(struct tree_builder *tb, int level, void **ret, size_t *ret_len,
                        struct digest *ret_digest)
{
        return tree_builder_finish_tree(tb, level, ret, ret_len, ret_digest, NULL);
}

int tree_builder_finish_tree(struct tree_builder *tb, int level, void **ret, size_t *ret_len,
                             struct digest *ret_digest, struct tree **ret_tree)
{
        _cleanup_(freep) uint32_t *order = NULL, *chunk_map = NULL, *pack_map = NULL, *chunk_list = NULL,
                                  *pack_list = NULL;
        _cleanup_(freep) uint8_t *raw = NULL, *out = NULL;
        _cleanup_(cctxp_free) ZSTD_CCtx *cctx = NULL;
        struct layout l = {};
        uint64_t strings_len = 0, spos = 0, xpos = 0, dpos = 0, fpos = 0, epos = 0;
        size_t n_chunk_list = 0, n_pack_list = 0, bound, clen;
        struct digest d;
        uint8_t *strings;
        int r;

        if (!tb || !ret || !ret_len)
                return -EINVAL;
        if (tb->n_nodes == 0)
                return log_error_errno(EINVAL, "tree: no root directory");

        /* Inodes in ino order. */
        order = malloc(sizeof *order * tb->n_nodes);
        chunk_map = malloc(sizeof *chunk_map * (tb->n_chunks + 1));
        pack_map = malloc(sizeof *pack_map * (tb->n_packs + 1));
        chunk_list = malloc(sizeof *chunk_list * (tb->n_chunks + 1));
        pack_list = malloc(sizeof *pack_list * (tb->n_packs + 1));
        if (!order || !chunk_map || !pack_map || !chunk_list || !pack_list)
                return -ENOMEM;
        for (size_t i = 0; i < tb->n_nodes; i++)
                order[i] = (uint32_t)i;
        sort(order, tb->n_nodes, sizeof *order, cmp_handle_ino, tb);
        for (size_t i = 0; i < tb->n_nodes; i++) {
                struct bnode *n = &tb->nodes[order[i]];
                if (i > 0 && n->a.ino == tb->nodes[order[i - 1]].a.ino)
                        return log_error_errno(EINVAL, "tree: inode %" PRIu64 " added twice", n->a.ino);
                n->pos = (uint32_t)i;
                n->refs = n->n_dirents = n->n_xattrs = n->n_extents = 0;
        }

        /* References, for nlink. */
        for (size_t i = 0; i < tb->n_dirents; i++) {
                struct bdirent *e = &tb->dirents[i];
                uint32_t p = builder_pos(tb, order, e->ino);
                e->key = tb->nodes[e->dir].pos;
                tb->nodes[e->dir].n_dirents++;
                if (p == UINT32_MAX)
                        return log_error_errno(EINVAL, "tree: an entry of inode %" PRIu64 " names missing inode %" PRIu64,
                                               tb->nodes[e->dir].a.ino, e->ino);
                tb->nodes[order[p]].refs++;
        }
        for (size_t i = 0; i < tb->n_nodes; i++) {
                const struct bnode *n = &tb->nodes[order[i]];
                if ((n->a.mode & S_IFMT) != S_IFDIR && n->refs == 0)
                        return log_error_errno(EINVAL, "tree: inode %" PRIu64 " is in no directory", n->a.ino);
        }
        for (size_t i = 0; i < tb->n_xattrs; i++) {
                tb->xattrs[i].key = tb->nodes[tb->xattrs[i].handle].pos;
                tb->nodes[tb->xattrs[i].handle].n_xattrs++;
        }
        for (size_t i = 0; i < tb->n_extents; i++) {
                tb->extents[i].key = tb->nodes[tb->extents[i].handle].pos;
                tb->nodes[tb->extents[i].handle].n_extents++;
        }
        sort(tb->dirents, tb->n_dirents, sizeof *tb->dirents, cmp_dirent, tb);
        sort(tb->xattrs, tb->n_xattrs, sizeof *tb->xattrs, cmp_xattr, tb);
        sort(tb->extents, tb->n_extents, sizeof *tb->extents, cmp_extent, NULL);

        /* Keep only chunks some file uses and packs those chunks use,
         * renumbered in address / digest order. */
        memset(chunk_map, 0xff, sizeof *chunk_map * (tb->n_chunks + 1));
        memset(pack_map, 0xff, sizeof *pack_map * (tb->n_packs + 1));
        l.n_fchunks = 0;
        for (size_t i = 0; i < tb->n_nodes; i++) {
                struct bnode *n = &tb->nodes[i];
                if ((n->a.mode & S_IFMT) != S_IFREG || !n->has_chunks)
                        continue;
                l.n_fchunks += n->chunks_count;
                for (uint32_t j = 0; j < n->chunks_count; j++) {
                        uint32_t c = tb->fchunks[n->chunks_first + j];
                        if (c != TREE_HOLE && chunk_map[c] == UINT32_MAX) {
                                chunk_map[c] = 0;
                                chunk_list[n_chunk_list++] = c;
                                if (pack_map[tb->chunks[c].pack] == UINT32_MAX) {
                                        pack_map[tb->chunks[c].pack] = 0;
                                        pack_list[n_pack_list++] = tb->chunks[c].pack;
                                }
                        }
                }
        }
        sort(chunk_list, n_chunk_list, sizeof *chunk_list, cmp_u32_chunk, tb->chunks);
        sort(pack_list, n_pack_list, sizeof *pack_list, cmp_u32_digest, tb->packs);
        for (size_t i = 0; i < n_chunk_list; i++)
                chunk_map[chunk_list[i]] = (uint32_t)i;
        for (size_t i = 0; i < n_pack_list; i++)
                pack_map[pack_list[i]] = (uint32_t)i;

        /* Sizes. */
        for (size_t i = 0; i < tb->n_nodes; i++)
                if ((tb->nodes[i].a.mode & S_IFMT) == S_IFLNK)
                        strings_len += (uint64_t)tb->nodes[i].sym_len + 1;
        for (size_t i = 0; i < tb->n_xattrs; i++)
                strings_len += (uint64_t)tb->xattrs[i].name_len + tb->xattrs[i].value_len + 2;
        for (size_t i = 0; i < tb->n_dirents; i++)
                strings_len += (uint64_t)tb->dirents[i].name_len + 1;
        l.chunk_size = tb->chunk_size;
        l.next_ino = tb->next_ino;
        for (size_t i = 0; i < tb->n_nodes && !tb->next_ino; i++) /* default: past the largest */
                l.next_ino = MAX(l.next_ino, tb->nodes[i].a.ino + 1);
        l.n_packs = n_pack_list;
        l.n_chunks = n_chunk_list;
        l.n_inodes = tb->n_nodes;
        l.n_dirents = tb->n_dirents;
        l.n_extents = tb->n_extents;
        l.n_xattrs = tb->n_xattrs;
        l.strings_len = strings_len;
        if (l.next_ino == 0 || l.n_fchunks > UINT32_MAX || l.n_dirents > UINT32_MAX ||
            l.n_extents > UINT32_MAX || l.n_xattrs > UINT32_MAX || strings_len > UINT32_MAX ||
            layout_compute(&l) < 0 || l.total > TREE_RAW_MAX)
                return log_error_errno(EFBIG, "tree: too large for the format");

        raw = calloc(1, l.total);
        if (!raw)
                return -ENOMEM;
        strings = raw + l.strings;

        memcpy(raw + F(tree_hdr, magic), TREE_MAGIC, 8);
        st32(raw + F(tree_hdr, version), TREE_VERSION);
        st32(raw + F(tree_hdr, chunk_size), l.chunk_size);
        st64(raw + F(tree_hdr, next_ino), l.next_ino);
        st64(raw + F(tree_hdr, n_packs), l.n_packs);
        st64(raw + F(tree_hdr, n_chunks), l.n_chunks);
        st64(raw + F(tree_hdr, n_inodes), l.n_inodes);
        st64(raw + F(tree_hdr, n_dirents), l.n_dirents);
        st64(raw + F(tree_hdr, n_fchunks), l.n_fchunks);
        st64(raw + F(tree_hdr, n_extents), l.n_extents);
        st64(raw + F(tree_hdr, n_xattrs), l.n_xattrs);
        st64(raw + F(tree_hdr, strings_len), l.strings_len);

        for (size_t i = 0; i < n_pack_list; i++)
                memcpy(raw + l.packs + i * PACK_SIZE, tb->packs[pack_list[i]].b, PACK_SIZE);
        for (size_t i = 0; i < n_chunk_list; i++) {
                struct tree_chunk c = tb->chunks[chunk_list[i]];
                c.pack = pack_map[c.pack];
                chunk_rec_store(raw + l.chunks + i * CHUNK_REC, &c);
        }

        /* Inodes in order, each one's records and strings contiguous. The
         * sorted dirent/xattr/extent arrays are in the same order. */
        for (size_t i = 0; i < tb->n_nodes; i++) {
                const struct bnode *n = &tb->nodes[order[i]];
                uint32_t type = n->a.mode & S_IFMT;
                struct irec rec = {
                        .ino = n->a.ino,
                        .size = n->a.size,
                        .rdev = n->a.rdev,
                        .atime_sec = n->a.atime.tv_sec,
                        .mtime_sec = n->a.mtime.tv_sec,
                        .ctime_sec = n->a.ctime.tv_sec,
                        .atime_nsec = (uint32_t)n->a.atime.tv_nsec,
                        .mtime_nsec = (uint32_t)n->a.mtime.tv_nsec,
                        .ctime_nsec = (uint32_t)n->a.ctime.tv_nsec,
                        .mode = n->a.mode,
                        .uid = n->a.uid,
                        .gid = n->a.gid,
                        .nlink = type == S_IFDIR ? n->a.nlink : n->refs,
                        .xattr_first = (uint32_t)xpos,
                        .xattr_count = n->n_xattrs,
                        .extent_first = (uint32_t)epos,
                        .extent_count = n->n_extents,
                };

                if (type == S_IFLNK) {
                        rec.data_first = put_str(strings, &spos, tb->pool + n->sym_off, n->sym_len);
                        rec.data_count = n->sym_len;
                }
                for (uint32_t j = 0; j < n->n_xattrs; j++, xpos++) {
                        const struct bxattr *x = &tb->xattrs[xpos];
                        uint8_t *p = raw + l.xattrs + xpos * XATTR_REC;
                        st32(p + F(tree_xattr_rec, name_off), put_str(strings, &spos, tb->pool + x->name_off, x->name_len));
                        st32(p + F(tree_xattr_rec, name_len), x->name_len);
                        st32(p + F(tree_xattr_rec, value_off),
                             put_str(strings, &spos, tb->pool + x->value_off, x->value_len));
                        st32(p + F(tree_xattr_rec, value_len), x->value_len);
                }
                if (type == S_IFDIR) {
                        rec.data_first = (uint32_t)dpos;
                        rec.data_count = n->n_dirents;
                        for (uint32_t j = 0; j < n->n_dirents; j++, dpos++) {
                                const struct bdirent *e = &tb->dirents[dpos];
                                uint8_t *p = raw + l.dirents + dpos * DIRENT_REC;
                                st64(p + F(tree_dirent_rec, ino), e->ino);
                                st32(p + F(tree_dirent_rec, name_off),
                                     put_str(strings, &spos, tb->pool + e->name_off, e->name_len));
                                st32(p + F(tree_dirent_rec, name_len), e->name_len);
                        }
                }
                if (type == S_IFREG) {
                        rec.data_first = (uint32_t)fpos;
                        rec.data_count = n->has_chunks ? n->chunks_count : 0;
                        for (uint32_t j = 0; j < rec.data_count; j++, fpos++) {
                                uint32_t c = tb->fchunks[n->chunks_first + j];
                                st32(raw + l.fchunks + fpos * FCHUNK_REC, c == TREE_HOLE ? TREE_HOLE : chunk_map[c]);
                        }
                }
                for (uint32_t j = 0; j < n->n_extents; j++, epos++) {
                        const struct bextent *e = &tb->extents[epos];
                        uint8_t *p = raw + l.extents + epos * EXTENT_REC;
                        st64(p + F(tree_extent_rec, off), e->off);
                        st64(p + F(tree_extent_rec, len), e->len);
                }
                irec_store(raw + l.inodes + i * INODE_REC, &rec);
        }

        /* Self-check: what we write, we can read. */
        struct tree check = { .raw = raw, .len = l.total };
        r = validate(&check);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return -EINVAL; /* validate() logged the problem */

        /* The header alone, then frames of TREE_FRAME_SIZE (tree_load()). */
        cctx = ZSTD_createCCtx();
        bound = ZSTD_compressBound(HDR_SIZE);
        for (size_t off = HDR_SIZE; off < l.total; off += TREE_FRAME_SIZE)
                bound += ZSTD_compressBound(MIN((size_t)TREE_FRAME_SIZE, l.total - off));
        out = malloc(bound);
        if (!cctx || !out)
                return -ENOMEM;
        if (ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 0)))
                return log_error_errno(EINVAL, "tree: zstd rejects level %d", level);
        clen = 0;
        for (size_t off = 0, n; off < l.total; off += n) {
                size_t k;
                n = off == 0 ? HDR_SIZE : MIN((size_t)TREE_FRAME_SIZE, l.total - off);
                k = ZSTD_compress2(cctx, out + clen, bound - clen, raw + off, n);
                if (ZSTD_isError(k))
                        return log_error_errno(EIO, "tree: zstd: %s", ZSTD_getErrorName(k));
                clen += k;
        }
        digest_sha256(out, clen, &d);

        if (ret_tree) { /* the tree just checked: what tree_load() of the blob would give */
                struct tree *t = malloc(sizeof *t);
                if (!t)
                        return -ENOMEM;
                *t = check;
                t->raw = TAKE_PTR(raw);
                *ret_tree = t;
        }
        *ret = TAKE_PTR(out);
        *ret_len = clen;
        if (ret_digest)
                *ret_digest = d;
        return 0;
}
