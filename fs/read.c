/* read.c — the lazy read path: a chunk comes from the node cache if the
 * mount may use the hit, else from its pack in the mount's own store
 * (decoded and SHA-256-verified by chunk_decode), and then goes into the
 * cache. Bounded readahead runs on a small worker pool and only fills the
 * cache; a READ never waits for readahead except for a chunk that readahead
 * is fetching at that moment (single flight per chunk). The access-trace
 * prefetcher (trace.c) fills the cache through readahead's coalesced reads
 * (fs_prefetch_chunks()). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "fs-internal.h"
#include "trace.h"

void fs_tls_free(void *p)
{
        struct fs_tls *t = p;

        if (!t)
                return;
        chunk_codec_free(t->codec);
        free(t->chunk);
        free(t->frame);
        free(t->span);
        free(t->claimed);
        free(t);
}

struct fs_tls *fs_tls_get(struct fs *fs)
{
        struct fs_tls *t = pthread_getspecific(fs->tls);

        if (t)
                return t;
        t = calloc(1, sizeof *t);
        if (!t)
                return NULL;
        t->codec = chunk_codec_new(CHUNK_LEVEL_DEFAULT);
        t->chunk = malloc(fs->chunk_size);
        t->frame = malloc(chunk_bound(fs->chunk_size));
        if (!t->codec || !t->chunk || !t->frame || pthread_setspecific(fs->tls, t) != 0) {
                fs_tls_free(t);
                return NULL;
        }
        return t;
}

/* The most compressed bytes and chunks one coalesced read takes: from a
 * local store, and from a registry (where a round trip costs more). */
#define RA_SPAN (2u << 20)
#define RA_SPAN_REMOTE (4u << 20)
#define RA_BATCH 16u
#define RA_BATCH_REMOTE 64u

/* span_get(): a buffer of len bytes for one coalesced read; NULL if out of
 * memory. Locally, the thread's own (made on first use, kept): reads are
 * at most RA_SPAN. A remote mount's reads take up to 4 MiB, on any of a
 * dozen threads, so their buffers are mapped for the read and unmapped
 * after (span_put()): a buffer kept per thread, or a freed one that glibc
 * keeps in the thread's arena, held ~100 MiB after a registry mount read
 * its tree. */
static uint8_t *span_get(struct fs *fs, struct fs_tls *t, size_t len)
{
        void *p;

        if (fs->remote) {
                /* fd -1, as MAP_ANONYMOUS asks; cppcheck's posix model wants >= 0 */
                // cppcheck-suppress invalidFunctionArg
                p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                return p == MAP_FAILED ? NULL : p;
        }
        if (t->span_cap < len) {
                free(t->span);
                t->span = malloc(MAX(len, (size_t)RA_SPAN));
                t->span_cap = t->span ? MAX(len, (size_t)RA_SPAN) : 0;
        }
        return t->span;
}

static void span_put(struct fs *fs, uint8_t *p, size_t len)
{
        if (fs->remote && p)
                munmap(p, len);
}

/* pack_present(): whether pack i of our tree is in our own store, asked of
 * the backend once per pack. A cache hit counts only for chunks of present
 * packs (DESIGN.md "Node cache", isolation): knowing an address that some
 * other tenant's snapshot put in the cache is not enough to read it. */
static bool pack_present(struct fs *fs, uint32_t i)
{
        int8_t s = atomic_load(&fs->pack_state[i]);

        if (s == 0) {
                int r = backend_has(fs->store, tree_pack(fs->tree, i));
                /* A failed check is not memoized: ask again next time. */
                if (r < 0)
                        return false;
                s = r > 0 ? 1 : -1;
                atomic_store(&fs->pack_state[i], s);
        }
        return s > 0;
}

/* fail_chunk(): one log line per chunk for the mount's lifetime, however
 * often it is read; always -EIO. */
static int fail_chunk(struct fs *fs, uint32_t idx, const struct tree_chunk *c, int err,
                      const char *what)
{
        char cs[DIGEST_STR_LEN + 1], ps[DIGEST_STR_LEN + 1];

        if (!atomic_exchange(&fs->logged[idx], 1))
                log_error_errno(err, "chunk %s (pack %s, offset %" PRIu64 "): %s: %m",
                                digest_str(&c->addr, cs), digest_str(tree_pack(fs->tree, c->pack), ps),
                                c->offset, what);
        return -EIO;
}

