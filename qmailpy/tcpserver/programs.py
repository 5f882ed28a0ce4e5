"""The programs qmail-tcpserver can preload, and how a forked child runs one.

Only qmail-smtpd: its whole run is `serve(fd_in, fd_out, environ, argv)`
(qmailpy.smtpd.main), so a child forked from a loaded interpreter does in
1-2 ms what an exec does in 10. The program is named as under tcpserver
(`qmail-smtpd` or a path to it); a path must be qmailpy's own launcher,
since a C qmail-smtpd or anything else would need an exec, which is
tcpserver's job, not this one's.
"""
import os

from qmailpy.errstr import error_str

LAUNCHER_MARK = b"qmailpy.smtpd.main import main"
# Modules a session uses that qmail-smtpd imports on first use: loaded once in
# the parent so that no child pays for them.
# (The list is what a session that queues one message imports beyond smtpd.main;
# tests/test_queued.py checks that such a session imports nothing more.)
WARM = ("qmailpy.smtpd.envelope", "qmailpy.smtpd.message", "qmailpy.smtpd.received",
        "qmailpy.proto.grammar", "qmailpy.proto.dotdata", "qmailpy.proto.date822",
        "qmailpy.policy.relay", "qmailpy.policy.lists", "qmailpy.policy.lookup", "qmailpy.policy.dnscheck",
        "qmailpy.dns.resolver", "qmailpy.queue.sockclient", "qmailpy.queue.layout", "qmailpy.queue.main",
        "qmailpy.proto.qqsock", "qmailpy.privs", "qmailpy.srs.codec",
        "qmailpy.ctl.cdbmap", "cdblib.djb_hash")
# What STARTTLS and SMTPS import (ssl): loaded in the parent too when the home has a
# control/servercert.pem (or $SMTPS is set), so a TLS child pays for the handshake only.
WARM_TLS = ("qmailpy.smtpd.tls",)
# What the DNS checks import (dnspython, pyspf; about 100 ms of CPU, in each new worker
# otherwise), with the users database's client that the policy asks before them (a client
# that logged in over POP3 is a relay client, never SPF-checked: Session.pop_relay): loaded
# in the parent too when the controls turn one on (dns_wanted)
WARM_DNS = ("qmailpy.policy.spf", "qmailpy.policy.spfmacro", "qmailpy.policy.spfresult", "spf",
            "dns.reversename", "dns.rdtypes.ANY.TXT", "dns.rdtypes.ANY.PTR", "qmailpy.users.service",
            "qmailpy.users.answers", "qmailpy.users.sqlite",
            "qmailpy.users.sqliteowner", "qmailpy.dns.servers", "qmailpy.dns.literal")
DNS_CONTROLS = ("spfbehavior", "rblhosts", "mfdnscheck")


def dns_wanted(environ):
    """Will sessions ask DNS? control/spfbehavior above 0, or control/rblhosts or
    control/mfdnscheck set (tcprules may still turn a check on for some clients: those
    load what it needs in their worker). Controls that cannot be read: no."""
    from qmailpy import paths
    from qmailpy.ctl.reader import Controls
    try:
        controls = Controls(paths.qmailhome(environ), environ)
        return any(controls.value(name) for name in DNS_CONTROLS)
    except OSError:                     # ControlError: the sessions refuse with 421 anyway
        return False


def tls_wanted(environ):
    """Will sessions use TLS? ($SMTPS, or a control/servercert.pem in the home.)"""
    from qmailpy import paths
    return bool(environ.get("SMTPS")) or os.path.exists(
        os.path.join(paths.qmailhome(environ), "control", "servercert.pem"))


class Refused(Exception):
    """The program is not one qmail-tcpserver can preload."""


def smtpd(args, environ):
    """qmail-smtpd's main() after the exec it does not need: the exit code."""
    from qmailpy.smtpd.main import become_qmaild, serve
    if os.getuid() == 0:
        become_qmaild(environ)
    return serve(0, 1, environ, args)


PROGRAMS = {"qmail-smtpd": smtpd}


def load(program):
    """The runner for `program` (its modules imported now), or Refused."""
    name = os.path.basename(program)
    runner = PROGRAMS.get(name)
    if runner is None:
        raise Refused("qmail-tcpserver runs qmail-smtpd only, not %s: run %s under tcpserver" % (program, program))
    if "/" in program:
        try:
            with open(program, "rb") as f:
                head = f.read(512)
        except OSError as e:
            raise Refused("unable to read %s: %s" % (program, error_str(e))) from None
        if LAUNCHER_MARK not in head:
            raise Refused("%s is not qmailpy's qmail-smtpd: run it under tcpserver" % program)
    import importlib
    import qmailpy.smtpd.main  # noqa: F401  the program itself, loaded once
    warm = WARM + (WARM_TLS if tls_wanted(os.environ) else ())
    if dns_wanted(os.environ):
        from qmailpy.dns.resolver import LOOKUP_MODULES
        warm += LOOKUP_MODULES + WARM_DNS
    for module in warm:
        try:
            importlib.import_module(module)
        except ImportError:             # a session loads it itself; and it must find it then
            from qmailpy.lazyload import forget
            forget()
    return runner
