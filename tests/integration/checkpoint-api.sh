#!/usr/bin/env bash
# checkpoint-api.sh — issue 6: POST /api/v1/checkpoint (local store). A
# mounted base gets files written (the last one without fsync, just before
# the checkpoint), modified (4 KiB in a large file), deleted, renamed,
# chmod'ed, xattr'ed and hardlinked; the checkpoint restores to exactly
# what the mount shows; the 4 KiB change costs at most one new chunk; a
# checkpoint with no change packs nothing and gives the same tree; the
# mount stays writable. With io.stasis.freeze, a checkpoint freezes and
# thaws a real cgroup v2 (and leaves alone one frozen through /freeze).
# Bad requests answer 400 BadRequest.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"
need curl

api() { # api SOCK PATH BODY: the HTTP status; the body in $T/body
        curl -s -o "$T/body" -w '%{http_code}' --unix-socket "$1" -X POST \
                -H "Content-Type: application/json" -d "$3" "http://localhost$2" || echo 000
}
field() { jq -r ".$1" "$T/body"; }
listing() { "$TREEDIGEST" --list --no-atime "$1" | sed 's/ extents=[^ ]*//'; }
pack_bytes() { du -sb "$S/blobs" | cut -f1; }

# An optional cgroup v2 child to freeze.
CG=
CG2=$(awk '$9 == "cgroup2" {print $5; exit}' /proc/self/mountinfo)
if [[ -n $CG2 && -w $CG2 ]] && mkdir "$CG2/stasis-ck-test-$$" 2>/dev/null; then
        CG=$CG2/stasis-ck-test-$$
        [[ -f $CG/cgroup.freeze ]] || { rmdir "$CG"; CG=; }
fi
on_exit_hook() { [[ -n $CG ]] && { echo 0 >"$CG/cgroup.freeze"; rmdir "$CG"; } 2>/dev/null; true; }

S=$T/store
step "a base: a 40 MiB file, small files, a symlink, a hardlink pair"
mkdir -p "$T/src/d/e"
head -c $((40 * 1024 * 1024)) /dev/urandom >"$T/src/big"
for i in $(seq 20); do echo "file $i" >"$T/src/d/f$i"; done
echo gone >"$T/src/d/e/gone"
ln -s d/f1 "$T/src/link"
ln "$T/src/d/f2" "$T/src/d/f2-hard"
"$TREEDIGEST" --settle-links "$T/src"
st commit --store "$S" --tag base "$T/src"
cs=$("$STASIS" inspect --store "$S" --json base | jq -r .chunk_size)

mp=$T/mnt
labels=()
[[ -n $CG ]] && labels=(--label "io.stasis.freeze=cgroup:$CG")
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$T/state" "${labels[@]}" base
sock=$(jq -r .socket "$(registry_entry "$mp")")

step "changes on the mount"
dd if=/dev/urandom of="$mp/big" bs=4096 seek=2500 count=1 conv=notrunc,fsync status=none
rm "$mp/d/e/gone"
rmdir "$mp/d/e"
mv "$mp/d/f3" "$mp/d/f3-moved"
chmod 0600 "$mp/d/f4"
setfattr -n user.k -v v "$mp/d/f5" 2>/dev/null || true
ln "$mp/d/f6" "$mp/f6-hard"
mkdir -p "$mp/new/dir"
for i in $(seq 50); do echo "new $i" >"$mp/new/dir/n$i"; done
truncate -s 10M "$mp/sparse"
echo tail >>"$mp/sparse"
head -c 3000000 /dev/urandom >"$mp/unsynced" # no fsync: in the kernel's cache

step "checkpoint --tag g1"
before=$(pack_bytes)
code=$(api "$sock" /api/v1/checkpoint '{"tag": "g1", "labels": {"gen": "1"}}')
[[ $code == 200 ]] || fail "checkpoint answered $code: $(cat "$T/body")"
cat "$T/body"; echo
for f in digest generation parent bytes_dirty bytes_new chunks_new chunks_reused duration_ns stall_ns; do
        [[ $(field $f) != null ]] || fail "no $f in the answer"
