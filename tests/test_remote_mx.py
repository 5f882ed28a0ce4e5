"""bin/qmail-remote finding its peer through DNS: MX order, implicit MX, DNS failures, ipme.

MX hosts are reached on port 25 (as qmail does) unless smtproutes says `host::port`, so the
sinks listen on 127.x.y.z:25 at random loopback addresses: these tests need
root and are skipped otherwise. DNS comes from tests/dnsserver.py on 127.0.0.1.
"""
import os
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


NOMX = b"DSorry, I couldn't find a mail exchanger or IP address. (#5.4.4)\n\0"
DNS_SOFT = b"ZSorry, I couldn't find any host by that name. (#4.1.2)\n\0"
NOCONN = b"ZSorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n\0"
AMBIGUOUS = (b"DSorry. Although I'm listed as a best-preference MX or A for that host,\n"
             b"it isn't in my control/locals file, so I don't treat it as local. (#5.4.6)\n\0")


def address_queries(dns_server):
    return [name for name, qtype, _ in dns_server.queries if qtype == "A"]


def test_mx_target_that_is_a_cname_and_a_domain_behind_cnames(remote, dns_server, sinks):
    """dns.c takes the records of the type asked from the whole answer section, whatever their
    owner, so the resolver's CNAME chain is followed for MX and for A alike; qmail-remote itself
    never chases CNAMEs (notqmail dropped dns_cname and its 10-step loop limit)."""
    need_root()
    ip = loopback_address()
    sink = sinks(ip, 25)
    dns_server.zones = {
        "example.com": {"MX": [(10, "alias.example.net")]},
        "alias.example.net": {"CNAME": "real.example.net"}, "real.example.net": {"A": [ip]},
        "chain.example": {"CNAME": "c2.example"}, "c2.example": {"CNAME": "example.com"},
    }
    assert remote("example.com") == accepted(ip)
    assert remote("chain.example") == accepted(ip)
    assert [m.rcpt_tos for m in sink.messages] == [["c@example.com"], ["c@chain.example"]]
    assert address_queries(dns_server) == ["alias.example.net", "alias.example.net"]


def test_cname_loop_and_too_long_chain(remote, dns_server):
    """What the resolver answers decides: a loop answered with the chain alone (NOERROR, no MX, no
    A) is no mail exchanger, a bounce; a chain the server gives up on (SERVFAIL) is temporary."""
    dns_server.zones = {"loop.example": {"CNAME": "loop2.example"}, "loop2.example": {"CNAME": "loop.example"}}
    dns_server.zones.update({"l%d.example" % i: {"CNAME": "l%d.example" % (i + 1)} for i in range(12)})
    dns_server.zones["l12.example"] = {"MX": [(10, "mx.example")]}
    assert remote("loop.example") == NOMX
    assert remote("l0.example") == DNS_SOFT


def test_mx_hosts_without_an_address_are_skipped(remote, dns_server, sinks):
    """dns_mxip(): an MX host whose A lookup fails for good (NXDOMAIN, NODATA, a CNAME to
    nothing) adds no address and is passed over; only a soft failure counts (flagsoft)."""
    need_root()
    ip = loopback_address()
    sink = sinks(ip, 25)
    dns_server.zones = {
        "example.com": {"MX": [(10, "gone.example"), (20, "txt-only.example"), (30, "dangling.example"),
                               (40, "mx.example")]},
        "txt-only.example": {"TXT": ["x"]}, "dangling.example": {"CNAME": "nowhere.example"},
        "mx.example": {"A": [ip]},
    }
    assert remote("example.com") == accepted(ip)
    assert len(sink.messages) == 1
    assert address_queries(dns_server) == ["gone.example", "txt-only.example", "dangling.example", "mx.example"]


def test_null_mx_is_no_mail_exchanger(remote, dns_server, sinks):
    """RFC 7505's `MX 0 .`: qmail (and notqmail, which has no null-MX code) expands the root name,
    which has no address, so no address is left: qmail's permanent perm_nomx(), at once. The
    domain's own A record is not used: there is an MX answer, so no implicit MX."""
    need_root()
    ip = loopback_address()
    sink = sinks(ip, 25)
    dns_server.zones = {"nullmx.example": {"MX": [(0, "")], "A": [ip]}}
    assert remote("nullmx.example") == NOMX
    assert sink.messages == []
    assert [(name, qtype) for name, qtype, _ in dns_server.queries] == [("nullmx.example", "MX")]


def test_dns_time_out_is_temporary(remote, dns_server):
    """A name server that never answers is like SERVFAIL: temp_dns(), never perm_dns()."""
    dns_server.zones = {"slow.example": "DROP"}
    assert remote("slow.example") == DNS_SOFT


