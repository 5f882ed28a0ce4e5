"""What qmail's small admin programs share: --help, qmail's usage line and fatal messages.

`--help` prints the program's help on stdout and exits 0 (qmail's programs
have no options; this one is ours). A usage error prints
`PROG: usage: ...` and exits 100; trouble prints `PROG: fatal: ...` and
exits 111, as qmail's strerr_die does.
"""
import errno
import os
import sys

from qmailpy.exitcodes import EXIT_TROUBLE as TROUBLE, EXIT_USAGE as USAGE_ERROR


class Fatal(Exception):
    """PROG: fatal: <text>, exit `code` (111 unless said)."""

    def __init__(self, text, code=TROUBLE):
        super().__init__(text)
        self.text, self.code = text, code


class Usage(Exception):
    """PROG: usage: <usage>, exit 100."""


def oserror(e, what):
    """A Fatal for an OSError: 'unable to <what>: <reason>', the reason in qmail's words
    (error_str: `file does not exist`, `file already exists`), as strerr_die*sys prints it;
    an errno qmail's table lacks keeps the system's text."""
    from qmailpy.errstr import error_str
    reason = error_str(e)
    return Fatal("unable to %s: %s" % (what, e.strerror or e if reason == "unknown error" else reason))


def os_text(e):
    """'FILE: reason' of an OSError, for our own tools' messages (Python's '[Errno N] reason:
    FILE' is not for admins); the reason alone when it names no file."""
    reason = e.strerror or str(e)
    return "%s: %s" % (e.filename, reason) if e.filename else reason


def missing_control_directory(home):
    """Why the tools that write into control/ cannot start: None when it is a directory;
    "" when there is none (the caller says "install the qmail home first" in its words); the
    reason (os_text) when it could not be looked at (EIO): never taken for an absent one."""
    import stat
    from qmailpy import paths
    try:
        return None if stat.S_ISDIR(os.stat(paths.control_path(home, "")).st_mode) else ""
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return ""
        return os_text(e)


def read(path, shown):
    """The bytes of a source file; Fatal('unable to read <shown>: ...') when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise oserror(e, "read " + shown) from None


def write_cdb(path, pairs, shown):
    """Replace the cdb at `path` (qmailpy.fileio); Fatal('unable to write <shown>: ...')."""
    from qmailpy.fileio import write_cdb as replace
    try:
        replace(path, pairs)
    except OSError as e:
        raise oserror(e, "write " + shown) from None


def on_home(action):
    """A body for a program that takes no arguments: action(qmail home)."""
    def body(args):
        if args:
            raise Usage()
        from qmailpy import paths
        action(paths.qmailhome(os.environ))
        return 0
    return body


def run_tool(prog, usage, help_text, body, argv=None):
    """Run body(args) -> exit code with qmail's conventions; the exit code."""
    argv = sys.argv if argv is None else argv
    args = argv[1:]
    if args[:1] == ["--help"]:
        from qmailpy.output import output
        output("usage: %s\n\n%s" % (usage, help_text), nl=False)
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
