# 20-chunksize.sh — case "chunksize": the chunk-size sweep that picks the default.
#
# For each chunk size: commit a tree into an empty store (time, store size),
# apply the "edits" workload (100 scattered 4 KiB writes in a large file and
# a few small text files appended to), `stasis commit --parent` (time, store
# growth), then undo the edits bit-exact so every size starts from the same
# tree. Warm cache (the tree is read immediately before each base commit).
# Goal (issue 2): numbers that justify the default chunk size.
# shellcheck shell=bash

CASES+=(chunksize)
CASE_TITLE[chunksize]="chunk-size sweep"
BUDGET_quick[chunksize]=45
BUDGET_full[chunksize]=330

chunksize_sizes() {
        if [[ $MODE == full ]]; then
                echo 16384 32768 65536 131072 262144 524288 1048576 2097152 4194304
        else
                echo 16384 65536 262144 1048576 4194304
        fi
}

chunksize_human() { awk -v b="$1" 'BEGIN { if (b >= 1048576) printf "%d MiB", b / 1048576; else printf "%d KiB", b / 1024 }'; }

chunksize_prepare() {
        local data=$WORK/data/sweep-$MODE
        [[ -f $data.src && -f $data/var/lib/bench/model.bin ]] && return 0
        log "sweep tree ($MODE): real directories + large files"
        gen_real "$data" "$([[ $MODE == full ]] && echo sweep || echo sweepquick)" ""
        gen_large "$data" "$MODE" 42
}

chunksize_run() {
        local data=$WORK/data/sweep-$MODE out=$WORK/out/sweep f=$RES/chunksize.tsv
        local files dirs links bytes
        read -r files dirs links bytes < <(tree_stats "$data")
        tsv_init "$RES/chunksize-dataset.tsv" key value
        tsv_row "$RES/chunksize-dataset.tsv" source "$(cat "$data.src") + var/lib/bench/{model.bin,main.db}"
        tsv_row "$RES/chunksize-dataset.tsv" files "$files"
        tsv_row "$RES/chunksize-dataset.tsv" bytes "$bytes"
        scale_params "$MODE"
        tsv_row "$RES/chunksize-dataset.tsv" edits "$EDIT_WRITES x 4 KiB in model.bin ($MODEL_SIZE), 5 small text files appended to"
        tsv_row "$RES/chunksize-dataset.tsv" default "$(chunksize_default)"
        tsv_init "$RES/chunksize-lazy.tsv" run chunk ready_s first_s read_s read_mb_s read_bytes bytes_fetched rc load1
        tsv_init "$f" run chunk phase wall_s sync_s dur_s user_s sys_s cpu_s rss_kb store_bytes growth_bytes \
                mb_s chunks_total chunks_new bytes_new bytes_packed tree_bytes rc load1
        ((HAVE_STASIS)) || { log "chunksize: no stasis binary, nothing to measure"; return 0; }
        local sizes run cs est=0 t0 s0 s1 digest json
        for ((run = 1; run <= RUNS; run++)); do
                read -ra sizes <<<"$(chunksize_sizes)"
                # alternate the direction, so drift does not favour one end
                ((run % 2)) || read -ra sizes <<<"$(printf '%s\n' "${sizes[@]}" | sort -rn | tr '\n' ' ')"
                for cs in "${sizes[@]}"; do
                        may_start "$est" || break 2
                        t0=$SECONDS
                        rm -rf "$out"
                        mkdir -p "$out"
                        warm "$data"
                        measure "$out" "$STASIS" commit --store "$out/store" --chunk-size "$cs" --json "$data" >"$out/base.json"
                        json=$(cat "$out/base.json")
                        s0=$(dir_bytes "$out/store")
                        chunksize_row "$run" "$cs" base "$s0" "$s0" "$bytes" "$json"
                        digest=$(jget digest <<<"$json")
                        chunksize_lazy "$run" "$cs" "$out" "$digest"
                        workload edits "$data" "$MODE" $((1000 + run)) "$out/undo"
                        measure "$out" "$STASIS" commit --store "$out/store" --chunk-size "$cs" --parent "$digest" \
                                --json "$data" >"$out/incr.json"
                        json=$(cat "$out/incr.json")
                        s1=$(dir_bytes "$out/store")
                        chunksize_row "$run" "$cs" incr "$s1" $((s1 - s0)) "$bytes" "$json"
                        workload unedits "$data" "$MODE" 0 "$out/undo"
                        est=$((SECONDS - t0 > est ? SECONDS - t0 : est))
                done
        done
        rm -rf "$out"
}

