"""mbox delivery for `./Mailbox`-style lines, as qmail-local's mailfile().

Append under an exclusive flock() (give up after 30 seconds), write the
`From ` line, Return-Path and Delivered-To, the message with `>From `
quoting (gfrom: a line that is '>'* + 'From ' gets one more '>'; looked at
in blocks, never holding a line: quoted()), a final
newline if missing, one blank line, fsync. On any failure the file is cut
back to its old end (when the lock was held), so no half message stays.
"""
import os
import time

from qmailpy.fileio import close_quietly, write_all
from qmailpy.local import errors, message

LOCK_WAIT = 30
FLUSH = 65536


def gfrom(line):
    """True for lines mbox readers would take as a separator once '>'s are removed."""
    return line.lstrip(b">").startswith(b"From ")


def quoted(blocks):
    """The message (an iterator of blocks) with a '>' before each gfrom() line, in blocks, without
    holding a line: a message of one long line costs a block. The '>' qmail puts at the line's
    start is written after the line's own '>'s instead (the same bytes), so only the at most 5
    bytes after them wait for the decision."""
    import re
    run = re.compile(rb">*")
    start, after = True, b""        # at a line's start (its '>'s not all seen), and what follows them
    for data in blocks:
        out, pos, n = bytearray(), 0, len(data)
        while pos < n:
            if not start:
                nl = data.find(b"\n", pos)
                end = n if nl < 0 else nl + 1
                out += data[pos:end]
                pos, start = end, nl >= 0
                continue
            if not after:
                end = run.match(data, pos).end()
                out += data[pos:end]
                pos = end
                if pos == n:
                    break
            take = data[pos:pos + 5 - len(after)]
            nl = take.find(b"\n")
            if nl >= 0:
                take = take[:nl + 1]
            after += take
            pos += len(take)
            if nl >= 0 or len(after) == 5:
                out += (b">" if after == b"From " else b"") + after
                start, after = nl >= 0, b""
        yield bytes(out)
    if after:
        yield after


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
        blocks = quoted(message.chunks(fd0))
        last = b"\n"
        while True:
            try:
                block = next(blocks, None)
            except OSError as e:
                raise errors.temp("Unable to read message: %s. (#4.3.0)" % errors.error_str(e)) from None
            if block is None:
                break
            if block:
                out += block
                last = block[-1:]
            if len(out) >= FLUSH:
                write_all(fd, out)
                out.clear()
        if last != b"\n":
            out += b"\n"
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
        close_quietly(fd)               # as qmail's close(fd): the message is fsynced, or cut off
