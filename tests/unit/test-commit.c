/* test-commit.c — commit, restore and diff through the backend vtable, with
 * the in-memory backend and the fault injector (SQLite-style: fail every call
 * in turn and check that nothing is lost or served wrong). */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "store/store.h"

static char src[64], dst[64];

static void write_file(const char *dir, const char *name, const void *data, size_t len)
{
        char p[256];
        int fd;
        snprintf(p, sizeof p, "%s/%s", dir, name);
        fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        cr_assert(fd >= 0, "create %s", p);
        cr_assert_eq(pwrite_full(fd, data, len, 0), 0);
        close(fd);
}

static void pattern(uint8_t *buf, size_t len, uint32_t seed)
{
        uint32_t x = seed * 2654435761u + 1;
        for (size_t i = 0; i < len; i++) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                buf[i] = (uint8_t)x;
        }
}

static void make_tree(void)
{
        static uint8_t big[1 << 20];
        char p[256];

        strcpy(src, "/tmp/stasis-ut-src-XXXXXX");
        cr_assert(mkdtemp(src));
        pattern(big, sizeof big, 1);
        write_file(src, "big", big, sizeof big);
        write_file(src, "small", "hello\n", 6);
        write_file(src, "empty", "", 0);
        write_file(src, "copy-of-big", big, sizeof big);
        snprintf(p, sizeof p, "%s/sub", src);
        cr_assert_eq(mkdir(p, 0755), 0);
        write_file(src, "sub/file", "in sub\n", 7);
        snprintf(p, sizeof p, "%s/link", src);
        cr_assert_eq(symlink("sub/file", p), 0);
        {
                char q[256];
                snprintf(q, sizeof q, "%s/sub/hardlink", src);
                snprintf(p, sizeof p, "%s/small", src);
                cr_assert_eq(link(p, q), 0);
        }
        /* a sparse file: data, a 1 MiB hole, data */
        {
                int fd;
                snprintf(p, sizeof p, "%s/sparse", src);
                fd = open(p, O_WRONLY | O_CREAT, 0600);
                cr_assert(fd >= 0);
                cr_assert_eq(pwrite_full(fd, big, 8192, 0), 0);
                cr_assert_eq(pwrite_full(fd, big, 8192, (1 << 20) + 8192), 0);
                close(fd);
        }
        strcpy(dst, "/tmp/stasis-ut-dst-XXXXXX");
        cr_assert(mkdtemp(dst));
}

static void rm_rf(const char *dir)
{
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        (void)!system(cmd);
}

static void cleanup(void)
{
        rm_rf(src);
        rm_rf(dst);
}

static void same_trees(const char *a, const char *b)
{
        char cmd[300];
        snprintf(cmd, sizeof cmd, "diff -r --no-dereference '%s' '%s' >/dev/null", a, b);
        cr_assert_eq(system(cmd), 0, "trees %s and %s differ", a, b);
}

TestSuite(commit, .init = make_tree, .fini = cleanup);

Test(commit, roundtrip_memory)
{
        struct backend *b = backend_memory_new();
        struct commit_opts o = { .dir = src, .chunk_size = 64 << 10, .tag = "t1" };
        struct commit_stats st;
        struct restore_stats rs;
        struct digest d, d2;
        struct stat s1, s2;
        char p[256];

        cr_assert_eq(store_commit(b, &o, &d, &st), 0);
        cr_assert_eq(st.files, 6); /* big, small (+hardlink), empty, copy, sub/file, sparse */
        cr_assert_eq(st.dirs, 2);
        /* copy-of-big shares all of big's chunks; the sparse file's two data
         * pieces are one chunk each. */
        cr_assert_eq(st.chunks_new, 16 + 1 + 1 + 2, "chunks_new %lu", (unsigned long)st.chunks_new);
        cr_assert_eq(store_resolve(b, "t1", &d2), 0);
        cr_assert(digest_eq(&d, &d2));

        rmdir(dst);
        cr_assert_eq(store_restore(b, &d, dst, NULL, NULL, &rs), 0);
        same_trees(src, dst);
        snprintf(p, sizeof p, "%s/sparse", dst);
        cr_assert_eq(stat(p, &s1), 0);
        snprintf(p, sizeof p, "%s/sparse", src);
        cr_assert_eq(stat(p, &s2), 0);
        cr_assert_eq(s1.st_size, s2.st_size);
        cr_assert_leq(s1.st_blocks, s2.st_blocks, "holes must stay holes");
        snprintf(p, sizeof p, "%s/sub/hardlink", dst);
        cr_assert_eq(stat(p, &s1), 0);
        cr_assert_eq(s1.st_nlink, 2);
        backend_free(b);
}

