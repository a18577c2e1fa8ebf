/* kernel-io.c — the session's reads and writes of /dev/fuse
 * (fuse_session_custom_io()): plain read() and writev(), plus what libfuse
 * 3.14 (Debian 12) does not do for us:
 *
 *   - In the reply to INIT it asks for FUSE_HANDLE_KILLPRIV_V2 when the kernel
 *     offers it. The kernel then sets SB_NOSEC, so a file's first write
 *     checks security.capability and later writes do not: without it every
 *     write() on a FUSE file costs a GETXATTR round trip, and every chown a
 *     GETATTR (tar -x of 5,000 files sent 87,558 requests; with it, 58,540).
 *   - In return the filesystem clears suid/sgid itself where the kernel says
 *     so. The kernel marks a WRITE (FUSE_WRITE_KILL_SUIDGID) or a truncating
 *     SETATTR (FATTR_KILL_SUIDGID) from a caller without CAP_FSETID; libfuse
 *     drops both flags, so the reader notes them for the handler, which runs
 *     on the same thread before that thread reads again (fs_req_kill()).
 *     chown clears the bits as before (fs.c); security.capability is still
 *     removed by the kernel (setattr_prepare()). O_TRUNC arrives as a
 *     SETATTR (no atomic_o_trunc), so it carries FATTR_KILL_SUIDGID too.
 *   - Where the kernel offers FUSE over io_uring, the store is local and
 *     every ring could be made (uring.c), it asks for that too, and hands
 *     uring.c the replies to the requests that came from a ring.
 *
 * docs/writable-layer.md has the request counts. */
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <linux/fuse.h>
#ifndef FUSE_OVER_IO_URING /* uapi 7.42 (Linux 6.14) */
#define FUSE_OVER_IO_URING (1ULL << 41)
#endif

#include "fs-internal.h"

/* Per thread: the kernel asked to kill suid/sgid for the request this thread
 * read last. */
static _Thread_local bool req_kill;

bool fs_req_kill(void) { return req_kill; }

void kio_note_request(const void *buf, size_t n)
{
        const struct fuse_in_header *h = buf;
        const char *arg = (const char *)buf + sizeof *h;
        size_t argn = n - sizeof *h;

        req_kill = false;
        switch (h->opcode) {
        case FUSE_WRITE:
                if (argn >= sizeof(struct fuse_write_in)) {
                        struct fuse_write_in in;
                        memcpy(&in, arg, sizeof in);
                        req_kill = (in.write_flags & FUSE_WRITE_KILL_SUIDGID) != 0;
                }
                break;
        case FUSE_SETATTR:
                if (argn >= sizeof(struct fuse_setattr_in)) {
                        struct fuse_setattr_in in;
                        memcpy(&in, arg, sizeof in);
                        req_kill = (in.valid & FATTR_KILL_SUIDGID) != 0;
                }
                break;
        default:
                break;
        }
}

/* note_init(): what the kernel offers in its INIT request (the first one
 * read, before any other, and only ever from /dev/fuse), for the reply. */
static void note_init(struct fs *fs, const void *buf, size_t n)
{
        const struct fuse_in_header *h = buf;
        size_t argn = n - sizeof *h;
        struct fuse_init_in in = {};

        if (h->opcode != FUSE_INIT || argn < offsetof(struct fuse_init_in, flags) + sizeof(uint32_t))
                return;
        memcpy(&in, (const char *)buf + sizeof *h, MIN(argn, sizeof in));
        atomic_store(&fs->init_offers_v2, (in.flags & FUSE_HANDLE_KILLPRIV_V2) != 0);
        atomic_store(&fs->init_offers_uring, argn >= offsetof(struct fuse_init_in, flags2) + sizeof in.flags2 &&
                                                     (in.flags & FUSE_INIT_EXT) &&
                                                     (in.flags2 & (uint32_t)(FUSE_OVER_IO_URING >> 32)));
        atomic_store(&fs->init_unique, h->unique);
}

