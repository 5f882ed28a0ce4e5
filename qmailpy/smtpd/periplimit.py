"""periplimit: at most N simultaneous sessions per client IP, counted across processes.

Each session holds an flock on `<dir>/<ip>.<pid>` for its lifetime. Counting
lists the files of that IP; a file whose lock can be taken belongs to a dead
session (kill -9 included) and is removed. A slot file is locked under a
temporary name (`.<ip>.<pid>.new`, which no count looks at) and renamed into
place, so no session ever sees it unlocked: one that did took it for a dead
session's and removed it. Costs one inode per session, and only when
periplimit is set.
"""
import fcntl
import os

from qmailpy.fileio import close_quietly, own_directory


class Slot:
    """A held session slot; release() at the end (process exit releases the lock anyway)."""

    def __init__(self, path, fd):
        self.path, self.fd = path, fd

    def release(self):
        try:
            os.unlink(self.path)
        except OSError:
            pass
        close_quietly(self.fd)      # Linux frees the fd, and the lock with it, either way


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
    """A Slot, or None when `ip` already has `limit` live sessions; PermissionError when
    `directory` (sessions/, qmaild's) is not this process's user's (root's `sendmail -bs`:
    qmaild could have put links at any of the names opened here)."""
    own_directory(directory)
    prefix = ip + "."
    path = os.path.join(directory, prefix + str(pid))
    new = os.path.join(directory, ".%s%d.new" % (prefix, pid))
    fd = os.open(new, os.O_CREAT | os.O_TRUNC | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(new, path)        # over a killed session's file of the same pid, if any
    except BaseException:
        os.close(fd)
        try:
            os.unlink(new)
        except OSError:
            pass
        raise
    slot = Slot(path, fd)
    try:
        others = sum(1 for name in os.listdir(directory)
                     if name.startswith(prefix) and name != prefix + str(pid)
                     and name[len(prefix):].isdigit() and _held(os.path.join(directory, name)))
    except BaseException:           # sessions/ cannot be listed: the caller goes on uncounted, and a
        slot.release()              # qmail-tcpserver worker must not keep the slot's fd and lock
        raise
    if others >= limit:
        slot.release()
        return None
    return slot
