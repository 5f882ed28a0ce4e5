"""What qmail-inject makes of a message's header: who it is from, the fields rewritten,
Date, Message-ID and From added, the recipients collected (qmail-inject.c's header work).

Identity reads the environment (QMAILUSER, QMAILHOST, QMAILINJECT, ...),
read_controls() the controls (defaulthost, defaultdomain, plusdomain, idhost);
an Injector takes the header field by field and gives the new header and the
envelope. qmailpy.inject.main is the program around it.
"""
import os
import time

from qmailpy import exitcodes as X
from qmailpy.inject import headers as H
from qmailpy.inject import rewrite as RW
from qmailpy.inject import token822 as T
from qmailpy.proto.quote import quote2, quote_needed

PERM, TEMP = X.DELIVERY_PERMANENT, X.DELIVERY_TEMPORARY

# How each known field is rewritten and which recipient lists its addresses join.
TOCC, HR, HRR, RETURN, SENDER = "tocc", "hr", "hrr", "return", "sender"
REWRITE = {H.TO: TOCC, H.CC: TOCC, H.BCC: HR, H.APPARENTLYTO: HR,
           H.R_TO: HRR, H.R_CC: HRR, H.R_BCC: HRR, H.RETURNPATH: RETURN,
           H.SENDER: SENDER, H.FROM: SENDER, H.REPLYTO: SENDER, H.RETURNRECEIPTTO: SENDER,
           H.ERRORSTO: SENDER, H.R_SENDER: SENDER, H.R_FROM: SENDER, H.R_REPLYTO: SENDER}
DROPPED = frozenset((H.BCC, H.R_BCC, H.RETURNPATH, H.CONTENTLENGTH))
MAYFAIL = frozenset((TOCC, HR, HRR))        # notqmail's rwmayfail: kept as they are when they do not parse


class Fatal(Exception):
    """qmail-inject: fatal: <text><end>; `code` 100 or 111."""

    def __init__(self, code, text, end="\n"):
        super().__init__(text)
        self.code, self.text, self.end = code, text, end


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
        self.user = _env(environ, "QMAILUSER", "MAILUSER", "USER", "LOGNAME")
        if self.user is None:                   # set but empty is a user ("" quoted): qmail's env_get()
            self.user = b"anonymous"
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
    except ControlError:                    # getcontrols(): control_rldef() != 1 is die_read()
        raise Fatal(TEMP, "read error") from None
    try:
        ctl = RW.ControlTokens(values[0], values[1], values[2])
    except T.ParseError as e:               # doordie(&sa,...): that text, no newline
        raise Fatal(PERM, "unable to parse this line:\n%s" % e.args[0].decode("utf-8", "surrogateescape"),
                    end="") from None
    return ctl, values[3]


def read_mft(path):
    """Lower-cased addresses of QMAILMFTFILE (mailing lists), or None when it is unset or does
    not exist. qmail reads it first, whatever the message: any other error is its 'read error'."""
    from qmailpy.ctl.parse import entries, numbered, text_lines
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        raise Fatal(TEMP, "read error") from None
    return {os.fsencode(x).lower() for x in entries(numbered(text_lines(data)))[0]}


def cstr(data):
    """`data` as qmail's C code passes it on (qmail_from, qmail_to, quote2): up to its first NUL."""
    return data.split(b"\0", 1)[0]


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

    def __init__(self, who, ctl, idhost, sender=None, lists=None):
        self.who, self.ctl, self.idhost = who, ctl, idhost
        self.lists = lists                    # read_mft()'s mailing lists, or None
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
        """The field rewritten. A recipient field that does not parse stays as it is, with the
        recipients handed over before addrlist() refused (notqmail's doordie_rh()); any other
        stops qmail-inject."""
        try:
            return T.unparse(T.addrlist(T.parse(field), self._callback(kind)))
        except T.ParseError:
            if kind in MAYFAIL:
                return field
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
        lists = self.lists
        if not lists or H.MAILFOLLOWUPTO in self.seen or not any(a.lower() in lists for a in self.tocc):
            return b""
        return b"Mail-Followup-To: " + b",\n  ".join(quote2(cstr(a)) for a in reversed(self.tocc)) + b"\n"

    def finish_header(self, with_return_path):
        """finishheader(): what comes before the saved fields, the saved fields; bytes."""
        self.resent = bool(self.seen & H.RESENT)
        if self.sender is None:
            self._default_return_path()
        out = []
        if with_return_path:
            out.append(b"Return-Path: <" + quote2(cstr(self.sender)) + b">\n")
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
        return cstr(self.sender), [cstr(r) for r in recips]
