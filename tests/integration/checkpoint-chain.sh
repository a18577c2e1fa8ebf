#!/usr/bin/env bash
# checkpoint-chain.sh — issue 6, acceptance 3: a chain of 5 generations.
#
# Generation N (1..5): mount generation N-1 by digest (a fresh state dir),
# check it shows the native tree of N-1, apply generation N's changes (new
# files, in-place edits, truncates down and up, renames of files, links and
# directories, deletes, xattrs set and removed, symlinks replaced, hardlinks
# made and broken, chmod/chown incl. setuid/setgid, a fifo), `stasis
# checkpoint` (generation 3: `stasis pause`), umount. The same changes are
# applied natively to a plain directory, with the same explicit times on
# what they touched. Asserts:
#  - every generation restores equal to the native replay (treedigest:
#    content, modes, owners, mtimes, xattrs, symlink targets, hardlink
#    groups; atimes and extents left out: the mount is noatime and reports a
#    written file as all data);
#  - each checkpoint's generation and parent, and `stasis log` shows the
#    chain of 5 (and the base);
#  - with generation 1 mounted (live), `stasis gc --keep-last 1 --grace 0`
#    untags generations 0-4, removes what only 2-4 used (the store shrinks),
#    and keeps every blob generation 1 needs: `stasis verify` of it passes
#    and the live mount reads everything right from a cold cache;
#  - generation 5 then verifies and restores right;
#  - a registry entry whose state dir's HEAD names generation 1 (a mount
#    whose checkpoints folded), or whose last_checkpoint names it, also
#    keeps it; entries of another store, or
#    naming a snapshot the store lacks (a warning), do not get in the way;
#  - with no mount of generation 1 left, gc removes the chunks only
#    generation 1 had (their packs), and generation 5 still verifies and
#    restores.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"
need setfattr getfattr mkfifo

CKPT=$TESTS_BIN/ckpt-tool
[[ -x $CKPT ]] || fail "no ckpt-tool at $CKPT"
S=$T/store
D=$T/data
N=$T/native
listing() { "$TREEDIGEST" --list --no-atime "$1" | sed 's/ extents=[^ ]*//'; }

step "base: files, a hardlink group, a symlink, a fifo, xattrs, owners, a sparse file"
mkdir -p "$D" "$N/etc" "$N/lib" "$N/dir"
"$CKPT" gen 101 random 600000 "$D/g1data"
"$CKPT" gen 102 random 4096 "$D/p4k_1"
"$CKPT" gen 103 random 4096 "$D/p4k_2"
"$CKPT" gen 104 text 100000 "$D/g2log"
"$CKPT" gen 105 random $((1024 * 1024)) "$D/g5mb"
"$CKPT" gen 106 random $((2 * 1024 * 1024)) "$N/big"
"$CKPT" gen 107 random 300000 "$N/lib/x.so"
ln "$N/lib/x.so" "$N/lib/x.so.1"
"$CKPT" gen 111 text 3000 "$N/etc/a"
"$CKPT" gen 112 text 5000 "$N/etc/b"
"$CKPT" gen 113 text 7000 "$N/etc/c"
chown 1000:1000 "$N/etc/b"
chmod 0600 "$N/etc/c"
ln -s etc/a "$N/sym"
mkfifo "$N/dir/pipe"
setfattr -n user.base -v 1 "$N/dir"
setfattr -n user.file -v "a value" "$N/etc/a"
truncate -s $((3 * 1024 * 1024)) "$N/sparse"
head -c 5000 "$D/g2log" | dd of="$N/sparse" conv=notrunc status=none
find "$N" -exec touch -h -d @1600000000.5 {} +
settle_atimes "$N"
st commit --store "$S" --tag g0 "$N" >/dev/null
d0=$("$STASIS" inspect --store "$S" --json g0 | jq -r .digest)
cs=$("$STASIS" inspect --store "$S" --json g0 | jq -r .chunk_size)
listing "$N" >"$T/L0"
st restore --store "$S" g0 "$T/r0"
diff -u "$T/L0" <(listing "$T/r0") >&2 || fail "the base does not restore equal to its source"

