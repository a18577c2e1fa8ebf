#!/usr/bin/env bash
# wl-hostcrash.sh — the durability promise across a host crash (DESIGN.md,
# docs/writable-layer.md "Durability"): what fsync, fdatasync and fsyncdir
# acknowledged, and every snapshot a commit or checkpoint published, is
# there after the power goes out, not only after a kill -9 of stasisd.
#
# The state dir, the node cache and the store live on ext4 on a loop device
# over crashdisk (tests/tools/crashdisk.c): a disk whose writes stay in a
# volatile cache until a FLUSH. A "power cut" keeps 0%, 50% or all of the
# cached blocks (in any order) and hands back the disk image, which is then
# mounted again (ext4 replays its journal) and given to stasis. A missing
# fsync, a rename before its data is durable or a directory not fsync'd
# shows up as a loss. After the cuts under a writer, a commit and a
# checkpoint are each followed by a cut, and cuts land during checkpoints
# and during gc: the store must verify every time.
#   WL_HOSTCRASH_TRIALS      number of power cuts under the writer (default 9)
#   WL_HOSTCRASH_JOURNAL_MAX the daemon's journal compaction bound (default 16K)
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"
need python3 mkfs.ext4 losetup
CRASHDISK=$TESTS_BIN/crashdisk
[[ -x $CRASHDISK ]] || fail "no $CRASHDISK (built with the test helpers)"
losetup -f >/dev/null 2>&1 || skip "no free loop device"

trials=${WL_HOSTCRASH_TRIALS:-9}
# A small journal bound: online compactions (a new journal renamed over the
# old one) happen under the power cuts too.
export STASIS_JOURNAL_MAX=${WL_HOSTCRASH_JOURNAL_MAX:-16K}
S=$T/store
crash_base "$S"
mp=$T/mnt
FS=$T/fs # the crash disk's ext4
DISK_PID=
LOOP=

