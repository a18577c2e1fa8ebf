#!/usr/bin/env bash
# wl-sparse.sh — sparse files in the writable layer cost what they hold,
# not their size, and look sparse through the mount as on a local disk.
#
# On a mount of a base, and the same steps on a native copy:
#   - a new 4 GiB file made by truncate, with 3-byte marks at four places;
#   - a 1 MiB base file grown to 2 GiB by truncate, with a mark near its end
#     and one in its first chunk.
# Asserted:
#   - through the mount, st_blocks of both files equals the native
#     directory's, and so do both files' SEEK_DATA/SEEK_HOLE segments;
#   - a 3-byte write into a hole of a base file with holes leaves st_blocks
#     and the SEEK segments as on ext4 (the chunk's copy-up skips its
#     zero blocks);
#   - on three base files with holes, after the same random pwrites,
#     truncates and punched holes on the mount and natively (wl_seek.py,
#     seed printed), SEEK_DATA/SEEK_HOLE never call native data a hole;
#   - `stasis checkpoint` reads only the chunks with data (bytes_dirty at
#     most 6 chunks, where it read all 6 GiB before);
#   - the snapshot, mounted, has both files byte for byte (the base file
#     compared whole with cmp; the new one at its marks and its segments);
#   - a truncate of the new file to 0 while a checkpoint reads saves only
#     its chunks with data (chunks_saved at most 4, where every chunk of
#     the 4 GiB was copied to the save file before), and the snapshot still
#     holds the file as it was at the barrier.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"
need python3

S=$T/store
src=$T/src
mkdir -p "$src"
rand_file "$src/b" $((1024 * 1024))
# h0..h3: 4 MiB with holes, data in 12 places (the base's own extents).
python3 -c '
import os, random, sys
r = random.Random(5)
parts = [(r.randrange(0, 4 << 20), os.urandom(r.randrange(1, 150000))) for _ in range(12)]
for p in sys.argv[1:]:
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    os.ftruncate(fd, 4 << 20)
    for off, b in parts:
        os.pwrite(fd, b, off)
' "$src/h0" "$src/h1" "$src/h2" "$src/h3"
settle_atimes "$src"
st commit --store "$S" --tag base "$src" >/dev/null
cs=$("$STASIS" inspect --store "$S" --json base | jq -r .chunk_size)
mp=$T/mnt
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$T/state" base
nat=$T/native
cp -a "$src" "$nat"

