#!/usr/bin/env bash
# import-runc.sh — issue 3, acceptance 4: an OCI image built with umoci
# (busybox rootfs, two layers, a whiteout, an image config) is imported, the
# snapshot is mounted by stasis (read-only root), and runc runs a container
# on it whose process is the image's own Entrypoint + Cmd, Env, User and
# WorkingDir, as `stasis inspect --json` reports them.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"
need runc umoci
BUSYBOX=${BUSYBOX:-/bin/busybox}
[[ -x $BUSYBOX ]] && file -L "$BUSYBOX" 2>/dev/null | grep -q "statically linked" ||
        ldd "$BUSYBOX" 2>&1 | grep -q "not a dynamic" || skip "needs a static busybox (Debian busybox-static)"

S=$T/store
IMG=$T/img
step "build a busybox image with umoci"
umoci init --layout "$IMG"
umoci new --image "$IMG:app"
umoci unpack --image "$IMG:app" "$T/b" >/dev/null
R=$T/b/rootfs
mkdir -p "$R"/{bin,etc,proc,sys,dev,tmp,root,srv/app}
cp "$BUSYBOX" "$R/bin/busybox"
for a in $("$BUSYBOX" --list); do
        [[ -e $R/bin/$a ]] || ln -s busybox "$R/bin/$a"
done
echo "root:x:0:0:root:/root:/bin/sh" >"$R/etc/passwd"
echo "app:x:1000:1000:app:/srv/app:/bin/sh" >>"$R/etc/passwd"
echo "root:x:0:" >"$R/etc/group"
echo "secret, deleted by layer 2" >"$R/srv/app/gone"
rand_file "$R/srv/app/data" $((2 * 1024 * 1024))
chown -R 1000:1000 "$R/srv/app"
umoci repack --refresh-bundle --image "$IMG:app" "$T/b"
rm "$R/srv/app/gone"
echo "served from an imported snapshot" >"$R/srv/app/hello"
umoci repack --refresh-bundle --image "$IMG:app" "$T/b"
sha=$(sha256sum "$R/srv/app/data" | cut -d' ' -f1)
umoci config --image "$IMG:app" --config.entrypoint /bin/sh --config.entrypoint -c \
        --config.cmd 'id -u; pwd; echo "$GREETING"; cat hello; sha256sum data; ls gone 2>&1; echo done' \
        --config.env GREETING=hello-from-env --config.env PATH=/bin \
        --config.user 1000:1000 --config.workingdir /srv/app

step "import, and read the config back"
st import --store "$S" --tag app "oci:$IMG:app" >/dev/null
st inspect --store "$S" --json app >"$T/inspect.json"
args=$(jq -c '.image.config.Entrypoint + .image.config.Cmd' "$T/inspect.json")
env=$(jq -c '.image.config.Env' "$T/inspect.json")
cwd=$(jq -r '.image.config.WorkingDir' "$T/inspect.json")
user=$(jq -r '.image.config.User' "$T/inspect.json")
[[ $args != null && $cwd == /srv/app && $user == 1000:1000 ]] || fail "image config missing: $(cat "$T/inspect.json")"

step "mount it and run the image's process with runc"
mp=$T/mnt
mount_snap "$mp" --store "$S" --cache "$T/cache" app
bundle=$T/bundle
mkdir -p "$bundle"
(cd "$bundle" && runc spec)
jq --arg root "$(realpath "$mp")" --argjson args "$args" --argjson env "$env" --arg cwd "$cwd" '
        .root = {path: $root, readonly: true}
        | .process.terminal = false
        | .process.args = $args
        | .process.env = $env
        | .process.cwd = $cwd
        | .process.user = {uid: 1000, gid: 1000}
        | .mounts |= map(select(.destination != "/tmp"))
        | .mounts += [{destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev"]}]
' "$bundle/config.json" >"$bundle/config.new" && mv "$bundle/config.new" "$bundle/config.json"
id=stasis-import-itest-$$
rc=0
timeout 120 runc run --bundle "$bundle" "$id" >"$T/container.out" 2>"$T/container.err" </dev/null || rc=$?
runc delete --force "$id" >/dev/null 2>&1 || true
if ((rc != 0)); then
        cat "$T/container.out" "$T/container.err" >&2
        if grep -qiE "cgroup" "$T/container.err" && ! grep -q "^done$" "$T/container.out"; then
                skip "runc cannot run containers on this machine: $(head -1 "$T/container.err")"
        fi
        fail "runc run exited $rc"
fi
cat "$T/container.out"
grep -qx "1000" "$T/container.out" || fail "the process did not run as the image's user"
grep -qx "/srv/app" "$T/container.out" || fail "the process did not start in the image's WorkingDir"
grep -qx "hello-from-env" "$T/container.out" || fail "the image's Env did not reach the process"
grep -qx "served from an imported snapshot" "$T/container.out" || fail "layer 2's file was not read"
grep -q "^$sha  data$" "$T/container.out" || fail "the container read srv/app/data wrong"
grep -q "gone.*No such file" "$T/container.out" || fail "the whited-out file is visible"
grep -qx "done" "$T/container.out" || fail "the container did not finish"
(($(counter "$mp" errors) == 0)) || fail "read errors during the container run"
st umount "$mp"
