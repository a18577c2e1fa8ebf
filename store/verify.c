/* verify.c — store_verify() (see snapshot.h): re-hash every blob a root
 * reaches and decode every chunk its tree names. Problems are reported one by
 * one through the callback and counted; only errors that stop the walk itself
 * (out of memory, an unreadable index) are returned as -errno. Each blob is
 * hashed once, and each chunk location decoded once, however many snapshots
 * share it. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "snapshot-private.h"
#include "snapshot.h"
#include "util.h"

/* Packs are closed near PACK_TARGET; anything far larger is not ours. */
#define VERIFY_PACK_MAX ((size_t)UINT32_MAX)
#define VERIFY_DEPTH_MAX 8

struct verify {
        struct backend *b;
        verify_report_fn report;
        void *ctx;
        struct digest_set *blobs;  /* hashed already; value 1 good, 0 bad or missing */
        struct digest_set *chunks; /* decoded already, keyed by chunk_key() */
        struct chunk_codec *codec;
        void *ubuf; /* CHUNK_SIZE_MAX bytes for decoded chunks */
        struct verify_stats stats;
        int problems;
};

static void snapshot_freep(struct snapshot **s)
{
        snapshot_free(*s);
}

static void chunk_codec_freep(struct chunk_codec **c)
{
        chunk_codec_free(*c);
}

_printf_(4, 5) static void problem(struct verify *v, const struct digest *blob,
                                   const struct digest *chunk, const char *fmt, ...)
{
        char bs[DIGEST_STR_LEN + 1], cs[DIGEST_STR_LEN + 1], what[512];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(what, sizeof what, fmt, ap);
        va_end(ap);
        if (v->problems < INT32_MAX)
                v->problems++;
        if (v->report)
                v->report(v->ctx, blob ? digest_str(blob, bs) : "index.json",
                          chunk ? digest_str(chunk, cs) : NULL, what);
}

/* check_blob(): hash blob d once. 1 good (and *ret_buf holds it if asked), 0
 * a problem was reported (now or the first time), -errno to stop. */
static int check_blob(struct verify *v, const struct digest *d, const char *kind, size_t max,
                      void **ret_buf, size_t *ret_len)
{
        _cleanup_(freep) void *buf = NULL;
        struct digest got;
        size_t len = 0, good;
        int r;

        if (digest_set_get(v->blobs, d, &good) && (!good || !ret_buf))
                return good ? 1 : 0;

        r = backend_read_all(v->b, d, max, &buf, &len);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                if (digest_set_put(v->blobs, d, 0) < 0)
                        return -ENOMEM;
                if (r == -ENOENT)
                        problem(v, d, NULL, "%s: missing", kind);
                else if (r == -EFBIG)
                        problem(v, d, NULL, "%s: larger than %zu bytes", kind, max);
                else
                        problem(v, d, NULL, "%s: unreadable: %s", kind, strerror(-r));
                return 0;
        }
        if (!digest_set_get(v->blobs, d, NULL)) {
                v->stats.blobs++;
                v->stats.bytes += len;
        }
        digest_sha256(buf, len, &got);
        if (!digest_eq(&got, d)) {
                if (digest_set_put(v->blobs, d, 0) < 0)
                        return -ENOMEM;
                problem(v, d, NULL, "%s: hash mismatch", kind);
                /* A pack's chunks are still decoded, to name the bad ones. */
                if (ret_buf) {
                        *ret_buf = TAKE_PTR(buf);
                        *ret_len = len;
                }
                return 0;
        }
        if (digest_set_put(v->blobs, d, 1) < 0)
                return -ENOMEM;
        if (ret_buf) {
                *ret_buf = TAKE_PTR(buf);
                *ret_len = len;
        }
        return 1;
}

/* A chunk location: its address, the pack it is in and the offset there. */
static void chunk_key(const struct tree_chunk *c, const struct digest *pack, struct digest *ret)
{
        uint8_t k[DIGEST_LEN * 2 + 8];

        memcpy(k, c->addr.b, DIGEST_LEN);
        memcpy(k + DIGEST_LEN, pack->b, DIGEST_LEN);
        memcpy(k + 2 * DIGEST_LEN, &c->offset, 8);
        digest_sha256(k, sizeof k, ret);
}

