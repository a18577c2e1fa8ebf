#!/usr/bin/env bash
# bench-cli.sh — issue 9, acceptance 3: `stasis bench --json DIR` prints one
# JSON document with the operator figures (commit, mount-ready, first byte,
# cold and warm read, stasisd peak RSS; checkpoint null until it exists),
# for a local store and, when docker-registry is installed, an oci:// one;
# without --json a table on stdout and, not on a TTY, nothing on stderr; it
# leaves no mount and no temporary directory; usage errors exit 2.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"
source "$(dirname "$0")/libregistry.sh"
need python3

export TMPDIR=$T/tmp
mkdir -p "$TMPDIR"
src=$T/src
mkdir -p "$src/d/e"
rand_file "$src/big" $((3 * 1024 * 1024 + 17))
rand_file "$src/d/small" 1000
: >"$src/empty"
echo hello >"$src/d/e/text"
ln -s big "$src/link"
bytes=$((3 * 1024 * 1024 + 17 + 1000 + 6))

# check_json FILE STORE: the document's fields and types, and that it
# measured what DIR holds; a local store's has a checkpoint of a 16 MiB
# change, an oci:// store's none (and a note saying why)
check_json() {
        jq -e --arg store "$2" --argjson bytes "$bytes" '
                (if ($store | startswith("oci://"))
                 then .checkpoint == null and any(.notes[]; test("checkpoint"))
                 else (.checkpoint.digest | test("^sha256:[0-9a-f]{64}$")) and .checkpoint.wall_ns > 0
                      and .checkpoint.stall_ns > 0 and .checkpoint.bytes_changed == 16777216
                      and .checkpoint.bytes_dirty >= 16777216 and .checkpoint.bytes_new >= 16000000
                      and .checkpoint.chunks_new > 0 end) and
                (.dir | type == "string") and .store == $store and .files == 4 and .bytes == $bytes
                and (.chunk_size | type == "number") and (.cold_cache_dropped | type == "boolean")
                and (.commit.digest | test("^sha256:[0-9a-f]{64}$"))
                and (.commit.wall_ns > 0) and (.commit.bytes_per_s > 0)
                and (.commit.bytes_new | type == "number") and (.commit.bytes_packed | type == "number")
                and (.commit.chunks_total > 0) and (.commit.tree_bytes > 0)
                and (.mount_ref | type == "string") and (.mount_ready_ns > 0)
                and (.first_byte_ns > 0) and (.first_byte_file | type == "string")
                and .cold_read.bytes == $bytes and .cold_read.wall_ns > 0 and .cold_read.bytes_per_s > 0
                and .warm_read.bytes == $bytes and .warm_read.wall_ns > 0 and .warm_read.bytes_per_s > 0
                and (.stasisd_peak_rss_bytes > 0)
                and (.notes | type == "array")' "$1" >/dev/null ||
                { cat "$1" >&2; fail "stasis bench --json: unexpected document"; }
}

# no_leftovers: no mount, no temporary directory
no_leftovers() {
        ! grep -q " $T/tmp/" /proc/self/mountinfo || fail "stasis bench left a mount under $T/tmp"
        [[ -z $(ls -A "$TMPDIR") ]] || { ls -la "$TMPDIR" >&2; fail "stasis bench left files in \$TMPDIR"; }
}

step "local store, --json: one document with every figure"
expect_exit 0 "$STASIS" bench --store "$T/store" --json "$src"
python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$T/out" || fail "stdout is not one JSON document"
cp "$T/out" "$T/local.json"
check_json "$T/local.json" "$T/store"
[[ $(jq -r .push "$T/local.json") == null ]] || fail "push must be null for a local store"
no_leftovers
digest=$(jq -r .commit.digest "$T/local.json")
st inspect --store "$T/store" "$digest"
[[ $(jq -r .mount_ref "$T/local.json") == "$digest" ]] || fail "the mount must be of the committed snapshot"

step "table without --json; no progress when stderr is not a TTY"
expect_exit 0 "$STASIS" bench --store "$T/store" "$src"
for w in commit "mount ready" "first byte" "read every file (cold)" "read every file (warm)" "stasisd peak RSS" checkpoint; do
        grep -qF -- "$w" "$T/out" || { cat "$T/out" >&2; fail "table lacks '$w'"; }
done
[[ ! -s $T/err ]] || { cat "$T/err" >&2; fail "stderr must be empty when not a TTY"; }
no_leftovers

step "usage and failures"
expect_exit 2 "$STASIS" bench --store "$T/store"
expect_exit 2 "$STASIS" bench --store "$T/store" "$src" "$src"
expect_exit 1 "$STASIS" bench --store "$T/store" "$T/missing"
expect_one_error_line 'bench: .*missing'
mkdir -p "$T/emptydir"
expect_exit 1 "$STASIS" bench --store "$T/store" "$T/emptydir"
expect_one_error_line 'no non-empty regular file'
no_leftovers

if command -v docker-registry >/dev/null && command -v curl >/dev/null; then
        step "oci:// store: commit, push, lazy mount from the registry"
        registry_start reg
        expect_exit 0 "$STASIS" bench --insecure --store "oci://$REG_HOST/bench/cli" --json "$src"
        cp "$T/out" "$T/oci.json"
        check_json "$T/oci.json" "oci://$REG_HOST/bench/cli"
        jq -e '(.push.wall_ns > 0) and (.push.ref | startswith("oci://")) and (.mount_ref == .push.ref)' "$T/oci.json" >/dev/null ||
                { cat "$T/oci.json" >&2; fail "oci:// bench must push and mount from the registry"; }
        no_leftovers
else
        echo "== $TEST_NAME: docker-registry not installed: oci:// part skipped"
fi
