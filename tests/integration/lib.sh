# lib.sh — helpers sourced by every integration test (bash, set -euo pipefail).
#
# Environment (ctest sets it; defaults suit a manual run from the repo):
#   STASIS     the stasis binary            (default $BUILD_DIR/stasis)
#   BUILD_DIR  the build directory          (default build)
#   SRC_DIR    the source tree              (default .)
#   TESTS_BIN  dir of tests/tools helpers   (default $BUILD_DIR/tests)
#
# Each test gets an empty work dir $T = $BUILD_DIR/itest/<test name>. It is
# removed when the test passes and kept (and named) when it fails.
set -euo pipefail

BUILD_DIR=${BUILD_DIR:-build}
SRC_DIR=${SRC_DIR:-.}
STASIS=${STASIS:-$BUILD_DIR/stasis}
TESTS_BIN=${TESTS_BIN:-$BUILD_DIR/tests}
TREEDIGEST=$TESTS_BIN/treedigest
TEST_NAME=$(basename "${BASH_SOURCE[1]:-$0}" .sh)
T=$(realpath -m "$BUILD_DIR/itest/$TEST_NAME")
export LC_ALL=C
# A stray $STASIS_STORE must not point tests at a real store.
unset STASIS_STORE

[[ -x $STASIS ]] || { echo "$TEST_NAME: no stasis binary at $STASIS" >&2; exit 1; }
[[ -x $TREEDIGEST ]] || { echo "$TEST_NAME: no treedigest at $TREEDIGEST" >&2; exit 1; }

rm -rf "$T"
mkdir -p "$T"

# A test may define on_exit_hook (e.g. to stop background jobs); it runs
# first, whatever the outcome.
_on_exit() {
        local rc=$?
        if declare -F on_exit_hook >/dev/null; then
                on_exit_hook || true
        fi
        if ((rc == 0)); then
                rm -rf "$T"
                echo "$TEST_NAME: PASS"
        elif ((rc == 77)); then
                rm -rf "$T"
        else
                echo "$TEST_NAME: FAIL (exit $rc); work dir kept: $T" >&2
        fi
}
trap _on_exit EXIT

fail() {
        echo "$TEST_NAME: FAIL: $*" >&2
        exit 1
}

skip() {
        echo "$TEST_NAME: SKIP: $*" >&2
        exit 77
}

step() {
        echo "== $TEST_NAME: $*"
}

need() {
        local t
        for t in "$@"; do
                command -v "$t" >/dev/null 2>&1 || skip "needs $t, which is not installed"
        done
}

# expect_exit CODE CMD...: run CMD, capturing stdout in $T/out and stderr in
# $T/err; fail unless it exits with CODE. Tee both into the log.
expect_exit() {
        local want=$1 rc=0
        shift
        "$@" >"$T/out" 2>"$T/err" || rc=$?
        if ((rc != want)); then
                echo "--- stdout of: $*" >&2; head -c 4000 "$T/out" >&2
                echo "--- stderr of: $*" >&2; head -c 4000 "$T/err" >&2
                fail "expected exit $want, got $rc: $*"
        fi
}

# expect_one_error_line PATTERN: $T/err (from expect_exit) holds exactly one
# line, which starts with "stasis: " and matches the extended regex PATTERN.
expect_one_error_line() {
        local n
        n=$(wc -l <"$T/err")
        ((n == 1)) || { cat "$T/err" >&2; fail "expected one line on stderr, got $n"; }
        grep -qE '^stasis: ' "$T/err" || { cat "$T/err" >&2; fail "stderr line lacks the 'stasis: ' prefix"; }
        grep -qE -- "$1" "$T/err" || { cat "$T/err" >&2; fail "stderr does not match /$1/"; }
}

# st ARGS...: stasis, failing the test (with its stderr) if it fails.
st() {
        local rc=0
        "$STASIS" "$@" 2>"$T/st.err" || rc=$?
        if ((rc != 0)); then
                cat "$T/st.err" >&2
                fail "stasis $* exited $rc"
        fi
}

# settle_atimes DIR: read every symlink target once. readlink() may update a
# symlink's atime (relatime) and no flag prevents it, so a tree whose links
# were never read would change under the first reader (commit included).
settle_atimes() {
        "$TREEDIGEST" --settle-links "$1" # not find(1): it would bump directory atimes
}

# digest_of DIR: treedigest of a tree.
digest_of() {
        "$TREEDIGEST" "$@"
}

# same_tree SRC DST [treedigest flags]: listings equal, else fail with a diff.
same_tree() {
        local a=$1 b=$2
        shift 2
        "$TREEDIGEST" --list "$@" "$a" >"$T/listing.a"
        "$TREEDIGEST" --list "$@" "$b" >"$T/listing.b"
        if ! cmp -s "$T/listing.a" "$T/listing.b"; then
                diff -u "$T/listing.a" "$T/listing.b" | head -60 >&2 || true
                fail "trees differ: $a vs $b"
        fi
}

# blob_list STORE: "<hex> <size>" for every blob, sorted (for comm).
blob_list() {
        find "$1/blobs/sha256" -type f -printf '%f %s\n' | sort
}

# store_bytes STORE: total bytes of every blob plus index.json and oci-layout.
store_bytes() {
        local b
        b=$(find "$1/blobs/sha256" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
        echo $((b + $(stat -c %s "$1/index.json") + $(stat -c %s "$1/oci-layout")))
}

blob_path() { # blob_path STORE sha256:HEX
        echo "$1/blobs/sha256/${2#sha256:}"
}

blob_size() { # blob_size STORE sha256:HEX
        stat -c %s "$(blob_path "$1" "$2")"
}

# manifest_field STORE DIGEST JQ: a field of a snapshot manifest.
manifest_field() {
        jq -r "$3" "$(blob_path "$1" "$2")"
}

# pack_digests STORE: every pack any manifest in index.json lists, unique.
pack_digests() {
        local m
        for m in $(jq -r '.manifests[].digest' "$1/index.json" | sort -u); do
                [[ -f $(blob_path "$1" "$m") ]] || continue
                jq -r '.layers[1:][] | .digest' "$(blob_path "$1" "$m")"
        done | sort -u
}

# pack_bytes STORE: total bytes of the packs that the store's snapshots list.
pack_bytes() {
        local p s=0
        for p in $(pack_digests "$1"); do
                s=$((s + $(blob_size "$1" "$p")))
        done
        echo $s
}

# flip_byte FILE OFFSET: invert one byte in place (for corruption tests).
flip_byte() {
        local f=$1 off=$2 b
        b=$(od -An -tu1 -j "$off" -N1 "$f" | tr -d ' ')
        [[ -n $b ]] || fail "flip_byte: $f has no byte at $off"
        printf "$(printf '\\%03o' $((b ^ 0xff)))" | dd of="$f" bs=1 seek="$off" conv=notrunc status=none
}

# rand_file PATH BYTES: incompressible content.
rand_file() {
        head -c "$2" /dev/urandom >"$1"
}
