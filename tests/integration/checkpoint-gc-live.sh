#!/usr/bin/env bash
# checkpoint-gc-live.sh — issue 6, acceptance 3 ("gc never removes what a
# live mount uses"), for a mount's last checkpoint. A mount's next
# checkpoint reuses the chunk references of its last one, so that snapshot
# is in use for as long as the mount lives. Two mounts A and B of one base
# each checkpoint (siblings in one chain, B's newer); `stasis gc --keep-last
# 1 --grace 0` with both live keeps B's and untags A's, but must keep A's
# blobs: A's next checkpoint then succeeds, verifies, and restores with the
# file its first checkpoint packed.
#
# stasisd names its last checkpoint in its mount registry entry
# ("last_checkpoint"), which `stasis gc` pins (docs/cli.md "gc").
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"

S=$T/store
mkdir -p "$T/src"
echo base >"$T/src/f"
st commit --store "$S" --tag base "$T/src" >/dev/null
mount_snap "$T/a" --store "$S" --cache "$T/cache" --state "$T/state-a" base
mount_snap "$T/b" --store "$S" --cache "$T/cache" --state "$T/state-b" base

step "A and B checkpoint (B's is newer)"
rand_file "$T/a1" 300000
cp "$T/a1" "$T/a/a1"
"$STASIS" checkpoint --json "$T/a" >"$T/ca1.json" || fail "A's checkpoint failed"
sleep 1.1 # B's is newer by its creation time too
rand_file "$T/b/b1" 300000
"$STASIS" checkpoint --json "$T/b" >"$T/cb1.json" || fail "B's checkpoint failed"

step "gc --keep-last 1 --grace 0 with both mounts live"
"$STASIS" gc --store "$S" --keep-last 1 --grace 0 --json >"$T/gc.json" || fail "gc failed"
cat "$T/gc.json"
ca1=$(jq -r .digest "$T/ca1.json")
for b in "${ca1#sha256:}" $(jq -r '.config.digest, .layers[].digest' "$(blob_path "$S" "$ca1")" 2>/dev/null | sed 's/^sha256://'); do
        [[ -f $S/blobs/sha256/$b ]] || fail "gc removed blob $b of A's last checkpoint, which A's next checkpoint reuses"
done

step "A's next checkpoint"
echo more >"$T/a/other"
"$STASIS" checkpoint --json "$T/a" >"$T/ca2.json" 2>"$T/ca2.err" || fail "A's next checkpoint failed after gc: $(cat "$T/ca2.err")"
ca2=$(jq -r .digest "$T/ca2.json")
st verify --store "$S" "$ca2" >/dev/null
st restore --store "$S" "$ca2" "$T/r"
cmp "$T/r/a1" "$T/a1" || fail "a1 differs in A's next checkpoint"
[[ $(cat "$T/r/other") == more ]] || fail "A's next checkpoint lacks its change"
exit 0
