/* test-backend.c — the backend contract (backend.h): one conformance suite
 * run against both the memory and the local backend, then what only the
 * local OCI layout has (files on disk, other processes), then the fault
 * injector. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store/backend.h"
#include "store/util.h"

#define MANIFEST_TYPE "application/vnd.oci.image.manifest.v1+json"
#define INDEX_TYPE "application/vnd.oci.image.index.v1+json"

/* --- fixtures ------------------------------------------------------------ */

struct fx {
        struct backend *b;
        char dir[256];   /* local: the temp dir holding the store */
        char store[300]; /* local: dir/store */
};

static void make_tmpdir(struct fx *fx)
{
        const char *t = getenv("TMPDIR");
        snprintf(fx->dir, sizeof fx->dir, "%s/stasis-test-backend-XXXXXX", t && *t ? t : "/tmp");
        cr_assert_not_null(mkdtemp(fx->dir));
        snprintf(fx->store, sizeof fx->store, "%s/store", fx->dir);
}

static void fx_open_memory(struct fx *fx)
{
        fx->b = backend_memory_new();
        cr_assert_not_null(fx->b);
}

static void fx_open_local(struct fx *fx)
{
        make_tmpdir(fx);
        cr_assert_eq(backend_local_open(fx->store, true, &fx->b), 0);
        cr_assert_not_null(fx->b);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st, (void)flag, (void)ftw;
        return remove(path);
}

