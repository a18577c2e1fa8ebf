# 45-pause.sh — case "pause": `stasis pause` through the mount against the
# image-committer path, casync and restic on the same change (issue 6,
# acceptance 8, pause part), and the checkpoint stall an outside writer sees
# with little and with much dirty data (issue 6, acceptance 2).
#
# Base: the seeded synthetic rootfs of the mode plus var/lib/bench/del.bin,
# committed (tag base) into a fresh store; the same tree copied natively
# (cp -a, so mtimes are kept) for the peers, whose stores are seeded with the
# base first: `casync make` of it, `restic backup` of it (repository v2,
# compression auto). Each run, on a fresh `stasis mount` of base and, byte
# for byte, on a fresh native copy (tests/tools/ckpt-tool, the checkpoint
# tests' writer, built with the tests next to the stasis binary, applies each
# change to both trees):
#   new       N small files (full: 5,000 x 20,000 B = 100 MB; quick: 1,000)
#   large     one 4 KiB write in each of the 20 largest files of the tree
#   scatter   W scattered 4 KiB writes in model.bin (full: 256 = 1 MiB in
#             256 MiB; quick: 64 = 256 KiB in 32 MiB)
#   delete    del.bin (full: 50 MiB; quick: 8 MiB)
# then, in alternating order: `stasis pause --json MP` (time, store growth,
# bytes_new, stall_ns), the image path (tar of every changed file whole +
# whiteouts | pigz), `casync make` into the seeded chunk store, `restic
# backup --parent BASE`. The minimum a pause can write: the changed chunks,
# each compressed alone at the store's level (ckpt-tool zsize), plus the new
# tree, manifest, config and access trace. Goals: pause >= 20x faster than
# the image path, store growth <= 1.1x that minimum.
#
# Stall: a fresh mount labelled io.stasis.freeze=cgroup:CG, a python3 writer
# in the cgroup v2 child CG appending 128-byte records to a file on the mount
# every millisecond and timestamping each write; D bytes written to a file on
# the mount, synced (mount and host) or left in the page cache; then `stasis
# checkpoint --json`. The writer's longest gap between two writes overlapping
# the checkpoint, and stall_ns, for D = 1 MiB and D = 500 MiB (quick: 100
# MiB). Goal: gap ratio <= 2.
# shellcheck shell=bash

CASES+=(pause)
CASE_TITLE[pause]="pause and checkpoint through the mount"
BUDGET_quick[pause]=60
BUDGET_full[pause]=300

PAUSE_TOOLS="stasis image casync restic"
PAUSE_LEVEL=3 # store/chunk.h CHUNK_LEVEL_DEFAULT: what checkpoint compresses at
PAUSE_RESTIC_PW=stasis-bench

pause_scale() {
        case $MODE in
        quick) PAUSE_NEW_N=1000 PAUSE_NEW_SIZE=20000 PAUSE_SCATTER=64 PAUSE_DEL_SIZE=8M
                PAUSE_DIRTY_SMALL=1M PAUSE_DIRTY_LARGE=100M ;;
        *) PAUSE_NEW_N=5000 PAUSE_NEW_SIZE=20000 PAUSE_SCATTER=256 PAUSE_DEL_SIZE=50M
                PAUSE_DIRTY_SMALL=1M PAUSE_DIRTY_LARGE=500M ;;
        esac
}

# ckpt-tool: built with the tests next to the stasis binary (CKPT_TOOL= overrides)
pause_ck() { "${CKPT_TOOL:-$(dirname "$STASIS")/tests/ckpt-tool}" "$@"; }
pause_restic() { RESTIC_PASSWORD=$PAUSE_RESTIC_PW restic -r "$PAUSE_DIR/repo" --cache-dir "$PAUSE_DIR/restic-cache" "$@"; }
pause_dv() { awk -F'\t' -v k="$1" '$1 == k { print $2 }' "$RES/pause-dataset.tsv"; }
# pause_base KEY: "BYTES bytes in S s" -> "1.23 GiB in S s"
pause_base() { local b r; read -r b r <<<"$(pause_dv "$1")"; echo "$(hb "$b")${r#bytes}"; }

