#!/usr/bin/env bash
# checkpoint-cost.sh — issue 6, acceptance 1: a pause costs what changed.
#
# Base: a seeded tree of more than 1 GiB (20 files of 32 MiB, a 200 MiB
# database file, a 50 MiB file, 4000 small files; text-like and random
# content), committed with `stasis commit`. On its mount: 100 MB added in
# 5000 small files, 4 KiB changed in each of the 20 large files, 1 MiB of
# scattered 4 KiB writes in the 200 MiB file, the 50 MiB file deleted; then
# `stasis pause`. The same changes are applied natively to the source tree.
# Asserts:
#  - store growth (every blob, index.json) <= 1.1 x (the compressed size of
#    the truly changed chunks + the new tree + manifest + config + access
#    trace), where the changed chunks are the ones the test knows it
#    changed, and their compressed size is computed independently
#    (ckpt-tool zsize: each chunk range of the native files compressed as
#    one zstd frame at the store's level);
#  - the 20 large files cost <= 20 chunks (`stasis diff` ranges, and chunk
#    addresses that differ from the base's), and the scattered writes changed
#    exactly the chunks they touched;
#  - no chunk of the deleted file is in the new tree's chunk table;
#  - the pause's chunks_new / bytes_new are within what changed, and
#    `stasis verify` of the new snapshot passes.
# CKPT_COST_MB (default 1024) is only for trying the test out quickly; the
# issue fixes the scale at >= 1 GB.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"

CKPT=$TESTS_BIN/ckpt-tool
[[ -x $CKPT ]] || fail "no ckpt-tool at $CKPT"
LEVEL=3 # store/chunk.h CHUNK_LEVEL_DEFAULT: what commit and checkpoint compress at
MiB=$((1024 * 1024))
scale=${CKPT_COST_MB:-1024}
S=$T/store
src=$T/src
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }

step "base: a seeded tree of >= $scale MiB"
t0=$(now)
big_size=$((32 * MiB * scale / 1024))
db_size=$((200 * MiB * scale / 1024))
del_size=$((50 * MiB * scale / 1024))
mkdir -p "$src/big"
for i in $(seq -w 1 20); do
        "$CKPT" gen "1$i" mixed "$big_size" "$src/big/L$i"
done
"$CKPT" gen 2 mixed "$db_size" "$src/db.bin"
"$CKPT" gen 3 random "$del_size" "$src/del.bin"
"$CKPT" files 4 mixed 40000 $((4000 * scale / 1024)) "$src/usr"
total=$(du -sb --apparent-size "$src" | cut -f1)
echo "   $total bytes in $(find "$src" -type f | wc -l) files ($(secs "$t0") s)"
((scale < 1024 || total >= 1024 * MiB)) || fail "the base is only $total bytes"
t0=$(now)
st commit --store "$S" --tag base --json "$src" >"$T/base.json"
echo "   commit: $(jq -c '{chunks_total, bytes_packed, wall_ns}' "$T/base.json") ($(secs "$t0") s)"
cs=$(jq -r .chunk_size "$T/base.json")
((cs == 262144)) || echo "   note: chunk size $cs"

mp=$T/mnt
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$T/state" base

step "changes on the mount (and natively in the source tree)"
t0=$(now)
# 100 MB in 5000 new small files (text and random, alternately)
"$CKPT" files 5 mixed 20000 5000 "$mp/new" "$src/new"
# 4 KiB in each of the 20 large files, at a seeded 4 KiB-aligned offset
: >"$T/changed"
for i in $(seq -w 1 20); do
        off=$("$CKPT" scatter "5$i" 1 4096 "$mp/big/L$i" "$src/big/L$i")
        echo "big/L$i $((off / cs))" >>"$T/changed"
done
# 1 MiB of scattered 4 KiB writes in the 200 MiB file
"$CKPT" scatter 6 256 4096 "$mp/db.bin" "$src/db.bin" >"$T/db.offsets"
awk -v cs="$cs" '{print "db.bin", int($1 / cs)}' "$T/db.offsets" | sort -u >>"$T/changed"
n_db=$(grep -c '^db.bin ' "$T/changed")
# the 50 MiB file
rm "$mp/del.bin" "$src/del.bin"
echo "   ($(secs "$t0") s; the scattered writes touched $n_db chunks)"

step "stasis pause"
before=$(store_bytes "$S")
blob_list "$S" >"$T/blobs.before"
t0=$(now)
"$STASIS" pause --tag g1 --json "$mp" >"$T/p.json" || fail "stasis pause failed"
echo "   $(jq -c 'del(.parent, .reference)' "$T/p.json") ($(secs "$t0") s)"
after=$(store_bytes "$S")
growth=$((after - before))
d1=$(jq -r .digest "$T/p.json")
[[ $d1 == sha256:* ]] || fail "pause printed no digest"
st umount "$mp"

