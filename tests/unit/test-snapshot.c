/* test-snapshot.c — manifest and config JSON, publish/open/read, tags,
 * verify and gc, all through the in-memory backend. */
#include <criterion/criterion.h>
#include <string.h>
#include <sys/stat.h>

#include "store/backend.h"
#include "store/chunk.h"
#include "store/snapshot.h"
#include "store/tree.h"
#include "store/util.h"

#define CS CHUNK_SIZE_MIN

static void quiet(void)
{
        log_set_max_level(LOG_LVL_ERR - 1); /* the tests provoke errors on purpose */
}

/* ---- fixtures: packs and trees built by hand ---- */

struct chunkref {
        struct digest pack;
        struct tree_chunk c; /* pack field unused here */
        uint8_t data[CS];
};

static void chunk_data(uint8_t seed, size_t len, uint8_t *out)
{
        for (size_t i = 0; i < len; i++)
                out[i] = (uint8_t)(seed * 131u + i * 7u + (i >> 9) * seed);
}

/* make_pack(): one pack holding a chunk per seed (ulen each), written to b. */
static void make_pack(struct backend *b, const uint8_t *seeds, const size_t *ulens, size_t n,
                      struct chunkref *out)
{
        struct chunk_codec *codec = chunk_codec_new(3);
        size_t cap = n * chunk_bound(CS), off = 0;
        uint8_t *pack = malloc(cap);
        struct digest pd;

        cr_assert(codec && pack);
        for (size_t i = 0; i < n; i++) {
                size_t clen;
                chunk_data(seeds[i], ulens[i], out[i].data);
                cr_assert_eq(chunk_compress(codec, out[i].data, ulens[i], pack + off, cap - off, &clen), 0);
                digest_sha256(out[i].data, ulens[i], &out[i].c.addr);
                out[i].c.xxh3 = chunk_xxh3(out[i].data, ulens[i]);
                out[i].c.offset = off;
                out[i].c.clen = (uint32_t)clen;
                out[i].c.ulen = (uint32_t)ulens[i];
                off += clen;
        }
        cr_assert_eq(blob_write_data(b, pack, off, &pd), 0);
        for (size_t i = 0; i < n; i++)
                out[i].pack = pd;
        free(pack);
        chunk_codec_free(codec);
}

/* make_tree(): a root with one file "f" made of the chunks refs[0..n). */
static void make_tree(const struct chunkref *const *refs, size_t n, void **ret, size_t *ret_len,
                      struct digest *ret_digest)
{
        struct tree_builder *tb = tree_builder_new(CS);
        uint32_t cidx[16], h_root, h_file;
        uint64_t size = 0;

        cr_assert(tb && n <= 16);
        for (size_t i = 0; i < n; i++) {
                struct tree_chunk tc = refs[i]->c;
                uint32_t p;
                cr_assert_eq(tree_builder_add_pack(tb, &refs[i]->pack, &p), 0);
                tc.pack = p;
                cr_assert_eq(tree_builder_add_chunk(tb, &tc, &cidx[i]), 0);
                cr_assert(i + 1 == n || refs[i]->c.ulen == CS, "only the last chunk may be short");
                size += refs[i]->c.ulen;
        }
        cr_assert_eq(tree_builder_add_inode(tb, &(struct tree_attr){ .ino = 1, .mode = S_IFDIR | 0755, .nlink = 2 },
                                            &h_root), 0);
        cr_assert_eq(tree_builder_add_inode(tb, &(struct tree_attr){ .ino = 2, .mode = S_IFREG | 0644, .nlink = 1, .size = size },
                                            &h_file), 0);
        cr_assert_eq(tree_builder_set_chunks(tb, h_file, cidx, n), 0);
        cr_assert_eq(tree_builder_add_xattr(tb, h_file, "user.k", "v", 1), 0);
        if (size)
                cr_assert_eq(tree_builder_add_extent(tb, h_file, 0, size), 0);
        cr_assert_eq(tree_builder_add_dirent(tb, h_root, "f", 1, 2), 0);
        tree_builder_set_next_ino(tb, 3);
        cr_assert_eq(tree_builder_finish(tb, 3, ret, ret_len, ret_digest), 0);
        tree_builder_free(tb);
}

static void publish_labeled(struct backend *b, const struct chunkref *const *refs, size_t n,
                            const struct digest *parent, const char *tag, json_t *labels,
                            struct digest *ret)
{
        struct snapshot *p = NULL;
        struct snapshot_new sn = { .chunk_size = CS, .tag = tag, .labels = labels };
        void *blob;
        int r;

        if (parent)
                cr_assert_eq(snapshot_open(b, parent, &p), 0);
        make_tree(refs, n, &blob, &sn.tree_len, &sn.tree_digest);
        sn.tree_blob = blob;
        sn.parent = p;
        r = snapshot_publish(b, &sn, ret);
        cr_assert_eq(r, 0, "publish: %d", r);
        free(blob);
        snapshot_free(p);
}

static void publish(struct backend *b, const struct chunkref *const *refs, size_t n,
                    const struct digest *parent, const char *tag, struct digest *ret)
{
        publish_labeled(b, refs, n, parent, tag, NULL, ret);
}

/* A snapshot of two chunks (one full, one short) in one pack. */
struct simple {
        struct backend *b;
        struct chunkref ch[2];
        struct digest snap;
};