/* Decode chunks idx[0..n) of s's tree, all in pack p. */
static int verify_pack(struct verify *v, const struct snapshot *s, uint32_t p, const uint32_t *idx,
                       size_t n)
{
        _cleanup_(freep) uint32_t *pending = NULL;
        _cleanup_(freep) void *buf = NULL;
        const struct digest *pack = &s->packs[p];
        size_t n_pending = 0, len = 0, good;
        int r;

        pending = calloc(n ? n : 1, sizeof *pending);
        if (!pending)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                struct tree_chunk c;
                struct digest key;

                if (tree_chunk(s->tree, idx[i], &c) < 0)
                        return -EBADMSG;
                chunk_key(&c, pack, &key);
                if (!digest_set_get(v->chunks, &key, NULL))
                        pending[n_pending++] = idx[i];
        }
        if (digest_set_get(v->blobs, pack, &good) && (n_pending == 0 || !good))
                return 0; /* hashed already and nothing new to decode, or known bad */

        r = check_blob(v, pack, "pack", VERIFY_PACK_MAX, &buf, &len);
        if (r < 0)
                return r;
        if (!buf)
                return 0; /* missing or unreadable, reported */
        if (len != s->pack_sizes[p])
                problem(v, pack, NULL, "pack: %zu bytes, the manifest says %" PRIu64, len,
                        s->pack_sizes[p]);

        for (size_t i = 0; i < n_pending; i++) {
                struct tree_chunk c;
                struct digest key;

                if (tree_chunk(s->tree, pending[i], &c) < 0)
                        return -EBADMSG;
                chunk_key(&c, pack, &key);
                if (digest_set_put(v->chunks, &key, 0) < 0)
                        return -ENOMEM;
                v->stats.chunks++;
                if (c.offset > len || c.clen > len - c.offset) {
                        problem(v, pack, &c.addr, "chunk at offset %" PRIu64 ": truncated (pack is %zu bytes)",
                                c.offset, len);
                        continue;
                }
                r = chunk_decode(v->codec, (const uint8_t *)buf + c.offset, c.clen, c.ulen,
                                 s->config.chunk_size, &c.addr, v->ubuf);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        problem(v, pack, &c.addr, "chunk at offset %" PRIu64 ": corrupt (bad frame or hash mismatch)",
                                c.offset);
        }
        return 0;
}

static int verify_chunks(struct verify *v, const struct snapshot *s)
{
        _cleanup_(freep) uint32_t *start = NULL, *order = NULL, *fill = NULL;
        uint32_t n = tree_n_chunks(s->tree);
        int r;

        /* Bucket the chunks by pack (counting sort). */
        start = calloc((size_t)s->n_packs + 1, sizeof *start);
        fill = calloc((size_t)s->n_packs + 1, sizeof *fill);
        order = calloc(n ? n : 1, sizeof *order);
        if (!start || !fill || !order)
                return -ENOMEM;
        for (uint32_t i = 0; i < n; i++) {
                struct tree_chunk c;
                if (tree_chunk(s->tree, i, &c) < 0 || c.pack >= s->n_packs)
                        return -EBADMSG;
                start[c.pack + 1]++;
        }
        for (uint32_t p = 0; p < s->n_packs; p++)
                start[p + 1] += start[p];
        for (uint32_t i = 0; i < n; i++) {
                struct tree_chunk c;
                (void)tree_chunk(s->tree, i, &c);
                order[start[c.pack] + fill[c.pack]++] = i;
        }
        for (uint32_t p = 0; p < s->n_packs; p++) {
                r = verify_pack(v, s, p, order + start[p], start[p + 1] - start[p]);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int verify_root(struct verify *v, const struct digest *d, unsigned depth);

/* verify_trace(): s's access trace, if any, hashed once and parsed (a mount
 * reads it as untrusted input). */
static int verify_trace(struct verify *v, const struct snapshot *s)
{
        _cleanup_(freep) void *buf = NULL;
        _cleanup_(freep) struct trace_entry *e = NULL;
        size_t len = 0, n;
        uint32_t cs;
        int r;

        if (!s->has_trace || digest_set_get(v->blobs, &s->trace_digest, NULL))
                return 0;
        r = check_blob(v, &s->trace_digest, "access trace", TRACE_BLOB_MAX, &buf, &len);
        if (r <= 0)
                return r;
        if (len != s->trace_size) {
                problem(v, &s->trace_digest, NULL, "access trace: %zu bytes, the manifest says %" PRIu64,
                        len, s->trace_size);
                return 0;
        }
        r = trace_blob_parse(buf, len, &cs, &e, &n);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                problem(v, &s->trace_digest, NULL, "access trace: not a valid v1 trace");
        return 0;
}

/* A manifest that is not a stasis snapshot (an image copied into the store):
 * hash what it names. */
static int verify_foreign(struct verify *v, const struct digest *d, json_t *m, unsigned depth)
{
        const json_t *layers = json_object_get(m, "layers"), *manifests = json_object_get(m, "manifests");
        const json_t *config = json_object_get(m, "config");
        struct digest x;
        int r = 0;

        if (config) {
                if (index_entry_digest(config, &x) < 0)
                        problem(v, d, NULL, "manifest: config has no valid digest");
                else if ((r = check_blob(v, &x, "config", CONFIG_MAX, NULL, NULL)) < 0)
                        return r;
        }
        for (size_t i = 0; i < json_array_size(layers); i++) {
                if (index_entry_digest(json_array_get(layers, i), &x) < 0) {
                        problem(v, d, NULL, "manifest: layers[%zu] has no valid digest", i);
                        continue;
                }
                r = check_blob(v, &x, "layer", VERIFY_PACK_MAX, NULL, NULL);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < json_array_size(manifests); i++) {
                if (index_entry_digest(json_array_get(manifests, i), &x) < 0) {
                        problem(v, d, NULL, "index: manifests[%zu] has no valid digest", i);
                        continue;
                }
                r = verify_root(v, &x, depth + 1);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int verify_root(struct verify *v, const struct digest *d, unsigned depth)
{
        _cleanup_(freep) void *buf = NULL;
        _cleanup_(json_decrefp) json_t *m = NULL;
        _cleanup_(snapshot_freep) struct snapshot *s = NULL;
        const char *artifact;
        size_t len = 0, good;
        int r;

        if (digest_set_get(v->blobs, d, NULL))
                return 0; /* listed twice, or reached already */
        if (depth > VERIFY_DEPTH_MAX) {
                problem(v, d, NULL, "manifest: nested more than %d levels deep", VERIFY_DEPTH_MAX);
                return 0;
        }
        r = check_blob(v, d, "manifest", MANIFEST_MAX, &buf, &len);
        if (r <= 0)
                return r;
        m = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(m)) {
                problem(v, d, NULL, "manifest: not a JSON object");
                return 0;
        }
        artifact = json_string_value(json_object_get(m, "artifactType"));
        if (!artifact || strcmp(artifact, MEDIA_SNAPSHOT) != 0)
                return verify_foreign(v, d, m, depth);

        v->stats.snapshots++;
        r = snapshot_manifest_parse(buf, len, &s);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                problem(v, d, NULL, "manifest: not a valid snapshot manifest");
                return 0;
        }
        r = check_blob(v, &s->config_digest, "config", CONFIG_MAX, NULL, NULL);
        if (r <= 0)
                return r;
        /* Now that both blobs hash right, the full checks of snapshot_open(). */
        s = snapshot_free(s);
        r = snapshot_open(v->b, d, &s);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                problem(v, d, NULL, "snapshot: manifest or config rejected: %s", strerror(-r));
                return 0;
        }

        if (digest_set_get(v->blobs, &s->tree_digest, &good) && !good)
                return 0; /* reported already */
        r = snapshot_load_tree(v->b, s);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                if (digest_set_put(v->blobs, &s->tree_digest, 0) < 0)
                        return -ENOMEM;
                if (r == -ENOENT)
                        problem(v, &s->tree_digest, NULL, "tree: missing");
                else
                        problem(v, &s->tree_digest, NULL, "tree: corrupt, invalid or not matching the manifest: %s",
                                strerror(-r));
                return 0;
        }
        r = digest_set_put(v->blobs, &s->tree_digest, 1);
        if (r < 0)
                return r;
        if (r > 0) {
                v->stats.blobs++;
                v->stats.bytes += s->tree_size;
        }
        r = verify_trace(v, s);
        if (r < 0)
                return r;
        return verify_chunks(v, s);
}

