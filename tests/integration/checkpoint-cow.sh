#!/usr/bin/env bash
# checkpoint-cow.sh — issue 6 point 2: the checkpoint's barrier copies and
# hashes no data, and the snapshot is the instant of the barrier even though
# the sandbox writes on while the checkpoint reads the dirty chunks.
#
# A writer in a cgroup (io.stasis.freeze=cgroup:PATH) rewrites a 64 MiB
# file chunk by chunk, one generation after another (each chunk says which
# generation and which chunk it is), and never calls fsync. 192 MiB of other
# dirty data make the checkpoint's reading phase long. The checkpoint
# freezes the cgroup, flushes, takes the barrier, thaws, and then reads the
# dirty chunks while the writer overwrites them: each chunk it has not read
# yet is saved first (copy-before-write). Asserted: barrier_bytes is 0,
# chunks were saved (the path ran), the snapshot's file is one point of the
# writer's sequence (chunks 0..k-1 of generation g+1, the rest of g), the
# other dirty file restores exactly, and the mount itself ends with the
# writer's last generation everywhere.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"
need python3

CG2=$(awk '$9 == "cgroup2" {print $5; exit}' /proc/self/mountinfo)
[[ -n $CG2 && -w $CG2 ]] || skip "no writable cgroup2 mount"
CG=$CG2/stasis-ckcow-test-$$
mkdir "$CG" 2>/dev/null || skip "cannot create a cgroup under $CG2"
[[ -f $CG/cgroup.freeze ]] || { rmdir "$CG"; skip "$CG2 has no cgroup.freeze"; }
WRITER=
on_exit_hook() {
        [[ -f $CG/cgroup.freeze ]] && echo 0 >"$CG/cgroup.freeze"
        [[ -n $WRITER ]] && kill -9 "$WRITER" 2>/dev/null
        local p
        for p in $(cat "$CG/cgroup.procs" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
        sleep 0.2
        rmdir "$CG" 2>/dev/null || true
}

CS=$((256 * 1024))
NCH=256 # 64 MiB
cat >"$T/gen.py" <<'EOF'
import os, sys
# gen.py write FILE CS N STOP: rewrite FILE's N chunks, generation after
# generation, until STOP exists; finish that generation; print it.
# gen.py check FILE CS N: print "ok G K" if chunks 0..K-1 are of
# generation G+1 and the rest of G, where chunk K may have been cut short
# (the first bytes of G+1, then G's), else "bad ...".
def chunk(g, i, cs):
    head = b"gen %08d chunk %08d " % (g, i)
    return (head * (cs // len(head) + 1))[:cs]
def parse(b):
    f = b[:32].split()
    if len(f) < 4 or f[0] != b"gen" or f[2] != b"chunk":
        return None
    return int(f[1]), int(f[3])
mode, path, cs, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if mode == "write":
    stop = sys.argv[5]
    fd = os.open(path, os.O_WRONLY)
    g = 1
    while True:
        for i in range(n):
            b, off = chunk(g, i, cs), 0
            while off < cs:  # a freeze may cut a write short
                off += os.pwrite(fd, b[off:], i * cs + off)
        if os.path.exists(stop):
            break
        g += 1
    os.close(fd)
    print(g)
else:
    data = open(path, "rb").read()
    if len(data) != n * cs:
        print("bad size %d" % len(data)); sys.exit(0)
    gens, torn = [], None
    for i in range(n):
        b = data[i * cs:(i + 1) * cs]
        p = parse(b)
        if p is None or p[1] != i:
            print("bad chunk %d: %r" % (i, b[:32])); sys.exit(0)
        if b != chunk(p[0], i, cs):
            # cut short: a prefix of p[0], then p[0] - 1
            old = chunk(p[0] - 1, i, cs)
            s = next(o for o in range(cs) if b[o] != chunk(p[0], i, cs)[o])
            if torn is not None or b[s:] != old[s:]:
                print("bad chunk %d: mixed at %d" % (i, s)); sys.exit(0)
            torn = i
        gens.append(p[0])
    k = 0
    while k < n and gens[k] == gens[0]:
        k += 1
    if torn is not None and torn != k - 1:
        print("bad: chunk %d cut short, but the generations change at %d" % (torn, k)); sys.exit(0)
    if k == n and torn is None:
        print("ok %d 0" % gens[0])
    elif all(x == gens[0] - 1 for x in gens[k:]):
        print("ok %d %d" % (gens[0] - 1, k))
    else:
        print("bad generations %s" % gens)
EOF

S=$T/store
step "a base with a 32 MiB file; a mount that freezes $CG"
mkdir -p "$T/src"
head -c $((32 * 1024 * 1024)) /dev/urandom >"$T/src/base"
st commit --store "$S" --chunk-size "$CS" --tag base "$T/src"
[[ $("$STASIS" inspect --store "$S" --json base | jq -r .chunk_size) == "$CS" ]] || fail "chunk size is not $CS"
mp=$T/mnt
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$T/state" --label "io.stasis.freeze=cgroup:$CG" base

step "dirty data: 192 MiB new, the base file rewritten, the writer's file at generation 0"
head -c $((192 * 1024 * 1024)) /dev/urandom >"$T/ballast"
cp "$T/ballast" "$mp/ballast"
head -c $((32 * 1024 * 1024)) /dev/urandom >"$T/base2"
dd if="$T/base2" of="$mp/base" bs=1M conv=notrunc status=none
python3 - "$mp/w" "$CS" "$NCH" <<'EOF'
import sys
path, cs, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "wb") as f:
    for i in range(n):
        head = b"gen %08d chunk %08d " % (0, i)
        f.write((head * (cs // len(head) + 1))[:cs])
EOF
sync -f "$mp"

step "the writer runs in $CG"
sh -c 'echo $$ >'"$CG"'/cgroup.procs; exec python3 '"$T"'/gen.py write '"$mp"'/w '"$CS $NCH $T"'/stop >'"$T"'/last' \
        </dev/null 2>"$T/writer.err" &
WRITER=$!
sleep 0.5
kill -0 "$WRITER" 2>/dev/null || fail "the writer died: $(cat "$T/writer.err")"

step "checkpoint while it writes"
"$STASIS" checkpoint --tag g1 --json "$mp" >"$T/g1.json" || fail "stasis checkpoint failed"
cat "$T/g1.json"
touch "$T/stop"
wait "$WRITER" || fail "the writer failed: $(cat "$T/writer.err")"
WRITER=
last=$(cat "$T/last")
[[ $(jq -r .froze "$T/g1.json") == true ]] || fail "the checkpoint did not freeze the writer"
[[ $(jq -r .barrier_bytes "$T/g1.json") == 0 ]] || fail "data bytes were read under the barrier"
saved=$(jq -r .chunks_saved "$T/g1.json")
((saved > 0)) || fail "no chunk was saved: the writer never raced the reading phase (inconclusive)"
echo "chunks saved by the writer: $saved; writer ended at generation $last"

step "the snapshot is one point of the writer's sequence"
st restore --store "$S" g1 "$T/r1"
res=$(python3 "$T/gen.py" check "$T/r1/w" "$CS" "$NCH")
echo "snapshot: $res"
[[ $res == ok* ]] || fail "the snapshot's file is no point of the write sequence: $res"
cmp "$T/r1/ballast" "$T/ballast" || fail "the other dirty file restores wrong"
cmp "$T/r1/base" "$T/base2" || fail "the rewritten base file restores wrong"

step "the mount ends with the writer's last generation"
sync -f "$mp"
res=$(python3 "$T/gen.py" check "$mp/w" "$CS" "$NCH")
[[ $res == "ok $last 0" ]] || fail "the mount shows '$res', not generation $last everywhere"
cmp "$mp/ballast" "$T/ballast" || fail "the mount's other file changed"

step "a second checkpoint holds the last generation"
"$STASIS" checkpoint --tag g2 --json "$mp" >"$T/g2.json" || fail "stasis checkpoint failed"
st restore --store "$S" g2 "$T/r2"
res=$(python3 "$T/gen.py" check "$T/r2/w" "$CS" "$NCH")
[[ $res == "ok $last 0" ]] || fail "g2 shows '$res', not generation $last"
exit 0
