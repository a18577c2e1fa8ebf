#!/usr/bin/env bash
# checkpoint-runc.sh — issue 6 point 6: a real runc container end to end.
#
# A: a container on the mount (labelled io.stasis.freeze=runc:ID) writes
#    files, overwrites part of a base file, deletes one, unpacks a tarball,
#    and last writes a file without any sync; `stasis pause` freezes it and
#    snapshots; `runc delete`; `stasis umount`; `stasis mount NEWREF` at
#    another path; a new container there sees every change.
# B: a container counting in a loop (write cur.tmp, rename it to cur, append
#    to seq) is checkpointed while it runs: the snapshot is one point of its
#    sequence (seq is 1..k without a gap, cur is k or k+1), and an observer
#    on the host never sees it stand still for longer than the reported
#    stall (plus the longest pause it showed before the checkpoint).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"
need runc python3
need_static_busybox

IDS=()
on_exit_hook() {
        local id
        for id in "${IDS[@]}"; do runc delete --force "$id" >/dev/null 2>&1 || true; done
}

S=$T/store
rootfs=$T/rootfs
step "a busybox rootfs"
busybox_rootfs "$rootfs" var/data data log
echo "delete me" >"$rootfs/etc/obsolete"
rand_file "$rootfs/var/data/blob" $((3 * 1024 * 1024))
mkdir -p "$T/tarsrc/pkg/sub/deeper"
for i in $(seq 1 200); do echo "file $i" >"$T/tarsrc/pkg/sub/f$i"; done
rand_file "$T/tarsrc/pkg/sub/deeper/bin" 500000
ln -s sub/f1 "$T/tarsrc/pkg/link"
tar -C "$T/tarsrc" -cf "$rootfs/data/pkg.tar" pkg
st commit --store "$S" --tag busybox "$rootfs"

# bundle DIR ROOT SCRIPT: a runc bundle running sh -c SCRIPT on ROOT
bundle() {
        mkdir -p "$1"
        (cd "$1" && runc spec)
        jq --arg root "$(realpath "$2")" --arg script "$3" '
                .root = {path: $root, readonly: false}
                | .process.terminal = false
                | .process.args = ["/bin/sh", "-c", $script]
        ' "$1/config.json" >"$1/config.new" && mv "$1/config.new" "$1/config.json"
}
# start ID BUNDLE: runc run -d, or skip when this machine cannot run containers
start() {
        IDS+=("$1")
        if ! runc run -d --bundle "$2" "$1" </dev/null >"$T/$1.out" 2>"$T/$1.err"; then
                cat "$T/$1.err" >&2
                grep -qi cgroup "$T/$1.err" && skip "runc cannot run containers here: $(head -1 "$T/$1.err")"
                fail "runc run $1 failed"
        fi
}
wait_for() { # wait_for FILE SECONDS
        local i
        for ((i = 0; i < $2 * 20; i++)); do
                [[ -e $1 ]] && return 0
                sleep 0.05
        done
        return 1
}

id=stasis-ckr-$$
mp=$T/mnt
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$T/state" --label "io.stasis.freeze=runc:$id" busybox

step "A: a container writes, unpacks a tarball, then waits"
bundle "$T/b1" "$mp" 'set -e
echo hello > /root/hello
dd if=/dev/zero of=/var/data/blob bs=4096 count=1 seek=100 conv=notrunc 2>/dev/null
rm /etc/obsolete
mkdir -p /srv/a/b/c/d && echo leaf > /srv/a/b/c/d/leaf
mkdir /opt && cd /opt && tar -xf /data/pkg.tar
rm /opt/pkg/sub/f7 && mv /opt/pkg/sub/f8 /opt/pkg/renamed
echo "written last, never synced" > /root/last
touch /root/ready
while :; do sleep 1; done'
start "$id" "$T/b1"
wait_for "$mp/root/ready" 60 || fail "the container did not get ready: $(cat "$T/$id.err")"

step "A: stasis pause freezes it (runc pause) and snapshots"
"$STASIS" pause --tag g1 --json "$mp" >"$T/g1.json" || fail "stasis pause failed"
cat "$T/g1.json"
[[ $(jq -r .froze "$T/g1.json") == true && $(jq -r .frozen "$T/g1.json") == true ]] ||
        fail "the pause did not leave the container frozen"
[[ $(runc state "$id" | jq -r .status) == paused ]] || fail "runc does not say paused"
[[ $(jq -r .barrier_bytes "$T/g1.json") == 0 ]] || fail "data was read under the barrier"
d1=$(jq -r .digest "$T/g1.json")
runc delete --force "$id" >/dev/null
st umount "$mp"