cat >"$T/sparse.py" <<'EOF'
import errno, os, sys
# sparse.py make DIR: the changes. sparse.py show FILE: size, st_blocks and
# the SEEK_DATA/SEEK_HOLE segments. sparse.py marks FILE: the marks' bytes.
G = 1 << 30
NEW = [(0, b"abc"), (G + 5, b"def"), (2 * G + (1 << 20), b"ghi"), (4 * G - 3, b"jkl")]
BASE = [(100, b"R"), (3 * G // 2, b"Q")]
mode, path = sys.argv[1], sys.argv[2]
if mode == "make":
    fd = os.open(os.path.join(path, "sp"), os.O_CREAT | os.O_RDWR, 0o644)
    os.ftruncate(fd, 4 * G)
    for off, b in NEW:
        os.pwrite(fd, b, off)
    os.close(fd)
    fd = os.open(os.path.join(path, "b"), os.O_RDWR)
    os.ftruncate(fd, 2 * G)
    for off, b in BASE:
        os.pwrite(fd, b, off)
    os.close(fd)
elif mode == "show":
    st = os.stat(path)
    fd = os.open(path, os.O_RDONLY)
    segs, o = [], 0
    while o < st.st_size:
        try:
            d = os.lseek(fd, o, os.SEEK_DATA)
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
            break
        o = os.lseek(fd, d, os.SEEK_HOLE)
        segs.append("%d-%d" % (d, o))
    print(st.st_size, st.st_blocks, " ".join(segs))
elif mode == "marks":
    fd = os.open(path, os.O_RDONLY)
    marks = NEW if path.endswith("sp") else BASE
    print(all(os.pread(fd, len(b), off) == b for off, b in marks))
EOF
sparse() { python3 "$T/sparse.py" "$@"; }
# show_settled FILE: `sparse show FILE` once the RELEASE of the writer that
# just closed it has reached stasisd (the kernel sends it after close()
# returns; while a handle is open for writing, SEEK_DATA/SEEK_HOLE answer
# "all data"): up to 2 s for the answer to match NATIVE_FILE's.
show_settled() {
        local out i
        for i in $(seq 40); do
                out=$(sparse show "$1")
                [[ $out == "$(sparse show "$2")" ]] && break
                sleep 0.05
        done
        echo "$out"
}

step "a sparse new file and a base file grown by truncate, on the mount and natively"
sparse make "$mp"
sparse make "$nat"
read -r msize mblocks msegs < <(show_settled "$mp/sp" "$nat/sp")
read -r nsize nblocks nsegs < <(sparse show "$nat/sp")
echo "   new file: mount $msize $mblocks [$msegs], native $nsize $nblocks [$nsegs]"
[[ $msize == "$nsize" && $mblocks == "$nblocks" ]] || fail "new file: size/blocks $msize/$mblocks on the mount, $nsize/$nblocks natively"
[[ $msegs == "$nsegs" ]] || fail "new file: SEEK_DATA/SEEK_HOLE segments [$msegs] on the mount, [$nsegs] natively"
read -r msize mblocks msegs < <(show_settled "$mp/b" "$nat/b")
read -r nsize nblocks nsegs < <(sparse show "$nat/b")
echo "   base file: mount $msize $mblocks [$msegs], native $nsize $nblocks [$nsegs]"
[[ $msize == "$nsize" && $mblocks == "$nblocks" ]] || fail "base file: size/blocks $msize/$mblocks on the mount, $nsize/$nblocks natively"
[[ $msegs == "$nsegs" ]] || fail "base file: SEEK_DATA/SEEK_HOLE segments [$msegs] on the mount, [$nsegs] natively"
[[ $(sparse marks "$mp/sp") == True && $(sparse marks "$mp/b") == True ]] || fail "a mark does not read back through the mount"

step "checkpoint reads the chunks with data, not the holes"
"$STASIS" checkpoint --tag c1 --json "$mp" >"$T/c1.json" || fail "stasis checkpoint failed"
echo "   $(jq -c '{bytes_dirty, chunks_new, duration_ns}' "$T/c1.json")"
dirty=$(jq -r .bytes_dirty "$T/c1.json")
((dirty <= 6 * cs)) || fail "checkpoint read $dirty dirty bytes; the files hold data in 6 chunks of $cs"
mp2=$T/mnt2
mount_snap "$mp2" --store "$S" --cache "$T/cache" --state "$T/state2" c1
cmp "$mp2/b" "$nat/b" || fail "the snapshot's base file differs from the native one"
[[ $(sparse marks "$mp2/sp") == True ]] || fail "the snapshot's new file lost a mark"
read -r size blocks segs < <(sparse show "$mp2/sp")
echo "   snapshot's new file: $size $blocks [$segs]"
((size == 4 << 30)) || fail "the snapshot's new file has size $size"
((blocks <= 4 * cs / 512)) || fail "the snapshot's new file has $blocks blocks, at most 4 chunks expected"
# The snapshot's holes are zeros: 8 MiB around the second mark.
cmp <(dd if="$mp2/sp" bs=1M skip=1020 count=8 status=none) <(dd if="$nat/sp" bs=1M skip=1020 count=8 status=none) ||
        fail "the snapshot's new file differs from the native one around a mark"

step "truncate while a checkpoint reads: the holes are not copied aside"
# 512 MiB of incompressible data, older than the new sp in inode order,
# keep the checkpoint reading while sp is cut to nothing; sp's chunks not
# yet read are saved first (copy-before-write), and only its 4 chunks with
# data need be. Trials until one truncate lands inside the reading phase.
rand_file "$mp/big" $((512 * 1024 * 1024))
"$STASIS" checkpoint --json "$mp" >/dev/null || fail "stasis checkpoint failed"
hit=0 delay=40 # ms
for trial in 1 2 3 4 5 6 7 8; do
        head -c $((512 * 1024 * 1024)) /dev/urandom | dd of="$mp/big" conv=notrunc,fsync status=none
        rm -f "$mp/sp" # a new sp: no chunk of it known to the last checkpoint
        sparse make "$mp" >/dev/null
        "$STASIS" checkpoint --tag "t$trial" --json "$mp" >"$T/t.json" &
        ck=$!
        sleep "$((delay / 1000)).$(printf %03d $((delay % 1000)))"
        truncate -s 0 "$mp/sp"
        wait "$ck" || fail "stasis checkpoint (trial $trial) failed"
        saved=$(jq -r .chunks_saved "$T/t.json")
        mkdir -p "$T/m$trial"
        mount_snap "$T/m$trial" --store "$S" --cache "$T/cache" --state "$T/s$trial" "t$trial"
        size=$(stat -c %s "$T/m$trial/sp")
        echo "   trial $trial: chunks_saved $saved, the snapshot's sp has $size bytes"
        if ((size == 0)); then
                delay=$((delay + 100)) # the truncate came before the barrier
                continue
        fi
        ((size == 4 << 30)) || fail "trial $trial: the snapshot's sp has $size bytes, neither 0 nor 4 GiB"
        [[ $(sparse marks "$T/m$trial/sp") == True ]] || fail "trial $trial: the snapshot's sp lost a mark"
        ((saved <= 4)) || fail "trial $trial: $saved chunks saved before the truncate; sp holds data in 4"
        if ((saved > 0)); then
                hit=1
                break
        fi
        delay=$((delay / 2)) # sp was read before the truncate
done
((hit)) || fail "no truncate landed while the checkpoint read sp (8 trials)"

step "a write into a base file's hole copies up its chunk, not the chunk's holes"
# 8 KiB into the first hole of h3 (as ext4 sees it), on both
at=$(python3 -c 'import os, sys; print(os.lseek(os.open(sys.argv[1], os.O_RDONLY), 0, os.SEEK_HOLE) + 8192)' "$nat/h3")
for d in "$mp" "$nat"; do
        printf xyz | dd of="$d/h3" bs=1 seek="$at" conv=notrunc status=none
done
read -r msize mblocks msegs < <(show_settled "$mp/h3" "$nat/h3")
read -r nsize nblocks nsegs < <(sparse show "$nat/h3")
echo "   mount $mblocks blocks [$msegs], native $nblocks [$nsegs]"
[[ $mblocks == "$nblocks" && $msegs == "$nsegs" ]] || fail "after the copy-up: $mblocks blocks [$msegs] on the mount, $nblocks [$nsegs] natively"
cmp "$mp/h3" "$nat/h3" || fail "h3 differs after the write"

step "SEEK_DATA/SEEK_HOLE of base files with holes, after random writes, truncates, punched holes"
seed=${WL_SEEK_SEED:-$RANDOM}
echo "   seed $seed (rerun: WL_SEEK_SEED=$seed)"
for i in 0 1 2; do
        python3 "$(dirname "$0")/wl_seek.py" "$mp/h$i" "$nat/h$i" $((seed + i)) ||
                fail "SEEK_DATA/SEEK_HOLE on the mount (seed $((seed + i)))"
done

echo "PASS"
