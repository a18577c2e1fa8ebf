/* packer.c — see packer.h.
 *
 * Full packs go to a writer thread (hash, write, fsync), so that the threads
 * that compress never wait for the disk; at most WRITE_QUEUE packs wait, then
 * producers block (bounded memory: (WRITE_QUEUE + 1) x PACK_TARGET).
 *
 * Lock order: pack_lock, then map_lock; wlock nests with nothing. No lock is
 * held across I/O. */
#include "packer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>

#include "snapshot.h"
#include "util.h"

#define WRITE_QUEUE 2

struct sealed {
        uint8_t *data;
        size_t len;
        int32_t id;
};

struct centry {
        struct digest addr;
        uint64_t xxh3;
        uint64_t offset;     /* in its pack */
        uint32_t ulen, clen;
        int32_t pack;        /* index into packs[]; -1 while being compressed */
        int32_t known_tree;  /* index into known[], or -1 */
        uint32_t known_chunk;
};

struct packer {
        struct backend *b;
        uint32_t cs;
        int level;

        const struct tree **known; /* set before the first add */
        size_t n_known;

        pthread_mutex_t map_lock;
        struct centry *entries;    /* map_lock */
        size_t n_entries, a_entries; /* map_lock */
        uint32_t *slots;           /* map_lock: entry index + 1, 0 = empty */
        size_t n_slots;            /* map_lock */

        pthread_mutex_t pack_lock;
        uint8_t *open_pack;        /* pack_lock */
        size_t open_len, open_cap; /* pack_lock */
        uint8_t *spare[WRITE_QUEUE + 1]; /* pack_lock: written packs' buffers, for reuse */
        size_t n_spare;            /* pack_lock */
        int32_t open_id;           /* pack_lock */
        struct digest *packs;      /* pack_lock: by id, set once written */
        size_t n_packs, a_packs;   /* pack_lock */

        pthread_mutex_t wlock;
        pthread_cond_t wcond;
        pthread_t writer;
        bool writer_started;
        struct sealed wq[WRITE_QUEUE]; /* wlock */
        size_t wq_len;             /* wlock */
        bool wq_busy;              /* wlock: the writer holds a pack */
        bool wq_stop;              /* wlock */
        int werror;                /* wlock: first write error */

        atomic_uint_fast64_t chunks_total, chunks_new, chunks_reused, bytes_new, bytes_packed,
                packs_new;
};

static int pack_write(struct packer *p, int32_t id, uint8_t *data, size_t len);

/* Pack buffers: PACK_CAP bytes, 2 MiB aligned and marked for transparent
 * huge pages, and reused once written: a commit fills pack after pack, and
 * fresh anonymous memory costs a page fault and a page clear per 4 KiB (on
 * this project's VM, ~4% of a commit's CPU in 4 KiB faults alone). At most
 * WRITE_QUEUE + 1 are kept, the bound the write queue sets anyway. */
#define PACK_ALIGN (2u << 20)
static size_t pack_cap(const struct packer *p)
{
        size_t n = PACK_TARGET + chunk_bound(p->cs);
        return (n + PACK_ALIGN - 1) / PACK_ALIGN * PACK_ALIGN;
}

/* pack_buffer(): a spare one, or a new one (pack_lock held). */
static uint8_t *pack_buffer(struct packer *p)
{
        uint8_t *b;
        if (p->n_spare)
                return p->spare[--p->n_spare];
        b = aligned_alloc(PACK_ALIGN, pack_cap(p));
        if (b)
                (void)madvise(b, pack_cap(p), MADV_HUGEPAGE); /* a hint: 4 KiB pages otherwise */
        return b;
}

/* pack_recycle(): a written pack's buffer back for the next one. */
static void pack_recycle(struct packer *p, uint8_t *b)
{
        pthread_mutex_lock(&p->pack_lock);
        if (p->n_spare < sizeof p->spare / sizeof p->spare[0]) {
                p->spare[p->n_spare++] = b;
                b = NULL;
        }
        pthread_mutex_unlock(&p->pack_lock);
        free(b);
}

static void *writer_main(void *arg)
{
        struct packer *p = arg;

        pthread_mutex_lock(&p->wlock);
        for (;;) {
                struct sealed s;
                int r;

                while (p->wq_len == 0 && !p->wq_stop)
                        pthread_cond_wait(&p->wcond, &p->wlock);
                if (p->wq_len == 0)
                        break;
                s = p->wq[0];
                memmove(&p->wq[0], &p->wq[1], (p->wq_len - 1) * sizeof p->wq[0]);
                p->wq_len--;
                p->wq_busy = true;
                pthread_cond_broadcast(&p->wcond);
                pthread_mutex_unlock(&p->wlock);

                r = pack_write(p, s.id, s.data, s.len);

                pthread_mutex_lock(&p->wlock);
                p->wq_busy = false;
                if (r < 0 && p->werror == 0)
                        p->werror = r;
                pthread_cond_broadcast(&p->wcond);
        }
        pthread_mutex_unlock(&p->wlock);
        return NULL;
}

