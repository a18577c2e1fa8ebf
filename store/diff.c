/* diff.c — store_diff(): what changed between two snapshots, by path.
 *
 * Both trees are walked together, directory by directory; entries are sorted
 * the same way in both, so each directory is one merge. Regular files compare
 * chunk addresses position by position, so the changed byte ranges come out
 * at chunk granularity without reading any file data. */
#include "commit.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "tree.h"
#include "util.h"

struct differ {
        const struct tree *ta, *tb;
        diff_fn fn;
        void *ctx;
};

static int name_order(const char *a, size_t al, const char *b, size_t bl)
{
        int c = memcmp(a, b, MIN(al, bl));
        if (c)
                return c;
        return al < bl ? -1 : al > bl;
}

/* report_all(): kind for path and, for directories, everything below it. */
static int report_all(struct differ *d, const struct tree *t, const struct tree_inode *ti, const char *path,
                      enum diff_kind kind)
{
        int r = d->fn(d->ctx, kind, path, NULL, NULL, 0);
        if (r < 0 || !S_ISDIR(ti->attr.mode))
                return r;
        for (uint32_t i = 0; i < tree_dir_count(t, ti); i++) {
                _cleanup_(freep) char *p = NULL;
                const char *name;
                size_t len;
                uint64_t ino;
                struct tree_inode c;
                if ((r = tree_dirent(t, ti, i, &name, &len, &ino)) < 0 || (r = tree_inode(t, ino, &c)) < 0)
                        return r;
                if (asprintf(&p, "%s/%s", path, name) < 0)
                        return -ENOMEM;
                r = report_all(d, t, &c, p, kind);
                if (r < 0)
                        return r;
        }
        return 0;
}

static bool xattrs_equal(struct differ *d, const struct tree_inode *a, const struct tree_inode *b)
{
        uint32_t n = tree_xattr_count(d->ta, a);
        if (n != tree_xattr_count(d->tb, b))
                return false;
        for (uint32_t i = 0; i < n; i++) {
                const char *na, *nb;
                const void *va, *vb;
                size_t la, lb;
                tree_xattr(d->ta, a, i, &na, &va, &la);
                tree_xattr(d->tb, b, i, &nb, &vb, &lb);
                if (strcmp(na, nb) || la != lb || memcmp(va, vb, la))
                        return false;
        }
        return true;
}

static bool chunk_same(struct differ *d, const struct tree_inode *a, const struct tree_inode *b, uint32_t k)
{
        uint32_t ia = k < tree_file_nchunks(d->ta, a) ? tree_file_chunk(d->ta, a, k) : TREE_HOLE;
        uint32_t ib = k < tree_file_nchunks(d->tb, b) ? tree_file_chunk(d->tb, b, k) : TREE_HOLE;
        struct tree_chunk ca, cb;
        if (ia == TREE_HOLE || ib == TREE_HOLE)
                return ia == ib;
        if (tree_chunk(d->ta, ia, &ca) < 0 || tree_chunk(d->tb, ib, &cb) < 0)
                return false;
        return digest_eq(&ca.addr, &cb.addr);
}

static int compare(struct differ *d, const struct tree_inode *a, const struct tree_inode *b, const char *path)
{
        const struct tree_attr *x = &a->attr, *y = &b->attr;
        char what[128] = "";
        uint64_t (*ranges)[2] = NULL;
        size_t n_ranges = 0;
        int r;

#define WHAT(s) (void)snprintf(what + strlen(what), sizeof what - strlen(what), "%s%s", what[0] ? "," : "", s)
        if ((x->mode & S_IFMT) != (y->mode & S_IFMT)) {
                WHAT("type");
        } else {
                if ((x->mode & 07777) != (y->mode & 07777))
                        WHAT("mode");
                if (x->uid != y->uid || x->gid != y->gid)
                        WHAT("owner");
                if (x->mtime.tv_sec != y->mtime.tv_sec || x->mtime.tv_nsec != y->mtime.tv_nsec)
                        WHAT("mtime");
                if (!xattrs_equal(d, a, b))
                        WHAT("xattrs");
                if ((S_ISCHR(x->mode) || S_ISBLK(x->mode)) && x->rdev != y->rdev)
                        WHAT("rdev");
                if (S_ISLNK(x->mode)) {
                        const char *ta, *tb;
                        size_t la, lb;
                        if (tree_symlink(d->ta, a, &ta, &la) < 0 || tree_symlink(d->tb, b, &tb, &lb) < 0 ||
                            la != lb || memcmp(ta, tb, la))
                                WHAT("target");
                }
                if (S_ISREG(x->mode)) {
                        uint32_t cs = tree_chunk_size(d->ta);
                        uint32_t n = MAX(tree_file_nchunks(d->ta, a), tree_file_nchunks(d->tb, b));
                        size_t alloc = 0;
                        bool same_cs = cs == tree_chunk_size(d->tb);

                        if (x->size != y->size)
                                WHAT("size");
                        for (uint32_t k = 0; k < n; k++) {
                                uint64_t off, len;
                                if (same_cs && chunk_same(d, a, b, k))
                                        continue;
                                if (!same_cs) { /* chunkings differ: no cheap comparison */
                                        k = n;
                                        off = 0;
                                        len = MAX(x->size, y->size);
                                } else {
                                        off = (uint64_t)k * cs;
                                        len = MIN((uint64_t)cs, MAX(x->size, y->size) - off);
                                }
                                if (n_ranges > 0 && ranges[n_ranges - 1][0] + ranges[n_ranges - 1][1] == off) {
                                        ranges[n_ranges - 1][1] += len;
                                        continue;
                                }
                                if (n_ranges == alloc) {
                                        void *p = reallocarray(ranges, alloc ? alloc * 2 : 8, sizeof *ranges);
                                        if (!p) {
                                                free(ranges);
                                                return -ENOMEM;
                                        }
                                        ranges = p;
                                        alloc = alloc ? alloc * 2 : 8;
                                }
                                ranges[n_ranges][0] = off;
                                ranges[n_ranges][1] = len;
                                n_ranges++;
                        }
                        if (n_ranges)
                                WHAT("data");
                }
        }
#undef WHAT
        r = what[0] ? d->fn(d->ctx, DIFF_CHANGED, path, what, (const uint64_t(*)[2])ranges, n_ranges) : 0;
        free(ranges);
        return r;
}

