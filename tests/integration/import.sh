#!/usr/bin/env bash
# import.sh — issue 3, acceptance 1-3: `stasis import` of OCI images.
#  1. An image built with umoci (busybox rootfs; a layer that deletes and
#     changes files, one that replaces a directory's contents, a hand-made
#     layer with an opaque directory, a GNU sparse file) imports, and
#     `stasis restore` gives exactly the tree `umoci unpack` gives (treedigest
#     listings compared without atimes: umoci's layers carry none, so umoci
#     unpack sets them to the time of unpacking; and except for holes: umoci
#     writes a sparse file's holes as zeros, stasis keeps them holes). The
#     same image as zstd layers, as Docker v2 media types and behind an image
#     index imports to the same tree. `stasis inspect --json` shows the
#     image config.
#  2. Importing it again adds no bytes and gives the same digest; a second
#     image that shares the first one's base layer adds at most 1.1x the
#     compressed size of the files it adds. The measure: the new layer blob's
#     size (gzip of a tar holding exactly the added files) against the bytes
#     of the new packs in the store.
#  3. Hostile layers (../x, /abs, a file through a symlink an earlier entry
#     made, a hardlink outside or to nothing, absurd sizes and names) fail with
#     one error line naming the layer and the entry, exit 1, and write nothing
#     outside the store. A corrupt layer blob fails its digest check.
source "$(dirname "$0")/lib.sh"
need umoci skopeo jq tar gzip
((EUID == 0)) || skip "needs root (umoci unpack keeps owners, device nodes)"
BUSYBOX=${BUSYBOX:-/bin/busybox}
[[ -x $BUSYBOX ]] || skip "needs busybox"
MKTAR=$TESTS_BIN/mktar
[[ -x $MKTAR ]] || fail "no mktar at $MKTAR"

S=$T/store
IMG=$T/img
B=$T/bundle
R=$B/rootfs

