/* uring.c — FUSE over io_uring (Linux ≥ 6.14, module parameter
 * fuse.enable_uring=Y), spoken here because libfuse 3.14 (Debian 12) does
 * not know it.
 *
 * Why: over /dev/fuse a request wakes whichever idle libfuse worker the
 * scheduler picks, usually one on the other CPU, and the reply wakes the
 * caller back: two cross-CPU wakeups per request. On this kind of VM an
 * idle vCPU halts and each wakeup is an IPI into the hypervisor; a small
 * request's round trip was ~20 µs, most of it waking up. Over io_uring the
 * kernel puts a request on the queue of the CPU its caller runs on (one
 * queue per possible CPU). Each queue's thread here is pinned to that CPU,
 * handles the request inline, and commits the reply in the same
 * io_uring_enter() that waits for the next request: caller and handler
 * take turns on one CPU. docs/writable-layer.md has the measurements.
 *
 * The protocol (uapi <linux/fuse.h> 7.42): each queue registers
 * URING_DEPTH entries, each a header buffer (struct uring_req_header) and
 * a payload buffer. The kernel splits a request into the in-header, the
 * opcode's fixed first argument (op_in, ≤ 128 bytes) and the rest (the
 * payload). The payload buffer has room in front of it, so the three are
 * put back together as /dev/fuse would have delivered them without copying
 * the payload, and fuse_session_process_buf() hands them to libfuse. The
 * handler's reply comes back through kernel-io.c's writev, which gives it
 * to uring_reply() when it answers the request this thread is handling.
 * Every handler of fs.c replies before it returns, on its own thread; that
 * is what lets the queue thread commit when process_buf returns.
 *
 * /dev/fuse stays in use: the kernel still sends FORGET and INTERRUPT
 * there and takes notifications there, so libfuse's own loop keeps reading
 * it.
 *
 * Order of events:
 *   uring_prepare()  before the mount's INIT is read: one thread per queue
 *                    creates its ring. If any ring fails, there is no
 *                    io_uring and nothing else changes.
 *   INIT reply       kernel-io.c asks for FUSE_OVER_IO_URING only when every
 *                    ring exists, because from that reply on the kernel
 *                    holds new requests until every queue has registered.
 *   uring_start()    each thread registers its entries. A REGISTER the
 *                    kernel refuses makes it fall back to /dev/fuse.
 *   uring_stop()     after the unmount: each thread is woken through an
 *                    eventfd and joined; closing the rings cancels what the
 *                    kernel still holds. */
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <errno.h>
#include <inttypes.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <linux/fuse.h>

#include "fs-internal.h"

/* uapi 7.42 (Linux 6.14); Debian 12's headers are 7.37. */
#ifndef FUSE_OVER_IO_URING
#define FUSE_OVER_IO_URING (1ULL << 41)
#endif
struct uring_ent_in_out {
        uint64_t flags;
        uint64_t commit_id; /* the request's unique */
        uint32_t payload_sz;
        uint32_t padding;
        uint64_t reserved;
};
struct uring_req_header {
        char in_out[128]; /* fuse_in_header on fetch, fuse_out_header on commit */
        char op_in[128];  /* the opcode's first argument */
        struct uring_ent_in_out ent;
};
struct uring_cmd_req { /* in the SQE's 80-byte command area */
        uint64_t flags;
        uint64_t commit_id;
        uint16_t qid;
        uint8_t padding[6];
};
enum { URING_CMD_REGISTER = 1, URING_CMD_COMMIT_AND_FETCH = 2 };
_Static_assert(sizeof(struct uring_req_header) == 288, "uapi fuse_uring_req_header");
_Static_assert(sizeof(struct uring_cmd_req) == 24, "uapi fuse_uring_cmd_req");

/* Entries per queue. A queue's thread handles one request at a time; more
 * entries let the kernel hand over the next ones (readahead, writeback)
 * without waiting for a commit. Each has a max_write-sized payload buffer,
 * touched only as far as requests fill it. */
#define URING_DEPTH 4
#define URING_HEADROOM 4096 /* in front of the payload: in-header + op_in */
#define URING_STOP_TAG 1    /* user_data of the stop eventfd's poll */

struct uring_queue;

struct uring_ent {
        struct uring_req_header hdr;
        struct uring_queue *q;
        char *buf; /* URING_HEADROOM + payload bytes */
        struct iovec iov[2];
        uint64_t unique; /* the request being handled */
        bool replied;
};

