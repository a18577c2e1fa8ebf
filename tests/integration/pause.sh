#!/usr/bin/env bash
# pause.sh — issue 6: stasis pause / unpause. On a mount labelled with a
# real cgroup v2 (a counting loop in it), `stasis pause --tag p1` publishes
# a snapshot equal to the mount, leaves the cgroup frozen (the loop stands
# still) and the mount read-only: writes, creates, deletes and opens for
# writing fail with EROFS, reads work. A second pause fails (Busy).
# `stasis unpause` thaws and makes it writable (twice is fine). A mount
# left paused is thawed by its unmount. Without the label, pause still
# makes the mount read-only.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"

listing() { "$TREEDIGEST" --list --no-atime "$1" | sed 's/ extents=[^ ]*//'; }
CG2=$(awk '$9 == "cgroup2" {print $5; exit}' /proc/self/mountinfo)
[[ -n $CG2 && -w $CG2 ]] || skip "no writable cgroup2 mount"
CG=$CG2/stasis-pause-test-$$
mkdir "$CG" 2>/dev/null || skip "cannot create a cgroup under $CG2"
[[ -f $CG/cgroup.freeze ]] || { rmdir "$CG"; skip "no cgroup.freeze"; }
LOOP_PID=
on_exit_hook() {
        echo 0 >"$CG/cgroup.freeze" 2>/dev/null
        [[ -n $LOOP_PID ]] && kill -9 "$LOOP_PID" 2>/dev/null
        local p
        for p in $(cat "$CG/cgroup.procs" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
        sleep 0.2
        rmdir "$CG" 2>/dev/null || true
}
frozen() { grep -q '^frozen 1$' "$CG/cgroup.events"; }
readonly_checks() { # readonly_checks MP A: every kind of change fails with EROFS; etc/a reads A
        local mp=$1 out
        out=$( { echo x >"$mp/new-file"; } 2>&1) && fail "a create succeeded on a paused mount"
        [[ $out == *"Read-only file system"* ]] || fail "a create failed with '$out', not EROFS"
        out=$( { echo x >>"$mp/etc/a"; } 2>&1) && fail "an append succeeded on a paused mount"
        [[ $out == *"Read-only file system"* ]] || fail "an open for writing failed with '$out', not EROFS"
        mkdir "$mp/newdir" 2>/dev/null && fail "mkdir succeeded on a paused mount"
        rm "$mp/etc/b" 2>/dev/null && fail "unlink succeeded on a paused mount"
        chmod 0600 "$mp/etc/a" 2>/dev/null && fail "chmod succeeded on a paused mount"
        [[ $(cat "$mp/etc/a") == "$2" ]] || fail "reads do not work on a paused mount"
}

S=$T/store
mkdir -p "$T/src/etc"
echo a >"$T/src/etc/a"
echo b >"$T/src/etc/b"
head -c 3000000 /dev/urandom >"$T/src/big"
st commit --store "$S" --tag base "$T/src"

sh -c 'echo $$ >'"$CG"'/cgroup.procs; i=0; while :; do i=$((i+1)); echo $i >'"$T"'/count.tmp; mv '"$T"'/count.tmp '"$T"'/count; sleep 0.01; done' </dev/null >/dev/null 2>&1 &
LOOP_PID=$!
for _ in $(seq 100); do [[ -s $T/count ]] && break; sleep 0.05; done

mp=$T/mnt
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$T/state" --label "io.stasis.freeze=cgroup:$CG" base

step "changes, then stasis pause --tag p1"
echo changed >"$mp/etc/a"
mkdir "$mp/home"
echo new >"$mp/home/n"
dd if=/dev/urandom of="$mp/big" bs=4096 seek=100 count=1 conv=notrunc status=none
"$STASIS" pause --tag p1 --json "$mp" >"$T/p1.json" || fail "stasis pause failed"
cat "$T/p1.json"
[[ $(jq -r .frozen "$T/p1.json") == true ]] || fail "the answer does not say frozen"
frozen || fail "the cgroup is not frozen after pause"
c1=$(cat "$T/count"); sleep 0.4; [[ $(cat "$T/count") == "$c1" ]] || fail "the paused loop went on"
"$STASIS" status --json "$mp" | jq -e '.paused == true' >/dev/null || fail "status does not say paused"

step "paused: read-only (EROFS), and the snapshot equals the mount"
readonly_checks "$mp" changed
st restore --store "$S" p1 "$T/r1"
diff <(listing "$T/r1") <(listing "$mp") || fail "p1 differs from the paused mount"

step "a second pause fails (Busy); a checkpoint while paused keeps it paused"
expect_exit 1 "$STASIS" pause "$mp"
grep -q Busy "$T/err" || fail "a second pause did not say Busy: $(cat "$T/err")"
"$STASIS" checkpoint "$mp" >/dev/null || fail "a checkpoint of a paused mount failed"
frozen || fail "a checkpoint thawed a paused sandbox"
readonly_checks "$mp" changed

step "unpause: thawed, writable; twice is fine"
st unpause "$mp"
frozen && fail "still frozen after unpause"
c2=$(cat "$T/count"); sleep 0.3; (($(cat "$T/count") > c2)) || fail "the loop does not count after unpause"
echo after >"$mp/new-file" && [[ $(cat "$mp/new-file") == after ]] || fail "not writable after unpause"
st unpause "$mp"

step "unmount of a paused mount thaws it"
st pause "$mp"
frozen || fail "not frozen after the second pause"
st umount "$mp"
frozen && fail "still frozen after unmount"

step "without a freeze label: pause makes the mount read-only, unpause writable"
mp2=$T/mnt2
mount_snap "$mp2" --store "$S" --cache "$T/cache" --state "$T/state2" base
"$STASIS" pause --json "$mp2" >"$T/p2.json" || fail "pause without a label failed"
[[ $(jq -r .frozen "$T/p2.json") == false ]] || fail "pause without a label says frozen"
readonly_checks "$mp2" a
st unpause "$mp2"
echo ok >"$mp2/etc/b" && [[ $(cat "$mp2/etc/b") == ok ]] || fail "not writable after unpause"
exit 0