# Datasets: the base tree is kept between runs of run.sh (with --keep); the
# stores are made again every time, so no earlier run's chunks deduplicate.
pause_prepare() {
        local p=$WORK/data/pause-$MODE t0 out
        PAUSE_DIR=$p
        pause_scale
        ((HAVE_STASIS)) || { log "pause: no stasis binary; the case needs one"; return 0; }
        [[ -x ${CKPT_TOOL:-$(dirname "$STASIS")/tests/ckpt-tool} ]] ||
                { log "pause: no ckpt-tool next to $STASIS (build the tests, or set CKPT_TOOL=)"; return 0; }
        if [[ ! -f $p/ok ]]; then
                rm -rf "$p"
                mkdir -p "$p"
                gen_synth "$p/base" "$MODE" 42 ""
                benchgen file 44 "$p/base/var/lib/bench/del.bin" "$PAUSE_DEL_SIZE" bin
                # the 20 largest files outside var/lib/bench: the "large files" edited
                (cd "$p/base" && find . -type f -not -path './var/lib/bench/*' -printf '%s %P\n' |
                        LC_ALL=C sort -k1,1nr -k2,2 | awk 'NR <= 20') >"$p/large.list"
                touch "$p/ok"
        fi
        rm -rf "$p/store" "$p/castr" "$p/repo" "$p/restic-cache" "$p/native" "$p/base.caidx" "$p/base.json"
        "$STASIS" commit --store "$p/store" --tag base --json "$p/base" >"$p/base.json" || die "pause: commit of the base failed"
        cp -a "$p/base" "$p/native"
        t0=$SECONDS
        casync make --store="$p/castr" "$p/base.caidx" "$p/native" >/dev/null || die "pause: casync make of the base failed"
        PAUSE_CASYNC_BASE_S=$((SECONDS - t0))
        t0=$SECONDS
        pause_restic init --repository-version 2 -q >/dev/null || die "pause: restic init failed"
        out=$(pause_restic backup --json -q "$p/native") || die "pause: restic backup of the base failed"
        PAUSE_RESTIC_BASE_S=$((SECONDS - t0))
        PAUSE_RESTIC_BASE=$(printf '%s\n' "$out" | jq -r 'select(.message_type == "summary") | .snapshot_id' | tail -n 1)
        [[ -n $PAUSE_RESTIC_BASE && $PAUSE_RESTIC_BASE != null ]] || die "pause: no restic snapshot id for the base"
}

# pause_workload SEED MP NATIVE OUTDIR: the same changes to both trees
pause_workload() {
        local seed=$1 mp=$2 nat=$3 o=$4 f off i=0
        mkdir -p "$mp/opt" "$nat/opt"
        pause_ck files "$seed" mixed "$PAUSE_NEW_SIZE" "$PAUSE_NEW_N" "$mp/opt/pause-new" "$nat/opt/pause-new" >/dev/null
        : >"$o/large.off"
        while read -r _ f; do
                i=$((i + 1))
                off=$(pause_ck scatter "$((seed * 100 + i))" 1 4096 "$mp/$f" "$nat/$f")
                echo "$off $f" >>"$o/large.off"
        done <"$PAUSE_DIR/large.list"
        pause_ck scatter "$seed" "$PAUSE_SCATTER" 4096 "$mp/var/lib/bench/model.bin" "$nat/var/lib/bench/model.bin" >"$o/model.off"
        rm -f "$mp/var/lib/bench/del.bin" "$nat/var/lib/bench/del.bin"
}