# times GEN ROOT PATH...: the same explicit mtime/atime on each PATH (no
# dereference), per generation.
times() {
        local g=$1 root=$2 p
        shift 2
        for p in "$@"; do
                touch -h -d "@$((1700000000 + g * 1000)).$((g * 111111111))" "$root/$p"
        done
}

# gen_ops GEN ROOT: generation GEN's changes, applied to ROOT (the mount or
# the native tree) with the same syscalls and bytes.
gen_ops() {
        local g=$1 R=$2
        case $g in
        1)
                mkdir "$R/g1"
                cp "$D/g1data" "$R/g1/data"
                dd if="$D/p4k_1" of="$R/big" bs=4096 seek=$((5 * cs / 4096)) conv=notrunc status=none
                chmod 0640 "$R/etc/a"
                chown 1001:1002 "$R/etc/a"
                setfattr -n user.g1 -v one "$R/etc/b"
                ln -s ../etc/b "$R/g1/link"
                ln "$R/etc/a" "$R/g1/a-hard"
                mkdir "$R/g1/empty"
                times 1 "$R" . g1 g1/data big etc etc/a etc/b g1/link g1/empty
                ;;
        2)
                rm "$R/g1/data"
                dd if="$D/p4k_2" of="$R/big" bs=4096 seek=$((5 * cs / 4096 + 3)) conv=notrunc status=none
                truncate -s $((5 * cs + 50000)) "$R/big"
                mv "$R/etc/c" "$R/etc/c.renamed"
                mv "$R/g1/link" "$R/g1/link2"
                setfattr -x user.g1 "$R/etc/b"
                setfattr -n user.g2 -v two "$R/etc/b"
                mkdir "$R/g2"
                cp "$D/g2log" "$R/g2/log"
                ln "$R/g2/log" "$R/g2/log.ln"
                rm "$R/etc/a"
                times 2 "$R" . etc g1 big etc/c.renamed g1/link2 etc/b g2 g2/log g1/a-hard
                ;;
        3)
                printf 'appended line\n' >>"$R/g2/log"
                sync "$R/g2/log"
                truncate -s $((1024 * 1024)) "$R/lib/x.so"
                chmod 2750 "$R/g1/empty"
                chmod 4755 "$R/g2/log"
                mkdir -p "$R/g3/deep/er"
                echo deep >"$R/g3/deep/er/f"
                echo x >"$R/g3/deep/g"
                rm "$R/sym"
                ln -s etc/b "$R/sym"
                mv "$R/g2/log.ln" "$R/g3/moved"
                setfattr -n user.dir -v d "$R/g3"
                times 3 "$R" . g2 g2/log lib lib/x.so g1/empty g3 g3/deep g3/deep/er g3/deep/er/f g3/deep/g sym
                ;;
        4)
                mkdir "$R/g4"
                cp "$R/big" "$R/g4/bigcopy"
                rm -r "$R/g3/deep"
                printf 'new b content\n' >"$R/etc/b"
                chown -h 5:5 "$R/sym"
                : >"$R/g4/empty"
                mkfifo "$R/g4/fifo"
                times 4 "$R" . g3 g4 g4/bigcopy etc etc/b sym g4/empty g4/fifo
                ;;
        5)
                dd if="$D/g5mb" of="$R/lib/x.so" bs=4096 seek=64 conv=notrunc status=none
                rm "$R/lib/x.so.1"
                mv "$R/g4" "$R/g5"
                truncate -s 0 "$R/g2/log"
                echo five >"$R/g5/new"
                times 5 "$R" . lib lib/x.so g5 g5/new g2 g2/log
                ;;
        esac
}

