"""The resolver against tests/dnsserver.py on 127.0.0.1: qmail's ok/hard/soft rules, TCP fallback."""
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from dnsserver import DNSServer, dns_server  # noqa: F401  (fixture)
from qmailpy.dns import servers
from qmailpy.dns.mxip import host_ips, mx_ips
from qmailpy.dns.resolver import HARD, OK, SOFT, Resolver

ZONES = {
    "example.com": {"MX": [(10, "mx1.example.com"), (20, "mx2.example.com")],
                    "TXT": ["v=spf1 ip4:127.0.0.0/8 -all", ("split ", "in two"), "x" * 300],
                    "A": ["192.0.2.10"]},
    "mx1.example.com": {"A": ["127.0.0.2", "127.0.0.3"], "AAAA": ["::1"]},
    "mx2.example.com": {"A": ["127.0.0.4"], "AAAA": "SERVFAIL"},
    "2.0.0.127.in-addr.arpa": {"PTR": ["mx1.example.com"]},
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa": {"PTR": ["localhost"]},
    "*.bl.example": {"A": ["127.0.0.2"], "TXT": ["listed: see http://bl.example/"]},
    "broken.example": "SERVFAIL", "refused.example": "REFUSED", "slow.example": "DROP",
    "alias.example": {"CNAME": "mx1.example.com"},
    "dangling.example": {"CNAME": "nowhere.example"},
    "nullmx.example": {"MX": [(0, "")]},
    "big.example": {"MX": [(i, "mx%02d.a-rather-long-mail-exchanger-name.big.example" % i) for i in range(40)]},
}


@pytest.fixture
def resolver(dns_server):
    dns_server.zones = ZONES
    return Resolver(config=servers.Config([("127.0.0.1", dns_server.port)], timeout=0.3, attempts=2))


def check(answer, status, values=None, reason=None):
    assert answer.status == status, answer
    if values is not None:
        assert answer.values == values, answer
    if reason is not None:
        assert answer.reason == reason, answer


def test_record_types(resolver):
    check(resolver.mx("example.com"), OK, [(10, "mx1.example.com"), (20, "mx2.example.com")])
    check(resolver.a("mx1.example.com"), OK, ["127.0.0.2", "127.0.0.3"])
    check(resolver.aaaa("mx1.example.com"), OK, ["::1"])
    check(resolver.txt("example.com"), OK, ["v=spf1 ip4:127.0.0.0/8 -all", "split in two", "x" * 300])
    check(resolver.ptr("127.0.0.2"), OK, ["mx1.example.com"])
    check(resolver.ptr("::1"), OK, ["localhost"])
    check(resolver.a("2.0.0.127.bl.example"), OK, ["127.0.0.2"])        # DNSBL: wildcard A + TXT
    check(resolver.txt("2.0.0.127.bl.example"), OK, ["listed: see http://bl.example/"])
    check(resolver.a(b"MX1.Example.COM."), OK, ["127.0.0.2", "127.0.0.3"])


def test_hard_and_soft(resolver):
    check(resolver.a("nosuch.example"), HARD, [], "nxdomain")
    check(resolver.mx("mx1.example.com"), HARD, [], "nodata")
    check(resolver.ptr("127.0.0.9"), HARD, [], "nxdomain")
    check(resolver.ptr("not an ip"), HARD, [], "badname")
    check(resolver.a("a..b"), HARD, [], "badname")
    check(resolver.a("x" * 64 + ".example"), HARD, [], "badname")
    check(resolver.a("broken.example"), SOFT, [], "servfail")
    check(resolver.a("refused.example"), SOFT, [], "refused")
    check(resolver.a("dangling.example"), HARD, [], "nxdomain")
    # qmail: an answer holding only a CNAME is "ok, nothing of that type" (not NODATA)
    check(resolver.mx("alias.example"), OK, [])
    check(resolver.a("alias.example"), OK, ["127.0.0.2", "127.0.0.3"])


def test_timeout_is_bounded(resolver, dns_server):
    started = time.monotonic()
    check(resolver.a("slow.example"), SOFT, [], "timeout")
    assert 0.5 <= time.monotonic() - started < 2          # 2 attempts x 0.3 s
    assert [q for q in dns_server.queries if q[0] == "slow.example"] == [("slow.example", "A", "udp")] * 2


def test_big_answer_over_tcp(resolver, dns_server):
    got = resolver.mx("big.example")
    check(got, OK)
    assert len(got.values) == 40
    assert dns_server.queries[-2:] == [("big.example", "MX", "udp"), ("big.example", "MX", "tcp")]
    dns_server.tcp = False                              # truncated and no TCP: soft
    check(resolver.mx("big.example"), SOFT)