static int diff_dir(struct differ *d, const struct tree_inode *a, const struct tree_inode *b, const char *path)
{
        uint32_t na = tree_dir_count(d->ta, a), nb = tree_dir_count(d->tb, b), i = 0, j = 0;
        int r;

        while (i < na || j < nb) {
                _cleanup_(freep) char *p = NULL;
                const char *an = NULL, *bn = NULL;
                size_t al = 0, bl = 0;
                uint64_t ai = 0, bi = 0;
                struct tree_inode ca, cb;
                int c;

                if (i < na && (r = tree_dirent(d->ta, a, i, &an, &al, &ai)) < 0)
                        return r;
                if (j < nb && (r = tree_dirent(d->tb, b, j, &bn, &bl, &bi)) < 0)
                        return r;
                c = i == na ? 1 : j == nb ? -1 : name_order(an, al, bn, bl);
                if (asprintf(&p, "%s%s%s", path, path[0] ? "/" : "", c <= 0 ? an : bn) < 0)
                        return -ENOMEM;
                if (c < 0) {
                        if ((r = tree_inode(d->ta, ai, &ca)) < 0 || (r = report_all(d, d->ta, &ca, p, DIFF_REMOVED)) < 0)
                                return r;
                        i++;
                        continue;
                }
                if (c > 0) {
                        if ((r = tree_inode(d->tb, bi, &cb)) < 0 || (r = report_all(d, d->tb, &cb, p, DIFF_ADDED)) < 0)
                                return r;
                        j++;
                        continue;
                }
                i++;
                j++;
                if ((r = tree_inode(d->ta, ai, &ca)) < 0 || (r = tree_inode(d->tb, bi, &cb)) < 0)
                        return r;
                if (S_ISDIR(ca.attr.mode) != S_ISDIR(cb.attr.mode)) {
                        if ((r = report_all(d, d->ta, &ca, p, DIFF_REMOVED)) < 0 ||
                            (r = report_all(d, d->tb, &cb, p, DIFF_ADDED)) < 0)
                                return r;
                        continue;
                }
                r = compare(d, &ca, &cb, p);
                if (r < 0)
                        return r;
                if (S_ISDIR(ca.attr.mode)) {
                        r = diff_dir(d, &ca, &cb, p);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

int store_diff(struct backend *b, const struct digest *a, const struct digest *bb, diff_fn fn, void *ctx)
{
        struct snapshot *sa = NULL, *sb = NULL;
        struct tree_inode ra, rb;
        struct differ d = { .fn = fn, .ctx = ctx };
        int r;

        if (!b || !a || !bb || !fn)
                return -EINVAL;
        if ((r = snapshot_open(b, a, &sa)) < 0 || (r = snapshot_load_tree(b, sa)) < 0 ||
            (r = snapshot_open(b, bb, &sb)) < 0 || (r = snapshot_load_tree(b, sb)) < 0)
                goto out;
        d.ta = sa->tree;
        d.tb = sb->tree;
        if ((r = tree_inode(d.ta, TREE_ROOT_INO, &ra)) < 0 || (r = tree_inode(d.tb, TREE_ROOT_INO, &rb)) < 0)
                goto out;
        r = compare(&d, &ra, &rb, "."); /* the root itself */
        if (r >= 0)
                r = diff_dir(&d, &ra, &rb, "");
out:
        snapshot_free(sa);
        snapshot_free(sb);
        return r < 0 ? r : 0;
}
