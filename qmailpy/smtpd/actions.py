"""What an SMTP session asks its driver to do (qmailpy.smtpd.session).

The session never touches a socket, the clock beyond the one it is given, the
resolver, the users database or qmail-queue: it returns these actions from
next_action() and the driver performs them in order. A question (DNS, users,
AUTH, queue) waits for session.answer(value) before the session goes on; the
others need no answer. NEED_DATA: send what was returned so far is done, give
the session more bytes (receive()); CLOSED: the session is over.

Drivers: qmailpy.smtpd.driver (qmail-smtpd, qmail-tcpserver's workers) and
qmailpy.cli.policytest (qmail-policytest, with the resolver and database it is
told to use). StartTls: the driver writes the replies so far in clear and
wraps the connection (qmailpy.smtpd.tls); the session has dropped whatever
the client pipelined after STARTTLS (CVE-2011-0411) and forgets what RFC 3207
says it must (HELO, AUTH, the transaction).
"""


class Signal:
    """NEED_DATA and CLOSED: not actions, states of the exchange."""
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


NEED_DATA = Signal("NEED_DATA")
CLOSED = Signal("CLOSED")


class Action:
    __slots__ = ()
    question = False

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join("%s=%r" % (k, getattr(self, k)) for k in self.__slots__))


class Send(Action):
    """Write these reply bytes to the client (all replies so far: qmail flushes before each read)."""
    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data


class Log(Action):
    """One log line: event and key=value fields (qmailpy.log.Logger)."""
    __slots__ = ("event", "fields")

    def __init__(self, event, fields):
        self.event, self.fields = event, fields


class Sleep(Action):
    """Wait before going on: reason "tarpit" (the RCPT reply waits) or "auth" (a failed AUTH)."""
    __slots__ = ("seconds", "reason")

    def __init__(self, seconds, reason):
        self.seconds, self.reason = seconds, reason


class Verdicts(Action):
    """Every check of one command and the one that decided (sessions made with trace=True:
    qmail-policytest). stage "MAIL" or "RCPT"; spf: the SPF result found at MAIL, if any."""
    __slots__ = ("stage", "verdicts", "decided", "spf")

    def __init__(self, stage, verdicts, decided, spf=None):
        self.stage, self.verdicts, self.decided, self.spf = stage, verdicts, decided, spf


class Lookup(Action):
    """A DNS question: answer `resolver.until(deadline).<method>(*args)` (deadline None: no
    bound), a qmailpy.dns.resolver.Answer."""
    __slots__ = ("method", "args", "deadline")
    question = True

    def __init__(self, method, args, deadline=None):
        self.method, self.args, self.deadline = method, args, deadline


class AskUsers(Action):
    """A users-database question (USERS_QUESTIONS in qmailpy.smtpd.answers): answer what it
    returns, or the UsersUnavailable it raised."""
    __slots__ = ("name", "args")
    question = True

    def __init__(self, name, args):
        self.name, self.args = name, args


class Authenticate(Action):
    """Check these credentials: answer True, False, or None (cannot tell now)."""
    __slots__ = ("mech", "user", "secret", "challenge")
    question = True

    def __init__(self, mech, user, secret, challenge):
        self.mech, self.user, self.secret, self.challenge = mech, user, secret, challenge

    def __repr__(self):             # never the secret
        return "Authenticate(mech=%r, user=%r)" % (self.mech, self.user)


class AuthAttempt(Action):
    """AUTH attempts of this client IP across connections (authfaillimit): op "begin" records a
    password check about to be made and answers how many were made in the window with it, or
    None when `limit` were made already (locked out), or False when it cannot be recorded (a full
    disk: the check is not made, 454); op "forget" takes the last one back (it
    succeeded or could not be decided; answer None). shared (authfailshared): counted in the
    users database for every MX host, per host when it cannot be."""
    __slots__ = ("op", "ip", "limit", "window", "shared")
    question = True

    def __init__(self, op, ip, limit, window, shared=False):
        self.op, self.ip, self.limit, self.window, self.shared = op, ip, limit, window, shared


class OpenQueue(Action):
    """Start qmail-queue for one message: answer True, or the OSError that stopped it. spf: the
    result word of the SPF check qmail-smtpd made for it (its Received-SPF), None when it made
    none; the queue program gets it as $SPFRESULT, so qmail-queue's DKIM step never takes a
    Received-SPF the client wrote for ours. auth: the user AUTH accepted, or None; the queue
    program gets $TCPREMOTEINFO=<user> and $RELAYCLIENT="", as qmail's AUTH patches put them
    in qmail-smtpd's environment."""
    __slots__ = ("spf", "auth")
    question = True

    def __init__(self, spf=None, auth=None):
        self.spf, self.auth = spf, auth


class QueueWrite(Action):
    """Message bytes for the open queue job."""
    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data


class QueueFinish(Action):
    """Give the envelope and wait: answer (exit code, qp)."""
    __slots__ = ("sender", "recipients")
    question = True

    def __init__(self, sender, recipients):
        self.sender, self.recipients = sender, recipients


class QueueAbort(Action):
    """Drop the open queue job: the queue program exits without queueing anything."""
    __slots__ = ()


class StartTls(Action):
    """Write the replies so far in clear, make the TLS context, write `ready` (STARTTLS's 220;
    b"" for SMTPS, before the greeting), then run the TLS handshake on the connection. Answer
    the cipher's qmailpy.smtpd.tls.Info, a text saying why TLS did not start (the session then
    ends without another reply), or, when `ready` was given and the controls make no context,
    NoContext: nothing was written after the replies, the session goes on in clear (the TLS
    patch's tls_init() makes its context before "220 ready for tls" and says 454 when it cannot)."""
    __slots__ = ("ready",)
    question = True

    def __init__(self, ready=b""):
        self.ready = ready


class NoContext:
    """StartTls's answer when the TLS context cannot be made before STARTTLS's 220: why."""
    __slots__ = ("reason",)

    def __init__(self, reason):
        self.reason = reason
