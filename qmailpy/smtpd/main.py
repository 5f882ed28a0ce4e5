"""qmail-smtpd: the driver around Session, exec'd by tcpserver per connection.

SMTP on fd 0/1, log lines on fd 2. `serve(fd_in, fd_out, environ, argv)` is
the whole program, so a pre-forking launcher can call it without an exec: it
reads and writes the fds, and a Conversation (qmailpy.smtpd.driver) performs
the session's actions through Services.
argv, as for qmail's SMTP AUTH patches, may name a checkpassword program
(`qmail-smtpd /bin/checkpassword /bin/true`) that verifies AUTH.
Imports are kept to what a plain session needs: start-up time is per connection.
"""
import os
import select
import sys
import time

from qmailpy import paths
from qmailpy.ctl.reader import ControlError, Controls
from qmailpy.log import Logger, bug_text, guard
from qmailpy.proto import replies as R
from qmailpy.smtpd.config import SmtpdConfig
from qmailpy.smtpd.driver import Conversation, LocalTrouble, refuse_controls
from qmailpy.smtpd.queueclient import start_job

READ_SIZE = 65536


class Services:
    """The side effects a Session may cause, for a real process."""

    def __init__(self, environ, argv, log):
        self.environ, self.argv, self.log = environ, argv, log
        self.pid = os.getpid()
        self.now = time.time
        self.sleep = time.sleep
        self.controls = None
        self._attempts = None       # authlimit.Attempts, on the first AUTH password check
        self._shared_check = None   # the users database's id of the check in progress (authfailshared)
        self.channel = None         # PlainChannel, then a TlsChannel after STARTTLS (or for SMTPS)
        self.plain = None           # the PlainChannel (what the client sent, how long we waited)
        self._users = None

    def users(self):
        """What the session asks about its users (qmailpy.users.answers: AUTH, chkuser,
        POP-before-SMTP, recipient keys, SRS recipients), on first use: the users service
        where the home runs one (sock/users), else the database read here."""
        if self._users is None:
            from qmailpy.users.service import open_answers
            self._users = open_answers(self.controls.home, self.controls)
        return self._users

    def close(self):
        """The session is over: the users database it opened is closed now, not when the
        collector finds it (a qmail-tcpserver worker goes on to other sessions)."""
        users, self._users = self._users, None
        if users is not None:
            users.close()

    def start_queue(self, spf=None, auth=None):
        """A queue job; its program's $SPFRESULT is the SPF result of this message, set only
        when qmail-smtpd checked SPF (never one inherited from tcprules or the caller); after
        AUTH as `auth`, $TCPREMOTEINFO=auth and $RELAYCLIENT="", as qmail's AUTH patches set
        them (env_put2 in smtp_auth())."""
        environ = {k: v for k, v in self.environ.items() if k != "SPFRESULT"}
        if spf is not None:
            environ["SPFRESULT"] = spf
        if auth is not None:
            environ["TCPREMOTEINFO"], environ["RELAYCLIENT"] = auth, ""
        return start_job(environ, self.controls)

    def auth_attempt(self, op, ip, limit, window, shared=False):
        """AUTH attempts of `ip` over every connection: this host's files (qmailpy.smtpd.authlimit),
        or with `shared` (authfailshared) the users database's count of every host
        (qmailpy.users.authfail), this host's again, logged, when that cannot be had. Both count
        the client as authlimit.failure_key() names it (a loopback or IPv6 /64 network whole);
        the log names the address."""
        from qmailpy.smtpd.authlimit import failure_key
        logged, ip = ip, failure_key(ip)
        if op == "begin":
            self._shared_check = None
            if shared:
                from qmailpy.users.errors import NotShared, UsersError, UsersUnavailable
                try:
                    got = self.users().auth_begin(ip, limit, window, self.now())
                except (NotShared, UsersUnavailable, UsersError) as e:
                    self.log("authfail-local", ip=logged, reason=str(e))
                else:
                    if got is None:
                        return None
                    self._shared_check = got[1]
                    return got[0]
            try:
                return self._local_attempts(ip, limit, window).begin(self.now())
            except OSError as e:            # a full disk: the check cannot be counted, so not made
                self.log("authfail-unavailable", ip=logged, reason=str(e))
                return False
        if self._shared_check is not None:
            from qmailpy.users.errors import NotShared, UsersError, UsersUnavailable
            check, self._shared_check = self._shared_check, None
            try:
                self.users().auth_forget(ip, check)
            except (NotShared, UsersUnavailable, UsersError) as e:
                self.log("authfail-kept", ip=logged, check=check, reason=str(e))
            return None
        try:
            self._local_attempts(ip, limit, window).forget(self.now())
        except OSError as e:                # it stays counted: one failure too many, never one too few
            self.log("authfail-kept", ip=logged, reason=str(e))
        return None

    def _local_attempts(self, ip, limit, window):
        if self._attempts is None:
            from qmailpy.smtpd.authlimit import Attempts
            self._attempts = Attempts(paths.authfail_path(paths.qmailhome(self.environ)), ip, limit, window, self.pid)
        return self._attempts

    def start_tls(self, cleartext, ready=b""):
        """Write `cleartext` (the replies so far), make the context, write `ready` (STARTTLS's
        220), then the handshake on the connection: the TLS Info, or why it failed (a text);
        actions.NoContext, with only `cleartext` written, when `ready` was given and the
        controls make no context (the TLS patch says 454 then, and goes on in clear)."""
        from qmailpy.smtpd.actions import NoContext
        from qmailpy.smtpd.tls import TlsChannel, TlsUnavailable, server_context
        import ssl
        try:
            self.channel.write(cleartext)
            try:
                ctx = server_context(self.controls)
            except TlsUnavailable as e:
                if ready:
                    return NoContext(str(e))
                raise
            self.channel.write(ready)
            channel = TlsChannel(ctx, self.channel)
            info = channel.handshake()
        except (TlsUnavailable, EOFError) as e:
            return str(e)
        except ssl.SSLError as e:
            return "handshake: %s" % (e.reason or e)
        except Silent:
            return "handshake: the client was silent for timeoutsmtpd"
        except CutOff as e:
            return "handshake: cut off (%s)" % e.reason
        except OSError as e:        # the client went away, or stopped reading (TimeoutError)
            return "handshake: %s" % (e.strerror or e or type(e).__name__)
        self.channel = channel
        return info

    def authenticate(self, mech, user, secret, challenge):
        if self.argv:
            from qmailpy.smtpd.checkpassword import checkpassword
            return checkpassword(self.argv, user, secret, challenge, self.environ)
        return self.users().authenticate(mech, user, secret, challenge)


