/* stasisd.c — one daemon per mount: loads a snapshot (manifest and tree
 * only, no pack bytes), mounts the stasis filesystem (fs/) with the node
 * chunk cache in front of the mount's own store, serves the control API on a
 * unix socket, and registers itself in the node's mount registry.
 *
 *   stasisd [--store S] [--cache DIR] [--cache-size N] [--state DIR]
 *           [--label K=V]... [--foreground] [-o OPTS] [-v] REF|--empty MOUNTPOINT
 *
 * --empty mounts an empty snapshot (a root directory alone, nothing read
 * from any store), so a sandbox can start from nothing.
 * $STASIS_JOURNAL_MAX (a size, default 64M) sets when the writable layer's
 * journal is rewritten as an image of its state.
 *
 * Readiness: unless --foreground, stasisd forks before it starts any thread
 * (and before it loads the snapshot, while the process is small); the parent
 * exits 0 only once the child has mounted, bound its API socket and written
 * its registry entry (so `stasis mount` returning means reads work, and a
 * client can connect), and 1 if the child failed (the child's error went to
 * stderr). The API itself starts right after, on a thread that first loads
 * libmicrohttpd (daemon/mhd.h); connections made before wait in the socket's
 * queue.
 *
 * Node paths (RUN = $STASIS_RUN_DIR, else /run/stasis):
 *   RUN/mounts/<key>.json  registry entry, key = the XXH3-128 of the
 *                          mountpoint's real path in hex; written by
 *                          rename, removed at unmount. Fields: mountpoint,
 *                          pid, socket, state_dir, log, snapshot, store,
 *                          cache, labels, started. Clients find a mount by
 *                          its "mountpoint" field.
 *   RUN/state/<key>/       default state dir: stasisd.pid, stasisd.log,
 *                          api.sock (mode 0600), stasisd.lock (one daemon
 *                          per state dir: state_lock()), and the writable layer
 *                          (HEAD, layers/; docs/writable-layer.md). A
 *                          remount with the same state dir (and the same
 *                          base) presents the same tree and bytes.
 *
 * Control API (libmicrohttpd, HTTP/1.1 over the unix socket; the peer must
 * be root or the uid stasisd runs as, checked with SO_PEERCRED):
 *   GET /api/v1/status   JSON: the fs counters (dirty_chunks and dirty_bytes
 *                        of the writable layer among them), snapshot, store,
 *                        mountpoint, pid, uptime
 *   GET /metrics         the same counters as Prometheus text
 *   POST /api/v1/freeze, /api/v1/unfreeze   freeze or thaw the sandbox the
 *                        way the label io.stasis.freeze says (freezer.h);
 *                        idempotent; 409 NoFreezer without the label. A
 *                        sandbox left frozen is thawed when stasisd exits.
 *   POST /api/v1/checkpoint  a new snapshot of the mount (fs_checkpoint())
 *   POST /api/v1/pause, /api/v1/unpause   a checkpoint after which the
 *                        sandbox stays frozen and the mount read-only (EROFS)
 *                        until unpause or unmount
 * Errors are {"error": sentence, "reason": CamelCase} (docs/control-api.md).
 * The mount is noatime by nature (the kernel never updates atime on FUSE
 * inodes). */
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <xxhash.h>

#include "daemon/freezer.h"
#include "daemon/mhd.h"
#include "fs/fs.h"
#include "store/cache.h"
#include "store/oci.h"
#include "store/store.h"

#define STORE_DEFAULT "/var/lib/stasis/store"
#define CACHE_DEFAULT "/var/cache/stasis"
#define RUN_DEFAULT "/run/stasis"

/* What the last successful checkpoint (or push) to one target left: its
 * tree and snapshot. The target is "" for the mount's own store, else the
 * registry reference pushed to (oci://HOST/REPO[:TAG]). A checkpoint whose
 * tree equals the remembered one for its target is that snapshot again
 * (fs_checkpoint_opts.prev_tree). In memory only: a restarted stasisd
 * forgets, and its next checkpoint publishes a new (equally correct)
 * snapshot. The least recently used of PREV_MAX targets is forgotten. */
#define PREV_MAX 16
#define TARGET_MAX (6 + OCI_HOST_MAX + 1 + OCI_REPO_MAX + 1 + OCI_TAG_MAX + 1)
struct prev {
        char target[TARGET_MAX];
        struct digest tree, digest;
        uint64_t used; /* 0: free slot */
};

struct opts {
        const char *store, *cache, *state, *ref, *mountpoint;
        uint64_t cache_size;
        json_t *labels;
        char *fuse_opts; /* user's -o, joined with commas */
        bool foreground, empty, no_prefetch;
};

/* Everything the control API reads; immutable while it runs, except the fs
 * counters, which are atomics, and the fields marked "api": those are used
 * only by the API's one thread (MHD_USE_INTERNAL_POLLING_THREAD serves one
 * request at a time), and by main() only after MHD_stop_daemon(). */
struct daemon {
        struct fs *fs;
        struct cache *cache;
        struct snapshot *snap;
        char snapshot[DIGEST_STR_LEN + 1];
        char mountpoint[PATH_MAX];
        char store[PATH_MAX];
        char cache_dir[PATH_MAX];
        char state[PATH_MAX];
        char socket[PATH_MAX + 16];
        char registry[PATH_MAX + 64];
        uid_t owner;
        uint64_t started_ns;
        time_t started;
        json_t *labels;
        struct freezer *freezer; /* NULL: no io.stasis.freeze label; immutable pointer */
        bool user_frozen;        /* frozen through POST /freeze; api */
        bool empty;              /* --empty: the base is in memory, in no store; immutable */
        uint64_t thawed_ns;      /* when thaw_cb() last thawed the sandbox; api */
        atomic_bool paused;      /* POST /pause succeeded, no /unpause yet; api writes */
        struct backend *store_be; /* where checkpoints publish; NULL: cannot checkpoint */
        const char *no_checkpoint; /* why not, if store_be is NULL */
        /* An --empty mount's store (d.store, local), where its checkpoints
         * go: opened at mount if it exists, else made by the first
         * checkpoint (store_ready()); owned. */
        struct backend *empty_store;
        /* A mount made from oci://HOST/REPO: checkpoints publish into a node
         * store in the state dir (node_local, seen through node, which reads
         * the registry's blobs too), then push to home, with home_ro (the
         * registry options stasisd was started with), unless the request
         * names another target. home is "" for other mounts. Immutable. */
        struct backend *node_local, *node;
        char home[TARGET_MAX];
        struct registry_opts home_ro;
        /* The last checkpoint; api, read by status with relaxed atomics. */
        atomic_uint_fast64_t checkpoints, ck_duration_ns, ck_stall_ns;
        /* This state dir's last checkpoint (STATE/last-checkpoint), the
         * parent of the next one until this stasisd made its own: it
         * survives umount and kill -9, and the registry entry names it so
         * that gc spares it. last_ck is "" if none; api. */
        struct snapshot *last_parent;
        char last_ck[DIGEST_STR_LEN + 1];
        const char *log_path; /* immutable once set */
        /* The last success per target, so that a repeat with no change
         * gives the same digest and uploads nothing; api. */
        struct prev prev[PREV_MAX];
        uint64_t prev_clock; /* api */
};

static void json_decrefp_(json_t **j) { json_decref(*j); }
static void backend_freep_(struct backend **b) { backend_free(*b); }

/* STATE/sandbox-frozen: written while a freeze of ours holds (freezer.h),
 * so that a daemon killed -9 does not leave the sandbox frozen for ever:
 * the next stasisd on the state dir, or `stasis umount` of the dead mount
 * (through `stasisd FROZEN_THAW_ARG STATE`), thaws it. */
#define FROZEN_MARKER "sandbox-frozen"
#define FROZEN_THAW_ARG "--thaw-left-frozen"

/* The label that says how to freeze the sandbox (freezer.h). */
#define LABEL_FREEZE "io.stasis.freeze"
/* The largest request body the API takes. */
#define API_BODY_MAX (1u << 20)

static void usage(FILE *f)
{
        fprintf(f, "usage: stasisd [--store S] [--cache DIR] [--cache-size N] [--state DIR]\n"
                   "               [--label K=V]... [--foreground] [--no-prefetch] [-o OPTS] [-v]\n"
                   "               REF|--empty MOUNTPOINT\n");
}

static int mkdir_p(const char *path, mode_t mode)
{
        char buf[PATH_MAX];

        if ((size_t)snprintf(buf, sizeof buf, "%s", path) >= sizeof buf)
                return -ENAMETOOLONG;
        for (char *p = buf + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = 0;
                if (mkdir(buf, 0755) < 0 && errno != EEXIST)
                        return -errno;
                *p = '/';
        }
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

static const char *env_or(const char *name, const char *dflt)
{
        const char *e = getenv(name);
        return e && *e ? e : dflt;
}

static const char *run_dir(void) { return env_or("STASIS_RUN_DIR", RUN_DEFAULT); }

/* ---- control API ---- */

static json_t *status_json(struct daemon *d)
{
        struct fs_counters c = {};
        struct cache_stats cs = {};
        json_t *j;

        fs_get_counters(d->fs, &c);
        cache_get_stats(d->cache, &cs);
        j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:O,"
                         " s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I,"
                         " s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b}",
                         "mountpoint", d->mountpoint, "snapshot", d->snapshot, "store", d->store,
                         "cache", d->cache_dir, "state_dir", d->state,
                         "pid", (json_int_t)getpid(),
                         "uptime_s", (json_int_t)((now_ns() - d->started_ns) / NSEC_PER_SEC),
                         "chunk_size", (json_int_t)d->snap->config.chunk_size,
                         "labels", d->labels,
                         "chunks_fetched", (json_int_t)c.chunks_fetched,
                         "bytes_fetched", (json_int_t)c.bytes_fetched,
                         "cache_hits", (json_int_t)c.cache_hits,
                         "cache_misses", (json_int_t)c.cache_misses,
                         "bytes_served", (json_int_t)c.bytes_served,
                         "errors", (json_int_t)c.errors,
                         "readahead_chunks", (json_int_t)c.readahead_chunks,
                         "reads", (json_int_t)c.reads,
                         "inodes", (json_int_t)c.inodes,
                         "cache_puts", (json_int_t)cs.puts,
                         "cache_bad_entries", (json_int_t)cs.bad_entries,
                         "cache_evictions", (json_int_t)cs.evictions,
                         "dirty_chunks", (json_int_t)c.dirty_chunks,
                         "dirty_bytes", (json_int_t)c.dirty_bytes,
                         "copied_up", (json_int_t)c.copied_up,
                         "bytes_written", (json_int_t)c.bytes_written,
                         "journal_bytes", (json_int_t)c.journal_bytes,
                         "checkpoints", (json_int_t)atomic_load(&d->checkpoints),
                         "last_checkpoint_duration_ns", (json_int_t)atomic_load(&d->ck_duration_ns),
                         "last_checkpoint_stall_ns", (json_int_t)atomic_load(&d->ck_stall_ns),
                         "paused", atomic_load(&d->paused));
        if (j && (json_object_set_new(j, "pack_reads", json_integer((json_int_t)c.pack_reads)) < 0 ||
                  json_object_set_new(j, "prefetch_chunks", json_integer((json_int_t)c.prefetch_chunks)) < 0 ||
                  json_object_set_new(j, "prefetch_hits", json_integer((json_int_t)c.prefetch_hits)) < 0 ||
                  json_object_set_new(j, "fuse_transport",
                                      json_string(fs_session_uring(d->fs) ? "io_uring" : "/dev/fuse")) < 0))
                j = (json_decref(j), NULL);
        return j;
}

