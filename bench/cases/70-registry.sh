# 70-registry.sh — case "registry": resuming from an OCI registry, lazily,
# against what a kubelet pull costs.
#
# Debian's docker-registry on 127.0.0.1 (one per bench run). The whole sweep
# tree is committed and `stasis push`ed once, and made once into a one-layer
# tar+gzip OCI image with umoci (the import case's) that skopeo copies to the
# same registry. Each run, order alternating:
#   stasis  `stasis mount --insecure oci://HOST/bench/stasis:r` with an empty
#           node cache: ready, then the first byte of a fixed file, then a
#           read of every file (all data comes over HTTP Range GETs)
#   image   `skopeo copy docker://HOST/bench/image:t oci:D:t` (the pull) then
#           `tar -xzf LAYER` into an empty dir + sync (the unpack): the tree
#           is usable only after both; then a read of every file
# Goal (issue 7, point 6): reported same-run against the image path (the
# issue sets the comparison, not a number; DESIGN.md: resume O(metadata)).
# shellcheck shell=bash

CASES+=(registry)
CASE_TITLE[registry]="resume from a registry"
BUDGET_quick[registry]=20
BUDGET_full[registry]=120

# image_build SRC LAYOUT: SRC as a one-layer tar+gzip OCI image, tag "t",
# made once: umoci new, unpack, copy the tree into the bundle's rootfs,
# repack. (Not `umoci insert SRC /`: its layer has an entry named "/", which
# stasis import refuses as an absolute path.)
image_build() {
        local src=$1 img=$2
        [[ -f $img.ok ]] && return 0
        log "image: umoci layout of $src"
        rm -rf "$img" "$img.bundle"
        umoci init --layout "$img" >/dev/null
        umoci new --image "$img:t" >/dev/null
        umoci unpack --image "$img:t" "$img.bundle" >/dev/null || die "umoci unpack failed"
        cp -a "$src/." "$img.bundle/rootfs/"
        umoci repack --image "$img:t" "$img.bundle" >/dev/null || die "umoci repack failed"
        rm -rf "$img.bundle"
        touch "$img.ok"
}
# image_prepare: the sweep tree as an image, for the import case. Sets IMG.
image_prepare() {
        chunksize_prepare
        IMG=$WORK/data/image-$MODE
        image_build "$WORK/data/sweep-$MODE" "$IMG"
}

# The registry's tree: the whole sweep tree (the import case's image is the
# same tree), about 30,000 files, most of them small. A lazy read of each
# small file used to cost one registry round trip (about 200 files/s), so
# this case read only usr/sbin and var/lib/bench; a miss now reads a span of
# the pack (fs/read.c), and the whole tree fits the budget.
registry_prepare() {
        image_prepare
        local p=$WORK/data/registry-$MODE t=$WORK/data/sweep-$MODE
        REGIMG=$IMG
        ((HAVE_STASIS)) || return 0
        # a kept store of another tree (--keep across a change of dataset) is remade
        [[ -f $p/commit.json && $(cat "$p.src" 2>/dev/null) == "the whole sweep tree" ]] && return 0
        rm -rf "$p"
        mkdir -p "$p"
        "$STASIS" commit --store "$p/store" --tag r --json "$t" >"$p/commit.json" || die "registry: commit failed"
        echo "the whole sweep tree" >"$p.src"
}

registry_row() { # RUN TOOL READY FIRST FULL PULL UNPACK READ FETCHED RC
        tsv_row "$RES/registry.tsv" "$@" "$(cut -d' ' -f1 /proc/loadavg)"
        log "registry run $1 $2: ready $3 s, first byte at $4 s, everything read at $5 s"
}

registry_stasis() {
        local run=$1 o=$WORK/out/registry mp ready first rd out b ns fetched
        mp=$o/mp
        bench_retire "$o/cache" "$o/state"
        drop_caches
        stasis_mount_timed "$mp" "$o/cache" "$o/state" --insecure "oci://$REG_HOST/bench/stasis:r"
        ready=$MR_S
        if ((MR_RC != 0)); then registry_row "$run" stasis NA NA NA NA NA NA NA 1 NA; return; fi
        first=$(first_byte "$mp/$REG_FILE")
        out=$(benchio read "$mp") || out="NA NA"
        read -r b ns _ <<<"$out"
        rd=$(ns2s "$ns")
        [[ $b == "$REG_BYTES" ]] || { log "registry: read $b bytes, expected $REG_BYTES"; rd=NA; }
        fetched=$(jget bytes_fetched <<<"$("$STASIS" status --json "$mp" 2>/dev/null || true)")
        REG_HWM=$(daemon_hwm_kb "$o/state")
        bench_umount "$mp"
        registry_row "$run" stasis "$ready" \
                "$(awk -v a="$ready" -v b="$first" 'BEGIN { if (b == "NA") print "NA"; else printf "%.6f", a + b }')" \
                "$(awk -v a="$ready" -v b="$rd" 'BEGIN { if (b == "NA") print "NA"; else printf "%.6f", a + b }')" \
                NA NA "$rd" "$fetched" 0 "$REG_HWM"
}