static void simple_make(struct simple *s, const char *tag)
{
        static const uint8_t seeds[] = { 1, 2 };
        static const size_t ulens[] = { CS, 1000 };
        const struct chunkref *refs[] = { &s->ch[0], &s->ch[1] };

        s->b = backend_memory_new();
        cr_assert(s->b);
        make_pack(s->b, seeds, ulens, 2, s->ch);
        publish(s->b, refs, 2, NULL, tag, &s->snap);
}

static size_t index_count(struct backend *b, const struct digest *d, const char *tag)
{
        json_t *index, *e;
        size_t i, n = 0;
        char ds[DIGEST_STR_LEN + 1];

        cr_assert_eq(backend_index_read(b, &index), 0);
        json_array_foreach(json_object_get(index, "manifests"), i, e) {
                const char *t = json_string_value(json_object_get(json_object_get(e, "annotations"),
                                                                  ANNOTATION_REF_NAME));
                if (d && strcmp(json_string_value(json_object_get(e, "digest")), digest_str(d, ds)) != 0)
                        continue;
                if (tag ? (t && strcmp(t, tag) == 0) : true)
                        n++;
        }
        json_decref(index);
        return n;
}

/* ---- manifest and config JSON ---- */

TestSuite(snapshot, .init = quiet);

Test(snapshot, manifest_and_config_round_trip)
{
        struct simple s;
        struct snapshot *snap = NULL, *m = NULL;
        struct snapshot_config c;
        void *buf;
        size_t len;
        char *again;

        simple_make(&s, "v1");
        cr_assert_eq(blob_read_verified(s.b, &s.snap, MANIFEST_MAX, &buf, &len), 0);
        cr_assert_eq(snapshot_manifest_parse(buf, len, &m), 0);
        cr_assert(digest_eq(&m->digest, &s.snap));
        cr_assert_eq(m->n_packs, 1);
        cr_assert(digest_eq(&m->packs[0], &s.ch[0].pack));
        cr_assert_eq(m->config.labels, NULL, "manifest parse alone does not read the config");

        /* Deterministic bytes: compact, sorted keys. */
        json_t *j = json_loadb(buf, len, 0, NULL);
        again = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
        cr_assert_eq(strlen(again), len);
        cr_assert_eq(memcmp(again, buf, len), 0);
        cr_assert_str_eq(json_string_value(json_object_get(j, "artifactType")), MEDIA_SNAPSHOT);
        cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "config"), "mediaType")),
                         MEDIA_SNAPSHOT_CONFIG);
        cr_assert(json_is_string(json_object_get(json_object_get(j, "annotations"), ANNOTATION_CREATED)));
        free(again);
        json_decref(j);
        free(buf);

        cr_assert_eq(snapshot_open(s.b, &s.snap, &snap), 0);
        cr_assert_eq(snap->config.chunk_size, CS);
        cr_assert_eq(snap->config.generation, 0);
        cr_assert(!snap->config.has_parent);
        cr_assert(json_is_object(snap->config.labels));
        cr_assert(json_is_object(snap->config.stats));
        cr_assert_null(snap->config.image);
        cr_assert(digest_eq(&snap->tree_digest, &m->tree_digest));

        cr_assert_eq(blob_read_verified(s.b, &snap->config_digest, CONFIG_MAX, &buf, &len), 0);
        cr_assert_eq(snapshot_config_parse(buf, len, &c), 0);
        cr_assert_str_eq(c.created, snap->config.created);
        snapshot_config_release(&c);
        free(buf);

        snapshot_free(m);
        snapshot_free(snap);
        backend_free(s.b);
}

static const char *good_manifest =
        "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
        "\"artifactType\":\"application/vnd.stasis.snapshot.v1\","
        "\"config\":{\"mediaType\":\"application/vnd.stasis.snapshot.config.v1+json\","
        "\"digest\":\"sha256:1111111111111111111111111111111111111111111111111111111111111111\",\"size\":120},"
        "\"layers\":[{\"mediaType\":\"application/vnd.stasis.tree.v1+zstd\","
        "\"digest\":\"sha256:2222222222222222222222222222222222222222222222222222222222222222\",\"size\":300},"
        "{\"mediaType\":\"application/vnd.stasis.pack.v1\","
        "\"digest\":\"sha256:3333333333333333333333333333333333333333333333333333333333333333\",\"size\":9007199254740992}],"
        "\"annotations\":{\"org.opencontainers.image.created\":\"2026-01-02T03:04:05Z\"}}";

static const char *good_config =
        "{\"chunkSize\":262144,\"generation\":3,"
        "\"parent\":\"sha256:4444444444444444444444444444444444444444444444444444444444444444\","
        "\"created\":\"2026-01-02T03:04:05.123+01:00\",\"labels\":{\"a\":\"b\"},\"stats\":{\"files\":1},"
        "\"image\":{\"Env\":[\"PATH=/bin\"]}}";

/* mutate(): good with the first occurrence of from replaced by to. */
static char *mutate(const char *good, const char *from, const char *to)
{
        const char *p = strstr(good, from);
        char *out;

        cr_assert(p, "mutation source \"%s\" not found", from);
        cr_assert(asprintf(&out, "%.*s%s%s", (int)(p - good), good, to, p + strlen(from)) > 0);
        return out;
}

