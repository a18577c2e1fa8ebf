#!/usr/bin/env bash
# committer-status.sh — issue 8, acceptance 3: stasis-committer writes the
# SandboxSnapshot status through a fake Kubernetes API server
# (tests/tools/fake-apiserver: TLS with a CA made here, bearer token,
# merge patch on the status subresource with resourceVersion, the CRD's
# status schema). Asserted: the full transition sequence on success; Failed
# with the reason for the failures that need no stasisd; a terminal phase
# left untouched by a later call; a 409 retried and resolved; TLS and the
# token enforced; the fake itself rejects what the CRD rejects (422).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/libkube.sh"
COMMITTER=${STASIS_COMMITTER:-$BUILD_DIR/stasis-committer}
[[ -x $COMMITTER ]] || fail "no stasis-committer at $COMMITTER"

on_exit_hook() { kube_cleanup; }

step "a test CA, a server certificate for 127.0.0.1, a token; the fake API server"
{
        echo "["
        snap ok; echo ","
        snap fail-args; echo ","
        snap fail-mount '{"phase": "Pending"}'; echo ","
        snap fail-config; echo ","
        snap conflict; echo ","
        snap done '{"phase": "Succeed", "conditions": [{"type": "Ready", "status": "True", "reason": "SnapshotReady", "message": "Snapshot is ready", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}'
        echo "]"
} >"$T/seed.json"

kube_start "$T/seed.json"
pki=$T/pki
echo "not-the-token" >"$T/bad-token"
rfc3339='^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$'

step "the fake enforces the CRD schema, the token, the media type and resourceVersion"
ST=/apis/sandbox.opensandbox.io/v1alpha1/namespaces/sb/sandboxsnapshots/ok/status
MP=(-H "Content-Type: application/merge-patch+json")
api PATCH "$ST" "${MP[@]}" -d '{"status": {"phase": "Done"}}' >/dev/null
[[ $(cat "$T/code") == 422 && $(jq -r .reason "$T/body") == Invalid ]] || fail "phase Done: $(cat "$T/code") $(cat "$T/body")"
api PATCH "$ST" "${MP[@]}" -d '{"status": {"conditions": [{"type": "Ready"}]}}' >/dev/null
[[ $(cat "$T/code") == 422 ]] && jq -e '.details.causes[] | select(.field == "status.conditions[0].status")' "$T/body" >/dev/null ||
        fail "a condition without status: $(cat "$T/code") $(cat "$T/body")"
api PATCH "$ST" "${MP[@]}" -d '{"status": {"conditions": [{"type": "Broken", "status": "Maybe"}]}}' >/dev/null
[[ $(cat "$T/code") == 422 ]] || fail "condition type/status enums not enforced: $(cat "$T/body")"
api PATCH "$ST" "${MP[@]}" -d '{"status": {"containers": [{"imageUri": "x/y:z"}]}}' >/dev/null
[[ $(cat "$T/code") == 422 ]] || fail "containers[] without containerName accepted: $(cat "$T/body")"
api PATCH "$ST" -H "Content-Type: application/json" -d '{"status": {"phase": "Pending"}}' >/dev/null
[[ $(cat "$T/code") == 415 ]] || fail "a non-merge-patch body accepted: $(cat "$T/code")"
api PATCH "$ST" "${MP[@]}" -d '{"metadata": {"resourceVersion": "1"}, "status": {"phase": "Pending"}}' >/dev/null
[[ $(cat "$T/code") == 409 && $(jq -r .reason "$T/body") == Conflict ]] || fail "a stale resourceVersion: $(cat "$T/code")"
curl -s --cacert "$pki/ca.crt" -o /dev/null -w '%{http_code}' "$SERVER/apis/sandbox.opensandbox.io/v1alpha1/namespaces/sb/sandboxsnapshots/ok" >"$T/code"
[[ $(cat "$T/code") == 401 ]] || fail "no token: HTTP $(cat "$T/code")"
obj nosuch >/dev/null
[[ $(cat "$T/code") == 404 ]] || fail "unknown object: HTTP $(cat "$T/code")"
[[ $(writes ok) == "[]" ]] || fail "a rejected patch changed the object: $(history ok)"

step "success: Pending -> Committing -> Succeed"
rv0=$(obj ok | jq -r .metadata.resourceVersion)
expect_exit 0 "$COMMITTER" status "${KUBE[@]}" --pod my-sb-pod --node node-1 ok sb Committing \
        c1:127.0.0.1:5000/snaps/my-sb-c1:snap-gen2 c2:127.0.0.1:5000/snaps/my-sb-c2:snap-gen2
