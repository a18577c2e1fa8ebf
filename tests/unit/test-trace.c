/* test-trace.c — the access-trace blob (store/trace-blob.h): encode and
 * strict parse, bad input; and the trace as a snapshot's last layer:
 * publish, open, load, verify, gc (in-memory backend). */
#include <criterion/criterion.h>
#include <endian.h>
#include <string.h>
#include <sys/stat.h>

#include "store/backend.h"
#include "store/chunk.h"
#include "store/snapshot.h"
#include "store/trace-blob.h"
#include "store/tree.h"
#include "store/util.h"

#define CS CHUNK_SIZE_MIN

static void quiet(void)
{
        log_set_max_level(LOG_LVL_ERR - 1); /* the tests provoke errors on purpose */
}

TestSuite(trace, .init = quiet);

static const struct trace_entry three[] = {
        { .ino = 7, .chunk = 0 },
        { .ino = 2, .chunk = 5 },
        { .ino = 7, .chunk = 1 },
};

static void *encode3(size_t *ret_len)
{
        void *b = NULL;
        cr_assert_eq(trace_blob_encode(262144, three, 3, &b, ret_len), 0);
        return b;
}

Test(trace, round_trip_keeps_order)
{
        struct trace_entry *e = NULL;
        uint32_t cs = 0;
        size_t len, n = 0;
        uint8_t *b = encode3(&len);

        cr_assert_eq(len, TRACE_BLOB_HEADER + 3 * TRACE_BLOB_ENTRY);
        cr_assert_eq(memcmp(b, "STSTRACE", 8), 0);
        cr_assert_eq(b[8], 1); /* version, little-endian */
        cr_assert_eq(trace_blob_parse(b, len, &cs, &e, &n), 0);
        cr_assert_eq(cs, 262144);
        cr_assert_eq(n, 3);
        for (size_t i = 0; i < 3; i++) {
                cr_assert_eq(e[i].ino, three[i].ino);
                cr_assert_eq(e[i].chunk, three[i].chunk);
        }
        free(e);
        free(b);
}

Test(trace, empty_trace)
{
        struct trace_entry *e = (void *)1;
        uint32_t cs;
        size_t len, n = 9;
        void *b = NULL;

        cr_assert_eq(trace_blob_encode(CS, NULL, 0, &b, &len), 0);
        cr_assert_eq(len, TRACE_BLOB_HEADER);
        cr_assert_eq(trace_blob_parse(b, len, &cs, &e, &n), 0);
        cr_assert_eq(n, 0);
        cr_assert_null(e);
        free(b);
}

Test(trace, encode_rejects_what_parse_would)
{
        const struct trace_entry zero[] = { { .ino = 0, .chunk = 1 } };
        const struct trace_entry dup[] = { { 3, 1 }, { 4, 1 }, { 3, 1 } };
        void *b = NULL;
        size_t len;

        cr_assert_eq(trace_blob_encode(CS, zero, 1, &b, &len), -EINVAL);
        cr_assert_eq(trace_blob_encode(CS, dup, 3, &b, &len), -EINVAL);
        cr_assert_eq(trace_blob_encode(3000, three, 3, &b, &len), -EINVAL);
        cr_assert_eq(trace_blob_encode(CS, three, TRACE_BLOB_ENTRIES_MAX + 1, &b, &len), -EINVAL);
        cr_assert_eq(trace_blob_encode(CS, NULL, 1, &b, &len), -EINVAL);
        cr_assert_null(b);
}

static void put32(uint8_t *p, uint32_t v)
{
        v = htole32(v);
        memcpy(p, &v, 4);
}

static int parse(const void *b, size_t len)
{
        struct trace_entry *e = NULL;
        uint32_t cs;
        size_t n;
        int r = trace_blob_parse(b, len, &cs, &e, &n);

        if (r < 0)
                cr_assert_null(e, "ret written on failure");
        free(e);
        return r;
}

