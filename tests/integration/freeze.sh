#!/usr/bin/env bash
# freeze.sh — issue 6: POST /api/v1/freeze and /api/v1/unfreeze with a real
# cgroup v2 (io.stasis.freeze=cgroup:PATH). A child cgroup holds a shell
# loop that counts; frozen, cgroup.events says "frozen 1" and the count
# stands still; thawed, it moves again. Both calls are idempotent, a mount
# without the label answers 409 NoFreezer, and unmounting thaws a sandbox
# left frozen; so does `stasis umount` of a mount whose daemon was killed
# -9 while it held the sandbox frozen, or the next daemon on its state dir.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"
need curl

CG2=$(awk '$9 == "cgroup2" {print $5; exit}' /proc/self/mountinfo)
[[ -n $CG2 && -w $CG2 ]] || skip "no writable cgroup2 mount"
CG=$CG2/stasis-freeze-test-$$
mkdir "$CG" 2>/dev/null || skip "cannot create a cgroup under $CG2"
[[ -f $CG/cgroup.freeze ]] || { rmdir "$CG"; skip "$CG2 has no cgroup.freeze (kernel < 5.2)"; }
LOOP_PID=
on_exit_hook() {
        [[ -f $CG/cgroup.freeze ]] && echo 0 >"$CG/cgroup.freeze"
        [[ -n $LOOP_PID ]] && kill -9 "$LOOP_PID" 2>/dev/null
        local p
        for p in $(cat "$CG/cgroup.procs" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
        sleep 0.2
        rmdir "$CG" 2>/dev/null || true
}

api() { # api SOCK PATH: the HTTP status; the body in $T/body
        curl -s -o "$T/body" -w '%{http_code}' --unix-socket "$1" -X POST \
                -H "Content-Type: application/json" -d '{}' "http://localhost$2" || echo 000
}
frozen() { grep -q '^frozen 1$' "$CG/cgroup.events"; }

step "a counting loop in $CG"
sh -c 'echo $$ >'"$CG"'/cgroup.procs; i=0; while :; do i=$((i+1)); echo $i >'"$T"'/count.tmp; mv '"$T"'/count.tmp '"$T"'/count; sleep 0.01; done' </dev/null >/dev/null 2>&1 &
LOOP_PID=$!
for _ in $(seq 100); do [[ -s $T/count ]] && break; sleep 0.05; done
[[ -s $T/count ]] || fail "the loop does not count"

mp=$T/mnt
mount_snap "$mp" --empty --state "$T/state" --cache "$T/cache" --label "io.stasis.freeze=cgroup:$CG"
sock=$(jq -r .socket "$(registry_entry "$mp")")

step "freeze: 200, method cgroup2, cgroup.events frozen 1, the loop stands still"
code=$(api "$sock" /api/v1/freeze)
[[ $code == 200 ]] || fail "freeze answered $code: $(cat "$T/body")"
[[ $(jq -r .frozen "$T/body") == true && $(jq -r .method "$T/body") == cgroup2 ]] ||
        fail "freeze said $(cat "$T/body")"
frozen || fail "cgroup.events does not say frozen 1: $(cat "$CG/cgroup.events")"
c1=$(cat "$T/count")
sleep 0.5
c2=$(cat "$T/count")
[[ $c1 == "$c2" ]] || fail "the frozen loop went on counting ($c1 -> $c2)"
code=$(api "$sock" /api/v1/freeze)
[[ $code == 200 ]] || fail "a second freeze answered $code: $(cat "$T/body")"
frozen || fail "a second freeze thawed"

step "unfreeze: 200, frozen 0, the loop counts again; twice"
code=$(api "$sock" /api/v1/unfreeze)
[[ $code == 200 && $(jq -r .frozen "$T/body") == false ]] || fail "unfreeze answered $code: $(cat "$T/body")"
frozen && fail "cgroup.events still says frozen 1"
sleep 0.3
c3=$(cat "$T/count")
((c3 > c2)) || fail "the thawed loop does not count ($c2 -> $c3)"
code=$(api "$sock" /api/v1/unfreeze)
[[ $code == 200 ]] || fail "a second unfreeze answered $code: $(cat "$T/body")"

step "errors: unknown endpoint 404 NotFound"
code=$(api "$sock" /api/v1/nosuch)
[[ $code == 404 && $(jq -r .reason "$T/body") == NotFound ]] || fail "/nosuch answered $code: $(cat "$T/body")"

step "a mount without the label: 409 NoFreezer"
mp2=$T/mnt2
mount_snap "$mp2" --empty --state "$T/state2" --cache "$T/cache"
sock2=$(jq -r .socket "$(registry_entry "$mp2")")
code=$(api "$sock2" /api/v1/freeze)
[[ $code == 409 && $(jq -r .reason "$T/body") == NoFreezer ]] || fail "freeze without a label answered $code: $(cat "$T/body")"
[[ -n $(jq -r .error "$T/body") ]] || fail "no error sentence: $(cat "$T/body")"
st umount "$mp2"

step "unmount thaws a sandbox left frozen"
code=$(api "$sock" /api/v1/freeze)
[[ $code == 200 ]] || fail "freeze answered $code"
frozen || fail "not frozen"
st umount "$mp"
frozen && fail "the sandbox is still frozen after the unmount"
c4=$(cat "$T/count")
sleep 0.3
(($(cat "$T/count") > c4)) || fail "the loop does not count after the unmount"

# frozen_then_killed MP: mount MP on $T/state with the freeze label, freeze,
# kill -9 the daemon and wait until it is gone.
frozen_then_killed() {
        local pid
        mount_snap "$1" --empty --state "$T/state" --cache "$T/cache" --label "io.stasis.freeze=cgroup:$CG"
        code=$(api "$(jq -r .socket "$(registry_entry "$1")")" /api/v1/freeze)
        [[ $code == 200 ]] || fail "freeze answered $code"
        pid=$(daemon_pid "$1")
        kill -9 "$pid"
        for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        kill -0 "$pid" 2>/dev/null && fail "stasisd $pid outlived kill -9"
        frozen || fail "the sandbox is not frozen after the kill (the test needs it so)"
        [[ -f $T/state/sandbox-frozen ]] || fail "no STATE/sandbox-frozen while frozen"
}

step "kill -9 of a stasisd holding the sandbox frozen: stasis umount thaws it"
frozen_then_killed "$mp"
st umount "$mp"
frozen && fail "stasis umount of the dead mount left the sandbox frozen"
[[ ! -e $T/state/sandbox-frozen ]] || fail "STATE/sandbox-frozen is left after the thaw"

step "... and so does the next stasisd on the state dir (another mountpoint)"
frozen_then_killed "$mp"
mount_snap "$mp2" --empty --state "$T/state" --cache "$T/cache"
frozen && fail "the next stasisd on the state dir left the sandbox frozen"
st umount "$mp2"
st umount "$mp"
exit 0
