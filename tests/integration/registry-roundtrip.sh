#!/usr/bin/env bash
# registry-roundtrip.sh — issue 7, acceptance 1 (and 3: plain HTTP): a real
# docker-registry on 127.0.0.1. push then pull into an empty store is
# bit-exact; a second push uploads nothing; the next generation uploads only
# the packs the registry lacks (stasis's counters and the registry's storage
# agree); --store oci:// serves inspect, log, verify and restore lazily; pull
# by digest; cross-repository mount; plain HTTP needs --insecure.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/libregistry.sh"
need docker-registry jq curl python3

S=$T/store
src=$T/src
mkdir -p "$src/sub"
rand_file "$src/big" $((40 * 1024 * 1024)) # two packs, both sent in PATCH chunks
for i in 1 2 3; do rand_file "$src/sub/f$i" $((300 * 1024 + i)); done
echo text >"$src/small"
truncate -s 5M "$src/sparse"
ln -s small "$src/link"
setfattr -n user.k -v v "$src/small" 2>/dev/null || true
digest_of --settle-links "$src" >/dev/null

registry_start reg
R=oci://$REG_HOST/stasis/snaps

st commit --store "$S" --tag g1 "$src" >"$T/g1"
G1=$(cat "$T/g1")
n_packs=$(manifest_field "$S" "$G1" '.layers | length - 1')
((n_packs >= 2)) || fail "expected at least two packs, got $n_packs"

step "plain HTTP without --insecure is refused, naming the registry"
expect_exit 1 "$STASIS" push --store "$S" g1 "$R:g1"
expect_one_error_line "registry $REG_HOST"
[[ -z $(registry_tag_link stasis/snaps g1) ]] || fail "a refused push published a tag"

step "push g1: every blob uploaded, manifest last"
st push --store "$S" --insecure --json g1 "$R:g1" >"$T/push1.json"
[[ $(jq -r .digest "$T/push1.json") == "$G1" ]] || fail "push reported $(jq -r .digest "$T/push1.json"), not $G1"
total=$(jq .blobs_total "$T/push1.json")
((total == n_packs + 2)) || fail "blobs_total $total, expected packs + tree + config = $((n_packs + 2))"
(($(jq .blobs_uploaded "$T/push1.json") == total)) || fail "first push uploaded $(jq .blobs_uploaded "$T/push1.json") of $total blobs"
want=0
for b in $(pack_digests "$S") $(manifest_field "$S" "$G1" '.config.digest, .layers[0].digest'); do
        want=$((want + $(blob_size "$S" "$b")))
done
(($(jq .bytes_uploaded "$T/push1.json") == want)) || fail "bytes_uploaded $(jq .bytes_uploaded "$T/push1.json"), blobs hold $want"
[[ $(registry_tag_link stasis/snaps g1) == "$G1" ]] || fail "the registry's tag g1 is not $G1"
registry_blobs >"$T/reg.1"
for b in $(pack_digests "$S") $(manifest_field "$S" "$G1" '.config.digest, .layers[0].digest'); do
        grep -qx "${b#sha256:}" "$T/reg.1" || fail "registry storage lacks $b"
