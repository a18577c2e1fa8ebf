# 50-resume.sh — case "resume": resuming a snapshot from the local store and
# reading through the mount, against unpacking it and against the read-only
# filesystems users would pick instead.
#
# On the real tree of the commit case (full: the ~1.2 GB copy of /usr dirs),
# committed once into a store, and the same tree as an uncompressed tar and a
# zstd squashfs image (made once, untimed); its large files (every regular
# file of >= 8 MiB, else the 10 largest; sorted by path) are listed once, for
# the warm sequential read. Each run:
#   stasis      `stasis mount` with an empty node cache (ready = until the
#               command returns; it returns only when reads work), the first
#               byte of a fixed 1-8 MiB file, a cold read of every file (chunks
#               come from the store's packs), a warm stat of every entry, a
#               warm read of every file (per-file open cost: one FUSE OPEN and
#               RELEASE per file, the bytes come from the page cache),
#               stasisd's VmHWM with the tree walked, then a warm sequential
#               read of the large files
#   tarx        `tar -xf tree.tar` into an empty dir + sync (what a resume
#               that unpacks costs)
#   native      the tree itself: first byte, cold read, warm stat, warm read
#               of every file, warm sequential read of the large files (after
#               reading them once, untimed)
#   squashfuse  mount, first byte, cold read of the squashfs image
#   squashfs    the kernel's squashfs on a loop device, if loop mounts work
# Programs (stasis, stasisd, tar, squashfuse) are loaded again right after
# the drop (warm_programs): what a resume finds cold is the data.
# Cold = guest page cache dropped before the step (drop_caches); the host
# may still cache the virtual disk. Order of the tools alternates per run.
# Goals (issue 4, point 6): ready <= 50 ms and >= 100x faster than tar -x;
# warm sequential read (the large files) >= 90% of native; cold read >= 1.0x
# squashfuse; warm stat of every file <= 1.5x native; stasisd peak RSS <=
# 50 MB + 100 B per inode. The warm read of every file has no goal.
# shellcheck shell=bash

CASES+=(resume)
CASE_TITLE[resume]="resume and read path"
BUDGET_quick[resume]=40
BUDGET_full[resume]=200

resume_prepare() {
        commit_prepare
        local data=$WORK/data/real-$MODE p=$WORK/data/resume-$MODE
        if [[ -f $p/ok ]]; then
                [[ -f $p/seq.list ]] || resume_seq_list "$data" "$p/seq.list"
                return 0
        fi
        rm -rf "$p"
        mkdir -p "$p"
        ((HAVE_STASIS)) && { "$STASIS" commit --store "$p/store" --tag resume --json "$data" >"$p/commit.json" || die "resume: commit failed"; }
        log "resume: tar and squashfs images of the real tree"
        tar -C "$data" -cf "$p/tree.tar" .
        mksquashfs "$data" "$p/tree.sqfs" -comp zstd -Xcompression-level 3 -quiet -noappend -no-progress >/dev/null
        resume_seq_list "$data" "$p/seq.list"
        touch "$p/ok"
}

# resume_seq_list DIR LIST: the files of the warm sequential read, as paths
# relative to DIR, each ended by a NUL, sorted by path: every regular file of
# at least 8 MiB; if there is none, the 10 largest files.
resume_seq_list() {
        local data=$1 list=$2
        (cd "$data" && find . -type f -size +8388607c -printf '%P\0' | LC_ALL=C sort -z) >"$list.tmp"
        if [[ ! -s $list.tmp ]]; then
                (cd "$data" && find . -type f -printf '%s %P\0' | LC_ALL=C sort -z -k1,1nr | head -z -n 10 |
                        sed -z 's/^[0-9]* //' | LC_ALL=C sort -z) >"$list.tmp"
                echo "10 largest files" >"$list.rule"
        else
                echo "files ≥ 8 MiB" >"$list.rule"
        fi
        mv "$list.tmp" "$list"
}

