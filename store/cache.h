/* cache.h — node chunk cache: owns a directory of decompressed, already
 * verified chunks shared by every mount and process on the node, its size
 * bound and its LRU eviction. Thread-safe (one struct cache may be used from
 * many threads) and safe across processes (atomic inserts, flock'd evictor).
 * Never fetches, never decompresses and never computes SHA-256: callers put
 * only bytes whose SHA-256 they have checked, and decide whether a hit may be
 * used at all (DESIGN.md "Node cache", isolation).
 *
 * Layout of a cache directory CACHE:
 *   CACHE/config              "size_bound <bytes>\n": the bound is a property
 *                             of the directory, recorded by cache_open()
 *   CACHE/lock                flock(LOCK_EX|LOCK_NB) held by the one evictor
 *   CACHE/v1/<2 hex>/<64 hex> one entry per chunk address: a 64-byte header
 *                             (struct cache_entry_hdr) and the raw bytes
 *   CACHE/v1/<2 hex>/.tmp-*   in-flight inserts (only without O_TMPFILE)
 *
 * Entries are created complete and linked into place atomically (O_TMPFILE +
 * linkat, else temp file + rename), so a reader never sees a half-written
 * entry. They are not fsynced: after a host crash an entry may hold garbage,
 * which the header and XXH3 check on every cache_get() turns into a miss
 * (and the bad entry is removed). A cache miss is never an error.
 *
 * LRU without atime: a hit bumps the entry's mtime, at most once a minute per
 * entry; eviction removes the oldest mtimes first until the cache is below
 * 90% of its bound. An evictor runs after enough bytes were inserted by this
 * process (1/16 of the bound) and only if it gets the lock without waiting.
 * An insert that finds the cache's filesystem full (ENOSPC, EDQUOT) before
 * the bound is reached evicts a tenth of what the cache holds (one such
 * eviction at a time per process; after one that freed nothing, none for a
 * second) and tries once more: the space there is the bound then. */
#ifndef STASIS_CACHE_H
#define STASIS_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "digest.h"

#define CACHE_SIZE_DEFAULT (4ull << 30)
#define CACHE_SIZE_MIN (1ull << 20)
#define CACHE_ENTRY_MAGIC "STSCACH1"
/* A hit refreshes an entry's mtime only if it is older than this. */
#define CACHE_BUMP_SEC 60

/* On-disk entry header (little-endian), followed by ulen bytes. */
struct cache_entry_hdr {
        char magic[8];
        uint32_t version; /* 1 */
        uint32_t ulen;
        uint64_t xxh3; /* of the ulen bytes */
        uint8_t addr[32];
        uint64_t reserved;
};

struct cache;

struct cache_stats {
        uint64_t hits, misses, puts, bad_entries, evictions, evicted_bytes;
};

/* cache_open(): open (creating if needed) the cache at dir. size_bound > 0
 * records a new bound in CACHE/config; 0 keeps the recorded one (or
 * CACHE_SIZE_DEFAULT for a new cache). -EINVAL for a bound below
 * CACHE_SIZE_MIN; -errno. */
int cache_open(const char *dir, uint64_t size_bound, struct cache **ret);
struct cache *cache_free(struct cache *c);

uint64_t cache_size_bound(const struct cache *c);
const char *cache_path(const struct cache *c);

/* cache_get(): the bytes of chunk addr into dst (room for cap bytes); *ret_len
 * gets their length. 1 on a hit, 0 on a miss (absent, larger than cap, or a
 * bad entry: wrong magic, length, address or XXH3, which is removed),
 * -errno only for a bad argument. */
int cache_get(struct cache *c, const struct digest *addr, void *dst, size_t cap, size_t *ret_len);
/* cache_has(): 1 if an entry exists (not checked), 0 if not. Cheap: one stat. */
int cache_has(struct cache *c, const struct digest *addr);
/* cache_put(): insert chunk addr. The caller guarantees sha256(data) == addr:
 * the cache trusts it and never checks. An existing entry is kept. May run the
 * evictor (see above). 0 or -errno (the caller may ignore failures). */
int cache_put(struct cache *c, const struct digest *addr, const void *data, size_t len);
/* cache_evict(): run the evictor now if no other process runs one.
 * *ret_bytes (may be NULL) gets the bytes the cache held afterwards.
 * 1 if it ran, 0 if another evictor holds the lock, -errno. */
int cache_evict(struct cache *c, uint64_t *ret_bytes);
void cache_get_stats(const struct cache *c, struct cache_stats *ret);

#endif
