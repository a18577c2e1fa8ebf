#!/usr/bin/env bash
# registry-span.sh — span reads from a registry: a READ that misses reads a
# span of its chunk's pack and caches the chunks after it (the files after
# it in the tree), so reading a tree of many small files costs a few Range
# GETs, not one per file. Checks, through a mount of oci://: one small file
# alone costs one bounded GET; every file read in tree order costs a few
# dozen GETs for 2,000 files, bit-exact; a chunk corrupted in the registry
# inside a span is never cached or served: its file gives EIO with one log
# line naming the chunk, and every other file still reads correctly.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/libregistry.sh"
need_registry_mount

# 2,000 small files of text (compressible: a few hundred bytes per chunk in
# the pack), 40 directories; one file of random bytes, whose chunk the pack
# holds verbatim (zstd stores it raw), to corrupt in place later.
src=$T/src
python3 - "$src" <<'EOF'
import os, random, sys
root = sys.argv[1]
rng = random.Random(7)
words = [''.join(rng.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(rng.randint(3, 9))) for _ in range(500)]
for d in range(40):
    os.makedirs(f"{root}/d{d:02}", exist_ok=True)
    for f in range(50):
        n = rng.randint(1000, 6000)
        text = ' '.join(rng.choice(words) for _ in range(n // 6))
        with open(f"{root}/d{d:02}/f{f:02}.txt", "w") as fh:
            fh.write(f"{d} {f}\n{text}\n")
with open(f"{root}/d20/f25.txt", "wb") as fh:
    fh.write(os.urandom(3000))
EOF
nfiles=$(find "$src" -type f | wc -l)
((nfiles == 2000)) || fail "made $nfiles files, not 2000"
find "$src" -type f -exec cat {} + >/dev/null # settle atimes (relatime): cmp reads them below
digest_of --settle-links "$src" >/dev/null
st commit --store "$T/s" --tag g1 "$src" >/dev/null
registry_start reg
st push --store "$T/s" --insecure g1 "oci://$REG_HOST/span:g1" >/dev/null
mkdir -p "$T/mnt"
on_exit_hook() {
        "$STASIS" umount "$T/mnt" >/dev/null 2>&1 || true
        registry_cleanup
}

mount_fresh() { # mount_fresh NAME: oci://…:g1 on $T/mnt, cache and state $T/NAME.*
        if ! "$STASIS" mount --insecure --no-prefetch --cache "$T/$1.cache" --state "$T/$1.state" \
                "oci://$REG_HOST/span:g1" "$T/mnt" 2>"$T/mount.err"; then
                cat "$T/mount.err" >&2
                fail "stasis mount oci://$REG_HOST/span:g1 failed"
        fi
}
counter() { "$STASIS" status --json "$T/mnt" | jq ".$1"; }

step "one small file alone: one GET of at most the first span"
mount_fresh one
cmp -s "$src/d05/f10.txt" "$T/mnt/d05/f10.txt" || fail "d05/f10.txt reads back wrong"
reads=$(counter pack_reads)
fetched=$(counter bytes_fetched)
((reads == 1)) || fail "one small file took $reads pack reads"
((fetched <= 320 * 1024)) || fail "one small file fetched $fetched bytes (first span is 256 KiB)"
echo "   1 GET, $fetched bytes"
st umount "$T/mnt"

step "every file in tree order: a few GETs, bit-exact"
mount_fresh all
same_tree "$src" "$T/mnt"
reads=$(counter pack_reads)
misses=$(counter cache_misses)
(($(counter errors) == 0)) || fail "read errors on an intact registry"
((reads <= nfiles / 40)) || fail "reading $nfiles small files took $reads pack reads (one per file is what spans avoid)"
echo "   $nfiles files: $reads GETs, $misses cache misses"
st umount "$T/mnt"

step "a chunk corrupted inside a span: EIO for its file only, one log line, never cached"
P=$(manifest_field "$T/s" "$(jq -r '.manifests[0].digest' "$T/s/index.json")" '.layers[1].digest')
f=$REG_DIR/data/docker/registry/v2/blobs/sha256/${P:7:2}/${P#sha256:}/data
[[ -f $f ]] || fail "no registry data file for $P"
off=$(python3 -c 'import sys; d = open(sys.argv[1], "rb").read(); print(d.find(open(sys.argv[2], "rb").read()[100:200]))' "$f" "$src/d20/f25.txt")
((off > 0)) || fail "the random file's bytes are not verbatim in pack $P"
flip_byte "$f" $((off + 50))
mount_fresh bad
# d20/f24 comes just before f25 in the pack: its span covers f25's chunk
cmp -s "$src/d20/f24.txt" "$T/mnt/d20/f24.txt" || fail "d20/f24.txt reads back wrong"
m0=$(counter cache_misses)
if cat "$T/mnt/d20/f25.txt" >/dev/null 2>"$T/eio.err"; then
        fail "the corrupt file read without an error"
fi
grep -q 'Input/output error' "$T/eio.err" || { cat "$T/eio.err" >&2; fail "the corrupt file did not give EIO"; }
# a miss, not a hit: the span before it did not cache it (the kernel may
# retry the failed page once, so one or two)
m1=$(counter cache_misses)
((m1 >= m0 + 1 && m1 <= m0 + 2)) || fail "reading the corrupt chunk made $((m1 - m0)) cache misses"
for d in d00 d20 d39; do
        for x in "$src/$d"/*; do
                [[ $x == */d20/f25.txt ]] && continue
                cmp -s "$x" "$T/mnt/$d/${x##*/}" || fail "$d/${x##*/} reads back wrong next to a corrupt chunk"
        done
done
if cat "$T/mnt/d20/f25.txt" >/dev/null 2>&1; then
        fail "the corrupt file read on the second try (a bad chunk was cached?)"
fi
log=$T/bad.state/stasisd.log
n=$(grep -c 'corrupt' "$log" || true)
((n == 1)) || { cat "$log" >&2; fail "the corrupt chunk was logged $n times, not once"; }
grep -qE "chunk sha256:[0-9a-f]{64}" "$log" || fail "the log line does not name the chunk"
st umount "$T/mnt"
flip_byte "$f" $((off + 50))