done
[[ $(field generation) == 1 ]] || fail "generation $(field generation), not 1"
[[ $(field parent) == $("$STASIS" inspect --store "$S" --json base | jq -r .digest) ]] || fail "parent is not the base"
[[ $(field reference) == g1 ]] || fail "reference $(field reference)"
d1=$(field digest)
t1=$(field tree)
((cs * 0 + $(field stall_ns) <= $(field duration_ns))) || fail "stall longer than the checkpoint"
# New: the 4 KiB change (1 chunk), the new small files, sparse's tail, unsynced.
max=$((1 + 50 + 1 + 3000000 / cs + 1 + 2))
(($(field chunks_new) <= max)) || fail "$(field chunks_new) new chunks (at most $max expected)"
if [[ -n $CG ]]; then
        [[ $(field froze) == true ]] || fail "a labelled mount was not frozen"
        [[ $(field frozen) == false ]] || fail "the answer says the sandbox is still frozen"
        grep -q '^frozen 0$' "$CG/cgroup.events" || fail "the checkpoint left the cgroup frozen"
fi
[[ $("$STASIS" inspect --store "$S" --json g1 | jq -r .digest) == "$d1" ]] || fail "tag g1 is not the checkpoint"
[[ $("$STASIS" inspect --store "$S" --json g1 | jq -r .labels.gen) == 1 ]] || fail "labels did not reach the snapshot"

step "restore g1 equals the mount (content, modes, owners, times, xattrs, hardlinks)"
st restore --store "$S" g1 "$T/r1"
diff <(listing "$T/r1") <(listing "$mp") || fail "g1 differs from the mount"
cmp "$T/r1/unsynced" "$mp/unsynced" || fail "the unsynced write is not in the snapshot"

step "a 4 KiB change costs at most one new chunk"
dd if=/dev/urandom of="$mp/big" bs=4096 seek=7000 count=1 conv=notrunc status=none
code=$(api "$sock" /api/v1/checkpoint '{"tag": "g2"}')
[[ $code == 200 ]] || fail "checkpoint answered $code: $(cat "$T/body")"
(($(field chunks_new) <= 1)) || fail "a 4 KiB change cost $(field chunks_new) new chunks"
st restore --store "$S" g2 "$T/r2"
diff <(listing "$T/r2") <(listing "$mp") || fail "g2 differs from the mount"

step "no change: no new chunk, no pack bytes, the same tree"
t2=$(field tree)
before=$(pack_bytes)
code=$(api "$sock" /api/v1/checkpoint '{}')
[[ $code == 200 ]] || fail "checkpoint answered $code: $(cat "$T/body")"
[[ $(field chunks_new) == 0 && $(field bytes_new) == 0 ]] || fail "a no-op checkpoint packed: $(cat "$T/body")"
[[ $(field tree) == "$t2" ]] || fail "a no-op checkpoint changed the tree"
after=$(pack_bytes)
((after - before < 16384)) || fail "a no-op checkpoint grew the store by $((after - before)) bytes"

step "the mount stays writable"
echo after >"$mp/after" && [[ $(cat "$mp/after") == after ]] || fail "the mount is not writable after checkpoints"