# the sum of the sizes of every pack blob in the store
all_pack_bytes() {
        local s=0 p
        for p in $(pack_digests "$S"); do
                s=$((s + $(blob_size "$S" "$p")))
        done
        echo $s
}
blob_bytes() { # every blob in the store
        find "$S/blobs/sha256" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'
}
# image_manifest LAYOUT TAG: path of the manifest blob tagged TAG
image_manifest() {
        local d
        d=$(jq -r --arg t "$2" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' "$1/index.json")
        echo "$1/blobs/sha256/${d#sha256:}"
}

step "build an image with umoci"
umoci init --layout "$IMG"
umoci new --image "$IMG:base"
umoci unpack --image "$IMG:base" "$B" >/dev/null
mkdir -p "$R"/{bin,sbin,etc,tmp,root,var/data,usr/share/doc,opt/app/sub,dev}
cp "$BUSYBOX" "$R/bin/busybox"
chmod 4755 "$R/bin/busybox"
for a in $("$BUSYBOX" --list); do
        [[ -e $R/bin/$a ]] || ln -s busybox "$R/bin/$a"
done
echo "root:x:0:0:root:/root:/bin/sh" >"$R/etc/passwd"
echo "root:x:0:" >"$R/etc/group"
echo "imported by stasis" >"$R/etc/motd"
ln "$R/etc/motd" "$R/etc/motd.hard"
echo "the first readme" >"$R/usr/share/doc/readme"
echo "doc two" >"$R/usr/share/doc/two"
echo old >"$R/opt/app/old"
echo y >"$R/opt/app/sub/y"
chown -R 1000:1000 "$R/opt/app"
chmod 2775 "$R/opt/app"
setfattr -n user.stasis -v imported "$R/etc/motd"
mknod "$R/dev/null" c 1 3
mkfifo "$R/var/fifo"
rand_file "$R/var/data/blob" $((1024 * 1024 + 17))
head -c 300000 /dev/zero >"$R/var/data/zeros"
umoci repack --refresh-bundle --image "$IMG:base" "$B"
umoci tag --image "$IMG:base" base1 # the base layer alone, for image two

step "layer 2: delete and change files (whiteouts)"
rm "$R/etc/motd.hard"
rm -r "$R/opt/app/sub"
echo "the second readme" >"$R/usr/share/doc/readme"
umoci repack --refresh-bundle --image "$IMG:base" "$B"

step "layer 3: a directory removed and made again"
rm -rf "$R/opt/app"
mkdir "$R/opt/app"
echo new >"$R/opt/app/new"
umoci repack --refresh-bundle --image "$IMG:base" "$B"

step "layer 4 (hand-made): an opaque directory; layer 5 (GNU tar): a sparse file"
"$MKTAR" "$T/opaque.tar" 'd|usr/share/doc' 'f|usr/share/doc/.wh..wh..opq|' 'f|usr/share/doc/fresh|only me'
umoci raw add-layer --image "$IMG:base" "$T/opaque.tar"
mkdir -p "$T/sparse/var/data"
truncate -s $((8 * 1024 * 1024)) "$T/sparse/var/data/sparse"
echo "in the middle" | dd of="$T/sparse/var/data/sparse" bs=1 seek=$((3 * 1024 * 1024 + 100)) conv=notrunc status=none
tar --sparse --format=posix --numeric-owner --owner=0 --group=0 -cf "$T/sparse.tar" -C "$T/sparse" var/data/sparse
umoci raw add-layer --image "$IMG:base" "$T/sparse.tar"
grep -q "opq" <(tar -tf "$T/opaque.tar") || fail "the opaque layer has no .wh..wh..opq"

umoci config --image "$IMG:base" --config.entrypoint /bin/sh --config.entrypoint -c \
        --config.cmd "echo hi from stasis" --config.env STASIS=yes --config.env PATH=/bin \
        --config.user 1000:1000 --config.workingdir /opt/app --config.exposedports 8080/tcp \
        --config.label org.example.name=stasis-import
nlayers=$(jq '.layers | length' "$(image_manifest "$IMG" base)")
((nlayers == 5)) || fail "the image has $nlayers layers, expected 5"

step "umoci unpack (the reference tree)"
umoci unpack --image "$IMG:base" "$T/ref" >/dev/null
[[ -e $T/ref/rootfs/usr/share/doc/fresh && ! -e $T/ref/rootfs/usr/share/doc/two ]] ||
        fail "umoci did not apply the opaque directory as expected"

step "import and restore: the tree equals umoci's"
st import --store "$S" --tag base --json "oci:$IMG:base" >"$T/import1.json"
digest1=$(jq -r .digest "$T/import1.json")
(($(jq .whiteouts "$T/import1.json") >= 4)) || fail "whiteouts not counted: $(cat "$T/import1.json")"
st restore --store "$S" base "$T/restored"
# umoci unpack writes a sparse file's holes out as zeros; stasis keeps them
# holes (DESIGN.md, "Holes"). Equal but for that one file's extents:
sparse_line='s|^(var/data/sparse .*) extents=.*$|\1|'
"$TREEDIGEST" --list --no-atime "$T/ref/rootfs" | sed -E "$sparse_line" >"$T/listing.a"
"$TREEDIGEST" --list --no-atime "$T/restored" >"$T/listing.full"
sed -E "$sparse_line" "$T/listing.full" >"$T/listing.b"
if ! cmp -s "$T/listing.a" "$T/listing.b"; then
        diff -u "$T/listing.a" "$T/listing.b" | head -60 >&2 || true
        fail "the restored import differs from umoci's unpack"
fi
(( $(wc -l <"$T/listing.b") > 200 )) || fail "suspiciously few entries"
# the features the listing must hold, so the comparison is not vacuous
grep -q '^bin/busybox reg mode=4755 ' "$T/listing.b" || fail "setuid busybox missing"
grep -q '^etc/motd .*xattr:user.stasis=' "$T/listing.b" || fail "xattr missing"
grep -q '^dev/null chr .*rdev=1:3' "$T/listing.b" || fail "device node missing"
grep -q '^var/fifo fifo ' "$T/listing.b" || fail "fifo missing"
grep -q '^opt/app dir mode=0755 ' "$T/listing.b" || fail "replaced directory"
grep -q '^opt/app/old\|^opt/app/sub\|^etc/motd.hard\|^usr/share/doc/two\|^usr/share/doc/readme' "$T/listing.b" &&
        fail "a whited-out path survived"
grep -q '^var/data/sparse reg .*extents=3145728+4096$' "$T/listing.full" || fail "sparse file not sparse: $(grep sparse "$T/listing.b")"

step "inspect --json shows the image config"
st inspect --store "$S" --json base >"$T/inspect.json"
jq -e '.image.config.Entrypoint == ["/bin/sh", "-c"] and .image.config.Cmd == ["echo hi from stasis"]
        and (.image.config.Env | index("STASIS=yes")) != null and .image.config.User == "1000:1000"
        and .image.config.WorkingDir == "/opt/app" and (.image.config.ExposedPorts | has("8080/tcp"))
        and .image.config.Labels["org.example.name"] == "stasis-import"
        and (.image.rootfs.diff_ids | length) == 5' "$T/inspect.json" >/dev/null ||
        { cat "$T/inspect.json" >&2; fail "inspect --json lacks the image config"; }

step "the same image again: same digest, no bytes added"
bytes_before=$(blob_bytes)
st import --store "$S" --json "oci:$IMG:base" >"$T/import2.json"
[[ $(jq -r .digest "$T/import2.json") == "$digest1" ]] || fail "second import gave another digest"
(($(blob_bytes) == bytes_before)) || fail "second import added $(($(blob_bytes) - bytes_before)) bytes"

step "the same image as zstd layers, Docker v2 media types, and behind an image index: the same tree"
tree_of() { manifest_field "$S" "$1" '.layers[0].digest'; }
tree1=$(tree_of "$digest1")
skopeo copy --quiet --dest-compress-format zstd "oci:$IMG:base" "oci:$T/img-zstd:base"
skopeo copy --quiet --format v2s2 "oci:$IMG:base" "oci:$T/img-docker:base"
jq -e '[.layers[].mediaType] | all(. == "application/vnd.oci.image.layer.v1.tar+zstd")' \
        "$(image_manifest "$T/img-zstd" base)" >/dev/null || fail "skopeo did not write zstd layers"
jq -e '.mediaType == "application/vnd.docker.distribution.manifest.v2+json"' \
        "$(image_manifest "$T/img-docker" base)" >/dev/null || fail "skopeo did not write a Docker v2 manifest"
for src in "oci:$T/img-zstd:base" "oci:$T/img-docker:base"; do
        st import --store "$S" --json "$src" >"$T/import.json"
        [[ $(tree_of "$(jq -r .digest "$T/import.json")") == "$tree1" ]] || fail "$src imported to another tree"
done
# An index with an arm64 entry first (whose blob does not exist) and ours.
m=$(jq -c --arg t base '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | del(.annotations)' "$IMG/index.json")
jq -n --argjson m "$m" '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
        manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json",
                     digest: "sha256:0000000000000000000000000000000000000000000000000000000000000000", size: 10,
                     platform: {os: "linux", architecture: "arm64"}},
                    ($m + {platform: {os: "linux", architecture: "amd64"}})]}' >"$T/index.blob"
