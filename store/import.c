/* import.c — store_import(): an OCI image into a snapshot (import.h).
 *
 * The pipeline, for each layer in order:
 *   blob stream   the source's read() in BLOB_BUF pieces, hashed (SHA-256 of
 *                 the blob, checked against its descriptor at the end);
 *   decompress    libarchive's gzip or zstd filter with the "raw" format, so
 *                 the uncompressed tar stream passes through our hands and is
 *                 hashed too (the config's rootfs.diff_ids);
 *   tar           a second libarchive reader (tar: ustar, pax, GNU long names
 *                 and sparse files) over that stream;
 *   namespace     each entry is checked and applied to an in-memory tree of
 *                 nodes (whiteouts, opaque directories, hardlinks);
 *   data          a regular file's bytes are cut into offset-aligned chunks
 *                 as they stream and handed to worker threads, which give
 *                 them to the packer (hash, dedup, compress, pack).
 * Nothing is written to disk but the store's packs, tree and manifest.
 *
 * Namespace. A node is one name; an inode is what names share (a hardlink
 * group is one inode, nlink = its names). Every inode ever made stays in
 * ns->inodes until the end, so a worker that still fills the chunk list of a
 * file that a later entry replaced writes into live memory; a replaced file's
 * chunks are simply not referenced by the tree.
 * Each node records the last layer that declared it or something below it
 * ("touched"). A whiteout hides only what lower layers made (OCI image spec,
 * layer.md): .wh.NAME removes NAME if no entry of this layer touched it, and
 * .wh..wh..opq removes every child of its directory that this layer did not
 * touch, recursively.
 *
 * Inode numbers: assigned at build, depth first in name order; the root is
 * TREE_ROOT_INO, the rest follow from 2. A hardlink group gets its number
 * at its first name.
 *
 * Threads: the caller's thread reads and applies; ns->threads workers call
 * packer_add(). pool.lock guards the job queue and the free buffers and
 * nests with nothing; no lock is held across I/O or compression. */
#include "import.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "chunk.h"
#include "oci.h"
#include "snapshot.h"
#include "tree.h"
#include "util.h"

/* libarchive is loaded on the first import, not linked: its dependency
 * chain (libxml2 and ICU, nettle, lzma, lz4, bz2, libstdc++) cost every
 * exec of `stasis`, a mount included, ~2 ms (docs/dependencies.md). The
 * functions this file calls, typed from archive.h's own prototypes, written
 * once by the first la_load() (dl_lib_load()) and only read after that. */
#define LA_SONAME "libarchive.so.13"

struct la_fns {
        typeof(archive_entry_atime) *entry_atime;
        typeof(archive_entry_atime_is_set) *entry_atime_is_set;
        typeof(archive_entry_atime_nsec) *entry_atime_nsec;
        typeof(archive_entry_ctime) *entry_ctime;
        typeof(archive_entry_ctime_is_set) *entry_ctime_is_set;
        typeof(archive_entry_ctime_nsec) *entry_ctime_nsec;
        typeof(archive_entry_filetype) *entry_filetype;
        typeof(archive_entry_gid) *entry_gid;
        typeof(archive_entry_hardlink) *entry_hardlink;
        typeof(archive_entry_mtime) *entry_mtime;
        typeof(archive_entry_mtime_nsec) *entry_mtime_nsec;
        typeof(archive_entry_pathname) *entry_pathname;
        typeof(archive_entry_pathname_utf8) *entry_pathname_utf8;
        typeof(archive_entry_perm) *entry_perm;
        typeof(archive_entry_rdev) *entry_rdev;
        typeof(archive_entry_size) *entry_size;
        typeof(archive_entry_symlink) *entry_symlink;
        typeof(archive_entry_symlink_utf8) *entry_symlink_utf8;
        typeof(archive_entry_uid) *entry_uid;
        typeof(archive_entry_xattr_next) *entry_xattr_next;
        typeof(archive_entry_xattr_reset) *entry_xattr_reset;
        typeof(archive_errno) *errno_; /* errno is a macro */
        typeof(archive_error_string) *error_string;
        typeof(archive_read_append_filter) *read_append_filter;
        typeof(archive_read_data) *read_data;
        typeof(archive_read_data_block) *read_data_block;
        typeof(archive_read_free) *read_free;
        typeof(archive_read_new) *read_new;
        typeof(archive_read_next_header) *read_next_header;
        typeof(archive_read_open) *read_open;
        typeof(archive_read_open_memory) *read_open_memory;
        typeof(archive_read_support_filter_none) *read_support_filter_none;
        typeof(archive_read_support_format_raw) *read_support_format_raw;
        typeof(archive_read_support_format_tar) *read_support_format_tar;
        typeof(archive_set_error) *set_error;
};

static struct la_fns la; /* filled by la_load() */
static struct dl_lib la_lib = DL_LIB(LA_SONAME, "libarchive13");
#define LA_SYM(f) { "archive_" #f, &la.f }
static const struct dl_sym la_syms[] = {
        LA_SYM(entry_atime), LA_SYM(entry_atime_is_set), LA_SYM(entry_atime_nsec),
        LA_SYM(entry_ctime), LA_SYM(entry_ctime_is_set), LA_SYM(entry_ctime_nsec),
        LA_SYM(entry_filetype), LA_SYM(entry_gid), LA_SYM(entry_hardlink), LA_SYM(entry_mtime),
        LA_SYM(entry_mtime_nsec), LA_SYM(entry_pathname), LA_SYM(entry_pathname_utf8),
        LA_SYM(entry_perm), LA_SYM(entry_rdev), LA_SYM(entry_size), LA_SYM(entry_symlink),
        LA_SYM(entry_symlink_utf8), LA_SYM(entry_uid), LA_SYM(entry_xattr_next),
        LA_SYM(entry_xattr_reset), { "archive_errno", &la.errno_ }, LA_SYM(error_string),
        LA_SYM(read_append_filter), LA_SYM(read_data), LA_SYM(read_data_block), LA_SYM(read_free),
        LA_SYM(read_new), LA_SYM(read_next_header), LA_SYM(read_open), LA_SYM(read_open_memory),
        LA_SYM(read_support_filter_none), LA_SYM(read_support_format_raw),
        LA_SYM(read_support_format_tar), LA_SYM(set_error),
};
#undef LA_SYM

/* la_load(): make `la` usable, before the first archive. 0, or -ELIBACC (no
 * libarchive) / -ELIBBAD (not the one we need), logged. */
static int la_load(void)
{
        int r = dl_lib_load(&la_lib, la_syms, ELEMENTSOF(la_syms));

        if (r < 0)
                log_error_errno(r, "%s", la_lib.err);
        return r;
}

#define BLOB_BUF (1u << 20)
#define TAR_BUF (256u << 10)
/* Nested image indexes followed at most this deep. */
#define INDEX_DEPTH_MAX 4
#define WH_PREFIX ".wh."
#define WH_OPAQUE ".wh..wh..opq"
/* In every imported snapshot's stats; bump it when the same image would
 * import to a different tree, so already_imported() does not reuse old ones. */
#define IMPORTER_VERSION 1

static inline bool streq(const char *a, const char *b)
{
        return strcmp(a, b) == 0;
}

#define MEDIA_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MEDIA_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define MEDIA_OCI_CONFIG "application/vnd.oci.image.config.v1+json"
#define MEDIA_DOCKER_CONFIG "application/vnd.docker.container.image.v1+json"

/* ---------------------------------------------------------------- sources */

struct layout_source {
        struct image_source base;
        int dirfd;
        int blobfd; /* the last blob read, kept open */
        struct digest blob;
};

static struct layout_source *to_layout(struct image_source *s)
{
        return container_of(s, struct layout_source, base);
}

static int layout_read_blob_all(struct layout_source *l, const struct digest *d, size_t max, void **ret,
                                size_t *ret_len)
{
        char path[16 + DIGEST_HEX_LEN], hex[DIGEST_HEX_LEN + 1];

        snprintf(path, sizeof path, "blobs/sha256/%s", digest_hex(d, hex));
        return read_file_at(l->dirfd, path, max, (char **)ret, ret_len);
}

static int layout_manifest(struct image_source *s, const char *ref, size_t max, void **ret,
                           size_t *ret_len, struct digest *ret_digest)
{
        struct layout_source *l = to_layout(s);
        _cleanup_(freep) char *idx = NULL;
        _cleanup_(json_decrefp) json_t *j = NULL;
        json_t *arr, *e, *found = NULL;
        json_error_t err;
        struct digest d;
        size_t n, i;
        int r;

        if (strncmp(ref, "sha256:", 7) == 0) {
                if (digest_parse(ref, &d) < 0)
                        return log_error_errno(EINVAL, "\"%.80s\" is not a sha256: digest", ref);
                r = layout_read_blob_all(l, &d, max, ret, ret_len);
                if (r < 0)
                        return r;
                *ret_digest = d;
                return 0;
        }
        r = read_file_at(l->dirfd, "index.json", MANIFEST_MAX, &idx, &n);
        if (r < 0)
                return log_error_errno(r, "read index.json: %m");
        j = json_loadb(idx, n, JSON_REJECT_DUPLICATES, &err);
        arr = json_object_get(j, "manifests");
        if (!json_is_array(arr))
                return log_error_errno(EBADMSG, "index.json: not an OCI image index (%s)", j ? "no manifests" : err.text);
        json_array_foreach(arr, i, e) {
                const char *t = json_string_value(json_object_get(json_object_get(e, "annotations"),
                                                                  ANNOTATION_REF_NAME));
                if (ref[0] ? (t && streq(t, ref)) : json_array_size(arr) == 1) {
                        found = e;
                        break;
                }
        }
        if (!found)
                return ref[0] ? -ENOENT
                              : log_error_errno(ENOENT, "index.json holds %zu images: name one with :TAG",
                                                json_array_size(arr));
        if (!json_is_string(json_object_get(found, "digest")) ||
            digest_parse(json_string_value(json_object_get(found, "digest")), &d) < 0)
                return log_error_errno(EBADMSG, "index.json: the entry for %s has no valid sha256 digest", ref);
        r = layout_read_blob_all(l, &d, max, ret, ret_len);
        if (r < 0)
                return r;
        *ret_digest = d;
        return 0;
}

