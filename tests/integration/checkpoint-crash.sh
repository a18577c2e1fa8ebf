#!/usr/bin/env bash
# checkpoint-crash.sh — issue 6, acceptance 5: kill -9 of stasisd at random
# points of a checkpoint. Each trial, on one state dir:
#  - mount (the base its HEAD names), replace a bulk file (fsync'd, seeded:
#    the checkpoint has that much to hash and pack, so it takes a while),
#    start a writer that creates files (write, fsync, rename, fsync of the
#    directory), overwrites 4 KiB of a base file (fsync) and deletes files
#    (fsync of the directory), acknowledging each operation only once durable;
#  - `stasis checkpoint` (the mount's second: one ran before the bulk file
#    was replaced), and kill -9 of stasisd after a random delay within
#    about the length of the last checkpoint;
#  - the previous snapshot stays intact (`stasis verify` of it passes, and of
#    the killed one if it got published; every blob the trial left in the
#    store hashes to its name);
#  - the state dir remounts (`stasis mount --state` the same dir) and shows
#    every acknowledged operation;
#  - the next checkpoint succeeds, its generation is its parent's plus one,
#    and its restore holds every acknowledged byte and name (and the bulk
#    file);
#  - `stasis gc --grace 0` with the mount live keeps what it uses, and at
#    the end every snapshot in the store verifies.
#   CKPT_CRASH_TRIALS   number of trials (default 20)
#   CKPT_CRASH_BULK_MB  bulk file size (default 32)
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"
need python3 sha256sum

CKPT=$TESTS_BIN/ckpt-tool
[[ -x $CKPT ]] || fail "no ckpt-tool at $CKPT"
trials=${CKPT_CRASH_TRIALS:-20}
bulk_mb=${CKPT_CRASH_BULK_MB:-32}
S=$T/store
mp=$T/mnt
state=$T/state
WPID=
on_exit_hook() {
        [[ -z $WPID ]] || kill -9 "$WPID" 2>/dev/null || true
}

mkdir -p "$T/src/base"
"$CKPT" gen 1 random $((8 * 1024 * 1024 + 333)) "$T/src/base/big"
echo base >"$T/src/base/small"
st commit --store "$S" --tag base "$T/src" >/dev/null
base=$("$STASIS" inspect --store "$S" --json base | jq -r .digest)
cp "$T/src/base/big" "$T/big.model"

# The writer: acknowledges an operation in $ack only after the syscalls that
# make it durable returned. It first deletes what earlier writers left in w/,
# and keeps at most 40 files of its own, so the dirty data stays bounded.
cat >"$T/writer.py" <<'PY'
import os, sys, random, hashlib
mp, ack, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rnd = random.Random(seed)
log = open(ack, "a", buffering=1)
d = os.path.join(mp, "w")
os.makedirs(d, exist_ok=True)
dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
old = sorted(os.listdir(d))
for name in old:
    log.write("deli %s\n" % name)  # intent: it may be gone without the ack
    os.unlink(os.path.join(d, name))
os.fsync(dfd)
for name in old:
    log.write("del %s\n" % name)
