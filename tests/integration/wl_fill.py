"""wl_fill.py: fill a mount's disk with 1 MiB files, each fsync'd, until
ENOSPC (any other error fails the test). Used by wl-enospc.sh:

    PYTHONPATH=tests/integration python3 -c 'import wl_fill; ...'
"""
import errno
import os
import sys


def fill(mp, prefix, drop_failed=False):
    """Files mp/<prefix>0000, 0001, ... until one fails with ENOSPC; that
    one is removed if drop_failed (its bytes are not defined after a failed
    write, as anywhere: an installer cleans up after itself). Returns how
    many MiB went in."""
    block = os.urandom(1 << 20)
    for i in range(1000):
        path = "%s/%s%04d" % (mp, prefix, i)
        try:
            with open(path, "wb") as f:
                f.write(block)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            if e.errno != errno.ENOSPC:
                sys.exit("%s: %s (want ENOSPC)" % (path, e))
            if drop_failed:
                os.unlink(path)
            return i
    sys.exit("1000 MiB written: the disk never filled")
