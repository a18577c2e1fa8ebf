# 30-incremental.sh — case "incremental": an incremental pause after each
# agent-session workload, stasis against the image-committer path.
#
# On the seeded synthetic rootfs, after a base commit, apply in turn: pip
# (thousands of small files), edits (scattered 4 KiB writes in a large file),
# db (scattered page writes + a WAL), delete (~3% of files). After each one:
# `stasis commit --parent PREV` (store growth, time) and the image-committer
# path: tar of every changed file whole + whiteouts | gzip (pigz when present)
# (layer bytes, time). Tool order alternates by run; the tree is regenerated
# for every run. Goal (DESIGN.md): a pause costs O(dirty bytes).
# shellcheck shell=bash

CASES+=(incremental)
CASE_TITLE[incremental]="incremental pause vs image layer"
BUDGET_quick[incremental]=25
BUDGET_full[incremental]=160

INCR_WORKLOADS="pip edits db delete"

# incr_written NAME -> bytes the workload writes (file data), from its parameters
incr_written() {
        scale_params "$MODE"
        local sz
        sz() { numfmt --from=iec "$1"; }
        case $1 in
        pip) echo "$INCR_NEWBYTES" ;;
        edits) echo $((EDIT_WRITES * 4096 + 5 * 40)) ;;
        db) echo $((DB_WRITES * 4096 + $(sz "$WAL_SIZE"))) ;;
        delete) echo 0 ;;
        *) echo NA ;;
        esac
}

incr_synth() { # DEST: the synthetic rootfs of this mode, fresh
        gen_synth "$1" "$MODE" 42 ""
}

# incr_step PHASE STATE TREE STORE OUT RUN LABEL: measure one pause of both kinds.
# Uses and updates INCR_PARENT. Appends rows to $INCR_TSV.
incr_step() {
        local label=$1 st=$2 tree=$3 store=$4 out=$5 run=$6 key=$7 ch chb wh s0 s1 json tool
        read -r ch chb wh < <(changes_end "$tree" "$st")
        local order="stasis image"
        ((run % 2)) || order="image stasis"
        for tool in $order; do
                if [[ $tool == stasis ]]; then
                        s0=$(dir_bytes "$store")
                        measure "$store" "$STASIS" commit --store "$store" --parent "$INCR_PARENT" --json "$tree" >"$out/commit.json"
                        json=$(cat "$out/commit.json")
                        s1=$(dir_bytes "$store")
                        [[ $M_RC != 0 ]] || INCR_PARENT=$(jget digest <<<"$json")
                        tsv_row "$INCR_TSV" "$run" "$key" "$label" stasis "$M_WALL" "$M_SYNC" "$M_DUR" "$M_CPU" "$M_RSS" \
                                $((s1 - s0)) "$ch" "$chb" "$wh" "$(incr_written "$label")" "$M_RC" \
                                "$(jget bytes_read <<<"$json")" "$(jget bytes_new <<<"$json")" \
                                "$(jget chunks_new <<<"$json")" "$(jget tree_bytes <<<"$json")" "$M_LOAD"
                else
                        rm -f "$out/layer.tar.gz"
                        image_layer "$tree" "$st" "$out/layer.tar.gz"
                        tsv_row "$INCR_TSV" "$run" "$key" "$label" image "$M_WALL" "$M_SYNC" "$M_DUR" "$M_CPU" "$M_RSS" \
                                "$(file_bytes "$out/layer.tar.gz")" "$ch" "$chb" "$wh" "$(incr_written "$label")" "$M_RC" \
                                NA NA NA NA "$M_LOAD"
                        INCR_LAYERS=$((INCR_LAYERS + $(file_bytes "$out/layer.tar.gz")))
                fi
                log "$key run $run $label $tool: ${M_DUR}s, $(hb "$(tail -n 1 "$INCR_TSV" | cut -f10)") written"
        done
}

incr_tsv_init() {
        tsv_init "$1" run step workload tool wall_s sync_s dur_s cpu_s rss_kb bytes_written changed_entries \
                changed_file_bytes whiteouts workload_bytes rc bytes_read bytes_new chunks_new tree_bytes load1
}

