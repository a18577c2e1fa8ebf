#!/usr/bin/env bash
# wl-workloads.sh — issue 5, acceptance 4: real workloads on a fresh mount
# of a base give the same result as the same work on a native copy of the
# base: extract a large tarball, build a small C project with make,
# git init/add/commit, a sqlite3 database with random updates. Digests of
# the results are compared, and again after a remount.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mount-lib.bash"
need git sqlite3 make gcc python3 tar

S=$T/store
mkdir -p "$T/src/etc"
echo base >"$T/src/etc/base"
st commit --store "$S" --tag base "$T/src"
mp=$T/mnt
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$T/state" base
nat=$T/native
cp -a "$T/src" "$nat"

# A large tarball: /usr/include (thousands of files), else /usr/share/doc.
tsrc=/usr/include
[[ -d $tsrc ]] || tsrc=/usr/share/doc
tar -C "$(dirname "$tsrc")" -cf "$T/big.tar" "$(basename "$tsrc")"
echo "   tarball: $(du -h "$T/big.tar" | cut -f1), $(tar -tf "$T/big.tar" | wc -l) entries"

# A small C project.
mkdir -p "$T/proj"
for i in 1 2 3 4 5 6 7 8; do
        printf 'int f%d(int x) { return x * %d + %d; }\n' "$i" "$i" "$i" >"$T/proj/f$i.c"
done
{
        for i in 1 2 3 4 5 6 7 8; do echo "int f$i(int);"; done
        echo '#include <stdio.h>'
        echo 'int main(void) { int s = 0;'
        for i in 1 2 3 4 5 6 7 8; do echo "s += f$i($i);"; done
        echo 'printf("%d\n", s); return 0; }'
} >"$T/proj/main.c"
cat >"$T/proj/Makefile" <<'MK'
OBJS = main.o f1.o f2.o f3.o f4.o f5.o f6.o f7.o f8.o
prog: $(OBJS)
	$(CC) -o $@ $(OBJS)
	ar rcsD libf.a f*.o
%.o: %.c
	$(CC) -O2 -c -o $@ $<
MK

# Random sqlite updates from a fixed seed.
python3 - "$T/sql" <<'PY'
import random, sys
r = random.Random(42)
with open(sys.argv[1], "w") as f:
    f.write("PRAGMA journal_mode=WAL;\nCREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, n INTEGER);\n")
    for i in range(3000):
        f.write("INSERT INTO t VALUES(%d, '%s', %d);\n" % (i, "x" * r.randrange(1, 300), r.randrange(10**6)))
    for _ in range(20):
        f.write("BEGIN;\n")
        for _ in range(200):
            k = r.randrange(3000)
            op = r.random()
            if op < 0.6:
                f.write("UPDATE t SET v='%s', n=%d WHERE id=%d;\n" % ("y" * r.randrange(1, 2000), r.randrange(10**6), k))
            elif op < 0.8:
                f.write("DELETE FROM t WHERE id=%d;\n" % k)
            else:
                f.write("INSERT OR REPLACE INTO t VALUES(%d, '%s', %d);\n" % (k, "z" * r.randrange(1, 500), k))
        f.write("COMMIT;\n")
    f.write("PRAGMA wal_checkpoint(TRUNCATE);\n")
PY

work() { # work DIR: the same workload in DIR; prints result digests
        local d=$1
        (
                set -e
                cd "$d"
                mkdir x && tar -C x -xf "$T/big.tar"
                cp -r "$T/proj" proj && make -s -C proj >/dev/null && ./proj/prog
                mkdir repo && cd repo && git init -q -b main . && cp -r ../proj src && rm -f src/*.o src/prog src/libf.a
                git add -A && GIT_AUTHOR_DATE="2020-01-01T00:00:00Z" GIT_COMMITTER_DATE="2020-01-01T00:00:00Z" \
                        git -c user.name=t -c user.email=t@t commit -q -m first && git rev-parse HEAD
                git fsck --strict 2>&1 | tail -1
                cd ..
                sqlite3 db.sqlite <"$T/sql" >/dev/null
                sqlite3 db.sqlite "PRAGMA integrity_check; SELECT count(*), sum(n), sum(length(v)) FROM t;"
                sqlite3 db.sqlite .dump | sha256sum
        )
}
# digests of everything but times (the two runs happen at other moments)
listing() {
        (cd "$1" && find . -path ./repo/.git -prune -o -printf '%P %y %m %U %G %l\n' | sort &&
                find . -path ./repo/.git -prune -o -path ./db.sqlite -prune -o -type f -print0 | xargs -0 sha256sum | sort)
}

step "native"
t0=$(date +%s%N)
work "$nat" >"$T/native.out" || fail "the workload failed natively"
t1=$(date +%s%N)
step "mount"
work "$mp" >"$T/mount.out" || fail "the workload failed on the mount"
t2=$(date +%s%N)
echo "   native $(((t1 - t0) / 1000000)) ms, mount $(((t2 - t1) / 1000000)) ms"
cat "$T/mount.out"
cmp -s "$T/native.out" "$T/mount.out" || { diff "$T/native.out" "$T/mount.out" >&2; fail "results differ"; }
listing "$nat" >"$T/native.list"
listing "$mp" >"$T/mount.list"
cmp -s "$T/native.list" "$T/mount.list" || { diff "$T/native.list" "$T/mount.list" | head -20 >&2; fail "trees differ"; }
echo "   $(wc -l <"$T/mount.list") entries equal"

step "remount: the same"
st umount "$mp"
mount_snap "$mp" --store "$S" --cache "$T/cache" --state "$T/state" base
listing "$mp" >"$T/mount2.list"
cmp -s "$T/native.list" "$T/mount2.list" || fail "the tree changed across a remount"
(cd "$mp/repo" && git fsck --strict 2>&1 | tail -1) >/dev/null || fail "git fsck after remount"
[[ $(sqlite3 "$mp/db.sqlite" "PRAGMA integrity_check;") == ok ]] || fail "sqlite integrity after remount"
st umount "$mp"
