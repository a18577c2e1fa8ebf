/* crashdisk.c — test helper: a disk with a volatile write cache, so that a
 * test can cut the power under a real file system.
 *
 *   crashdisk IMAGE MOUNTPOINT
 *
 * Mounts a FUSE file system on MOUNTPOINT with two files:
 *   disk  IMAGE's bytes (IMAGE is not written). Writes land in a write
 *         cache of 4 KiB blocks; an fsync or fdatasync of disk (what a loop
 *         device does for a FLUSH, and for a FUA write, which it cannot do
 *         otherwise) makes every cached block durable. Reads see the cache.
 *   ctl   writing "crash KEEP SEED OUT" cuts the power: each cached block
 *         is kept with probability KEEP percent (0: none, 100: all; SEED
 *         picks which, so a failure can be replayed), in any order, as a
 *         disk that loses its cache may; the durable image is written to
 *         OUT (sparse, fsync'd), and from then on every read, write and
 *         fsync of disk fails with EIO.
 * A loop device on MOUNTPOINT/disk is then a block device for mkfs and
 * mount; OUT, after a crash, is what the disk held when the power went out.
 *
 * Runs in the foreground, single-threaded (requests are applied one at a
 * time, so a crash falls between two of them); fusermount3 -u stops it.
 * Exit 0, or 1 with a message. */
#define FUSE_USE_VERSION 312
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOCK 4096u

static struct {
        uint8_t *durable; /* what survives a crash (IMAGE, copy-on-write) */
        uint8_t *cache;   /* blocks written since the last flush */
        uint8_t *dirty;   /* one byte per block: in the cache */
        uint64_t *list;   /* the dirty blocks, in the order first written */
        size_t ndirty;
        uint64_t size, blocks;
        bool crashed;
        uint64_t writes, flushes;
} d;

static int cd_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
        (void)fi;
        memset(st, 0, sizeof(*st));
        if (strcmp(path, "/") == 0) {
                st->st_mode = S_IFDIR | 0755;
                st->st_nlink = 2;
        } else if (strcmp(path, "/disk") == 0) {
                st->st_mode = S_IFREG | 0600;
                st->st_nlink = 1;
                st->st_size = (off_t)d.size;
        } else if (strcmp(path, "/ctl") == 0) {
                st->st_mode = S_IFREG | 0200;
                st->st_nlink = 1;
        } else {
                return -ENOENT;
        }
        return 0;
}

static int cd_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off, struct fuse_file_info *fi,
                      enum fuse_readdir_flags flags)
{
        (void)off, (void)fi, (void)flags;
        if (strcmp(path, "/") != 0)
                return -ENOTDIR;
        fill(buf, ".", NULL, 0, 0);
        fill(buf, "..", NULL, 0, 0);
        fill(buf, "disk", NULL, 0, 0);
        fill(buf, "ctl", NULL, 0, 0);
        return 0;
}

static int cd_open(const char *path, struct fuse_file_info *fi)
{
        if (strcmp(path, "/disk") != 0 && strcmp(path, "/ctl") != 0)
                return -ENOENT;
        fi->direct_io = 1; /* every read and write of the loop device reaches us */
        return 0;
}

static int cd_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
        (void)fi;
        if (strcmp(path, "/ctl") == 0)
                return 0; /* echo >ctl opens with O_TRUNC */
        return size == (off_t)d.size ? 0 : -EPERM;
}

static int cd_read(const char *path, char *buf, size_t n, off_t off, struct fuse_file_info *fi)
{
        uint64_t pos = (uint64_t)off, end;

        (void)fi;
        if (strcmp(path, "/disk") != 0)
                return -EBADF;
        if (d.crashed)
                return -EIO;
        if (pos >= d.size)
                return 0;
        end = pos + n < d.size ? pos + n : d.size;
        for (uint64_t p = pos; p < end;) {
                uint64_t b = p / BLOCK, stop = (b + 1) * BLOCK < end ? (b + 1) * BLOCK : end;
                const uint8_t *src = d.dirty[b] ? d.cache : d.durable;

                memcpy(buf + (p - pos), src + p, stop - p);
                p = stop;
        }
        return (int)(end - pos);
}

static int cd_flush_cache(void)
{
        for (size_t i = 0; i < d.ndirty; i++) {
                uint64_t b = d.list[i];

                memcpy(d.durable + b * BLOCK, d.cache + b * BLOCK, BLOCK);
                d.dirty[b] = 0;
        }
        d.ndirty = 0;
        d.flushes++;
        return 0;
}

static int cd_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
        (void)datasync, (void)fi;
        if (strcmp(path, "/disk") != 0)
                return 0;
        if (d.crashed)
                return -EIO;
        return cd_flush_cache();
}

/* The power goes out: keep each cached block with probability keep %, write
 * the durable image to out. */
