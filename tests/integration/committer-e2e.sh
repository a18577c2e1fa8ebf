#!/usr/bin/env bash
# committer-e2e.sh — issue 8, acceptance 1, 2 and 4, end to end: a "pod" of
# two runc containers on stasis mounts labelled like Kubernetes does, a real
# registry (Debian's docker-registry) on 127.0.0.1, and stasis-committer as
# OpenSandbox's commit Job runs it. Nothing is faked but the Kubernetes API
# server (tests/tools/fake-apiserver, for the status of each failure).
#   1. commit: exit 0, SNAPSHOT_DIGEST_C1/C2 and SNAPSHOT_DIGEST=<first> on
#      stdout, one JSON line in the termination log; each digest is the
#      registry's Docker-Content-Digest for its tag; the pushed snapshot
#      holds that container's changes; a re-run reports the same digests
#      and uploads nothing.
#   2. failures — unknown container, registry down, wrong credentials
#      (htpasswd registry), SIGTERM in the middle of a push — each: exit 1,
#      one stderr line; too few arguments: usage, exit 1.
#   4. after each failure both containers run unfrozen and their mounts take
#      writes; only the SandboxSnapshot is Failed (with the reason).
# The committer freezes both, checkpoints each into its node store, thaws
# both, then pushes each (POST /api/v1/push), so a push in flight never
# keeps a container frozen. A stasisd without the endpoints (issue 6) makes
# this test exit 77 naming the missing one.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"
source "$(dirname "$0")/libkube.sh"
need runc docker-registry htpasswd curl jq python3
COMMITTER=${STASIS_COMMITTER:-$BUILD_DIR/stasis-committer}
[[ -x $COMMITTER ]] || fail "no stasis-committer at $COMMITTER"
BUSYBOX=${BUSYBOX:-/bin/busybox}
[[ -x $BUSYBOX ]] && file -L "$BUSYBOX" 2>/dev/null | grep -q "statically linked" ||
        ldd "$BUSYBOX" 2>&1 | grep -q "not a dynamic" || skip "needs a static busybox (Debian busybox-static)"

POD=sb-pod
NS=sb
S=$T/store
CONTAINERS=()
REG_PIDS=()

e2e_cleanup() {
        local id p
        for id in "${CONTAINERS[@]}"; do
                runc resume "$id" >/dev/null 2>&1 || true
                runc delete --force "$id" >/dev/null 2>&1 || true
        done
        for p in "${REG_PIDS[@]}"; do
                kill -CONT "$p" 2>/dev/null || true
                kill -9 "$p" 2>/dev/null || true
                wait "$p" 2>/dev/null || true
        done
        declare -F kube_cleanup >/dev/null && kube_cleanup
        true
}
on_exit_hook() { e2e_cleanup; }

step "a busybox rootfs, committed, and two labelled stasis mounts of it"
rootfs=$T/rootfs
mkdir -p "$rootfs"/{bin,etc,proc,sys,dev,tmp,root,data}
cp "$BUSYBOX" "$rootfs/bin/busybox"
for a in sh cat echo sleep date ls sha256sum touch rm; do ln -s busybox "$rootfs/bin/$a"; done
echo "root:x:0:0:root:/root:/bin/sh" >"$rootfs/etc/passwd"
st commit --store "$S" --tag base "$rootfs"
declare -A MP ID SOCK
for c in c1 c2; do
        ID[$c]=stasis-e2e-$c-$$
        MP[$c]=$T/mnt-$c
        mount_snap "${MP[$c]}" --store "$S" --cache "$T/cache" \
                --label io.kubernetes.pod.name=$POD --label io.kubernetes.pod.namespace=$NS \
                --label io.kubernetes.container.name=$c --label "io.stasis.freeze=runc:${ID[$c]}" base
        SOCK[$c]=$(jq -r .socket "$(registry_entry "${MP[$c]}")")
done

