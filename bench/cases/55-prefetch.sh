# 55-prefetch.sh — case "prefetch": access-trace prefetch on resume (issue 6,
# point 8: "with a trace, the time until a recorded start-up read set has
# been read drops"; docs/access-trace.md).
#
# Once, untimed: the commit case's real tree is committed (tag base); a
# start-up set is picked (every 4th non-empty regular file in sorted path
# order, up to 1,500 files and 24 MiB at quick scale, 6,000 files and 128 MiB
# at full scale); base is mounted with an
# empty node cache, the set is read (cat, in list order), and `stasis
# checkpoint --tag traced` stores the recorded trace with the new snapshot.
# Each run, in alternating order, `traced` is mounted with an empty node
# cache and the guest page cache dropped, with prefetch (trace) and with
# --no-prefetch (notrace), and the set is read again in list order:
#   set_s   from the start of the read to its end (xargs cat, timed by
#           benchio run), started right when `stasis mount` returned
#           (delay 0) or 200 ms later (delay 200: a runtime starting the
#           container first, during which the prefetcher already works)
# plus the mount's counters (prefetch chunks and hits, cache misses).
# Same snapshot, same store, same set: only the prefetch differs.
# With docker-registry at hand, `traced` is also pushed (once, untimed) to
# a local registry, and the same runs mount it lazily from there
# (`oci://`, variants rtrace and rnotrace): a resume on another node, where
# every fetch is a Range GET; the mount's pack_reads count them.
# shellcheck shell=bash

CASES+=(prefetch)
CASE_TITLE[prefetch]="access-trace prefetch on resume"
BUDGET_quick[prefetch]=100
BUDGET_full[prefetch]=240

prefetch_prepare() {
        commit_prepare
        local data=$WORK/data/real-$MODE p=$WORK/data/prefetch-$MODE limit files=1500
        [[ -f $p/ok ]] && return 0
        ((HAVE_STASIS)) || return 0
        rm -rf "$p"
        mkdir -p "$p"
        limit=$((24 * 1024 * 1024))
        [[ $MODE == full ]] && limit=$((128 * 1024 * 1024)) files=6000
        (cd "$data" && find . -type f -size +0 -printf '%s %P\n' | LC_ALL=C sort -k2 |
                awk -v lim="$limit" -v max="$files" 'NR % 4 == 1 && !done { if (t + $1 > lim || n >= max) { done = 1; next }; t += $1; n++; sub(/^[0-9]+ /, ""); print }') >"$p/set.list"
        "$STASIS" commit --store "$p/store" --tag base "$data" >/dev/null || die "prefetch: commit failed"
        log "prefetch: recording the trace of $(wc -l <"$p/set.list") files"
        stasis_mount_timed "$p/mp" "$p/cache" "$p/state" --store "$p/store" base
        ((MR_RC == 0)) || die "prefetch: mount of base failed"
        (cd "$p/mp" && xargs -d '\n' -a "$p/set.list" cat) >/dev/null || die "prefetch: reading the set failed"
        "$STASIS" checkpoint --tag traced --json "$p/mp" >"$p/checkpoint.json" || die "prefetch: checkpoint failed"
        bench_umount "$p/mp"
        rm -rf "$p/cache" "$p/state"
        touch "$p/ok"
}