declare -a DG=("$d0")
for g in 1 2 3 4 5; do
        step "generation $g: mount generation $((g - 1)), change, $( ((g == 3)) && echo pause || echo checkpoint), umount"
        mp=$T/mnt$g
        mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$T/state$g" "${DG[g - 1]}"
        diff -u "$T/L$((g - 1))" <(listing "$mp") >&2 || fail "generation $((g - 1)) mounted differs from its native tree"
        gen_ops "$g" "$mp"
        gen_ops "$g" "$N"
        listing "$N" >"$T/L$g"
        verb=checkpoint
        ((g == 3)) && verb=pause
        "$STASIS" "$verb" --tag "g$g" --json "$mp" >"$T/g$g.json" || fail "stasis $verb of generation $g failed"
        jq -c '{digest, generation, parent, bytes_dirty, bytes_new, chunks_new}' "$T/g$g.json"
        DG[g]=$(jq -r .digest "$T/g$g.json")
        [[ ${DG[g]} == sha256:* ]] || fail "generation $g: no digest"
        (($(jq -r .generation "$T/g$g.json") == g)) || fail "generation $g: the answer says generation $(jq -r .generation "$T/g$g.json")"
        [[ $(jq -r .parent "$T/g$g.json") == "${DG[g - 1]}" ]] || fail "generation $g: parent is not generation $((g - 1))"
        diff -u "$T/L$g" <(listing "$mp") >&2 || fail "generation $g: the mount differs from the native replay"
        st umount "$mp"
        st restore --store "$S" "${DG[g]}" "$T/r$g"
        diff -u "$T/L$g" <(listing "$T/r$g") >&2 || fail "generation $g does not restore equal to the native replay"
        rm -rf "$T/r$g"
done

step "stasis log shows the chain"
"$STASIS" log --store "$S" --json g5 >"$T/log.json"
"$STASIS" log --store "$S" g5
[[ $(jq -r '[.[].digest] | join(" ")' "$T/log.json") == "${DG[5]} ${DG[4]} ${DG[3]} ${DG[2]} ${DG[1]} $d0" ]] ||
        fail "stasis log does not show generations 5 to 0 in order"
[[ $(jq -r '[.[].generation] | join(" ")' "$T/log.json") == "5 4 3 2 1 0" ]] || fail "stasis log: wrong generation numbers"

step "with generation 1 mounted: gc --keep-last 1 --grace 0"
# chunks only generation 1 had, and the packs holding them
for g in 0 2 3 4 5; do "$CKPT" chunks "$S" "${DG[g]}"; done | awk '{print $1}' | sort -u >"$T/others.chunks"
"$CKPT" chunks "$S" "${DG[1]}" | sort -k1,1 >"$T/g1.chunks"
join -v1 "$T/g1.chunks" "$T/others.chunks" >"$T/only1"
(($(wc -l <"$T/only1") >= 3)) || fail "only $(wc -l <"$T/only1") chunks are generation 1's alone; expected its new file's and big's chunk"
awk '{print $2}' "$T/only1" | sort -u >"$T/only1.packs"
echo "   $(wc -l <"$T/only1") chunks only generation 1 had, in $(wc -l <"$T/only1.packs") packs"
g1_blobs() { # every blob generation 1 needs
        echo "${DG[1]#sha256:}"
        jq -r '.config.digest, .layers[].digest' "$(blob_path "$S" "${DG[1]}")" | sed 's/^sha256://'
}
live=$T/live
mount_snap "$live" --store "$S" --cache "$T/cache-live" --state "$T/state-live" "${DG[1]}"
size0=$(store_bytes "$S")
"$STASIS" gc --store "$S" --keep-last 1 --grace 0 --json >"$T/gc1.json" || fail "stasis gc failed"
echo "   $(cat "$T/gc1.json")"
(($(jq -r .roots_dropped "$T/gc1.json") == 5)) || fail "gc --keep-last 1 untagged $(jq -r .roots_dropped "$T/gc1.json") snapshots, expected 5"
(($(jq -r .roots_pinned "$T/gc1.json") == 1)) || fail "gc did not count the live mount's snapshot as in use"
size1=$(store_bytes "$S")
echo "   store: $size0 -> $size1 bytes"
((size1 < size0)) || fail "gc --keep-last 1 did not shrink the store ($size0 -> $size1 bytes)"
for b in $(g1_blobs); do
        [[ -f $S/blobs/sha256/$b ]] || fail "gc removed blob $b, which the live mount of generation 1 uses"
done
for g in 2 3 4; do
        [[ ! -e $(blob_path "$S" "${DG[g]}") ]] || fail "gc kept generation $g's manifest"