/* fetch(): one chunk from its pack, verified. */
static int fetch(struct fs *fs, struct fs_tls *t, uint32_t idx, const struct tree_chunk *c,
                 void *dst)
{
        ssize_t n;
        int r;

        if (!pack_present(fs, c->pack))
                return fail_chunk(fs, idx, c, -ENOENT, "pack missing from the store");
        n = backend_read(fs->store, tree_pack(fs->tree, c->pack), c->offset, t->frame, c->clen);
        atomic_fetch_add(&fs->pack_reads, 1);
        if (n < 0)
                return fail_chunk(fs, idx, c, (int)n, "read failed");
        atomic_fetch_add(&fs->bytes_fetched, (uint64_t)n);
        if ((size_t)n < c->clen)
                return fail_chunk(fs, idx, c, -EBADMSG, "pack truncated");
        atomic_fetch_add(&fs->chunks_fetched, 1);
        r = chunk_decode(t->codec, t->frame, c->clen, c->ulen, fs->chunk_size, &c->addr, dst);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return fail_chunk(fs, idx, c, r, "corrupt (bad frame or SHA-256 mismatch)");
        return 0;
}

static int cache_hit(struct fs *fs, const struct tree_chunk *c, void *dst)
{
        size_t len;

        if (!fs->cache || !pack_present(fs, c->pack))
                return 0;
        /* cache_get() checked the entry's XXH3 and address; the length must
         * also be the one our tree names. */
        return cache_get(fs->cache, &c->addr, dst, fs->chunk_size, &len) == 1 && len == c->ulen;
}

static int span_fetch(struct fs *fs, struct fs_tls *t, uint32_t idx, const struct tree_chunk *c, void *dst);

/* Whose chunk it is: a READ's (and readahead's), or the access-trace
 * prefetcher's (trace.c), which only fills the cache and counts apart. */
enum get_mode { GET_READ, GET_PREFETCH };

/* chunk_get(): chunk idx into dst (chunk_size bytes of room). GET_PREFETCH
 * only makes sure the chunk is in the cache, and returns 1 if
 * this call fetched it. 0, -EIO, -ENOMEM. A READ's cache hit on a chunk the
 * prefetcher brought in is a prefetch hit (fs_trace_hit()). */
static int chunk_get(struct fs *fs, struct fs_tls *t, uint32_t idx, void *dst, enum get_mode mode)
{
        bool readahead = mode != GET_READ, hit;
        struct tree_chunk c;
        int r;

        r = tree_chunk(fs->tree, idx, &c);
        if (r < 0)
                return -EIO;
        if (readahead ? (!fs->cache || cache_has(fs->cache, &c.addr) > 0)
                      : cache_hit(fs, &c, dst)) {
                if (!readahead) {
                        atomic_fetch_add(&fs->cache_hits, 1);
                        fs_trace_hit(fs, idx);
                }
                return 0;
        }

        /* Single flight: whoever fetches a chunk first fills the cache for
         * the others waiting here. */
        pthread_mutex_lock(&fs->fetch_lock);
        while (fs->inflight[idx])
                pthread_cond_wait(&fs->fetch_cond, &fs->fetch_lock);
        fs->inflight[idx] = 1;
        pthread_mutex_unlock(&fs->fetch_lock);

        hit = readahead ? cache_has(fs->cache, &c.addr) > 0 : cache_hit(fs, &c, dst);
        if (hit) {
                if (!readahead) {
                        atomic_fetch_add(&fs->cache_hits, 1);
                        fs_trace_hit(fs, idx);
                }
                r = 0;
        } else {
                if (mode == GET_READ)
                        atomic_fetch_add(&fs->cache_misses, 1);
                r = mode == GET_READ && fs->remote && fs->cache ? span_fetch(fs, t, idx, &c, dst)
                                                                : fetch(fs, t, idx, &c, dst);
                /* best effort; a prefetched chunk counts once it is in */
                if (r >= 0 && fs->cache && cache_put(fs->cache, &c.addr, dst, c.ulen) >= 0 &&
                    mode == GET_PREFETCH) {
                        fs_trace_fetched(fs, idx); /* before a waiting READ looks */
                        r = 1;
                }
        }

        pthread_mutex_lock(&fs->fetch_lock);
        fs->inflight[idx] = 0;
        pthread_cond_broadcast(&fs->fetch_cond);
        pthread_mutex_unlock(&fs->fetch_lock);
        return r;
}

