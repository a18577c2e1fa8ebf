#!/usr/bin/env bash
# gen-dataset.sh — deterministic datasets and agent-session workloads for the
# stasis benchmarks.
#
#   gen-dataset.sh real  DEST [--scale quick|sweep|full] [--src "DIR..."]
#       a copy of a real tree (directories of this machine's /usr), hardlinks,
#       xattrs and times kept. Not byte-identical across machines: the report
#       records its file count and bytes.
#   gen-dataset.sh synth DEST [--scale quick|full] [--seed N] [--files N]
#       "rootfs-synth": a seeded synthetic rootfs (size buckets measured on a
#       Debian /usr, text/binary/incompressible content, 3% duplicate files,
#       5% symlinks) plus the large files below. Same seed, same bytes.
#   gen-dataset.sh large DEST [--scale quick|full] [--seed N]
#       adds var/lib/bench/model.bin (bin-like) and var/lib/bench/main.db
#       (database pages) to any tree: the targets of the in-place workloads.
#   gen-dataset.sh workload NAME DIR [--scale quick|full] [--seed N] [--undo U]
#       applies one agent-session workload to DIR:
#         pip     thousands of small files in a new venv (opt/venv-SEED)
#         edits   4 KiB writes at scattered offsets in model.bin + a few small
#                 text files appended to
#         db      database-style 4 KiB page writes all over main.db + a new WAL
#         delete  ~3% of the files, and the oldest venv if there are two or more
#         mix     one "generation": a third of pip, edits, db, delete 1%
#       With --undo U (edits only) it saves what it overwrites to U, and
#       `workload unedits DIR --undo U` puts it back bit-exact.
#
# Scale (BENCH_SCALE or --scale) sets the sizes; docs in bench/README.md.
# Needs: bash, coreutils, findutils, cc (to build bench/tools/benchgen once).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=${BENCH_WORK:-/var/tmp/stasis-bench}

# --- the scales -------------------------------------------------------------
# Real trees: lists of directories, copied with their paths. Missing ones are
# skipped (the report shows what was copied).
REAL_full="/usr/bin /usr/sbin /usr/libexec /usr/include /usr/lib/gcc /usr/lib/python3.11 /usr/share/doc /usr/share/man /usr/share/locale"
REAL_quick="/usr/share/man /usr/sbin /usr/lib/python3.11"
REAL_sweep="/usr/include /usr/share/man /usr/sbin"
REAL_sweepquick="/usr/share/man /usr/sbin"

scale_params() { # sets the size knobs for scale $1
        case $1 in
        quick)
                SYNTH_FILES=2500 MODEL_SIZE=32M DB_SIZE=16M PIP_FILES=1000
                EDIT_WRITES=100 DB_WRITES=300 WAL_SIZE=2M DELETE_PERMILLE=30 ;;
        full | sweep)
                SYNTH_FILES=20000 MODEL_SIZE=256M DB_SIZE=128M PIP_FILES=3000
                EDIT_WRITES=100 DB_WRITES=1000 WAL_SIZE=8M DELETE_PERMILLE=30 ;;
        *) die "unknown scale '$1' (quick, sweep, full)" ;;
        esac
}

die() { echo "gen-dataset: $*" >&2; exit 1; }

benchgen() {
        local bin=$WORK/bin/benchgen src=$HERE/tools/benchgen.c
        if [[ ! -x $bin || $src -nt $bin ]]; then
                mkdir -p "$WORK/bin"
                ${CC:-cc} -O2 -std=gnu17 -Wall -o "$bin.tmp" "$src" -lm || die "cannot build $src"
                mv "$bin.tmp" "$bin"
        fi
        "$bin" "$@"
}

