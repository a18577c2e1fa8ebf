#!/usr/bin/env bash
# registry-auth.sh — issue 7, acceptance 3: registries with htpasswd basic
# auth (bcrypt), TLS with a self-signed CA made here, and bearer-token auth
# (the registry's `auth: token` with a test key pair and
# tests/tools/token-server.py). Credentials come from a docker config.json
# (--registry-config, $DOCKER_CONFIG; "auth" and username/password forms).
# Wrong credentials give one clear line naming the registry and exit 1; no
# secret ever appears on stderr, even at debug level.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/libregistry.sh"
need docker-registry jq curl python3 openssl htpasswd

S=$T/store
src=$T/src
mkdir -p "$src"
rand_file "$src/a" $((6 * 1024 * 1024))
echo text >"$src/b"
digest_of --settle-links "$src" >/dev/null
st commit --store "$S" --tag g1 "$src" >"$T/g1"
G1=$(cat "$T/g1")
PASS=s3cr3t-Pa55word
export HOME=$T/home # no stray ~/.docker/config.json
mkdir -p "$HOME"

# docker_config FILE HOST USER PASS [plain]: a config.json for HOST
docker_config() {
        if [[ ${5:-} == plain ]]; then
                jq -n --arg h "$2" --arg u "$3" --arg p "$4" '{auths: {($h): {username: $u, password: $p}}}' >"$1"
        else
                jq -n --arg h "$2" --arg a "$(printf '%s:%s' "$3" "$4" | base64 -w0)" '{auths: {($h): {auth: $a}}}' >"$1"
        fi
}

no_secret() { # no_secret FILE...: fail if the password shows anywhere
        ! grep -qF -- "$PASS" "$@" || fail "the password appears in $*"
        ! grep -qF -- "$(printf 'user:%s' "$PASS" | base64 -w0)" "$@" || fail "the base64 credentials appear in $*"
}

step "htpasswd (bcrypt) basic auth"
htpasswd -Bbn user "$PASS" >"$T/htpasswd"
registry_start basic "auth:
  htpasswd:
    realm: stasis-test
    path: $T/htpasswd"
R=oci://$REG_HOST/snaps
docker_config "$T/good.json" "$REG_HOST" user "$PASS"
docker_config "$T/plain.json" "http://$REG_HOST/v1/" user "$PASS" plain
docker_config "$T/bad.json" "$REG_HOST" user wrong-password
"$STASIS" -v -v push --store "$S" --insecure --registry-config "$T/good.json" g1 "$R:g1" >"$T/out" 2>"$T/debug.err" ||
        { cat "$T/debug.err" >&2; fail "push with good credentials failed"; }
[[ $(cat "$T/out") == "$G1" ]] || fail "push printed $(cat "$T/out")"
no_secret "$T/debug.err"
mkdir -p "$T/dc"
cp "$T/plain.json" "$T/dc/config.json"
DOCKER_CONFIG=$T/dc st pull --store "$T/s-basic" --insecure "$R:g1"
st restore --store "$T/s-basic" g1 "$T/dst-basic"
same_tree "$src" "$T/dst-basic"
expect_exit 1 "$STASIS" pull --store "$T/s-bad" --insecure --registry-config "$T/bad.json" "$R:g1"
expect_one_error_line "registry $REG_HOST: authentication failed"
no_secret "$T/err"
expect_exit 1 "$STASIS" pull --store "$T/s-bad" --insecure "$R:g1"
expect_one_error_line "registry $REG_HOST: authentication required"
expect_exit 1 "$STASIS" push --store "$S" --insecure --registry-config "$T/bad.json" g1 "$R:g2"
expect_one_error_line "registry $REG_HOST: authentication failed"
[[ -z $(registry_tag_link snaps g2) ]] || fail "a push with wrong credentials published a tag"
registry_stop

step "TLS with a self-signed CA"
P=$T/pki
mkdir -p "$P"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$P/ca.key" -out "$P/ca.pem" -days 2 -subj /CN=stasis-test-ca \
        >/dev/null 2>&1
