"""preline [-frdFRD] command [arg ...]: the message to command behind qmail-local's lines.

As qmail's preline: $UFLINE (the From_ line), $RPLINE (Return-Path) and $DTLINE
(Delivered-To) are written, in that order, before the message from fd 0, into
a pipe that is command's fd 0 (command found by execvp's $PATH search). -f,
-r, -d leave out one each; -F, -R, -D put it back (djb's getopt, qmailpy.sgetopt).
Exit: command's exit code; a crash `child crashed` 111; command not run
`unable to run <command>: <error>` (111 for a temporary error, else 100);
`unable to copy input: <error>` 111: a read error, or a full 8192-byte buffer the command
did not take (it stopped reading early); what is left for the final flush is written
without a check, as preline.c ignores substdio_flush()'s result.
Any of the three variables missing, an unknown option or no command: the usage
line, exit 100.
"""
from qmailpy.exitcodes import EXIT_TROUBLE
from qmailpy.log import guard

FATAL = "preline: fatal: "
USAGE_LINE = "preline: usage: preline cmd [ arg ... ]"
LINES = ("UFLINE", "RPLINE", "DTLINE")          # -f, -r, -d
OUTSIZE = 8192                                  # SUBSTDIO_OUTSIZE, preline's output buffer
USAGE = """usage: preline [ -frdFRD ] cmd [ arg ... ]
A .qmail line: runs cmd with the message behind $UFLINE, $RPLINE and $DTLINE.
See docs/preline.md."""


@guard("preline", EXIT_TROUBLE)
def main(argv=None):
    import os
    from qmailpy.local.helpers.begin import begin
    from qmailpy.local.helpers.strerr import die
    argv = begin(USAGE, argv, 0, None)
    if any(name not in os.environ for name in LINES):
        die(100, USAGE_LINE)
    from qmailpy.sgetopt import GetOpt
    wanted = [True, True, True]
    opts = GetOpt(os.path.basename(argv[0]), argv[1:], "frdFRD")
    for letter, _ in opts:
        if letter == "?":
            die(100, USAGE_LINE)
        wanted["frd".index(letter.lower())] = letter.isupper()
    command = opts.rest()
    if not command:
        die(100, USAGE_LINE)
    head = b"".join(os.fsencode(os.environ[name]) for name, on in zip(LINES, wanted) if on)
    return run(command, head)


def run(command, head):
    """command with head + fd 0 on its fd 0; its exit code, or die as preline.c does."""
    import os
    from qmailpy import forkexec
    from qmailpy.errstr import error_temp
    from qmailpy.fileio import write_all
    from qmailpy.local.helpers.strerr import die, die_sys
    from qmailpy.local.message import read_chunks
    r, w = os.pipe()
    try:
        pid = forkexec.start(command, {0: r}, os.environ, search=True)
    except OSError as e:
        if e.filename is None:
            die_sys(111, FATAL, "unable to fork: ", error=e)
        die_sys(111 if error_temp(e) else 100, FATAL, "unable to run ", command[0], ": ", error=e)
    finally:
        os.close(r)
    pending = bytearray(head)
    try:
        for data in read_chunks(0):
            pending += data
            while len(pending) > OUTSIZE:             # substdio writes a full buffer
                write_all(w, pending[:OUTSIZE])
                del pending[:OUTSIZE]
    except OSError as e:
        os.close(w)
        die_sys(111, FATAL, "unable to copy input: ", error=e)
    try:
        write_all(w, pending)                         # substdio_flush(): its result is not checked
    except OSError:
        pass
    finally:
        os.close(w)
    try:
        code = forkexec.wait(pid)
    except OSError as e:
        die_sys(111, FATAL, "wait failed: ", error=e)
    if code < 0:
        die(111, FATAL, "child crashed")
    return code