done
st verify --store "$S" "${DG[1]}"
diff -u "$T/L1" <(listing "$live") >&2 || fail "the live mount of generation 1 reads wrong after gc"
st verify --store "$S" "${DG[5]}"
st restore --store "$S" g5 "$T/r5"
diff -u "$T/L5" <(listing "$T/r5") >&2 || fail "generation 5 does not restore right after gc"
rm -rf "$T/r5"

step "registry entries: a state dir's HEAD pins its base, last_checkpoint its snapshot; other stores' and missing snapshots do not"
st umount "$live"
# fake_entry NAME STORE SNAPSHOT STATE_DIR: a registry entry as stasisd writes it
fake_entry() {
        jq -n --arg mp "/nonexistent/$1" --arg st "$2" --arg sn "$3" --arg sd "$4" \
                '{mountpoint: $mp, pid: 1, socket: "/nonexistent", state_dir: $sd, log: "/nonexistent",
                  snapshot: $sn, store: $st, cache: "/nonexistent", labels: {}, started: "2026-01-01T00:00:00Z"}' \
                >"$STASIS_RUN_DIR/mounts/$1.json"
}
mkdir -p "$T/fake-state"
printf 'stasis-state 1\nbase %s\nlayers 1\n' "${DG[1]}" >"$T/fake-state/HEAD"
fake_entry folded "$(realpath "$S")" "$d0" "$T/fake-state"
fake_entry missing "$(realpath "$S")" "sha256:$(printf '0%.0s' {1..64})" /nonexistent
fake_entry other-store "$T/another-store" "${DG[1]}" /nonexistent
"$STASIS" gc --store "$S" --grace 0 --json >"$T/gc2.json" 2>"$T/gc2.err" || { cat "$T/gc2.err" >&2; fail "gc failed with a stale registry entry"; }
grep -q "which a mount uses, is not in the store" "$T/gc2.err" || fail "gc did not warn about the missing pinned snapshot: $(cat "$T/gc2.err")"
(($(jq -r .roots_pinned "$T/gc2.json") == 1)) || fail "gc pinned $(jq -r .roots_pinned "$T/gc2.json") snapshots, expected 1 (HEAD's base)"
for b in $(g1_blobs); do
        [[ -f $S/blobs/sha256/$b ]] || fail "gc removed blob $b of the base a registered state dir's HEAD names"
done
rm "$STASIS_RUN_DIR"/mounts/{folded,missing,other-store}.json
# an entry naming its mount's last checkpoint (the next checkpoint reuses its chunks)
fake_entry checkpointed "$(realpath "$S")" "$d0" /nonexistent
jq --arg d "${DG[1]}" '.last_checkpoint = $d' "$STASIS_RUN_DIR/mounts/checkpointed.json" >"$T/entry.json"
mv "$T/entry.json" "$STASIS_RUN_DIR/mounts/checkpointed.json"
"$STASIS" gc --store "$S" --grace 0 --json >"$T/gc3.json" 2>/dev/null || fail "gc failed"
(($(jq -r .roots_pinned "$T/gc3.json") == 1)) || fail "gc pinned $(jq -r .roots_pinned "$T/gc3.json") snapshots, expected 1 (the last checkpoint)"
for b in $(g1_blobs); do
        [[ -f $S/blobs/sha256/$b ]] || fail "gc removed blob $b of a registered mount's last checkpoint"
done
rm "$STASIS_RUN_DIR/mounts/checkpointed.json"

step "no mount of generation 1 left: gc removes what only generation 1 had"
st gc --store "$S" --grace 0
while read -r p; do
        [[ ! -e $S/blobs/sha256/$p ]] || fail "pack $p, holding chunks only generation 1 had, survived gc"
done <"$T/only1.packs"
[[ ! -e $(blob_path "$S" "${DG[1]}") ]] || fail "generation 1's manifest survived gc after its mount went"
st verify --store "$S"
st restore --store "$S" g5 "$T/r5"
diff -u "$T/L5" <(listing "$T/r5") >&2 || fail "generation 5 does not restore right after the second gc"
"$STASIS" log --store "$S" g5
exit 0
