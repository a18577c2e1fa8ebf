# 10-commit.sh — case "commit": full commit throughput of a real tree.
#
# stasis commit into an empty store, against `tar -cf - DIR | zstd -3 -T0 > out`
# and `casync make --store=S out.caidx DIR`, on the same copy of this
# machine's /usr directories, cold (guest page cache dropped) and warm (tree
# read immediately before), order rotated each run. Goals (issue 2):
# throughput >= 1.0x tar|zstd and >= 2x casync.
# shellcheck shell=bash

CASES+=(commit)
CASE_TITLE[commit]="commit throughput"
BUDGET_quick[commit]=55
BUDGET_full[commit]=360

commit_tools() {
        if ((HAVE_STASIS)); then echo stasis tarzstd casync; else echo tarzstd casync; fi
}

commit_label() {
        case $1 in
        stasis) echo "stasis commit" ;;
        tarzstd) echo "tar \| zstd -3 -T0" ;;
        casync) echo "casync make" ;;
        esac
}

# commit_one TOOL DATA OUTDIR -> appends one row
commit_one() {
        local tool=$1 data=$2 out=$3 cache=$4 run=$5 pos=$6 outb json=""
        case $tool in
        stasis)
                measure "$out" "$STASIS" commit --store "$out/store" --json "$data" >"$out/commit.json"
                outb=$(dir_bytes "$out/store")
                json=$(cat "$out/commit.json" 2>/dev/null || true) ;;
        tarzstd)
                measure "$out" bash -c 'set -o pipefail; tar -C "$1" -cf - . | zstd -3 -T0 -q >"$2"' \
                        tarzstd "$data" "$out/out.tar.zst"
                outb=$(file_bytes "$out/out.tar.zst") ;;
        casync)
                measure "$out" casync make --store="$out/store.castr" "$out/out.caidx" "$data" >/dev/null
                outb=$(($(dir_bytes "$out/store.castr") + $(file_bytes "$out/out.caidx"))) ;;
        esac
        local mbps
        mbps=$(awk -v b="$COMMIT_BYTES" -v t="$M_DUR" 'BEGIN { printf "%.1f", b / t / 1e6 }')
        ((M_RC == 0)) || { mbps=NA; outb=NA; }
        tsv_row "$RES/commit.tsv" "$cache" "$run" "$pos" "$tool" "$M_WALL" "$M_SYNC" "$M_DUR" "$M_USER" \
                "$M_SYS" "$M_CPU" "$M_RSS" "$COMMIT_BYTES" "$outb" "$mbps" "$M_RC" \
                "$(jget chunks_total <<<"$json")" "$(jget chunks_new <<<"$json")" \
                "$(jget bytes_packed <<<"$json")" "$(jget wall_ns <<<"$json")" "$(jget cpu_ns <<<"$json")" "$M_LOAD"
        log "commit $cache run $run $tool: ${M_DUR}s cpu ${M_CPU}s ${mbps} MB/s out $(hb "$outb")"
}

commit_prepare() {
        local data=$WORK/data/real-$MODE
        if [[ ! -f $data.src ]]; then
                log "copying the real tree ($MODE) to $data"
                gen_real "$data" "$MODE" ""
        fi
}