static void readahead_queue(struct fs *fs, const struct tree_inode *inode, uint32_t first,
                            uint32_t end)
{
        pthread_mutex_lock(&fs->ra_lock);
        /* A full queue drops work: readahead is a hint, never a backlog. */
        for (uint32_t i = first; i < end && fs->ra_len < fs->ra_cap; i++) {
                uint32_t idx = tree_file_chunk(fs->tree, inode, i);
                if (idx != TREE_HOLE)
                        fs->ra_queue[(fs->ra_head + fs->ra_len++) % fs->ra_cap] = idx;
        }
        pthread_cond_signal(&fs->ra_cond);
        pthread_mutex_unlock(&fs->ra_lock);
}

/* Readahead reads a run of chunks that lie back to back in one pack with
 * one backend read (one Range GET from a registry, where a request's
 * round trip, not its bytes, is the cost), up to fs->ra_span compressed
 * bytes and fs->ra_batch chunks. */

static void ra_release(struct fs *fs, const uint32_t *idx, size_t n)
{
        pthread_mutex_lock(&fs->fetch_lock);
        for (size_t i = 0; i < n; i++)
                fs->inflight[idx[i]] = 0;
        pthread_cond_broadcast(&fs->fetch_cond);
        pthread_mutex_unlock(&fs->fetch_lock);
}

/* ra_claim(): whether this worker fetches chunk idx: not cached, and no one
 * else is fetching it (then it is marked in flight). */
static bool ra_claim(struct fs *fs, uint32_t idx, const struct tree_chunk *c)
{
        bool mine = false;

        if (cache_has(fs->cache, &c->addr) > 0)
                return false;
        pthread_mutex_lock(&fs->fetch_lock);
        if (!fs->inflight[idx]) {
                fs->inflight[idx] = 1;
                mine = true;
        }
        pthread_mutex_unlock(&fs->fetch_lock);
        /* A READ may have fetched and cached it between the look above and
         * the claim (chunk_get() looks again after its claim, too). */
        if (mine && cache_has(fs->cache, &c->addr) > 0) {
                ra_release(fs, &idx, 1);
                mine = false;
        }
        return mine;
}

/* cache_span(): chunks idx[0..n) of one pack, read into span from pack
 * offset base (got bytes): each decoded, verified and put in the cache, up
 * to the first one the read does not hold. A chunk that fails is left out
 * (a READ of it fetches it alone and reports it). They count as the
 * prefetcher's (GET_PREFETCH: before the caller releases them, as
 * chunk_get() does) or else as readahead's. */
static void cache_span(struct fs *fs, struct fs_tls *t, const uint8_t *span, uint64_t base, size_t got,
                       const uint32_t *idx, size_t n, enum get_mode mode)
{
        for (size_t i = 0; i < n; i++) {
                struct tree_chunk c;
                if (tree_chunk(fs->tree, idx[i], &c) < 0 || c.offset < base || c.offset - base + c.clen > got)
                        break;
                /* into t->frame: a caller's dst may be t->chunk */
                if (chunk_decode(t->codec, span + (c.offset - base), c.clen, c.ulen, fs->chunk_size, &c.addr,
                                 t->frame) >= 0 &&
                    cache_put(fs->cache, &c.addr, t->frame, c.ulen) >= 0) {
                        atomic_fetch_add(&fs->chunks_fetched, 1);
                        if (mode == GET_PREFETCH)
                                fs_trace_fetched(fs, idx[i]);
                        else
                                atomic_fetch_add(&fs->readahead_chunks, 1);
                }
        }
}

/* ra_run(): chunks run[0..n), claimed, back to back in one pack from off:
 * one read, then each decoded, verified and put in the cache. A chunk that
 * fails is left out (a READ of it fetches it alone and reports it). */
