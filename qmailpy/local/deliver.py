"""qmail-local's main(): arguments, safety checks, then each .qmail line in order.

deliver(argv, fd0, environ) -> (exit code, report) does it all without
exec, chdir or signals, so qmail-lspawn may call it in-process; main.py is
the command-line wrapper, which writes report_parts() to their fds. The
report is what qmail-local prints (stdout and stderr share qmail-lspawn's
pipe): program output, then either the error line or `did
<files>+<forwards>+<programs>` and `qp <pid>` after a forward. As in
qmail-local.c, its own warnings and errors (strerr) are for fd 2, the rest
(substdio on fd 1) for fd 1.
"""
import os

from qmailpy.local import dotqmail, errors, headers, message
from qmailpy.log import bug_text

# What qmail-local keeps of its programs' output, all of them together: qmail-lspawn keeps 3000
# bytes of a report (spawn.c's truncreport), so a program that prints without end (its output
# in qmail goes straight to qmail-lspawn's pipe) must not grow qmail-local without end either.
REPORT_MAX = 65536


class Args:
    """The eight positional arguments and the -n/-N flag."""
    __slots__ = ("flagdoit", "user", "homedir", "local", "dash", "ext", "host",
                 "sender", "aliasempty")


class Lines:
    """Delivered-To (dt), Return-Path (rp) and mbox From_ (uf) lines, as bytes."""
    __slots__ = ("dt", "rp", "uf")


def parse_args(argv, err):
    """djb's getopt("nN") (its complaint to `err`) then exactly eight arguments; homedir must
    be absolute."""
    from qmailpy.sgetopt import GetOpt
    a = Args()
    a.flagdoit = True
    opts = GetOpt("qmail-local", list(argv), "nN", err)
    for ch, _ in opts:
        if ch == "?":
            raise errors.perm(errors.USAGE)
        a.flagdoit = ch == "N"
    argv = opts.rest()
    if len(argv) != 8:
        raise errors.perm(errors.USAGE)
    (a.user, a.homedir, a.local, a.dash, a.ext, a.host, a.sender, a.aliasempty) = argv
    if not a.homedir.startswith("/"):
        raise errors.perm(errors.USAGE)
    return a


def deliver(argv, fd0, environ):
    """Deliver the message on `fd0` (seekable) as `qmail-local argv...` would.

    `argv` excludes the program name. Returns (0 | 100 | 111, report); the
    report is surrogate-escaped text: .encode("utf-8", "surrogateescape")
    gives the exact bytes qmail-local would print.
    """
    code, parts = report_parts(argv, fd0, environ)
    return code, b"".join(data for _, data in parts).decode("utf-8", "surrogateescape")


def report_parts(argv, fd0, environ):
    """deliver()'s work: (code, [(fd, bytes), ...]), the report in order, each part for the fd
    qmail-local.c writes it to: getopt's complaint and the sticky-home warning (2), the `-n`
    lines, programs' output, `did`/`qp` (1), the error line (2)."""
    warned, out = bytearray(), bytearray()
    tail = b""
    try:
        _deliver(argv, fd0, dict(environ), out, warned)
        code = errors.OK
    except errors.Die as e:
        out += e.output
        if e.text is not None:
            tail = e.text.encode("utf-8", "surrogateescape") + b"\n"
        code = e.code
    except Exception as e:             # a bug here must not lose the message: retry later
        tail = ("qmail-local: unexpected %s (#4.3.0)\n" % bug_text(e)).encode(
            "utf-8", "surrogateescape")
        code = errors.TEMP
    return code, [(fd, bytes(data)) for fd, data in ((2, warned), (1, out), (2, tail)) if data]


def _lines(a, now):
    import time
    lines = Lines()
    lines.dt = headers.dtline(a.local, a.host)
    lines.rp = headers.rpline(a.sender)
    lines.uf = headers.ufline(a.sender, time.time() if now is None else now)
    return lines


def _deliver(argv, fd0, environ, out, warned, now=None):
    a = parse_args(argv, lambda text: warned.extend(text.encode("utf-8", "surrogateescape")))
    for warning in dotqmail.check_home(a.homedir, a.flagdoit):
        warned += warning.encode() + b"\n"
    lines = _lines(a, now)
    if a.flagdoit:
        message.check_loop(fd0, lines.dt)
    found = dotqmail.search(a.homedir, a.dash, a.ext)
    if found is None and a.dash:
        raise errors.perm(errors.NO_MAILBOX)
    newsender = dotqmail.new_sender(a.homedir, a.dash, a.ext, a.local, a.host, a.sender)
    content, forwardonly, default = found if found is not None else (b"", False, None)
    if not content:
        content, forwardonly = os.fsencode(a.aliasempty), False
    env = headers.environment(environ, a, lines, newsender, default)
    _run(a, content, forwardonly, fd0, lines, env, newsender, out)


def _commands(content, a):
    """The .qmail lines, a vdelivermail line replaced by what it means (local/vdelivermail.py)."""
    for kind, arg in dotqmail.commands(content):
        if kind == "program" and a.flagdoit and "vdelivermail" in arg:
            from qmailpy.local import vdelivermail
            args = vdelivermail.arguments(arg)
            if args is not None:
                yield from vdelivermail.commands(args, a.homedir)
                continue
        yield kind, arg


def _run(a, content, forwardonly, fd0, lines, env, newsender, out):
    """The .qmail loop: files and programs now, forwards collected for one queue call."""
    from qmailpy.local import forward, maildir, mbox, program
    files = programs = 0
    recipients = []
    head = lines.rp + lines.dt
    for kind, arg in _commands(content, a):
        if kind == "bounce":                 # vdelivermail's bounce-no-mailbox: its text, exit 100
            raise errors.Die(errors.PERM, None, arg)
        if kind in ("maildir", "mbox"):
            files += 1
            if forwardonly:
                raise errors.temp(errors.FILE_BUT_X)
            if not a.flagdoit:
                out += os.fsencode("%s %s\n" % (kind, arg))
            elif kind == "maildir":
                maildir.deliver(os.path.join(a.homedir, arg), fd0, head, env)
            else:
                mbox.deliver(os.path.join(a.homedir, arg), arg, fd0, lines.uf, head)
        elif kind == "program":
            programs += 1
            if forwardonly:
                raise errors.temp(errors.PROG_BUT_X)
            if not a.flagdoit:
                out += os.fsencode("program %s\n" % arg)
                continue
            stop, said = program.run(arg, fd0, env, a.homedir, max(0, REPORT_MAX - len(out)))
            out += said
            if stop:
                break
        elif kind == "list":
            forwardonly = True
        else:
            recipients.append(arg)
            if not a.flagdoit:
                out += os.fsencode("forward %s\n" % arg)
    qp = None
    if recipients and a.flagdoit:
        qp = forward.forward(recipients, fd0, lines.dt, newsender, env)
    out += b"did %d+%d+%d\n" % (files, len(recipients), programs)
    if qp:
        out += b"qp %d\n" % qp
