"""qmail-lspawn: runs qmail-local for each local delivery qmail-send asks for.

usage (qmail-send starts it): qmail-lspawn [defaultdelivery]; fds 0/1 as in
qmailpy.spawn.server. Runs `qmail-local -- user homedir local dash ext
domain sender defaultdelivery`, message on fd 0, output collected from fd 1
and 2: by default in a forked child running qmail-local's main(), preloaded
here (qmailpy.spawn.fork); when $QMAILLOCAL names a program (a replaced
qmail-local, as qmail allows), by exec'ing that program. Who the delivery
belongs to is qmailpy.spawn.mailbox's job. As root it runs qmail-local as
the mailbox's uid/gid and no other group (never as root); otherwise as the invoking user
(single-user mode). $MAILDIRQUOTA is set to a users-database mailbox's quota
and removed otherwise. Reports follow qmail-lspawn.c exactly, cut at 3000 bytes.
The controls are reread before the next batch of commands when a control
file it read has changed (qmailpy.ctl.watch: qmail-send, running as
qmails, cannot signal it), or after a SIGHUP.
"""
import os
import signal
import sys

from qmailpy import exitcodes as X, paths
from qmailpy.log import guard, write_line
from qmailpy.progstart import start
from qmailpy.proto.spawnwire import DEFERRAL, FAILURE, SUCCESS
from qmailpy.spawn import mailbox, passwd, server
from qmailpy.spawn import fork, programs
from qmailpy.ctl.watch import FailedReread, WatchedControls

DEFAULT_DELIVERY = "./Maildir/"
ROOT_REFUSED = b"ZNot allowed to perform deliveries as root.\n"
EXEC_SOFT = b"ZUnable to run qmail-local.\n"
EXEC_HARD = b"DUnable to run qmail-local.\n"
CRASHED = b"Zqmail-local crashed.\n"
# qlx.h codes qmail-local (or its helpers) may exit with, and qmail-lspawn's fixed texts
QLX_TEXTS = {
    117: mailbox.CDB_TROUBLE,
    119: b"ZOut of memory in qmail-lspawn.\n",
    118: b"ZTemporary failure in qmail-lspawn.\n",
    116: mailbox.NOALIAS,
    113: ROOT_REFUSED,
    112: b"ZInternal qmail-lspawn bug.\n",
    115: mailbox.NFS,
    126: EXEC_HARD,
    120: EXEC_SOFT,
    121: b"ZUnable to run qmail-getpw.\n",
}
TEMPORARY = frozenset((111, 71, 74, 75))
ID_SWITCH_FAILED = 112         # QLX_USAGE: prot_gid/prot_uid failing is a deferral, whatever the errno
MAIN = "qmailpy.local.main:main"            # what a forked child runs
# Its modules: imported once, before the first delivery. Never subprocess, threading or
# random: their at-fork handlers would run in every child (qmailpy.forkexec starts programs)
PRELOAD = ("qmailpy.local.main", "qmailpy.local.deliver", "qmailpy.local.forward", "qmailpy.local.program",
           "qmailpy.local.quota", "qmailpy.local.vdelivermail", "qmailpy.local.maildir", "qmailpy.local.mbox",
           "qmailpy.forkexec", "qmailpy.sgetopt", "fcntl", "resource",
           "qmailpy.queue.sockclient", "qmailpy.proto.qq")       # a forward: 2.8 ms of CPU in each child else


def report(status, output):
    """qmail-lspawn.c report(): exit status + qmail-local's output -> K/Z/D + text."""
    if status < 0:
        return CRASHED
    fixed = QLX_TEXTS.get(status)
    if fixed is not None:
        return fixed
    kind = SUCCESS if status == 0 else DEFERRAL if status in TEMPORARY else FAILURE
    return kind + output.split(b"\0", 1)[0]