static void ra_run(struct fs *fs, struct fs_tls *t, const uint32_t *run, size_t n, const struct tree_chunk *first,
                   uint64_t len, enum get_mode mode)
{
        uint8_t *span;
        ssize_t got;

        if (!pack_present(fs, first->pack) || !(span = span_get(fs, t, (size_t)len)))
                return;
        got = backend_read(fs->store, tree_pack(fs->tree, first->pack), first->offset, span, (size_t)len);
        atomic_fetch_add(&fs->pack_reads, 1);
        if (got < 0) {
                span_put(fs, span, (size_t)len);
                return;
        }
        atomic_fetch_add(&fs->bytes_fetched, (uint64_t)got);
        cache_span(fs, t, span, first->offset, (size_t)got, run, n, mode);
        span_put(fs, span, (size_t)len);
}

/* The prefetcher's runs from a registry skip at most this many bytes
 * between two chunks: its chunks, unlike one file's, may lie far apart. */
#define PREFETCH_GAP (256u << 10)

/* ra_batch(): chunks batch[0..nb) into the cache, runs of them that follow
 * each other in a pack read at once; a chunk already cached or in flight
 * ends a run. mode: whose chunks they are (readahead's, GET_READ, or the
 * prefetcher's, GET_PREFETCH). */
static void ra_batch(struct fs *fs, struct fs_tls *t, const uint32_t *batch, size_t nb, enum get_mode mode)
{
        uint32_t run[RA_BATCH_REMOTE];
        size_t nr = 0;
        struct tree_chunk first = {}, last = {};
        uint64_t len = 0;

        for (size_t i = 0; i <= nb; i++) {
                struct tree_chunk c = {};
                bool next = i < nb && tree_chunk(fs->tree, batch[i], &c) >= 0;
                /* Next in the same pack, within ra_span of the run's start.
                 * From a registry also across a gap: the bytes between
                 * (other files' chunks, which parallel commit workers
                 * interleave) are read and skipped; a round trip costs
                 * more than they do. Locally only back to back. */
                bool joins = next && nr > 0 && c.pack == last.pack &&
                             (fs->remote ? c.offset >= last.offset + last.clen &&
                                                   (mode != GET_PREFETCH ||
                                                    c.offset - (last.offset + last.clen) <= PREFETCH_GAP)
                                         : c.offset == last.offset + last.clen) &&
                             c.offset + c.clen - first.offset <= fs->ra_span && nr < fs->ra_batch;

                if (nr > 0 && !joins) {
                        ra_run(fs, t, run, nr, &first, len, mode);
                        ra_release(fs, run, nr);
                        nr = 0;
                        len = 0;
                        /* an unmount waits for one read, not a window */
                        if (mode == GET_PREFETCH && fs_trace_stopping(fs))
                                return;
                }
                if (!next || c.clen > fs->ra_span || !ra_claim(fs, batch[i], &c))
                        continue;
                if (nr == 0)
                        first = c;
                run[nr++] = batch[i];
                last = c;
                len = c.offset + c.clen - first.offset;
        }
}

/* Span reads (remote mounts). A READ that misses reads a span of its
 * chunk's pack from that chunk on, not the chunk alone, and caches what
 * follows it there: a commit packs files in tree-walk order, so the chunks
 * after it are mostly the files after it, which a reader of many small files
 * (a container starting, `grep -r`, a backup) asks for next. From a registry
 * a round trip costs more than the bytes: one Range GET per small file was
 * ~2 ms on loopback, 28,000 GETs to read 30,000 files. The span starts at
 * SPAN_MIN compressed bytes, doubles up to SPAN_MAX while misses land just
 * after the last span in pack order, and starts over after a miss
 * elsewhere, so a random reader pays one small span per miss. */
#define SPAN_MIN (256u << 10)
#define SPAN_MAX (4u << 20)
#define SPAN_CHUNKS 4096u /* chunks one span caches, at most */
#define SPAN_NEAR 64u     /* pack positions past the last span still "next" */

struct pack_key {
        uint32_t pack, idx;
        uint64_t offset;
};

