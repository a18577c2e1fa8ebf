/* test-cache.c — the node chunk cache: round trips, every kind of bad entry
 * turned into a miss (and removed), the size bound recorded in the directory,
 * LRU eviction by mtime, one evictor at a time, no leftovers from inserts. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "store/cache.h"
#include "store/store.h"

static char dir[64];

static void setup(void)
{
        strcpy(dir, "/tmp/stasis-ut-cache-XXXXXX");
        cr_assert(mkdtemp(dir));
}

static void teardown(void)
{
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        cr_assert_eq(system(cmd), 0);
}

TestSuite(cache, .init = setup, .fini = teardown);

static void fill(uint8_t *buf, size_t len, uint32_t seed)
{
        uint32_t x = seed * 2654435761u + 7;
        for (size_t i = 0; i < len; i++) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                buf[i] = (uint8_t)x;
        }
}

/* A chunk and its address, as a caller that verified it would hold it. */
static void chunk(uint32_t seed, size_t len, uint8_t *buf, struct digest *addr)
{
        fill(buf, len, seed);
        digest_sha256(buf, len, addr);
}

static void entry_path(const struct digest *d, char *p, size_t cap)
{
        char hex[DIGEST_HEX_LEN + 1];
        digest_hex(d, hex);
        snprintf(p, cap, "%s/v1/%.2s/%s", dir, hex, hex);
}

static size_t count_files(const char *sub, bool dotfiles)
{
        char p[256];
        size_t n = 0;
        struct dirent *de;
        DIR *d;

        snprintf(p, sizeof p, "%s/v1/%s", dir, sub);
        d = opendir(p);
        if (!d)
                return 0;
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
                    (dotfiles || de->d_name[0] != '.'))
                        n++;
        closedir(d);
        return n;
}

Test(cache, round_trip_and_miss)
{
        static uint8_t a[65536], out[65536];
        struct cache *c = NULL;
        struct digest da, db;
        struct cache_stats st;
        char hex[DIGEST_HEX_LEN + 1];
        size_t len = 0;

        cr_assert_eq(cache_open(dir, 0, &c), 0);
        cr_assert_eq(cache_size_bound(c), CACHE_SIZE_DEFAULT);
        chunk(1, sizeof a, a, &da);
        chunk(2, 10, out, &db);

        cr_assert_eq(cache_get(c, &da, out, sizeof out, &len), 0, "empty cache hits");
        cr_assert_eq(cache_has(c, &da), 0);
        cr_assert_eq(cache_put(c, &da, a, sizeof a), 0);
        cr_assert_eq(cache_has(c, &da), 1);
        memset(out, 0, sizeof out);
        cr_assert_eq(cache_get(c, &da, out, sizeof out, &len), 1);
        cr_assert_eq(len, sizeof a);
        cr_assert_eq(memcmp(out, a, sizeof a), 0);
        /* A second put of the same chunk keeps the entry. */
        cr_assert_eq(cache_put(c, &da, a, sizeof a), 0);
        cr_assert_eq(cache_get(c, &db, out, sizeof out, &len), 0);
        /* Too small a buffer is a miss, not a bad entry. */
        cr_assert_eq(cache_get(c, &da, out, 100, &len), 0);
        cr_assert_eq(cache_has(c, &da), 1);

        /* No temp files left behind, exactly one entry. */
        digest_hex(&da, hex);
        hex[2] = 0;
        cr_assert_eq(count_files(hex, true), 1);

        cache_get_stats(c, &st);
        cr_assert_eq(st.hits, 1);
        cr_assert_eq(st.misses, 3);
        cr_assert_eq(st.puts, 1);
        cr_assert_eq(st.bad_entries, 0);
        cache_free(c);
}

