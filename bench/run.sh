#!/usr/bin/env bash
# run.sh — the stasis benchmark suite: runs the cases, keeps the raw data, and
# writes the report with its plots.
#
#   bench/run.sh [--quick|--full] [--out FILE] [--case NAME]... [--runs N]
#                [--work DIR] [--keep] [--report-only] [--peers-only]
#
#   --quick        small scale, about 5 minutes (default); report in bench/quick/
#   --full         full scale, at most about 40 minutes on a 2-core machine;
#                  report in bench/RESULTS.md (the committed one)
#   --out FILE     the report; raw data goes to DIR(FILE)/results/*.tsv and
#                  plots to DIR(FILE)/plots/*.png
#   --case NAME    run only these cases (repeatable; default: all, in order)
#   --runs N       repetitions per figure (default 3; medians need >= 3)
#   --work DIR     scratch space for datasets and outputs (default
#                  $BENCH_WORK or /var/tmp/stasis-bench); never inside the repo
#   --keep         keep the generated datasets for the next run (they are
#                  deleted at the end otherwise)
#   --report-only  rebuild the report and plots from the existing raw data
#   --peers-only   run without a stasis binary (to test the peers)
#
# Environment: STASIS (the binary; default build/stasis of this repo).
# bench/README.md says what each case measures and the caveats.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

MODE=quick OUT="" ONLY=() RUNS=${BENCH_RUNS:-3} KEEP=0 REPORT_ONLY=0 PEERS_ONLY=0
WORK=${BENCH_WORK:-/var/tmp/stasis-bench}
while (($#)); do
        case $1 in
        --quick) MODE=quick; shift ;;
        --full) MODE=full; shift ;;
        --out) OUT=$2; shift 2 ;;
        --case) ONLY+=("$2"); shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --report-only) REPORT_ONLY=1; shift ;;
        --peers-only) PEERS_ONLY=1; shift ;;
        -h | --help) sed -n '2,/^set -E/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
        esac
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --runs needs a positive number" >&2; exit 2; }
if [[ -z $OUT ]]; then
        if [[ $MODE == full ]]; then OUT=$HERE/RESULTS.md; else OUT=$HERE/quick/RESULTS.md; fi
fi
mkdir -p "$(dirname "$OUT")"
OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")
RES=$(dirname "$OUT")/results
PLOTS=$(dirname "$OUT")/plots
export BENCH_WORK=$WORK

# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
# shellcheck source=bench/gen-dataset.sh
source "$HERE/gen-dataset.sh"

