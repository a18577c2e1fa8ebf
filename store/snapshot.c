/* snapshot.c — see snapshot.h: the manifest and config JSON, opening a
 * snapshot, loading its tree, reading chunks, publishing, and references
 * (tags in index.json). verify.c and gc.c hold the store-wide walks. */
#include "snapshot.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "snapshot-private.h"
#include "util.h"

/* JSON numbers we accept: integers in [0, 2^53], exact in every JSON reader. */
#define JSON_UINT_MAX (UINT64_C(1) << 53)
#define LAYERS_MAX 1000000u

static inline bool streq(const char *a, const char *b)
{
        return strcmp(a, b) == 0;
}

static void snapshot_freep(struct snapshot **s)
{
        snapshot_free(*s);
}

static void tree_freep(struct tree **t)
{
        tree_free(*t);
}

static void chunk_codec_freep(struct chunk_codec **c)
{
        chunk_codec_free(*c);
}

/* ---- JSON field helpers; each logs nothing, the caller names the field ---- */

static int json_uint(const json_t *v, uint64_t *ret)
{
        json_int_t i;

        if (!json_is_integer(v))
                return -EBADMSG;
        i = json_integer_value(v);
        if (i < 0 || (uint64_t)i > JSON_UINT_MAX)
                return -EBADMSG;
        *ret = (uint64_t)i;
        return 0;
}

static bool json_is_string_object(const json_t *o)
{
        const char *k;
        json_t *v;

        if (!json_is_object(o))
                return false;
        json_object_foreach((json_t *)o, k, v)
                if (!json_is_string(v))
                        return false;
        return true;
}

static int digits(const char *s, size_t n, unsigned lo, unsigned hi)
{
        unsigned v = 0;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -1;
                v = v * 10 + (unsigned)(s[i] - '0');
        }
        return v >= lo && v <= hi ? 0 : -1;
}

/* RFC 3339 date-time: YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM). */
static bool rfc3339_valid(const char *s)
{
        size_t n = strlen(s), i = 19;

        if (n < 20 || n >= 32)
                return false;
        if (digits(s, 4, 0, 9999) < 0 || s[4] != '-' || digits(s + 5, 2, 1, 12) < 0 ||
            s[7] != '-' || digits(s + 8, 2, 1, 31) < 0 || (s[10] != 'T' && s[10] != 't') ||
            digits(s + 11, 2, 0, 23) < 0 || s[13] != ':' || digits(s + 14, 2, 0, 59) < 0 ||
            s[16] != ':' || digits(s + 17, 2, 0, 60) < 0)
                return false;
        if (s[i] == '.') {
                size_t f = ++i;
                while (s[i] >= '0' && s[i] <= '9')
                        i++;
                if (i == f)
                        return false;
        }
        if ((s[i] == 'Z' || s[i] == 'z') && i + 1 == n)
                return true;
        return (s[i] == '+' || s[i] == '-') && i + 6 == n && digits(s + i + 1, 2, 0, 23) == 0 &&
               s[i + 3] == ':' && digits(s + i + 4, 2, 0, 59) == 0;
}

static json_t *json_parse_object(const void *json, size_t len, const char *what)
{
        json_error_t err;
        json_t *j;

        if (!json)
                return NULL;
        j = json_loadb(json, len, JSON_REJECT_DUPLICATES, &err);
        if (!j) {
                log_error("%s: invalid JSON at line %d column %d: %s", what, err.line,
                          err.column, err.text);
                return NULL;
        }
        if (!json_is_object(j)) {
                log_error("%s: not a JSON object", what);
                json_decref(j);
                return NULL;
        }
        return j;
}

/* ---- manifest ---- */

static int parse_descriptor(const json_t *j, const char *what, const char *media,
                            struct digest *ret_digest, uint64_t *ret_size)
{
        const json_t *mt, *dg;
        struct digest d;
        uint64_t size;

        if (!json_is_object(j))
                return log_error_errno(-EBADMSG, "snapshot manifest: %s: not an object", what);
        mt = json_object_get(j, "mediaType");
        if (!json_is_string(mt))
                return log_error_errno(-EBADMSG, "snapshot manifest: %s: mediaType missing or not a string",
                                       what);
        if (!streq(json_string_value(mt), media))
                return log_error_errno(-EBADMSG, "snapshot manifest: %s: media type \"%.100s\", expected %s",
                                       what, json_string_value(mt), media);
        dg = json_object_get(j, "digest");
        if (!json_is_string(dg) || digest_parse(json_string_value(dg), &d) < 0)
                return log_error_errno(-EBADMSG, "snapshot manifest: %s: digest missing or not sha256:<64 hex>",
                                       what);
        if (json_uint(json_object_get(j, "size"), &size) < 0)
                return log_error_errno(-EBADMSG, "snapshot manifest: %s: size missing, negative or over 2^53",
                                       what);
        *ret_digest = d;
        *ret_size = size;
        return 0;
}

/* The manifest parser proper; also returns the config descriptor's size,
 * which struct snapshot does not carry. */