Test(trace, parse_rejects_bad_input)
{
        size_t len;
        uint8_t *good = encode3(&len), *b = malloc(len + 16);

        cr_assert_eq(parse(good, len), 0);
#define MUTATE(what) do { memcpy(b, good, len); what; } while (0)
        MUTATE(b[0] = 'X');
        cr_expect_eq(parse(b, len), -EBADMSG, "magic");
        MUTATE(put32(b + 8, 2));
        cr_expect_eq(parse(b, len), -EBADMSG, "version 2");
        MUTATE(put32(b + 8, 0));
        cr_expect_eq(parse(b, len), -EBADMSG, "version 0");
        MUTATE(put32(b + 12, 3000));
        cr_expect_eq(parse(b, len), -EBADMSG, "chunk size not a power of two");
        MUTATE(put32(b + 12, CHUNK_SIZE_MAX * 2));
        cr_expect_eq(parse(b, len), -EBADMSG, "chunk size too large");
        MUTATE(put32(b + 12, 0));
        cr_expect_eq(parse(b, len), -EBADMSG, "chunk size 0");
        MUTATE(put32(b + 16, 4));
        cr_expect_eq(parse(b, len), -EBADMSG, "count larger than the blob");
        MUTATE(put32(b + 16, 2));
        cr_expect_eq(parse(b, len), -EBADMSG, "count smaller than the blob");
        MUTATE(put32(b + 16, 0xffffffffu));
        cr_expect_eq(parse(b, len), -EBADMSG, "absurd count");
        MUTATE(put32(b + 20, 1));
        cr_expect_eq(parse(b, len), -EBADMSG, "reserved not 0");
        MUTATE(memset(b + TRACE_BLOB_HEADER, 0, 8));
        cr_expect_eq(parse(b, len), -EBADMSG, "inode 0");
        /* entry 2 made equal to entry 0 */
        MUTATE(memcpy(b + TRACE_BLOB_HEADER + 2 * TRACE_BLOB_ENTRY, b + TRACE_BLOB_HEADER, TRACE_BLOB_ENTRY));
        cr_expect_eq(parse(b, len), -EBADMSG, "a pair twice");
        MUTATE((void)0);
        cr_expect_eq(parse(b, len - 1), -EBADMSG, "truncated");
        cr_expect_eq(parse(b, TRACE_BLOB_HEADER - 1), -EBADMSG, "short header");
        cr_expect_eq(parse(b, 0), -EBADMSG, "empty");
        MUTATE(b[len] = 0);
        cr_expect_eq(parse(b, len + 1), -EBADMSG, "trailing byte");
#undef MUTATE
        free(b);
        free(good);
}

Test(trace, parse_accepts_the_maximum)
{
        struct trace_entry *e = calloc(TRACE_BLOB_ENTRIES_MAX, sizeof *e), *got = NULL;
        void *b = NULL;
        uint32_t cs;
        size_t len, n;

        cr_assert(e);
        for (size_t i = 0; i < TRACE_BLOB_ENTRIES_MAX; i++)
                e[i] = (struct trace_entry){ .ino = 1 + i % 7, .chunk = (uint32_t)(i / 7) };
        cr_assert_eq(trace_blob_encode(CHUNK_SIZE_MAX, e, TRACE_BLOB_ENTRIES_MAX, &b, &len), 0);
        cr_assert_eq(len, TRACE_BLOB_MAX);
        cr_assert_eq(trace_blob_parse(b, len, &cs, &got, &n), 0);
        cr_assert_eq(n, TRACE_BLOB_ENTRIES_MAX);
        cr_assert_eq(got[n - 1].chunk, e[n - 1].chunk);
        free(got);
        free(b);
        free(e);
}

/* ---- the trace as a snapshot's layer ---- */

/* publish_one(): a snapshot of one file of two chunks (one pack), with the
 * given trace blob (NULL: none). */
