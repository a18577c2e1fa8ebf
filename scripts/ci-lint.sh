#!/usr/bin/env bash
# ci-lint.sh tidy|cppcheck|all — static analysis over store/ fs/ daemon/ tools/.
#   tidy:     clang-tidy with .clang-tidy, on the sources in the gcc build's
#             compile_commands.json ($BUILD), warnings are errors.
#   cppcheck: cppcheck --enable=warning,performance,portability with
#             .cppcheck-suppressions; exit 1 on any finding.
# Tests, fuzzers and benchmarks are not linted (criterion macros are noisy).
set -uo pipefail
cd "$(dirname "$0")/.."

: "${BUILD:=build}" "${JOBS:=$(nproc)}"
DIRS=(store fs daemon tools)

lint_tidy() {
        local db=$BUILD/compile_commands.json
        if [[ ! -f $db ]]; then
                echo "tidy: no $db; run make build first" >&2
                return 1
        fi
        mapfile -t files < <(python3 - "$db" "$PWD" "${DIRS[@]}" <<'PY'
import json, os, sys
db, root, dirs = sys.argv[1], sys.argv[2], sys.argv[3:]
seen = set()
for e in json.load(open(db)):
    f = os.path.normpath(os.path.join(e["directory"], e["file"]))
    rel = os.path.relpath(f, root)
    if rel.split(os.sep)[0] in dirs and f not in seen:
        seen.add(f)
# Largest first, one file per clang-tidy: keeps all $JOBS busy to the end.
for f in sorted(seen, key=lambda f: -os.path.getsize(f)):
    print(f)
PY
)
        if ((${#files[@]} == 0)); then
                echo "tidy: no sources of ${DIRS[*]} in $db; nothing checked"
                return 0
        fi
        echo "tidy: clang-tidy on ${#files[@]} file(s), $JOBS at a time"
        local out rc
        out=$(printf '%s\n' "${files[@]}" |
                xargs -P "$JOBS" -n 1 clang-tidy -p "$BUILD" --quiet \
                        --extra-arg=-Wno-unknown-warning-option 2>&1)
        rc=$?
        # Drop clang-tidy's chatter; keep findings.
        grep -vE '^[0-9]+ warnings? (and [0-9]+ errors? )?generated\.$|^Suppressed [0-9]+ warnings|^Use -header-filter|^Error while processing' <<<"$out" | sed '/^$/d'
        if ((rc != 0)); then
                echo "tidy: FAILED"
                return 1
        fi
        echo "tidy: clean"
}

lint_cppcheck() {
        local present=()
        for d in "${DIRS[@]}"; do
                compgen -G "$d/*.c" >/dev/null && present+=("$d")
        done
        if ((${#present[@]} == 0)); then
                echo "cppcheck: no .c files in ${DIRS[*]}; nothing checked"
                return 0
        fi
        mkdir -p "$BUILD/cppcheck"
        echo "cppcheck: ${present[*]}"
        cppcheck -q -j "$JOBS" --std=c11 --platform=unix64 \
                --enable=warning,performance,portability \
                --error-exitcode=1 --inline-suppr \
                --suppressions-list=.cppcheck-suppressions \
                --library=posix --library=scripts/cppcheck/jansson.cfg \
                --cppcheck-build-dir="$BUILD/cppcheck" \
                --template='{file}:{line}:{column}: {severity}: {message} [{id}]' \
                -I . -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -D__GNUC__ \
                "${present[@]}" 2>&1
        local rc=$?
        ((rc == 0)) && echo "cppcheck: clean" || echo "cppcheck: FAILED"
        return $rc
}

case ${1:-all} in
tidy) lint_tidy ;;
cppcheck) lint_cppcheck ;;
all)
        lint_tidy; a=$?
        lint_cppcheck; b=$?
        ((a == 0 && b == 0))
        ;;
*) echo "usage: $0 tidy|cppcheck|all" >&2; exit 2 ;;
esac
