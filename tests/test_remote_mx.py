"""bin/qmail-remote finding its peer through DNS: MX order, implicit MX, DNS failures, ipme.

MX hosts are reached on port 25 (as qmail does) unless smtproutes says `host::port`, so the
sinks listen on 127.x.y.z:25 at random loopback addresses: these tests need
root and are skipped otherwise. DNS comes from tests/dnsserver.py on 127.0.0.1.
"""
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import program
from dnsserver import dns_server  # noqa: F401  (fixture)
from smtpsink import loopback_address, need_root, sinks  # noqa: F401  (fixtures)

MSG = b"Subject: test\n\nhello\n"


@pytest.fixture
def remote(home, dns_server):
    home.control("me", "test.example\n")

    def go(host, *recips, message=MSG):
        env = home.env(**dns_server.environ())
        p = subprocess.run([program("qmail-remote"), host, "a@b.example", *(recips or ("c@" + host,))],
                           input=message, capture_output=True, env=env, timeout=60)
        assert (p.returncode, p.stderr) == (0, b"")
        return p.stdout
    return go


def accepted(ip):
    return b"r\0K" + ip.encode() + b" accepted message.\nRemote host said: 250 ok queued\n\0"


def test_mx_preference_order(remote, dns_server, sinks):
    need_root()
    dead, good, worse = loopback_address(), loopback_address(), loopback_address()
    sink, other = sinks(good, 25), sinks(worse, 25)
    dns_server.zones = {
        "example.com": {"MX": [(30, "mx3.example.com"), (10, "mx1.example.com"), (20, "mx2.example.com")]},
        "mx1.example.com": {"A": [dead]},          # nothing listens: refused, next one
        "mx2.example.com": {"A": [good]},
        "mx3.example.com": {"A": [worse]},
    }
    assert remote("example.com") == accepted(good)
    assert len(sink.messages) == 1 and other.messages == []
    a_queries = [name for name, qtype, _ in dns_server.queries if qtype == "A"]
    assert a_queries == ["mx1.example.com", "mx2.example.com", "mx3.example.com"]


def test_equal_preferences_are_tried_in_random_order(home, dns_server, sinks):
    need_root()
    ip_a, ip_b = loopback_address(), loopback_address()
    sink_a, sink_b = sinks(ip_a, 25), sinks(ip_b, 25)
    dns_server.zones = {"example.com": {"MX": [(10, "a.example.com"), (10, "b.example.com")]},
                        "a.example.com": {"A": [ip_a]}, "b.example.com": {"A": [ip_b]}}
    home.control("me", "test.example\n")
    env = home.env(**dns_server.environ())

    def one(n):
        p = subprocess.run([program("qmail-remote"), "example.com", "a@b", "c@example.com"],
                           input=b"X-Run: %d\n\nhi\n" % n, capture_output=True, env=env, timeout=60)
        return p.stdout
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(one, range(40)))
    assert all(out.startswith(b"r\0K") for out in outs)
    # qmail's LCG seeded with time + pid << 16: with 40 runs, both orders turn up
    assert len(sink_a.messages) + len(sink_b.messages) == 40
    assert sink_a.messages and sink_b.messages, (len(sink_a.messages), len(sink_b.messages))


def test_implicit_mx_and_ip_literal(remote, dns_server, sinks):
    need_root()
    ip = loopback_address()
    sinks(ip, 25)
    dns_server.zones = {"a-only.example": {"A": [ip]}, "cname.example": {"CNAME": "a-only.example"}}
    assert remote("a-only.example") == accepted(ip)          # NODATA for MX -> the host's A
    assert remote("cname.example") == accepted(ip)           # CNAME-only MX answer -> A
    assert remote("[%s]" % ip) == accepted(ip)               # IP literals skip DNS
    assert remote(ip) == accepted(ip)


def test_dns_failures(remote, dns_server):
    dns_server.zones = {"broken.example": "SERVFAIL", "mxbroken.example": {"MX": "SERVFAIL"},
                        "nomx.example": {"MX": [(10, "gone.example")]},
                        "softmx.example": {"MX": [(10, "broken.example")]}}
    assert remote("nosuch.example") == b"DSorry, I couldn't find any host named nosuch.example. (#5.1.2)\n\0"
    assert remote("broken.example") == b"ZSorry, I couldn't find any host by that name. (#4.1.2)\n\0"
    assert remote("mxbroken.example") == b"ZSorry, I couldn't find any host by that name. (#4.1.2)\n\0"
    assert remote("nomx.example") == b"DSorry, I couldn't find a mail exchanger or IP address. (#5.4.4)\n\0"
    assert remote("softmx.example") == b"ZSorry, I couldn't find any host by that name. (#4.1.2)\n\0"
    assert remote("bad host\x01.example") == (
        b"DSorry, I couldn't find any host named bad?host?.example. (#5.1.2)\n\0")


def test_listed_as_best_preference_mx(remote, dns_server, sinks):
    need_root()
    ip = loopback_address()
    sink = sinks(ip, 25)
    dns_server.zones = {
        "me-first.example": {"MX": [(10, "me.example"), (20, "other.example")]},
        "me-second.example": {"MX": [(5, "other.example"), (10, "me.example")]},
        "me.example": {"A": ["127.0.0.1"]}, "other.example": {"A": [ip]},
    }
    ambiguous = (b"DSorry. Although I'm listed as a best-preference MX or A for that host,\n"
                 b"it isn't in my control/locals file, so I don't treat it as local. (#5.4.6)\n\0")
    assert remote("me-first.example") == ambiguous
    assert remote("me.example") == ambiguous                 # implicit MX pointing at me
    assert remote("me-second.example") == accepted(ip)
    assert len(sink.messages) == 1


def test_big_mx_answer_comes_over_tcp(remote, dns_server, sinks):
    need_root()
    ip = loopback_address()
    sink = sinks(ip, 25)
    names = ["mx%02d.a-rather-long-mail-exchanger-name.big.example" % i for i in range(30)]
    zones = {"big.example": {"MX": [(10 + i, n) for i, n in enumerate(names)]}}
    zones.update({n: {"A": [ip]} for n in names})
    dns_server.zones = zones
    assert remote("big.example") == accepted(ip)
    assert ("big.example", "MX", "udp") in dns_server.queries
    assert ("big.example", "MX", "tcp") in dns_server.queries
    assert len(sink.messages) == 1


def test_empty_relay_with_a_port_is_mx_delivery_to_that_port(remote, home, dns_server, sinks):
    """smtproutes `example.com::PORT`: no relay, so the MX records are used as for an empty
    relay, but on PORT (qmail 1.03 takes the empty string as the relay's name and bounces;
    docs/qmail-remote.md)."""
    ip = loopback_address()
    sink = sinks(ip)
    home.control("smtproutes", "example.com::%d\n" % sink.port)
    dns_server.zones = {"example.com": {"MX": [(10, "mx.example.com")]}, "mx.example.com": {"A": [ip]}}
    assert remote("example.com") == accepted(ip)
    assert len(sink.messages) == 1
    assert [name for name, qtype, _ in dns_server.queries if qtype == "MX"] == ["example.com"]
