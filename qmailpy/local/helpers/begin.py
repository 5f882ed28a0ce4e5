"""What each of these programs does first: progstart (SIGCHLD, `--help`), then qmail's usage check."""
import sys


def begin(usage, argv, least, usage_line):
    """argv (sys.argv when None), once it holds `least` words after the program name;
    else `usage_line` on fd 2 and exit 100 (strerr_die1x(100, ...))."""
    from qmailpy.progstart import start
    argv = sys.argv if argv is None else argv
    start(usage, argv)
    if len(argv) <= least:
        from qmailpy.local.helpers.strerr import die
        die(100, usage_line)
    return argv
