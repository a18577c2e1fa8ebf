#!/usr/bin/env bash
# oci.sh — acceptance 6: the store is a plain OCI image layout. skopeo reads
# a snapshot's manifest (inspect --raw) and copies it to another layout, and
# the copy restores bit-exact.
source "$(dirname "$0")/lib.sh"
need skopeo jq

S=$T/store
O=$T/other
src=$T/src
mkdir -p "$src/d"
rand_file "$src/d/big" $((3 * 1024 * 1024 + 17))
echo text >"$src/t"
truncate -s 1M "$src/sparse"
ln -s t "$src/link"
setfattr -n user.k -v v "$src/t" 2>/dev/null || true

settle_atimes "$src"
st commit --store "$S" --tag snap "$src" >"$T/digest"
D=$(cat "$T/digest")

step "skopeo inspect --raw reads our manifest"
if ! skopeo inspect --raw "oci:$S:snap" >"$T/raw" 2>"$T/skopeo.err"; then
        cat "$T/skopeo.err" >&2
        fail "skopeo inspect --raw oci:STORE:snap failed (above)"
fi
cmp -s "$T/raw" "$(blob_path "$S" "$D")" || fail "skopeo returned other bytes than manifest $D"
[[ $(jq -r .artifactType "$T/raw") == application/vnd.stasis.snapshot.v1 ]] || fail "artifactType lost"

step "skopeo copy to another layout"
if ! skopeo copy "oci:$S:snap" "oci:$O:snap" >"$T/copy.out" 2>"$T/skopeo.err"; then
        cat "$T/copy.out" "$T/skopeo.err" >&2
        fail "skopeo copy oci:STORE:snap oci:OTHER:snap failed (above)"
fi
D2=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "snap") | .digest' "$O/index.json")
[[ $D2 == "$D" ]] || fail "skopeo copy changed the manifest digest: $D -> $D2"

step "the copy restores bit-exact"
st verify --store "$O"
st restore --store "$O" snap "$T/dst"
same_tree "$src" "$T/dst"
