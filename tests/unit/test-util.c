/* test-util.c — the small helpers in store/util.h that guard the store. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "store/store.h"

static char dir[64];

static void setup(void)
{
        char p[128];
        int fd;

        strcpy(dir, "/tmp/stasis-ut-util-XXXXXX");
        cr_assert(mkdtemp(dir));
        snprintf(p, sizeof p, "%s/sub", dir);
        cr_assert_eq(mkdir(p, 0755), 0);
        snprintf(p, sizeof p, "%s/sub/file", dir);
        fd = open(p, O_WRONLY | O_CREAT, 0644);
        cr_assert(fd >= 0);
        close(fd);
        snprintf(p, sizeof p, "%s/link", dir);
        cr_assert_eq(symlink("sub", p), 0);
        snprintf(p, sizeof p, "%s/out", dir);
        cr_assert_eq(symlink("/etc", p), 0);
}

static void teardown(void)
{
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        (void)!system(cmd);
}

TestSuite(util, .init = setup, .fini = teardown);

Test(util, open_beneath_stays_inside_and_follows_no_symlink)
{
        int dfd = open(dir, O_RDONLY | O_DIRECTORY);
        int fd;

        cr_assert(dfd >= 0);
        fd = open_beneath(dfd, "sub/file", O_RDONLY);
        cr_assert_geq(fd, 0, "a plain path below the directory opens");
        close(fd);
        cr_assert_lt(open_beneath(dfd, "link/file", O_RDONLY), 0, "a symlinked component is refused");
        cr_assert_lt(open_beneath(dfd, "out/passwd", O_RDONLY), 0, "a symlink out of the tree is refused");
        cr_assert_lt(open_beneath(dfd, "sub/../../etc/passwd", O_RDONLY), 0, "'..' out of the tree is refused");
        cr_assert_lt(open_beneath(dfd, "/etc/passwd", O_RDONLY), 0, "an absolute path is refused");
        close(dfd);
}

Test(util, parse_size)
{
        uint64_t v;
        cr_assert_eq(parse_size("4096", &v), 0);
        cr_assert_eq(v, 4096);
        cr_assert_eq(parse_size("256K", &v), 0);
        cr_assert_eq(v, 256u << 10);
        cr_assert_eq(parse_size("4MiB", &v), 0);
        cr_assert_eq(v, 4u << 20);
        cr_assert_lt(parse_size("lots", &v), 0);
        cr_assert_lt(parse_size("-1", &v), 0);
        cr_assert_lt(parse_size("99999999999999999999T", &v), 0);
        cr_assert_lt(parse_size("20000000000000T", &v), 0);
}

Test(util, array_grow)
{
        int *a = NULL;
        size_t alloc = 0;
        for (size_t i = 0; i < 1000; i++) {
                cr_assert_eq(array_grow((void **)&a, &alloc, i + 1, sizeof *a), 0);
                cr_assert_geq(alloc, i + 1);
                a[i] = (int)i;
        }
        cr_assert_eq(a[999], 999);
        free(a);
}
