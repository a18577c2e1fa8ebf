/* trace.c — the access trace (trace.h, docs/access-trace.md).
 *
 * Recording is lock-free: fs_trace_read() runs on every FUSE worker thread.
 * A chunk is recorded once: the first READ to set its bit in t->seen (one
 * atomic OR) takes the next slot of t->rec (one atomic add), writes the
 * chunk index and then publishes the inode number with a release store; a
 * reader of the slots (fs_trace_blob()) skips a slot whose inode is still 0.
 * Once the window is over or the slots are used up, a READ costs one clock
 * read or one atomic load.
 *
 * Prefetch hits: t->fetched has one bit per chunk, set by the prefetcher
 * when it put the chunk into the cache (before the chunk's single-flight
 * slot is released, so a READ waiting for it sees the bit). A READ that gets
 * a chunk from the cache clears the bit; if it was set, that is a hit. So
 * prefetch_hits counts the prefetched chunks a READ then used, at most once
 * each (prefetch_hits <= prefetch_chunks), for one atomic load per cache
 * hit. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include "fs-internal.h"
#include "trace.h"

/* The prefetch threads' nice value: below the FUSE workers. */
#define PREFETCH_NICE 10

struct trace_rec {
        _Atomic uint64_t ino; /* 0: slot taken, not written yet */
        uint32_t chunk;       /* written before ino */
};

struct fs_trace {
        struct fs *fs;

        /* Recording. */
        uint64_t t_end;           /* immutable: when the window closes */
        atomic_bool rec_done;     /* window over or slots used up */
        _Atomic uint64_t *seen;   /* one bit per chunk of fs->tree */
        struct trace_rec *rec;    /* FS_TRACE_ENTRIES slots */
        atomic_size_t n_rec;      /* slots handed out (may run past the end) */
        uint32_t n_bits;          /* immutable: chunks covered by the bitmaps */

        /* Prefetch. */
        _Atomic uint64_t *fetched; /* one bit per chunk: prefetched, no READ hit yet */
        atomic_uint_fast64_t chunks, hits;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool planning, planned;    /* lock */
        uint32_t *todo;            /* chunk indices in trace order; fixed once planned */
        size_t n_todo, n_entries;  /* fixed once planned */
        uint64_t todo_bytes;       /* fixed once planned */
        atomic_size_t next;        /* next todo to fetch */
        atomic_uint running;       /* prefetch threads not finished */
        atomic_bool stop;
        pthread_t threads[FS_PREFETCH_THREADS];
        unsigned n_threads;
        uint64_t t0;
};

static bool bit_test_set(_Atomic uint64_t *map, uint32_t i)
{
        uint64_t m = UINT64_C(1) << (i & 63);

        if (atomic_load_explicit(&map[i >> 6], memory_order_relaxed) & m)
                return true;
        return atomic_fetch_or_explicit(&map[i >> 6], m, memory_order_relaxed) & m;
}

/* ---- recording ---- */

void fs_trace_read(struct fs *fs, const struct tree_inode *inode, uint64_t off, size_t len)
{
        struct fs_trace *t = fs->trace;
        uint32_t first, last;

        if (!t || !len || atomic_load_explicit(&t->rec_done, memory_order_relaxed))
                return;
        if (now_ns() > t->t_end) {
                atomic_store_explicit(&t->rec_done, true, memory_order_relaxed);
                return;
        }
        first = (uint32_t)(off / fs->chunk_size);
        last = (uint32_t)((off + len - 1) / fs->chunk_size);
        for (uint32_t ci = first; ci <= last; ci++) {
                uint32_t idx = tree_file_chunk(fs->tree, inode, ci);
                size_t slot;

                if (idx == TREE_HOLE || idx >= t->n_bits || bit_test_set(t->seen, idx))
                        continue;
                slot = atomic_fetch_add_explicit(&t->n_rec, 1, memory_order_relaxed);
                if (slot >= FS_TRACE_ENTRIES) {
                        atomic_store_explicit(&t->rec_done, true, memory_order_relaxed);
                        return;
                }
                t->rec[slot].chunk = ci;
                atomic_store_explicit(&t->rec[slot].ino, inode->attr.ino, memory_order_release);
        }
}

