#!/usr/bin/env python3
"""wl_model.py MOUNT NATIVE SEED OPS [CHECK_EVERY] — randomized lockstep test.

Applies the same random sequence of write / truncate / fallocate (plain,
KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE) / mmap write / rename / link / unlink /
reopen / read / mkdir / rmdir operations to a stasis mount and to a native
directory holding the same tree, compares every result (bytes, or the
errno) as it goes, and the whole trees (names, types, sizes, modes, link
counts, contents) every CHECK_EVERY operations. SEEK_DATA and SEEK_HOLE
may differ from ext4's only towards data: the mount may call a hole data
(a chunk copied up keeps the base's zeros as bytes), never data a hole.
Not checked while a handle of the file is open for writing: the kernel may
then hold data past the size the mount knows (docs/writable-layer.md).
Prints the seed; exits 1 with the operation that diverged.
"""
import ctypes
import errno
import hashlib
import mmap
import os
import random
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wl_seek import seek  # noqa: E402  (lseek, -1 for ENXIO)

mnt, nat, seed, nops = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
every = int(sys.argv[5]) if len(sys.argv) > 5 else 1000
print("wl_model: seed %d, %d operations" % (seed, nops), flush=True)
rnd = random.Random(seed)
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
MAXOFF = 1 << 20
DIRS = ["", "a", "b", "a/c"]
NAMES = ["f%d" % i for i in range(8)]
FMODES = [0, 1, 1 | 2, 0x10, 0x10 | 1]  # 0, KEEP_SIZE, PUNCH|KEEP, ZERO, ZERO|KEEP


def rpath():
    return os.path.join(rnd.choice(DIRS), rnd.choice(NAMES))


def both(fn, *args):
    """fn(root_or_fd, ...) on each side: ('ok', value) or ('err', errno)."""
    out = []
    for side in (0, 1):
        try:
            out.append(("ok", fn(side, *args)))
        except OSError as e:
            out.append(("err", errno.errorcode.get(e.errno, e.errno)))
    return out


def fallocate(fd, mode, off, length):
    if libc.fallocate(fd, mode, off, length) < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


opened = []  # [(fd on mount, fd on native, path it was opened by)]
root = (mnt, nat)
step = 0


def fail(msg):
    print("wl_model: DIVERGED at operation %d (seed %d): %s" % (step, seed, msg), flush=True)
    sys.exit(1)


def same(what, r):
    if r[0] != r[1]:
        fail("%s: mount %r, native %r" % (what, r[0], r[1]))
    return r[0]


def op_open():
    p = rpath()
    flags = os.O_RDWR | (os.O_CREAT if rnd.random() < 0.5 else 0)
    r = both(lambda s: os.open(os.path.join(root[s], p), flags, 0o644))
    if r[0][0] != r[1][0]:
        for k, v in r:
            if k == "ok":
                os.close(v)
        fail("open %s: mount %r, native %r" % (p, r[0], r[1]))
    if r[0][0] == "ok":
        opened.append((r[0][1], r[1][1], p))
        if len(opened) > 12:
            fm, fn, _ = opened.pop(rnd.randrange(len(opened)))
            os.close(fm)
            os.close(fn)


def pick():
    if not opened:
        op_open()
    return rnd.choice(opened) if opened else None


def data(n):
    return rnd.randbytes(n) if rnd.random() < 0.7 else bytes([rnd.randrange(256)]) * n


def op_write():
    f = pick()
    if not f:
        return
    off = rnd.randrange(MAXOFF)
    b = data(rnd.choice([1, 100, 4096, 5000, 16384, 40000, 70000]))
    same("pwrite %s @%d+%d" % (f[2], off, len(b)), both(lambda s: os.pwrite(f[s], b, off)))


def op_read():
    f = pick()
    if not f:
        return
    off, n = rnd.randrange(MAXOFF), rnd.choice([1, 4096, 70000])
    r = both(lambda s: os.pread(f[s], n, off))
    if r[0] != r[1]:
        fail("pread %s @%d+%d differs" % (f[2], off, n))


def op_truncate():
    f = pick()
    if not f:
        return
    n = rnd.choice([0, rnd.randrange(MAXOFF), rnd.randrange(70000)])
    same("ftruncate %s %d" % (f[2], n), both(lambda s: os.ftruncate(f[s], n)))


def op_fallocate():
    f = pick()
    if not f:
        return
    mode, off, n = rnd.choice(FMODES), rnd.randrange(MAXOFF), rnd.randrange(1, 100000)
    same("fallocate %s mode %#x @%d+%d" % (f[2], mode, off, n), both(lambda s: fallocate(f[s], mode, off, n)))


