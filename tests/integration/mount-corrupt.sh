#!/usr/bin/env bash
# mount-corrupt.sh — issue 4, acceptance 3: bad data in the store is EIO for
# the reads of that chunk's range only, with one log line naming the chunk,
# never wrong bytes, and the daemon keeps running; a missing pack likewise;
# a rotten cache entry is never served.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"

S=$T/store
src=$T/src
mkdir -p "$src/d"
rand_file "$src/one" $((8 * 1024 * 1024))
rand_file "$src/two" $((8 * 1024 * 1024 + 777))
for i in 1 2 3 4 5; do echo "small file $i" >"$src/d/s$i"; done
st commit --store "$S" --tag base "$src"
CS=$("$STASIS" inspect --store "$S" --json base | jq -r .chunk_size) # the ranges are its chunks
packs=($(pack_digests "$S"))
((${#packs[@]} == 1)) || fail "expected one pack, got ${#packs[@]}"
pack=$(blob_path "$S" "${packs[0]}")

# check_ranges MP: read every chunk-sized range of every file; print the
# number of ranges that failed with EIO; fail on any range that reads wrong
# bytes or fails otherwise.
check_ranges() {
        local mp=$1 f n i bad=0
        for f in one two d/s1 d/s2 d/s3 d/s4 d/s5; do
                n=$(chunk_count "$src/$f" $CS)
                for ((i = 0; i < n; i++)); do
                        # fullblock: a range that spans a bad chunk may first
                        # read short (the good chunks before it, as a disk
                        # returns what it read before a bad sector); the read
                        # after that must fail with EIO.
                        dd if="$src/$f" bs=$CS skip=$i count=1 status=none of="$T/want"
                        if dd if="$mp/$f" bs=$CS skip=$i count=1 iflag=fullblock status=none of="$T/range" 2>"$T/dd.err"; then
                                cmp -s "$T/range" "$T/want" || fail "$f range $i read WRONG BYTES"
                        else
                                grep -q "Input/output error" "$T/dd.err" || { cat "$T/dd.err" >&2; fail "$f range $i: not EIO"; }
                                # what it did read before the error is right
                                cmp -s -n "$(stat -c %s "$T/range")" "$T/range" "$T/want" ||
                                        fail "$f range $i read WRONG BYTES before its EIO"
                                bad=$((bad + 1))
                        fi
                done
        done
        echo $bad
}

step "a flipped byte in one chunk of the pack"
cp "$pack" "$T/pack.orig"
flip_byte "$pack" $(($(stat -c %s "$pack") / 2))
mp=$T/mnt
mount_snap "$mp" --store "$S" --cache "$T/cache" base
bad=$(check_ranges "$mp")
((bad == 1)) || fail "$bad chunk ranges failed, expected exactly 1"
# Read the bad range again, twice: still EIO, still one log line.
bad=$(check_ranges "$mp")
((bad == 1)) || fail "second pass: $bad ranges failed"
log=$(daemon_log "$mp")
n=$(grep -c 'chunk sha256:[0-9a-f]\{64\}.*corrupt' "$log" || true)
((n == 1)) || { cat "$log" >&2; fail "expected one log line naming the corrupt chunk, got $n"; }
kill -0 "$(daemon_pid "$mp")" || fail "stasisd died"
(($(counter "$mp" errors) >= 2)) || fail "errors counter is $(counter "$mp" errors)"
# The bad chunk never entered the cache: every entry hashes to its name.
for e in "$T"/cache/v1/*/*; do
        [[ $(tail -c +65 "$e" | sha256sum | cut -d' ' -f1) == $(basename "$e") ]] || fail "cache entry $e is not what its name says"
done
st umount "$mp"

step "a missing pack: EIO for data, metadata fine, daemon alive"
mv "$pack" "$T/pack.moved"
mp=$T/mnt2
mount_snap "$mp" --store "$S" --cache "$T/cache-empty" base
ls -lR "$mp" >/dev/null || fail "metadata unreadable without the pack"
if cat "$mp/d/s1" >/dev/null 2>"$T/cat.err"; then fail "read data of a missing pack"; fi
grep -q "Input/output error" "$T/cat.err" || { cat "$T/cat.err" >&2; fail "expected EIO for a missing pack"; }
if cat "$mp/d/s1" >/dev/null 2>&1; then fail "second read of a missing pack succeeded"; fi
n=$(grep -c 'chunk sha256:[0-9a-f]\{64\}.*pack missing' "$(daemon_log "$mp")" || true)
((n == 1)) || { cat "$(daemon_log "$mp")" >&2; fail "expected one log line for the missing pack's chunk, got $n"; }
kill -0 "$(daemon_pid "$mp")" || fail "stasisd died"
"$STASIS" status "$mp" >/dev/null || fail "status fails after EIO"
st umount "$mp"

step "rotten cache entries are refetched, never served"
cp "$T/pack.orig" "$pack"
mp=$T/mnt3
mount_snap "$mp" --store "$S" --cache "$T/cache3" base
cmp "$src/one" "$mp/one" || fail "one read back wrong"
st umount "$mp"
entries=("$T"/cache3/v1/*/*)
((${#entries[@]} >= 32)) || fail "only ${#entries[@]} cache entries after reading one"
for e in "${entries[@]}"; do flip_byte "$e" 1000; done
mp=$T/mnt4
mount_snap "$mp" --store "$S" --cache "$T/cache3" base
cmp "$src/one" "$mp/one" || fail "one read WRONG after cache rot"
(($(counter "$mp" bytes_fetched) > 0)) || fail "rotten entries were not refetched"
(($(counter "$mp" cache_bad_entries) >= 32)) || fail "bad entries not detected: $(counter "$mp" cache_bad_entries)"
st umount "$mp"
