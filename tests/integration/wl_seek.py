"""wl_seek.py MOUNT_FILE NATIVE_FILE SEED: the same random pwrites,
truncates and punched holes on both files, then SEEK_DATA/SEEK_HOLE
compared: the mount may call data what the native file has as a hole (a
chunk copied up from the base keeps the base's zeros as data), never the
other way round. Checked: the walk of data segments from 0 covers every
native data block, every block the mount calls a hole is zeros natively,
and SEEK_DATA/SEEK_HOLE from 200 random offsets never skip native data.
Prints one line; exit 1 on a wrong answer."""
import ctypes
import errno
import os
import random
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2


def punch(fd, off, ln):
    if libc.fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, off, ln) != 0:
        raise OSError(ctypes.get_errno(), "fallocate")


def seek(fd, off, whence):
    """lseek(); -1 for ENXIO."""
    try:
        return os.lseek(fd, off, whence)
    except OSError as e:
        if e.errno != errno.ENXIO:
            raise
        return -1


def segments(fd, size):
    out, o = [], 0
    while o < size:
        d = seek(fd, o, os.SEEK_DATA)
        if d < 0:
            break
        o = seek(fd, d, os.SEEK_HOLE)
        out.append((d, o))
    return out


def blocks(segs):
    b = set()
    for d, h in segs:
        b.update(range(d // 4096, (h + 4095) // 4096))
    return b


def main():
    mpath, npath, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    r = random.Random(seed)
    fds = [os.open(p, os.O_RDWR) for p in (mpath, npath)]
    for _ in range(40):
        op = r.choice("wwwtp")
        size = os.fstat(fds[1]).st_size
        if op == "w":
            off, data = r.randrange(0, size + (1 << 20)), os.urandom(r.randrange(1, 200000))
            for fd in fds:
                os.pwrite(fd, data, off)
        elif op == "t":
            ns = r.randrange(0, 16 << 20)
            for fd in fds:
                os.ftruncate(fd, ns)
        elif size:
            off, ln = r.randrange(0, size), r.randrange(1, 1 << 20)
            for fd in fds:
                punch(fd, off, ln)
    for fd in fds:
        os.close(fd)
    mfd, nfd = os.open(mpath, os.O_RDONLY), os.open(npath, os.O_RDONLY)
    ms, ns = os.fstat(mfd).st_size, os.fstat(nfd).st_size
    bad = []
    if ms != ns:
        bad.append("size %d on the mount, %d natively" % (ms, ns))
    bm, bn = blocks(segments(mfd, ms)), blocks(segments(nfd, ns))
    for blk in sorted(bn - bm):
        if os.pread(nfd, 4096, blk * 4096).strip(b"\0"):
            bad.append("block %d: data natively, a hole on the mount" % blk)
            break
    for x in random.Random(seed).sample(range(max(ns, 1)), min(200, max(ns, 1))):
        dm, dn = seek(mfd, x, os.SEEK_DATA), seek(nfd, x, os.SEEK_DATA)
        if dn >= 0 and (dm < 0 or dm > dn) and os.pread(nfd, (dm if dm >= 0 else ns) - dn, dn).strip(b"\0"):
            bad.append("SEEK_DATA from %d: %d on the mount skips native data at %d" % (x, dm, dn))
        hm = seek(mfd, x, os.SEEK_HOLE)
        if hm < 0 or (hm < ns and os.pread(nfd, 1, hm).strip(b"\0")):
            bad.append("SEEK_HOLE from %d: %d on the mount is data natively" % (x, hm))
    print("seed %d: size %d, data blocks %d on the mount, %d natively%s"
          % (seed, ms, len(bm), len(bn), "; " + "; ".join(bad[:3]) if bad else ""))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
