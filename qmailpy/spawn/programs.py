"""Where the helper programs are: $VAR, else beside our own launcher, else bin/ of the home.

Looking beside sys.argv[0] first lets a checkout's bin/ run against any
$QMAILHOME (tests, `make run`) as qmail's programs find each other in bin/.
"""
import os
import sys

from qmailpy import paths


def program_path(environ, name, env_name):
    """$env_name if set, else NAME beside our launcher if executable, else bin/NAME of the home."""
    got = environ.get(env_name) if env_name else None
    if got:
        return got
    mine = os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), name)
    if os.access(mine, os.X_OK):
        return mine
    return paths.bin_path(paths.qmailhome(environ), name)


def start(args, fdmess, fdout, cwd, env, unable, ids=None):
    """Popen a delivery program (message on fd 0, output and errors on fdout), or the
    report `unable` gives for a failed exec: (soft, hard) by errno, as qmail's spawn does."""
    import subprocess
    from qmailpy.spawn.mailbox import TEMP_ERRORS
    try:
        return subprocess.Popen(args, stdin=fdmess, stdout=fdout, stderr=subprocess.STDOUT,
                                cwd=cwd, env=env, **(ids or {}))
    except OSError as e:
        soft, hard = unable
        return soft if e.errno in TEMP_ERRORS else hard
