#!/usr/bin/env bash
# mount-read.sh — issue 4, acceptance 1 and 2 on a tree holding everything a
# rootfs holds:
#  - mounting reads no pack bytes, nor does a metadata walk (counters);
#  - the tree read through the mountpoint digests equal to the source
#    (modes, owners, ns times, xattrs, ACLs, hardlinks, symlinks, devices,
#    sparse extents, content);
#  - reading one file fetches exactly its chunks; a partial read fetches a
#    bounded number (readahead);
#  - a second mount of the snapshot on the same cache reads no pack bytes;
#  - a store whose tree names chunks it does not hold gets no cache hit;
#  - stasis status (table and JSON) and GET /metrics answer.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"
need setfattr setfacl setcap mknod curl

S=$T/store
src=$T/src
CS=$((256 * 1024)) # pinned: the counts below are reasoned in 256 KiB chunks
mkdir "$src"

step "build the source tree"
cd "$src"
: >empty
echo "hello, stasis" >small
rand_file multi $((3 * 1024 * 1024 + 1234))          # 13 chunks
rand_file big $((20 * 1024 * 1024))                    # 80 chunks
truncate -s 64M all_hole
truncate -s 5M hole_chunks
dd if=/dev/urandom of=hole_chunks bs=256K count=1 conv=notrunc status=none
dd if=/dev/urandom of=hole_chunks bs=256K seek=19 count=1 conv=notrunc status=none
truncate -s 1M hole_mid_chunk
dd if=/dev/urandom of=hole_mid_chunk bs=4096 count=25 conv=notrunc status=none
dd if=/dev/urandom of=hole_mid_chunk bs=4096 seek=40 count=60 conv=notrunc status=none
mkdir -p a/b/c empty_dir sticky setgid_dir
echo deep >a/b/c/deep
printf 'x' >"a/name with spaces"
chmod 1777 sticky
chmod 2755 setgid_dir
echo suid >suid && chmod 4755 suid
echo owned >owned && chown 1234:5678 owned
ln small a/hardlink
ln small a/b/hardlink2
ln -s small link
ln -s /nonexistent/target dangling
ln -s a/b/c dirlink
mkfifo fifo
mknod chardev c 1 3
mknod blockdev b 7 0
setfattr -n user.note -v "a user xattr" small
setfattr -n trusted.secret -v "t" small
setcap cap_net_raw+ep suid
setfacl -m u:1000:rwx,g:100:r-x a
setfacl -d -m u:1000:rwx a
touch -h -d '2001-02-03 04:05:06.123456789' link
touch -d '1999-12-31 23:59:59.987654321' multi
cd - >/dev/null
"$TREEDIGEST" "$src" >/dev/null # settle symlink atimes (see treedigest.c)
"$TREEDIGEST" --list "$src" >"$T/src.list"

step "commit"
st commit --store "$S" --chunk-size "$CS" --tag base "$src"

step "a mount that fails says why on stderr and in its log"
mkdir "$T/mnt0"
expect_exit 1 "$STASIS" mount --store "$S" --cache "$T/cache0" --state "$T/state0" nosuchtag "$T/mnt0"
grep -q "nosuchtag" "$T/err" || { cat "$T/err" >&2; fail "stderr does not name the missing snapshot"; }
grep -q "nosuchtag" "$T/state0/stasisd.log" || fail "stasisd.log lacks the failed mount's error"
! is_mounted "$T/mnt0" || fail "a failed mount left a mount behind"

step "mount: no pack bytes read, even by a metadata walk"
mp1=$T/mnt1
mount_snap "$mp1" --store "$S" --cache "$T/cache1" base
ls -lR "$mp1" >/dev/null
stat "$mp1/big" >/dev/null
getfattr -d "$mp1/small" >/dev/null 2>&1 || true
(($(counter "$mp1" bytes_fetched) == 0)) || fail "mount read pack bytes before any file access"
(($(counter "$mp1" chunks_fetched) == 0)) || fail "mount fetched chunks before any file access"

step "the tree through the mountpoint digests equal to the source"
"$TREEDIGEST" --list "$mp1" >"$T/mnt.list"
if ! cmp -s "$T/src.list" "$T/mnt.list"; then
        diff -u "$T/src.list" "$T/mnt.list" >"$T/diff" || true
        head -40 "$T/diff" >&2
        fail "treedigest of the mount differs from the source"
fi
(($(counter "$mp1" errors) == 0)) || fail "errors while reading the whole tree"
# The all-hole file cost nothing: no chunk of it was ever fetched.
fetched=$(counter "$mp1" chunks_fetched)
# multi 13 + big 80 + hole_chunks 2 + hole_mid_chunk <= 4 + five small files
want=$(($(chunk_count "$src/multi" $CS) + $(chunk_count "$src/big" $CS) + 2 + 4 + 5))
((fetched <= want)) || fail "whole-tree read fetched $fetched chunks, the tree has at most $want with data"