# resume_row RUN TOOL READY FIRST COLD WARM STAT HWM [FETCHED] [RC] [SEQ]
#   WARM: the warm read of every file; SEQ: the warm sequential read of the
#   large files (seconds). warm_seq_mb_s is the last column so that the
#   columns before it keep their positions (the memory case reads them).
resume_row() {
        local mbc mbw mbs
        mbc=$(awk -v b="$RESUME_BYTES" -v t="$5" 'BEGIN { if (t == "NA" || t == 0) print "NA"; else printf "%.1f", b / t / 1e6 }')
        mbw=$(awk -v b="$RESUME_BYTES" -v t="$6" 'BEGIN { if (t == "NA" || t == 0) print "NA"; else printf "%.1f", b / t / 1e6 }')
        mbs=$(awk -v b="$RESUME_SEQ_BYTES" -v t="${11:-NA}" 'BEGIN { if (t == "NA" || t == 0) print "NA"; else printf "%.1f", b / t / 1e6 }')
        tsv_row "$RES/resume.tsv" "$1" "$2" "$3" "$4" "$5" "$mbc" "$6" "$mbw" "$7" "$8" "${9:-NA}" "${10:-0}" "$(cut -d' ' -f1 /proc/loadavg)" "$mbs"
        log "resume run $1 $2: ready $3 s, first byte $4 s, cold read $5 s ($mbc MB/s), warm (every file) $6 s, stat $7 s, hwm $8 KiB, warm sequential ${11:-NA} s ($mbs MB/s)"
}

# read_walk PATH -> seconds (NA on failure); checks the byte count
read_walk() {
        local out b ns
        out=$(benchio read "$1") || { echo NA; return; }
        read -r b ns _ <<<"$out"
        if [[ $b != "$RESUME_BYTES" ]]; then log "read of $1: $b bytes, expected $RESUME_BYTES"; echo NA; return; fi
        ns2s "$ns"
}
# seq_read DIR -> seconds (NA on failure): the files of seq.list under DIR,
# in list order, 1 MiB reads; checks the byte count. The median of
# RESUME_SEQ_N reads: one warm read of ~0.5 GB takes 70-180 ms here, and a
# single one varied 2x from the next.
RESUME_SEQ_N=5
seq_read() {
        local out b ns k all=()
        for ((k = 0; k < RESUME_SEQ_N; k++)); do
                out=$(benchio readlist "$1" <"$WORK/data/resume-$MODE/seq.list") || { echo NA; return; }
                read -r b ns _ <<<"$out"
                if [[ $b != "$RESUME_SEQ_BYTES" ]]; then log "sequential read under $1: $b bytes, expected $RESUME_SEQ_BYTES"; echo NA; return; fi
                all+=("$ns")
        done
        ns2s "$(printf '%s\n' "${all[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')"
}
stat_walk() { local out; out=$(benchio stat "$1") || { echo NA; return; }; ns2s "${out#* }"; }
first_byte() { local out; out=$(benchio first "$1" 2>/dev/null) || { echo NA; return; }; ns2s "$out"; }

# warm_programs TOOL...: load the programs (and their libraries) into the
# page cache after a drop_caches: a node that resumes sandboxes runs them
# all the time; what a resume finds cold is the snapshot's data.
warm_programs() {
        local t
        for t in "$@"; do
                case $t in
                stasis) "$STASIS" --version ;;
                stasisd) "$(dirname "$STASIS")/stasisd" --help ;;
                tar) tar --version ;;
                squashfuse) squashfuse --help ;;
                esac
        done >/dev/null 2>&1 || true
}