static int publish_one(struct backend *b, const void *trace, size_t trace_len, struct digest *ret)
{
        struct chunk_codec *codec = chunk_codec_new(3);
        struct tree_builder *tb = tree_builder_new(CS);
        uint8_t data[CS], pack[2 * CS + 1024];
        struct tree_chunk c[2] = {};
        uint32_t cidx[2], h_root, h_file, p;
        struct snapshot_new sn = { .chunk_size = CS, .trace = trace, .trace_len = trace_len };
        struct digest pd;
        size_t off = 0;
        void *blob;
        int r;

        cr_assert(codec && tb);
        for (int i = 0; i < 2; i++) {
                size_t clen;

                memset(data, 'a' + i, sizeof data);
                cr_assert_eq(chunk_compress(codec, data, CS, pack + off, sizeof pack - off, &clen), 0);
                digest_sha256(data, CS, &c[i].addr);
                c[i].xxh3 = chunk_xxh3(data, CS);
                c[i].offset = off;
                c[i].clen = (uint32_t)clen;
                c[i].ulen = CS;
                off += clen;
        }
        cr_assert_eq(blob_write_data(b, pack, off, &pd), 0);
        cr_assert_eq(tree_builder_add_pack(tb, &pd, &p), 0);
        for (int i = 0; i < 2; i++) {
                c[i].pack = p;
                cr_assert_eq(tree_builder_add_chunk(tb, &c[i], &cidx[i]), 0);
        }
        cr_assert_eq(tree_builder_add_inode(tb, &(struct tree_attr){ .ino = 1, .mode = S_IFDIR | 0755, .nlink = 2 },
                                            &h_root), 0);
        cr_assert_eq(tree_builder_add_inode(tb, &(struct tree_attr){ .ino = 2, .mode = S_IFREG | 0644, .nlink = 1, .size = 2 * CS },
                                            &h_file), 0);
        cr_assert_eq(tree_builder_set_chunks(tb, h_file, cidx, 2), 0);
        cr_assert_eq(tree_builder_add_extent(tb, h_file, 0, 2 * CS), 0);
        cr_assert_eq(tree_builder_add_dirent(tb, h_root, "f", 1, 2), 0);
        tree_builder_set_next_ino(tb, 3);
        cr_assert_eq(tree_builder_finish(tb, 3, &blob, &sn.tree_len, &sn.tree_digest), 0);
        sn.tree_blob = blob;
        r = snapshot_publish(b, &sn, ret);
        free(blob);
        tree_builder_free(tb);
        chunk_codec_free(codec);
        return r;
}

static void report_count(void *ctx, const char *blob, const char *chunk, const char *what)
{
        (void)blob;
        (void)chunk;
        (void)what;
        (*(int *)ctx)++;
}

Test(trace, snapshot_stores_loads_verifies_and_keeps_the_trace)
{
        struct backend *b = backend_memory_new();
        struct snapshot *s = NULL;
        struct trace_entry *e = NULL;
        struct gc_stats gs;
        struct digest d, plain;
        uint32_t cs;
        size_t len, n;
        void *blob = encode3(&len), *m = NULL;
        size_t mlen;
        json_t *j, *layers;
        int problems = 0;

        cr_assert(b);
        cr_assert_eq(publish_one(b, blob, len, &d), 0);
        cr_assert_eq(snapshot_open(b, &d, &s), 0);
        cr_assert(s->has_trace);
        cr_assert_eq(s->n_packs, 1);
        cr_assert_eq(s->trace_size, len);
        cr_assert_eq(snapshot_load_tree(b, s), 0);
        cr_assert_eq(snapshot_load_trace(b, s, &cs, &e, &n), 0);
        cr_assert_eq(cs, 262144);
        cr_assert_eq(n, 3);
        cr_assert_eq(e[1].ino, 2);
        free(e);

        /* OCI-valid: the trace is the last layer, with its own media type. */
        cr_assert_eq(backend_read_all(b, &d, MANIFEST_MAX, &m, &mlen), 0);
        j = json_loadb(m, mlen, 0, NULL);
        layers = json_object_get(j, "layers");
        cr_assert_eq(json_array_size(layers), 3);
        cr_assert_str_eq(json_string_value(json_object_get(json_array_get(layers, 2), "mediaType")), MEDIA_TRACE);
        cr_assert_str_eq(json_string_value(json_object_get(json_array_get(layers, 1), "mediaType")), MEDIA_PACK);
        json_decref(j);
        free(m);

        /* gc keeps it; verify is clean, then names it once corrupt. */
        cr_assert_eq(store_gc(b, &(struct gc_opts){ .grace_sec = 0 }, &gs), 0);
        cr_assert_eq(backend_has(b, &s->trace_digest), 1);
        cr_assert_eq(store_verify(b, NULL, report_count, &problems, NULL), 0);
        cr_assert_eq(backend_remove(b, &s->trace_digest), 0);
        cr_assert_eq(backend_write(b, &s->trace_digest, "STSTRACX", 8), 0);
        cr_assert_eq(store_verify(b, NULL, report_count, &problems, NULL), 1);
        cr_assert_eq(snapshot_load_trace(b, s, &cs, &e, &n), -EBADMSG);
        snapshot_free(s);

        /* Without a trace: no layer, nothing to load. */
        cr_assert_eq(publish_one(b, NULL, 0, &plain), 0);
        cr_assert_eq(snapshot_open(b, &plain, &s), 0);
        cr_assert(!s->has_trace);
        cr_assert_eq(snapshot_load_trace(b, s, &cs, &e, &n), 0);
        cr_assert_null(e);
        cr_assert_eq(n, 0);
        snapshot_free(s);

        /* A bad trace is refused at publish. */
        ((uint8_t *)blob)[20] = 1;
        cr_assert_eq(publish_one(b, blob, len, &d), -EINVAL);
        free(blob);
        backend_free(b);
}