struct uring_queue {
        struct uring *u;
        unsigned qid;
        pthread_t thread;
        bool thread_ok, ring_ok;
        int stop_fd;
        struct io_uring ring;
        struct uring_ent ents[URING_DEPTH];
};

struct uring {
        struct fuse_session *se;
        int fd;      /* /dev/fuse */
        unsigned nq; /* queues: one per possible CPU */
        size_t payload;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        unsigned n_set_up; /* threads past ring setup; lock */
        unsigned n_rings;  /* of them with a ring; lock */
        int phase;         /* 0 before INIT, 1 started, -1 not used; lock */
        struct uring_queue q[];
};

/* The entry whose request this thread is handling (queue threads only). */
static _Thread_local struct uring_ent *cur;

bool uring_enabled(void)
{
        char c = 'N';
        FILE *f = fopen("/sys/module/fuse/parameters/enable_uring", "re");

        if (!f)
                return false;
        if (fread(&c, 1, 1, f) != 1)
                c = 'N';
        fclose(f);
        return c == 'Y' || c == '1';
}

/* The kernel makes num_possible_cpus() queues and files a request under
 * the number of the CPU its caller runs on, so this only works when the
 * possible CPUs are 0..n-1 ("0" or "0-N"). 0 otherwise. */
static unsigned possible_cpus(void)
{
        char line[64] = "", *end;
        unsigned long hi;
        FILE *f = fopen("/sys/devices/system/cpu/possible", "re");

        if (!f)
                return 0;
        if (!fgets(line, sizeof line, f))
                line[0] = 0;
        fclose(f);
        line[strcspn(line, "\n")] = 0;
        if (strcmp(line, "0") == 0)
                return 1;
        if (strncmp(line, "0-", 2) != 0)
                return 0;
        errno = 0;
        hi = strtoul(line + 2, &end, 10);
        if (errno || end == line + 2 || *end || hi >= 4096)
                return 0;
        return (unsigned)hi + 1;
}

static struct io_uring_sqe *next_sqe(struct uring_queue *q)
{
        struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);

        if (!sqe) { /* the SQ holds every entry's command and the poll; cannot fill up */
                (void)io_uring_submit(&q->ring);
                sqe = io_uring_get_sqe(&q->ring);
        }
        return sqe;
}

static int ent_command(struct uring_ent *e, uint32_t op)
{
        struct io_uring_sqe *sqe = next_sqe(e->q);
        struct uring_cmd_req req = { .commit_id = e->unique, .qid = (uint16_t)e->q->qid };

        if (!sqe)
                return -EBUSY;
        memset(sqe, 0, 2 * sizeof *sqe); /* SQE128: the command area runs into the second half */
        sqe->opcode = IORING_OP_URING_CMD;
        sqe->fd = e->q->u->fd;
        sqe->cmd_op = op;
        sqe->addr = (uint64_t)(uintptr_t)e->iov;
        sqe->len = 2;
        memcpy(sqe->cmd, &req, sizeof req);
        io_uring_sqe_set_data(sqe, e);
        return 0;
}

/* ent_eio(): the entry's answer is EIO, with no payload. */
static void ent_eio(struct uring_ent *e)
{
        struct fuse_out_header oh = { .error = -EIO, .unique = e->unique, .len = sizeof oh };

        memcpy(e->hdr.in_out, &oh, sizeof oh);
        e->hdr.ent.payload_sz = 0;
}

/* Hand one request to libfuse and queue its commit. */
static void ent_handle(struct uring_ent *e)
{
        struct uring *u = e->q->u;
        struct fuse_in_header ih;
        size_t psz = e->hdr.ent.payload_sz, argn;
        char *p;

        memcpy(&ih, e->hdr.in_out, sizeof ih);
        e->unique = e->hdr.ent.commit_id;
        e->replied = false;
        if (psz > u->payload || ih.len < sizeof ih + psz ||
            (argn = ih.len - sizeof ih - psz) > sizeof e->hdr.op_in) {
                log_error("io_uring request %" PRIu64 " (opcode %u): length %u does not fit its payload of %zu",
                          e->unique, ih.opcode, ih.len, psz);
                ent_eio(e);
        } else {
                struct fuse_buf fb = { .size = ih.len };

                p = e->buf + URING_HEADROOM - sizeof ih - argn;
                memcpy(p, &ih, sizeof ih);
                memcpy(p + sizeof ih, e->hdr.op_in, argn);
                fb.mem = p;
                kio_note_request(p, ih.len);
                cur = e;
                fuse_session_process_buf(u->se, &fb);
                cur = NULL;
                if (!e->replied) { /* never for fs.c's handlers; don't leave the caller hanging */
                        log_error("io_uring request %" PRIu64 " (opcode %u) got no reply; answering EIO",
                                  e->unique, ih.opcode);
                        ent_eio(e);
                }
        }
        if (ent_command(e, URING_CMD_COMMIT_AND_FETCH) < 0)
                log_error("io_uring queue %u: no room to commit request %" PRIu64, e->q->qid, e->unique);
}

