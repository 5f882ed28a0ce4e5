"""qmail-remote host sender recip...: deliver the message on fd 0, report on fd 1.

qmail-rspawn reads the \\0-terminated reports (qmailpy.remote.report) and
the exit code is 0 whenever reports were printed, failures included, as
qmail's zerodie() does (usage and set-up problems too: they are D/Z
reports). 111 means an internal bug: no report, qmail-rspawn defers with
"Unable to run qmail-remote." run() holds the work so a pre-forked launcher
can call it without an exec.

Order of work follows qmail-remote.c main(): arguments, home, controls,
smtproutes, address quoting, the message, DNS (relay: its addresses only;
else MX with the implicit-MX fallback), the best-preference-MX rule,
then each address not marked down in queue/lock/tcpto, until one connection
is made. A non-ASCII host (or relay) is looked up in DNS, smtproutes and
tlsdestinations as its A-labels (qmailpy.dns.idn); one that is not a valid IDN
bounces first (qmail would ask DNS for the raw UTF-8). Before DNS the message is DKIM-signed when its domain has a key
(qmailpy.dkim.sign; nothing is imported for a domain without one). Each
connection follows the destination's TLS plan (remote.tls): a certificate
that does not verify, or a failed handshake, of an opportunistic TLS means
a new connection to the same address; a required TLS that fails moves on to
the next address, and its report is the message report if none delivers.
"""
import os
import sys
import time

from qmailpy.exitcodes import EXIT_TROUBLE
from qmailpy.fileio import write_all
from qmailpy.log import guard, write_bug
from qmailpy.remote import report as R

PREF_NONE = 100000      # qmail's prefme when none of the addresses is mine
PREF_RELAY = 300000     # a relay from smtproutes is never "me"


def _settings(home, environ):
    """The controls qmail-remote reads, or Stop(Z Unable to read control files)."""
    from qmailpy.ctl.reader import Controls
    from qmailpy.remote.connect import source_address
    from qmailpy.remote.routes import parse_routes
    controls = Controls(home, environ)
    try:
        got = {name: controls.value(name) for name in
               ("timeoutremote", "timeoutconnect", "helohost", "smtproutes", "outgoingip",
                "tlsdestinations", "tlsclientciphers")}
        got["clientcert"] = controls.value("clientcert.pem")
        got["moreipme"] = tuple(controls.value("moreipme") or ())
    except OSError as e:                # ctl.reader.ControlError: unreadable, or not a number
        raise R.Stop(R.control(e)) from None
    try:
        got["outgoingip"] = source_address(got["outgoingip"] or "")
    except ValueError:
        raise R.Stop(R.NOIP) from None
    got["helohost"] = got["helohost"].encode("utf-8", "surrogateescape")
    got["smtproutes"] = parse_routes(got["smtproutes"] or ())
    got["controls"] = controls
    return got


def _alabels(host):
    """host with its non-ASCII labels as A-labels (qmailpy.dns.idn), the name DNS and the
    control tables know; an all-ASCII host as it is. Not a valid IDN: Stop (D, #5.1.3)."""
    if host.isascii():
        return host
    from qmailpy.dns.idn import to_ascii
    try:
        return to_ascii(host)
    except ValueError:
        raise R.Stop(R.bad_idn(host)) from None


def _addresses(host, name, relay, environ, seed):
    """(pref, ip, host name) triples to try, or Stop with qmail's DNS texts. host (the
    relay, else the recipients' domain) as given, for the reports; name, its A-labels
    (_alabels), what DNS is asked."""
    from qmailpy.dns.mxip import host_ips, mx_ips
    from qmailpy.dns.resolver import HARD, SOFT, Resolver
    resolver = Resolver(environ)
    got = host_ips(resolver, name, named=True) if relay else mx_ips(resolver, name, seed, named=True)
    if got.status == HARD:
        raise R.Stop(R.perm_dns(host, name))
    if got.status == SOFT and not got.values:
        raise R.Stop(R.DNS_SOFT)
    if not got.values:
        raise R.Stop(R.NOMX)
    return got.values


def _candidates(ips, relay, more_ipme):
    """qmail's prefme rule: drop every address at or above my own best preference.
    The (ip, host name) pairs that remain; Stop(Z) when this host's addresses cannot be listed."""
    prefme = PREF_RELAY
    if not relay:
        from qmailpy.remote.ipme import my_addresses, norm
        try:
            mine = my_addresses(more_ipme)
        except OSError:                 # ipme_init() failed: qmail's temp_oserr()
            raise R.Stop(R.OSERR) from None
        prefme = min([pref for pref, ip, _ in ips if norm(ip) in mine], default=PREF_NONE)
    keep = [(ip, name) for pref, ip, name in ips if pref < prefme]
    if not keep:
        raise R.Stop(R.AMBIGMX)
    return keep


