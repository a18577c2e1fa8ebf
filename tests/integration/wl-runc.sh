#!/usr/bin/env bash
# wl-runc.sh — issue 5, acceptance 5: runc runs a container on a stasis
# mount of a busybox rootfs with a writable root: it writes, overwrites and
# deletes files (base ones included), creates a directory tree (mkdir -p),
# unpacks a tarball with tar -x; afterwards every change is visible through
# the mountpoint, and again after a remount on the same state dir.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"
need runc
need_static_busybox

S=$T/store
rootfs=$T/rootfs
step "build a busybox rootfs"
busybox_rootfs "$rootfs" var/data data
echo "delete me" >"$rootfs/etc/obsolete"
rand_file "$rootfs/var/data/blob" $((3 * 1024 * 1024))
# the tarball the container unpacks, and what it must unpack to
mkdir -p "$T/tarsrc/pkg/sub/deeper"
for i in $(seq 1 200); do echo "file $i" >"$T/tarsrc/pkg/sub/f$i"; done
rand_file "$T/tarsrc/pkg/sub/deeper/bin" 500000
ln -s sub/f1 "$T/tarsrc/pkg/link"
tar -C "$T/tarsrc" -cf "$rootfs/data/pkg.tar" pkg
st commit --store "$S" --tag busybox "$rootfs"

mp=$T/mnt
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$T/state" busybox
bundle=$T/bundle
mkdir -p "$bundle"
(cd "$bundle" && runc spec)
script='set -e
echo hello > /root/hello
dd if=/dev/zero of=/var/data/blob bs=4096 count=1 seek=100 conv=notrunc 2>/dev/null
rm /etc/obsolete
mkdir -p /srv/a/b/c/d
echo leaf > /srv/a/b/c/d/leaf
cd /opt 2>/dev/null || mkdir /opt && cd /opt && tar -xf /data/pkg.tar
rm /opt/pkg/sub/f7
mv /opt/pkg/sub/f8 /opt/pkg/renamed
sha256sum /var/data/blob /opt/pkg/sub/deeper/bin
sync
echo done'
jq --arg root "$(realpath "$mp")" --arg script "$script" '
        .root = {path: $root, readonly: false}
        | .process.terminal = false
        | .process.args = ["/bin/sh", "-c", $script]
' "$bundle/config.json" >"$bundle/config.new" && mv "$bundle/config.new" "$bundle/config.json"
id=stasis-wl-$$
rc=0
step "run the container"
timeout 120 runc run --bundle "$bundle" "$id" >"$T/container.out" 2>"$T/container.err" </dev/null || rc=$?
runc delete --force "$id" >/dev/null 2>&1 || true
cat "$T/container.out"
if ((rc != 0)); then
        cat "$T/container.err" >&2
        if grep -qiE "cgroup" "$T/container.err" && ! grep -q "^done$" "$T/container.out"; then
                skip "runc cannot run containers on this machine: $(head -1 "$T/container.err")"
        fi
        fail "runc run exited $rc"
fi
grep -q "^done$" "$T/container.out" || fail "the container did not finish"

# the expected state, built natively
cp "$rootfs/var/data/blob" "$T/blob"
dd if=/dev/zero of="$T/blob" bs=4096 count=1 seek=100 conv=notrunc status=none
mkdir -p "$T/want" && (cd "$T/want" && "$BUSYBOX" tar -xf "$rootfs/data/pkg.tar")
rm "$T/want/pkg/sub/f7" && mv "$T/want/pkg/sub/f8" "$T/want/pkg/renamed"

# listing DIR: names, types, modes, owners, link targets, contents
# (no times: the container's renames happen at other moments than ours).
listing() {
        (cd "$1" && find . -printf '%P %y %m %U %G %l\n' | sort && find . -type f -exec sha256sum {} + | sort)
}
check() {
        [[ $(cat "$mp/root/hello") == hello ]] || fail "$1: /root/hello"
        cmp "$mp/var/data/blob" "$T/blob" || fail "$1: /var/data/blob"
        [[ ! -e $mp/etc/obsolete ]] || fail "$1: /etc/obsolete came back"
        [[ $(cat "$mp/srv/a/b/c/d/leaf") == leaf ]] || fail "$1: mkdir -p tree"
        listing "$mp/opt" >"$T/got.list"
        listing "$T/want" >"$T/want.list"
        cmp -s "$T/got.list" "$T/want.list" || { diff "$T/want.list" "$T/got.list" | head >&2; fail "$1: tar -x result differs from a native tar -x"; }
        grep -q "$(sha256sum "$T/blob" | cut -d' ' -f1)  /var/data/blob" "$T/container.out" ||
                fail "$1: the container saw other bytes"
}
step "every change visible through the mountpoint"
check "after the container"
step "and after a remount on the same state"
st umount "$mp"
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$T/state" busybox
check "after remount"
st umount "$mp"