def test_answer_cut_mid_record_is_asked_again_over_tcp(resolver, dns_server):
    """A UDP answer with the TC bit whose records are cut off in the middle (it does not
    parse) is truncated all the same: the resolver asks over TCP at once, as the C
    library's res_send and dnscache do, instead of waiting for a better datagram
    until the time-out (a soft failure on every try: the mail would never go)."""
    dns_server.udp_cut = True
    started = time.monotonic()
    got = resolver.mx("big.example")
    check(got, OK)
    assert len(got.values) == 40
    assert time.monotonic() - started < 0.3
    assert dns_server.queries[-2:] == [("big.example", "MX", "udp"), ("big.example", "MX", "tcp")]


def test_next_server_after_a_dead_one(dns_server):
    dns_server.zones = ZONES
    with DNSServer({"example.com": "DROP"}) as dead:
        config = servers.Config([("127.0.0.1", dead.port), ("127.0.0.1", dns_server.port)], timeout=0.3)
        check(Resolver(config=config).a("example.com"), OK, ["192.0.2.10"])
    with DNSServer({"example.com": "SERVFAIL"}) as failing:
        config = servers.Config([("127.0.0.1", failing.port), ("127.0.0.1", dns_server.port)], timeout=0.3)
        check(Resolver(config=config).a("example.com"), OK, ["192.0.2.10"])


def test_addresses(resolver):
    check(resolver.addresses("mx1.example.com"), OK, ["127.0.0.2", "127.0.0.3", "::1"])
    check(resolver.addresses("mx2.example.com"), OK, ["127.0.0.4"], "servfail")   # AAAA soft: kept in reason
    check(resolver.addresses("mx1.example.com", ("A",)), OK, ["127.0.0.2", "127.0.0.3"])
    check(resolver.addresses("nosuch.example"), HARD, [], "nxdomain")
    check(resolver.addresses("broken.example"), SOFT, [])


def test_mx_ips(resolver):
    check(mx_ips(resolver, "example.com", 0),
          OK, [(10, "127.0.0.2"), (10, "127.0.0.3"), (10, "::1"), (20, "127.0.0.4")])
    check(mx_ips(resolver, "mx1.example.com", 0), OK, [(0, "127.0.0.2"), (0, "127.0.0.3"), (0, "::1")])
    check(mx_ips(resolver, "nosuch.example", 0), HARD)
    check(mx_ips(resolver, "broken.example", 0), SOFT, [])
    check(mx_ips(resolver, "nullmx.example", 0), OK, [])
    check(mx_ips(resolver, "[192.0.2.7]", 0), OK, [(0, "192.0.2.7")])
    check(host_ips(resolver, "mx2.example.com", ("A",)), OK, [(0, "127.0.0.4")])


def test_server_config(tmp_path):
    assert servers.parse_dnscacheip("127.0.0.1") == [("127.0.0.1", 53)]
    assert servers.parse_dnscacheip("127.0.0.1:5353, 10.0.0.1 [::1]:54 ::1 junk 1.2.3.4:0") == [
        ("127.0.0.1", 5353), ("10.0.0.1", 53), ("::1", 54), ("::1", 53)]
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch example.com\nnameserver 10.0.0.1\nnameserver ::1\n"
                    "options timeout:1 attempts:3 rotate\n")
    got = servers.load({}, str(conf))
    assert (got.servers, got.timeout, got.attempts) == ((("10.0.0.1", 53), ("::1", 53)), 1.0, 3)
    assert servers.load({"DNSCACHEIP": "127.0.0.1:5300"}, str(conf)).servers == (("127.0.0.1", 5300),)
    assert servers.load({}, str(tmp_path / "missing")).servers == (("127.0.0.1", 53),)
    conf.write_text("nameserver a.b.c.d\n")
    assert servers.load({}, str(conf)).servers == (("127.0.0.1", 53),)


def test_resolver_from_environment(dns_server):
    dns_server.zones = ZONES
    check(Resolver(dns_server.environ()).a("example.com"), OK, ["192.0.2.10"])