Test(snapshot, manifest_good_parses)
{
        struct snapshot *s = NULL;
        cr_assert_eq(snapshot_manifest_parse(good_manifest, strlen(good_manifest), &s), 0);
        cr_assert_eq(s->n_packs, 1);
        cr_assert_eq(s->tree_size, 300);
        cr_assert_eq(s->pack_sizes[0], UINT64_C(1) << 53);
        snapshot_free(s);
}

Test(snapshot, manifest_rejects_malformed)
{
        static const char *const m[][2] = {
                { "\"schemaVersion\":2", "\"schemaVersion\":\"2\"" },
                { "\"schemaVersion\":2", "\"schemaVersion\":1" },
                { "\"schemaVersion\":2,", "" },
                { "image.manifest.v1+json", "image.index.v1+json" },
                { "\"artifactType\":\"application/vnd.stasis.snapshot.v1\",", "" },
                { "vnd.stasis.snapshot.v1\"", "vnd.other.v1\"" },
                { "vnd.stasis.snapshot.config.v1+json", "vnd.oci.image.config.v1+json" },
                { "sha256:1111", "sha256:111" },
                { "sha256:1111", "sha256:A111" },
                { "sha256:1111", "sha512:1111" },
                { "\"size\":120", "\"size\":-1" },
                { "\"size\":120", "\"size\":1.5" },
                { "\"size\":120", "\"size\":\"120\"" },
                { "\"size\":120", "\"size\":null" },
                { "\"size\":9007199254740992", "\"size\":9007199254740993" },
                { "\"size\":9007199254740992", "\"size\":99999999999999999999999" },
                { "application/vnd.stasis.tree.v1+zstd", "application/vnd.stasis.pack.v1" },
                { "application/vnd.stasis.pack.v1", "application/vnd.stasis.tree.v1+zstd" },
                { "\"digest\":\"sha256:2222", "\"digest\":[\"sha256:2222" },
                { "\"layers\":[", "\"layers\":{\"x\":[" },
                { ":\"2026-01-02T03:04:05Z\"", ":5" },
                { "{\"schemaVersion\"", "[{\"schemaVersion\"" },
                { "{\"schemaVersion\"", "{\"schemaVersion\":2,\"schemaVersion\"" },
                { "\"config\":{", "\"config\":[{" },
        };
        struct snapshot *s = NULL;

        for (size_t i = 0; i < ELEMENTSOF(m); i++) {
                char *bad = mutate(good_manifest, m[i][0], m[i][1]);
                int r = snapshot_manifest_parse(bad, strlen(bad), &s);
                cr_expect_eq(r, -EBADMSG, "mutation %zu (%s -> %s) gave %d", i, m[i][0], m[i][1], r);
                cr_assert_null(s, "ret written on failure");
                free(bad);
        }
        /* No layers at all, and not JSON at all. */
        const char *empty = "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
                            "\"artifactType\":\"application/vnd.stasis.snapshot.v1\",\"config\":{\"mediaType\":"
                            "\"application/vnd.stasis.snapshot.config.v1+json\",\"digest\":\"sha256:"
                            "1111111111111111111111111111111111111111111111111111111111111111\",\"size\":1},\"layers\":[]}";
        cr_assert_eq(snapshot_manifest_parse(empty, strlen(empty), &s), -EBADMSG);
        cr_assert_eq(snapshot_manifest_parse("{", 1, &s), -EBADMSG);
        cr_assert_eq(snapshot_manifest_parse("", 0, &s), -EBADMSG);
        cr_assert_eq(snapshot_manifest_parse(good_manifest, strlen(good_manifest) - 1, &s), -EBADMSG);
        cr_assert_null(s);
}

Test(snapshot, config_good_parses)
{
        struct snapshot_config c;
        cr_assert_eq(snapshot_config_parse(good_config, strlen(good_config), &c), 0);
        cr_assert_eq(c.chunk_size, 262144);
        cr_assert_eq(c.generation, 3);
        cr_assert(c.has_parent);
        cr_assert_eq(c.parent.b[0], 0x44);
        cr_assert_str_eq(c.created, "2026-01-02T03:04:05.123+01:00");
        cr_assert_str_eq(json_string_value(json_object_get(c.labels, "a")), "b");
        cr_assert(json_is_object(c.image));
        snapshot_config_release(&c);
        snapshot_config_release(&c); /* idempotent */
}

