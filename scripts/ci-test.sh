#!/usr/bin/env bash
# ci-test.sh — the body of `make test` (called after scripts/deps.sh).
#
# Steps, in order; every step runs even when an earlier one failed, unless
# it needs that one's output. Each ends PASS, FAIL or SKIP (with the reason);
# a step with nothing to check is SKIP, never PASS. The last line is
#   summary: N passed, N failed, N skipped
# and the exit status is 1 if anything failed.
#
# Knobs come from the Makefile's environment: BUILD ASAN_BUILD FUZZ_BUILD
# TEST_VARIANTS CTEST_JOBS FUZZ_SECONDS FUZZ_JOBS JOBS.
set -uo pipefail
cd "$(dirname "$0")/.."

: "${BUILD:=build}" "${ASAN_BUILD:=build-asan}" "${FUZZ_BUILD:=build-fuzz}"
: "${TEST_VARIANTS:=gcc asan}" "${FUZZ_SECONDS:=60}"
MAKE=(make --no-print-directory)

LOGDIR=$BUILD/ci-logs
mkdir -p "$LOGDIR"

names=() results=() times=() notes=()
declare -A status=()

have() { compgen -G "$1" >/dev/null; }
sources_exist() { have 'store/*.c' || have 'tools/*.c' || have 'fs/*.c' || have 'daemon/*.c'; }

# step NAME NOTE-IF-PASS CMD... : run, time, record. stdout+stderr go to the
# terminal and to $LOGDIR/NAME.log.
step() {
        local name=$1; shift
        local t0=$SECONDS rc
        echo
        echo "=== $name: $*"
        "$@" 2>&1 | tee "$LOGDIR/$name.log"
        rc=${PIPESTATUS[0]}
        record "$name" "$([[ $rc == 0 ]] && echo PASS || echo FAIL)" $((SECONDS - t0)) \
                "$([[ $rc == 0 ]] || echo "exit $rc, log $LOGDIR/$name.log")"
}
record() { # NAME RESULT SECONDS NOTE
        names+=("$1"); results+=("$2"); times+=("$3"); notes+=("${4:-}")
        status[$1]=$2
        [[ $2 == SKIP ]] && echo "=== $1: skipped: ${4:-}"
}

# ctest_step NAME BUILD-DIR MAKE-TARGET BUILD-STEP
ctest_step() {
        local name=$1 dir=$2 target=$3 n
        if [[ ${status[$4]:-} != PASS ]]; then
                record "$name" SKIP 0 "its build ($4) was ${status[$4]:-not run}"
                return
        fi
        n=$(ctest --test-dir "$dir" -N 2>/dev/null | sed -n 's/^Total Tests: *//p')
        if [[ ${n:-0} == 0 ]]; then
                record "$name" SKIP 0 "no tests registered yet"
                return
        fi
        step "$name" "${MAKE[@]}" "$target"
        local line
        line=$(grep -E 'tests passed, [0-9]+ tests? failed out of' "$LOGDIR/$name.log" | tail -1)
        [[ -n $line ]] && notes[${#notes[@]}-1]="$line${notes[-1]:+; ${notes[-1]}}"
}

# 1. gcc build (-Werror), the one users and benchmarks get.
if sources_exist; then
        step build-gcc "${MAKE[@]}" build
else
        record build-gcc SKIP 0 "no C sources yet"
fi

# FUSE transport of a ctest pass: where the kernel has FUSE over io_uring
# (fs/uring.c), the gcc pass runs over /dev/fuse and the ASan pass over
# io_uring, so both transports see the whole suite, the new one under the
# sanitizers. fuse.enable_uring is set for the pass and restored after.
URING_PARAM=/sys/module/fuse/parameters/enable_uring
# over_fuse Y|N NAME BUILD-DIR MAKE-TARGET BUILD-STEP: ctest_step with
# fuse.enable_uring=Y|N.
over_fuse() {
        local want=$1 was transport
        shift
        [[ $want == Y ]] && transport="io_uring" || transport="/dev/fuse"
        if [[ ! -w $URING_PARAM ]]; then
                ctest_step "$@"
                notes[${#notes[@]}-1]="over /dev/fuse (no $URING_PARAM)${notes[-1]:+; ${notes[-1]}}"
                return
        fi
        was=$(cat "$URING_PARAM")
        echo "$want" >"$URING_PARAM"
        ctest_step "$@"
        echo "$was" >"$URING_PARAM"
        notes[${#notes[@]}-1]="over $transport${notes[-1]:+; ${notes[-1]}}"
}

# 2. ctest in the gcc build.
if [[ " $TEST_VARIANTS " == *" gcc "* ]]; then
        over_fuse N ctest-gcc "$BUILD" test-gcc build-gcc
else
        record ctest-gcc SKIP 0 "not in TEST_VARIANTS"
fi

# 3. clang ASan+UBSan build, and the whole suite in it.
if sources_exist; then
        step build-asan "${MAKE[@]}" asan
else
        record build-asan SKIP 0 "no C sources yet"
fi
if [[ " $TEST_VARIANTS " == *" asan "* ]]; then
        over_fuse Y ctest-asan "$ASAN_BUILD" test-asan build-asan
else
        record ctest-asan SKIP 0 "not in TEST_VARIANTS"
fi

# 4. libFuzzer build and run.
if have 'tests/fuzz/fuzz-*.c'; then
        step build-fuzz "${MAKE[@]}" fuzz-build
        if [[ ${status[build-fuzz]} == PASS ]]; then
                step fuzz "${MAKE[@]}" fuzz
                notes[${#notes[@]}-1]="$(grep -c '^fuzz: .* PASS' "$LOGDIR/fuzz.log") target(s) x ${FUZZ_SECONDS}s${notes[-1]:+; ${notes[-1]}}"
        else
                record fuzz SKIP 0 "fuzz build did not pass"
        fi
else
        record build-fuzz SKIP 0 "no tests/fuzz/fuzz-*.c yet"
        record fuzz SKIP 0 "no tests/fuzz/fuzz-*.c yet"
fi

# 5. Lint. clang-tidy reads the gcc build's compile_commands.json.
if [[ -f $BUILD/compile_commands.json ]] && sources_exist; then
        step clang-tidy "${MAKE[@]}" tidy
else
        record clang-tidy SKIP 0 "no sources or no compile_commands.json"
fi
if sources_exist; then
        step cppcheck "${MAKE[@]}" cppcheck
else
        record cppcheck SKIP 0 "no C sources yet"
fi

# Summary.
pass=0 fail=0 skip=0
echo
echo "=== make test summary"
for i in "${!names[@]}"; do
        printf '  %-11s %-4s %5ss  %s\n' "${names[$i]}" "${results[$i]}" "${times[$i]}" "${notes[$i]}"
        case ${results[$i]} in
        PASS) pass=$((pass + 1)) ;;
        FAIL) fail=$((fail + 1)) ;;
        *) skip=$((skip + 1)) ;;
        esac
done
echo "  total ${SECONDS}s; logs in $LOGDIR/"
echo "summary: $pass passed, $fail failed, $skip skipped"
((fail == 0))
