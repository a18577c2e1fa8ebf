"""wl_crash_writer.py MP ACK SEED: the writer of the crash tests (wl-crash.sh,
wl-hostcrash.sh). Under MP/w it writes files (fsync, rename, fsyncdir),
links, unlinks and chmods them, truncates them, punches holes, sets xattrs,
makes and removes directories under MP/wd, truncates files of MP/base/t, and
it overwrites 4 KiB of MP/base/big; it appends a line to ACK for each
operation only after the syscalls that make it durable returned (fsync of
the file, fsync of the directory). A line whose verb ends in "i" ("bigi
OFF", "unlinki NAME", "datai NAME SHA", ...) says an operation is in flight:
after a crash it may or may not have happened. Runs until killed or until
the mount fails under it."""
import ctypes, os, sys, random, hashlib
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
mp, ack, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rnd = random.Random(seed)
log = open(ack, "a", buffering=1)
d = os.path.join(mp, "w")
os.makedirs(d, exist_ok=True)
dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
wd = os.path.join(mp, "wd")  # directories made and removed
os.makedirs(wd, exist_ok=True)
wdfd = os.open(wd, os.O_RDONLY | os.O_DIRECTORY)
h = lambda b: hashlib.sha256(b).hexdigest()
i = 0
while True:
    i += 1
    name = "f%d-%d" % (seed, i)
    data = os.urandom(rnd.choice([1, 100, 4096, 65536, 300000, 1 << 20]))
    tmp = os.path.join(d, name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    os.fsync(fd)
    os.close(fd)
    os.rename(tmp, os.path.join(d, name))
    os.fsync(dfd)
    log.write("file %s %s\n" % (name, hashlib.sha256(data).hexdigest()))
    if i % 3 == 0:
        os.link(os.path.join(d, name), os.path.join(d, name + ".ln"))
        os.fsync(dfd)
        log.write("link %s\n" % name)
    if i % 5 == 0:  # a name removed (the newest link), a mode changed
        j = i - (i % 3 or 3)
        log.write("unlinki f%d-%d\n" % (seed, j))
        os.unlink(os.path.join(d, "f%d-%d.ln" % (seed, j)))
        os.fsync(dfd)
        log.write("unlink f%d-%d\n" % (seed, j))
        os.chmod(os.path.join(d, name), 0o600)
        fd = os.open(os.path.join(d, name), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        log.write("mode %s 600\n" % name)
    if i % 6 == 0 and len(data) >= 8192:  # cut short, then a hole punched
        path = os.path.join(d, name)
        cut = data[:len(data) // 2]
        log.write("datai %s %s\n" % (name, h(cut)))
        os.truncate(path, len(cut))
        fd = os.open(path, os.O_WRONLY)
        os.fsync(fd)
        log.write("data %s %s\n" % (name, h(cut)))
        punched = b"\0" * 4096 + cut[4096:]
        log.write("datai %s %s\n" % (name, h(punched)))
        if libc.fallocate(fd, 3, 0, 4096) < 0:  # PUNCH_HOLE | KEEP_SIZE
            sys.exit("fallocate: %s" % os.strerror(ctypes.get_errno()))
        os.fsync(fd)
        os.close(fd)
        log.write("data %s %s\n" % (name, h(punched)))
    if i % 7 == 0:  # an xattr, a directory made, the one before removed
        path = os.path.join(d, name)
        value = b"v%d" % i
        log.write("xattri %s %s\n" % (name, value.decode()))
        os.setxattr(path, "user.crash", value)
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        log.write("xattr %s %s\n" % (name, value.decode()))
        os.mkdir(os.path.join(wd, name))
        os.fsync(wdfd)
        log.write("mkdir %s\n" % name)
        if i >= 14:
            old = "f%d-%d" % (seed, i - 7)
            log.write("rmdiri %s\n" % old)
            os.rmdir(os.path.join(wd, old))
            os.fsync(wdfd)
            log.write("rmdir %s\n" % old)
    if i % 8 == 0:  # a base file truncated, down or up
        path = "base/t/%d" % (i // 8 % 24)
        cur = open(os.path.join(mp, path), "rb").read()
        size = rnd.randrange(0, len(cur) + 65536)
        want = h(cur[:size] + b"\0" * max(0, size - len(cur)))
        log.write("bdatai %s %s\n" % (path, want))
        os.truncate(os.path.join(mp, path), size)
        fd = os.open(os.path.join(mp, path), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        log.write("bdata %s %s\n" % (path, want))
    if i % 4 == 0:  # partial overwrite of a base file: one chunk copied up
        off = rnd.randrange(0, 3 * 1024 * 1024)
        log.write("bigi %d\n" % off)
        fd = os.open(os.path.join(mp, "base/big"), os.O_WRONLY)
        os.pwrite(fd, b"x" * 4096, off)
        os.fsync(fd)
        os.close(fd)
        log.write("big %d\n" % off)
