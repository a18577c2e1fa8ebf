/* registry-copy.c — see oci.h: push and pull of one snapshot between a store
 * and a registry. Blobs move on a small pool of threads (each blob read
 * whole, hashed, written); the manifest goes last, so a registry never shows
 * a tag whose blobs are missing, and a local store never gets a root whose
 * blobs it lacks. Every blob is hashed on the way in both directions. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oci.h"
#include "snapshot.h"
#include "util.h"

#define JOBS_DEFAULT 4u
#define JOBS_MAX 64u
#define BLOB_MAX ((size_t)TREE_BLOB_MAX)

static void snapshot_freep_(struct snapshot **s) { snapshot_free(*s); }

struct copy {
        struct backend *src, *dst;
        const char *what; /* "push" / "pull", for log lines */
        struct digest *blobs;
        size_t n;
        atomic_size_t next;
        atomic_int err;
        atomic_uint_fast64_t copied, skipped, bytes_copied;
};

static void *copy_worker(void *p)
{
        struct copy *c = p;

        for (;;) {
                _cleanup_(freep) void *buf = NULL;
                char ds[DIGEST_STR_LEN + 1];
                size_t i = atomic_fetch_add(&c->next, 1), len;
                int r, zero = 0;

                if (i >= c->n || atomic_load(&c->err))
                        break;
                digest_str(&c->blobs[i], ds);
                r = backend_has(c->dst, &c->blobs[i]);
                if (r > 0) {
                        atomic_fetch_add(&c->skipped, 1);
                        continue;
                }
                if (r == 0) {
                        r = blob_read_verified(c->src, &c->blobs[i], BLOB_MAX, &buf, &len);
                        if (r == -EBADMSG) { /* logged, naming the blob */
                                atomic_compare_exchange_strong(&c->err, &zero, r);
                                break;
                        }
                        if (r >= 0)
                                r = backend_write(c->dst, &c->blobs[i], buf, len);
                }
                if (r < 0) {
                        if (atomic_compare_exchange_strong(&c->err, &zero, r))
                                log_error_errno(r, "%s: blob %s: %m", c->what, ds);
                        break;
                }
                atomic_fetch_add(&c->copied, 1);
                atomic_fetch_add(&c->bytes_copied, len);
        }
        return NULL;
}

static int copy_run(struct copy *c, unsigned jobs)
{
        pthread_t th[JOBS_MAX];
        unsigned started = 0;

        jobs = jobs ? MIN(jobs, JOBS_MAX) : JOBS_DEFAULT;
        jobs = (unsigned)MIN((size_t)jobs, MAX(c->n, (size_t)1));
        for (unsigned i = 0; i < jobs; i++) {
                if (pthread_create(&th[i], NULL, copy_worker, c) != 0)
                        break;
                started++;
        }
        if (started == 0)
                copy_worker(c);
        for (unsigned i = 0; i < started; i++)
                pthread_join(th[i], NULL);
        return atomic_load(&c->err);
}

/* blobs_of(): config, tree, every pack and the access trace of s. */
static int blobs_of(const struct snapshot *s, struct digest **ret, size_t *ret_n)
{
        struct digest *v = calloc((size_t)s->n_packs + 3, sizeof *v);
        size_t n = 0;

        if (!v)
                return -ENOMEM;
        v[n++] = s->config_digest;
        v[n++] = s->tree_digest;
        for (uint32_t i = 0; i < s->n_packs; i++)
                v[n++] = s->packs[i];
        if (s->has_trace)
                v[n++] = s->trace_digest;
        *ret = v;
        *ret_n = n;
        return 0;
}

static uint64_t bytes_of(const struct snapshot *s)
{
        uint64_t b = s->tree_size + (s->has_trace ? s->trace_size : 0);
        for (uint32_t i = 0; i < s->n_packs; i++)
                b += s->pack_sizes[i];
        return b;
}

int oci_push(struct backend *src, const struct digest *snap, struct backend *dst, const char *tag,
             unsigned jobs, struct oci_copy_stats *ret)
{
        _cleanup_(snapshot_freep_) struct snapshot *s = NULL;
        _cleanup_(freep) struct digest *blobs = NULL;
        _cleanup_(freep) void *mbuf = NULL;
        struct oci_stats before, after;
        struct copy c = { .src = src, .dst = dst, .what = "push" };
        char ds[DIGEST_STR_LEN + 1];
        struct digest have;
        bool skipped = false;
        uint64_t t0 = now_ns();
        size_t mlen, n;
        int r;

        if (!src || !snap || !backend_is_oci(dst) || !ret)
                return -EINVAL;
        digest_str(snap, ds);
        r = snapshot_open(src, snap, &s); /* logs */
        if (r < 0)
                return r;
        r = blob_read_verified(src, snap, MANIFEST_MAX, &mbuf, &mlen);
        if (r < 0)
                return r == -EBADMSG ? r : log_error_errno(r, "push: read manifest %s: %m", ds);
        r = blobs_of(s, &blobs, &n);
        if (r < 0)
                return r;
        backend_oci_stats(dst, &before);
        c.blobs = blobs;
        c.n = n;
        r = copy_run(&c, jobs);
        if (r < 0)
                return r; /* logged; no manifest was put */
        /* A re-push of what the tag names already uploads nothing at all. */
        if (oci_manifest_head(dst, tag ? tag : ds, &have) > 0 && digest_eq(&have, snap))
                skipped = true;
        else {
                r = oci_manifest_put(dst, tag, mbuf, mlen); /* logs */
                if (r < 0)
                        return r;
        }
        backend_oci_stats(dst, &after);
        *ret = (struct oci_copy_stats){
                .blobs_total = n,
                .blobs_copied = atomic_load(&c.copied) - (after.blobs_mounted - before.blobs_mounted),
                .blobs_skipped = atomic_load(&c.skipped) + (after.blobs_present - before.blobs_present),
                .blobs_mounted = after.blobs_mounted - before.blobs_mounted,
                .bytes_total = bytes_of(s) + (uint64_t)mlen,
                .bytes_copied = after.bytes_uploaded - before.bytes_uploaded,
                .manifest_skipped = skipped,
                .manifest = *snap,
                .wall_ns = now_ns() - t0,
        };
        /* blobs another writer put in between has() and write() count as
         * skipped, not copied */
        ret->blobs_copied -= MIN(ret->blobs_copied, after.blobs_present - before.blobs_present);
        return 0;
}

