#!/usr/bin/env bash
# roundtrip.sh — acceptance 1: a commit and restore of a tree holding
# everything a Linux rootfs holds is bit-exact (treedigest listings equal:
# data, holes, types, modes incl. setuid/setgid/sticky, owners, ns
# atime/mtime, devices, symlinks, hardlink groups, xattrs incl.
# security.capability, trusted.*, POSIX ACLs); commit leaves the source's
# atimes alone; all-hole chunks cost no pack bytes.
source "$(dirname "$0")/lib.sh"
need setfattr setfacl setcap mknod jq
((EUID == 0)) || skip "needs root (mknod, chown, trusted.* xattrs)"

S=$T/store
src=$T/src
mkdir "$src"

step "build the source tree"
cd "$src"
# Regular files: empty, small, multi-chunk (256 KiB default chunks), odd sizes.
: >empty
echo "hello, stasis" >small
rand_file multi $((3 * 1024 * 1024 + 1234))
rand_file exact_chunk $((256 * 1024))
head -c $((1024 * 1024)) /dev/zero >zeros_written # zero bytes that are data, not holes
printf 'x' >one_byte
# Sparse files (4 KiB granularity).
truncate -s 64M all_hole
truncate -s 1M hole_mid_chunk # data | hole (inside chunk 0) | data
dd if=/dev/urandom of=hole_mid_chunk bs=4096 count=25 conv=notrunc status=none
dd if=/dev/urandom of=hole_mid_chunk bs=4096 seek=40 count=60 conv=notrunc status=none
truncate -s 10M hole_lead_trail # hole, one data block in the middle, hole to the end
dd if=/dev/urandom of=hole_lead_trail bs=4096 seek=1000 count=1 conv=notrunc status=none
truncate -s 5M hole_chunks # whole all-hole chunks between data chunks
dd if=/dev/urandom of=hole_chunks bs=256K count=1 conv=notrunc status=none
dd if=/dev/urandom of=hole_chunks bs=256K seek=19 count=1 conv=notrunc status=none
truncate -s $((2 * 1024 * 1024 + 100)) hole_unaligned_end
dd if=/dev/urandom of=hole_unaligned_end bs=1 seek=$((2 * 1024 * 1024)) count=100 conv=notrunc status=none
# Directories, nested and empty; odd names.
mkdir -p a/b/c empty_dir sticky setgid_dir private
echo deep >a/b/c/deep
printf 'x' >"a/name with spaces"
printf 'y' >"a/$(printf 'new\nline')"
printf 'z' >"a/ünïcödé-☃"
printf 'w' >"a/$(printf '%0255d' 0)" # a 255-byte name
# Symlinks: relative, absolute, dangling, to a directory, 4000-byte target.
ln -s small a/rel_link
ln -s /etc/passwd abs_link
ln -s does/not/exist dangling
ln -s a/b dir_link
ln -s "$(for i in $(seq 2000); do printf 'd/'; done)" long_link
(($(readlink long_link | wc -c) == 4001)) || fail "long_link target is not 4000 bytes"
# Hardlink groups across directories.
rand_file a/h1 5000
ln a/h1 a/b/h2
ln a/h1 empty_dir/../h3 # at the root
echo two >a/b/c/g1
ln a/b/c/g1 setgid_dir/g2
# FIFO, char and block devices.
mkfifo fifo
mknod chardev c 1 3
mknod blockdev b 7 0
mknod a/chardev2 c 136 7
# Owners (chown first: it clears setuid/setgid and security.capability).
chown 1234:5678 small a/b
chown -h 4321:8765 a/rel_link
chown 65534:65534 a/b/c/deep
chown 1234:5678 chardev fifo
# Mode bits: setuid, setgid, sticky, none at all.
printf '#!/bin/sh\n' >suid && chmod 4755 suid
printf '#!/bin/sh\n' >sgid && chmod 2751 sgid
printf '#!/bin/sh\n' >suid_sgid && chown 42:42 suid_sgid && chmod 6711 suid_sgid
chmod 1777 sticky
chmod 2775 setgid_dir
chmod 0700 private
printf 'secret' >nomode && chmod 000 nomode
chmod 0600 chardev
# Extended attributes: user.*, trusted.*, security.capability, binary values.
setfattr -n user.comment -v "a comment" small
setfattr -n user.bin -v 0x00ff0001fe small
setfattr -n user.empty small
setfattr -n trusted.overlay.opaque -v y a/b
setfattr -n trusted.big -v "0x$(head -c 3000 /dev/urandom | od -An -tx1 | tr -d ' \n')" multi
setfattr -n user.dir -v yes a
setfattr -n trusted.link -v t dangling 2>/dev/null || true # allowed on symlinks for trusted.*
printf 'cap' >capfile
setcap cap_net_raw,cap_net_bind_service+ep capfile
getfattr -n security.capability capfile >/dev/null 2>&1 || fail "setcap did not set security.capability"
# POSIX ACLs: access and default.
setfacl -m u:1234:rwx,g:5678:r-x,m::rwx small
setfacl -m u:4321:r-x a/b
setfacl -d -m u:1234:rwx,g::r-x,o::--- a/b
setfacl -d -m u:99:r a
# Times with nanoseconds: atime and mtime differ on purpose. Directories
# last, deepest first, since adding entries changes a directory's mtime.
ns_time() { # ns_time PATH MTIME ATIME
        touch -h -m -d "$2" "$1"
        touch -h -a -d "$3" "$1"
}
i=0
while IFS= read -r -d '' p; do
        i=$((i + 1))
        ns_time "$p" "2001-02-03 04:05:06.$(printf '%09d' $((i * 7919 + 123456789 % 1000000000)))" \
                "2011-12-13 14:15:16.$(printf '%09d' $((i * 104729 % 1000000000)))"
