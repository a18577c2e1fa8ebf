#!/usr/bin/env bash
# checkpoint-remount-chain.sh — issue 6, acceptance 5 ("the state remounts,
# the next checkpoint succeeds") with DESIGN.md's crash safety promise ("keeps
# the generation number and parent right") and acceptance 3 ("gc never
# removes what a live mount uses"). A mount checkpoints twice (C1, C2 =
# generations 1 and 2); its state dir is remounted, after `stasis umount`
# and after kill -9 of stasisd. The next checkpoint continues the chain:
# its parent is the last checkpoint the state dir published and its
# generation one more. `stasis gc --keep-last 1 --grace 0` with the mount
# live then keeps that newest checkpoint, which verifies.
#
# stasisd records the state dir's last checkpoint in STATE/last-checkpoint
# (and its registry entry), and takes it as the next one's parent.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"

S=$T/store
mp=$T/mnt
state=$T/state
mkdir -p "$T/src"
echo base >"$T/src/f"
st commit --store "$S" --tag base "$T/src" >/dev/null
base=$("$STASIS" inspect --store "$S" --json base | jq -r .digest)
head_base() { awk '$1 == "base" {print $2}' "$state/HEAD"; }

# ck NAME: a checkpoint of $mp; $T/NAME.line gets "digest parent generation"
ck() {
        "$STASIS" checkpoint --json "$mp" >"$T/$1.json" || fail "checkpoint $1 failed"
        jq -r '"\(.digest) \(.parent) \(.generation)"' "$T/$1.json" >"$T/$1.line"
}

mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$state" base
echo 1 >"$mp/one"
ck c1
read -r c1 p1 g1 <"$T/c1.line"
echo 2 >"$mp/two"
ck c2
read -r c2 p2 g2 <"$T/c2.line"
[[ $p1 == "$base" && $g1 == 1 && $p2 == "$c1" && $g2 == 2 ]] || fail "the first two checkpoints are not a chain"

step "remount after stasis umount: the next checkpoint's parent is C2"
st umount "$mp"
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$state" "$(head_base)"
echo 3 >"$mp/three"
ck c3
read -r c3 p3 g3 <"$T/c3.line"
echo "   C3: parent $p3, generation $g3"
[[ $p3 == "$c2" ]] || fail "after a remount the next checkpoint's parent is $p3, not the last checkpoint $c2"
((g3 == 3)) || fail "after a remount the next checkpoint's generation is $g3, not 3"

step "remount after kill -9: the next checkpoint's parent is C3"
kill -9 "$(daemon_pid "$mp")"
st umount "$mp"
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$state" "$(head_base)"
echo 4 >"$mp/four"
ck c4
read -r c4 p4 g4 <"$T/c4.line"
[[ $p4 == "$c3" ]] || fail "after kill -9 and a remount the next checkpoint's parent is $p4, not the last checkpoint $c3"
((g4 == 4)) || fail "after kill -9 and a remount the next checkpoint's generation is $g4, not 4"

step "gc --keep-last 1 --grace 0 with the mount live keeps its last checkpoint"
st gc --store "$S" --keep-last 1 --grace 0 >/dev/null
st verify --store "$S" "$c4" >/dev/null
echo 5 >"$mp/five"
ck c5
st restore --store "$S" "$(jq -r .digest "$T/c5.json")" "$T/r"
[[ $(cat "$T/r/one" "$T/r/two" "$T/r/three" "$T/r/four" "$T/r/five" | tr -d '\n') == 12345 ]] ||
        fail "the last checkpoint lacks a change"
exit 0
