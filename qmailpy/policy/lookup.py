"""DNS for the policy: the resolver qmail-smtpd uses, the questions the checks ask,
and StaticResolver, a resolver whose answers are given as text.

Time-outs: the resolver is qmailpy.dns's (servers from $DNSCACHEIP, else
/etc/resolv.conf; each try waits `timeout` seconds, `attempts` rounds over
the servers). $DNSTIMEOUT (seconds, decimals allowed, 0.05..30) overrides the
per-try time-out for qmail-smtpd's checks, so an admin can keep a dead DNSBL
or name server from holding a session long; a lookup that times out is a soft
failure and the checks answer with a temporary error (451), never a refusal.
"""
from qmailpy.ctl.reader import env_seconds
from qmailpy.dns.resolver import HARD, OK, SOFT, Answer, merge_addresses

MIN_TIMEOUT, MAX_TIMEOUT = 0.05, 30.0


def smtpd_resolver(environ):
    """A Resolver configured from `environ` ($DNSCACHEIP, $DNSTIMEOUT) or resolv.conf."""
    from qmailpy.dns import servers
    from qmailpy.dns.resolver import Resolver
    config = servers.load(environ)
    timeout = env_seconds(environ, "DNSTIMEOUT", None)      # malformed: ControlError (qmail-smtpd: 421)
    if timeout is not None:
        config = servers.Config(config.servers, min(max(timeout, MIN_TIMEOUT), MAX_TIMEOUT), config.attempts)
    return Resolver(config=config)


def is_literal(host):
    """An address literal ([1.2.3.4], [IPv6:...]) needs no DNS; nor does a dotted quad
    without brackets, which qmail's dns_mxip() takes as an address (ip_scan)."""
    if host.startswith("[") and host.endswith("]"):
        return True
    from qmailpy.dns.literal import ip_literal
    return ip_literal(host) is not None


def exists(resolver, name):
    """Does `name` have an MX record, or else an address (A, AAAA)? An Answer:

    ok (values name what was found), hard (NXDOMAIN, or neither MX nor address)
    or soft (a lookup failed softly: try later). Like qmail's dns_mxip(), a
    name whose MX lookup ends in NODATA (or only a CNAME) falls back to its
    addresses; NXDOMAIN ends the test at once. As dns_ip(), an A answer holding
    only a CNAME (an alias whose target has no address) is ok ("CNAME"); an
    AAAA record is enough too (qmail knows only A). A non-ASCII name (an SMTPUTF8
    sender's domain) is asked as its A-labels (qmailpy.dns.idn, as qmail-remote
    asks them); one that is not a valid IDN is hard (badname) without a lookup.
    """
    if not name.isascii():
        from qmailpy.dns.idn import to_ascii
        try:
            name = to_ascii(name.encode("utf-8", "surrogateescape")).decode("ascii")
        except ValueError:
            return Answer(HARD, (), "badname")
    mx = resolver.mx(name)
    if mx.status == SOFT:
        return mx
    if mx.status == OK and mx.values:
        return Answer(OK, ["MX"])
    if mx.status == HARD and mx.reason in ("nxdomain", "badname"):
        return mx
    a = resolver.a(name)
    if a.status == OK:                  # dns_ip(): an answer holding only a CNAME is no failure either
        return Answer(OK, ["A" if a.values else "CNAME"])
    if a.status == HARD and a.reason in ("nxdomain", "badname"):
        return a
    aaaa = resolver.aaaa(name)
    if aaaa.status == OK and aaaa.values:
        return Answer(OK, ["A"])
    if SOFT in (a.status, aaaa.status):
        return a if a.status == SOFT else aaaa
    return Answer(HARD, (), "nodata")


def reverse_ip(ip):
    """The DNSBL/PTR labels of an address: '7.2.0.192' for 192.0.2.7, nibbles for IPv6; None if not an IP."""
    parts = ip.split(".")
    if len(parts) == 4 and all(p.isdigit() and p.isascii() and int(p) < 256 for p in parts):
        return ".".join(str(int(p)) for p in reversed(parts))
    if ":" not in ip:
        return None
    import ipaddress
    try:
        addr = ipaddress.IPv6Address(ip)
    except ValueError:
        return None
    if addr.ipv4_mapped is not None:
        return reverse_ip(str(addr.ipv4_mapped))
    return ".".join(reversed(addr.exploded.replace(":", "")))


BEHAVIOURS = ("SERVFAIL", "TIMEOUT", "NXDOMAIN")


class StaticResolver:
    """A resolver answering from given records, for qmail-policytest and unit tests.

    add("example.com", "MX", "10 mx.example.com"); add(name, "A", "192.0.2.1");
    add(name, "TXT", "v=spf1 -all"); add("7.2.0.192.in-addr.arpa", "PTR", "host.example");
    add(name, "SERVFAIL") (every type soft-fails), add(name, "MX", "SERVFAIL") (one type),
    "TIMEOUT" likewise (soft, reason timeout), "NXDOMAIN" (hard).
    Unknown names are NXDOMAIN; a known name without the type asked is NODATA.
    queries lists (name, TYPE) in the order asked.
    """

    def __init__(self, lines=()):
        self.zones = {}
        self.queries = []
        for line in lines:
            self.add_line(line)

    def add_line(self, line):
        """'NAME TYPE VALUE...' or 'NAME BEHAVIOUR' (see the class doc)."""
        words = line.split(None, 2)
        if len(words) < 2:
            raise ValueError("not 'NAME TYPE VALUE': %r" % line)
        self.add(*words)

    def add(self, name, rtype, value=None):
        name = name.lower().rstrip(".")
        rtype = rtype.upper()
        entry = self.zones.setdefault(name, {})
        if rtype in BEHAVIOURS and value is None:
            entry["*"] = rtype
            return
        if value is None:
            raise ValueError("%s %s: no value" % (name, rtype))
        if value.upper() in BEHAVIOURS:
            entry[rtype] = value.upper()
            return
        if rtype == "MX":
            pref, _, host = value.partition(" ")
            value = (int(pref), host.strip().rstrip("."))
        elif rtype in ("PTR", "CNAME", "NS"):
            value = value.rstrip(".")
        entry.setdefault(rtype, []).append(value)

    def _get(self, name, rtype):
        name = name.lower().rstrip(".")
        self.queries.append((name, rtype))
        entry = self.zones.get(name)
        if entry is None:
            return Answer(HARD, (), "nxdomain")
        behaviour = entry.get("*") or entry.get(rtype)
        if isinstance(behaviour, str):
            if behaviour == "NXDOMAIN":
                return Answer(HARD, (), "nxdomain")
            return Answer(SOFT, (), behaviour.lower())
        if behaviour is None:
            return Answer(HARD, (), "nodata")
        return Answer(OK, behaviour)

    def until(self, deadline):
        """As Resolver.until(): the answers are given, so nothing waits."""
        return self

    def a(self, name):
        return self._get(name, "A")

    def aaaa(self, name):
        return self._get(name, "AAAA")

    def mx(self, name):
        return self._get(name, "MX")

    def txt(self, name):
        return self._get(name, "TXT")

    def ptr(self, ip):
        labels = reverse_ip(ip)
        if labels is None:
            return Answer(HARD, (), "badname")
        return self._get(labels + (".ip6.arpa" if labels.count(".") == 31 else ".in-addr.arpa"), "PTR")

    def addresses(self, name, families=("A", "AAAA")):
        return merge_addresses(self._get(name, rtype) for rtype in families)