# Scratch space: absolute, not /, not inside the repository.
WORK=$(realpath -m "$WORK")
case $WORK/ in
/ | "$REPO"/*) die "work dir $WORK must be outside the repository and not /" ;;
esac

STASIS=${STASIS:-$REPO/build/stasis}
HAVE_STASIS=0
[[ -x $STASIS ]] && HAVE_STASIS=1
if ((!HAVE_STASIS && !PEERS_ONLY && !REPORT_ONLY)); then
        die "no stasis binary at $STASIS (build it, set STASIS=, or pass --peers-only)"
fi
COMPRESS_GZ=gzip
command -v pigz >/dev/null && COMPRESS_GZ=pigz

# --- the cases --------------------------------------------------------------
# Each bench/cases/NN-name.sh appends its name to CASES and defines
# NAME_run (measure, writing $RES/NAME*.tsv within its budget) and
# NAME_report (print its markdown section from those files; make its plots).
# A case's budget: BUDGET_<mode>[NAME] seconds.
CASES=()
declare -A BUDGET_quick=() BUDGET_full=() CASE_TITLE=()
for f in "$HERE"/cases/[0-9]*.sh; do
        # shellcheck source=/dev/null
        source "$f"
done

selected_cases() {
        if ((${#ONLY[@]} == 0)); then printf '%s\n' "${CASES[@]}"; return; fi
        local c
        for c in "${ONLY[@]}"; do
                [[ " ${CASES[*]} " == *" $c "* ]] || die "unknown case '$c' (${CASES[*]})"
                echo "$c"
        done
}

# --- the machine ------------------------------------------------------------
machine_meta() {
        local f=$RES/meta.tsv src dev
        tsv_init "$f" key value
        tsv_row "$f" date "$(date -u '+%Y-%m-%d %H:%M UTC')"
        tsv_row "$f" mode "$MODE"
        tsv_row "$f" runs "$RUNS"
        tsv_row "$f" cpu "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
        tsv_row "$f" cores "$(nproc) online ($(grep -c '^processor' /proc/cpuinfo) in /proc/cpuinfo)"
        tsv_row "$f" ram "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
        tsv_row "$f" kernel "$(uname -srm)"
        tsv_row "$f" os "$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-?}")"
        tsv_row "$f" virtualization "$( (systemd-detect-virt 2>/dev/null || true) | head -n 1)$(grep -qw hypervisor /proc/cpuinfo && echo ' (hypervisor flag set)')"
        src=$(findmnt -no SOURCE -T "$WORK" 2>/dev/null || echo '?')
        dev=$(basename "$src")
        tsv_row "$f" disk "$WORK on $src, $(findmnt -no FSTYPE,OPTIONS -T "$WORK" 2>/dev/null | tr -s ' ' ' '), $(lsblk -dno SIZE "$src" 2>/dev/null | tr -d ' ') rotational=$(cat "/sys/block/$dev/queue/rotational" 2>/dev/null || echo '?') (as the virtual device reports it)"
        tsv_row "$f" drop_caches "$([[ -w /proc/sys/vm/drop_caches ]] && echo 'available (guest page cache only; the virtual disk may be cached by the host)' || echo 'not available: cold figures are not cold')"
        tsv_row "$f" stasis "$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?') ($STASIS$( ((HAVE_STASIS)) || echo ', absent'))"
        tsv_row "$f" tar "$(tar --version | head -n 1)"
        tsv_row "$f" zstd "$(zstd -V 2>&1 | head -n 1)"
        tsv_row "$f" casync "$(casync --version 2>&1 | head -n 1)"
        tsv_row "$f" gzip "$($COMPRESS_GZ --version 2>&1 | head -n 1)"
}

cleanup() {
        bench_teardown
        if ((!KEEP)); then
                rm -rf "${WORK:?}/data" "${WORK:?}/out" "${WORK:?}/bin"
                rmdir "$WORK" 2>/dev/null || true
        fi
        [[ -z ${M_TIMEFILE:-} ]] || rm -f "$M_TIMEFILE"
}

run_cases() {
        mkdir -p "$RES" "$WORK/data" "$WORK/out"
        trap cleanup EXIT
        local t_all=$SECONDS c budget t0
        if ((${#ONLY[@]})) && [[ -f $RES/cases.tsv && -f $RES/meta.tsv ]]; then
                # Re-running some cases: keep the other cases' rows and the
                # machine description, and say so in the report.
                # One rerun row per re-run; a case re-run again drops the
                # row that named it. The version is read before any tracked
                # file here changes (else it always says -dirty).
                local keep ver sel
                ver=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?')
                sel=$(selected_cases | tr '\n' ' ')
                keep=$(awk -F'\t' -v drop=" ${ONLY[*]} " 'NR == 1 || index(drop, " " $1 " ") == 0' "$RES/cases.tsv")
                printf '%s\n' "$keep" >"$RES/cases.tsv"
                awk -F'\t' -v drop=" ${ONLY[*]} " '$1 != "rerun" { print; next }
                        { n = split($2, w, " "); for (i = 1; i <= n && w[i] != "re-run"; i++) if (index(drop, " " w[i] " ")) next; print }' \
                        "$RES/meta.tsv" >"$RES/meta.tsv.tmp"
                mv "$RES/meta.tsv.tmp" "$RES/meta.tsv"
                tsv_row "$RES/meta.tsv" rerun "${sel}re-run on $(date -u '+%Y-%m-%d %H:%M UTC') with stasis $ver"
        else
                machine_meta
                tsv_init "$RES/cases.tsv" case budget_s used_s cut prepare_s
        fi
        local -n budgets=BUDGET_$MODE
        for c in $(selected_cases); do
                budget=${budgets[$c]:-300}
                t0=$SECONDS
                if declare -F "${c}_prepare" >/dev/null; then
                        log "case $c: preparing its datasets"
                        "${c}_prepare"
                fi
                log "case $c (${CASE_TITLE[$c]:-}): budget ${budget}s"
                budget_start "$budget"
                "${c}_run"
                tsv_row "$RES/cases.tsv" "$c" "$budget" $((SECONDS - CASE_T0)) "$CASE_CUT" $((CASE_T0 - t0))
                log "case $c done in $((SECONDS - CASE_T0))s$( ((CASE_CUT)) && echo ' (budget cut it short)')"
                rm -rf "$WORK/out/retired" # bench_retire()
        done
        ((${#ONLY[@]})) || tsv_row "$RES/meta.tsv" total_s $((SECONDS - t_all))
}

emit_report() {
        mkdir -p "$PLOTS"
        local tmp=$OUT.tmp c
        {
                report_header
                for c in "${CASES[@]}"; do
                        [[ -f $RES/$c.tsv ]] || continue
                        "${c}_report"
                done
                report_footer
        } >"$tmp"
        mv "$tmp" "$OUT"
        log "wrote $OUT"
}

meta() { awk -F'\t' -v k="$1" '$1 == k { print $2; exit }' "$RES/meta.tsv" 2>/dev/null; }

report_header() {
        cat <<EOF
# stasis benchmark results

Generated by \`bench/run.sh --$(meta mode)\` on $(meta date) in $(meta total_s) s, stasis $(meta stasis).$(
                awk -F'\t' '$1 == "rerun" { printf "\nCases %s (with --case, on the same machine and datasets).", $2 }' \
                        "$RES/meta.tsv" 2>/dev/null
                [[ -z $(meta rerun) ]] || printf '\nThe other cases are from the run above.')
Every figure is the median of $(meta runs) runs, with (min–max); every ratio
compares runs made in the same session (paired by run, order alternated).
Raw data: [results/](results/); how to reproduce and the caveats: [README.md]($(
                [[ $(dirname "$OUT") == "$HERE" ]] && echo README.md || echo ../README.md)).

## Machine

| | |
|---|---|
EOF
        local k
        for k in cpu cores ram kernel os virtualization disk drop_caches tar zstd casync gzip; do
                printf '| %s | %s |\n' "$k" "$(meta "$k" | sed 's/|/\\|/g')"
        done
        echo
        echo "## Goals"
        echo
        echo "| case | goal | measured | met |"
        echo "|---|---|---|---|"
        local c
        for c in "${CASES[@]}"; do
                [[ -f $RES/$c.tsv ]] || continue
                if declare -F "${c}_goals" >/dev/null; then "${c}_goals"; fi
        done
        echo
}

report_footer() {
        cat <<EOF
## Not measured yet

- Kernel erofs as a read-path peer; restic and borg as full-commit peers
  (restic and casync are incremental pause peers in the pause case).

## Case budgets

Each case may start a new run only while its budget lasts; preparing its
datasets is not counted in the budget but is shown.

| case | budget (s) | used (s) | cut short by the budget | dataset preparation (s) |
|---|---|---|---|---|
EOF
        awk -F'\t' 'NR > 1 { printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4 == 1 ? "yes" : "no", $5 }' "$RES/cases.tsv"
        echo
}

if ((!REPORT_ONLY)); then
        run_cases
fi
[[ -f $RES/meta.tsv ]] || die "no raw data in $RES (run without --report-only first)"
emit_report