static int manifest_parse(const void *json, size_t len, struct snapshot **ret,
                          uint64_t *ret_config_size)
{
        _cleanup_(json_decrefp) json_t *m = NULL;
        _cleanup_(snapshot_freep) struct snapshot *s = NULL;
        const json_t *v, *layers, *ann;
        uint64_t config_size, u;
        size_t n;

        m = json_parse_object(json, len, "snapshot manifest");
        if (!m)
                return -EBADMSG;

        if (json_uint(json_object_get(m, "schemaVersion"), &u) < 0 || u != 2)
                return log_error_errno(-EBADMSG, "snapshot manifest: schemaVersion is not 2");
        v = json_object_get(m, "mediaType");
        if (!json_is_string(v) || !streq(json_string_value(v), MEDIA_OCI_MANIFEST))
                return log_error_errno(-EBADMSG, "snapshot manifest: mediaType is not %s",
                                       MEDIA_OCI_MANIFEST);
        v = json_object_get(m, "artifactType");
        if (!json_is_string(v) || !streq(json_string_value(v), MEDIA_SNAPSHOT))
                return log_error_errno(-EBADMSG, "snapshot manifest: artifactType is not %s (not a stasis snapshot)",
                                       MEDIA_SNAPSHOT);
        ann = json_object_get(m, "annotations");
        if (ann && !json_is_string_object(ann))
                return log_error_errno(-EBADMSG, "snapshot manifest: annotations is not an object of strings");
        layers = json_object_get(m, "layers");
        if (!json_is_array(layers))
                return log_error_errno(-EBADMSG, "snapshot manifest: layers missing or not an array");
        n = json_array_size(layers);
        if (n < 1)
                return log_error_errno(-EBADMSG, "snapshot manifest: no layers (layers[0] must be the tree)");
        if (n > LAYERS_MAX)
                return log_error_errno(-EBADMSG, "snapshot manifest: %zu layers, at most %u allowed", n,
                                       LAYERS_MAX);

        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        /* An access trace, if any, is the last layer (after the packs). */
        v = json_object_get(json_array_get(layers, n - 1), "mediaType");
        s->has_trace = n >= 2 && json_is_string(v) && streq(json_string_value(v), MEDIA_TRACE);
        s->n_packs = (uint32_t)(n - 1 - s->has_trace);
        s->packs = calloc(n, sizeof *s->packs);
        s->pack_sizes = calloc(n, sizeof *s->pack_sizes);
        if (!s->packs || !s->pack_sizes)
                return -ENOMEM;

        if (parse_descriptor(json_object_get(m, "config"), "config", MEDIA_SNAPSHOT_CONFIG,
                             &s->config_digest, &config_size) < 0)
                return -EBADMSG;
        if (parse_descriptor(json_array_get(layers, 0), "layers[0] (the tree)", MEDIA_TREE,
                             &s->tree_digest, &s->tree_size) < 0)
                return -EBADMSG;
        for (size_t i = 1; i <= s->n_packs; i++) {
                char what[32];
                snprintf(what, sizeof what, "layers[%zu]", i);
                if (parse_descriptor(json_array_get(layers, i), what, MEDIA_PACK, &s->packs[i - 1],
                                     &s->pack_sizes[i - 1]) < 0)
                        return -EBADMSG;
        }
        if (s->has_trace) {
                if (parse_descriptor(json_array_get(layers, n - 1), "the access trace", MEDIA_TRACE,
                                     &s->trace_digest, &s->trace_size) < 0)
                        return -EBADMSG;
                if (s->trace_size < TRACE_BLOB_HEADER || s->trace_size > TRACE_BLOB_MAX)
                        return log_error_errno(-EBADMSG, "snapshot manifest: the access trace is %" PRIu64 " bytes, not in [%u, %zu]",
                                               s->trace_size, TRACE_BLOB_HEADER, TRACE_BLOB_MAX);
        }

        digest_sha256(json, len, &s->digest);
        *ret_config_size = config_size;
        *ret = TAKE_PTR(s);
        return 0;
}

int snapshot_manifest_parse(const void *json, size_t len, struct snapshot **ret)
{
        uint64_t config_size;

        if (!json || !ret)
                return -EINVAL;
        return manifest_parse(json, len, ret, &config_size);
}

/* ---- config ---- */