done < <(find . -mindepth 1 ! -type d -print0)
while IFS= read -r -d '' p; do
        i=$((i + 1))
        ns_time "$p" "1999-09-09 09:09:09.$(printf '%09d' $((i * 31337 % 1000000000)))" \
                "2020-02-02 02:02:02.$(printf '%09d' $((i * 271828 % 1000000000)))"
done < <(find . -depth -mindepth 1 -type d -print0)
ns_time . "2002-02-02 02:02:02.020202020" "2003-03-03 03:03:03.030303030"
cd - >/dev/null

# Sanity of the fixture itself: the holes really are holes here.
(($(stat -c %b "$src/all_hole") == 0)) || skip "this file system does not keep holes"

step "settle symlink atimes, then list the source"
# readlink() may update a symlink's atime (relatime); nothing can read a
# target without that, so read every target once before we compare.
settle_atimes "$src"
"$TREEDIGEST" --list "$src" >"$T/src.before"
grep -q 'xattr:security.capability=' "$T/src.before" || fail "listing lacks security.capability"
grep -q 'xattr:system.posix_acl_default=' "$T/src.before" || fail "listing lacks default ACLs"
grep -q 'xattr:trusted.overlay.opaque=' "$T/src.before" || fail "listing lacks trusted.* xattrs"

step "commit"
st commit --store "$S" --tag rt --json "$src" >"$T/commit.json"
jq -e . "$T/commit.json" >/dev/null || fail "commit --json is not one JSON document"
digest=$(jq -r .digest "$T/commit.json")
[[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] || fail "commit printed no digest: $digest"

step "commit left the source untouched (atimes included)"
"$TREEDIGEST" --list "$src" >"$T/src.after"
if ! cmp -s "$T/src.before" "$T/src.after"; then
        diff -u "$T/src.before" "$T/src.after" | head -40 >&2 || true
        fail "commit changed the source tree (atimes?)"
fi

step "restore by tag and by digest; compare"
st restore --store "$S" rt "$T/dst"
same_tree "$src" "$T/dst"
st restore --store "$S" "$digest" "$T/dst2"
same_tree "$src" "$T/dst2"

step "holes are holes in the restored tree"
(($(stat -c %b "$T/dst/all_hole") == 0)) || fail "all_hole: $(stat -c %b "$T/dst/all_hole") blocks allocated"
blocks=$(stat -c %b "$T/dst/hole_mid_chunk")
((blocks * 512 <= 85 * 4096 + 8192)) || fail "hole_mid_chunk: $blocks blocks, holes not recreated"
blocks=$(stat -c %b "$T/dst/hole_lead_trail")
((blocks * 512 <= 8192)) || fail "hole_lead_trail: $blocks blocks, holes not recreated"
grep -q '^all_hole .* extents=-$' "$T/listing.b" || fail "all_hole has data extents after restore"

step "an all-hole chunk costs no pack bytes"
mkdir "$T/nohole" "$T/withhole"
rand_file "$T/nohole/data" 300000
cp -a "$T/nohole/data" "$T/withhole/data"
truncate -s 64M "$T/withhole/all_hole"
st commit --store "$T/s1" "$T/nohole" >/dev/null
st commit --store "$T/s2" --json "$T/withhole" >"$T/withhole.json"
p1=$(pack_bytes "$T/s1")
p2=$(pack_bytes "$T/s2")
((p1 > 0)) || fail "no pack bytes for 300000 random bytes"
((p1 == p2)) || fail "a 64 MiB all-hole file cost $((p2 - p1)) pack bytes"
st restore --store "$T/s2" "$(jq -r .digest "$T/withhole.json")" "$T/withhole.out"
same_tree "$T/withhole" "$T/withhole.out"
(($(stat -c %b "$T/withhole.out/all_hole") == 0)) || fail "restored all_hole is not a hole"

step "the store verifies clean"
st verify --store "$S"
