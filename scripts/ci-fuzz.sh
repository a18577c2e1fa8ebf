#!/usr/bin/env bash
# ci-fuzz.sh — run every libFuzzer target built in $FUZZ_BUILD (make fuzz-build)
# for FUZZ_SECONDS each, FUZZ_JOBS at a time.
#
# Seeds: tests/fuzz/corpus/<target>/ is copied into
# $FUZZ_BUILD/fuzz-corpus/<target>/ and the fuzzer grows that copy, so nothing
# is written into the source tree. Findings land in
# $FUZZ_BUILD/fuzz-artifacts/<target>/; to keep one as a regression test,
# copy it into tests/fuzz/corpus/<target>/ (ctest then runs it in the gcc and
# ASan builds through <target>-regress).
set -uo pipefail
cd "$(dirname "$0")/.."

: "${FUZZ_BUILD:=build-fuzz}" "${FUZZ_SECONDS:=60}" "${FUZZ_JOBS:=2}"

targets=()
for src in tests/fuzz/fuzz-*.c; do
        [[ -e $src ]] || continue
        t=$(basename "$src" .c)
        if [[ ! -x $FUZZ_BUILD/tests/$t ]]; then
                echo "fuzz: $t: not built in $FUZZ_BUILD/tests (run make fuzz-build)" >&2
                exit 1
        fi
        targets+=("$t")
done
if ((${#targets[@]} == 0)); then
        echo "fuzz: no fuzz targets (tests/fuzz/fuzz-*.c); nothing run"
        exit 0
fi

run_one() {
        local t=$1 bin corpus art log rc
        bin=$FUZZ_BUILD/tests/$t
        corpus=$FUZZ_BUILD/fuzz-corpus/$t
        art=$FUZZ_BUILD/fuzz-artifacts/$t
        log=$FUZZ_BUILD/fuzz-logs/$t.log
        mkdir -p "$corpus" "$art" "$(dirname "$log")"
        if [[ -d tests/fuzz/corpus/$t ]]; then
                cp -a "tests/fuzz/corpus/$t/." "$corpus/"
        else
                echo "fuzz: $t: WARNING no seed corpus at tests/fuzz/corpus/$t/" >&2
        fi
        ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
                "$bin" -max_total_time="$FUZZ_SECONDS" -timeout=25 -rss_limit_mb=2048 \
                -print_final_stats=1 -artifact_prefix="$art/" "$corpus" \
                </dev/null >"$log" 2>&1
        rc=$?
        local execs
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        if ((rc == 0)); then
                echo "fuzz: $t PASS (${FUZZ_SECONDS}s, ${execs:-?} execs, corpus $(find "$corpus" -type f | wc -l) files)"
        else
                echo "fuzz: $t FAIL (exit $rc); artifacts in $art/, log $log:"
                tail -n 60 "$log"
        fi
        ((rc == 0)) # xargs: any failure -> 123, never 255 (which would stop it)
}
export -f run_one
export FUZZ_BUILD FUZZ_SECONDS

echo "fuzz: ${#targets[@]} target(s), ${FUZZ_SECONDS}s each, $FUZZ_JOBS at a time"
printf '%s\n' "${targets[@]}" | xargs -P "$FUZZ_JOBS" -I{} bash -c 'run_one "$1"' _ {}