Test(snapshot, config_rejects_malformed)
{
        static const char *const m[][2] = {
                { "\"chunkSize\":262144", "\"chunkSize\":262145" },
                { "\"chunkSize\":262144", "\"chunkSize\":8192" },
                { "\"chunkSize\":262144", "\"chunkSize\":8388608" },
                { "\"chunkSize\":262144", "\"chunkSize\":\"262144\"" },
                { "\"chunkSize\":262144,", "" },
                { "\"generation\":3", "\"generation\":-1" },
                { "\"generation\":3", "\"generation\":9007199254740993" },
                { "\"generation\":3,", "" },
                { "\"generation\":3", "\"generation\":0" }, /* with a parent */
                { "\"parent\":\"sha256:4444", "\"parent\":\"sha256:444" },
                { "\"parent\":\"sha256:4444444444444444444444444444444444444444444444444444444444444444\"",
                  "\"parent\":null" },
                { "2026-01-02T03:04:05.123+01:00", "yesterday" },
                { "2026-01-02T03:04:05.123+01:00", "2026-13-02T03:04:05Z" },
                { "2026-01-02T03:04:05.123+01:00", "2026-01-02T03:04:05" },
                { "2026-01-02T03:04:05.123+01:00", "2026-01-02T03:04:05.Z" },
                { "2026-01-02T03:04:05.123+01:00", "2026-01-02T03:04:05.1234567890123456789Z" },
                { "\"labels\":{\"a\":\"b\"}", "\"labels\":{\"a\":1}" },
                { "\"labels\":{\"a\":\"b\"}", "\"labels\":[]" },
                { "\"labels\":{\"a\":\"b\"},", "" },
                { "\"stats\":{\"files\":1}", "\"stats\":7" },
                { "\"stats\":{\"files\":1},", "" },
                { "\"image\":{\"Env\":[\"PATH=/bin\"]}", "\"image\":\"x\"" },
        };
        struct snapshot_config c = { .chunk_size = 77 };

        for (size_t i = 0; i < ELEMENTSOF(m); i++) {
                char *bad = mutate(good_config, m[i][0], m[i][1]);
                int r = snapshot_config_parse(bad, strlen(bad), &c);
                cr_expect_eq(r, -EBADMSG, "mutation %zu (%s -> %s) gave %d", i, m[i][0], m[i][1], r);
                cr_assert_eq(c.chunk_size, 77, "ret written on failure");
                free(bad);
        }
        cr_assert_eq(snapshot_config_parse("[]", 2, &c), -EBADMSG);
}

/* ---- publish, open, read ---- */

Test(snapshot, publish_open_read_chunks)
{
        struct simple s;
        struct snapshot *snap = NULL;
        struct chunk_codec *codec = chunk_codec_new(3);
        uint8_t *buf = malloc(CS);

        simple_make(&s, NULL);
        cr_assert_eq(snapshot_open(s.b, &s.snap, &snap), 0);
        cr_assert_eq(snapshot_read_chunk(s.b, snap, 0, codec, buf), -EINVAL, "tree not loaded yet");
        cr_assert_eq(snapshot_load_tree(s.b, snap), 0);
        cr_assert_eq(tree_n_chunks(snap->tree), 2);
        for (uint32_t i = 0; i < 2; i++) {
                struct tree_chunk c;
                const struct chunkref *ref;
                cr_assert_eq(tree_chunk(snap->tree, i, &c), 0);
                ref = digest_eq(&c.addr, &s.ch[0].c.addr) ? &s.ch[0] : &s.ch[1];
                cr_assert_eq(snapshot_read_chunk(s.b, snap, i, i ? codec : NULL, buf), 0);
                cr_assert_eq(memcmp(buf, ref->data, ref->c.ulen), 0);
        }
        cr_assert_lt(snapshot_read_chunk(s.b, snap, 2, codec, buf), 0, "index out of range");
        /* An untagged publish is still a root. */
        cr_assert_eq(index_count(s.b, &s.snap, NULL), 1);

        snapshot_free(snap);
        chunk_codec_free(codec);
        free(buf);
        backend_free(s.b);
}

Test(snapshot, publish_child_generation_and_missing_pack)
{
        struct simple s;
        struct snapshot *snap = NULL;
        struct digest child, ghost_pack;
        const struct chunkref *refs[] = { &s.ch[0] };
        struct chunkref ghost;

        simple_make(&s, NULL);
        publish(s.b, refs, 1, &s.snap, "child", &child);
        cr_assert_eq(snapshot_open(s.b, &child, &snap), 0);
        cr_assert_eq(snap->config.generation, 1);
        cr_assert(snap->config.has_parent);
        cr_assert(digest_eq(&snap->config.parent, &s.snap));
        snapshot_free(snap);

        /* A tree naming a pack the store lacks is refused, and nothing is indexed. */
        ghost = s.ch[0];
        digest_sha256("no such pack", 12, &ghost_pack);
        ghost.pack = ghost_pack;
        const struct chunkref *grefs[] = { &ghost };
        struct snapshot_new sn = { .chunk_size = CS };
        void *blob;
        struct digest d = {};
        make_tree(grefs, 1, &blob, &sn.tree_len, &sn.tree_digest);
        sn.tree_blob = blob;
        cr_assert_eq(snapshot_publish(s.b, &sn, &d), -ENOENT);
        sn.chunk_size = CS * 2;
        cr_assert_eq(snapshot_publish(s.b, &sn, &d), -EINVAL, "chunk size differs from the tree's");
        free(blob);
        cr_assert_eq(index_count(s.b, NULL, NULL), 2);
        backend_free(s.b);
}

/* Replace blob d's bytes with a copy where byte off has one bit flipped. */
static void corrupt_blob(struct backend *b, const struct digest *d, uint64_t off)
{
        void *buf;
        size_t len;

        cr_assert_eq(backend_read_all(b, d, SIZE_MAX / 2, &buf, &len), 0);
        cr_assert_lt(off, len);
        ((uint8_t *)buf)[off] ^= 0x10;
        cr_assert_eq(backend_remove(b, d), 0);
        cr_assert_eq(backend_write(b, d, buf, len), 0); /* the wrong bytes under d's name */
        free(buf);
}