def test_mx_no_better_than_mine_are_dropped(remote, home, dns_server, sinks):
    """qmail's prefme: every address whose preference is not below my best one is dropped,
    equal ones too; better ones are tried, and when none answers it is temporary (#4.4.1)."""
    need_root()
    dead, equal, worse = loopback_address(), loopback_address(), loopback_address()
    equal_sink, worse_sink = sinks(equal, 25), sinks(worse, 25)
    dns_server.zones = {
        "example.com": {"MX": [(30, "worse.example"), (20, "equal.example"), (20, "me.example"),
                               (10, "dead.example")]},
        "tie.example": {"MX": [(10, "equal.example"), (10, "me.example")]},
        "dead.example": {"A": [dead]}, "me.example": {"A": ["127.0.0.1"]},
        "equal.example": {"A": [equal]}, "worse.example": {"A": [worse]},
        "listed.example": {"MX": [(10, "worse.example"), (20, "equal.example")]},
    }
    assert remote("example.com") == NOCONN
    assert remote("tie.example") == AMBIGUOUS
    home.control("moreipme", worse + "\n")           # control/moreipme: that address is me too
    assert remote("listed.example") == AMBIGUOUS
    assert equal_sink.messages == [] and worse_sink.messages == []


def tcpto_down(home, *ips):
    """queue/lock/tcpto with each ip marked down (2 time-outs, the last one now), as tcpto.c writes."""
    import pathlib
    import time
    from qmailpy.queue.layout import create_queue
    from test_remote_units import tcpto_file
    create_queue(home.root)
    tcpto_file(pathlib.Path(home.root, "queue", "lock"), [(ip, 2, int(time.time())) for ip in ips])


def test_hosts_marked_down_are_skipped_even_the_last(remote, home, dns_server, sinks):
    """qmail-remote.c: `if (tcpto(ip)) continue;` for every address, the last one too (tcpto.c
    has no "last one" exception): all down is temp_noconn() with no connection tried."""
    need_root()
    first, second = loopback_address(), loopback_address()
    first_sink, second_sink = sinks(first, 25), sinks(second, 25)
    dns_server.zones = {"example.com": {"MX": [(10, "a.example"), (20, "b.example")]},
                        "a.example": {"A": [first]}, "b.example": {"A": [second]}}
    tcpto_down(home, first)
    assert remote("example.com") == accepted(second)
    assert (len(first_sink.messages), len(second_sink.messages)) == (0, 1)
    tcpto_down(home, first, second)
    assert remote("example.com") == NOCONN
    assert (len(first_sink.messages), len(second_sink.messages)) == (0, 1)


def test_smtproutes_relay_takes_its_addresses_only(remote, home, dns_server, sinks):
    """A relay: dns_ip() of the relay (its MX never asked, nor the domain's), reports name the
    relay, and prefme 300000: a relay that is me is still used. Port 25 without one."""
    need_root()
    ip, elsewhere = loopback_address(), loopback_address()
    sink, other = sinks(ip, 25), sinks(elsewhere, 25)
    home.control("smtproutes", "example.com:relay.example\n.example.net:[%s]:25\nnx.example:gone.example\n"
                 "nodata.example:txt.example:25\nsoft.example:broken.example\n" % ip)
    home.control("moreipme", ip + "\n")
    dns_server.zones = {"relay.example": {"A": [ip], "MX": [(10, "mx.example")]},
                        "example.com": {"MX": [(10, "mx.example")]}, "mx.example": {"A": [elsewhere]},
                        "txt.example": {"TXT": ["x"]}, "broken.example": "SERVFAIL"}
    assert remote("example.com") == accepted(ip)
    assert [(n, t) for n, t, _ in dns_server.queries] == [("relay.example", "A"), ("relay.example", "AAAA")]
    assert remote("a.example.net") == accepted(ip)
    assert remote("nx.example") == b"DSorry, I couldn't find any host named gone.example. (#5.1.2)\n\0"
    assert remote("nodata.example") == b"DSorry, I couldn't find any host named txt.example. (#5.1.2)\n\0"
    assert remote("soft.example") == DNS_SOFT
    assert (len(sink.messages), other.messages) == (2, [])


def test_mx_exchange_written_as_an_address_has_preference_0(remote, dns_server, sinks):
    """dns.c's dns_ipplus() gives an IP-literal name preference 0 (ix.pref = 0), even as an MX
    exchange: it keeps its place in the MX order but is never dropped by the best-preference rule."""
    need_root()
    ip = loopback_address()
    sink = sinks(ip, 25)
    dns_server.zones = {"example.com": {"MX": [(10, "me.example"), (20, ip)]}, "me.example": {"A": ["127.0.0.1"]}}
    assert remote("example.com") == accepted(ip)
    assert len(sink.messages) == 1
    assert address_queries(dns_server) == ["me.example"]


def test_many_mx_records_are_all_expanded(remote, dns_server, sinks):
    """qmail has no cap on MX records (ipalloc grows) and qmailpy reads answers past 512 bytes
    as the big-DNS patch does (stock dns.c cuts them at PACKETSZ and defers): every exchange is
    looked up once, before any connection, and the one with an address is used wherever it sits."""
    need_root()
    ip = loopback_address()
    sink = sinks(ip, 25)
    names = ["mx%03d.many.example" % i for i in range(150)]
    dns_server.zones = {"many.example": {"MX": [(10, n) for n in names]}, names[97]: {"A": [ip]}}
    assert remote("many.example") == accepted(ip)
    assert len(sink.messages) == 1
    assert sorted(address_queries(dns_server)) == names


