"""The program bouncesaying, condredirect and except run, as their C does it.

fork, execvp (a $PATH search) with our fds and environment, wait. A program
that cannot be run counts as exiting 111 for a temporary errno (qmail's
error_temp), else 100: the C child's `_exit(error_temp(errno) ? 111 : 100)`.
Then the three agree: a crash is `child crashed`, exit 111 is `temporary child
error`, both 111; a failed fork is `unable to fork: <error>`, 111.
"""
from qmailpy.local.helpers.strerr import die, die_sys

TEMPORARY = 111


def status(fatal, argv):
    """Run argv; its exit code, never 111 (that dies, as every trouble above, with `fatal`)."""
    import os
    from qmailpy import forkexec
    from qmailpy.errstr import error_temp
    try:
        pid = forkexec.start(argv, {}, os.environ, search=True)
    except OSError as e:
        if e.filename is None:                      # no child got to exec: fork (or its pipe)
            die_sys(TEMPORARY, fatal, "unable to fork: ", error=e)
        code = TEMPORARY if error_temp(e) else 100
    else:
        try:
            code = forkexec.wait(pid)
        except OSError:
            die(TEMPORARY, fatal, "wait failed")
        if code < 0:
            die(TEMPORARY, fatal, "child crashed")
    if code == TEMPORARY:
        die(TEMPORARY, fatal, "temporary child error")
    return code