class Local:
    """The spawn.c `Program` for local deliveries."""
    channel = "local"                 # as qmail-send names it in its log
    truncreport = 3000
    unread = None                     # the exit status is the result; the text is what got through

    def __init__(self, home, environ, aliasempty):
        self.home, self.environ, self.aliasempty = home, environ, aliasempty
        self.qmaillocal = environ.get("QMAILLOCAL") or None    # None: fork, not exec
        self.root = os.getuid() == 0       # never deliver as root (qmail's QLX_ROOT)
        self.resolver = self.controls = None
        self.reload_wanted = True
        self.failed = FailedReread()
        self.refresh()

    def preload(self):
        """Import qmail-local's modules for the forked children (nothing when exec'ing)."""
        if self.qmaillocal is None:
            fork.preload(PRELOAD)

    def refresh(self):
        """Called before each batch of commands: reread the controls when one changed, or after a SIGHUP."""
        if not self.reload_wanted and not self.controls.changed():
            return
        self.reload_wanted = False
        controls = WatchedControls(self.home, self.environ)
        try:
            resolver = mailbox.Resolver(self.home, controls.require("qmail-lspawn"), not self.root,
                                        passwd.lookup(self.environ))
        except OSError as e:              # ctl.reader.ControlError: at start, we cannot start
            if self.resolver is None:
                raise
            if self.failed.said(controls):        # read again before the next batch (ctl.watch)
                write_line(2, "warning: qmail-lspawn: unable to reread controls: %s; keeping the old ones" % e)
            return
        if self.resolver is not None:
            self.resolver.close()
        self.controls, self.resolver = controls, resolver
        self.failed.cleared()

    def spawn(self, fdmess, fdout, sender, recip, at):
        local, domain = recip[:at], recip[at + 1:]
        if not local:                      # <>@host: nothing to deliver to
            return SUCCESS
        who = self.resolver.resolve(local, domain)
        if isinstance(who, bytes):
            return who
        if self.root and who.uid == 0:
            return ROOT_REFUSED
        args = [self.qmaillocal, "--", who.user, who.home, local, who.dash, who.ext,
                domain, sender, self.aliasempty]
        # the owner's uid and gid and no other group (qmail's prot_gid): forwards reach the
        # queue through qmail-queued, nothing else of the system is theirs to read
        ids = dict(user=who.uid, group=who.gid, extra_groups=[who.gid]) if self.root else {}
        env = self.environ                     # the same object: the child changes nothing
        if who.quota or "MAILDIRQUOTA" in env:
            env = dict(env)
            env.pop("MAILDIRQUOTA", None)      # only a users-database mailbox has a quota
            if who.quota:
                env["MAILDIRQUOTA"] = who.quota
        if self.qmaillocal is None:
            args[0] = fork.beside_me("qmail-local")
            return fork.start(MAIN, args, fdmess, fdout, self.home, env, ids, ID_SWITCH_FAILED)
        return programs.start(args, fdmess, fdout, self.home, env, (EXEC_SOFT, EXEC_HARD), ids,
                              QLX_TEXTS[ID_SWITCH_FAILED])

    def report(self, status, output):
        return report(status, output)

    def drops_output(self, status):
        """Does report() leave qmail-local's output out? For a crash and qmail's fixed QLX texts."""
        return status < 0 or status in QLX_TEXTS


USAGE = """usage: qmail-lspawn [defaultdelivery]
Started by qmail-send: delivery commands on fd 0, reports on fd 1; runs
qmail-local for each. See docs/qmail-lspawn.md."""


@guard("qmail-lspawn", X.EXIT_TROUBLE)
def main():
    start(USAGE)
    environ = os.environ
    home = os.path.abspath(paths.qmailhome(environ))
    aliasempty = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_DELIVERY
    server.shrug_off_signals("SIGINT", "SIGALRM", "SIGTERM")
    try:
        local = Local(home, environ, aliasempty)
    except OSError as e:
        write_line(2, "alert: qmail-lspawn: cannot start: unable to read controls: %s" % e)
        return X.EXIT_TROUBLE

    def on_hup(signum, frame):
        local.reload_wanted = True

    signal.signal(signal.SIGHUP, on_hup)
    return server.Server(home, local, server.spawn_limit(), server.qmailq_uid()).serve()
