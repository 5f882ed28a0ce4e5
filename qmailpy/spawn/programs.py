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