int snapshot_config_parse(const void *json, size_t len, struct snapshot_config *ret)
{
        _cleanup_(json_decrefp) json_t *j = NULL;
        struct snapshot_config c = {};
        const json_t *v;
        uint64_t u;

        if (!json || !ret)
                return -EINVAL;
        j = json_parse_object(json, len, "snapshot config");
        if (!j)
                return -EBADMSG;

        if (json_uint(json_object_get(j, "chunkSize"), &u) < 0 || !chunk_size_valid(u))
                return log_error_errno(-EBADMSG, "snapshot config: chunkSize missing or not a power of two in [%u, %u]",
                                       CHUNK_SIZE_MIN, CHUNK_SIZE_MAX);
        c.chunk_size = (uint32_t)u;
        if (json_uint(json_object_get(j, "generation"), &c.generation) < 0)
                return log_error_errno(-EBADMSG, "snapshot config: generation missing, negative or over 2^53");
        v = json_object_get(j, "parent");
        if (v) {
                if (!json_is_string(v) || digest_parse(json_string_value(v), &c.parent) < 0)
                        return log_error_errno(-EBADMSG, "snapshot config: parent is not sha256:<64 hex>");
                c.has_parent = true;
                if (c.generation == 0)
                        return log_error_errno(-EBADMSG, "snapshot config: generation 0 with a parent");
        }
        v = json_object_get(j, "created");
        if (!json_is_string(v) || !rfc3339_valid(json_string_value(v)))
                return log_error_errno(-EBADMSG, "snapshot config: created missing or not an RFC 3339 time");
        snprintf(c.created, sizeof c.created, "%s", json_string_value(v));
        v = json_object_get(j, "labels");
        if (!json_is_string_object(v))
                return log_error_errno(-EBADMSG, "snapshot config: labels missing or not an object of strings");
        v = json_object_get(j, "stats");
        if (!json_is_object(v))
                return log_error_errno(-EBADMSG, "snapshot config: stats missing or not an object");
        v = json_object_get(j, "image");
        if (v && !json_is_object(v))
                return log_error_errno(-EBADMSG, "snapshot config: image is not an object");

        c.labels = json_incref(json_object_get(j, "labels"));
        c.stats = json_incref(json_object_get(j, "stats"));
        c.image = json_incref(json_object_get(j, "image"));
        *ret = c;
        return 0;
}

void snapshot_config_release(struct snapshot_config *c)
{
        if (!c)
                return;
        json_decref(c->labels);
        json_decref(c->stats);
        json_decref(c->image);
        c->labels = c->stats = c->image = NULL;
}

/* ---- open, load, free ---- */

struct snapshot *snapshot_free(struct snapshot *s)
{
        if (s) {
                tree_free(s->tree);
                snapshot_config_release(&s->config);
                free(s->packs);
                free(s->pack_sizes);
                free(s);
        }
        return NULL;
}

int snapshot_open(struct backend *b, const struct digest *manifest, struct snapshot **ret)
{
        _cleanup_(freep) void *mbuf = NULL, *cbuf = NULL;
        _cleanup_(snapshot_freep) struct snapshot *s = NULL;
        char ms[DIGEST_STR_LEN + 1], cs[DIGEST_STR_LEN + 1];
        uint64_t config_size;
        size_t mlen, clen;
        int r;

        if (!b || !manifest || !ret)
                return -EINVAL;
        digest_str(manifest, ms);

        r = blob_read_verified(b, manifest, MANIFEST_MAX, &mbuf, &mlen);
        if (r == -ENOENT)
                return log_error_errno(r, "snapshot %s: manifest not in the store", ms);
        if (r == -EBADMSG) /* blob_read_verified() named the blob */
                return r;
        if (r < 0)
                return log_error_errno(r, "snapshot %s: read manifest: %m", ms);
        r = manifest_parse(mbuf, mlen, &s, &config_size);
        if (r == -EBADMSG) /* the parser named the problem */
                return r;
        if (r < 0)
                return log_error_errno(r, "snapshot %s: manifest rejected", ms);

        digest_str(&s->config_digest, cs);
        /* the size is the manifest's: no lookup first (a HEAD from a registry) */
        r = blob_read_sized(b, &s->config_digest, config_size, CONFIG_MAX, &cbuf, &clen);
        if (r == -ENOENT)
                return log_error_errno(r, "snapshot %s: config %s not in the store", ms, cs);
        if (r == -EBADMSG || r == -EFBIG) /* blob_read_sized() named the blob */
                return r;
        if (r < 0)
                return log_error_errno(r, "snapshot %s: read config %s: %m", ms, cs);
        r = snapshot_config_parse(cbuf, clen, &s->config);
        if (r == -EBADMSG) /* the parser named the problem */
                return r;
        if (r < 0)
                return log_error_errno(r, "snapshot %s: config %s rejected", ms, cs);

        *ret = TAKE_PTR(s);
        return 0;
}

struct tree_src {
        struct backend *b;
        const struct digest *d;
};

static ssize_t tree_src_read(void *ctx, uint64_t off, void *buf, size_t n)
{
        struct tree_src *src = ctx;
        return backend_read(src->b, src->d, off, buf, n);
}

