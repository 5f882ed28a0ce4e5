"""A small authoritative DNS server for tests: zones are Python dicts, 127.0.0.1 only.

Fixture API (bring the fixture into a test module: `from dnsserver import dns_server`):

    def test_something(dns_server):
        dns_server.zones = {
            "example.com": {"MX": [(10, "mx1.example.com"), (20, "mx2.example.com")],
                            "TXT": ["v=spf1 ip4:127.0.0.0/8 -all"]},
            "mx1.example.com": {"A": ["127.0.0.2"], "AAAA": ["::1"]},
            "2.0.0.127.in-addr.arpa": {"PTR": ["mx1.example.com"]},
            "*.bl.example": {"A": ["127.0.0.2"], "TXT": ["listed, see http://bl.example/"]},
            "broken.example": "SERVFAIL",            # whole name: SERVFAIL REFUSED NXDOMAIN DROP
            "half.example": {"A": ["192.0.2.1"], "MX": "SERVFAIL"},   # one type only
            "alias.example": {"CNAME": "mx1.example.com"},           # followed in the zones
        }
        env = dict(os.environ, **dns_server.environ())    # DNSCACHEIP=127.0.0.1:PORT
        ...
        assert ("example.com", "MX", "tcp") in dns_server.queries

Zones: {owner: entry}; owners are case-insensitive, written without the final dot.
  entry = {TYPE: records}: "A"/"AAAA": [addresses]; "MX": [(pref, exchange)];
    "TXT" and "SPF" (type 99): [text or (string, string, ...)], each string str
    (sent as UTF-8) or bytes (sent as they are); a text over 255 bytes is split
    into strings; () is a record without any string (RFC 1035 allows it);
    "PTR"/"NS": [names]; "CNAME": name; any TYPE may instead be a behaviour
    string, so only that type misbehaves; "*": the behaviour of every type
    the entry does not list (NODATA without it).
  entry = behaviour for every type: "SERVFAIL", "REFUSED", "NXDOMAIN" (that
    rcode) or "DROP" (never answer: the client times out; "TIMEOUT" is the same).
  "*.zone" matches any name below zone without an entry of its own (DNSBLs).
  No entry -> NXDOMAIN; an entry without the type asked -> NODATA (NOERROR, empty answer).
  Records go out in the order written (no shuffling), so tests may rely on it.

Attributes: host, port, environ() -> {"DNSCACHEIP": "127.0.0.1:PORT"}, zones
(assign any time), queries [(name lower-case, TYPE, "udp"|"tcp")] in arrival
order, udp_limit (largest UDP answer, default 512 or the EDNS payload offered;
a bigger answer goes out with TC set and no records, the full one over TCP;
udp_cut = True: with TC set and cut at the limit, mid-record, as some servers send it),
tcp (False: TCP connections are closed at once), udp_delay and tcp_delay (seconds the
server waits before each answer over that transport; a slow server). One thread serves UDP and
accepts TCP; each TCP connection gets a short-lived thread. Without pytest:
`with DNSServer(zones) as server: ...`; DNSServer(zones, port=53) serves a fixed port (as root,
in a private network namespace: tests/netns.py, for programs that read /etc/resolv.conf).
"""
import select
import socket
import threading

import pytest

BEHAVIOURS = ("SERVFAIL", "REFUSED", "NXDOMAIN", "DROP", "TIMEOUT")


