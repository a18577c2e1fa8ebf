#!/usr/bin/env bash
# prefetch.sh — issue 6: access-trace prefetch end to end. Mount a base with
# an empty node cache, read a start-up set of files, change one of them and
# delete another, `stasis checkpoint --tag g1`: g1's manifest ends with an
# access-trace layer naming exactly the chunks read (and `stasis verify`
# accepts it). Unmount; mount g1 with a new, empty cache: without any READ
# the prefetcher fetches the chunks of the start-up set that still exist
# (the deleted file is skipped, the changed one maps to its new chunk);
# reading the set then fetches nothing (every chunk a prefetch hit) and
# gives the right bytes. With --no-prefetch nothing is prefetched, and a
# checkpoint before any read stores g1's trace again. /metrics
# shows the counters. A corrupt chunk in the set is left out by the
# prefetcher (never cached); reading it is EIO with one log line, the rest
# reads right. With a registry at hand: push carries the trace blob, pull
# brings it back (verify clean), and a lazy oci:// mount prefetches, in a
# few coalesced Range GETs.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"

S=$T/store
step "a base: a start-up set (3 files of 1-2 MiB, 12 small ones) and cold data"
mkdir -p "$T/src/app/lib" "$T/src/data"
for i in 1 2 3; do head -c $((i * 700000)) /dev/urandom >"$T/src/app/lib/big$i"; done
for i in $(seq 12); do head -c $((1000 + i * 37)) /dev/urandom >"$T/src/app/small$i"; done
head -c $((8 * 1024 * 1024)) /dev/urandom >"$T/src/data/cold"
"$TREEDIGEST" --settle-links "$T/src"
st commit --store "$S" --tag base "$T/src"
cs=$("$STASIS" inspect --store "$S" --json base | jq -r .chunk_size)
SET=(app/lib/big1 app/lib/big2 app/lib/big3)
for i in $(seq 12); do SET+=("app/small$i"); done
total=0
for f in "${SET[@]}"; do total=$((total + $(chunk_count "$T/src/$f" "$cs"))); done

step "mount base (empty cache), read the start-up set, change big2, delete small12"
mp=$T/mnt
mount_snap "$mp" --store "$S" --cache "$T/cache1" --state "$T/state1" base
for f in "${SET[@]}"; do cat "$mp/$f" >/dev/null; done
(($(counter "$mp" prefetch_chunks) == 0)) || fail "the base has no trace, yet something was prefetched"
dd if=/dev/urandom of="$mp/app/lib/big2" bs=4096 count=1 conv=notrunc status=none
cp "$mp/app/lib/big2" "$T/big2.expected"
rm "$mp/app/small12"
"$STASIS" checkpoint --tag g1 --json "$mp" >"$T/g1.json" || fail "stasis checkpoint failed"
d1=$(jq -r .digest "$T/g1.json")
st umount "$mp"

step "g1's manifest ends with the trace: $total chunks read"
mt=$(manifest_field "$S" "$d1" '.layers[-1].mediaType')
[[ $mt == application/vnd.stasis.trace.v1 ]] || fail "g1's last layer is '$mt', not the access trace"
tsize=$(manifest_field "$S" "$d1" '.layers[-1].size')
((tsize == 24 + 12 * total)) || fail "the trace is $tsize bytes, expected $((24 + 12 * total)) ($total entries)"
tdig=$(manifest_field "$S" "$d1" '.layers[-1].digest')
[[ $(head -c 8 "$(blob_path "$S" "$tdig")") == STSTRACE ]] || fail "the trace blob has no STSTRACE magic"
st verify --store "$S" g1

step "resume g1 with an empty cache: the prefetcher fetches the set, no READ"
expect=$((total - $(chunk_count "$T/src/app/small12" "$cs")))
mp2=$T/mnt2
mount_snap "$mp2" --store "$S" --cache "$T/cache2" --state "$T/state2" g1
for _ in $(seq 200); do
        (($(counter "$mp2" prefetch_chunks) >= expect)) && break
        sleep 0.1
done
sleep 0.3 # nothing more may come
got=$(counter "$mp2" prefetch_chunks)
((got == expect)) || fail "prefetched $got chunks, expected $expect (the set without the deleted file)"
(($(counter "$mp2" reads) == 0)) || fail "READs happened before anything was read"
(($(counter "$mp2" prefetch_hits) == 0)) || fail "prefetch hits before any READ"

step "reading the set now is all prefetch hits, with the right bytes"
misses0=$(counter "$mp2" cache_misses)
for f in "${SET[@]}"; do
        [[ $f == app/small12 ]] && continue
        if [[ $f == app/lib/big2 ]]; then
                cmp "$mp2/$f" "$T/big2.expected" || fail "$f (changed before g1) reads wrong"
        else
                cmp "$mp2/$f" "$T/src/$f" || fail "$f reads wrong through the mount"
        fi
done
[[ ! -e $mp2/app/small12 ]] || fail "the deleted file came back"
hits=$(counter "$mp2" prefetch_hits)
((hits == expect)) || fail "$hits prefetch hits, expected $expect"
(($(counter "$mp2" cache_misses) == misses0)) || fail "reads of the prefetched set missed the cache"
"$STASIS" status "$mp2" | grep -q "^prefetch *$expect chunks, $expect hits$" ||
        fail "stasis status does not show the prefetch line"