ih=$(sha256sum "$T/index.blob" | cut -d' ' -f1)
cp "$T/index.blob" "$IMG/blobs/sha256/$ih"
jq --arg d "sha256:$ih" --argjson s "$(stat -c %s "$T/index.blob")" '.manifests += [{mediaType: "application/vnd.oci.image.index.v1+json",
        digest: $d, size: $s, annotations: {"org.opencontainers.image.ref.name": "multi"}}]' "$IMG/index.json" >"$T/index.new"
mv "$T/index.new" "$IMG/index.json"
st import --store "$S" --json "oci:$IMG:multi" >"$T/import.json"
[[ $(jq -r .digest "$T/import.json") == "$digest1" ]] || fail "the index did not resolve to the linux/amd64 image"

step "a second image on the same base layer adds at most 1.1x what it adds"
umoci unpack --image "$IMG:base1" "$T/b2" >/dev/null
mkdir -p "$T/b2/rootfs/srv"
rand_file "$T/b2/rootfs/srv/model.bin" $((2 * 1024 * 1024 + 5))
for i in $(seq 1 50); do seq "$i" 2000 >"$T/b2/rootfs/srv/table$i.txt"; done
umoci repack --refresh-bundle --image "$IMG:second" "$T/b2"
layer=$(jq -r '.layers[-1].digest' "$(image_manifest "$IMG" second)")
layer_bytes=$(stat -c %s "$IMG/blobs/sha256/${layer#sha256:}")
packs_before=$(all_pack_bytes)
blobs_before=$(blob_bytes)
st import --store "$S" --json "oci:$IMG:second" >"$T/import3.json"
added=$(($(all_pack_bytes) - packs_before))
added_all=$(($(blob_bytes) - blobs_before))
echo "second image: new layer $layer_bytes bytes (gzip); new packs $added bytes; all new blobs $added_all bytes"
((added * 10 <= layer_bytes * 11)) || fail "second image added $added pack bytes for a $layer_bytes-byte layer"
(($(jq .chunks_reused "$T/import3.json") > 0)) || fail "nothing of the base layer was reused"
st restore --store "$S" "$(jq -r .digest "$T/import3.json")" "$T/restored2"
umoci unpack --image "$IMG:second" "$T/ref2" >/dev/null
same_tree "$T/ref2/rootfs" "$T/restored2" --no-atime

