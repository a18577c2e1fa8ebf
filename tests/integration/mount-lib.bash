# mount-lib.bash — helpers for the mount-*.sh tests, sourced after lib.sh.
# (Named .bash so that ctest's *.sh glob does not run it as a test.)
#
# Every mount lives under $T, registers in $T/run (STASIS_RUN_DIR) and is
# unmounted on exit, before lib.sh removes $T: never rm -rf a live mount.

((EUID == 0)) || skip "needs root (FUSE allow_other mounts, umount2)"
[[ -c /dev/fuse ]] || skip "needs /dev/fuse"
need jq fusermount3

# Until tools/stasis.c wires `stasis mount` in, these tests cannot run.
if [[ $("$STASIS" mount --help 2>&1 || true) == *"not available yet"* ]]; then
        skip "stasis mount is not wired into the CLI yet (tools/stasis.c command table)"
fi
[[ -x ${STASISD:-$(dirname "$STASIS")/stasisd} ]] || fail "no stasisd next to $STASIS (or \$STASISD)"

export STASIS_RUN_DIR=$T/run
MOUNTS=()
TMPFS=()
CLEANUP=() # commands run on exit after the stasis mounts, last first

# is_mounted MP: a stasis FUSE mount sits on MP (/proc/self/mountinfo).
is_mounted() {
        awk -v m="$(realpath -m "$1")" '$5 == m && / - fuse\.stasis / {f = 1} END {exit !f}' /proc/self/mountinfo
}

_mount_on_exit() {
        local rc=$? m i
        for m in "${MOUNTS[@]}"; do
                if is_mounted "$m"; then
                        "$STASIS" umount --lazy "$m" >/dev/null 2>&1 || umount -l "$m" 2>/dev/null || true
                fi
        done
        for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do
                eval "${CLEANUP[i]}" >/dev/null 2>&1 || true
        done
        for m in "${TMPFS[@]}"; do
                umount -l "$m" 2>/dev/null || true
        done
        # A sanitizer build's daemon reports into its log file, not to us.
        if ((rc == 0)) && grep -l "Sanitizer" "$T"/run/state/*/stasisd.log "$T"/state*/stasisd.log >/dev/null 2>&1; then
                echo "$TEST_NAME: FAIL: a sanitizer report in a stasisd log" >&2
                rc=1
        fi
        # Dump the daemons' logs of a failed test.
        if ((rc != 0 && rc != 77)); then
                for f in "$T"/run/state/*/stasisd.log "$T"/state*/stasisd.log; do
                        [[ -f $f ]] && { echo "--- $f" >&2; tail -60 "$f" >&2; }
                done
        fi
        # _on_exit reads the status from $?; under set -e a failing
        # "(exit $rc)" alone would end the trap before it runs.
        if ((rc == 0)); then
                _on_exit
        else
                (exit $rc) || _on_exit
        fi
}
trap _mount_on_exit EXIT

# tmpfs_dir DIR SIZE: a tmpfs of SIZE on DIR (a disk that fills in a few
# MiB), unmounted on exit after the stasis mounts.
tmpfs_dir() {
        mkdir -p "$1"
        mount -t tmpfs -o "size=$2,mode=0700" tmpfs "$1" || skip "cannot mount a tmpfs"
        TMPFS+=("$(realpath "$1")")
}

# crash_base STORE: the base tree the crash writer (wl_crash_writer.py)
# works on, base/big (3 MiB + 777 random bytes), base/small and 24 files
# base/t/N of 1-300 KB (it truncates them), in $T/src, committed to STORE as
# "base".
crash_base() {
        local i
        mkdir -p "$T/src/base/t"
        rand_file "$T/src/base/big" $((3 * 1024 * 1024 + 777))
        echo base >"$T/src/base/small"
        for ((i = 0; i < 24; i++)); do
                rand_file "$T/src/base/t/$i" $((1000 + i * 12345))
        done
        st commit --store "$1" --tag base "$T/src"
}

# mount_snap MP ARGS...: stasis mount ARGS... MP, remembered for cleanup.
mount_snap() {
        local mp=$1
        shift
        mkdir -p "$mp"
        MOUNTS+=("$(realpath "$mp")")
        st mount "$@" "$mp"
        is_mounted "$mp" || fail "$mp is not mounted after stasis mount"
}

# counter MP NAME: one field of `stasis status --json MP`.
counter() {
        local v
        v=$("$STASIS" status --json "$1" | jq -r ".$2") || fail "stasis status $1 failed"
        [[ $v =~ ^[0-9]+$ ]] || fail "status field $2 of $1 is '$v'"
        echo "$v"
}

# daemon_pid MP / daemon_log MP: from the registry entry.
registry_entry() {
        local f
        for f in "$STASIS_RUN_DIR"/mounts/*.json; do
                [[ -f $f ]] || continue
                if [[ $(jq -r .mountpoint "$f") == "$(realpath -m "$1")" ]]; then
                        echo "$f"
                        return 0
                fi
        done
        return 1
}
daemon_pid() { jq -r .pid "$(registry_entry "$1")"; }
daemon_log() { jq -r .log "$(registry_entry "$1")"; }

# chunk_count FILE CHUNK: chunks of a file with data (no all-hole chunk).
chunk_count() {
        local size
        size=$(stat -c %s "$1")
        echo $(((size + $2 - 1) / $2))
}

# need_static_busybox: $BUSYBOX (default /bin/busybox) is a static busybox,
# else skip (runc containers run it on a bare rootfs).
need_static_busybox() {
        BUSYBOX=${BUSYBOX:-/bin/busybox}
        [[ -x $BUSYBOX ]] && file -L "$BUSYBOX" 2>/dev/null | grep -q "statically linked" ||
                ldd "$BUSYBOX" 2>&1 | grep -q "not a dynamic" || skip "needs a static busybox (Debian busybox-static)"
}

# busybox_rootfs DIR [SUBDIR...]: a minimal rootfs for runc in DIR: busybox
# and its applet links in bin/, root in etc/passwd and etc/group, and the
# directories runc and the tests want (plus SUBDIRs).
busybox_rootfs() {
        local dir=$1 a
        shift
        mkdir -p "$dir"/{bin,etc,proc,sys,dev,tmp,root} "${@/#/$dir/}"
        cp "$BUSYBOX" "$dir/bin/busybox"
        for a in $("$BUSYBOX" --list); do
                [[ -e $dir/bin/$a ]] || ln -s busybox "$dir/bin/$a"
        done
        echo "root:x:0:0:root:/root:/bin/sh" >"$dir/etc/passwd"
        echo "root:x:0:" >"$dir/etc/group"
}
