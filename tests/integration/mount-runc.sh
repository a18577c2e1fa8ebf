#!/usr/bin/env bash
# mount-runc.sh — issue 4, acceptance 5: a busybox rootfs committed to the
# store, mounted by stasis (read-only root), runs a real runc container that
# reads files and walks the whole tree through the mount.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"
need runc
need_static_busybox

S=$T/store
rootfs=$T/rootfs
step "build a busybox rootfs"
busybox_rootfs "$rootfs" sbin usr/bin var/data
echo "stasis-rootfs" >"$rootfs/etc/hostname"
echo "stasis says hello from a lazy rootfs" >"$rootfs/etc/motd"
rand_file "$rootfs/var/data/blob" $((3 * 1024 * 1024))
sha=$(sha256sum "$rootfs/var/data/blob" | cut -d' ' -f1)
st commit --store "$S" --tag busybox "$rootfs"

step "mount it and run a container on it"
mp=$T/mnt
mount_snap "$mp" --store "$S" --cache "$T/cache" busybox
bundle=$T/bundle
mkdir -p "$bundle"
(cd "$bundle" && runc spec)
jq --arg root "$(realpath "$mp")" '
        .root = {path: $root, readonly: true}
        | .process.terminal = false
        | .process.args = ["/bin/sh", "-c",
                "cat /etc/motd; sha256sum /var/data/blob; ls -lR / > /tmp/ls 2>&1 || true; ls -lR /bin | wc -l; echo done"]
        | .mounts |= map(select(.destination != "/tmp"))
        | .mounts += [{destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev"]}]
' "$bundle/config.json" >"$bundle/config.new" && mv "$bundle/config.new" "$bundle/config.json"
id=stasis-itest-$$
rc=0
timeout 120 runc run --bundle "$bundle" "$id" >"$T/container.out" 2>"$T/container.err" </dev/null || rc=$?
runc delete --force "$id" >/dev/null 2>&1 || true
if ((rc != 0)); then
        cat "$T/container.out" "$T/container.err" >&2
        if grep -qiE "cgroup" "$T/container.err" &&
                ! grep -q "stasis says hello" "$T/container.out"; then
                skip "runc cannot run containers on this machine: $(head -1 "$T/container.err")"
        fi
        fail "runc run exited $rc"
fi
cat "$T/container.out"
grep -q "stasis says hello from a lazy rootfs" "$T/container.out" || fail "container did not read /etc/motd"
grep -q "^$sha " "$T/container.out" || fail "container read /var/data/blob wrong"
grep -q "^done$" "$T/container.out" || fail "container did not finish"
links=$(grep -E '^[0-9]+$' "$T/container.out" | head -1)
((links > 100)) || fail "container saw only $links lines in ls -lR /bin"
(($(counter "$mp" errors) == 0)) || fail "read errors during the container run"
st umount "$mp"
