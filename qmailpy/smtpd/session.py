"""One SMTP session as a pure protocol object, in the manner of h11: bytes in, actions out.

The driver gives it what the client sent (receive(), b"" at end of input,
timed_out() when the client was silent too long) and performs, in order, what
next_action() returns (qmailpy.smtpd.actions): Send the replies, Log, Sleep,
Lookup a DNS name, AskUsers, Authenticate, OpenQueue / QueueWrite /
QueueFinish / QueueAbort, StartTls. A question waits for answer(value). NEED_DATA:
read the client again; CLOSED: the session is over. Replies are sent only
before the session reads again (qmail flushes before every read, which keeps
PIPELINING ordered). The session reads nothing itself but its controls, which
are given (qmailpy.ctl.reader.Controls reads a file on first use); the clock
is given too. Drivers: qmailpy.smtpd.driver (qmail-smtpd) and
qmailpy.cli.policytest, which makes the session with trace=True to hear every
check's verdict (the Verdicts action).

The state is explicit (READY, MAIL, AUTH, DATA, CLOSED) and commands go
through one table, TRANSITIONS: state -> verb -> handler; a handler answers
and moves to the next state. docs/architecture.md draws the table. MAIL and
RCPT decisions live in qmailpy.smtpd.envelope, DATA in qmailpy.smtpd.message.
"""
from qmailpy.ctl.reader import ControlError
from qmailpy.proto import replies as R
from qmailpy.proto.lines import LineReader
from qmailpy.smtpd.actions import CLOSED, NEED_DATA, Action, Log, NoContext, QueueAbort, Send, StartTls, Verdicts
from qmailpy.smtpd.answers import Answers, Unanswered

READY, MAIL, AUTH, DATA, DONE = "READY", "MAIL", "AUTH", "DATA", "CLOSED"


