#!/usr/bin/env bash
# fuse-transport.sh — FUSE over io_uring (fs/uring.c). Where the kernel has
# it (fuse.enable_uring), a mount made while it is on takes its requests over
# io_uring and says so in `stasis status`; one made while it is off uses
# /dev/fuse. Both give the same bytes and metadata for the same work: a
# tree of small files written, read back, renamed, hardlinked, chmodded,
# truncated and fsync'd, then compared with the same work on a native dir.
# The rest of the suite runs over io_uring in the ASan pass of `make test`
# (scripts/ci-test.sh) and over /dev/fuse in the gcc pass.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"

param=/sys/module/fuse/parameters/enable_uring
[[ -w $param ]] || skip "this kernel has no FUSE over io_uring ($param)"
[[ $(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo 0) == 0 ]] ||
        skip "io_uring is disabled here (kernel.io_uring_disabled)"
orig=$(cat "$param")
restore_param() { echo "$orig" >"$param" 2>/dev/null || true; }
on_exit_hook() { restore_param; }

# work DIR: the same metadata-heavy work anywhere.
work() {
        local d=$1 i
        mkdir -p "$d/a/b" "$d/c"
        for i in $(seq 1 300); do
                printf 'file %d\n%0*d\n' "$i" $((i * 7)) 0 >"$d/a/b/f$i"
        done
        head -c 3000000 "$T/rand" >"$d/c/big"
        dd if="$T/rand" of="$d/c/big" bs=4096 seek=100 count=3 conv=notrunc status=none
        truncate -s 1234567 "$d/c/big"
        for i in $(seq 1 50); do mv "$d/a/b/f$i" "$d/c/g$i"; done
        ln "$d/c/g1" "$d/a/hard"
        chmod 0751 "$d/a/b/f60"
        touch -d @1700000000.123456789 "$d/a/b/f61"
        rm "$d/a/b/f70"
        python3 -c 'import os,sys; fd=os.open(sys.argv[1], os.O_WRONLY|os.O_CREAT, 0o644); os.write(fd, b"x"*100000); os.fsync(fd); os.close(fd)' "$d/c/synced"
}

# listing DIR: everything but the times the work did not set itself (and
# the size of directories, which is the filesystem's own business).
listing() {
        (cd "$1" && { find . -type d -printf '%P %y %m %U %G %n\n' && find . ! -type d -printf '%P %y %m %U %G %s %n %l\n'; } | sort &&
                find . -type f -print0 | xargs -0 sha256sum | sort && stat -c '%n %y' a/b/f61)
}

rand_file "$T/rand" 4000000
mkdir -p "$T/native"
work "$T/native"
listing "$T/native" >"$T/native.list"

for mode in io_uring /dev/fuse; do
        step "a mount made with fuse.enable_uring $([[ $mode == io_uring ]] && echo on || echo off)"
        mp=$T/mnt-${mode//\//}
        [[ $mode == io_uring ]] && echo Y >"$param" || echo N >"$param"
        mount_snap "$mp" --empty --cache "$T/cache" --state "$T/state-${mode//\//}"
        restore_param
        t=$("$STASIS" status --json "$mp" | jq -r .fuse_transport)
        [[ $t == "$mode" ]] || fail "the mount's requests come over '$t', not $mode"
        "$STASIS" status "$mp" | grep -q "^fuse transport *$mode\$" || fail "stasis status does not name the transport"
        work "$mp"
        listing "$mp" >"$T/mount.list"
        cmp -s "$T/native.list" "$T/mount.list" ||
                { diff "$T/native.list" "$T/mount.list" | head -20 >&2; fail "over $mode the tree differs from the native one"; }
        cmp "$T/native/c/big" "$mp/c/big" || fail "over $mode a file reads back different bytes"
        "$TREEDIGEST" "$mp" >"$T/mount.digest"
        st umount "$mp"
        # Remounted (over /dev/fuse or io_uring, whatever the kernel says now):
        # what the daemon replied to is there.
        mount_snap "$mp" --empty --cache "$T/cache" --state "$T/state-${mode//\//}"
        "$TREEDIGEST" "$mp" >"$T/again.digest"
        cmp -s "$T/mount.digest" "$T/again.digest" || fail "after a remount the tree written over $mode differs"
        st umount "$mp"
done