struct root_ctx {
        const struct digest *d;
        uint64_t size;
};

/* add_root(): an untagged index entry for d, unless one names d already. */
static int add_root(json_t *index, void *p)
{
        const struct root_ctx *rc = p;
        char ds[DIGEST_STR_LEN + 1];
        json_t *arr = json_object_get(index, "manifests"), *e;
        size_t i;

        digest_str(rc->d, ds);
        json_array_foreach(arr, i, e) {
                const char *d = json_string_value(json_object_get(e, "digest"));
                if (d && strcmp(d, ds) == 0)
                        return 0;
        }
        e = json_pack("{s:s, s:s, s:I}", "mediaType", MEDIA_OCI_MANIFEST, "digest", ds, "size",
                      (json_int_t)rc->size);
        if (!e || json_array_append_new(arr, e) < 0)
                return -ENOMEM;
        return 1;
}

int oci_pull(struct backend *src, const char *ref, struct backend *dst, const char *tag,
             unsigned jobs, struct oci_copy_stats *ret)
{
        _cleanup_(snapshot_freep_) struct snapshot *s = NULL, *opened = NULL;
        _cleanup_(freep) struct digest *blobs = NULL;
        _cleanup_(freep) void *mbuf = NULL;
        struct copy c = { .dst = dst, .src = src, .what = "pull" };
        char ds[DIGEST_STR_LEN + 1], hs[DIGEST_STR_LEN + 1];
        struct digest d, hdr, want;
        uint64_t t0 = now_ns();
        size_t mlen, n;
        int r;

        if (!backend_is_oci(src) || !ref || !dst || !ret)
                return -EINVAL;
        r = oci_manifest_get(src, ref, &mbuf, &mlen, &hdr);
        if (r == -ENOENT)
                return log_error_errno(r, "pull: %s: no such manifest in the registry", ref);
        if (r < 0)
                return r; /* logged */
        digest_sha256(mbuf, mlen, &d);
        digest_str(&d, ds);
        if (strncmp(ref, "sha256:", 7) == 0 && (digest_parse(ref, &want) < 0 || !digest_eq(&want, &d)))
                return log_error_errno(-EBADMSG, "pull: the registry answered %s with a manifest whose digest is %s",
                                       ref, ds);
        if (!digest_eq(&hdr, &d))
                return log_error_errno(-EBADMSG, "pull: %s: the registry says digest %s, the bytes hash to %s",
                                       ref, digest_str(&hdr, hs), ds);
        r = snapshot_manifest_parse(mbuf, mlen, &s);
        if (r < 0)
                return log_error_errno(r, "pull: %s (%s) is not a stasis snapshot", ref, ds);
        r = blobs_of(s, &blobs, &n);
        if (r < 0)
                return r;
        c.blobs = blobs;
        c.n = n;
        r = copy_run(&c, jobs);
        if (r < 0)
                return r;
        /* the manifest last, then check the whole snapshot where it now lives */
        r = backend_write(dst, &d, mbuf, mlen);
        if (r < 0)
                return log_error_errno(r, "pull: store manifest %s: %m", ds);
        r = snapshot_open(dst, &d, &opened);
        if (r >= 0)
                r = snapshot_load_tree(dst, opened);
        if (r < 0)
                return r; /* logged */
        if (tag)
                r = store_tag(dst, &d, tag); /* logs */
        else {
                r = backend_index_transaction(dst, add_root, &(struct root_ctx){ .d = &d, .size = mlen });
                if (r < 0)
                        log_error_errno(r, "pull: add %s to the index: %m", ds);
        }
        if (r < 0)
                return r;
        *ret = (struct oci_copy_stats){
                .blobs_total = n,
                .blobs_copied = atomic_load(&c.copied),
                .blobs_skipped = atomic_load(&c.skipped),
                .bytes_total = bytes_of(s) + (uint64_t)mlen,
                .bytes_copied = atomic_load(&c.bytes_copied),
                .manifest = d,
                .wall_ns = now_ns() - t0,
        };
        return 0;
}
