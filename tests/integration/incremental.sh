#!/usr/bin/env bash
# incremental.sh — acceptance 2, with exact byte accounting: a 4 KiB change
# in a 64 MiB file grows the store by at most two compressed chunks plus the
# new tree, config, manifest and index.json; unchanged files cost nothing;
# an identical tree adds no pack bytes; identical files share chunks.
source "$(dirname "$0")/lib.sh"
need jq

S=$T/store
src=$T/src
mkdir -p "$src/sub"
rand_file "$src/big" $((64 * 1024 * 1024))
for i in 1 2 3 4 5; do rand_file "$src/sub/f$i" $((1024 * 1024 + i * 1000)); done
echo "some text" >"$src/small"

# commit_gen NAME ARGS...: commit with --json into $T/NAME.json, checking
# what the commit added to the store: every new blob must be the new
# manifest, its config, its tree or one of its packs; no blob may vanish;
# the growth in bytes must be exactly their sizes plus index.json's growth.
# Sets: dg (digest), new_packs (bytes of new pack blobs), new_meta (bytes of
# new manifest+config+tree blobs).
commit_gen() {
        local name=$1 before after idx_before idx_after b m cfg tree growth size
        shift
        blob_list "$S" >"$T/blobs.before" 2>/dev/null || : >"$T/blobs.before"
        idx_before=$( [[ -f $S/index.json ]] && stat -c %s "$S/index.json" || echo 0)
        before=$( [[ -f $S/index.json ]] && store_bytes "$S" || echo 0)
        st commit --store "$S" --json "$@" "$src" >"$T/$name.json"
        jq -e . "$T/$name.json" >/dev/null || fail "$name: commit --json output is not JSON"
        blob_list "$S" >"$T/blobs.after"
        after=$(store_bytes "$S")
        idx_after=$(stat -c %s "$S/index.json")
        dg=$(jq -r .digest "$T/$name.json")
        m=$(blob_path "$S" "$dg")
        cfg=$(jq -r .config.digest "$m")
        tree=$(jq -r '.layers[0].digest' "$m")
        # Nothing removed or rewritten.
        comm -23 "$T/blobs.before" "$T/blobs.after" >"$T/gone"
        [[ ! -s $T/gone ]] || { cat "$T/gone" >&2; fail "$name: commit removed or changed blobs"; }
        new_packs=0
        new_meta=0
        while read -r b size; do
                case sha256:$b in
                "$dg" | "$cfg" | "$tree") new_meta=$((new_meta + size)) ;;
                *)
                        jq -e --arg d "sha256:$b" '[.layers[1:][] | .digest] | index($d) != null' "$m" >/dev/null ||
                                fail "$name: new blob sha256:$b is not in the new snapshot"
                        new_packs=$((new_packs + size))
                        ;;
                esac
        done < <(comm -13 "$T/blobs.before" "$T/blobs.after")
        growth=$((after - before))
        ((before > 0)) || growth=$((growth - $(stat -c %s "$S/oci-layout"))) # a new store
        ((growth == new_packs + new_meta + idx_after - idx_before)) ||
                fail "$name: store grew by $growth bytes, blobs account for $((new_packs + new_meta)) + index $((idx_after - idx_before))"
        (($(jq .bytes_packed "$T/$name.json") == new_packs)) ||
                fail "$name: bytes_packed $(jq .bytes_packed "$T/$name.json") but new pack blobs hold $new_packs bytes"
        echo "   $name: +$growth bytes (packs $new_packs, manifest+config+tree $new_meta, index $((idx_after - idx_before))); chunks new $(jq .chunks_new "$T/$name.json"), reused $(jq .chunks_reused "$T/$name.json")"
}

jget() { jq -r ".$2" "$T/$1.json"; }

step "generation 1"
commit_gen g1 --tag g1
cs=$(jget g1 chunk_size)
# zstd's worst case for one incompressible chunk (ZSTD_COMPRESSBOUND), plus slack.
chunk_bound=$((cs + cs / 256 + 64 + 512))
(($(jget g1 generation) == 0)) || fail "first generation is $(jget g1 generation), expected 0"
(($(jget g1 chunks_new) == $(jget g1 chunks_total))) || fail "g1: not every chunk is new in an empty store"
cp "$src/big" "$T/big.g1"

step "generation 2: 4 KiB written across a chunk boundary in the middle of the 64 MiB file"
# 32 MiB is a multiple of every legal chunk size: the write straddles two chunks.
dd if=/dev/urandom of="$src/big" bs=1 count=4096 seek=$((32 * 1024 * 1024 - 2048)) conv=notrunc status=none
commit_gen g2 --parent g1 --tag g2
(($(jget g2 generation) == 1)) || fail "g2: generation $(jget g2 generation), expected 1"
[[ $(jget g2 parent) == $(jget g1 digest) ]] || fail "g2: parent is not g1"
(($(jget g2 chunks_new) == 2)) || fail "g2: $(jget g2 chunks_new) new chunks, expected exactly 2"
((new_packs <= 2 * chunk_bound)) || fail "g2: $new_packs new pack bytes for 2 chunks (bound $((2 * chunk_bound)))"
((new_packs > 0)) || fail "g2: no new pack bytes for changed data"

step "generation 3: an aligned 4 KiB write costs one chunk"
dd if=/dev/urandom of="$src/big" bs=4096 count=1 seek=$((16 * 1024 * 1024 / 4096 + 2)) conv=notrunc status=none
commit_gen g3 --parent g2 --tag g3
(($(jget g3 chunks_new) == 1)) || fail "g3: $(jget g3 chunks_new) new chunks, expected 1"
((new_packs <= chunk_bound)) || fail "g3: $new_packs new pack bytes for 1 chunk"

step "generation 4: an identical tree adds no pack bytes"
commit_gen g4 --parent g3 --tag g4
((new_packs == 0)) || fail "g4: identical tree added $new_packs pack bytes"
(($(jget g4 chunks_new) == 0)) || fail "g4: $(jget g4 chunks_new) new chunks for an identical tree"

step "generation 5: metadata-only changes and a copied file cost no pack bytes"
touch -d '2000-01-01 00:00:00.5' "$src/sub/f1"
chmod 600 "$src/sub/f2"
cp "$src/sub/f3" "$src/f3-copy"
commit_gen g5 --parent g4 --tag g5
((new_packs == 0)) || fail "g5: unchanged data cost $new_packs pack bytes"

step "every generation restores"
st restore --store "$S" g5 "$T/r5"
same_tree "$src" "$T/r5"
st restore --store "$S" g1 "$T/r1"
cmp "$T/big.g1" "$T/r1/big" || fail "g1's big file does not restore to its old content"

step "identical files share chunks: two identical 8 MiB files cost one file's packs"
mkdir -p "$T/one" "$T/two/x"
rand_file "$T/one/a" $((8 * 1024 * 1024))
cp "$T/one/a" "$T/two/a"
cp "$T/one/a" "$T/two/x/b"
st commit --store "$T/s1" "$T/one" >/dev/null
st commit --store "$T/s2" "$T/two" >/dev/null
p1=$(pack_bytes "$T/s1")
p2=$(pack_bytes "$T/s2")
((p1 >= 8 * 1024 * 1024)) || fail "8 MiB of random data packed into only $p1 bytes"
((p1 == p2)) || fail "one copy: $p1 pack bytes; two copies: $p2"
