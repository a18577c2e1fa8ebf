"""wl_crash_check.py MP ACK BIG: after a crash, every operation ACK (from
wl_crash_writer.py) acknowledged is there on MP: each file with its bytes
(after its truncates and holes) and xattr, each link and no removed one,
each mode, each directory and no removed one, no file beside its .tmp (a
half-applied rename), link counts that match the names, and MP/base/big
equal to BIG with the acknowledged overwrites applied (the one in flight may
or may not have landed). Exit 1 with a line per problem."""
import os, sys, hashlib
mp, ack, big = sys.argv[1], sys.argv[2], sys.argv[3]
files, links, unlinked, modes = {}, set(), set(), {}
maybe_gone = set()  # unlinks begun, never acknowledged: either way
maybe_data = {}     # a content change begun: its hash is allowed too
xattrs, maybe_xattr = {}, {}
dirs, maybe_dirs, gone_dirs = set(), set(), set()
bfiles, maybe_b = {}, {}  # base files truncated: path under MP -> sha256
bigdata = bytearray(open(big, "rb").read())
n = 0
intent = None
for line in open(ack):
    p = line.split()
    if len(p) < 2 or not line.endswith("\n"):
        continue
    if p[0] == "file": files[p[1]] = p[2]
    elif p[0] == "datai": maybe_data[p[1]] = p[2]
    elif p[0] == "data": files[p[1]] = p[2]; maybe_data.pop(p[1], None)
    elif p[0] == "link": links.add(p[1])
    elif p[0] == "unlinki": maybe_gone.add(p[1])
    elif p[0] == "unlink": links.discard(p[1]); unlinked.add(p[1]); maybe_gone.discard(p[1])
    elif p[0] == "mode": modes[p[1]] = int(p[2], 8)
    elif p[0] == "xattri": maybe_xattr[p[1]] = p[2]
    elif p[0] == "xattr": xattrs[p[1]] = p[2]; maybe_xattr.pop(p[1], None)
    elif p[0] == "bdatai": maybe_b[p[1]] = p[2]
    elif p[0] == "bdata": bfiles[p[1]] = p[2]; maybe_b.pop(p[1], None)
    elif p[0] == "mkdir": dirs.add(p[1])
    elif p[0] == "rmdiri": maybe_dirs.add(p[1])
    elif p[0] == "rmdir": dirs.discard(p[1]); gone_dirs.add(p[1]); maybe_dirs.discard(p[1])
    elif p[0] == "bigi": intent = int(p[1])
    elif p[0] == "big":
        off = int(p[1]); bigdata[off:off + 4096] = b"x" * 4096; intent = None
    n += not p[0].endswith("i")
bad = 0
d = os.path.join(mp, "w")
names = set(os.listdir(d)) if os.path.isdir(d) else set()
for name, h in files.items():
    path = os.path.join(d, name)
    if not os.path.exists(path):
        print("LOST: %s" % name); bad += 1; continue
    if hashlib.sha256(open(path, "rb").read()).hexdigest() not in {h} | ({maybe_data[name]} if name in maybe_data else set()):
        print("WRONG BYTES: %s" % name); bad += 1
    want = xattrs.get(name)
    try:
        got = os.getxattr(path, "user.crash").decode()
    except OSError:
        got = None
    allowed = {want} | ({maybe_xattr[name]} if name in maybe_xattr else set())
    if got not in allowed:
        print("XATTR: %s has %r, not %r" % (name, got, want)); bad += 1
    if name + ".tmp" in names:
        print("HALF RENAME: both %s and its .tmp" % name); bad += 1
for name in links - maybe_gone:
    if not os.path.exists(os.path.join(d, name + ".ln")):
        print("LOST LINK: %s" % name); bad += 1
for name in unlinked:
    if os.path.lexists(os.path.join(d, name + ".ln")):
        print("UNLINK UNDONE: %s.ln" % name); bad += 1
for name, mode in modes.items():
    path = os.path.join(d, name)
    if os.path.exists(path) and os.lstat(path).st_mode & 0o7777 != mode:
        print("MODE: %s is %o, not %o" % (name, os.lstat(path).st_mode & 0o7777, mode)); bad += 1
for path in set(bfiles) | set(maybe_b):
    got = hashlib.sha256(open(os.path.join(mp, path), "rb").read()).hexdigest()
    allowed = ({bfiles[path]} if path in bfiles else set()) | ({maybe_b[path]} if path in maybe_b else set())
    if path not in bfiles:
        allowed = None  # never acknowledged: anything it was
    if allowed is not None and got not in allowed:
        print("WRONG BYTES: %s (truncated base file)" % path); bad += 1
wd = os.path.join(mp, "wd")
for name in dirs - maybe_dirs:
    if not os.path.isdir(os.path.join(wd, name)):
        print("LOST DIR: %s" % name); bad += 1
for name in gone_dirs:
    if os.path.lexists(os.path.join(wd, name)):
        print("RMDIR UNDONE: %s" % name); bad += 1
# link counts match the names in the directory (every file lives in w/)
inos = {}
for name in names:
    st = os.lstat(os.path.join(d, name))
    inos.setdefault(st.st_ino, []).append((name, st.st_nlink))
for ino, l in inos.items():
    if any(nl != len(l) for _, nl in l):
        print("NLINK: inode %d has names %s" % (ino, l)); bad += 1
# every name reads (no dangling entry)
for name in names:
    open(os.path.join(d, name), "rb").read()
got = bytearray(open(os.path.join(mp, "base/big"), "rb").read())
if intent is not None:  # the last overwrite was not acknowledged: either way
    got[intent:intent + 4096] = bigdata[intent:intent + 4096]
if got != bigdata:
    print("BIG DIFFERS"); bad += 1
print("checked %d acknowledged operations, %d files" % (n, len(files)))
sys.exit(1 if bad else 0)
