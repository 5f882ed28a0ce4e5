"""qmail-inject: prepare a message (header rewriting, Date, Message-ID, From) and queue it.

usage: qmail-inject [ -nNaAhH ] [ -fsender ] [ recip ... ]

As qmail-inject(8) and qmail-header(5) of qmail 1.03 (docs/qmail-inject.md):
the message comes on stdin; address fields are rewritten (qmailpy.inject.
rewrite); Date, Message-ID and From (or their Resent- forms when the message
has a Resent- field) are added when missing, and `Cc: recipient list not
shown: ;` when there is no To or Cc; Bcc, Resent-Bcc, Return-Path and
Content-Length are removed. Recipients are the arguments (-a), the To, Cc,
Bcc and Apparently-To fields (-h; Resent-To, Resent-Cc, Resent-Bcc when
Resent- fields are present), or both (-H); default -a with arguments, else -h.
The message goes to qmail-queue ($QMAILQUEUE, else bin/qmail-queue of the
home: qmailpy.smtpd.queueclient, the one place that starts it), which
writes `Received: (qmail PID invoked by uid UID)` for the caller; -n prints
it with a Return-Path line instead.

Exit codes as qmail's: 0 queued (or printed), 100 permanent (a line that
does not parse, a bad option, the queue refusing for good), 111 temporary.
"""
import errno
import os
import sys
import time

from qmailpy import exitcodes as X
from qmailpy.inject import headers as H
from qmailpy.inject import rewrite as RW
from qmailpy.inject import token822 as T
from qmailpy.inject.prepare import PERM, TEMP, Fatal, Identity, Injector, read_controls, read_mft
from qmailpy.log import guard
from qmailpy.proto.quote import quote2
from qmailpy.sgetopt import GetOpt

PROG = "qmail-inject"
USAGE = "usage: qmail-inject [ -nNaAhH ] [ -fsender ] [ recip ... ]"
HELP = USAGE + """
Reads a message on stdin, rewrites its header as qmail-inject(8) does and queues it.
  -a  recipients are the arguments          -h  recipients are the header's To, Cc, Bcc
  -H  both arguments and header             -A  -a with arguments, else -h (the default)
  -n  print the message instead of queueing -N  queue it (the default)
  -f  the envelope sender
Environment: QMAILUSER, QMAILNAME, QMAILHOST, QMAILINJECT (c s f i r m), QMAILSUSER,
QMAILSHOST, QMAILDEFAULTDOMAIN, QMAILDEFAULTHOST, QMAILPLUSDOMAIN, QMAILIDHOST,
QMAILMFTFILE, QMAILQUEUE, QMAILHOME. Exit 0 done, 100 permanent error, 111 temporary.
"""
CHUNK = 65536


# -- the program

def _lines(stream):
    return iter(stream.readline, b"")


def _copy_body(first, stream, put):
    """The body: the line that started it, then the rest in chunks; a last line gets its newline."""
    last = first[-1:]
    put(first)
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            break
        put(chunk)
        last = chunk[-1:]
    if last and last != b"\n":
        put(b"\n")


class _Printer:
    """-n's output. qmail-inject's put() does not look at substdio_put()'s -1: once
    stdout cannot be written (qmail-inject -n | head -1) the rest is dropped, the
    message is still read to its end, and the exit code is 0."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, data):
        if self.stream is None:
            return
        try:
            view = memoryview(data)
            while view:
                n = self.stream.write(view)
                if n is None:                   # a non-blocking stdout that is full
                    raise BlockingIOError
                view = view[n:]
        except OSError:
            self.stream = None

    def flush(self):
        if self.stream is not None:
            try:
                self.stream.flush()
            except OSError:
                self.stream = None


class _ClosedInput:
    """Descriptor 0 closed when the program started (Python's sys.stdin is None): every read
    fails, as qmail's read(0) does with EBADF (its 'read error')."""

    def readline(self, *args):
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))

    read = readline


def std_streams():
    """(stdin, stdout) for run(): binary, stdout unbuffered (a failed write leaves nothing for
    the exit-time flush); a descriptor closed at start reads as an error, writes as dropped."""
    stdin = sys.stdin.buffer if sys.stdin is not None else _ClosedInput()
    stdout = sys.stdout.buffer.raw if sys.stdout is not None else None
    return stdin, stdout


