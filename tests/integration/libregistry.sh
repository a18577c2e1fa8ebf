# libregistry.sh — start and stop Debian's docker-registry (distribution 2.8)
# for the registry-*.sh tests. Source after lib.sh.
#
#   registry_start NAME [CONFIG_SNIPPET]
#       writes $T/NAME/config.yml (filesystem storage in $T/NAME/data, http on
#       127.0.0.1 at a free port, plus CONFIG_SNIPPET: auth/tls sections),
#       starts `docker-registry serve` in the background and waits until it
#       answers. Sets REG_PORT, REG_PID, REG_DIR, REG_HOST (127.0.0.1:PORT).
#       A second call with the same NAME restarts on the same port and data.
#   registry_stop      kill -9 the registry started last (by pid) and reap it
#   registry_blobs     "<hex>" of every blob in the registry's storage, sorted
#   registry_tag_link REPO TAG   the manifest digest the registry's storage
#                      has for REPO:TAG, or nothing
# Every registry started here is stopped on exit (registry_cleanup, called by
# on_exit_hook; a test with its own on_exit_hook calls it itself).

REGISTRY_PIDS=()

free_port() {
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

registry_start() {
        local name=$1 snippet=${2:-} i
        REG_DIR=$T/$name
        mkdir -p "$REG_DIR/data"
        if [[ -f $REG_DIR/port ]]; then
                REG_PORT=$(cat "$REG_DIR/port")
        else
                REG_PORT=$(free_port)
                echo "$REG_PORT" >"$REG_DIR/port"
        fi
        REG_HOST=127.0.0.1:$REG_PORT
        cat >"$REG_DIR/config.yml" <<CFG
version: 0.1
log:
  level: error
  accesslog:
    disabled: $([[ ${REG_ACCESSLOG:-0} == 1 ]] && echo false || echo true)
storage:
  filesystem:
    rootdirectory: $REG_DIR/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$REG_PORT
  secret: stasis-test-secret
$snippet
CFG
        docker-registry serve "$REG_DIR/config.yml" >>"$REG_DIR/log" 2>&1 &
        REG_PID=$!
        REGISTRY_PIDS+=("$REG_PID")
        for ((i = 0; i < 200; i++)); do
                if curl -sk -o /dev/null "http://$REG_HOST/v2/" 2>/dev/null ||
                        curl -sk -o /dev/null "https://$REG_HOST/v2/" 2>/dev/null; then
                        return 0
                fi
                kill -0 "$REG_PID" 2>/dev/null || { cat "$REG_DIR/log" >&2; fail "docker-registry exited at start"; }
                sleep 0.05
        done
        cat "$REG_DIR/log" >&2
        fail "docker-registry did not answer on $REG_HOST"
}

registry_stop() {
        kill -9 "$REG_PID" 2>/dev/null || true
        wait "$REG_PID" 2>/dev/null || true
}

registry_cleanup() {
        local p
        for p in "${REGISTRY_PIDS[@]}"; do
                kill -CONT "$p" 2>/dev/null || true
                kill -9 "$p" 2>/dev/null || true
                wait "$p" 2>/dev/null || true
        done
}

# need_registry_mount: what a test that mounts oci:// needs (skips without
# it); its mounts register under $T/run.
need_registry_mount() {
        need docker-registry jq curl python3
        [[ -e /dev/fuse ]] || skip "needs /dev/fuse"
        STASISD=${STASISD:-$BUILD_DIR/stasisd}
        [[ -x $STASISD ]] || fail "no stasisd at $STASISD"
        export STASIS_RUN_DIR=$T/run
}

registry_blobs() {
        local d=$REG_DIR/data/docker/registry/v2/blobs/sha256
        [[ -d $d ]] || return 0
        find "$d" -name data -type f | awk -F/ '{print $(NF-1)}' | sort
}

registry_tag_link() {
        local f=$REG_DIR/data/docker/registry/v2/repositories/$1/_manifests/tags/$2/current/link
        [[ -f $f ]] && cat "$f"
        true
}

on_exit_hook() {
        registry_cleanup
}
