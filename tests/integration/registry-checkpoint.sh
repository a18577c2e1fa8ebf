#!/usr/bin/env bash
# registry-checkpoint.sh — issues 6 and 7: `stasis checkpoint|pause --push
# oci://HOST:PORT/REPO:TAG` against real registries (Debian's
# docker-registry on 127.0.0.1):
#   - a changed mount, checkpointed with --push: the digest is the
#     registry's Docker-Content-Digest for the tag, and bytes_uploaded is
#     exactly the bytes of the blobs the registry gained (the manifest aside);
#   - `stasis mount oci://…:TAG` elsewhere (lazy) shows every change,
#     bit-exact against the first mount; a checkpoint of that oci:// mount
#     publishes the next generation to the registry (new blobs written on
#     the node first), and it mounts bit-exact elsewhere;
#   - again with no change: the same digest, bytes_uploaded 0, the registry's
#     storage untouched; after a change: a new digest;
#   - `stasis pause --push` with wrong credentials (htpasswd registry) and to
#     a read-only registry (the push fails after the snapshot): exit 1, one
#     line naming the registry and the reason, no secret anywhere; the mount
#     is not paused, takes writes, and its cgroup (if one can be made) is
#     thawed; with good credentials the pause works.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"
source "$(dirname "$0")/libregistry.sh"
need docker-registry jq curl python3 htpasswd

listing() { "$TREEDIGEST" --list --no-atime "$1" | sed 's/ extents=[^ ]*//'; }
export HOME=$T/home # no stray ~/.docker/config.json
mkdir -p "$HOME"
PASS=s3cr3t-Pa55word

CG=
CG2=$(awk '$9 == "cgroup2" {print $5; exit}' /proc/self/mountinfo)
if [[ -n $CG2 && -w $CG2 ]] && mkdir "$CG2/stasis-regck-$$" 2>/dev/null; then
        CG=$CG2/stasis-regck-$$
        [[ -f $CG/cgroup.freeze ]] || { rmdir "$CG"; CG=; }
fi
on_exit_hook() {
        registry_cleanup
        if [[ -n $CG ]]; then
                echo 0 >"$CG/cgroup.freeze" 2>/dev/null
                rmdir "$CG" 2>/dev/null || true
        fi
        true
}
frozen() { [[ -n $CG ]] && grep -q '^frozen 1$' "$CG/cgroup.events"; }
accept='application/vnd.oci.image.manifest.v1+json'
reg_digest() { # reg_digest HOST REPO TAG: the registry's Docker-Content-Digest
        curl -sI -H "Accept: $accept" "http://$1/v2/$2/manifests/$3" |
                tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" {print $2}'
}
reg_blobs() { # reg_blobs DIR: "<hex> <size>" of every blob in a registry's storage
        find "$1/data/docker/registry/v2/blobs/sha256" -name data -type f -printf '%h %s\n' 2>/dev/null |
                awk '{n = split($1, p, "/"); print p[n], $2}' | sort
}
# writable_and_thawed WHAT MP: the mount takes writes, is not paused, and
# its cgroup is not frozen
writable_and_thawed() {
        echo "$1" >"$2/probe-$1" || fail "$1: the mount does not take writes"
        [[ $(cat "$2/probe-$1") == "$1" ]] || fail "$1: the write does not read back"
        rm "$2/probe-$1"
        [[ $("$STASIS" status --json "$2" | jq -r .paused) == false ]] || fail "$1: the mount is still paused"
        ! frozen || fail "$1: the cgroup is still frozen"
}

step "a snapshot, pushed as the base, and a mount of it"
src=$T/src
mkdir -p "$src/etc" "$src/data"
echo a >"$src/etc/a"
echo b >"$src/etc/b"
rand_file "$src/data/big" $((8 * 1024 * 1024))
rand_file "$src/data/gone" 3000000
ln -s etc/a "$src/link"
digest_of --settle-links "$src" >/dev/null
S=$T/store
st commit --store "$S" --tag base "$src" >/dev/null
registry_start open
OPEN=$REG_HOST OPEN_DIR=$REG_DIR
st push --store "$S" --insecure base "oci://$OPEN/sb:base" >/dev/null
mp=$T/mnt
labels=()
[[ -n $CG ]] && labels=(--label "io.stasis.freeze=cgroup:$CG")
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$T/state" "${labels[@]}" base