Test(snapshot, read_chunk_faults)
{
        struct simple s;
        struct snapshot *snap = NULL;
        uint8_t *buf = malloc(CS);
        struct backend *f;
        uint32_t idx;

        simple_make(&s, NULL);
        f = backend_fault_new(s.b, &(struct fault_spec){ .kind = FAULT_NONE });
        cr_assert(f);
        cr_assert_eq(snapshot_open(f, &s.snap, &snap), 0);
        cr_assert_eq(snapshot_load_tree(f, snap), 0);
        cr_assert_eq(tree_chunk_find(snap->tree, &s.ch[0].c.addr, &idx), 0);
        cr_assert_eq(snapshot_read_chunk(f, snap, idx, NULL, buf), 0);

        backend_fault_set(f, &(struct fault_spec){ .kind = FAULT_FLIP_BIT, .op_mask = FAULT_OP_READ, .nth = 1 });
        cr_assert_eq(snapshot_read_chunk(f, snap, idx, NULL, buf), -EBADMSG);
        cr_assert_eq(backend_fault_hits(f), 1);
        backend_fault_set(f, &(struct fault_spec){ .kind = FAULT_SHORT_READ, .op_mask = FAULT_OP_READ, .nth = 1 });
        cr_assert_eq(snapshot_read_chunk(f, snap, idx, NULL, buf), -EBADMSG);
        backend_fault_set(f, &(struct fault_spec){ .kind = FAULT_FAIL, .op_mask = FAULT_OP_READ, .nth = 1, .err = EIO });
        cr_assert_eq(snapshot_read_chunk(f, snap, idx, NULL, buf), -EIO);
        backend_fault_set(f, &(struct fault_spec){ .kind = FAULT_NONE });
        cr_assert_eq(snapshot_read_chunk(f, snap, idx, NULL, buf), 0);
        cr_assert_eq(memcmp(buf, s.ch[0].data, CS), 0);

        cr_assert_eq(backend_remove(f, &s.ch[0].pack), 0);
        cr_assert_eq(snapshot_read_chunk(f, snap, idx, NULL, buf), -ENOENT);

        snapshot_free(snap);
        backend_free(f); /* owns s.b */
        free(buf);
}

Test(snapshot, open_and_load_reject_corrupt_blobs)
{
        struct simple s;
        struct snapshot *snap = NULL;

        simple_make(&s, NULL);
        cr_assert_eq(snapshot_open(s.b, &s.snap, &snap), 0);
        corrupt_blob(s.b, &snap->tree_digest, 3);
        cr_assert_eq(snapshot_load_tree(s.b, snap), -EBADMSG);
        cr_assert_null(snap->tree);
        corrupt_blob(s.b, &snap->config_digest, 5);
        snapshot_free(snap);
        snap = NULL;
        cr_assert_eq(snapshot_open(s.b, &s.snap, &snap), -EBADMSG);
        cr_assert_null(snap);
        corrupt_blob(s.b, &s.snap, 0);
        cr_assert_eq(snapshot_open(s.b, &s.snap, &snap), -EBADMSG);
        backend_free(s.b);
}

/* ---- references ---- */

Test(snapshot, tag_grammar)
{
        cr_assert(tag_valid("latest"));
        cr_assert(tag_valid("_x"));
        cr_assert(tag_valid("v1.2-rc_3"));
        cr_assert(!tag_valid(""));
        cr_assert(!tag_valid(".x"));
        cr_assert(!tag_valid("-x"));
        cr_assert(!tag_valid("a/b"));
        cr_assert(!tag_valid("a:b"));
        cr_assert(!tag_valid("sha256:00"));
        cr_assert(!tag_valid(NULL));
        char t[130];
        memset(t, 'a', sizeof t);
        t[128] = '\0';
        cr_assert(tag_valid(t));
        t[128] = 'a';
        t[129] = '\0';
        cr_assert(!tag_valid(t));
}

Test(snapshot, resolve_and_move_tags)
{
        struct simple s;
        struct digest a, b2, d;
        char ds[DIGEST_STR_LEN + 1];
        const struct chunkref *refs[1];

        simple_make(&s, "t");
        a = s.snap;
        refs[0] = &s.ch[1];
        publish(s.b, refs, 1, &a, "t", &b2);
        cr_assert(!digest_eq(&a, &b2));

        cr_assert_eq(store_resolve(s.b, "t", &d), 0);
        cr_assert(digest_eq(&d, &b2), "tag t moved to the newer snapshot");
        cr_assert_eq(index_count(s.b, &a, NULL), 1, "the old one stays a root");
        cr_assert_eq(index_count(s.b, &a, "t"), 0);
        cr_assert_eq(index_count(s.b, NULL, "t"), 1);

        cr_assert_eq(store_resolve(s.b, digest_str(&a, ds), &d), 0);
        cr_assert(digest_eq(&d, &a));
        memset(&d, 0, sizeof d);
        cr_assert_eq(store_resolve(s.b, "nope", &d), -ENOENT);
        cr_assert_eq(store_resolve(s.b, "bad/tag", &d), -EINVAL);
        cr_assert_eq(store_resolve(s.b, "sha256:abc", &d), -EINVAL);
        cr_assert_eq(store_resolve(s.b, "sha256:0000000000000000000000000000000000000000000000000000000000000000", &d),
                     -ENOENT);
        cr_assert_eq(d.b[0], 0, "ret untouched on failure");

        /* Move it back, tag again (no-op), and add a second tag. */
        cr_assert_eq(store_tag(s.b, &a, "t"), 0);
        cr_assert_eq(store_resolve(s.b, "t", &d), 0);
        cr_assert(digest_eq(&d, &a));
        cr_assert_eq(index_count(s.b, &b2, NULL), 1, "b stays a root, once");
        cr_assert_eq(index_count(s.b, &a, NULL), 1, "a's untagged entry carries the tag now");
        cr_assert_eq(store_tag(s.b, &a, "t"), 0);
        cr_assert_eq(store_tag(s.b, &a, "u"), 0);
        cr_assert_eq(index_count(s.b, &a, NULL), 2);
        cr_assert_eq(index_count(s.b, NULL, NULL), 3);
        cr_assert_eq(store_tag(s.b, &b2, "u"), 0);
        cr_assert_eq(index_count(s.b, &a, NULL), 1, "a keeps only t");
        cr_assert_eq(store_resolve(s.b, "u", &d), 0);
        cr_assert(digest_eq(&d, &b2));

        cr_assert_eq(store_tag(s.b, &a, "bad tag"), -EINVAL);
        cr_assert_eq(store_tag(s.b, &s.ch[0].pack, "x"), -EINVAL, "a pack is not a snapshot");
        digest_sha256("absent", 6, &d);
        cr_assert_eq(store_tag(s.b, &d, "x"), -ENOENT);
        backend_free(s.b);
}

