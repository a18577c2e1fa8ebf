# 80-import.sh — case "import": `stasis import` of an OCI image against
# `umoci unpack` of the same image, same run.
#
# The image is the registry case's one-layer tar+gzip OCI layout of the sweep
# tree (full: ~555 MB of file data; quick: the smaller sweep tree). Each run,
# order alternating: `stasis import --store EMPTY oci:IMG:t` (chunks, hashes,
# compresses and fsyncs its packs; no unpacked tree) and `umoci unpack
# --image IMG:t BUNDLE` (an unpacked rootfs), each followed by a timed sync.
# Goal (issue 3, point 5): the same-run comparison (the issue sets no number).
# shellcheck shell=bash

CASES+=(import)
CASE_TITLE[import]="image import"
BUDGET_quick[import]=15
BUDGET_full[import]=120

import_prepare() { image_prepare; }

import_run() {
        local f=$RES/import.tsv o=$WORK/out/import run i est=0 t0 tools=(stasis umoci) n json
        IMG=$WORK/data/image-$MODE
        tsv_init "$f" run tool wall_s sync_s dur_s cpu_s rss_kb out_bytes rc bytes_logical load1
        tsv_init "$RES/import-dataset.tsv" key value
        tsv_row "$RES/import-dataset.tsv" source "$(cat "$WORK/data/sweep-$MODE.src") + var/lib/bench/{model.bin,main.db}"
        tsv_row "$RES/import-dataset.tsv" bytes "$(dir_bytes "$WORK/data/sweep-$MODE")"
        tsv_row "$RES/import-dataset.tsv" image_bytes "$(dir_bytes "$IMG/blobs")"
        ((HAVE_STASIS)) || tools=(umoci)
        n=${#tools[@]}
        for ((run = 1; run <= RUNS; run++)); do
                may_start "$est" || break
                t0=$SECONDS
                for ((i = 0; i < n; i++)); do
                        rm -rf "$o"
                        mkdir -p "$o"
                        sync
                        case ${tools[$(((i + run - 1) % n))]} in
                        stasis)
                                measure "$o" "$STASIS" import --store "$o/store" --json "oci:$IMG:t" >"$o/import.json"
                                json=$(cat "$o/import.json" 2>/dev/null || true)
                                tsv_row "$f" "$run" stasis "$M_WALL" "$M_SYNC" "$M_DUR" "$M_CPU" "$M_RSS" \
                                        "$(dir_bytes "$o/store")" "$M_RC" "$(jget bytes_logical <<<"$json")" "$M_LOAD" ;;
                        umoci)
                                measure "$o" umoci unpack --image "$IMG:t" "$o/bundle"
                                tsv_row "$f" "$run" umoci "$M_WALL" "$M_SYNC" "$M_DUR" "$M_CPU" "$M_RSS" \
                                        "$(dir_bytes "$o/bundle")" "$M_RC" NA "$M_LOAD" ;;
                        esac
                        log "import run $run $(tail -n 1 "$f" | cut -f2): ${M_DUR}s cpu ${M_CPU}s"
                done
                est=$((SECONDS - t0))
        done
        rm -rf "$o"
}

import_goals() {
        local r
        r=$(paired_ratio "$RES/import.tsv" dur_s tool umoci stasis run "" | cut -f2-)
        if [[ -z $r ]]; then echo "| import | vs umoci unpack, same run (no number set) | not measured | — |"; return; fi
        echo "| import | vs umoci unpack, same run (issue 3 sets no number) | umoci unpack time / stasis import time = $(mmm "$r" 2)× (n=$(cut -f1 <<<"$r")) | — |"
}

import_report() {
        local f=$RES/import.tsv d=$RES/import-dataset.tsv tool s r
        dv() { awk -F'\t' -v k="$1" '$1 == k { print $2 }' "$d"; }
        cat <<EOF
## 8. Image import

Image: a one-layer tar+gzip OCI image (\`umoci repack\`) of \`$(dv source)\`,
$(hb "$(dv bytes)") of file data, $(hb "$(dv image_bytes)") of blobs. Each run, order alternating,
into an empty output dir, time including a sync: \`stasis import\` writes a
snapshot (chunked, SHA-256, zstd packs, fsynced); \`umoci unpack\` writes an
unpacked rootfs (the path a runtime takes without stasis). Both read and
gunzip the same layer.

| tool | runs | time s | CPU s | peak RSS | output |
|---|---|---|---|---|---|
EOF
        for tool in stasis umoci; do
                s=$(stats "$f" dur_s tool "tool=$tool" rc=0 | cut -f2-)
                [[ -n $s ]] || continue
                printf '| %s | %s | %s | %s | %s | %s |\n' "$([[ $tool == stasis ]] && echo "stasis import" || echo "umoci unpack")" \
                        "$(cut -f1 <<<"$s")" "$(mmm "$s" 2)" "$(mmm "$(stats "$f" cpu_s tool "tool=$tool" rc=0 | cut -f2-)" 1)" \
                        "$(hb "$(stats "$f" rss_kb tool "tool=$tool" rc=0 | awk -F'\t' '{ printf "%.0f", $3 * 1024 }')")" \
                        "$(hb "$(stats "$f" out_bytes tool "tool=$tool" rc=0 | cut -f3)")"
        done
        r=$(paired_ratio "$f" dur_s tool umoci stasis run "" | cut -f2-)
        [[ -z $r ]] || printf '\nSame-run ratio, umoci unpack time / stasis import time: %s× (n=%s).\n' "$(mmm "$r" 2)" "$(cut -f1 <<<"$r")"
        cat <<EOF

Commands:

    stasis import --store EMPTY --json oci:IMG:t; sync -f OUT
    umoci unpack --image IMG:t OUT/bundle; sync -f OUT

EOF
}
