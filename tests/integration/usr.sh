#!/usr/bin/env bash
# usr.sh — acceptance 1 on real data: a copy of this machine's /usr (at least
# 1 GB) commits and restores bit-exact, atimes included, and the commit
# leaves the copy untouched.
#
# Why a copy rather than /usr itself: /usr is live. Other processes read it
# while the test runs, and under relatime a read can move a file's atime
# between our listing and the commit, which would make the comparison flaky.
# A private copy (cp -a keeps modes, owners, ns times, xattrs, ACLs, holes and
# hardlinks) is read by nobody else. To keep the run near two minutes the
# copy leaves out /usr/local and /usr/lib unless that would fall below 1 GB;
# STASIS_USR_FULL=1 copies all of /usr.
source "$(dirname "$0")/lib.sh"
need du jq
((EUID == 0)) || skip "needs root to copy /usr with owners and xattrs"

MIN_BYTES=$((1000 * 1000 * 1000))
src=$T/usr
mkdir -p "$src"

step "copy /usr (at $SECONDS s)"
if [[ ${STASIS_USR_FULL:-0} == 1 ]]; then
        parts=(/usr/*)
else
        parts=()
        for p in /usr/*; do
                case $p in /usr/local | /usr/lib) ;; *) parts+=("$p") ;; esac
        done
        if (($(du -sbc "${parts[@]}" | tail -1 | cut -f1) < MIN_BYTES)); then
                parts+=(/usr/lib)
        fi
fi
start=$(date +%s)
cp -a "${parts[@]}" "$src/"
bytes=$(du -sb "$src" | cut -f1)
((bytes >= MIN_BYTES)) || skip "this machine's /usr copy is only $bytes bytes (< 1 GB)"
echo "   copied $bytes bytes of ${parts[*]} in $(($(date +%s) - start)) s"

step "settle symlink atimes, list the copy (at $SECONDS s)"
settle_atimes "$src"
"$TREEDIGEST" --list "$src" >"$T/src.before"

step "commit (at $SECONDS s)"
start=$(date +%s%N)
st commit --store "$T/store" --tag usr --json "$src" >"$T/commit.json"
ms=$((($(date +%s%N) - start) / 1000000))
echo "   commit: $(jq .files "$T/commit.json") files, $(jq .bytes_logical "$T/commit.json") bytes in $ms ms," \
        "packed $(jq .bytes_packed "$T/commit.json") bytes"

step "the commit left the copy untouched (at $SECONDS s)"
"$TREEDIGEST" --list "$src" >"$T/src.after"
if ! cmp -s "$T/src.before" "$T/src.after"; then
        diff "$T/src.before" "$T/src.after" | cut -c1-300 | head -20 >&2 || true
        fail "commit changed the tree it committed"
fi

step "restore and compare (atimes included) (at $SECONDS s)"
start=$(date +%s%N)
st restore --store "$T/store" usr "$T/dst"
echo "   restore: $((($(date +%s%N) - start) / 1000000)) ms"
"$TREEDIGEST" --list "$T/dst" >"$T/dst.list"
if ! cmp -s "$T/src.before" "$T/dst.list"; then
        diff "$T/src.before" "$T/dst.list" | cut -c1-300 | head -20 >&2 || true
        fail "restored /usr copy differs from the source ($(diff "$T/src.before" "$T/dst.list" | grep -c '^<') entries)"
fi
echo "   $(wc -l <"$T/dst.list") entries identical"