log.write("ready\n")
mine = []
i = 0
while True:
    i += 1
    name = "f%d-%d" % (seed, i)
    data = os.urandom(rnd.choice([1, 100, 4096, 65536, 200000]))
    tmp = os.path.join(d, name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    os.fsync(fd)
    os.close(fd)
    os.rename(tmp, os.path.join(d, name))
    os.fsync(dfd)
    log.write("file %s %s\n" % (name, hashlib.sha256(data).hexdigest()))
    mine.append(name)
    if len(mine) > 40:
        victim = mine.pop(0)
        log.write("deli %s\n" % victim)
        os.unlink(os.path.join(d, victim))
        os.fsync(dfd)
        log.write("del %s\n" % victim)
    if i % 3 == 0:  # 4 KiB of a base file: one chunk copied up
        off = rnd.randrange(0, 8 * 1024 * 1024 // 4096) * 4096
        tag = "%d-%d" % (seed, i)
        log.write("bigi %d %s\n" % (off, tag))
        fd = os.open(os.path.join(mp, "base/big"), os.O_WRONLY)
        os.pwrite(fd, hashlib.sha256(tag.encode()).digest() * 128, off)
        os.fsync(fd)
        os.close(fd)
        log.write("big %d %s\n" % (off, tag))
PY

# The model, checked on a tree (the remounted mount, or a restore): every
# acknowledged file with its bytes (unless a delete of it had begun), no
# dangling .tmp of an acknowledged file, base/big as acknowledged. With
# --update, big's model then follows the tree (an unacknowledged last
# overwrite may or may not have landed), and BIG.lines records how many ack
# lines it holds: only later overwrites are applied to it.
cat >"$T/check.py" <<'PY'
import os, sys, hashlib
root, ack, big = sys.argv[1], sys.argv[2], sys.argv[3]
update = len(sys.argv) > 4
files = {}
deleting = set()  # deletes begun, not acknowledged: either way
bigdata = bytearray(open(big, "rb").read())
held = int(open(big + ".lines").read()) if os.path.exists(big + ".lines") else 0
intent = None
n = 0
for line in open(ack):
    p = line.split()
    if not line.endswith("\n") or not p:
        continue
    n += 1
    if p[0] == "file": files[p[1]] = p[2]
    elif p[0] == "deli": deleting.add(p[1])
    elif p[0] == "del": files.pop(p[1], None); deleting.discard(p[1])
    elif n <= held: continue  # big.model already holds it
    elif p[0] == "bigi": intent = int(p[1])
    elif p[0] == "big":
        off = int(p[1])
        bigdata[off:off + 4096] = hashlib.sha256(p[2].encode()).digest() * 128
        intent = None
bad = 0
d = os.path.join(root, "w")
names = set(os.listdir(d)) if os.path.isdir(d) else set()
for name, h in files.items():
    if name not in names:
        if name not in deleting:
            print("LOST: w/%s" % name); bad += 1
        continue
    if hashlib.sha256(open(os.path.join(d, name), "rb").read()).hexdigest() != h:
        print("WRONG BYTES: w/%s" % name); bad += 1
    if name + ".tmp" in names:
        print("HALF RENAME: w/%s and its .tmp" % name); bad += 1
got = bytearray(open(os.path.join(root, "base/big"), "rb").read())
if intent is not None:
    got[intent:intent + 4096] = bigdata[intent:intent + 4096]
if got != bigdata:
    print("base/big differs from the acknowledged writes"); bad += 1
if not bad and update:
    open(big, "wb").write(open(os.path.join(root, "base/big"), "rb").read())
    open(big + ".lines", "w").write("%d\n" % n)
print("%d acknowledged operations, %d files" % (n, len(files)))
sys.exit(1 if bad else 0)
PY

# head_base: the base the state dir's HEAD names (docs/writable-layer.md);
# a checkpoint that folds moves it. The base snapshot before the first mount.
head_base() {
        local b=
        [[ -f $state/HEAD ]] && b=$(awk '$1 == "base" {print $2}' "$state/HEAD")
        echo "${b:-$base}"
}
now_ns() { date +%s%N; }

# new_bulk N: replace the bulk file by a seeded one (fsync'd, the directory
# too); its bytes are also kept in $T/bulk.ref.
new_bulk() {
        mkdir -p "$mp/bulk"
        rm -f "$mp"/bulk/*
        "$CKPT" gen "$((1000 + $1))" random $((bulk_mb * 1024 * 1024)) "$mp/bulk/t$1" "$T/bulk.ref"
        sync "$mp/bulk/t$1"
        python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY); os.fsync(fd)' "$mp/bulk"
        BULK=t$1
}

# checkpoint_ok WHAT: the next checkpoint succeeds; checks it (parent and
# generation, a restore against the model and the bulk file); sets PREV and
# CK_NS (its wall time).
checkpoint_ok() {
        local t0 parent pgen gen r=$T/restore
        t0=$(now_ns)
        "$STASIS" checkpoint --json "$mp" >"$T/ck.json" || fail "$1: the checkpoint after the crash failed"
        CK_NS=$(($(now_ns) - t0))
        PREV=$(jq -r .digest "$T/ck.json")
        [[ $PREV == sha256:* ]] || fail "$1: no digest"
        parent=$(jq -r .parent "$T/ck.json")
        gen=$(jq -r .generation "$T/ck.json")
        pgen=$("$STASIS" inspect --store "$S" --json "$parent" | jq -r .generation) || fail "$1: parent $parent is not in the store"
        ((gen == pgen + 1)) || fail "$1: generation $gen, its parent's is $pgen"
        rm -rf "$r"
        st restore --store "$S" "$PREV" "$r"
        out=$(python3 "$T/check.py" "$r" "$ack" "$T/big.model" --update) || {
                echo "$out" | head -20 >&2
                fail "$1: the new checkpoint lacks acknowledged (fsync'd) data"
        }
        cmp "$r/bulk/$BULK" "$T/bulk.ref" || fail "$1: the bulk file differs in the checkpoint"
        [[ $(ls "$r/bulk") == "$BULK" ]] || fail "$1: bulk/ holds $(ls "$r/bulk" | tr '\n' ' ')"
        rm -rf "$r"
}

ack=$T/ack
: >"$ack"
step "a first checkpoint (it also times one)"
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$state" "$(head_base)"
new_bulk 0
checkpoint_ok "calibration"
st umount "$mp"

killed_during=0
for ((trial = 1; trial <= trials; trial++)); do
        mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$state" "$(head_base)"
        pid=$(daemon_pid "$mp")
        # a checkpoint first, so the killed one is a mount's second (it
        # reuses the first one's chunk references) and has it as parent
        "$STASIS" checkpoint --json "$mp" >"$T/pre.json" || fail "trial $trial: the checkpoint before the killed one failed"
        PREV=$(jq -r .digest "$T/pre.json")
        new_bulk "$trial"
        acked=$(wc -l <"$ack")
        python3 "$T/writer.py" "$mp" "$ack" "$trial" 2>"$T/writer.err" &
        WPID=$!
        for ((i = 0; i < 300 && $(wc -l <"$ack") < acked + 10; i++)); do
                kill -0 "$WPID" 2>/dev/null || break
                sleep 0.05
        done
        blob_list "$S" | cut -d' ' -f1 >"$T/blobs.before"
        # the kill: a random moment within 1.2 x the last checkpoint's time
        delay_ms=$((RANDOM % (CK_NS * 12 / 10 / 1000000 + 1)))
        "$STASIS" checkpoint --json "$mp" >"$T/killed.json" 2>"$T/killed.err" &
        cpid=$!
        sleep "$((delay_ms / 1000)).$(printf %03d $((delay_ms % 1000)))"
        kill -9 "$pid"
        crc=0
        wait "$cpid" || crc=$?
        ((crc != 0)) && killed_during=$((killed_during + 1))
        wait "$WPID" 2>/dev/null || true
        WPID=

        # the previous snapshot is intact, and so is the killed one if it
        # got published
        st verify --store "$S" "$PREV" >/dev/null
        if ((crc == 0)); then
                st verify --store "$S" "$(jq -r .digest "$T/killed.json")" >/dev/null
        fi
        # blobs the trial left: each one whole (named by its content)
        blob_list "$S" | cut -d' ' -f1 | comm -13 "$T/blobs.before" - >"$T/blobs.new"
        while read -r b; do
                [[ $(sha256sum <"$S/blobs/sha256/$b" | cut -d' ' -f1) == "$b" ]] ||
                        fail "trial $trial: blob $b in the store does not hash to its name"
        done <"$T/blobs.new"

        st umount "$mp"
        mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$state" "$(head_base)"
        out=$(python3 "$T/check.py" "$mp" "$ack" "$T/big.model") || {
                echo "$out" | head -20 >&2
                fail "trial $trial: the remounted state lacks acknowledged data"
        }
        cmp "$mp/bulk/$BULK" "$T/bulk.ref" || fail "trial $trial: the remounted bulk file differs"
        ckpt_before=$CK_NS
        checkpoint_ok "trial $trial"
        ((CK_NS > ckpt_before * 3)) && CK_NS=$ckpt_before # a slow outlier does not set the next delay
        echo "   trial $trial: killed after ${delay_ms} ms ($( ((crc)) && echo during || echo after) the checkpoint);" \
                "then $out; next checkpoint $((CK_NS / 1000000)) ms, $(wc -l <"$T/blobs.new") blobs left by the killed one"
        # gc with the mount live removes what the killed checkpoints left
        # (not --keep-last: see checkpoint-remount-chain.sh)
        st gc --store "$S" --grace 0 >/dev/null
        st verify --store "$S" "$PREV" >/dev/null
        st umount "$mp"
done
step "$trials trials, $killed_during killed during the checkpoint, every acknowledged byte kept; store $(du -sh "$S" | cut -f1)"
((killed_during * 4 >= trials)) || fail "only $killed_during of $trials kills landed during a checkpoint"
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$state" "$(head_base)"
python3 "$T/check.py" "$mp" "$ack" "$T/big.model" >/dev/null || fail "the final remount lacks acknowledged data"
st umount "$mp"
st verify --store "$S"
echo "   left in the store's tmp/ by killed checkpoints: $(find "$S/tmp" -type f 2>/dev/null | wc -l) files," \
        "$(du -sb "$S/tmp" 2>/dev/null | cut -f1) bytes"
exit 0
