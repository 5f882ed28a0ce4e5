"""Drive a qmail-smtpd Session with a services object: bytes read in, bytes to write out.

Conversation performs the session's actions (qmailpy.smtpd.actions) through
`services`, the one object with side effects: log(event, **fields), sleep(s),
now(), pid, users() (the users database, opened on first use), authenticate(),
start_queue(spf, auth) (a job with write(), finish(), abort() and qp), auth_attempt(op, ip, limit,
window, shared) (qmailpy.smtpd.authlimit; shared: the users database's count), start_tls(cleartext, ready)
(write cleartext, make the context, write ready, run the handshake: the TLS Info, a text saying
why not, or actions.NoContext when ready was given and no context could be made). The real one is
qmailpy.smtpd.main.Services; tests give fakes. DNS questions go to `resolver`
($DNSCACHEIP's, made on first use, unless one is given). serve() in
qmailpy.smtpd.main puts fds and time-outs around it.
"""
from qmailpy.proto import replies as R
from qmailpy.smtpd import actions as A
from qmailpy.smtpd.session import Session, control_error

# Events that turn a client away: each line names the client's IP (ip=), as every reject line
# of spamcontrol's qmail-smtpd names it (S:<ip>:<host>), since one line is all a fail2ban-like
# filter sees. A line that names it already (rblhosts) keeps its own.
CLIENT_NAMED = frozenset(("refused", "tempfail", "auth-failed"))


class LocalTrouble(Exception):
    """An OSError out of the session's own decisions (a module loaded on first use whose file
    cannot be read, a file a check reads): trouble on our side, not the client gone. `sent`:
    the replies made before it, still to be written; the session then ends with a 421."""

    def __init__(self, error, sent):
        super().__init__(error)
        self.error, self.sent = error, sent


class Conversation:
    def __init__(self, cfg, services, resolver=None):
        self.cfg, self.services = cfg, services
        self.session = Session(cfg, services.now, services.pid)
        self._resolver = resolver
        self._job = None

    def __getattr__(self, name):          # the session's state, for those who look (tests)
        if name == "session":
            raise AttributeError(name)
        return getattr(self.session, name)

    def start(self):
        """The greeting (and what the session logs first)."""
        return self._run()

    def feed(self, data):
        """Client bytes in; the replies to write before the next read."""
        if data:
            self.session.receive(data)
        return self._run()

    def eof(self):
        """The client went away."""
        self.session.receive(b"")
        self._run()

    def timeout(self):
        """The client sent nothing for too long: the 451 to write."""
        self.session.timed_out()
        return self._run()

    def cut_off(self, reason):
        """The session lasted longer than timeoutsession ("deadline"), or the client sends
        slower than smtpminrate ("rate"): the 421 to write."""
        self.session.timed_out(R.SESSION_DEADLINE if reason == "deadline" else R.TOO_SLOW)
        return self._run()

    def _run(self):
        out, session = [], self.session
        while True:
            try:
                action = session.next_action()
            except OSError as e:           # no client I/O in there: ours (the client's is the driver's)
                raise LocalTrouble(e, b"".join(out)) from e
            if action is A.NEED_DATA or action is A.CLOSED:
                return b"".join(out)
            if type(action) is A.Send:
                out.append(action.data)
                continue
            if type(action) is A.StartTls:         # the replies so far go out in clear first
                session.answer(self.services.start_tls(b"".join(out), action.ready))
                out = []
                continue
            got = PERFORM[type(action)](self, action)
            if action.question:
                session.answer(got)

    # -- the actions
    def log(self, action):
        fields = action.fields
        if action.event in CLIENT_NAMED and "ip" not in fields:
            fields = dict(fields, ip=self.cfg.peer.ip)
        self.services.log(action.event, **fields)

    def sleep(self, action):
        self.services.sleep(action.seconds)

    def lookup(self, action):
        from qmailpy.smtpd.answers import answer_lookup
        if self._resolver is None:
            from qmailpy.policy.lookup import smtpd_resolver
            self._resolver = smtpd_resolver(self.cfg.environ)      # $DNSTIMEOUT: checked by SmtpdConfig
        return answer_lookup(self._resolver, action)

    def ask_users(self, action):
        from qmailpy.smtpd.answers import answer_users
        return answer_users(self.services.users, action)

    def authenticate(self, action):
        return self.services.authenticate(action.mech, action.user, action.secret, action.challenge)

    def auth_attempt(self, action):
        return self.services.auth_attempt(action.op, action.ip, action.limit, action.window, action.shared)

    def open_queue(self, action):
        try:
            self._job = self.services.start_queue(action.spf, action.auth)
        except OSError as e:
            return e
        return True

    def queue_write(self, action):
        self._job.write(action.data)

    def queue_finish(self, action):
        job, self._job = self._job, None
        return job.finish(action.sender, action.recipients), job.qp

    def queue_abort(self, action):
        job, self._job = self._job, None
        job.abort()

    def abandon(self):
        """The session is over: a job still open (a bug ended the session in DATA) is aborted,
        as a lost client's is, so that its pipes and queue program do not outlive the session
        in a process that runs others (qmail-tcpserver's worker)."""
        job, self._job = self._job, None
        if job is not None:
            try:
                job.abort()
            except OSError:
                pass


PERFORM = {
    A.Log: Conversation.log, A.Sleep: Conversation.sleep,
    A.Lookup: Conversation.lookup, A.AskUsers: Conversation.ask_users,
    A.Authenticate: Conversation.authenticate, A.AuthAttempt: Conversation.auth_attempt, A.OpenQueue: Conversation.open_queue,
    A.QueueWrite: Conversation.queue_write, A.QueueFinish: Conversation.queue_finish,
    A.QueueAbort: Conversation.queue_abort,
}


def refuse_controls(log, e):
    """What qmail-smtpd says, instead of its greeting, when a control it needs cannot be used."""
    line = control_error(e)
    log(line.event, **line.fields)
    return (R.NO_CONTROLS + "\r\n").encode()
