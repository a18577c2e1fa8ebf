#!/usr/bin/env bash
# mount-large.sh — issue 4, acceptance 1 at scale: a snapshot of a >= 1 GB
# tree (a system directory, committed in place: commit reads with O_NOATIME)
# mounts without reading one pack byte, and the tree read back through the
# mountpoint digests equal to the source, atimes included. The source is a
# private copy (cp -a): other processes on the machine read, and package
# installs relink, the live system directory while the test runs.
#   STASIS_LARGE_DIR   the tree (default: /usr/lib/x86_64-linux-gnu, else /usr)
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"

dir=${STASIS_LARGE_DIR:-/usr/lib/x86_64-linux-gnu}
[[ -d $dir ]] || dir=/usr
kb=$(du -sk --apparent-size "$dir" | cut -f1)
((kb >= 1024 * 1024)) || skip "$dir holds only $((kb / 1024)) MiB; set STASIS_LARGE_DIR to a tree of >= 1 GiB"
S=$T/store

step "copy $dir ($((kb / 1024)) MiB) and commit the copy"
cp -a "$dir" "$T/src"
settle_atimes "$T/src"
"$TREEDIGEST" --list "$T/src" >"$T/src.list"
st commit --store "$S" --tag large "$T/src"

step "mount: no pack bytes before the first file access"
mp=$T/mnt
t0=$(date +%s%N)
mount_snap "$mp" --store "$S" --cache "$T/cache" large
t1=$(date +%s%N)
echo "   mount ready in $(((t1 - t0) / 1000000)) ms"
(($(counter "$mp" bytes_fetched) == 0)) || fail "mount read pack bytes"
find "$mp" -xdev >/dev/null
(($(counter "$mp" bytes_fetched) == 0)) || fail "a metadata walk read pack bytes"

step "digest through the mountpoint equals the source"
"$TREEDIGEST" --list "$mp" >"$T/mnt.list"
if ! cmp -s "$T/src.list" "$T/mnt.list"; then
        diff -u "$T/src.list" "$T/mnt.list" >"$T/diff" || true
        head -40 "$T/diff" >&2
        fail "treedigest of the mount differs from the copy of $dir"
fi
(($(counter "$mp" errors) == 0)) || fail "read errors"
"$STASIS" status "$mp"
st umount "$mp"
