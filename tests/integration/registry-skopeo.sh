#!/usr/bin/env bash
# registry-skopeo.sh — issue 7, acceptance 4: interop with skopeo both ways.
# A snapshot skopeo copied from a local store into the registry is read by
# stasis (pull, and lazily with --store oci://) bit-exact; what stasis push
# wrote, skopeo copies back to a local layout that restores bit-exact with
# the same manifest digest.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/libregistry.sh"
need docker-registry skopeo jq curl python3

S=$T/store
src=$T/src
mkdir -p "$src/d"
rand_file "$src/d/big" $((9 * 1024 * 1024 + 5))
echo text >"$src/t"
ln -s t "$src/link"
truncate -s 2M "$src/sparse"
digest_of --settle-links "$src" >/dev/null
st commit --store "$S" --tag g1 "$src" >"$T/g1"
G1=$(cat "$T/g1")
registry_start reg

step "skopeo copy oci:STORE:g1 -> registry; stasis reads it"
if ! skopeo copy --dest-tls-verify=false "oci:$S:g1" "docker://$REG_HOST/bysko:g1" >"$T/sko.out" 2>"$T/sko.err"; then
        cat "$T/sko.out" "$T/sko.err" >&2
        fail "skopeo copy to the registry failed"
fi
st pull --store "$T/s2" --insecure "oci://$REG_HOST/bysko:g1" >"$T/pulled"
[[ $(cat "$T/pulled") == "$G1" ]] || fail "skopeo's copy has digest $(cat "$T/pulled"), not $G1"
st restore --store "$T/s2" g1 "$T/dst2"
same_tree "$src" "$T/dst2"
st restore --store "oci://$REG_HOST/bysko" --insecure g1 "$T/dst2b"
same_tree "$src" "$T/dst2b"

step "stasis push -> registry; skopeo copies it back to a layout"
st push --store "$S" --insecure g1 "oci://$REG_HOST/bystasis:g1" >/dev/null
if ! skopeo copy --src-tls-verify=false "docker://$REG_HOST/bystasis:g1" "oci:$T/layout:g1" >"$T/sko.out" 2>"$T/sko.err"; then
        cat "$T/sko.out" "$T/sko.err" >&2
        fail "skopeo copy from the registry failed"
fi
D=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "g1") | .digest' "$T/layout/index.json")
[[ $D == "$G1" ]] || fail "skopeo's layout names $D, not $G1"
st verify --store "$T/layout"
st restore --store "$T/layout" g1 "$T/dst3"
same_tree "$src" "$T/dst3"