int snapshot_load_tree(struct backend *b, struct snapshot *s)
{
        _cleanup_(tree_freep) struct tree *t = NULL;
        char ms[DIGEST_STR_LEN + 1], ts[DIGEST_STR_LEN + 1];
        uint64_t size;
        int r;

        if (!b || !s)
                return -EINVAL;
        if (s->tree)
                return 0;
        digest_str(&s->digest, ms);
        digest_str(&s->tree_digest, ts);

        if (s->tree_size > TREE_BLOB_MAX)
                return log_error_errno(-EFBIG, "snapshot %s: tree %s: %" PRIu64 " bytes is more than the %u allowed",
                                       ms, ts, s->tree_size, TREE_BLOB_MAX);
        /* Read, hashed and inflated at once: a resume waits for the slowest
         * of the three, not for their sum. The size is the manifest's, not
         * looked up first (from a registry, a HEAD: a round trip); a blob of
         * another size fails below, and is then named. */
        r = tree_load_from(tree_src_read, &(struct tree_src){ .b = b, .d = &s->tree_digest },
                           (size_t)s->tree_size, &s->tree_digest, &t);
        if (r < 0 && r != -ENOMEM && backend_size(b, &s->tree_digest, &size) == 0 && size != s->tree_size)
                return log_error_errno(-EBADMSG, "snapshot %s: tree %s is %" PRIu64 " bytes, manifest says %" PRIu64,
                                       ms, ts, size, s->tree_size);
        if (r == -EBADMSG) /* tree_load() named the problem */
                return r;
        if (r == -ENOENT)
                return log_error_errno(r, "snapshot %s: tree %s not in the store", ms, ts);
        if (r < 0)
                return log_error_errno(r, "snapshot %s: tree %s: %m", ms, ts);
        if (tree_chunk_size(t) != s->config.chunk_size)
                return log_error_errno(-EBADMSG, "snapshot %s: tree %s has chunk size %u, config says %u",
                                       ms, ts, tree_chunk_size(t), s->config.chunk_size);
        if (tree_n_packs(t) != s->n_packs)
                return log_error_errno(-EBADMSG, "snapshot %s: tree %s names %u packs, manifest lists %u",
                                       ms, ts, tree_n_packs(t), s->n_packs);
        for (uint32_t i = 0; i < s->n_packs; i++)
                if (!digest_eq(tree_pack(t, i), &s->packs[i]))
                        return log_error_errno(-EBADMSG, "snapshot %s: tree %s: pack %u differs from manifest layers[%u]",
                                               ms, ts, i, i + 1);
        s->tree = TAKE_PTR(t);
        return 0;
}

int snapshot_load_trace(struct backend *b, const struct snapshot *s, uint32_t *ret_chunk_size,
                        struct trace_entry **ret, size_t *ret_n)
{
        _cleanup_(freep) void *buf = NULL;
        char ms[DIGEST_STR_LEN + 1], ts[DIGEST_STR_LEN + 1];
        size_t len;
        int r;

        if (!b || !s || !ret_chunk_size || !ret || !ret_n)
                return -EINVAL;
        if (!s->has_trace) {
                *ret = NULL;
                *ret_n = 0;
                return 0;
        }
        digest_str(&s->digest, ms);
        digest_str(&s->trace_digest, ts);
        r = blob_read_verified(b, &s->trace_digest, TRACE_BLOB_MAX, &buf, &len);
        if (r == -ENOENT)
                return log_error_errno(r, "snapshot %s: access trace %s not in the store", ms, ts);
        if (r == -EBADMSG)
                return r;
        if (r < 0)
                return log_error_errno(r, "snapshot %s: read access trace %s: %m", ms, ts);
        if (len != s->trace_size)
                return log_error_errno(-EBADMSG, "snapshot %s: access trace %s is %zu bytes, manifest says %" PRIu64,
                                       ms, ts, len, s->trace_size);
        r = trace_blob_parse(buf, len, ret_chunk_size, ret, ret_n);
        if (r == -EBADMSG)
                return log_error_errno(r, "snapshot %s: access trace %s is not a valid v1 trace", ms, ts);
        if (r < 0)
                return log_error_errno(r, "snapshot %s: access trace %s: %m", ms, ts);
        return 0;
}

/* ---- chunks ---- */

/* FAIL(): log the failure, or with why set, only describe it there. */
#define FAIL(why, err, ...)                                                                    \
        ({                                                                                     \
                int _fe_ = -abs(err);                                                          \
                if (why) {                                                                     \
                        errno = -_fe_;                                                         \
                        snprintf((why), CHUNK_WHY_MAX, __VA_ARGS__);                           \
                } else {                                                                       \
                        _fe_ = log_error_errno(_fe_, __VA_ARGS__);                             \
                }                                                                              \
                _fe_;                                                                          \
        })

static int read_chunk(struct backend *b, const struct snapshot *s, uint32_t idx, struct chunk_codec *codec,
                      void *dst, char *why)
{
        _cleanup_(chunk_codec_freep) struct chunk_codec *own = NULL;
        _cleanup_(freep) void *frame = NULL;
        char cs[DIGEST_STR_LEN + 1], ps[DIGEST_STR_LEN + 1];
        const struct digest *pack;
        struct tree_chunk c;
        ssize_t n;
        int r;

        if (!b || !s || !s->tree || !dst)
                return -EINVAL;
        r = tree_chunk(s->tree, idx, &c);
        if (r < 0)
                return r;
        pack = tree_pack(s->tree, c.pack);
        if (!pack)
                return -EBADMSG;
        digest_str(&c.addr, cs);
        digest_str(pack, ps);

        /* tree_load() already bounds these; a second look costs nothing. */
        if (c.ulen == 0 || c.ulen > s->config.chunk_size || c.clen == 0 ||
            c.clen > chunk_bound(s->config.chunk_size))
                return FAIL(why, -EBADMSG, "chunk %s in pack %s at offset %" PRIu64 ": impossible lengths %u/%u",
                                       cs, ps, c.offset, c.clen, c.ulen);
        frame = malloc(c.clen);
        if (!frame)
                return -ENOMEM;
        n = backend_read(b, pack, c.offset, frame, c.clen);
        if (n == -ENOENT)
                return FAIL(why, -ENOENT, "chunk %s: pack %s missing", cs, ps);
        if (n < 0)
                return FAIL(why, (int)n, "chunk %s in pack %s at offset %" PRIu64 ": read failed: %m",
                                       cs, ps, c.offset);
        if ((size_t)n < c.clen)
                return FAIL(why, -EBADMSG, "chunk %s in pack %s at offset %" PRIu64 ": truncated (%zd of %u bytes)",
                                       cs, ps, c.offset, n, c.clen);
        if (!codec) {
                own = chunk_codec_new(CHUNK_LEVEL_DEFAULT);
                if (!own)
                        return -ENOMEM;
                codec = own;
        }
        r = chunk_decode(codec, frame, c.clen, c.ulen, s->config.chunk_size, &c.addr, dst);
        if (r == -EBADMSG)
                return FAIL(why, r, "chunk %s in pack %s at offset %" PRIu64 ": corrupt (bad frame or hash mismatch)",
                                       cs, ps, c.offset);
        if (r < 0)
                return FAIL(why, r, "chunk %s in pack %s at offset %" PRIu64 ": %m", cs, ps, c.offset);
        return 0;
}

