#!/usr/bin/env bash
# wl-enospc.sh — a full state directory. The writable layer lives on a
# 48 MiB tmpfs; the sandbox fills it. What a local filesystem does, the
# mount must do too:
#   - writes, creates and mkdir fail with ENOSPC (never EIO), and a create
#     that failed leaves no name behind;
#   - the mount keeps serving: what was written before reads back, rm works
#     on the full disk, and once space is freed writes succeed again;
#   - nothing acknowledged is lost: a remount (also one made while the disk
#     is full, when the journal cannot be compacted) shows the same tree;
#   - a chunk whose map byte could not be written (the data write fit in
#     preallocated blocks, the map's new block did not) is not taken as
#     present: a later write to it is kept across a remount.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"
need python3 fallocate
export PYTHONPATH=$(cd "$(dirname "$0")" && pwd) # wl_fill.py

small=$T/small
tmpfs_dir "$small" 48m

S=$T/store
mkdir -p "$T/src"
step "a base with a sparse 512 MiB file (its chunk map spans two pages)"
printf 'hello\n' >"$T/src/hello"
st commit --store "$S" --tag seed "$T/src" # for the chunk size
cs=$("$STASIS" inspect --store "$S" --json seed | jq -r .chunk_size)
[[ $cs =~ ^[0-9]+$ ]] || fail "no chunk size from inspect"
truncate -s $((8192 * cs)) "$T/src/big"
st commit --store "$S" --tag base "$T/src"
far=$((6000 * cs)) # chunk 6000: its map byte is past the map file's first 4 KiB

mp=$T/mnt
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$small/state" base
log=$small/state/stasisd.log

step "blocks for chunk 6000 of big allocated ahead (fallocate -n), then the disk filled"
fallocate -n -o "$far" -l "$cs" "$mp/big"
mkdir "$mp/keep"
for i in 1 2 3; do
        head -c $((1024 * 1024)) /dev/urandom >"$T/keep$i"
        cp "$T/keep$i" "$mp/keep/f$i"
done
sync -f "$mp/keep/f1"
python3 - "$mp" <<'PY' || fail "filling the disk"
import errno, os, sys
mp = sys.argv[1]
os.mkdir(mp + "/fill")
block = os.urandom(1 << 20)
for i in range(1000):
    p = "%s/fill/%04d" % (mp, i)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            sys.exit("create %s: %s (want ENOSPC)" % (p, e))
        break
    try:
        os.write(fd, block)
        os.fsync(fd)
        os.close(fd)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            sys.exit("write %s: %s (want ENOSPC)" % (p, e))
        try:
            os.close(fd)
        except OSError:
            pass
        break
else:
    sys.exit("1000 MiB written to a 48 MiB tmpfs")
print("   full after %d MiB" % i)
PY

step "on the full disk: creates and mkdir fail with ENOSPC and leave nothing"
python3 - "$mp" <<'PY' || fail "metadata changes on a full disk"
import errno, os, sys
mp = sys.argv[1]
for i in range(200000):
    p = "%s/e%06d" % (mp, i)
    try:
        os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except OSError as e:
        if e.errno != errno.ENOSPC:
            sys.exit("create %s: %s (want ENOSPC)" % (p, e))
        if os.path.lexists(p):
            sys.exit("a create that failed left %s" % p)
        break
else:
    sys.exit("200000 empty files created on a full disk")
print("   %d empty files created, then ENOSPC" % i)
for name in ("d", "x"):
    p = mp + "/nospace-" + name
    try:
        os.mkdir(p) if name == "d" else os.symlink("target", p)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            sys.exit("%s: %s (want ENOSPC)" % (p, e))
        if os.path.lexists(p):
            sys.exit("a failed mkdir/symlink left %s" % p)
    else:
        sys.exit("%s made on a full disk" % p)
PY
for i in 1 2 3; do cmp "$T/keep$i" "$mp/keep/f$i" || fail "keep/f$i reads back wrong on the full disk"; done
cmp <(printf 'hello\n') "$mp/hello" || fail "a base file reads back wrong on the full disk"

step "a write whose map byte cannot be written fails, and is not taken as present"
python3 - "$mp/big" "$far" <<'PY' || fail "the write into chunk 6000"
import errno, mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_DIRECT)
buf = mmap.mmap(-1, 4096)
buf.write(b"A" * 4096)
try:
    os.pwrite(fd, buf, int(sys.argv[2]))