step "probe stasisd for the endpoints the committer needs"
probe() { # probe PATH BODY: the HTTP status stasisd answers
        curl -s -o "$T/probe.body" -w '%{http_code}' --unix-socket "${SOCK[c1]}" -X POST \
                -H "Content-Type: application/json" -d "$2" "http://localhost$1" || echo 000
}
code=$(probe /api/v1/freeze '{}')
if [[ $code == 404 || $code == 405 ]]; then
        skip "stasisd has no POST /api/v1/freeze (HTTP $code; issue 6); acceptance 1, 2 and 4 run once it and POST /api/v1/checkpoint exist"
fi
[[ $code == 2* ]] && probe /api/v1/unfreeze '{}' >/dev/null
code=$(probe /api/v1/checkpoint '{"push": 5}') # a bad body: 400 if the endpoint exists
if [[ $code == 404 || $code == 405 ]]; then
        skip "stasisd has no POST /api/v1/checkpoint (HTTP $code; issue 6)"
fi

step "two runc containers on the mounts, each writing to its rootfs"
for c in c1 c2; do
        bundle=$T/bundle-$c
        mkdir -p "$bundle"
        (cd "$bundle" && runc spec)
        jq --arg root "${MP[$c]}" --arg c "$c" '
                .root = {path: $root, readonly: false}
                | .process.terminal = false
                | .process.args = ["/bin/sh", "-c",
                        "echo hello-from-" + $c + " > /data/changed; rm -f /etc/passwd; touch /ready; while :; do date >> /tmp/ticks; sleep 0.2; done"]
                | .mounts |= map(select(.destination != "/tmp"))
                | .mounts += [{destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev"]}]
        ' "$bundle/config.json" >"$bundle/config.new" && mv "$bundle/config.new" "$bundle/config.json"
        CONTAINERS+=("${ID[$c]}")
        runc run --detach --bundle "$bundle" "${ID[$c]}" </dev/null >"$T/runc-$c.log" 2>&1 ||
                { cat "$T/runc-$c.log" >&2; fail "runc run $c failed"; }
done
for ((i = 0; i < 100; i++)); do
        [[ -e ${MP[c1]}/ready && -e ${MP[c2]}/ready ]] && break
        sleep 0.1
done
[[ -e ${MP[c1]}/ready && -e ${MP[c2]}/ready ]] || fail "the containers did not write to their rootfs"

# alive_and_writable TAG: both containers run unfrozen and their mounts take writes.
alive_and_writable() {
        local c s
        for c in c1 c2; do
                s=$(runc state "${ID[$c]}" | jq -r .status)
                [[ $s == running ]] || fail "$1: container $c is '$s', not running"
                timeout 10 runc exec "${ID[$c]}" sh -c "echo $1 > /data/probe-$1" ||
                        fail "$1: container $c cannot write to its rootfs"
                [[ $(cat "${MP[$c]}/data/probe-$1") == "$1" ]] || fail "$1: the write did not reach mount $c"
        done
}
# one_line: $T/err holds exactly one line, from stasis-committer.
one_line() {
        local n
        n=$(wc -l <"$T/err")
        ((n == 1)) || { cat "$T/err" >&2; fail "$1: expected one line on stderr, got $n"; }
        grep -qE '^stasis-committer: ' "$T/err" || { cat "$T/err" >&2; fail "$1: stderr lacks the prefix"; }
}

step "a registry on 127.0.0.1, and one behind htpasswd"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
start_registry() { # start_registry NAME [AUTH-SNIPPET]: sets RPORT, RPID
        local d=$T/reg-$1 i
        mkdir -p "$d/data"
        RPORT=$(free_port)
        cat >"$d/config.yml" <<CFG
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $d/data
http:
  addr: 127.0.0.1:$RPORT
${2:-}
CFG
        docker-registry serve "$d/config.yml" >"$d/log" 2>&1 &
        RPID=$!
        REG_PIDS+=("$RPID")
        for ((i = 0; i < 200; i++)); do
                curl -s -o /dev/null "http://127.0.0.1:$RPORT/v2/" && return 0
                sleep 0.05
        done
        cat "$d/log" >&2
        fail "docker-registry $1 did not start"
}
start_registry open
REG=127.0.0.1:$RPORT REG_PID=$RPID
htpasswd -Bbn stasis right-password >"$T/htpasswd"
start_registry locked "auth:
  htpasswd:
    realm: stasis-test
    path: $T/htpasswd"
LOCKED=127.0.0.1:$RPORT
printf '{"auths": {"%s": {"auth": "%s"}}}\n' "$LOCKED" "$(printf stasis:wrong-password | base64)" >"$T/wrong-creds.json"

seed=()
for s in fail-unknown fail-down fail-creds fail-sigterm; do seed+=("$(snap "$s")"); done
printf '%s\n' "${seed[@]}" | jq -s . >"$T/seed.json"
kube_start "$T/seed.json"
RUN=(--run-dir "$STASIS_RUN_DIR" --termination-log "$T/termination-log")
failed_with() { # failed_with SNAPSHOT REASON
        local got
        got=$(obj "$1" | jq -r '.status.phase + "/" + (.status.conditions[0].reason // "")')
        [[ $got == "Failed/$2" ]] || fail "$1: the snapshot is $got, not Failed/$2"
        [[ $(phases "$1") == '["Committing","Failed"]' ]] || fail "$1: transitions $(phases "$1")"
}

step "acceptance 1: commit both containers"
T1=$REG/snaps/sb-c1:snap-gen2 T2=$REG/snaps/sb-c2:snap-gen2
expect_exit 0 "$COMMITTER" "${RUN[@]}" $POD $NS "c1:$T1" "c2:$T2"
cp "$T/out" "$T/out1"
mapfile -t lines <"$T/out1"
((${#lines[@]} == 3)) || fail "stdout has ${#lines[@]} lines, not 3"
[[ ${lines[0]} =~ ^SNAPSHOT_DIGEST_C1=(sha256:[0-9a-f]{64})$ ]] || fail "line 1: ${lines[0]}"
d1=${BASH_REMATCH[1]}
[[ ${lines[1]} =~ ^SNAPSHOT_DIGEST_C2=(sha256:[0-9a-f]{64})$ ]] || fail "line 2: ${lines[1]}"
d2=${BASH_REMATCH[1]}
[[ ${lines[2]} == "SNAPSHOT_DIGEST=$d1" ]] || fail "line 3: ${lines[2]}"
(($(wc -l <"$T/termination-log") == 1)) || fail "the termination log is not one line"
(($(stat -c %s "$T/termination-log") < 4096)) || fail "the termination message is 4096 bytes or more"
jq -e --arg t1 "$T1" --arg t2 "$T2" --arg d1 "$d1" --arg d2 "$d2" '. == {containers: [
        {name: "c1", image: $t1, digest: $d1}, {name: "c2", image: $t2, digest: $d2}]}' \
        "$T/termination-log" >/dev/null || fail "termination message: $(cat "$T/termination-log")"
accept='application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json,application/vnd.docker.distribution.manifest.v2+json'
reg_digest() { # reg_digest REPO TAG
        curl -sI -H "Accept: $accept" "http://$REG/v2/$1/manifests/$2" |
                tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" {print $2}'
}
[[ $(reg_digest snaps/sb-c1 snap-gen2) == "$d1" ]] || fail "c1: the registry's digest is $(reg_digest snaps/sb-c1 snap-gen2), not $d1"
[[ $(reg_digest snaps/sb-c2 snap-gen2) == "$d2" ]] || fail "c2: the registry's digest differs"
alive_and_writable after-commit
for c in c1 c2; do # stasis mount of each URI (lazy, from the registry) shows that container's changes
        mount_snap "$T/check-$c" --insecure --cache "$T/cache-check-$c" --state "$T/state-check-$c" \
                "oci://$REG/snaps/sb-$c:snap-gen2"
        [[ $(jq -r .snapshot "$(registry_entry "$T/check-$c")") == "$([[ $c == c1 ]] && echo "$d1" || echo "$d2")" ]] ||
                fail "$c: the mount of the URI is not the reported digest"
        [[ $(cat "$T/check-$c/data/changed") == "hello-from-$c" ]] || fail "$c: the snapshot lacks the container's write"
        [[ ! -e $T/check-$c/etc/passwd ]] || fail "$c: the snapshot lacks the container's delete"
        st umount "$T/check-$c"
done
st pull --store "$T/pulled" --insecure "oci://$REG/snaps/sb-c1:snap-gen2" # and it pulls, verified

step "acceptance 1: a re-run with no change reports the same digests and uploads nothing"
# the probes of alive_and_writable changed the trees: commit once more, then re-run
expect_exit 0 "$COMMITTER" "${RUN[@]}" $POD $NS "c1:$REG/snaps/sb-c1:snap-gen3" "c2:$REG/snaps/sb-c2:snap-gen3"
cp "$T/out" "$T/out3"
blobs_before=$(find "$T/reg-open/data" -path '*/blobs/*' -name data | sort)
expect_exit 0 "$COMMITTER" "${RUN[@]}" $POD $NS "c1:$REG/snaps/sb-c1:snap-gen3" "c2:$REG/snaps/sb-c2:snap-gen3"
cmp -s "$T/out" "$T/out3" || fail "a re-run reported other digests: $(cat "$T/out") vs $(cat "$T/out3")"
[[ $(find "$T/reg-open/data" -path '*/blobs/*' -name data | sort) == "$blobs_before" ]] || fail "a re-run uploaded blobs"

step "acceptance 2 and 4: an unknown container"
expect_exit 1 "$COMMITTER" "${RUN[@]}" "${KUBE[@]}" --snapshot fail-unknown $POD $NS "c1:$T1" "c3:$REG/snaps/sb-c3:snap-gen2"
one_line unknown
grep -q "c3" "$T/err" || fail "the error does not name c3"
failed_with fail-unknown MountNotFound
alive_and_writable unknown

step "acceptance 2 and 4: the registry is down"
down=127.0.0.1:$(free_port)
expect_exit 1 "$COMMITTER" "${RUN[@]}" "${KUBE[@]}" --snapshot fail-down $POD $NS "c1:$down/snaps/x:t" "c2:$down/snaps/y:t"
one_line down
failed_with fail-down PushFailed
alive_and_writable down

step "acceptance 2 and 4: wrong credentials"
expect_exit 1 "$COMMITTER" "${RUN[@]}" "${KUBE[@]}" --snapshot fail-creds --registry-config "$T/wrong-creds.json" \
        $POD $NS "c1:$LOCKED/snaps/x:t" "c2:$LOCKED/snaps/y:t"
one_line creds
grep -q "wrong-password" "$T/err" && fail "the password was logged"
failed_with fail-creds RegistryAuthFailed
alive_and_writable creds

step "acceptance 2 and 4: SIGTERM in the middle of a push"
runc exec "${ID[c1]}" sh -c 'head -c 67108864 /dev/urandom > /data/big' || fail "cannot write the big file"
kill -STOP "$REG_PID" # the upload hangs: the push is in flight when the signal comes
"$COMMITTER" "${RUN[@]}" "${KUBE[@]}" --snapshot fail-sigterm $POD $NS "c1:$REG/snaps/sb-c1:snap-gen4" \
        "c2:$REG/snaps/sb-c2:snap-gen4" >"$T/out" 2>"$T/err" &
cpid=$!
sleep 2
kill -0 "$cpid" 2>/dev/null || { kill -CONT "$REG_PID"; cat "$T/err" >&2; fail "the committer ended before the signal"; }
kill -TERM "$cpid"
rc=0
timeout 60 tail --pid="$cpid" -f /dev/null || fail "the committer did not stop within 60 s of SIGTERM"
wait "$cpid" || rc=$?
kill -CONT "$REG_PID"
((rc == 1)) || { cat "$T/err" >&2; fail "SIGTERM: exit $rc, not 1"; }
one_line sigterm
grep -qi "SIGTERM" "$T/err" || fail "the error does not say SIGTERM"
failed_with fail-sigterm Interrupted
alive_and_writable sigterm

step "acceptance 2: too few arguments"
expect_exit 1 "$COMMITTER" $POD $NS
grep -q "^usage: " "$T/err" || fail "no usage line"
expect_exit 1 "$COMMITTER" unpause $POD $NS
grep -q "^usage: " "$T/err" || fail "no usage line for unpause"
