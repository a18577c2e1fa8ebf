#!/usr/bin/env bash
# wl-journal.sh — a journal damaged where it was synced is refused, not cut.
# A host crash can tear only the journal's unsynced tail, and the mount
# drops that tail. A record broken before the point the journal's header
# says was synced is damage (a bad block, a bit flipped), and dropping
# everything after it would lose changes that fsync acknowledged, and then
# the data files of the files those changes created. So the mount is
# refused with a clear error, the state dir left as it was.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"
need python3 od

S=$T/store
mkdir -p "$T/src"
echo base >"$T/src/base"
st commit --store "$S" --tag base "$T/src"
mp=$T/mnt
state=$T/state
journal=$state/layers/1/journal

step "20 files, each fsync'd, then kill -9"
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$state" base
python3 - "$mp" <<'PY' || fail "writing the files"
import os, sys
for i in range(20):
    with open("%s/f%02d" % (sys.argv[1], i), "w") as f:
        f.write("file %d\n" % i)
        f.flush()
        os.fsync(f.fileno())
PY
kill -9 "$(daemon_pid "$mp")"
st umount "$mp"
synced=$(od -An -t u8 -j 8 -N 8 "$journal" | tr -d ' ')
size=$(stat -c %s "$journal")
echo "   journal $size bytes, $synced of them marked synced"
((synced > 16 && synced <= size)) || fail "the journal's header marks $synced bytes synced (of $size)"
cp "$journal" "$T/journal.good"
ndata=$(find "$state/layers/1/data" -type f | wc -l)

step "a byte flipped in a synced record: the mount is refused, the journal kept"
python3 - "$journal" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(60)  # inside the first transaction (the header is 16 bytes)
    b = f.read(1)
    f.seek(60)
    f.write(bytes([b[0] ^ 0x20]))
PY
cp "$journal" "$T/journal.bad"
mkdir -p "$mp"
expect_exit 1 "$STASIS" mount --store "$S" --cache "$T/cache" --state "$state" base "$mp"
grep -q "journal corrupt at byte" "$T/err" || fail "the refusal does not say why: $(cat "$T/err")"
! is_mounted "$mp" || fail "mounted on a damaged journal"
cmp "$journal" "$T/journal.bad" || fail "the refused mount changed the journal"
(($(find "$state/layers/1/data" -type f | wc -l) == ndata)) || fail "the refused mount removed data files"

step "the journal repaired: every file is there"
cp "$T/journal.good" "$journal"
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$state" base
for i in $(seq -w 0 19); do
        [[ $(cat "$mp/f$i") == "file $((10#$i))" ]] || fail "f$i is wrong or gone"
done
st umount "$mp"
exit 0
