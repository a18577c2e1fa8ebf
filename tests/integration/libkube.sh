# libkube.sh — the fake Kubernetes API server for the committer-*.sh tests
# (tests/tools/fake-apiserver). Source after lib.sh.
#
#   kube_start SEED.json   a test CA and a server certificate for 127.0.0.1
#                          (openssl, in $T/pki), a token ($T/token), then the
#                          fake on a free port. Sets SERVER, PORT, KUBE (the
#                          committer's --server/--token-file/--ca-cert) and
#                          $T/pki/other.crt (a CA that did not sign it).
#   snap NAME [STATUS-JSON]  a SandboxSnapshot object for a seed (namespace sb)
#   api METHOD PATH [curl args]  body on stdout, HTTP status in $T/code
#   obj NAME               GET the SandboxSnapshot sb/NAME
#   history NAME / writes NAME / phases NAME   the fake's record of NAME
# The fake is stopped on exit (kube_cleanup, from on_exit_hook).
need openssl curl jq
FAKE=$TESTS_BIN/fake-apiserver
[[ -x $FAKE ]] || fail "no fake-apiserver at $FAKE"
FAKE_PID=

kube_cleanup() {
        [[ -n $FAKE_PID ]] && { kill "$FAKE_PID" 2>/dev/null || true; wait "$FAKE_PID" 2>/dev/null || true; }
        FAKE_PID=
}

snap() {
        jq -n --arg n "$1" --argjson st "${2:-null}" '{apiVersion: "sandbox.opensandbox.io/v1alpha1",
                kind: "SandboxSnapshot", metadata: {name: $n, namespace: "sb", generation: 3},
                spec: {sandboxName: "my-sb"}} + (if $st then {status: $st} else {} end)'
}

kube_start() {
        local seed=$1 pki=$T/pki i rc
        mkdir -p "$pki"
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=stasis test CA" \
                -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$pki/server.key" \
                -out "$pki/server.csr" 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$pki/ext"
        openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
                -days 2 -extfile "$pki/ext" -out "$pki/server.crt" 2>/dev/null
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=other CA" \
                -keyout "$pki/other.key" -out "$pki/other.crt" 2>/dev/null
        head -c 24 /dev/urandom | base64 | tr -d '=+/' >"$T/token"
        "$FAKE" --cert "$pki/server.crt" --key "$pki/server.key" --token-file "$T/token" --seed "$seed" \
                --port-file "$T/port" 2>"$T/fake.log" &
        FAKE_PID=$!
        for ((i = 0; i < 200; i++)); do
                [[ -s $T/port ]] && break
                if ! kill -0 "$FAKE_PID" 2>/dev/null; then
                        rc=0
                        wait "$FAKE_PID" || rc=$?
                        FAKE_PID=
                        ((rc == 77)) && skip "$(cat "$T/fake.log")"
                        cat "$T/fake.log" >&2
                        fail "fake-apiserver exited $rc"
                fi
                sleep 0.05
        done
        [[ -s $T/port ]] || fail "fake-apiserver did not start"
        PORT=$(cat "$T/port")
        SERVER=https://127.0.0.1:$PORT
        KUBE=(--server "$SERVER" --token-file "$T/token" --ca-cert "$pki/ca.crt")
}

api() {
        local m=$1 p=$2
        shift 2
        curl -s --cacert "$T/pki/ca.crt" -H "Authorization: Bearer $(cat "$T/token")" -X "$m" \
                -o "$T/body" -w '%{http_code}' "$@" "$SERVER$p" >"$T/code"
        cat "$T/body"
}
obj() { api GET "/apis/sandbox.opensandbox.io/v1alpha1/namespaces/sb/sandboxsnapshots/$1"; }
history() { curl -s --cacert "$T/pki/ca.crt" "$SERVER/fake/history" | jq -c --arg n "$1" '[.[] | select(.name == $n)]'; }
writes() { history "$1" | jq -c '[.[] | select(.event == "status-patch")]'; }
phases() { writes "$1" | jq -c '[.[].phase]'; }
