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
import os
import sys
import time

from qmailpy import exitcodes as X
from qmailpy.inject import headers as H
from qmailpy.inject import rewrite as RW
from qmailpy.inject import token822 as T
from qmailpy.inject.sgetopt import GetOpt
from qmailpy.proto.quote import quote2, quote_needed

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
PERM, TEMP = X.DELIVERY_PERMANENT, X.DELIVERY_TEMPORARY
CHUNK = 65536

# How each known field is rewritten and which recipient lists its addresses join.
TOCC, HR, HRR, RETURN, SENDER = "tocc", "hr", "hrr", "return", "sender"
REWRITE = {H.TO: TOCC, H.CC: TOCC, H.BCC: HR, H.APPARENTLYTO: HR,
           H.R_TO: HRR, H.R_CC: HRR, H.R_BCC: HRR, H.RETURNPATH: RETURN,
           H.SENDER: SENDER, H.FROM: SENDER, H.REPLYTO: SENDER, H.RETURNRECEIPTTO: SENDER,
           H.ERRORSTO: SENDER, H.R_SENDER: SENDER, H.R_FROM: SENDER, H.R_REPLYTO: SENDER}
DROPPED = frozenset((H.BCC, H.R_BCC, H.RETURNPATH, H.CONTENTLENGTH))


class Fatal(Exception):
    """qmail-inject: fatal: <text>; `code` 100 or 111."""

    def __init__(self, code, text):
        super().__init__(text)
        self.code, self.text = code, text


def _env(environ, *names):
    """The first of `names` set in the environment (even if empty), as bytes, else None."""
    for name in names:
        value = environ.get(name)
        if value is not None:
            return os.fsencode(value)
    return None


class Identity:
    """Who the message is from, by the environment (qmail-inject's main())."""

    def __init__(self, environ, pid, now):
        self.pid, self.now = pid, int(now)
        flags = environ.get("QMAILINJECT", "")
        self.namecomment = "c" in flags
        self.delete_sender = "s" in flags
        self.delete_from = "f" in flags
        self.delete_messageid = "i" in flags
        self.hackrecip = "r" in flags
        self.hackmess = "m" in flags
        self.host = _env(environ, "QMAILHOST", "MAILHOST")
        self.rhost = _env(environ, "QMAILSHOST")
        if self.rhost is None:
            self.rhost = self.host
        self.user = _env(environ, "QMAILUSER", "MAILUSER", "USER", "LOGNAME") or b"anonymous"
        self.ruser = _env(environ, "QMAILSUSER")
        if self.ruser is None:
            self.ruser = self.user
        self.fullname = _env(environ, "QMAILNAME", "MAILNAME", "NAME")
        self.mftfile = environ.get("QMAILMFTFILE")


def read_controls(home, environ):
    """(ControlTokens, idhost) from control/ and their QMAIL* overrides; Fatal when unreadable."""
    from qmailpy.ctl.reader import ControlError, Controls
    controls = Controls(home, environ)
    try:
        values = [os.fsencode(controls.value(name))
                  for name in ("defaulthost", "defaultdomain", "plusdomain", "idhost")]
    except ControlError as e:
        raise Fatal(TEMP, "unable to read controls: %s" % e) from None
    try:
        ctl = RW.ControlTokens(values[0], values[1], values[2])
    except T.ParseError:
        raise Fatal(PERM, "unable to parse this line:\n%s" % b" ".join(values[:3]).decode(
            "utf-8", "replace")) from None
    return ctl, values[3]


def read_mft(path):
    """Lower-cased addresses of QMAILMFTFILE (mailing lists), or None when it does not exist."""
    from qmailpy.ctl.parse import entries, numbered, text_lines
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise Fatal(TEMP, "unable to read %s: %s" % (path, e.strerror)) from None
    return {os.fsencode(x).lower() for x in entries(numbered(text_lines(data)))[0]}


def date_field(now):
    from qmailpy.proto.date822 import date822
    return b"Date: " + date822(now).encode() + b"\n"


def msgid_field(now, pid, idhost):
    """Message-ID: <YYYYMMDDhhmmss.PID.qmail@idhost>, the time in UTC."""
    t = time.gmtime(now)
    return b"Message-ID: <%04d%02d%02d%02d%02d%02d.%d.qmail@%s>\n" % (
        t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, pid, idhost)