/* Every way an entry can go bad on disk is a miss, and removes it. */
static void corrupt_and_check(void (*damage)(const char *path, const struct digest *d))
{
        static uint8_t a[40000], out[65536];
        struct cache *c = NULL;
        struct digest da;
        struct cache_stats st;
        char p[256];
        size_t len = 0;

        cr_assert_eq(cache_open(dir, 0, &c), 0);
        chunk(3, sizeof a, a, &da);
        cr_assert_eq(cache_put(c, &da, a, sizeof a), 0);
        entry_path(&da, p, sizeof p);
        damage(p, &da);
        memset(out, 0, sizeof out);
        cr_assert_eq(cache_get(c, &da, out, sizeof out, &len), 0, "a damaged entry was served");
        cr_assert_eq(access(p, F_OK), -1, "a damaged entry was kept");
        cache_get_stats(c, &st);
        cr_assert_eq(st.bad_entries, 1);
        /* And the next put repairs it. */
        cr_assert_eq(cache_put(c, &da, a, sizeof a), 0);
        cr_assert_eq(cache_get(c, &da, out, sizeof out, &len), 1);
        cr_assert_eq(memcmp(out, a, sizeof a), 0);
        cache_free(c);
}

static void flip_data_byte(const char *p, const struct digest *d)
{
        int fd = open(p, O_RDWR);
        uint8_t b;
        (void)d;
        cr_assert(fd >= 0);
        cr_assert_eq(pread(fd, &b, 1, 64 + 1234), 1);
        b ^= 0x01;
        cr_assert_eq(pwrite(fd, &b, 1, 64 + 1234), 1);
        close(fd);
}

static void torn(const char *p, const struct digest *d)
{
        (void)d;
        /* What a kill -9 mid-write would leave if inserts were not atomic. */
        cr_assert_eq(truncate(p, 64 + 4096), 0);
}

static void header_only(const char *p, const struct digest *d)
{
        (void)d;
        cr_assert_eq(truncate(p, 10), 0);
}

static void zeroed(const char *p, const struct digest *d)
{
        /* A host crash without fsync can leave a right-sized file of zeros. */
        static uint8_t z[64 + 40000];
        int fd = open(p, O_WRONLY);
        (void)d;
        cr_assert(fd >= 0);
        cr_assert_eq(pwrite(fd, z, sizeof z, 0), (ssize_t)sizeof z);
        close(fd);
}

static void wrong_address(const char *p, const struct digest *d)
{
        /* Header of another chunk under this name. */
        int fd = open(p, O_RDWR);
        uint8_t b;
        (void)d;
        cr_assert(fd >= 0);
        cr_assert_eq(pread(fd, &b, 1, 24), 1);
        b ^= 0x80;
        cr_assert_eq(pwrite(fd, &b, 1, 24), 1);
        close(fd);
}

Test(cache, flipped_byte_is_a_miss) { corrupt_and_check(flip_data_byte); }
Test(cache, torn_entry_is_a_miss) { corrupt_and_check(torn); }
Test(cache, short_entry_is_a_miss) { corrupt_and_check(header_only); }
Test(cache, zeroed_entry_is_a_miss) { corrupt_and_check(zeroed); }
Test(cache, wrong_address_is_a_miss) { corrupt_and_check(wrong_address); }

Test(cache, size_bound_belongs_to_the_directory)
{
        struct cache *c = NULL;
        char p[256];

        cr_assert_eq(cache_open(dir, 1000, &c), -EINVAL);
        cr_assert_eq(cache_open(dir, 8 << 20, &c), 0);
        cr_assert_eq(cache_size_bound(c), 8u << 20);
        c = cache_free(c);
        /* Reopened without a bound: the recorded one. */
        cr_assert_eq(cache_open(dir, 0, &c), 0);
        cr_assert_eq(cache_size_bound(c), 8u << 20);
        c = cache_free(c);
        cr_assert_eq(cache_open(dir, 16 << 20, &c), 0);
        c = cache_free(c);
        cr_assert_eq(cache_open(dir, 0, &c), 0);
        cr_assert_eq(cache_size_bound(c), 16u << 20);
        cache_free(c);
        snprintf(p, sizeof p, "%s/config", dir);
        cr_assert_eq(access(p, R_OK), 0);
}