static int pack_key_cmp(const void *a, const void *b)
{
        const struct pack_key *x = a, *y = b;

        if (x->pack != y->pack)
                return x->pack < y->pack ? -1 : 1;
        return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* pack_order(): fs->by_pack and fs->pack_pos, made once (span_lock held). */
static int pack_order(struct fs *fs)
{
        struct pack_key *k;
        uint32_t n = fs->n_chunks;

        if (fs->pack_pos)
                return 0;
        k = malloc(MAX(n, 1u) * sizeof *k);
        fs->by_pack = malloc(MAX(n, 1u) * sizeof *fs->by_pack);
        fs->pack_pos = malloc(MAX(n, 1u) * sizeof *fs->pack_pos);
        if (!k || !fs->by_pack || !fs->pack_pos)
                goto nomem;
        for (uint32_t i = 0; i < n; i++) {
                struct tree_chunk c;
                if (tree_chunk(fs->tree, i, &c) < 0)
                        goto nomem; /* tree_load() rules this out */
                k[i] = (struct pack_key){ .pack = c.pack, .idx = i, .offset = c.offset };
        }
        qsort(k, n, sizeof *k, pack_key_cmp);
        for (uint32_t p = 0; p < n; p++) {
                fs->by_pack[p] = k[p].idx;
                fs->pack_pos[k[p].idx] = p;
        }
        free(k);
        return 0;
nomem:
        free(k);
        free(fs->by_pack);
        free(fs->pack_pos);
        fs->by_pack = fs->pack_pos = NULL;
        return -ENOMEM;
}

/* span_plan(): where chunk idx is in pack order and how many compressed
 * bytes its span reads; -ENOMEM. */
static int span_plan(struct fs *fs, uint32_t idx, uint32_t *ret_pos, uint32_t *ret_bytes)
{
        uint32_t pos;
        int r;

        pthread_mutex_lock(&fs->span_lock);
        r = pack_order(fs);
        if (r == 0) {
                pos = fs->pack_pos[idx];
                if (fs->span_bytes && pos >= fs->span_from && pos <= fs->span_next + SPAN_NEAR)
                        fs->span_bytes = MIN(fs->span_bytes * 2, SPAN_MAX);
                else
                        fs->span_bytes = SPAN_MIN;
                fs->span_from = pos;
                fs->span_next = pos + 1;
                *ret_pos = pos;
                *ret_bytes = fs->span_bytes;
        }
        pthread_mutex_unlock(&fs->span_lock);
        return r;
}

/* span_fetch(): chunk idx (claimed by the caller; not cached) into dst, and
 * the chunks after it in its pack that are neither cached nor in flight,
 * within the span, into the cache: one backend read. idx fails as fetch()
 * would; a chunk after it that fails is left out (a READ of it fetches it
 * alone and reports it). */
static int span_fetch(struct fs *fs, struct fs_tls *t, uint32_t idx, const struct tree_chunk *c, void *dst)
{
        uint32_t pos = 0, bytes = 0, p, n = 0;
        uint64_t end = c->offset + c->clen;
        uint8_t *span;
        ssize_t got;
        int r;

        if (!pack_present(fs, c->pack))
                return fail_chunk(fs, idx, c, -ENOENT, "pack missing from the store");
        if (span_plan(fs, idx, &pos, &bytes) < 0 ||
            (!t->claimed && !(t->claimed = malloc(SPAN_CHUNKS * sizeof *t->claimed))))
                return fetch(fs, t, idx, c, dst);
        for (p = pos + 1; p < fs->n_chunks && n < SPAN_CHUNKS; p++) {
                uint32_t j = fs->by_pack[p];
                struct tree_chunk d = {};
                if (tree_chunk(fs->tree, j, &d) < 0 || d.pack != c->pack || d.offset < end ||
                    d.offset + d.clen - c->offset > bytes)
                        break;
                if (!ra_claim(fs, j, &d))
                        continue;
                t->claimed[n++] = j;
                end = d.offset + d.clen;
        }
        pthread_mutex_lock(&fs->span_lock);
        if (fs->span_from == pos)
                fs->span_next = p;
        pthread_mutex_unlock(&fs->span_lock);
        span = n ? span_get(fs, t, (size_t)(end - c->offset)) : NULL;
        if (!span) {
                ra_release(fs, t->claimed, n);
                return fetch(fs, t, idx, c, dst);
        }

        got = backend_read(fs->store, tree_pack(fs->tree, c->pack), c->offset, span, (size_t)(end - c->offset));
        atomic_fetch_add(&fs->pack_reads, 1);
        if (got < 0) {
                r = fail_chunk(fs, idx, c, (int)got, "read failed");
                goto out;
        }
        atomic_fetch_add(&fs->bytes_fetched, (uint64_t)got);
        if ((uint64_t)got < c->clen) {
                r = fail_chunk(fs, idx, c, -EBADMSG, "pack truncated");
                goto out;
        }
        atomic_fetch_add(&fs->chunks_fetched, 1);
        r = chunk_decode(t->codec, span, c->clen, c->ulen, fs->chunk_size, &c->addr, dst);
        if (r < 0 && r != -ENOMEM)
                r = fail_chunk(fs, idx, c, r, "corrupt (bad frame or SHA-256 mismatch)");
        cache_span(fs, t, span, c->offset, (size_t)got, t->claimed, n, GET_READ);
out:
        span_put(fs, span, (size_t)(end - c->offset));
        ra_release(fs, t->claimed, n);
        return r;
}

int fs_prefetch_chunks(struct fs *fs, const uint32_t *idx, size_t n)
{
        struct fs_tls *t = fs_tls_get(fs);
        struct pack_key k[FS_PREFETCH_WINDOW];
        uint32_t batch[FS_PREFETCH_WINDOW];
        size_t nk = 0;

        if (!t)
                return -ENOMEM;
        if (!fs->cache || n > FS_PREFETCH_WINDOW)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                struct tree_chunk c;
                if (idx[i] >= fs->n_chunks || tree_chunk(fs->tree, idx[i], &c) < 0)
                        continue;
                if (c.clen > fs->ra_span) /* more than one coalesced read takes */
                        (void)chunk_get(fs, t, idx[i], t->chunk, GET_PREFETCH);
                else
                        k[nk++] = (struct pack_key){ .pack = c.pack, .idx = idx[i], .offset = c.offset };
        }
        qsort(k, nk, sizeof *k, pack_key_cmp);
        for (size_t i = 0; i < nk; i++)
                batch[i] = k[i].idx;
        ra_batch(fs, t, batch, nk, GET_PREFETCH);
        return 0;
}