class Injector:
    """The state of one qmail-inject run; `out` takes the finished message in pieces."""

    def __init__(self, who, ctl, idhost, sender=None):
        self.who, self.ctl, self.idhost = who, ctl, idhost
        self.sender = sender                  # envelope sender (bytes), None until known
        self.seen = set()
        self.saved = []
        self.hr, self.hrr, self.tocc, self.recips = [], [], [], []
        self.resent = False

    # -- addresses

    def add_recipient(self, text):
        """A recipient argument (dorecip)."""
        try:
            self.recips.append(RW.rewrite_text(text, self.ctl))
        except T.ParseError:
            raise Fatal(PERM, "unable to parse address: %s" % text.decode("utf-8", "surrogateescape")) from None

    def _set_return(self, addr):
        if self.sender is None:
            self.sender = RW.envelope(addr) + (b"-@[]" if self.who.hackrecip else b"")

    def _callback(self, kind):
        lists = {TOCC: (self.hr, self.tocc), HR: (self.hr,), HRR: (self.hrr,)}.get(kind, ())

        def rw(addr):
            RW.generic(addr, self.ctl)
            if kind == RETURN:
                self._set_return(addr)
            for target in lists:
                target.append(RW.envelope(addr))
        return rw

    def _rewrite(self, field, kind):
        try:
            return T.unparse(T.addrlist(T.parse(field), self._callback(kind)))
        except T.ParseError:
            raise Fatal(PERM, "unable to parse this line:\n%s" % field.decode(
                "utf-8", "surrogateescape").rstrip("\n")) from None

    # -- the header

    def field(self, field):
        """doheaderfield(): rewrite, note and keep (or drop) one header field."""
        htype = H.known(field)
        who = self.who
        if ((who.delete_from and htype == H.FROM) or (who.delete_messageid and htype == H.MESSAGEID)
                or (who.delete_sender and htype == H.RETURNPATH)):
            return
        if htype:
            self.seen.add(htype)
        kind = REWRITE.get(htype)
        if kind:
            field = self._rewrite(field, kind)
        if htype not in DROPPED:
            self.saved.append(field)

    def _default_from(self):
        """From: "Full Name" <user@host> (or user@host (Full Name) with QMAILINJECT=c), rewritten."""
        who = self.who
        toks = [T.Token(T.ATOM, b"From"), T.Token(T.COLON)]
        named = who.fullname is not None
        if named and not who.namecomment:
            toks += [T.Token(T.QUOTE, who.fullname), T.Token(T.LEFT)]
        toks.append(T.Token(T.QUOTE if quote_needed(who.user) else T.ATOM, who.user))
        if who.host is not None:
            toks += [T.Token(T.AT), T.Token(T.ATOM, who.host)]
        if named and not who.namecomment:
            toks.append(T.Token(T.RIGHT))
        if named and who.namecomment:
            toks.append(T.Token(T.COMMENT, who.fullname))
        return self._rewrite(T.unparse(toks), SENDER)

    def _default_return_path(self):
        """The envelope sender from QMAILSUSER/QMAILSHOST (QMAILINJECT m and r add to it)."""
        who = self.who
        user = who.ruser
        if who.hackmess:
            user += b"-%d.%d" % (who.now, who.pid)
        if who.hackrecip:
            user += b"-"
        toks = [T.Token(T.ATOM, b"Return-Path"), T.Token(T.COLON), T.Token(T.QUOTE, user)]
        if who.rhost is not None:
            toks += [T.Token(T.AT), T.Token(T.ATOM, who.rhost)]
        self._rewrite(T.unparse(toks), RETURN)

    def _mft(self):
        """Mail-Followup-To when a To/Cc recipient is a list of QMAILMFTFILE."""
        if not self.who.mftfile or H.MAILFOLLOWUPTO in self.seen:
            return b""
        lists = read_mft(self.who.mftfile)
        if not lists or not any(a.lower() in lists for a in self.tocc):
            return b""
        return b"Mail-Followup-To: " + b",\n  ".join(quote2(a) for a in reversed(self.tocc)) + b"\n"

    def finish_header(self, with_return_path):
        """finishheader(): what comes before the saved fields, the saved fields; bytes."""
        self.resent = bool(self.seen & H.RESENT)
        if self.sender is None:
            self._default_return_path()
        out = []
        if with_return_path:
            out.append(b"Return-Path: <" + quote2(self.sender) + b">\n")
        now, pid = self.who.now, self.who.pid
        if self.resent:
            prefix, names = b"Resent-", (H.R_DATE, H.R_MESSAGEID, H.R_FROM, H.R_TO, H.R_CC)
        else:
            prefix, names = b"", (H.DATE, H.MESSAGEID, H.FROM, H.TO, H.CC)
        date, msgid, from_, to, cc = names
        if date not in self.seen:
            out.append(prefix + date_field(now))
        if msgid not in self.seen:
            out.append(prefix + msgid_field(now, pid, self.idhost))
        if from_ not in self.seen:
            out.append(prefix + self._default_from())
        if to not in self.seen and cc not in self.seen:
            out.append(prefix + b"Cc: recipient list not shown: ;\n")
        if not self.resent:
            out.append(self._mft())
        return b"".join(out + self.saved)

    def envelope(self, from_header):
        """(sender, recipients) for qmail-queue."""
        recips = list(self.recips)
        if from_header:
            recips += self.hrr if self.resent else self.hr
        return self.sender, [r.split(b"\0", 1)[0] for r in recips]


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
        home = paths.qmailhome(environ)
        if not os.path.isdir(home):
            raise Fatal(TEMP, "internal bug")          # qmail: chdir(auto_qmail) failed
        ctl, idhost = read_controls(home, environ)
        strategy, queue, sender_arg, rest = parse_args(args, environ)
        sender = None
        if sender_arg is not None:
            try:
                sender = RW.rewrite_text(sender_arg, ctl)
            except T.ParseError:
                raise Fatal(PERM, "unable to parse this line:\n%s" % os.fsdecode(sender_arg)) from None
        inj = Injector(who, ctl, idhost, sender)
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
        os.write(2, ("%s: fatal: %s\n" % (PROG, e.text)).encode("utf-8", "surrogateescape"))
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
    except OSError:
        raise Fatal(TEMP, "unable to run qmail-queue") from None


def main(argv=None):
    argv = sys.argv if argv is None else argv
    from qmailpy.progstart import start
    start(HELP, argv)           # SIGCHLD back to default (qmail-queue's answer), --help
    return run(argv[1:], os.environ, sys.stdin.buffer, sys.stdout.buffer)
