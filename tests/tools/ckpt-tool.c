/* ckpt-tool.c — test helper of the checkpoint tests (tests/integration/
 * checkpoint-*.sh): deterministic data, the same writes applied to several
 * trees (a mount and its native replay), the compressed size of a list of
 * chunks computed independently of the store, and the chunk references of
 * a stored snapshot.
 *
 *   ckpt-tool gen SEED KIND SIZE PATH...
 *       write SIZE bytes of content KIND (random | text | mixed) to every
 *       PATH (created or truncated); the bytes are a function of SEED alone
 *   ckpt-tool files SEED KIND SIZE N DIR...
 *       N files of SIZE bytes, DIR/dXX/fNNNNN (100 subdirectories), in
 *       every DIR; file i gets seed SEED*1000003+i (KIND mixed: text for
 *       even i, random for odd i)
 *   ckpt-tool scatter SEED NWRITES WSIZE PATH...
 *       NWRITES writes of WSIZE random bytes at WSIZE-aligned offsets (seeded,
 *       size unchanged), the same ones in every PATH; prints each offset
 *   ckpt-tool zsize LEVEL
 *       stdin: lines "PATH OFFSET LENGTH", each one chunk; compresses each
 *       with zstd at LEVEL as one frame (as store/chunk.c stores a chunk) and
 *       prints "chunks N clen C ulen U"
 *   ckpt-tool chunks STORE REF [PATH]
 *       the chunk table of snapshot REF's tree, one line per chunk:
 *       "ADDR PACK CLEN ULEN" (hex digests); with PATH, the chunks of that
 *       regular file in order: "I ADDR PACK CLEN ULEN" or "I hole"
 *
 * The PRNG is splitmix64 + xoshiro256** (as bench/tools/benchgen.c), so the
 * output does not depend on libc. Exit 0, 1 with a message on error, 2 on
 * a usage error. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "store/store.h"

#define BUFSZ (1u << 20)

struct rng {
        uint64_t s[4];
};

static uint64_t splitmix64(uint64_t *x)
{
        uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
}

static void rng_seed(struct rng *r, uint64_t seed, uint64_t stream)
{
        uint64_t x = seed ^ (stream * 0xd1342543de82ef95ULL);
        for (int i = 0; i < 4; i++)
                r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k)
{
        return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(struct rng *r)
{
        uint64_t *s = r->s;
        uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = rotl(s[3], 45);
        return res;
}

static int die(const char *what)
{
        fprintf(stderr, "ckpt-tool: %s: %s\n", what, strerror(errno));
        exit(1);
}

static void gen_random(struct rng *r, unsigned char *buf, size_t n)
{
        size_t i = 0;
        for (; i + 8 <= n; i += 8) {
                uint64_t x = rng_next(r);
                memcpy(buf + i, &x, 8);
        }
        if (i < n) {
                uint64_t x = rng_next(r);
                memcpy(buf + i, &x, n - i);
        }
}

/* Text-like bytes: words of a small seeded vocabulary (compresses ~3:1). */
static void gen_text(struct rng *r, unsigned char *buf, size_t n)
{
        static const char *words[] = { "the", "sandbox", "chunk", "of", "a", "layer", "pause",
                                       "resume", "store", "tree", "and", "file", "data", "write",
                                       "checkpoint", "digest", "0x7f", "{", "}", "return", "if",
                                       "int", "static", "void" };
        size_t i = 0;
        while (i < n) {
                uint64_t x = rng_next(r);
                const char *w = words[(x & 0xff) % (sizeof words / sizeof words[0])];
                while (*w && i < n)
                        buf[i++] = (unsigned char)*w++;
                if (i < n)
                        buf[i++] = (x >> 8) % 9 == 0 ? '\n' : ' ';
                if (i < n && (x >> 16) % 23 == 0) { /* a number: some entropy */
                        int m = snprintf((char *)buf + i, n - i, "%u", (unsigned)(x >> 32) % 100000);
                        i += m < 0 ? 0 : MIN((size_t)m, n - i);
                }
        }
}

