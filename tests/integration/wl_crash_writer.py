"""wl_crash_writer.py MP ACK SEED: the writer of the crash tests (wl-crash.sh,
wl-hostcrash.sh). Under MP/w it writes files (fsync, rename, fsyncdir), links,
unlinks and chmods them, and it overwrites 4 KiB of MP/base/big; it appends a
line to ACK for each operation only after the syscalls that make it durable
returned (fsync of the file, fsync of the directory). A "bigi OFF" or
"unlinki NAME" line says an overwrite or an unlink is in flight. Runs until
killed or until the mount fails under it."""
import os, sys, random, hashlib
mp, ack, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rnd = random.Random(seed)
log = open(ack, "a", buffering=1)
d = os.path.join(mp, "w")
os.makedirs(d, exist_ok=True)
dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
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
    if i % 4 == 0:  # partial overwrite of a base file: one chunk copied up
        off = rnd.randrange(0, 3 * 1024 * 1024)
        log.write("bigi %d\n" % off)
        fd = os.open(os.path.join(mp, "base/big"), os.O_WRONLY)
        os.pwrite(fd, b"x" * 4096, off)
        os.fsync(fd)
        os.close(fd)
        log.write("big %d\n" % off)