def _deliver(argv, fd0, environ, reports):
    """All of qmail-remote's work; ends by raising Stop."""
    from qmailpy import paths
    from qmailpy.remote.client import smtp
    from qmailpy.remote.connect import connect
    from qmailpy.remote.message import from_fd
    from qmailpy.remote.routes import mangle, route
    from qmailpy.remote.tcpto import TcpTo
    from qmailpy.remote.tls import Plan, Trouble
    from qmailpy.remote.wire import Conn, Dropped

    args = [os.fsencode(a) for a in argv[1:]]
    if len(args) < 3:
        raise R.Stop(R.USAGE)
    home = os.path.abspath(paths.qmailhome(environ))
    if not os.path.isdir(home) or not os.access(home, os.X_OK):
        raise R.Stop(R.CHDIR)
    cfg = _settings(home, environ)

    dest = _alabels(args[0])                # the recipients' domain as DNS and the tables know it
    relay, port = route(cfg["smtproutes"], dest)
    host = relay or args[0]
    sender = mangle(args[1])
    recips = [mangle(r) for r in args[2:]]
    message = _dkim_sign(cfg["controls"], from_fd(fd0), args[1])

    seed = int(time.time()) + (os.getpid() << 16)
    ips = _addresses(host, _alabels(relay) if relay else dest, relay, environ, seed)
    down = TcpTo(paths.queue_path(home, "lock", "tcpto"))
    policy = _tls_policy(cfg, dest)
    failed_tls = None                       # the report of the last required TLS that failed
    for ip, name in _candidates(ips, relay, cfg["moreipme"]):
        if down.is_down(ip):
            continue
        plan = Plan(policy, name, cfg)
        while plan is not None:
            sock, timed_out = connect(ip, port, cfg["timeoutconnect"], cfg["outgoingip"])
            down.record(ip, timed_out)      # a success (timed_out False) clears the count
            if sock is None:
                break
            conn = Conn(sock, ip.encode("ascii"), cfg["timeoutremote"])
            try:
                smtp(conn, cfg["helohost"], sender, recips, message, reports, plan, args[0])
            except Dropped:
                raise R.Stop(R.dropped(conn.partner, conn.critical)) from None
            except Trouble as trouble:
                plan = plan.after(trouble)  # the same address again, or None: the next one
                if plan is None:
                    failed_tls = trouble.report
            finally:
                conn.close()
    raise R.Stop(failed_tls or R.NOCONN)


def _tls_policy(cfg, host):
    from qmailpy.remote.tls import parse_destinations, policy_for
    return policy_for(parse_destinations(cfg["tlsdestinations"] or ()), host)


def _dkim_sign(controls, message, sender):
    """The message (remote.message) with DKIM-Signature fields, in memory, when its domain has a
    key (qmailpy.dkim.keys: a directory listing when none has, and the message is not read;
    its header alone when control/domainkeys/ has keys, none of them for it); a key that
    cannot be used is a control error."""
    from qmailpy.dkim.keys import signing_keys
    try:
        keys = signing_keys(controls, message.head, sender)
        if not keys:
            return message
        from qmailpy.dkim.sign import sign
        from qmailpy.remote.message import Message
        return Message(data=sign(controls, message.read(), keys))
    except OSError as e:                # ctl.reader.ControlError: a key or dkimsignheaders unusable
        raise R.Stop(R.control(e)) from None


def _write_all(fd, data):
    try:
        write_all(fd, data)
    except OSError:
        pass                            # qmail: _exit(0); qmail-rspawn sees what got through


def run(argv, fd0, fd1, environ):
    """Deliver, print the reports on fd1, return the exit code (0, or 111 on an internal bug)."""
    reports = []
    try:
        try:
            _deliver(argv, fd0, environ, reports)
        except R.Stop as stop:
            reports.append(stop.text + b"\0")
    except Exception as e:              # a bug: let qmail-rspawn defer instead of bouncing
        write_bug("qmail-remote", e)
        return 111
    _write_all(fd1, b"".join(reports))
    return 0


USAGE = """usage: qmail-remote host sender recipient [recipient ...]
Started by qmail-rspawn: delivers the message on fd 0 to host, reports on fd 1.
See docs/qmail-remote.md."""


@guard("qmail-remote", EXIT_TROUBLE)
def main():
    from qmailpy.progstart import start
    start(USAGE)
    return run(sys.argv, 0, 1, os.environ)