def write_all(fd, data, timeout=None):
    """Write everything; with a timeout, give up (TimeoutError) when the client stops
    reading for that long, as qmail's safewrite/timeoutwrite do."""
    view = memoryview(data)
    if timeout is None:
        while view:
            view = view[os.write(fd, view):]
        return
    os.set_blocking(fd, False)
    try:
        while view:
            try:
                view = view[os.write(fd, view):]
                continue
            except BlockingIOError:
                pass
            if not select.select([], [fd], [], timeout)[1]:
                raise TimeoutError("client does not read")
    finally:
        os.set_blocking(fd, True)


class Silent(Exception):
    """The client sent nothing for timeoutsmtpd seconds."""


class CutOff(Exception):
    """The session passed timeoutsession ("deadline"), or the client sends slower than
    smtpminrate ("rate")."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class PlainChannel:
    """The connection as fds: read() waits up to `timeout` (Silent after), b"" at the end;
    write() gives up when the client stops reading (TimeoutError). With a `deadline` (a
    time.monotonic() value: timeoutsession) a read never waits past it (CutOff "deadline");
    with a `minrate` the bytes read over the time spent waiting for them are judged once
    that time reaches `window` (CutOff "rate"). Time we spend answering is not counted."""

    def __init__(self, fd_in, fd_out, timeout, deadline=None, minrate=0, window=60):
        self.fd_in, self.fd_out, self.timeout = fd_in, fd_out, timeout
        self.deadline, self.minrate, self.window = deadline, minrate, window
        self.waited, self.got = 0.0, 0

    def read(self):
        wait, cut = self.timeout, None
        start = time.monotonic()
        if self.deadline is not None:
            left = self.deadline - start
            if left <= 0:
                raise CutOff("deadline")
            if left < wait:
                wait, cut = left, "deadline"
        ready = select.select([self.fd_in], [], [], wait)[0]
        self.waited += time.monotonic() - start
        if not ready:
            if cut is not None:
                raise CutOff(cut)
            raise Silent()
        data = os.read(self.fd_in, READ_SIZE)
        self.got += len(data)
        if data and self.minrate and self.waited >= self.window and self.got < self.minrate * self.waited:
            raise CutOff("rate")
        return data

    def write(self, data):
        if data:
            write_all(self.fd_out, data, self.timeout)


def serve(fd_in, fd_out, environ, argv=()):
    log = Logger("qmail-smtpd", os.getpid())
    services = Services(environ, list(argv), log)
    try:
        controls = Controls(paths.qmailhome(environ), environ)
        cfg = SmtpdConfig(controls, environ)
        services.controls = controls
    except ControlError as e:
        write_all(fd_out, refuse_controls(log, e))
        return 1
    for finding in controls.findings:
        log("warning", finding=str(finding))
    slot = None
    if cfg.periplimit:
        from qmailpy.smtpd.periplimit import acquire
        try:
            slot = acquire(paths.sessions_path(controls.home), cfg.peer.ip, cfg.periplimit, services.pid)
        except OSError as e:            # no inode for the slot (a full disk): this session is not counted
            log("periplimit-unavailable", ip=cfg.peer.ip, reason=str(e))
        else:
            if slot is None:
                log("refused", rule="periplimit", ip=cfg.peer.ip, limit=cfg.periplimit)
                write_all(fd_out, (R.TOO_MANY_SESSIONS + "\r\n").encode())
                return 1
    deadline = time.monotonic() + cfg.session_limit if cfg.session_limit else None
    conversation = None
    try:
        services.plain = services.channel = PlainChannel(fd_in, fd_out, cfg.timeout, deadline, cfg.minrate,
                                                         cfg.minrate_window)
        conversation = Conversation(cfg, services)
        return _converse(conversation, services, log)
    finally:
        try:
            if conversation is not None:
                conversation.abandon()
            services.close()
        finally:
            if slot is not None:
                slot.release()


class ClientGone(Exception):
    """The channel's own read or write failed: the client went away or stopped reading."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def _send(services, data):
    try:
        services.channel.write(data)
    except TimeoutError as e:      # the client stopped reading our replies
        raise ClientGone("client does not read") from e
    except OSError as e:           # the client went away while we wrote
        raise ClientGone(e.strerror or str(e)) from e


