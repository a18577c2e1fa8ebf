/* benchgen.c — deterministic data for the stasis benchmarks.
 *
 * Owns: the synthetic "sandbox rootfs" tree, the agent-session workload
 * primitives (new small files, scattered in-place writes, database-style
 * pages) and seeded selection of lines. Every byte it writes is a function
 * of the seed and the arguments, so two machines generate the same dataset.
 * It never reads the clock or /dev/urandom. Single-threaded; no library but
 * libc. bench/gen-dataset.sh builds and drives it.
 *
 *   benchgen tree    SEED DIR NFILES          rootfs-like tree (sizes, kinds, dups, symlinks)
 *   benchgen pip     SEED DIR NFILES          site-packages-like tree of small files
 *   benchgen file    SEED PATH SIZE KIND      one file; KIND = text|bin|random|db
 *   benchgen scatter SEED PATH NWRITES WSIZE [UNDOLOG]
 *                    NWRITES writes of WSIZE bytes at WSIZE-aligned offsets in an
 *                    existing file (size unchanged); with UNDOLOG, save the old
 *                    bytes of every write there first
 *   benchgen unscatter SEED PATH NWRITES WSIZE UNDOLOG
 *                    put back what scatter saved (newest first), so the file is
 *                    byte-identical to before the scatter
 *   benchgen pick    SEED PERMILLE            copy the stdin lines that hash(SEED,line)
 *                                             selects, about PERMILLE/1000 of them
 *
 * The PRNG is splitmix64 (seeding) and xoshiro256** (streams): fixed
 * algorithms, so the output does not depend on libc's rand().
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct rng { uint64_t s[4]; };

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

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t rng_next(struct rng *r)
{
        uint64_t *s = r->s;
        uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
        s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
        s[2] ^= t; s[3] = rotl(s[3], 45);
        return res;
}

static uint64_t rng_below(struct rng *r, uint64_t n) { return n ? rng_next(r) % n : 0; }

/* log-uniform in [lo, hi] */
static uint64_t rng_logu(struct rng *r, uint64_t lo, uint64_t hi)
{
        double u = (double)(rng_next(r) >> 11) / 9007199254740992.0;
        double v = (double)lo * __builtin_pow((double)hi / (double)lo, u);
        uint64_t x = (uint64_t)v;
        return x < lo ? lo : x > hi ? hi : x;
}

static void die(const char *what)
{
        fprintf(stderr, "benchgen: %s: %s\n", what, strerror(errno));
        exit(1);
}

/* ---- content ---- */

enum kind { K_TEXT, K_BIN, K_RANDOM, K_DB };

static char vocab[512][12];
static void vocab_init(void)
{
        struct rng r;
        rng_seed(&r, 0x5747a515, 1);
        for (int i = 0; i < 512; i++) {
                int n = 2 + (int)rng_below(&r, 8);
                for (int j = 0; j < n; j++)
                        vocab[i][j] = (char)('a' + rng_below(&r, 26));
                vocab[i][n] = 0;
        }
}