step "A: the new snapshot at another path; a new container sees every change"
mp2=$T/mnt2
mount_snap "$mp2" --store "$S" --cache "$T/cache" --state "$T/state2" "$d1"
bundle "$T/b2" "$mp2" 'cat /root/hello /root/last /srv/a/b/c/d/leaf
[ -e /etc/obsolete ] && echo obsolete-is-back
sha256sum /var/data/blob /opt/pkg/sub/deeper/bin
cd /opt && find . | sort | sha256sum'
id2=stasis-ckr2-$$
IDS+=("$id2")
timeout 120 runc run --bundle "$T/b2" "$id2" </dev/null >"$T/c2.out" 2>"$T/c2.err" || fail "the second container failed: $(cat "$T/c2.err")"
cp "$rootfs/var/data/blob" "$T/blob"
dd if=/dev/zero of="$T/blob" bs=4096 count=1 seek=100 conv=notrunc status=none
mkdir -p "$T/want" && (cd "$T/want" && "$BUSYBOX" tar -xf "$rootfs/data/pkg.tar")
rm "$T/want/pkg/sub/f7" && mv "$T/want/pkg/sub/f8" "$T/want/pkg/renamed"
{
        echo hello
        echo "written last, never synced"
        echo leaf
        echo "$(sha256sum "$T/blob" | cut -d' ' -f1)  /var/data/blob"
        echo "$(sha256sum "$T/want/pkg/sub/deeper/bin" | cut -d' ' -f1)  /opt/pkg/sub/deeper/bin"
        (cd "$T/want" && find . | sort | sha256sum)
} >"$T/c2.want"
diff "$T/c2.want" "$T/c2.out" || fail "the new container sees other content than the paused one wrote"

step "B: a container counting in a loop on the resumed mount"
id3=stasis-ckr3-$$
st umount "$mp2"
mount_snap "$mp2" --store "$S" --cache "$T/cache" --state "$T/state2" --label "io.stasis.freeze=runc:$id3" "$d1"
bundle "$T/b3" "$mp2" 'i=0; : > /log/seq
while :; do i=$((i+1)); echo $i > /log/cur.tmp; mv /log/cur.tmp /log/cur; echo $i >> /log/seq; done'
start "$id3" "$T/b3"
wait_for "$mp2/log/cur" 60 || fail "the counter did not start"
# The observer: the time between changes of /log/cur, before and around
# the checkpoint.
python3 - "$mp2/log/cur" "$T/mark" >"$T/gaps" <<'EOF' &
import os, sys, time
path, mark = sys.argv[1], sys.argv[2]
last, t_last, before, during, end = None, time.monotonic(), 0.0, 0.0, None
while True:
    now = time.monotonic()
    try:
        v = open(path).read()
    except OSError:
        v = last
    if v != last:
        gap = now - t_last
        if os.path.exists(mark):
            during = max(during, gap)
            if end is None:
                end = now + 6
        else:
            before = max(before, gap)
        last, t_last = v, now
    if end is not None and now > end:
        break
    if os.path.exists(mark + ".done") and end is None:
        end = now + 1
    time.sleep(0.0005)
print("%d %d" % (before * 1e9, during * 1e9))
EOF
obs=$!
sleep 2
touch "$T/mark"
"$STASIS" checkpoint --tag g2 --json "$mp2" >"$T/g2.json" || fail "stasis checkpoint failed"
touch "$T/mark.done"
wait "$obs" || fail "the observer failed"
cat "$T/g2.json"
read -r before during <"$T/gaps"
stall=$(jq -r .stall_ns "$T/g2.json")
echo "longest pause seen: before $((before / 1000000)) ms, around the checkpoint $((during / 1000000)) ms; stall $((stall / 1000000)) ms"
[[ $(jq -r .froze "$T/g2.json") == true ]] || fail "the checkpoint did not freeze the container"
[[ $(runc state "$id3" | jq -r .status) == running ]] || fail "the container is not running after the checkpoint"
((during <= stall + before + 100000000)) ||
        fail "the container stood still $((during / 1000000)) ms, the reported stall is $((stall / 1000000)) ms"
runc delete --force "$id3" >/dev/null

step "B: the snapshot is one point of the counter's sequence"
st restore --store "$S" g2 "$T/r2"
python3 - "$T/r2/log" <<'EOF' || fail "the snapshot is no point of the counter's sequence"
import os, sys
d = sys.argv[1]
seq = open(os.path.join(d, "seq")).read().split("\n")
assert seq[-1] == "", "seq ends in a partial line: %r" % seq[-1]
seq = [int(x) for x in seq[:-1]]
k = len(seq)
assert seq == list(range(1, k + 1)), "seq has a gap"
cur = int(open(os.path.join(d, "cur")).read())
assert cur in (k, k + 1), "cur %d with seq at %d" % (cur, k)
print("consistent: seq 1..%d, cur %d" % (k, cur))
EOF
exit 0