# pause_minimum NATIVE OUTDIR DIGEST CHUNKSIZE -> "chunks clen ulen tree manifest config trace min"
# The truly changed chunks (every chunk of a new file, the chunk of each large
# file's write, the chunks the scattered writes touched), each compressed as
# one zstd frame at the store's level from the native copy, plus the new
# snapshot's tree, manifest, config and access-trace blobs.
pause_minimum() {
        local nat=$1 o=$2 dg=$3 cs=$4 m n clen ulen tree man cfg trace
        {
                find "$nat/opt/pause-new" -type f -printf '%p %s\n' |
                        awk -v cs="$cs" '{ for (o = 0; o < $2; o += cs) print $1, o, ($2 - o < cs ? $2 - o : cs) }'
                awk -v cs="$cs" -v d="$nat" '{ print int($1 / cs), d "/" $2 }' "$o/large.off"
                awk -v cs="$cs" -v f="$nat/var/lib/bench/model.bin" '{ print int($1 / cs), f }' "$o/model.off" | sort -u -k1,1n
        } | while read -r a b c; do
                if [[ -n $c ]]; then echo "$a $b $c"; continue; fi
                local sz len
                sz=$(stat -c %s "$b")
                len=$((sz - a * cs))
                ((len > cs)) && len=$cs
                echo "$b $((a * cs)) $len"
        done >"$o/chunks.list"
        read -r _ n _ clen _ ulen < <(pause_ck zsize "$PAUSE_LEVEL" <"$o/chunks.list")
        m=$PAUSE_DIR/store/blobs/sha256/${dg#sha256:}
        if [[ -f $m ]] && command -v jq >/dev/null; then
                man=$(file_bytes "$m")
                cfg=$(jq -r '.config.size' "$m")
                tree=$(jq -r '.layers[0].size' "$m")
                trace=$(jq -r '[.layers[] | select(.mediaType == "application/vnd.stasis.trace.v1") | .size] | add // 0' "$m")
                echo "$n $clen $ulen $tree $man $cfg $trace $((clen + tree + man + cfg + trace))"
        else
                echo "${n:-NA} ${clen:-NA} ${ulen:-NA} NA NA NA NA NA"
        fi
}

# pause_daemon_ticks STATE: user + system CPU ticks of the stasisd of STATE
pause_daemon_ticks() {
        local pid
        pid=$(cat "$1/stasisd.pid" 2>/dev/null) || { echo NA; return; }
        awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2>/dev/null || echo NA
}

# pause_tool RUN TOOL: measure one tool on the changed trees; one row
pause_tool() {
        local run=$1 tool=$2 p=$PAUSE_DIR o=$PAUSE_DIR/run s0 s1 bytes js="" extra="NA NA NA NA NA NA NA" dcpu=NA c0
        case $tool in
        stasis)
                s0=$(dir_bytes "$p/store")
                c0=$(pause_daemon_ticks "$o/state")
                measure "$p/store" "$STASIS" pause --json "$o/mp" >"$o/pause.json"
                s1=$(dir_bytes "$p/store")
                # the work is stasisd's: count its CPU time with the client's
                dcpu=$(awk -v a="$c0" -v b="$(pause_daemon_ticks "$o/state")" -v hz="$(getconf CLK_TCK)" \
                        'BEGIN { if (a == "NA" || b == "NA") print "NA"; else printf "%.2f", (b - a) / hz }')
                [[ $dcpu == NA || $M_CPU == NA ]] || M_CPU=$(awk -v a="$M_CPU" -v b="$dcpu" 'BEGIN { printf "%.2f", a + b }')
                bytes=$((s1 - s0))
                js=$(cat "$o/pause.json")
                extra="$(jget bytes_new <<<"$js") $(jget bytes_dirty <<<"$js") $(jget chunks_new <<<"$js") $(jget stall_ns <<<"$js") $(jget duration_ns <<<"$js") $(jget barrier_bytes <<<"$js") $(jget chunks_saved <<<"$js")"
                PAUSE_DIGEST=$(jget digest <<<"$js")
                ;;
        image)
                rm -f "$o/layer.tar.gz"
                image_layer "$p/native" "$o/changes" "$o/layer.tar.gz"
                bytes=$(file_bytes "$o/layer.tar.gz")
                ;;
        casync)
                rm -f "$o/run.caidx"
                s0=$(dir_bytes "$p/castr")
                measure "$p/castr" casync make --store="$p/castr" "$o/run.caidx" "$p/native" >/dev/null
                s1=$(dir_bytes "$p/castr")
                bytes=$((s1 - s0 + $(file_bytes "$o/run.caidx")))
                ;;
        restic)
                s0=$(dir_bytes "$p/repo")
                measure "$p/repo" env RESTIC_PASSWORD=$PAUSE_RESTIC_PW restic -r "$p/repo" --cache-dir "$p/restic-cache" \
                        backup -q --parent "$PAUSE_RESTIC_BASE" --ignore-inode --ignore-ctime "$p/native"
                s1=$(dir_bytes "$p/repo")
                bytes=$((s1 - s0))
                ;;
        esac
        # shellcheck disable=SC2086
        tsv_row "$RES/pause.tsv" "$run" "$tool" "$M_WALL" "$M_SYNC" "$M_DUR" "$M_CPU" "$M_RSS" "$bytes" "$M_RC" $extra "$dcpu" "$M_LOAD"
        log "pause run $run $tool: ${M_DUR}s, $(hb "$bytes") written"
}

# The outside writer: appends 128-byte records to ARGV[1] every millisecond,
# keeps the wall-clock ns after each successful write, writes them to ARGV[2]
# on SIGTERM (ARGV[2].ready appears after the first write).
pause_writer() {
        local w=$WORK/bin/pause-writer.py
        mkdir -p "$WORK/bin"
        cat >"$w" <<'PY'
import os, signal, sys, time
path, out = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
rec = b"r" * 127 + b"\n"
ts, errs, stop = [], 0, False
def on_term(sig, frame):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
while not stop:
    try:
        os.write(fd, rec)
        ts.append(time.time_ns())
        if len(ts) == 1:
            open(out + ".ready", "w").close()
    except OSError:
        errs += 1
    time.sleep(0.001)
with open(out, "w") as f:
    f.write("%d\n" % errs)
    f.write("\n".join(map(str, ts)))
    f.write("\n")
PY
        echo "$w"
}