int snapshot_read_chunk(struct backend *b, const struct snapshot *s, uint32_t idx,
                        struct chunk_codec *codec, void *dst)
{
        return read_chunk(b, s, idx, codec, dst, NULL);
}

int snapshot_read_chunk_why(struct backend *b, const struct snapshot *s, uint32_t idx,
                            struct chunk_codec *codec, void *dst, char why[static CHUNK_WHY_MAX])
{
        why[0] = '\0';
        return read_chunk(b, s, idx, codec, dst, why);
}

/* ---- index.json entries ---- */

int index_manifests(json_t *index, json_t **ret, bool *ret_created)
{
        json_t *m;

        if (!json_is_object(index))
                return log_error_errno(-EBADMSG, "index.json: not a JSON object");
        m = json_object_get(index, "manifests");
        if (m) {
                if (!json_is_array(m))
                        return log_error_errno(-EBADMSG, "index.json: manifests is not an array");
                *ret = m;
                *ret_created = false;
                return 0;
        }
        if (json_object_set_new(index, "manifests", json_array()) < 0)
                return -ENOMEM;
        if (!json_object_get(index, "schemaVersion") &&
            json_object_set_new(index, "schemaVersion", json_integer(2)) < 0)
                return -ENOMEM;
        if (!json_object_get(index, "mediaType") &&
            json_object_set_new(index, "mediaType", json_string(MEDIA_OCI_INDEX)) < 0)
                return -ENOMEM;
        *ret = json_object_get(index, "manifests");
        *ret_created = true;
        return 0;
}

int index_entry_digest(const json_t *e, struct digest *ret)
{
        const json_t *d = json_object_get(e, "digest");
        if (!json_is_string(d) || digest_parse(json_string_value(d), ret) < 0)
                return -EBADMSG;
        return 0;
}

const char *index_entry_tag(const json_t *e)
{
        return json_string_value(json_object_get(json_object_get(e, "annotations"),
                                                 ANNOTATION_REF_NAME));
}

static bool entry_is(const json_t *e, const struct digest *d)
{
        struct digest x;
        return index_entry_digest(e, &x) == 0 && digest_eq(&x, d);
}

/* Does any entry other than skip name d? */
static bool index_has_other(const json_t *arr, size_t skip, const struct digest *d)
{
        for (size_t i = 0; i < json_array_size(arr); i++)
                if (i != skip && entry_is(json_array_get(arr, i), d))
                        return true;
        return false;
}

static int entry_set_tag(json_t *e, const char *tag)
{
        json_t *ann = json_object_get(e, "annotations");

        if (!json_is_object(ann)) {
                ann = json_object();
                if (!ann || json_object_set_new(e, "annotations", ann) < 0)
                        return -ENOMEM;
        }
        return json_object_set_new(ann, ANNOTATION_REF_NAME, json_string(tag)) < 0 ? -ENOMEM : 0;
}

/* index_add(): make d (a snapshot manifest of size bytes) a root, and if tag
 * is set point tag at it, moving it off any other entry: that entry stays an
 * untagged root unless its digest has another entry anyway. 1 if changed. */
