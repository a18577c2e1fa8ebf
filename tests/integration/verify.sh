#!/usr/bin/env bash
# verify.sh — acceptance 3: one flipped byte in a pack, the tree, the config
# or the manifest makes `stasis verify` exit 1 naming the blob (and the chunk
# for a pack); restoring the corrupt snapshot fails with one clear line and
# never leaves a file with wrong bytes behind.
source "$(dirname "$0")/lib.sh"
need jq

S=$T/store
src=$T/src
mkdir -p "$src/d"
for i in 1 2 3 4; do rand_file "$src/d/r$i" $((700 * 1024 + i)); done
seq 1 200000 >"$src/text"
echo small >"$src/small"
truncate -s 3M "$src/sparse"
echo tail >>"$src/sparse"

st commit --store "$S" --tag v "$src" >"$T/digest"
D=$(cat "$T/digest")
M=$(blob_path "$S" "$D")
CONFIG=$(jq -r .config.digest "$M")
TREE=$(jq -r '.layers[0].digest' "$M")
PACK=$(jq -r '.layers[1].digest' "$M")
[[ $PACK =~ ^sha256: ]] || fail "the snapshot lists no pack"

step "a clean store verifies"
expect_exit 0 "$STASIS" verify --store "$S"
expect_exit 0 "$STASIS" verify --store "$S" v
st restore --store "$S" v "$T/clean"
same_tree "$src" "$T/clean"

# corrupt NAME BLOB_DIGEST: a fresh copy of the store with one byte of the
# blob flipped (in its middle); sets C to the copy.
corrupt() {
        C=$T/store-$1
        rm -rf "$C"
        cp -a "$S" "$C"
        local f size
        f=$(blob_path "$C" "$2")
        size=$(stat -c %s "$f")
        chmod u+w "$f"
        flip_byte "$f" $((size / 2))
}

# restore_fails NAME REGEX: restore of v from $C exits 1 with one
# "stasis: " line matching REGEX. A failed restore leaves a partial tree:
# a file may be missing or unfinished, but every byte it holds must be the
# source's byte at that offset (a file of the right size whose missing
# data reads as zeros would fail here).
restore_fails() {
        local out=$T/out-$1 f rel size
        expect_exit 1 "$STASIS" restore --store "$C" v "$out"
        expect_one_error_line "$2"
        [[ -d $out ]] || return 0
        while IFS= read -r -d '' f; do
                rel=${f#"$out"/}
                [[ -f $src/$rel ]] || fail "$1: restore made $rel, which the source lacks"
                size=$(stat -c %s "$f")
                ((size <= $(stat -c %s "$src/$rel"))) || fail "$1: restored $rel is longer than the source"
                cmp -s -n "$size" "$src/$rel" "$f" || fail "$1: restore failed but left $rel with wrong bytes"
        done < <(find "$out" -type f -print0)
}

# verify_names NAME REGEX: verify exits 1, and some stderr line matches.
verify_names() {
        expect_exit 1 "$STASIS" verify --store "$C"
        grep -qE -- "$2" "$T/err" || { cat "$T/err" >&2; fail "$1: verify did not report /$2/"; }
        grep -vqE '^stasis: ' "$T/err" && { cat "$T/err" >&2; fail "$1: verify wrote stray stderr lines"; }
        expect_exit 1 "$STASIS" verify --store "$C" v
        grep -qE -- "$2" "$T/err" || { cat "$T/err" >&2; fail "$1: verify v did not report /$2/"; }
        return 0
}

step "a flipped byte in a pack"
corrupt pack "$PACK"
verify_names pack "blob ${PACK}: chunk sha256:[0-9a-f]{64}"
restore_fails pack "${PACK#sha256:}"

step "a flipped byte in the tree"
corrupt tree "$TREE"
verify_names tree "blob ${TREE}"
restore_fails tree "${TREE#sha256:}"

step "a flipped byte in the config"
corrupt config "$CONFIG"
verify_names config "blob ${CONFIG}"
restore_fails config "${CONFIG#sha256:}"

step "a flipped byte in the manifest"
corrupt manifest "$D"
verify_names manifest "blob ${D}"
restore_fails manifest "${D#sha256:}"

step "a missing pack"
C=$T/store-missing
cp -a "$S" "$C"
rm -f "$(blob_path "$C" "$PACK")"
verify_names missing "${PACK}"
restore_fails missing "${PACK#sha256:}"

step "the original store is still clean"
expect_exit 0 "$STASIS" verify --store "$S"
