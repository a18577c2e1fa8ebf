#!/usr/bin/env bash
# gc.sh — acceptance 4: gc removes exactly the blobs no index entry reaches,
# spares young blobs, --keep-last N untags older generations first; several
# concurrent commits (and gc running beside them) never corrupt index.json or
# lose a committed snapshot.
source "$(dirname "$0")/lib.sh"
need jq sha256sum

S=$T/store

# reachable STORE: every blob the index's manifests reach (sorted hex).
reachable() {
        local m f
        {
                for m in $(jq -r '.manifests[].digest' "$1/index.json" | sort -u); do
                        f=$(blob_path "$1" "$m")
                        echo "${m#sha256:}"
                        [[ -f $f ]] || continue
                        jq -r '.config.digest, .layers[].digest' "$f" | sed 's/^sha256://'
                done
        } | sort -u
}
present() { find "$1/blobs/sha256" -type f -printf '%f\n' | sort; }

# garbage_blob STORE TEXT: a well-formed blob nothing references; prints its hex.
garbage_blob() {
        local h
        h=$(printf '%s' "$2" | sha256sum | cut -d' ' -f1)
        printf '%s' "$2" >"$1/blobs/sha256/$h"
        echo "$h"
}

step "a chain of three generations"
src=$T/src
mkdir -p "$src"
rand_file "$src/base" $((2 * 1024 * 1024))
st commit --store "$S" --tag g1 "$src" >"$T/g1"
cp -a "$src" "$T/src1"
rand_file "$src/gen2" 300000
dd if=/dev/urandom of="$src/base" bs=4096 count=1 seek=10 conv=notrunc status=none
st commit --store "$S" --parent g1 --tag g2 "$src" >"$T/g2"
cp -a "$src" "$T/src2"
rand_file "$src/gen3" 300000
st commit --store "$S" --parent g2 --tag g3 "$src" >"$T/g3"
cp -a "$src" "$T/src3"

step "garbage: a stray blob and a snapshot dropped from index.json"
G1=$(garbage_blob "$S" "stray blob $RANDOM$RANDOM")
mkdir "$T/orphan"
rand_file "$T/orphan/data" 400000
st commit --store "$S" --tag orphan "$T/orphan" >"$T/orphan.d"
O=$(cat "$T/orphan.d")
jq --arg d "$O" '.manifests |= map(select(.digest != $d))' "$S/index.json" >"$T/index.new"
mv "$T/index.new" "$S/index.json"
expect_exit 1 "$STASIS" restore --store "$S" orphan "$T/none"
[[ -f $(blob_path "$S" "$O") ]] || fail "orphan manifest missing before gc"

step "gc --dry-run deletes nothing"
present "$S" >"$T/before"
st gc --store "$S" --grace 0 --dry-run --json >"$T/dry.json"
present "$S" | cmp -s - "$T/before" || fail "gc --dry-run removed blobs"
(($(jq .blobs_removed "$T/dry.json") >= 5)) || fail "dry run would remove only $(jq .blobs_removed "$T/dry.json") blobs"

step "gc --grace 0 removes exactly the unreachable blobs"
reachable "$S" >"$T/reach"
st gc --store "$S" --grace 0 --json >"$T/gc1.json"
present "$S" >"$T/after"
if ! cmp -s "$T/reach" "$T/after"; then
        diff "$T/reach" "$T/after" >&2 || true
        fail "after gc the store's blobs are not exactly the reachable ones"
fi
(($(jq .blobs_removed "$T/gc1.json") == $(comm -23 "$T/before" "$T/after" | wc -l))) ||
        fail "gc reported $(jq .blobs_removed "$T/gc1.json") removals, $(comm -23 "$T/before" "$T/after" | wc -l) blobs went"
[[ ! -e $S/blobs/sha256/$G1 ]] || fail "the stray blob survived gc"
[[ ! -e $(blob_path "$S" "$O") ]] || fail "the dropped snapshot's manifest survived gc"
for g in 1 2 3; do
        st restore --store "$S" "g$g" "$T/r$g"
        same_tree "$T/src$g" "$T/r$g" --no-atime
done
st verify --store "$S"

step "young blobs are spared by the default grace period"
G2=$(garbage_blob "$S" "young blob $RANDOM$RANDOM")
st gc --store "$S" --json >"$T/gc2.json"
[[ -e $S/blobs/sha256/$G2 ]] || fail "gc removed a blob written a moment ago"
(($(jq .blobs_young "$T/gc2.json") >= 1)) || fail "gc did not count the young blob"
touch -d '2 hours ago' "$S/blobs/sha256/$G2"
st gc --store "$S" --grace 3600 >/dev/null
[[ ! -e $S/blobs/sha256/$G2 ]] || fail "gc kept an unreachable blob older than the grace period"