bool uring_reply(const struct iovec *iov, int count, ssize_t *ret)
{
        struct uring_ent *e = cur;
        struct fuse_out_header oh;
        size_t n = 0;
        int i;

        if (!e || e->replied || count < 1 || iov[0].iov_len < sizeof oh)
                return false;
        memcpy(&oh, iov[0].iov_base, sizeof oh);
        if (oh.unique != e->unique)
                return false; /* not this thread's request (an interrupt's answer) */
        for (i = 1; i < count; i++)
                n += iov[i].iov_len;
        *ret = (ssize_t)(iov[0].iov_len + n); /* what writev() would have written */
        if (n > e->q->u->payload) {
                log_error("io_uring reply to %" PRIu64 ": %zu bytes do not fit the %zu-byte payload; answering EIO",
                          e->unique, n, e->q->u->payload);
                oh.error = -EIO;
                n = 0;
        } else {
                char *d = e->buf + URING_HEADROOM;
                for (i = 1; i < count; i++) {
                        if (iov[i].iov_len)
                                memcpy(d, iov[i].iov_base, iov[i].iov_len);
                        d += iov[i].iov_len;
                }
        }
        memcpy(e->hdr.in_out, &oh, sizeof oh);
        e->hdr.ent.payload_sz = (uint32_t)n;
        e->replied = true;
        return true;
}

static int queue_register(struct uring_queue *q)
{
        struct uring *u = q->u;
        struct io_uring_sqe *sqe;
        unsigned i;
        int r;

        for (i = 0; i < URING_DEPTH; i++) {
                struct uring_ent *e = &q->ents[i];
                void *m = NULL;

                /* Page-aligned and, at this size, its own mapping: pages
                 * are touched only as far as requests fill them. */
                r = posix_memalign(&m, 4096, URING_HEADROOM + u->payload);
                if (r)
                        return -r;
                e->q = q;
                e->buf = m;
                e->iov[0] = (struct iovec){ .iov_base = &e->hdr, .iov_len = sizeof e->hdr };
                e->iov[1] = (struct iovec){ .iov_base = e->buf + URING_HEADROOM, .iov_len = u->payload };
                r = ent_command(e, URING_CMD_REGISTER);
                if (r < 0)
                        return r;
        }
        sqe = next_sqe(q);
        if (!sqe)
                return -EBUSY;
        io_uring_prep_poll_add(sqe, q->stop_fd, POLLIN);
        io_uring_sqe_set_data64(sqe, URING_STOP_TAG);
        r = io_uring_submit(&q->ring);
        return r < 0 ? r : 0;
}

/* Serve requests until the stop eventfd fires. A failed command retires its
 * entry: -ENOTCONN/-ECANCELED when the connection ends, anything else
 * when the kernel refused the REGISTER (and fell back to /dev/fuse). */
static void queue_serve(struct uring_queue *q)
{
        bool stop = false, warned = false, failing = false;

        while (!stop) {
                struct io_uring_cqe *cqe;
                unsigned head, n = 0;
                int r = io_uring_submit_and_wait(&q->ring, 1);

                /* Never leave the queue: the kernel would hold its CPU's
                 * requests for good. Transient failures are retried. */
                if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
                        if (!failing)
                                log_error("io_uring queue %u: %s", q->qid, strerror(-r));
                        failing = true;
                        (void)usleep(1000);
                }
                io_uring_for_each_cqe(&q->ring, head, cqe) {
                        n++;
                        if (cqe->user_data == URING_STOP_TAG) {
                                stop = true;
                        } else if (cqe->res < 0) {
                                if (cqe->res != -ENOTCONN && cqe->res != -ECANCELED && !warned) {
                                        log_warning("io_uring queue %u: the kernel refused an entry (%s); "
                                                    "requests go through /dev/fuse",
                                                    q->qid, strerror(-cqe->res));
                                        warned = true;
                                }
                        } else {
                                ent_handle(io_uring_cqe_get_data(cqe));
                        }
                }
                io_uring_cq_advance(&q->ring, n);
        }
}