/* Fill buf[0..n) with text-like bytes: words, spaces, newlines, indentation. */
static void gen_text(struct rng *r, unsigned char *buf, size_t n)
{
        size_t i = 0;
        unsigned col = 0;
        while (i < n) {
                uint64_t x = rng_next(r);
                /* Zipf-ish: small word indexes far more frequent */
                unsigned w = (unsigned)((x & 511) * ((x >> 9) & 511) >> 9);
                const char *s = vocab[w];
                while (*s && i < n)
                        buf[i++] = (unsigned char)*s++;
                if (i >= n)
                        break;
                col++;
                if (col >= 6 + ((x >> 20) & 7)) {
                        buf[i++] = '\n';
                        col = 0;
                        for (unsigned k = (unsigned)((x >> 24) & 3) * 4; k && i < n; k--)
                                buf[i++] = ' ';
                } else {
                        buf[i++] = ((x >> 30) & 15) == 0 ? ',' : ' ';
                }
        }
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

/* Machine-code-like: 64-byte segments of random, zero, or low-entropy bytes. */
static void gen_bin(struct rng *r, unsigned char *buf, size_t n)
{
        static const unsigned char alpha[16] = { 0x00, 0x48, 0x89, 0x8b, 0xe8, 0xff, 0x0f, 0x85,
                                                 0x84, 0xc3, 0x24, 0x44, 0x83, 0xc0, 0x01, 0x74 };
        for (size_t i = 0; i < n; i += 64) {
                size_t m = n - i < 64 ? n - i : 64;
                uint64_t c = rng_next(r) % 100;
                if (c < 15) {
                        gen_random(r, buf + i, m);
                } else if (c < 50) {
                        memset(buf + i, 0, m);
                } else {
                        for (size_t j = 0; j < m; j += 16) {
                                uint64_t x = rng_next(r);
                                for (size_t k = 0; k < 16 && j + k < m; k++)
                                        buf[i + j + k] = alpha[(x >> (4 * k)) & 15];
                        }
                }
        }
}

/* Database-like 4 KiB pages: a header, rows of text up to a fill level, zeros. */
static void gen_db(struct rng *r, unsigned char *buf, size_t n, uint64_t off)
{
        for (size_t i = 0; i < n;) {
                size_t pg = 4096 - ((off + i) & 4095), m = n - i < pg ? n - i : pg;
                size_t fill = m * (30 + rng_below(r, 60)) / 100;
                if (fill > 16) {
                        uint64_t h[2] = { (off + i) >> 12, rng_next(r) };
                        memcpy(buf + i, h, 16);
                        gen_text(r, buf + i + 16, fill - 16);
                } else {
                        gen_text(r, buf + i, fill);
                }
                memset(buf + i + fill, 0, m - fill);
                i += m;
        }
}

static void gen(enum kind k, struct rng *r, unsigned char *buf, size_t n, uint64_t off)
{
        switch (k) {
        case K_TEXT: gen_text(r, buf, n); break;
        case K_BIN: gen_bin(r, buf, n); break;
        case K_RANDOM: gen_random(r, buf, n); break;
        case K_DB: gen_db(r, buf, n, off); break;
        }
}

#define BUFSZ (1u << 20)
static unsigned char *iobuf;

static void write_file(const char *path, uint64_t seed, uint64_t stream, uint64_t size, enum kind k)
{
        struct rng r;
        rng_seed(&r, seed, stream);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                die(path);
        for (uint64_t off = 0; off < size;) {
                size_t n = size - off < BUFSZ ? (size_t)(size - off) : BUFSZ;
                gen(k, &r, iobuf, n, off);
                for (size_t w = 0; w < n;) {
                        ssize_t x = write(fd, iobuf + w, n - w);
                        if (x < 0)
                                die(path);
                        w += (size_t)x;
                }
                off += n;
        }
        if (close(fd) < 0)
                die(path);
}

/* ---- trees ---- */

static void mkdir_p(char *path)
{
        for (char *p = path + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = 0;
                if (mkdir(path, 0755) < 0 && errno != EEXIST)
                        die(path);
                *p = '/';
        }
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
                die(path);
}

struct ent { uint32_t dir; uint64_t size; enum kind kind; uint64_t stream; };

static const char *ext_for(enum kind k, uint64_t x)
{
        static const char *text[] = { ".txt", ".h", ".py", ".conf", ".html", ".md", ".c", "" };
        static const char *bin[] = { ".so", "", ".so.1", ".a", ".o", ".mo" };
        static const char *rnd[] = { ".gz", ".png", ".jpg", ".xz", ".woff2" };
        switch (k) {
        case K_TEXT: return text[x % 8];
        case K_BIN: return bin[x % 6];
        default: return rnd[x % 5];
        }
}

/* Size buckets measured on a Debian 12 /usr (78k files, 2.9 GB): fraction of
 * files per bucket, log-uniform within a bucket. */
static uint64_t rootfs_size(struct rng *r)
{
        static const struct { unsigned permyriad; uint64_t lo, hi; } b[] = {
                { 1285, 0, 512 },           { 5408, 513, 4096 },
                { 2376, 4097, 32768 },      { 803, 32769, 262144 },
                { 111, 262145, 2097152 },   { 14, 2097153, 16777216 },
                { 3, 16777217, 67108864 },
        };
        uint64_t x = rng_below(r, 10000), acc = 0;
        for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) {
                acc += b[i].permyriad;
                if (x < acc)
                        return b[i].lo == 0 ? rng_below(r, 513) : rng_logu(r, b[i].lo, b[i].hi);
        }
        return 1000;
}

