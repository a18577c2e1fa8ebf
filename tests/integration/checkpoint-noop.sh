#!/usr/bin/env bash
# checkpoint-noop.sh — issue 6, acceptance 4: no-op writes are free. On a
# mount: a whole chunk and a 4 KiB piece of a base file rewritten with the
# identical bytes (dd conv=notrunc), `cp f t && mv t f`, a chunk of zeros
# written over a hole; then `stasis checkpoint`: chunks_new == 0,
# bytes_new == 0, and the store gained no pack (its new blobs are the new
# snapshot's manifest, config, tree and access trace, nothing else; the
# packs' bytes are unchanged). The same again for a file the mount created and an earlier
# checkpoint packed. Each checkpoint restores to the expected bytes.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"

S=$T/store
src=$T/src
mkdir -p "$src/etc"
rand_file "$src/f" $((1024 * 1024 + 1000))
rand_file "$src/g" 700000
truncate -s $((4 * 1024 * 1024)) "$src/sparse"
head -c 100000 /dev/urandom | dd of="$src/sparse" conv=notrunc status=none
for i in 1 2 3; do echo "conf $i" >"$src/etc/c$i"; done
settle_atimes "$src"
st commit --store "$S" --tag base "$src" >/dev/null
cs=$("$STASIS" inspect --store "$S" --json base | jq -r .chunk_size)
mp=$T/mnt
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$T/state" base

# meta_blobs DIGEST: a snapshot's blobs that are not packs (manifest,
# config, tree, access trace).
PACK_TYPE=application/vnd.stasis.pack.v1
meta_blobs() {
        echo "${1#sha256:}"
        jq -r --arg p "$PACK_TYPE" '.config.digest, (.layers[] | select(.mediaType != $p) | .digest)' \
                "$(blob_path "$S" "$1")" | sed 's/^sha256://'
}
# pack_total: bytes of every blob that is not a non-pack blob of a snapshot
# in the index (i.e. the packs, and anything unaccounted for).
pack_total() {
        local m meta=$T/meta.list
        for m in $(jq -r '.manifests[].digest' "$S/index.json" | sort -u); do
                meta_blobs "$m"
        done | sort -u >"$meta"
        blob_list "$S" | awk 'NR == FNR {meta[$1] = 1; next} !($1 in meta) {s += $2} END {print s + 0}' "$meta" -
}

# noop_checkpoint NAME: checkpoint; assert it packed nothing and wrote no
# blob but the new snapshot's manifest, config, tree (and access trace).
noop_checkpoint() {
        local name=$1 d new p0 p1
        blob_list "$S" | cut -d' ' -f1 >"$T/blobs.before"
        p0=$(pack_total)
        "$STASIS" checkpoint --tag "$name" --json "$mp" >"$T/$name.json" || fail "stasis checkpoint ($name) failed"
        echo "   $(jq -c '{digest, bytes_dirty, bytes_new, chunks_new, chunks_reused}' "$T/$name.json")"
        d=$(jq -r .digest "$T/$name.json")
        [[ $d == sha256:* ]] || fail "$name: no digest"
        (($(jq -r .bytes_new "$T/$name.json") == 0)) || fail "$name: bytes_new is $(jq -r .bytes_new "$T/$name.json"), not 0"
        (($(jq -r .chunks_new "$T/$name.json") == 0)) || fail "$name: chunks_new is $(jq -r .chunks_new "$T/$name.json"), not 0"
        p1=$(pack_total)
        ((p1 == p0)) || fail "$name: pack bytes went from $p0 to $p1"
        meta_blobs "$d" | sort -u >"$T/allowed"
        blob_list "$S" | cut -d' ' -f1 | comm -13 "$T/blobs.before" - >"$T/new.blobs"
        new=$(comm -23 "$T/new.blobs" "$T/allowed")
        [[ -z $new ]] || fail "$name: new blobs besides the snapshot's manifest, config, tree and trace: $new"
}

# same_content DIR REF: every regular file of DIR has the same bytes in
# `stasis restore REF`, and no other file is there.
same_content() {
        local r=$T/restore-$2 f
        st restore --store "$S" "$2" "$r"
        diff <(cd "$1" && find . -type f | sort) <(cd "$r" && find . -type f | sort) >&2 ||
                fail "$2: the files differ from $1"
        while read -r f; do
                cmp "$1/$f" "$r/$f" || fail "$2: $f differs"
        done < <(cd "$1" && find . -type f)
}

step "identical bytes over a whole chunk and over 4 KiB of a base file"
dd if="$src/f" of="$mp/f" bs="$cs" skip=2 seek=2 count=1 conv=notrunc status=none
dd if="$src/f" of="$mp/f" bs=4096 skip=7 seek=7 count=1 conv=notrunc status=none
# the short last chunk, whole
dd if="$src/f" of="$mp/f" bs="$cs" skip=4 seek=4 count=1 conv=notrunc status=none
step "cp g t && mv t g; a chunk of zeros over a hole"
cp "$mp/g" "$mp/t" && mv "$mp/t" "$mp/g"
dd if=/dev/zero of="$mp/sparse" bs="$cs" seek=5 count=1 conv=notrunc status=none
cmp "$mp/f" "$src/f" && cmp "$mp/g" "$src/g" && cmp "$mp/sparse" "$src/sparse" || fail "the mount's bytes changed"
(($("$STASIS" status --json "$mp" | jq -r .dirty_chunks) >= 3)) ||
        fail "the rewrites left fewer than 3 dirty chunks: they did not reach the writable layer"
noop_checkpoint n1
same_content "$src" n1

step "a new file, packed by a checkpoint"
rand_file "$T/n.native" 700000
cp "$T/n.native" "$mp/n"
"$STASIS" checkpoint --tag c2 --json "$mp" >"$T/c2.json" || fail "stasis checkpoint (c2) failed"
(($(jq -r .chunks_new "$T/c2.json") >= 3)) || fail "a new 700 KB file cost $(jq -r .chunks_new "$T/c2.json") new chunks, expected 3"
(($(jq -r .bytes_new "$T/c2.json") > 0)) || fail "a new 700 KB file cost no new bytes"
cp "$T/n.native" "$src/n"

step "identical bytes over the new file's chunk, cp n t && mv t n, f again"
dd if="$T/n.native" of="$mp/n" bs="$cs" skip=1 seek=1 count=1 conv=notrunc status=none
cp "$mp/n" "$mp/t" && mv "$mp/t" "$mp/n"
cp "$mp/f" "$mp/t" && mv "$mp/t" "$mp/f"
dd if="$src/g" of="$mp/g" bs=4096 skip=3 seek=3 count=2 conv=notrunc status=none
noop_checkpoint n3
same_content "$src" n3
exit 0