resume_stasis() {
        local run=$1 o=$WORK/out/resume p=$WORK/data/resume-$MODE mp ready first cold warm st hwm fetched errors seq
        mp=$o/mp
        bench_retire "$o/cache" "$o/state"
        drop_caches
        warm_programs stasis stasisd
        stasis_mount_timed "$mp" "$o/cache" "$o/state" --store "$p/store" resume
        ready=$MR_S
        if ((MR_RC != 0)); then resume_row "$run" stasis NA NA NA NA NA NA NA 1; return; fi
        first=$(first_byte "$mp/$RESUME_FILE")
        cold=$(read_walk "$mp")
        stat_walk "$mp" >/dev/null
        st=$(stat_walk "$mp")
        warm=$(read_walk "$mp")
        hwm=$(daemon_hwm_kb "$o/state")
        local js
        js=$("$STASIS" status --json "$mp" 2>/dev/null || true)
        fetched=$(jget bytes_fetched <<<"$js")
        errors=$(jget errors <<<"$js")
        seq=$(seq_read "$mp")
        bench_umount "$mp"
        resume_row "$run" stasis "$ready" "$first" "$cold" "$warm" "$st" "$hwm" "$fetched" "${errors:-NA}" "$seq"
}

resume_tarx() {
        local run=$1 o=$WORK/out/resume p=$WORK/data/resume-$MODE
        bench_retire "$o/x"
        mkdir -p "$o/x"
        drop_caches
        warm_programs tar
        measure "$o" tar -C "$o/x" -xf "$p/tree.tar"
        local t=NA
        ((M_RC == 0)) && t=$M_DUR
        bench_retire "$o/x"
        resume_row "$run" tarx "$t" NA NA NA NA NA NA "$M_RC"
}

resume_native() {
        local run=$1 data=$WORK/data/real-$MODE first cold warm st seq
        drop_caches
        first=$(first_byte "$data/$RESUME_FILE")
        drop_caches
        cold=$(read_walk "$data")
        stat_walk "$data" >/dev/null
        st=$(stat_walk "$data")
        warm=$(read_walk "$data")
        seq_read "$data" >/dev/null
        seq=$(seq_read "$data")
        resume_row "$run" native NA "$first" "$cold" "$warm" "$st" NA NA 0 "$seq"
}

