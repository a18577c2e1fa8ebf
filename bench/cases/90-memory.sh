# 90-memory.sh — case "memory": peak RSS of stasis commit and stasisd, from
# the figures the other cases measured (no new runs): `stasis commit`
# (/usr/bin/time's max RSS, commit case, full commit of the real tree),
# `stasis import` (import case), stasisd serving a local store with every
# file stat'ed and read (VmHWM, resume case) and stasisd serving a registry
# mount after a full read (registry case).
# Goal (issue 4): stasisd <= 50 MB + 100 B per inode. Commit: reported.
# shellcheck shell=bash

CASES+=(memory)
CASE_TITLE[memory]="memory"
BUDGET_quick[memory]=5
BUDGET_full[memory]=5

memory_run() {
        local f=$RES/memory.tsv
        tsv_init "$f" what run rss_kb inodes
        local inodes=NA
        [[ -f $RES/resume-dataset.tsv ]] && inodes=$(awk -F'\t' '$1 == "inodes" { print $2 }' "$RES/resume-dataset.tsv")
        [[ -f $RES/commit.tsv ]] && awk -F'\t' -v OFS='\t' 'NR > 1 && $4 == "stasis" && $15 == 0 { print "commit-" $1, $2, $11, "NA" }' "$RES/commit.tsv" >>"$f"
        [[ -f $RES/import.tsv ]] && awk -F'\t' -v OFS='\t' 'NR > 1 && $2 == "stasis" && $9 == 0 { print "import", $1, $7, "NA" }' "$RES/import.tsv" >>"$f"
        [[ -f $RES/resume.tsv ]] && awk -F'\t' -v OFS='\t' -v i="$inodes" 'NR > 1 && $2 == "stasis" && $12 == 0 { print "stasisd-local", $1, $10, i }' "$RES/resume.tsv" >>"$f"
        [[ -f $RES/registry.tsv ]] && awk -F'\t' -v OFS='\t' 'NR > 1 && $2 == "stasis" && $10 == 0 { print "stasisd-registry", $1, $11, "NA" }' "$RES/registry.tsv" >>"$f"
        true
}

memory_label() {
        case $1 in
        commit-cold) echo "stasis commit, real tree, cold (commit case)" ;;
        commit-warm) echo "stasis commit, real tree, warm (commit case)" ;;
        import) echo "stasis import (import case)" ;;
        stasisd-local) echo "stasisd, local store, every file stat'ed and read (resume case)" ;;
        stasisd-registry) echo "stasisd, oci:// mount, every file read (registry case)" ;;
        esac
}

memory_goals() { :; } # the stasisd goal row comes with the resume case's figures

memory_report() {
        local f=$RES/memory.tsv w s
        cat <<EOF
## 9. Memory

Peak resident memory, gathered from the other cases' runs: \`/usr/bin/time\`'s
maximum RSS for the CLI commands, VmHWM of the daemon (\`/proc/PID/status\`,
PID from the state dir's stasisd.pid) after the walks.

| process | runs | peak RSS median (min–max) | goal |
|---|---|---|---|
EOF
        local inodes limit
        inodes=$(awk -F'\t' 'NR > 1 && $1 == "stasisd-local" { print $4; exit }' "$f")
        limit=$(awk -v i="${inodes:-0}" 'BEGIN { printf "%.0f", 50e6 + 100 * i }')
        for w in commit-cold commit-warm import stasisd-local stasisd-registry; do
                s=$(stats "$f" rss_kb what "what=$w" | cut -f2-)
                [[ -n $s ]] || continue
                local n med lo hi g=—
                read -r n med lo hi <<<"$s"
                [[ $w == stasisd-local ]] && g="≤ 50 MB + 100 B × ${inodes} inodes = $(hb "$limit"): $(awk -v m="$med" -v l="$limit" 'BEGIN { print m * 1024 <= l ? "met" : "**not met**" }')"
                printf '| %s | %s | %s (%s–%s) | %s |\n' "$(memory_label "$w")" "$n" "$(hb "$(awk -v x="$med" 'BEGIN { printf "%.0f", x * 1024 }')")" \
                        "$(hb "$(awk -v x="$lo" 'BEGIN { printf "%.0f", x * 1024 }')")" "$(hb "$(awk -v x="$hi" 'BEGIN { printf "%.0f", x * 1024 }')")" "$g"
        done
        echo
}
