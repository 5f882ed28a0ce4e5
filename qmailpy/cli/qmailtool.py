"""What qmail's small admin programs share: --help, qmail's usage line and fatal messages.

`--help` prints the program's help on stdout and exits 0 (qmail's programs
have no options; this one is ours). A usage error prints
`PROG: usage: ...` and exits 100; trouble prints `PROG: fatal: ...` and
exits 111, as qmail's strerr_die does.
"""
import os
import sys

USAGE_ERROR, TROUBLE = 100, 111


class Fatal(Exception):
    """PROG: fatal: <text>, exit `code` (111 unless said)."""

    def __init__(self, text, code=TROUBLE):
        super().__init__(text)
        self.text, self.code = text, code


class Usage(Exception):
    """PROG: usage: <usage>, exit 100."""


def oserror(e, what):
    """A Fatal for an OSError: 'unable to <what>: <reason>'."""
    return Fatal("unable to %s: %s" % (what, e.strerror or e))


def run_tool(prog, usage, help_text, body, argv=None):
    """Run body(args) -> exit code with qmail's conventions; the exit code."""
    argv = sys.argv if argv is None else argv
    args = argv[1:]
    if args[:1] == ["--help"]:
        sys.stdout.write("usage: %s\n\n%s" % (usage, help_text))
        return 0
    try:
        return body(args) or 0
    except Usage:
        msg = "%s: usage: %s\n" % (prog, usage)
        code = USAGE_ERROR
    except Fatal as e:
        msg = "%s: fatal: %s\n" % (prog, e.text)
        code = e.code
    os.write(2, msg.encode("utf-8", "surrogateescape"))
    return code
