#!/usr/bin/env bash
# mount-crash.sh — issue 4, acceptance 4: kill -9 of stasisd while readers
# are fetching leaves a mount that `stasis umount` cleans up (and that
# `stasis mount` on the same mountpoint cleans up too); the node cache holds
# no torn or wrong entry afterwards, and a new mount on it reads every byte
# right.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"

S=$T/store
src=$T/src
mkdir -p "$src"
for i in 1 2 3 4 5 6; do rand_file "$src/f$i" $((6 * 1024 * 1024 + i * 1111)); done
st commit --store "$S" --tag base "$src"
mp=$T/mnt

# cache_consistent DIR: every entry's bytes hash to its name, no temp files.
cache_consistent() {
        local e n=0
        for e in "$1"/v1/*/*; do
                [[ -e $e ]] || continue
                [[ $(tail -c +65 "$e" | sha256sum | cut -d' ' -f1) == $(basename "$e") ]] ||
                        fail "torn or wrong cache entry $e after kill -9"
                n=$((n + 1))
        done
        [[ -z $(find "$1/v1" -name '.tmp-*' 2>/dev/null) ]] || fail "temp files left in the cache"
        echo $n
}

readers() {
        local i
        for i in 1 2 3 4 5 6; do
                (while :; do cat "$mp/f$i" >/dev/null 2>&1 || exit 0; done) &
        done
}

delays=(0 0.01 0.03 0.05 0.08 0.12) # kill early: while the cache is filling
for trial in 1 2 3 4 5; do
        step "trial $trial: kill -9 while readers fetch"
        cache=$T/cache-$trial
        mount_snap "$mp" --store "$S" --cache "$cache" base
        pid=$(daemon_pid "$mp")
        readers
        sleep "${delays[trial]}"
        kill -9 "$pid"
        wait 2>/dev/null || true
        if ((trial % 2)); then
                st umount "$mp"
        else
                # `stasis mount` again on the dead mountpoint cleans it up first.
                mount_snap "$mp" --store "$S" --cache "$cache" base
                cmp "$src/f1" "$mp/f1" || fail "remount after kill -9 read f1 wrong"
                st umount "$mp"
        fi
        ! is_mounted "$mp" || fail "still mounted after stasis umount"
        ls "$mp" >/dev/null || fail "mountpoint unusable after cleanup"
        [[ -z $(ls "$STASIS_RUN_DIR/mounts") ]] || fail "registry entry left: $(ls "$STASIS_RUN_DIR/mounts")"
        n=$(cache_consistent "$cache")
        echo "   cache holds $n good entries"
done

# `stasis umount` at once after the kill: the daemon may still be exiting
# (its threads finish their requests first), which is not one to ask for a
# clean unmount that the open file would refuse (EBUSY): its mount is a
# dead one, detached lazily, the holder's descriptor left to fail.
for trial in 1 2 3 4 5; do
        step "trial $trial: umount right after kill -9, a file held open on the mount"
        mount_snap "$mp" --store "$S" --cache "$T/cache-$trial" base
        pid=$(daemon_pid "$mp")
        sleep 60 <"$mp/f1" &
        holder=$!
        readers
        sleep "${delays[trial]}"
        kill -9 "$pid"
        st umount "$mp"
        ! is_mounted "$mp" || fail "still mounted after stasis umount"
        kill "$holder"
        wait 2>/dev/null || true
done

step "a new mount on a crashed-into cache reads every byte right"
mount_snap "$mp" --store "$S" --cache "$T/cache-1" base
for i in 1 2 3 4 5 6; do cmp "$src/f$i" "$mp/f$i" || fail "f$i read wrong"; done
(($(counter "$mp" cache_bad_entries) == 0)) || fail "the cache had bad entries"
(($(counter "$mp" errors) == 0)) || fail "read errors"
st umount "$mp"

step "one daemon per state dir, one mount per mountpoint; after a kill -9, the state dir mounts again"
mount_snap "$mp" --store "$S" --cache "$T/cache-1" --state "$T/state" base
echo kept >"$mp/new"
mp2=$T/mnt2
mkdir -p "$mp2"
MOUNTS+=("$(realpath "$mp2")")
expect_exit 1 "$STASIS" mount --store "$S" --cache "$T/cache-1" --state "$T/state" base "$mp2"
grep -q "state dir .* is in use by another stasisd, pid $(daemon_pid "$mp")" "$T/err" ||
        fail "the refusal does not name the daemon: $(cat "$T/err")"
! is_mounted "$mp2" || fail "a second daemon mounted the same state dir"
# One mount per mountpoint too: a second on top would hide the first from
# status, checkpoint and umount while its sandbox kept running on it.
expect_exit 1 "$STASIS" mount --store "$S" --cache "$T/cache-1" --state "$T/state-other" base "$mp"
grep -q "is a stasis mount already" "$T/err" || fail "the refusal does not say why: $(cat "$T/err")"
(($(grep -c " $(realpath "$mp") fuse.stasis " /proc/mounts) == 1)) || fail "two stasis mounts stacked on $mp"
[[ $(cat "$mp/new") == kept ]] || fail "the first mount was disturbed"
kill -9 "$(daemon_pid "$mp")"
mount_snap "$mp2" --store "$S" --cache "$T/cache-1" --state "$T/state" base
[[ $(cat "$mp2/new") == kept ]] || fail "the state dir's file is not there after the remount"
# Cleaning up the dead mount leaves the live daemon's socket and pid file
# (the same paths, in the same state dir) alone.
st umount "$mp"
counter "$mp2" reads >/dev/null
[[ -f $T/state/stasisd.pid ]] || fail "cleaning up the dead mount removed the live daemon's pid file"
st umount "$mp2"

step "umount of something that is not a stasis mount fails"
expect_exit 1 "$STASIS" umount "$T"