# prefetch_one RUN trace|notrace|rtrace|rnotrace DELAY_MS: r* from the
# registry (PREFETCH_REG)
prefetch_one() {
        local run=$1 variant=$2 delay=$3 o=$WORK/out/prefetch p=$WORK/data/prefetch-$MODE out rc set js
        local extra=() src=(--store "$p/store" traced)
        [[ $variant == *notrace ]] && extra=(--no-prefetch)
        [[ $variant == r* ]] && src=(--insecure "oci://$PREFETCH_REG/bench/prefetch:traced")
        bench_retire "$o/cache" "$o/state"
        drop_caches
        stasis_mount_timed "$o/mp" "$o/cache" "$o/state" "${extra[@]}" "${src[@]}"
        if ((MR_RC != 0)); then
                tsv_row "$RES/prefetch.tsv" "$run" "$variant-$delay" "$delay" NA NA NA NA NA NA NA 1 "$(cut -d' ' -f1 /proc/loadavg)"
                return
        fi
        ((delay == 0)) || sleep "$(awk -v d="$delay" 'BEGIN { printf "%.3f", d / 1000 }')"
        out=$(cd "$o/mp" && benchio run xargs -d '\n' -a "$p/set.list" cat 2>/dev/null)
        rc=${out#* }
        set=$(ns2s "${out%% *}")
        ((rc == 0)) || set=NA
        js=$("$STASIS" status --json "$o/mp" 2>/dev/null || true)
        tsv_row "$RES/prefetch.tsv" "$run" "$variant-$delay" "$delay" "$MR_S" "$set" "$(jget prefetch_chunks <<<"$js")" \
                "$(jget prefetch_hits <<<"$js")" "$(jget cache_misses <<<"$js")" "$(jget bytes_fetched <<<"$js")" \
                "$(jget pack_reads <<<"$js")" "$rc" "$(cut -d' ' -f1 /proc/loadavg)"
        log "prefetch run $run $variant delay ${delay} ms: ready $MR_S s, set read in $set s, prefetched $(jget prefetch_chunks <<<"$js"), hits $(jget prefetch_hits <<<"$js"), misses $(jget cache_misses <<<"$js"), pack reads $(jget pack_reads <<<"$js")"
        bench_umount "$o/mp"
}

prefetch_run() {
        local p=$WORK/data/prefetch-$MODE f=$RES/prefetch.tsv run est=0 t0 v d i
        ((HAVE_STASIS)) || return 0
        tsv_init "$RES/prefetch-dataset.tsv" key value
        tsv_row "$RES/prefetch-dataset.tsv" source "$(cat "$WORK/data/real-$MODE.src")"
        tsv_row "$RES/prefetch-dataset.tsv" set_files "$(wc -l <"$p/set.list")"
        tsv_row "$RES/prefetch-dataset.tsv" set_bytes "$(cd "$WORK/data/real-$MODE" && xargs -d '\n' -a "$p/set.list" stat -c %s | awk '{ t += $1 } END { print t + 0 }')"
        tsv_row "$RES/prefetch-dataset.tsv" trace_bytes "$(jq -r '.layers[-1] | select(.mediaType == "application/vnd.stasis.trace.v1") | .size' \
                "$p/store/blobs/sha256/$(jget digest <"$p/checkpoint.json" | sed 's/^sha256://')" 2>/dev/null || echo NA)"
        tsv_row "$RES/prefetch-dataset.tsv" chunk_size "$("$STASIS" inspect --store "$p/store" --json traced | jget chunk_size)"
        tsv_init "$f" run tool delay_ms ready_s set_s prefetch_chunks prefetch_hits cache_misses bytes_fetched pack_reads rc load1
        local pairs=("trace notrace") pair order
        rm -rf "$WORK/out/prefetch"
        mkdir -p "$WORK/out/prefetch"
        if command -v docker-registry >/dev/null; then
                registry_start "$WORK/out/prefetch/registry"
                PREFETCH_REG=$REG_HOST
                "$STASIS" push --store "$p/store" --insecure traced "oci://$PREFETCH_REG/bench/prefetch:traced" >/dev/null ||
                        die "prefetch: stasis push failed"
                pairs+=("rtrace rnotrace")
        fi
        for ((run = 1; run <= RUNS; run++)); do
                may_start "$est" || break
                t0=$SECONDS
                for pair in "${pairs[@]}"; do
                        read -ra order <<<"$pair"
                        for d in 0 200; do
                                for ((i = 0; i < 2; i++)); do
                                        v=${order[$(((run % 2) ? i : 1 - i))]}
                                        prefetch_one "$run" "$v" "$d"
                                done
                        done
                done
                est=$((SECONDS - t0))
        done
        bench_teardown
        rm -rf "$WORK/out/prefetch"
}

prefetch_dv() { awk -F'\t' -v k="$1" '$1 == k { print $2 }' "$RES/prefetch-dataset.tsv"; }

prefetch_goals() {
        local r pre where n med lo hi
        for pre in "" r; do
                where=""
                [[ $pre == r ]] && where=", from a registry"
                for d in 0 200; do
                        r=$(paired_ratio "$RES/prefetch.tsv" set_s tool "${pre}notrace-$d" "${pre}trace-$d" run "" | cut -f2-)
                        if [[ -z $r ]]; then
                                [[ $pre == r ]] && continue # no docker-registry: not run
                                echo "| prefetch: start-up set read after resume (delay $d ms) | faster with the trace (report) | not measured | — |"
                                continue
                        fi
                        read -r n med lo hi <<<"$r"
                        echo "| prefetch: start-up set read after resume (delay $d ms$where) | faster with the trace (report) | without / with trace = $(fnum "$med")× ($(fnum "$lo")–$(fnum "$hi"), n=$n) | $(awk -v m="$med" 'BEGIN { print ((m > 1) ? "yes" : "**no**") }') |"
                done
        done
}

prefetch_report() {
        local f=$RES/prefetch.tsv tool
        cat <<EOF
## 5b. Access-trace prefetch on resume (local store and registry)

Dataset: the commit case's tree (\`$(prefetch_dv source)\`); the start-up set is
$(prefetch_dv set_files) files, $(hb "$(prefetch_dv set_bytes)") (every 4th non-empty file in sorted path order), read once on a
mount of the committed tree and stored by \`stasis checkpoint\` as a trace of
$(prefetch_dv trace_bytes) bytes (chunk size $(hb "$(prefetch_dv chunk_size)")). Each run mounts that snapshot with an
empty node cache and the guest page cache dropped, with prefetch (**trace**)
and with \`--no-prefetch\` (**notrace**), in alternating order, and reads the
set again in the recorded order right after the mount returned (delay 0) or
200 ms later (a runtime starting the container first). **set** is the read
alone (\`benchio run xargs cat\`), not the delay. **rtrace** and
**rnotrace** are the same runs on the snapshot \`stasis push\`ed to a local
docker-registry and mounted from there (\`oci://\`, loopback: a real
network's round trips cost more); **pack reads** counts the mount's reads
of packs (from a registry, Range GETs), prefetch and READs together, once
the set has been read.

| variant | delay | runs | ready ms | set read s | prefetched chunks | prefetch hits | cache misses | pack reads |
|---|---|---|---|---|---|---|---|---|
EOF
        for tool in trace-0 notrace-0 trace-200 notrace-200 rtrace-0 rnotrace-0 rtrace-200 rnotrace-200; do
                local s
                s=$(stats "$f" run tool "tool=$tool" | cut -f2)
                [[ -n $s ]] || continue
                printf '| %s | %s ms | %s | %s | %s | %s | %s | %s | %s |\n' "${tool%-*}" "${tool##*-}" "$s" \
                        "$(mmm "$(stats "$f" ready_s tool "tool=$tool" rc=0 | cut -f2- | awk '{ printf "%s %s %s %s", $1, $2 * 1000, $3 * 1000, $4 * 1000 }')" 1)" \
                        "$(mmm "$(stats "$f" set_s tool "tool=$tool" rc=0 | cut -f2-)" 3)" \
                        "$(mmm "$(stats "$f" prefetch_chunks tool "tool=$tool" rc=0 | cut -f2-)" 0)" \
                        "$(mmm "$(stats "$f" prefetch_hits tool "tool=$tool" rc=0 | cut -f2-)" 0)" \
                        "$(mmm "$(stats "$f" cache_misses tool "tool=$tool" rc=0 | cut -f2-)" 0)" \
                        "$(mmm "$(stats "$f" pack_reads tool "tool=$tool" rc=0 | cut -f2-)" 0)"
        done
        cat <<EOF

Same-run ratio, set read time without / with the trace (paired by run):

| delay | runs | median (min–max) |
|---|---|---|
EOF
        local pre r
        for pre in "" r; do
                for d in 0 200; do
                        r=$(paired_ratio "$f" set_s tool "${pre}notrace-$d" "${pre}trace-$d" run "" | cut -f2-)
                        [[ -n $r ]] && printf '| %s ms%s | %s | %s× |\n' "$d" "${pre:+ (registry)}" \
                                "$(cut -d' ' -f1 <<<"${r//$'\t'/ }")" "$(mmm "${r//$'\t'/ }" 2)"
                done
        done
        cat <<EOF

Commands (S the store, C an empty cache dir, MP a mountpoint, LIST the set):

    stasis mount --store S --cache C [--no-prefetch] traced MP
    cd MP && benchio run xargs -d '\n' -a LIST cat
    stasis push --store S --insecure traced oci://HOST/bench/prefetch:traced      # once
    stasis mount --insecure --cache C [--no-prefetch] oci://HOST/bench/prefetch:traced MP

EOF
}