step "hostile layers fail, naming layer and entry, and write nothing outside the store"
BAD=$T/bad
umoci init --layout "$BAD"
mkdir -p "$T/outside"
touch "$T/marker"
sleep 0.01
n=0
expect_bad() { # WHY SPEC...: a one-layer image of SPECs fails with WHY
        local why=$1 entry
        shift
        n=$((n + 1))
        "$MKTAR" "$T/bad$n.tar" "$@"
        umoci new --image "$BAD:t$n"
        umoci raw add-layer --image "$BAD:t$n" "$T/bad$n.tar"
        roots=$(jq '.manifests | length' "$S/index.json")
        expect_exit 1 "$STASIS" import --store "$S" "oci:$BAD:t$n"
        expect_one_error_line "^stasis: import oci:$BAD:t$n: layer 1 \(sha256:[0-9a-f]{64}\): entry \".*\": $why"
        (($(jq '.manifests | length' "$S/index.json") == roots)) || fail "a failed import added a root"
}
expect_bad 'path has a "\.\." component' 'f|../x|evil'
expect_bad 'path has a "\.\." component' 'd|a' 'f|a/../../x|evil'
expect_bad 'absolute path' "f|/abs-stasis-itest|evil"
expect_bad 'path goes through a symlink' "l|ln|$T/outside" 'f|ln/file|evil'
expect_bad 'path goes through a symlink' 'l|up|..' 'f|up/x|evil'
expect_bad 'hardlink target outside the image root' 'h|hl|../../etc/passwd'
expect_bad 'hardlink target outside the image root' 'h|hl|/etc/passwd'
expect_bad 'hardlink target does not exist' 'f|a|1' 'h|hl|nonexistent'
expect_bad 'hardlink target goes through a symlink' "l|ln|/etc" 'h|hl|ln/passwd'
expect_bad 'absurd size in the header' 'z|big|2251799813685248'
expect_bad 'path longer than 4096 bytes' 'n|5000'
expect_bad 'xattr value larger than 64 KiB' 'x|xa|user.big|70000'
[[ ! -e /abs-stasis-itest && ! -e $T/x && ! -e $T/outside/file && ! -e $T/../x ]] || fail "a file was written outside"
stray=$(find "$T" -mindepth 1 -newer "$T/marker" -not -path "$S/*" -not -path "$S" -not -path "$BAD/*" -not -path "$BAD" \
        -not -name 'bad*.tar' -not -name out -not -name err -not -name st.err -print)
[[ -z $stray ]] || fail "files appeared outside the store: $stray"

step "a corrupt layer blob fails its digest check"
cp -a "$IMG" "$T/img-corrupt"
layer=$(jq -r '.layers[0].digest' "$(image_manifest "$T/img-corrupt" base1)")
lb="$T/img-corrupt/blobs/sha256/${layer#sha256:}"
chmod u+w "$lb"
flip_byte "$lb" $(($(stat -c %s "$lb") - 20))
expect_exit 1 "$STASIS" import --store "$T/store-corrupt" "oci:$T/img-corrupt:base1"
expect_one_error_line "layer 1 \(sha256:[0-9a-f]{64}\): "

step "an entry named '/' (umoci insert writes one) is the root, not an absolute path"
umoci init --layout "$T/rootimg"
umoci new --image "$T/rootimg:r"
"$MKTAR" "$T/root.tar" 'd|/' 'f|hello|hi'
umoci raw add-layer --image "$T/rootimg:r" "$T/root.tar"
st import --store "$T/rootstore" --tag r "oci:$T/rootimg:r"
st restore --store "$T/rootstore" r "$T/rootout"
[[ $(cat "$T/rootout/hello") == hi ]] || fail "the layer with a '/' entry did not import its file"

step "usage"
expect_exit 2 "$STASIS" import --store "$S" docker://busybox
expect_exit 1 "$STASIS" import --store "$S" "oci:$IMG:nosuchtag"
expect_one_error_line "no image nosuchtag"