/* writer_queue(): hand a full pack to the writer, waiting while the queue is
 * full. Returns a write error seen so far, if any. */
static int writer_queue(struct packer *p, uint8_t *data, size_t len, int32_t id)
{
        int r;
        pthread_mutex_lock(&p->wlock);
        while (p->wq_len == WRITE_QUEUE && p->werror == 0)
                pthread_cond_wait(&p->wcond, &p->wlock);
        r = p->werror;
        if (r == 0) {
                p->wq[p->wq_len++] = (struct sealed){ .data = data, .len = len, .id = id };
                pthread_cond_broadcast(&p->wcond);
        } else {
                free(data);
        }
        pthread_mutex_unlock(&p->wlock);
        return r;
}

/* writer_drain(): wait until every queued pack is written; the first error. */
static int writer_drain(struct packer *p)
{
        int r;
        pthread_mutex_lock(&p->wlock);
        while ((p->wq_len > 0 || p->wq_busy) && p->werror == 0)
                pthread_cond_wait(&p->wcond, &p->wlock);
        r = p->werror;
        pthread_mutex_unlock(&p->wlock);
        return r;
}

int packer_new(struct backend *b, uint32_t chunk_size, int level, struct packer **ret)
{
        struct packer *p;
        if (!b || !ret || !chunk_size_valid(chunk_size))
                return -EINVAL;
        p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        p->b = b;
        p->cs = chunk_size;
        p->level = level;
        p->open_id = -1;
        pthread_mutex_init(&p->map_lock, NULL);
        pthread_mutex_init(&p->pack_lock, NULL);
        pthread_mutex_init(&p->wlock, NULL);
        pthread_cond_init(&p->wcond, NULL);
        if (pthread_create(&p->writer, NULL, writer_main, p) != 0) {
                packer_free(p);
                return -EAGAIN;
        }
        p->writer_started = true;
        *ret = p;
        return 0;
}

struct packer *packer_free(struct packer *p)
{
        if (!p)
                return NULL;
        if (p->writer_started) {
                pthread_mutex_lock(&p->wlock);
                p->wq_stop = true;
                pthread_cond_broadcast(&p->wcond);
                pthread_mutex_unlock(&p->wlock);
                pthread_join(p->writer, NULL);
        }
        for (size_t i = 0; i < p->wq_len; i++) /* after an error */
                free(p->wq[i].data);
        free(p->known);
        free(p->entries);
        free(p->slots);
        free(p->open_pack);
        for (size_t i = 0; i < p->n_spare; i++)
                free(p->spare[i]);
        free(p->packs);
        pthread_mutex_destroy(&p->map_lock);
        pthread_mutex_destroy(&p->pack_lock);
        pthread_mutex_destroy(&p->wlock);
        pthread_cond_destroy(&p->wcond);
        free(p);
        return NULL;
}

int packer_add_known(struct packer *p, const struct tree *t)
{
        const struct tree **k;
        if (!p || !t)
                return -EINVAL;
        k = reallocarray(p->known, p->n_known + 1, sizeof *k);
        if (!k)
                return -ENOMEM;
        k[p->n_known++] = t;
        p->known = k;
        return 0;
}

static uint64_t addr_hash(const struct digest *d)
{
        uint64_t h;
        memcpy(&h, d->b, sizeof h);
        return h;
}

static int map_rehash(struct packer *p)
{
        size_t n = p->n_slots ? p->n_slots * 2 : 4096;
        uint32_t *s = calloc(n, sizeof *s);
        if (!s)
                return -ENOMEM;
        for (size_t i = 0; i < p->n_entries; i++) {
                size_t k = addr_hash(&p->entries[i].addr) & (n - 1);
                while (s[k])
                        k = (k + 1) & (n - 1);
                s[k] = (uint32_t)i + 1;
        }
        free(p->slots);
        p->slots = s;
        p->n_slots = n;
        return 0;
}

/* map_get_or_add(): *ret = entry index; 1 if this call added it (the caller
 * then packs its bytes), 0 if it existed, -errno. */
