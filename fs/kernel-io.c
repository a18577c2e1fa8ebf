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

#include "fs-internal.h"

/* The INIT exchange: one request, read before any other. */
static _Atomic uint64_t init_unique = UINT64_MAX;
static atomic_bool init_offers_v2;

/* Per thread: the kernel asked to kill suid/sgid for the request this thread
 * read last. */
static _Thread_local bool req_kill;

bool fs_req_kill(void) { return req_kill; }

static void note_request(const void *buf, size_t n)
{
        const struct fuse_in_header *h = buf;
        const char *arg = (const char *)buf + sizeof *h;
        size_t argn = n - sizeof *h;

        req_kill = false;
        switch (h->opcode) {
        case FUSE_INIT:
                if (argn >= offsetof(struct fuse_init_in, flags) + sizeof(uint32_t)) {
                        struct fuse_init_in in;
                        memcpy(&in, arg, MIN(argn, sizeof in));
                        atomic_store(&init_offers_v2, (in.flags & FUSE_HANDLE_KILLPRIV_V2) != 0);
                        atomic_store(&init_unique, h->unique);
                }
                break;
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

/* io_read() and io_writev() answer as read() and writev() do (-1 and errno
 * on failure): libfuse looks at errno. */
static ssize_t io_read(int fd, void *buf, size_t len, void *userdata)
{
        ssize_t n = read(fd, buf, len);

        (void)userdata;
        if (n >= (ssize_t)sizeof(struct fuse_in_header))
                note_request(buf, (size_t)n);
        return n;
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
        struct fs *fs = userdata;
        struct fuse_init_out out;
        struct iovec v[2];

        /* The INIT reply: header and fuse_init_out (libfuse sends them as
         * two pieces). Ask for KILLPRIV_V2 in a copy. */
        if (count == 2 && iov[0].iov_len >= sizeof(struct fuse_out_header) &&
            iov[1].iov_len >= offsetof(struct fuse_init_out, flags) + sizeof(uint32_t) &&
            iov[1].iov_len <= sizeof out && atomic_load(&init_offers_v2)) {
                const struct fuse_out_header *h = iov[0].iov_base;
                if (h->unique == atomic_load(&init_unique) && h->error == 0) {
                        memcpy(&out, iov[1].iov_base, iov[1].iov_len);
                        out.flags |= FUSE_HANDLE_KILLPRIV_V2;
                        v[0] = iov[0];
                        v[1] = (struct iovec){ .iov_base = &out, .iov_len = iov[1].iov_len };
                        iov = v;
                        atomic_store(&fs->killpriv_v2, true);
                }
        }
        return writev(fd, iov, count);
}

int fs_session_io(struct fs *fs, struct fuse_session *se)
{
        static const struct fuse_custom_io io = { .writev = io_writev, .read = io_read };

        if (!fs || !se)
                return -EINVAL;
        return fuse_session_custom_io(se, &io, fuse_session_fd(se));
}
