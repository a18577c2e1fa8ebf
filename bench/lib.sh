# lib.sh — shared helpers of the stasis benchmark cases (sourced by run.sh).
#
# Owns: timing one command (wall ns, user/sys CPU, peak RSS, the sync that
# makes its output durable), cache control (cold = drop the guest page cache,
# warm = read the tree immediately before), per-case time budgets, raw TSV
# rows, and the statistics (median/min/max, same-run paired ratios) that the
# report prints. Plain bash + awk (mawk-compatible) + coreutils.
# shellcheck shell=bash

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

# --- data sizes -------------------------------------------------------------
# tree_stats DIR -> "files dirs symlinks bytes" (bytes = sum of regular files' st_size)
tree_stats() {
        find "$1" -printf '%y %s\n' | awk '
                $1 == "f" { f++; b += $2 } $1 == "d" { d++ } $1 == "l" { l++ }
                END { printf "%d %d %d %.0f\n", f, d, l, b }'
}
# dir_bytes DIR -> sum of st_size of the regular files under DIR (0 if absent)
dir_bytes() {
        if [[ -e $1 ]]; then
                find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f\n", s }'
        else
                echo 0
        fi
}
file_bytes() { stat -c %s "$1" 2>/dev/null || echo 0; }

# jget FIELD < flat-json -> the value of "FIELD" (number, string or null); NA if absent
jget() {
        awk -v k="$1" '
                { buf = buf $0 }
                END {
                        p = index(buf, "\"" k "\"")
                        if (!p) { print "NA"; exit }
                        s = substr(buf, p + length(k) + 2)
                        sub(/^[ \t\r\n]*:[ \t\r\n]*/, "", s)
                        if (substr(s, 1, 1) == "\"") { s = substr(s, 2); sub(/".*/, "", s) }
                        else sub(/[ \t\r\n,}\]].*/, "", s)
                        print s
                }'
}

# --- cache control ----------------------------------------------------------
CAN_DROP=unknown
drop_caches() {
        sync
        if [[ -w /proc/sys/vm/drop_caches ]] && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
                CAN_DROP=yes
        else
                CAN_DROP=no
        fi
}
# warm DIR: read every byte of every file (through cat: tar skips the data when
# it writes to /dev/null) and every inode, immediately before a warm figure.
warm() { tar -C "$1" -cf - . 2>/dev/null | cat >/dev/null; }
# set_cache cold|warm DIR
set_cache() {
        sync
        case $1 in
        cold) drop_caches ;;
        warm) warm "$2" ;;
        esac
}

# --- time budgets -----------------------------------------------------------
# budget_start SECONDS: the running case may start new work until then.
budget_start() { CASE_T0=$SECONDS CASE_DEADLINE=$((SECONDS + $1)) CASE_CUT=0; }
budget_left() { echo $((CASE_DEADLINE - SECONDS)); }
# may_start EST_SECONDS: 0 if a step of about EST seconds still fits
may_start() {
        if (($(budget_left) >= ${1:-0})); then return 0; fi
        CASE_CUT=1
        return 1
}
# Hard limit for one measured command: what is left of the budget, at least 60 s,
# so that a hung command cannot eat the whole run.
cmd_limit() { local l; l=$(budget_left); echo $((l > 60 ? l : 60)); }