int store_verify(struct backend *b, const struct digest *only, verify_report_fn report, void *ctx,
                 struct verify_stats *ret_stats)
{
        _cleanup_(json_decrefp) json_t *index = NULL;
        _cleanup_(digest_set_freep) struct digest_set *blobs = NULL, *chunks = NULL;
        _cleanup_(chunk_codec_freep) struct chunk_codec *codec = NULL;
        _cleanup_(freep) void *ubuf = NULL;
        struct verify v;
        json_t *arr;
        bool created;
        int r;

        if (!b)
                return -EINVAL;
        blobs = digest_set_new();
        chunks = digest_set_new();
        codec = chunk_codec_new(CHUNK_LEVEL_DEFAULT);
        ubuf = malloc(CHUNK_SIZE_MAX);
        if (!blobs || !chunks || !codec || !ubuf)
                return -ENOMEM;
        v = (struct verify){
                .b = b, .report = report, .ctx = ctx, .blobs = blobs, .chunks = chunks,
                .codec = codec, .ubuf = ubuf,
        };

        if (only) {
                r = verify_root(&v, only, 0);
                if (r < 0)
                        return log_error_errno(r, "verify: %m");
        } else {
                r = backend_index_read(b, &index);
                if (r < 0)
                        return log_error_errno(r, "verify: read index: %m");
                r = index_manifests(index, &arr, &created);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < json_array_size(arr); i++) {
                        struct digest d;
                        if (index_entry_digest(json_array_get(arr, i), &d) < 0) {
                                problem(&v, NULL, NULL, "index.json: manifests[%zu] has no valid digest", i);
                                continue;
                        }
                        r = verify_root(&v, &d, 0);
                        if (r < 0)
                                return log_error_errno(r, "verify: %m");
                }
        }
        if (ret_stats)
                *ret_stats = v.stats;
        return v.problems;
}
