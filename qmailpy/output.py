"""A program's result on stdout: qmail-showctl's parameters, qmail-qread's (and sendmail
-bp's) list, qmail-qstat's counts, qmail-users' and setsrssecret's listings, qmail-config's
lines, the admin tools' --help.

Each piece is written and flushed at once. A write that fails ends the program as
qmail-qread.c does (`if (substdio_puts(subfdout, s) == -1) _exit(111)`): one line
`PROGRAM: fatal: unable to write output: REASON` on stderr (qmail's error_str words) and exit
111 at once, so nothing still buffered is written later; never exit 0 having printed half of
the result, nor an internal bug line. (qmail-qread and sendmail -bp leave SIGPIPE at its
default: a reader that went away ends them by the signal, silently, as qmail-qread.)
"""
import os
import sys

from qmailpy.errstr import error_str
from qmailpy.exitcodes import EXIT_TROUBLE
from qmailpy.log import write_line


def output(text, nl=True):
    """Write text (and a newline) to stdout now; a failure is the fatal line and exit 111."""
    try:
        sys.stdout.write(text + "\n" if nl else text)
        sys.stdout.flush()
    except OSError as e:
        _fatal(e)


def _fatal(e):
    write_line(2, "%s: fatal: unable to write output: %s" % (os.path.basename(sys.argv[0]), error_str(e)))
    os._exit(EXIT_TROUBLE)


class _CheckedStdout:
    """sys.stdout while click writes on its own (--help, --version): a failed write is
    output()'s fatal line too, not an internal bug."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except OSError as e:
            _fatal(e)

    def flush(self):
        try:
            self._stream.flush()
        except OSError as e:
            _fatal(e)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def click_main(command, **kwargs):
    """Run a click command (the admin tools' main) with its own writes checked as output()'s."""
    sys.stdout = _CheckedStdout(sys.stdout)
    return command(**kwargs)
