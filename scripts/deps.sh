#!/usr/bin/env bash
# deps.sh — install the Debian 12 packages stasis needs to build, test, demo
# and benchmark, and only those that are missing.
#
# Fast path: one dpkg-query call; when nothing is missing it prints nothing
# and exits 0 (about 50 ms). Otherwise: apt-get update once, then
# apt-get install of the missing packages, non-interactively.
#
# Environment:
#   STASIS_SKIP_DEPS=1   do nothing (for machines managed some other way)
#   DEPS_VERBOSE=1       list what is already installed too
# docs/dependencies.md says why each package is here. Keep the two in sync.
set -euo pipefail

[[ ${STASIS_SKIP_DEPS:-0} == 1 ]] && exit 0

PACKAGES=(
        # toolchain and build
        build-essential cmake pkg-config
        clang clang-tidy cppcheck libclang-rt-14-dev llvm
        # libraries (headers + pkg-config files)
        libfuse3-dev liburing-dev libzstd-dev libxxhash-dev libssl-dev libcurl4-openssl-dev
        libjansson-dev libmicrohttpd-dev libarchive-dev libcriterion-dev
        # runtime tools used by tests, the demo and the benchmarks
        fuse3 zstd attr acl xxd time python3 e2fsprogs mount
        casync skopeo docker-registry runc umoci busybox-static
        git sqlite3 fio apache2-utils openssl curl jq
        squashfuse squashfs-tools erofs-utils
        gnuplot-nox pigz hyperfine restic borgbackup
)

# dpkg-query prints one line per package it knows; unknown ones only go to
# stderr. A package counts as present only when its status is "installed".
declare -A state=()
while read -r name status; do
        state[$name]=$status
done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${PACKAGES[@]}" 2>/dev/null || true)

missing=()
for p in "${PACKAGES[@]}"; do
        if [[ ${state[$p]:-} == installed ]]; then
                [[ ${DEPS_VERBOSE:-0} == 1 ]] && echo "deps: $p installed"
        else
                missing+=("$p")
        fi
done

((${#missing[@]} == 0)) && exit 0

echo "deps: installing ${#missing[@]} missing package(s): ${missing[*]}" >&2

SUDO=()
if ((EUID != 0)); then
        if command -v sudo >/dev/null 2>&1; then
                SUDO=(sudo -n)
        else
                echo "deps: not root and no sudo; install these first: ${missing[*]}" >&2
                exit 1
        fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
        echo "deps: no apt-get (stasis targets Debian 12); install these first: ${missing[*]}" >&2
        exit 1
fi

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-y -q -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=300
          -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

"${SUDO[@]}" apt-get "${APT_OPTS[@]}" update </dev/null
"${SUDO[@]}" apt-get "${APT_OPTS[@]}" install --no-install-recommends "${missing[@]}" </dev/null

# Check the result rather than trusting apt's exit code alone.
still=()
for p in "${missing[@]}"; do
        s=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
        [[ $s == installed ]] || still+=("$p")
done
if ((${#still[@]})); then
        echo "deps: still missing after apt-get install: ${still[*]}" >&2
        exit 1
fi
echo "deps: done" >&2