static char *metrics_text(struct daemon *d)
{
        struct fs_counters c = {};
        char *s = NULL;

        fs_get_counters(d->fs, &c);
        if (asprintf(&s,
                     "# HELP stasis_chunks_fetched_total Chunks read from the store.\n"
                     "# TYPE stasis_chunks_fetched_total counter\n"
                     "stasis_chunks_fetched_total %" PRIu64 "\n"
                     "# HELP stasis_bytes_fetched_total Pack bytes read from the store.\n"
                     "# TYPE stasis_bytes_fetched_total counter\n"
                     "stasis_bytes_fetched_total %" PRIu64 "\n"
                     "# HELP stasis_pack_reads_total Reads of packs (Range GETs from a registry).\n"
                     "# TYPE stasis_pack_reads_total counter\n"
                     "stasis_pack_reads_total %" PRIu64 "\n"
                     "# HELP stasis_cache_hits_total Chunks served from the node cache.\n"
                     "# TYPE stasis_cache_hits_total counter\n"
                     "stasis_cache_hits_total %" PRIu64 "\n"
                     "# HELP stasis_cache_misses_total Chunks a read had to fetch.\n"
                     "# TYPE stasis_cache_misses_total counter\n"
                     "stasis_cache_misses_total %" PRIu64 "\n"
                     "# HELP stasis_bytes_served_total Bytes returned to READs.\n"
                     "# TYPE stasis_bytes_served_total counter\n"
                     "stasis_bytes_served_total %" PRIu64 "\n"
                     "# HELP stasis_read_errors_total READs answered with EIO.\n"
                     "# TYPE stasis_read_errors_total counter\n"
                     "stasis_read_errors_total %" PRIu64 "\n"
                     "# HELP stasis_readahead_chunks_total Chunks fetched by readahead.\n"
                     "# TYPE stasis_readahead_chunks_total counter\n"
                     "stasis_readahead_chunks_total %" PRIu64 "\n"
                     "# HELP stasis_dirty_chunks Chunks present (dirty) in the writable layer.\n"
                     "# TYPE stasis_dirty_chunks gauge\n"
                     "stasis_dirty_chunks %" PRIu64 "\n"
                     "# HELP stasis_dirty_bytes Bytes of those chunks.\n"
                     "# TYPE stasis_dirty_bytes gauge\n"
                     "stasis_dirty_bytes %" PRIu64 "\n"
                     "# HELP stasis_copied_up_total Chunks copied up from the base for partial writes.\n"
                     "# TYPE stasis_copied_up_total counter\n"
                     "stasis_copied_up_total %" PRIu64 "\n"
                     "# HELP stasis_bytes_written_total Bytes of WRITEs.\n"
                     "# TYPE stasis_bytes_written_total counter\n"
                     "stasis_bytes_written_total %" PRIu64 "\n"
                     "# HELP stasis_inodes Inodes the kernel holds.\n"
                     "# TYPE stasis_inodes gauge\n"
                     "stasis_inodes %" PRIu64 "\n"
                     "# HELP stasis_checkpoints_total Checkpoints published.\n"
                     "# TYPE stasis_checkpoints_total counter\n"
                     "stasis_checkpoints_total %" PRIu64 "\n"
                     "# HELP stasis_last_checkpoint_duration_seconds Duration of the last checkpoint.\n"
                     "# TYPE stasis_last_checkpoint_duration_seconds gauge\n"
                     "stasis_last_checkpoint_duration_seconds %.9f\n"
                     "# HELP stasis_last_checkpoint_stall_seconds How long the last checkpoint stalled the sandbox.\n"
                     "# TYPE stasis_last_checkpoint_stall_seconds gauge\n"
                     "stasis_last_checkpoint_stall_seconds %.9f\n"
                     "# HELP stasis_uptime_seconds Seconds since the mount.\n"
                     "# TYPE stasis_uptime_seconds gauge\n"
                     "stasis_uptime_seconds %" PRIu64 "\n"
                     "# HELP stasis_prefetch_chunks_total Chunks the access-trace prefetcher fetched into the cache.\n"
                     "# TYPE stasis_prefetch_chunks_total counter\n"
                     "stasis_prefetch_chunks_total %" PRIu64 "\n"
                     "# HELP stasis_prefetch_hits_total Prefetched chunks a READ then got from the cache.\n"
                     "# TYPE stasis_prefetch_hits_total counter\n"
                     "stasis_prefetch_hits_total %" PRIu64 "\n",
                     c.chunks_fetched, c.bytes_fetched, c.pack_reads, c.cache_hits, c.cache_misses,
                     c.bytes_served, c.errors, c.readahead_chunks, c.dirty_chunks, c.dirty_bytes,
                     c.copied_up, c.bytes_written, c.inodes, (uint64_t)atomic_load(&d->checkpoints),
                     (double)atomic_load(&d->ck_duration_ns) / 1e9, (double)atomic_load(&d->ck_stall_ns) / 1e9,
                     (uint64_t)((now_ns() - d->started_ns) / NSEC_PER_SEC), c.prefetch_chunks,
                     c.prefetch_hits) < 0)
                return NULL;
        return s;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type,
                             char *body /* taken */)
{
        struct MHD_Response *resp;
        enum MHD_Result ret;

        if (!body)
                return MHD_NO;
        resp = mhd.create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
        if (!resp) {
                free(body);
                return MHD_NO;
        }
        mhd.add_response_header(resp, "Content-Type", type);
        ret = mhd.queue_response(conn, status, resp);
        mhd.destroy_response(resp);
        return ret;
}

/* reply_error(): docs/control-api.md's {error, reason}. */
static enum MHD_Result reply_error(struct MHD_Connection *conn, unsigned status, const char *reason,
                                   const char *msg)
{
        json_t *j = json_pack("{s:s, s:s}", "error", msg, "reason", reason);
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;

        json_decref(j);
        return reply(conn, status, "application/json", s);
}