if command -v curl >/dev/null; then
        curl -sf --unix-socket "$T/state2/api.sock" http://localhost/metrics >"$T/metrics" ||
                fail "GET /metrics failed"
        grep -q "^stasis_prefetch_chunks_total $expect$" "$T/metrics" || fail "/metrics lacks prefetch chunks"
        grep -q "^stasis_prefetch_hits_total $expect$" "$T/metrics" || fail "/metrics lacks prefetch hits"
fi
st umount "$mp2"

step "--no-prefetch: nothing prefetched; a checkpoint before any read keeps g1's trace"
mp3=$T/mnt3
mount_snap "$mp3" --store "$S" --cache "$T/cache3" --state "$T/state3" --no-prefetch g1
sleep 1
(($(counter "$mp3" prefetch_chunks) == 0)) || fail "--no-prefetch prefetched"
echo new >"$mp3/new-in-g2"
d2=$("$STASIS" checkpoint --tag g2 "$mp3") || fail "stasis checkpoint g2 failed"
[[ $(manifest_field "$S" "$d2" '.layers[-1].digest') == "$tdig" ]] ||
        fail "g2 (no base data read) does not carry g1's trace forward"
cat "$mp3/app/lib/big1" "$mp3/app/small1" >/dev/null
(($(counter "$mp3" cache_misses) > 0)) || fail "nothing was fetched on demand"
(($(counter "$mp3" prefetch_hits) == 0)) || fail "prefetch hits with --no-prefetch"
st umount "$mp3"

step "a corrupt chunk in the start-up set: prefetch leaves it out, its READ gets EIO and one log line"
cp -a "$S" "$T/bad"
big=""
for d in $(pack_digests "$T/bad"); do
        [[ -z $big ]] || (($(blob_size "$T/bad" "$d") > $(blob_size "$T/bad" "$big"))) && big=$d
done
# base's pack holds the tree in walk order, app/lib/big1 first (700,000
# incompressible bytes): offset 300,000 is inside one of its chunks
flip_byte "$(blob_path "$T/bad" "$big")" 300000
mp5=$T/mnt5
mount_snap "$mp5" --store "$T/bad" --cache "$T/cache5" --state "$T/state5" g1
# (by the counter, which is exact, rather than the log's "prefetch: N of M")
for _ in $(seq 200); do
        (($(counter "$mp5" prefetch_chunks) >= expect - 1)) && break
        sleep 0.1
done
sleep 0.3 # nothing more may come
got=$(counter "$mp5" prefetch_chunks)
((got == expect - 1)) || fail "prefetched $got chunks with one corrupt, expected $((expect - 1))"
if cat "$mp5/app/lib/big1" >/dev/null 2>"$T/cat.err"; then fail "big1 read despite a corrupt chunk"; fi
grep -q "Input/output error" "$T/cat.err" || { cat "$T/cat.err" >&2; fail "big1: not EIO"; }
for f in "${SET[@]}"; do
        case $f in app/small12 | app/lib/big1) continue ;; app/lib/big2) want=$T/big2.expected ;; *) want=$T/src/$f ;; esac
        cmp "$mp5/$f" "$want" || fail "$f reads wrong beside the corrupt chunk"
done
n=$(grep -c 'chunk sha256:[0-9a-f]\{64\}.*corrupt' "$T/state5/stasisd.log" || true)
((n == 1)) || { cat "$T/state5/stasisd.log" >&2; fail "expected one log line naming the corrupt chunk, got $n"; }
for e in "$T"/cache5/v1/*/*; do
        [[ $(tail -c +65 "$e" | sha256sum | cut -d' ' -f1) == $(basename "$e") ]] || fail "cache entry $e is not what its name says"
done
st umount "$mp5"

if command -v docker-registry >/dev/null && command -v curl >/dev/null; then
        source "$(dirname "$0")/libregistry.sh"
        step "push g1 to a registry, pull it back; a lazy oci:// mount prefetches too"
        registry_start reg
        st push --store "$S" --insecure g1 "oci://$REG_HOST/p:g1"
        registry_blobs | grep -qx "${tdig#sha256:}" || fail "push left the trace blob behind"
        st pull --store "$T/s2" --insecure "oci://$REG_HOST/p:g1"
        [[ -f $(blob_path "$T/s2" "$tdig") ]] || fail "pull did not bring the trace blob"
        st verify --store "$T/s2"
        mp4=$T/mnt4
        mount_snap "$mp4" --insecure --cache "$T/cache4" --state "$T/state4" "oci://$REG_HOST/p:g1"
        for _ in $(seq 200); do
                (($(counter "$mp4" prefetch_chunks) >= expect)) && break
                sleep 0.1
        done
        got=$(counter "$mp4" prefetch_chunks)
        ((got == expect)) || fail "the oci:// mount prefetched $got chunks, expected $expect"
        # in pack order, runs of them in one Range GET each (one GET per
        # chunk before): the 77 chunks lie in two packs, 4.4 MiB in all,
        # and a GET takes at most 64 chunks or 4 MiB
        gets=$(counter "$mp4" pack_reads)
        echo "prefetch from the registry: $got chunks in $gets GETs"
        ((gets <= 8)) || fail "the oci:// mount prefetched $got chunks with $gets GETs (at most 8)"
        cmp "$mp4/app/lib/big3" "$T/src/app/lib/big3" || fail "big3 reads wrong from the registry"
        (($(counter "$mp4" prefetch_hits) == $(chunk_count "$T/src/app/lib/big3" "$cs"))) ||
                fail "reading big3 from the oci:// mount was not all prefetch hits"
        st umount "$mp4"
else
        echo "(no docker-registry or curl: the registry part is skipped)"
fi
exit 0
