# 40-generations.sh — case "generations": store growth over 5 generations.
#
# On the seeded synthetic rootfs: a base, then 5 generations, each one "mix"
# workload (a third of pip, edits, db, delete 1%, the previous venv removed)
# with its own seed. Per generation: stasis store growth from
# `stasis commit --parent` against the image path's new layer (changed files
# whole + whiteouts | gzip). The image grows by base layer + every layer;
# stasis by its store. After the last generation, `stasis gc --keep-last 1`
# shows what a store holding only the newest generation keeps.
# Goal (DESIGN.md): a generation stores only new chunks and keeps no dead data.
# shellcheck shell=bash

CASES+=(generations)
CASE_TITLE[generations]="store growth over generations"
BUDGET_quick[generations]=30
BUDGET_full[generations]=360

GEN_COUNT=5

generations_run() {
        local tree=$WORK/data/synth-$MODE out=$WORK/out/gen store st run g est=0 t0 f=$RES/generations.tsv
        store=$out/store st=$out/changes
        INCR_TSV=$f
        incr_tsv_init "$f"
        tsv_init "$RES/generations-totals.tsv" run what bytes
        for ((run = 1; run <= RUNS; run++)); do
                may_start "$est" || break
                t0=$SECONDS
                rm -rf "$out"
                mkdir -p "$out"
                incr_synth "$tree"
                if ((HAVE_STASIS)); then
                        incr_base "$tree" "$store" "$out"
                        tsv_row "$RES/generations-totals.tsv" "$run" stasis_base "$INCR_BASE_STORE"
                fi
                # The image's base layer: the whole tree, tar | gzip. Its size does not
                # depend on the run, so it is measured once (it is the slowest step).
                if ((run == 1)); then
                        measure "$out" bash -c 'set -o pipefail; tar -C "$1" -cf - . | "$2" >"$3"' \
                                base-layer "$tree" "$COMPRESS_GZ" "$out/base.tar.gz"
                        tsv_row "$RES/generations-totals.tsv" "$run" image_base "$(file_bytes "$out/base.tar.gz")"
                        tsv_row "$RES/generations-totals.tsv" "$run" image_base_s "$M_DUR"
                        rm -f "$out/base.tar.gz"
                fi
                INCR_LAYERS=0
                for ((g = 1; g <= GEN_COUNT; g++)); do
                        changes_begin "$tree" "$st"
                        workload mix "$tree" "$MODE" "$g" ""
                        INCR_NEWBYTES=NA
                        if ((HAVE_STASIS)); then
                                incr_step mix "$st" "$tree" "$store" "$out" "$run" "gen$g"
                        else
                                read -r _ < <(changes_end "$tree" "$st")
                                image_layer "$tree" "$st" "$out/layer.tar.gz"
                                tsv_row "$f" "$run" "gen$g" mix image "$M_WALL" "$M_SYNC" "$M_DUR" "$M_CPU" "$M_RSS" \
                                        "$(file_bytes "$out/layer.tar.gz")" NA NA NA NA "$M_RC" NA NA NA NA "$M_LOAD"
                        fi
                done
                if ((HAVE_STASIS)); then
                        tsv_row "$RES/generations-totals.tsv" "$run" stasis_final "$(dir_bytes "$store")"
                        if "$STASIS" gc --store "$store" --keep-last 1 --grace 0 >/dev/null 2>"$out/gc.err"; then
                                tsv_row "$RES/generations-totals.tsv" "$run" stasis_gc_keep1 "$(dir_bytes "$store")"
                        else
                                log "stasis gc --keep-last 1 --grace 0 failed: $(head -n 1 "$out/gc.err")"
                        fi
                fi
                est=$((SECONDS - t0))
        done
        rm -rf "$out"
}

gen_total() { # WHAT -> median over runs of the totals row
        stats "$RES/generations-totals.tsv" bytes what "what=$1" | cut -f3
}

# generations_cumulative -> "gen stasis_cum image_cum stasis_growth image_layer" per generation (medians)
generations_cumulative() {
        local f=$RES/generations.tsv g sb ib sg il
        sb=$(gen_total stasis_base) ib=$(gen_total image_base)
        echo "0 ${sb:-0} ${ib:-0} 0 0"
        for ((g = 1; g <= GEN_COUNT; g++)); do
                sg=$(stats "$f" bytes_written step "step=gen$g" tool=stasis rc=0 | cut -f3)
                il=$(stats "$f" bytes_written step "step=gen$g" tool=image rc=0 | cut -f3)
                [[ -n $sg$il ]] || break
                sb=$(awk -v a="${sb:-0}" -v b="${sg:-0}" 'BEGIN { printf "%.0f", a + b }')
                ib=$(awk -v a="${ib:-0}" -v b="${il:-0}" 'BEGIN { printf "%.0f", a + b }')
                echo "$g $sb $ib ${sg:-0} ${il:-0}"
        done
}