step "changes, then stasis checkpoint --push oci://$OPEN/sb:gen2"
echo changed >"$mp/etc/a"
mkdir -p "$mp/home/u"
for i in $(seq 1 50); do echo "file $i" >"$mp/home/u/f$i"; done
rand_file "$mp/home/u/blob" 1500000
dd if=/dev/urandom of="$mp/data/big" bs=4096 seek=700 count=3 conv=notrunc status=none
rm "$mp/data/gone"
chmod 0600 "$mp/etc/b"
ln -s home/u/f1 "$mp/link2"
before=$(reg_blobs "$OPEN_DIR")
st checkpoint --push "oci://$OPEN/sb:gen2" --insecure --json "$mp" >"$T/c1.json"
d1=$(jq -r .digest "$T/c1.json")
[[ $d1 =~ ^sha256:[0-9a-f]{64}$ ]] || fail "checkpoint --push printed digest '$d1'"
[[ $(jq -r .reference "$T/c1.json") == "oci://$OPEN/sb:gen2" ]] || fail "reference is $(jq -r .reference "$T/c1.json")"
[[ $(reg_digest "$OPEN" sb gen2) == "$d1" ]] || fail "the registry's sb:gen2 is '$(reg_digest "$OPEN" sb gen2)', not $d1"
added=$(comm -13 <(echo "$before") <(reg_blobs "$OPEN_DIR"))
manifest_size=$(awk -v h="${d1#sha256:}" '$1 == h {print $2}' <<<"$added")
[[ -n $manifest_size ]] || fail "the registry gained no manifest blob $d1"
want=$(awk '{s += $2} END {print s}' <<<"$added")
want=$((want - manifest_size))
up=$(jq .bytes_uploaded "$T/c1.json")
((up == want && up > 1500000)) || fail "bytes_uploaded $up, but the registry gained $want bytes of blobs"
echo "   gen2: $up bytes uploaded ($(wc -l <<<"$added") new blobs, the manifest included)"
[[ $(jq -r .reused "$T/c1.json") == false ]] || fail "the first checkpoint says reused"
! frozen || fail "the checkpoint left the cgroup frozen"

step "stasis mount oci://$OPEN/sb:gen2 elsewhere shows every change, bit-exact"
mp2=$T/mnt-remote
mount_snap "$mp2" --insecure --cache "$T/cache-remote" --state "$T/state-remote" "oci://$OPEN/sb:gen2"
diff <(listing "$mp") <(listing "$mp2") >"$T/diff" || { head -40 "$T/diff" >&2; fail "the remote mount differs from the mount"; }
[[ $(cat "$mp2/etc/a") == changed && ! -e $mp2/data/gone && $(readlink "$mp2/link2") == home/u/f1 ]] ||
        fail "the remote mount lacks a change"
cmp "$mp/data/big" "$mp2/data/big" || fail "data/big differs"
cmp "$mp/home/u/blob" "$mp2/home/u/blob" || fail "home/u/blob differs"

step "checkpoint of the oci:// mount publishes the next generation to its registry"
echo "from the remote mount" >"$mp2/etc/remote"
dd if=/dev/urandom of="$mp2/data/big" bs=4096 seek=1500 count=2 conv=notrunc status=none
before=$(reg_blobs "$OPEN_DIR")
st checkpoint --tag gen2b --json "$mp2" >"$T/c2b.json"
d2b=$(jq -r .digest "$T/c2b.json")
[[ $(jq -r .reference "$T/c2b.json") == "oci://$OPEN/sb:gen2b" ]] || fail "reference is $(jq -r .reference "$T/c2b.json")"
[[ $(reg_digest "$OPEN" sb gen2b) == "$d2b" ]] || fail "the registry's sb:gen2b is not $d2b"
(($(jq .generation "$T/c2b.json") == $(jq .generation "$T/c1.json") + 1)) || fail "gen2b is not the next generation"
# the new blobs were written on the node first (its node store), then pushed
added=$(comm -13 <(echo "$before") <(reg_blobs "$OPEN_DIR"))
[[ -n $added ]] || fail "gen2b added no blob to the registry"
for b in $(awk '{print $1}' <<<"$added"); do
        [[ -f $T/state-remote/node-store/blobs/sha256/$b ]] || fail "blob $b reached the registry, not the node store"
done
mp3=$T/mnt-gen2b
mount_snap "$mp3" --insecure --cache "$T/cache-3" --state "$T/state-3" "oci://$OPEN/sb:gen2b"
diff <(listing "$mp2") <(listing "$mp3") >"$T/diff" || { head -40 "$T/diff" >&2; fail "gen2b differs from the mount it came from"; }
cmp "$mp2/data/big" "$mp3/data/big" || fail "data/big differs in gen2b"
st umount "$mp3"
st umount "$mp2"

step "checkpoint --push again with no change: the same digest, nothing uploaded"
before=$(reg_blobs "$OPEN_DIR")
st checkpoint --push "oci://$OPEN/sb:gen2" --insecure --json "$mp" >"$T/c2.json"
[[ $(jq -r .digest "$T/c2.json") == "$d1" ]] || fail "an unchanged checkpoint gave $(jq -r .digest "$T/c2.json"), not $d1"
(($(jq .bytes_uploaded "$T/c2.json") == 0)) || fail "an unchanged checkpoint uploaded $(jq .bytes_uploaded "$T/c2.json") bytes"
[[ $(jq -r .reused "$T/c2.json") == true ]] || fail "an unchanged checkpoint does not say reused"
[[ $(reg_blobs "$OPEN_DIR") == "$before" ]] || fail "an unchanged checkpoint changed the registry's storage"