def parse_args(args, environ):
    """(recipient strategy, queue?, sender or None, recipient arguments); Fatal on a bad option."""
    strategy, queue, sender = "default", True, None
    opts = GetOpt(PROG, args, "aAhHnNf:")
    for c, arg in opts:
        if c == "a":
            strategy = "args"
        elif c == "A":
            strategy = "default"
        elif c == "h":
            strategy = "header"
        elif c == "H":
            strategy = "both"
        elif c == "n":
            queue = False
        elif c == "N":
            queue = True
        elif c == "f":
            sender = os.fsencode(arg)
        else:
            raise Fatal(PERM, None)
    rest = [os.fsencode(a) for a in opts.rest()]
    if strategy == "default":
        strategy = "args" if rest else "header"
    return strategy, queue, sender, rest


def run(args, environ, stdin, stdout, now=None, pid=None, open_queue=None):
    """qmail-inject with `args` (after the program name) on binary streams; the exit code.

    open_queue(environ) gives the queue job (default: qmail-queue, see _open_queue).
    """
    from qmailpy import paths
    try:
        who = Identity(environ, os.getpid() if pid is None else pid, time.time() if now is None else now)
        lists = read_mft(who.mftfile)               # mft_init(): first, whatever the message
        home = paths.qmailhome(environ)
        if not os.path.isdir(home):
            raise Fatal(TEMP, "internal bug")          # qmail: chdir(auto_qmail) failed
        ctl, idhost = read_controls(home, environ)
        strategy, queue, sender_arg, rest = parse_args(args, environ)
        sender = None
        if sender_arg is not None:
            try:
                sender = RW.rewrite_text(sender_arg, ctl)
            except T.ParseError:            # doordie(&sender,...): the quote2() form, no newline
                raise Fatal(PERM, "unable to parse this line:\n%s" % os.fsdecode(quote2(sender_arg)),
                            end="") from None
        inj = Injector(who, ctl, idhost, sender, lists)
        if strategy != "header":
            for r in rest:
                inj.add_recipient(r)
        return _inject(inj, stdin, stdout, queue, strategy != "args", environ, open_queue or _open_queue)
    except Fatal as e:
        return _fatal(e)
    except MemoryError:
        return _fatal(Fatal(TEMP, "out of memory"))


def _fatal(e):
    if e.text is not None:
        os.write(2, ("%s: fatal: %s%s" % (PROG, e.text, e.end)).encode("utf-8", "surrogateescape"))
    return e.code


def _inject(inj, stdin, stdout, queue, from_header, environ, open_queue):
    job = None
    body = None
    try:
        for kind, data in H.split(_lines(stdin)):
            if kind == "field":
                inj.field(data)
            elif kind == "end":
                head = inj.finish_header(with_return_path=not queue)
                if queue:
                    job = open_queue(environ)
                    put = job.write
                else:
                    stdout = _Printer(stdout)
                    put = stdout.write
                put(head)
            else:
                body = data
        if body is not None:
            _copy_body(body, stdin, put)
    except OSError:
        if job is not None:
            job.abort()
        raise Fatal(TEMP, "read error") from None
    except BaseException:
        if job is not None:
            job.abort()
        raise
    if not queue:
        stdout.flush()
        return 0
    sender, recips = inj.envelope(from_header)
    code = job.finish(sender, recips)
    if code == 0:
        return 0
    kind, text = X.QQ_CRASHED if code < 0 else X.qq_status(code)
    raise Fatal(PERM if kind == X.PERMANENT else TEMP, text)


def _open_queue(environ):
    from qmailpy.smtpd.queueclient import start_job
    try:
        return start_job(environ)
    except OSError:                             # pipe() or fork(): die_qqt
        raise Fatal(TEMP, "unable to run qmail-queue") from None


@guard("qmail-inject", X.EXIT_TROUBLE)
def main(argv=None):
    argv = sys.argv if argv is None else argv
    from qmailpy.progstart import start
    start(HELP, argv)           # SIGCHLD back to default (qmail-queue's answer), --help
    return run(argv[1:], os.environ, *std_streams())