def test_ip_literal_with_a_number_above_255_is_a_name(remote, dns_server):
    """qmail's ip_scan() keeps the low 8 bits of each number, so `[1.2.3.999]` would reach
    1.2.3.231; qmailpy takes it for no address and asks DNS for it as a name (docs/qmail-remote.md)."""
    assert remote("[1.2.3.999]") == b"DSorry, I couldn't find any host named [1.2.3.999]. (#5.1.2)\n\0"
    assert remote("1.2.3.999") == b"DSorry, I couldn't find any host named 1.2.3.999. (#5.1.2)\n\0"
    assert [(n, t) for n, t, _ in dns_server.queries][::2] == [("[1.2.3.999]", "MX"), ("1.2.3.999", "MX")]


def test_outgoingip_that_cannot_be_bound_is_a_failed_connection(remote, home, dns_server, sinks):
    """The outgoingip patch binds before timeoutconn(): an address not on this host fails the
    bind, which counts as a refused connection (the next address; no tcpto time-out), so
    all of them failing is temp_noconn(). A usable one is the source of MX connections too."""
    import pathlib
    need_root()
    ip = loopback_address()
    sink = sinks(ip, 25)
    dns_server.zones = {"example.com": {"MX": [(10, "mx.example")]}, "mx.example": {"A": [ip]}}
    tcpto_down(home)
    home.control("outgoingip", "192.0.2.1\n")
    assert remote("example.com") == NOCONN
    assert pathlib.Path(home.root, "queue", "lock", "tcpto").read_bytes() == bytes(1024)
    home.control("outgoingip", "127.0.0.2\n")
    assert remote("example.com") == accepted(ip)
    assert [m.peer[0] for m in sink.messages] == ["127.0.0.2"]


PRELOADED_MX_DELIVERY = r"""
import os, sys
from qmailpy.spawn import rspawn
spawner = rspawn.Remote(os.environ["QMAILHOME"], os.environ)
spawner.preload()
spawner.ready_for(b"example.com")           # as before forking this delivery's child
before = set(sys.modules)
from qmailpy.remote.main import run
r, w = os.pipe()
code = run(["qmail-remote", "example.com", "a@b.example", "c@example.com"], 0, w, os.environ)
os.close(w)
print(code, os.read(r, 4096).decode(), "|", " ".join(sorted(set(sys.modules) - before)))
"""


def test_rspawn_loads_the_dns_a_delivery_needs_before_its_child(home, dns_server, sinks):
    """A forked qmail-remote that looks up its MX imports nothing qmail-rspawn did not load
    before forking it: dnspython is 30-90 ms of CPU to import, paid by every child otherwise
    (the bench routes by IP literals and never saw it)."""
    need_root()
    ip = loopback_address()
    sinks(ip, 25)
    dns_server.zones = {"example.com": {"MX": [(10, "mx.example.com")]}, "mx.example.com": {"A": [ip]}}
    home.control("me", "test.example\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([os.path.join(root, ".venv", "bin", "python3"), "-c", PRELOADED_MX_DELIVERY], input=MSG,
                       capture_output=True, env=home.env(PYTHONPATH=root, **dns_server.environ()), timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    out, _, imported = r.stdout.decode().partition("|")
    assert "K%s accepted message." % ip in out, out
    assert imported.split() == [], imported


READY_FOR = r"""
import os, sys
from qmailpy.spawn import rspawn
spawner = rspawn.Remote(os.environ["QMAILHOME"], os.environ)
seen = []
for domain in sys.argv[1:]:
    spawner.ready_for(domain.encode())
    seen.append("dns.message" in sys.modules)
print(seen)
"""


@pytest.mark.parametrize("routes,domains,loaded", [
    (":127.0.0.1:2525\n", ["example.com", "other.example"], [False, False]),   # everything to an IP
    ("", ["[127.0.0.1]", "example.com"], [False, True]),                      # a literal, then an MX
    ("example.com:127.0.0.1\n", ["example.com", "other.example"], [False, True]),
    (":relay.example\n", ["example.com"], [True]),                           # a relay's A records
    ("example.com:\n:127.0.0.1\n", ["example.com"], [True]),                 # example.com: its MX
    (None, ["example.com"], [True]),                                         # unreadable: as no routes
])
def test_rspawn_loads_dnspython_only_once_a_delivery_will_ask_dns(home, routes, domains, loaded):
    """Loaded in qmail-rspawn, dnspython costs every later fork about 1 ms (its threading and
    random at-fork handlers): a host that routes everything to IP literals never loads it."""
    if routes is None:
        os.mkdir(os.path.join(home.root, "control", "smtproutes"))
    else:
        home.control("smtproutes", routes)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([os.path.join(root, ".venv", "bin", "python3"), "-c", READY_FOR] + domains,
                       capture_output=True, text=True, env=home.env(PYTHONPATH=root), timeout=60)
    assert r.stdout == "%s\n" % loaded, r.stderr