o=$(obj ok)
[[ $(jq -r .status.phase <<<"$o") == Committing ]] || fail "phase after Committing: $o"
[[ $(jq -c .status.conditions <<<"$o") == "[]" ]] || fail "Committing kept a condition: $o"
[[ $(jq -r .status.observedGeneration <<<"$o") == 3 ]] || fail "observedGeneration: $o"
[[ $(jq -r .status.sourcePodName <<<"$o") == my-sb-pod && $(jq -r .status.sourceNodeName <<<"$o") == node-1 ]] ||
        fail "sourcePodName/sourceNodeName: $o"
[[ $(jq -c '[.status.containers[] | has("imageDigest")]' <<<"$o") == "[false,false]" ]] ||
        fail "a digest before success: $o"
[[ $(jq -r .metadata.resourceVersion <<<"$o") != "$rv0" ]] || fail "resourceVersion not bumped"
d1=sha256:$(printf c1 | sha256sum | cut -d' ' -f1)
d2=sha256:$(printf c2 | sha256sum | cut -d' ' -f1)
expect_exit 0 "$COMMITTER" status "${KUBE[@]}" --pod my-sb-pod --node node-1 ok sb Succeed \
        "c1:127.0.0.1:5000/snaps/my-sb-c1:snap-gen2@$d1" "c2:127.0.0.1:5000/snaps/my-sb-c2:snap-gen2@$d2"
o=$(obj ok)
[[ $(jq -r .status.phase <<<"$o") == Succeed ]] || fail "phase: $o"
jq -e --arg d1 "$d1" --arg d2 "$d2" '.status.containers == [
        {containerName: "c1", imageUri: "127.0.0.1:5000/snaps/my-sb-c1:snap-gen2", imageDigest: $d1},
        {containerName: "c2", imageUri: "127.0.0.1:5000/snaps/my-sb-c2:snap-gen2", imageDigest: $d2}]' <<<"$o" >/dev/null ||
        fail "containers: $(jq -c .status.containers <<<"$o")"
jq -e '.status.conditions | length == 1 and .[0].type == "Ready" and .[0].status == "True" and
        .[0].reason == "SnapshotReady" and .[0].message == "Snapshot is ready"' <<<"$o" >/dev/null ||
        fail "conditions: $(jq -c .status.conditions <<<"$o")"
[[ $(jq -r '.status.conditions[0].lastTransitionTime' <<<"$o") =~ $rfc3339 ]] || fail "lastTransitionTime: $o"
[[ $(phases ok) == '["Committing","Succeed"]' ]] || fail "transitions: $(history ok)"

step "a terminal phase is never changed by a later call"
rv=$(obj ok | jq -r .metadata.resourceVersion)
expect_exit 1 "$COMMITTER" status "${KUBE[@]}" --reason PushFailed --message "late" ok sb Failed
grep -q "already Succeed" "$T/err" || { cat "$T/err" >&2; fail "no clear refusal"; }
expect_exit 1 "$COMMITTER" status "${KUBE[@]}" ok sb Committing
expect_exit 1 "$COMMITTER" --snapshot ok "${KUBE[@]}" --run-dir "$T/run" --termination-log "$T/tl" \
        my-sb-pod sb c1:127.0.0.1:5000/snaps/my-sb-c1:snap-gen3
[[ $(obj ok | jq -r .metadata.resourceVersion) == "$rv" ]] || fail "a terminal snapshot was written to"
[[ ! -e $T/tl ]] || fail "a refused run wrote a termination message"
expect_exit 1 "$COMMITTER" status "${KUBE[@]}" done sb Committing
[[ $(history done) == "[]" ]] || fail "the seeded Succeed snapshot changed: $(history done)"

step "a whole run that fails: Committing, then Failed with the reason"
mkdir -p "$T/run/mounts"
expect_exit 1 "$COMMITTER" --snapshot fail-mount "${KUBE[@]}" --node node-1 --run-dir "$T/run" \
        --termination-log "$T/tl" my-sb-pod sb c1:127.0.0.1:5000/snaps/my-sb-c1:snap-gen2