done
cmp -s <(curl -s -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG_HOST/v2/stasis/snaps/manifests/g1") \
        "$(blob_path "$S" "$G1")" || fail "the registry serves other manifest bytes than the store holds"

step "push g1 again: nothing uploaded"
st push --store "$S" --insecure --json g1 "$R:g1" >"$T/push1b.json"
(($(jq .blobs_uploaded "$T/push1b.json") == 0 && $(jq .bytes_uploaded "$T/push1b.json") == 0)) ||
        fail "a repeated push uploaded $(jq .blobs_uploaded "$T/push1b.json") blobs"
(($(jq .blobs_skipped "$T/push1b.json") == total)) || fail "a repeated push skipped $(jq .blobs_skipped "$T/push1b.json") of $total"

step "pull into an empty store is bit-exact"
st pull --store "$T/s2" --insecure --json "$R:g1" >"$T/pull1.json"
[[ $(jq -r .digest "$T/pull1.json") == "$G1" ]] || fail "pull reported another digest"
(($(jq .blobs_downloaded "$T/pull1.json") == total)) || fail "pull downloaded $(jq .blobs_downloaded "$T/pull1.json") of $total"
st verify --store "$T/s2"
st restore --store "$T/s2" g1 "$T/dst1"
same_tree "$src" "$T/dst1"

step "next generation: only the new packs go up"
rand_file "$src/sub/f2" $((300 * 1024 + 2))
rand_file "$src/new" $((2 * 1024 * 1024))
digest_of --settle-links "$src" >/dev/null
st commit --store "$S" --parent g1 --tag g2 "$src" >"$T/g2"
G2=$(cat "$T/g2")
manifest_field "$S" "$G1" '.layers[1:][] | .digest' | sort >"$T/packs1"
manifest_field "$S" "$G2" '.layers[1:][] | .digest' | sort >"$T/packs2"
comm -13 "$T/packs1" "$T/packs2" >"$T/packs.new"
n_new=$(wc -l <"$T/packs.new")
((n_new >= 1 && n_new < $(wc -l <"$T/packs2"))) || fail "g2 should add some packs and reuse others ($n_new new)"
want=0
for b in $(cat "$T/packs.new") $(manifest_field "$S" "$G2" '.config.digest, .layers[0].digest'); do
        want=$((want + $(blob_size "$S" "$b")))
done
st push --store "$S" --insecure --json g2 "$R:g2" >"$T/push2.json"
(($(jq .blobs_uploaded "$T/push2.json") == n_new + 2)) ||
        fail "g2 push uploaded $(jq .blobs_uploaded "$T/push2.json") blobs, expected $n_new new packs + tree + config"
(($(jq .bytes_uploaded "$T/push2.json") == want)) || fail "g2 push uploaded $(jq .bytes_uploaded "$T/push2.json") bytes, new blobs hold $want"
registry_blobs >"$T/reg.2"
comm -13 "$T/reg.1" "$T/reg.2" >"$T/reg.new"
# the registry gained exactly the new packs, tree, config and the manifest
(cat "$T/packs.new"; manifest_field "$S" "$G2" '.config.digest, .layers[0].digest'; echo "$G2") |
        sed 's/^sha256://' | sort >"$T/reg.want"
cmp -s "$T/reg.new" "$T/reg.want" || { diff "$T/reg.want" "$T/reg.new" >&2; fail "registry storage gained other blobs than g2's new ones"; }

step "--store oci:// serves inspect, log, verify and a lazy restore"
st inspect --store "$R" --insecure --json g2 >"$T/inspect.json"
[[ $(jq -r .digest "$T/inspect.json") == "$G2" ]] || fail "inspect over oci:// named another snapshot"
st log --store "$R" --insecure g2 >"$T/log"
grep -q "$G1" "$T/log" || fail "log over oci:// does not reach g1"
st verify --store "$R" --insecure g2
st restore --store "$R" --insecure g2 "$T/dst2"
same_tree "$src" "$T/dst2"

step "pull by digest: an untagged root"
st pull --store "$T/s3" --insecure "$R@$G2" >"$T/pull3"
[[ $(cat "$T/pull3") == "$G2" ]] || fail "pull by digest printed $(cat "$T/pull3")"
st restore --store "$T/s3" "$G2" "$T/dst3"
same_tree "$src" "$T/dst3"
expect_exit 1 "$STASIS" pull --store "$T/s4" --insecure "$R:nosuchtag"
expect_one_error_line "nosuchtag"

step "cross-repository mount: nothing uploaded"
st push --store "$S" --insecure --json --mount-from stasis/snaps g2 "oci://$REG_HOST/other:g2" >"$T/push3.json"
(($(jq .bytes_uploaded "$T/push3.json") == 0)) || fail "a mounted push uploaded $(jq .bytes_uploaded "$T/push3.json") bytes"
(($(jq .blobs_mounted "$T/push3.json") == $(jq .blobs_total "$T/push3.json"))) ||
        fail "mounted $(jq .blobs_mounted "$T/push3.json") of $(jq .blobs_total "$T/push3.json") blobs"
st pull --store "$T/s5" --insecure "oci://$REG_HOST/other:g2" >/dev/null
st restore --store "$T/s5" g2 "$T/dst5"
same_tree "$src" "$T/dst5"