except OSError as e:
    if e.errno != errno.ENOSPC:
        sys.exit("pwrite: %s (want ENOSPC)" % e)
    print("   ENOSPC")
else:
    print("   written (its map page was there after all)")
PY
grep -q "refusing further changes" "$log" && fail "stasisd stopped taking changes: $(grep refusing "$log")"

step "rm on the full disk, then writes work again"
rm -rf "$mp/fill"
python3 - "$mp" <<'PY' || fail "creates after rm"
import os, sys
mp = sys.argv[1]
for i in range(200000):
    p = "%s/e%06d" % (mp, i)
    if os.path.lexists(p):
        os.unlink(p)
with open(mp + "/after", "wb") as f:
    f.write(os.urandom(4 << 20))
    f.flush()
    os.fsync(f.fileno())
PY
python3 - "$mp/big" "$far" <<'PY' || fail "the second write into chunk 6000"
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_DIRECT)
buf = mmap.mmap(-1, 4096)
buf.write(b"B" * 4096)
os.pwrite(fd, buf, int(sys.argv[2]) + 4096)
os.fsync(fd)
PY
"$TREEDIGEST" --list "$mp" >"$T/before"

step "remount: the same tree, chunk 6000 as written"
st umount "$mp"
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$small/state" base
"$TREEDIGEST" --list "$mp" >"$T/after"
diff -u "$T/before" "$T/after" | head -40 >&2 || fail "the tree changed across the remount"
python3 - "$mp/big" "$far" <<'PY' || fail "chunk 6000 after the remount"
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
off = int(sys.argv[2])
got = os.pread(fd, 8192, off)
if got[4096:] != b"B" * 4096:
    sys.exit("the acknowledged write at chunk 6000 + 4 KiB is gone (%r...)" % got[4096:4104])
if got[:4096] not in (b"\0" * 4096, b"A" * 4096):
    sys.exit("chunk 6000's first page is neither the base's nor the write's")
PY

step "filled again, then remounted while full (the journal cannot be compacted)"
python3 - "$mp" <<'PY' || fail "filling the disk again"
import errno, os, sys
import wl_fill
mp = sys.argv[1]
wl_fill.fill(mp, "fill", drop_failed=True)
for i in range(200000):
    try:
        os.mkdir("%s/d%06d" % (mp, i))
    except OSError as e:
        if e.errno != errno.ENOSPC:
            sys.exit("mkdir: %s (want ENOSPC)" % e)
        break
PY
"$TREEDIGEST" --list "$mp" >"$T/before"
st umount "$mp"
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$small/state" base
"$TREEDIGEST" --list "$mp" >"$T/after"
diff -u "$T/before" "$T/after" | head -40 >&2 || fail "the tree changed across the remount on a full disk"
grep -q "journal not compacted" "$log" || fail "the remount on a full disk compacted its journal (the test wants it not to fit)"

# A host crash can leave a torn record at the journal's end. A mount on a
# full disk cannot compact the journal away, so it must cut it at the
# tear itself: appended after the tear, the next changes would be lost at
# the next replay, which stops there, fsync'd or not.
step "a torn journal tail on a full disk: cut before anything is appended"
st umount "$mp"
printf 'a torn record: not a transaction, 40 bytes' >>"$small/state/layers/1/journal" ||
        fail "appending to the journal (its preallocated room)"
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$small/state" base
grep -q "journal torn at byte" "$log" || fail "the torn tail was not seen"
chmod 600 "$mp/keep/f2"
python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)' "$mp/keep/f2"
kill -9 "$(daemon_pid "$mp")"
st umount "$mp"
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$small/state" base
[[ $(stat -c %a "$mp/keep/f2") == 600 ]] ||
        fail "a chmod fsync'd after the torn tail is lost (mode $(stat -c %a "$mp/keep/f2"))"
chmod 644 "$mp/keep/f2"
rm -f "$mp"/fill*
rmdir "$mp"/d[0-9]*
echo ok >"$mp/last" || fail "a write after freeing space"
grep -q "refusing further changes" "$log" && fail "stasisd stopped taking changes: $(grep refusing "$log")"
for i in 1 2 3; do cmp "$T/keep$i" "$mp/keep/f$i" || fail "keep/f$i reads back wrong at the end"; done