/* ---- verify ---- */

struct reports {
        size_t n;
        char blob[16][DIGEST_STR_LEN + 16];
        char chunk[16][DIGEST_STR_LEN + 1];
        char what[16][256];
};

static void collect(void *ctx, const char *blob, const char *chunk, const char *what)
{
        struct reports *r = ctx;
        if (r->n < 16) {
                snprintf(r->blob[r->n], sizeof r->blob[0], "%s", blob);
                snprintf(r->chunk[r->n], sizeof r->chunk[0], "%s", chunk ? chunk : "");
                snprintf(r->what[r->n], sizeof r->what[0], "%s", what);
        }
        r->n++;
}

Test(snapshot, verify_clean_store)
{
        struct simple s;
        struct verify_stats st;
        struct reports rep = {};
        struct digest child;
        const struct chunkref *refs[] = { &s.ch[0], &s.ch[1] };

        simple_make(&s, NULL);
        publish(s.b, refs, 2, &s.snap, "again", &child); /* shares pack and tree */
        cr_assert_eq(store_verify(s.b, NULL, collect, &rep, &st), 0);
        cr_assert_eq(rep.n, 0);
        cr_assert_eq(st.snapshots, 2);
        cr_assert_eq(st.chunks, 2, "shared chunks decoded once");
        cr_assert_eq(st.blobs, 6, "2 manifests, 2 configs, 1 shared tree, 1 shared pack");
        cr_assert_eq(store_verify(s.b, &child, collect, &rep, &st), 0);
        cr_assert_eq(st.snapshots, 1);
        backend_free(s.b);
}

Test(snapshot, verify_names_flipped_chunk)
{
        struct simple s;
        struct verify_stats st;
        struct reports rep = {};
        char ps[DIGEST_STR_LEN + 1], c1[DIGEST_STR_LEN + 1];
        bool pack_named = false, chunk_named = false;

        simple_make(&s, NULL);
        /* A byte inside the second chunk's frame. */
        corrupt_blob(s.b, &s.ch[1].pack, s.ch[1].c.offset + s.ch[1].c.clen / 2);
        cr_assert_geq(store_verify(s.b, NULL, collect, &rep, &st), 2);
        digest_str(&s.ch[1].pack, ps);
        digest_str(&s.ch[1].c.addr, c1);
        for (size_t i = 0; i < rep.n; i++) {
                cr_assert_str_eq(rep.blob[i], ps, "only the pack is bad: %s %s", rep.blob[i], rep.what[i]);
                if (!rep.chunk[i][0] && strstr(rep.what[i], "hash mismatch"))
                        pack_named = true;
                else if (strcmp(rep.chunk[i], c1) == 0)
                        chunk_named = true;
                else
                        cr_assert_fail("unexpected report: %s %s %s", rep.blob[i], rep.chunk[i], rep.what[i]);
        }
        cr_assert(pack_named && chunk_named);
        cr_assert_eq(st.chunks, 2);
        backend_free(s.b);
}

Test(snapshot, verify_reports_missing_and_corrupt_blobs)
{
        struct simple s;
        struct snapshot *snap = NULL;
        struct reports rep = {};
        char ts[DIGEST_STR_LEN + 1], ps[DIGEST_STR_LEN + 1];

        simple_make(&s, NULL);
        cr_assert_eq(snapshot_open(s.b, &s.snap, &snap), 0);
        cr_assert_eq(backend_remove(s.b, &s.ch[0].pack), 0);
        cr_assert_eq(store_verify(s.b, NULL, collect, &rep, NULL), 1);
        cr_assert_str_eq(rep.blob[0], digest_str(&s.ch[0].pack, ps));
        cr_assert(strstr(rep.what[0], "missing"));

        rep = (struct reports){};
        corrupt_blob(s.b, &snap->tree_digest, 7);
        cr_assert_eq(store_verify(s.b, NULL, collect, &rep, NULL), 1);
        cr_assert_str_eq(rep.blob[0], digest_str(&snap->tree_digest, ts));

        rep = (struct reports){};
        corrupt_blob(s.b, &s.snap, 7);
        cr_assert_eq(store_verify(s.b, NULL, collect, &rep, NULL), 1);
        cr_assert(strstr(rep.what[0], "manifest"));
        snapshot_free(snap);
        backend_free(s.b);
}