static bool peer_allowed(const struct daemon *d, struct MHD_Connection *conn)
{
        const union MHD_ConnectionInfo *ci =
                mhd.get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct ucred cred;
        socklen_t len = sizeof cred;

        if (!ci || getsockopt(ci->connect_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
                return false;
        return cred.uid == 0 || cred.uid == d->owner;
}

static enum MHD_Result reply_json(struct MHD_Connection *conn, unsigned status, json_t *j /* taken */)
{
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;

        json_decref(j);
        return reply(conn, status, "application/json", s);
}

static enum MHD_Result reply_errno(struct MHD_Connection *conn, const char *reason, const char *what,
                                   int err)
{
        char msg[256];

        snprintf(msg, sizeof msg, "%s: %s", what, strerror(-err));
        return reply_error(conn, err == -ETIMEDOUT ? MHD_HTTP_GATEWAY_TIMEOUT : MHD_HTTP_INTERNAL_SERVER_ERROR,
                           err == -ETIMEDOUT ? "Timeout" : reason, msg);
}

/* POST /api/v1/freeze: idempotent; 409 NoFreezer without a freeze label. */
static enum MHD_Result api_freeze(struct daemon *d, struct MHD_Connection *conn)
{
        int r;

        if (!d->freezer)
                return reply_error(conn, MHD_HTTP_CONFLICT, "NoFreezer",
                                   "the mount has no " LABEL_FREEZE " label");
        r = freezer_freeze(d->freezer);
        if (r < 0) {
                log_error_errno(r, "freeze (%s): %m", freezer_method(d->freezer));
                return reply_errno(conn, "FreezeFailed", "freeze failed", r);
        }
        d->user_frozen = true;
        return reply_json(conn, MHD_HTTP_OK,
                          json_pack("{s:b, s:s}", "frozen", 1, "method", freezer_method(d->freezer)));
}

/* POST /api/v1/unfreeze: idempotent. */
static enum MHD_Result api_unfreeze(struct daemon *d, struct MHD_Connection *conn)
{
        int r;

        if (!d->freezer)
                return reply_error(conn, MHD_HTTP_CONFLICT, "NoFreezer",
                                   "the mount has no " LABEL_FREEZE " label");
        r = freezer_thaw(d->freezer);
        if (r < 0) {
                log_error_errno(r, "unfreeze (%s): %m", freezer_method(d->freezer));
                return reply_errno(conn, "FreezeFailed", "unfreeze failed", r);
        }
        d->user_frozen = false;
        return reply_json(conn, MHD_HTTP_OK, json_pack("{s:b}", "frozen", 0));
}

static void thaw_cb(void *ctx)
{
        struct daemon *d = ctx;
        bool was = freezer_frozen(d->freezer);
        int r = freezer_thaw(d->freezer);

        if (r < 0)
                log_error_errno(r, "checkpoint: unfreeze (%s): %m", freezer_method(d->freezer));
        else if (was)
                d->thawed_ns = now_ns();
}

/* What a checkpoint's before_barrier/after_barrier callbacks share. */
struct ck_hold {
        struct daemon *d;
        bool pause;      /* a pause: the sandbox stays frozen */
        bool froze;      /* we froze the sandbox for this checkpoint or pause */
        int freeze_err;  /* the freeze failed: FreezeFailed */
        uint64_t f0, freeze_ns, flush_ns;
        struct fs_flush *flush; /* the flush helper, started ahead; NULL: none */
};

/* ck_before_barrier(): freeze the sandbox (unless the caller froze it
 * through /freeze, or a pause did), then flush the kernel's dirty pages, no
 * lock held (the WRITEs it causes are served by the FUSE workers meanwhile),
 * by the helper started ahead. Called by fs_checkpoint() once the packer's
 * index of reusable chunks is built: the sandbox never waits on that. */
static int ck_before_barrier(void *ctx)
{
        struct ck_hold *h = ctx;
        struct daemon *d = h->d;
        uint64_t t;
        int r;

        if (d->freezer && !d->user_frozen && !atomic_load(&d->paused)) {
                h->f0 = now_ns();
                r = freezer_freeze(d->freezer);
                if (r < 0) {
                        h->freeze_err = r;
                        return log_error_errno(r, "checkpoint: freeze (%s): %m", freezer_method(d->freezer));
                }
                h->froze = true;
                h->freeze_ns = now_ns() - h->f0;
        }
        t = now_ns();
        if (h->flush) /* no lock of ours held */
                r = fs_flush_finish(d->fs, TAKE_PTR(h->flush));
        else
                r = fs_flush_kernel(d->fs, d->mountpoint);
        h->flush_ns = now_ns() - t;
        if (r < 0)
                return log_error_errno(r, "checkpoint: flush %s: %m", d->mountpoint);
        return 0;
}

/* ck_after_barrier(): thaw what ck_before_barrier() froze, unless a pause
 * keeps it frozen. */
static void ck_after_barrier(void *ctx)
{
        struct ck_hold *h = ctx;

        if (h->froze && !h->pause)
                thaw_cb(h->d);
}

static int registry_write(const struct daemon *d);

/* The state dir's last checkpoint: STATE/last-checkpoint, "sha256:<hex>\n". */
static void last_ck_path(const struct daemon *d, char path[static PATH_MAX + 32])
{
        snprintf(path, PATH_MAX + 32, "%s/last-checkpoint", d->state);
}

/* last_ck_load(): the state dir's last checkpoint, as the parent of the
 * next one, if its snapshot is in the mount's store (else a warning). */
static void last_ck_load(struct daemon *d)
{
        char path[PATH_MAX + 32], buf[DIGEST_STR_LEN + 2] = "";
        _cleanup_(closep) int fd = -1;
        struct digest dg;
        ssize_t n;
        int r;

        last_ck_path(d, path);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || !d->store_be)
                return; /* none yet */
        n = pread_full(fd, buf, sizeof buf - 1, 0);
        if (n > 0 && buf[n - 1] == '\n')
                buf[n - 1] = 0;
        r = n < 0 ? (int)n : digest_parse(buf, &dg);
        if (r >= 0)
                r = snapshot_open(d->store_be, &dg, &d->last_parent);
        if (r >= 0)
                r = snapshot_load_tree(d->store_be, d->last_parent);
        if (r < 0) {
                log_warning_errno(r, "%s: the last checkpoint is not usable (the next one's parent is the base): %m",
                                  path);
                d->last_parent = snapshot_free(d->last_parent);
                return;
        }
        digest_str(&dg, d->last_ck);
}

/* last_ck_save(): d was just published by a checkpoint of this mount. */
static void last_ck_save(struct daemon *d, const struct digest *dg)
{
        char path[PATH_MAX + 32], line[DIGEST_STR_LEN + 2];
        int r;

        last_ck_path(d, path);
        digest_str(dg, d->last_ck);
        snprintf(line, sizeof line, "%s\n", d->last_ck);
        /* Each on its own: the registry entry is what makes gc keep the
         * snapshot while we live, and the state dir may be the full disk. */
        r = write_replace_at(AT_FDCWD, path, line, strlen(line), 0644, true);
        if (r < 0)
                log_warning_errno(r, "record the last checkpoint %s in %s (a remount will parent its next "
                                  "checkpoint on the one before): %m", d->last_ck, path);
        r = registry_write(d);
        if (r < 0)
                log_warning_errno(r, "record the last checkpoint %s in the registry entry %s: %m", d->last_ck,
                                  d->registry);
}

/* ---- what the last checkpoint to each target was ---- */

static struct prev *prev_find(struct daemon *d, const char *target)
{
        for (size_t i = 0; i < PREV_MAX; i++)
                if (d->prev[i].used && strcmp(d->prev[i].target, target) == 0)
                        return &d->prev[i];
        return NULL;
}

static void prev_set(struct daemon *d, const char *target, const struct digest *tree, const struct digest *dg)
{
        struct prev *p = prev_find(d, target);

        if (!p) { /* a free slot, else the least recently used */
                p = &d->prev[0];
                for (size_t i = 1; i < PREV_MAX && p->used; i++)
                        if (d->prev[i].used < p->used)
                                p = &d->prev[i];
                snprintf(p->target, sizeof p->target, "%s", target);
        }
        p->tree = *tree;
        p->digest = *dg;
        p->used = ++d->prev_clock;
}

/* ---- pushing to a registry ---- */

/* A push target from a request: "push": "oci://HOST[:PORT]/REPO[:TAG]" and
 * "registry": {"auth", "insecure", "ca_cert"} (docs/control-api.md). */
struct push_req {
        struct oci_ref ref;
        const char *tag;            /* the remote tag: the target's, else the request's; NULL: by digest */
        char target[TARGET_MAX];    /* oci://HOST/REPO[:TAG]: the key of struct prev */
        struct registry_opts ro;    /* borrows strings of the request */
};

/* push_target(): p->target from p->ref and p->tag. */
static void push_target(struct push_req *p)
{
        snprintf(p->target, sizeof p->target, "oci://%s/%s%s%s", p->ref.host, p->ref.repo, p->tag ? ":" : "",
                 p->tag ? p->tag : "");
}

/* parse_push(): 1 with *ret filled if the request names a push target, 0
 * if not, -EINVAL with a sentence in err. */
static int parse_push(const json_t *req, const char *tag, struct push_req *ret, char err[static 256])
{
        json_t *v = json_object_get(req, "push"), *reg = json_object_get(req, "registry"), *a, *in, *ca;
        struct push_req p = {};

        if (!v || json_is_null(v))
                return 0;
        if (!json_is_string(v) || oci_ref_parse(json_string_value(v), &p.ref) < 0 || p.ref.has_digest) {
                snprintf(err, 256, "push must be a string oci://HOST[:PORT]/REPO[:TAG]");
                return -EINVAL;
        }
        p.tag = p.ref.tag[0] ? p.ref.tag : tag;
        push_target(&p);
        if (reg && !json_is_null(reg) && !json_is_object(reg)) {
                snprintf(err, 256, "registry must be an object {auth, insecure, ca_cert}");
                return -EINVAL;
        }
        a = json_object_get(reg, "auth");
        in = json_object_get(reg, "insecure");
        ca = json_object_get(reg, "ca_cert");
        if ((a && !json_is_null(a) && !json_is_string(a)) || (in && !json_is_null(in) && !json_is_boolean(in)) ||
            (ca && !json_is_null(ca) && !json_is_string(ca))) {
                snprintf(err, 256, "registry: auth and ca_cert must be strings, insecure a boolean");
                return -EINVAL;
        }
        /* Only what the request carries: no config of the daemon's is read. */
        p.ro = (struct registry_opts){ .push = true, .auth = json_string_value(a) ?: "",
                                       .insecure = json_is_true(in), .ca_pem = json_string_value(ca) };
        *ret = p;
        if (p.tag == p.ref.tag) /* it points into p, not *ret */
                ret->tag = ret->ref.tag;
        return 1;
}

/* reply_push_error(): a registry failure: RegistryAuthFailed for refused
 * credentials, Timeout, else PushFailed; 502/504. msg never holds a secret. */
static enum MHD_Result reply_push_error(struct MHD_Connection *conn, int err, const char *msg)
{
        if (err == -ETIMEDOUT)
                return reply_error(conn, MHD_HTTP_GATEWAY_TIMEOUT, "Timeout", msg);
        return reply_error(conn, MHD_HTTP_BAD_GATEWAY, err == -EACCES || err == -EPERM ? "RegistryAuthFailed" : "PushFailed",
                           msg);
}

/* push_open(): the registry of p, authenticated for push; on failure the
 * reply is queued into *ret_reply and -errno returned. */
static int push_open(struct MHD_Connection *conn, const struct push_req *p, struct backend **ret,
                     enum MHD_Result *ret_reply)
{
        char err[OCI_ERR_MAX], msg[OCI_ERR_MAX + TARGET_MAX + 32];
        int r = backend_oci_connect(p->ref.host, p->ref.repo, &p->ro, ret, err);

        if (r < 0) {
                snprintf(msg, sizeof msg, "push to %s: %s", p->target, err);
                log_error("%s", msg);
                *ret_reply = reply_push_error(conn, r, msg);
        }
        return r;
}

/* push_run(): snapshot dg of the mount's store to p's registry be. */
static int push_run(struct daemon *d, struct MHD_Connection *conn, struct backend *be, const struct push_req *p,
                    const struct digest *dg, struct oci_copy_stats *ret, enum MHD_Result *ret_reply)
{
        char ds[DIGEST_STR_LEN + 1], msg[TARGET_MAX + OCI_ERR_MAX + PATH_MAX + 160], why[OCI_ERR_MAX], a[32];
        int r;

        backend_oci_take_error(be, why); /* forget the open's */
        r = oci_push(d->store_be, dg, be, p->tag, 0, ret); /* logs */
        digest_str(dg, ds);
        if (r < 0) {
                backend_oci_take_error(be, why);
                snprintf(msg, sizeof msg, "push of %s to %s failed: %s (details in %s/stasisd.log)", ds, p->target,
                         why[0] ? why : strerror(-r), d->state);
                log_error("%s", msg);
                *ret_reply = reply_push_error(conn, r, msg);
                return r;
        }
        log_info("pushed %s to %s: %s uploaded, %" PRIu64 " of %" PRIu64 " blobs present already%s", ds, p->target,
                 format_bytes(ret->bytes_copied, a), ret->blobs_skipped, ret->blobs_total,
                 ret->manifest_skipped ? ", the tag named it already" : "");
        return 0;
}

/* push_reference(): what was pushed: oci://HOST/REPO:TAG, or @DIGEST. */
static void push_reference(const struct push_req *p, const struct digest *dg, char buf[static TARGET_MAX + DIGEST_STR_LEN])
{
        char ds[DIGEST_STR_LEN + 1];

        if (p->tag)
                snprintf(buf, TARGET_MAX + DIGEST_STR_LEN, "%s", p->target);
        else
                snprintf(buf, TARGET_MAX + DIGEST_STR_LEN, "oci://%s/%s@%s", p->ref.host, p->ref.repo,
                         digest_str(dg, ds));
}

/* wipe_secret(): overwrite a secret string held by a request's JSON before
 * it is freed. */
static void wipe_secret(json_t *v)
{
        if (json_is_string(v))
                explicit_bzero((char *)json_string_value(v), json_string_length(v));
}

static void json_wipe_decrefp_(json_t **j)
{
        wipe_secret(json_object_get(json_object_get(*j, "registry"), "auth"));
        json_decref(*j);
}

/* store_ready(): the store checkpoints publish to. An --empty mount's is
 * opened, or made, at its first checkpoint if it did not exist at mount.
 * 0; -ENOTSUP (d->no_checkpoint says why); or -errno (logged). */
static int store_ready(struct daemon *d)
{
        int r;

        if (d->store_be)
                return 0;
        if (!d->empty || d->no_checkpoint)
                return -ENOTSUP;
        r = backend_local_open(d->store, true, &d->empty_store);
        if (r < 0)
                return log_error_errno(r, "open or make the store %s: %m", d->store);
        d->store_be = d->empty_store;
        return 0;
}

/* reply_no_store(): the answer for store_ready()'s error r. */
static enum MHD_Result reply_no_store(const struct daemon *d, struct MHD_Connection *conn, int r)
{
        if (r == -ENOTSUP)
                return reply_error(conn, MHD_HTTP_BAD_REQUEST, "BadRequest",
                                   d->no_checkpoint ? d->no_checkpoint : "the mount has no store");
        return reply_errno(conn, "CheckpointFailed", "the mount's store cannot be opened or made", r);
}

/* POST /api/v1/checkpoint and /api/v1/pause (docs/control-api.md). A
 * pause is a checkpoint after which the sandbox stays frozen (if labelled)
 * and the mount read-only until /unpause or unmount. With a push target the
 * snapshot is published to the mount's store first, then pushed (the
 * sandbox thawed, unless paused or frozen through /freeze). */
static enum MHD_Result api_checkpoint(struct daemon *d, struct MHD_Connection *conn, const char *body,
                                      bool pause)
{
        _cleanup_(json_wipe_decrefp_) json_t *req = NULL;
        _cleanup_(backend_freep_) struct backend *reg = NULL;
        struct fs_checkpoint_result res = {};
        struct oci_copy_stats ps = {};
        struct push_req push;
        json_t *tag_j, *labels, *v;
        const char *tag = NULL, *k;
        char dg[DIGEST_STR_LEN + 1], err[256], ref[TARGET_MAX + DIGEST_STR_LEN];
        const struct prev *prev;
        const struct snapshot *parent;
        char parent_s[DIGEST_STR_LEN + 1];
        enum MHD_Result reply_r;
        uint64_t t0 = now_ns(), f1 = 0, barrier_ns;
        struct ck_hold hold = { .d = d, .pause = pause };
        bool pushing;
        int r;

        if (body && *body) {
                json_error_t jerr;
                req = json_loads(body, 0, &jerr);
                if (!req || !json_is_object(req))
                        return reply_error(conn, MHD_HTTP_BAD_REQUEST, "BadRequest", "the body is not a JSON object");
        }
        tag_j = json_object_get(req, "tag");
        labels = json_object_get(req, "labels");
        if (tag_j && !json_is_null(tag_j)) {
                tag = json_string_value(tag_j);
                if (!tag || !tag_valid(tag))
                        return reply_error(conn, MHD_HTTP_BAD_REQUEST, "BadRequest",
                                           "tag must be a string of [A-Za-z0-9_][A-Za-z0-9._-]{0,127}");
        }
        if (labels && !json_is_null(labels)) {
                if (!json_is_object(labels))
                        return reply_error(conn, MHD_HTTP_BAD_REQUEST, "BadRequest", "labels must be an object of strings");
                json_object_foreach(labels, k, v)
                        if (!json_is_string(v))
                                return reply_error(conn, MHD_HTTP_BAD_REQUEST, "BadRequest",
                                                   "labels must be an object of strings");
        } else
                labels = NULL;
        r = parse_push(req, tag, &push, err);
        if (r < 0)
                return reply_error(conn, MHD_HTTP_BAD_REQUEST, "BadRequest", err);
        pushing = r > 0;
        if (!pushing && d->home[0]) { /* an oci:// mount publishes to its registry */
                push = (struct push_req){ .tag = tag, .ro = d->home_ro };
                if (oci_ref_parse(d->home, &push.ref) < 0)
                        return reply_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "CheckpointFailed",
                                           "the mount's registry reference does not parse");
                push_target(&push);
                pushing = true;
        }
        r = store_ready(d);
        if (r < 0)
                return reply_no_store(d, conn, r);
        if (pause && atomic_load(&d->paused))
                return reply_error(conn, MHD_HTTP_CONFLICT, "Busy", "the mount is paused already (unpause first)");
        /* 0. the registry first: wrong credentials or a registry that does
         * not answer fail before anything is frozen or written */
        if (pushing && push_open(conn, &push, &reg, &reply_r) < 0)
                return reply_r;
        /* the last snapshot to this target, if the store still has it */
        prev = prev_find(d, pushing ? push.target : "");
        if (prev && backend_has(d->store_be, &prev->digest) <= 0)
                prev = NULL;

        /* The parent: this mount's last checkpoint, else its base (none
         * for an --empty mount: its base is in no store). */
        parent = fs_last_checkpoint(d->fs);
        if (!parent)
                parent = d->last_parent;
        if (!parent && !d->empty)
                parent = d->snap;
        snprintf(parent_s, sizeof parent_s, "%s", parent ? digest_str(&parent->digest, dg) : "");
        /* 1.-8. the packer's index of reusable chunks; then freeze and
         * flush (ck_before_barrier()), the barrier, thaw; then read and
         * pack the dirty chunks and publish. The flush helper is exec'd
         * now, while the packer indexes, not in the stall (if that fails,
         * ck_before_barrier() starts one itself). */
        if (fs_flush_start(d->mountpoint, &hold.flush) < 0)
                hold.flush = NULL;
        r = fs_checkpoint(d->fs,
                          &(struct fs_checkpoint_opts){ .store = d->store_be, .parent = parent,
                                                        .tag = tag, .labels = labels,
                                                        .before_barrier = ck_before_barrier,
                                                        .after_barrier = ck_after_barrier,
                                                        .ctx = &hold, .readonly = pause,
                                                        .prev_tree = prev ? &prev->tree : NULL,
                                                        .prev_digest = prev ? &prev->digest : NULL },
                          &res);
        fs_flush_abort(TAKE_PTR(hold.flush)); /* failed before the flush */
        if (hold.froze && (!pause || r < 0)) {
                thaw_cb(d); /* a no-op if after_barrier thawed it */
                f1 = d->thawed_ns > hold.f0 ? d->thawed_ns : now_ns(); /* frozen until then */
        }
        if (hold.freeze_err < 0)
                return reply_errno(conn, "FreezeFailed", "freeze failed", hold.freeze_err);
        if (r < 0)
                return reply_errno(conn, "CheckpointFailed", pause ? "pause failed" : "checkpoint failed", r);
        if (res.has_parent)
                digest_str(&res.parent, parent_s); /* a reused snapshot's own */
        if (pause)
                f1 = now_ns(); /* it stays frozen: the stall so far */
        /* 9. the push, the sandbox running again (unless paused) */
        if (pushing && push_run(d, conn, reg, &push, &res.digest, &ps, &reply_r) < 0) {
                if (pause) { /* a failed pause leaves the mount writable and thawed */
                        fs_set_readonly(d->fs, false);
                        if (hold.froze)
                                thaw_cb(d);
                }
                return reply_r;
        }
        if (pause)
                atomic_store(&d->paused, true);
        res.duration_ns = now_ns() - t0;
        /* The stall: the sandbox frozen by us, else the write barrier. */
        barrier_ns = res.barrier_ns;
        if (hold.froze)
                res.barrier_ns = MAX(res.barrier_ns, f1 - hold.f0);
        atomic_fetch_add(&d->checkpoints, 1);
        atomic_store(&d->ck_duration_ns, res.duration_ns);
        atomic_store(&d->ck_stall_ns, res.barrier_ns);
        prev_set(d, "", &res.tree_digest, &res.digest);
        last_ck_save(d, &res.digest);
        if (pushing)
                prev_set(d, push.target, &res.tree_digest, &res.digest);
        digest_str(&res.digest, dg);
        log_info("checkpoint %s%s%s%s: %" PRIu64 " bytes dirty, %" PRIu64 " new chunks, stall %.3f ms (freeze %.3f,"
                 " flush %.3f), %.3f ms",
                 dg, tag ? " tag " : "", tag ? tag : "", res.reused ? " (unchanged: the last one)" : "", res.bytes_dirty,
                 res.chunks_new, (double)res.barrier_ns / 1e6, (double)hold.freeze_ns / 1e6, (double)hold.flush_ns / 1e6,
                 (double)res.duration_ns / 1e6);
        if (pushing)
                push_reference(&push, &res.digest, ref);
        else
                snprintf(ref, sizeof ref, "%s", tag ? tag : dg);
        {
                char tdg[DIGEST_STR_LEN + 1];
                digest_str(&res.tree_digest, tdg);
                return reply_json(conn, MHD_HTTP_OK,
                                  json_pack("{s:s, s:s, s:s, s:I, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b,"
                                            " s:b, s:b, s:b, s:I, s:I, s:I, s:I, s:I, s:I}",
                                            "digest", dg, "reference", ref, "tree", tdg,
                                            "generation", (json_int_t)res.generation, "parent", *parent_s ? json_string(parent_s) : json_null(),
                                            "bytes_dirty", (json_int_t)res.bytes_dirty,
                                            "bytes_new", (json_int_t)res.bytes_new,
                                            "bytes_uploaded", (json_int_t)ps.bytes_copied,
                                            "chunks_new", (json_int_t)res.chunks_new,
                                            "chunks_reused", (json_int_t)res.chunks_reused,
                                            "duration_ns", (json_int_t)res.duration_ns,
                                            "stall_ns", (json_int_t)res.barrier_ns,
                                            "barrier_bytes", (json_int_t)res.barrier_bytes, /* data read in it: 0 */
                                            "freeze_ns", (json_int_t)hold.freeze_ns, /* of the stall: freezing */
                                            "flush_ns", (json_int_t)hold.flush_ns,   /* the kernel's dirty pages */
                                            "barrier_ns", (json_int_t)barrier_ns,
                                            "chunks_saved", (json_int_t)res.chunks_saved, /* copy-before-write */
                                            "froze", hold.froze, /* it froze the sandbox for the checkpoint */
                                            "frozen", d->freezer && freezer_frozen(d->freezer), /* now */
                                            "reused", res.reused, /* unchanged since the last one to this target */
                                            "pushed", pushing,
                                            "blobs_uploaded", (json_int_t)ps.blobs_copied,
                                            "blobs_skipped", (json_int_t)ps.blobs_skipped,
                                            /* where duration_ns went, after the barrier */
                                            "prepare_ns", (json_int_t)res.prepare_ns,
                                            "data_ns", (json_int_t)res.data_ns,
                                            "tree_ns", (json_int_t)res.tree_ns,
                                            "publish_ns", (json_int_t)res.publish_ns));
        }
}

