"""control/smtproutes lookups and qmail's address quoting, as qmail-remote.c does them.

Each route line is `domain:relay[:port]`; the key is everything before the
first ':', compared without regard to case (constmap), and a later line with
the same key wins (constmap's chains put later entries first). Lines without
a ':' are ignored. The lookup tries the whole host, then every suffix that
starts with '.', then the empty key (a `:relay` default route); the first key
found decides, so `example.com:` sends example.com to its MX even under a
default route. Port: scan_ulong of what follows the relay's first ':'; a relay
written as an IPv6 literal (`[IPv6:::1]`, RFC 5321's form) ends at its ']', so
`example.com:[IPv6:2001:db8::25]:2525` works. (A bare `[::1]` is split the same
way but is no address literal: it is looked up as a name, and fails.) The same lookup order (whole
host, '.'-suffixes, a default key) serves control/tlsdestinations (remote.tls).
A key with non-ASCII labels is kept as its A-labels (table_key), and qmail-remote
looks up the host's A-labels, so `bücher.example` and `xn--bcher-kva.example`
are the same key; a key that is not a valid IDN stays as written and matches nothing.
"""
from qmailpy.proto.quote import quote, quote_needed  # noqa: F401  (quote.c, shared)
from qmailpy.scan import scan_ulong

PORT_SMTP = 25


def parse_routes(lines):
    """{lower-case key: relay spec} from the entries of control/smtproutes (bytes or str)."""
    table = {}
    for line in lines:
        if isinstance(line, str):
            line = line.encode("utf-8", "surrogateescape")
        key, colon, relay = line.partition(b":")
        if colon:
            table[table_key(key)] = relay
    return table


def table_key(key):
    """A key of smtproutes or tlsdestinations as lookup() compares it: lower case, and
    non-ASCII labels as their A-labels (qmailpy.dns.idn, imported only for such a key)."""
    if not key.isascii():
        from qmailpy.dns.idn import to_ascii
        try:
            key = to_ascii(key)
        except ValueError:
            pass
    return key.lower()


def key_problem(key):
    """Why a key of smtproutes or tlsdestinations can match no host, or None: a non-ASCII key that
    is no valid IDN (not UTF-8, a disallowed code point, ...) stays as written, and qmail-remote
    looks hosts up by their A-labels. qmail-showctl --check says so."""
    if key.isascii():
        return None
    from qmailpy.dns.idn import to_ascii
    try:
        to_ascii(key)
    except ValueError as e:
        return "not a valid internationalized domain name (%s)" % e
    return None


def lookup(table, host, default=b""):
    """The value of the first key of table found for host (ASCII: its A-labels, as
    qmail-remote gives it): the whole host (any case), then
    every suffix that starts with '.', then `default`; None when none is there."""
    low = host.lower()
    for i in range(len(low)):
        if i == 0 or low[i:i + 1] == b".":
            spec = table.get(low[i:])
            if spec is not None:
                return spec
    return table.get(default)


def split_colon(spec):
    """spec.partition(b":"), but a leading IP literal (`[IPv6:2001:db8::25]`) keeps its colons."""
    if spec[:1] == b"[" and b"]" in spec:
        end = spec.index(b"]") + 1
        if spec[end:end + 1] in (b"", b":"):
            return spec[:end], spec[end:end + 1], spec[end + 1:]
    return spec.partition(b":")


def route(table, host):
    """(relay host or None, port) for host; None or b"" means "look up the MX records of host"
    (b"" with a port: `host::2525` reaches the MX hosts there, where qmail bounces)."""
    spec = lookup(table, host)
    if not spec:
        return None, PORT_SMTP
    relay, colon, port = split_colon(spec)
    if not colon:
        return relay, PORT_SMTP
    return relay, _scan_port(port)


def asks_dns(table, dest):
    """Will qmail-remote look something up in DNS for the recipients' domain `dest` (bytes)?
    Not when its relay (else dest itself) is an IP literal, which qmailpy.dns.mxip takes as it
    is; a non-ASCII dest is its A-labels only after idna, and counts as asking."""
    from qmailpy.dns.literal import ip_literal
    if not dest.isascii():
        return True
    relay, _ = route(table, dest)
    return ip_literal(relay or dest) is None


def _scan_port(port):
    """qmail-remote.c's port: scan_ulong's number, cut to 16 bits."""
    return scan_ulong(port) & 0xFFFF


def port_problem(spec):
    """Why the port of a route spec (`relay:port`) is not the one written, or None. qmail-remote
    reads it as qmail does (_scan_port: `:25x` is 25, `:smtp` 0, `:99999` 34463) and so runs on
    what the admin may not have meant; qmail-showctl --check says so."""
    _, colon, port = split_colon(spec)
    if not colon or not port:
        return None
    got = _scan_port(port)
    written = port.lstrip(b"0")
    if port.isdigit() and len(written) <= 5 and 0 < int(written or b"0") == got:
        return None
    return "port %r is read as %d" % (port.decode("utf-8", "replace"), got)


def mangle(address):
    """addrmangle() without notqmail's removed CNAME step: quote the box before the last '@'."""
    at = address.rfind(b"@")
    if at < 0:
        return address
    return quote(address[:at]) + address[at:]
