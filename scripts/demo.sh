#!/usr/bin/env bash
# demo.sh — what `make demo` runs after the build: commit a sample tree,
# change 4 KiB of a 64 MiB file, commit again, restore, compare, and show
# what each step cost (wall time, store growth). Everything lives under
# build/demo/ and is recreated on each run.
#
# Environment: STASIS (binary, default build/stasis), DEMO_DIR (build/demo).
set -euo pipefail
cd "$(dirname "$0")/.."

STASIS=${STASIS:-build/stasis}
D=${DEMO_DIR:-build/demo}
SRC=$D/src STORE=$D/store OUT=$D/restored

if [[ ! -x $STASIS ]]; then
        echo "demo: $STASIS is not built (make build)" >&2
        exit 1
fi

bold=; reset=
if [[ -t 1 ]]; then bold=$'\e[1m'; reset=$'\e[0m'; fi
say() { printf '\n%s== %s%s\n' "$bold" "$*" "$reset"; }

# store_bytes: apparent size of the whole store directory, and of its blobs.
store_bytes() { [[ -d $STORE ]] && du --apparent-size -sb "$STORE" | cut -f1 || echo 0; }
blob_bytes() {
        [[ -d $STORE/blobs ]] || { echo 0; return; }
        find "$STORE/blobs" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'
}
human() { numfmt --to=iec-i --suffix=B --format='%.1f' "$1"; }

# cost NAME CMD... : run CMD, print its output, record wall time and growth.
steps=() walls=() growths=()
cost() {
        local name=$1; shift
        local b0 t0 t1 b1
        b0=$(store_bytes)
        t0=$(date +%s.%N)
        "$@"
        t1=$(date +%s.%N)
        b1=$(store_bytes)
        steps+=("$name")
        walls+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')")
        growths+=($((b1 - b0)))
}

# json_get FILE KEY...: print fields of a --json result, one per line.
json_get() {
        python3 - "$@" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for k in sys.argv[2:]:
    print(f"  {k:14} {d.get(k)}")
PY
}

say "sample tree in $SRC"
rm -rf "$D"
mkdir -p "$SRC"
t0=$(date +%s.%N)
for i in $(seq -w 1 12); do
        mkdir -p "$SRC/dir$i/sub"
        for j in $(seq -w 1 25); do
                # small text files of varying size, some alike (dedup), some not
                seq 1 $((RANDOM % 2000 + 10#$j)) | sed "s/^/dir$i file$j line /" >"$SRC/dir$i/f$j.txt"
        done
        head -c $((RANDOM * 3)) /dev/urandom >"$SRC/dir$i/sub/random.bin"
        cp "$SRC/dir01/f01.txt" "$SRC/dir$i/sub/same-as-dir01-f01.txt" 2>/dev/null || true
done
# The big file: 48 MiB of random bytes, then 16 MiB that compress well.
head -c $((48 << 20)) /dev/urandom >"$SRC/big.img"
{ yes "stasis demo compressible tail" || true; } | head -c $((16 << 20)) >>"$SRC/big.img"
: >"$SRC/empty"
truncate -s 8M "$SRC/sparse.img"
printf 'data in a hole-y file' | dd of="$SRC/sparse.img" bs=4096 seek=1000 conv=notrunc status=none
ln -s dir01/f01.txt "$SRC/link-relative"
ln -s /nonexistent/target "$SRC/link-dangling"
ln "$SRC/dir02/f02.txt" "$SRC/hardlink-to-dir02-f02"
chmod 4755 "$SRC/dir03/f03.txt"
chmod 1777 "$SRC/dir04"
touch -d '2001-02-03 04:05:06.123456789' "$SRC/dir05/f05.txt"
nfiles=$(find "$SRC" | wc -l)
echo "$nfiles entries, $(human "$(du --apparent-size -sb "$SRC" | cut -f1)") apparent," \
        "built in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s"

say "commit gen1"
cost "commit gen1" "$STASIS" commit --store "$STORE" --tag gen1 --json "$SRC" >"$D/gen1.json"
json_get "$D/gen1.json" digest files bytes_logical chunks_new bytes_packed packs_new tree_bytes

say "change 4 KiB in the middle of big.img, add a file"
dd if=/dev/urandom of="$SRC/big.img" bs=4096 seek=$(((32 << 20) / 4096)) count=1 \
        conv=notrunc status=none
echo "a new file in gen2" >"$SRC/dir01/new-in-gen2.txt"

say "commit gen2 --parent gen1"
cost "commit gen2" "$STASIS" commit --store "$STORE" --parent gen1 --tag gen2 --json "$SRC" >"$D/gen2.json"
json_get "$D/gen2.json" digest parent generation chunks_new chunks_reused bytes_new bytes_packed tree_bytes

say "commit gen2 again, unchanged (should add no pack bytes)"
cost "commit same" "$STASIS" commit --store "$STORE" --parent gen2 --json "$SRC" >"$D/gen3.json"
json_get "$D/gen3.json" digest chunks_new bytes_packed

say "restore gen2 into $OUT"
rm -rf "$OUT"
cost "restore gen2" "$STASIS" restore --store "$STORE" gen2 "$OUT"

say "compare source and restored tree"
cost "compare" true
t0=$(date +%s.%N)
diff -r --no-dereference "$SRC" "$OUT"
cmp "$SRC/big.img" "$OUT/big.img"
meta() { (cd "$1" && find . -printf '%p %M %U %G %s %T@ %l %n\n' | sort); }
diff <(meta "$SRC") <(meta "$OUT")
[[ $(stat -c %i "$OUT/dir02/f02.txt") == $(stat -c %i "$OUT/hardlink-to-dir02-f02") ]] ||
        { echo "demo: hardlink not restored as one inode" >&2; exit 1; }
echo "identical: contents, modes, owners, sizes, mtimes (ns), symlink targets, link counts"
echo "sparse.img: source $(du -k "$SRC/sparse.img" | cut -f1) KiB allocated, restored $(du -k "$OUT/sparse.img" | cut -f1) KiB"
walls[-1]=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.3f", b - a}')

say "stasis log gen2"
cost "log" "$STASIS" log --store "$STORE" gen2
say "stasis diff gen1 gen2"
cost "diff" "$STASIS" diff --store "$STORE" gen1 gen2
say "stasis inspect gen2"
cost "inspect" "$STASIS" inspect --store "$STORE" gen2

say "what each step cost"
printf '  %-14s %10s %14s\n' step "wall (s)" "store growth"
for i in "${!steps[@]}"; do
        printf '  %-14s %10s %14s\n' "${steps[$i]}" "${walls[$i]}" "$(human "${growths[$i]}") (${growths[$i]})"
done
echo "  store total: $(human "$(store_bytes)") apparent, blobs $(human "$(blob_bytes)") in" \
        "$(find "$STORE/blobs" -type f | wc -l) files; source tree $(human "$(du --apparent-size -sb "$SRC" | cut -f1)")"