commit_run() {
        local data=$WORK/data/real-$MODE out=$WORK/out/commit
        local files dirs links bytes
        read -r files dirs links bytes < <(tree_stats "$data")
        COMMIT_BYTES=$bytes
        tsv_init "$RES/commit-dataset.tsv" key value
        tsv_row "$RES/commit-dataset.tsv" source "$(cat "$data.src")"
        tsv_row "$RES/commit-dataset.tsv" files "$files"
        tsv_row "$RES/commit-dataset.tsv" dirs "$dirs"
        tsv_row "$RES/commit-dataset.tsv" symlinks "$links"
        tsv_row "$RES/commit-dataset.tsv" bytes "$bytes"
        log "real tree: $files files, $dirs dirs, $(hb "$bytes")"

        tsv_init "$RES/commit.tsv" cache run pos tool wall_s sync_s dur_s user_s sys_s cpu_s rss_kb \
                in_bytes out_bytes mb_s rc chunks_total chunks_new bytes_packed stasis_wall_ns stasis_cpu_ns load1
        local tools run cache i n est=0 t0
        read -ra tools <<<"$(commit_tools)"
        n=${#tools[@]}
        for ((run = 1; run <= RUNS; run++)); do
                may_start "$est" || break
                t0=$SECONDS
                for cache in cold warm; do
                        for ((i = 0; i < n; i++)); do
                                local tool=${tools[$(((i + run - 1) % n))]}
                                rm -rf "$out"
                                mkdir -p "$out"
                                set_cache "$cache" "$data"
                                commit_one "$tool" "$data" "$out" "$cache" "$run" "$((i + 1))"
                        done
                done
                est=$((SECONDS - t0))
        done
        rm -rf "$out"
}

commit_goals() {
        local f=$RES/commit.tsv cache peer goal r n med lo hi
        for peer in tarzstd casync; do
                goal=1.0
                [[ $peer == casync ]] && goal=2.0
                for cache in cold warm; do
                        r=$(paired_ratio "$f" mb_s tool stasis "$peer" "cache run" cache | awk -F'\t' -v c="$cache" '$1 == c')
                        if [[ -z $r ]]; then
                                echo "| commit ($cache) | stasis ≥ ${goal}× $(commit_label "$peer") throughput | not measured | — |"
                                continue
                        fi
                        read -r _ n med lo hi <<<"$r"
                        echo "| commit ($cache) | stasis ≥ ${goal}× $(commit_label "$peer") throughput | $(fnum "$med")× ($(fnum "$lo")–$(fnum "$hi"), n=$n) | $(awk -v m="$med" -v g="$goal" 'BEGIN { print (m >= g) ? "yes" : "**no**" }') |"
                done
        done
}

commit_report() {
        local f=$RES/commit.tsv d=$RES/commit-dataset.tsv
        dv() { awk -F'\t' -v k="$1" '$1 == k { print $2 }' "$d"; }
        cat <<EOF
## 1. Commit throughput (full commit of a real tree)

Dataset: a copy of this machine's \`$(dv source)\`: $(dv files) files, $(dv dirs)
directories, $(dv symlinks) symlinks, $(hb "$(dv bytes)") of file data
($(dv bytes) bytes). Each run writes into an empty output directory on the
same filesystem. **Time includes the \`sync\` that makes the output durable**
(stasis fsyncs its blobs itself; the peers do not, so their sync is timed
after they exit and added). Throughput = file bytes / that time, in MB/s
(10^6 B/s). Cold: \`sync; echo 3 > /proc/sys/vm/drop_caches\` before each run
(guest page cache only — the virtual disk is cached by the host, so "cold"
reads may still come from host RAM). Warm: the tree is read through
\`tar | cat\` immediately before the run. The tool order rotates each run.

| tool | cache | runs | time s | CPU s | MB/s | output | peak RSS |
|---|---|---|---|---|---|---|---|
EOF
        local tool cache s
        for cache in cold warm; do
                for tool in stasis tarzstd casync; do
                        s=$(stats "$f" dur_s "tool" "tool=$tool" "cache=$cache" "rc=0" | cut -f2-)
                        [[ -n $s ]] || continue
                        printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(commit_label "$tool")" "$cache" \
                                "$(cut -f1 <<<"$s")" "$(mmm "$s" 2)" \
                                "$(mmm "$(stats "$f" cpu_s tool "tool=$tool" "cache=$cache" "rc=0" | cut -f2-)" 1)" \
                                "$(mmm "$(stats "$f" mb_s tool "tool=$tool" "cache=$cache" "rc=0" | cut -f2-)" 0)" \
                                "$(hb "$(stats "$f" out_bytes tool "tool=$tool" "cache=$cache" "rc=0" | cut -f3)")" \
                                "$(hb "$(stats "$f" rss_kb tool "tool=$tool" "cache=$cache" "rc=0" | awk -F'\t' '{ print $3 * 1024 }')")"
                done
        done
        local fails
        fails=$(awk -F'\t' 'NR > 1 && $15 != 0 { n++ } END { print n + 0 }' "$f")
        ((fails == 0)) || printf '\n**%d run(s) failed** (rc column of results/commit.tsv); they are left out above.\n' "$fails"
        cat <<EOF

Same-run throughput ratios (each run pairs the tools' figures of that run):

| ratio | cache | runs | median (min–max) | goal |
|---|---|---|---|---|
EOF
        local peer r
        for peer in tarzstd casync; do
                for cache in cold warm; do
                        r=$(paired_ratio "$f" mb_s tool stasis "$peer" "cache run" cache | awk -F'\t' -v c="$cache" '$1 == c' | cut -f2-)
                        [[ -n $r ]] || continue
                        printf '| stasis / %s | %s | %s | %s× | ≥ %s× |\n' "$(commit_label "$peer")" "$cache" \
                                "$(cut -f1 <<<"$r")" "$(mmm "$r" 2)" "$([[ $peer == casync ]] && echo 2.0 || echo 1.0)"
                done
        done
        r=$(paired_ratio "$f" mb_s tool tarzstd casync "cache run" cache | awk -F'\t' '$1 == "cold"' | cut -f2-)
        [[ -z $r ]] || printf '| tar \\| zstd / casync (peers only) | cold | %s | %s× | — |\n' "$(cut -f1 <<<"$r")" "$(mmm "$r" 2)"

        commit_plot
        cat <<EOF

![commit throughput](plots/commit.png)

Commands (DIR is the tree, OUT an empty directory):

    stasis commit --store OUT/store --json DIR
    tar -C DIR -cf - . | zstd -3 -T0 -q > OUT/out.tar.zst
    casync make --store=OUT/store.castr OUT/out.caidx DIR
    sync -f OUT     # timed, added to each

What differs between them: tar stores no chunk index and cannot deduplicate
or fetch lazily; casync and stasis do both. casync uses content-defined chunks
(64 KiB average) and SHA-512/256; stasis uses fixed, offset-aligned chunks
(the snapshot's chunk size) and SHA-256, plus an XXH3 per chunk. GNU tar's
default format keeps no xattrs; casync and stasis keep them.

EOF
}

commit_plot() {
        command -v gnuplot >/dev/null || return 0
        local dat=$RES/commit-plot.dat tool cache s
        : >"$dat"
        for tool in stasis tarzstd casync; do
                local line=\"$(commit_label "$tool" | sed 's/\\|/|/g')\"
                for cache in cold warm; do
                        s=$(stats "$RES/commit.tsv" mb_s tool "tool=$tool" "cache=$cache" "rc=0" | cut -f3-5)
                        [[ -n $s ]] || s="0 0 0"
                        line+=" $(tr '\t' ' ' <<<"$s")"
                done
                echo "$line" >>"$dat"
        done
        gnuplot <<EOF
set terminal pngcairo size 800,450 font ",10"
set output "$PLOTS/commit.png"
set title "Full commit throughput, $(awk -F'\t' '$1 == "bytes" { printf "%.2f GB", $2 / 1e9 }' "$RES/commit-dataset.tsv") real tree (median, min-max bars)"
set ylabel "MB/s (higher is better)"
set style data histogram
set style histogram errorbars gap 2 lw 1
set style fill solid 0.7 border -1
set yrange [0:*]
set grid ytics
set key top right
plot "$dat" using 2:3:4:xtic(1) title "cold", "" using 5:6:7 title "warm"
EOF
}