# incr_base TREE STORE OUT: full commit; sets INCR_PARENT
incr_base() {
        measure "$2" "$STASIS" commit --store "$2" --json "$1" >"$3/base.json"
        INCR_PARENT=$(jget digest <"$3/base.json")
        INCR_BASE_STORE=$(dir_bytes "$2")
}

incremental_run() {
        local tree=$WORK/data/synth-$MODE out=$WORK/out/incr store st run w est=0 t0 before
        store=$out/store st=$out/changes
        INCR_TSV=$RES/incremental.tsv
        incr_tsv_init "$INCR_TSV"
        ((HAVE_STASIS)) || log "incremental: no stasis binary; measuring the image path only"
        for ((run = 1; run <= RUNS; run++)); do
                may_start "$est" || break
                t0=$SECONDS
                rm -rf "$out"
                mkdir -p "$out"
                incr_synth "$tree"
                if ((HAVE_STASIS)); then incr_base "$tree" "$store" "$out"; fi
                if ((run == 1)); then
                        local files dirs links bytes
                        read -r files dirs links bytes < <(tree_stats "$tree")
                        tsv_init "$RES/incremental-dataset.tsv" key value
                        tsv_row "$RES/incremental-dataset.tsv" files "$files"
                        tsv_row "$RES/incremental-dataset.tsv" dirs "$dirs"
                        tsv_row "$RES/incremental-dataset.tsv" bytes "$bytes"
                        tsv_row "$RES/incremental-dataset.tsv" base_store "${INCR_BASE_STORE:-NA}"
                fi
                INCR_LAYERS=0
                for w in $INCR_WORKLOADS; do
                        changes_begin "$tree" "$st"
                        before=$(dir_bytes "$tree/opt")
                        workload "$w" "$tree" "$MODE" 7 ""
                        INCR_NEWBYTES=$(($(dir_bytes "$tree/opt") - before))
                        if ((HAVE_STASIS)); then
                                incr_step "$w" "$st" "$tree" "$store" "$out" "$run" incremental
                        else
                                read -r _ < <(changes_end "$tree" "$st")
                                rm -f "$out/layer.tar.gz"
                                image_layer "$tree" "$st" "$out/layer.tar.gz"
                                tsv_row "$INCR_TSV" "$run" incremental "$w" image "$M_WALL" "$M_SYNC" "$M_DUR" "$M_CPU" "$M_RSS" \
                                        "$(file_bytes "$out/layer.tar.gz")" NA NA NA "$(incr_written "$w")" "$M_RC" NA NA NA NA "$M_LOAD"
                        fi
                done
                est=$((SECONDS - t0))
        done
        rm -rf "$out"
}

incremental_goals() {
        local f=$RES/incremental.tsv w r
        for w in $INCR_WORKLOADS; do
                r=$(paired_ratio "$f" bytes_written tool image stasis "run workload" workload | awk -F'\t' -v w="$w" '$1 == w' | cut -f2-)
                [[ -n $r ]] || continue
                echo "| incremental pause ($w) | O(dirty bytes): fewer bytes than the image layer | image layer / stasis growth = $(mmm "$r" 2)× | $(awk -v m="$(cut -f2 <<<"$r")" 'BEGIN { print (m > 1) ? "yes" : "**no**" }') |"
        done
}

