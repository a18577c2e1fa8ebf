/* test-fs-trace.c — fs/trace.c without FUSE, through fs_read_file(): READs
 * from several threads at once record each chunk exactly once; that trace,
 * stored with a snapshot, is prefetched by a new mount into an empty node
 * cache before any READ, and the reads that follow are all prefetch hits;
 * no_prefetch prefetches nothing. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fs/fs.h"
#include "fs/trace.h"
#include "store/backend.h"
#include "store/cache.h"
#include "store/chunk.h"
#include "store/commit.h"
#include "store/snapshot.h"
#include "store/trace-blob.h"
#include "store/util.h"

#define CS CHUNK_SIZE_MIN
#define N_FILES 8
#define FILE_CHUNKS 3
#define FILE_SIZE (FILE_CHUNKS * CS)
#define N_THREADS 4

static char dir[64];
static uint8_t data[N_FILES][FILE_SIZE];
static uint64_t inos[N_FILES];

static void quiet(void)
{
        log_set_max_level(LOG_LVL_ERR - 1);
}

TestSuite(fs_trace, .init = quiet);

static void path(char *buf, size_t len, const char *name)
{
        snprintf(buf, len, "%s/%s", dir, name);
}

/* A store with one snapshot of N_FILES files of FILE_CHUNKS random chunks. */
static struct snapshot *make_base(struct backend **ret_b)
{
        struct backend *b = backend_memory_new();
        struct snapshot *s = NULL;
        struct digest d;
        char p[128];
        int fd;

        snprintf(dir, sizeof dir, "/tmp/stasis-fs-trace-XXXXXX");
        cr_assert(mkdtemp(dir));
        path(p, sizeof p, "src");
        cr_assert_eq(mkdir(p, 0755), 0);
        fd = open("/dev/urandom", O_RDONLY);
        cr_assert(fd >= 0 && read(fd, data, sizeof data) == (ssize_t)sizeof data);
        close(fd);
        for (int i = 0; i < N_FILES; i++) {
                char f[160];
                snprintf(f, sizeof f, "%s/src/f%d", dir, i);
                fd = open(f, O_WRONLY | O_CREAT | O_EXCL, 0644);
                cr_assert(fd >= 0 && write(fd, data[i], FILE_SIZE) == FILE_SIZE);
                close(fd);
        }
        cr_assert(b);
        cr_assert_eq(store_commit(b, &(struct commit_opts){ .dir = p, .chunk_size = CS, .threads = 1 }, &d, NULL), 0);
        cr_assert_eq(snapshot_open(b, &d, &s), 0);
        cr_assert_eq(snapshot_load_tree(b, s), 0);
        for (int i = 0; i < N_FILES; i++) {
                struct tree_inode in;
                char name[16];
                snprintf(name, sizeof name, "f%d", i);
                cr_assert_eq(tree_path_lookup(s->tree, name, &in), 0);
                inos[i] = in.attr.ino;
        }
        *ret_b = b;
        return s;
}

static struct fs *mount_fs(struct backend *b, struct snapshot *s, const char *name, bool no_prefetch,
                           struct cache **ret_cache)
{
        char cp[160], sp[160], ds[DIGEST_STR_LEN + 1];
        struct fs *fs = NULL;
        int r;

        snprintf(cp, sizeof cp, "%s/cache-%s", dir, name);
        snprintf(sp, sizeof sp, "%s/state-%s", dir, name);
        cr_assert_eq(cache_open(cp, 0, ret_cache), 0);
        cr_assert_eq(mkdir(sp, 0700), 0);
        r = fs_new(&(struct fs_opts){ .store = b, .snap = s, .cache = *ret_cache, .no_readahead = true,
                                      .state_dir = sp, .base_name = digest_str(&s->digest, ds),
                                      .no_prefetch = no_prefetch },
                   &fs);
        cr_assert_eq(r, 0, "fs_new: %d", r);
        return fs;
}

static void read_all(struct fs *fs, int first)
{
        static __thread uint8_t buf[FILE_SIZE];

        for (int k = 0; k < N_FILES; k++) {
                int i = (first + k) % N_FILES;
                cr_assert_eq(fs_read_file(fs, inos[i], 0, buf, FILE_SIZE), FILE_SIZE);
                cr_assert_eq(memcmp(buf, data[i], FILE_SIZE), 0, "file %d reads wrong", i);
        }
}

struct reader {
        struct fs *fs;
        int first;
};

static void *reader_thread(void *p)
{
        struct reader *r = p;
        read_all(r->fs, r->first);
        return NULL;
}

