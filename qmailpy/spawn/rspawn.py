"""qmail-rspawn: runs `qmail-remote host sender recipient` per remote delivery.

fds 0/1 as in qmailpy.spawn.server. By default qmail-remote's main() runs
in a forked child, its modules preloaded here (qmailpy.spawn.fork), as the
user qmail-rspawn runs as (qmailr); when $QMAILREMOTE names a program (a
replaced qmail-remote), that program is exec'd instead. Message on fd 0, its \\0-terminated r/h/s + K/Z/D reports read from fd 1
(and 2) and folded into one K/Z/D report exactly as qmail-rspawn.c does.
"""
import os

from qmailpy import exitcodes as X, paths
from qmailpy.log import guard
from qmailpy.progstart import start
from qmailpy.proto.spawnwire import DEFERRAL, FAILURE, SUCCESS
from qmailpy.spawn import server
from qmailpy.spawn import fork, programs

CRASHED = b"Zqmail-remote crashed.\n"
EXEC_SOFT = b"ZUnable to run qmail-remote.\n"
EXEC_HARD = b"DUnable to run qmail-remote.\n"
NO_OUTPUT = b"Zqmail-remote produced no output.\n"
# its output is its result: a read of it that failed leaves a report cut anywhere (qmail-rspawn.c's
# report() would take "r" with no message report after it for a D), so the result is unknown
UNREAD = b"Zqmail-rspawn unable to read qmail-remote's report. (#4.3.0)\n"
RANK = {b"K": 1, b"Z": 0, b"D": -1}
MAIN = "qmailpy.remote.main:main"            # what a forked child runs
# Its modules: imported once, before the first delivery (ssl: STARTTLS is
# tried whenever the peer offers it; dkim's signer stays lazy: only a domain with a key needs it).
# dnspython (LOOKUP_MODULES) is imported here too, before the first child that will look
# something up (Remote.ready_for): 30-90 ms of CPU to import in each such child otherwise,
# while loaded here it costs every later fork about 1 ms (threading's and random's at-fork
# handlers, more pages): a host whose smtproutes send everything to IP literals never pays it.
# The same for dkimpy once control/domainkeys/ has keys
PRELOAD = ("qmailpy.remote.main", "qmailpy.remote.client", "qmailpy.remote.connect", "qmailpy.remote.message",
           "qmailpy.remote.routes",
           "qmailpy.remote.tcpto", "qmailpy.remote.tls", "qmailpy.remote.wire", "qmailpy.remote.ipme",
           "qmailpy.dns.mxip", "qmailpy.dns.resolver", "qmailpy.dns.servers", "qmailpy.dkim.keys",
           "qmailpy.ctl.reader", "ssl", "fcntl")


def report(status, s):
    """qmail-rspawn.c report(): one K/Z/D line from qmail-remote's output."""
    if status < 0:
        return CRASHED
    if status == X.DELIVERY_TEMPORARY:
        return EXEC_SOFT
    if status != 0:
        return EXEC_HARD
    if not s:
        return NO_OUTPUT
    result, j = -1, 0
    for k in range(len(s)):           # the first message report K/Z/D decides
        if s[k] == 0:
            kind = s[j:j + 1]
            if kind in (b"K", b"Z"):
                result = RANK[kind]
                break
            if kind == b"D":
                break
            j = k + 1
    first = s[:1]
    orr = 0 if first == b"s" else -1 if first == b"h" else result
    out = [SUCCESS if orr == 1 else DEFERRAL if orr == 0 else FAILURE]
    nul = s.find(b"\0", 1)
    if nul >= 0:                       # the recipient line's text, then maybe the message's
        out.append(s[1:nul])
        k = nul + 1
        if result <= orr and k < len(s) and s[k:k + 1] in (b"Z", b"D", b"K"):
            out.append(s[k + 1:].split(b"\0", 1)[0])
    return b"".join(out)


def forget_down_hosts(home):
    """qmail-rspawn.c initialize(): tcpto_clean() zeroes queue/lock/tcpto at every start, so a
    restarted qmail tries every host again; a missing or unwritable file is left as it is."""
    from qmailpy.queue.layout import tcpto_path
    from qmailpy.remote.tcpto import clear
    try:
        clear(tcpto_path(home))
    except OSError:
        pass


class Remote:
    """The spawn.c `Program` for remote deliveries."""
    channel = "remote"                 # as qmail-send names it in its log
    truncreport = 0
    unread = UNREAD

    def __init__(self, home, environ):
        self.home, self.environ = home, environ
        self.qmailremote = environ.get("QMAILREMOTE") or None   # None: fork, not exec
        self.dns_loaded = self.dkim_loaded = False

    def preload(self):
        """Import qmail-remote's modules for the forked children (nothing when exec'ing)."""
        if self.qmailremote is None:
            fork.preload(PRELOAD)

    def refresh(self):
        pass

    def ready_for(self, domain):
        """Import here, once, what the preload leaves out but the child about to be forked
        will need: dnspython before the first child that will ask DNS (qmailpy.remote.routes.
        asks_dns with control/smtproutes as it is now), dkimpy once control/domainkeys/ has
        keys (36 ms of CPU in every signing child otherwise). A control that cannot be read
        here: the child meets it and reports it; nothing is loaded for it."""
        from qmailpy.ctl.reader import Controls
        if not self.dns_loaded:
            from qmailpy.remote.routes import asks_dns, parse_routes
            try:
                table = parse_routes(Controls(self.home, self.environ).value("smtproutes") or ())
            except OSError:             # ControlError too
                table = {}
            if asks_dns(table, domain):
                from qmailpy.dns.resolver import LOOKUP_MODULES
                fork.preload(LOOKUP_MODULES)
                self.dns_loaded = True
        if not self.dkim_loaded:
            from qmailpy.dkim.keys import any_keys
            try:
                signs = any_keys(self.home)
            except OSError:
                signs = False
            if signs:                   # dkimpy with qmailpy's parts; From:'s domain
                fork.preload(("qmailpy.dkim.lib:dkimpy", "qmailpy.dkim.sign", "qmailpy.proto.headers",
                              "email.utils"))
                self.dkim_loaded = True

    def spawn(self, fdmess, fdout, sender, recip, at):
        if self.qmailremote is None:
            self.ready_for(recip[at + 1:])
            args = [fork.beside_me("qmail-remote"), recip[at + 1:], sender, recip]
            return fork.start(MAIN, args, fdmess, fdout, self.home, self.environ)
        args = [self.qmailremote, recip[at + 1:], sender, recip]
        return programs.start(args, fdmess, fdout, self.home, self.environ, (EXEC_SOFT, EXEC_HARD))

    def report(self, status, output):
        return report(status, output)

    def drops_output(self, status):
        """Does report() leave qmail-remote's output out? For any exit but 0 (and a crash)."""
        return status != 0


USAGE = """usage: qmail-rspawn
Started by qmail-send: delivery commands on fd 0, reports on fd 1; runs
qmail-remote for each. See docs/qmail-rspawn.md."""


@guard("qmail-rspawn", X.EXIT_TROUBLE)
def main():
    start(USAGE)
    environ = os.environ
    home = os.path.abspath(paths.qmailhome(environ))
    server.shrug_off_signals("SIGINT", "SIGALRM", "SIGTERM", "SIGHUP")
    forget_down_hosts(home)
    return server.Server(home, Remote(home, environ), server.spawn_limit(), server.qmailq_uid()).serve()
