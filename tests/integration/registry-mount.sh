#!/usr/bin/env bash
# registry-mount.sh — issue 7, acceptance 2 (first part): `stasis mount
# oci://HOST/REPO:TAG` with an empty node cache mounts without fetching any
# pack bytes; reading one file fetches that file's chunks plus bounded
# coalescing/readahead, not the other files; the whole tree reads back
# bit-exact through the mount.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/libregistry.sh"
need_registry_mount

src=$T/src
mkdir -p "$src/d"
rand_file "$src/a" 3000000
rand_file "$src/d/b" 20000000
echo x >"$src/c"
ln -s c "$src/l"
digest_of --settle-links "$src" >/dev/null
sum_a=$(sha256sum <"$src/a")
st commit --store "$T/s" --tag g1 "$src" >/dev/null
REG_ACCESSLOG=1 registry_start reg # its requests go to $REG_DIR/log
st push --store "$T/s" --insecure g1 "oci://$REG_HOST/m:g1" >/dev/null
# more tags: resolving g1 must not cost a request per tag
for t in g2 g3 g4; do st push --store "$T/s" --insecure g1 "oci://$REG_HOST/m:$t" >/dev/null; done
mkdir -p "$T/mnt"
on_exit_hook() {
        "$STASIS" umount "$T/mnt" >/dev/null 2>&1 || true
        registry_cleanup
}

step "mount oci://…:g1 with an empty cache: no pack bytes, at most 4 requests"
before=$(grep -c '"\(GET\|HEAD\) /v2/' "$REG_DIR/log" || true)
if ! "$STASIS" mount --insecure --cache "$T/cache" "oci://$REG_HOST/m:g1" "$T/mnt" 2>"$T/mount.err"; then
        cat "$T/mount.err" "$STASIS_RUN_DIR"/state/*/stasisd.log >&2 || true
        fail "stasis mount oci://$REG_HOST/m:g1 failed"
fi
"$STASIS" status --json "$T/mnt" >"$T/s0.json"
(($(jq .bytes_fetched "$T/s0.json") == 0 && $(jq .chunks_fetched "$T/s0.json") == 0)) ||
        fail "mount fetched pack bytes: $(jq -c '{chunks_fetched,bytes_fetched}' "$T/s0.json")"
# GET /v2/, the manifest by tag, the config, the tree (one GET at this
# size, up to four for a large one): no tags/list, no HEAD per tag, no
# lookups of the manifest among the blobs, no HEAD before a GET
sleep 0.2 # the access log is written after the response
reqs=$(($(grep -c '"\(GET\|HEAD\) /v2/' "$REG_DIR/log") - before))
grep '"\(GET\|HEAD\) /v2/' "$REG_DIR/log" | tail -n "$reqs" | grep -o '"[A-Z]* /v2/[^ ]*' | sed 's/^/   /'
((reqs <= 4)) || fail "the mount made $reqs requests to the registry before any read (at most 4)"

step "reading one file fetches that file's chunks (plus bounded coalescing)"
[[ $(sha256sum <"$T/mnt/a") == "$sum_a" ]] || fail "a reads back wrong through the mount"
"$STASIS" status --json "$T/mnt" >"$T/s1.json"
fetched=$(jq .bytes_fetched "$T/s1.json")
((fetched >= 3000000 * 99 / 100 && fetched <= 3000000 + 4 * 1024 * 1024)) ||
        fail "reading a (3000000 bytes) fetched $fetched pack bytes"
echo "   a: $fetched pack bytes fetched for 3000000 bytes"

step "the whole tree reads back bit-exact"
same_tree "$src" "$T/mnt"
"$STASIS" status --json "$T/mnt" >"$T/s2.json"
(($(jq .errors "$T/s2.json") == 0)) || fail "the mount reported read errors"
st umount "$T/mnt"