# resume_ro RUN squashfuse|squashfs: mount the image (timed), first byte, cold read
resume_ro() {
        local run=$1 tool=$2 o=$WORK/out/resume p=$WORK/data/resume-$MODE mp out ready rc first cold
        mp=$o/ro
        mkdir -p "$mp"
        bench_track_mount "$mp"
        drop_caches
        warm_programs squashfuse
        if [[ $tool == squashfuse ]]; then
                out=$(benchio run squashfuse "$p/tree.sqfs" "$mp" 2>/dev/null)
        else
                out=$(benchio run mount -t squashfs -o loop,ro "$p/tree.sqfs" "$mp" 2>/dev/null)
        fi
        rc=${out#* }
        ready=$(ns2s "${out%% *}")
        if ((rc != 0)); then resume_row "$run" "$tool" NA NA NA NA NA NA NA 1; return; fi
        first=$(first_byte "$mp/$RESUME_FILE")
        cold=$(read_walk "$mp")
        bench_umount "$mp"
        resume_row "$run" "$tool" "$ready" "$first" "$cold" NA NA NA
}

resume_run() {
        local data=$WORK/data/real-$MODE p=$WORK/data/resume-$MODE f=$RES/resume.tsv
        local files dirs links
        read -r files dirs links RESUME_BYTES < <(tree_stats "$data")
        RESUME_FILE=$(first_file "$data")
        tsv_init "$RES/resume-dataset.tsv" key value
        tsv_row "$RES/resume-dataset.tsv" source "$(cat "$data.src")"
        tsv_row "$RES/resume-dataset.tsv" files "$files"
        tsv_row "$RES/resume-dataset.tsv" dirs "$dirs"
        tsv_row "$RES/resume-dataset.tsv" symlinks "$links"
        tsv_row "$RES/resume-dataset.tsv" bytes "$RESUME_BYTES"
        tsv_row "$RES/resume-dataset.tsv" inodes "$(inode_count "$data")"
        tsv_row "$RES/resume-dataset.tsv" first_file "$RESUME_FILE ($(file_bytes "$data/$RESUME_FILE") bytes)"
        local seq_files
        read -r seq_files RESUME_SEQ_BYTES < <(cd "$data" && xargs -0 -r stat -c %s -- <"$p/seq.list" |
                awk '{ n++; s += $1 } END { printf "%d %.0f\n", n, s }')
        tsv_row "$RES/resume-dataset.tsv" seq_rule "$(cat "$p/seq.list.rule")"
        tsv_row "$RES/resume-dataset.tsv" seq_files "$seq_files"
        tsv_row "$RES/resume-dataset.tsv" seq_bytes "$RESUME_SEQ_BYTES"
        tsv_row "$RES/resume-dataset.tsv" tar_bytes "$(file_bytes "$p/tree.tar")"
        tsv_row "$RES/resume-dataset.tsv" sqfs_bytes "$(file_bytes "$p/tree.sqfs")"
        tsv_row "$RES/resume-dataset.tsv" store_bytes "$(dir_bytes "$p/store")"
        tsv_row "$RES/resume-dataset.tsv" chunk_size "$(jget chunk_size <"$p/commit.json" 2>/dev/null || echo NA)"
        # Does the kernel mount a squashfs image on a loop device here?
        local kq=yes
        mkdir -p "$WORK/out/resume/probe"
        if mount -t squashfs -o loop,ro "$p/tree.sqfs" "$WORK/out/resume/probe" 2>"$WORK/out/resume/probe.err"; then
                umount "$WORK/out/resume/probe"
        else
                kq="no ($(head -n 1 "$WORK/out/resume/probe.err"))"
        fi
        tsv_row "$RES/resume-dataset.tsv" kernel_squashfs "$kq"
        tsv_init "$f" run tool ready_s first_s cold_s cold_mb_s warm_s warm_mb_s stat_s hwm_kb bytes_fetched rc load1 warm_seq_mb_s
        local tools=(stasis tarx native squashfuse) run est=0 t0 i n tool
        ((HAVE_STASIS)) || tools=("${tools[@]:1}")
        [[ $kq == yes ]] && tools+=(squashfs)
        n=${#tools[@]}
        for ((run = 1; run <= RUNS; run++)); do
                may_start "$est" || break
                t0=$SECONDS
                for ((i = 0; i < n; i++)); do
                        tool=${tools[$(((run % 2) ? i : n - 1 - i))]}
                        case $tool in
                        stasis) resume_stasis "$run" ;;
                        tarx) resume_tarx "$run" ;;
                        native) resume_native "$run" ;;
                        squashfuse | squashfs) resume_ro "$run" "$tool" ;;
                        esac
                done
                est=$((SECONDS - t0))
        done
        rm -rf "$WORK/out/resume"
}

resume_label() {
        case $1 in
        stasis) echo "stasis mount" ;;
        tarx) echo "tar -x (uncompressed tar)" ;;
        native) echo "native dir (ext4)" ;;
        squashfuse) echo "squashfuse (zstd)" ;;
        squashfs) echo "kernel squashfs, loop (zstd)" ;;
        esac
}

# resume_has COL: does resume.tsv have column COL? (results from before
# warm_seq_mb_s was added lack it; their report shows it as not measured)
resume_has() { head -n 1 "$RES/resume.tsv" | tr '\t' '\n' | grep -qxF "$1"; }
# resume_stats COL TOOL -> "n med min max" of COL for TOOL's rc=0 rows (empty if none)
resume_stats() { resume_has "$1" || return 0; stats "$RES/resume.tsv" "$1" tool "tool=$2" rc=0 | cut -f2-; }
# resume_ratio COL NUM DEN -> "n med min max" of VAL(NUM)/VAL(DEN) paired by run
resume_ratio() { resume_has "$1" || return 0; paired_ratio "$RES/resume.tsv" "$1" tool "$2" "$3" run "" | cut -f2-; }
# goal_line CASE GOAL "n med min max" OP THRESHOLD [SUFFIX]
goal_line() {
        local name=$1 goal=$2 r=$3 op=$4 th=$5 sfx=${6:-×} n med lo hi
        read -r n med lo hi <<<"$r"
        if [[ -z ${n:-} ]]; then echo "| $name | $goal | not measured | — |"; return; fi
        echo "| $name | $goal | $(fnum "$med")$sfx ($(fnum "$lo")–$(fnum "$hi"), n=$n) | $(awk -v m="$med" -v t="$th" -v op="$op" 'BEGIN { ok = (op == "ge") ? m >= t : m <= t; print ok ? "yes" : "**no**" }') |"
}
resume_dv() { awk -F'\t' -v k="$1" '$1 == k { print $2 }' "$RES/resume-dataset.tsv"; }
# resume_seq_what: which files the warm sequential read reads ("files ≥ 8 MiB")
resume_seq_what() { local r; r=$(resume_dv seq_rule); echo "${r:-files ≥ 8 MiB}"; }