incremental_report() {
        local f=$RES/incremental.tsv d=$RES/incremental-dataset.tsv w s
        dv() { awk -F'\t' -v k="$1" '$1 == k { print $2 }' "$d"; }
        scale_params "$MODE"
        cat <<EOF
## 3. Incremental pause vs the image-committer path

Tree: the seeded synthetic rootfs (\`gen-dataset.sh synth --seed 42 --scale $(meta mode)\`):
$(dv files) files, $(dv dirs) directories, $(hb "$(dv bytes)"), including
var/lib/bench/model.bin ($MODEL_SIZE) and main.db ($DB_SIZE); full commit into the
store: $(hb "$(dv base_store)"). Then, in order, each workload and after it
both kinds of pause:

- **stasis**: \`stasis commit --store S --parent PREV --json DIR\`; bytes = store growth.
- **image**: what image-committer (\`nerdctl commit\`) writes: a layer with every
  changed file whole (an overlayfs copy-up is a whole file) and a whiteout per
  deleted entry, \`tar | $COMPRESS_GZ\`; bytes = the layer.

"changed files" is what an overlay upper dir would hold (entries whose ctime
moved); "written" is the file data the workload wrote. Warm cache: the tree
was just written. Note: this is \`stasis commit\` of a plain directory, which
reads every file to find what changed; the pause through the stasis mount
(later issue) hashes only the dirty chunks the filesystem tracked.

| workload | written by the workload | changed files (bytes) | tool | runs | time s | CPU s | bytes written |
|---|---|---|---|---|---|---|---|
EOF
        local tool
        for w in $INCR_WORKLOADS; do
                for tool in stasis image; do
                        s=$(stats "$f" dur_s workload "workload=$w" "tool=$tool" rc=0 | cut -f2-)
                        [[ -n $s ]] || continue
                        printf '| %s | %s | %s (%s) | %s | %s | %s | %s | %s |\n' "$w" \
                                "$(hb "$(stats "$f" workload_bytes workload "workload=$w" "tool=$tool" | cut -f3)")" \
                                "$(stats "$f" changed_entries workload "workload=$w" "tool=$tool" | cut -f3)" \
                                "$(hb "$(stats "$f" changed_file_bytes workload "workload=$w" "tool=$tool" | cut -f3)")" \
                                "$([[ $tool == stasis ]] && echo "stasis commit --parent" || echo "tar \\| $COMPRESS_GZ")" \
                                "$(cut -f1 <<<"$s")" "$(mmm "$s" 2)" \
                                "$(mmm "$(stats "$f" cpu_s workload "workload=$w" "tool=$tool" rc=0 | cut -f2-)" 1)" \
                                "$(hb "$(stats "$f" bytes_written workload "workload=$w" "tool=$tool" rc=0 | cut -f3)")"
                done
        done
        cat <<EOF

Same-run ratios, image path / stasis (higher favours stasis):

| workload | runs | bytes written | time |
|---|---|---|---|
EOF
        local rb rt
        for w in $INCR_WORKLOADS; do
                rb=$(paired_ratio "$f" bytes_written tool image stasis "run workload" workload | awk -F'\t' -v w="$w" '$1 == w' | cut -f2-)
                rt=$(paired_ratio "$f" dur_s tool image stasis "run workload" workload | awk -F'\t' -v w="$w" '$1 == w' | cut -f2-)
                [[ -n $rb ]] || continue
                printf '| %s | %s | %s× | %s× |\n' "$w" "$(cut -f1 <<<"$rb")" "$(mmm "$rb" 2)" "$(mmm "$rt" 2)"
        done
        incremental_plot
        cat <<EOF

![incremental pause](plots/incremental.png)

EOF
}

incremental_plot() {
        command -v gnuplot >/dev/null || return 0
        local dat=$RES/incremental-plot.dat w a b
        : >"$dat"
        for w in $INCR_WORKLOADS; do
                a=$(stats "$RES/incremental.tsv" bytes_written workload "workload=$w" tool=stasis rc=0 | cut -f3)
                b=$(stats "$RES/incremental.tsv" bytes_written workload "workload=$w" tool=image rc=0 | cut -f3)
                echo "$w ${a:-0} ${b:-0}" >>"$dat"
        done
        gnuplot <<EOF
set terminal pngcairo size 800,420 font ",10"
set output "$PLOTS/incremental.png"
set title "Bytes written by one incremental pause (median; log scale)"
set ylabel "bytes"
set logscale y
set format y "%.0s%cB"
set style data histogram
set style histogram clustered gap 2
set style fill solid 0.7 border -1
set grid ytics
set key top left
plot "$dat" using (\$2 > 0 ? \$2 : 1):xtic(1) title "stasis commit --parent", "" using (\$3 > 0 ? \$3 : 1) title "image layer (tar | $COMPRESS_GZ)"
EOF
}