Test(cache, evicts_oldest_mtime_first_and_bumps_on_hit)
{
        enum { N = 40, LEN = 64 << 10 };
        static uint8_t buf[LEN], out[LEN];
        struct digest d[N];
        struct cache *c = NULL;
        uint64_t left = 0;
        char p[256];
        size_t len;
        int kept = 0;

        /* 1 MiB bound; 40 x 64 KiB = 2.5 MiB inserted. Puts run the evictor on
         * their own; make every entry's age explicit and evict once more. */
        cr_assert_eq(cache_open(dir, 1 << 20, &c), 0);
        for (int i = 0; i < N; i++) {
                struct timespec ts[2];
                chunk(100 + i, LEN, buf, &d[i]);
                cr_assert_eq(cache_put(c, &d[i], buf, LEN), 0);
                entry_path(&d[i], p, sizeof p);
                if (access(p, F_OK) == 0) {
                        ts[0] = ts[1] = (struct timespec){ .tv_sec = 1000000 + i * 1000 };
                        cr_assert_eq(utimensat(AT_FDCWD, p, ts, 0), 0);
                }
        }
        /* Entry 39 is the newest; make entry 38 old, then hit it: the hit
         * must make it young again (mtime, not atime). */
        entry_path(&d[38], p, sizeof p);
        cr_assert_eq(cache_get(c, &d[38], out, sizeof out, &len), 1);
        cr_assert_eq(cache_evict(c, &left), 1);
        cr_assert_leq(left, 1u << 20, "cache holds %llu bytes over its bound", (unsigned long long)left);
        for (int i = 0; i < N; i++) {
                entry_path(&d[i], p, sizeof p);
                if (access(p, F_OK) == 0) {
                        kept++;
                        /* whatever stays must be the newest ones */
                        cr_assert_geq(i, N - 16, "old entry %d kept over newer ones", i);
                }
        }
        cr_assert_geq(kept, 8);
        entry_path(&d[39], p, sizeof p);
        cr_assert_eq(access(p, F_OK), 0, "newest entry evicted");
        entry_path(&d[38], p, sizeof p);
        cr_assert_eq(access(p, F_OK), 0, "entry hit just now was evicted");
        cache_free(c);
}

Test(cache, one_evictor_at_a_time)
{
        struct cache *c = NULL;
        char p[256];
        int fd;

        cr_assert_eq(cache_open(dir, 0, &c), 0);
        snprintf(p, sizeof p, "%s/lock", dir);
        fd = open(p, O_RDWR); /* another evictor, as another process would hold it */
        cr_assert(fd >= 0);
        cr_assert_eq(flock(fd, LOCK_EX | LOCK_NB), 0);
        cr_assert_eq(cache_evict(c, NULL), 0, "evictor ran while another held the lock");
        cr_assert_eq(flock(fd, LOCK_UN), 0);
        cr_assert_eq(cache_evict(c, NULL), 1);
        close(fd);
        cache_free(c);
}

Test(cache, shared_between_instances)
{
        static uint8_t a[5000], out[5000];
        struct cache *c1 = NULL, *c2 = NULL;
        struct digest da;
        size_t len;

        cr_assert_eq(cache_open(dir, 0, &c1), 0);
        cr_assert_eq(cache_open(dir, 0, &c2), 0);
        chunk(9, sizeof a, a, &da);
        cr_assert_eq(cache_put(c1, &da, a, sizeof a), 0);
        cr_assert_eq(cache_get(c2, &da, out, sizeof out, &len), 1);
        cr_assert_eq(len, sizeof a);
        cr_assert_eq(memcmp(a, out, sizeof a), 0);
        cache_free(c1);
        cache_free(c2);
}
