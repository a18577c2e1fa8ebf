#!/usr/bin/env bash
# badinput.sh — exit status and messages on bad input: usage errors exit 2
# with a usage line; a missing store, reference or directory, a non-empty
# restore target, and crafted bad tree blobs exit 1 with one clear
# "stasis: " line on stderr and never crash.
source "$(dirname "$0")/lib.sh"
need jq zstd sha256sum

S=$T/store
mkdir -p "$T/src/sub"
echo hello >"$T/src/aa"
echo world >"$T/src/sub/qq"
echo x >"$T/src/slash"
st commit --store "$S" --tag good "$T/src" >"$T/good"

step "usage errors exit 2 with a usage line"
usage() {
        expect_exit 2 "$STASIS" "$@"
        grep -q 'usage: stasis' "$T/err" || { cat "$T/err" >&2; fail "no usage line for: stasis $*"; }
        [[ ! -s $T/out ]] || fail "usage error printed on stdout: stasis $*"
}
usage
usage bogus-command
usage --bogus-option
usage commit
usage commit "$T/src" extra
usage commit --bogus "$T/src"
usage commit --store
usage commit --chunk-size 3000 "$T/src"
usage commit --chunk-size 8M "$T/src"
usage commit --chunk-size 8K "$T/src"
usage commit --chunk-size lots "$T/src"
usage commit --level 0 "$T/src"
usage commit --threads many "$T/src"
usage commit --tag 'bad tag' "$T/src"
usage commit --label novalue "$T/src"
usage restore
usage restore good
usage restore good "$T/a" "$T/b"
usage inspect
usage inspect a b
usage log
usage diff good
usage verify a b
usage gc extra
usage gc --grace -1
usage gc --grace soon
usage gc --keep-last x
usage gc --keep-last 0
usage tag good
usage tag good 'no/slashes'
usage tag good '-leading-dash'

step "help and version exit 0 on stdout"
expect_exit 0 "$STASIS" --help
grep -q '^  commit' "$T/out" || fail "--help does not list commit"
cp "$T/out" "$T/help"
expect_exit 0 "$STASIS" --version
grep -qE '^stasis [0-9]' "$T/out" || fail "--version prints no version"

step "every command of DESIGN.md either works or is refused, not half-run"
# A command that is listed in --help has its own --help and usage line; one
# that is not there yet is refused with one line and exit 1.
for c in commit restore inspect log diff verify gc tag push pull mount checkpoint pause status \
        unpause umount import bench; do
        if grep -qE "^  $c " "$T/help"; then
                expect_exit 0 "$STASIS" "$c" --help
                grep -q "^usage: stasis $c" "$T/out" || fail "$c --help has no usage line"
        else
                expect_exit 1 "$STASIS" "$c" x
                expect_one_error_line "^stasis: $c: not available yet$"
        fi
done
for c in commit restore inspect log diff verify gc tag mount status umount; do
        grep -qE "^  $c " "$T/help" || fail "--help does not list $c"
done

step "a missing store is an error, and is not created"
for args in "restore --store $T/nostore good $T/o" "inspect --store $T/nostore good" \
        "log --store $T/nostore good" "diff --store $T/nostore a b" "verify --store $T/nostore" \
        "gc --store $T/nostore" "tag --store $T/nostore good other"; do
        # shellcheck disable=SC2086
        expect_exit 1 "$STASIS" $args
        expect_one_error_line "nostore"
        [[ ! -e $T/nostore ]] || fail "stasis $args created the store"
done
STASIS_STORE=$T/nostore expect_exit 1 "$STASIS" inspect good
expect_one_error_line "nostore"
expect_exit 1 "$STASIS" inspect --store "$T/src" good # a directory that is not a store
expect_one_error_line "src"
# a registry nobody listens on (loopback, so no lookup leaves the machine)
expect_exit 1 "$STASIS" inspect --store oci://127.0.0.1:1/repo --insecure good
expect_one_error_line "127.0.0.1:1"

