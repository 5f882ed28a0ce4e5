"""Which name servers to ask, and how patiently: djbdns's $DNSCACHEIP, else resolv.conf.

$DNSCACHEIP holds one or more addresses separated by white space or commas,
each `IP`, `IP:PORT`, `[IPv6]` or `[IPv6]:PORT` (the port is our extension
for tests and odd set-ups). Without it, the `nameserver` lines of
/etc/resolv.conf are used (at most 3, as the C library does) together with
its `options timeout:N attempts:N`; no server at all means 127.0.0.1, the C
library's default. Pure parsing, no sockets.
"""
import os

DNS_PORT = 53
MAXNS = 3                 # glibc's MAXNS
DEFAULT_TIMEOUT = 5.0     # seconds per try (resolv.conf "timeout", glibc default)
DEFAULT_ATTEMPTS = 2      # rounds over the servers (resolv.conf "attempts")
MAX_TIMEOUT, MAX_ATTEMPTS = 30, 5   # glibc's RES_MAXRETRANS / RES_MAXRETRY bounds


class Config:
    """Name servers as (ip, port) pairs plus the per-try time-out and the number of rounds."""
    __slots__ = ("servers", "timeout", "attempts")

    def __init__(self, servers, timeout=DEFAULT_TIMEOUT, attempts=DEFAULT_ATTEMPTS):
        self.servers = tuple(servers)
        self.timeout = float(timeout)
        self.attempts = int(attempts)

    def __repr__(self):
        return "Config(%r, timeout=%r, attempts=%r)" % (self.servers, self.timeout, self.attempts)


def parse_server(text):
    """(ip, port) of one DNSCACHEIP entry, or None when it is not an address."""
    import ipaddress
    port = DNS_PORT
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                return None
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        if not p.isdigit():
            return None
        port = int(p)
    else:
        host = text
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if not 0 < port < 65536:
        return None
    return host, port


def parse_dnscacheip(value):
    """Every address of a $DNSCACHEIP value, in order; malformed entries are skipped."""
    out = []
    for item in value.replace(",", " ").split():
        got = parse_server(item)
        if got is not None:
            out.append(got)
    return out


def parse_resolv_conf(text):
    """Config from the text of resolv.conf (nameserver, options timeout:/attempts:)."""
    servers, timeout, attempts = [], DEFAULT_TIMEOUT, DEFAULT_ATTEMPTS
    for line in text.splitlines():
        words = line.split()
        if not words or words[0][0] in "#;":
            continue
        if words[0] == "nameserver" and len(words) > 1 and len(servers) < MAXNS:
            addr = words[1]
            got = parse_server("[%s]" % addr if ":" in addr else addr)   # no port in resolv.conf
            if got is not None:
                servers.append(got)
        elif words[0] == "options":
            for opt in words[1:]:
                name, _, n = opt.partition(":")
                if n.isdigit() and name == "timeout":
                    timeout = max(1, min(int(n), MAX_TIMEOUT))
                elif n.isdigit() and name == "attempts":
                    attempts = max(1, min(int(n), MAX_ATTEMPTS))
    return Config(servers or [("127.0.0.1", DNS_PORT)], timeout, attempts)


def load(environ=None, resolv_conf="/etc/resolv.conf"):
    """The Config to use: $DNSCACHEIP when it names a server, else resolv.conf."""
    environ = os.environ if environ is None else environ
    servers = parse_dnscacheip(environ.get("DNSCACHEIP") or "")
    if servers:
        return Config(servers[:MAXNS])
    try:
        with open(resolv_conf, encoding="utf-8", errors="replace") as f:
            return parse_resolv_conf(f.read())
    except OSError:
        return Config([("127.0.0.1", DNS_PORT)])