resume_goals() {
        local f=$RES/resume.tsv s r inodes limit
        s=$(stats "$f" ready_s tool tool=stasis rc=0 | cut -f2-)
        if [[ -n $s ]]; then
                read -r n med lo hi <<<"$s"
                echo "| resume: mount-ready | ≤ 50 ms | $(fnum "$(awk -v x="$med" 'BEGIN { print x * 1000 }')" 1) ms ($(fnum "$(awk -v x="$lo" 'BEGIN { print x * 1000 }')" 1)–$(fnum "$(awk -v x="$hi" 'BEGIN { print x * 1000 }')" 1), n=$n) | $(awk -v m="$med" 'BEGIN { print m <= 0.05 ? "yes" : "**no**" }') |"
        fi
        goal_line "resume: mount-ready vs tar -x" "≥ 100× faster" "$(resume_ratio ready_s tarx stasis)" ge 100
        goal_line "read path: warm sequential read ($(resume_seq_what))" "≥ 0.90× native throughput" "$(resume_ratio warm_seq_mb_s stasis native)" ge 0.9
        goal_line "read path: cold read from the local store" "≥ 1.0× squashfuse throughput" "$(resume_ratio cold_mb_s stasis squashfuse)" ge 1.0
        goal_line "read path: warm stat of every entry" "≤ 1.5× native time" "$(resume_ratio stat_s stasis native)" le 1.5
        inodes=$(resume_dv inodes)
        limit=$(awk -v i="$inodes" 'BEGIN { printf "%.0f", (50e6 + 100 * i) / 1024 }')
        s=$(stats "$f" hwm_kb tool tool=stasis rc=0 | cut -f2-)
        if [[ -n $s ]]; then
                read -r n med lo hi <<<"$s"
                echo "| memory: stasisd peak RSS, tree walked ($inodes inodes) | ≤ 50 MB + 100 B/inode = $(hb $((limit * 1024))) | $(hb "$(awk -v x="$med" 'BEGIN { printf "%.0f", x * 1024 }')") ($(hb $((${lo%.*} * 1024)))–$(hb $((${hi%.*} * 1024))), n=$n) | $(awk -v m="$med" -v l="$limit" 'BEGIN { print m <= l ? "yes" : "**no**" }') |"
        fi
}