generations_goals() {
        local last
        last=$(generations_cumulative | tail -n 1)
        local g sc ic
        read -r g sc ic _ _ <<<"$last"
        ((g > 0)) || return 0
        [[ $sc != 0 ]] || { echo "| generations | stasis store < image (base + layers) | not measured | — |"; return; }
        echo "| generations | store after $g generations smaller than the image (base + $g layers) | $(hb "$sc") vs $(hb "$ic") ($(awk -v a="$ic" -v b="$sc" 'BEGIN { printf "%.2f", a / b }')×) | $(awk -v a="$sc" -v b="$ic" 'BEGIN { print a < b ? "yes" : "**no**" }') |"
}

generations_report() {
        local f=$RES/generations.tsv g s
        cat <<EOF
## 4. Generations: store growth

The same synthetic rootfs as §3, then $GEN_COUNT generations of the "mix"
workload (seeds 1..$GEN_COUNT: a third of the pip files in a new venv, the
previous venv removed, the edits and db workloads, 1% of files deleted).
stasis: one store, each generation \`stasis commit --parent PREV\`. Image: a
base layer (the whole tree, \`tar | $COMPRESS_GZ\`, measured in run 1) plus
one layer per generation (changed files whole + whiteouts), as a chain of
\`nerdctl commit\`s makes. Deleted data stays in an image's older layers;
in stasis it stays in older snapshots until \`gc\` drops them.

| generation | runs | stasis growth | stasis time s | image layer | image time s | stasis store (cumulative) | image (cumulative) |
|---|---|---|---|---|---|---|---|
EOF
        local cum
        cum=$(generations_cumulative)
        local sc ic
        read -r _ sc ic _ _ <<<"$(head -n 1 <<<"$cum")"
        printf '| base | %s | %s | — | %s | %s | %s | %s |\n' \
                "$(stats "$RES/generations-totals.tsv" bytes what what=stasis_base | cut -f2)" "$(hb "$sc")" "$(hb "$ic")" \
                "$(fnum "$(gen_total image_base_s)" 1)" "$(hb "$sc")" "$(hb "$ic")"
        for ((g = 1; g <= GEN_COUNT; g++)); do
                s=$(stats "$f" dur_s step "step=gen$g" tool=image rc=0 | cut -f2-)
                [[ -n $s ]] || continue
                read -r _ sc ic _ _ <<<"$(awk -v g="$g" '$1 == g' <<<"$cum")"
                printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$g" "$(cut -f1 <<<"$s")" \
                        "$(hb "$(stats "$f" bytes_written step "step=gen$g" tool=stasis rc=0 | cut -f3)")" \
                        "$(mmm "$(stats "$f" dur_s step "step=gen$g" tool=stasis rc=0 | cut -f2-)" 2)" \
                        "$(hb "$(stats "$f" bytes_written step "step=gen$g" tool=image rc=0 | cut -f3)")" \
                        "$(mmm "$s" 2)" "$(hb "$sc")" "$(hb "$ic")"
        done
        local k1
        k1=$(gen_total stasis_gc_keep1)
        echo
        if [[ -n $k1 ]]; then
                echo "After \`stasis gc --keep-last 1 --grace 0\` the store holds $(hb "$k1") (was $(hb "$(gen_total stasis_final)")): only the newest generation is reachable, but gc deletes whole packs, and a pack stays while any chunk in it is live; dead chunks inside live packs wait for repacking. An image has no equivalent short of a squash."
        else
                echo "\`stasis gc --keep-last 1 --grace 0\` was not measured (not available or failed)."
        fi
        generations_plot "$cum"
        cat <<EOF

![generations](plots/generations.png)

EOF
}

generations_plot() {
        command -v gnuplot >/dev/null || return 0
        local dat=$RES/generations-plot.dat
        echo "$1" >"$dat"
        gnuplot <<EOF
set terminal pngcairo size 800,420 font ",10"
set output "$PLOTS/generations.png"
set title "Storage after each generation (medians)"
set xlabel "generation (0 = base)"
set ylabel "MiB"
set grid
set key top left
set yrange [0:*]
set xtics 1
plot "$dat" using 1:(\$2 / 1048576) with linespoints lw 2 pt 7 title "stasis store", \
     "" using 1:(\$3 / 1048576) with linespoints lw 2 pt 5 title "image: base + layers (tar | $COMPRESS_GZ)"
EOF
}
