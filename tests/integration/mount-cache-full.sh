#!/usr/bin/env bash
# mount-cache-full.sh — a node cache whose filesystem fills before its size
# bound (the default bound is 4 GiB; here the cache sits on an 8 MiB tmpfs).
# Reads stay right, and the cache makes room instead of failing every
# insert: readahead puts chunks in the cache for the reader to find, so a
# cache that refuses them makes the reader fetch each one again (2.2x the
# pack bytes before; 1.0x now). Asserted: the bytes read back equal the
# source, pack bytes read stay under 1.2x the file, the cache evicted, and
# the log says once that the filesystem is full.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"

small=$T/small
tmpfs_dir "$small" 8m

S=$T/store
mkdir -p "$T/src"
rand_file "$T/src/big" $((40 * 1024 * 1024)) # incompressible: pack bytes = file bytes
st commit --store "$S" --tag base "$T/src"
packs=$(pack_bytes "$S")

step "read 40 MiB through a cache on an 8 MiB filesystem"
mp=$T/mnt
mount_snap "$mp" --store "$S" --cache "$small/cache" --state "$T/state" base
cmp "$T/src/big" "$mp/big" || fail "the file reads back wrong"
fetched=$(counter "$mp" bytes_fetched)
evictions=$(counter "$mp" cache_evictions)
echo "   pack bytes $packs, read $fetched; $evictions evictions"
((evictions > 0)) || fail "the cache evicted nothing on a full filesystem"
((fetched * 5 <= packs * 6)) || fail "read $fetched pack bytes for $packs (> 1.2x): inserts fail instead of making room"
log=$(daemon_log "$mp")
n=$(grep -c "filesystem is full below the size bound" "$log" || true)
((n == 1)) || fail "the full cache was logged $n times (want once)"

step "a second read: the same bytes"
cmp "$T/src/big" "$mp/big" || fail "the second read differs"
exit 0
