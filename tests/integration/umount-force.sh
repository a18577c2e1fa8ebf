#!/usr/bin/env bash
# umount-force.sh — `stasis umount --force` on a daemon that does not answer
# (stopped with SIGSTOP), with a file held open on the mount and a reader
# waiting for stasisd: plain umount refuses (busy) and does not hang;
# --force returns within seconds, the waiting reader fails at once, a write
# held open cannot be fsync'd, the daemon and its registry entry are gone; a remount
# of the same state has every fsync'd byte.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"

S=$T/store
src=$T/src
mkdir -p "$src"
rand_file "$src/f" 1000000
st commit --store "$S" --tag base "$src"
mp=$T/mnt
state=$T/state

# A stopped daemon, or a holder of its connection, must not outlive a failed
# test: its mount would hang the cleanup. _mount_on_exit reads the status
# from $? (as in mount-lib.bash, not through a failing command under set -e).
WEDGED=
holder=
cleanup() {
        local rc=$?
        [[ -z $WEDGED ]] || kill -9 "$WEDGED" 2>/dev/null || true
        [[ -z $holder ]] || kill -9 "$holder" 2>/dev/null || true
        if (exit $rc); then _mount_on_exit; else _mount_on_exit; fi
}
trap cleanup EXIT

gone() { # gone PID: exited (a zombie counts)
        [[ ! -e /proc/$1 ]] || grep -q '^State:[[:space:]]*[ZX]' "/proc/$1/status" 2>/dev/null
}

# waiting_reader NAME: in the background, a lookup of NAME on the mount,
# which needs stasisd; "rc N" into $T/reader.out when it returns. Sets reader.
waiting_reader() {
        rm -f "$T/reader.out"
        (
                rc=0
                stat "$mp/$1" >/dev/null 2>&1 || rc=$?
                echo "rc $rc" >"$T/reader.out"
        ) &
        reader=$!
}

# reader_failed: the waiting reader came back with an error within 5 s.
reader_failed() {
        for _ in $(seq 50); do [[ -s $T/reader.out ]] && break; sleep 0.1; done
        [[ $(cat "$T/reader.out" 2>/dev/null) == "rc 1" ]]
}

mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$state" base
printf 'durable\n' | dd of="$mp/kept" conv=fsync status=none
pid=$(daemon_pid "$mp")
exec 9<>"$mp/f" # the mount is busy
kill -STOP "$pid"
WEDGED=$pid
waiting_reader not-there
sleep 0.5
kill -0 "$reader" 2>/dev/null || fail "the reader did not wait for the stopped daemon"

step "plain umount: busy, exit 1, no hang, still mounted"
expect_exit 1 timeout 60 "$STASIS" umount "$mp"
grep -q 'busy' "$T/err" || { cat "$T/err" >&2; fail "umount of a busy mount does not say busy"; }
is_mounted "$mp" || fail "a refused umount unmounted"

step "umount --force: done in seconds, the waiting reader fails, the daemon is gone"
t0=$(date +%s)
expect_exit 0 timeout 30 "$STASIS" umount --force "$mp"
echo "   took $(($(date +%s) - t0)) s"
reader_failed || fail "the waiting reader did not fail: $(cat "$T/reader.out" 2>/dev/null)"
wait "$reader" || true
! is_mounted "$mp" || fail "still mounted after umount --force"
for _ in $(seq 50); do gone "$pid" && break; sleep 0.1; done
gone "$pid" || fail "stasisd $pid still runs after umount --force"
WEDGED=
[[ -z $(ls "$STASIS_RUN_DIR/mounts") ]] || fail "registry entry left: $(ls "$STASIS_RUN_DIR/mounts")"
# what the page cache holds may still be read, but nothing reaches stasisd:
# a write held open cannot be made durable
if printf x >&9 2>/dev/null && python3 -c 'import os; os.fsync(9)' 2>/dev/null; then
        fail "a write through a file held open was fsync'd after the connection was aborted"
fi
exec 9<&-

step "remount of the same state: the fsync'd file and the base are there"
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$state" base
[[ $(cat "$mp/kept") == durable ]] || fail "the fsync'd file is lost after umount --force"
cmp -s "$src/f" "$mp/f" || fail "f reads back wrong after the remount"
st umount "$mp"

step "--force on a healthy mount: unmounted, the daemon exits"
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$state" base
pid=$(daemon_pid "$mp")
expect_exit 0 timeout 30 "$STASIS" umount --force "$mp"
! is_mounted "$mp" || fail "still mounted"
for _ in $(seq 50); do gone "$pid" && break; sleep 0.1; done
gone "$pid" || fail "stasisd $pid still runs"

step "a mount nobody answers (the daemon killed, its connection held elsewhere): only --force frees the waiting reader"
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$state" base
pid=$(daemon_pid "$mp")
# Another process takes copies of stasisd's /dev/fuse descriptors
# (pidfd_getfd), as a thread of a zombie daemon stuck on its own mount would
# keep the connection: it stays open after the daemon dies, and nobody reads.
python3 - "$pid" "$T/holder.ready" <<'PY' &
import ctypes, os, sys, time
pid, ready = int(sys.argv[1]), sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
pidfd = os.pidfd_open(pid)
held = []
for fd in os.listdir(f"/proc/{pid}/fd"):
    try:
        if os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/fuse":
            got = libc.syscall(438, pidfd, int(fd), 0)  # pidfd_getfd
            if got < 0:
                sys.exit(f"pidfd_getfd: {os.strerror(ctypes.get_errno())}")
            held.append(got)
    except FileNotFoundError:
        pass
if not held:
    sys.exit("no /dev/fuse descriptor in stasisd")
open(ready, "w").write(f"{len(held)}\n")
time.sleep(600)
PY
holder=$!
for _ in $(seq 100); do [[ -s $T/holder.ready ]] && break; sleep 0.05; done
[[ -s $T/holder.ready ]] || fail "the holder did not take stasisd's /dev/fuse descriptors"
kill -9 "$pid"
for _ in $(seq 50); do gone "$pid" && break; sleep 0.1; done
waiting_reader not-there-either
sleep 1
kill -0 "$reader" 2>/dev/null || fail "the reader did not wait on the orphaned connection"
expect_exit 0 timeout 30 "$STASIS" umount --force "$mp"
reader_failed || fail "the reader still waits after umount --force"
wait "$reader" || true
! is_mounted "$mp" || fail "still mounted after umount --force"
kill -9 "$holder" 2>/dev/null || true
wait "$holder" 2>/dev/null || true