# --- datasets ---------------------------------------------------------------
gen_real() { # DEST SCALE SRC
        local dest=$1 scale=$2 src=${3:-}
        if [[ -z $src ]]; then
                local v=REAL_$scale
                src=${!v:-}
                [[ -n $src ]] || die "no real tree list for scale $scale"
        fi
        local have=() d
        for d in $src; do
                if [[ -d $d ]]; then have+=("$d"); else echo "gen-dataset: skipping missing $d" >&2; fi
        done
        ((${#have[@]})) || die "none of '$src' exists"
        rm -rf "$dest"
        mkdir -p "$dest"
        # One cp so hardlinks between the listed trees stay hardlinks. Relative
        # paths from /: cp 9.1 --parents fails on absolute sources with -a.
        dest=$(realpath -m "$dest")
        (cd / && cp -a --parents "${have[@]#/}" "$dest"/)
        echo "${have[*]}" >"$dest.src"
}

gen_large() { # DEST SCALE SEED
        local dest=$1 seed=$3
        scale_params "$2"
        mkdir -p "$dest/var/lib/bench"
        benchgen file "$seed" "$dest/var/lib/bench/model.bin" "$MODEL_SIZE" bin
        benchgen file "$((seed + 1))" "$dest/var/lib/bench/main.db" "$DB_SIZE" db
}

gen_synth() { # DEST SCALE SEED FILES
        local dest=$1 scale=$2 seed=$3 files=${4:-}
        scale_params "$scale"
        rm -rf "$dest"
        mkdir -p "$dest"
        benchgen tree "$seed" "$dest" "${files:-$SYNTH_FILES}" >/dev/null
        gen_large "$dest" "$scale" "$seed"
}

# --- workloads --------------------------------------------------------------
small_text_files() { # DIR SEED N: N small text files picked by seed (sorted, deterministic)
        (cd "$1" && find . -type f -size -64k \( -name '*.txt' -o -name '*.h' -o -name '*.conf' -o -name '*.py' \) \
                -not -path './var/lib/bench/*' | LC_ALL=C sort | benchgen pick "$2" 50 | head -n "$3")
}

wl_pip() { # DIR SEED FILES
        rm -rf "$1/opt/venv-$2"
        mkdir -p "$1/opt/venv-$2"
        benchgen pip "$2" "$1/opt/venv-$2" "$3" >/dev/null
}

wl_edits() { # DIR SEED UNDO
        local dir=$1 seed=$2 undo=${3:-} f i=0
        [[ -z $undo ]] || undo=$(realpath -m "$undo")
        [[ -f $dir/var/lib/bench/model.bin ]] || die "$dir has no var/lib/bench/model.bin (gen-dataset.sh large)"
        if [[ -n $undo ]]; then
                rm -rf "$undo"
                mkdir -p "$undo/files"
                benchgen scatter "$seed" "$dir/var/lib/bench/model.bin" "$EDIT_WRITES" 4096 "$undo/model.undo"
        else
                benchgen scatter "$seed" "$dir/var/lib/bench/model.bin" "$EDIT_WRITES" 4096
        fi
        while IFS= read -r f; do
                [[ -z $undo ]] || (cd "$dir" && cp -a --parents "$f" "$undo/files/")
                printf 'edited by workload seed %s line %d\n' "$seed" "$i" >>"$dir/$f"
                i=$((i + 1))
        done < <(small_text_files "$dir" "$seed" 5)
        [[ -z $undo ]] || printf '%s\n' "$seed" >"$undo/seed"
}

wl_unedits() { # DIR UNDO
        local dir=$1 undo=$2
        [[ -f $undo/seed ]] || die "$undo is not an edits undo directory"
        benchgen unscatter "$(cat "$undo/seed")" "$dir/var/lib/bench/model.bin" "$EDIT_WRITES" 4096 "$undo/model.undo"
        cp -a "$undo/files/." "$dir/"
        rm -rf "$undo"
}

wl_db() { # DIR SEED
        [[ -f $1/var/lib/bench/main.db ]] || die "$1 has no var/lib/bench/main.db (gen-dataset.sh large)"
        benchgen scatter "$2" "$1/var/lib/bench/main.db" "$DB_WRITES" 4096
        benchgen file "$2" "$1/var/lib/bench/main.db-wal" "$WAL_SIZE" db
}

wl_delete() { # DIR SEED PERMILLE
        local dir=$1
        (cd "$dir" && find . -type f -not -path './var/lib/bench/*' | LC_ALL=C sort |
                benchgen pick "$2" "$3" | tr '\n' '\0' | xargs -0 -r rm -f)
        # "pip uninstall" of the oldest venv, when there is more than one
        local venvs
        venvs=$(cd "$dir" && { ls -d opt/venv-* 2>/dev/null || true; } | LC_ALL=C sort -t- -k2,2n)
        if (($(printf '%s' "$venvs" | grep -c .) > 1)); then rm -rf "${dir:?}/$(head -n 1 <<<"$venvs")"; fi
}

workload() { # NAME DIR SCALE SEED UNDO
        local name=$1 dir=$2 seed=$4 undo=${5:-}
        scale_params "$3"
        [[ -d $dir ]] || die "no directory $dir"
        case $name in
        pip) wl_pip "$dir" "$seed" "$PIP_FILES" ;;
        edits) wl_edits "$dir" "$seed" "$undo" ;;
        unedits) wl_unedits "$dir" "$undo" ;;
        db) wl_db "$dir" "$seed" ;;
        delete) wl_delete "$dir" "$seed" "$DELETE_PERMILLE" ;;
        mix)
                wl_pip "$dir" "$seed" "$((PIP_FILES / 3))"
                wl_edits "$dir" "$seed" ""
                wl_db "$dir" "$seed"
                wl_delete "$dir" "$seed" 10 ;;
        *) die "unknown workload '$name' (pip, edits, unedits, db, delete, mix)" ;;
        esac
}

main() {
        (($# >= 2)) || { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
        local cmd=$1 scale=${BENCH_SCALE:-quick} seed=${BENCH_SEED:-42} src="" files="" undo=""
        shift
        local args=()
        while (($#)); do
                case $1 in
                --scale) scale=$2; shift 2 ;;
                --seed) seed=$2; shift 2 ;;
                --src) src=$2; shift 2 ;;
                --files) files=$2; shift 2 ;;
                --undo) undo=$2; shift 2 ;;
                -*) die "unknown option $1" ;;
                *) args+=("$1"); shift ;;
                esac
        done
        case $cmd in
        real) ((${#args[@]} == 1)) || die "usage: real DEST"; gen_real "${args[0]}" "$scale" "$src" ;;
        synth) ((${#args[@]} == 1)) || die "usage: synth DEST"; gen_synth "${args[0]}" "$scale" "$seed" "$files" ;;
        large) ((${#args[@]} == 1)) || die "usage: large DEST"; gen_large "${args[0]}" "$scale" "$seed" ;;
        workload) ((${#args[@]} == 2)) || die "usage: workload NAME DIR"
                workload "${args[0]}" "${args[1]}" "$scale" "$seed" "$undo" ;;
        *) die "unknown command '$cmd'" ;;
        esac
}

# Sourced by run.sh for its functions; run directly as a command.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
