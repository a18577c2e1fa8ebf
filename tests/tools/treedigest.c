/* treedigest.c — test helper: a digest of everything stasis promises to keep
 * of a directory tree, so that tests can compare a source tree with its
 * restored copy.
 *
 *   treedigest [--list] [--no-atime] [--no-root-times] DIR
 *
 * Walks DIR without following symlinks (lstat, names sorted bytewise) and
 * makes one line per entry:
 *   path type mode uid gid [size] mtime [atime] [rdev] [target] [link] xattrs [sha256 extents]
 * - mode is octal with every bit (setuid, setgid, sticky);
 * - times are sec.nsec;
 * - size is left out for directories (a directory's st_size depends on the
 *   file system's history, not on its contents);
 * - rdev is major:minor for devices; target is a symlink's target;
 * - link names the first path of a hardlink group (non-directories with
 *   nlink > 1), so two trees agree only if their groups do;
 * - xattrs: every extended attribute (user.*, trusted.*, security.*,
 *   system.posix_acl_*), sorted by name, as name=sha256(value);
 * - regular files: SHA-256 of the content and the data extents found with
 *   SEEK_DATA/SEEK_HOLE, rounded out to 4 KiB.
 * Paths and symlink targets are escaped (\xNN for bytes outside 0x21..0x7e
 * and for '\' and '='), so every entry is one line.
 *
 * It reads files and directories with O_NOATIME, so it does not change the
 * atimes it reports. A symlink's target cannot be read that way: readlink()
 * may update the link's atime (relatime). Each entry is lstat()ed before it
 * is read, so the atime printed is the one from before this walk; run it once
 * beforehand on a tree whose symlinks were never read to settle them.
 *
 * --settle-links only reads every symlink target (directories with O_NOATIME)
 * and prints nothing: tests run it on a source tree before committing it.
 *
 * --list prints the lines; by default a single SHA-256 over them is printed.
 * --no-atime leaves atimes out; --no-root-times leaves out the root
 * directory's times. Exit 0, or 1 with a message on error. */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include "store/store.h"

#define GRANULE 4096ull

struct walk {
        bool list, atime, root_times, links_only;
        struct sha256 *out;   /* digest of the listing */
        struct sha256 *file;  /* scratch for file content and xattr values */
        /* Hardlink groups: (dev, ino) -> first path. */
        struct link { dev_t dev; ino_t ino; char *path; } *links;
        size_t n_links, cap_links;
        void *buf;
};

struct line {
        char *s;
        size_t len, cap;
};

static void line_free(struct line *l)
{
        free(l->s);
}

static int line_add(struct line *l, const char *fmt, ...) _printf_(2, 3);
static int line_add(struct line *l, const char *fmt, ...)
{
        va_list ap;
        int n;

        for (;;) {
                size_t room = l->cap - l->len;

                va_start(ap, fmt);
                n = vsnprintf(l->s ? l->s + l->len : NULL, room, fmt, ap);
                va_end(ap);
                if (n < 0)
                        return -EINVAL;
                if ((size_t)n < room) {
                        l->len += (size_t)n;
                        return 0;
                }
                size_t cap = MAX(l->cap * 2, l->len + (size_t)n + 256);
                char *p = realloc(l->s, cap);
                if (!p)
                        return -ENOMEM;
                l->s = p;
                l->cap = cap;
        }
}

static int line_escaped(struct line *l, const char *s, size_t len)
{
        int r = 0;

        for (size_t i = 0; i < len && r == 0; i++) {
                unsigned char c = (unsigned char)s[i];

                if (c <= 0x20 || c >= 0x7f || c == '\\' || c == '=')
                        r = line_add(l, "\\x%02x", c);
                else
                        r = line_add(l, "%c", c);
        }
        return r;
}

static int hash_hex(struct sha256 *h, const void *data, size_t len, char hex[static DIGEST_HEX_LEN + 1])
{
        struct digest d;
        int r;

        r = sha256_update(h, data, len);
        if (r < 0)
                return r;
        r = sha256_final(h, &d);
        if (r < 0)
                return r;
        digest_hex(&d, hex);
        return 0;
}