/* ---- gc ---- */

static bool has(struct backend *b, const struct digest *d)
{
        int r = backend_has(b, d);
        cr_assert_geq(r, 0);
        return r == 1;
}

static void snapshot_blobs(struct backend *b, const struct digest *d, struct digest out[4])
{
        struct snapshot *s = NULL;
        cr_assert_eq(snapshot_open(b, d, &s), 0);
        out[0] = *d;
        out[1] = s->config_digest;
        out[2] = s->tree_digest;
        out[3] = s->n_packs ? s->packs[s->n_packs - 1] : *d;
        snapshot_free(s);
}

Test(snapshot, gc_removes_only_unreachable)
{
        struct simple s;
        struct gc_stats st;
        struct digest junk, blobs[4];
        struct reports rep = {};

        simple_make(&s, NULL);
        cr_assert_eq(blob_write_data(s.b, "unreachable", 11, &junk), 0);
        snapshot_blobs(s.b, &s.snap, blobs);

        /* A long grace period spares the young junk. */
        cr_assert_eq(store_gc(s.b, &(struct gc_opts){ .grace_sec = 3600 }, &st), 0);
        cr_assert(has(s.b, &junk));
        cr_assert_eq(st.blobs_young, 1);
        cr_assert_eq(st.blobs_removed, 0);
        cr_assert_eq(st.blobs_kept, 4);

        /* A dry run counts but keeps. */
        cr_assert_eq(store_gc(s.b, &(struct gc_opts){ .dry_run = true }, &st), 0);
        cr_assert_eq(st.blobs_removed, 1);
        cr_assert_eq(st.bytes_removed, 11);
        cr_assert(has(s.b, &junk));

        cr_assert_eq(store_gc(s.b, &(struct gc_opts){ .grace_sec = 0 }, &st), 0);
        cr_assert(!has(s.b, &junk));
        cr_assert_eq(st.blobs_removed, 1);
        cr_assert_eq(st.roots_kept, 1);
        for (int i = 0; i < 4; i++)
                cr_assert(has(s.b, &blobs[i]));
        cr_assert_eq(store_verify(s.b, NULL, collect, &rep, NULL), 0);
        backend_free(s.b);
}

Test(snapshot, gc_refuses_when_a_root_is_unreadable)
{
        struct simple s;
        struct gc_stats st = { .blobs_removed = 99 };
        struct digest junk;

        simple_make(&s, "t");
        cr_assert_eq(blob_write_data(s.b, "unreachable", 11, &junk), 0);
        cr_assert_eq(backend_remove(s.b, &s.snap), 0);
        cr_assert_lt(store_gc(s.b, &(struct gc_opts){}, &st), 0);
        cr_assert(has(s.b, &junk), "nothing deleted");
        cr_assert_eq(st.blobs_removed, 99);
        backend_free(s.b);
}

/* Three generations, each adding one chunk in a pack of its own; every tree
 * also names the first chunk of generation 0 (shared pack). */
static void chain3(struct backend *b, struct chunkref ch[3], struct digest snap[3], bool tag_each)
{
        static const size_t ulen[] = { CS };
        for (int g = 0; g < 3; g++) {
                uint8_t seed = (uint8_t)(10 + g);
                const struct chunkref *refs[2] = { &ch[0], &ch[g] };
                make_pack(b, &seed, ulen, 1, &ch[g]);
                publish(b, refs, g ? 2 : 1, g ? &snap[g - 1] : NULL, tag_each ? (const char *[]){ "g0", "g1", "g2" }[g] : NULL,
                        &snap[g]);
        }
}

Test(snapshot, gc_plain_keeps_whole_chain)
{
        struct backend *b = backend_memory_new();
        struct chunkref ch[3];
        struct digest snap[3];
        struct gc_stats st;
        struct reports rep = {};

        chain3(b, ch, snap, false);
        cr_assert_eq(store_gc(b, &(struct gc_opts){}, &st), 0);
        cr_assert_eq(st.blobs_removed, 0);
        cr_assert_eq(st.roots_kept, 3);
        cr_assert_eq(store_verify(b, NULL, collect, &rep, NULL), 0);
        backend_free(b);
}