/* POST /api/v1/push: {"digest", "push", "registry", "tag"}: push a snapshot
 * of the mount's store (one its checkpoint made) to a registry, as a
 * checkpoint with a push target does after it published. The committer
 * captures all its containers frozen, thaws them, then pushes each. */
static enum MHD_Result api_push(struct daemon *d, struct MHD_Connection *conn, const char *body)
{
        _cleanup_(json_wipe_decrefp_) json_t *req = NULL;
        _cleanup_(backend_freep_) struct backend *reg = NULL;
        struct snapshot *s = NULL;
        struct oci_copy_stats ps = {};
        struct push_req push;
        struct digest dg, tree;
        json_t *tag_j;
        const char *tag = NULL, *ds;
        char err[256], ref[TARGET_MAX + DIGEST_STR_LEN];
        enum MHD_Result reply_r;
        int r;

        req = body && *body ? json_loads(body, 0, NULL) : NULL;
        if (!req || !json_is_object(req))
                return reply_error(conn, MHD_HTTP_BAD_REQUEST, "BadRequest", "the body is not a JSON object");
        ds = json_string_value(json_object_get(req, "digest"));
        if (!ds || digest_parse(ds, &dg) < 0)
                return reply_error(conn, MHD_HTTP_BAD_REQUEST, "BadRequest", "digest must be sha256:<64 hex>");
        tag_j = json_object_get(req, "tag");
        if (tag_j && !json_is_null(tag_j)) {
                tag = json_string_value(tag_j);
                if (!tag || !tag_valid(tag))
                        return reply_error(conn, MHD_HTTP_BAD_REQUEST, "BadRequest",
                                           "tag must be a string of [A-Za-z0-9_][A-Za-z0-9._-]{0,127}");
        }
        r = parse_push(req, tag, &push, err);
        if (r <= 0)
                return reply_error(conn, MHD_HTTP_BAD_REQUEST, "BadRequest", r < 0 ? err : "push: a target is required");
        r = store_ready(d);
        if (r < 0)
                return reply_no_store(d, conn, r);
        r = backend_has(d->store_be, &dg);
        if (r <= 0) {
                snprintf(err, sizeof err, "%s is not in the mount's store", ds);
                return r == 0 ? reply_error(conn, MHD_HTTP_NOT_FOUND, "NotFound", err)
                              : reply_errno(conn, "PushFailed", "the mount's store cannot be read", r);
        }
        r = snapshot_open(d->store_be, &dg, &s); /* logs */
        if (r < 0)
                return reply_errno(conn, "PushFailed", "the snapshot cannot be read", r);
        tree = s->tree_digest;
        snapshot_free(s);
        if (push_open(conn, &push, &reg, &reply_r) < 0 || push_run(d, conn, reg, &push, &dg, &ps, &reply_r) < 0)
                return reply_r;
        prev_set(d, push.target, &tree, &dg);
        push_reference(&push, &dg, ref);
        return reply_json(conn, MHD_HTTP_OK,
                          json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I}", "digest", ds, "reference", ref,
                                    "bytes_uploaded", (json_int_t)ps.bytes_copied,
                                    "blobs_uploaded", (json_int_t)ps.blobs_copied,
                                    "blobs_skipped", (json_int_t)ps.blobs_skipped,
                                    "bytes_total", (json_int_t)ps.bytes_total,
                                    "duration_ns", (json_int_t)ps.wall_ns));
}