static int cd_crash(unsigned keep, unsigned seed, const char *out)
{
        uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1, kept = 0, lost = 0;
        int fd;

        for (size_t i = 0; i < d.ndirty; i++) {
                uint64_t b = d.list[i];

                state ^= state << 13, state ^= state >> 7, state ^= state << 17; /* xorshift64 */
                if (state % 100 < keep) {
                        memcpy(d.durable + b * BLOCK, d.cache + b * BLOCK, BLOCK);
                        kept++;
                } else {
                        lost++;
                }
                d.dirty[b] = 0;
        }
        d.ndirty = 0;
        d.crashed = true;
        fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || ftruncate(fd, (off_t)d.size) != 0)
                goto fail;
        for (uint64_t b = 0; b < d.blocks; b++) {
                static const uint8_t zero[BLOCK];
                const uint8_t *p = d.durable + b * BLOCK;

                if (memcmp(p, zero, BLOCK) == 0)
                        continue; /* sparse: ftruncate left zeros */
                if (pwrite(fd, p, BLOCK, (off_t)(b * BLOCK)) != BLOCK)
                        goto fail;
        }
        if (fsync(fd) != 0 || close(fd) != 0) {
                fd = -1;
                goto fail;
        }
        fprintf(stderr, "crashdisk: power cut after %" PRIu64 " writes and %" PRIu64 " flushes: %" PRIu64
                        " cached blocks kept, %" PRIu64 " lost; image in %s\n",
                d.writes, d.flushes, kept, lost, out);
        return 0;
fail:
        fprintf(stderr, "crashdisk: %s: %s\n", out, strerror(errno));
        if (fd >= 0)
                close(fd);
        return -EIO;
}

static int cd_write(const char *path, const char *buf, size_t n, off_t off, struct fuse_file_info *fi)
{
        uint64_t pos = (uint64_t)off;

        (void)fi;
        if (strcmp(path, "/ctl") == 0) {
                char cmd[4200], out[4096];
                unsigned keep, seed;

                if (n >= sizeof(cmd))
                        return -EINVAL;
                memcpy(cmd, buf, n);
                cmd[n] = '\0';
                if (sscanf(cmd, "crash %u %u %4095s", &keep, &seed, out) != 3 || keep > 100 || d.crashed)
                        return -EINVAL;
                int r = cd_crash(keep, seed, out);
                return r < 0 ? r : (int)n;
        }
        if (strcmp(path, "/disk") != 0)
                return -EBADF;
        if (d.crashed)
                return -EIO;
        if (pos >= d.size || n > d.size - pos)
                return -ENOSPC;
        for (uint64_t p = pos; p < pos + n;) {
                uint64_t b = p / BLOCK, stop = (b + 1) * BLOCK < pos + n ? (b + 1) * BLOCK : pos + n;

                if (!d.dirty[b]) {
                        memcpy(d.cache + b * BLOCK, d.durable + b * BLOCK, BLOCK);
                        d.dirty[b] = 1;
                        d.list[d.ndirty++] = b;
                }
                memcpy(d.cache + p, buf + (p - pos), stop - p);
                p = stop;
        }
        d.writes++;
        return (int)n;
}

static void *cd_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
        (void)conn;
        cfg->direct_io = 1;
        cfg->attr_timeout = 3600;
        cfg->entry_timeout = 3600;
        return NULL;
}

static const struct fuse_operations ops = {
        .init = cd_init,
        .getattr = cd_getattr,
        .readdir = cd_readdir,
        .open = cd_open,
        .truncate = cd_truncate,
        .read = cd_read,
        .write = cd_write,
        .fsync = cd_fsync,
};

int main(int argc, char **argv)
{
        struct stat st;
        int fd;

        if (argc != 3) {
                fprintf(stderr, "usage: crashdisk IMAGE MOUNTPOINT\n");
                return 2;
        }
        fd = open(argv[1], O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) != 0) {
                fprintf(stderr, "crashdisk: %s: %s\n", argv[1], strerror(errno));
                return 1;
        }
        if (st.st_size <= 0 || st.st_size % BLOCK != 0) {
                fprintf(stderr, "crashdisk: %s: size %jd is not a positive multiple of %u\n", argv[1],
                        (intmax_t)st.st_size, BLOCK);
                return 1;
        }
        d.size = (uint64_t)st.st_size;
        d.blocks = d.size / BLOCK;
        d.durable = mmap(NULL, d.size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
        d.cache = mmap(NULL, d.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        d.dirty = calloc(d.blocks, 1);
        d.list = calloc(d.blocks, sizeof(*d.list));
        close(fd);
        if (d.durable == MAP_FAILED || d.cache == MAP_FAILED || !d.dirty || !d.list) {
                fprintf(stderr, "crashdisk: out of memory for %s\n", argv[1]);
                return 1;
        }
        char *fargv[] = { argv[0], "-f", "-s", "-o", "fsname=crashdisk", argv[2], NULL };
        return fuse_main(6, fargv, &ops, NULL) == 0 ? 0 : 1;
}