if [[ -n $CG ]]; then
        step "frozen through /freeze: the checkpoint leaves it frozen"
        [[ $(api "$sock" /api/v1/freeze '{}') == 200 ]] || fail "freeze failed: $(cat "$T/body")"
        [[ $(api "$sock" /api/v1/checkpoint '{}') == 200 ]] || fail "checkpoint failed: $(cat "$T/body")"
        grep -q '^frozen 1$' "$CG/cgroup.events" || fail "the checkpoint thawed a sandbox frozen through /freeze"
        [[ $(api "$sock" /api/v1/unfreeze '{}') == 200 ]] || fail "unfreeze failed"

        # Before its barrier a checkpoint reads the store's index and recent
        # snapshots (the chunks it may reuse): tens of ms on a real base,
        # none of which the sandbox should spend frozen. index.json made a
        # FIFO holds the checkpoint there: the cgroup must not be frozen.
        step "the sandbox runs while the checkpoint reads the store; frozen only from the flush to the barrier's end"
        echo during >"$mp/during"
        mkdir "$T/hold"
        mv "$S/index.json" "$T/index.json.real"
        mkfifo "$S/index.json"
        ln "$S/index.json" "$T/hold/fifo"
        api "$sock" /api/v1/checkpoint '{}' >"$T/held.code" &
        ck_pid=$!
        held=
        for _ in $(seq 200); do
                for w in /proc/"$(daemon_pid "$mp")"/task/*/wchan; do
                        [[ $(cat "$w" 2>/dev/null) == wait_for_partner ]] && held=1
                done
                [[ -n $held ]] && break
                sleep 0.05
        done
        [[ -n $held ]] || fail "the checkpoint never opened the store's index"
        frozen_now=$(grep '^frozen ' "$CG/cgroup.events")
        mv "$T/index.json.real" "$S/index.json" # the FIFO stays linked at hold/fifo
        timeout 10 sh -c ': >"$1"' sh "$T/hold/fifo" || fail "could not release the held checkpoint"
        wait "$ck_pid"
        [[ $frozen_now == "frozen 0" ]] || fail "the sandbox was frozen while the checkpoint read the store ($frozen_now)"
        [[ $(cat "$T/held.code") == 200 ]] || fail "the held checkpoint answered $(cat "$T/held.code"): $(cat "$T/body")"
        [[ $(field froze) == true ]] || fail "the held checkpoint did not freeze the sandbox at all"
        grep -q '^frozen 0$' "$CG/cgroup.events" || fail "the held checkpoint left the cgroup frozen"
        st restore --store "$S" "$(field digest)" "$T/r-held"
        [[ $(cat "$T/r-held/during") == during ]] || fail "the held checkpoint lost the change made before it"
fi

step "bad requests: 400 BadRequest"
for body in '{"tag": "bad tag"}' '{"tag": 5}' '[1]' '{"labels": {"a": 1}}' '{"push": 5}' \
        '{"push": "oci://127.0.0.1:5000/x@sha256:0000000000000000000000000000000000000000000000000000000000000000"}' \
        '{"push": "oci://127.0.0.1:5000/x:y", "registry": {"insecure": "yes"}}'; do
        code=$(api "$sock" /api/v1/checkpoint "$body")
        [[ $code == 400 && $(field reason) == BadRequest ]] || fail "$body answered $code: $(cat "$T/body")"
done
step "an --empty mount checkpoints into its --store, made by the first checkpoint: no parent, generation 0"
E=$T/store-empty
me=$T/mnt-empty
mount_snap "$me" --empty --store "$E" --state "$T/state-empty" --cache "$T/cache"
[[ ! -e $E ]] || fail "the --empty mount made its store before any checkpoint"
sock_e=$(jq -r .socket "$(registry_entry "$me")")
mkdir -p "$me/a/b"
echo one >"$me/a/b/f"
ln "$me/a/b/f" "$me/a/h"
ln -s b/f "$me/a/l"
head -c 300000 /dev/urandom >"$me/big"
code=$(api "$sock_e" /api/v1/checkpoint '{"tag": "e1"}')
[[ $code == 200 ]] || fail "checkpoint of an --empty mount answered $code: $(cat "$T/body")"
[[ $(field parent) == null && $(field generation) == 0 ]] || fail "e1: parent $(field parent), generation $(field generation)"
e1=$(field digest)
st restore --store "$E" e1 "$T/re1"
diff <(listing "$T/re1") <(listing "$me") || fail "e1 differs from the --empty mount"

step "the next one names it as parent, also after a remount with the same state"
echo two >>"$me/a/b/f"
code=$(api "$sock_e" /api/v1/checkpoint '{"tag": "e2"}')
[[ $code == 200 && $(field parent) == "$e1" && $(field generation) == 1 ]] ||
        fail "e2 answered $code: $(cat "$T/body")"
e2=$(field digest)
st umount "$me"
mount_snap "$me" --empty --store "$E" --state "$T/state-empty" --cache "$T/cache"
[[ $(cat "$me/a/h") == "one
two" ]] || fail "the remounted --empty mount lost its layer"
echo three >"$me/c"
code=$(api "$(jq -r .socket "$(registry_entry "$me")")" /api/v1/checkpoint '{"tag": "e3"}')
[[ $code == 200 && $(field parent) == "$e2" && $(field generation) == 2 ]] ||
        fail "e3 after the remount answered $code: $(cat "$T/body")"
st restore --store "$E" e3 "$T/re3"
diff <(listing "$T/re3") <(listing "$me") || fail "e3 differs from the remounted --empty mount"
exit 0