class DNSServer:
    def __init__(self, zones=None, host="127.0.0.1", port=0):
        self.zones = zones or {}
        self.host = host
        self.port = None
        self._want = port
        self.queries = []
        self.udp_limit = 512
        self.udp_cut = False
        self.udp_delay = self.tcp_delay = 0
        self.tcp = True
        self._stop = threading.Event()
        self._thread = None
        self._udp = self._listener = None

    def environ(self):
        return {"DNSCACHEIP": "%s:%d" % (self.host, self.port)}

    # -- life cycle
    def start(self):
        for _ in range(50):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((self.host, self._want))
            port = udp.getsockname()[1]
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.host, port))
            except OSError:
                udp.close()
                tcp.close()
                continue
            tcp.listen(16)
            self._udp, self._listener, self.port = udp, tcp, port
            break
        else:
            raise RuntimeError("no free port for UDP and TCP")
        self._thread = threading.Thread(target=self._serve, name="dnsserver", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for s in (self._udp, self._listener):
            if s is not None:
                s.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _serve(self):
        while not self._stop.is_set():
            ready, _, _ = select.select([self._udp, self._listener], [], [], 0.05)
            if self._udp in ready:
                try:
                    data, peer = self._udp.recvfrom(65535)
                except OSError:
                    continue
                reply = self._respond(data, "udp")
                if reply is not None:
                    self._udp.sendto(reply, peer)
            if self._listener in ready:
                conn, _ = self._listener.accept()
                if not self.tcp:
                    conn.close()
                    continue
                threading.Thread(target=self._serve_tcp, args=(conn,), daemon=True).start()

    def _serve_tcp(self, conn):
        conn.settimeout(5)
        try:
            while True:
                head = _recv_exactly(conn, 2)
                if head is None:
                    return
                data = _recv_exactly(conn, int.from_bytes(head, "big"))
                if data is None:
                    return
                reply = self._respond(data, "tcp")
                if reply is None:
                    return
                conn.sendall(len(reply).to_bytes(2, "big") + reply)
        except OSError:
            pass
        finally:
            conn.close()

    # -- answers
    def _respond(self, data, transport):
        import dns.flags
        import dns.message
        import dns.rcode
        import dns.rdatatype
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return None
        question = query.question[0]
        qname = _owner(question.name)
        qtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((qname, qtype, transport))
        delay = self.udp_delay if transport == "udp" else self.tcp_delay
        if delay:
            import time
            time.sleep(delay)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        rcode, rrsets = self._answer(question.name, qtype)
        if rcode in ("DROP", "TIMEOUT"):
            return None
        response.set_rcode(dns.rcode.from_text(rcode))
        response.answer.extend(rrsets)
        wire = response.to_wire(want_shuffle=False)     # records in zone order: tests can rely on it
        limit = query.payload if query.edns >= 0 else self.udp_limit
        if transport == "udp" and len(wire) > limit and self.udp_cut:
            return wire[:2] + bytes([wire[2] | 0x02]) + wire[3:limit]
        if transport == "udp" and len(wire) > limit:
            response.answer = []
            response.flags |= dns.flags.TC
            wire = response.to_wire(want_shuffle=False)
        return wire

    def _entry(self, name):
        zones = {k.lower().rstrip("."): v for k, v in self.zones.items()}
        if name in zones:
            return zones[name]
        labels = name.split(".")
        for i in range(1, len(labels)):
            wild = "*." + ".".join(labels[i:])
            if wild in zones:
                return zones[wild]
        return None

    def _answer(self, qname, qtype):
        """(rcode text or DROP, rrsets) for one question, following CNAMEs within the zones."""
        import dns.name
        rrsets = []
        seen = set()
        for _ in range(8):
            owner = _owner(qname)
            if owner in seen:           # a CNAME loop: the chain so far, as an authoritative server
                return "NOERROR", rrsets
            seen.add(owner)
            entry = self._entry(owner)
            if entry is None:
                return "NXDOMAIN", rrsets
            if isinstance(entry, str):
                return entry, rrsets
            records = entry.get(qtype)
            if isinstance(records, str) and records in BEHAVIOURS:
                return records, rrsets
            if records is not None:
                rrsets.append(_rrset(qname, qtype, records))
                return "NOERROR", rrsets
            if "CNAME" in entry:
                rrsets.append(_rrset(qname, "CNAME", entry["CNAME"]))
                qname = dns.name.from_text(entry["CNAME"])
                continue
            if entry.get("*") in BEHAVIOURS:
                return entry["*"], rrsets
            return "NOERROR", rrsets
        return "SERVFAIL", rrsets


def _owner(name):
    """A dns.name.Name as the zones write it: labels as they are (no escapes), lower case, no final dot."""
    return b".".join(name.labels).decode("utf-8", "surrogateescape").lower().rstrip(".")


def _rrset(name, rdtype, records):
    import dns.rrset
    if isinstance(records, str):
        records = [records]
    if rdtype in ("TXT", "SPF"):
        return _txt_rrset(name, rdtype, records)
    texts = []
    for r in records:
        if rdtype == "MX":
            texts.append("%d %s." % (r[0], r[1].rstrip(".")) if r[1] else "%d ." % r[0])
        elif rdtype in ("PTR", "CNAME", "NS"):
            texts.append(r.rstrip(".") + ".")
        else:
            texts.append(r)
    return dns.rrset.from_text_list(name, 60, "IN", rdtype, texts)


def _txt_rrset(name, rdtype, records):
    """TXT or SPF records built from their strings (bytes as given, str as UTF-8), without a text
    form in between, so that any byte and the record without strings can be served."""
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype
    import dns.rdtypes.ANY.SPF
    import dns.rdtypes.ANY.TXT
    import dns.rrset
    rdclass, rdtype = dns.rdataclass.IN, dns.rdatatype.from_text(rdtype)
    cls = dns.rdtypes.ANY.SPF.SPF if rdtype == dns.rdatatype.SPF else dns.rdtypes.ANY.TXT.TXT
    rrset = dns.rrset.RRset(name, rdclass, rdtype)
    for r in records:
        if isinstance(r, tuple):
            strings = [s.encode("utf-8") if isinstance(s, str) else s for s in r]
        else:
            b = r.encode("utf-8") if isinstance(r, str) else r
            strings = [b[i:i + 255] for i in range(0, max(len(b), 1), 255)]
        if strings:
            rd = cls(rdclass, rdtype, strings)
        else:                           # dnspython's TXT refuses an empty list: write the empty rdata
            rd = dns.rdata.GenericRdata(rdclass, rdtype, b"")
        rrset.add(rd, 60)
    return rrset


def _recv_exactly(conn, n):
    data = b""
    while len(data) < n:
        got = conn.recv(n - len(data))
        if not got:
            return None
        data += got
    return data


@pytest.fixture
def dns_server():
    """A started DNSServer on 127.0.0.1:<free port>, stopped after the test."""
    server = DNSServer().start()
    try:
        yield server
    finally:
        server.stop()