enum kind { K_RANDOM, K_TEXT, K_MIXED };

static int parse_kind(const char *s, enum kind *ret)
{
        if (strcmp(s, "random") == 0)
                *ret = K_RANDOM;
        else if (strcmp(s, "text") == 0)
                *ret = K_TEXT;
        else if (strcmp(s, "mixed") == 0)
                *ret = K_MIXED;
        else
                return -EINVAL;
        return 0;
}

/* gen(): n bytes at file offset off; mixed alternates 64 KiB of text and
 * of random data. */
static void gen(enum kind k, struct rng *r, unsigned char *buf, size_t n, uint64_t off)
{
        if (k == K_RANDOM) {
                gen_random(r, buf, n);
                return;
        }
        if (k == K_TEXT) {
                gen_text(r, buf, n);
                return;
        }
        for (size_t i = 0; i < n;) {
                uint64_t o = off + i;
                size_t m = MIN(n - i, (size_t)(65536 - (o & 65535)));
                if ((o >> 16) & 1)
                        gen_random(r, buf + i, m);
                else
                        gen_text(r, buf + i, m);
                i += m;
        }
}

static void write_all(int fd, const void *buf, size_t n, uint64_t off, const char *path)
{
        const unsigned char *p = buf;
        while (n > 0) {
                ssize_t w = pwrite(fd, p, n, (off_t)off);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        die(path);
                }
                p += w;
                n -= (size_t)w;
                off += (uint64_t)w;
        }
}

