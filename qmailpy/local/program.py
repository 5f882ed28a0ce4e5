"""`|program` lines: /bin/sh -c with the message on stdin, as qmail-local's mailprogram().

The program's stdout and stderr become part of qmail-local's report (in
qmail they share qmail-lspawn's pipe). As in qmail, the program is done when
it exits: what it wrote until then is kept, and a child it left behind
holding its output (`sleep 600 &`) delays neither the next .qmail line nor
the delivery's end (its later output is not read). Exit codes: 0 ok; 99 ok and stop
reading the .qmail; 100, 64, 65, 70, 76, 77, 78, 112 permanent; killed by a
signal "Aack, child crashed."; anything else temporary.
"""
import os

from qmailpy import exitcodes as X
from qmailpy.fileio import READ_SIZE
from qmailpy.local import errors, message

SHELL = "/bin/sh"
PERMANENT = frozenset((X.DELIVERY_PERMANENT, 64, 65, 70, 76, 77, 78, 112))   # and sysexits.h's
STOP = X.DELIVERY_OK_STOP


def run(command, fd0, env, cwd, keep=None):
    """Run `command`; return (stop, output bytes: the first `keep` of them). Raises Die for failures."""
    from qmailpy import forkexec
    message.rewind(fd0)
    try:
        out_r, out_w = os.pipe()
    except OSError as e:                # EMFILE, ENFILE: as a refused fork (temp_fork())
        raise errors.temp("Unable to fork: %s. (#4.3.0)" % errors.error_str(e)) from None
    try:
        pid = forkexec.start([SHELL, "-c", command], {0: fd0, 1: out_w, 2: out_w}, env, cwd)
    except OSError as e:
        os.close(out_r)
        if e.filename is None:          # no child got to exec: qmail's temp_fork()
            raise errors.temp("Unable to fork: %s. (#4.3.0)" % errors.error_str(e)) from None
        raise errors.temp("Unable to run /bin/sh: %s. (#4.3.0)" % errors.error_str(e)) from None
    finally:
        os.close(out_w)
    try:
        output = _read_until_exit(out_r, pid, keep)
    finally:
        os.close(out_r)
    code = forkexec.wait(pid)
    if code < 0:
        raise errors.Die(errors.TEMP, errors.CHILD_CRASHED, output)
    if code == 0:
        return False, output
    if code == STOP:
        return True, output
    raise errors.Die(errors.PERM if code in PERMANENT else errors.TEMP, None, output)


def _read_until_exit(fd, pid, keep, read=os.read):
    """The program's output until end of file or, once it has exited (its pidfd is readable),
    until the pipe is empty: qmail waits for the exit status, never for a background child.
    After the exit at most one pipe's worth is read (all the program itself can have left
    there), so a child that goes on writing cannot keep the delivery reading for ever."""
    import fcntl
    import selectors
    chunks, kept = [], 0
    pidfd = os.pidfd_open(pid)
    sel = selectors.DefaultSelector()
    try:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
        sel.register(pidfd, selectors.EVENT_READ)
        left = None                     # bytes still to read once the program has exited
        while left is None or left > 0:
            if left is None and any(key.fd == pidfd for key, _ in sel.select()):
                left = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
            try:
                chunk = read(fd, READ_SIZE if left is None else min(READ_SIZE, left))
            except BlockingIOError:
                if left is not None:
                    break
                continue
            if not chunk:
                break
            if left is not None:
                left -= len(chunk)
            chunk = chunk[:max(0, keep - kept)] if keep is not None else chunk
            kept += len(chunk)
            chunks.append(chunk)
    finally:
        sel.close()
        os.close(pidfd)
    return b"".join(chunks)
