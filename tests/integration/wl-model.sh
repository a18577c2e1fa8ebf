#!/usr/bin/env bash
# wl-model.sh — issue 5, acceptance 2: a randomized lockstep model test
# (wl_model.py) applies the same random operations to a stasis mount of a
# base and to a native copy of that base, comparing results as it goes and
# the whole trees every WL_MODEL_EVERY operations; then the tree survives a
# remount on the same state dir.
#   WL_MODEL_OPS    operations (default 50000; `make` target for a long run)
#   WL_MODEL_SEED   seed (default: random, printed)
#   WL_MODEL_EVERY  full comparison interval (default 2000)
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"
need python3
model=$SRC_DIR/tests/integration/wl_model.py
ops=${WL_MODEL_OPS:-50000}
seed=${WL_MODEL_SEED:-$(((RANDOM << 15) | RANDOM))}
every=${WL_MODEL_EVERY:-2000}
echo "   seed $seed (rerun: WL_MODEL_SEED=$seed WL_MODEL_OPS=$ops)"

S=$T/store
mkdir -p "$T/src/a/c" "$T/src/b"
i=0
for p in f0 f1 f2 a/f3 a/f4 b/f5 a/c/f6; do
        rand_file "$T/src/$p" $(((i * 97531) % 900000 + 1))
        i=$((i + 1))
done
ln "$T/src/f2" "$T/src/b/f2" # a base hardlink group
# small chunks: every file spans many, so partial-chunk copy-up is exercised
st commit --store "$S" --chunk-size 16384 --tag base "$T/src"
cp -a "$T/src" "$T/native"

mp=$T/mnt
# a small journal bound: the layer also compacts its journal as it goes
STASIS_JOURNAL_MAX=256K mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$T/state" base
step "$ops operations in lockstep"
python3 "$model" "$mp" "$T/native" "$seed" "$ops" "$every" || fail "mount and native directory diverged (seed $seed)"
echo "   status: dirty $(counter "$mp" dirty_chunks) chunks, copied up $(counter "$mp" copied_up), errors $(counter "$mp" errors)"
(($(counter "$mp" errors) == 0)) || fail "read errors"
n=$(grep -c "journal compacted" "$T/state/stasisd.log" || true)
echo "   online journal compactions: $n"
((ops < 50000 || n > 0)) || fail "no online journal compaction in $ops operations"

step "remount on the same state: still equal"
st umount "$mp"
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$T/state" base
python3 "$model" "$mp" "$T/native" "$seed" 0 || fail "the tree changed across a remount"
st umount "$mp"
