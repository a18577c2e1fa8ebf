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
crash_base "$S"
mp=$T/mnt
state=$T/state

# The writer (wl_crash_writer.py) acknowledges an operation in $ack only
# after the syscalls that make it durable returned; wl_crash_check.py checks
# a remount against the acknowledgements.
cp "$T/src/base/big" "$T/big.model"
ack=$T/ack
: >"$ack"
total=0
for ((trial = 1; trial <= trials; trial++)); do
        mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$state" base
        pid=$(daemon_pid "$mp")
        acked=$(wc -l <"$ack")
        python3 "$(dirname "$0")/wl_crash_writer.py" "$mp" "$ack" "$trial" 2>"$T/writer.err" &
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
        out=$(python3 "$(dirname "$0")/wl_crash_check.py" "$mp" "$ack" "$T/big.model") || {
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