openssl req -newkey rsa:2048 -nodes -keyout "$P/srv.key" -out "$P/srv.csr" -subj /CN=127.0.0.1 >/dev/null 2>&1
printf 'subjectAltName=IP:127.0.0.1\n' >"$P/ext"
openssl x509 -req -in "$P/srv.csr" -CA "$P/ca.pem" -CAkey "$P/ca.key" -CAcreateserial -out "$P/srv.pem" -days 2 \
        -extfile "$P/ext" >/dev/null 2>&1
registry_start tls "  tls:
    certificate: $P/srv.pem
    key: $P/srv.key"
R=oci://$REG_HOST/snaps
expect_exit 1 "$STASIS" push --store "$S" g1 "$R:g1"
expect_one_error_line "registry $REG_HOST: .*(certificate|TLS)"
st push --store "$S" --ca-cert "$P/ca.pem" g1 "$R:g1"
st pull --store "$T/s-tls" --ca-cert "$P/ca.pem" "$R:g1"
st restore --store "$T/s-tls" g1 "$T/dst-tls"
same_tree "$src" "$T/dst-tls"
st pull --store "$T/s-tls2" --insecure "$R:g1" # TLS, unverified
[[ $(curl -s -o /dev/null -w '%{http_code}' --cacert "$P/ca.pem" "https://$REG_HOST/v2/snaps/manifests/g1" \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json') == 200 ]] || fail "the TLS registry has no g1"
registry_stop

step "bearer tokens from a token service"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$P/tok.key" -out "$P/tok.pem" -days 2 -subj /CN=stasis-token \
        >/dev/null 2>&1
python3 "$SRC_DIR/tests/tools/token-server.py" --port-file "$T/token.port" --key "$P/tok.key" --cert "$P/tok.pem" \
        --issuer stasis-test-issuer --service stasis-test-registry --user user --password "$PASS" \
        --log "$T/token.log" >"$T/token.out" 2>&1 &
TOKEN_PID=$!
for ((i = 0; i < 100; i++)); do
        [[ -s $T/token.port ]] && break
        sleep 0.05
done
[[ -s $T/token.port ]] || { cat "$T/token.out" >&2; fail "token server did not start"; }
registry_start token "auth:
  token:
    realm: http://127.0.0.1:$(cat "$T/token.port")/token
    service: stasis-test-registry
    issuer: stasis-test-issuer
    rootcertbundle: $P/tok.pem"
on_exit_hook() {
        kill "$TOKEN_PID" 2>/dev/null || true
        registry_cleanup
}
R=oci://$REG_HOST/snaps
[[ $(curl -s -o /dev/null -w '%{http_code}' "http://$REG_HOST/v2/") == 401 ]] || fail "the token registry lets anonymous in"
docker_config "$T/tok.json" "$REG_HOST" user "$PASS"
: >"$T/token.log"
"$STASIS" -v -v push --store "$S" --insecure --json --registry-config "$T/tok.json" g1 "$R:g1" >"$T/push.json" \
        2>"$T/debug.err" || { cat "$T/debug.err" >&2; fail "push through token auth failed"; }
no_secret "$T/debug.err"
grep -q 'Bearer' "$T/debug.err" && fail "a bearer token appears in the debug log"
fetches=$(grep -c '^ok' "$T/token.log")
requests=$(jq .requests "$T/push.json")
((fetches >= 1 && fetches <= 2 && requests >= 8)) ||
        fail "push made $requests requests with $fetches token fetches; tokens should be reused until they expire"
: >"$T/token.log"
st pull --store "$T/s-tok" --insecure --registry-config "$T/tok.json" "$R:g1"
(($(grep -c '^ok' "$T/token.log") == 1)) || fail "pull fetched $(grep -c '^ok' "$T/token.log") tokens, expected 1"
grep -q "repository:snaps:pull" "$T/token.log" || fail "pull asked for another scope: $(cat "$T/token.log")"
st restore --store "$T/s-tok" g1 "$T/dst-tok"
same_tree "$src" "$T/dst-tok"
docker_config "$T/tokbad.json" "$REG_HOST" user nope
expect_exit 1 "$STASIS" pull --store "$T/s-tokbad" --insecure --registry-config "$T/tokbad.json" "$R:g1"
expect_one_error_line "registry $REG_HOST: authentication failed"
no_secret "$T/err"
expect_exit 1 "$STASIS" pull --store "$T/s-tokbad" --insecure "$R:g1"
expect_one_error_line "registry $REG_HOST: authentication failed"