static uint64_t counter(struct fs *fs, size_t off)
{
        struct fs_counters c = {};
        fs_get_counters(fs, &c);
        return *(uint64_t *)((char *)&c + off);
}
#define COUNTER(fs, field) counter(fs, offsetof(struct fs_counters, field))

Test(fs_trace, record_concurrent_reads_then_prefetch_them)
{
        struct backend *b;
        struct snapshot *s = make_base(&b), *s2 = NULL;
        struct cache *c1, *c2, *c3;
        struct fs *fs = mount_fs(b, s, "1", false, &c1);
        pthread_t th[N_THREADS];
        struct reader rd[N_THREADS];
        struct trace_entry *e = NULL;
        void *blob = NULL, *tree = NULL;
        size_t len, n, tlen;
        uint32_t cs;
        struct digest d2;
        char cmd[128];

        /* Recording: every chunk once, whatever the interleaving. */
        cr_assert_eq(fs_trace_blob(fs, &blob, &len), 0);
        cr_assert_null(blob, "a trace before any READ");
        for (int i = 0; i < N_THREADS; i++) {
                rd[i] = (struct reader){ .fs = fs, .first = i * 2 };
                cr_assert_eq(pthread_create(&th[i], NULL, reader_thread, &rd[i]), 0);
        }
        for (int i = 0; i < N_THREADS; i++)
                pthread_join(th[i], NULL);
        cr_assert_eq(COUNTER(fs, prefetch_chunks), 0, "the base has no trace");
        cr_assert_eq(fs_trace_blob(fs, &blob, &len), 0);
        cr_assert_eq(trace_blob_parse(blob, len, &cs, &e, &n), 0); /* also: no pair twice */
        cr_assert_eq(cs, CS);
        cr_assert_eq(n, N_FILES * FILE_CHUNKS);
        for (size_t i = 0; i < n; i++) {
                bool known = false;
                for (int k = 0; k < N_FILES; k++)
                        known = known || e[i].ino == inos[k];
                cr_assert(known && e[i].chunk < FILE_CHUNKS);
        }
        free(e);
        fs_free(fs);
        cache_free(c1);

        /* The same tree with that trace, as a checkpoint would publish it. */
        cr_assert_eq(backend_read_all(b, &s->tree_digest, TREE_BLOB_MAX, &tree, &tlen), 0);
        cr_assert_eq(snapshot_publish(b, &(struct snapshot_new){ .tree_blob = tree, .tree_len = tlen,
                                                                 .tree_digest = s->tree_digest,
                                                                 .chunk_size = CS, .trace = blob,
                                                                 .trace_len = len },
                                      &d2), 0);
        cr_assert_eq(snapshot_open(b, &d2, &s2), 0);
        cr_assert_eq(snapshot_load_tree(b, s2), 0);
        cr_assert(s2->has_trace);

        /* Resume: prefetched without a READ, then every read is a hit. */
        fs = mount_fs(b, s2, "2", false, &c2);
        for (int i = 0; i < 1000 && COUNTER(fs, prefetch_chunks) < N_FILES * FILE_CHUNKS; i++)
                nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000 * 1000 }, NULL);
        cr_assert_eq(COUNTER(fs, prefetch_chunks), N_FILES * FILE_CHUNKS);
        cr_assert_eq(COUNTER(fs, reads), 0);
        cr_assert_eq(COUNTER(fs, cache_misses), 0);
        read_all(fs, 3);
        cr_assert_eq(COUNTER(fs, prefetch_hits), N_FILES * FILE_CHUNKS);
        cr_assert_eq(COUNTER(fs, cache_misses), 0);
        read_all(fs, 5); /* a hit counts once per prefetched chunk */
        cr_assert_eq(COUNTER(fs, prefetch_hits), N_FILES * FILE_CHUNKS);
        fs_free(fs);
        cache_free(c2);

        /* no_prefetch: nothing. */
        fs = mount_fs(b, s2, "3", true, &c3);
        nanosleep(&(struct timespec){ .tv_nsec = 200 * 1000 * 1000 }, NULL);
        cr_assert_eq(COUNTER(fs, prefetch_chunks), 0);
        read_all(fs, 0);
        cr_assert_eq(COUNTER(fs, prefetch_hits), 0);
        cr_assert_eq(COUNTER(fs, cache_misses), N_FILES * FILE_CHUNKS);
        fs_free(fs);
        cache_free(c3);

        free(tree);
        free(blob);
        snapshot_free(s2);
        snapshot_free(s);
        backend_free(b);
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        cr_assert_eq(system(cmd), 0);
}