def test_dnspython_is_imported_lazily():
    code = ("import sys; import qmailpy.dns.resolver, qmailpy.dns.mxip, qmailpy.dns.servers; "
            "r = qmailpy.dns.resolver.Resolver({'DNSCACHEIP': '127.0.0.1'}); "
            "print(any(m == 'dns' or m.startswith('dns.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.stdout.strip() == "False", out.stderr


def test_a_txt_record_without_strings_is_left_out(resolver, dns_server):
    """RFC 1035 allows it, dnspython's TXT class refuses it: the rest of the answer stands."""
    dns_server.zones = {"null.example": {"TXT": [("v=spf1 ", "-all"), ()]}, "only.example": {"TXT": [()]},
                        "raw.example": {"TXT": [b"caf\xc3\xa9 \xff"], "SPF": ["v=spf1 -all"]}}
    check(resolver.txt("null.example"), OK, ["v=spf1 -all"])
    check(resolver.txt("only.example"), HARD, [], "nodata")
    check(resolver.txt("raw.example"), OK, ["caf\u00e9 \ufffd"])
    got, records = resolver.query("raw.example", "SPF")
    assert got.status == OK and [r.strings for r in records] == [(b"v=spf1 -all",)]


def test_until_cuts_every_lookup_to_the_deadline(dns_server):
    dns_server.zones = {"slow.example": "DROP", "fast.example": {"A": ["192.0.2.1"]}}
    config = servers.Config([("127.0.0.1", dns_server.port)] * 3, timeout=30, attempts=2)
    bounded = Resolver(config=config).until(time.monotonic() + 0.3)
    check(bounded.a("slow.example"), SOFT, [], "timeout")
    assert dns_server.queries == [("slow.example", "A", "udp")]      # one try, cut to 0.3 s, none after it
    check(bounded.a("fast.example"), SOFT, [], "timeout")             # past the deadline: not even asked
    assert len(dns_server.queries) == 1
    assert bounded.until(time.monotonic() + 60) is bounded           # a later deadline changes nothing


def test_until_holds_for_the_tcp_retry_of_a_truncated_answer(dns_server):
    """The TCP try after a truncated UDP answer waits only what is left before the
    deadline (it was given the whole per-try time-out again: an SPF check or a DKIM
    lookup ran past its limit by up to one time-out)."""
    dns_server.zones = ZONES
    dns_server.udp_delay, dns_server.tcp_delay = 0.3, 3
    config = servers.Config([("127.0.0.1", dns_server.port)], timeout=5, attempts=1)
    started = time.monotonic()
    check(Resolver(config=config).until(started + 0.5).mx("big.example"), SOFT, [], "timeout")
    assert time.monotonic() - started < 0.7
    assert dns_server.queries == [("big.example", "MX", "udp"), ("big.example", "MX", "tcp")]


class Rogue:
    """A DNS server on 127.0.0.1 that misbehaves as told: udp(query) and tcp(query) return the
    datagrams / the TCP bytes (or chunks of them) to send back (dnspython builds them; a
    generator may sleep between them); the TCP side reads one query and sends what tcp()
    returned, then closes."""

    def __init__(self, udp, tcp=None):
        import socket
        import threading
        for _ in range(50):                 # a UDP port whose TCP twin is free too
            self.udp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp_sock.bind(("127.0.0.1", 0))
            self.port = self.udp_sock.getsockname()[1]
            self.tcp_sock = socket.socket()
            try:
                self.tcp_sock.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self.udp_sock.close()
                self.tcp_sock.close()
        self.tcp_sock.listen(5)
        self.udp, self.tcp = udp, tcp
        for target in (self._serve_udp, self._serve_tcp):
            threading.Thread(target=target, daemon=True).start()

    def _serve_udp(self):
        import dns.message
        while True:
            try:
                data, peer = self.udp_sock.recvfrom(4096)
            except OSError:
                return
            try:
                for datagram in self.udp(dns.message.from_wire(data)):
                    self.udp_sock.sendto(datagram, peer)
            except OSError:                 # closed while a generator was still sending
                return

    def _serve_tcp(self):
        import dns.message
        while True:
            try:
                conn, _ = self.tcp_sock.accept()
            except OSError:
                return
            with conn:
                size = int.from_bytes(conn.recv(2), "big")
                answer = self.tcp(dns.message.from_wire(conn.recv(size)))
                try:
                    for chunk in [answer] if isinstance(answer, bytes) else answer:
                        conn.sendall(chunk)
                except OSError:             # the client gave up
                    pass

    def resolver(self):
        return Resolver(config=servers.Config([("127.0.0.1", self.port)], timeout=0.5, attempts=1))

    def close(self):
        self.udp_sock.close()
        self.tcp_sock.close()


def _answer(query, address="192.0.2.1", truncated=False):
    import dns.flags
    import dns.message
    import dns.rrset
    response = dns.message.make_response(query)
    if truncated:
        response.flags |= dns.flags.TC
    else:
        response.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A", address))
    return response.to_wire()


def _with_id(wire, ident):
    return ident.to_bytes(2, "big") + wire[2:]


def test_garbage_and_stray_datagrams_are_skipped_until_the_answer():
    """A datagram that does not parse, and a well-formed answer to another query (another
    ID), are not the answer: the resolver keeps waiting for its own, as dnspython does."""
    rogue = Rogue(lambda q: [b"\x00junk", _with_id(_answer(q, "192.0.2.66"), (q.id + 1) % 65536), _answer(q)])
    try:
        check(rogue.resolver().a("example.com"), OK, ["192.0.2.1"])
    finally:
        rogue.close()


@pytest.mark.parametrize("tcp,reason", [
    (lambda q: b"", "error"),                                                   # closed, no answer
    (lambda q: b"\x01\x00" + b"\x00" * 10, "error"),                            # cut short
    (lambda q: (lambda w: len(w).to_bytes(2, "big") + w)(_with_id(_answer(q), (q.id + 1) % 65536)),
     "error"),                                                                  # another query's answer
])
def test_a_tcp_answer_that_is_not_one_is_a_soft_failure(tcp, reason):
    """A truncated UDP answer sends the resolver to TCP; a TCP server that closes without an
    answer, cuts it short, or answers another query is a temporary failure (a deferral, never
    a bounce: the name may well exist)."""
    rogue = Rogue(lambda q: [_answer(q, truncated=True)], tcp)
    try:
        check(rogue.resolver().a("example.com"), SOFT, [], reason)
    finally:
        rogue.close()


def test_names_dns_cannot_carry_and_utf8_names(resolver, dns_server):
    """A bytes name with an empty label is no name (hard, badname, nothing asked); a non-ASCII
    str goes out as its UTF-8 bytes, unconverted, as qmail sends what it got."""
    check(resolver.a(b"a..example"), HARD, [], "badname")
    check(resolver.a(b"."), HARD, [], "badname")
    dns_server.zones = {"caf\u00e9.example": {"A": ["192.0.2.5"]}}
    check(resolver.a("caf\u00e9.example"), OK, ["192.0.2.5"])
    assert dns_server.queries == [("caf\u00e9.example", "A", "udp")]      # its UTF-8, no xn--: nothing else asked


def test_an_nxdomain_for_aaaa_after_a_records_keeps_the_addresses(resolver, dns_server):
    """A server that answers A and calls the name nonexistent for AAAA: the A records stand
    (qmail-remote delivers to them), the lookup ends there."""
    dns_server.zones = {"odd.example": {"A": ["192.0.2.7"], "AAAA": "NXDOMAIN"}}
    check(resolver.addresses("odd.example"), OK, ["192.0.2.7"], "")


def test_dnscacheip_entries_that_name_no_server_are_skipped():
    """A bracket never closed, a port after the bracket that is not `:digits`, a port that is
    not digits: each entry is skipped (the next one is used; none left: resolv.conf)."""
    assert servers.parse_dnscacheip("[::1 [::1]x [::1]:5x 127.0.0.1:x5 [::1]:5300 127.0.0.1:53") == [
        ("::1", 5300), ("127.0.0.1", 53)]


def test_a_bad_ipv6_literal_is_looked_up_as_a_name(resolver, dns_server):
    """[IPv6:...] that is no IPv6 address is no literal: looked up as the name it is, which DNS
    does not have (hard: qmail-remote bounces it, as qmail does), never taken for an address."""
    check(mx_ips(resolver, "[IPv6:2001:db8::zz]", 0), HARD, [], "nxdomain")
    assert dns_server.queries[0][:2] == ("[ipv6:2001:db8::zz]", "MX")
    check(mx_ips(resolver, "[IPv6:2001:DB8::25]", 0), OK, [(0, "2001:db8::25")])


def _trickled(items, pause=0.05):
    for item in items:
        time.sleep(pause)
        yield item


def test_a_server_that_trickles_cannot_hold_a_lookup_past_its_time_out():
    """Stray datagrams every 50 ms over UDP, or a TCP answer one byte per 50 ms: each try
    still ends by its time-out (0.5 s) with a soft failure; a trickle is no answer."""
    def strays(q):
        return _trickled(_with_id(_answer(q), (q.id + 1) % 65536) for _ in range(40))

    def slow_bytes(q):
        wire = _answer(q)
        return _trickled(bytes([b]) for b in len(wire).to_bytes(2, "big") + wire)
    for rogue in (Rogue(strays), Rogue(lambda q: [_answer(q, truncated=True)], slow_bytes)):
        try:
            started = time.monotonic()
            check(rogue.resolver().a("example.com"), SOFT, [], "timeout")
            assert time.monotonic() - started < 0.8
        finally:
            rogue.close()