def op_mmap():
    f = pick()
    if not f:
        return
    size = same("fstat", both(lambda s: os.fstat(f[s]).st_size))[1]
    if size == 0:
        return
    off, b = rnd.randrange(size), data(rnd.randrange(1, 9000))
    b = b[: size - off]

    def w(s):
        m = mmap.mmap(f[s], size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        m[off:off + len(b)] = b
        if rnd.random() < 0.5:
            m.flush()
        m.close()
    same("mmap write %s @%d+%d" % (f[2], off, len(b)), both(w))


def op_rename():
    a, b = rpath(), rpath()
    same("rename %s %s" % (a, b), both(lambda s: os.rename(os.path.join(root[s], a), os.path.join(root[s], b))))


def op_link():
    a, b = rpath(), rpath()
    same("link %s %s" % (a, b), both(lambda s: os.link(os.path.join(root[s], a), os.path.join(root[s], b))))


def op_unlink():
    a = rpath()
    same("unlink %s" % a, both(lambda s: os.unlink(os.path.join(root[s], a))))


def op_reopen():
    if opened:
        fm, fn, _ = opened.pop(rnd.randrange(len(opened)))
        os.close(fm)
        os.close(fn)
    op_open()


def op_seek():
    """SEEK_DATA and SEEK_HOLE from a random offset of a random path."""
    p, x = rpath(), rnd.randrange(0, MAXOFF + 4096)
    r = both(lambda s: os.open(os.path.join(root[s], p), os.O_RDONLY))
    same("open %s for seek" % p, [(k, None) if k == "ok" else (k, v) for k, v in r])
    if r[0][0] != "ok":
        return
    fm, fn = r[0][1], r[1][1]
    try:
        size = os.fstat(fn).st_size
        if os.fstat(fm).st_size != size:
            fail("seek %s: size %d on the mount, %d native" % (p, os.fstat(fm).st_size, size))

        ino = os.fstat(fm).st_ino
        if any(os.fstat(w).st_ino == ino for w, _, _ in opened):
            return  # a writer's data may be in the kernel's cache only

        def zeros(a, b):
            return not os.pread(fn, max(b - a, 0), a).strip(b"\0")

        dm, dn = seek(fm, x, os.SEEK_DATA), seek(fn, x, os.SEEK_DATA)
        hm = seek(fm, x, os.SEEK_HOLE)
        if x >= size:
            if dm != -1 or hm != -1:
                fail("seek %s from %d past the end (%d): data %d, hole %d" % (p, x, size, dm, hm))
            return
        if dn != -1 and (dm == -1 or dm > dn) and not zeros(dn, dm if dm != -1 else size):
            fail("SEEK_DATA %s from %d: %d on the mount skips data at %d" % (p, x, dm, dn))
        if dm != -1 and dm < x:
            fail("SEEK_DATA %s from %d: %d, before the offset" % (p, x, dm))
        if hm < x or hm > size:
            fail("SEEK_HOLE %s from %d: %d (size %d)" % (p, x, hm, size))
        if hm < size:
            try:
                end = os.lseek(fm, hm, os.SEEK_DATA)
            except OSError:
                end = size
            if not zeros(hm, end):
                fail("SEEK_HOLE %s from %d: a hole at %d-%d on the mount holds data" % (p, x, hm, end))
    finally:
        os.close(fm)
        os.close(fn)


def op_dir():
    d = rnd.choice(["a/c", "b/d"])
    if rnd.random() < 0.5:
        same("mkdir %s" % d, both(lambda s: os.mkdir(os.path.join(root[s], d))))
    else:
        same("rmdir %s" % d, both(lambda s: os.rmdir(os.path.join(root[s], d))))


def tree(r):
    out = {}
    for dp, dns, fns in os.walk(r):
        for n in sorted(dns + fns):
            p = os.path.join(dp, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, r)
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    h = hashlib.sha256(fh.read()).hexdigest()
                out[rel] = ("reg", oct(st.st_mode), st.st_size, st.st_nlink, h)
            else:
                out[rel] = ("dir" if stat.S_ISDIR(st.st_mode) else "other", oct(st.st_mode), st.st_nlink)
    return out


def compare():
    a, b = tree(mnt), tree(nat)
    if a != b:
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                print("   %s: mount %s, native %s" % (k, a.get(k), b.get(k)))
        fail("trees differ")


OPS = [(op_write, 30), (op_read, 10), (op_truncate, 6), (op_fallocate, 8), (op_mmap, 5),
       (op_rename, 6), (op_link, 4), (op_unlink, 5), (op_reopen, 8), (op_dir, 2), (op_open, 4),
       (op_seek, 3)]
weights = [w for _, w in OPS]
for step in range(1, nops + 1):
    rnd.choices(OPS, weights)[0][0]()
    if step % every == 0:
        compare()
for fm, fn, _ in opened:
    os.close(fm)
    os.close(fn)
compare()
print("wl_model: %d operations, trees equal" % nops, flush=True)