step "reading one file fetches only its chunks"
mp2=$T/mnt2
mount_snap "$mp2" --store "$S" --cache "$T/cache2" base
cmp "$src/multi" "$mp2/multi" || fail "multi read back wrong"
n=$(chunk_count "$src/multi" $CS)
got=$(counter "$mp2" chunks_fetched)
((got == n)) || fail "reading multi ($n chunks) fetched $got chunks"
# A 4 KiB read at the start of an 80-chunk file: its chunk, plus bounded
# readahead (kernel readahead may touch the next chunk; ours adds <= 4).
dd if="$mp2/big" of=/dev/null bs=4096 count=1 status=none
sleep 0.5 # let background readahead finish
got2=$(($(counter "$mp2" chunks_fetched) - got))
((got2 >= 1 && got2 <= 6)) || fail "a 4 KiB read of big fetched $got2 chunks (want 1..6)"
# Sequential read of the whole file: readahead runs, and never beyond the file.
cmp "$src/big" "$mp2/big" || fail "big read back wrong"
sleep 0.5
got3=$(($(counter "$mp2" chunks_fetched) - got))
((got3 == $(chunk_count "$src/big" $CS))) || fail "reading big fetched $got3 chunks, it has $(chunk_count "$src/big" $CS)"
(($(counter "$mp2" readahead_chunks) > 0)) || fail "a sequential read of an 80-chunk file did no readahead"

step "a second mount of the snapshot is served from the cache"
mp3=$T/mnt3
mount_snap "$mp3" --store "$S" --cache "$T/cache2" base
cmp "$src/multi" "$mp3/multi" || fail "multi read back wrong from the cache"
cmp "$src/big" "$mp3/big" || fail "big read back wrong from the cache"
(($(counter "$mp3" bytes_fetched) == 0)) || fail "second mount read pack bytes: $(counter "$mp3" bytes_fetched)"
(($(counter "$mp3" cache_hits) >= n + 80)) || fail "second mount: $(counter "$mp3" cache_hits) cache hits"

step "a store that lacks the packs gets no cache hit for their chunks"
S2=$T/store2
cp -a "$S" "$S2"
for p in $(pack_digests "$S2"); do rm "$(blob_path "$S2" "$p")"; done
mp4=$T/mnt4
mount_snap "$mp4" --store "$S2" --cache "$T/cache2" base
ls -l "$mp4/multi" >/dev/null || fail "metadata of a store without packs is unreadable"
if cat "$mp4/multi" >/dev/null 2>"$T/cat.err"; then
        fail "read multi from a store that lacks its pack: the cache served another store's chunks"
fi
grep -q "Input/output error" "$T/cat.err" || { cat "$T/cat.err" >&2; fail "expected EIO"; }
(($(counter "$mp4" cache_hits) == 0)) || fail "cache hit for a chunk the mount's store does not hold"

step "status table and /metrics"
"$STASIS" status "$mp3" >"$T/status.txt" || fail "stasis status failed"
grep -q "^snapshot .*sha256:" "$T/status.txt" || { cat "$T/status.txt" >&2; fail "status table lacks the snapshot"; }
grep -q "^chunks fetched" "$T/status.txt" || fail "status table lacks chunks fetched"
sock=$(jq -r .socket "$(registry_entry "$mp3")")
[[ $(stat -c %a "$sock") == 600 ]] || fail "control socket mode is $(stat -c %a "$sock"), not 600"
curl -sf --unix-socket "$sock" http://localhost/metrics >"$T/metrics" || fail "GET /metrics failed"
grep -q '^stasis_cache_hits_total [1-9]' "$T/metrics" || { cat "$T/metrics" >&2; fail "metrics lack cache hits"; }
# A peer with another uid is refused (SO_PEERCRED).
if command -v setpriv >/dev/null; then
        chmod 755 "$(dirname "$sock")" "$T" "$T/run" "$T/run/state" 2>/dev/null || true
        chmod 666 "$sock"
        code=$(setpriv --reuid=65534 --regid=65534 --clear-groups \
                curl -s -o /dev/null -w '%{http_code}' --unix-socket "$sock" http://localhost/api/v1/status || true)
        chmod 600 "$sock"
        [[ $code == 403 ]] || fail "a peer with uid 65534 got HTTP $code, not 403"
fi

step "umount"
for m in "$mp1" "$mp2" "$mp3" "$mp4"; do
        st umount "$m"
        ! is_mounted "$m" || fail "$m still mounted"
done
[[ -z $(ls "$STASIS_RUN_DIR/mounts") ]] || fail "registry entries left after umount"