Test(commit, incremental_costs_only_changes)
{
        struct backend *b = backend_memory_new();
        struct commit_opts o = { .dir = src, .chunk_size = 64 << 10 };
        struct commit_stats st;
        struct digest d1, d2;
        char p[256];
        int fd;

        cr_assert_eq(store_commit(b, &o, &d1, &st), 0);
        /* Same tree again, as a new first generation: nothing new either (the
         * store's newest snapshots are known to the packer). */
        cr_assert_eq(store_commit(b, &o, &d2, &st), 0);
        cr_assert_eq(st.chunks_new, 0);
        cr_assert_eq(st.bytes_packed, 0);
        /* Same tree again: nothing new. */
        o.parent = &d1;
        cr_assert_eq(store_commit(b, &o, &d2, &st), 0);
        cr_assert_eq(st.chunks_new, 0);
        cr_assert_eq(st.bytes_packed, 0);
        /* 4 KiB in the middle of big: one new chunk. */
        snprintf(p, sizeof p, "%s/big", src);
        fd = open(p, O_WRONLY);
        cr_assert(fd >= 0);
        cr_assert_eq(pwrite_full(fd, "XXXX", 4, 512 << 10), 0);
        close(fd);
        cr_assert_eq(store_commit(b, &o, &d2, &st), 0);
        cr_assert_eq(st.chunks_new, 1, "chunks_new %lu", (unsigned long)st.chunks_new);
        rmdir(dst);
        cr_assert_eq(store_restore(b, &d2, dst, NULL, NULL, NULL), 0);
        same_trees(src, dst);
        backend_free(b);
}

static int count_diff(void *ctx, enum diff_kind kind, const char *path, const char *what,
                      const uint64_t (*ranges)[2], size_t n)
{
        int *seen = ctx;
        (void)what;
        if (kind == DIFF_CHANGED && !strcmp(path, "big")) {
                cr_assert_eq(n, 1);
                cr_assert_eq(ranges[0][0], 512 << 10);
                cr_assert_eq(ranges[0][1], 64 << 10);
                seen[0]++;
        } else if (kind == DIFF_ADDED && !strcmp(path, "new")) {
                seen[1]++;
        } else if (kind == DIFF_REMOVED && !strcmp(path, "empty")) {
                seen[2]++;
        } else if (kind == DIFF_CHANGED && !strcmp(path, ".")) {
                seen[3]++; /* the root's mtime */
        } else {
                cr_assert_fail("unexpected diff entry %d %s", kind, path);
        }
        return 0;
}

Test(commit, diff_reports_ranges)
{
        struct backend *b = backend_memory_new();
        struct commit_opts o = { .dir = src, .chunk_size = 64 << 10 };
        struct digest d1, d2;
        int seen[4] = { 0 };
        char p[256];
        int fd;

        cr_assert_eq(store_commit(b, &o, &d1, NULL), 0);
        snprintf(p, sizeof p, "%s/big", src);
        fd = open(p, O_WRONLY);
        cr_assert(fd >= 0);
        cr_assert_eq(pwrite_full(fd, "XXXX", 4, (512 << 10) + 100), 0);
        close(fd);
        write_file(src, "new", "n", 1);
        snprintf(p, sizeof p, "%s/empty", src);
        cr_assert_eq(unlink(p), 0);
        o.parent = &d1;
        cr_assert_eq(store_commit(b, &o, &d2, NULL), 0);
        cr_assert_eq(store_diff(b, &d1, &d2, count_diff, seen), 0);
        cr_assert_eq(seen[0], 1, "big not reported changed");
        cr_assert_eq(seen[1], 1, "new not reported added");
        cr_assert_eq(seen[2], 1, "empty not reported removed");
        /* Identical snapshots: no difference at all. */
        memset(seen, 0, sizeof seen);
        cr_assert_eq(store_diff(b, &d2, &d2, count_diff, seen), 0);
        cr_assert_eq(seen[0] + seen[1] + seen[2] + seen[3], 0);
        backend_free(b);
}