static int map_get_or_add(struct packer *p, const struct centry *e, uint32_t *ret)
{
        size_t k;
        int r = 0;

        pthread_mutex_lock(&p->map_lock);
        if ((p->n_entries + 1) * 2 > p->n_slots) {
                r = map_rehash(p);
                if (r < 0)
                        goto out;
        }
        for (k = addr_hash(&e->addr) & (p->n_slots - 1); p->slots[k]; k = (k + 1) & (p->n_slots - 1)) {
                if (digest_eq(&p->entries[p->slots[k] - 1].addr, &e->addr)) {
                        *ret = p->slots[k] - 1;
                        goto out;
                }
        }
        if (p->n_entries >= UINT32_MAX - 2) {
                r = -EFBIG;
                goto out;
        }
        r = array_grow((void **)&p->entries, &p->a_entries, p->n_entries + 1, sizeof *p->entries);
        if (r < 0)
                goto out;
        p->entries[p->n_entries] = *e;
        p->slots[k] = (uint32_t)p->n_entries + 1;
        *ret = (uint32_t)p->n_entries++;
        r = 1;
out:
        pthread_mutex_unlock(&p->map_lock);
        return r;
}

static int pack_write(struct packer *p, int32_t id, uint8_t *data, size_t len)
{
        struct digest d;
        int r = blob_write_data(p->b, data, len, &d);
        pack_recycle(p, data);
        if (r < 0)
                return log_error_errno(r, "write pack: %m");
        pthread_mutex_lock(&p->pack_lock);
        p->packs[id] = d;
        pthread_mutex_unlock(&p->pack_lock);
        atomic_fetch_add(&p->packs_new, 1);
        return 0;
}

/* pack_append(): copy frame into the open pack; write the pack if full. */
/* A new chunk's frame: len bytes at off in some buffer, for entry. */
struct pframe {
        uint32_t entry;
        size_t off, len;
};

/* pack_append(): n frames (in base), back to back in the open pack, split
 * only where a pack fills: the full one is sealed and queued, outside the
 * lock, and the rest goes on in the next. */
