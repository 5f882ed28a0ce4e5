"""One SMTP session: bytes in, reply bytes out, through a table of verb handlers.

Sans-IO: the driver (qmailpy.smtpd.main) reads fd 0 and writes what feed()
returns to fd 1 before reading again (qmail flushes before every read, which
is what makes PIPELINING safe). Everything with side effects -- starting
qmail-queue, the clock, sleeping, logging, password checks -- comes in through
`services`, so tests run whole dialogues in-process.
"""
from qmailpy.ctl.reader import ControlError
from qmailpy.proto import replies as R
from qmailpy.proto.dotdata import DataReader
from qmailpy.proto.lines import LineReader
from qmailpy.exitcodes import qq_reply
from qmailpy.smtpd import envelope
from qmailpy.smtpd.auth import AuthExchange
from qmailpy.smtpd.received import received_line


class Session:
    def __init__(self, cfg, services):
        self.cfg = cfg
        self.services = services
        self.lines = LineReader(allow_bare_lf=bool(cfg.newline))
        self.out = []
        self.closed = False
        self.helo = None            # HELO/EHLO argument, once given
        self.esmtp = False
        self.mail = None            # envelope.Transaction once MAIL was accepted
        self.auth_user = None       # set by a successful AUTH
        self.exchange = None        # AuthExchange while AUTH is in progress
        self.data = None            # DataReader while in DATA
        self.job = None             # queue job while in DATA
        self.pending = b""
        self.started = None         # connection time: when POP-before-SMTP is judged
        self._pop = None            # cached relay-table answer
        self.relay_memo = None      # (auth user, why the client may relay), see envelope.client_relay
        self.quitting = None        # the check whose refusal ends the session (quitasap, blackholedsender)
        self.findings_logged = len(cfg.controls.findings)    # the driver logged these already

    def pop_relay(self):
        """Did this client IP log in over POP3 within the window before connecting?

        True/False, or None when the users database cannot answer (asked once).
        """
        if self._pop is None:
            from qmailpy.users import UsersUnavailable
            try:
                self._pop = self.services.users().relay_allowed(
                    self.cfg.peer.ip, self.started, self.cfg.pop_window)
            except UsersUnavailable:
                return None
        return self._pop

    # -- driver interface
    def start(self):
        self.started = self.services.now()
        self.services.log("connect", ip=self.cfg.peer.ip, host=self.cfg.peer.host)
        self.reply(R.GREETING.format(greeting=self.cfg.greeting))
        return self.flush()

    def feed(self, data):
        """Consume client bytes; return the reply bytes to send before the next read."""
        buf = self.pending + data
        while buf and not self.closed:
            if self.data is not None:
                buf = self._feed_data(buf)
                continue
            event, buf = self.lines.next_line(buf)
            if event is None:
                break
            self._line(event)
        self.pending = buf if not self.closed else b""
        return self.flush()

    def eof(self):
        """The client went away: abandon a message in progress (qmail just exits)."""
        if self.job is not None:
            self.job.abort()
            self.job = None
        self.closed = True
        self.services.log("eof")

    def timeout(self):
        self.eof()
        self.reply(R.TIMEOUT)
        return self.flush()

    def reply(self, text):
        self.out.append(text)

    def flush(self):
        out, self.out = self.out, []
        return "".join(line + "\r\n" for line in out).encode("utf-8", "surrogateescape")

    def close(self, text):
        self.reply(text)
        self.closed = True

    # -- commands
    def _line(self, line):
        if line.error:
            self.services.log("refused", reason=line.error)
            if line.error == "straylf":
                return self.close(R.STRAY_LF)
            return self.reply(R.LINE_TOO_LONG if line.error == "toolong" else R.NUL_IN_COMMAND)
        if self.exchange is not None:
            return self._auth_step(line.text)
        verb, _, arg = line.text.partition(" ")
        handler = VERBS.get(verb.lower(), Session.cmd_unknown)
        try:
            handler(self, arg.lstrip(" "), line)
        except ControlError as e:           # a list or cdb read on first use (badmailfrom, morercpthosts.cdb)
            log_control_error(self.services.log, e)
            self.close(R.NO_CONTROLS)
        findings = self.cfg.controls.findings
        if len(findings) > self.findings_logged:     # controls the policy read on first use
            for finding in findings[self.findings_logged:]:
                self.services.log("warning", finding=str(finding))
            self.findings_logged = len(findings)

    def cmd_unknown(self, arg, line):
        self.reply(R.UNIMPLEMENTED)

    def cmd_helo(self, arg, line):
        self._set_helo(arg, esmtp=False)
        self.reply(R.HELO.format(greeting=self.cfg.greeting))

    def cmd_ehlo(self, arg, line):
        self._set_helo(arg, esmtp=True)
        lines = [self.cfg.greeting, "PIPELINING", "8BITMIME"]
        if self.cfg.smtpauth:
            lines.append("AUTH LOGIN PLAIN CRAM-MD5")
        lines.append("SIZE %d" % self.cfg.databytes if self.cfg.databytes else "SIZE")
        self.reply("\r\n".join("250-" + x for x in lines[:-1]) + "\r\n250 " + lines[-1])

    def _set_helo(self, arg, esmtp):
        self.helo, self.esmtp, self.mail = arg, esmtp, None

    def cmd_rset(self, arg, line):
        self.mail = None
        self.reply(R.FLUSHED)

    def cmd_noop(self, arg, line):
        self.reply(R.OK)

    def cmd_vrfy(self, arg, line):
        self.reply(R.VRFY)

    def cmd_help(self, arg, line):
        self.reply(R.HELP)

    def cmd_quit(self, arg, line):
        self.close(R.QUIT.format(greeting=self.cfg.greeting))

    def cmd_mail(self, arg, line):
        answer, mail = envelope.mail_from(self, arg)
        if mail is not None:
            self.mail = mail
        self._answer(answer)

    def cmd_rcpt(self, arg, line):
        if self.mail is None:
            return self.reply(R.MAIL_FIRST)
        self._answer(envelope.rcpt_to(self, arg))

    def _answer(self, answer):
        """Reply; after a refusal that ends the session (quitasap, blackholedsender), close."""
        if self.quitting is None:
            return self.reply(answer)
        self.services.log("quit", reason="blackholedsender" if self.quitting == "blackholedsender"
                          else "quitasap", check=self.quitting)
        self.close(answer)

    def cmd_auth(self, arg, line):
        if not self.cfg.smtpauth:
            return self.reply(R.UNIMPLEMENTED)
        if not self.esmtp:
            return self.reply(R.AUTH_EHLO_FIRST)
        if self.auth_user is not None:
            return self.reply(R.AUTH_ALREADY)
        if self.mail is not None:
            return self.reply(R.AUTH_IN_MAIL)
        self.exchange = AuthExchange(arg, self.cfg, self.services)
        self._auth_answer(self.exchange.start())

    def _auth_step(self, text):
        self._auth_answer(self.exchange.step(text))

    def _auth_answer(self, answer):
        self.reply(answer)
        if self.exchange.done:
            if self.exchange.user is not None:
                self.auth_user = self.exchange.user
            self.exchange = None

    def cmd_data(self, arg, line):
        if self.mail is None:
            return self.reply(R.MAIL_FIRST)
        if not self.mail.recipients:
            return self.reply(R.RCPT_FIRST)
        try:
            self.job = self.services.start_queue()
        except OSError:
            return self.reply(R.QQT_FAILURE)
        self.job.write(received_line(self.cfg.peer, self.helo, self.services.now(),
                                     protocol=self._protocol()))
        if self.mail.spf is not None:          # the qmail-spf patch's line, after ours
            self.job.write(self.mail.spf.header().encode("ascii", "replace"))
        lf_client = bool(self.cfg.newline) and line.bare_lf
        self.data = DataReader(lf_mode=lf_client, bare_lf_ok=bool(self.cfg.newline),
                               databytes=self.cfg.databytes)
        self.reply(R.GO_AHEAD)

    def _protocol(self):
        return ("ESMTPA" if self.auth_user else "ESMTP") if self.esmtp else "SMTP"

    def _feed_data(self, buf):
        data = self.data
        used = data.feed(buf)
        chunk = data.take()
        if chunk and not data.toobig:
            self.job.write(chunk)
        if data.error:
            self.job.abort()
            self.job, self.data = None, None
            self.services.log("refused", reason="bare LF in DATA")
            self.close(R.STRAY_LF)
            return b""
        if data.done:
            self._finish_data()
        return buf[used:]

    def _finish_data(self):
        data, job, mail = self.data, self.job, self.mail
        self.data = self.job = self.mail = None
        if data.toomanyhops or data.toobig:
            job.abort()
            reason = R.LOOPING if data.toomanyhops else R.TOO_BIG
            self.services.log("refused", reason=reason[:3], bytes=data.size)
            return self.reply(reason)
        code = job.finish(mail.sender, mail.recipients)
        if code == 0:
            self.services.log("accept", sender="<%s>" % mail.sender, rcpts=len(mail.recipients),
                              bytes=data.size, qp=job.qp)
            return self.reply(R.QUEUED.format(time=int(self.services.now()), qp=job.qp))
        smtp, text = qq_reply(code)
        self.services.log("queue-failed", code=code)
        self.reply("%d %s" % (smtp, text))


def log_control_error(log, e):
    """The log line of qmail's "421 unable to read controls": which file, which line, what is wrong."""
    log("error", reason="unable to read controls", file=e.where + (":%d" % e.lineno if e.lineno else ""),
        problem=e.reason)


def refuse_controls(log, e):
    """What qmail-smtpd says, instead of its greeting, when a control it needs cannot be used."""
    log_control_error(log, e)
    return (R.NO_CONTROLS + "\r\n").encode()


VERBS = {
    "helo": Session.cmd_helo, "ehlo": Session.cmd_ehlo, "mail": Session.cmd_mail,
    "rcpt": Session.cmd_rcpt, "data": Session.cmd_data, "rset": Session.cmd_rset,
    "noop": Session.cmd_noop, "vrfy": Session.cmd_vrfy, "help": Session.cmd_help,
    "quit": Session.cmd_quit, "auth": Session.cmd_auth,
}