registry_image() {
        local run=$1 o=$WORK/out/registry pull unpack out b ns rd layer
        bench_retire "$o/pulled" "$o/x"
        mkdir -p "$o/x"
        drop_caches
        measure "$o" skopeo copy --quiet --src-tls-verify=false "docker://$REG_HOST/bench/image:t" "oci:$o/pulled:t"
        pull=$M_DUR
        ((M_RC == 0)) || { registry_row "$run" image NA NA NA NA NA NA NA 1 NA; return; }
        layer=$(jq -r '.manifests[0].digest' "$o/pulled/index.json" | cut -d: -f2)
        layer=$(jq -r '.layers[0].digest' "$o/pulled/blobs/sha256/$layer" | cut -d: -f2)
        measure "$o" tar -C "$o/x" -xzf "$o/pulled/blobs/sha256/$layer"
        unpack=$M_DUR
        ((M_RC == 0)) || { registry_row "$run" image NA NA NA "$pull" NA NA NA 1 NA; return; }
        out=$(benchio read "$o/x") || out="NA NA"
        read -r b ns _ <<<"$out"
        rd=$(ns2s "$ns")
        local ready
        ready=$(awk -v a="$pull" -v b="$unpack" 'BEGIN { printf "%.6f", a + b }')
        registry_row "$run" image "$ready" "$ready" \
                "$(awk -v a="$ready" -v b="$rd" 'BEGIN { if (b == "NA") print "NA"; else printf "%.6f", a + b }')" \
                "$pull" "$unpack" "$rd" NA 0 NA
        bench_retire "$o/pulled" "$o/x"
}

registry_run() {
        local f=$RES/registry.tsv p=$WORK/data/registry-$MODE data=$WORK/data/sweep-$MODE o=$WORK/out/registry
        local files dirs links
        read -r files dirs links REG_BYTES < <(tree_stats "$data")
        REG_FILE=$(first_file "$data")
        tsv_init "$f" run tool ready_s first_s full_s pull_s unpack_s read_s bytes_fetched rc hwm_kb load1
        rm -rf "$o"
        mkdir -p "$o"
        registry_start "$o/registry"
        local d=$RES/registry-dataset.tsv
        tsv_init "$d" key value
        tsv_row "$d" source "the whole sweep tree"
        tsv_row "$d" files "$files"
        tsv_row "$d" bytes "$REG_BYTES"
        tsv_row "$d" first_file "$REG_FILE ($(file_bytes "$data/$REG_FILE") bytes)"
        # once, untimed by the budget but recorded: the uploads
        local t0
        if ((HAVE_STASIS)); then
                t0=$(date +%s%N)
                "$STASIS" push --store "$p/store" --insecure r "oci://$REG_HOST/bench/stasis:r" >/dev/null || die "registry: stasis push failed"
                tsv_row "$d" stasis_push_s "$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')"
                tsv_row "$d" stasis_bytes "$(dir_bytes "$p/store")"
        fi
        t0=$(date +%s%N)
        skopeo copy --quiet --dest-tls-verify=false "oci:$WORK/data/image-$MODE:t" "docker://$REG_HOST/bench/image:t" || die "registry: skopeo copy to the registry failed"
        tsv_row "$d" image_push_s "$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')"
        tsv_row "$d" image_bytes "$(dir_bytes "$WORK/data/image-$MODE/blobs")"
        local tools=(stasis image) run est=0 i n
        ((HAVE_STASIS)) || tools=(image)
        n=${#tools[@]}
        for ((run = 1; run <= RUNS; run++)); do
                may_start "$est" || break
                t0=$SECONDS
                for ((i = 0; i < n; i++)); do
                        case ${tools[$(((i + run - 1) % n))]} in
                        stasis) registry_stasis "$run" ;;
                        image) registry_image "$run" ;;
                        esac
                done
                est=$((SECONDS - t0))
        done
        bench_teardown
        rm -rf "$o"
}

registry_ratio() { paired_ratio "$RES/registry.tsv" "$1" tool "$2" "$3" run "" | cut -f2-; }

