/* commit.h — moving trees between a directory and the store: commit (a
 * parallel walk-read-hash-compress-pack pipeline), restore (bit-exact, holes
 * as holes) and diff of two snapshots. Each call is self-contained and may run
 * concurrently with others on the same backend. */
#ifndef STASIS_COMMIT_H
#define STASIS_COMMIT_H

#include <jansson.h>
#include <stdint.h>

#include "backend.h"
#include "digest.h"
#include "snapshot.h"

/* progress(): called from one thread at a time, at most ~10 times a second. */
typedef void (*progress_fn)(void *ctx, const char *phase, uint64_t done, uint64_t total);

struct commit_opts {
        const char *dir;
        const struct digest *parent; /* NULL: a first generation */
        uint32_t chunk_size;         /* 0: the parent's, else CHUNK_SIZE_DEFAULT */
        int level;                   /* zstd level; 0: CHUNK_LEVEL_DEFAULT */
        unsigned threads;            /* 0: one per online CPU */
        const char *tag;             /* NULL: untagged root */
        json_t *labels;              /* may be NULL */
        json_t *image;               /* may be NULL */
        progress_fn progress;
        void *progress_ctx;
};

struct commit_stats {
        uint64_t files, dirs, symlinks, others;
        uint64_t bytes_logical; /* sum of file sizes */
        uint64_t bytes_read;    /* file data read */
        uint64_t chunks_total, chunks_new, chunks_reused;
        uint64_t bytes_new;     /* uncompressed bytes of new chunks */
        uint64_t bytes_packed;  /* compressed bytes written to new packs */
        uint64_t packs_new;
        uint64_t tree_bytes;
        uint64_t wall_ns, cpu_ns;
};

int store_commit(struct backend *b, const struct commit_opts *o, struct digest *ret,
                 struct commit_stats *ret_stats);

struct restore_stats {
        uint64_t files, bytes_written, chunks_read;
        uint64_t wall_ns;
};
/* store_restore(): dir must be missing or empty. Ownership is restored when
 * running as root. On error dir holds a partial tree and the error says so;
 * a file is never left holding unverified bytes. */
int store_restore(struct backend *b, const struct digest *snap, const char *dir,
                  progress_fn progress, void *progress_ctx, struct restore_stats *ret_stats);

/* diff: fn is called for each path that differs, in path order. For CHANGED
 * regular files ranges lists the changed byte ranges as [off, len] pairs. */
enum diff_kind { DIFF_ADDED, DIFF_REMOVED, DIFF_CHANGED };
typedef int (*diff_fn)(void *ctx, enum diff_kind kind, const char *path, const char *what,
                       const uint64_t (*ranges)[2], size_t n_ranges);
int store_diff(struct backend *b, const struct digest *a, const struct digest *bb, diff_fn fn,
               void *ctx);

#endif