# disk_up IMAGE: a crash disk starting as IMAGE (not written), a loop device
# on it and its ext4 mounted on $FS. commit=60: nothing is made durable by
# ext4's periodic commit while a test runs, only by flushes someone asked for.
disk_up() {
        mkdir -p "$T/cd" "$FS"
        "$CRASHDISK" "$1" "$T/cd" 2>>"$T/crashdisk.log" &
        DISK_PID=$!
        for ((i = 0; i < 100; i++)); do
                [[ -e $T/cd/disk ]] && break
                kill -0 "$DISK_PID" 2>/dev/null || fail "crashdisk did not start: $(tail -3 "$T/crashdisk.log")"
                sleep 0.05
        done
        LOOP=$(losetup -f --show "$T/cd/disk") || fail "losetup on the crash disk failed"
        mount -t ext4 -o commit=60 "$LOOP" "$FS" || fail "mounting the crash disk's ext4 failed"
}
# disk_crash KEEP SEED OUT: the power goes out; the disk's image goes to OUT.
disk_crash() {
        echo "crash $1 $2 $3" >"$T/cd/ctl" || fail "the power cut failed: $(tail -3 "$T/crashdisk.log")"
}
# disk_down: unmount what disk_up set up (after a power cut, the ext4's last
# writes fail: the kernel logs I/O errors).
disk_down() {
        umount "$FS" 2>/dev/null || umount -l "$FS"
        losetup -d "$LOOP"
        # The detach waits for the last opener (udev probes a loop device
        # after each change), and the crash disk is busy until then.
        for ((i = 0; i < 100; i++)); do
                [[ -e /sys/block/${LOOP#/dev/}/loop/backing_file ]] || break
                sleep 0.05
        done
        fusermount3 -u "$T/cd"
        wait "$DISK_PID" || true
        LOOP= DISK_PID=
}
CLEANUP+=('[[ -z $LOOP ]] || { umount -l "$FS"; losetup -d "$LOOP"; fusermount3 -u -z "$T/cd"; }')
# power_cut KEEP SEED NAME [MP [PID]]: the power goes out, keeping KEEP% of
# the disk's cache (SEED chooses which). It takes with it the stasisd of MP
# (kill -9) and the process PID (waited for, its status in $cut_status:
# "returned" or "failed"; it must not hold a file of the mount when that
# goes), then the mount and the disk, which comes back up from what it held:
# $T/img.NAME, now $img (the image before is removed).
power_cut() {
        disk_crash "$1" "$2" "$T/img.$3"
        [[ -z ${4:-} ]] || kill -9 "$(daemon_pid "$4")" 2>/dev/null || true
        cut_status=
        if [[ -n ${5:-} ]]; then
                wait "$5" 2>/dev/null && cut_status=returned || cut_status=failed
        fi
        [[ -z ${4:-} ]] || st umount "$4"
        disk_down
        rm -f "$img"
        img=$T/img.$3
        disk_up "$img"
}
truncate -s 1G "$T/img.0"
mkfs.ext4 -q -F -b 4096 -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 "$T/img.0" ||
        fail "mkfs.ext4 failed"

# The harness itself, on ext4 without stasis: an overwrite in place that
# reached the disk (sync_file_range) but was never flushed is gone after a
# power cut that keeps nothing, there after one that keeps everything; an
# fsync'd file survives either. If this fails, the rest proves nothing.
step "the crash disk loses unflushed writes and keeps flushed ones"
for keep in 0 100; do
        disk_up "$T/img.0"
        python3 - "$FS" <<'PY'
import ctypes, os, sys
fs = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(os.path.join(fs, "probe"), os.O_RDWR | os.O_CREAT, 0o644)
os.write(fd, b"o" * 8192)
os.fsync(fd)
dfd = os.open(fs, os.O_RDONLY)
os.fsync(dfd)
os.pwrite(fd, b"n" * 8192, 0)
# SYNC_FILE_RANGE_WAIT_BEFORE | WRITE | WAIT_AFTER: to the disk, no flush
if libc.sync_file_range(fd, ctypes.c_int64(0), ctypes.c_int64(8192), 7) != 0:
    sys.exit("sync_file_range: %s" % os.strerror(ctypes.get_errno()))
PY
        disk_crash "$keep" 1 "$T/probe.$keep"
        disk_down
        disk_up "$T/probe.$keep"
        want=o
        ((keep == 0)) || want=n
        [[ $(head -c 8192 "$FS/probe" | tr -d "$want") == "" && $(stat -c %s "$FS/probe") == 8192 ]] ||
                fail "power cut keeping $keep%: the probe reads '$(head -c 16 "$FS/probe")...', not all '$want'"
        disk_down
        rm -f "$T/probe.$keep"
done

step "$trials power cuts under a writer that fsyncs, renames, links, unlinks and chmods"
cp "$T/src/base/big" "$T/big.model"
ack=$T/ack
: >"$ack"
img=$T/img.0
compactions=0
for ((trial = 1; trial <= trials; trial++)); do
        disk_up "$img"
        mount_snap "$mp" --store "$S" --cache "$FS/cache" --state "$FS/state" base
        python3 "$(dirname "$0")/wl_crash_writer.py" "$mp" "$ack" "$trial" 2>"$T/writer.err" &
        wpid=$!
        # (the log is on the crash disk too: count its lines before the cut)
        before=$(grep -c "journal compacted" "$FS/state/stasisd.log" || true)
        acked=$(wc -l <"$ack")
        for ((i = 0; i < 300 && $(wc -l <"$ack") < acked + 20; i++)); do
                kill -0 "$wpid" 2>/dev/null || break
                sleep 0.1
        done
        sleep "0.$((RANDOM % 9 + 1))$((RANDOM % 10))"
        keep=$(((trial % 3) * 50)) seed=$RANDOM
        compactions=$((compactions + $(grep -c "journal compacted" "$FS/state/stasisd.log" || true) - before))
        power_cut "$keep" "$seed" "$trial" "$mp" "$wpid"
        mount_snap "$mp" --store "$S" --cache "$FS/cache" --state "$FS/state" base
        out=$(python3 "$(dirname "$0")/wl_crash_check.py" "$mp" "$ack" "$T/big.model") || {
                echo "$out" | head -20 >&2
                fail "power cut $trial (keeping $keep% of the disk's cache, seed $seed): acknowledged data lost"
        }
        echo "   power cut $trial (keep $keep%, seed $seed): $out ($(tail -1 "$T/writer.err"))"
        cp "$mp/base/big" "$T/big.model" # an unacknowledged overwrite may have landed
        st umount "$mp"
        disk_down
done
echo "   online journal compactions in the runs cut short: $compactions"
((compactions > 0)) || fail "no online compaction happened under a power cut (STASIS_JOURNAL_MAX=$STASIS_JOURNAL_MAX)"

# An rm reaches the journal's page cache at once, and the file's data goes
# with it only once the journal is durable: were it removed at once, the
# state dir's filesystem could commit that removal with something else (here
# a file fsync'd beside the state dir) and the power cut would keep it
# without the journal's record: the file, fsync'd and never removed as far
# as any sync said, would come back as zeros.
step "an rm never synced, a commit of something else, a power cut: the file comes back whole"
disk_up "$img"
mount_snap "$mp" --store "$S" --cache "$FS/cache" --state "$FS/state3" base
rand_file "$T/x" 1234567
python3 - "$T/x" "$mp/x" <<'PY'
import os, sys
data = open(sys.argv[1], "rb").read()
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT, 0o644)
os.write(fd, data)
os.fsync(fd)
os.close(fd)
dfd = os.open(os.path.dirname(sys.argv[2]), os.O_RDONLY)
os.fsync(dfd)
PY
ino=$(stat -c %i "$mp/x")
rm "$mp/x"
[[ -e $FS/state3/layers/1/data/$ino ]] || fail "the data file went before the journal said so durably"
python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644); os.write(fd, b"x"); os.fsync(fd)' "$FS/other"
power_cut 0 9 r "$mp"
mount_snap "$mp" --store "$S" --cache "$FS/cache" --state "$FS/state3" base
cmp "$T/x" "$mp/x" || fail "a file fsync'd, then removed without a sync, came back with other bytes"
step "removed again: its data file goes within a second or two (one journal sync for all)"
rm "$mp/x"
for ((i = 0; i < 50; i++)); do
        [[ -e $FS/state3/layers/1/data/$ino ]] || break
        sleep 0.1
done
[[ ! -e $FS/state3/layers/1/data/$ino ]] || fail "the data file of a removed file is still there after 5 s"
st umount "$mp"
disk_down

# A write into a base file's chunk copies the chunk up (the base's bytes
# around the write) and marks it present in the chunk map. Nothing orders the
# kernel's writeback of the two files: should the map reach the disk first
# (the test writes it back itself, as the flusher may) and the power go,
# the chunk must not read as zeros where the base had bytes nobody
# overwrote. So the copied chunk is made durable before its map byte.
step "a write into a base chunk, its map written back first, a power cut: the base's bytes stand"
disk_up "$img"
mount_snap "$mp" --store "$S" --cache "$FS/cache" --state "$FS/state4" base
ino=$(stat -c %i "$mp/base/big")
python3 - "$mp/base/big" "$FS/state4/layers/1/data/$ino.map" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
os.pwrite(fd, b"f" * 4096, 0)  # chunk 0, synced: the file is in the layer
os.fsync(fd)
os.pwrite(fd, b"w" * 4096, 100000)  # chunk 1, not synced
os.close(fd)
mfd = os.open(sys.argv[2], os.O_RDONLY)  # the map reaches the disk first
os.fdatasync(mfd)
PY
power_cut 0 10 m "$mp"
mount_snap "$mp" --store "$S" --cache "$FS/cache" --state "$FS/state4" base
python3 - "$mp/base/big" "$T/src/base/big" <<'PY' || fail "a base chunk's bytes changed where nothing wrote"
import sys
got, want = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
if got[:4096] != b"f" * 4096:
    sys.exit("the synced write to chunk 0 is lost")
mid = got[100000:104096]
if mid != want[100000:104096] and mid != b"w" * 4096:
    sys.exit("the unsynced 4 KiB read neither old nor new")
if got[4096:100000] != want[4096:100000] or got[104096:] != want[104096:]:
    bad = next(i for i in range(4096, len(want)) if (i < 100000 or i >= 104096) and got[i] != want[i])
    sys.exit("byte %d differs from the base (%r), and no write went there" % (bad, got[bad:bad + 8]))
PY
st umount "$mp"
disk_down

step "a commit that returned is there after a power cut right after it"
mkdir -p "$T/src2/d"
rand_file "$T/src2/d/one" $((5 * 1024 * 1024 + 3))
rand_file "$T/src2/two" 12345
ln -s d/one "$T/src2/link"
disk_up "$img"
st commit --store "$FS/store" --tag c1 "$T/src2"
power_cut 0 7 c
st verify --store "$FS/store" c1
mount_snap "$T/mc" --store "$FS/store" --cache "$FS/cache" c1
same_tree "$T/src2" "$T/mc" --no-atime
st umount "$T/mc"

step "a checkpoint that returned is there after a power cut right after it"
mount_snap "$mp" --store "$FS/store" --cache "$FS/cache" --state "$FS/state2" c1
rand_file "$mp/unsynced" 777777 # never fsync'd: the checkpoint must hold it
echo changed >"$mp/two"
rm "$mp/link"
k1=$(st checkpoint --tag k1 "$mp")
"$TREEDIGEST" --list --no-atime "$mp" >"$T/k1.list"
power_cut 0 8 k "$mp"
st verify --store "$FS/store" k1
mount_snap "$T/mk" --store "$FS/store" --cache "$FS/cache" k1
"$TREEDIGEST" --list --no-atime "$T/mk" >"$T/mk.list"
diff -u "$T/k1.list" "$T/mk.list" >&2 || fail "the checkpoint read after the power cut differs from the mount it was taken of"
st umount "$T/mk"
# ...and the mount it was taken of comes back (its state dir was made by
# that mount and never fsync'd by the sandbox: the checkpoint made its HEAD
# durable), with the checkpoint as the parent of its next one.
[[ $(cat "$FS/state2/last-checkpoint") == "$k1" ]] ||
        fail "the state dir's last checkpoint is '$(cat "$FS/state2/last-checkpoint" 2>&1)', not $k1"
disk_down

# A snapshot publishes atomically: a power cut in the middle of a
# checkpoint leaves a store whose every snapshot verifies (the new one
# whole or not there) and a state dir that mounts again.
step "power cuts during a checkpoint: the store verifies, the mount comes back"
for k in 1 2 3 4; do
        disk_up "$img"
        mount_snap "$mp" --store "$FS/store" --cache "$FS/cache" --state "$FS/state2" c1
        rand_file "$mp/more$k" $((48 * 1024 * 1024))
        "$STASIS" checkpoint --tag p$k "$mp" >"$T/cp.out" 2>&1 &
        cpid=$!
        sleep "0.$((RANDOM % 4))$((RANDOM % 10))" # it takes ~0.1-0.3 s: mostly cut short
        keep=$((k % 3 * 50)) seed=$RANDOM
        power_cut "$keep" "$seed" "p$k" "$mp" "$cpid"
        st verify --store "$FS/store" >"$T/verify.out" ||
                fail "power cut $k during a checkpoint (keep $keep%, seed $seed): the store does not verify"
        if [[ $cut_status == returned ]]; then
                st verify --store "$FS/store" p$k >/dev/null
        fi
        mount_snap "$mp" --store "$FS/store" --cache "$FS/cache" --state "$FS/state2" c1
        cmp "$mp/d/one" "$T/src2/d/one" || fail "power cut $k: the remount reads its base wrong"
        echo "   power cut $k (keep $keep%, seed $seed): the checkpoint $cut_status; $(cat "$T/verify.out")"
        st umount "$mp"
        disk_down
done

# gc stores the smaller index before it deletes a blob: a power cut at any
# moment leaves an index whose every snapshot is whole, tags included.
step "power cuts during gc: the store verifies, the tagged snapshots stay"
for k in 1 2; do
        disk_up "$img"
        # (the checkpoints cut short above left packs no snapshot names)
        "$STASIS" gc --store "$FS/store" --grace 0 >"$T/gc.out" 2>&1 &
        gpid=$!
        sleep "0.00$((RANDOM % 10))"
        keep=$((k * 50)) seed=$RANDOM
        power_cut "$keep" "$seed" "g$k" "" "$gpid"
        st verify --store "$FS/store" >"$T/verify.out" ||
                fail "power cut $k during gc (keep $keep%, seed $seed): the store does not verify"
        for t in c1 k1; do
                st verify --store "$FS/store" "$t" >/dev/null
        done
        echo "   power cut $k (keep $keep%, seed $seed): gc $cut_status ($(tail -1 "$T/gc.out")); $(cat "$T/verify.out")"
        disk_down
done
rm -f "$img"