static void *readahead_worker(void *p)
{
        struct fs *fs = p;
        struct fs_tls *t = fs_tls_get(fs);

        for (;;) {
                uint32_t batch[RA_BATCH_REMOTE];
                size_t nb = 0;

                pthread_mutex_lock(&fs->ra_lock);
                while (!fs->ra_stop && fs->ra_len == 0)
                        pthread_cond_wait(&fs->ra_cond, &fs->ra_lock);
                if (fs->ra_stop) {
                        pthread_mutex_unlock(&fs->ra_lock);
                        break;
                }
                while (fs->ra_len > 0 && nb < fs->ra_batch) {
                        batch[nb++] = fs->ra_queue[fs->ra_head];
                        fs->ra_head = (fs->ra_head + 1) % fs->ra_cap;
                        fs->ra_len--;
                }
                pthread_mutex_unlock(&fs->ra_lock);
                if (!t || !fs->cache)
                        continue;

                ra_batch(fs, t, batch, nb, GET_READ);
        }
        return NULL;
}

void fs_readahead_init(struct fs *fs)
{
        fs->ra_batch = fs->remote ? RA_BATCH_REMOTE : RA_BATCH;
        fs->ra_span = fs->remote ? RA_SPAN_REMOTE : RA_SPAN;
}

int fs_readahead_start(struct fs *fs, unsigned workers)
{
        fs->ra_cap = MAX(64u, 2 * fs->ra_chunks);
        fs->ra_queue = calloc(fs->ra_cap, sizeof *fs->ra_queue);
        fs->ra_threads = calloc(workers, sizeof *fs->ra_threads);
        if (!fs->ra_queue || !fs->ra_threads)
                return -ENOMEM;
        for (unsigned i = 0; i < workers; i++) {
                int r = pthread_create(&fs->ra_threads[i], NULL, readahead_worker, fs);
                if (r != 0)
                        return -r;
                fs->n_ra_threads++;
        }
        return 0;
}