class Session:
    def __init__(self, cfg, now, pid, trace=False):
        self.cfg, self.now, self.pid, self.trace = cfg, now, pid, trace
        self.state = READY
        self.status = 0             # qmail-smtpd's exit code once closed: 1 where qmail does _exit(1)
        self.lines = LineReader(allow_bare_lf=bool(cfg.newline))
        self.out = []               # reply texts not sent yet
        self.helo = None            # HELO/EHLO argument, once given
        self.esmtp = False
        self.mail = None            # envelope.Transaction in MAIL and DATA
        self.auth_user = None       # set by a successful AUTH
        self.tls = None             # the TLS Info (cipher, version) once STARTTLS or SMTPS began it
        self.exchange = None        # AuthExchange in AUTH
        self.data = None            # DataReader in DATA
        self.started = None         # connection time: when POP-before-SMTP is judged
        self._pop = None            # the relay table's answer
        self._relaying = None       # (auth user, why the client may relay), see relaying()
        self.findings_logged = len(cfg.controls.findings)    # the driver logged these already
        self.answers = Answers()
        cfg.policy.use_resolver(self.answers.resolver)
        cfg.policy.use_mailboxes(lambda: self.answers.users)
        self.pending = b""          # bytes received and not yet used
        self._eof = False
        self._timed_out = None      # the reply that ends a session the client kept too long
        self._run = self._session()
        self._question = False
        self._answer = None

    # -- the driver's side
    @property
    def closed(self):
        return self.state is DONE

    def receive(self, data):
        """What the client sent; b"" when it went away."""
        if not data:
            self._eof = True
        elif not self.closed:
            self.pending += data

    def timed_out(self, reply=R.TIMEOUT):
        """The client sent nothing for the time-out: the session answers 451 and ends (or, for
        timeoutsession and smtpminrate, the 421 the driver gives)."""
        self._timed_out = reply

    def next_action(self):
        """The next action for the driver, NEED_DATA, or CLOSED."""
        if self._question:
            raise RuntimeError("answer() the question first")
        try:
            action = self._run.send(self._answer)
        except StopIteration:
            return CLOSED
        self._answer = None
        self._question = isinstance(action, Action) and action.question
        return action

    def answer(self, value):
        """The answer to the question next_action() returned last."""
        if not self._question:
            raise RuntimeError("no question is waiting for an answer")
        self._question, self._answer = False, value

    def assume_auth(self, user):
        """Go on as if AUTH had succeeded for `user` (qmail-policytest's --auth)."""
        self.auth_user = user

    # -- replies
    def reply(self, text):
        self.out.append(text)

    def flush(self):
        out, self.out = self.out, []
        return "".join(line + "\r\n" for line in out).encode("utf-8", "surrogateescape")

    def close(self, text, status=0):
        """The last reply; status 1 where qmail ends with _exit(1) (straynewline(), die_control())."""
        self.reply(text)
        self.state = DONE
        self.status = status

    # -- the session, as one generator of actions
    def _session(self):
        self.started = self.now()
        yield Log("connect", {"ip": self.cfg.peer.ip, "host": self.cfg.peer.host})
        if self.cfg.smtps and not (yield from self._start_tls()):     # SMTPS: TLS from the first byte
            return
        self.reply(R.GREETING.format(greeting=self.cfg.greeting))
        while not self.closed:
            if self.state is DATA and self.pending:
                from qmailpy.smtpd import message
                if (yield from message.feed(self)) and not self.closed:
                    self.state = READY
                continue
            line = None
            if self.state is not DATA:
                line, self.pending = self.lines.next_line(self.pending)
            if line is not None:
                yield from self._line(line)
                continue
            if self.out:
                yield Send(self.flush())
            if not self._eof and self._timed_out is None:
                yield NEED_DATA
                continue
            yield from self._lost()
        self.pending = b""
        if self.out:
            yield Send(self.flush())

    def _lost(self):
        """End of input, or the time-out: abandon a message in progress (qmail just exits)."""
        if self.state is DATA:
            yield QueueAbort()
        self.state = DONE
        yield Log("eof", {})
        if self._timed_out is not None:
            self.reply(self._timed_out)

    def _line(self, line):
        if line.error:
            yield Log("refused", {"reason": line.error})
            if line.error == "straylf":
                return self.close(R.STRAY_LF, 1)
            return self.reply(R.LINE_TOO_LONG if line.error == "toolong" else R.NUL_IN_COMMAND)
        if self.state is AUTH:
            return (yield from self._auth_answer(self.exchange.step(line.text)))
        verb, _, arg = line.text.partition(" ")
        handler = TRANSITIONS[self.state].get(verb.lower(), Session.cmd_unknown)
        self.answers.new_command()
        try:
            steps = handler(self, arg.lstrip(" "), line)
            if steps is not None:
                yield from steps
        except ControlError as e:           # a list or cdb read on first use (badmailfrom, morercpthosts.cdb)
            yield control_error(e)
            self.close(R.NO_CONTROLS, 1)
        findings = self.cfg.controls.findings
        if len(findings) > self.findings_logged:     # controls the policy read on first use
            for finding in findings[self.findings_logged:]:
                yield Log("warning", {"finding": str(finding)})
            self.findings_logged = len(findings)

    def _decide(self, decision, *args):
        """decision(self, effects, *args) run until every question it asks has its answer
        (qmailpy.smtpd.answers): the questions go to the driver, then its log lines and
        sleeps; its result is returned."""
        answers = self.answers
        while True:
            answers.new_run()
            effects = []
            try:
                result = decision(self, effects, *args)
            except Unanswered:
                pass
            except Exception:
                yield from effects
                raise
            if answers.missing is None:
                yield from effects
                return result
            key, question = answers.missing
            answers.store(key, (yield question))

    # -- what the policy asks about the client (through the answers)
    def pop_relay(self):
        """Did this client IP log in over POP3 within the window before connecting?
        True/False, or None when the users database cannot answer (asked again then)."""
        if self._pop is None:
            from qmailpy.users.errors import UsersUnavailable
            try:
                self._pop = self.answers.users.relay_allowed(self.cfg.peer.ip, self.started, self.cfg.pop_window)
            except UsersUnavailable:
                return None
        return self._pop

    def relaying(self):
        """Why the client may relay whatever its sender (qmailpy.policy.relay), or None; a
        users database that cannot answer counts as "no". Once per authentication state."""
        memo = self._relaying
        if memo is None or memo[0] != self.auth_user:
            from qmailpy.policy.relay import POP_UNKNOWN, relay_reason
            reason = relay_reason(self.cfg, None, self.auth_user, self.pop_relay)
            memo = self._relaying = (self.auth_user, None if reason == POP_UNKNOWN else reason)
        return memo[1]

    # -- commands (TRANSITIONS)
    def cmd_unknown(self, arg, line):
        self.reply(R.UNIMPLEMENTED)

    def cmd_helo(self, arg, line):
        self._set_helo(arg, esmtp=False)
        self.reply(R.HELO.format(greeting=self.cfg.greeting))

    def cmd_ehlo(self, arg, line):
        self._set_helo(arg, esmtp=True)
        lines = [self.cfg.greeting, "PIPELINING", "8BITMIME"]
        if self.cfg.tls_offer and self.tls is None:
            lines.append("STARTTLS")
        if self.cfg.smtpauth and self.auth_offered():
            lines.append("AUTH LOGIN PLAIN CRAM-MD5")
        lines.append("SIZE %d" % self.cfg.databytes)       # spamcontrol's fmt_ulong(databytes): SIZE 0 = unlimited
        self.reply("\r\n".join("250-" + x for x in lines[:-1]) + "\r\n250 " + lines[-1])

    def _set_helo(self, arg, esmtp):
        self.helo, self.esmtp, self.mail, self.state = arg, esmtp, None, READY

    def cmd_rset(self, arg, line):
        self.mail, self.state = None, READY
        self.reply(R.FLUSHED)

    def cmd_noop(self, arg, line):
        self.reply(R.OK)

    def cmd_vrfy(self, arg, line):
        self.reply(R.VRFY)

    def cmd_help(self, arg, line):
        self.reply(R.HELP)

    def cmd_quit(self, arg, line):
        self.close(R.QUIT.format(greeting=self.cfg.greeting))

    def need_mail(self, arg, line):
        self.reply(R.MAIL_FIRST)

    def cmd_mail(self, arg, line):
        from qmailpy.smtpd import envelope
        got = yield from self._decide(envelope.mail_from, arg, self.trace)
        if self.trace and got.trace is not None:
            yield Verdicts("MAIL", got.trace, got.decided, got.spf)
        if got.transaction is not None:
            self.mail, self.state = got.transaction, MAIL
        yield from self._answer_ending(got.reply, got.quitting)

    def cmd_rcpt(self, arg, line):
        from qmailpy.smtpd import envelope
        got = yield from self._decide(envelope.rcpt_to, arg, self.trace)
        if self.trace and got.trace is not None:
            yield Verdicts("RCPT", got.trace, got.decided)
        mail = self.mail
        mail.rcpts = got.count
        mail.tarpitting = got.tarpitting
        if got.recipient is not None:
            mail.recipients.append(got.recipient)
        yield from self._answer_ending(got.reply, got.quitting)

    def _answer_ending(self, reply, quitting):
        """Reply; after a refusal that ends the session (quitasap, blackholedsender), close."""
        if quitting is None:
            return self.reply(reply)
        yield Log("quit", {"reason": "blackholedsender" if quitting == "blackholedsender" else "quitasap",
                           "check": quitting})
        self.close(reply)

    def auth_offered(self):
        """AUTH is for TLS sessions, and for any with control/smtpauthplaintext (legacy clients)."""
        return self.tls is not None or bool(self.cfg.auth_plaintext)

    def cmd_starttls(self, arg, line):
        if self.tls is not None:
            return self.reply(R.TLS_ACTIVE)
        if arg:
            return self.reply(R.TLS_SYNTAX)
        if not self.cfg.tls_offer:
            return self.reply(R.TLS_UNAVAILABLE)
        yield Send(self.flush())
        if (yield from self._start_tls((R.TLS_READY + "\r\n").encode())):
            # RFC 3207: forget HELO, AUTH and the transaction; the client starts again with EHLO
            self.helo, self.esmtp, self.mail, self.auth_user, self.state = None, False, None, None, READY

    def _start_tls(self, ready=b""):
        """The handshake (StartTls, `ready` the 220 to STARTTLS), everything the client sent
        before it dropped unread (CVE-2011-0411); True when TLS is on; None when the controls
        give no TLS context (454, the session goes on in clear, as the TLS patch's tls_err());
        else False: the session is over (nothing more is said: the client expects TLS, not a
        cleartext reply)."""
        dropped = len(self.pending)
        self.pending = b""
        self.lines = LineReader(allow_bare_lf=bool(self.cfg.newline))
        got = yield StartTls(ready)
        if isinstance(got, NoContext):
            yield Log("tls-unavailable", {"reason": got.reason})
            self.reply(R.TLS_INIT_FAILED)
            return None
        if isinstance(got, str):
            yield Log("tls-failed", {"reason": got})
            self.state, self.status = DONE, 1       # the TLS patch's die_read()
            return False
        self.tls = got
        fields = {"version": got.version, "cipher": got.cipher, "verified": "yes" if got.verified else "no"}
        if dropped:
            fields["dropped"] = dropped
        yield Log("tls", fields)
        return True

    def cmd_auth(self, arg, line):
        if not self.cfg.smtpauth:
            return self.reply(R.UNIMPLEMENTED)
        if not self.auth_offered():
            return self.reply(R.AUTH_NEEDS_TLS)
        if not self.esmtp:
            return self.reply(R.AUTH_EHLO_FIRST)
        if self.auth_user is not None:
            return self.reply(R.AUTH_ALREADY)
        if self.state is MAIL:
            return self.reply(R.AUTH_IN_MAIL)
        from qmailpy.smtpd.auth import AuthExchange
        self.exchange, self.state = AuthExchange(arg, self.cfg, self.pid, self.now), AUTH
        return self._auth_answer(self.exchange.start())

    def _auth_answer(self, steps):
        self.reply((yield from steps))
        if self.exchange.done:
            if self.exchange.user is not None:
                self.auth_user = self.exchange.user
            if self.exchange.lockout:        # authfaillimit: 421, the connection ends
                self.state = DONE
                self.exchange = None
                return
            self.exchange, self.state = None, READY

    def cmd_data(self, arg, line):
        if not self.mail.recipients:
            return self.reply(R.RCPT_FIRST)
        return self._message(line)

    def _message(self, line):
        from qmailpy.smtpd import message
        if (yield from message.start(self, line)):
            self.state = DATA

COMMON = {"helo": Session.cmd_helo, "ehlo": Session.cmd_ehlo, "mail": Session.cmd_mail,
          "rset": Session.cmd_rset, "noop": Session.cmd_noop, "vrfy": Session.cmd_vrfy,
          "help": Session.cmd_help, "quit": Session.cmd_quit, "auth": Session.cmd_auth,
          "starttls": Session.cmd_starttls}
# state -> verb -> handler (AUTH and DATA read responses and message lines, not commands)
TRANSITIONS = {
    READY: dict(COMMON, rcpt=Session.need_mail, data=Session.need_mail),
    MAIL: dict(COMMON, rcpt=Session.cmd_rcpt, data=Session.cmd_data),
}


def control_error(e):
    """The log line of qmail's "421 unable to read controls": which file, which line, what is wrong."""
    return Log("error", {"reason": "unable to read controls",
                         "file": e.where + (":%d" % e.lineno if e.lineno else ""), "problem": e.reason})