/* write_files(): the same content into every path. */
static void write_files(uint64_t seed, enum kind k, uint64_t size, char **paths, int n_paths,
                        unsigned char *buf)
{
        int fds[64];
        struct rng r;

        if (n_paths > 64) {
                errno = E2BIG;
                die("too many paths");
        }
        for (int i = 0; i < n_paths; i++) {
                fds[i] = open(paths[i], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                if (fds[i] < 0)
                        die(paths[i]);
        }
        rng_seed(&r, seed, 0x6e6);
        for (uint64_t off = 0; off < size;) {
                size_t n = (size_t)MIN(size - off, (uint64_t)BUFSZ);
                gen(k, &r, buf, n, off);
                for (int i = 0; i < n_paths; i++)
                        write_all(fds[i], buf, n, off, paths[i]);
                off += n;
        }
        for (int i = 0; i < n_paths; i++)
                if (close(fds[i]) < 0)
                        die(paths[i]);
}

static int parse_u64(const char *s, uint64_t *ret)
{
        char *end;
        unsigned long long v;

        errno = 0;
        v = strtoull(s, &end, 0);
        if (errno || end == s || *end || s[0] == '-')
                return -EINVAL;
        *ret = v;
        return 0;
}

static int usage(void)
{
        fprintf(stderr, "usage: ckpt-tool gen SEED KIND SIZE PATH... | files SEED KIND SIZE N DIR... |\n"
                        "       scatter SEED NWRITES WSIZE PATH... | zsize LEVEL | chunks STORE REF [PATH]\n");
        return 2;
}

static int cmd_gen(int argc, char **argv, unsigned char *buf)
{
        uint64_t seed, size;
        enum kind k;

        if (argc < 5 || parse_u64(argv[1], &seed) < 0 || parse_kind(argv[2], &k) < 0 ||
            parse_u64(argv[3], &size) < 0)
                return usage();
        write_files(seed, k, size, argv + 4, argc - 4, buf);
        return 0;
}

static int cmd_files(int argc, char **argv, unsigned char *buf)
{
        uint64_t seed, size, n;
        enum kind k;
        char dir[4096];

        if (argc < 6 || parse_u64(argv[1], &seed) < 0 || parse_kind(argv[2], &k) < 0 ||
            parse_u64(argv[3], &size) < 0 || parse_u64(argv[4], &n) < 0)
                return usage();
        for (int d = 5; d < argc; d++) {
                if (mkdir(argv[d], 0755) < 0 && errno != EEXIST)
                        die(argv[d]);
                for (unsigned s = 0; s < 100 && s < n; s++) {
                        snprintf(dir, sizeof dir, "%s/d%02u", argv[d], s);
                        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                                die(dir);
                }
        }
        if (argc - 5 > 8)
                return usage();
        for (uint64_t i = 0; i < n; i++) {
                char names[8][4096], *paths[8];
                int np = 0;

                for (int d = 5; d < argc; d++, np++) {
                        snprintf(names[np], sizeof names[np], "%s/d%02u/f%05" PRIu64, argv[d],
                                 (unsigned)(i % 100), i);
                        paths[np] = names[np];
                }
                write_files(seed * 1000003u + i, k == K_MIXED ? (i & 1 ? K_RANDOM : K_TEXT) : k, size,
                            paths, np, buf);
        }
        return 0;
}

static int cmd_scatter(int argc, char **argv, unsigned char *buf)
{
        uint64_t seed, nwrites, wsize, slots;
        struct rng r, d;
        struct stat st;
        int fds[64];
        int n_paths = argc - 4;

        if (argc < 5 || n_paths > 64 || parse_u64(argv[1], &seed) < 0 || parse_u64(argv[2], &nwrites) < 0 ||
            parse_u64(argv[3], &wsize) < 0 || wsize == 0 || wsize > BUFSZ)
                return usage();
        for (int i = 0; i < n_paths; i++) {
                fds[i] = open(argv[4 + i], O_RDWR | O_CLOEXEC);
                if (fds[i] < 0)
                        die(argv[4 + i]);
        }
        if (fstat(fds[0], &st) < 0)
                die(argv[4]);
        slots = (uint64_t)st.st_size / wsize;
        if (slots == 0) {
                fprintf(stderr, "ckpt-tool: %s: too small for %" PRIu64 "-byte writes\n", argv[4], wsize);
                return 1;
        }
        rng_seed(&r, seed, 0x5ca7);
        rng_seed(&d, seed, 0xda7a);
        for (uint64_t w = 0; w < nwrites; w++) {
                uint64_t off = (rng_next(&r) % slots) * wsize;
                gen_random(&d, buf, wsize);
                for (int i = 0; i < n_paths; i++)
                        write_all(fds[i], buf, wsize, off, argv[4 + i]);
                printf("%" PRIu64 "\n", off);
        }
        for (int i = 0; i < n_paths; i++)
                if (close(fds[i]) < 0)
                        die(argv[4 + i]);
        return fflush(stdout) == EOF ? die("stdout") : 0;
}

static int cmd_zsize(int argc, char **argv, unsigned char *buf)
{
        uint64_t level, n = 0, clen = 0, ulen = 0;
        char line[8192], path[4096];
        unsigned long long off, len;
        ZSTD_CCtx *cctx;
        void *dst;
        size_t cap = ZSTD_compressBound(BUFSZ * 4);

        if (argc != 2 || parse_u64(argv[1], &level) < 0 || level < 1 || level > 22)
                return usage();
        cctx = ZSTD_createCCtx();
        dst = malloc(cap);
        unsigned char *src = malloc(BUFSZ * 4);
        if (!cctx || !dst || !src)
                die("malloc");
        (void)buf;
        while (fgets(line, sizeof line, stdin)) {
                int fd;
                ssize_t got;
                size_t c;

                if (sscanf(line, "%4095s %llu %llu", path, &off, &len) != 3 || len == 0 || len > BUFSZ * 4) {
                        fprintf(stderr, "ckpt-tool: zsize: bad line: %s", line);
                        return 1;
                }
                fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        die(path);
                got = pread(fd, src, len, (off_t)off);
                if (got < 0)
                        die(path);
                close(fd);
                if ((unsigned long long)got != len) {
                        fprintf(stderr, "ckpt-tool: zsize: %s: short read at %llu (%zd of %llu)\n", path, off,
                                got, len);
                        return 1;
                }
                c = ZSTD_compressCCtx(cctx, dst, cap, src, len, (int)level);
                if (ZSTD_isError(c)) {
                        fprintf(stderr, "ckpt-tool: zsize: zstd: %s\n", ZSTD_getErrorName(c));
                        return 1;
                }
                n++;
                clen += c;
                ulen += len;
        }
        printf("chunks %" PRIu64 " clen %" PRIu64 " ulen %" PRIu64 "\n", n, clen, ulen);
        ZSTD_freeCCtx(cctx);
        free(dst);
        free(src);
        return 0;
}

static void print_chunk(const struct tree *t, uint32_t idx)
{
        struct tree_chunk c;
        char a[DIGEST_HEX_LEN + 1], p[DIGEST_HEX_LEN + 1];

        if (tree_chunk(t, idx, &c) < 0) {
                errno = EBADMSG;
                die("chunk index");
        }
        printf("%s %s %" PRIu32 " %" PRIu32 "\n", digest_hex(&c.addr, a), digest_hex(tree_pack(t, c.pack), p),
               c.clen, c.ulen);
}

static int cmd_chunks(int argc, char **argv)
{
        struct backend *b = NULL;
        struct snapshot *s = NULL;
        struct digest d;
        int r;

        if (argc != 3 && argc != 4)
                return usage();
        r = backend_local_open(argv[1], false, &b);
        if (r < 0) {
                errno = -r;
                die(argv[1]);
        }
        r = store_resolve(b, argv[2], &d);
        if (r < 0) {
                errno = -r;
                die(argv[2]);
        }
        r = snapshot_open(b, &d, &s);
        if (r >= 0)
                r = snapshot_load_tree(b, s);
        if (r < 0) {
                errno = -r;
                die(argv[2]);
        }
        if (argc == 3) {
                for (uint32_t i = 0; i < tree_n_chunks(s->tree); i++)
                        print_chunk(s->tree, i);
        } else {
                struct tree_inode ti;

                r = tree_path_lookup(s->tree, argv[3], &ti);
                if (r < 0) {
                        errno = -r;
                        die(argv[3]);
                }
                if (!S_ISREG(ti.attr.mode)) {
                        errno = EINVAL;
                        die(argv[3]);
                }
                for (uint32_t i = 0; i < tree_file_nchunks(s->tree, &ti); i++) {
                        uint32_t idx = tree_file_chunk(s->tree, &ti, i);
                        printf("%" PRIu32 " ", i);
                        if (idx == TREE_HOLE)
                                printf("hole\n");
                        else
                                print_chunk(s->tree, idx);
                }
        }
        snapshot_free(s);
        backend_free(b);
        return fflush(stdout) == EOF ? die("stdout") : 0;
}

int main(int argc, char **argv)
{
        unsigned char *buf;
        int r;

        if (argc < 2)
                return usage();
        buf = malloc(BUFSZ);
        if (!buf)
                die("malloc");
        if (strcmp(argv[1], "gen") == 0)
                r = cmd_gen(argc - 1, argv + 1, buf);
        else if (strcmp(argv[1], "files") == 0)
                r = cmd_files(argc - 1, argv + 1, buf);
        else if (strcmp(argv[1], "scatter") == 0)
                r = cmd_scatter(argc - 1, argv + 1, buf);
        else if (strcmp(argv[1], "zsize") == 0)
                r = cmd_zsize(argc - 1, argv + 1, buf);
        else if (strcmp(argv[1], "chunks") == 0)
                r = cmd_chunks(argc - 1, argv + 1);
        else
                r = usage();
        free(buf);
        return r;
}