static int pack_append(struct packer *p, const uint8_t *base, const struct pframe *f, size_t n)
{
        size_t i = 0;
        int r;

        while (i < n) {
                uint8_t *seal = NULL;
                size_t seal_len = 0;
                int32_t seal_id = -1;

                pthread_mutex_lock(&p->pack_lock);
                for (; i < n && !seal; i++) {
                        if (!p->open_pack) {
                                r = array_grow((void **)&p->packs, &p->a_packs, p->n_packs + 1, sizeof *p->packs);
                                p->open_cap = pack_cap(p);
                                p->open_pack = r < 0 ? NULL : pack_buffer(p);
                                if (!p->open_pack) {
                                        pthread_mutex_unlock(&p->pack_lock);
                                        return -ENOMEM;
                                }
                                p->open_id = (int32_t)p->n_packs++;
                                p->open_len = 0;
                        }
                        memcpy(p->open_pack + p->open_len, base + f[i].off, f[i].len);
                        pthread_mutex_lock(&p->map_lock);
                        p->entries[f[i].entry].pack = p->open_id;
                        p->entries[f[i].entry].offset = p->open_len;
                        p->entries[f[i].entry].clen = (uint32_t)f[i].len;
                        pthread_mutex_unlock(&p->map_lock);
                        p->open_len += f[i].len;
                        if (p->open_len >= PACK_TARGET) {
                                seal = TAKE_PTR(p->open_pack);
                                seal_len = p->open_len;
                                seal_id = p->open_id;
                        }
                }
                pthread_mutex_unlock(&p->pack_lock);
                if (seal) {
                        r = writer_queue(p, seal, seal_len, seal_id);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

/* The new frames of one worker's run, kept until packer_batch_flush(). */
struct packer_batch {
        uint8_t *buf; /* the frames, back to back */
        size_t len, cap;
        struct pframe *f;
        size_t n, a;
};

struct packer_batch *packer_batch_new(void)
{
        return calloc(1, sizeof(struct packer_batch));
}

struct packer_batch *packer_batch_free(struct packer_batch *b)
{
        if (b) {
                free(b->buf);
                free(b->f);
                free(b);
        }
        return NULL;
}

int packer_batch_flush(struct packer *p, struct packer_batch *b)
{
        int r;

        if (!p || !b)
                return -EINVAL;
        r = b->n ? pack_append(p, b->buf, b->f, b->n) : 0;
        b->n = 0;
        b->len = 0;
        return r;
}

int packer_add(struct packer *p, struct chunk_codec *codec, const void *data, size_t len,
               uint32_t *ret_ref)
{
        return packer_add_batched(p, codec, NULL, data, len, ret_ref);
}

int packer_add_batched(struct packer *p, struct chunk_codec *codec, struct packer_batch *batch, const void *data,
                       size_t len, uint32_t *ret_ref)
{
        uint8_t *frame;
        struct centry e = { .pack = -1, .known_tree = -1 };
        size_t cap, flen;
        uint32_t idx;
        int r;

        if (!p || !codec || !data || !ret_ref || len == 0 || len > p->cs)
                return -EINVAL;
        atomic_fetch_add(&p->chunks_total, 1);
        digest_sha256(data, len, &e.addr);
        e.xxh3 = chunk_xxh3(data, len);
        e.ulen = (uint32_t)len;
        for (size_t i = 0; i < p->n_known; i++) {
                if (tree_chunk_find(p->known[i], &e.addr, &e.known_chunk) == 0) {
                        e.known_tree = (int32_t)i;
                        break;
                }
        }
        r = map_get_or_add(p, &e, &idx);
        if (r < 0)
                return r;
        *ret_ref = idx;
        if (r == 0 || e.known_tree >= 0) {
                atomic_fetch_add(&p->chunks_reused, 1);
                return 0;
        }
        cap = chunk_bound(len);
        if (batch) { /* compressed straight into the batch */
                if (array_grow((void **)&batch->buf, &batch->cap, batch->len + cap, 1) < 0 ||
                    array_grow((void **)&batch->f, &batch->a, batch->n + 1, sizeof *batch->f) < 0)
                        return -ENOMEM;
                frame = batch->buf + batch->len;
        } else {
                frame = chunk_codec_scratch(codec, cap);
                if (!frame)
                        return -ENOMEM;
        }
        r = chunk_compress(codec, data, len, frame, cap, &flen);
        if (r < 0)
                return log_error_errno(r, "compress chunk: %m");
        atomic_fetch_add(&p->chunks_new, 1);
        atomic_fetch_add(&p->bytes_new, len);
        atomic_fetch_add(&p->bytes_packed, flen);
        if (batch) {
                batch->f[batch->n++] = (struct pframe){ .entry = idx, .off = batch->len, .len = flen };
                batch->len += flen;
                return 1;
        }
        r = pack_append(p, frame, &(struct pframe){ .entry = idx, .len = flen }, 1);
        return r < 0 ? r : 1;
}

int packer_flush(struct packer *p)
{
        uint8_t *seal;
        size_t len;
        int32_t id;

        if (!p)
                return -EINVAL;
        pthread_mutex_lock(&p->pack_lock);
        seal = TAKE_PTR(p->open_pack);
        len = p->open_len;
        id = p->open_id;
        pthread_mutex_unlock(&p->pack_lock);
        if (seal && len == 0) {
                free(seal);
                seal = NULL;
        }
        if (seal) {
                int r = writer_queue(p, seal, len, id);
                if (r < 0)
                        return r;
        }
        return writer_drain(p);
}

int packer_add_to_builder(struct packer *p, struct tree_builder *tb, uint32_t **ret_map, size_t *ret_n)
{
        _cleanup_(freep) uint32_t *map = NULL, *bpack = NULL;
        int r;

        if (!p || !tb || !ret_map || !ret_n)
                return -EINVAL;
        map = calloc(MAX(p->n_entries, (size_t)1), sizeof *map);
        bpack = calloc(MAX(p->n_packs, (size_t)1), sizeof *bpack);
        if (!map || !bpack)
                return -ENOMEM;
        for (size_t i = 0; i < p->n_packs; i++) {
                r = tree_builder_add_pack(tb, &p->packs[i], &bpack[i]);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < p->n_entries; i++) {
                const struct centry *e = &p->entries[i];
                struct tree_chunk tc;
                if (e->known_tree >= 0) {
                        const struct tree *t = p->known[e->known_tree];
                        uint32_t pi;
                        r = tree_chunk(t, e->known_chunk, &tc);
                        if (r < 0)
                                return r;
                        r = tree_builder_add_pack(tb, tree_pack(t, tc.pack), &pi);
                        if (r < 0)
                                return r;
                        tc.pack = pi;
                } else {
                        if (e->pack < 0)
                                return -EINVAL; /* packer_flush() was not called */
                        tc = (struct tree_chunk){
                                .addr = e->addr, .xxh3 = e->xxh3, .offset = e->offset,
                                .pack = bpack[e->pack], .clen = e->clen, .ulen = e->ulen,
                        };
                }
                r = tree_builder_add_chunk(tb, &tc, &map[i]);
                if (r < 0)
                        return r;
        }
        *ret_n = p->n_entries;
        *ret_map = TAKE_PTR(map);
        return 0;
}

void packer_get_stats(struct packer *p, struct packer_stats *ret)
{
        *ret = (struct packer_stats){
                .chunks_total = atomic_load(&p->chunks_total),
                .chunks_new = atomic_load(&p->chunks_new),
                .chunks_reused = atomic_load(&p->chunks_reused),
                .bytes_new = atomic_load(&p->bytes_new),
                .bytes_packed = atomic_load(&p->bytes_packed),
                .packs_new = atomic_load(&p->packs_new),
        };
}