static int cmd_tree(uint64_t seed, const char *root, uint64_t nfiles, int pip)
{
        struct rng r;
        rng_seed(&r, seed, pip ? 0x9191 : 0x7ee);
        static const char *tops[] = { "usr/bin", "usr/lib", "usr/share/doc", "usr/share/locale",
                                      "usr/include", "etc", "var/lib", "opt" };
        static const char *ptops[] = { "lib/python3/site-packages" };
        const char **top = pip ? ptops : tops;
        size_t ntop = pip ? 1 : 8;
        uint64_t ndirs = ntop + nfiles / (pip ? 8 : 15);
        char (*dirs)[256] = calloc(ndirs, 256);
        if (!dirs)
                die("calloc");
        char path[4096];
        for (uint64_t d = 0; d < ndirs; d++) {
                if (d < ntop) {
                        snprintf(dirs[d], 256, "%s", top[d]);
                } else {
                        uint64_t p;
                        do
                                p = rng_below(&r, d);
                        while (strlen(dirs[p]) > 200);
                        if (pip && d < 1 + nfiles / 80)
                                snprintf(dirs[d], 256, "%s/pkg_%s%04" PRIu64, dirs[0],
                                         vocab[rng_below(&r, 512)], d);
                        else
                                snprintf(dirs[d], 256, "%s/%s%" PRIu64, dirs[p],
                                         pip ? "" : "d", d);
                }
                snprintf(path, sizeof path, "%s/%s", root, dirs[d]);
                mkdir_p(path);
        }
        struct ent *e = calloc(nfiles, sizeof *e);
        if (!e)
                die("calloc");
        uint64_t total = 0;
        for (uint64_t i = 0; i < nfiles; i++) {
                e[i].dir = (uint32_t)rng_below(&r, ndirs);
                e[i].stream = i + 1;
                uint64_t c = rng_below(&r, 100);
                if (pip) {
                        e[i].kind = c < 70 ? K_TEXT : c < 95 ? K_BIN : K_RANDOM;
                        e[i].size = e[i].kind == K_BIN && c >= 90 ? rng_logu(&r, 65536, 4 << 20)
                                                                  : rng_logu(&r, 200, 24576);
                } else {
                        e[i].size = rootfs_size(&r);
                        if (e[i].size > 2097152)
                                e[i].kind = c < 85 ? K_BIN : K_RANDOM;
                        else
                                e[i].kind = c < 45 ? K_TEXT : c < 85 ? K_BIN : K_RANDOM;
                }
                /* 3% duplicate an earlier file's content (licenses, copies) */
                if (i > 0 && rng_below(&r, 100) < 3) {
                        uint64_t j = rng_below(&r, i);
                        e[i].size = e[j].size;
                        e[i].kind = e[j].kind;
                        e[i].stream = e[j].stream;
                }
                uint64_t x = rng_next(&r);
                snprintf(path, sizeof path, "%s/%s/%s%06" PRIu64 "%s", root, dirs[e[i].dir],
                         pip ? "m" : "f", i, ext_for(e[i].kind, x));
                write_file(path, seed, e[i].stream, e[i].size, e[i].kind);
                total += e[i].size;
                /* ~5% of entries are symlinks to a file of the same directory */
                if (!pip && (x >> 40) % 100 < 5) {
                        char tgt[64];
                        snprintf(tgt, sizeof tgt, "f%06" PRIu64 "%s", i, ext_for(e[i].kind, x));
                        snprintf(path, sizeof path, "%s/%s/l%06" PRIu64, root, dirs[e[i].dir], i);
                        if (symlink(tgt, path) < 0 && errno != EEXIST)
                                die(path);
                }
        }
        printf("%" PRIu64 " files, %" PRIu64 " dirs, %" PRIu64 " bytes\n", nfiles, ndirs, total);
        free(e);
        free(dirs);
        return 0;
}

static void xpread(int fd, void *b, size_t n, uint64_t off, const char *what)
{
        if (pread(fd, b, n, (off_t)off) != (ssize_t)n)
                die(what);
}

static void xpwrite(int fd, const void *b, size_t n, uint64_t off, const char *what)
{
        if (pwrite(fd, b, n, (off_t)off) != (ssize_t)n)
                die(what);
}