resume_report() {
        local f=$RES/resume.tsv tool s
        cat <<EOF
## 5. Resume and read path (local store)

Dataset: the commit case's tree, \`$(resume_dv source)\`: $(resume_dv files) files, $(resume_dv dirs)
directories, $(resume_dv symlinks) symlinks, $(resume_dv inodes) inodes, $(hb "$(resume_dv bytes)") of file data; committed
once (chunk size $(hb "$(resume_dv chunk_size)"); store $(hb "$(resume_dv store_bytes)")), and made once,
untimed, into an uncompressed tar ($(hb "$(resume_dv tar_bytes)")) and a zstd-3 squashfs image
($(hb "$(resume_dv sqfs_bytes)")). Kernel squashfs on a loop device here: $(resume_dv kernel_squashfs).$(
                [[ -z $(resume_dv seq_files) ]] || printf '\nWarm sequential read: the tree'"'"'s %s, sorted by path (listed once): %s files,\n%s.' \
                        "$(resume_seq_what)" "$(resume_dv seq_files)" "$(hb "$(resume_dv seq_bytes)")")
erofs is not measured (no erofs figure in the goals; left for later).

Each run, tools in alternating order: **ready** is from the start of the
mount (or \`tar -x\`) command to its return (\`stasis mount\` returns only when
reads work; \`tar -x\` time includes the sync); **first byte** is open + one
1-byte read of \`$(resume_dv first_file)\` right after the mount, with an
empty node cache and the guest page cache dropped; **cold read** reads every
file through 1 MiB reads (bench/tools/benchio.c; directory order) right
after that, so every chunk is decompressed from the store's packs; **warm
stat** is an lstat of every entry after one untimed walk; **warm read of
every file** reads every file again right after; **warm sequential read**
reads the dataset's large files, in list order, in 1 MiB reads (\`benchio
readlist\`): through the mount after those walks, on the native dir after
reading them once, untimed; the median of ${RESUME_SEQ_N} such reads per run. "Cold" drops only the guest's page cache: the
virtual disk may be cached by the host. The programs (stasis, stasisd, tar,
squashfuse) are loaded once right after the drop, untimed: a node that
resumes sandboxes has them in memory; the snapshot's data is what is cold.

The two warm figures measure different things. The warm read of every file
($(resume_dv files) files, most of them small) is per-file open cost, not
read throughput: the page cache serves the bytes, but every file costs FUSE
round trips that native reads do not pay: an OPEN when it is opened (a
filesystem with a writable layer cannot skip it) and a RELEASE when it is
closed, and a GETATTR, because under writeback cache the kernel marks
st_blocks stale at every close() (so the walk's lstat asks again). It has no
goal. The warm sequential read opens few, large files, so it measures read
throughput through the mount: the figure issue 4's goal (≥ 0.90× native)
names.

| tool | runs | ready ms | first byte ms | cold read MB/s | warm read of every file MB/s | warm sequential read MB/s | warm stat ms | peak RSS |
|---|---|---|---|---|---|---|---|---|
EOF
        ms() { local s=$1 n med lo hi; read -r n med lo hi <<<"$s"; [[ -n ${n:-} ]] || { echo "—"; return; }; printf '%s (%s–%s)' "$(fnum "$(awk -v x="$med" 'BEGIN { print x * 1000 }')" 1)" "$(fnum "$(awk -v x="$lo" 'BEGIN { print x * 1000 }')" 1)" "$(fnum "$(awk -v x="$hi" 'BEGIN { print x * 1000 }')" 1)"; }
        or_dash() { [[ -n $1 ]] && mmm "$1" "$2" || echo "—"; }
        for tool in stasis tarx native squashfuse squashfs; do
                s=$(stats "$f" run tool "tool=$tool" | cut -f2)
                [[ -n $s ]] || continue
                local hw
                hw=$(stats "$f" hwm_kb tool "tool=$tool" rc=0 | cut -f3)
                printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(resume_label "$tool")" "$s" \
                        "$(ms "$(stats "$f" ready_s tool "tool=$tool" rc=0 | cut -f2-)")" \
                        "$(ms "$(stats "$f" first_s tool "tool=$tool" rc=0 | cut -f2-)")" \
                        "$(or_dash "$(stats "$f" cold_mb_s tool "tool=$tool" rc=0 | cut -f2-)" 0)" \
                        "$(or_dash "$(stats "$f" warm_mb_s tool "tool=$tool" rc=0 | cut -f2-)" 0)" \
                        "$(or_dash "$(resume_stats warm_seq_mb_s "$tool")" 0)" \
                        "$(ms "$(stats "$f" stat_s tool "tool=$tool" rc=0 | cut -f2-)")" \
                        "$([[ -n $hw ]] && hb "$(awk -v x="$hw" 'BEGIN { printf "%.0f", x * 1024 }')" || echo "—")"
        done
        local fails
        fails=$(awk -F'\t' 'NR > 1 && $12 != 0 { n++ } END { print n + 0 }' "$f")
        ((fails == 0)) || printf '\n**%d measurement(s) failed** (rc column of results/resume.tsv).\n' "$fails"
        cat <<EOF

Same-run ratios (paired by run):

| ratio | runs | median (min–max) | goal |
|---|---|---|---|
EOF
        ratio_row() { local r; r=$(resume_ratio "$2" "$3" "$4"); [[ -n $r ]] || return 0; printf '| %s | %s | %s× | %s |\n' "$1" "$(cut -d$'\t' -f1 <<<"$r")" "$(mmm "$r" 2)" "$5"; }
        ratio_row "tar -x time / stasis mount-ready" ready_s tarx stasis "≥ 100×"
        ratio_row "stasis / native, warm sequential read ($(resume_seq_what))" warm_seq_mb_s stasis native "≥ 0.90×"
        ratio_row "stasis / native, warm read of every file (per-file open cost)" warm_mb_s stasis native "—"
        ratio_row "stasis / squashfuse, cold read throughput" cold_mb_s stasis squashfuse "≥ 1.0×"
        ratio_row "stasis / kernel squashfs, cold read throughput" cold_mb_s stasis squashfs "—"
        ratio_row "stasis / native, cold read throughput" cold_mb_s stasis native "—"
        ratio_row "stasis / native, warm stat time" stat_s stasis native "≤ 1.5×"
        ratio_row "stasis / squashfuse, first byte time" first_s stasis squashfuse "—"
        ratio_row "stasis / native, first byte time" first_s stasis native "—"
        resume_plot
        cat <<EOF

![resume and read path](plots/resume.png)

Commands (S the store, C an empty cache dir, MP a mountpoint):

    stasis mount --cache C --state STATE --store S resume MP     # ready
    benchio first MP/FILE; benchio read MP; benchio stat MP (x2); benchio read MP
    benchio readlist MP <seq.list        # the large files; native: twice, the first untimed
    tar -C EMPTY -xf tree.tar; sync -f EMPTY
    squashfuse tree.sqfs MP  |  mount -t squashfs -o loop,ro tree.sqfs MP
    mksquashfs DIR tree.sqfs -comp zstd -Xcompression-level 3   # once, untimed

stasisd's peak RSS is VmHWM from /proc/PID/status (PID from the state
dir's stasisd.pid) after both read walks (before the sequential read).

EOF
}

resume_plot() {
        command -v gnuplot >/dev/null || return 0
        local dat=$RES/resume-plot.dat tool s1 s2
        : >"$dat"
        for tool in stasis native squashfuse squashfs; do
                s1=$(stats "$RES/resume.tsv" cold_mb_s tool "tool=$tool" rc=0 | cut -f3-5)
                [[ -n $s1 ]] || continue
                s2=$(stats "$RES/resume.tsv" warm_mb_s tool "tool=$tool" rc=0 | cut -f3-5)
                [[ -n $s2 ]] || s2="0 0 0"
                echo "\"$(resume_label "$tool")\" $(tr '\t' ' ' <<<"$s1") $(tr '\t' ' ' <<<"$s2")" >>"$dat"
        done
        [[ -s $dat ]] || return 0
        gnuplot <<EOF
set terminal pngcairo size 800,450 font ",10"
set output "$PLOTS/resume.png"
set title "Read of every file, $(awk -F'\t' '$1 == "bytes" { printf "%.2f GB", $2 / 1e9 }' "$RES/resume-dataset.tsv") (median, min-max bars)"
set ylabel "MB/s (higher is better)"
set style data histogram
set style histogram errorbars gap 2 lw 1
set style fill solid 0.7 border -1
set yrange [0:*]
set grid ytics
set key top right
plot "$dat" using 2:3:4:xtic(1) title "cold (empty cache)", "" using 5:6:7 title "warm (per-file open cost)"
EOF
}
