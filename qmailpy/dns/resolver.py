"""Ask DNS and classify the outcome as qmail's dns.c does: ok, hard or soft.

qmail's rules (dns.c resolve() over the C library's res_query()):
  ok    NOERROR with records in the answer section. The wanted type may still
        be missing (an answer holding only a CNAME): values is then empty,
        which qmail-remote treats differently from NODATA.
  hard  NXDOMAIN, or NOERROR with an empty answer section (NODATA): the name
        or the record does not exist; the caller may give up for good.
  soft  SERVFAIL, REFUSED and other error codes, time-outs, network errors,
        unparseable answers: try again later.
Servers are asked in turn for `attempts` rounds, `timeout` seconds per try, so
a lookup never takes longer than servers * attempts * timeout; an ok or hard
answer ends it, a soft one moves on to the next server. Queries go over UDP
without EDNS, like qmail's resolver; an answer with the TC bit is asked
again over TCP (the big-DNS patch: answers beyond 512 bytes work).
Resolver.until(deadline) gives a resolver whose lookups all end by then (SPF's
20 s for one check). A record that dnspython refuses for its content (a TXT
record without strings) is left out of the answer, as qmail's dns.c skips
records it cannot use; a malformed packet is an error (soft).
dnspython is imported by the methods, never at module import; when it cannot be loaded (a disk
error reading its files, an upgrade under way) every lookup is soft ("noload"), as with a
server that cannot be reached: never a hard answer, never a bug.
"""
OK, HARD, SOFT = "ok", "hard", "soft"
# What a lookup of the types qmail-remote asks (MX, A, AAAA; a CNAME in the answer, a SOA
# in the authority of NODATA/NXDOMAIN) makes dnspython import, rdata classes included: a
# spawner that forks a child per lookup imports them first (qmailpy.spawn.rspawn)
LOOKUP_MODULES = ("dns.exception", "dns.flags", "dns.message", "dns.name", "dns.rcode", "dns.rdatatype",
                  "dns.rdtypes.ANY.MX", "dns.rdtypes.ANY.CNAME", "dns.rdtypes.ANY.SOA",
                  "dns.rdtypes.IN.A", "dns.rdtypes.IN.AAAA")


class Answer:
    """status (OK/HARD/SOFT), values (list, type depends on the method) and a short reason.

    reason: "" when ok, else nxdomain, nodata, badname, timeout, servfail,
    refused, connrefused, ... (the last problem seen; for logs, not for decisions).
    """
    __slots__ = ("status", "values", "reason")

    def __init__(self, status, values=(), reason=""):
        self.status, self.values, self.reason = status, list(values), reason

    @property
    def ok(self):
        return self.status == OK

    def __repr__(self):
        return "Answer(%r, %r, %r)" % (self.status, self.values, self.reason)


class Resolver:
    """One configured resolver; share it for every lookup of a program run.

    Resolver(environ) reads $DNSCACHEIP / resolv.conf (see qmailpy.dns.servers);
    Resolver(config=Config(...)) takes explicit servers and time-outs.
    """

    def __init__(self, environ=None, config=None, resolv_conf="/etc/resolv.conf", deadline=None):
        if config is None:
            from qmailpy.dns import servers
            config = servers.load(environ, resolv_conf)
        self.config = config
        self.deadline = deadline        # time.monotonic() by which every lookup ends (see until())

    # -- the record types qmail and its patches use
    def a(self, name):
        """IPv4 addresses (strings) of name."""
        return self._values(name, "A", lambda rd: rd.address)

    def aaaa(self, name):
        """IPv6 addresses (strings) of name."""
        return self._values(name, "AAAA", lambda rd: rd.address)

    def mx(self, name):
        """(preference, exchange) pairs in answer order; exchange without the final dot."""
        return self._values(name, "MX", lambda rd: (rd.preference, _text(rd.exchange)))

    def txt(self, name):
        """TXT records, each one's character-strings joined (SPF, DNSBL texts)."""
        return self._values(name, "TXT", lambda rd: b"".join(rd.strings).decode("utf-8", "replace"))

    def ptr(self, ip):
        """Host names (without the final dot) of an IPv4 or IPv6 address."""
        try:
            import dns.exception
            import dns.reversename
        except (ImportError, OSError):
            from qmailpy.lazyload import forget
            forget()                    # the next lookup tries again (qmailpy.lazyload)
            return Answer(SOFT, (), "noload")
        try:
            qname = dns.reversename.from_address(ip)
        except (ValueError, TypeError, dns.exception.DNSException):
            return Answer(HARD, (), "badname")
        return self._values(qname, "PTR", lambda rd: _text(rd.target))

    def addresses(self, name, families=("A", "AAAA")):
        """A then AAAA records of name, as qmail-remote expands one MX host (see merge_addresses)."""
        return merge_addresses(self._values(name, rdtype, lambda rd: rd.address) for rdtype in families)

    # -- transport and classification
    def _values(self, name, rdtype, convert):
        got, records = self.query(name, rdtype)
        if got.status == OK:
            got.values = [convert(rd) for rd in records]
        return got

    def query(self, name, rdtype):
        """(Answer without values, rdata list of type rdtype) for name (str, bytes or dns.name.Name)."""
        import time
        try:
            import dns.exception
            import dns.flags
            import dns.message
            import dns.rcode
            import dns.rdatatype
        except (ImportError, OSError):
            from qmailpy.lazyload import forget
            forget()                    # the next lookup tries again (qmailpy.lazyload)
            return Answer(SOFT, (), "noload"), []
        qname = _qname(name)
        if qname is None:
            return Answer(HARD, (), "badname"), []
        wanted = dns.rdatatype.from_text(rdtype)
        query = dns.message.make_query(qname, wanted, use_edns=False)
        reason = "noserver"
        for _ in range(max(1, self.config.attempts)):
            for ip, port in self.config.servers:
                timeout = self.config.timeout
                if self.deadline is not None:
                    timeout = min(timeout, self.deadline - time.monotonic())
                    if timeout <= 0:
                        return Answer(SOFT, (), "timeout"), []
                try:
                    response = _exchange(query, ip, port, timeout, "udp")
                    if response is None or response.flags & dns.flags.TC:
                        if self.deadline is not None:      # the TCP try too ends by the deadline
                            timeout = min(self.config.timeout, self.deadline - time.monotonic())
                            if timeout <= 0:
                                raise TimeoutError
                        response = _exchange(query, ip, port, timeout, "tcp")
                except TimeoutError:
                    reason = "timeout"
                    continue
                except ConnectionRefusedError:
                    reason = "connrefused"
                    continue
                except (OSError, EOFError, ValueError, dns.exception.DNSException):
                    reason = "error"
                    continue
                rcode = response.rcode()
                if rcode == dns.rcode.NXDOMAIN:
                    return Answer(HARD, (), "nxdomain"), []
                if rcode != dns.rcode.NOERROR:
                    reason = dns.rcode.to_text(rcode).lower()
                    continue
                if not response.answer:
                    return Answer(HARD, (), "nodata"), []
                records = [rd for rrset in response.answer if rrset.rdtype == wanted for rd in rrset]
                return Answer(OK), records
        return Answer(SOFT, (), reason), []

    def until(self, deadline):
        """This resolver, with every lookup ending by `deadline` (time.monotonic()) at the latest:
        each try waits at most what is left, and none starts after it (soft, timeout)."""
        if self.deadline is not None and self.deadline <= deadline:
            return self
        return Resolver(config=self.config, deadline=deadline)


