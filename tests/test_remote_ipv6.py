"""qmail-remote over IPv6: AAAA-only hosts, [IPv6:...] literals (as the host and in smtproutes),
and an AAAA-only MX. ::1 is one of my addresses (ipme), so an MX on ::1 is qmail's "I'm listed
as a best-preference MX" case; the MX test runs in a private network namespace (tests/netns.py)
where fd7f::/64 is routed to its own lo without being an interface address, like 127.x.y.z."""
import json
import subprocess

import pytest

from conftest import program
from dnsserver import dns_server  # noqa: F401  (fixture)
from netns import in_netns
from tlspeer import tls_sinks  # noqa: F401  (fixture)

MSG = b"Subject: six\n\nover IPv6\n"


@pytest.fixture
def remote(home, dns_server):
    home.control("me", "test.example\n")

    def go(host):
        p = subprocess.run([program("qmail-remote"), host, "a@b.example", "c@example.com"], input=MSG,
                           capture_output=True, env=home.env(**dns_server.environ()), timeout=60)
        assert (p.returncode, p.stderr) == (0, b"")
        return p.stdout
    go.home = home
    return go


def test_relay_with_only_an_aaaa_record(remote, dns_server, tls_sinks):
    sink = tls_sinks(host="::1")
    dns_server.zones = {"six.example": {"AAAA": ["::1"]}}
    remote.home.control("smtproutes", "example.com:six.example:%d\n" % sink.port)
    assert remote("example.com") == b"r\0K::1 accepted message.\nRemote host said: 250 ok queued\n\0"
    assert sink.messages[0].peer[0] == "::1"
    assert [q[:2] for q in dns_server.queries] == [("six.example", "A"), ("six.example", "AAAA")]


def test_ipv6_literal_relay_in_smtproutes(remote, tls_sinks):
    sink = tls_sinks(host="::1")
    remote.home.control("smtproutes", "example.com:[IPv6:::1]:%d\n" % sink.port)
    assert remote("example.com") == b"r\0K::1 accepted message.\nRemote host said: 250 ok queued\n\0"
    assert len(sink.messages) == 1


def test_ipv4_outgoingip_does_not_cut_off_ipv6_peers(remote, tls_sinks):
    sink = tls_sinks(host="::1")
    remote.home.control("outgoingip", "127.0.0.2\n")
    remote.home.control("smtproutes", "example.com:[IPv6:::1]:%d\n" % sink.port)
    assert remote("example.com") == b"r\0K::1 accepted message.\nRemote host said: 250 ok queued\n\0"


def test_ipv6_literal_host_of_mine_is_qmails_ambiguous_mx(remote):
    assert remote("[IPv6:::1]") == (b"DSorry. Although I'm listed as a best-preference MX or A for that host,\n"
                                    b"it isn't in my control/locals file, so I don't treat it as local. (#5.4.6)\n\0")


NETNS_DELIVERY = r"""
import json, os, subprocess, sys
from dnsserver import DNSServer
from tlspeer import TlsSink
sink = TlsSink(host="fd7f::25", port=25).start()
zones = {"example.com": {"MX": [(10, "mx6.example.com")]}, "mx6.example.com": {"AAAA": ["fd7f::25"]}}
with DNSServer(zones) as dns:
    env = dict(os.environ, **dns.environ())
    p = subprocess.run([sys.argv[1] if len(sys.argv) > 1 else %(program)r, "example.com", "a@b.example",
                        "c@example.com"], input=b"Subject: six\n\nover IPv6\n", capture_output=True, env=env)
    print(json.dumps({"code": p.returncode, "out": p.stdout.decode(), "err": p.stderr.decode(),
                      "peers": [m.peer[0] for m in sink.messages],
                      "queries": [list(q[:2]) for q in dns.queries]}))
sink.stop()
"""


def test_aaaa_only_mx(home):
    home.control("me", "test.example\n")
    got = json.loads(in_netns(NETNS_DELIVERY % {"program": program("qmail-remote")}, setup=[
        "ip -6 route add local fd7f::/64 dev lo", "sysctl -q -w net.ipv6.ip_nonlocal_bind=1"], env=home.env()))
    assert (got["code"], got["err"]) == (0, "")
    assert got["out"] == "r\0Kfd7f::25 accepted message.\nRemote host said: 250 ok queued\n\0"
    assert got["peers"] == ["::1"]              # the netns's own source address for fd7f::/64 on lo
    assert got["queries"] == [["example.com", "MX"], ["mx6.example.com", "A"], ["mx6.example.com", "AAAA"]]
