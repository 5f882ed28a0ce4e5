"""`|program` lines: /bin/sh -c with the message on stdin, as qmail-local's mailprogram().

The program's stdout and stderr become part of qmail-local's report (in
qmail they share qmail-lspawn's pipe). Exit codes: 0 ok; 99 ok and stop
reading the .qmail; 100, 64, 65, 70, 76, 77, 78, 112 permanent; killed by a
signal "Aack, child crashed."; anything else temporary.
"""
from qmailpy import exitcodes as X
from qmailpy.local import errors, message

SHELL = "/bin/sh"
PERMANENT = frozenset((X.DELIVERY_PERMANENT, 64, 65, 70, 76, 77, 78, 112))   # and sysexits.h's
STOP = X.DELIVERY_OK_STOP


def run(command, fd0, env, cwd):
    """Run `command`; return (stop, output bytes). Raises Die for failures."""
    import subprocess
    message.rewind(fd0)
    try:
        proc = subprocess.run([SHELL, "-c", command], stdin=fd0, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, env=env, cwd=cwd)
    except OSError as e:
        raise errors.temp("Unable to run /bin/sh: %s. (#4.3.0)" % errors.error_str(e)) from None
    code = proc.returncode
    if code < 0:
        raise errors.Die(errors.TEMP, errors.CHILD_CRASHED, proc.stdout)
    if code == 0:
        return False, proc.stdout
    if code == STOP:
        return True, proc.stdout
    raise errors.Die(errors.PERM if code in PERMANENT else errors.TEMP, None, proc.stdout)

