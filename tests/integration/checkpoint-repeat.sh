#!/usr/bin/env bash
# checkpoint-repeat.sh — issue 6: checkpoints of one live mount, again and
# again. Each checkpoint reads only the chunks changed since the last one
# (the others are the last one's references), so every kind of change must
# reach the next checkpoint: writes in the middle, appends, truncates down
# and up, hole punching, zero ranges, a rewrite with the same bytes, a file
# replaced by rename, deletes, new files, and changes made while a
# checkpoint runs. Every round's snapshot restores equal to the mount, its
# parent is the round before, and what it read (bytes_dirty) is no more
# than the chunks changed in the round.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"
need fallocate

listing() { "$TREEDIGEST" --list --no-atime "$1" | sed 's/ extents=[^ ]*//'; }

S=$T/store
step "a base: three 8 MiB files and a small tree"
mkdir -p "$T/src/etc"
for f in a b c; do rand_file "$T/src/$f" $((8 * 1024 * 1024)); done
for i in $(seq 20); do echo "conf $i" >"$T/src/etc/c$i"; done
st commit --store "$S" --tag base "$T/src"
cs=$("$STASIS" inspect --store "$S" --json base | jq -r .chunk_size)
mp=$T/mnt
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$T/state" base
prev=$("$STASIS" inspect --store "$S" --json base | jq -r .digest)

# round N CHANGED_CHUNKS: checkpoint, check it against the mount and the
# last round, and that it read at most CHANGED_CHUNKS chunks.
round() {
        local n=$1 max=$2 j=$T/g$1.json
        "$STASIS" checkpoint --tag "g$n" --json "$mp" >"$j" || fail "round $n: stasis checkpoint failed"
        [[ $(jq -r .parent "$j") == "$prev" ]] || fail "round $n: parent $(jq -r .parent "$j"), not $prev"
        (($(jq -r .bytes_dirty "$j") <= max * cs)) ||
                fail "round $n read $(jq -r .bytes_dirty "$j") bytes, more than the $max chunks changed"
        rm -rf "$T/r"
        st restore --store "$S" "g$n" "$T/r"
        diff <(listing "$T/r") <(listing "$mp") >&2 || fail "round $n: the restore differs from the mount"
        prev=$(jq -r .digest "$j")
        echo "round $n: read $(jq -r .bytes_dirty "$j") bytes, $(jq -r .chunks_new "$j") new chunks"
}

step "round 1: writes everywhere (the first checkpoint reads all it changed)"
dd if=/dev/urandom of="$mp/a" bs=4096 seek=100 count=1 conv=notrunc status=none
dd if=/dev/urandom of="$mp/b" bs=1M count=8 conv=notrunc status=none
rand_file "$mp/new1" $((3 * 1024 * 1024))
echo changed >"$mp/etc/c1"
round 1 $((1 + 8 * 1024 * 1024 / cs + 3 * 1024 * 1024 / cs + 2))

step "round 2: one 4 KiB write in b, an append to new1"
dd if=/dev/urandom of="$mp/b" bs=4096 seek=700 count=1 conv=notrunc status=none
head -c 5000 /dev/urandom >>"$mp/new1"
round 2 3

step "round 3: truncate down and up, punch a hole, zero a range"
truncate -s $((2 * 1024 * 1024 + 17)) "$mp/b"
truncate -s $((4 * 1024 * 1024)) "$mp/b"
fallocate -p -o $((cs + 4096)) -l 8192 "$mp/new1"
fallocate -z -o $((2 * cs)) -l 100 "$mp/new1" 2>/dev/null || dd if=/dev/zero of="$mp/new1" bs=100 count=1 seek=$((2 * cs / 100)) conv=notrunc status=none
round 3 $((4 * 1024 * 1024 / cs + 3))

step "round 4: the same bytes rewritten, a file replaced by rename, deletes, new files"
dd if="$mp/new1" of="$mp/new1" bs=4096 count=4 conv=notrunc status=none
cp "$mp/a" "$mp/a.tmp" && mv "$mp/a.tmp" "$mp/a"
rm "$mp/c" "$mp/etc/c2"
echo fresh >"$mp/etc/new"
round 4 $((8 * 1024 * 1024 / cs + 1 + 1))

step "round 5: changes while the checkpoint runs"
(for i in $(seq 40); do dd if=/dev/urandom of="$mp/b" bs=4096 seek=$((i * 13)) count=1 conv=notrunc status=none; done) &
w=$!
"$STASIS" checkpoint --tag g5 --json "$mp" >"$T/g5.json" || fail "round 5: stasis checkpoint failed"
wait "$w"
prev=$(jq -r .digest "$T/g5.json")
round 6 $((4 * 1024 * 1024 / cs))

step "round 7: no change reads nothing and is the last checkpoint again"
"$STASIS" checkpoint --json "$mp" >"$T/g7.json" || fail "round 7: stasis checkpoint failed"
jq -e --arg d "$prev" '.reused == true and .digest == $d and .bytes_dirty == 0 and .chunks_new == 0' "$T/g7.json" >/dev/null ||
        fail "round 7: $(jq -c '{reused, digest, bytes_dirty, chunks_new}' "$T/g7.json"), not $prev reused"
exit 0