static int index_add(json_t *index, const struct digest *d, uint64_t size, const char *tag)
{
        _cleanup_(json_decrefp) json_t *e = NULL;
        char ds[DIGEST_STR_LEN + 1];
        json_t *arr;
        bool changed;
        ssize_t untagged = -1;
        int r;

        r = index_manifests(index, &arr, &changed);
        if (r < 0)
                return r;

        if (tag) {
                for (size_t i = json_array_size(arr); i-- > 0;) {
                        json_t *x = json_array_get(arr, i), *ann;
                        const char *t = index_entry_tag(x);
                        struct digest xd;

                        if (!t || !streq(t, tag) || entry_is(x, d))
                                continue;
                        changed = true;
                        if (index_entry_digest(x, &xd) < 0 || index_has_other(arr, i, &xd)) {
                                json_array_remove(arr, i);
                                continue;
                        }
                        ann = json_object_get(x, "annotations");
                        json_object_del(ann, ANNOTATION_REF_NAME);
                        if (json_object_size(ann) == 0)
                                json_object_del(x, "annotations");
                }
        }

        for (size_t i = 0; i < json_array_size(arr); i++) {
                json_t *x = json_array_get(arr, i);
                const char *t;

                if (!entry_is(x, d))
                        continue;
                t = index_entry_tag(x);
                if (!tag || (t && streq(t, tag)))
                        return changed; /* already a root / already tagged so */
                if (!t && untagged < 0)
                        untagged = (ssize_t)i;
        }
        if (untagged >= 0) {
                r = entry_set_tag(json_array_get(arr, (size_t)untagged), tag);
                return r < 0 ? r : 1;
        }

        e = json_pack("{s:s, s:s, s:I, s:s}", "mediaType", MEDIA_OCI_MANIFEST, "digest",
                      digest_str(d, ds), "size", (json_int_t)size, "artifactType", MEDIA_SNAPSHOT);
        if (!e)
                return -ENOMEM;
        if (tag) {
                r = entry_set_tag(e, tag);
                if (r < 0)
                        return r;
        }
        if (json_array_append(arr, e) < 0)
                return -ENOMEM;
        return 1;
}

/* ---- publish ---- */

struct publish_ctx {
        struct backend *b;
        const struct digest *need; /* blobs that must still be present */
        size_t n_need;
        struct digest manifest;
        uint64_t manifest_size;
        const char *tag;
};

static int publish_index(json_t *index, void *userdata)
{
        struct publish_ctx *p = userdata;
        char ds[DIGEST_STR_LEN + 1], ms[DIGEST_STR_LEN + 1];
        int r;

        for (size_t i = 0; i < p->n_need; i++) {
                r = backend_has(p->b, &p->need[i]);
                if (r < 0)
                        return log_error_errno(r, "publish %s: check blob %s: %m",
                                               digest_str(&p->manifest, ms), digest_str(&p->need[i], ds));
                if (r == 0)
                        return log_error_errno(-ENOENT, "publish %s: blob %s vanished before the index was updated (a concurrent gc removed it); commit again",
                                               digest_str(&p->manifest, ms), digest_str(&p->need[i], ds));
        }
        return index_add(index, &p->manifest, p->manifest_size, p->tag);
}

static int json_dump_blob(struct backend *b, const json_t *j, const char *what, size_t *ret_len,
                          struct digest *ret)
{
        _cleanup_(freep) char *s = NULL;
        size_t len;
        int r;

        s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
        if (!s)
                return -ENOMEM;
        len = strlen(s);
        r = blob_write_data(b, s, len, ret);
        if (r < 0)
                return log_error_errno(r, "publish: write %s blob: %m", what);
        *ret_len = len;
        return 0;
}

static json_t *json_descriptor(const char *media, const struct digest *d, uint64_t size)
{
        char ds[DIGEST_STR_LEN + 1];
        return json_pack("{s:s, s:s, s:I}", "mediaType", media, "digest", digest_str(d, ds), "size",
                         (json_int_t)size);
}