registry_goals() {
        local r
        for col in ready_s first_s full_s; do
                r=$(registry_ratio "$col" image stasis)
                local what
                case $col in ready_s) what="ready" ;; first_s) what="first byte" ;; full_s) what="every file read" ;; esac
                [[ -n $r ]] || { echo "| registry resume: $what | faster than skopeo copy + tar -x | not measured | — |"; continue; }
                echo "| registry resume: $what | faster than skopeo copy + tar -x (same run) | image path / stasis = $(mmm "$r" 2)× (n=$(cut -f1 <<<"$r")) | $(awk -v m="$(cut -f2 <<<"$r")" 'BEGIN { print (m > 1) ? "yes" : "**no**" }') |"
        done
}

registry_report() {
        local f=$RES/registry.tsv d=$RES/registry-dataset.tsv tool
        dv() { awk -F'\t' -v k="$1" '$1 == k { print $2 }' "$d"; }
        cat <<EOF
## 7. Resume from a registry

Dataset: \`$(dv source)\`: $(dv files) files, $(hb "$(dv bytes)"). How stasis
reads it lazily (fs/read.c): a READ that misses reads a span of its pack,
the chunks after it, which are mostly the files after it in the tree (a
commit packs in walk order): 256 KiB first, doubling to 4 MiB while misses
follow the last span. A file read sequentially is read ahead 16 MiB, by 4
threads, in coalesced Range GETs of up to 4 MiB. Before spans, each small
file cost one round trip (about 200 files/s), and this case could read only
the tree's usr/sbin and var/lib/bench within its budget.
Registry: Debian's docker-registry (distribution) on 127.0.0.1, plain HTTP,
filesystem storage on the same disk, so the network is loopback: a real
registry adds latency per request, which costs the lazy path (many Range
GETs) more than the pull (few large GETs). Uploaded once per bench run:
\`stasis push\` of the snapshot ($(hb "$(dv stasis_bytes)"), $(dv stasis_push_s) s) and
\`skopeo copy\` of a one-layer tar+gzip OCI image of the same tree made with
\`umoci repack\` ($(hb "$(dv image_bytes)"), $(dv image_push_s) s).

Each run, order alternating, guest page cache dropped first: **stasis**
mounts \`oci://HOST/bench/stasis:r\` with an empty node cache (ready), reads
the first byte of \`$(dv first_file)\`, then every file; **image** pulls
the image with \`skopeo copy\` to an OCI layout and unpacks its layer with
\`tar -xzf\` (+ sync): the tree is usable only then; then every file is read.
Columns are seconds from the start of the resume.

| path | runs | ready s | first byte at s | every file read at s | pull s | unpack s | read s | fetched |
|---|---|---|---|---|---|---|---|---|
EOF
        for tool in stasis image; do
                local n
                n=$(stats "$f" run tool "tool=$tool" rc=0 | cut -f2)
                [[ -n $n ]] || continue
                mm() { local s; s=$(stats "$f" "$1" tool "tool=$tool" rc=0 | cut -f2-); [[ -n $s ]] && mmm "$s" 3 || echo "—"; }
                printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
                        "$([[ $tool == stasis ]] && echo "stasis mount oci://" || echo "skopeo copy + tar -xzf")" "$n" \
                        "$(mm ready_s)" "$(mm first_s)" "$(mm full_s)" "$(mm pull_s)" "$(mm unpack_s)" "$(mm read_s)" \
                        "$(v=$(stats "$f" bytes_fetched tool "tool=$tool" rc=0 | cut -f3); [[ -n $v ]] && hb "$v" || echo "—")"
        done
        cat <<EOF

Same-run ratios (image path time / stasis time, paired by run; > 1 means stasis is faster):

| figure | runs | median (min–max) |
|---|---|---|
EOF
        local col r
        for col in ready_s first_s full_s; do
                r=$(registry_ratio "$col" image stasis)
                [[ -n $r ]] || continue
                printf '| %s | %s | %s× |\n' "$col" "$(cut -f1 <<<"$r")" "$(mmm "$r" 2)"
        done
        cat <<EOF

Commands:

    stasis push --store S --insecure r oci://HOST/bench/stasis:r            # once
    stasis mount --insecure --cache EMPTY --state ST oci://HOST/bench/stasis:r MP
    benchio first MP/FILE; benchio read MP
    skopeo copy --src-tls-verify=false docker://HOST/bench/image:t oci:D:t
    tar -C EMPTY -xzf D/blobs/sha256/LAYER; sync -f EMPTY; benchio read EMPTY

EOF
}