def _exchange(query, ip, port, timeout, transport):
    """One query to one server over UDP or TCP, its response within `timeout` seconds
    (TimeoutError when none came). dnspython builds and parses the messages; the
    sockets are ours so that a record dnspython refuses for its content (a TXT
    record without strings: RFC 1035 allows it, dnspython's TXT class does not)
    is dropped from the answer instead of failing the whole packet. Over UDP, None
    for a truncated answer that does not parse (TC set, records cut off mid-way):
    the caller asks over TCP, as res_send and dnscache look at TC before the records."""
    import socket
    import time
    wire = query.to_wire()
    end = time.monotonic() + timeout
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    if transport == "tcp":
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect((ip, port))
            s.sendall(len(wire).to_bytes(2, "big") + wire)
            head = _recv_exactly(s, 2, end)
            response = _parse(_recv_exactly(s, int.from_bytes(head, "big"), end))
            if not query.is_response(response):
                raise ValueError("not the response to our query")
            return response
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((ip, port))            # only the server's datagrams; ICMP refusals are seen
        s.settimeout(timeout)
        s.send(wire)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError
            s.settimeout(left)
            data = s.recv(65535)
            try:
                response = _parse(data)
            except Exception:
                if len(data) >= 12 and data[:2] == wire[:2] and data[2] & 0x82 == 0x82:
                    return None          # our query's ID, QR and TC: truncated, ask over TCP
                continue                 # garbage or a stray datagram: keep waiting, as dnspython does
            if query.is_response(response):
                return response


def _recv_exactly(sock, n, end):
    import time
    data = b""
    while len(data) < n:
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        got = sock.recv(n - len(data))
        if not got:
            raise EOFError
        data += got
    return data


def _parse(wire):
    """A dns.message from wire; records whose content an rdata class refuses (a ValueError,
    which dnspython wraps in a FormError) are left out, any other fault raises."""
    import dns.message
    response = dns.message.from_wire(wire, continue_on_error=True)
    for err in getattr(response, "errors", ()):
        e = err.exception
        if not isinstance(e, ValueError) and not isinstance(e.__cause__, ValueError):
            raise e
    return response


def _text(name):
    """A name as text without the final dot; the root (a null MX) is ""."""
    return "" if len(name.labels) <= 1 else name.to_text(True)


def _qname(name):
    """A dns.name.Name for name, or None when it cannot be a domain name.

    Bytes keep their raw labels (qmail sends what it got, no IDNA); an ASCII
    str goes through dnspython's text form (escapes allowed); other str is
    taken as UTF-8 raw labels.
    """
    import dns.exception
    import dns.name
    if isinstance(name, dns.name.Name):
        return name.derelativize(dns.name.root)
    try:
        if isinstance(name, str) and name.isascii():
            if not name or name == ".":
                return None
            return dns.name.from_text(name)
        if isinstance(name, str):
            name = name.encode("utf-8", "surrogateescape")
        if name.endswith(b"."):
            name = name[:-1]
        labels = name.split(b".")
        if not name or not all(labels):
            return None
        return dns.name.Name(labels + [b""])
    except (dns.exception.DNSException, ValueError, UnicodeError):
        return None


def merge_addresses(answers):
    """One Answer from the per-family answers (a lazy iterable: A, then AAAA).

    ok when any address was found (a soft failure of the other family is then
    only in reason), soft when none was found and a query failed softly, hard
    otherwise; NXDOMAIN (or a bad name) on the first query ends the lookup.
    Shared by Resolver and the policy tester's StaticResolver.
    """
    values, soft, last = [], None, None
    for got in answers:
        if got.status == HARD and got.reason in ("nxdomain", "badname"):
            if not values and soft is None:
                return got
            break
        values.extend(got.values)
        if got.status == SOFT:
            soft = got
        last = got
    if values:
        return Answer(OK, values, soft.reason if soft else "")
    if soft is not None:
        return soft
    return last if last is not None else Answer(HARD, (), "nodata")
