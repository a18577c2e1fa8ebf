#!/usr/bin/env bash
# wl-cow.sh — issue 5, acceptance 3: block copy-on-write. A 4 KiB write in
# the middle of a 1 GiB base file fetches at most one chunk from the store,
# copies up at most one chunk and adds at most one chunk to the writable
# layer — asserted from the daemon's counters and from the blocks the state
# dir allocated — and the file reads back right on both sides of the write.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"
need python3

S=$T/store
mkdir -p "$T/src"
step "a 1 GiB base file"
rand_file "$T/src/big" $((1024 * 1024 * 1024))
st commit --store "$S" --tag base "$T/src"
cs=$("$STASIS" inspect --store "$S" --json base | jq -r .chunk_size)
[[ $cs =~ ^[0-9]+$ ]] || fail "no chunk size from inspect"
mp=$T/mnt
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$T/state" base
used0=$(du -sk "$T/state/layers" | cut -f1)

# Page-aligned, so the kernel writes a whole page without reading it first
# (an unaligned write would read the two partial pages through the mount,
# and two adjacent READs start the daemon's readahead).
step "a 4 KiB write at 512 MiB + 8 KiB (mid-chunk), fsync"
off=$((512 * 1024 * 1024 + 8192))
head -c 4096 /dev/urandom >"$T/patch"
dd if="$T/patch" of="$mp/big" bs=4096 seek="$off" oflag=seek_bytes conv=notrunc,fsync status=none
fetched=$(counter "$mp" chunks_fetched)
copied=$(counter "$mp" copied_up)
dirty=$(counter "$mp" dirty_chunks)
echo "   fetched $fetched, copied up $copied, dirty $dirty (chunk size $cs)"
((fetched <= 1)) || fail "the write fetched $fetched chunks"
((copied <= 1)) || fail "the write copied up $copied chunks"
((dirty <= 1)) || fail "the layer holds $dirty dirty chunks"
ino=$(stat -c %i "$mp/big")
data=$T/state/layers/1/data/$ino
[[ -f $data ]] || fail "no data file $data for inode $ino"
alloc=$(($(stat -c '%b * %B' "$data")))
used1=$(du -sk "$T/state/layers" | cut -f1)
echo "   data file: size $(stat -c %s "$data"), allocated $alloc bytes; layer dir +$((used1 - used0)) KiB"
((alloc <= cs)) || fail "the data file allocated $alloc bytes (> one chunk)"
(((used1 - used0) * 1024 <= cs + 64 * 1024)) || fail "the layer grew by $((used1 - used0)) KiB"

step "reads: the patch, and the base around it"
cmp <(tail -c +$((off + 1)) "$mp/big" | head -c 4096) "$T/patch" || fail "the patch reads back wrong"
cmp <(tail -c +$((off - 300000 + 1)) "$mp/big" | head -c 300000) \
    <(tail -c +$((off - 300000 + 1)) "$T/src/big" | head -c 300000) || fail "the bytes before the patch changed"
cmp <(tail -c +$((off + 4096 + 1)) "$mp/big" | head -c 300000) \
    <(tail -c +$((off + 4096 + 1)) "$T/src/big" | head -c 300000) || fail "the bytes after the patch changed"

step "concurrent copy-ups of the same chunks (O_DIRECT writers, one page each)"
python3 - "$mp/big" "$T/src/big" "$cs" <<'PY' || fail "concurrent copy-ups lost or mixed bytes"
import mmap, os, random, sys, threading
mnt, src, cs = sys.argv[1], sys.argv[2], int(sys.argv[3])
chunks = sorted(random.Random(7).sample(range(1, 4000), 64))  # chunks 1..3999 (not the one written above)
def w(k):
    fd = os.open(mnt, os.O_RDWR | os.O_DIRECT)
    buf = mmap.mmap(-1, 4096)
    buf.write(bytes([k + 1]) * 4096)
    for c in chunks:
        os.pwrite(fd, buf, c * cs + k * 4096)
    os.close(fd)
ts = [threading.Thread(target=w, args=(k,)) for k in range(4)]
[t.start() for t in ts]
[t.join() for t in ts]
with open(mnt, "rb") as m, open(src, "rb") as s:
    for c in chunks:
        want = bytearray(os.pread(s.fileno(), cs, c * cs))
        for k in range(4):
            want[k * 4096:(k + 1) * 4096] = bytes([k + 1]) * 4096
        if os.pread(m.fileno(), cs, c * cs) != bytes(want):
            print("chunk %d differs" % c)
            sys.exit(1)
print("   64 chunks, 4 writers each: every chunk = base + the 4 pages")
PY

step "remount: the same bytes"
st umount "$mp"
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$T/state" base
cmp <(tail -c +$((off + 1)) "$mp/big" | head -c 4096) "$T/patch" || fail "the patch is gone after a remount"
(($(counter "$mp" errors) == 0)) || fail "read errors"
st umount "$mp"