static void fx_close(struct fx *fx)
{
        fx->b = backend_free(fx->b);
        if (fx->dir[0])
                nftw(fx->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void run(void (*open_fn)(struct fx *), void (*body)(struct fx *))
{
        struct fx fx = { 0 };
        open_fn(&fx);
        body(&fx);
        fx_close(&fx);
}

/* CONFORMANCE(name) { body } defines the test for both backends. */
#define CONFORMANCE(name)                                         \
        static void name(struct fx *fx);                          \
        Test(memory, name) { run(fx_open_memory, name); }         \
        Test(local, name) { run(fx_open_local, name); }           \
        static void name(struct fx *fx)

/* --- helpers ------------------------------------------------------------- */

static void put(struct backend *b, const char *s, struct digest *ret)
{
        cr_assert_eq(blob_write_data(b, s, strlen(s), ret), 0);
}

static void sleep_ms(long ms)
{
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 };
        while (nanosleep(&ts, &ts) < 0)
                ;
}

static int ts_cmp(struct timespec a, struct timespec b)
{
        if (a.tv_sec != b.tv_sec)
                return a.tv_sec < b.tv_sec ? -1 : 1;
        if (a.tv_nsec != b.tv_nsec)
                return a.tv_nsec < b.tv_nsec ? -1 : 1;
        return 0;
}

struct collect {
        struct blob_info infos[64];
        size_t n;
        int stop_after; /* return -ECANCELED after this many; 0 never */
};

static int collect_fn(const struct blob_info *info, void *ctx)
{
        struct collect *c = ctx;
        cr_assert_lt(c->n, ELEMENTSOF(c->infos));
        c->infos[c->n++] = *info;
        if (c->stop_after && (int)c->n >= c->stop_after)
                return -ECANCELED;
        return 0;
}

static const struct blob_info *find_info(const struct collect *c, const struct digest *d)
{
        for (size_t i = 0; i < c->n; i++)
                if (digest_eq(&c->infos[i].digest, d))
                        return &c->infos[i];
        return NULL;
}

static struct timespec mtime_of(struct backend *b, const struct digest *d)
{
        struct collect c = { 0 };
        const struct blob_info *info;
        cr_assert_eq(backend_list(b, collect_fn, &c), 0);
        info = find_info(&c, d);
        cr_assert_not_null(info);
        return info->mtime;
}

static size_t manifest_count(struct backend *b)
{
        json_t *index = NULL;
        size_t n;
        cr_assert_eq(backend_index_read(b, &index), 0);
        n = json_array_size(json_object_get(index, "manifests"));
        json_decref(index);
        return n;
}

/* Appends a manifest descriptor named by ctx (a string) to the index. */
static int append_fn(json_t *index, void *ctx)
{
        const char *name = ctx;
        char dstr[DIGEST_STR_LEN + 1];
        struct digest d;
        json_t *m = json_object_get(index, "manifests");

        if (!json_is_array(m))
                return -EBADMSG;
        digest_sha256(name, strlen(name), &d);
        if (json_array_append_new(m, json_pack("{s:s, s:s, s:i, s:{s:s}}", "mediaType",
                                                MANIFEST_TYPE, "digest", digest_str(&d, dstr),
                                                "size", 1, "annotations",
                                                "org.opencontainers.image.ref.name", name)) < 0)
                return -ENOMEM;
        return 1;
}

static const char *ref_name(const json_t *desc)
{
        return json_string_value(
                json_object_get(json_object_get(desc, "annotations"),
                                "org.opencontainers.image.ref.name"));
}

/* --- conformance --------------------------------------------------------- */

CONFORMANCE(has_size_read)
{
        struct digest d, e, absent;
        char buf[64];
        uint64_t size = 99;

        put(fx->b, "hello world", &d);
        digest_sha256("absent", 6, &absent);

        cr_assert_eq(backend_has(fx->b, &d), 1);
        cr_assert_eq(backend_has(fx->b, &absent), 0);
        cr_assert_eq(backend_size(fx->b, &d, &size), 0);
        cr_assert_eq(size, 11);
        size = 99;
        cr_assert_eq(backend_size(fx->b, &absent, &size), -ENOENT);
        cr_assert_eq(size, 99, "ret_size written on failure");

        memset(buf, 0, sizeof buf);
        cr_assert_eq(backend_read(fx->b, &d, 0, buf, 11), 11);
        cr_assert_str_eq(buf, "hello world");
        memset(buf, 0, sizeof buf);
        cr_assert_eq(backend_read(fx->b, &d, 6, buf, sizeof buf), 5, "short only at the end");
        cr_assert_str_eq(buf, "world");
        memset(buf, 0, sizeof buf);
        cr_assert_eq(backend_read(fx->b, &d, 2, buf, 3), 3);
        cr_assert_str_eq(buf, "llo");
        cr_assert_eq(backend_read(fx->b, &d, 11, buf, sizeof buf), 0);
        cr_assert_eq(backend_read(fx->b, &d, 1000, buf, sizeof buf), 0);
        cr_assert_eq(backend_read(fx->b, &d, 0, buf, 0), 0);
        cr_assert_eq(backend_read(fx->b, &absent, 0, buf, sizeof buf), -ENOENT);

        /* The empty blob. */
        cr_assert_eq(blob_write_data(fx->b, NULL, 0, &e), 0);
        cr_assert_eq(backend_has(fx->b, &e), 1);
        cr_assert_eq(backend_size(fx->b, &e, &size), 0);
        cr_assert_eq(size, 0);
        cr_assert_eq(backend_read(fx->b, &e, 0, buf, sizeof buf), 0);
}

CONFORMANCE(large_blob_ranges)
{
        size_t len = (1 << 20) + 123;
        uint8_t *data = malloc(len), *back = malloc(len);
        struct digest d;

        cr_assert(data && back);
        for (size_t i = 0; i < len; i++)
                data[i] = (uint8_t)(i * 2654435761u >> 13);
        cr_assert_eq(blob_write_data(fx->b, data, len, &d), 0);
        cr_assert_eq(backend_read(fx->b, &d, 0, back, len), (ssize_t)len);
        cr_assert_eq(memcmp(data, back, len), 0);
        cr_assert_eq(backend_read(fx->b, &d, 4096, back, 8192), 8192);
        cr_assert_eq(memcmp(data + 4096, back, 8192), 0);
        cr_assert_eq(backend_read(fx->b, &d, len - 10, back, 8192), 10);
        cr_assert_eq(memcmp(data + len - 10, back, 10), 0);
        free(data);
        free(back);
}

CONFORMANCE(write_is_idempotent_and_freshens)
{
        struct digest d, absent;
        struct timespec t1, t2, t3;
        struct collect c = { 0 };

        put(fx->b, "blob", &d);
        t1 = mtime_of(fx->b, &d);
        sleep_ms(30);
        put(fx->b, "blob", &d);
        t2 = mtime_of(fx->b, &d);
        cr_assert_gt(ts_cmp(t2, t1), 0, "a second write freshens");
        sleep_ms(30);
        cr_assert_eq(backend_freshen(fx->b, &d), 0);
        t3 = mtime_of(fx->b, &d);
        cr_assert_gt(ts_cmp(t3, t2), 0, "freshen() moves the mtime");

        cr_assert_eq(backend_list(fx->b, collect_fn, &c), 0);
        cr_assert_eq(c.n, 1, "writing twice stores once");
        cr_assert_eq(c.infos[0].size, 4);

        digest_sha256("absent", 6, &absent);
        cr_assert_eq(backend_freshen(fx->b, &absent), -ENOENT);
}

CONFORMANCE(remove_blob)
{
        struct digest d, keep;
        struct collect c = { 0 };

        put(fx->b, "doomed", &d);
        put(fx->b, "kept", &keep);
        cr_assert_eq(backend_remove(fx->b, &d), 0);
        cr_assert_eq(backend_has(fx->b, &d), 0);
        cr_assert_eq(backend_remove(fx->b, &d), -ENOENT);
        cr_assert_eq(backend_has(fx->b, &keep), 1);
        cr_assert_eq(backend_list(fx->b, collect_fn, &c), 0);
        cr_assert_eq(c.n, 1);
        cr_assert(digest_eq(&c.infos[0].digest, &keep));
        /* It can come back. */
        put(fx->b, "doomed", &d);
        cr_assert_eq(backend_has(fx->b, &d), 1);
}

CONFORMANCE(list_blobs)
{
        const char *texts[] = { "a", "bb", "ccc" };
        struct digest d[3];
        struct collect c = { 0 }, stop = { .stop_after = 2 };

        cr_assert_eq(backend_list(fx->b, collect_fn, &c), 0);
        cr_assert_eq(c.n, 0, "a fresh store is empty");
        for (size_t i = 0; i < 3; i++)
                put(fx->b, texts[i], &d[i]);
        cr_assert_eq(backend_list(fx->b, collect_fn, &c), 0);
        cr_assert_eq(c.n, 3);
        for (size_t i = 0; i < 3; i++) {
                const struct blob_info *info = find_info(&c, &d[i]);
                cr_assert_not_null(info, "blob %zu listed", i);
                cr_assert_eq(info->size, i + 1);
                cr_assert_gt(info->mtime.tv_sec, 0);
        }
        cr_assert_eq(backend_list(fx->b, collect_fn, &stop), -ECANCELED);
        cr_assert_eq(stop.n, 2, "a negative return stops the walk");
}

static int remove_fn(const struct blob_info *info, void *ctx)
{
        return backend_remove(ctx, &info->digest);
}

CONFORMANCE(list_callback_may_remove)
{
        struct digest d;
        struct collect c = { 0 };

        for (int i = 0; i < 20; i++) {
                char s[16];
                snprintf(s, sizeof s, "blob-%d", i);
                put(fx->b, s, &d);
        }
        cr_assert_eq(backend_list(fx->b, remove_fn, fx->b), 0);
        cr_assert_eq(backend_list(fx->b, collect_fn, &c), 0);
        cr_assert_eq(c.n, 0);
}

CONFORMANCE(read_all_and_verified)
{
        struct digest d, absent;
        void *p = NULL;
        size_t len = 7;
        char text[101];

        memset(text, 'x', 100);
        text[100] = '\0';
        put(fx->b, text, &d);
        digest_sha256("absent", 6, &absent);

        cr_assert_eq(backend_read_all(fx->b, &d, 99, &p, &len), -EFBIG);
        cr_assert_null(p);
        cr_assert_eq(len, 7);
        cr_assert_eq(backend_read_all(fx->b, &d, 100, &p, &len), 0);
        cr_assert_eq(len, 100);
        cr_assert_eq(memcmp(p, text, 100), 0);
        free(p);
        p = NULL;
        cr_assert_eq(blob_read_verified(fx->b, &d, 1 << 20, &p, &len), 0);
        cr_assert_eq(len, 100);
        cr_assert_eq(memcmp(p, text, 100), 0);
        free(p);
        p = NULL;
        cr_assert_eq(blob_read_verified(fx->b, &absent, 1 << 20, &p, &len), -ENOENT);
        cr_assert_null(p);

        /* A blob stored under the wrong address is caught. */
        cr_assert_eq(backend_write(fx->b, &absent, "not absent", 10), 0);
        cr_assert_eq(backend_read_all(fx->b, &absent, 100, &p, &len), 0, "read_all does not verify");
        free(p);
        p = NULL;
        cr_assert_eq(blob_read_verified(fx->b, &absent, 100, &p, &len), -EBADMSG);
        cr_assert_null(p);
}

CONFORMANCE(index_fresh_is_empty_oci_index)
{
        json_t *index = NULL;

        cr_assert_eq(backend_index_read(fx->b, &index), 0);
        cr_assert(json_is_object(index));
        cr_assert_eq(json_integer_value(json_object_get(index, "schemaVersion")), 2);
        cr_assert_str_eq(json_string_value(json_object_get(index, "mediaType")), INDEX_TYPE);
        cr_assert(json_is_array(json_object_get(index, "manifests")));
        cr_assert_eq(json_array_size(json_object_get(index, "manifests")), 0);
        json_decref(index);
}

static int keep_fn(json_t *index, void *ctx)
{
        json_t **keep = ctx;
        *keep = json_incref(index);
        append_fn(index, "kept-ref");
        return 1;
}

static int change_but_discard_fn(json_t *index, void *ctx)
{
        append_fn(index, ctx);
        return 0;
}

static int change_and_fail_fn(json_t *index, void *ctx)
{
        append_fn(index, ctx);
        return -EPERM;
}

static int break_index_fn(json_t *index, void *ctx)
{
        (void)ctx;
        json_object_del(index, "manifests");
        return 1;
}

CONFORMANCE(index_transaction_paths)
{
        json_t *index = NULL, *kept = NULL;

        cr_assert_eq(backend_index_transaction(fx->b, append_fn, "one"), 1, "returns fn's result");
        cr_assert_eq(manifest_count(fx->b), 1);

        cr_assert_eq(backend_index_transaction(fx->b, change_but_discard_fn, "two"), 0);
        cr_assert_eq(manifest_count(fx->b), 1, "fn returned 0: nothing stored");

        cr_assert_eq(backend_index_transaction(fx->b, change_and_fail_fn, "three"), -EPERM);
        cr_assert_eq(manifest_count(fx->b), 1, "fn failed: nothing stored");

        cr_assert_eq(backend_index_transaction(fx->b, break_index_fn, NULL), -EINVAL);
        cr_assert_eq(manifest_count(fx->b), 1, "an index without manifests is never stored");

        /* Neither index_read() nor the transaction hands out the stored object. */
        cr_assert_eq(backend_index_read(fx->b, &index), 0);
        json_array_clear(json_object_get(index, "manifests"));
        json_decref(index);
        cr_assert_eq(manifest_count(fx->b), 1);
        cr_assert_eq(backend_index_transaction(fx->b, keep_fn, &kept), 1);
        cr_assert_eq(manifest_count(fx->b), 2);
        json_array_clear(json_object_get(kept, "manifests"));
        json_decref(kept);
        cr_assert_eq(manifest_count(fx->b), 2);

        cr_assert_eq(backend_index_read(fx->b, &index), 0);
        cr_assert_str_eq(ref_name(json_array_get(json_object_get(index, "manifests"), 0)), "one");
        cr_assert_str_eq(ref_name(json_array_get(json_object_get(index, "manifests"), 1)),
                         "kept-ref");
        json_decref(index);
}

struct blob_ops_ctx {
        struct backend *b;
        struct digest d;
};

/* fn may use every blob operation while the index lock is held. */
static int blob_ops_fn(json_t *index, void *ctx)
{
        struct blob_ops_ctx *c = ctx;
        struct collect col = { 0 };
        uint64_t size;

        if (blob_write_data(c->b, "inside", 6, &c->d) < 0 || backend_has(c->b, &c->d) != 1 ||
            backend_size(c->b, &c->d, &size) < 0 || size != 6 ||
            backend_freshen(c->b, &c->d) < 0 || backend_list(c->b, collect_fn, &col) < 0)
                return -EIO;
        return append_fn(index, "with-blob");
}

CONFORMANCE(index_transaction_may_use_blobs)
{
        struct blob_ops_ctx c = { .b = fx->b };

        cr_assert_eq(backend_index_transaction(fx->b, blob_ops_fn, &c), 1);
        cr_assert_eq(backend_has(fx->b, &c.d), 1);
        cr_assert_eq(manifest_count(fx->b), 1);
}

#define N_THREADS 8
#define N_PER_THREAD 50

struct thread_arg {
        struct backend *b;
        int id;
        int failures;
};

static void *appender(void *p)
{
        struct thread_arg *a = p;
        for (int i = 0; i < N_PER_THREAD; i++) {
                char name[32];
                snprintf(name, sizeof name, "t%d-%d", a->id, i);
                if (backend_index_transaction(a->b, append_fn, name) != 1)
                        a->failures++;
        }
        return NULL;
}

/* Every name "<prefix><w>-<i>" for w < workers, i < per appears exactly once. */
static void assert_all_present(struct backend *b, char prefix, int workers, int per)
{
        json_t *index = NULL, *m;
        bool seen[N_THREADS][N_PER_THREAD] = { { false } };
        size_t i;
        json_t *desc;

        cr_assert_eq(backend_index_read(b, &index), 0);
        m = json_object_get(index, "manifests");
        cr_assert_eq(json_array_size(m), (size_t)(workers * per));
        json_array_foreach(m, i, desc) {
                const char *name = ref_name(desc);
                int w, k;
                char c;
                cr_assert_not_null(name);
                cr_assert_eq(sscanf(name, "%c%d-%d", &c, &w, &k), 3);
                cr_assert_eq(c, prefix);
                cr_assert(w >= 0 && w < workers && k >= 0 && k < per);
                cr_assert_not(seen[w][k], "%s appears twice", name);
                seen[w][k] = true;
        }
        json_decref(index);
}

CONFORMANCE(index_transaction_threads)
{
        pthread_t t[N_THREADS];
        struct thread_arg a[N_THREADS];

        for (int i = 0; i < N_THREADS; i++) {
                a[i] = (struct thread_arg){ .b = fx->b, .id = i };
                cr_assert_eq(pthread_create(&t[i], NULL, appender, &a[i]), 0);
        }
        for (int i = 0; i < N_THREADS; i++) {
                pthread_join(t[i], NULL);
                cr_assert_eq(a[i].failures, 0);
        }
        assert_all_present(fx->b, 't', N_THREADS, N_PER_THREAD);
}

struct writer_arg {
        struct backend *b;
        int id;
        int failures;
};

static void *writer(void *p)
{
        struct writer_arg *a = p;
        for (int i = 0; i < 100; i++) {
                char s[32], buf[32];
                struct digest d;
                /* Half the blobs are shared between all threads. */
                snprintf(s, sizeof s, "blob-%d-%d", i % 2 ? a->id : -1, i);
                if (blob_write_data(a->b, s, strlen(s), &d) < 0 ||
                    backend_read(a->b, &d, 0, buf, sizeof buf) != (ssize_t)strlen(s) ||
                    memcmp(buf, s, strlen(s)) != 0)
                        a->failures++;
        }
        return NULL;
}

static int count_fn(const struct blob_info *info, void *ctx)
{
        (void)info;
        (*(size_t *)ctx)++;
        return 0;
}

CONFORMANCE(blob_writes_threads)
{
        pthread_t t[N_THREADS];
        struct writer_arg a[N_THREADS];
        size_t n = 0;

        for (int i = 0; i < N_THREADS; i++) {
                a[i] = (struct writer_arg){ .b = fx->b, .id = i };
                cr_assert_eq(pthread_create(&t[i], NULL, writer, &a[i]), 0);
        }
        for (int i = 0; i < N_THREADS; i++) {
                pthread_join(t[i], NULL);
                cr_assert_eq(a[i].failures, 0);
        }
        cr_assert_eq(backend_list(fx->b, count_fn, &n), 0);
        cr_assert_eq(n, 50 + N_THREADS * 50, "50 shared blobs, 50 of each thread's own");
}

/* --- wrappers ------------------------------------------------------------ */

Test(backend, wrappers_reject_null)
{
        struct digest d = { { 0 } };
        uint64_t size;
        json_t *j;
        void *p;
        size_t len;
        char buf[4];
        struct backend *b = backend_memory_new();

        cr_assert_eq(backend_has(NULL, &d), -EINVAL);
        cr_assert_eq(backend_has(b, NULL), -EINVAL);
        cr_assert_eq(backend_size(NULL, &d, &size), -EINVAL);
        cr_assert_eq(backend_size(b, &d, NULL), -EINVAL);
        cr_assert_eq(backend_read(NULL, &d, 0, buf, 4), -EINVAL);
        cr_assert_eq(backend_read(b, &d, 0, NULL, 4), -EINVAL);
        cr_assert_eq(backend_write(NULL, &d, "x", 1), -EINVAL);
        cr_assert_eq(backend_write(b, &d, NULL, 1), -EINVAL);
        cr_assert_eq(backend_freshen(NULL, &d), -EINVAL);
        cr_assert_eq(backend_remove(NULL, &d), -EINVAL);
        cr_assert_eq(backend_list(NULL, collect_fn, NULL), -EINVAL);
        cr_assert_eq(backend_list(b, NULL, NULL), -EINVAL);
        cr_assert_eq(backend_index_read(NULL, &j), -EINVAL);
        cr_assert_eq(backend_index_read(b, NULL), -EINVAL);
        cr_assert_eq(backend_index_transaction(NULL, append_fn, NULL), -EINVAL);
        cr_assert_eq(backend_index_transaction(b, NULL, NULL), -EINVAL);
        cr_assert_eq(backend_read_all(NULL, &d, 10, &p, &len), -EINVAL);
        cr_assert_eq(blob_read_verified(NULL, &d, 10, &p, &len), -EINVAL);
        cr_assert_eq(blob_write_data(NULL, "x", 1, &d), -EINVAL);
        cr_assert_null(backend_free(NULL));
        cr_assert_null(backend_free(b));
}

/* A backend whose size() is off by delta from what read() finds: a blob
 * that changed between the two calls. */
struct lying {
        struct backend base;
        struct backend *inner;
        int delta;
};

static int lying_size(struct backend *b, const struct digest *d, uint64_t *ret)
{
        struct lying *l = container_of(b, struct lying, base);
        uint64_t s;
        int r = backend_size(l->inner, d, &s);
        if (r < 0)
                return r;
        *ret = s + (uint64_t)(int64_t)l->delta;
        return 0;
}

static ssize_t lying_read(struct backend *b, const struct digest *d, uint64_t off, void *buf,
                          size_t len)
{
        struct lying *l = container_of(b, struct lying, base);
        return backend_read(l->inner, d, off, buf, len);
}

static const struct backend_ops lying_ops = {
        .version = BACKEND_OPS_VERSION,
        .name = "lying",
        .size = lying_size,
        .read = lying_read,
};

Test(backend, read_all_blob_changed_size)
{
        struct lying l = { .base.ops = &lying_ops, .inner = backend_memory_new() };
        struct digest d;
        void *p = NULL;
        size_t len;

        put(l.inner, "0123456789", &d);
        l.delta = -1; /* grew after size() */
        cr_assert_eq(backend_read_all(&l.base, &d, 100, &p, &len), -EIO);
        cr_assert_null(p);
        l.delta = 1; /* shrank */
        cr_assert_eq(backend_read_all(&l.base, &d, 100, &p, &len), -EIO);
        cr_assert_null(p);
        l.delta = 0;
        cr_assert_eq(backend_read_all(&l.base, &d, 100, &p, &len), 0);
        cr_assert_eq(len, 10);
        free(p);
        cr_assert_eq(backend_has(&l.base, &d), -EOPNOTSUPP, "missing ops are -EOPNOTSUPP");
        backend_free(l.inner);
}

/* --- local only ---------------------------------------------------------- */

static char *slurp(const char *dir, const char *name)
{
        char path[512];
        FILE *f;
        static char buf[4096]; /* test code: one at a time */
        size_t n;

        if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
                return NULL;
        f = fopen(path, "r");
        if (!f)
                return NULL;
        n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = '\0';
        fclose(f);
        return buf;
}

static void spit(const char *dir, const char *name, const char *text)
{
        char path[512];
        FILE *f;

        snprintf(path, sizeof path, "%s/%s", dir, name);
        f = fopen(path, "w");
        cr_assert_not_null(f, "open %s", path);
        fputs(text, f);
        cr_assert_eq(fclose(f), 0);
}

static bool is_dir(const char *dir, const char *name)
{
        char path[512];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, name);
        return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static size_t count_entries(const char *dir, const char *name)
{
        char path[512];
        size_t n = 0;
        struct dirent *de;
        DIR *d;

        snprintf(path, sizeof path, "%s/%s", dir, name);
        d = opendir(path);
        cr_assert_not_null(d);
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                        n++;
        closedir(d);
        return n;
}

static void local_layout(struct fx *fx)
{
        char hex[DIGEST_HEX_LEN + 1], name[128], path[512];
        json_t *j;
        struct digest d;
        struct stat st;
        const char *text;

        text = slurp(fx->store, "oci-layout");
        cr_assert_not_null(text);
        j = json_loads(text, 0, NULL);
        cr_assert(json_is_object(j));
        cr_assert_eq(json_object_size(j), 1);
        cr_assert_str_eq(json_string_value(json_object_get(j, "imageLayoutVersion")), "1.0.0");
        json_decref(j);

        text = slurp(fx->store, "index.json");
        cr_assert_not_null(text);
        j = json_loads(text, 0, NULL);
        cr_assert_eq(json_integer_value(json_object_get(j, "schemaVersion")), 2);
        cr_assert_str_eq(json_string_value(json_object_get(j, "mediaType")), INDEX_TYPE);
        cr_assert_eq(json_array_size(json_object_get(j, "manifests")), 0);
        json_decref(j);

        cr_assert(is_dir(fx->store, "blobs/sha256"));
        cr_assert(is_dir(fx->store, "tmp"));

        put(fx->b, "on disk", &d);
        snprintf(name, sizeof name, "blobs/sha256/%s", digest_hex(&d, hex));
        cr_assert_str_eq(slurp(fx->store, name), "on disk");
        snprintf(path, sizeof path, "%s/blobs/sha256/%s", fx->store, hex);
        cr_assert_eq(stat(path, &st), 0);
        cr_assert_eq(st.st_mode & 07777, 0444, "blobs are read-only");
        cr_assert_eq(count_entries(fx->store, "tmp"), 0, "no temp file left behind");

        cr_assert_eq(backend_index_transaction(fx->b, append_fn, "x"), 1);
        text = slurp(fx->store, "index.json");
        cr_assert_eq(text[strlen(text) - 1], '\n');
        j = json_loads(text, 0, NULL);
        cr_assert_eq(json_array_size(json_object_get(j, "manifests")), 1);
        json_decref(j);
        cr_assert_eq(count_entries(fx->store, "tmp"), 0, "no temp file left behind");
        cr_assert_eq(count_entries(fx->store, "."), 5,
                     "oci-layout, index.json, blobs, tmp, stasis.lock and nothing else");
}
Test(local, layout) { run(fx_open_local, local_layout); }

static void local_reopen(struct fx *fx)
{
        struct digest d;
        struct backend *b = NULL;
        char path[512];

        put(fx->b, "persisted", &d);
        cr_assert_eq(backend_index_transaction(fx->b, append_fn, "persisted"), 1);
        fx->b = backend_free(fx->b);

        cr_assert_eq(backend_local_open(fx->store, false, &fx->b), 0);
        cr_assert_eq(backend_has(fx->b, &d), 1);
        cr_assert_eq(manifest_count(fx->b), 1);
        fx->b = backend_free(fx->b);
        cr_assert_eq(backend_local_open(fx->store, true, &fx->b), 0, "create on a store opens it");
        cr_assert_eq(manifest_count(fx->b), 1, "and does not reset the index");

        snprintf(path, sizeof path, "%s/missing", fx->dir);
        cr_assert_eq(backend_local_open(path, false, &b), -ENOENT);
        cr_assert_null(b);
        cr_assert_eq(mkdir(path, 0755), 0);
        cr_assert_eq(backend_local_open(path, false, &b), -ENOENT, "an empty dir is no store");
        cr_assert_eq(count_entries(path, "."), 0, "and create=false leaves it alone");
        cr_assert_eq(backend_local_open(path, true, &b), 0);
        b = backend_free(b);

        snprintf(path, sizeof path, "%s/a/b/c/store", fx->dir);
        cr_assert_eq(backend_local_open(path, true, &b), 0, "missing parents are made");
        cr_assert_not_null(slurp(path, "oci-layout"));
        b = backend_free(b);
}
Test(local, reopen) { run(fx_open_local, local_reopen); }

static void local_not_a_layout(struct fx *fx)
{
        struct backend *b = NULL;
        char path[512];

        snprintf(path, sizeof path, "%s/foreign", fx->dir);
        cr_assert_eq(mkdir(path, 0755), 0);
        spit(path, "precious", "user data");
        cr_assert_eq(backend_local_open(path, true, &b), -EINVAL);
        cr_assert_eq(backend_local_open(path, false, &b), -EINVAL);
        cr_assert_null(b);
        cr_assert_eq(count_entries(path, "."), 1, "nothing was added");
        cr_assert_str_eq(slurp(path, "precious"), "user data");

        /* A file where the store should be. */
        snprintf(path, sizeof path, "%s/foreign/precious", fx->dir);
        cr_assert_lt(backend_local_open(path, true, &b), 0);
        cr_assert_null(b);
}
Test(local, not_a_layout) { run(fx_open_local, local_not_a_layout); }

static int count_calls_fn(json_t *index, void *ctx)
{
        (void)index;
        (*(int *)ctx)++;
        return 1;
}

static void local_corrupt_index(struct fx *fx)
{
        json_t *j = (json_t *)1;
        char path[512];
        int calls = 0;

        spit(fx->store, "index.json", "{\"manifests\": [");
        cr_assert_eq(backend_index_read(fx->b, &j), -EBADMSG);
        cr_assert_eq(j, (json_t *)1, "ret written on failure");
        cr_assert_eq(backend_index_transaction(fx->b, count_calls_fn, &calls), -EBADMSG);
        cr_assert_eq(calls, 0);
        cr_assert_str_eq(slurp(fx->store, "index.json"), "{\"manifests\": [", "never replaced");

        spit(fx->store, "index.json", "[]");
        cr_assert_eq(backend_index_read(fx->b, &j), -EBADMSG, "valid JSON, not an index");
        cr_assert_eq(backend_index_transaction(fx->b, count_calls_fn, &calls), -EBADMSG);
        cr_assert_eq(calls, 0);
        cr_assert_str_eq(slurp(fx->store, "index.json"), "[]");

        /* A missing index.json is an empty one (a layout another tool made). */
        snprintf(path, sizeof path, "%s/index.json", fx->store);
        cr_assert_eq(unlink(path), 0);
        cr_assert_eq(manifest_count(fx->b), 0);
        cr_assert_eq(backend_index_transaction(fx->b, count_calls_fn, &calls), 1);
        cr_assert_eq(calls, 1);
        cr_assert_not_null(slurp(fx->store, "index.json"));
}
Test(local, corrupt_index) { run(fx_open_local, local_corrupt_index); }

static void local_flipped_byte(struct fx *fx)
{
        char hex[DIGEST_HEX_LEN + 1], path[512];
        struct digest d;
        void *p = NULL;
        size_t len;
        int fd;
        char c;

        put(fx->b, "precious bytes", &d);
        snprintf(path, sizeof path, "%s/blobs/sha256/%s", fx->store, digest_hex(&d, hex));
        cr_assert_eq(chmod(path, 0644), 0);
        fd = open(path, O_RDWR);
        cr_assert_geq(fd, 0);
        cr_assert_eq(pread(fd, &c, 1, 5), 1);
        c ^= 0x10;
        cr_assert_eq(pwrite(fd, &c, 1, 5), 1);
        close(fd);

        cr_assert_eq(blob_read_verified(fx->b, &d, 1024, &p, &len), -EBADMSG);
        cr_assert_null(p);
        cr_assert_eq(backend_read_all(fx->b, &d, 1024, &p, &len), 0);
        cr_assert_eq(len, 14);
        free(p);
}
Test(local, flipped_byte) { run(fx_open_local, local_flipped_byte); }

static void local_wrong_size_blob_replaced(struct fx *fx)
{
        char hex[DIGEST_HEX_LEN + 1], name[128];
        struct digest d;
        void *p = NULL;
        size_t len;

        /* Not something stasis leaves behind, but a blob file that cannot be
         * right must not make write() a no-op. */
        digest_sha256("whole blob", 10, &d);
        snprintf(name, sizeof name, "blobs/sha256/%s", digest_hex(&d, hex));
        spit(fx->store, name, "whole");
        cr_assert_eq(backend_write(fx->b, &d, "whole blob", 10), 0);
        cr_assert_eq(blob_read_verified(fx->b, &d, 100, &p, &len), 0);
        cr_assert_eq(len, 10);
        free(p);
        cr_assert_eq(count_entries(fx->store, "tmp"), 0, "no temp file left behind");
}
Test(local, wrong_size_blob_replaced) { run(fx_open_local, local_wrong_size_blob_replaced); }

static void local_temp_files_not_listed(struct fx *fx)
{
        struct collect c = { 0 };
        struct digest d;
        char hex[DIGEST_HEX_LEN + 1], name[128], upper[DIGEST_HEX_LEN + 1];

        put(fx->b, "real", &d);
        digest_hex(&d, hex);
        snprintf(name, sizeof name, "blobs/sha256/%s.tmp", hex);
        spit(fx->store, name, "partial");
        spit(fx->store, "blobs/sha256/oci-put-blob12345", "partial");
        for (size_t i = 0; i <= DIGEST_HEX_LEN; i++)
                upper[i] = (char)(hex[i] >= 'a' && hex[i] <= 'f' ? hex[i] - 32 : hex[i]);
        snprintf(name, sizeof name, "blobs/sha256/%s", upper);
        if (strcmp(upper, hex))
                spit(fx->store, name, "partial");
        spit(fx->store, "tmp/blob.inflight", "partial");

        cr_assert_eq(backend_list(fx->b, collect_fn, &c), 0);
        cr_assert_eq(c.n, 1);
        cr_assert(digest_eq(&c.infos[0].digest, &d));
}
Test(local, temp_files_not_listed) { run(fx_open_local, local_temp_files_not_listed); }

static void local_processes(struct fx *fx)
{
        enum { N_PROC = 4 };
        pid_t pids[N_PROC];
        json_t *j;
        char path[512];

        for (int p = 0; p < N_PROC; p++) {
                pids[p] = fork();
                cr_assert_geq(pids[p], 0);
                if (pids[p] == 0) {
                        struct backend *b = NULL;
                        int bad = 0;
                        if (backend_local_open(fx->store, false, &b) < 0)
                                _exit(2);
                        for (int i = 0; i < N_PER_THREAD; i++) {
                                char name[32];
                                snprintf(name, sizeof name, "p%d-%d", p, i);
                                if (backend_index_transaction(b, append_fn, name) != 1)
                                        bad++;
                        }
                        backend_free(b);
                        _exit(bad ? 1 : 0);
                }
        }
        for (int p = 0; p < N_PROC; p++) {
                int status;
                cr_assert_eq(waitpid(pids[p], &status, 0), pids[p]);
                cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d failed", p);
        }
        assert_all_present(fx->b, 'p', N_PROC, N_PER_THREAD);
        snprintf(path, sizeof path, "%s/index.json", fx->store);
        j = json_load_file(path, 0, NULL);
        cr_assert_not_null(j, "index.json is valid JSON");
        cr_assert_eq(json_array_size(json_object_get(j, "manifests")), N_PROC * N_PER_THREAD);
        json_decref(j);
        cr_assert_eq(count_entries(fx->store, "tmp"), 0);
}
Test(local, index_transaction_processes, .timeout = 120) { run(fx_open_local, local_processes); }

/* --- fault injector ------------------------------------------------------ */

static struct backend *fault_over_memory(const struct fault_spec *spec, struct digest *ret,
                                         const char *text)
{
        struct backend *inner = backend_memory_new(), *b;
        cr_assert_not_null(inner);
        put(inner, text, ret);
        b = backend_fault_new(inner, spec);
        cr_assert_not_null(b);
        return b;
}

Test(fault, fail_nth_read)
{
        struct fault_spec spec = { .kind = FAULT_FAIL, .op_mask = FAULT_OP_READ, .nth = 3,
                                   .err = EIO };
        struct digest d;
        struct backend *b = fault_over_memory(&spec, &d, "0123456789");
        char buf[16];

        cr_assert_eq(backend_read(b, &d, 0, buf, sizeof buf), 10);
        cr_assert_eq(backend_read(b, &d, 0, buf, sizeof buf), 10);
        cr_assert_eq(backend_read(b, &d, 0, buf, sizeof buf), -EIO);
        cr_assert_eq(backend_read(b, &d, 0, buf, sizeof buf), 10, "only the nth without repeat");
        cr_assert_eq(backend_read(b, &d, 0, buf, sizeof buf), 10);
        cr_assert_eq(backend_fault_calls(b), 5);
        cr_assert_eq(backend_fault_hits(b), 1);
        backend_free(b);
}

Test(fault, fail_does_not_call_inner)
{
        struct fault_spec spec = { .kind = FAULT_FAIL, .op_mask = FAULT_OP_WRITE, .nth = 1,
                                   .err = ENOSPC };
        struct digest d, e;
        struct backend *b = fault_over_memory(&spec, &d, "seed");

        cr_assert_eq(blob_write_data(b, "lost", 4, &e), -ENOSPC);
        digest_sha256("lost", 4, &e);
        cr_assert_eq(backend_has(b, &e), 0, "the failed write never reached inner");
        cr_assert_eq(blob_write_data(b, "lost", 4, &e), 0);
        cr_assert_eq(backend_has(b, &e), 1);
        backend_free(b);
}

Test(fault, short_read)
{
        struct fault_spec spec = { .kind = FAULT_SHORT_READ, .op_mask = FAULT_OP_ALL, .nth = 1 };
        struct digest d;
        struct backend *b = fault_over_memory(&spec, &d, "0123456789");
        char buf[16];
        void *p = NULL;
        size_t len;

        cr_assert_eq(backend_has(b, &d), 1, "short reads count only reads");
        cr_assert_eq(backend_read(b, &d, 0, buf, sizeof buf), 5);
        cr_assert_eq(memcmp(buf, "01234", 5), 0);
        cr_assert_eq(backend_read(b, &d, 0, buf, sizeof buf), 10);
        cr_assert_eq(backend_fault_hits(b), 1);

        backend_fault_set(b, &spec);
        cr_assert_eq(blob_read_verified(b, &d, 100, &p, &len), -EIO, "a short read is no blob");
        cr_assert_null(p);
        cr_assert_eq(blob_read_verified(b, &d, 100, &p, &len), 0);
        free(p);
        backend_free(b);
}

Test(fault, flip_bit)
{
        struct fault_spec spec = { .kind = FAULT_FLIP_BIT, .op_mask = FAULT_OP_READ, .nth = 2 };
        struct digest d;
        const char *text = "0123456789abcdef";
        struct backend *b = fault_over_memory(&spec, &d, text);
        char buf[32];
        void *p = NULL;
        size_t len;
        int bits = 0;

        cr_assert_eq(backend_read(b, &d, 0, buf, sizeof buf), 16);
        cr_assert_eq(memcmp(buf, text, 16), 0);
        cr_assert_eq(backend_read(b, &d, 0, buf, sizeof buf), 16);
        for (int i = 0; i < 16; i++)
                bits += __builtin_popcount((unsigned char)(buf[i] ^ text[i]));
        cr_assert_eq(bits, 1, "exactly one bit flipped");
        cr_assert_eq(backend_fault_hits(b), 1);

        spec.nth = 1;
        backend_fault_set(b, &spec);
        cr_assert_eq(blob_read_verified(b, &d, 100, &p, &len), -EBADMSG);
        cr_assert_null(p);
        cr_assert_eq(blob_read_verified(b, &d, 100, &p, &len), 0);
        cr_assert_eq(memcmp(p, text, 16), 0);
        free(p);
        backend_free(b);
}

Test(fault, repeat)
{
        struct fault_spec spec = { .kind = FAULT_FAIL, .op_mask = FAULT_OP_HAS, .nth = 2,
                                   .err = EAGAIN, .repeat = true };
        struct digest d;
        struct backend *b = fault_over_memory(&spec, &d, "x");

        for (int i = 1; i <= 7; i++)
                cr_assert_eq(backend_has(b, &d), i % 2 == 0 ? -EAGAIN : 1, "call %d", i);
        cr_assert_eq(backend_fault_calls(b), 7);
        cr_assert_eq(backend_fault_hits(b), 3);
        backend_free(b);
}

Test(fault, op_mask_filters_and_counts)
{
        struct fault_spec spec = { .kind = FAULT_FAIL, .op_mask = FAULT_OP_HAS | FAULT_OP_INDEX,
                                   .nth = 1, .err = EIO, .repeat = true };
        struct digest d;
        struct backend *b = fault_over_memory(&spec, &d, "0123");
        uint64_t size;
        char buf[8];
        json_t *j = NULL;
        struct collect c = { 0 };

        cr_assert_eq(backend_read(b, &d, 0, buf, sizeof buf), 4);
        cr_assert_eq(backend_size(b, &d, &size), 0);
        cr_assert_eq(backend_freshen(b, &d), 0);
        cr_assert_eq(backend_list(b, collect_fn, &c), 0);
        cr_assert_eq(blob_write_data(b, "y", 1, NULL), 0);
        cr_assert_eq(backend_fault_calls(b), 0, "ops outside the mask are not counted");

        cr_assert_eq(backend_has(b, &d), -EIO);
        cr_assert_eq(backend_index_read(b, &j), -EIO);
        cr_assert_null(j);
        cr_assert_eq(backend_index_transaction(b, append_fn, "x"), -EIO);
        cr_assert_eq(backend_fault_calls(b), 3);
        cr_assert_eq(backend_fault_hits(b), 3);

        /* FAULT_NONE only counts; set() resets the counters. */
        spec = (struct fault_spec){ .kind = FAULT_NONE, .op_mask = FAULT_OP_ALL };
        backend_fault_set(b, &spec);
        cr_assert_eq(backend_fault_calls(b), 0);
        cr_assert_eq(backend_fault_hits(b), 0);
        cr_assert_eq(backend_has(b, &d), 1);
        cr_assert_eq(backend_index_transaction(b, append_fn, "x"), 1);
        cr_assert_eq(backend_index_read(b, &j), 0);
        cr_assert_eq(json_array_size(json_object_get(j, "manifests")), 1);
        json_decref(j);
        cr_assert_eq(backend_fault_calls(b), 3);
        cr_assert_eq(backend_fault_hits(b), 0);

        backend_free(b);
        b = backend_memory_new();
        cr_assert_eq(backend_fault_calls(b), 0, "not a fault backend");
        cr_assert_eq(backend_fault_hits(NULL), 0);
        backend_free(b);
}

struct fault_thread {
        struct backend *b;
        struct digest d;
        int failures;
};

static void *fault_hammer(void *p)
{
        struct fault_thread *t = p;
        for (int i = 0; i < 1000; i++)
                if (backend_has(t->b, &t->d) != 1)
                        t->failures++;
        return NULL;
}

Test(fault, counters_threads)
{
        struct fault_spec spec = { .kind = FAULT_FAIL, .op_mask = FAULT_OP_HAS, .nth = 10,
                                   .err = EIO, .repeat = true };
        struct digest d;
        struct backend *b = fault_over_memory(&spec, &d, "shared");
        pthread_t th[4];
        struct fault_thread t[4];
        int failures = 0;

        for (int i = 0; i < 4; i++) {
                t[i] = (struct fault_thread){ .b = b, .d = d };
                cr_assert_eq(pthread_create(&th[i], NULL, fault_hammer, &t[i]), 0);
        }
        for (int i = 0; i < 4; i++) {
                pthread_join(th[i], NULL);
                failures += t[i].failures;
        }
        cr_assert_eq(backend_fault_calls(b), 4000);
        cr_assert_eq(backend_fault_hits(b), 400);
        cr_assert_eq(failures, 400);
        backend_free(b);
}