# pause_stall RUN LABEL BYTES FLUSH: one checkpoint with BYTES dirty, a writer
# running. FLUSH = synced: the data was synced through the mount and the
# host's page cache flushed before (the checkpoint switches layers only);
# unsynced: left in the page cache, as a sandbox that never fsyncs leaves it
# (the checkpoint's flush, under the freeze, writes it out).
pause_stall() {
        local run=$1 label=$2 size=$3 flush=$4 p=$PAUSE_DIR o=$PAUSE_DIR/run cg="" wpid i t0 t1 rc=0 js gaps
        local mp=$o/mp lab=()
        if [[ -n $PAUSE_CG2 ]]; then
                cg=$PAUSE_CG2/stasis-bench-pause-$$
                rmdir "$cg" 2>/dev/null || true
                if mkdir "$cg" 2>/dev/null && [[ -f $cg/cgroup.freeze ]]; then
                        lab=(--label "io.stasis.freeze=cgroup:$cg")
                else
                        rmdir "$cg" 2>/dev/null || true
                        cg=""
                fi
        fi
        stasis_mount_timed "$mp" "$o/cache" "$o/state" --store "$p/store" "${lab[@]}" base
        if ((MR_RC != 0)); then
                tsv_row "$RES/pause-stall.tsv" "$run" "$label" "$flush" "$(numfmt --from=iec "$size")" NA NA NA NA NA NA NA 1 "$(cut -d' ' -f1 /proc/loadavg)" NA NA
                [[ -z $cg ]] || rmdir "$cg" 2>/dev/null || true
                return
        fi
        rm -f "$o/ts" "$o/ts.ready"
        # shellcheck disable=SC2016
        sh -c '[ -z "$1" ] || echo $$ >"$1/cgroup.procs" || exit 1; exec python3 "$2" "$3" "$4"' sh "$cg" "$PAUSE_WRITER" "$mp/writer.log" "$o/ts" &
        wpid=$!
        bench_track_pid "$wpid"
        for ((i = 0; i < 200; i++)); do [[ -f $o/ts.ready ]] && break; sleep 0.05; done
        pause_ck gen "$((run * 7 + ${#label}))" random "$(numfmt --from=iec "$size")" "$mp/dirty.bin"
        if [[ $flush == synced ]]; then
                sync -f "$mp/dirty.bin"
                sync -f "$o"
        fi
        sleep 1
        M_LOAD=$(cut -d' ' -f1 /proc/loadavg)
        t0=$(date +%s%N)
        "$STASIS" checkpoint --json "$mp" >"$o/ck.json" || rc=$?
        t1=$(date +%s%N)
        sleep 0.5
        kill -TERM "$wpid" 2>/dev/null || true
        wait "$wpid" 2>/dev/null || true
        js=$(cat "$o/ck.json")
        # gap: longest interval between two consecutive writes that overlaps the
        # checkpoint; base: longest one in the second before it (no checkpoint)
        gaps=$(awk -v t0="$t0" -v t1="$t1" 'NR == 1 { errs = $1; next }
                { if (prev != "") { d = $1 - prev
                        if ($1 > t0 && prev < t1 && d > g) g = d
                        if (prev >= t0 - 1e9 && $1 <= t0 && d > b) b = d }
                  prev = $1; n++ }
                END { printf "%.0f %.0f %d %d\n", g, b, n, errs }' "$o/ts" 2>/dev/null || echo "NA NA 0 NA")
        local gap base n errs
        read -r gap base n errs <<<"$gaps"
        tsv_row "$RES/pause-stall.tsv" "$run" "$label" "$flush" "$(numfmt --from=iec "$size")" \
                "$(jget stall_ns <<<"$js")" "$(jget duration_ns <<<"$js")" "$(jget bytes_dirty <<<"$js")" \
                "$gap" "$base" "$n" "${errs:-NA}" "$rc" "$M_LOAD" "${cg:+cgroup2}" "$(jget froze <<<"$js")"
        log "pause run $run stall $label $flush: stall_ns $(jget stall_ns <<<"$js"), writer gap $gap ns (quiet: $base ns), checkpoint $(ns2s $((t1 - t0))) s"
        bench_umount "$mp"
        bench_retire "$o/state" "$o/cache"
        [[ -z $cg ]] || rmdir "$cg" 2>/dev/null || true
}

pause_run() {
        local p=$WORK/data/pause-$MODE o run est=0 t0 seed order tool i
        PAUSE_DIR=$p o=$p/run
        pause_scale
        tsv_init "$RES/pause.tsv" run tool wall_s sync_s dur_s cpu_s rss_kb bytes_written rc \
                bytes_new bytes_dirty chunks_new stall_ns duration_ns barrier_bytes chunks_saved daemon_cpu_s load1
        tsv_init "$RES/pause-min.tsv" run chunks clen ulen tree manifest config trace min changed_entries changed_file_bytes whiteouts
        tsv_init "$RES/pause-stall.tsv" run dirty flush dirty_bytes stall_ns duration_ns bytes_dirty gap_ns quiet_gap_ns records errors rc load1 freezer froze
        if ((!HAVE_STASIS)) || [[ ! -f $p/base.json || -z ${PAUSE_RESTIC_BASE:-} ]]; then
                log "pause: skipped (no stasis binary, ckpt-tool or base)"
                return 0
        fi
        PAUSE_WRITER=$(pause_writer)
        PAUSE_CG2=$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)
        [[ -n $PAUSE_CG2 && -w $PAUSE_CG2 ]] || PAUSE_CG2=""
        local files dirs links bytes cs
        read -r files dirs _ bytes < <(tree_stats "$p/base")
        cs=$(jget chunk_size <"$p/base.json")
        tsv_init "$RES/pause-dataset.tsv" key value
        tsv_row "$RES/pause-dataset.tsv" files "$files"
        tsv_row "$RES/pause-dataset.tsv" dirs "$dirs"
        tsv_row "$RES/pause-dataset.tsv" bytes "$bytes"
        tsv_row "$RES/pause-dataset.tsv" chunk_size "$cs"
        tsv_row "$RES/pause-dataset.tsv" base_store "$(dir_bytes "$p/store")"
        tsv_row "$RES/pause-dataset.tsv" casync_base "$(dir_bytes "$p/castr") bytes in ${PAUSE_CASYNC_BASE_S} s"
        tsv_row "$RES/pause-dataset.tsv" restic_base "$(dir_bytes "$p/repo") bytes in ${PAUSE_RESTIC_BASE_S} s"
        tsv_row "$RES/pause-dataset.tsv" new "$PAUSE_NEW_N x $PAUSE_NEW_SIZE"
        tsv_row "$RES/pause-dataset.tsv" large "$(awk '{ s += $1 } END { printf "%d %.0f %.0f", NR, s, s / NR }' "$p/large.list")"
        tsv_row "$RES/pause-dataset.tsv" large_range "$(sort -n "$p/large.list" | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo, hi }')"
        tsv_row "$RES/pause-dataset.tsv" scatter "$PAUSE_SCATTER $(file_bytes "$p/base/var/lib/bench/model.bin")"
        tsv_row "$RES/pause-dataset.tsv" delete "$(file_bytes "$p/base/var/lib/bench/del.bin")"
        tsv_row "$RES/pause-dataset.tsv" dirty "$PAUSE_DIRTY_SMALL $PAUSE_DIRTY_LARGE"
        tsv_row "$RES/pause-dataset.tsv" freezer "${PAUSE_CG2:-none}"
        for ((run = 1; run <= RUNS; run++)); do
                may_start "$est" || break
                t0=$SECONDS
                seed=$((1000 + run))
                bench_retire "$o" "$p/native"
                mkdir -p "$o"
                cp -a "$p/base" "$p/native"
                # --- pause through the mount vs the peers, same change
                stasis_mount_timed "$o/mp" "$o/cache" "$o/state" --store "$p/store" base
                if ((MR_RC != 0)); then log "pause: mount failed"; break; fi
                changes_begin "$p/native" "$o/changes"
                pause_workload "$seed" "$o/mp" "$p/native" "$o"
                sync -f "$p/native"
                local ch chb wh
                read -r ch chb wh < <(changes_end "$p/native" "$o/changes")
                read -ra order <<<"$PAUSE_TOOLS"
                ((run % 2)) || read -ra order <<<"$(printf '%s\n' "${order[@]}" | tac | tr '\n' ' ')"
                PAUSE_DIGEST=""
                for tool in "${order[@]}"; do pause_tool "$run" "$tool"; done
                if [[ $PAUSE_DIGEST == sha256:* ]]; then
                        # shellcheck disable=SC2046
                        tsv_row "$RES/pause-min.tsv" "$run" $(pause_minimum "$p/native" "$o" "$PAUSE_DIGEST" "$cs") "$ch" "$chb" "$wh"
                fi
                bench_umount "$o/mp"
                bench_retire "$o/state" "$o/cache" "$o/layer.tar.gz"
                # --- the stall an outside writer sees, little vs much dirty data
                local sizes=("small $PAUSE_DIRTY_SMALL synced" "large $PAUSE_DIRTY_LARGE synced"
                        "small $PAUSE_DIRTY_SMALL unsynced" "large $PAUSE_DIRTY_LARGE unsynced") s
                ((run % 2)) || sizes=("large $PAUSE_DIRTY_LARGE unsynced" "small $PAUSE_DIRTY_SMALL unsynced"
                        "large $PAUSE_DIRTY_LARGE synced" "small $PAUSE_DIRTY_SMALL synced")
                for s in "${sizes[@]}"; do
                        # shellcheck disable=SC2086
                        pause_stall "$run" $s
                done
                est=$((SECONDS - t0))
        done
        rm -rf "$o" "$p/native"
}