# --- measuring --------------------------------------------------------------
# measure SYNC_PATH CMD...: runs CMD under /usr/bin/time, then syncs the
# filesystem that holds SYNC_PATH (the output must be durable, as a pause's is;
# stasis fsyncs its own blobs, the peers do not). Sets:
#   M_RC M_WALL (s, the command) M_SYNC (s, the sync after it) M_DUR (s, both)
#   M_USER M_SYS M_CPU (s, the command and its children) M_RSS (KiB, peak)
#   M_LOAD (1-minute load average just before: other work on the machine)
# M_SYNC_ALSO, if set, is a second path whose filesystem is synced after
# SYNC_PATH's: a FUSE mount's `sync -f` sends its dirty pages to the daemon
# but makes nothing durable (the kernel sends FUSE_SYNCFS to virtiofs only),
# so a stasis mount's is its state dir.
M_TIMEFILE=
M_SYNC_ALSO=
measure() {
        local sync_path=$1 t0 t1 t2
        shift
        M_TIMEFILE=${M_TIMEFILE:-$(mktemp "${TMPDIR:-/tmp}/bench-time.XXXXXX")}
        : >"$M_TIMEFILE"
        M_LOAD=$(cut -d' ' -f1 /proc/loadavg)
        t0=$(date +%s%N)
        M_RC=0
        timeout -k 10 "$(cmd_limit)" /usr/bin/time -f '%U %S %M' -o "$M_TIMEFILE" "$@" || M_RC=$?
        t1=$(date +%s%N)
        sync -f "$sync_path" 2>/dev/null || sync
        [[ -z $M_SYNC_ALSO ]] || sync -f "$M_SYNC_ALSO" 2>/dev/null || sync
        t2=$(date +%s%N)
        read -r M_USER M_SYS M_RSS < <(tail -n 1 "$M_TIMEFILE" | awk 'NF == 3 { print; next } { print "NA NA NA" }')
        M_WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
        M_SYNC=$(awk -v a="$t1" -v b="$t2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
        M_DUR=$(awk -v a="$t0" -v b="$t2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
        M_CPU=$(awk -v u="$M_USER" -v s="$M_SYS" 'BEGIN { if (u == "NA") print "NA"; else printf "%.2f", u + s }')
        if ((M_RC != 0)); then
                log "command failed (exit $M_RC): $*"
        fi
        return 0
}

# --- raw data ---------------------------------------------------------------
# tsv_init FILE COL...: (re)create FILE with a header row
tsv_init() { local f=$1; shift; (IFS=$'\t'; echo "$*") >"$f"; }
# tsv_row FILE VAL...
tsv_row() { local f=$1; shift; (IFS=$'\t'; echo "$*") >>"$f"; }

# --- statistics (for the report) --------------------------------------------
# stats TSV VALCOL "GROUPCOL..." [FILTER_COL=VALUE...]
#   -> per group, in first-seen order: group values, n, median, min, max (TSV)
stats() {
        local tsv=$1 val=$2 groups=$3
        shift 3
        awk -F'\t' -v val="$val" -v groups="$groups" -v filters="$*" '
                NR == 1 {
                        for (i = 1; i <= NF; i++) col[$i] = i
                        ng = split(groups, g, " ")
                        nf = split(filters, fl, " ")
                        for (j = 1; j <= nf; j++) { split(fl[j], kv, "="); fk[j] = kv[1]; fv[j] = kv[2] }
                        next
                }
                {
                        for (j = 1; j <= nf; j++) if ($(col[fk[j]]) != fv[j]) next
                        v = $(col[val]); if (v == "" || v == "NA") next
                        k = ""; for (j = 1; j <= ng; j++) k = k (j > 1 ? "\t" : "") $(col[g[j]])
                        if (!(k in n)) { order[++nk] = k; n[k] = 0 }
                        x[k, ++n[k]] = v + 0
                }
                END {
                        for (o = 1; o <= nk; o++) {
                                k = order[o]; m = n[k]
                                for (i = 1; i <= m; i++) a[i] = x[k, i]
                                for (i = 2; i <= m; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
                                med = (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
                                printf "%s\t%d\t%.6g\t%.6g\t%.6g\n", k, m, med, a[1], a[m]
                        }
                }' "$tsv"
}

# paired_ratio TSV VALCOL TOOLCOL NUM DEN "PAIRCOL..." "GROUPCOL..."
#   For every pair (same values of PAIRCOLs, e.g. cache+run), ratio VAL(NUM)/VAL(DEN);
#   then per group: group values, n, median, min, max of those ratios.
paired_ratio() {
        local tsv=$1 val=$2 toolcol=$3 num=$4 den=$5 pairs=$6 groups=$7
        awk -F'\t' -v val="$val" -v toolcol="$toolcol" -v num="$num" -v den="$den" -v pairs="$pairs" -v groups="$groups" '
                NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; np = split(pairs, p, " "); ng = split(groups, g, " "); next }
                {
                        v = $(col[val]); if (v == "" || v == "NA") next
                        t = $(col[toolcol]); if (t != num && t != den) next
                        pk = ""; for (j = 1; j <= np; j++) pk = pk SUBSEP $(col[p[j]])
                        gk = ""; for (j = 1; j <= ng; j++) gk = gk (j > 1 ? "\t" : "") $(col[g[j]])
                        if (t == num) nv[pk] = v; else dv[pk] = v
                        grp[pk] = gk
                }
                END {
                        for (pk in nv) if ((pk in dv) && dv[pk] + 0 != 0) {
                                k = grp[pk]
                                if (!(k in n)) { order[++nk] = k; n[k] = 0 }
                                x[k, ++n[k]] = nv[pk] / dv[pk]
                        }
                        for (o = 1; o <= nk; o++) {
                                k = order[o]; m = n[k]
                                for (i = 1; i <= m; i++) a[i] = x[k, i]
                                for (i = 2; i <= m; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
                                med = (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
                                printf "%s\t%d\t%.6g\t%.6g\t%.6g\n", k, m, med, a[1], a[m]
                        }
                }' "$tsv" | sort
}

# --- formatting -------------------------------------------------------------
# hb BYTES -> "1.23 GiB" etc.
hb() {
        awk -v b="$1" 'BEGIN {
                if (b == "NA" || b == "") { print "n/a"; exit }
                split("B KiB MiB GiB TiB", u, " "); i = 1; neg = b < 0; if (neg) b = -b
                while (b >= 1024 && i < 5) { b /= 1024; i++ }
                printf "%s%s %s\n", neg ? "-" : "", (i == 1 ? sprintf("%d", b) : sprintf("%.2f", b)), u[i]
        }'
}
# f2 NUMBER [DECIMALS]
fnum() { awk -v x="$1" -v d="${2:-2}" 'BEGIN { if (x == "NA" || x == "") print "n/a"; else printf "%.*f\n", d, x }'; }
# mmm "n med min max" DECIMALS -> "med (min–max)"
mmm() {
        local n med lo hi
        read -r n med lo hi <<<"$1"
        [[ -n ${n:-} ]] || { echo "n/a"; return; }
        printf '%s (%s–%s)' "$(fnum "$med" "${2:-2}")" "$(fnum "$lo" "${2:-2}")" "$(fnum "$hi" "${2:-2}")"
}

# --- the image-committer path (what `nerdctl commit` does on a pause) -------
# changes_begin TREE STATE: remember the tree's entries and a time mark.
changes_begin() {
        local tree=$1 st=$2
        mkdir -p "$st"
        (cd "$tree" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort) >"$st/before"
        : >"$st/mark"
        sleep 0.05 # timestamps are jiffy-grained: keep the mark strictly older
}
# changes_end TREE STATE: what changed since changes_begin, as an overlayfs
# upper dir would hold it: every entry whose ctime moved (a file written is
# copied up whole) -> STATE/changed; every deleted entry, outermost only, as
# an empty ".wh.NAME" whiteout under STATE/wh -> STATE/whiteouts.
# Prints "changed_entries changed_file_bytes whiteouts".
changes_end() {
        local tree=$1 st=$2 p
        (cd "$tree" && find . -mindepth 1 -cnewer "$st/mark" -printf '%P\n' | LC_ALL=C sort) >"$st/changed"
        (cd "$tree" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort) >"$st/after"
        LC_ALL=C comm -23 "$st/before" "$st/after" | awk '
                {
                        n = split($0, part, "/"); pre = ""
                        for (k = 1; k < n; k++) { pre = (k > 1 ? pre "/" : "") part[k]; if (pre in gone) next }
                        gone[$0] = 1; print
                }' >"$st/deleted"
        rm -rf "$st/wh"
        mkdir -p "$st/wh"
        : >"$st/whiteouts"
        while IFS= read -r p; do
                local d=${p%/*} b=${p##*/}
                [[ $p == */* ]] || d=.
                mkdir -p "$st/wh/$d"
                : >"$st/wh/$d/.wh.$b"
                echo "$d/.wh.$b" >>"$st/whiteouts"
        done <"$st/deleted"
        local bytes
        bytes=$(cd "$tree" && tr '\n' '\0' <"$st/changed" | xargs -0 -r stat -c '%F %s' -- |
                awk '$1 == "regular" { s += $NF } END { printf "%.0f", s }')
        echo "$(wc -l <"$st/changed") ${bytes:-0} $(wc -l <"$st/whiteouts")"
}
# image_layer TREE STATE OUT: measure tar of the changed entries (whole files)
# plus whiteouts, gzip-compressed (pigz when present), as image-committer does.
image_layer() {
        measure "$(dirname "$3")" bash -c 'set -o pipefail
                tar --no-recursion -cf - -C "$1" -T "$2/changed" -C "$2/wh" -T "$2/whiteouts" | "$3" >"$4"' \
                image-layer "$1" "$2" "$COMPRESS_GZ" "$3"
}

# --- timers, mounts and servers of the resume/read/write/registry cases ------
# benchio ARGS...: bench/tools/benchio.c (built once into the work dir): the
# millisecond-precise timers (fork+exec+wait, first byte, read/stat walks).
benchio() {
        local bin=$WORK/bin/benchio src=$HERE/tools/benchio.c
        if [[ ! -x $bin || $src -nt $bin ]]; then
                mkdir -p "$WORK/bin"
                ${CC:-cc} -O2 -std=gnu17 -Wall -o "$bin.tmp" "$src" || die "cannot build $src"
                mv "$bin.tmp" "$bin"
        fi
        "$bin" "$@"
}
# ns2s NS -> seconds with 6 decimals
ns2s() { awk -v n="$1" 'BEGIN { if (n == "" || n == "NA") print "NA"; else printf "%.6f", n / 1e9 }'; }

# Mounts and servers a case started: undone by bench_teardown (run.sh's exit
# trap), newest first, each by its own mountpoint or pid.
BENCH_MOUNTS=() BENCH_PIDS=()
bench_track_mount() { BENCH_MOUNTS+=("$1"); }
bench_track_pid() { BENCH_PIDS+=("$1"); }
is_mountpoint() { awk -v m="$(realpath -m "$1")" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; }
# bench_umount MP: stasis umount for a stasis mount, else umount (fuse or kernel)
bench_umount() {
        local mp=$1
        is_mountpoint "$mp" || return 0
        if awk -v m="$(realpath -m "$mp")" '$5 == m && / - fuse\.stasis /' /proc/self/mountinfo | grep -q .; then
                "$STASIS" umount "$mp" >/dev/null 2>&1 || "$STASIS" umount --lazy "$mp" >/dev/null 2>&1 || true
        elif awk -v m="$(realpath -m "$mp")" '$5 == m && / - fuse/' /proc/self/mountinfo | grep -q .; then
                fusermount3 -u "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
        else
                umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
        fi
}
bench_teardown() {
        local i
        for ((i = ${#BENCH_MOUNTS[@]} - 1; i >= 0; i--)); do bench_umount "${BENCH_MOUNTS[$i]}"; done
        for i in "${BENCH_PIDS[@]}"; do
                kill "$i" 2>/dev/null || true
                wait "$i" 2>/dev/null || true
        done
        BENCH_MOUNTS=() BENCH_PIDS=()
}

# stasis_mount_timed MP CACHE STATE ARGS...: fresh empty CACHE and STATE, then
# `stasis mount --cache CACHE --state STATE ARGS... MP`, timed by benchio
# (it returns only when reads work). Sets MR_S (seconds) and MR_RC.
# bench_retire PATH...: set what a timed step left (a node cache, a state
# dir, an extracted tree) aside under $WORK/out/retired rather than delete
# it between timed steps; run.sh deletes them when the case ends. Deleting
# a gigabyte of small files on this disk (discard-mounted ext4 without a
# journal) goes on in the host after rm returns and slowed the next step
# 2-4x (bench/README.md).
BENCH_RETIRED=0
bench_retire() {
        local r=$WORK/out/retired/$((++BENCH_RETIRED)) p
        mkdir -p "$r"
        for p in "$@"; do
                if [[ -e $p ]]; then mv "$p" "$r/"; fi
        done
        return 0
}
stasis_mount_timed() {
        local mp=$1 cache=$2 state=$3 out
        shift 3
        rm -rf "$cache" "$state"
        mkdir -p "$cache" "$state" "$mp"
        bench_track_mount "$mp"
        out=$(benchio run "$STASIS" mount --cache "$cache" --state "$state" "$@" "$mp" 2>/dev/null)
        MR_RC=${out#* }
        MR_S=$(ns2s "${out%% *}")
        ((MR_RC == 0)) || log "stasis mount $* $mp failed (exit $MR_RC)"
}
# daemon_hwm_kb STATE: peak RSS (VmHWM) of the stasisd whose pid is in STATE
daemon_hwm_kb() {
        local pid
        pid=$(cat "$1/stasisd.pid" 2>/dev/null) || { echo NA; return; }
        awk '/^VmHWM:/ { print $2; f = 1 } END { if (!f) print "NA" }' "/proc/$pid/status" 2>/dev/null || echo NA
}
# first_file DIR: a fixed file for first-byte figures: the first (sorted) regular
# file of 1-8 MiB, else the largest file
first_file() {
        local f
        f=$(cd "$1" && find . -type f -size +1024k -size -8193k -printf '%P\n' | LC_ALL=C sort | head -n 1)
        [[ -n $f ]] || f=$(cd "$1" && find . -type f -printf '%s %P\n' | sort -rn | head -n 1 | cut -d' ' -f2-)
        echo "$f"
}
# inode_count DIR: distinct inodes under DIR (a hardlink group counts once)
inode_count() { find "$1" -printf '%i\n' | sort -u | wc -l; }

# registry_start DIR: Debian's docker-registry on 127.0.0.1 and a free port,
# data under DIR. Sets REG_HOST and REG_PID (tracked for teardown).
registry_start() {
        local dir=$1 port i
        mkdir -p "$dir/data"
        port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        REG_HOST=127.0.0.1:$port
        cat >"$dir/config.yml" <<CFG
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: $REG_HOST
  secret: stasis-bench-secret
CFG
        docker-registry serve "$dir/config.yml" >>"$dir/log" 2>&1 &
        REG_PID=$!
        bench_track_pid "$REG_PID"
        for ((i = 0; i < 200; i++)); do
                curl -s -o /dev/null "http://$REG_HOST/v2/" 2>/dev/null && return 0
                kill -0 "$REG_PID" 2>/dev/null || break
                sleep 0.05
        done
        cat "$dir/log" >&2
        die "docker-registry did not start on $REG_HOST"
}
