#!/usr/bin/env bash
# checkpoint.sh — issue 6: `stasis checkpoint` end to end. Mount a base,
# write, modify (4 KiB in a 64 MiB file), delete and rename files, then
# `stasis checkpoint --tag g1`: `stasis restore g1` equals what the mount
# shows (treedigest --list, no atimes; extents left out because the mount
# reports a written file as all data), the 4 KiB change costs at most one
# new chunk, a checkpoint with no change adds no pack bytes, and g1 mounted
# elsewhere (resume) shows the changes.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"

listing() { "$TREEDIGEST" --list --no-atime "$1" | sed 's/ extents=[^ ]*//'; }
store_bytes() { du -sb "$S/blobs" | cut -f1; }

S=$T/store
step "a base: a 64 MiB file, a small tree"
mkdir -p "$T/src/etc" "$T/src/var/old"
head -c $((64 * 1024 * 1024)) /dev/urandom >"$T/src/large"
for i in $(seq 30); do echo "conf $i" >"$T/src/etc/c$i"; done
head -c 500000 /dev/urandom >"$T/src/var/old/log"
"$TREEDIGEST" --settle-links "$T/src"
st commit --store "$S" --tag base "$T/src"
cs=$("$STASIS" inspect --store "$S" --json base | jq -r .chunk_size)
mp=$T/mnt
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$T/state" base

step "usage errors"
expect_exit 2 "$STASIS" checkpoint
expect_exit 2 "$STASIS" checkpoint --tag "bad tag" "$mp"
expect_exit 1 "$STASIS" checkpoint "$T/src"

step "changes: new files, a 4 KiB change, deletes, a rename"
mkdir -p "$mp/home/u"
for i in $(seq 40); do echo "note $i" >"$mp/home/u/n$i"; done
head -c 1000000 /dev/urandom >"$mp/home/u/blob"
rm -r "$mp/var/old"
mv "$mp/etc/c7" "$mp/etc/c7.renamed"
echo changed >"$mp/etc/c8"
dd if=/dev/urandom of="$mp/large" bs=4096 seek=9000 count=1 conv=notrunc status=none

step "stasis checkpoint --tag g1 --json"
"$STASIS" checkpoint --tag g1 --json "$mp" >"$T/g1.json" || fail "stasis checkpoint failed"
cat "$T/g1.json"
d1=$(jq -r .digest "$T/g1.json")
[[ $d1 == sha256:* ]] || fail "no digest"
[[ $(jq -r .generation "$T/g1.json") == 1 ]] || fail "generation is not 1"
[[ $("$STASIS" inspect --store "$S" --json g1 | jq -r .digest) == "$d1" ]] || fail "g1 does not name $d1"
# New chunks: 40 notes, 1 MB blob, c8, and the 4 KiB change.
(($(jq -r .chunks_new "$T/g1.json") <= 40 + 1000000 / cs + 1 + 1 + 1)) || fail "too many new chunks"
(($(jq -r .stall_ns "$T/g1.json") > 0)) || fail "no stall reported"

step "restore g1 equals the mount"
st restore --store "$S" g1 "$T/r1"
diff <(listing "$T/r1") <(listing "$mp") || fail "restore of g1 differs from the mount"
[[ ! -e $T/r1/var/old ]] || fail "a deleted directory came back"

step "a 4 KiB change alone costs at most one new chunk"
dd if=/dev/urandom of="$mp/large" bs=4096 seek=12000 count=1 conv=notrunc status=none
"$STASIS" checkpoint --tag g2 --json "$mp" >"$T/g2.json" || fail "stasis checkpoint failed"
(($(jq -r .chunks_new "$T/g2.json") <= 1)) || fail "a 4 KiB change cost $(jq -r .chunks_new "$T/g2.json") chunks"
# Only what changed since g1 is read again: one chunk; the rest of what the
# layer holds is g1's references. g2's parent is g1.
(($(jq -r .bytes_dirty "$T/g2.json") <= cs)) || fail "g2 read $(jq -r .bytes_dirty "$T/g2.json") bytes, not one chunk"
[[ $(jq -r .parent "$T/g2.json") == "$d1" && $(jq -r .generation "$T/g2.json") == 2 ]] ||
        fail "g2's parent is not g1 (generation 2): $(jq -c '{parent, generation}' "$T/g2.json")"
st restore --store "$S" g2 "$T/r2full"
diff <(listing "$T/r2full") <(listing "$mp") || fail "restore of g2 differs from the mount"
st restore --store "$S" g2 "$T/r2"
cmp "$T/r2/large" "$mp/large" || fail "the large file restores wrong"

step "a no-op checkpoint adds no pack bytes"
before=$(store_bytes)
d3=$("$STASIS" checkpoint "$mp") || fail "stasis checkpoint failed"
[[ $d3 == sha256:* ]] || fail "no digest printed: $d3"
after=$(store_bytes)
((after - before < 16384)) || fail "a no-op checkpoint grew the store by $((after - before)) bytes"
[[ $d3 == "$(jq -r .digest "$T/g2.json")" ]] || fail "a checkpoint with no change is not the last one ($d3)"
"$STASIS" checkpoint --json "$mp" >"$T/g2b.json" || fail "stasis checkpoint failed"
jq -e --arg d1 "$d1" '.reused == true and .generation == 2 and .parent == $d1 and .bytes_dirty == 0' "$T/g2b.json" >/dev/null ||
        fail "a reused checkpoint reports $(jq -c '{reused, generation, parent, bytes_dirty}' "$T/g2b.json")"
"$STASIS" status --json "$mp" | jq -e '.checkpoints == 4' >/dev/null || fail "status does not count 4 checkpoints"

step "resume: g1 mounted elsewhere shows the changes"
mp2=$T/mnt2
mount_snap "$mp2" --store "$S" --cache "$T/cache2" --state "$T/state2" g1
diff <(listing "$mp2") <(listing "$T/r1") || fail "g1 mounted differs from its restore"
[[ $(cat "$mp2/etc/c8") == changed && -f $mp2/etc/c7.renamed && ! -e $mp2/var/old ]] ||
        fail "the changes are not on the g1 mount"
exit 0