Test(trace, manifest_trace_layer_rules)
{
        static const char head[] =
                "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
                "\"artifactType\":\"application/vnd.stasis.snapshot.v1\",\"config\":{\"mediaType\":"
                "\"application/vnd.stasis.snapshot.config.v1+json\",\"digest\":\"sha256:"
                "1111111111111111111111111111111111111111111111111111111111111111\",\"size\":1},\"layers\":["
                "{\"mediaType\":\"application/vnd.stasis.tree.v1+zstd\",\"digest\":\"sha256:"
                "2222222222222222222222222222222222222222222222222222222222222222\",\"size\":10}";
        static const char pack[] = ",{\"mediaType\":\"application/vnd.stasis.pack.v1\",\"digest\":\"sha256:"
                                   "3333333333333333333333333333333333333333333333333333333333333333\",\"size\":10}";
        static const char trace[] = ",{\"mediaType\":\"application/vnd.stasis.trace.v1\",\"digest\":\"sha256:"
                                    "4444444444444444444444444444444444444444444444444444444444444444\",\"size\":36}";
        static const char big[] = ",{\"mediaType\":\"application/vnd.stasis.trace.v1\",\"digest\":\"sha256:"
                                  "4444444444444444444444444444444444444444444444444444444444444444\",\"size\":99999999}";
        struct snapshot *s = NULL;
        char buf[2048];

        snprintf(buf, sizeof buf, "%s%s%s]}", head, pack, trace);
        cr_assert_eq(snapshot_manifest_parse(buf, strlen(buf), &s), 0);
        cr_assert(s->has_trace);
        cr_assert_eq(s->n_packs, 1);
        cr_assert_eq(s->trace_size, 36);
        s = snapshot_free(s);
        snprintf(buf, sizeof buf, "%s%s]}", head, trace);
        cr_assert_eq(snapshot_manifest_parse(buf, strlen(buf), &s), 0);
        cr_assert(s->has_trace && s->n_packs == 0);
        s = snapshot_free(s);
        /* Not last, twice, or too large: rejected. */
        snprintf(buf, sizeof buf, "%s%s%s]}", head, trace, pack);
        cr_assert_eq(snapshot_manifest_parse(buf, strlen(buf), &s), -EBADMSG);
        snprintf(buf, sizeof buf, "%s%s%s]}", head, trace, trace);
        cr_assert_eq(snapshot_manifest_parse(buf, strlen(buf), &s), -EBADMSG);
        snprintf(buf, sizeof buf, "%s%s]}", head, big);
        cr_assert_eq(snapshot_manifest_parse(buf, strlen(buf), &s), -EBADMSG);
        cr_assert_null(s);
}
