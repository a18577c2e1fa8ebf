#!/usr/bin/env bash
# wl-many-open.sh — a sandbox with thousands of written files open at once
# (a build, a database). stasisd holds one descriptor per open written file
# (its data file); started from a shell with the usual soft limit of 1024
# open files, the writes of the 1,000th file failed with EMFILE at
# writeback and were lost, reported only by fsync. stasisd raises its soft
# limit to the hard one: 3,000 files written and fsynced while all open,
# every fsync succeeds and every byte reads back. Then the same with the
# hard limit at 1024 too: past its cap of kept descriptors stasisd opens a
# data file per request instead of failing.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"
need python3

hard=$(ulimit -Hn)
[[ $hard == unlimited ]] || ((hard >= 8192)) || skip "the hard open-file limit is $hard (< 8192)"

step "mount from a shell whose soft limit is 1024"
ulimit -Sn 1024
mp=$T/mnt
mount_snap "$mp" --store "$T/store" --cache "$T/cache" --state "$T/state" --empty
ulimit -Sn "$hard"
pid=$(daemon_pid "$mp")
read -r soft max < <(awk '/^Max open files/ {print $4, $5}' "/proc/$pid/limits")
echo "   stasisd's open-file limit: soft $soft, hard $max"
[[ $soft == "$max" ]] || fail "stasisd kept a soft limit of $soft (hard $max)"

# write_many MP: 3,000 files written and fsynced while all open, then read.
write_many() {
        python3 - "$1" <<'PY' || fail "writes to many open files on $1"
import os, sys
mp = sys.argv[1]
fds = []
for i in range(3000):
    fd = os.open("%s/f%05d" % (mp, i), os.O_CREAT | os.O_RDWR, 0o644)
    os.write(fd, b"%05d" % i * 200)
    fds.append(fd)
for i, fd in enumerate(fds):
    try:
        os.fsync(fd)
    except OSError as e:
        sys.exit("fsync of f%05d: %s" % (i, e))
for fd in fds:
    os.close(fd)
for i in range(3000):
    with open("%s/f%05d" % (mp, i), "rb") as f:
        if f.read() != b"%05d" % i * 200:
            sys.exit("f%05d reads back wrong" % i)
PY
}

step "3,000 files written and fsynced while all open"
write_many "$mp"

step "the same with stasisd's hard limit at 1024 too"
mp2=$T/mnt2
mkdir -p "$mp2"
MOUNTS+=("$(realpath "$mp2")")
(ulimit -n 1024 && "$STASIS" mount --store "$T/store" --cache "$T/cache" --state "$T/state2" --empty "$mp2") ||
        fail "mount with a hard limit of 1024"
pid=$(daemon_pid "$mp2")
read -r soft max < <(awk '/^Max open files/ {print $4, $5}' "/proc/$pid/limits")
[[ $soft == 1024 && $max == 1024 ]] || fail "stasisd's limits are $soft/$max, want 1024/1024"
write_many "$mp2"
exit 0