static int name_cmp(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

static int xattrs(struct walk *w, struct line *l, const char *path)
{
        _cleanup_(freep) char *names = NULL;
        _cleanup_(freep) char **v = NULL;
        _cleanup_(freep) void *val = NULL;
        ssize_t n, vn;
        size_t count = 0;
        int r;

        n = llistxattr(path, NULL, 0);
        if (n < 0)
                return errno == ENOTSUP ? 0 : -errno;
        if (n == 0)
                return 0;
        names = malloc((size_t)n + 1);
        if (!names)
                return -ENOMEM;
        n = llistxattr(path, names, (size_t)n);
        if (n < 0)
                return -errno;
        names[n] = 0;
        v = calloc((size_t)n, sizeof *v);
        if (!v)
                return -ENOMEM;
        for (char *p = names; p < names + n; p += strlen(p) + 1)
                if (*p)
                        v[count++] = p;
        qsort(v, count, sizeof *v, name_cmp);
        val = malloc(TREE_XATTR_VALUE_MAX + 1);
        if (!val)
                return -ENOMEM;
        for (size_t i = 0; i < count; i++) {
                char hex[DIGEST_HEX_LEN + 1];

                vn = lgetxattr(path, v[i], val, TREE_XATTR_VALUE_MAX + 1);
                if (vn < 0)
                        return -errno;
                r = hash_hex(w->file, val, (size_t)vn, hex);
                if (r < 0)
                        return r;
                r = line_add(l, " xattr:");
                if (r == 0)
                        r = line_escaped(l, v[i], strlen(v[i]));
                if (r == 0)
                        r = line_add(l, "=%s", hex);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int file_content(struct walk *w, struct line *l, const char *path, const struct stat *st)
{
        _cleanup_(closep) int fd = -1;
        char hex[DIGEST_HEX_LEN + 1];
        uint64_t off = 0, size = (uint64_t)st->st_size;
        uint64_t ext_start = 0, ext_end = 0;
        bool have_ext = false;
        struct digest d;
        int r;

        fd = open(path, O_RDONLY | O_NOFOLLOW | O_NOATIME | O_CLOEXEC);
        if (fd < 0 && errno == EPERM) /* O_NOATIME needs ownership or CAP_FOWNER */
                fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        for (;;) {
                ssize_t n = read(fd, w->buf, 1 << 20);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        break;
                r = sha256_update(w->file, w->buf, (size_t)n);
                if (r < 0)
                        return r;
        }
        r = sha256_final(w->file, &d);
        if (r < 0)
                return r;
        r = line_add(l, " sha256=%s extents=", digest_hex(&d, hex));
        if (r < 0)
                return r;

        /* Data extents, rounded out to the 4 KiB granule and merged. */
        while (off < size) {
                off_t data = lseek(fd, (off_t)off, SEEK_DATA), hole;

                if (data < 0 && errno == ENXIO)
                        break;
                if (data < 0)
                        return -errno;
                hole = lseek(fd, data, SEEK_HOLE);
                if (hole < 0)
                        return -errno;
                uint64_t s = (uint64_t)data / GRANULE * GRANULE;
                uint64_t e = MIN(DIV_ROUND_UP((uint64_t)hole, GRANULE) * GRANULE, DIV_ROUND_UP(size, GRANULE) * GRANULE);
                if (have_ext && s <= ext_end) {
                        ext_end = MAX(ext_end, e);
                } else {
                        if (have_ext) {
                                r = line_add(l, "%" PRIu64 "+%" PRIu64 ",", ext_start, ext_end - ext_start);
                                if (r < 0)
                                        return r;
                        }
                        ext_start = s;
                        ext_end = e;
                        have_ext = true;
                }
                off = (uint64_t)hole;
        }
        if (have_ext)
                return line_add(l, "%" PRIu64 "+%" PRIu64, ext_start, ext_end - ext_start);
        return line_add(l, "-");
}

static int emit(struct walk *w, const struct line *l)
{
        if (w->list && fwrite(l->s, 1, l->len, stdout) != l->len)
                return -EIO;
        return sha256_update(w->out, l->s, l->len);
}

static int entry(struct walk *w, const char *path, const char *rel, const struct stat *st, bool root)
{
        _cleanup_(line_free) struct line l = {};
        const char *type;
        int r;

        if (w->links_only) { /* --settle-links: read targets, print nothing */
                char target[PATH_MAX + 1];

                if (S_ISLNK(st->st_mode) && readlink(path, target, sizeof target) < 0)
                        return -errno;
                return 0;
        }

        switch (st->st_mode & S_IFMT) {
        case S_IFREG: type = "reg"; break;
        case S_IFDIR: type = "dir"; break;
        case S_IFLNK: type = "lnk"; break;
        case S_IFCHR: type = "chr"; break;
        case S_IFBLK: type = "blk"; break;
        case S_IFIFO: type = "fifo"; break;
        case S_IFSOCK: type = "sock"; break;
        default: type = "unknown"; break;
        }

        r = line_escaped(&l, rel, strlen(rel));
        if (r == 0)
                r = line_add(&l, " %s mode=%04o uid=%u gid=%u", type, (unsigned)(st->st_mode & 07777),
                             (unsigned)st->st_uid, (unsigned)st->st_gid);
        if (r == 0 && !S_ISDIR(st->st_mode))
                r = line_add(&l, " size=%" PRIu64, (uint64_t)st->st_size);
        if (r == 0 && !(root && !w->root_times)) {
                r = line_add(&l, " mtime=%lld.%09ld", (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec);
                if (r == 0 && w->atime)
                        r = line_add(&l, " atime=%lld.%09ld", (long long)st->st_atim.tv_sec,
                                     st->st_atim.tv_nsec);
        }
        if (r == 0 && (S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode)))
                r = line_add(&l, " rdev=%u:%u", major(st->st_rdev), minor(st->st_rdev));
        if (r == 0 && S_ISLNK(st->st_mode)) {
                char target[PATH_MAX + 1];
                ssize_t n = readlink(path, target, sizeof target);

                if (n < 0)
                        return -errno;
                if ((size_t)n >= sizeof target)
                        return -ENAMETOOLONG;
                r = line_add(&l, " target=");
                if (r == 0)
                        r = line_escaped(&l, target, (size_t)n);
        }
        if (r == 0 && !S_ISDIR(st->st_mode) && st->st_nlink > 1) {
                const char *first = NULL;

                for (size_t i = 0; i < w->n_links && !first; i++)
                        if (w->links[i].dev == st->st_dev && w->links[i].ino == st->st_ino)
                                first = w->links[i].path;
                if (!first) {
                        if (w->n_links == w->cap_links) {
                                size_t cap = MAX(w->cap_links * 2, 64u);
                                struct link *p = realloc(w->links, cap * sizeof *p);
                                if (!p)
                                        return -ENOMEM;
                                w->links = p;
                                w->cap_links = cap;
                        }
                        first = strdup(rel);
                        if (!first)
                                return -ENOMEM;
                        w->links[w->n_links++] = (struct link){ st->st_dev, st->st_ino, (char *)first };
                }
                r = line_add(&l, " link=");
                if (r == 0)
                        r = line_escaped(&l, first, strlen(first));
        }
        if (r == 0)
                r = xattrs(w, &l, path);
        if (r == 0 && S_ISREG(st->st_mode))
                r = file_content(w, &l, path, st);
        if (r == 0)
                r = line_add(&l, "\n");
        if (r == 0)
                r = emit(w, &l);
        return r;
}

static int walk_dir(struct walk *w, const char *path, const char *rel)
{
        _cleanup_(freep) char **names = NULL;
        size_t n = 0, cap = 0;
        DIR *d;
        struct dirent *de;
        int fd, r = 0;

        fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NOATIME | O_CLOEXEC);
        if (fd < 0 && errno == EPERM)
                fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        d = fdopendir(fd);
        if (!d) {
                r = -errno;
                close(fd);
                return r;
        }
        while ((errno = 0, de = readdir(d))) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                if (n == cap) {
                        cap = MAX(cap * 2, 64u);
                        char **p = realloc(names, cap * sizeof *p);
                        if (!p) {
                                r = -ENOMEM;
                                break;
                        }
                        names = p;
                }
                names[n] = strdup(de->d_name);
                if (!names[n]) {
                        r = -ENOMEM;
                        break;
                }
                n++;
        }
        if (r == 0 && errno)
                r = -errno;
        closedir(d);
        if (r == 0 && n > 1)
                qsort(names, n, sizeof *names, name_cmp);

        for (size_t i = 0; i < n; i++) {
                _cleanup_(freep) char *p = NULL, *q = NULL;
                struct stat st;

                if (r < 0)
                        goto next;
                if (asprintf(&p, "%s/%s", path, names[i]) < 0 ||
                    asprintf(&q, "%s%s%s", rel, *rel ? "/" : "", names[i]) < 0) {
                        p = q = NULL;
                        r = -ENOMEM;
                        goto next;
                }
                if (lstat(p, &st) < 0) {
                        r = -errno;
                        fprintf(stderr, "treedigest: lstat %s: %m\n", p);
                        goto next;
                }
                r = entry(w, p, q, &st, false);
                if (r < 0) {
                        fprintf(stderr, "treedigest: %s: %s\n", p, strerror(-r));
                        goto next;
                }
                if (S_ISDIR(st.st_mode))
                        r = walk_dir(w, p, q);
        next:
                free(names[i]);
        }
        return r;
}

int main(int argc, char **argv)
{
        struct walk w = { .atime = true, .root_times = true };
        const char *dir = NULL;
        struct digest d;
        struct stat st;
        char hex[DIGEST_HEX_LEN + 1];
        int r;

        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--list") == 0)
                        w.list = true;
                else if (strcmp(argv[i], "--no-atime") == 0)
                        w.atime = false;
                else if (strcmp(argv[i], "--no-root-times") == 0)
                        w.root_times = false;
                else if (strcmp(argv[i], "--settle-links") == 0)
                        w.links_only = true;
                else if (argv[i][0] == '-' || dir) {
                        fprintf(stderr, "usage: treedigest [--list | --settle-links] [--no-atime] [--no-root-times] DIR\n");
                        return 2;
                } else
                        dir = argv[i];
        }
        if (!dir) {
                fprintf(stderr, "usage: treedigest [--list | --settle-links] [--no-atime] [--no-root-times] DIR\n");
                return 2;
        }
        w.out = sha256_new();
        w.file = sha256_new();
        w.buf = malloc(1 << 20);
        if (!w.out || !w.file || !w.buf) {
                fprintf(stderr, "treedigest: out of memory\n");
                return 1;
        }
        if (lstat(dir, &st) < 0) {
                fprintf(stderr, "treedigest: %s: %m\n", dir);
                return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
                fprintf(stderr, "treedigest: %s: not a directory\n", dir);
                return 1;
        }
        r = entry(&w, dir, ".", &st, true);
        if (r < 0)
                fprintf(stderr, "treedigest: %s: %s\n", dir, strerror(-r));
        if (r == 0)
                r = walk_dir(&w, dir, "");
        if (r == 0)
                r = sha256_final(w.out, &d);
        if (r == 0 && !w.list && !w.links_only)
                printf("%s\n", digest_hex(&d, hex));
        if (r == 0 && fflush(stdout) == EOF)
                r = -EIO;
        for (size_t i = 0; i < w.n_links; i++)
                free(w.links[i].path);
        free(w.links);
        free(w.buf);
        sha256_free(w.out);
        sha256_free(w.file);
        if (r < 0) {
                fprintf(stderr, "treedigest: %s: %s\n", dir, strerror(-r));
                return 1;
        }
        return 0;
}