int snapshot_publish(struct backend *b, const struct snapshot_new *n, struct digest *ret)
{
        _cleanup_(tree_freep) struct tree *t = NULL;
        const struct tree *tt; /* n->tree, or t loaded from the blob */
        _cleanup_(freep) struct digest *need = NULL;
        _cleanup_(freep) uint64_t *pack_sizes = NULL;
        _cleanup_(json_decrefp) json_t *config = NULL, *labels = NULL, *stats = NULL, *layers = NULL,
                                       *config_desc = NULL, *manifest = NULL;
        char created[32], ds[DIGEST_STR_LEN + 1];
        struct digest tree_digest, config_digest, trace_digest = {};
        struct publish_ctx p = {};
        bool has_trace = false;
        uint32_t n_packs;
        uint64_t generation = 0;
        size_t config_len = 0, manifest_len = 0, n_need = 0; /* = 0: gcc -O3 cannot see json_dump_blob() set them */
        int r;

        if (!b || !n || !ret || !n->tree_blob || !chunk_size_valid(n->chunk_size))
                return -EINVAL;
        if (n->tag && !tag_valid(n->tag))
                return log_error_errno(-EINVAL, "publish: \"%s\" is not a valid tag", n->tag);
        if ((n->labels && !json_is_string_object(n->labels)) || (n->stats && !json_is_object(n->stats)) ||
            (n->image && !json_is_object(n->image)))
                return log_error_errno(-EINVAL, "publish: labels must be an object of strings, stats and image objects");
        if (n->parent) {
                if (n->parent->config.generation >= JSON_UINT_MAX)
                        return log_error_errno(-EOVERFLOW, "publish: parent generation too large");
                generation = n->parent->config.generation + 1;
        }

        /* The tree says which packs the snapshot needs; they must be stored. */
        if (n->tree)
                tt = n->tree;
        else {
                r = tree_load(n->tree_blob, n->tree_len, &n->tree_digest, &t);
                if (r < 0)
                        return log_error_errno(r, "publish: tree %s rejected: %m", digest_str(&n->tree_digest, ds));
                tt = t;
        }
        if (tree_chunk_size(tt) != n->chunk_size)
                return log_error_errno(-EINVAL, "publish: tree chunk size %u, snapshot chunk size %u",
                                       tree_chunk_size(tt), n->chunk_size);
        n_packs = tree_n_packs(tt);
        if (n_packs >= LAYERS_MAX)
                return log_error_errno(-E2BIG, "publish: the tree names %u packs, a manifest holds at most %u",
                                       n_packs, LAYERS_MAX - 1);
        need = calloc((size_t)n_packs + 4, sizeof *need);
        pack_sizes = calloc((size_t)n_packs + 1, sizeof *pack_sizes);
        if (!need || !pack_sizes)
                return -ENOMEM;
        for (uint32_t i = 0; i < n_packs; i++) {
                need[n_need++] = *tree_pack(tt, i);
                r = backend_size(b, tree_pack(tt, i), &pack_sizes[i]);
                if (r == -ENOENT)
                        return log_error_errno(r, "publish: pack %s named by the tree is not in the store",
                                               digest_str(tree_pack(tt, i), ds));
                if (r < 0)
                        return log_error_errno(r, "publish: size of pack %s: %m", digest_str(tree_pack(tt, i), ds));
                /* Young again, so a concurrent gc's grace period spares it. */
                r = backend_freshen(b, tree_pack(tt, i));
                if (r < 0)
                        return log_error_errno(r, "publish: freshen pack %s: %m", digest_str(tree_pack(tt, i), ds));
        }

        if (n->trace && n->trace_len) {
                _cleanup_(freep) struct trace_entry *te = NULL;
                uint32_t tcs;
                size_t tn;

                r = trace_blob_parse(n->trace, n->trace_len, &tcs, &te, &tn);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return log_error_errno(-EINVAL, "publish: the access trace is not a valid v1 trace");
                r = blob_write_data(b, n->trace, n->trace_len, &trace_digest);
                if (r < 0)
                        return log_error_errno(r, "publish: write access trace blob: %m");
                need[n_need++] = trace_digest;
                has_trace = true;
        }

        r = blob_write_data(b, n->tree_blob, n->tree_len, &tree_digest);
        if (r < 0)
                return log_error_errno(r, "publish: write tree blob: %m");
        need[n_need++] = tree_digest;

        if (n->created) {
                if (!rfc3339_valid(n->created) || strlen(n->created) >= sizeof created)
                        return log_error_errno(-EINVAL, "publish: created \"%.40s\" is not an RFC 3339 time", n->created);
                snprintf(created, sizeof created, "%s", n->created);
        } else
                format_rfc3339((int64_t)time(NULL), created);
        labels = n->labels ? json_incref(n->labels) : json_object();
        stats = n->stats ? json_incref(n->stats) : json_object();
        if (!labels || !stats)
                return -ENOMEM;
        config = json_pack("{s:I, s:I, s:s, s:O, s:O}", "chunkSize", (json_int_t)n->chunk_size,
                           "generation", (json_int_t)generation, "created", created, "labels",
                           labels, "stats", stats);
        if (!config)
                return -ENOMEM;
        if (n->parent && json_object_set_new(config, "parent",
                                             json_string(digest_str(&n->parent->digest, ds))) < 0)
                return -ENOMEM;
        if (n->image && json_object_set(config, "image", n->image) < 0)
                return -ENOMEM;
        r = json_dump_blob(b, config, "config", &config_len, &config_digest);
        if (r < 0)
                return r;
        need[n_need++] = config_digest;

        layers = json_array();
        if (!layers || json_array_append_new(layers, json_descriptor(MEDIA_TREE, &tree_digest, n->tree_len)) < 0)
                return -ENOMEM;
        for (uint32_t i = 0; i < n_packs; i++)
                if (json_array_append_new(layers, json_descriptor(MEDIA_PACK, tree_pack(tt, i), pack_sizes[i])) < 0)
                        return -ENOMEM;
        if (has_trace && json_array_append_new(layers, json_descriptor(MEDIA_TRACE, &trace_digest, n->trace_len)) < 0)
                return -ENOMEM;
        config_desc = json_descriptor(MEDIA_SNAPSHOT_CONFIG, &config_digest, config_len);
        if (!config_desc)
                return -ENOMEM;
        manifest = json_pack("{s:i, s:s, s:s, s:O, s:O, s:{s:s}}", "schemaVersion", 2, "mediaType",
                             MEDIA_OCI_MANIFEST, "artifactType", MEDIA_SNAPSHOT, "config",
                             config_desc, "layers", layers, "annotations", ANNOTATION_CREATED, created);
        if (!manifest)
                return -ENOMEM;
        r = json_dump_blob(b, manifest, "manifest", &manifest_len, &p.manifest);
        if (r < 0)
                return r;
        need[n_need++] = p.manifest;

        p.b = b;
        p.need = need;
        p.n_need = n_need;
        p.manifest_size = manifest_len;
        p.tag = n->tag;
        r = backend_index_transaction(b, publish_index, &p);
        if (r < 0)
                return log_error_errno(r, "publish %s: update index: %m", digest_str(&p.manifest, ds));
        *ret = p.manifest;
        return 0;
}

/* ---- references ---- */