# A write by another user to a setuid file clears the bit (a journaled mode
# change): with no room left for that change, the write must fail with the
# file as it was, not with its bytes written and the bit kept. (On 6.18 the
# kernel's file_remove_privs() sends a SETATTR before such a WRITE, and that
# fails first; stasisd clears the bit only after the WRITE's bytes.)
step "no journal room left: a write that must clear setuid fails before its bytes land"
head -c 8192 /dev/zero | tr '\0' A >"$mp/suid"
chmod 4777 "$mp/suid"
sync -f "$mp/suid"
python3 - "$mp" <<'PY' || fail "the write to a setuid file with no journal room"
import errno, mmap, os, sys
import wl_fill
mp = sys.argv[1]
wl_fill.fill(mp, "refill")  # the disk full again
for i in range(400000):  # then the room kept for removals and mode changes
    try:
        os.chmod(mp + "/last", 0o600 if i % 2 else 0o644)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            sys.exit("chmod: %s (want ENOSPC)" % e)
        break
else:
    sys.exit("400000 chmods on a full disk")
print("   ENOSPC after %d chmods" % i)
pid = os.fork()
if pid == 0:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    fd = os.open(mp + "/suid", os.O_WRONLY)
    try:
        os.pwrite(fd, b"B" * 4096, 0)
    except OSError as e:
        os._exit(0 if e.errno == errno.ENOSPC else 2)
    os._exit(3)
_, st = os.waitpid(pid, 0)
code = os.waitstatus_to_exitcode(st)
if code == 3:
    print("   the write succeeded (there was room after all)")
elif code != 0:
    sys.exit("the write failed, but not with ENOSPC")
mode = os.stat(mp + "/suid").st_mode & 0o7777
# What stasisd holds, not the kernel's cache of it: O_DIRECT reads reach it.
fd = os.open(mp + "/suid", os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 8192)
data = buf[:os.readv(fd, [buf])]
os.close(fd)
if code == 0 and (mode != 0o4777 or data != b"A" * 8192):
    sys.exit("a failed write left mode %o and %s" % (mode, "its bytes" if data != b"A" * 8192 else "the old bytes"))
if code == 3 and (mode & 0o6000 or data[:4096] != b"B" * 4096):
    sys.exit("a write that succeeded left mode %o" % mode)
PY

# The chmods above used every byte of journal room a change may use. The
# last of it is kept for removals alone: rm must still work, and the space
# it frees must be there for the very next write: not a second later, when
# the removed files' data files go (they wait for the journal to be synced),
# nor when the kernel forgets the inodes (here never, while O_PATH
# descriptors hold them; a reopen through /proc then gets ESTALE, not bytes).
step "with the room for changes used up, rm still works and its space is there at once"
python3 - "$mp" <<'PY' || fail "rm after the room for changes ran out"
import errno, os, sys
mp = sys.argv[1]
names = sorted(n for n in os.listdir(mp) if n.startswith("refill"))
if not names:
    sys.exit("no refill files (the disk was never full?)")
held = [os.open("%s/%s" % (mp, n), os.O_PATH) for n in names]
for n in names:
    os.unlink("%s/%s" % (mp, n))
with open(mp + "/after-rm", "wb") as f:
    f.write(os.urandom(4 << 20))
    f.flush()
    os.fsync(f.fileno())
try:
    os.open("/proc/self/fd/%d" % held[0], os.O_RDONLY)
except OSError as e:
    if e.errno != errno.ESTALE:
        sys.exit("reopening a removed file: %s (want ESTALE)" % e)
else:
    sys.exit("a removed file whose data went was reopened")
for fd in held:
    os.close(fd)
print("   %d files removed, then 4 MiB written" % len(names))
PY

step "df right after rm shows the space free"
python3 - "$mp" <<'PY' || fail "statfs after rm"
import os, sys, time
mp = sys.argv[1]
def free():
    v = os.statvfs(mp)
    return v.f_bavail * v.f_frsize
with open(mp + "/df", "wb") as f:
    f.write(os.urandom(8 << 20))
    f.flush()
    os.fsync(f.fileno())
full = free()
os.unlink(mp + "/df")
# The close's RELEASE reaches stasisd asynchronously and may come after
# the UNLINK: a few ms. The reaper alone would take a second.
t0 = time.monotonic()
while True:
    freed = free() - full
    if freed >= (7 << 20) or time.monotonic() - t0 > 0.5:
        break
    time.sleep(0.01)
if freed < (7 << 20):
    sys.exit("rm of an 8 MiB file freed %d bytes by statfs within 0.5 s" % freed)
print("   %.1f MiB free again after %.0f ms" % (freed / 1048576, (time.monotonic() - t0) * 1000))
PY
exit 0