/* Fail every backend write (and index access) of a commit in turn, each time
 * on a fresh store: the commit reports the failure, and a clean commit into
 * the same store afterwards restores exactly. */
Test(commit, fault_every_write)
{
        struct fault_spec spec = { .kind = FAULT_FAIL, .op_mask = FAULT_OP_WRITE | FAULT_OP_INDEX,
                                   .err = EIO, .nth = UINT64_MAX };
        struct commit_opts o = { .dir = src, .chunk_size = 64 << 10, .tag = "t" };
        struct backend *b = backend_fault_new(backend_memory_new(), &spec);
        struct digest d;
        uint64_t calls;

        /* How many calls does a commit into an empty store make? */
        cr_assert_eq(store_commit(b, &o, &d, NULL), 0);
        calls = backend_fault_calls(b);
        cr_assert_gt(calls, 2);
        backend_free(b);
        for (uint64_t n = 1; n <= calls; n++) {
                struct digest got;
                spec.kind = FAULT_FAIL;
                spec.nth = n;
                b = backend_fault_new(backend_memory_new(), &spec);
                cr_assert_lt(store_commit(b, &o, &got, NULL), 0, "fault at call %lu not reported",
                             (unsigned long)n);
                spec.kind = FAULT_NONE;
                backend_fault_set(b, &spec);
                cr_assert_eq(store_commit(b, &o, &got, NULL), 0, "no recovery after a fault at call %lu",
                             (unsigned long)n);
                rm_rf(dst);
                cr_assert_eq(store_restore(b, &got, dst, NULL, NULL, NULL), 0);
                same_trees(src, dst);
                backend_free(b);
        }
}

/* A flipped bit in any read during restore fails the restore; no file is
 * left with wrong bytes. */
Test(commit, restore_never_writes_corrupt_data)
{
        struct backend *mem = backend_memory_new();
        struct fault_spec spec = { .kind = FAULT_FLIP_BIT, .op_mask = FAULT_OP_READ, .nth = UINT64_MAX };
        struct backend *b = backend_fault_new(mem, &spec);
        struct commit_opts o = { .dir = src, .chunk_size = 64 << 10 };
        struct digest d;
        uint64_t calls;

        cr_assert_eq(store_commit(b, &o, &d, NULL), 0);
        backend_fault_set(b, &spec);
        rmdir(dst);
        cr_assert_eq(store_restore(b, &d, dst, NULL, NULL, NULL), 0);
        calls = backend_fault_calls(b);
        for (uint64_t n = 1; n <= calls; n++) {
                char cmd[512];
                rm_rf(dst);
                spec.nth = n;
                backend_fault_set(b, &spec);
                cr_assert_lt(store_restore(b, &d, dst, NULL, NULL, NULL), 0, "flip at read %lu not caught",
                             (unsigned long)n);
                /* Every regular file that exists must equal its source. */
                snprintf(cmd, sizeof cmd,
                         "test ! -d '%s' || (cd '%s' && find . -type f | while read f; do "
                         "cmp -s \"$f\" '%s'/\"$f\" || { echo \"wrong: $f\" >&2; exit 1; }; done)",
                         dst, dst, src);
                cr_assert_eq(system(cmd), 0, "wrong bytes restored with a flip at read %lu", (unsigned long)n);
        }
        backend_free(b);
}