/* POST /api/v1/unpause: writable again, and thawed unless frozen through
 * /freeze. Idempotent. */
static enum MHD_Result api_unpause(struct daemon *d, struct MHD_Connection *conn)
{
        int r;

        if (atomic_load(&d->paused)) {
                fs_set_readonly(d->fs, false);
                atomic_store(&d->paused, false);
                if (d->freezer && !d->user_frozen) {
                        r = freezer_thaw(d->freezer);
                        if (r < 0) {
                                log_error_errno(r, "unpause: unfreeze (%s): %m", freezer_method(d->freezer));
                                return reply_errno(conn, "FreezeFailed", "unfreeze failed", r);
                        }
                }
        }
        return reply_json(conn, MHD_HTTP_OK,
                          json_pack("{s:b, s:b}", "paused", 0, "frozen", d->freezer && freezer_frozen(d->freezer)));
}

/* A request's state across MHD's calls: its body so far. */
struct request {
        char *body;
        size_t len;
        bool too_big;
};

static void request_done(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
        struct request *rq = *req_cls;
        (void)cls;
        (void)conn;
        (void)toe;

        if (rq) {
                if (rq->body) /* it may hold registry credentials */
                        explicit_bzero(rq->body, rq->len);
                free(rq->body);
                free(rq);
        }
        *req_cls = NULL;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **req_cls)
{
        struct daemon *d = cls;
        struct request *rq = *req_cls;
        (void)version;

        if (!rq) { /* first call: headers only */
                if (!peer_allowed(d, conn))
                        return reply_error(conn, MHD_HTTP_FORBIDDEN, "Forbidden", "peer not allowed");
                rq = calloc(1, sizeof *rq);
                if (!rq)
                        return MHD_NO;
                *req_cls = rq;
                return MHD_YES;
        }
        if (*upload_size) { /* a piece of the body */
                if (rq->too_big || rq->len + *upload_size > API_BODY_MAX) {
                        rq->too_big = true;
                } else {
                        char *n = realloc(rq->body, rq->len + *upload_size + 1);
                        if (!n)
                                return MHD_NO;
                        memcpy(n + rq->len, upload, *upload_size);
                        rq->len += *upload_size;
                        n[rq->len] = 0;
                        rq->body = n;
                }
                *upload_size = 0;
                return MHD_YES;
        }
        if (rq->too_big)
                return reply_error(conn, MHD_HTTP_CONTENT_TOO_LARGE, "BadRequest", "request body too large");
        if (strcmp(method, "POST") == 0) {
                if (strcmp(url, "/api/v1/freeze") == 0)
                        return api_freeze(d, conn);
                if (strcmp(url, "/api/v1/unfreeze") == 0)
                        return api_unfreeze(d, conn);
                if (strcmp(url, "/api/v1/checkpoint") == 0)
                        return api_checkpoint(d, conn, rq->body, false);
                if (strcmp(url, "/api/v1/pause") == 0)
                        return api_checkpoint(d, conn, rq->body, true);
                if (strcmp(url, "/api/v1/unpause") == 0)
                        return api_unpause(d, conn);
                if (strcmp(url, "/api/v1/push") == 0)
                        return api_push(d, conn, rq->body);
                return reply_error(conn, MHD_HTTP_NOT_FOUND, "NotFound", "no such endpoint");
        }
        if (strcmp(method, "GET") != 0)
                return reply_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "BadRequest", "method not allowed");
        if (strcmp(url, "/api/v1/status") == 0) {
                json_t *j = status_json(d);
                char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
                json_decref(j);
                return reply(conn, MHD_HTTP_OK, "application/json", s);
        }
        if (strcmp(url, "/metrics") == 0)
                return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4", metrics_text(d));
        return reply_error(conn, MHD_HTTP_NOT_FOUND, "NotFound", "no such endpoint");
}

static int api_socket(const char *path, int *ret)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_(closep) int fd = -1;
        mode_t old;

        if ((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path) >= sizeof sa.sun_path)
                return -ENAMETOOLONG;
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        (void)unlink(path);
        old = umask(0177); /* the socket is born 0600 */
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
                int e = -errno;
                umask(old);
                return e;
        }
        umask(old);
        if (chmod(path, 0600) < 0 || listen(fd, 16) < 0)
                return -errno;
        *ret = TAKE_FD(fd);
        return 0;
}

/* ---- registry ---- */

static int registry_write(const struct daemon *d)
{
        char started[32];
        json_t *j;
        char *s;
        int r;

        j = json_pack("{s:s, s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:O, s:s}", "mountpoint",
                      d->mountpoint, "pid", (json_int_t)getpid(), "socket", d->socket, "state_dir",
                      d->state, "log", d->log_path, "snapshot", d->snapshot, "store", d->store, "cache",
                      d->cache_dir, "labels", d->labels, "started",
                      format_rfc3339((int64_t)d->started, started));
        if (!j)
                return -ENOMEM;
        /* gc spares it: the mount's next checkpoint takes its chunks */
        if (d->last_ck[0] && json_object_set_new(j, "last_checkpoint", json_string(d->last_ck)) < 0) {
                json_decref(j);
                return -ENOMEM;
        }
        s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
        json_decref(j);
        if (!s)
                return -ENOMEM;
        r = write_replace_at(AT_FDCWD, d->registry, s, strlen(s), 0644, false);
        free(s);
        return r;
}

