#!/usr/bin/env bash
# wl-posix.sh — issue 5, acceptance 1: the POSIX conformance suite
# (wl_posix.py: errnos, permission and ownership rules, setuid/setgid
# clearing, sticky and setgid directories, timestamps, link counts, rename
# corner cases, ACLs, xattrs, fallocate, mmap, readdir under changes) gives
# the same output on a stasis mount as on a native directory. Then the
# mount's tree survives a remount on the same state dir unchanged, and an
# empty mount (--empty) passes the suite too.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"
need python3
suite=$SRC_DIR/tests/integration/wl_posix.py

S=$T/store
mkdir -p "$T/src/etc" "$T/src/usr/bin"
echo "root:x:0:0::/root:/bin/sh" >"$T/src/etc/passwd"
rand_file "$T/src/usr/bin/tool" 300000
st commit --store "$S" --tag base "$T/src"

step "native directory"
mkdir -p "$T/native/t"
python3 "$suite" "$T/native/t" >"$T/native.out" || fail "the suite failed on a native directory"
echo "   $(wc -l <"$T/native.out") checks"

step "stasis mount of a base"
mp=$T/mnt
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$T/state" base
mkdir "$mp/t"
python3 "$suite" "$mp/t" >"$T/mount.out" || fail "the suite failed on the mount"
if ! cmp -s "$T/native.out" "$T/mount.out"; then
        diff -u "$T/native.out" "$T/mount.out" >&2 || true
        fail "the mount does not behave as a native directory"
fi

step "remount on the same state: the same tree"
"$TREEDIGEST" --list "$mp" >"$T/before.list"
st umount "$mp"
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$T/state" base
"$TREEDIGEST" --list "$mp" >"$T/after.list"
if ! cmp -s "$T/before.list" "$T/after.list"; then
        diff -u "$T/before.list" "$T/after.list" | head -40 >&2 || true
        fail "the tree changed across a remount"
fi
cmp "$T/src/usr/bin/tool" "$mp/usr/bin/tool" || fail "a base file changed"
st umount "$mp"

step "an empty mount"
mount_snap "$mp" --state "$T/state-empty" --cache "$T/cache" --empty
[[ -z $(ls -A "$mp") ]] || fail "--empty is not empty"
mkdir "$mp/t"
python3 "$suite" "$mp/t" >"$T/empty.out" || fail "the suite failed on the empty mount"
cmp -s "$T/native.out" "$T/empty.out" || { diff -u "$T/native.out" "$T/empty.out" >&2; fail "empty mount differs"; }
st umount "$mp"