# chunksize_lazy RUN CS OUT DIGEST: the lazy-read cost on resume at this chunk
# size, at quick scale whatever the mode: mount the fresh store with an empty
# node cache (guest page cache dropped), the first byte in the middle of
# model.bin, then a cold read of usr/share/man (small files) and model.bin
# (one large file) through the mount.
chunksize_lazy() {
        local run=$1 cs=$2 out=$3 digest=$4 mp=$3/mp first rd b ns fetched off
        ((HAVE_STASIS)) || return 0
        bench_retire "$out/cache" "$out/state"
        drop_caches
        stasis_mount_timed "$mp" "$out/cache" "$out/state" --store "$out/store" "$digest"
        if ((MR_RC != 0)); then
                tsv_row "$RES/chunksize-lazy.tsv" "$run" "$cs" NA NA NA NA NA NA 1 "$M_LOAD"
                return
        fi
        off=$(($(file_bytes "$mp/var/lib/bench/model.bin") / 2 + 12345))
        first=$(first_byte_at "$mp/var/lib/bench/model.bin" "$off")
        b=0 ns=0
        local p o x y
        for p in usr/share/man var/lib/bench/model.bin; do
                o=$(benchio read "$mp/$p") || o="NA NA"
                read -r x y _ <<<"$o"
                b=$(awk -v a="$b" -v c="$x" 'BEGIN { print (c == "NA") ? "NA" : a + c }')
                ns=$(awk -v a="$ns" -v c="$y" 'BEGIN { print (c == "NA") ? "NA" : a + c }')
        done
        rd=$(ns2s "$ns")
        fetched=$(jget bytes_fetched <<<"$("$STASIS" status --json "$mp" 2>/dev/null || true)")
        bench_umount "$mp"
        bench_retire "$out/cache" "$out/state"
        tsv_row "$RES/chunksize-lazy.tsv" "$run" "$cs" "$MR_S" "$first" "$rd" \
                "$(awk -v b="$b" -v t="$rd" 'BEGIN { if (t == "NA" || t == 0) print "NA"; else printf "%.1f", b / t / 1e6 }')" \
                "$b" "$fetched" 0 "$(cut -d' ' -f1 /proc/loadavg)"
        log "chunksize run $run $(chunksize_human "$cs") lazy: ready ${MR_S}s first byte ${first}s cold read ${rd}s ($(hb "$b"))"
}
first_byte_at() { local o; o=$(benchio first "$1" "$2" 2>/dev/null) || { echo NA; return; }; ns2s "$o"; }

# chunksize_row RUN CS PHASE STORE GROWTH INBYTES JSON
chunksize_row() {
        local mbps
        mbps=$(awk -v b="$6" -v t="$M_DUR" 'BEGIN { printf "%.1f", b / t / 1e6 }')
        local j=$7
        tsv_row "$RES/chunksize.tsv" "$1" "$2" "$3" "$M_WALL" "$M_SYNC" "$M_DUR" "$M_USER" "$M_SYS" "$M_CPU" \
                "$M_RSS" "$4" "$5" "$mbps" "$(jget chunks_total <<<"$j")" "$(jget chunks_new <<<"$j")" \
                "$(jget bytes_new <<<"$j")" "$(jget bytes_packed <<<"$j")" "$(jget tree_bytes <<<"$j")" "$M_RC" "$M_LOAD"
        log "chunksize run $1 $(chunksize_human "$2") $3: ${M_DUR}s store $(hb "$4") growth $(hb "$5")"
}

# The code's default chunk size: from the source if it says, else the design's 256 KiB.
chunksize_default() {
        local d
        d=$(grep -rhoE '#define[[:space:]]+CHUNK_SIZE_DEFAULT[[:space:]]*\(?[[:space:]]*\(?[0-9]+[uU]?[[:space:]]*(<<[[:space:]]*[0-9]+)?' \
                "$REPO/store" "$REPO/tools" 2>/dev/null | head -n 1 | sed -E 's/.*DEFAULT[[:space:]]*//; s/[()uU ]//g')
        if [[ $d =~ ^([0-9]+)\<\<([0-9]+)$ ]]; then
                echo $((BASH_REMATCH[1] << BASH_REMATCH[2]))
        elif [[ $d =~ ^[0-9]+$ ]]; then
                echo "$d"
        else
                echo 262144
        fi
}

# The rule's reference: a rootfs this big, of the same makeup as the sweep tree.
CHUNKSIZE_REF_BYTES=$((2 << 30))