step "the compressed size of the truly changed chunks, computed independently"
# one line per changed chunk: PATH OFFSET LENGTH (of the native files)
{
        find "$src/new" -type f -printf '%p 0 %s\n'
        while read -r path c; do
                size=$(stat -c %s "$src/$path")
                len=$((size - c * cs))
                ((len > cs)) && len=$cs
                echo "$src/$path $((c * cs)) $len"
        done <"$T/changed"
} >"$T/chunks.list"
read -r _ n_changed _ zclen _ zulen < <("$CKPT" zsize "$LEVEL" <"$T/chunks.list")
((n_changed == 5000 + 20 + n_db)) || fail "expected $((5000 + 20 + n_db)) changed chunks, listed $n_changed"
man=$(blob_size "$S" "$d1")
cfg=$(manifest_field "$S" "$d1" .config.size)
tree=$(manifest_field "$S" "$d1" '.layers[0].size')
# the access trace stored with the snapshot (if any) counts as metadata too
trace=$(manifest_field "$S" "$d1" '[.layers[] | select(.mediaType == "application/vnd.stasis.trace.v1") | .size] | add // 0')
min=$((zclen + tree + man + cfg + trace))
bound=$((min * 11 / 10))
echo "   changed: $n_changed chunks, $zulen bytes, $zclen compressed; tree $tree, manifest $man, config $cfg, trace $trace"
echo "   store growth $growth bytes; bound 1.1 x $min = $bound" \
        "(growth / minimum = $(awk -v g="$growth" -v m="$min" 'BEGIN {printf "%.3f", g / m}'))"
((growth <= bound)) || fail "the pause grew the store by $growth bytes, more than 1.1 x the minimum ($bound)"
# what the pause itself reports stays within what changed
(($(jq -r .chunks_new "$T/p.json") <= n_changed)) ||
        fail "the pause reports $(jq -r .chunks_new "$T/p.json") new chunks, only $n_changed changed"
(($(jq -r .bytes_new "$T/p.json") <= zulen)) ||
        fail "the pause reports $(jq -r .bytes_new "$T/p.json") new bytes, only $zulen changed"

step "the 20 large files cost at most 20 chunks; the scattered writes exactly what they touched"
"$STASIS" diff --store "$S" --json base g1 >"$T/diff.json"
# changed chunk indexes per path, from the diff's (chunk-granular) ranges
jq -r --argjson cs "$cs" '.changes[] | select(.kind == "M") | .path as $p |
        .ranges[] | range(.[0] / $cs | floor; (.[0] + .[1] + $cs - 1) / $cs | floor) | "\($p) \(.)"' \
        "$T/diff.json" | sed 's|^/||' | sort -u >"$T/diff.chunks"
n_big=$(grep -c '^big/' "$T/diff.chunks" || true)
echo "   stasis diff: $n_big chunks of the large files changed"
((n_big <= 20)) || fail "the 4 KiB changes to 20 large files cost $n_big chunks (stasis diff)"
grep '^big/' "$T/changed" | sort >"$T/want.big"
grep '^big/' "$T/diff.chunks" | diff - "$T/want.big" >&2 ||
        fail "the large files' changed chunks (stasis diff) are not the ones written"
grep '^db.bin ' "$T/changed" | sort >"$T/want.db"
grep '^db.bin ' "$T/diff.chunks" | diff - "$T/want.db" >&2 ||
        fail "the database file's changed chunks (stasis diff) are not the ones the scattered writes touched"
# the same from the trees' chunk addresses: per large file, chunks that differ
n_addr=0
for i in $(seq -w 1 20); do
        "$CKPT" chunks "$S" base "big/L$i" >"$T/c.base"
        "$CKPT" chunks "$S" g1 "big/L$i" >"$T/c.g1"
        n_addr=$((n_addr + $(paste -d' ' "$T/c.base" "$T/c.g1" | awk '$2 != $7' | wc -l)))
done
echo "   chunk addresses: $n_addr chunks of the large files differ from the base's"
((n_addr <= 20)) || fail "the 4 KiB changes to 20 large files cost $n_addr chunks (tree chunk lists)"
jq -e '[.changes[] | select(.kind == "A" and (.path | test("^/?new/d[0-9]+/f[0-9]+$")))] | length == 5000' \
        "$T/diff.json" >/dev/null || fail "stasis diff does not show the 5000 new files"

step "the deleted file's chunks are not referenced by the new tree"
jq -e '[.changes[] | select(.kind == "D" and (.path | test("^/?del.bin$")))] | length == 1' "$T/diff.json" \
        >/dev/null || fail "stasis diff does not show del.bin deleted"
"$CKPT" chunks "$S" base del.bin | awk '$2 != "hole" {print $2}' | sort -u >"$T/del.chunks"
(($(wc -l <"$T/del.chunks") == (del_size + cs - 1) / cs)) || fail "del.bin has $(wc -l <"$T/del.chunks") chunks in the base"
"$CKPT" chunks "$S" g1 | awk '{print $1}' | sort -u >"$T/g1.chunks"
n_ref=$(comm -12 "$T/del.chunks" "$T/g1.chunks" | wc -l)
((n_ref == 0)) || fail "$n_ref chunks of the deleted file are still in the new tree"

step "stasis verify of the new snapshot"
t0=$(now)
st verify --store "$S" g1
echo "   ($(secs "$t0") s)"
exit 0