bool tag_valid(const char *tag)
{
        size_t n;

        if (!tag)
                return false;
        n = strlen(tag);
        if (n < 1 || n > 128)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = tag[i];
                bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                          c == '_' || (i > 0 && (c == '.' || c == '-'));
                if (!ok)
                        return false;
        }
        return true;
}

int store_resolve(struct backend *b, const char *ref, struct digest *ret)
{
        _cleanup_(json_decrefp) json_t *index = NULL;
        json_t *arr;
        struct digest d;
        bool created;
        int r;

        if (!b || !ref || !ret)
                return -EINVAL;
        if (strncmp(ref, "sha256:", 7) == 0) {
                if (digest_parse(ref, &d) < 0)
                        return log_error_errno(-EINVAL, "\"%.80s\" is not a digest (sha256:<64 lowercase hex>)", ref);
                r = backend_has(b, &d);
                if (r < 0)
                        return log_error_errno(r, "look up %s: %m", ref);
                if (r == 0)
                        return log_error_errno(-ENOENT, "snapshot %s is not in the store", ref);
                *ret = d;
                return 0;
        }
        if (!tag_valid(ref))
                return log_error_errno(-EINVAL, "\"%.80s\" is neither a tag nor a sha256: digest", ref);
        r = backend_index_read(b, &index);
        if (r < 0)
                return log_error_errno(r, "read index: %m");
        r = index_manifests(index, &arr, &created);
        if (r < 0)
                return r;
        for (size_t i = 0; i < json_array_size(arr); i++) {
                json_t *e = json_array_get(arr, i);
                const char *t = index_entry_tag(e);
                if (!t || !streq(t, ref))
                        continue;
                if (index_entry_digest(e, &d) < 0)
                        return log_error_errno(-EBADMSG, "index.json: entry tagged %s has no valid digest", ref);
                *ret = d;
                return 0;
        }
        return log_error_errno(-ENOENT, "no snapshot tagged %s in store", ref);
}

struct tag_ctx {
        const struct digest *d;
        uint64_t size;
        const char *tag;
};

static int tag_index(json_t *index, void *userdata)
{
        struct tag_ctx *c = userdata;
        return index_add(index, c->d, c->size, c->tag);
}

int store_tag(struct backend *b, const struct digest *d, const char *tag)
{
        _cleanup_(freep) void *buf = NULL;
        _cleanup_(snapshot_freep) struct snapshot *s = NULL;
        char ds[DIGEST_STR_LEN + 1];
        struct tag_ctx c;
        size_t len;
        int r;

        if (!b || !d || !tag)
                return -EINVAL;
        if (!tag_valid(tag))
                return log_error_errno(-EINVAL, "\"%.80s\" is not a valid tag ([A-Za-z0-9_][A-Za-z0-9._-]{0,127})",
                                       tag);
        digest_str(d, ds);
        r = blob_read_verified(b, d, MANIFEST_MAX, &buf, &len);
        if (r == -ENOENT)
                return log_error_errno(r, "tag %s: snapshot %s is not in the store", tag, ds);
        if (r == -EBADMSG)
                return r;
        if (r < 0)
                return log_error_errno(r, "tag %s: read %s: %m", tag, ds);
        r = snapshot_manifest_parse(buf, len, &s);
        if (r < 0)
                return log_error_errno(-EINVAL, "tag %s: %s is not a snapshot manifest", tag, ds);

        c = (struct tag_ctx){ .d = d, .size = len, .tag = tag };
        r = backend_index_transaction(b, tag_index, &c);
        if (r < 0)
                return log_error_errno(r, "tag %s: update index: %m", tag);
        return 0;
}

int store_recent(struct backend *b, uint32_t cs, unsigned max, const struct digest *skip, size_t n_skip,
                 struct snapshot ***ret, size_t *ret_n)
{
        _cleanup_(json_decrefp) json_t *index = NULL;
        struct snapshot **snaps;
        json_t *arr;
        size_t n = 0;
        int r;

        if (!b || !ret || !ret_n)
                return -EINVAL;
        r = backend_index_read(b, &index);
        if (r < 0)
                return log_error_errno(r, "read the store's index: %m");
        arr = json_object_get(index, "manifests");
        snaps = calloc(max + 1, sizeof *snaps);
        if (!snaps)
                return -ENOMEM;
        /* Newest last in index.json: walk it backwards. */
        for (size_t i = json_array_size(arr); i > 0 && n < max; i--) {
                struct snapshot *s = NULL;
                struct digest d;
                bool dup = false;

                if (digest_parse(json_string_value(json_object_get(json_array_get(arr, i - 1), "digest")), &d) < 0)
                        continue;
                for (size_t k = 0; k < n; k++)
                        dup = dup || digest_eq(&snaps[k]->digest, &d);
                if (dup)
                        continue;
                if (snapshot_open(b, &d, &s) < 0 || s->config.chunk_size != cs) {
                        snapshot_free(s);
                        continue;
                }
                /* A tree the caller has loaded already: not twice. */
                for (size_t k = 0; k < n_skip; k++)
                        dup = dup || digest_eq(&s->tree_digest, &skip[k]);
                if (dup || snapshot_load_tree(b, s) < 0) {
                        snapshot_free(s);
                        continue;
                }
                snaps[n++] = s;
        }
        *ret = snaps;
        *ret_n = n;
        return 0;
}
