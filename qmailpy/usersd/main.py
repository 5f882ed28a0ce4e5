"""qmail-usersd: the users service, long-running (daemontools in production, `make run` in development).

Started as root it binds $QMAILHOME/sock/users (mode 0666: the kernel's peer
credentials decide, not the file's mode), then becomes qmailu, the owner of
the users database and reader of the SRS keys, with no other group. It answers
qmaild (qmail-smtpd), root and itself; qmailq and qmails may ask only which
mailbox an address goes to (qmail-queue's filter keys). In single-user mode
(QMAILPY_SINGLEUSER, or no qmailu account) it stays the invoking user.
Log lines on fd 2; exit 111 when the socket cannot be made; SIGTERM ends it; SIGHUP does nothing.
"""
import os
import signal
import sys

from qmailpy import paths
from qmailpy.exitcodes import EXIT_TROUBLE
from qmailpy.log import Logger, guard

USER = "qmailu"                              # the users service's account (qmailpy/install/accounts.py)
ASKERS = ("qmaild",)                         # may ask every question, besides root and USER
ADDRESS_ASKERS = ("qmailq", "qmails")        # may ask ADDR only: qmail-queue as the queue's users

USAGE = """usage: qmail-usersd
The users service: answers qmail-smtpd's questions (AUTH, chkuser, POP-before-SMTP,
SRS recipients) on $QMAILHOME/sock/users. See docs/qmail-usersd.md."""


def _uids(names):
    import pwd
    out = []
    for name in names:
        try:
            out.append(pwd.getpwnam(name).pw_uid)
        except KeyError:
            pass
    return out


def bind(path):
    """The listening socket at `path` (qmailpy.unixsock: renamed into place). sock/ is made
    when missing, never the qmail home above it: a QMAILHOME that is no home is an error."""
    from qmailpy.unixsock import listen_at
    try:
        os.mkdir(os.path.dirname(path), 0o755)
    except FileExistsError:
        pass
    return listen_at(path, 128)


def become(user):
    """Root: switch to `user` and its own group alone; (uid, gid), or None without such a user."""
    import pwd
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return None
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    return pw.pw_uid, pw.pw_gid


def make_answers(home, environ):
    """A factory of Answers over controls that notice a changed file (the SRS keys after
    setsrssecret, usersdb): a worker asks stale() before each question."""
    from qmailpy.ctl.watch import WatchedControls
    from qmailpy.users.answers import Answers
    from qmailpy.users.base import open_users

    class Watched(Answers):
        def stale(self):
            return self.controls.changed()

    def make():
        controls = WatchedControls(home, environ)
        return Watched(lambda: open_users(home, controls), controls)
    return make


def run(environ, log):
    from qmailpy.privs import drops_privileges
    from qmailpy.usersd.questions import Peers
    from qmailpy.usersd.server import Server
    signal.signal(signal.SIGHUP, signal.SIG_IGN)       # nothing to reread: changed files are noticed per question
    home = paths.qmailhome(environ)
    path = paths.users_socket(home)
    try:
        listener = bind(path)
    except OSError as e:
        log("fatal", reason="cannot listen on %s: %s" % (path, e.strerror or e))
        return 111
    if drops_privileges(environ):
        if become(USER) is None:
            log("warning", reason="no user %s: running as root" % USER)
    me = os.geteuid()
    peers = Peers({0, me, *_uids(ASKERS)}, _uids(ADDRESS_ASKERS))
    server = Server(listener, make_answers(home, environ), peers, log)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    log("start", sock=path, uid=me)
    server.serve()
    listener.close()
    log("exit")
    return 0


@guard("qmail-usersd", EXIT_TROUBLE)
def main():
    from qmailpy.progstart import start
    start(USAGE)
    if len(sys.argv) > 1:
        sys.stderr.write(USAGE + "\n")
        return 100
    return run(os.environ, Logger("qmail-usersd", os.getpid()))
