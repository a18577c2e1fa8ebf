#!/usr/bin/env bash
# registry-faults.sh — issue 7, acceptance 5: the registry killed mid-push
# (clear error, no manifest published; after a restart the rerun uploads only
# what is missing); a blob corrupted in the registry's storage (verify over
# --store oci:// names it, a lazy restore fails on it); the registry frozen
# during a lazy read (the read fails within --fetch-timeout instead of
# hanging, and works again once the registry is back).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/libregistry.sh"
need docker-registry jq curl python3

S=$T/store
src=$T/src
mkdir -p "$src"
rand_file "$src/big" $((160 * 1024 * 1024)) # five packs
rand_file "$src/small" 100000
digest_of --settle-links "$src" >/dev/null
st commit --store "$S" --tag g1 "$src" >"$T/g1"
G1=$(cat "$T/g1")
registry_start reg
R=oci://$REG_HOST/snaps

# snapshot_blobs: "<hex> <size>" of g1's config, tree and packs
snapshot_blobs() {
        local b
        for b in $(manifest_field "$S" "$G1" '.config.digest, .layers[].digest'); do
                echo "${b#sha256:} $(blob_size "$S" "$b")"
        done | sort
}
snapshot_blobs >"$T/snap.blobs"

step "registry killed mid-push"
"$STASIS" push --store "$S" --insecure --jobs 1 g1 "$R:g1" >"$T/push.out" 2>"$T/push.err" &
PUSH=$!
killed=0
for ((i = 0; i < 3000; i++)); do
        # kill once the first pack (a blob over 1 MiB) is in the storage
        if [[ -n $(find "$REG_DIR/data/docker/registry/v2/blobs" -name data -size +1M 2>/dev/null | head -1) ]]; then
                registry_stop
                killed=1
                break
        fi
        kill -0 "$PUSH" 2>/dev/null || break
        sleep 0.01
done
rc=0
wait "$PUSH" || rc=$?
((killed)) || fail "the push ended before the registry could be killed (rc $rc)"
((rc == 1)) || { cat "$T/push.err" >&2; fail "push with the registry killed exited $rc, expected 1"; }
grep -qE "^stasis: push $R:g1: .*(refused|reset|Connection|connect)" "$T/push.err" ||
        { cat "$T/push.err" >&2; fail "no clear error for the killed registry"; }
[[ -z $(registry_tag_link snaps g1) ]] || fail "a failed push published the manifest"
[[ ! -s $T/push.out ]] || fail "a failed push printed a digest"

registry_start reg # same port, same storage
registry_blobs >"$T/reg.before"
have=$(join "$T/snap.blobs" "$T/reg.before" | wc -l)
((have >= 1)) || fail "nothing of the first push reached the registry's storage"
want=$(join -v1 "$T/snap.blobs" "$T/reg.before" | awk '{s += $2} END {print s + 0}')
st push --store "$S" --insecure --json g1 "$R:g1" >"$T/push2.json"
(($(jq .bytes_uploaded "$T/push2.json") == want)) ||
        fail "the rerun uploaded $(jq .bytes_uploaded "$T/push2.json") bytes; the missing blobs hold $want"
(($(jq .blobs_skipped "$T/push2.json") == have)) || fail "the rerun skipped $(jq .blobs_skipped "$T/push2.json"), the registry had $have"
[[ $(registry_tag_link snaps g1) == "$G1" ]] || fail "the rerun did not publish g1"
st pull --store "$T/s2" --insecure "$R:g1" >/dev/null
st restore --store "$T/s2" g1 "$T/dst2"
same_tree "$src" "$T/dst2"

step "registry frozen during a lazy read: fails within the deadline"
"$STASIS" restore --store "$R" --insecure --fetch-timeout 2 g1 "$T/dst3" >"$T/r3.out" 2>"$T/r3.err" &
RESTORE=$!
stopped=0
for ((i = 0; i < 3000; i++)); do
        if [[ -f $T/dst3/big ]] && (($(stat -c %s "$T/dst3/big") > 0)); then
                kill -STOP "$REG_PID"
                stopped=$(date +%s%N)
                break
        fi
        kill -0 "$RESTORE" 2>/dev/null || break
        sleep 0.01
done
rc=0
wait "$RESTORE" || rc=$?
ended=$(date +%s%N)
kill -CONT "$REG_PID"
((stopped > 0)) || fail "the restore ended (rc $rc) before the registry could be frozen"
((rc == 1)) || { cat "$T/r3.err" >&2; fail "a restore from a frozen registry exited $rc, expected 1"; }
took=$(((ended - stopped) / 1000000))
((took < 2000 + 3000)) || fail "the read failed ${took} ms after the registry froze; the deadline is 2 s"
grep -qiE "deadline|timed out|timeout" "$T/r3.err" || { cat "$T/r3.err" >&2; fail "the error does not say the fetch timed out"; }
echo "   failed ${took} ms after the freeze"
st restore --store "$R" --insecure --fetch-timeout 2 g1 "$T/dst4"
same_tree "$src" "$T/dst4"

step "a blob corrupted in the registry: verify names it, a lazy restore fails on it"
P=$(manifest_field "$S" "$G1" '.layers[2].digest')
f=$REG_DIR/data/docker/registry/v2/blobs/sha256/${P:7:2}/${P#sha256:}/data
[[ -f $f ]] || fail "no registry data file for $P"
flip_byte "$f" 1000
expect_exit 1 "$STASIS" verify --store "$R" --insecure g1
grep -q "$P" "$T/err" || { cat "$T/err" >&2; fail "verify over oci:// does not name the corrupt pack $P"; }
expect_exit 1 "$STASIS" restore --store "$R" --insecure g1 "$T/dst5"
grep -qE "chunk sha256:[0-9a-f]{64}" "$T/err" || { cat "$T/err" >&2; fail "the lazy restore does not name the bad chunk"; }
flip_byte "$f" 1000
st verify --store "$R" --insecure g1
