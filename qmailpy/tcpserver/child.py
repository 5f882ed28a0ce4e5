"""One connection in a worker: what tcpserver's doit() does, then the program.

In tcpserver's order: `pid N from IP`, IP options and TCP_NODELAY, the banner,
the local and remote names, ident, the rules (the cdb opened now, for this
connection: a new tcprules run counts from the next client), the `ok`/`deny`
line; a denied client is dropped with exit 100 and never sees the program.
Then fds 0 and 1 become the socket, os.environ is the connection's
environment (and only it), and the preloaded program runs with a fresh
session; its exit code is the session's, reported by the worker
(qmailpy.tcpserver.worker) as tcpserver reports a child's.
"""
import os
import sys

from qmailpy.errstr import error_str
from qmailpy.log import write_bug, write_safe_line
from qmailpy.tcpserver import names
from qmailpy.tcpserver.tcpenv import environ_of, verdict_line

DROP = "tcpserver: warning: dropping connection, "
PROGRAM = "qmail-tcpserver"                 # the name its bug lines start with


class Connection:
    """The two ends of an accepted connection, as tcpserver names them."""

    def __init__(self, sock, peer):
        local = sock.getsockname()
        # for sockets (the ident lookup): a link-local address keeps its %interface
        self.local_addr, self.local_port = _unmapped(local[0]), local[1]
        self.remote_addr, self.remote_port = _unmapped(peer[0]), peer[1]
        self.local_ip, self.remote_ip = _text(self.local_addr), _text(self.remote_addr)
        self.proto = "TCP6" if ":" in self.remote_ip else "TCP"
        # on an IPv6 listener (its addresses have ':'), the TCP6* spellings the IPv6 tcpserver
        # gives every client, an IPv4 one's as ::ffff:a.b.c.d; None on an IPv4 listener
        ipv6_listener = ":" in local[0]
        self.local_ip6 = _text6(local[0]) if ipv6_listener else None
        self.remote_ip6 = _text6(peer[0]) if ipv6_listener else None
        self.local_host = self.remote_host = self.remote_info = None


def _unmapped(ip):
    """::ffff:1.2.3.4 (an IPv4 client of a dual-stack listener) as 1.2.3.4."""
    return ip[7:] if ip.startswith("::ffff:") and "." in ip else ip


def _text(ip):
    """An address as tcpserver writes it: IPv6 as its ip6_fmt() (ip6_text), IPv4 as it is."""
    return ip6_text(ip) if ":" in ip else ip


def _text6(ip):
    """An address of an IPv6 socket as the IPv6 tcpserver's ip6_fmt() writes it: an IPv4
    client's ::ffff:a.b.c.d with its dotted quad, any other by ip6_text."""
    ip = _unmapped(ip)
    return ip6_text(ip) if ":" in ip else "::ffff:" + ip


def ip6_text(ip):
    """An IPv6 address as ucspi-tcp-ipv6's ip6_fmt() writes it, so TCPREMOTEIP and the rules
    keys tried are the IPv6 tcpserver's: lower-case groups without leading zeros, the first
    longest run of zero groups as '::' even when the run is one group (2001:db8::1:2:3:4:5,
    where inet_ntop, RFC 5952, writes 2001:db8:0:1:2:3:4:5), ::1.2.3.4 as ::102:304."""
    import ipaddress
    packed = ipaddress.IPv6Address(ip).packed
    groups = ["%x" % int.from_bytes(packed[i:i + 2], "big") for i in range(0, 16, 2)]
    best, run = (0, 0), 0
    for i, g in enumerate(groups + ["end"]):
        if g == "0":
            run += 1
        else:
            if run > best[1]:
                best = (i - run, run)
            run = 0
    if not best[1]:
        return ":".join(groups)
    start, length = best
    return ":".join(groups[:start]) + "::" + ":".join(groups[start + length:])


def client_text(ip):
    """A typed address (qmail-policytest's --ip) as a connection from it has it in TCPREMOTEIP
    and the rules keys: IPv4-mapped as IPv4, IPv6 as ip6_text; text no address is kept."""
    if ":" not in ip:
        return ip
    import ipaddress
    try:
        mapped = ipaddress.IPv6Address(ip).ipv4_mapped
    except ValueError:
        return ip
    return str(mapped) if mapped is not None else ip6_text(ip)


class Dropped(Exception):
    """The connection is dropped before the program runs (exit code in args[1])."""