Test(snapshot, gc_keep_last_one)
{
        struct backend *b = backend_memory_new();
        struct chunkref ch[3], other[1];
        struct digest snap[3], blobs[3][4], lone;
        struct gc_stats st;
        struct reports rep = {};
        struct snapshot *s = NULL;
        static const uint8_t seed = 99;
        static const size_t ulen = 500;
        const struct chunkref *orefs[] = { &other[0] };

        chain3(b, ch, snap, true);
        /* An unrelated chain of one: keep_last must keep it. */
        make_pack(b, &seed, &ulen, 1, other);
        json_t *labels = json_pack("{s:s}", "app", "other"); /* else its config equals generation 0's */
        publish_labeled(b, orefs, 1, NULL, NULL, labels, &lone);
        json_decref(labels);
        for (int g = 0; g < 3; g++)
                snapshot_blobs(b, &snap[g], blobs[g]);

        cr_assert_eq(store_gc(b, &(struct gc_opts){ .keep_last = 1, .dry_run = true }, &st), 0);
        cr_assert_eq(st.roots_dropped, 2);
        cr_assert(has(b, &snap[0]));
        cr_assert_eq(index_count(b, NULL, NULL), 4, "a dry run leaves the index");

        cr_assert_eq(store_gc(b, &(struct gc_opts){ .keep_last = 1 }, &st), 0);
        cr_assert_eq(st.roots_dropped, 2);
        cr_assert_eq(st.roots_kept, 2);
        cr_assert_eq(index_count(b, NULL, NULL), 2);
        cr_assert_eq(index_count(b, &snap[2], "g2"), 1);
        cr_assert_eq(index_count(b, &lone, NULL), 1);
        for (int g = 0; g < 2; g++) {
                cr_assert(!has(b, &blobs[g][0]), "manifest of generation %d", g);
                cr_assert(!has(b, &blobs[g][1]), "config of generation %d", g);
                cr_assert(!has(b, &blobs[g][2]), "tree of generation %d", g);
        }
        cr_assert(!has(b, &ch[1].pack), "generation 1's own pack");
        cr_assert(has(b, &ch[0].pack), "generation 0's pack is shared with generation 2");
        for (int i = 0; i < 4; i++)
                cr_assert(has(b, &blobs[2][i]));
        cr_assert_eq(store_verify(b, NULL, collect, &rep, NULL), 0);

        /* The newest is still readable end to end. */
        uint8_t *buf = malloc(CS);
        uint32_t idx;
        cr_assert_eq(snapshot_open(b, &snap[2], &s), 0);
        cr_assert_eq(snapshot_load_tree(b, s), 0);
        cr_assert_eq(tree_chunk_find(s->tree, &ch[2].c.addr, &idx), 0);
        cr_assert_eq(snapshot_read_chunk(b, s, idx, NULL, buf), 0);
        cr_assert_eq(memcmp(buf, ch[2].data, CS), 0);
        cr_assert_eq(tree_chunk_find(s->tree, &ch[0].c.addr, &idx), 0);
        cr_assert_eq(snapshot_read_chunk(b, s, idx, NULL, buf), 0);
        free(buf);
        snapshot_free(s);
        cr_assert_eq(store_resolve(b, "g0", &lone), -ENOENT);
        backend_free(b);
}

/* A backend that, like a gc that got the lock first, removes one blob right
 * before running an index transaction. Everything else goes to inner. */
struct racing {
        struct backend base;
        struct backend *inner;
        struct digest victim;
        bool armed;
};
#define INNER(b) (container_of(b, struct racing, base)->inner)
static int r_has(struct backend *b, const struct digest *d) { return backend_has(INNER(b), d); }
static int r_size(struct backend *b, const struct digest *d, uint64_t *s) { return backend_size(INNER(b), d, s); }
static ssize_t r_read(struct backend *b, const struct digest *d, uint64_t off, void *buf, size_t len)
{
        return backend_read(INNER(b), d, off, buf, len);
}
static int r_write(struct backend *b, const struct digest *d, const void *data, size_t len)
{
        return backend_write(INNER(b), d, data, len);
}
static int r_freshen(struct backend *b, const struct digest *d) { return backend_freshen(INNER(b), d); }
static int r_remove(struct backend *b, const struct digest *d) { return backend_remove(INNER(b), d); }
static int r_list(struct backend *b, blob_list_fn fn, void *ctx) { return backend_list(INNER(b), fn, ctx); }
static int r_index_read(struct backend *b, json_t **ret) { return backend_index_read(INNER(b), ret); }
static int r_index_transaction(struct backend *b, index_fn fn, void *ctx)
{
        struct racing *r = container_of(b, struct racing, base);
        if (r->armed)
                cr_assert_eq(backend_remove(r->inner, &r->victim), 0);
        return backend_index_transaction(r->inner, fn, ctx);
}
static void r_free(struct backend *b) { backend_free(INNER(b)); }
static const struct backend_ops racing_ops = {
        .version = BACKEND_OPS_VERSION, .name = "racing", .has = r_has, .size = r_size,
        .read = r_read, .write = r_write, .freshen = r_freshen, .remove = r_remove, .list = r_list,
        .index_read = r_index_read, .index_transaction = r_index_transaction, .free = r_free,
};

Test(snapshot, publish_fails_if_a_blob_vanishes_before_the_index_update)
{
        struct racing rb = { .base.ops = &racing_ops };
        struct chunkref ch[1];
        static const uint8_t seed = 5;
        static const size_t ulen = 777;
        const struct chunkref *refs[] = { &ch[0] };
        struct snapshot_new sn = { .chunk_size = CS, .tag = "t" };
        struct digest d = {};
        void *blob;

        rb.inner = backend_memory_new();
        make_pack(rb.inner, &seed, &ulen, 1, ch);
        rb.victim = ch[0].pack;
        rb.armed = true;
        make_tree(refs, 1, &blob, &sn.tree_len, &sn.tree_digest);
        sn.tree_blob = blob;
        cr_assert_eq(snapshot_publish(&rb.base, &sn, &d), -ENOENT);
        cr_assert_eq(d.b[0], 0);
        cr_assert_eq(index_count(rb.inner, NULL, NULL), 0, "nothing indexed");
        free(blob);
        backend_free(rb.inner);
}