step "after a change: a new digest, only the change uploaded"
echo more >"$mp/etc/new"
st checkpoint --push "oci://$OPEN/sb:gen3" --insecure --json "$mp" >"$T/c3.json"
d3=$(jq -r .digest "$T/c3.json")
[[ $d3 != "$d1" ]] || fail "a changed mount gave the same digest"
[[ $(reg_digest "$OPEN" sb gen3) == "$d3" ]] || fail "the registry's sb:gen3 is not $d3"
(($(jq .bytes_uploaded "$T/c3.json") < 1000000)) || fail "a one-file change uploaded $(jq .bytes_uploaded "$T/c3.json") bytes"

step "pause --push with wrong credentials: fails, the mount stays writable and thawed"
htpasswd -Bbn user "$PASS" >"$T/htpasswd"
registry_start locked "auth:
  htpasswd:
    realm: stasis-test
    path: $T/htpasswd"
LOCKED=$REG_HOST
jq -n --arg h "$LOCKED" --arg a "$(printf user:wrong-%s "$PASS" | base64 -w0)" '{auths: {($h): {auth: $a}}}' >"$T/bad.json"
jq -n --arg h "$LOCKED" --arg a "$(printf user:%s "$PASS" | base64 -w0)" '{auths: {($h): {auth: $a}}}' >"$T/good.json"
expect_exit 1 "$STASIS" -v -v pause --push "oci://$LOCKED/sb:p1" --insecure --registry-config "$T/bad.json" "$mp"
grep -E "registry $LOCKED: authentication failed.*RegistryAuthFailed" "$T/err" >/dev/null ||
        { cat "$T/err" >&2; fail "the error does not name the registry and RegistryAuthFailed"; }
! grep -qF -e "$PASS" -e "$(printf user:wrong-%s "$PASS" | base64 -w0)" "$T/err" "$T/state/stasisd.log" ||
        fail "the credentials appear in the output or the daemon's log"
[[ -z $(registry_tag_link sb p1) ]] || fail "a pause with wrong credentials published a tag"
writable_and_thawed creds "$mp"

step "pause --push to a read-only registry: the push fails after the snapshot, the pause is undone"
ro=$T/readonly
mkdir -p "$ro/data"
cp -a "$OPEN_DIR/data/." "$ro/data/"
port=$(free_port)
cat >"$ro/config.yml" <<CFG
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $ro/data
  maintenance:
    readonly:
      enabled: true
http:
  addr: 127.0.0.1:$port
CFG
docker-registry serve "$ro/config.yml" >"$ro/log" 2>&1 &
REGISTRY_PIDS+=("$!")
for ((i = 0; i < 200; i++)); do curl -s -o /dev/null "http://127.0.0.1:$port/v2/" && break; sleep 0.05; done
echo "changed after gen3" >"$mp/etc/new"
expect_exit 1 "$STASIS" pause --push "oci://127.0.0.1:$port/sb:p2" --insecure "$mp"
grep -E "push of sha256:[0-9a-f]{64} to oci://127.0.0.1:$port/sb:p2 failed: registry 127.0.0.1:$port: .*PushFailed" \
        "$T/err" >/dev/null ||
        { cat "$T/err" >&2; fail "the error does not say the push failed"; }
(($(wc -l <"$T/err") == 1)) || { cat "$T/err" >&2; fail "more than one line on stderr"; }
writable_and_thawed readonly "$mp"

step "pause --push with good credentials: paused, frozen and read-only; unpause"
echo last >"$mp/etc/last"
st pause --push "oci://$LOCKED/sb:p3" --insecure --registry-config "$T/good.json" --json "$mp" >"$T/p3.json"
d4=$(jq -r .digest "$T/p3.json")
[[ $(curl -sI -u "user:$PASS" -H "Accept: $accept" "http://$LOCKED/v2/sb/manifests/p3" | tr -d '\r' |
        awk -F': ' 'tolower($1) == "docker-content-digest" {print $2}') == "$d4" ]] || fail "the locked registry's sb:p3 is not $d4"
[[ $("$STASIS" status --json "$mp" | jq -r .paused) == true ]] || fail "the mount is not paused"
out=$( { echo x >"$mp/etc/after"; } 2>&1) && fail "a write succeeded on a paused mount"
[[ $out == *"Read-only file system"* ]] || fail "a write to a paused mount failed with '$out'"
[[ -z $CG ]] || frozen || fail "the cgroup is not frozen after the pause"
st unpause "$mp"
writable_and_thawed unpaused "$mp"
st umount "$mp"
