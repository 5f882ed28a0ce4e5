"""`|program` lines: /bin/sh -c with the message on stdin, as qmail-local's mailprogram().

The program's stdout and stderr become part of qmail-local's report (in
qmail they share qmail-lspawn's pipe). Exit codes: 0 ok; 99 ok and stop
reading the .qmail; 100, 64, 65, 70, 76, 77, 78, 112 permanent; killed by a
signal "Aack, child crashed."; anything else temporary.
"""
import os

from qmailpy import exitcodes as X
from qmailpy.local import errors, message

SHELL = "/bin/sh"
PERMANENT = frozenset((X.DELIVERY_PERMANENT, 64, 65, 70, 76, 77, 78, 112))   # and sysexits.h's
STOP = X.DELIVERY_OK_STOP


def run(command, fd0, env, cwd, keep=None):
    """Run `command`; return (stop, output bytes: the first `keep` of them). Raises Die for failures."""
    from qmailpy import forkexec
    from qmailpy.fileio import read_all
    message.rewind(fd0)
    out_r, out_w = os.pipe()
    try:
        pid = forkexec.start([SHELL, "-c", command], {0: fd0, 1: out_w, 2: out_w}, env, cwd)
    except OSError as e:
        os.close(out_r)
        raise errors.temp("Unable to run /bin/sh: %s. (#4.3.0)" % errors.error_str(e)) from None
    finally:
        os.close(out_w)
    try:
        output = read_all(out_r, keep)
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