step "a missing or malformed reference is an error"
expect_exit 1 "$STASIS" inspect --store "$S" nosuchtag
expect_one_error_line "nosuchtag"
expect_exit 1 "$STASIS" restore --store "$S" "sha256:$(printf '0%.0s' {1..64})" "$T/o"
expect_one_error_line "sha256:0000"
[[ ! -e $T/o ]] || fail "restore of a missing snapshot created its target"
expect_exit 1 "$STASIS" inspect --store "$S" sha256:xyz
expect_one_error_line "sha256:xyz"
expect_exit 1 "$STASIS" restore --store "$S" --insecure oci://127.0.0.1:1/repo:tag "$T/o"
expect_one_error_line "127.0.0.1:1"
[[ ! -e $T/o ]] || fail "a failed restore from a registry created its target"

step "commit of a missing directory"
expect_exit 1 "$STASIS" commit --store "$S" "$T/no-such-dir"
expect_one_error_line "no-such-dir"

step "restore into a non-empty directory"
mkdir "$T/full"
echo keep >"$T/full/precious"
expect_exit 1 "$STASIS" restore --store "$S" good "$T/full"
expect_one_error_line "full"
[[ $(cat "$T/full/precious") == keep && $(ls "$T/full") == precious ]] || fail "restore touched a non-empty directory"

# craft NAME SED_EXPR: a snapshot "NAME" whose tree is the good tree's
# decompressed image edited by a binary-safe substitution (perl), recompressed
# and stored under its true digest (so only the tree parser can object), with
# a new manifest and index entry pointing at it.
craft() {
        local name=$1 expr=$2 m tree raw new nd md msize
        m=$(blob_path "$S" "$(cat "$T/good")")
        tree=$(jq -r '.layers[0].digest' "$m")
        raw=$T/tree-$name.raw
        zstd -q -d -c "$(blob_path "$S" "$tree")" >"$raw"
        perl -0777 -pi -e "$expr" "$raw"
        cmp -s "$raw" <(zstd -q -d -c "$(blob_path "$S" "$tree")") && fail "craft $name: the edit changed nothing"
        zstd -q -19 -c "$raw" >"$T/tree-$name.zst"
        nd=$(sha256sum "$T/tree-$name.zst" | cut -d' ' -f1)
        cp "$T/tree-$name.zst" "$S/blobs/sha256/$nd"
        jq -c --arg d "sha256:$nd" --argjson s "$(stat -c %s "$T/tree-$name.zst")" \
                '.layers[0].digest = $d | .layers[0].size = $s' "$m" >"$T/m-$name"
        md=$(sha256sum "$T/m-$name" | cut -d' ' -f1)
        msize=$(stat -c %s "$T/m-$name")
        cp "$T/m-$name" "$S/blobs/sha256/$md"
        jq --arg d "sha256:$md" --argjson s "$msize" --arg t "$name" \
                '.manifests += [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $d, size: $s,
                  annotations: {"org.opencontainers.image.ref.name": $t}}]' "$S/index.json" >"$T/index.new"
        mv "$T/index.new" "$S/index.json"
}

# rejected NAME REGEX: every command reading the crafted tree fails cleanly.
rejected() {
        expect_exit 1 "$STASIS" restore --store "$S" "$1" "$T/out-$1"
        expect_one_error_line "$2"
        expect_exit 1 "$STASIS" inspect --store "$S" "$1"
        expect_one_error_line "$2"
        expect_exit 1 "$STASIS" verify --store "$S" "$1"
        grep -qE -- "$2" "$T/err" || { cat "$T/err" >&2; fail "verify $1 does not report /$2/"; }
        expect_exit 0 "$STASIS" inspect --store "$S" good # the store itself is fine
}

step "crafted trees are rejected at load"
craft dotdot 's/aa\0/..\0/'
rejected dotdot 'tree'
craft dot 's/qq\0/.\0\0/'
rejected dot 'tree'
craft slash 's/slash\0/sl\/sh\0/'
rejected slash 'tree'
craft nul 's/slash\0/sl\0sh\0/'
rejected nul 'tree'
craft truncated 's/^(.{200}).*$/$1/s'
rejected truncated 'tree'
craft badmagic 's/^STSTREE/XXXXXXX/'
rejected badmagic 'tree'
# A huge inode count in the header (offset 40: n_inodes) must not allocate or crash.
craft hugecount 's/^(.{40}).{8}/$1\xff\xff\xff\xff\xff\xff\xff\x7f/s'
rejected hugecount 'tree'