void fs_readahead_stop(struct fs *fs)
{
        pthread_mutex_lock(&fs->ra_lock);
        fs->ra_stop = true;
        pthread_cond_broadcast(&fs->ra_cond);
        pthread_mutex_unlock(&fs->ra_lock);
        for (unsigned i = 0; i < fs->n_ra_threads; i++)
                pthread_join(fs->ra_threads[i], NULL);
        fs->n_ra_threads = 0;
}

/* read_window(): if chunk first of the file is not cached, chunks first
 * through last and the readahead window after them into the cache, as
 * coalesced reads (ra_batch()). */
static void read_window(struct fs *fs, struct fs_tls *t, const struct tree_inode *inode, uint32_t first,
                        uint32_t last)
{
        uint32_t batch[RA_BATCH_REMOTE], nch = tree_file_nchunks(fs->tree, inode), idx;
        struct tree_chunk c;
        size_t n = 0;

        idx = first < nch ? tree_file_chunk(fs->tree, inode, first) : TREE_HOLE;
        if (idx == TREE_HOLE || tree_chunk(fs->tree, idx, &c) < 0 || cache_has(fs->cache, &c.addr) > 0)
                return;
        for (uint32_t i = first; i < nch && i <= last + fs->ra_chunks && n < fs->ra_batch; i++) {
                idx = tree_file_chunk(fs->tree, inode, i);
                if (idx != TREE_HOLE)
                        batch[n++] = idx;
        }
        ra_batch(fs, t, batch, n, GET_READ);
}

int fs_read_data(struct fs *fs, const struct tree_inode *inode, struct fs_file *f, uint64_t off,
                 size_t len, uint8_t *dst)
{
        uint64_t pos = off, end = off + len, cs = fs->chunk_size;
        struct fs_tls *t = fs_tls_get(fs);

        if (!t)
                return -ENOMEM;
        /* A sequential READ that misses: its chunks and the readahead
         * window in one coalesced read, not one read per chunk (from a
         * registry each read is a round trip). */
        if (f && fs->remote && fs->ra_chunks && fs->cache && off > 0 && len > 0) {
                /* near the last READ's end: the kernel sends a sequential
                 * reader's READs concurrently, not always in order */
                uint64_t prev = atomic_load(&f->next_off);
                if (prev > 0 && prev <= off + FS_READAHEAD_BYTES && off <= prev + FS_READAHEAD_BYTES)
                        read_window(fs, t, inode, (uint32_t)(off / cs), (uint32_t)((end - 1) / cs));
        }
        while (pos < end) {
                uint32_t ci = (uint32_t)(pos / cs), idx;
                uint64_t coff = pos % cs, n = MIN(cs - coff, end - pos);
                struct tree_chunk c;
                int r;

                idx = tree_file_chunk(fs->tree, inode, ci);
                if (idx == TREE_HOLE) {
                        memset(dst + (pos - off), 0, n); /* never fetched */
                } else {
                        r = chunk_get(fs, t, idx, t->chunk, GET_READ);
                        if (r < 0)
                                return r;
                        if (tree_chunk(fs->tree, idx, &c) < 0 || coff + n > c.ulen)
                                return -EIO; /* tree_load() rules this out */
                        memcpy(dst + (pos - off), t->chunk + coff, n);
                }
                pos += n;
        }

        if (f)
                fs_trace_read(fs, inode, off, len);
        /* Sequential? The second READ that starts where the last one ended
         * queues the next ra_chunks chunks, each chunk at most once. */
        if (f && fs->ra_chunks) {
                uint64_t expect = atomic_exchange(&f->next_off, end);
                if (expect == off && off > 0) {
                        uint32_t nch = tree_file_nchunks(fs->tree, inode);
                        uint32_t last = (uint32_t)((end - 1) / cs);
                        uint32_t from = MAX((uint32_t)atomic_load(&f->ra_next), last + 1);
                        uint32_t to = MIN(nch, last + 1 + fs->ra_chunks);
                        if (from < to) {
                                atomic_store(&f->ra_next, to);
                                readahead_queue(fs, inode, from, to);
                        }
                }
        }
        return 0;
}