# chunksize_summary -> per size (medians), tab-separated:
#   1 cs  2 n  3 base_mb_s  4 store  5 incr_s  6 growth  7 base_s  8 base_cpu_s
#   9 tree_incr  10 data (growth - tree)  11 projected growth for the reference rootfs
#   12 lazy first byte s  13 lazy cold read s (medians; NA if not measured)
chunksize_summary() {
        chunksize_summary0 | while IFS= read -r line; do
                local c=${line%%$'\t'*} l1 l2
                l1=$(stats "$RES/chunksize-lazy.tsv" first_s chunk "chunk=$c" rc=0 2>/dev/null | cut -f3)
                l2=$(stats "$RES/chunksize-lazy.tsv" read_s chunk "chunk=$c" rc=0 2>/dev/null | cut -f3)
                printf '%s\t%s\t%s\n' "$line" "${l1:-NA}" "${l2:-NA}"
        done
}
chunksize_summary0() {
        local f=$RES/chunksize.tsv cs bytes
        bytes=$(awk -F'\t' '$1 == "bytes" { print $2 }' "$RES/chunksize-dataset.tsv")
        for cs in $(awk -F'\t' 'NR > 1 { print $2 }' "$f" | sort -n | uniq); do
                printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$cs" \
                        "$(stats "$f" mb_s chunk "chunk=$cs" phase=base rc=0 | cut -f2,3)" \
                        "$(stats "$f" store_bytes chunk "chunk=$cs" phase=base rc=0 | cut -f3)" \
                        "$(stats "$f" dur_s chunk "chunk=$cs" phase=incr rc=0 | cut -f3)" \
                        "$(stats "$f" growth_bytes chunk "chunk=$cs" phase=incr rc=0 | cut -f3)" \
                        "$(stats "$f" dur_s chunk "chunk=$cs" phase=base rc=0 | cut -f3)" \
                        "$(stats "$f" cpu_s chunk "chunk=$cs" phase=base rc=0 | cut -f3)" \
                        "$(stats "$f" tree_bytes chunk "chunk=$cs" phase=incr rc=0 | cut -f3)"
        done | awk -F'\t' -v OFS='\t' -v ref="$CHUNKSIZE_REF_BYTES" -v bytes="$bytes" '
                NF >= 9 && $3 != "" && $6 != "" {
                        tree = ($9 == "" ? 0 : $9); data = $6 - tree
                        printf "%s\t%.0f\t%.0f\n", $0, data, data + tree * ref / bytes
                }'
}