int fs_trace_blob(struct fs *fs, void **ret, size_t *ret_len)
{
        _cleanup_(freep) struct trace_entry *e = NULL;
        struct fs_trace *t;
        size_t n, k = 0;
        int r;

        if (!fs || !ret || !ret_len)
                return -EINVAL;
        *ret = NULL;
        *ret_len = 0;
        t = fs->trace;
        if (!t)
                return 0;
        n = MIN(atomic_load(&t->n_rec), (size_t)FS_TRACE_ENTRIES);
        if (n) {
                e = malloc(n * sizeof *e);
                if (!e)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
                uint64_t ino = atomic_load_explicit(&t->rec[i].ino, memory_order_acquire);
                if (ino)
                        e[k++] = (struct trace_entry){ .ino = ino, .chunk = t->rec[i].chunk };
        }
        if (!k) {
                /* This mount read no base data (yet): the base's own trace,
                 * if any, still describes how the sandbox starts. */
                _cleanup_(freep) struct trace_entry *base = NULL;
                uint32_t cs;

                if (snapshot_load_trace(fs->store, fs->snap, &cs, &base, &k) < 0 || !k)
                        return 0; /* a bad base trace was logged; store none */
                return trace_blob_encode(cs, base, k, ret, ret_len);
        }
        r = trace_blob_encode(fs->chunk_size, e, k, ret, ret_len);
        if (r == -EINVAL) { /* cannot happen: each chunk is recorded once */
                log_warning("access trace: %zu entries do not encode; no trace stored", k);
                return 0;
        }
        return r;
}

/* ---- prefetch ---- */

void fs_trace_fetched(struct fs *fs, uint32_t idx)
{
        struct fs_trace *t = fs->trace;

        if (!t || idx >= t->n_bits)
                return;
        atomic_fetch_or_explicit(&t->fetched[idx >> 6], UINT64_C(1) << (idx & 63), memory_order_relaxed);
        atomic_fetch_add_explicit(&t->chunks, 1, memory_order_relaxed);
}

void fs_trace_hit(struct fs *fs, uint32_t idx)
{
        struct fs_trace *t = fs->trace;
        uint64_t m = UINT64_C(1) << (idx & 63);

        if (!t || idx >= t->n_bits || !(atomic_load_explicit(&t->fetched[idx >> 6], memory_order_relaxed) & m))
                return;
        if (atomic_fetch_and_explicit(&t->fetched[idx >> 6], ~m, memory_order_relaxed) & m)
                atomic_fetch_add_explicit(&t->hits, 1, memory_order_relaxed);
}

bool fs_trace_stopping(const struct fs *fs)
{
        return fs->trace && atomic_load_explicit(&fs->trace->stop, memory_order_relaxed);
}

/* plan(): the mounted snapshot's trace as chunk indices of our tree, in
 * trace order, each once, within the bounds. Entries are in units of the
 * trace's chunk size: one may cover several of ours, or part of one. */
static int plan(struct fs_trace *t)
{
        struct fs *fs = t->fs;
        _cleanup_(freep) struct trace_entry *e = NULL;
        _cleanup_(freep) uint64_t *mine = NULL;
        uint64_t budget, bytes = 0;
        size_t n = 0, cap = 0, skipped = 0;
        uint32_t tcs;
        int r;

        r = snapshot_load_trace(fs->store, fs->snap, &tcs, &e, &n); /* logs */
        if (r < 0)
                return r;
        t->n_entries = n;
        budget = MIN(FS_PREFETCH_BYTES, cache_size_bound(fs->cache) / 2);
        mine = calloc((t->n_bits + 63) / 64, sizeof *mine);
        if (!mine)
                return -ENOMEM;
        for (size_t i = 0; i < n && !atomic_load(&t->stop); i++) {
                uint64_t from = (uint64_t)e[i].chunk * tcs, to = from + tcs;
                struct tree_inode in;
                uint32_t nch;

                if (tree_inode(fs->tree, e[i].ino, &in) < 0 || !S_ISREG(in.attr.mode)) {
                        skipped++;
                        continue;
                }
                nch = tree_file_nchunks(fs->tree, &in);
                if (from / fs->chunk_size >= nch) {
                        skipped++;
                        continue;
                }
                for (uint64_t ci = from / fs->chunk_size; ci <= (to - 1) / fs->chunk_size && ci < nch; ci++) {
                        uint32_t idx = tree_file_chunk(fs->tree, &in, (uint32_t)ci);
                        struct tree_chunk c;

                        if (idx == TREE_HOLE || idx >= t->n_bits || (mine[idx >> 6] & (UINT64_C(1) << (idx & 63))) ||
                            tree_chunk(fs->tree, idx, &c) < 0)
                                continue;
                        if (t->n_todo >= FS_PREFETCH_CHUNKS || bytes + c.ulen > budget)
                                goto done;
                        r = array_grow((void **)&t->todo, &cap, t->n_todo + 1, sizeof *t->todo);
                        if (r < 0)
                                return r;
                        mine[idx >> 6] |= UINT64_C(1) << (idx & 63);
                        t->todo[t->n_todo++] = idx;
                        bytes += c.ulen;
                }
        }
done:
        t->todo_bytes = bytes;
        log_debug("prefetch: %zu chunks (%" PRIu64 " bytes) from a trace of %zu entries, %zu skipped",
                  t->n_todo, bytes, n, skipped);
        return 0;
}