def _receive(services):
    try:
        return services.channel.read()
    except (Silent, CutOff):
        raise
    except OSError as e:           # a reset, or a TLS record that is not one
        raise ClientGone(e.strerror or str(e)) from e


def _converse(session, services, log):
    """Greeting, then read/feed/write until the session closes; the exit code. The channel
    changes under us when the session starts TLS (services.start_tls). Only the channel's
    own reads and writes mean the client is gone; anything a session action raises (an
    OSError too) is the session's: a 421 and one log line."""
    try:
        out = session.start()               # first: it may change the channel (SMTPS)
        _send(services, out)
        while not session.closed:
            try:
                data = _receive(services)
            except Silent:
                _send(services, session.timeout())
                log("timeout")
                return 1
            except CutOff as e:
                out = session.cut_off(e.reason)
                log("cutoff", reason=e.reason, ip=session.cfg.peer.ip, waited="%.0f" % services.plain.waited,
                    bytes=services.plain.got)
                _send(services, out)
                return 1
            if not data:
                session.eof()
                return 1
            out = session.feed(data)        # first: STARTTLS changes the channel
            _send(services, out)
    except LocalTrouble as e:      # not the client's: its replies so far, then a 421 (a retry can work)
        reason = e.error.strerror or str(e.error)
        log("error", reason="local trouble: %s%s" % (e.error.filename + ": " if e.error.filename else "", reason))
        try:
            services.channel.write(e.sent + (R.INTERNAL_ERROR + "\r\n").encode())
        except OSError:
            pass
        return 1
    except ClientGone as e:
        session.eof()
        if e.reason == "client does not read":
            log("timeout", reason=e.reason)
        else:
            log("error", reason=e.reason)
        return 1
    except Exception as e:         # a bug: one log line (multilog would split a traceback) and a 421
        log("error", reason="internal bug: " + bug_text(e))
        if isinstance(e, ImportError):  # a module not found now (EIO): the next session under
            from qmailpy.lazyload import forget     # qmail-tcpserver looks again
            forget()
        try:
            services.channel.write((R.INTERNAL_ERROR + "\r\n").encode())
        except Exception:          # the channel itself (TLS) may be what failed
            pass
        return 1
    return session.status             # 0 after QUIT; 1 where qmail-smtpd does _exit(1)


def become_qmaild(environ):
    """Started as root (tcpserver without -u/-g): switch to qmaild now, as tcpserver -u/-g does.

    qmaild's uid and primary group (nofiles) and no other group: the process
    that reads the Internet's input holds nothing that can read the queue
    (messages go to qmail-queued's socket). No qmaild on the system (a
    development machine), or QMAILPY_SINGLEUSER: stay as we are, the rule
    qmail-send follows for its helpers (docs/operations.md).
    """
    from qmailpy.privs import SMTPD_USER, become, drops_privileges
    if drops_privileges(environ):
        become(SMTPD_USER)


USAGE = """usage: qmail-smtpd [checkpassword-program [args ...]]
Started by tcpserver for each connection: SMTP on fd 0/1, log lines on fd 2.
See docs/qmail-smtpd.md."""


@guard("qmail-smtpd", 1)
def main():
    from qmailpy.progstart import start
    start(USAGE)
    if os.getuid() == 0:
        become_qmaild(os.environ)
    return serve(0, 1, os.environ, sys.argv[1:])