# --- report -----------------------------------------------------------------
pause_ratio() { paired_ratio "$RES/pause.tsv" "$1" tool "$2" "$3" run "" | cut -f2-; }
# pause_min_ratio -> "n med min max" of stasis store growth / minimum, paired by run
pause_min_ratio() {
        awk -F'\t' 'FNR == 1 { next } FNR == NR { if ($9 != "NA" && $9 > 0) m[$1] = $9; next }
                $2 == "stasis" && $9 == 0 { g[$1] = $8 }
                END { for (r in g) if (r in m) print r "\t" g[r] / m[r] }' "$RES/pause-min.tsv" "$RES/pause.tsv" |
                sort -n | awk -F'\t' '{ a[++n] = $2 } END { if (!n) exit
                        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
                        printf "%d %.6g %.6g %.6g\n", n, (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2, a[1], a[n] }'
}
# pause_gap_ratio COL FLUSH -> "n med min max" of COL(large) / COL(small), paired by run
pause_gap_ratio() { paired_ratio "$RES/pause-stall.tsv" "$1" dirty large small "run flush" flush | awk -F'\t' -v f="$2" '$1 == f' | cut -f2-; }

pause_goal() { # NAME GOAL "n med min max" ge|le THRESHOLD
        local n med lo hi
        read -r n med lo hi <<<"$3"
        if [[ -z ${n:-} ]]; then echo "| $1 | $2 | not measured | — |"; return; fi
        echo "| $1 | $2 | $(fnum "$med")× ($(fnum "$lo")–$(fnum "$hi"), n=$n) | $(awk -v m="$med" -v t="$5" -v op="$4" 'BEGIN { ok = (op == "ge") ? m >= t : m <= t; print ok ? "yes" : "**no**" }') |"
}