# The rule, written down before the numbers. A pause writes the chunks the
# edit dirtied (smaller chunks: less) plus the whole new tree, whose chunk
# table grows as the chunk size shrinks and with the rootfs. So: scale the
# measured tree to a 2 GiB rootfs of the same makeup, add the measured new
# data, and among the sizes whose full commit costs at most 15% more CPU than
# the sizes' median and whose store is within 5% of the smallest, take the one
# with the smallest projected pause; sizes within 5% of that count as equal
# and the larger chunk wins (fewer chunks to index and to fetch lazily).
# CPU, not wall time: on a shared 2-core machine wall time is the noisier one.
chunksize_pick() {
        chunksize_summary | awk -F'\t' '
                { cs[NR] = $1; cpu[NR] = $8; st[NR] = $4; pr[NR] = $11; fb[NR] = $12; rd[NR] = $13; n = NR
                  if (ms == "" || $4 < ms) ms = $4
                  if ($12 != "NA" && (mf == "" || $12 < mf)) mf = $12
                  if ($13 != "NA") r[++nr] = $13 }
                function median(v, m,   i, j, t) {
                        for (i = 2; i <= m; i++) { t = v[i]; for (j = i - 1; j >= 1 && v[j] > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
                        return (m % 2) ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
                }
                END {
                        # mc: the median of the CPU medians of all sizes; mr: of the lazy cold reads
                        for (i = 1; i <= n; i++) a[i] = cpu[i]
                        mc = median(a, n)
                        mr = nr ? median(r, nr) : ""
                        fl = (mf == "") ? "" : (2 * mf > mf + 0.002 ? 2 * mf : mf + 0.002)
                        best = ""
                        for (i = 1; i <= n; i++) {
                                ok[i] = cpu[i] <= 1.15 * mc && st[i] <= 1.05 * ms
                                # lazy-read cost on resume, where measured
                                if (fb[i] != "NA" && fl != "" && fb[i] > fl) ok[i] = 0
                                if (rd[i] != "NA" && mr != "" && rd[i] > 1.15 * mr) ok[i] = 0
                                if (ok[i] && (best == "" || pr[i] < best)) best = pr[i]
                        }
                        pick = ""
                        for (i = 1; i <= n; i++) if (ok[i] && pr[i] <= 1.05 * best && (pick == "" || cs[i] > cs[pick])) pick = i
                        if (pick != "") print cs[pick]
                }'
}

chunksize_goals() {
        local def pick
        def=$(awk -F'\t' '$1 == "default" { print $2 }' "$RES/chunksize-dataset.tsv")
        pick=$(chunksize_pick)
        if [[ -z $pick ]]; then
                echo "| chunk-size sweep | data that justifies the default ($(chunksize_human "$def")) | not measured | — |"
                return
        fi
        echo "| chunk-size sweep | data that justifies the default ($(chunksize_human "$def")) | the rule picks $(chunksize_human "$pick") | $([[ $pick == "$def" ]] && echo yes || echo "**no**: see §2") |"
}

chunksize_report() {
        local f=$RES/chunksize.tsv d=$RES/chunksize-dataset.tsv
        dv() { awk -F'\t' -v k="$1" '$1 == k { print $2 }' "$d"; }
        cat <<EOF
## 2. Chunk-size sweep

Tree: a copy of \`$(dv source)\`, $(dv files) files, $(hb "$(dv bytes)"). For each
chunk size, in an empty store: a full commit; then the "edits" workload
($(dv edits)); then \`stasis commit --parent\`; then the edits are undone
bit-exact, so every size sees the same bytes. Warm cache (the tree is read
just before each full commit). Order of sizes alternates between runs.
"growth" is what the incremental commit added to the store (packs, tree,
config, manifest, index). Times include the final sync.

| chunk | runs | full commit s | CPU s | MB/s | store | chunks | incremental s | incremental growth (min–max) | of which tree | projected pause, 2 GiB rootfs |
|---|---|---|---|---|---|---|---|---|---|---|
EOF
        local cs s
        for cs in $(awk -F'\t' 'NR > 1 { print $2 }' "$f" | sort -n | uniq); do
                s=$(stats "$f" dur_s chunk "chunk=$cs" phase=base rc=0 | cut -f2-)
                [[ -n $s ]] || continue
                local proj
                proj=$(chunksize_summary | awk -F'\t' -v c="$cs" '$1 == c { print $11 }')
                printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(chunksize_human "$cs")" "$(cut -f1 <<<"$s")" \
                        "$(mmm "$s" 2)" \
                        "$(mmm "$(stats "$f" cpu_s chunk "chunk=$cs" phase=base rc=0 | cut -f2-)" 2)" \
                        "$(mmm "$(stats "$f" mb_s chunk "chunk=$cs" phase=base rc=0 | cut -f2-)" 0)" \
                        "$(hb "$(stats "$f" store_bytes chunk "chunk=$cs" phase=base rc=0 | cut -f3)")" \
                        "$(stats "$f" chunks_total chunk "chunk=$cs" phase=base rc=0 | cut -f3)" \
                        "$(mmm "$(stats "$f" dur_s chunk "chunk=$cs" phase=incr rc=0 | cut -f2-)" 2)" \
                        "$(hb "$(stats "$f" growth_bytes chunk "chunk=$cs" phase=incr rc=0 | cut -f3)") ($(hb "$(stats "$f" growth_bytes chunk "chunk=$cs" phase=incr rc=0 | cut -f4)")–$(hb "$(stats "$f" growth_bytes chunk "chunk=$cs" phase=incr rc=0 | cut -f5)"))" \
                        "$(hb "$(stats "$f" tree_bytes chunk "chunk=$cs" phase=incr rc=0 | cut -f3)")" \
                        "$(hb "${proj:-NA}")"
        done
        local fails
        fails=$(awk -F'\t' 'NR > 1 && $19 != 0 { n++ } END { print n + 0 }' "$f")
        ((fails == 0)) || printf '\n**%d commit(s) failed** (rc column of results/chunksize.tsv); they are left out above.\n' "$fails"
        if [[ -s $RES/chunksize-lazy.tsv ]] && (($(wc -l <"$RES/chunksize-lazy.tsv") > 1)); then
                cat <<EOF

Lazy-read cost on resume, per chunk size (after each full commit: \`stasis
mount\` of that store with an empty node cache and the guest page cache
dropped; the first byte is one byte in the middle of model.bin; the cold
read is every file of usr/share/man (many small files) plus model.bin (one
large file), $(hb "$(stats "$RES/chunksize-lazy.tsv" read_bytes chunk rc=0 | head -n 1 | cut -f3)"), through the mount; "fetched" is what stasisd
decompressed from the packs for all of it):

| chunk | runs | mount-ready ms | first byte ms | cold read MB/s | fetched |
|---|---|---|---|---|---|
EOF
                local l
                for cs in $(awk -F'\t' 'NR > 1 { print $2 }' "$RES/chunksize-lazy.tsv" | sort -n | uniq); do
                        l=$(stats "$RES/chunksize-lazy.tsv" first_s chunk "chunk=$cs" rc=0 | cut -f2-)
                        [[ -n $l ]] || continue
                        printf '| %s | %s | %s | %s | %s | %s |\n' "$(chunksize_human "$cs")" "$(cut -f1 <<<"$l")" \
                                "$(mmm "$(stats "$RES/chunksize-lazy.tsv" ready_s chunk "chunk=$cs" rc=0 | cut -f2- | awk -F'\t' -v OFS='\t' '{ print $1, $2 * 1000, $3 * 1000, $4 * 1000 }')" 1)" \
                                "$(mmm "$(awk -F'\t' -v OFS='\t' '{ print $1, $2 * 1000, $3 * 1000, $4 * 1000 }' <<<"$l")" 2)" \
                                "$(mmm "$(stats "$RES/chunksize-lazy.tsv" read_mb_s chunk "chunk=$cs" rc=0 | cut -f2-)" 0)" \
                                "$(hb "$(stats "$RES/chunksize-lazy.tsv" bytes_fetched chunk "chunk=$cs" rc=0 | cut -f3)")"
                done
        fi
        local def pick
        def=$(dv default)
        pick=$(chunksize_pick)
        chunksize_plot
        cat <<EOF

![chunk-size sweep](plots/chunksize.png)

**Which default the data supports.** The rule, fixed before the numbers: a
pause writes the chunks an edit dirtied (less with smaller chunks) plus the
whole new tree, whose chunk table grows as chunks shrink and as the rootfs
grows. So the last column scales the measured tree to a 2 GiB rootfs of the
same makeup (×$(awk -v r="$CHUNKSIZE_REF_BYTES" -v b="$(dv bytes)" 'BEGIN { printf "%.1f", r / b }')) and adds the measured new data. Among the sizes whose full
commit costs at most 15% more CPU than the median over all sizes (per-chunk
overhead would show there; run-to-run noise on this shared machine is about
±15%, so a tighter cut would pick by noise) and whose store is within 5% of
the smallest, the rule takes the smallest projected pause; sizes within 5% of
it count as equal and the larger chunk wins (fewer chunks to index and to
fetch lazily). The lazy-read cost on resume (added with the resume case,
before its numbers were seen) also rules a size out: a first byte slower
than twice the fastest size's (or than it + 2 ms, whichever is more: a
local first byte is about a millisecond, where timer noise is that size),
or a cold read through the mount more than 15% slower than the median
over all sizes. On this run the rule picks
**$( [[ -n $pick ]] && chunksize_human "$pick" || echo 'nothing (no data)')**; the code's default is
**$(chunksize_human "$def")**$(
                if [[ -z $pick ]]; then echo "."
                elif [[ $pick == "$def" ]]; then echo ", so the data supports it."
                else echo ", so the data does not support it: by this rule the default should be $(chunksize_human "$pick")."
                fi)

Command: \`stasis commit --store S --chunk-size N --json DIR\`, then
\`stasis commit --store S --chunk-size N --parent DIGEST --json DIR\`.

EOF
}

chunksize_plot() {
        command -v gnuplot >/dev/null || return 0
        local dat=$RES/chunksize-plot.dat
        chunksize_summary | awk -F'\t' '{ printf "%d %s %s %s %s %s\n", $1 / 1024, $3, $4 / 1048576, $5, $6 / 1048576, $11 / 1048576 }' >"$dat"
        [[ -s $dat ]] || return 0
        gnuplot <<EOF
set terminal pngcairo size 1100,380 font ",10"
set output "$PLOTS/chunksize.png"
set multiplot layout 1,3 title "Chunk-size sweep (medians; x: chunk size in KiB, log scale)"
set logscale x 2
set xtics ("16" 16, "64" 64, "256" 256, "1M" 1024, "4M" 4096)
set grid
unset key
set title "full commit throughput"
set ylabel "MB/s"
set yrange [0:*]
plot "$dat" using 1:2 with linespoints lw 2 pt 7
set title "store size after full commit"
set ylabel "MiB"
set yrange [*:*]
plot "$dat" using 1:3 with linespoints lw 2 pt 7
set title "incremental commit after the edits"
set ylabel "MiB"
set yrange [0:*]
set key top left
plot "$dat" using 1:5 with linespoints lw 2 pt 7 title "store growth (measured)", "" using 1:6 with linespoints lw 2 pt 5 title "projected, 2 GiB rootfs"
unset multiplot
EOF
}