def prepare(sock, conn, opts, base_env, log):
    """tcpserver's doit(): the connection's environment, or Dropped."""
    import socket
    pid = os.getpid()
    if opts.verbosity >= 2:
        log("tcpserver: pid %d from %s" % (pid, conn.remote_ip))
    if opts.kill_ip_options and conn.proto == "TCP":
        try:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, b"")
        except OSError:
            pass
    if not opts.delay:
        try:                    # tcpserver's socket_tcpnodelay(), whose failure it ignores
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
    if opts.banner:
        try:
            sock.sendall(opts.banner.encode("latin-1", "replace"))
        except OSError as e:
            raise Dropped("unable to print banner: " + error_str(e), 111) from None
    resolver = None
    if opts.localhost is not None:
        conn.local_host = opts.localhost
    else:
        resolver = _resolver(base_env)
        conn.local_host = names.host_name(resolver, conn.local_ip)
    if opts.remotehost:
        conn.remote_host = names.host_name(resolver or _resolver(base_env), conn.remote_ip, opts.paranoid)
    if opts.remoteinfo:
        conn.remote_info = names.remote_info(conn.local_addr, conn.local_port, conn.remote_addr,
                                             conn.remote_port, opts.timeout)
    verdict, rule_env = "ok", {}
    if opts.rules:
        verdict, rule_env = rule_for(opts, conn)
    if opts.verbosity >= 2:
        write_safe_line(2, verdict_line(verdict, pid, conn))
    if verdict == "deny":
        raise Dropped(None, 100)
    return environ_of(base_env, conn, rule_env)


def _resolver(base_env):
    from qmailpy.dns.resolver import Resolver
    return Resolver(dict(e.split("=", 1) for e in base_env))


def rule_for(opts, conn):
    """('ok'|'deny', {VAR: value}) from the rules cdb, opened for this connection."""
    from qmailpy.ctl.cdbmap import open_cdb, tcprules_lookup
    from qmailpy.ctl.reader import ControlError
    try:
        cdb = open_cdb(opts.rules)
        if cdb is None:
            if not opts.allow_no_rules:
                raise Dropped("unable to read %s: file does not exist" % opts.rules, 111)
            return "ok", {}
        try:
            found = tcprules_lookup(cdb, conn.remote_ip, conn.remote_host, conn.remote_info)
        finally:
            cdb.close()
    except ControlError as e:
        raise Dropped("unable to read %s: %s" % (opts.rules, e.reason), 111) from None
    if found is None:
        return "ok", {}
    _, verdict, env = found
    return ("deny" if verdict == "deny" else "ok"), env


def replace_environ(environ):
    """os.environ becomes `environ` exactly: what the last session had and this one has not is
    removed, what differs is set. A worker's sessions share most of their variables (the
    parent's), so this is a handful of putenv calls, not an unsetenv and a putenv of each."""
    current = os.environ
    for name in [n for n in current if n not in environ]:
        del current[name]
    for name, value in environ.items():
        if current.get(name) != value:
            current[name] = value


def session(sock, peer, opts, runner, base_env, log):
    """One connection: tcpserver's doit(), then the program on fds 0 and 1 with the
    connection's environment; the exit code. Afterwards fds 0 and 1 are /dev/null again and
    the socket is closed, so the client sees the end when the session ends, whatever the
    worker that ran it does next."""
    code = 111
    try:
        try:
            conn = Connection(sock, peer)
        except OSError as e:                # its getsockname: tcpserver's drop, after its `pid` line
            if opts.verbosity >= 2:
                log("tcpserver: pid %d from %s" % (os.getpid(), _text(_unmapped(peer[0]))))
            log(DROP + "unable to get local address: " + error_str(e))
            return 111
        try:
            environ = prepare(sock, conn, opts, base_env, log)
        except Dropped as d:
            if d.args[0]:
                log(DROP + d.args[0])
            return d.args[1]
        fd = sock.detach()
        if fd != 0:
            os.dup2(fd, 0)
        if fd != 1:
            os.dup2(0, 1)
        if fd > 1:
            os.close(fd)
        replace_environ(environ)
        code = runner(opts.args, environ)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception as e:                  # a bug: one log line, the session's exit as qmail-smtpd's bug exit
        write_bug(PROGRAM, e)
        code = 1
    finally:
        try:
            sys.stdout.flush()
        except Exception:
            pass
        sock.close()
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.close(devnull)
    return code if isinstance(code, int) else 1