static ssize_t layout_read(struct image_source *s, const struct digest *d, uint64_t off, void *buf, size_t len)
{
        struct layout_source *l = to_layout(s);

        if (l->blobfd < 0 || !digest_eq(&l->blob, d)) {
                char path[16 + DIGEST_HEX_LEN], hex[DIGEST_HEX_LEN + 1];
                int fd;

                snprintf(path, sizeof path, "blobs/sha256/%s", digest_hex(d, hex));
                fd = openat(l->dirfd, path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
                if (fd < 0)
                        return -errno;
                if (l->blobfd >= 0)
                        close(l->blobfd);
                l->blobfd = fd;
                l->blob = *d;
        }
        return pread_full(l->blobfd, buf, len, off);
}

static void layout_free(struct image_source *s)
{
        struct layout_source *l = to_layout(s);

        if (l->blobfd >= 0)
                close(l->blobfd);
        if (l->dirfd >= 0)
                close(l->dirfd);
        free(l);
}

static const struct image_source_ops layout_ops = {
        .version = IMPORT_SOURCE_OPS_VERSION,
        .name = "oci-layout",
        .manifest = layout_manifest,
        .read = layout_read,
        .free = layout_free,
};

int image_source_layout_open(const char *dir, struct image_source **ret)
{
        _cleanup_(freep) char *layout = NULL;
        _cleanup_(json_decrefp) json_t *j = NULL;
        struct layout_source *l;
        size_t n;
        int fd, r;

        if (!dir || !ret)
                return -EINVAL;
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return log_error_errno(errno, "open image layout %s: %m", dir);
        r = read_file_at(fd, "oci-layout", 4096, &layout, &n);
        if (r >= 0) {
                j = json_loadb(layout, n, 0, NULL);
                if (!json_is_string(json_object_get(j, "imageLayoutVersion")))
                        r = -EBADMSG;
        }
        if (r < 0) {
                close(fd);
                return log_error_errno(r == -ENOENT ? EINVAL : r, "%s is not an OCI image layout (oci-layout: %s)",
                                       dir, r == -ENOENT ? "missing" : "unreadable or invalid");
        }
        l = calloc(1, sizeof *l);
        if (!l) {
                close(fd);
                return -ENOMEM;
        }
        l->base.ops = &layout_ops;
        l->dirfd = fd;
        l->blobfd = -1;
        *ret = &l->base;
        return 0;
}

struct backend_source {
        struct image_source base;
        struct backend *b;
};

static int backend_src_manifest(struct image_source *s, const char *ref, size_t max, void **ret,
                                size_t *ret_len, struct digest *ret_digest)
{
        struct backend_source *bs = container_of(s, struct backend_source, base);
        struct digest d;
        int r;

        if (backend_is_oci(bs->b)) {
                _cleanup_(freep) void *data = NULL;
                size_t len;

                r = oci_manifest_get(bs->b, ref, &data, &len, &d);
                if (r < 0)
                        return r;
                if (len > max)
                        return -EFBIG;
                *ret = TAKE_PTR(data);
                *ret_len = len;
                *ret_digest = d;
                return 0;
        }
        if (digest_parse(ref, &d) < 0)
                return -ENOENT; /* a plain backend names blobs by digest only */
        r = backend_read_all(bs->b, &d, max, ret, ret_len);
        if (r < 0)
                return r;
        *ret_digest = d;
        return 0;
}

static ssize_t backend_src_read(struct image_source *s, const struct digest *d, uint64_t off, void *buf,
                                size_t len)
{
        struct backend_source *bs = container_of(s, struct backend_source, base);

        return backend_read(bs->b, d, off, buf, len);
}

static void backend_src_free(struct image_source *s)
{
        free(container_of(s, struct backend_source, base));
}

static const struct image_source_ops backend_src_ops = {
        .version = IMPORT_SOURCE_OPS_VERSION,
        .name = "backend",
        .manifest = backend_src_manifest,
        .read = backend_src_read,
        .free = backend_src_free,
};

int image_source_backend(struct backend *b, struct image_source **ret)
{
        struct backend_source *bs;

        if (!b || !ret)
                return -EINVAL;
        bs = calloc(1, sizeof *bs);
        if (!bs)
                return -ENOMEM;
        bs->base.ops = &backend_src_ops;
        bs->b = b;
        *ret = &bs->base;
        return 0;
}

struct image_source *image_source_free(struct image_source *s)
{
        if (s)
                s->ops->free(s);
        return NULL;
}

/* -------------------------------------------------------------- namespace */

struct xattr {
        char *name;
        void *value;
        size_t len;
};

struct inode {
        uint32_t mode, uid, gid;
        uint64_t size, rdev;
        struct timespec atime, mtime, ctime;
        char *target; /* symlinks */
        struct xattr *xattrs;
        size_t n_xattrs;
        /* regular files: packer refs or TREE_HOLE, filled by workers */
        uint32_t *chunks;
        uint32_t nchunks;
        uint64_t (*extents)[2];
        size_t n_extents, a_extents;
        uint32_t refs; /* names in the namespace */
        uint32_t nsubdirs;
        uint64_t ino;  /* 0 until build */
        uint32_t handle;
};

struct node {
        char *name;
        struct inode *in;
        struct node **kids; /* directories: sorted by name */
        size_t n_kids, a_kids;
        struct node *parent;
        uint32_t touched; /* last layer (1-based) that declared it or a descendant */
};

struct job {
        struct inode *in;
        uint32_t idx, len;
        uint8_t *buf;
};

struct worker {
        struct import_ns *ns;
        struct chunk_codec *codec;
        pthread_t thread;
        bool started;
};

struct import_ns {
        struct packer *packer;
        uint32_t cs;
        int level;
        struct node *root;
        struct inode **inodes;
        size_t n_inodes, a_inodes;
        uint32_t layer; /* the layer being applied, 1-based */
        const char *layer_name;
        uint64_t entries, whiteouts;

        /* data: pool.lock guards jobs, free buffers and done */
        struct chunk_codec *codec; /* the caller's, when there are no workers */
        pthread_mutex_t lock;
        pthread_cond_t cond_job, cond_room;
        struct job *q;
        size_t q_cap, q_head, q_n;
        uint8_t **free_bufs;
        size_t n_free, a_free;
        bool done;
        atomic_int error;
        struct worker *workers;
        unsigned n_workers;
        uint8_t *buf; /* the chunk being filled */
        bool spent;
};

static int grow(void **p, size_t *alloc, size_t need, size_t size)
{
        size_t n;
        void *q;

        if (need <= *alloc)
                return 0;
        n = MAX(*alloc * 2, MAX(need, (size_t)8));
        q = reallocarray(*p, n, size);
        if (!q)
                return -ENOMEM;
        *p = q;
        *alloc = n;
        return 0;
}

static void xattrs_clear(struct inode *in)
{
        for (size_t i = 0; i < in->n_xattrs; i++) {
                free(in->xattrs[i].name);
                free(in->xattrs[i].value);
        }
        free(in->xattrs);
        in->xattrs = NULL;
        in->n_xattrs = 0;
}

static void inode_free(struct inode *in)
{
        if (!in)
                return;
        xattrs_clear(in);
        free(in->target);
        free(in->chunks);
        free(in->extents);
        free(in);
}

static int inode_new(struct import_ns *ns, struct inode **ret)
{
        struct inode *in;

        if (grow((void **)&ns->inodes, &ns->a_inodes, ns->n_inodes + 1, sizeof *ns->inodes) < 0)
                return -ENOMEM;
        in = calloc(1, sizeof *in);
        if (!in)
                return -ENOMEM;
        ns->inodes[ns->n_inodes++] = in;
        *ret = in;
        return 0;
}

static void node_free(struct node *n)
{
        if (!n)
                return;
        for (size_t i = 0; i < n->n_kids; i++)
                node_free(n->kids[i]);
        if (n->in)
                n->in->refs--;
        free(n->kids);
        free(n->name);
        free(n);
}

/* kid_find(): index of name in dir's kids; *ret_at is where it would go. */
static struct node *kid_find(const struct node *dir, const char *name, size_t len, size_t *ret_at)
{
        size_t lo = 0, hi = dir->n_kids;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                const char *k = dir->kids[mid]->name;
                int c = strncmp(k, name, len);
                if (c == 0)
                        c = k[len] ? 1 : 0;
                if (c == 0) {
                        if (ret_at)
                                *ret_at = mid;
                        return dir->kids[mid];
                }
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        if (ret_at)
                *ret_at = lo;
        return NULL;
}

static void kid_remove(struct node *dir, struct node *kid)
{
        size_t at;

        if (kid_find(dir, kid->name, strlen(kid->name), &at) != kid)
                return;
        memmove(&dir->kids[at], &dir->kids[at + 1], (dir->n_kids - at - 1) * sizeof *dir->kids);
        dir->n_kids--;
        node_free(kid);
}

static int kid_add(struct node *dir, const char *name, size_t len, struct inode *in, struct node **ret)
{
        struct node *k;
        size_t at;

        if (kid_find(dir, name, len, &at))
                return -EEXIST;
        if (grow((void **)&dir->kids, &dir->a_kids, dir->n_kids + 1, sizeof *dir->kids) < 0)
                return -ENOMEM;
        k = calloc(1, sizeof *k);
        if (!k)
                return -ENOMEM;
        k->name = strndup(name, len);
        if (!k->name) {
                free(k);
                return -ENOMEM;
        }
        k->in = in;
        k->parent = dir;
        in->refs++;
        memmove(&dir->kids[at + 1], &dir->kids[at], (dir->n_kids - at) * sizeof *dir->kids);
        dir->kids[at] = k;
        dir->n_kids++;
        *ret = k;
        return 0;
}

static void touch(struct node *n, uint32_t layer)
{
        for (; n; n = n->parent)
                n->touched = layer;
}

/* prune(): remove what lower layers made below dir (an opaque directory). */
static void prune(struct node *dir, uint32_t layer)
{
        for (size_t i = 0; i < dir->n_kids;) {
                struct node *k = dir->kids[i];
                if (k->touched < layer) {
                        kid_remove(dir, k);
                        continue;
                }
                if (S_ISDIR(k->in->mode))
                        prune(k, layer);
                i++;
        }
}

/* A path, split. Entry names are relative: a leading "./" is dropped, "."
 * components and repeated slashes are skipped; absolute names and ".."
 * components are refused (so nothing can name a path outside the root). */
struct path {
        const char *comp[IMPORT_PATH_MAX / 2 + 1];
        size_t len[IMPORT_PATH_MAX / 2 + 1];
        size_t n;
};

static const char *path_split(const char *s, struct path *ret)
{
        size_t n = 0;

        if (strlen(s) > IMPORT_PATH_MAX)
                return "path longer than 4096 bytes";
        if (s[0] == '/' && s[strspn(s, "/")] == '\0') {
                /* "/" names the root itself (umoci insert writes it; Docker
                 * and containerd accept it); any other absolute path is
                 * refused. */
                ret->n = 0;
                return NULL;
        }
        if (s[0] == '/')
                return "absolute path";
        while (*s) {
                const char *e = strchrnul(s, '/');
                size_t len = (size_t)(e - s);
                if (len == 2 && s[0] == '.' && s[1] == '.')
                        return "path has a \"..\" component";
                if (len > TREE_NAME_MAX)
                        return "path component longer than 255 bytes";
                if (len > 0 && !(len == 1 && s[0] == '.')) {
                        ret->comp[n] = s;
                        ret->len[n] = len;
                        n++;
                }
                s = *e ? e + 1 : e;
        }
        ret->n = n;
        return NULL;
}

static int dir_inode(struct import_ns *ns, struct inode **ret)
{
        struct inode *in;
        int r = inode_new(ns, &in);

        if (r < 0)
                return r;
        in->mode = S_IFDIR | 0755;
        *ret = in;
        return 0;
}

/* walk(): the directory holding the last component of p (the first n - 1
 * components), never through a symlink or a non-directory. Missing
 * directories are made (as 0755 root:root) if create, else *ret is NULL. */
static int walk(struct import_ns *ns, const struct path *p, bool create, struct node **ret, const char **ret_why)
{
        struct node *d = ns->root;
        int r;

        for (size_t i = 0; i + 1 < p->n; i++) {
                struct node *k = kid_find(d, p->comp[i], p->len[i], NULL);
                if (!k) {
                        struct inode *in;
                        if (!create) {
                                *ret = NULL;
                                return 0;
                        }
                        r = dir_inode(ns, &in);
                        if (r < 0)
                                return r;
                        r = kid_add(d, p->comp[i], p->len[i], in, &k);
                        if (r < 0)
                                return r;
                } else if (S_ISLNK(k->in->mode)) {
                        *ret_why = "path goes through a symlink";
                        return -EBADMSG;
                } else if (!S_ISDIR(k->in->mode)) {
                        *ret_why = "path goes through a non-directory";
                        return -EBADMSG;
                }
                d = k;
        }
        *ret = d;
        return 0;
}

/* ------------------------------------------------------------ data workers */

static void set_error(struct import_ns *ns, int r)
{
        int expected = 0;

        atomic_compare_exchange_strong(&ns->error, &expected, r);
}

static void buf_put_locked(struct import_ns *ns, uint8_t *buf)
{
        if (grow((void **)&ns->free_bufs, &ns->a_free, ns->n_free + 1, sizeof *ns->free_bufs) < 0)
                free(buf);
        else
                ns->free_bufs[ns->n_free++] = buf;
}

static void *worker_main(void *arg)
{
        struct worker *w = arg;
        struct import_ns *ns = w->ns;

        for (;;) {
                struct job j;
                int r;

                pthread_mutex_lock(&ns->lock);
                while (ns->q_n == 0 && !ns->done)
                        pthread_cond_wait(&ns->cond_job, &ns->lock);
                if (ns->q_n == 0) {
                        pthread_mutex_unlock(&ns->lock);
                        return NULL;
                }
                j = ns->q[ns->q_head];
                ns->q_head = (ns->q_head + 1) % ns->q_cap;
                ns->q_n--;
                pthread_cond_signal(&ns->cond_room);
                pthread_mutex_unlock(&ns->lock);

                r = atomic_load(&ns->error) ? 0 : packer_add(ns->packer, w->codec, j.buf, j.len, &j.in->chunks[j.idx]);
                if (r < 0)
                        set_error(ns, log_error_errno(r, "store chunk: %m"));

                pthread_mutex_lock(&ns->lock);
                buf_put_locked(ns, j.buf);
                pthread_mutex_unlock(&ns->lock);
        }
}

/* submit(): the filled ns->buf as chunk idx of in; ns->buf is replaced. */
static int submit(struct import_ns *ns, struct inode *in, uint32_t idx, uint32_t len)
{
        uint8_t *next = NULL;
        int r;

        if (ns->n_workers == 0) {
                r = packer_add(ns->packer, ns->codec, ns->buf, len, &in->chunks[idx]);
                return r < 0 ? log_error_errno(r, "store chunk: %m") : 0;
        }
        pthread_mutex_lock(&ns->lock);
        while (ns->q_n == ns->q_cap && !atomic_load(&ns->error))
                pthread_cond_wait(&ns->cond_room, &ns->lock);
        r = atomic_load(&ns->error);
        if (r == 0) {
                ns->q[(ns->q_head + ns->q_n) % ns->q_cap] = (struct job){ .in = in, .idx = idx, .len = len, .buf = ns->buf };
                ns->q_n++;
                pthread_cond_signal(&ns->cond_job);
                if (ns->n_free > 0)
                        next = ns->free_bufs[--ns->n_free];
                ns->buf = NULL;
        }
        pthread_mutex_unlock(&ns->lock);
        if (r < 0)
                return r;
        ns->buf = next ? next : malloc(ns->cs);
        return ns->buf ? 0 : -ENOMEM;
}

/* drain(): stop the workers once the queue is empty; the first error. */
static int drain(struct import_ns *ns)
{
        pthread_mutex_lock(&ns->lock);
        ns->done = true;
        pthread_cond_broadcast(&ns->cond_job);
        pthread_mutex_unlock(&ns->lock);
        for (unsigned i = 0; i < ns->n_workers; i++)
                if (ns->workers[i].started) {
                        pthread_join(ns->workers[i].thread, NULL);
                        ns->workers[i].started = false;
                }
        return atomic_load(&ns->error);
}

/* ------------------------------------------------------------- the entries */

static int extent_add(struct inode *in, uint64_t off, uint64_t len)
{
        uint64_t start = off / HOLE_GRANULE * HOLE_GRANULE;
        uint64_t end = MIN(DIV_ROUND_UP(off + len, HOLE_GRANULE) * HOLE_GRANULE, in->size);

        if (in->n_extents > 0) {
                uint64_t *last = in->extents[in->n_extents - 1];
                if (last[0] + last[1] >= start) {
                        last[1] = MAX(last[0] + last[1], end) - last[0];
                        return 0;
                }
        }
        if (grow((void **)&in->extents, &in->a_extents, in->n_extents + 1, sizeof *in->extents) < 0)
                return -ENOMEM;
        in->extents[in->n_extents][0] = start;
        in->extents[in->n_extents][1] = end - start;
        in->n_extents++;
        return 0;
}

/* file_data(): the entry's bytes as chunks (libarchive gives the data
 * regions of a sparse entry with their offsets; the gaps are holes). */
static int file_data(struct import_ns *ns, struct archive *a, struct inode *in, const char **ret_why)
{
        uint64_t size = in->size, pos = 0;
        uint32_t cur = TREE_HOLE;
        int r;

        if (size == 0)
                return 0;
        if (DIV_ROUND_UP(size, ns->cs) >= UINT32_MAX) {
                *ret_why = "file too large for the chunk size";
                return -EFBIG;
        }
        in->nchunks = (uint32_t)DIV_ROUND_UP(size, ns->cs);
        in->chunks = malloc(sizeof(uint32_t) * in->nchunks);
        if (!in->chunks)
                return -ENOMEM;
        for (uint32_t i = 0; i < in->nchunks; i++)
                in->chunks[i] = TREE_HOLE;

        for (;;) {
                const void *p;
                size_t n;
                la_int64_t off;

                r = la.read_data_block(a, &p, &n, &off);
                if (r == ARCHIVE_EOF)
                        break;
                if (r < ARCHIVE_WARN) {
                        *ret_why = la.error_string(a) ? la.error_string(a) : "cannot read the entry's data";
                        return la.errno_(a) > 0 ? -la.errno_(a) : -EBADMSG;
                }
                if (n == 0)
                        continue;
                if (off < 0 || (uint64_t)off < pos || (uint64_t)off > size || n > size - (uint64_t)off) {
                        *ret_why = "data block outside the entry's size";
                        return -EBADMSG;
                }
                r = extent_add(in, (uint64_t)off, n);
                if (r < 0)
                        return r;
                pos = (uint64_t)off;
                while (n > 0) {
                        uint32_t ci = (uint32_t)(pos / ns->cs);
                        size_t in_chunk = (size_t)(pos % ns->cs), take = MIN(n, (size_t)ns->cs - in_chunk);

                        if (ci != cur) {
                                if (cur != TREE_HOLE) {
                                        r = submit(ns, in, cur, (uint32_t)MIN((uint64_t)ns->cs, size - (uint64_t)cur * ns->cs));
                                        if (r < 0)
                                                return r;
                                }
                                memset(ns->buf, 0, ns->cs);
                                cur = ci;
                        }
                        memcpy(ns->buf + in_chunk, p, take);
                        p = (const uint8_t *)p + take;
                        pos += take;
                        n -= take;
                }
        }
        if (cur != TREE_HOLE)
                return submit(ns, in, cur, (uint32_t)MIN((uint64_t)ns->cs, size - (uint64_t)cur * ns->cs));
        return 0;
}

static int entry_xattrs(struct archive_entry *e, struct inode *in, const char **ret_why)
{
        const char *name;
        const void *value;
        size_t len;

        xattrs_clear(in);
        la.entry_xattr_reset(e);
        while (la.entry_xattr_next(e, &name, &value, &len) == ARCHIVE_OK) {
                struct xattr *x = NULL;
                size_t nl = name ? strlen(name) : 0;

                if (nl == 0 || nl > TREE_XATTR_NAME_MAX) {
                        *ret_why = "xattr name empty or longer than 255 bytes";
                        return -EBADMSG;
                }
                if (len > IMPORT_XATTR_VALUE_MAX) {
                        *ret_why = "xattr value larger than 64 KiB";
                        return -EBADMSG;
                }
                for (size_t i = 0; i < in->n_xattrs; i++)
                        if (streq(in->xattrs[i].name, name))
                                x = &in->xattrs[i]; /* the last one wins */
                if (!x) {
                        struct xattr *xs = reallocarray(in->xattrs, in->n_xattrs + 1, sizeof *xs);
                        if (!xs)
                                return -ENOMEM;
                        in->xattrs = xs;
                        x = &in->xattrs[in->n_xattrs++];
                        *x = (struct xattr){ .name = strdup(name) };
                        if (!x->name)
                                return -ENOMEM;
                }
                free(x->value);
                x->value = malloc(MAX(len, (size_t)1));
                if (!x->value)
                        return -ENOMEM;
                if (len)
                        memcpy(x->value, value, len);
                x->len = len;
        }
        return 0;
}

static void entry_attrs(struct archive_entry *e, struct inode *in)
{
        /* The type from the entry's type flag, the permissions from the
         * mode's low 12 bits: what a header's mode field holds above them
         * is noise (tar ignores it; our tree rejects it). */
        in->mode = (uint32_t)(la.entry_filetype(e) | (la.entry_perm(e) & 07777));
        in->uid = (uint32_t)la.entry_uid(e);
        in->gid = (uint32_t)la.entry_gid(e);
        in->mtime = (struct timespec){ .tv_sec = la.entry_mtime(e), .tv_nsec = la.entry_mtime_nsec(e) };
        in->atime = la.entry_atime_is_set(e)
                            ? (struct timespec){ .tv_sec = la.entry_atime(e), .tv_nsec = la.entry_atime_nsec(e) }
                            : in->mtime;
        in->ctime = la.entry_ctime_is_set(e)
                            ? (struct timespec){ .tv_sec = la.entry_ctime(e), .tv_nsec = la.entry_ctime_nsec(e) }
                            : in->mtime;
}

static int whiteout(struct import_ns *ns, const struct path *p, const char *wh, const char **ret_why)
{
        struct node *dir, *k;
        int r;

        ns->whiteouts++;
        r = walk(ns, p, streq(wh, WH_OPAQUE), &dir, ret_why);
        if (r < 0 || !dir)
                return r;
        if (streq(wh, WH_OPAQUE)) {
                /* This layer declares the directory: keep it, hide the rest. */
                prune(dir, ns->layer);
                touch(dir, ns->layer);
                return 0;
        }
        if (strncmp(wh, WH_PREFIX WH_PREFIX, 8) == 0)
                return 0; /* other AUFS metadata (.wh..wh.plnk, ...): not part of the tree */
        wh += strlen(WH_PREFIX);
        if (!wh[0] || streq(wh, ".") || streq(wh, "..")) {
                *ret_why = "whiteout of an invalid name";
                return -EBADMSG;
        }
        k = kid_find(dir, wh, strlen(wh), NULL);
        if (k && k->touched < ns->layer)
                kid_remove(dir, k);
        return 0;
}

static int apply_entry(struct import_ns *ns, struct archive *a, struct archive_entry *e, const char *name,
                       const char **ret_why)
{
        struct path p;
        struct node *dir, *old, *k = NULL;
        struct inode *in = NULL;
        const char *link = la.entry_hardlink(e), *last;
        mode_t type = la.entry_filetype(e);
        la_int64_t size = la.entry_size(e);
        size_t last_len;
        int r;

        *ret_why = path_split(name, &p);
        if (*ret_why)
                return -EBADMSG;
        if (size < 0 || (uint64_t)size > IMPORT_ENTRY_SIZE_MAX) {
                *ret_why = "absurd size in the header";
                return -EBADMSG;
        }
        if (p.n == 0) {
                /* The root itself ("./"): its attributes. */
                if (link || type != AE_IFDIR) {
                        *ret_why = "the root is not a directory";
                        return -EBADMSG;
                }
                entry_attrs(e, ns->root->in);
                ns->root->touched = ns->layer;
                return entry_xattrs(e, ns->root->in, ret_why);
        }
        last = p.comp[p.n - 1];
        last_len = p.len[p.n - 1];
        if (last_len >= strlen(WH_PREFIX) && strncmp(last, WH_PREFIX, strlen(WH_PREFIX)) == 0) {
                if (link || type == AE_IFDIR) {
                        *ret_why = "a whiteout that is a directory or a hardlink";
                        return -EBADMSG;
                }
                return whiteout(ns, &p, last, ret_why);
        }

        r = walk(ns, &p, true, &dir, ret_why);
        if (r < 0)
                return r;
        old = kid_find(dir, last, last_len, NULL);

        if (link) {
                struct path lp;
                struct node *ld, *target;

                *ret_why = path_split(link, &lp);
                if (*ret_why || lp.n == 0) {
                        *ret_why = *ret_why ? "hardlink target outside the image root" : "hardlink to the root";
                        return -EBADMSG;
                }
                r = walk(ns, &lp, false, &ld, ret_why);
                if (r < 0) {
                        *ret_why = "hardlink target goes through a symlink or non-directory";
                        return r;
                }
                target = ld ? kid_find(ld, lp.comp[lp.n - 1], lp.len[lp.n - 1], NULL) : NULL;
                if (!target) {
                        *ret_why = "hardlink target does not exist";
                        return -EBADMSG;
                }
                if (S_ISDIR(target->in->mode)) {
                        *ret_why = "hardlink to a directory";
                        return -EBADMSG;
                }
                if (target == old) {
                        touch(old, ns->layer);
                        return 0; /* a link to itself */
                }
                in = target->in;
                if (old)
                        kid_remove(dir, old);
                r = kid_add(dir, last, last_len, in, &k);
                if (r < 0)
                        return r;
                touch(k, ns->layer);
                return 0;
        }

        switch (type) {
        case AE_IFREG:
        case AE_IFDIR:
        case AE_IFLNK:
        case AE_IFCHR:
        case AE_IFBLK:
        case AE_IFIFO:
                break;
        default:
                *ret_why = "unsupported file type";
                return -EBADMSG;
        }

        if (old && S_ISDIR(old->in->mode) && type == AE_IFDIR) {
                /* A directory again: new attributes, lower entries stay. */
                entry_attrs(e, old->in);
                touch(old, ns->layer);
                return entry_xattrs(e, old->in, ret_why);
        }
        if (old)
                kid_remove(dir, old);
        r = inode_new(ns, &in);
        if (r < 0)
                return r;
        entry_attrs(e, in);
        r = entry_xattrs(e, in, ret_why);
        if (r < 0)
                return r;
        switch (type) {
        case AE_IFLNK: {
                const char *t = la.entry_symlink(e);
                if (!t)
                        t = la.entry_symlink_utf8(e);
                if (!t || !t[0] || strlen(t) > TREE_SYMLINK_MAX) {
                        *ret_why = "symlink target empty or longer than 4095 bytes";
                        return -EBADMSG;
                }
                in->target = strdup(t);
                if (!in->target)
                        return -ENOMEM;
                in->size = strlen(t);
                break;
        }
        case AE_IFCHR:
        case AE_IFBLK:
                in->rdev = (uint64_t)la.entry_rdev(e);
                break;
        default:
                break;
        }
        r = kid_add(dir, last, last_len, in, &k);
        if (r < 0)
                return r;
        touch(k, ns->layer);
        if (type == AE_IFREG) {
                in->size = (uint64_t)size;
                return file_data(ns, a, in, ret_why);
        }
        return 0;
}

/* apply(): every entry of tar reader a. Logs once, naming layer and entry. */
static int apply(struct import_ns *ns, struct archive *a, const char *layer, int (*cb_error)(void *), void *cb_ctx)
{
        struct archive_entry *e;
        int r;

        ns->layer++;
        ns->layer_name = layer;
        for (;;) {
                const char *why = NULL, *name;

                r = la.read_next_header(a, &e);
                if (r == ARCHIVE_EOF)
                        return 0;
                if (r < ARCHIVE_WARN) {
                        int err = cb_error ? cb_error(cb_ctx) : 0;
                        if (err < 0)
                                return err; /* the stream's own error, logged there */
                        return log_error_errno(EBADMSG, "%s: bad tar data after %" PRIu64 " entries: %s", layer,
                                               ns->entries, la.error_string(a) ? la.error_string(a) : "?");
                }
                name = la.entry_pathname(e);
                if (!name)
                        name = la.entry_pathname_utf8(e);
                if (!name)
                        return log_error_errno(EBADMSG, "%s: entry %" PRIu64 " has no path", layer, ns->entries);
                ns->entries++;
                r = apply_entry(ns, a, e, name, &why);
                if (r < 0) {
                        int err = cb_error ? cb_error(cb_ctx) : 0;
                        if (err < 0)
                                return err;
                        if (why)
                                return log_error_errno(r, "%s: entry \"%.300s\": %s", layer, name, why);
                        return log_error_errno(r, "%s: entry \"%.300s\": %m", layer, name);
                }
                r = atomic_load(&ns->error);
                if (r < 0)
                        return r;
        }
}

int import_ns_new(struct packer *p, uint32_t cs, unsigned threads, int level, struct import_ns **ret)
{
        struct import_ns *ns;
        struct inode *root;
        int r;

        if (!p || !ret || !chunk_size_valid(cs))
                return -EINVAL;
        ns = calloc(1, sizeof *ns);
        if (!ns)
                return -ENOMEM;
        ns->packer = p;
        ns->cs = cs;
        ns->level = level ? level : CHUNK_LEVEL_DEFAULT;
        pthread_mutex_init(&ns->lock, NULL);
        pthread_cond_init(&ns->cond_job, NULL);
        pthread_cond_init(&ns->cond_room, NULL);
        ns->root = calloc(1, sizeof *ns->root);
        ns->buf = malloc(cs);
        r = -ENOMEM;
        if (!ns->root || !ns->buf)
                goto fail;
        ns->root->name = strdup("");
        if (!ns->root->name)
                goto fail;
        r = dir_inode(ns, &root);
        if (r < 0)
                goto fail;
        ns->root->in = root;
        root->refs = 1;
        r = -ENOMEM;
        if (threads == 0) {
                ns->codec = chunk_codec_new(ns->level);
                if (!ns->codec)
                        goto fail;
        } else {
                ns->q_cap = 2 * (size_t)threads + 2;
                ns->q = calloc(ns->q_cap, sizeof *ns->q);
                ns->workers = calloc(threads, sizeof *ns->workers);
                if (!ns->q || !ns->workers)
                        goto fail;
                ns->n_workers = threads;
                for (unsigned i = 0; i < threads; i++) {
                        struct worker *w = &ns->workers[i];
                        w->ns = ns;
                        r = -ENOMEM;
                        w->codec = chunk_codec_new(ns->level);
                        if (!w->codec)
                                goto fail;
                        r = -pthread_create(&w->thread, NULL, worker_main, w);
                        if (r < 0)
                                goto fail;
                        w->started = true;
                }
        }
        *ret = ns;
        return 0;
fail:
        import_ns_free(ns);
        return r;
}

struct import_ns *import_ns_free(struct import_ns *ns)
{
        if (!ns)
                return NULL;
        (void)drain(ns);
        for (unsigned i = 0; i < ns->n_workers; i++)
                chunk_codec_free(ns->workers[i].codec);
        free(ns->workers);
        for (size_t i = 0; i < ns->q_n; i++)
                free(ns->q[(ns->q_head + i) % ns->q_cap].buf);
        free(ns->q);
        for (size_t i = 0; i < ns->n_free; i++)
                free(ns->free_bufs[i]);
        free(ns->free_bufs);
        free(ns->buf);
        chunk_codec_free(ns->codec);
        node_free(ns->root);
        for (size_t i = 0; i < ns->n_inodes; i++)
                inode_free(ns->inodes[i]);
        free(ns->inodes);
        pthread_mutex_destroy(&ns->lock);
        pthread_cond_destroy(&ns->cond_job);
        pthread_cond_destroy(&ns->cond_room);
        free(ns);
        return NULL;
}

static struct archive *tar_reader_new(void)
{
        struct archive *a = la.read_new();

        if (!a)
                return NULL;
        if (la.read_support_format_tar(a) != ARCHIVE_OK ||
            la.read_support_filter_none(a) != ARCHIVE_OK) {
                la.read_free(a);
                return NULL;
        }
        return a;
}

int import_ns_apply_tar(struct import_ns *ns, const void *tar, size_t len, const char *layer)
{
        struct archive *a;
        int r;

        if (!ns || (!tar && len) || !layer || ns->spent)
                return -EINVAL;
        r = la_load();
        if (r < 0)
                return r;
        a = tar_reader_new();
        if (!a)
                return -ENOMEM;
        if (la.read_open_memory(a, tar, len) != ARCHIVE_OK)
                r = log_error_errno(EBADMSG, "layer %s: %s", layer, la.error_string(a) ? la.error_string(a) : "not a tar");
        else
                r = apply(ns, a, layer, NULL, NULL);
        la.read_free(a);
        return r;
}

/* ------------------------------------------------------------------ build */

struct build {
        struct tree_builder *tb;
        uint32_t *bchunk; /* packer ref -> builder chunk */
        size_t n_refs;
        uint64_t next_ino;
        uint32_t *tmp;
        size_t a_tmp;
        struct import_stats *st;
};

static int build_inode(struct build *b, struct inode *in)
{
        struct tree_attr a = {
                .ino = in->ino,
                .mode = in->mode,
                .uid = in->uid,
                .gid = in->gid,
                .nlink = S_ISDIR(in->mode) ? 2 + in->nsubdirs : in->refs,
                .size = S_ISREG(in->mode) || S_ISLNK(in->mode) ? in->size : 0,
                .rdev = S_ISCHR(in->mode) || S_ISBLK(in->mode) ? in->rdev : 0,
                .atime = in->atime,
                .mtime = in->mtime,
                .ctime = in->ctime,
        };
        int r;

        r = tree_builder_add_inode(b->tb, &a, &in->handle);
        if (r < 0)
                return r;
        if (in->target) {
                r = tree_builder_set_symlink(b->tb, in->handle, in->target, strlen(in->target));
                if (r < 0)
                        return r;
        }
        for (size_t x = 0; x < in->n_xattrs; x++) {
                r = tree_builder_add_xattr(b->tb, in->handle, in->xattrs[x].name, in->xattrs[x].value,
                                           in->xattrs[x].len);
                if (r < 0)
                        return r;
        }
        if (S_ISREG(in->mode)) {
                b->st->files++;
                b->st->bytes_logical += in->size;
        } else if (S_ISDIR(in->mode))
                b->st->dirs++;
        else if (S_ISLNK(in->mode))
                b->st->symlinks++;
        else
                b->st->others++;
        if (in->nchunks == 0)
                return 0;
        if (grow((void **)&b->tmp, &b->a_tmp, in->nchunks, sizeof *b->tmp) < 0)
                return -ENOMEM;
        for (uint32_t k = 0; k < in->nchunks; k++) {
                uint32_t ref = in->chunks[k];
                if (ref != TREE_HOLE && ref >= b->n_refs)
                        return -EINVAL;
                b->tmp[k] = ref == TREE_HOLE ? TREE_HOLE : b->bchunk[ref];
        }
        r = tree_builder_set_chunks(b->tb, in->handle, b->tmp, in->nchunks);
        if (r < 0)
                return r;
        for (size_t e = 0; e < in->n_extents; e++) {
                r = tree_builder_add_extent(b->tb, in->handle, in->extents[e][0], in->extents[e][1]);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* count_subdirs(): each directory's nlink is 2 + its subdirectories. */
static void count_subdirs(struct node *n)
{
        for (size_t i = 0; i < n->n_kids; i++)
                if (S_ISDIR(n->kids[i]->in->mode)) {
                        n->in->nsubdirs++;
                        count_subdirs(n->kids[i]);
                }
}

/* number(): inode numbers depth first in name order, each inode added to the
 * builder at its first name. */
static int number(struct build *b, struct node *n, unsigned depth)
{
        int r;

        if (depth > IMPORT_PATH_MAX)
                return -ELOOP;
        for (size_t i = 0; i < n->n_kids; i++) {
                struct node *k = n->kids[i];
                if (k->in->ino == 0) {
                        k->in->ino = b->next_ino++;
                        r = build_inode(b, k->in);
                        if (r < 0)
                                return r;
                }
                if (S_ISDIR(k->in->mode)) {
                        r = number(b, k, depth + 1);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static int dirents(struct build *b, struct node *n)
{
        int r;

        for (size_t i = 0; i < n->n_kids; i++) {
                struct node *k = n->kids[i];
                r = tree_builder_add_dirent(b->tb, n->in->handle, k->name, strlen(k->name), k->in->ino);
                if (r < 0)
                        return r;
                if (S_ISDIR(k->in->mode)) {
                        r = dirents(b, k);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static int ns_build(struct import_ns *ns, struct import_stats *st, void **ret, size_t *ret_len,
                    struct digest *ret_digest)
{
        struct build b = { .next_ino = TREE_ROOT_INO + 1, .st = st };
        int r;

        if (ns->spent)
                return -EINVAL;
        ns->spent = true;
        r = drain(ns);
        if (r < 0)
                return r;
        r = packer_flush(ns->packer);
        if (r < 0)
                return log_error_errno(r, "write packs: %m");
        b.tb = tree_builder_new(ns->cs);
        if (!b.tb)
                return -ENOMEM;
        r = packer_add_to_builder(ns->packer, b.tb, &b.bchunk, &b.n_refs);
        if (r < 0)
                goto fail;
        count_subdirs(ns->root);
        ns->root->in->ino = TREE_ROOT_INO;
        r = number(&b, ns->root, 0);
        if (r < 0)
                goto fail;
        r = build_inode(&b, ns->root->in);
        if (r < 0)
                goto fail;
        r = dirents(&b, ns->root);
        if (r < 0)
                goto fail;
        tree_builder_set_next_ino(b.tb, b.next_ino);
        r = tree_builder_finish(b.tb, CHUNK_LEVEL_DEFAULT, ret, ret_len, ret_digest);
fail:
        tree_builder_free(b.tb);
        free(b.bchunk);
        free(b.tmp);
        return r;
}

int import_ns_build(struct import_ns *ns, void **ret, size_t *ret_len, struct digest *ret_digest)
{
        struct import_stats st = {};

        if (!ns || !ret || !ret_len || !ret_digest)
                return -EINVAL;
        return ns_build(ns, &st, ret, ret_len, ret_digest);
}

/* ------------------------------------------------------------ blob streams */

/* A blob read in order from a source, hashed as it goes; size is the
 * descriptor's. err keeps the first failure (logged once, here). */
struct blob_stream {
        struct image_source *src;
        const char *what; /* "layer 2 (sha256:...)" */
        struct digest d;
        uint64_t size, off;
        struct sha256 *h;
        uint8_t *buf;
        int err;
        progress_fn progress;
        void *progress_ctx;
        uint64_t *done, total;
};

static ssize_t blob_next(struct blob_stream *s, const void **ret)
{
        ssize_t n;

        if (s->err)
                return s->err;
        if (s->off >= s->size)
                return 0;
        n = s->src->ops->read(s->src, &s->d, s->off, s->buf, (size_t)MIN((uint64_t)BLOB_BUF, s->size - s->off));
        if (n == 0)
                n = -EBADMSG;
        if (n < 0)
                return s->err = n == -EBADMSG ? log_error_errno(n, "%s: blob shorter than its descriptor's %" PRIu64 " bytes",
                                                               s->what, s->size)
                                              : log_error_errno((int)n, "%s: read blob: %m", s->what);
        if (sha256_update(s->h, s->buf, (size_t)n) < 0)
                return s->err = -ENOMEM;
        s->off += (uint64_t)n;
        if (s->done) {
                *s->done += (uint64_t)n;
                if (s->progress)
                        s->progress(s->progress_ctx, "import", *s->done, s->total);
        }
        *ret = s->buf;
        return n;
}

/* blob_finish(): read what is left, then check length and digest. */
static int blob_finish(struct blob_stream *s)
{
        struct digest got;
        char want_s[DIGEST_STR_LEN + 1];
        const void *p;
        ssize_t n;
        uint8_t extra;

        while ((n = blob_next(s, &p)) > 0)
                ;
        if (n < 0)
                return (int)n;
        n = s->src->ops->read(s->src, &s->d, s->size, &extra, 1);
        if (n > 0)
                return s->err = log_error_errno(EBADMSG, "%s: blob longer than its descriptor's %" PRIu64 " bytes",
                                                s->what, s->size);
        if (sha256_final(s->h, &got) < 0)
                return -ENOMEM;
        if (!digest_eq(&got, &s->d))
                return s->err = log_error_errno(EBADMSG, "%s: content does not match digest %s", s->what,
                                                digest_str(&s->d, want_s));
        return 0;
}

/* blob_read_small(): a whole small blob (a config), verified. */
static int blob_read_small(struct image_source *src, const char *what, const struct digest *d, uint64_t size,
                           size_t max, char **ret, size_t *ret_len)
{
        _cleanup_(freep) char *data = NULL;
        struct digest got;
        ssize_t n;

        if (size > max)
                return log_error_errno(EFBIG, "%s: %" PRIu64 " bytes, more than %zu", what, size, max);
        data = malloc((size_t)size + 2);
        if (!data)
                return -ENOMEM;
        n = src->ops->read(src, d, 0, data, (size_t)size + 1);
        if (n < 0)
                return log_error_errno((int)n, "%s: read blob: %m", what);
        if ((uint64_t)n != size)
                return log_error_errno(EBADMSG, "%s: blob is %s than its descriptor's %" PRIu64 " bytes", what,
                                       (uint64_t)n < size ? "shorter" : "longer", size);
        digest_sha256(data, (size_t)n, &got);
        if (!digest_eq(&got, d))
                return log_error_errno(EBADMSG, "%s: content does not match its digest", what);
        data[n] = 0;
        *ret = TAKE_PTR(data);
        *ret_len = (size_t)n;
        return 0;
}

/* ------------------------------------------------------------------ layers */

enum compression { COMP_NONE, COMP_GZIP, COMP_ZSTD };

static int layer_compression(const char *mt, enum compression *ret)
{
        static const struct {
                const char *type;
                enum compression c;
        } types[] = {
                { "application/vnd.oci.image.layer.v1.tar", COMP_NONE },
                { "application/vnd.oci.image.layer.v1.tar+gzip", COMP_GZIP },
                { "application/vnd.oci.image.layer.v1.tar+zstd", COMP_ZSTD },
                { "application/vnd.oci.image.layer.nondistributable.v1.tar", COMP_NONE },
                { "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", COMP_GZIP },
                { "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", COMP_ZSTD },
                { "application/vnd.docker.image.rootfs.diff.tar", COMP_NONE },
                { "application/vnd.docker.image.rootfs.diff.tar.gzip", COMP_GZIP },
                { "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", COMP_GZIP },
                { "application/vnd.docker.image.rootfs.diff.tar.zstd", COMP_ZSTD },
        };

        for (size_t i = 0; i < ELEMENTSOF(types); i++)
                if (streq(mt, types[i].type)) {
                        *ret = types[i].c;
                        return 0;
                }
        return -EPROTONOSUPPORT;
}

/* The uncompressed tar stream of one layer: either the blob itself or what
 * libarchive's decompressor (format "raw") makes of it; hashed for diff_id. */
struct layer_stream {
        struct blob_stream *blob;
        struct archive *outer; /* NULL: uncompressed */
        struct sha256 *h;
        uint8_t *buf;
        uint64_t bytes;
        int err;
        const char *what;
};

static la_ssize_t outer_read_cb(struct archive *a, void *ctx, const void **ret)
{
        struct blob_stream *s = ctx;
        ssize_t n = blob_next(s, ret);

        if (n < 0) {
                la.set_error(a, (int)-n, "read blob");
                return -1;
        }
        return n;
}

static la_ssize_t tar_read_cb(struct archive *a, void *ctx, const void **ret)
{
        struct layer_stream *l = ctx;
        ssize_t n;

        *ret = l->buf;
        if (l->err)
                return -1;
        if (!l->outer) {
                n = blob_next(l->blob, ret);
        } else {
                n = la.read_data(l->outer, l->buf, TAR_BUF);
                if (n < 0 && !l->blob->err)
                        l->err = log_error_errno(EBADMSG, "%s: cannot decompress: %s", l->what,
                                                 la.error_string(l->outer) ? la.error_string(l->outer) : "?");
                *ret = l->buf;
        }
        if (n < 0) {
                if (!l->err)
                        l->err = l->blob->err ? l->blob->err : -EBADMSG;
                la.set_error(a, EIO, "read layer");
                return -1;
        }
        if (n > 0 && sha256_update(l->h, *ret, (size_t)n) < 0) {
                l->err = -ENOMEM;
                return -1;
        }
        l->bytes += (uint64_t)n;
        return n;
}

static int layer_stream_error(void *ctx)
{
        struct layer_stream *l = ctx;
        return l->err ? l->err : l->blob->err;
}

static void la_freep(struct archive **a)
{
        if (*a)
                la.read_free(*a);
}

struct layer_desc {
        struct digest digest, diff_id;
        uint64_t size;
        enum compression comp;
        char what[64 + DIGEST_STR_LEN];
};

static int import_layer(struct import_ns *ns, struct image_source *src, const struct layer_desc *ld,
                        const struct import_opts *o, uint64_t *done, uint64_t total, struct import_stats *st)
{
        _cleanup_(la_freep) struct archive *outer = NULL, *tar = NULL;
        _cleanup_(freep) uint8_t *bbuf = NULL, *tbuf = NULL;
        struct blob_stream bs = {
                .src = src, .what = ld->what, .d = ld->digest, .size = ld->size,
                .progress = o->progress, .progress_ctx = o->progress_ctx, .done = done, .total = total,
        };
        struct layer_stream ls = { .blob = &bs, .what = ld->what };
        struct archive_entry *e;
        struct digest got;
        const void *p;
        char ds[DIGEST_STR_LEN + 1];
        int r;

        r = la_load();
        if (r < 0)
                return r;
        bbuf = malloc(BLOB_BUF);
        tbuf = malloc(TAR_BUF);
        bs.h = sha256_new();
        ls.h = sha256_new();
        bs.buf = bbuf;
        ls.buf = tbuf;
        r = -ENOMEM;
        if (!bbuf || !tbuf || !bs.h || !ls.h)
                goto fail;

        if (ld->comp != COMP_NONE) {
                outer = la.read_new();
                if (!outer)
                        goto fail;
                if (la.read_append_filter(outer, ld->comp == COMP_GZIP ? ARCHIVE_FILTER_GZIP : ARCHIVE_FILTER_ZSTD) != ARCHIVE_OK ||
                    la.read_support_format_raw(outer) != ARCHIVE_OK) {
                        r = log_error_errno(EPROTONOSUPPORT, "%s: libarchive cannot decompress it: %s", ld->what,
                                            la.error_string(outer) ? la.error_string(outer) : "?");
                        goto fail;
                }
                if (la.read_open(outer, &bs, NULL, outer_read_cb, NULL) != ARCHIVE_OK ||
                    la.read_next_header(outer, &e) != ARCHIVE_OK) {
                        r = bs.err ? bs.err : log_error_errno(EBADMSG, "%s: cannot decompress: %s", ld->what,
                                                              la.error_string(outer) ? la.error_string(outer) : "?");
                        goto fail;
                }
                ls.outer = outer;
        }
        tar = tar_reader_new();
        if (!tar)
                goto fail;
        if (la.read_open(tar, &ls, NULL, tar_read_cb, NULL) != ARCHIVE_OK) {
                r = layer_stream_error(&ls);
                if (r == 0)
                        r = log_error_errno(EBADMSG, "%s: not a tar archive: %s", ld->what,
                                            la.error_string(tar) ? la.error_string(tar) : "?");
                goto fail;
        }
        r = apply(ns, tar, ld->what, layer_stream_error, &ls);
        if (r < 0)
                goto fail;
        /* The rest of the tar stream (end blocks, padding) counts for diff_id. */
        while ((r = (int)tar_read_cb(tar, &ls, &p)) > 0)
                ;
        if (r < 0) {
                r = layer_stream_error(&ls);
                goto fail;
        }
        r = blob_finish(&bs);
        if (r < 0)
                goto fail;
        if (sha256_final(ls.h, &got) < 0) {
                r = -ENOMEM;
                goto fail;
        }
        if (!digest_eq(&got, &ld->diff_id)) {
                r = log_error_errno(EBADMSG, "%s: uncompressed content %s does not match the config's diff_id",
                                    ld->what, digest_str(&got, ds));
                goto fail;
        }
        st->bytes_tar += ls.bytes;
        st->bytes_layers += ld->size;
        r = 0;
fail:
        sha256_free(bs.h);
        sha256_free(ls.h);
        return r;
}

/* ------------------------------------------------------------ the manifest */

static int parse_descriptor(const json_t *j, const char *what, const char **ret_type, struct digest *ret_digest,
                            uint64_t *ret_size)
{
        const json_t *size = json_object_get(j, "size");
        const char *type = json_string_value(json_object_get(j, "mediaType"));

        if (!json_is_object(j) || !json_is_integer(size) || json_integer_value(size) < 0 ||
            !json_is_string(json_object_get(j, "digest")) ||
            digest_parse(json_string_value(json_object_get(j, "digest")), ret_digest) < 0)
                return log_error_errno(EBADMSG, "%s: descriptor without a sha256 digest and a size", what);
        *ret_type = type ? type : "";
        *ret_size = (uint64_t)json_integer_value(size);
        return 0;
}

/* resolve_manifest(): follow image indexes to the manifest for the
 * platform; *ret is the parsed manifest. */
static int resolve_manifest(struct image_source *src, const struct import_opts *o, const char *what,
                            json_t **ret, struct digest *ret_digest)
{
        _cleanup_(json_decrefp) json_t *j = NULL;
        const char *os = o->os ? o->os : "linux", *arch = o->arch ? o->arch : "amd64";
        char ref[DIGEST_STR_LEN + 1];
        struct digest want = {};
        bool have_want = false;
        const char *name = o->ref;

        for (unsigned depth = 0;; depth++) {
                _cleanup_(freep) void *data = NULL;
                struct digest d, got;
                json_error_t err;
                const char *mt;
                json_t *arr, *e, *pick = NULL;
                size_t len, i;
                int r;

                if (depth > INDEX_DEPTH_MAX)
                        return log_error_errno(ELOOP, "%s: image indexes nested deeper than %d", what, INDEX_DEPTH_MAX);
                r = src->ops->manifest(src, name, MANIFEST_MAX, &data, &len, &d);
                if (r == -ENOENT)
                        return log_error_errno(r, "%s: no image %s there", what, name[0] ? name : "(untagged)");
                if (r == -EFBIG)
                        return log_error_errno(r, "%s: manifest %s larger than %u bytes", what, name, MANIFEST_MAX);
                if (r < 0)
                        return log_error_errno(r, "%s: read manifest %s: %m", what, name);
                digest_sha256(data, len, &got);
                if (!digest_eq(&got, &d) || (have_want && !digest_eq(&got, &want)))
                        return log_error_errno(EBADMSG, "%s: manifest %s does not match its digest", what, name);
                json_decref(j);
                j = json_loadb(data, len, JSON_REJECT_DUPLICATES, &err);
                if (!json_is_object(j))
                        return log_error_errno(EBADMSG, "%s: manifest %s is not a JSON object: %s", what, name,
                                               j ? "" : err.text);
                mt = json_string_value(json_object_get(j, "mediaType"));
                arr = json_object_get(j, "manifests");
                if (!(mt ? streq(mt, MEDIA_OCI_INDEX) || streq(mt, MEDIA_DOCKER_LIST) : json_is_array(arr))) {
                        if (mt && !streq(mt, MEDIA_OCI_MANIFEST) && !streq(mt, MEDIA_DOCKER_MANIFEST))
                                return log_error_errno(EPROTONOSUPPORT, "%s: unsupported manifest media type %s", what, mt);
                        *ret = TAKE_PTR(j);
                        *ret_digest = got;
                        return 0;
                }
                if (!json_is_array(arr))
                        return log_error_errno(EBADMSG, "%s: image index without manifests", what);
                json_array_foreach(arr, i, e) {
                        const json_t *pf = json_object_get(e, "platform");
                        const char *pos = json_string_value(json_object_get(pf, "os"));
                        const char *parch = json_string_value(json_object_get(pf, "architecture"));
                        if (pos && parch && streq(pos, os) && streq(parch, arch)) {
                                pick = e;
                                break;
                        }
                }
                if (!pick && json_array_size(arr) == 1 && !json_object_get(json_array_get(arr, 0), "platform"))
                        pick = json_array_get(arr, 0);
                if (!pick)
                        return log_error_errno(ENOENT, "%s: the image index has no %s/%s manifest", what, os, arch);
                {
                        const char *t;
                        uint64_t sz;
                        r = parse_descriptor(pick, what, &t, &want, &sz);
                        if (r < 0)
                                return r;
                        if (sz > MANIFEST_MAX)
                                return log_error_errno(EFBIG, "%s: manifest larger than %u bytes", what, MANIFEST_MAX);
                }
                have_want = true;
                name = digest_str(&want, ref);
        }
}

static bool two_digits(const char *s, int *ret)
{
        if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9')
                return false;
        *ret = (s[0] - '0') * 10 + (s[1] - '0');
        return true;
}

/* created_of(): the image's creation time as the snapshot's, in seconds. */
static void created_of(const json_t *config, char buf[static 32])
{
        const char *s = json_string_value(json_object_get(config, "created"));
        struct tm tm = {};
        const char *end;
        int64_t sec;

        buf[0] = 0;
        if (!s)
                return;
        end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
        if (!end)
                return;
        if (*end == '.')
                for (end++; *end >= '0' && *end <= '9'; end++)
                        ;
        sec = (int64_t)timegm(&tm);
        if (*end == '+' || *end == '-') {
                int hh, mm;
                if (strlen(end) != 6 || end[3] != ':' || !two_digits(end + 1, &hh) || !two_digits(end + 4, &mm))
                        return;
                sec -= (*end == '+' ? 1 : -1) * (int64_t)(hh * 3600 + mm * 60);
        } else if (!streq(end, "Z") && !streq(end, "z")) {
                return;
        }
        if (sec < 0)
                return;
        format_rfc3339(sec, buf);
}

/* already_imported(): a known snapshot made from this very image manifest by
 * this importer, with the same chunk size and labels: importing it again
 * would make the same tree, so that snapshot is the answer. (A fresh import
 * would also pack again the bytes that the image's own upper layers replace
 * or delete, which no tree references.) */
static const struct snapshot *already_imported(struct snapshot *const *known, size_t n, const struct digest *image,
                                               const json_t *labels)
{
        char ds[DIGEST_STR_LEN + 1];

        digest_str(image, ds);
        for (size_t i = 0; i < n; i++) {
                const json_t *s = known[i]->config.stats;
                const char *m = json_string_value(json_object_get(s, "imageManifest"));
                if (m && streq(m, ds) && json_integer_value(json_object_get(s, "importer")) == IMPORTER_VERSION &&
                    !known[i]->config.has_parent && known[i]->config.image &&
                    (labels ? json_equal(known[i]->config.labels, labels) : json_object_size(known[i]->config.labels) == 0))
                        return known[i];
        }
        return NULL;
}

static json_t *stats_json(const struct import_stats *s, const struct digest *image)
{
        char ds[DIGEST_STR_LEN + 1];

        /* Only properties of the image, so importing it again gives the same
         * config (and digest); what an import cost is in struct import_stats. */
        return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:s,s:I}", "files", (json_int_t)s->files, "dirs",
                         (json_int_t)s->dirs, "symlinks", (json_int_t)s->symlinks, "others",
                         (json_int_t)s->others, "bytes", (json_int_t)s->bytes_logical, "layers",
                         (json_int_t)s->layers, "imageManifest", digest_str(image, ds), "importer",
                         (json_int_t)IMPORTER_VERSION);
}

int store_import(struct backend *b, const struct import_opts *o, struct digest *ret, struct import_stats *ret_stats)
{
        _cleanup_(json_decrefp) json_t *manifest = NULL, *config = NULL, *stats = NULL;
        _cleanup_(freep) char *config_data = NULL;
        _cleanup_(freep) struct layer_desc *layers = NULL;
        _cleanup_(freep) void *blob = NULL;
        struct snapshot **known = NULL;
        struct packer *packer = NULL;
        struct import_ns *ns = NULL;
        struct import_stats st = {};
        struct packer_stats ps;
        struct digest cfg_digest, tree_digest, result;
        const json_t *layers_j, *diff_ids, *cfg_desc;
        const char *what, *cfg_type;
        char created[32], ds[DIGEST_STR_LEN + 1];
        uint64_t t0 = now_ns(), cfg_size, total = 0, done = 0;
        size_t n_known = 0, n_layers, cfg_len = 0, blob_len = 0;
        uint32_t cs;
        unsigned threads;
        int r;

        if (!b || !o || !o->src || !o->ref || !ret)
                return -EINVAL;
        what = o->what ? o->what : o->ref;
        cs = o->chunk_size ? o->chunk_size : CHUNK_SIZE_DEFAULT;
        if (!chunk_size_valid(cs))
                return log_error_errno(EINVAL, "chunk size %u is not a power of two in [%u, %u]", cs, CHUNK_SIZE_MIN,
                                       CHUNK_SIZE_MAX);

        r = resolve_manifest(o->src, o, what, &manifest, &st.image_manifest);
        if (r < 0)
                return r;
        cfg_desc = json_object_get(manifest, "config");
        layers_j = json_object_get(manifest, "layers");
        if (json_integer_value(json_object_get(manifest, "schemaVersion")) != 2 || !json_is_array(layers_j))
                return log_error_errno(EBADMSG, "%s: manifest is not an image manifest (schemaVersion 2, layers)", what);
        r = parse_descriptor(cfg_desc, "config", &cfg_type, &cfg_digest, &cfg_size);
        if (r < 0)
                return r;
        if (!streq(cfg_type, MEDIA_OCI_CONFIG) && !streq(cfg_type, MEDIA_DOCKER_CONFIG))
                return log_error_errno(EPROTONOSUPPORT, "%s: not a container image (config media type %s)", what,
                                       cfg_type[0] ? cfg_type : "missing");
        r = blob_read_small(o->src, "image config", &cfg_digest, cfg_size, CONFIG_MAX, &config_data, &cfg_len);
        if (r < 0)
                return r;
        config = json_loadb(config_data, cfg_len, JSON_REJECT_DUPLICATES, NULL);
        diff_ids = json_object_get(json_object_get(config, "rootfs"), "diff_ids");
        if (!json_is_object(config) || !json_is_array(diff_ids))
                return log_error_errno(EBADMSG, "%s: image config without rootfs.diff_ids", what);
        n_layers = json_array_size(layers_j);
        if (json_array_size(diff_ids) != n_layers)
                return log_error_errno(EBADMSG, "%s: %zu layers but %zu diff_ids in the config", what, n_layers,
                                       json_array_size(diff_ids));
        layers = calloc(MAX(n_layers, (size_t)1), sizeof *layers);
        if (!layers)
                return -ENOMEM;
        for (size_t i = 0; i < n_layers; i++) {
                struct layer_desc *ld = &layers[i];
                const char *mt;

                snprintf(ld->what, sizeof ld->what, "layer %zu", i + 1);
                r = parse_descriptor(json_array_get(layers_j, i), ld->what, &mt, &ld->digest, &ld->size);
                if (r < 0)
                        return r;
                snprintf(ld->what, sizeof ld->what, "layer %zu (%s)", i + 1, digest_str(&ld->digest, ds));
                if (layer_compression(mt, &ld->comp) < 0)
                        return log_error_errno(EPROTONOSUPPORT, "%s: unsupported media type %s", ld->what,
                                               mt[0] ? mt : "(none)");
                if (digest_parse(json_string_value(json_array_get(diff_ids, i)) ?: "", &ld->diff_id) < 0)
                        return log_error_errno(EBADMSG, "%s: diff_id %zu is not a sha256 digest", what, i + 1);
                total += ld->size;
        }
        st.layers = n_layers;

        r = store_recent(b, cs, o->known_max ? o->known_max : IMPORT_KNOWN_DEFAULT, NULL, 0, &known, &n_known);
        if (r < 0)
                return r;
        st.known_snapshots = n_known;
        {
                const struct snapshot *same = already_imported(known, n_known, &st.image_manifest, o->labels);
                if (same) {
                        const json_t *s = same->config.stats;
                        if (o->tag) {
                                r = store_tag(b, &same->digest, o->tag);
                                if (r < 0) {
                                        log_error_errno(r, "%s: tag %s: %m", what, o->tag);
                                        goto fail;
                                }
                        }
                        st.files = (uint64_t)json_integer_value(json_object_get(s, "files"));
                        st.dirs = (uint64_t)json_integer_value(json_object_get(s, "dirs"));
                        st.symlinks = (uint64_t)json_integer_value(json_object_get(s, "symlinks"));
                        st.others = (uint64_t)json_integer_value(json_object_get(s, "others"));
                        st.bytes_logical = (uint64_t)json_integer_value(json_object_get(s, "bytes"));
                        st.tree_bytes = same->tree_size;
                        st.already = true;
                        st.wall_ns = now_ns() - t0;
                        *ret = same->digest;
                        if (ret_stats)
                                *ret_stats = st;
                        r = 0;
                        goto fail;
                }
        }
        r = packer_new(b, cs, o->level ? o->level : CHUNK_LEVEL_DEFAULT, &packer);
        if (r < 0)
                goto fail;
        for (size_t i = 0; i < n_known; i++) {
                r = packer_add_known(packer, known[i]->tree);
                if (r < 0)
                        goto fail;
        }
        threads = o->threads ? o->threads : (unsigned)MAX(sysconf(_SC_NPROCESSORS_ONLN), 1L);
        r = import_ns_new(packer, cs, threads, o->level, &ns);
        if (r < 0)
                goto fail;
        for (size_t i = 0; i < n_layers; i++) {
                r = import_layer(ns, o->src, &layers[i], o, &done, total, &st);
                if (r < 0)
                        goto fail;
        }
        st.entries = ns->entries;
        st.whiteouts = ns->whiteouts;
        r = ns_build(ns, &st, &blob, &blob_len, &tree_digest);
        if (r < 0) {
                log_error_errno(r, "%s: build the tree: %m", what);
                goto fail;
        }
        packer_get_stats(packer, &ps);
        st.chunks_total = ps.chunks_total;
        st.chunks_new = ps.chunks_new;
        st.chunks_reused = ps.chunks_reused;
        st.bytes_new = ps.bytes_new;
        st.bytes_packed = ps.bytes_packed;
        st.packs_new = ps.packs_new;
        st.tree_bytes = blob_len;
        stats = stats_json(&st, &st.image_manifest);
        if (!stats) {
                r = -ENOMEM;
                goto fail;
        }
        created_of(config, created);
        r = snapshot_publish(b,
                             &(struct snapshot_new){
                                     .tree_blob = blob,
                                     .tree_len = blob_len,
                                     .tree_digest = tree_digest,
                                     .chunk_size = cs,
                                     .labels = o->labels,
                                     .stats = stats,
                                     .image = config,
                                     .tag = o->tag,
                                     .created = created[0] ? created : NULL,
                             },
                             &result);
        if (r < 0)
                goto fail;
        st.wall_ns = now_ns() - t0;
        *ret = result;
        if (ret_stats)
                *ret_stats = st;
        r = 0;
fail:
        import_ns_free(ns);
        packer_free(packer);
        for (size_t i = 0; i < n_known; i++)
                snapshot_free(known[i]);
        free(known);
        return r;
}