static void *queue_run(void *arg)
{
        struct uring_queue *q = arg;
        struct uring *u = q->u;
        struct io_uring_params p = {
                .flags = IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        };
        cpu_set_t set;
        int r, phase;

        /* Best effort: a CPU outside this process's cpuset leaves the
         * thread free to float (it still serves its queue). */
        CPU_ZERO(&set);
        CPU_SET(q->qid, &set);
        (void)sched_setaffinity(0, sizeof set, &set);

        r = io_uring_queue_init_params(2 * URING_DEPTH + 2, &q->ring, &p);
        if (r < 0)
                log_warning("io_uring for FUSE queue %u: %s; requests go through /dev/fuse", q->qid,
                            strerror(-r));
        q->ring_ok = r == 0;

        pthread_mutex_lock(&u->lock);
        u->n_set_up++;
        u->n_rings += q->ring_ok;
        pthread_cond_broadcast(&u->cond);
        while (u->phase == 0)
                pthread_cond_wait(&u->cond, &u->lock);
        phase = u->phase;
        pthread_mutex_unlock(&u->lock);

        if (phase > 0 && q->ring_ok) {
                r = queue_register(q);
                if (r < 0)
                        log_error("io_uring queue %u: registering: %s", q->qid, strerror(-r));
                else
                        queue_serve(q);
        }
        if (q->ring_ok)
                io_uring_queue_exit(&q->ring);
        return NULL;
}

static void set_phase(struct uring *u, int phase)
{
        pthread_mutex_lock(&u->lock);
        if (u->phase == 0)
                u->phase = phase;
        pthread_cond_broadcast(&u->cond);
        pthread_mutex_unlock(&u->lock);
}

struct uring *uring_stop(struct uring *u)
{
        unsigned i;

        if (!u)
                return NULL;
        set_phase(u, -1);
        for (i = 0; i < u->nq; i++) {
                struct uring_queue *q = &u->q[i];
                if (q->stop_fd >= 0)
                        (void)eventfd_write(q->stop_fd, 1);
                if (q->thread_ok)
                        pthread_join(q->thread, NULL);
                for (unsigned j = 0; j < URING_DEPTH; j++)
                        free(q->ents[j].buf);
                if (q->stop_fd >= 0)
                        close(q->stop_fd);
        }
        pthread_cond_destroy(&u->cond);
        pthread_mutex_destroy(&u->lock);
        free(u);
        return NULL;
}

int uring_prepare(struct fuse_session *se, int fd, struct uring **ret)
{
        unsigned nq = possible_cpus(), i;
        struct uring *u;
        bool ok;

        if (!nq)
                return -EOPNOTSUPP;
        u = calloc(1, sizeof *u + nq * sizeof u->q[0]);
        if (!u)
                return -ENOMEM;
        u->se = se;
        u->fd = fd;
        u->nq = nq;
        pthread_mutex_init(&u->lock, NULL);
        pthread_cond_init(&u->cond, NULL);
        for (i = 0; i < nq; i++) {
                struct uring_queue *q = &u->q[i];
                q->u = u;
                q->qid = i;
                q->stop_fd = eventfd(0, EFD_CLOEXEC);
                if (q->stop_fd < 0)
                        break;
                q->thread_ok = pthread_create(&q->thread, NULL, queue_run, q) == 0;
                if (!q->thread_ok)
                        break;
        }
        pthread_mutex_lock(&u->lock);
        while (u->n_set_up < i)
                pthread_cond_wait(&u->cond, &u->lock);
        ok = i == nq && u->n_rings == nq;
        pthread_mutex_unlock(&u->lock);
        if (!ok) {
                uring_stop(u);
                return -EOPNOTSUPP;
        }
        *ret = u;
        return 0;
}

void uring_start(struct uring *u, size_t payload)
{
        long page = sysconf(_SC_PAGESIZE);

        if (page <= 0)
                page = 4096;
        u->payload = (payload + (size_t)page - 1) / (size_t)page * (size_t)page;
        log_info("FUSE requests come over io_uring: %u queues of %d entries, %zu-byte payloads", u->nq,
                 URING_DEPTH, u->payload);
        set_phase(u, 1);
}

void uring_unused(struct uring *u)
{
        set_phase(u, -1);
}