/* io_read() and io_writev() answer as read() and writev() do (-1 and errno
 * on failure): libfuse looks at errno. */
static ssize_t io_read(int fd, void *buf, size_t len, void *userdata)
{
        ssize_t n = read(fd, buf, len);

        if (n >= (ssize_t)sizeof(struct fuse_in_header)) {
                note_init(userdata, buf, (size_t)n);
                kio_note_request(buf, (size_t)n);
        }
        return n;
}

/* The payload a ring entry must hold: the kernel's max(8 KiB, max_write,
 * max_pages pages). */
static size_t ring_payload(const struct fuse_init_out *out)
{
        size_t pages = (out->flags & FUSE_MAX_PAGES) ? out->max_pages : 32;

        return MAX(MAX((size_t)8192, (size_t)out->max_write), pages * 4096);
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
        struct fs *fs = userdata;
        struct fuse_init_out out;
        struct iovec v[2];
        bool uring = false;
        ssize_t n;

        if (uring_reply(iov, count, &n))
                return n;

        /* The INIT reply: header and fuse_init_out (libfuse sends them as
         * two pieces). Ask for KILLPRIV_V2 and io_uring in a copy. */
        if (count == 2 && iov[0].iov_len >= sizeof(struct fuse_out_header) &&
            iov[1].iov_len >= offsetof(struct fuse_init_out, flags) + sizeof(uint32_t) &&
            iov[1].iov_len <= sizeof out) {
                const struct fuse_out_header *h = iov[0].iov_base;
                if (h->unique == atomic_load(&fs->init_unique) && h->error == 0) {
                        memset(&out, 0, sizeof out);
                        memcpy(&out, iov[1].iov_base, iov[1].iov_len);
                        if (atomic_load(&fs->init_offers_v2)) {
                                out.flags |= FUSE_HANDLE_KILLPRIV_V2;
                                atomic_store(&fs->killpriv_v2, true);
                        }
                        uring = fs->uring && atomic_load(&fs->init_offers_uring) &&
                                iov[1].iov_len >= offsetof(struct fuse_init_out, flags2) + sizeof out.flags2;
                        if (uring) {
                                out.flags |= FUSE_INIT_EXT;
                                out.flags2 |= (uint32_t)(FUSE_OVER_IO_URING >> 32);
                        }
                        v[0] = iov[0];
                        v[1] = (struct iovec){ .iov_base = &out, .iov_len = iov[1].iov_len };
                        iov = v;
                        if (fs->uring && !uring)
                                uring_unused(fs->uring);
                }
        }
        n = writev(fd, iov, count);
        /* The kernel has taken the INIT reply when writev() returns: the
         * queues may register now. */
        if (uring && n >= 0) {
                atomic_store(&fs->uring_on, true);
                uring_start(fs->uring, ring_payload(&out));
        } else if (uring) {
                uring_unused(fs->uring);
        }
        return n;
}

int fs_session_io(struct fs *fs, struct fuse_session *se)
{
        static const struct fuse_custom_io io = { .writev = io_writev, .read = io_read };
        int r;

        if (!fs || !se)
                return -EINVAL;
        r = fuse_session_custom_io(se, &io, fuse_session_fd(se));
        if (r < 0)
                return r;
        /* Not for a registry's snapshot: a queue's thread handles one
         * request at a time, and a chunk fetch there is a network round
         * trip that would hold up the other requests from its CPU. */
        if (uring_enabled() && !fs->remote && uring_prepare(se, fuse_session_fd(se), &fs->uring) < 0)
                log_warning("FUSE over io_uring is enabled in the kernel but not usable here; "
                            "using /dev/fuse");
        return 0;
}

void fs_session_io_end(struct fs *fs)
{
        if (fs)
                fs->uring = uring_stop(fs->uring);
}

bool fs_session_uring(const struct fs *fs)
{
        return fs && atomic_load(&fs->uring_on);
}