/* ---- main ---- */

static int parse_args(int argc, char **argv, struct opts *o)
{
        enum { OPT_STORE = 0x100, OPT_CACHE, OPT_CACHE_SIZE, OPT_STATE, OPT_LABEL, OPT_FG, OPT_HELP, OPT_EMPTY,
               OPT_NO_PREFETCH };
        static const struct option options[] = {
                { "store", required_argument, NULL, OPT_STORE },
                { "cache", required_argument, NULL, OPT_CACHE },
                { "cache-size", required_argument, NULL, OPT_CACHE_SIZE },
                { "state", required_argument, NULL, OPT_STATE },
                { "label", required_argument, NULL, OPT_LABEL },
                { "foreground", no_argument, NULL, OPT_FG },
                { "empty", no_argument, NULL, OPT_EMPTY },
                { "no-prefetch", no_argument, NULL, OPT_NO_PREFETCH },
                { "help", no_argument, NULL, OPT_HELP },
                { "verbose", no_argument, NULL, 'v' },
                {},
        };
        int c;

        o->labels = json_object();
        if (!o->labels)
                return -ENOMEM;
        while ((c = getopt_long(argc, argv, "o:v", options, NULL)) >= 0) {
                switch (c) {
                case OPT_STORE: o->store = optarg; break;
                case OPT_CACHE: o->cache = optarg; break;
                case OPT_STATE: o->state = optarg; break;
                case OPT_FG: o->foreground = true; break;
                case OPT_EMPTY: o->empty = true; break;
                case OPT_NO_PREFETCH: o->no_prefetch = true; break;
                case OPT_CACHE_SIZE:
                        if (parse_size(optarg, &o->cache_size) < 0 || o->cache_size < CACHE_SIZE_MIN) {
                                fprintf(stderr, "stasisd: bad --cache-size '%s' (at least 1M)\n", optarg);
                                return 2;
                        }
                        break;
                case OPT_LABEL: {
                        const char *eq = strchr(optarg, '=');
                        _cleanup_(freep) char *k = NULL;
                        if (!eq || eq == optarg) {
                                fprintf(stderr, "stasisd: bad --label '%s' (K=V)\n", optarg);
                                return 2;
                        }
                        k = strndup(optarg, (size_t)(eq - optarg));
                        if (!k || json_object_set_new(o->labels, k, json_string(eq + 1)) < 0)
                                return -ENOMEM;
                        break;
                }
                case 'o': {
                        char *n = NULL;
                        if (asprintf(&n, "%s%s%s", o->fuse_opts ? o->fuse_opts : "",
                                     o->fuse_opts ? "," : "", optarg) < 0)
                                return -ENOMEM;
                        free(o->fuse_opts);
                        o->fuse_opts = n;
                        break;
                }
                case 'v':
                        log_set_max_level(MIN(log_get_max_level() + 1, LOG_LVL_DEBUG));
                        break;
                case OPT_HELP:
                        usage(stdout);
                        exit(0);
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (argc - optind != (o->empty ? 1 : 2)) {
                usage(stderr);
                return 2;
        }
        o->ref = o->empty ? "--empty" : argv[optind];
        o->mountpoint = argv[argc - 1];
        if (!o->store)
                o->store = env_or("STASIS_STORE", STORE_DEFAULT);
        if (!o->cache)
                o->cache = env_or("STASIS_CACHE", CACHE_DEFAULT);
        return 0;
}

/* mount_key(): the registry and default state-dir name of a mountpoint: the
 * XXH3-128 of its real path, in hex. Not SHA-256: a name needs no defence
 * against an adversary (only root picks mountpoints), and the first SHA-256
 * of a process initializes OpenSSL, ~2 ms that crypto_warm() now spends
 * beside the store's opening instead of before it. */
static void mount_key(const char *mountpoint, char buf[static 33])
{
        XXH128_hash_t h = XXH3_128bits(mountpoint, strlen(mountpoint));
        snprintf(buf, 33, "%016" PRIx64 "%016" PRIx64, (uint64_t)h.high64, (uint64_t)h.low64);
}

/* crypto_warm(): OpenSSL's one-time initialization (config, providers),
 * done on a thread while the main one opens the store and reads its index;
 * the manifest's hash then finds it done (or waits inside OpenSSL). */
static void *crypto_warm(void *arg)
{
        struct digest d;
        (void)arg;
        digest_sha256("", 0, &d);
        return NULL;
}

/* resolve_remote(): ref (a tag or sha256: digest) in a registry: one GET
 * of the manifest, which the backend keeps for snapshot_open() (verified
 * there against the digest). store_resolve() would list the repository's
 * tags and HEAD each (a round trip per tag), then snapshot_open() would
 * look for the manifest among the blobs first: seven round trips before the
 * tree on a repository of one tag, one per tag more. */
static int resolve_remote(struct backend *store, const char *ref, struct digest *ret)
{
        _cleanup_(freep) void *m = NULL;
        struct digest d;
        size_t len;

        if (strncmp(ref, "sha256:", 7) == 0 ? digest_parse(ref, &d) < 0 : !tag_valid(ref))
                return log_error_errno(-EINVAL, "\"%.80s\" is neither a tag nor a sha256: digest", ref);
        return oci_manifest_get(store, ref, &m, &len, ret);
}

/* check_mountpoint(): a directory we can mount on. A dead FUSE mount
 * (ENOTCONN) is refused with a hint: `stasis mount` cleans it up first. */
static int check_mountpoint(const char *path, char resolved[static PATH_MAX])
{
        struct stat st;

        if (stat(path, &st) < 0) {
                if (errno == ENOTCONN)
                        return log_error_errno(-ENOTCONN, "%s: a dead mount is in the way (stasis umount %s): %m",
                                               path, path);
                return log_error_errno(-errno, "mountpoint %s: %m", path);
        }
        if (!S_ISDIR(st.st_mode))
                return log_error_errno(-ENOTDIR, "mountpoint %s: %m", path);
        if (!realpath(path, resolved))
                return log_error_errno(-errno, "mountpoint %s: %m", path);
        return 0;
}

/* daemon_serving(): whether pid is a stasisd that is not exiting. One
 * killed a moment ago may still look alive (its mount answers from the
 * kernel's caches until its last descriptor closes): it counts as gone,
 * and so does a pid reused by another program. */
static bool daemon_serving(pid_t pid)
{
        return proc_state(pid, "stasisd") == PROC_RUNNING;
}

/* mount_taken(): a live stasisd serves mp (its registry entry names it and
 * a stasis mount sits there). A second mount on top would hide the first
 * from everything that finds a mount by its mountpoint (status,
 * checkpoint, pause, umount) while its sandbox kept running on it. */
static int mount_taken(const char *mp, const char *registry)
{
        _cleanup_(json_decrefp_) json_t *e = NULL;
        json_int_t pid;
        dev_t dev;

        if (stasis_mount_dev(mp, &dev) < 0)
                return 0;
        e = json_load_file(registry, 0, NULL);
        pid = json_integer_value(json_object_get(e, "pid"));
        if (pid <= 0 || !daemon_serving((pid_t)pid))
                return 0; /* dead, or dying: mounted over as before (stasis mount cleans up dead ones first) */
        return log_error_errno(-EBUSY, "%s is a stasis mount already, served by stasisd pid %lld (stasis umount %s first)",
                               mp, (long long)pid, mp);
}

static void stop_signals_mask(int how)
{
        sigset_t s;

        sigemptyset(&s);
        sigaddset(&s, SIGTERM);
        sigaddset(&s, SIGINT);
        sigaddset(&s, SIGHUP);
        pthread_sigmask(how, &s, NULL);
}

/* raise_fd_limit(): the soft RLIMIT_NOFILE up to the hard one. Every file
 * the sandbox has open and has written holds a descriptor here (its data
 * file), and a shell's soft limit of 1024 made the writes of the 1,000th
 * file fail with EMFILE at writeback: data lost, reported only at fsync.
 * Nothing here uses select() (the control API polls with epoll). */
static void raise_fd_limit(void)
{
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                        log_warning_errno(-errno, "raise the open-file limit to %llu: %m",
                                          (unsigned long long)rl.rlim_max);
        }
}

/* state_lock(): one daemon per state dir. Two would append to one journal
 * and write one set of data files, each with its own model of them. The
 * lock (flock on STATE/stasisd.lock) goes with the process, so a kill -9
 * leaves nothing to clean up; *ret_fd holds it until exit. */
static int state_lock_take(const char *state, int *ret_fd)
{
        char path[PATH_MAX + 16];
        _cleanup_(closep) int fd = -1;

        snprintf(path, sizeof path, "%s/stasisd.lock", state);
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        if (flock(fd, LOCK_EX | LOCK_NB) < 0)
                return errno == EWOULDBLOCK ? -EBUSY : -errno;
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* STATE_LOCK_WAIT_NS: how long a mount waits for a killed stasisd, still
 * exiting, to let go of the state dir (its threads finish their requests
 * first; the lock goes with the last of them). */
#define STATE_LOCK_WAIT_NS (10 * NSEC_PER_SEC)

static int state_lock(const char *state, int *ret_fd)
{
        char path[PATH_MAX + 16], pid[32] = "";
        uint64_t end = now_ns() + STATE_LOCK_WAIT_NS;
        int r;

        for (;;) {
                r = state_lock_take(state, ret_fd);
                if (r != -EBUSY)
                        return r < 0 ? log_error_errno(r, "state dir %s: lock: %m", state) : 0;
                snprintf(path, sizeof path, "%s/stasisd.pid", state);
                {
                        _cleanup_(closep) int pfd = open(path, O_RDONLY | O_CLOEXEC);
                        if (pfd < 0 || read_full(pfd, pid, sizeof pid - 1) < 0)
                                pid[0] = 0;
                        pid[strcspn(pid, "\n")] = 0;
                }
                if (!pid[0] || daemon_serving((pid_t)strtol(pid, NULL, 10)) || now_ns() > end)
                        break;
                usleep(10000); /* a daemon killed a moment ago, still exiting */
        }
        return log_error_errno(-EBUSY, "state dir %s is in use by another stasisd%s%s (one per state dir)", state,
                               pid[0] ? ", pid " : "", pid);
}

/* thaw_left(): `stasisd --thaw-left-frozen STATE`, run by `stasis umount`
 * of a dead mount: thaw the sandbox its daemon left frozen, unless a live
 * daemon has the state dir now (its freeze is its own). */
static int thaw_left(const char *state)
{
        _cleanup_(closep) int lock = -1;
        char marker[PATH_MAX + 32];
        int r;

        snprintf(marker, sizeof marker, "%s/" FROZEN_MARKER, state);
        if (access(marker, F_OK) < 0)
                return 0;
        r = state_lock_take(state, &lock);
        if (r == -EBUSY)
                return 0;
        if (r >= 0)
                r = freezer_thaw_marked(marker);
        if (r < 0)
                return log_error_errno(r, "thaw the sandbox %s names: %m", marker), 1;
        return 0;
}

/* daemonize(): fork; the parent waits for the child's readiness byte and
 * exits with 0 (ready) or 1. In the child *ret_fd is the pipe to report on. */
static int daemonize(int *ret_fd)
{
        int p[2];
        pid_t pid;
        char c;
        ssize_t n;

        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid > 0) {
                close(p[1]);
                do
                        n = read(p[0], &c, 1);
                while (n < 0 && errno == EINTR);
                if (n == 1 && c == 'R')
                        _exit(0);
                /* The child failed and said why on stderr; reap it if it exited. */
                (void)waitpid(pid, NULL, WNOHANG);
                _exit(1);
        }
        close(p[0]);
        if (setsid() < 0)
                return -errno;
        *ret_fd = p[1];
        return 0;
}

/* The control API is started after readiness, on a thread of its own:
 * loading libmicrohttpd (and GnuTLS with it) is not on the way of the
 * mount's first read. If it fails, the socket is closed (clients are
 * refused) and the mount goes on serving the filesystem. */
struct api_start {
        struct daemon *d;
        int sock;                /* taken */
        struct MHD_Daemon *api;  /* set by api_start_run() */
};

static void *api_start_run(void *arg)
{
        struct api_start *a = arg;

        if (mhd_load() < 0) { /* logs */
                closep(&a->sock);
                return NULL;
        }
        /* epoll, not select(): a sandbox holding a thousand files open
         * gives us that many descriptors, and select() cannot take a
         * connection numbered FD_SETSIZE (1024) or above. */
        a->api = mhd.start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL,
                                  NULL, handle, a->d,
                                  MHD_OPTION_LISTEN_SOCKET, a->sock, MHD_OPTION_NOTIFY_COMPLETED, request_done,
                                  NULL, MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
        if (!a->api) {
                log_error("control API on %s failed to start: the mount has none", a->d->socket);
                closep(&a->sock);
                return NULL;
        }
        a->sock = -1; /* MHD owns it now */
        return NULL;
}

/* empty_snapshot(): a snapshot of one empty root directory, owned by the
 * caller, in memory only. */
static int empty_snapshot(struct snapshot **ret)
{
        struct tree_builder *tb = tree_builder_new(CHUNK_SIZE_DEFAULT);
        struct timespec now;
        _cleanup_(freep) void *blob = NULL;
        struct tree *t = NULL;
        struct snapshot *s;
        uint32_t h;
        size_t len;
        int r;

        if (!tb)
                return -ENOMEM;
        clock_gettime(CLOCK_REALTIME, &now);
        r = tree_builder_add_inode(tb, &(struct tree_attr){ .ino = TREE_ROOT_INO, .mode = S_IFDIR | 0755,
                                                            .uid = getuid(), .gid = getgid(), .nlink = 2,
                                                            .atime = now, .mtime = now, .ctime = now },
                                   &h);
        if (r >= 0) {
                tree_builder_set_next_ino(tb, TREE_ROOT_INO + 1);
                /* the tree as built and checked: no need to load the blob back */
                r = tree_builder_finish_tree(tb, 3, &blob, &len, NULL, &t);
        }
        tree_builder_free(tb);
        if (r < 0)
                return r;
        s = calloc(1, sizeof *s);
        if (!s) {
                tree_free(t);
                return -ENOMEM;
        }
        s->config.chunk_size = CHUNK_SIZE_DEFAULT;
        s->tree = t;
        *ret = s;
        return 0;
}

int main(int argc, char **argv)
{
        struct opts o = {};
        struct daemon d = {};
        _cleanup_(backend_freep_) struct backend *store = NULL;
        _cleanup_(json_decrefp_) json_t *labels_owner = NULL;
        struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
        struct fuse_session *se = NULL;
        struct fuse_loop_config *cfg = NULL;
        struct api_start api_start = { .sock = -1 };
        pthread_t warm_thread;
        bool warming = false;
        pthread_t api_thread;
        bool api_starting = false;
        char key[33], oci_ref[OCI_TAG_MAX + DIGEST_STR_LEN + 2], mounts[PATH_MAX], pidfile[PATH_MAX + 16] = "", logfile[PATH_MAX + 16] = "";
        char pidbuf[32], marker[PATH_MAX + 32];
        _cleanup_(freep) char *mopts = NULL;
        struct digest dg;
        uint64_t journal_max = 0, t_start = now_ns(), t_tree = 0;
        int ready_fd = -1, log_fd = -1, sock = -1, r, ret = 1;
        _cleanup_(closep) int lock_fd = -1; /* held until the very end */
        bool mounted = false, registered = false, remote = false;

        log_set_prefix("stasisd: ");
        /* The checkpoint's flush helper (fs_flush_kernel()): nothing else. */
        if (argc == 3 && strcmp(argv[1], FS_FLUSH_HELPER_ARG) == 0)
                return fs_flush_helper(argv[2]);
        if (argc == 3 && strcmp(argv[1], FROZEN_THAW_ARG) == 0)
                return thaw_left(argv[2]);
        raise_fd_limit();
        if (log_get_max_level() < LOG_LVL_INFO) /* the log file says when it mounted */
                log_set_max_level(LOG_LVL_INFO);
        r = parse_args(argc, argv, &o);
        labels_owner = o.labels;
        if (r > 0)
                return r;
        if (r < 0)
                return log_error_errno(r, "%m"), 1;
        d.labels = o.labels;
        d.owner = getuid();
        d.started = time(NULL);
        d.started_ns = now_ns();

        r = check_mountpoint(o.mountpoint, d.mountpoint);
        if (r < 0)
                goto fail;
        mount_key(d.mountpoint, key);
        /* REF oci://HOST/REPO:TAG (or @DIGEST) names its store itself */
        if (!o.empty && strncmp(o.ref, "oci://", 6) == 0) {
                struct oci_ref ref;
                if (oci_ref_parse(o.ref, &ref) < 0 || (!ref.tag[0] && !ref.has_digest)) {
                        r = log_error_errno(-EINVAL, "%s: expected oci://HOST[:PORT]/REPO:TAG or @sha256:HEX", o.ref);
                        goto fail;
                }
                snprintf(d.store, sizeof d.store, "oci://%s/%s", ref.host, ref.repo);
                if (ref.has_digest)
                        digest_str(&ref.digest, oci_ref);
                else
                        snprintf(oci_ref, sizeof oci_ref, "%s", ref.tag);
                o.ref = oci_ref;
        } else if (strncmp(o.store, "oci://", 6) == 0)
                snprintf(d.store, sizeof d.store, "%s", o.store); /* a registry: no path */
        else if (!realpath(o.store, d.store)) {
                if (!o.empty) {
                        r = log_error_errno(-errno, "store %s: %m", o.store);
                        goto fail;
                }
                /* not there (yet): an --empty mount's first checkpoint
                 * makes it; absolute, as realpath() would have made it */
                char cwd[PATH_MAX];
                int n;
                if (o.store[0] != '/' && getcwd(cwd, sizeof cwd))
                        n = snprintf(d.store, sizeof d.store, "%s/%s", cwd, o.store);
                else
                        n = snprintf(d.store, sizeof d.store, "%s", o.store);
                if (n < 0 || (size_t)n >= sizeof d.store) {
                        r = log_error_errno(-ENAMETOOLONG, "store %s: %m", o.store);
                        goto fail;
                }
        }
        snprintf(mounts, sizeof mounts, "%s/mounts", run_dir());
        snprintf(d.registry, sizeof d.registry, "%s/%s.json", mounts, key);
        r = mount_taken(d.mountpoint, d.registry);
        if (r < 0)
                goto fail;
        if (o.state)
                snprintf(d.state, sizeof d.state, "%s", o.state);
        else
                snprintf(d.state, sizeof d.state, "%s/state/%s", run_dir(), key);
        r = mkdir_p(d.state, 0700);
        if (r < 0) {
                log_error_errno(r, "state dir %s: %m", d.state);
                goto fail;
        }
        r = state_lock(d.state, &lock_fd);
        if (r < 0)
                goto fail;
        snprintf(marker, sizeof marker, "%s/" FROZEN_MARKER, d.state);
        r = freezer_thaw_marked(marker); /* ours now: its daemon is dead */
        if (r < 0)
                log_warning_errno(r, "thaw the sandbox a dead stasisd left frozen (%s): %m", marker);
        {
                const char *fz = json_string_value(json_object_get(o.labels, LABEL_FREEZE));
                if (fz) {
                        r = freezer_new(fz, marker, &d.freezer);
                        if (r < 0) {
                                log_error_errno(r, "label %s=%s: expected cgroup:/sys/fs/cgroup/PATH or runc:ID: %m",
                                                LABEL_FREEZE, fz);
                                goto fail;
                        }
                }
        }
        r = mkdir_p(mounts, 0755);
        if (r < 0) {
                log_error_errno(r, "mount registry %s: %m", mounts);
                goto fail;
        }
        snprintf(d.socket, sizeof d.socket, "%s/api.sock", d.state);
        snprintf(pidfile, sizeof pidfile, "%s/stasisd.pid", d.state);
        snprintf(logfile, sizeof logfile, "%s/stasisd.log", d.state);

        /* Fork before any thread exists, and while the process is small. */
        if (!o.foreground) {
                r = daemonize(&ready_fd);
                if (r < 0) {
                        log_error_errno(r, "daemonize: %m");
                        goto fail;
                }
                /* Until it is ready, the daemon reports to the mount
                 * command's stderr, and to its log: a line from a thread
                 * that runs before then (a prefetch) belongs there too. */
                log_fd = open(logfile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                if (log_fd >= 0)
                        log_copy_to(log_fd);
        }
        warming = pthread_create(&warm_thread, NULL, crypto_warm, NULL) == 0;
        remote = strncmp(d.store, "oci://", 6) == 0; /* a lazy store in a registry */

        /* The snapshot: manifest, config and tree; not one pack byte. */
        if (o.empty) {
                store = backend_memory_new();
                r = store ? empty_snapshot(&d.snap) : -ENOMEM;
                if (r < 0) {
                        log_error_errno(r, "empty snapshot: %m");
                        goto fail;
                }
                snprintf(d.snapshot, sizeof d.snapshot, "empty");
        } else {
                if (remote) {
                        /* a lazy remote store: registry options from the
                         * environment the CLI set (store/oci.h OCI_ENV_*) */
                        struct registry_opts ro = {};
                        struct oci_ref ref;
                        r = oci_ref_parse(d.store, &ref);
                        if (r >= 0)
                                r = registry_opts_from_env(&ro);
                        if (r >= 0)
                                r = backend_oci_open(ref.host, ref.repo, &ro, &store); /* logs */
                        if (r < 0)
                                goto fail;
                } else {
                        r = backend_local_open(d.store, false, &store);
                        if (r < 0) {
                                log_error_errno(r, "open store %s: %m", d.store);
                                goto fail;
                        }
                }
                r = remote ? resolve_remote(store, o.ref, &dg) : store_resolve(store, o.ref, &dg);
                if (r < 0) {
                        log_error_errno(r, "%s: no such snapshot in %s: %m", o.ref, d.store);
                        goto fail;
                }
                t_tree = now_ns();
                r = snapshot_open(store, &dg, &d.snap);
                if (r >= 0)
                        r = snapshot_load_tree(store, d.snap);
                if (r < 0) {
                        log_error_errno(r, "load snapshot %s: %m", o.ref);
                        goto fail;
                }
                t_tree = now_ns() - t_tree;
                /* the tree came in coalesced pieces; chunk reads are
                 * coalesced by fs/read.c, which knows the pack's layout */
                backend_oci_exact_reads(store, true);
                if (warming) {
                        pthread_join(warm_thread, NULL);
                        warming = false;
                }
                digest_str(&dg, d.snapshot);
                if (remote) {
                        /* checkpoints: a node store in the state dir in front of the registry */
                        char node_dir[PATH_MAX + 16];
                        struct oci_ref home;
                        snprintf(node_dir, sizeof node_dir, "%s/node-store", d.state);
                        r = oci_ref_parse(d.store, &home);
                        if (r >= 0)
                                snprintf(d.home, sizeof d.home, "oci://%s/%s", home.host, home.repo);
                        if (r >= 0)
                                r = backend_local_open(node_dir, true, &d.node_local);
                        if (r >= 0)
                                r = backend_oci_node_new(d.node_local, store, &d.node);
                        if (r >= 0)
                                r = registry_opts_from_env(&d.home_ro);
                        if (r < 0) {
                                log_error_errno(r, "node store %s: %m", node_dir);
                                goto fail;
                        }
                        d.home_ro.push = true;
                        d.store_be = d.node;
                } else
                        d.store_be = store;
        }
        if (o.empty) {
                d.empty = true;
                if (strncmp(d.store, "oci://", 6) == 0)
                        d.no_checkpoint = "checkpoint of an --empty mount needs a local --store, not a registry";
                else if (access(d.store, F_OK) == 0) {
                        r = backend_local_open(d.store, false, &d.empty_store);
                        if (r < 0) /* the first checkpoint tries again, and says why */
                                log_warning_errno(r, "open store %s: %m", d.store);
                        d.store_be = d.empty_store;
                }
        }
        last_ck_load(&d);
        r = cache_open(o.cache, o.cache_size, &d.cache);
        if (r < 0)
                goto fail;
        if (!realpath(o.cache, d.cache_dir))
                snprintf(d.cache_dir, sizeof d.cache_dir, "%s", o.cache);

        /* Only the main thread takes SIGTERM/SIGINT/SIGHUP (libfuse's workers
         * block them too): the handler must interrupt the loop's wait. */
        stop_signals_mask(SIG_BLOCK);
        /* $STASIS_JOURNAL_MAX: when the layer's journal is compacted (a size). */
        if (getenv("STASIS_JOURNAL_MAX") && parse_size(getenv("STASIS_JOURNAL_MAX"), &journal_max) < 0)
                journal_max = 0;
        r = fs_new(&(struct fs_opts){ .store = store, .snap = d.snap, .cache = d.cache,
                                      .state_dir = d.state, .base_name = d.snapshot,
                                      .journal_max = journal_max, .no_prefetch = o.no_prefetch,
                                      .remote = remote },
                   &d.fs);
        if (r < 0) {
                log_error_errno(r, "filesystem: %m");
                goto fail;
        }

        /* A container's root filesystem: setuid binaries and device nodes
         * work on it as on overlayfs (libfuse mounts nosuid,nodev by
         * default). Root only: the kernel refuses these to others. */
        if (asprintf(&mopts, "allow_other,default_permissions,fsname=stasis,subtype=stasis%s%s%s",
                     geteuid() == 0 ? ",suid,dev" : "",
                     o.fuse_opts ? "," : "", o.fuse_opts ? o.fuse_opts : "") < 0) {
                r = -ENOMEM;
                goto fail;
        }
        if (fuse_opt_add_arg(&args, "stasisd") < 0 || fuse_opt_add_arg(&args, "-o") < 0 ||
            fuse_opt_add_arg(&args, mopts) < 0) {
                r = -ENOMEM;
                goto fail;
        }
        se = fs_session_new(d.fs, &args);
        if (!se) {
                r = log_error_errno(-EINVAL, "FUSE session with options '%s' failed", mopts);
                goto fail;
        }
        if (fuse_set_signal_handlers(se) < 0) {
                r = log_error_errno(-EIO, "signal handlers: %m");
                goto fail;
        }
        if (fuse_session_mount(se, d.mountpoint) < 0) {
                r = log_error_errno(-EIO, "mount on %s failed", d.mountpoint);
                goto fail;
        }
        mounted = true;
        r = fs_session_io(d.fs, se);
        if (r < 0) /* works without: a GETXATTR more per write() */
                log_warning("FUSE session I/O hooks refused (%s); running without KILLPRIV_V2",
                            strerror(-r));

        r = api_socket(d.socket, &sock);
        if (r < 0) {
                log_error_errno(r, "control socket %s: %m", d.socket);
                goto fail;
        }

        d.log_path = logfile;
        snprintf(pidbuf, sizeof pidbuf, "%ld\n", (long)getpid());
        /* The pid file is for people and scripts (the registry entry has
         * the pid too): a full state disk must not stop a mount, since only
         * a mount lets the sandbox rm to make room. */
        r = write_replace_at(AT_FDCWD, pidfile, pidbuf, strlen(pidbuf), 0644, false);
        if (r == -ENOSPC || r == -EDQUOT)
                log_warning("pid file %s not written: %s (the state dir's filesystem is full)", pidfile,
                            strerror(-r));
        else if (r < 0) {
                log_error_errno(r, "pid file %s: %m", pidfile);
                goto fail;
        }
        r = registry_write(&d);
        registered = r >= 0;
        if (r < 0) {
                log_error_errno(r, "registry entry %s: %m", d.registry);
                goto fail;
        }

        log_info("mounted %s (%s) on %s in %.1f ms (manifest and tree %.1f ms)", o.ref, d.snapshot, d.mountpoint,
                 (double)(now_ns() - t_start) / 1e6, (double)t_tree / 1e6);
        if (ready_fd >= 0) {
                int nfd = open("/dev/null", O_RDWR | O_CLOEXEC);
                if (log_fd >= 0) {
                        dup2(log_fd, STDOUT_FILENO);
                        (void)log_move_to(log_fd);
                        closep(&log_fd);
                }
                if (nfd >= 0) {
                        dup2(nfd, STDIN_FILENO);
                        close(nfd);
                }
                (void)write(ready_fd, "R", 1);
                close(ready_fd);
                ready_fd = -1;
        } else {
                printf("%s\n", d.mountpoint);
                fflush(stdout);
        }

        /* The API is served from here on; until then its socket queues
         * connections. Started while SIGTERM & co. are still blocked, so
         * its threads never take them. */
        api_start.d = &d;
        api_start.sock = TAKE_FD(sock);
        api_starting = pthread_create(&api_thread, NULL, api_start_run, &api_start) == 0;
        if (!api_starting)
                api_start_run(&api_start);
        stop_signals_mask(SIG_UNBLOCK);
        cfg = fuse_loop_cfg_create();
        if (!cfg) {
                r = -ENOMEM;
                goto fail;
        }
        fuse_loop_cfg_set_max_threads(cfg, 16);
        fuse_loop_cfg_set_idle_threads(cfg, 8);
        r = fuse_session_loop_mt(se, cfg);
        log_info("unmounting %s", d.mountpoint);
        ret = r < 0 ? 1 : 0;

fail:
        if (warming)
                pthread_join(warm_thread, NULL);
        if (api_starting)
                pthread_join(api_thread, NULL);
        if (registered)
                (void)unlink(d.registry);
        if (api_start.api)
                mhd.stop_daemon(api_start.api);
        /* Never leave the sandbox frozen behind us (it may be the one thing
         * that would unmount us). */
        d.freezer = freezer_free(d.freezer);
        closep(&sock);
        if (mounted)
                (void)unlink(d.socket);
        if (mounted)
                (void)unlink(pidfile);
        if (se) {
                if (mounted)
                        fuse_session_unmount(se);
                fs_session_io_end(d.fs);
                fuse_remove_signal_handlers(se);
                fuse_session_destroy(se);
        }
        if (cfg)
                fuse_loop_cfg_destroy(cfg);
        fuse_opt_free_args(&args);
        fs_free(d.fs);
        backend_free(d.node);
        backend_free(d.node_local);
        backend_free(d.empty_store);
        cache_free(d.cache);
        snapshot_free(d.snap);
        snapshot_free(d.last_parent);
        free(o.fuse_opts);
        if (ready_fd >= 0) /* the parent sees EOF and exits 1 */
                close(ready_fd);
        return ret;
}