static void *prefetch_thread(void *p)
{
        struct fs_trace *t = p;
        bool leader;

        (void)setpriority(PRIO_PROCESS, (id_t)gettid(), PREFETCH_NICE); /* a hint */
        pthread_mutex_lock(&t->lock);
        leader = !t->planning;
        t->planning = true;
        pthread_mutex_unlock(&t->lock);
        if (leader) {
                (void)plan(t); /* a failure leaves nothing to do; logged */
                pthread_mutex_lock(&t->lock);
                t->planned = true;
                pthread_cond_broadcast(&t->cond);
                pthread_mutex_unlock(&t->lock);
        } else {
                pthread_mutex_lock(&t->lock);
                while (!t->planned && !atomic_load(&t->stop))
                        pthread_cond_wait(&t->cond, &t->lock);
                pthread_mutex_unlock(&t->lock);
        }

        while (!atomic_load(&t->stop)) {
                size_t i = atomic_fetch_add(&t->next, FS_PREFETCH_WINDOW);
                if (i >= t->n_todo)
                        break;
                /* A failure is the READ path's to report (logged once per
                 * chunk there); the prefetcher moves on. */
                (void)fs_prefetch_chunks(t->fs, t->todo + i, MIN((size_t)FS_PREFETCH_WINDOW, t->n_todo - i));
        }

        if (atomic_fetch_sub(&t->running, 1) == 1 && t->n_entries)
                log_info("prefetch: %" PRIu64 " of %zu chunks fetched (%" PRIu64 " bytes planned, trace of %zu entries) in %" PRIu64 " ms%s",
                         (uint64_t)atomic_load(&t->chunks), t->n_todo, t->todo_bytes, t->n_entries,
                         (now_ns() - t->t0) / 1000000, atomic_load(&t->stop) ? " (stopped)" : "");
        return NULL;
}

/* ---- lifecycle ---- */

static struct fs_trace *trace_free_(struct fs_trace *t)
{
        if (!t)
                return NULL;
        atomic_store(&t->stop, true);
        pthread_mutex_lock(&t->lock);
        pthread_cond_broadcast(&t->cond);
        pthread_mutex_unlock(&t->lock);
        for (unsigned i = 0; i < t->n_threads; i++)
                pthread_join(t->threads[i], NULL);
        pthread_mutex_destroy(&t->lock);
        pthread_cond_destroy(&t->cond);
        free(t->seen);
        free(t->fetched);
        free(t->rec);
        free(t->todo);
        free(t);
        return NULL;
}

int fs_trace_new(struct fs *fs, const struct fs_opts *o)
{
        struct fs_trace *t;
        size_t words;

        if (!fs || !o)
                return -EINVAL;
        fs->trace = NULL;
        t = calloc(1, sizeof *t);
        if (!t)
                return -ENOMEM;
        pthread_mutex_init(&t->lock, NULL);
        pthread_cond_init(&t->cond, NULL);
        t->fs = fs;
        t->t0 = now_ns();
        t->t_end = t->t0 + (uint64_t)FS_TRACE_SECONDS * NSEC_PER_SEC;
        t->n_bits = fs->n_chunks;
        words = MAX((size_t)(t->n_bits + 63) / 64, (size_t)1);
        t->seen = calloc(words, sizeof *t->seen);
        t->fetched = calloc(words, sizeof *t->fetched);
        t->rec = calloc(FS_TRACE_ENTRIES, sizeof *t->rec);
        if (!t->seen || !t->fetched || !t->rec) {
                trace_free_(t);
                return -ENOMEM;
        }
        fs->trace = t;

        if (o->no_prefetch || !fs->cache || !fs->snap->has_trace)
                return 0;
        for (unsigned i = 0; i < FS_PREFETCH_THREADS; i++) {
                int r;

                atomic_fetch_add(&t->running, 1);
                r = pthread_create(&t->threads[i], NULL, prefetch_thread, t);
                if (r != 0) {
                        atomic_fetch_sub(&t->running, 1);
                        /* Prefetch is a hint: mount without (all of) it. */
                        log_warning_errno(-r, "prefetch: start a thread: %m");
                        break;
                }
                t->n_threads++;
        }
        return 0;
}

void fs_trace_free(struct fs *fs)
{
        if (!fs)
                return;
        fs->trace = trace_free_(fs->trace);
}

void fs_trace_counters(const struct fs *fs, struct fs_counters *ret)
{
        const struct fs_trace *t = fs ? fs->trace : NULL;

        ret->prefetch_chunks = t ? atomic_load(&((struct fs_trace *)t)->chunks) : 0;
        ret->prefetch_hits = t ? atomic_load(&((struct fs_trace *)t)->hits) : 0;
}
