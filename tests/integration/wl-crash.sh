#!/usr/bin/env bash
# wl-crash.sh — issue 5, acceptance 6: kill -9 of stasisd at a random
# moment while a writer writes random data + fsync, renames + fsyncdir and
# links; a remount on the same state dir has every acknowledged byte and
# name, no half-applied rename, and link counts that match the names.
#   WL_CRASH_TRIALS       number of trials (default 20)
#   WL_CRASH_JOURNAL_MAX  the daemon's journal compaction bound (default 16K)
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"
need python3

trials=${WL_CRASH_TRIALS:-20}
# A small journal bound, so the daemon also rewrites its journal (online
# compaction) many times while it is being killed.
export STASIS_JOURNAL_MAX=${WL_CRASH_JOURNAL_MAX:-16K}
S=$T/store
mkdir -p "$T/src/base"
rand_file "$T/src/base/big" $((3 * 1024 * 1024 + 777))
echo base >"$T/src/base/small"
st commit --store "$S" --tag base "$T/src"
mp=$T/mnt
state=$T/state

# The writer: acknowledges an operation in $ack only after the syscalls that
# make it durable returned (fsync of the file, fsync of the directory).
cat >"$T/writer.py" <<'PY'
import os, sys, random, hashlib
mp, ack, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rnd = random.Random(seed)
log = open(ack, "a", buffering=1)
d = os.path.join(mp, "w")
os.makedirs(d, exist_ok=True)
dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
i = 0
while True:
    i += 1
    name = "f%d-%d" % (seed, i)
    data = os.urandom(rnd.choice([1, 100, 4096, 65536, 300000, 1 << 20]))
    tmp = os.path.join(d, name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    os.fsync(fd)
    os.close(fd)
    os.rename(tmp, os.path.join(d, name))
    os.fsync(dfd)
    log.write("file %s %s\n" % (name, hashlib.sha256(data).hexdigest()))
    if i % 3 == 0:
        os.link(os.path.join(d, name), os.path.join(d, name + ".ln"))
        os.fsync(dfd)
        log.write("link %s\n" % name)
    if i % 4 == 0:  # partial overwrite of a base file: one chunk copied up
        off = rnd.randrange(0, 3 * 1024 * 1024)
        log.write("bigi %d\n" % off)
        fd = os.open(os.path.join(mp, "base/big"), os.O_WRONLY)
        os.pwrite(fd, b"x" * 4096, off)
        os.fsync(fd)
        os.close(fd)
        log.write("big %d\n" % off)
PY

# The model of what must be there, from the acknowledgements.
cat >"$T/check.py" <<'PY'
import os, sys, hashlib
mp, ack, big = sys.argv[1], sys.argv[2], sys.argv[3]
files, links = {}, set()
bigdata = bytearray(open(big, "rb").read())
n = 0
intent = None
for line in open(ack):
    p = line.split()
    if len(p) < 2 or not line.endswith("\n"):
        continue
    if p[0] == "file": files[p[1]] = p[2]
    elif p[0] == "link": links.add(p[1])
    elif p[0] == "bigi": intent = int(p[1])
    elif p[0] == "big":
        off = int(p[1]); bigdata[off:off + 4096] = b"x" * 4096; intent = None
    n += 1
bad = 0
d = os.path.join(mp, "w")
names = set(os.listdir(d)) if os.path.isdir(d) else set()
for name, h in files.items():
    path = os.path.join(d, name)
    if not os.path.exists(path):
        print("LOST: %s" % name); bad += 1; continue
    if hashlib.sha256(open(path, "rb").read()).hexdigest() != h:
        print("WRONG BYTES: %s" % name); bad += 1
    if name + ".tmp" in names:
        print("HALF RENAME: both %s and its .tmp" % name); bad += 1
for name in links:
    if not os.path.exists(os.path.join(d, name + ".ln")):
        print("LOST LINK: %s" % name); bad += 1
# link counts match the names in the directory (every file lives in w/)
inos = {}
for name in names:
    st = os.lstat(os.path.join(d, name))
    inos.setdefault(st.st_ino, []).append((name, st.st_nlink))
for ino, l in inos.items():
    if any(nl != len(l) for _, nl in l):
        print("NLINK: inode %d has names %s" % (ino, l)); bad += 1
# every name reads (no dangling entry)
for name in names:
    open(os.path.join(d, name), "rb").read()
got = bytearray(open(os.path.join(mp, "base/big"), "rb").read())
if intent is not None:  # the last overwrite was not acknowledged: either way
    got[intent:intent + 4096] = bigdata[intent:intent + 4096]
if got != bigdata:
    print("BIG DIFFERS"); bad += 1
print("checked %d acknowledged operations, %d files" % (n, len(files)))
sys.exit(1 if bad else 0)
PY

cp "$T/src/base/big" "$T/big.model"
ack=$T/ack
: >"$ack"
total=0
for ((trial = 1; trial <= trials; trial++)); do
        mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$state" base
        pid=$(daemon_pid "$mp")
        acked=$(wc -l <"$ack")
        python3 "$T/writer.py" "$mp" "$ack" "$trial" 2>"$T/writer.err" &
        wpid=$!
        # Let the writer get going first (a loaded machine or a sanitizer
        # build can take longer than the whole random delay to start it),
        # then kill at a random moment of its writing.
        for ((i = 0; i < 300 && $(wc -l <"$ack") < acked + 20; i++)); do
                kill -0 "$wpid" 2>/dev/null || break
                sleep 0.1
        done
        sleep "0.$((RANDOM % 9 + 1))$((RANDOM % 10))"
        kill -9 "$pid"
        wait "$wpid" 2>/dev/null || true
        st umount "$mp"
        mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$state" base
        out=$(python3 "$T/check.py" "$mp" "$ack" "$T/big.model") || {
                echo "$out" | head -20 >&2
                fail "trial $trial: acknowledged data lost after kill -9"
        }
        echo "   trial $trial: $out ($(tail -1 "$T/writer.err"))"
        # An unacknowledged last overwrite of big may have landed: the model
        # follows the mount from here.
        cp "$mp/base/big" "$T/big.model"
        st umount "$mp"
        total=$((total + 1))
done
compactions=$(grep -c "journal compacted" "$state/stasisd.log" || true)
echo "   online journal compactions during the trials: $compactions"
((compactions > 0)) || fail "no online compaction happened (STASIS_JOURNAL_MAX=$STASIS_JOURNAL_MAX)"
step "$total trials, 0 losses"

# A fresh state dir is made without fsync: the first fsync or fsyncdir makes
# its skeleton durable. What a host crash can leave of one before that (the
# kernel's writeback may have stored any part of it) is simulated on the
# files a kill -9 left behind.
step "a fresh state dir: its journal is its header alone until something changes"
fresh=$T/state-fresh
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$fresh" base
[[ $(stat -c %s "$fresh/layers/1/journal") == 16 ]] || fail "a fresh journal of $(stat -c %s "$fresh/layers/1/journal") bytes"
echo unsynced >"$mp/new"
kill -9 "$(daemon_pid "$mp")"
st umount "$mp"

step "a host crash took the fresh journal (HEAD kept): the mount starts afresh"
: >"$fresh/layers/1/journal"
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$fresh" base
[[ ! -e $mp/new ]] || fail "a file whose journal record was lost is there"
cmp "$mp/base/small" "$T/src/base/small" || fail "base/small reads wrong"
st umount "$mp"

step "a host crash took HEAD of a layer with changes: the mount is refused"
echo changed >"$T/changed"
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$fresh" base
cp "$T/changed" "$mp/changed"
kill -9 "$(daemon_pid "$mp")"
st umount "$mp"
: >"$fresh/HEAD"
expect_exit 1 "$STASIS" mount --store "$S" --cache "$T/cache" --state "$fresh" base "$mp"
grep -q "no HEAD" "$T/err" || { cat "$T/err" >&2; fail "the refusal does not say why"; }
! is_mounted "$mp" || fail "a refused mount left a mount behind"

step "a host crash took HEAD of an unchanged layer: the mount starts afresh"
rm -rf "$fresh/layers/1/data" "$fresh/HEAD"
: >"$fresh/layers/1/journal"
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$fresh" base
grep -q "^base sha256:" "$fresh/HEAD" || fail "HEAD was not written again"
[[ ! -e $mp/changed ]] || fail "a file of the dropped layer is there"
st umount "$mp"
