"""periplimit: at most N simultaneous sessions per client IP, counted across processes.

Each session holds an flock on `<dir>/<ip>.<pid>` for its lifetime. Counting
lists the files of that IP; a file whose lock can be taken belongs to a dead
session (kill -9 included) and is removed. Costs one inode per session, and
only when periplimit is set.
"""
import fcntl
import os


class Slot:
    """A held session slot; release() at the end (process exit releases the lock anyway)."""

    def __init__(self, path, fd):
        self.path, self.fd = path, fd

    def release(self):
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)


def _held(path):
    """Is the file's lock held by a live session? Stale files are removed."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    try:
        os.unlink(path)
    except OSError:
        pass
    return False


def acquire(directory, ip, limit, pid):
    """A Slot, or None when `ip` already has `limit` live sessions."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    prefix = ip + "."
    path = os.path.join(directory, prefix + str(pid))
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    slot = Slot(path, fd)
    others = sum(1 for name in os.listdir(directory)
                 if name.startswith(prefix) and name != prefix + str(pid)
                 and name[len(prefix):].isdigit() and _held(os.path.join(directory, name)))
    if others >= limit:
        slot.release()
        return None
    return slot