o=$(obj fail-mount)
[[ $(phases fail-mount) == '["Committing","Failed"]' ]] || fail "transitions: $(history fail-mount)"
jq -e '.status.conditions | length == 1 and .[0].type == "Failed" and .[0].status == "True" and
        .[0].reason == "MountNotFound" and (.[0].message | test("c1.*no stasis mount"))' <<<"$o" >/dev/null ||
        fail "Failed condition: $(jq -c .status.conditions <<<"$o")"
[[ $(jq -r '.status.conditions[0].lastTransitionTime' <<<"$o") =~ $rfc3339 ]] || fail "lastTransitionTime: $o"
[[ $(jq -c '[.status.containers[] | has("imageDigest")]' <<<"$o") == "[false]" ]] || fail "a digest on failure: $o"
[[ ! -e $T/tl ]] || fail "a failed run wrote a termination message"

echo '{"auths": {"127.0.0.1:5000": {"auth": "not base64!"}}}' >"$T/bad-config.json"
expect_exit 1 "$COMMITTER" --snapshot fail-config "${KUBE[@]}" --registry-config "$T/bad-config.json" \
        --run-dir "$T/run" --termination-log "$T/tl" my-sb-pod sb c1:127.0.0.1:5000/snaps/my-sb-c1:snap-gen2
grep -q "not base64" "$T/err" && fail "the secret was quoted on stderr"
[[ $(obj fail-config | jq -r '.status.phase + "/" + .status.conditions[0].reason') == Failed/RegistryConfigInvalid ]] ||
        fail "fail-config: $(obj fail-config | jq -c .status)"

expect_exit 1 "$COMMITTER" --snapshot fail-args "${KUBE[@]}" --run-dir "$T/run" --termination-log "$T/tl" \
        my-sb-pod sb c1:no-registry-host
[[ $(obj fail-args | jq -r '.status.phase + "/" + .status.conditions[0].reason') == Failed/BadArguments ]] ||
        fail "fail-args: $(obj fail-args | jq -c .status)"

step "a 409 from a concurrent writer is retried from a fresh GET"
curl -s --cacert "$pki/ca.crt" -X POST "$SERVER/fake/conflict" >/dev/null
expect_exit 0 "$COMMITTER" status "${KUBE[@]}" --pod my-sb-pod conflict sb Committing c1:127.0.0.1:5000/snaps/x:t
[[ $(history conflict | jq -c '[.[].event]') == '["concurrent-write","conflict","status-patch"]' ]] ||
        fail "the conflict was not seen and resolved: $(history conflict)"
[[ $(obj conflict | jq -r .status.phase) == Committing ]] || fail "phase after the retry"

step "TLS and the token are enforced"
rv=$(obj conflict | jq -r .metadata.resourceVersion)
expect_exit 1 "$COMMITTER" status --server "$SERVER" --token-file "$T/token" --ca-cert "$pki/other.crt" \
        conflict sb Failed --reason X --message y
grep -qiE "certificate|SSL|TLS" "$T/err" || { cat "$T/err" >&2; fail "no TLS error"; }
expect_exit 1 "$COMMITTER" status --server "$SERVER" --token-file "$T/bad-token" --ca-cert "$pki/ca.crt" \
        conflict sb Failed --reason X --message y
grep -q "401" "$T/err" || { cat "$T/err" >&2; fail "no 401"; }
grep -q "not-the-token" "$T/err" && fail "the token was logged"
expect_exit 1 "$COMMITTER" status --server "http://127.0.0.1:$PORT" --token-file "$T/token" --ca-cert "$pki/ca.crt" \
        conflict sb Failed --reason X --message y
[[ $(obj conflict | jq -r .metadata.resourceVersion) == "$rv" ]] || fail "a refused client wrote"

step "in-cluster config: KUBERNETES_SERVICE_HOST/PORT"
expect_exit 0 env KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT="$PORT" \
        "$COMMITTER" status --token-file "$T/token" --ca-cert "$pki/ca.crt" \
        --reason PushFailed --message "the registry refused the upload" conflict sb Failed
[[ $(obj conflict | jq -r '.status.phase + "/" + .status.conditions[0].reason') == Failed/PushFailed ]] ||
        fail "in-cluster write: $(obj conflict | jq -c .status)"
expect_exit 1 env -u KUBERNETES_SERVICE_HOST "$COMMITTER" status --token-file "$T/token" nosuch sb Committing
expect_exit 1 "$COMMITTER" status "${KUBE[@]}" nosuch sb Committing
grep -q "404" "$T/err" || { cat "$T/err" >&2; fail "unknown snapshot: no 404"; }
