"""mbox delivery for `./Mailbox`-style lines, as qmail-local's mailfile().

Append under an exclusive flock() (give up after 30 seconds), write the
`From ` line, Return-Path and Delivered-To, the message with `>From `
quoting (gfrom: a line that is '>'* + 'From ' gets one more '>'), a final
newline if missing, one blank line, fsync. On any failure the file is cut
back to its old end (when the lock was held), so no half message stays.
"""
import os
import time

from qmailpy.fileio import write_all
from qmailpy.local import errors, message

LOCK_WAIT = 30
FLUSH = 65536


def gfrom(line):
    """True for lines mbox readers would take as a separator once '>'s are removed."""
    return line.lstrip(b">").startswith(b"From ")


def _lock(fd):
    """flock(LOCK_EX) with qmail's 30-second alarm; False if locking is unsupported."""
    import fcntl
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise errors.temp(errors.SLOW_LOCK) from None
            time.sleep(0.05)
        except OSError:
            return False


def deliver(path, name, fd0, ufline, head):
    """Append the message to the mbox at `path`; `name` is the .qmail line, for reports."""
    message.rewind(fd0)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as e:
        raise errors.temp("Unable to open %s: %s. (#4.2.1)" % (name, errors.error_str(e))) from None
    locked = False
    pos = None
    try:
        locked = _lock(fd)
        pos = os.lseek(fd, 0, os.SEEK_END)
        out = bytearray(ufline + head)
        lines = message.lines(fd0)
        while True:
            try:
                line = next(lines, None)
            except OSError as e:
                raise errors.temp("Unable to read message: %s. (#4.3.0)" % errors.error_str(e)) from None
            if line is None:
                break
            if gfrom(line):
                out += b">"
            out += line
            if not line.endswith(b"\n"):
                out += b"\n"
            if len(out) >= FLUSH:
                write_all(fd, out)
                out.clear()
        out += b"\n"
        write_all(fd, out)
        os.fsync(fd)
    except (errors.Die, OSError) as e:
        if locked and pos is not None:
            try:
                os.ftruncate(fd, pos)
            except OSError:
                pass
        if isinstance(e, errors.Die):
            raise
        raise errors.temp("Unable to write %s: %s. (#4.3.0)" % (name, errors.error_str(e))) from None
    finally:
        os.close(fd)