pause_goals() {
        pause_goal "pause through the mount vs image-committer path" "≥ 20× faster (same run)" "$(pause_ratio dur_s image stasis)" ge 20
        pause_goal "pause: store growth vs the minimum (changed chunks compressed + tree + manifest)" "≤ 1.1×" "$(pause_min_ratio)" le 1.1
        local d
        d=$(pause_dv dirty 2>/dev/null | cut -d' ' -f2)
        [[ -z $d ]] || d=$(hb "$(numfmt --from=iec "$d")")
        pause_goal "checkpoint stall seen by an outside writer, ${d:-large} vs 1 MiB dirty, data synced before" "ratio ≤ 2" "$(pause_gap_ratio gap_ns synced)" le 2
        pause_goal "checkpoint stall seen by an outside writer, ${d:-large} vs 1 MiB dirty, data left in the page cache" "ratio ≤ 2" "$(pause_gap_ratio gap_ns unsynced)" le 2
}

pause_report() {
        local f=$RES/pause.tsv tool s
        local nl nb lo hi sc msz dirty
        read -r nl nb _ <<<"$(pause_dv large)"
        read -r lo hi <<<"$(pause_dv large_range)"
        read -r sc msz <<<"$(pause_dv scatter)"
        read -r _ dirty <<<"$(pause_dv dirty)"
        local nn nsz
        read -r nn _ nsz <<<"$(pause_dv new)"
        cat <<EOF
## 4b. Pause and checkpoint through the mount

Base: the seeded synthetic rootfs (\`gen-dataset.sh synth --seed 42 --scale $(meta mode)\`)
plus var/lib/bench/del.bin ($(hb "$(pause_dv delete)")): $(pause_dv files) files, $(pause_dv dirs) directories,
$(hb "$(pause_dv bytes)"); committed (tag base, chunk size $(hb "$(pause_dv chunk_size)")) into a fresh store
($(hb "$(pause_dv base_store)")), and copied natively (\`cp -a\`) for the peers,
whose stores hold the base first: \`casync make\` of it ($(pause_base casync_base)),
\`restic backup\` of it into a v2 repository, compression auto ($(pause_base restic_base)).
Each run, on a fresh \`stasis mount --store S base MP\` and, byte for byte,
on a fresh native copy (tests/tools/ckpt-tool applies each change to both):
$nn new files of $nsz bytes ($(hb $((nn * nsz))), half text-like, half random); one 4 KiB write
in each of the $nl largest files of the tree ($(hb "$lo")–$(hb "$hi"), $(hb "$nb") in all);
$sc scattered 4 KiB writes ($(hb $((sc * 4096)))) in model.bin ($(hb "$msz")); del.bin deleted. Then,
tools in alternating order, all with warm caches (the changes were just written):

- **stasis**: \`stasis pause --json MP\` (flush, barrier, hash and pack the
  dirty chunks, publish; blobs fsync'd); bytes = store growth.
- **image**: what image-committer (\`nerdctl commit\`) writes: every changed
  file whole + a whiteout per deleted entry, \`tar | $COMPRESS_GZ\`; bytes = the layer.
- **casync**: \`casync make --store=S run.caidx DIR\` into the chunk store
  seeded with the base (casync has no change tracking: it reads the whole
  tree); bytes = store growth + index.
- **restic**: \`restic backup --parent BASE --ignore-inode --ignore-ctime DIR\`
  (the flags because each run's tree is a fresh \`cp -a\` of the base with
  mtimes kept: without them restic would re-read every file); bytes = repo growth.

Before the first tool, the native copy's filesystem (which also holds the
writable layer) is synced, so what is left to flush is the mount's own page
cache, which the pause flushes. Every command's time includes a \`sync -f\`
of its output's filesystem.

| tool | runs | time s | CPU s (stasis: client + stasisd) | bytes written |
|---|---|---|---|---|
EOF
        for tool in $PAUSE_TOOLS; do
                s=$(stats "$f" dur_s tool "tool=$tool" rc=0 | cut -f2-)
                [[ -n $s ]] || continue
                printf '| %s | %s | %s | %s | %s |\n' "$(pause_label "$tool")" "$(cut -f1 <<<"$s")" "$(mmm "$s" 2)" \
                        "$(mmm "$(stats "$f" cpu_s tool "tool=$tool" rc=0 | cut -f2-)" 1)" \
                        "$(hb "$(stats "$f" bytes_written tool "tool=$tool" rc=0 | cut -f3)")"
        done
        local fails
        fails=$(awk -F'\t' 'NR > 1 && $9 != 0 { n++ } END { print n + 0 }' "$f")
        ((fails == 0)) || printf '\n**%d measurement(s) failed** (rc column of results/pause.tsv).\n' "$fails"
        cat <<EOF

Same-run ratios (paired by run; higher favours stasis):

| ratio | runs | time | bytes written |
|---|---|---|---|
EOF
        local peer rt rb
        for peer in image casync restic; do
                rt=$(pause_ratio dur_s "$peer" stasis)
                rb=$(pause_ratio bytes_written "$peer" stasis)
                [[ -n $rt ]] || continue
                printf '| %s / stasis pause | %s | %s× | %s× |\n' "$(pause_label "$peer")" "$(cut -f1 <<<"$rt")" "$(mmm "$rt" 2)" "$(mmm "$rb" 2)"
        done
        local mf=$RES/pause-min.tsv
        cat <<EOF

What the pause reported, and the minimum it could write: every truly
changed chunk (each new file's chunks, the one chunk of each large file's
write, the chunks of model.bin the scattered writes touched) compressed
alone as one zstd frame at the store's level $PAUSE_LEVEL (tests/tools/ckpt-tool
zsize, from the native copy: computed independently of the store), plus
the new snapshot's tree, manifest, config and access-trace blobs as stored.
The store's growth also counts the tag's entry in index.json; a ratio a
hair under 1 means the store packed a few bytes tighter than ckpt-tool's
one-frame-per-chunk estimate.

| | runs | median (min–max) |
|---|---|---|
| stasis pause time (s) | $(stats "$f" dur_s tool tool=stasis rc=0 | cut -f2) | $(mmm "$(stats "$f" dur_s tool tool=stasis rc=0 | cut -f2-)" 2) |
| stall_ns (the barrier alone: this mount has no freeze label; ms) | $(stats "$f" stall_ns tool tool=stasis rc=0 | cut -f2) | $(mmm "$(stats "$f" stall_ns tool tool=stasis rc=0 | cut -f2- | awk -F'\t' '{ printf "%s\t%s\t%s\t%s", $1, $2 / 1e6, $3 / 1e6, $4 / 1e6 }')" 1) |
| bytes_dirty | | $(hb "$(stats "$f" bytes_dirty tool tool=stasis rc=0 | cut -f3)") |
| bytes_new (as packed: compressed) | | $(hb "$(stats "$f" bytes_new tool tool=stasis rc=0 | cut -f3)") |
| chunks_new | | $(stats "$f" chunks_new tool tool=stasis rc=0 | cut -f3) |
| store growth | | $(hb "$(stats "$f" bytes_written tool tool=stasis rc=0 | cut -f3)") |
| changed chunks (count) | $(stats "$mf" chunks "" | cut -f2) | $(stats "$mf" chunks "" | cut -f3) |
| changed chunks, uncompressed | | $(hb "$(stats "$mf" ulen "" | cut -f3)") |
| changed chunks, compressed | | $(hb "$(stats "$mf" clen "" | cut -f3)") |
| tree + manifest + config + trace | | $(hb "$(stats "$mf" tree "" | cut -f3)") + $(hb "$(stats "$mf" manifest "" | cut -f3)") + $(hb "$(stats "$mf" config "" | cut -f3)") + $(hb "$(stats "$mf" trace "" | cut -f3)") |
| minimum | | $(hb "$(stats "$mf" min "" | cut -f3)") |
| **store growth / minimum** | | **$(mmm "$(pause_min_ratio)" 3)×** (goal ≤ 1.1) |
| files an overlay upper dir would hold (image path) | | $(stats "$mf" changed_entries "" | cut -f3) entries, $(hb "$(stats "$mf" changed_file_bytes "" | cut -f3)"), $(stats "$mf" whiteouts "" | cut -f3) whiteout(s) |

EOF
        pause_plot
        local sf=$RES/pause-stall.tsv
        cat <<EOF
![pause through the mount vs peers](plots/pause.png)

**Stall seen by an outside writer.** A fresh mount labelled
\`io.stasis.freeze=cgroup:CG\` (CG a child of the cgroup2 mount at $(pause_dv freezer)); a
python3 writer in CG appends a 128-byte record to a file on the mount every
millisecond and timestamps each successful write. Then $(hb "$(numfmt --from=iec "${dirty:-0}" 2>/dev/null || echo 0)") or 1 MiB
of random data is written to another file on the mount, and either
**synced** (\`sync -f\` of the mount, then of the host filesystem that holds
the writable layer: the checkpoint has only the layers to switch) or
**unsynced** (left in the page cache, as by a sandbox that never fsyncs:
the checkpoint's flush writes it out, and the freeze covers the flush);
one second later, \`stasis checkpoint --json MP\`. **Writer gap**: the
longest interval between two consecutive writes that overlaps the
checkpoint; **quiet gap**: the longest one in the second before it (the
scheduling noise of this shared 2-core machine); stall_ns is what the
checkpoint reports (freeze to thaw). The order of the four alternates by run.
The freeze holds the flush and the write barrier only: the checkpoint reads
the store's recent trees (the chunks it may reuse; 60-200 ms on this base)
and starts its flush helper before it freezes. So both sizes stall for a few
ms, and their ratio compares small numbers near the quiet gap.

| data | dirty | runs | writer gap ms | quiet gap ms | stall_ns ms | checkpoint duration s | bytes_dirty |
|---|---|---|---|---|---|---|---|
EOF
        local d fl
        ms() { stats "$sf" "$1" dirty "dirty=$2" "flush=$4" rc=0 | cut -f2- | awk -F'\t' -v k="$3" '{ printf "%s\t%s\t%s\t%s", $1, $2 / k, $3 / k, $4 / k }'; }
        for fl in synced unsynced; do
                for d in small large; do
                        s=$(stats "$sf" stall_ns dirty "dirty=$d" "flush=$fl" rc=0 | cut -f2)
                        [[ -n $s ]] || continue
                        printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$fl" "$(hb "$(stats "$sf" dirty_bytes dirty "dirty=$d" "flush=$fl" | cut -f3)")" "$s" \
                                "$(mmm "$(ms gap_ns "$d" 1e6 "$fl")" 1)" "$(mmm "$(ms quiet_gap_ns "$d" 1e6 "$fl")" 1)" \
                                "$(mmm "$(ms stall_ns "$d" 1e6 "$fl")" 1)" "$(mmm "$(ms duration_ns "$d" 1e9 "$fl")" 2)" \
                                "$(hb "$(stats "$sf" bytes_dirty dirty "dirty=$d" "flush=$fl" rc=0 | cut -f3)")"
                done
        done
        cat <<EOF

| ratio, large / small dirty (paired by run) | data | runs | median (min–max) | goal |
|---|---|---|---|---|
EOF
        local r
        for fl in synced unsynced; do
                r=$(pause_gap_ratio gap_ns "$fl")
                [[ -z $r ]] || printf '| writer gap | %s | %s | %s× | ≤ 2 |\n' "$fl" "$(cut -f1 <<<"$r")" "$(mmm "$r" 2)"
                r=$(pause_gap_ratio stall_ns "$fl")
                [[ -z $r ]] || printf '| stall_ns | %s | %s | %s× | — |\n' "$fl" "$(cut -f1 <<<"$r")" "$(mmm "$r" 2)"
        done
        cat <<EOF

Commands (S the store, MP the mount, N the native copy):

    stasis commit --store S --tag base --json BASE                      # once, untimed
    stasis mount --store S --cache C --state ST base MP                 # each run
    stasis pause --json MP
    tar --no-recursion -cf - -C N -T changed -C WH -T whiteouts | $COMPRESS_GZ >layer.tar.gz
    casync make --store=CS run.caidx N                                  # CS seeded: casync make of the base
    restic -r R backup --parent BASE --ignore-inode --ignore-ctime N    # R: restic init --repository-version 2; backup of the base
    stasis mount ... --label io.stasis.freeze=cgroup:CG base MP; stasis checkpoint --json MP

EOF
}

pause_plot() {
        command -v gnuplot >/dev/null || return 0
        local dat=$RES/pause-plot.dat tool s
        : >"$dat"
        for tool in $PAUSE_TOOLS; do
                s=$(stats "$RES/pause.tsv" dur_s tool "tool=$tool" rc=0 | cut -f3-5)
                [[ -n $s ]] || continue
                echo "\"$(pause_label "$tool" | sed 's/\\//g; s/ (/\\n(/')\" $(tr '\t' ' ' <<<"$s")" >>"$dat"
        done
        [[ -s $dat ]] || return 0
        gnuplot <<EOF
set terminal pngcairo size 800,420 font ",10"
set output "$PLOTS/pause.png"
set title "One incremental pause, same change (median, min-max bars; log scale)"
set ylabel "seconds (lower is better)"
set logscale y
set style data histogram
set style histogram errorbars gap 2 lw 1
set style fill solid 0.7 border -1
set grid ytics
set key off
set bmargin 4
set yrange [0.1:*]
plot "$dat" using 2:3:4:xtic(1)
EOF
}

pause_label() {
        case $1 in
        stasis) echo "stasis pause (through the mount)" ;;
        image) echo "image path (tar \\| $COMPRESS_GZ)" ;;
        casync) echo "casync make (seeded store)" ;;
        restic) echo "restic backup (incremental)" ;;
        esac
}