step "gc --keep-last 1 keeps only the newest generation"
st gc --store "$S" --grace 0 --keep-last 1 --json >"$T/gc3.json"
(($(jq .roots_dropped "$T/gc3.json") == 2)) || fail "keep-last 1 dropped $(jq .roots_dropped "$T/gc3.json") roots, expected 2"
st restore --store "$S" g3 "$T/r3b"
same_tree "$T/src3" "$T/r3b" --no-atime
for g in 1 2; do
        expect_exit 1 "$STASIS" restore --store "$S" "g$g" "$T/gone$g"
        expect_exit 1 "$STASIS" inspect --store "$S" "$(cat "$T/g$g")"
done
reachable "$S" >"$T/reach3"
present "$S" | cmp -s - "$T/reach3" || fail "after keep-last the store holds unreachable blobs"
st verify --store "$S"

step "six concurrent commits to one store"
C=$T/cstore
shared=$T/shared.bin
rand_file "$shared" $((1024 * 1024))
for i in 1 2 3 4 5 6; do
        mkdir -p "$T/c$i"
        cp "$shared" "$T/c$i/shared" # the same chunks, written concurrently
        rand_file "$T/c$i/own" $((500000 + i))
done
pids=()
for i in 1 2 3 4 5 6; do
        "$STASIS" commit --store "$C" --tag "c$i" "$T/c$i" >"$T/c$i.out" 2>"$T/c$i.err" &
        pids+=($!)
done
for i in 1 2 3 4 5 6; do
        wait "${pids[$((i - 1))]}" || { cat "$T/c$i.err" >&2; fail "concurrent commit c$i failed"; }
done
jq -e '.manifests | type == "array"' "$C/index.json" >/dev/null || fail "index.json is not a valid OCI index"
for i in 1 2 3 4 5 6; do
        jq -e --arg t "c$i" '[.manifests[].annotations["org.opencontainers.image.ref.name"]] | index($t) != null' \
                "$C/index.json" >/dev/null || fail "tag c$i missing from index.json"
        [[ $(jq -r --arg t "c$i" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' \
                "$C/index.json") == "$(cat "$T/c$i.out")" ]] || fail "tag c$i does not name the digest its commit printed"
        st restore --store "$C" "c$i" "$T/cr$i"
        same_tree "$T/c$i" "$T/cr$i" --no-atime
done
st verify --store "$C"

step "gc running beside commits loses nothing committed"
GC_PID=
stop_gc() {
        if [[ -n $GC_PID ]]; then
                touch "$T/stop"
                wait "$GC_PID" || { cat "$T/gc-beside.err" >&2; GC_PID=; fail "gc failed while commits ran"; }
                GC_PID=
                rm -f "$T/stop"
        fi
}
on_exit_hook() { # a failure elsewhere must not leave the gc loop running
        [[ -z $GC_PID ]] || kill "$GC_PID" 2>/dev/null || true
}
# beside PREFIX GC_ARGS...: 4 commits (tags PREFIX1..4) while gc loops with
# GC_ARGS; sets ok to the number that were published.
beside() {
        local p=$1 k pids=()
        shift
        for k in 1 2 3 4; do
                mkdir -p "$T/$p$k"
                rand_file "$T/$p$k/f" $((3 * 1024 * 1024 + k))
                cp "$shared" "$T/$p$k/shared"
        done
        (while [[ ! -e $T/stop ]]; do
                "$STASIS" gc --store "$C" "$@" >/dev/null 2>>"$T/gc-beside.err" || exit 1
        done) </dev/null >/dev/null 2>&1 &
        GC_PID=$!
        for k in 1 2 3 4; do
                "$STASIS" commit --store "$C" --tag "$p$k" "$T/$p$k" >"$T/$p$k.out" 2>"$T/$p$k.err" &
                pids+=($!)
        done
        ok=0
        for k in 1 2 3 4; do
                if wait "${pids[$((k - 1))]}"; then
                        ok=$((ok + 1))
                        st restore --store "$C" "$p$k" "$T/r-$p$k"
                        same_tree "$T/$p$k" "$T/r-$p$k" --no-atime
                else
                        # Only a clean refusal is allowed: exit 1, "stasis: " lines, no tag.
                        grep -q '^stasis: ' "$T/$p$k.err" || { cat "$T/$p$k.err" >&2; fail "commit $p$k died"; }
                        expect_exit 1 "$STASIS" inspect --store "$C" "$p$k"
                fi
        done
        stop_gc
}
# With the default grace period in-flight blobs are spared: every commit lands.
beside b
((ok == 4)) || fail "only $ok of 4 commits survived a concurrent gc with the default grace period"
# With --grace 0 a commit may be refused, but never published with missing blobs.
beside z --grace 0
echo "   with --grace 0: $ok of 4 commits published"
for i in 1 2 3 4 5 6; do
        st restore --store "$C" "c$i" "$T/final$i"
        same_tree "$T/c$i" "$T/final$i" --no-atime
done
st verify --store "$C"