/* undo: 0 = write new data (saving old bytes to ulog if given), 1 = replay ulog backwards */
static int cmd_scatter(uint64_t seed, const char *path, uint64_t nwrites, uint64_t wsize,
                       const char *ulog, int undo)
{
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0)
                die(path);
        int ufd = -1;
        if (ulog && (ufd = open(ulog, undo ? O_RDONLY | O_CLOEXEC
                                           : O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
                die(ulog);
        struct stat st;
        if (fstat(fd, &st) < 0)
                die(path);
        uint64_t slots = (uint64_t)st.st_size / wsize;
        if (slots == 0 || wsize > BUFSZ) {
                fprintf(stderr, "benchgen: %s: too small for %" PRIu64 "-byte writes\n", path, wsize);
                return 1;
        }
        uint64_t *offs = calloc(nwrites ? nwrites : 1, sizeof *offs);
        if (!offs)
                die("calloc");
        struct rng r, d;
        rng_seed(&r, seed, 0x5ca7);
        rng_seed(&d, seed, 0xda7a);
        for (uint64_t i = 0; i < nwrites; i++)
                offs[i] = rng_below(&r, slots) * wsize;
        if (undo) {
                for (uint64_t i = nwrites; i-- > 0;) {
                        xpread(ufd, iobuf, wsize, i * wsize, ulog);
                        xpwrite(fd, iobuf, wsize, offs[i], path);
                }
        } else {
                for (uint64_t i = 0; i < nwrites; i++) {
                        if (ufd >= 0) {
                                xpread(fd, iobuf, wsize, offs[i], path);
                                xpwrite(ufd, iobuf, wsize, i * wsize, ulog);
                        }
                        gen(i % 2 ? K_DB : K_BIN, &d, iobuf, wsize, offs[i]);
                        xpwrite(fd, iobuf, wsize, offs[i], path);
                }
        }
        free(offs);
        if (close(fd) < 0)
                die(path);
        if (ufd >= 0 && close(ufd) < 0)
                die(ulog);
        return 0;
}

static int cmd_pick(uint64_t seed, uint64_t permille)
{
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        while ((n = getline(&line, &cap, stdin)) > 0) {
                /* FNV-1a of the line, mixed with the seed */
                uint64_t h = 0xcbf29ce484222325ULL ^ seed;
                for (ssize_t i = 0; i < n; i++)
                        h = (h ^ (unsigned char)line[i]) * 0x100000001b3ULL;
                uint64_t x = h;
                if (splitmix64(&x) % 1000 < permille)
                        fwrite(line, 1, (size_t)n, stdout);
        }
        free(line);
        return 0;
}

static uint64_t num(const char *s)
{
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 0);
        if (errno || end == s) {
                fprintf(stderr, "benchgen: bad number '%s'\n", s);
                exit(2);
        }
        switch (*end) {
        case 'K': case 'k': v <<= 10; break;
        case 'M': case 'm': v <<= 20; break;
        case 'G': case 'g': v <<= 30; break;
        }
        return v;
}

int main(int argc, char **argv)
{
        vocab_init();
        iobuf = malloc(BUFSZ);
        if (!iobuf)
                die("malloc");
        if (argc == 5 && !strcmp(argv[1], "tree"))
                return cmd_tree(num(argv[2]), argv[3], num(argv[4]), 0);
        if (argc == 5 && !strcmp(argv[1], "pip"))
                return cmd_tree(num(argv[2]), argv[3], num(argv[4]), 1);
        if (argc == 6 && !strcmp(argv[1], "file")) {
                const char *k = argv[5];
                enum kind kind = !strcmp(k, "text") ? K_TEXT : !strcmp(k, "bin") ? K_BIN
                               : !strcmp(k, "db") ? K_DB : K_RANDOM;
                write_file(argv[3], num(argv[2]), 0xf11e, num(argv[4]), kind);
                return 0;
        }
        if ((argc == 6 || argc == 7) && !strcmp(argv[1], "scatter"))
                return cmd_scatter(num(argv[2]), argv[3], num(argv[4]), num(argv[5]),
                                   argc == 7 ? argv[6] : NULL, 0);
        if (argc == 7 && !strcmp(argv[1], "unscatter"))
                return cmd_scatter(num(argv[2]), argv[3], num(argv[4]), num(argv[5]), argv[6], 1);
        if (argc == 4 && !strcmp(argv[1], "pick"))
                return cmd_pick(num(argv[2]), num(argv[3]));
        fprintf(stderr, "usage: benchgen tree|pip SEED DIR NFILES | file SEED PATH SIZE KIND |\n"
                        "       scatter SEED PATH NWRITES WSIZE [UNDOLOG] | unscatter SEED PATH NWRITES WSIZE UNDOLOG |\n"
                        "       pick SEED PERMILLE\n");
        return 2;
}
