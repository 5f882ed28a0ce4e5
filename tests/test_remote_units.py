"""qmail-remote's pieces without a network: routes, quoting, report texts, reply reading, MX order."""
import os
import socket
import struct

import pytest
from hypothesis import example, given, strategies as st

from qmailpy.dns.mxip import ip_literal, order
from qmailpy.remote import report as R
from qmailpy.remote.client import extensions
from qmailpy.remote.connect import source_address
from qmailpy.remote.routes import mangle, parse_routes, port_problem, quote, route, split_colon
from qmailpy.remote.wire import Conn, Dropped

ROUTES = parse_routes([
    "example.com:relay.example.net",
    ".example.com:sub-relay.example.net:2525",
    "Upper.Example:[10.0.0.1]:26",
    "no colon line is ignored",
    "dup.example:first",
    "dup.example:second",
    "mx.example.com:",
    ":default.example.net",
])


@pytest.mark.parametrize("host,want", [
    (b"example.com", (b"relay.example.net", 25)),
    (b"a.b.example.com", (b"sub-relay.example.net", 2525)),
    (b"mx.example.com", (None, 25)),                # explicit empty relay beats the suffix and default
    (b"UPPER.example", (b"[10.0.0.1]", 26)),         # keys compare without case
    (b"dup.example", (b"second", 25)),              # constmap: the later line wins
    (b"elsewhere.org", (b"default.example.net", 25)),
    (b"xexample.com", (b"default.example.net", 25)),  # suffixes start at a dot only
])
def test_route(host, want):
    assert route(ROUTES, host) == want


def test_route_without_default_and_odd_ports():
    table = parse_routes(["a.example:relay:99999x", "b.example:relay:", "c.example:relay:abc"])
    assert route(table, b"other.example") == (None, 25)
    assert route(table, b"a.example") == (b"relay", 99999 & 0xFFFF)   # scan_ulong, then 16 bits
    assert route(table, b"b.example") == (b"relay", 0)                # as qmail: port 0, connect fails
    assert route(table, b"c.example") == (b"relay", 0)


@pytest.mark.parametrize("box,want", [
    (b"john", b"john"), (b"john.doe", b"john.doe"), (b"a+b=c", b"a+b=c"),
    (b"john doe", b'"john doe"'), (b".lead", b'".lead"'), (b"trail.", b'"trail."'),
    (b"a..b", b'"a..b"'), (b"", b'""'), (b'say"hi\\', b'"say\\"hi\\\\"'), (b"caf\xc3\xa9", b'"caf\xc3\xa9"'),
])
def test_quote(box, want):
    assert quote(box) == want


def test_mangle():
    assert mangle(b"") == b""
    assert mangle(b"postmaster") == b"postmaster"
    assert mangle(b"john doe@ex@ample.com") == b'"john doe@ex"@ample.com'


def test_report_texts():
    assert R.perm_dns(b"bad host\x7f") == b"DSorry, I couldn't find any host named bad?host?. (#5.1.2)\n"
    assert R.dropped(b"1.2.3.4", False) == b"ZConnected to 1.2.3.4 but connection died. (#4.4.2)\n"
    assert R.dropped(b"1.2.3.4", True) == (
        b"ZConnected to 1.2.3.4 but connection died. Possible duplicate! (#4.4.2)\n")
    assert R.finished(b"K", b"1.2.3.4", b" accepted message", b"250 ok\n") == (
        b"K1.2.3.4 accepted message.\nRemote host said: 250 ok\n")
    assert R.finished(b"DGiving up on ", b"1.2.3.4", b"", b"") == b"DGiving up on 1.2.3.4.\n"
    assert R.recipient(250, b"1.2.3.4", b"250 ok\n") == b"r"
    assert R.recipient(550, b"1.2.3.4", b"550 a\0b\n") == (
        b"h1.2.3.4 does not like recipient.\nRemote host said: 550 a?b\n")
    assert R.recipient(421, b"1.2.3.4", b"") == b"s1.2.3.4 does not like recipient.\n"
    assert R.PARTIAL == b"DSMTP cannot transfer messages with partial final lines. (#5.6.2)\n"


def test_report_texts_tls_smtputf8_control():
    """Every report function's exact text (make mutate: a changed word is a changed report)."""
    assert R.tls_not_offered(b"1.2.3.4", b"mx .example") == (
        b"ZConnected to 1.2.3.4 but it does not offer STARTTLS, which control/tlsdestinations"
        b" requires for mx?.example. (#4.7.10)\n")
    assert R.tls_refused(b"1.2.3.4", b"mx\x80.example", b"454 no\n") == (
        b"ZConnected to 1.2.3.4 but STARTTLS was refused, and control/tlsdestinations"
        b" requires TLS for mx?.example. (#4.7.10)\nRemote host said: 454 no\n")
    assert R.tls_handshake(b"1.2.3.4", b"bad mac") == (
        b"ZConnected to 1.2.3.4 but the TLS handshake failed: bad mac. (#4.7.5)\n")
    assert R.tls_unverified(b"1.2.3.4", b"expired") == (
        b"ZConnected to 1.2.3.4 but its TLS certificate did not verify: expired. (#4.7.5)\n")
    assert R.smtputf8(b"1.2.3.4") == (
        b"DConnected to 1.2.3.4 but it does not support SMTPUTF8, which a non-ASCII address needs. (#5.6.7)\n")
    assert R.control("control/me: line 1\tbad\\") == (
        b"ZUnable to read control files: control/me: line 1\\tbad\\\\ (#4.3.0)\n")
    assert R.control("caf\u00e9") == "ZUnable to read control files: caf\u00e9 (#4.3.0)\n".encode("utf-8")
    assert R.finished(b"K", b"1.2.3.4", b" accepted message", b"250 ok\n", tls=b"TLS: x\n") == (
        b"K1.2.3.4 accepted message.\nTLS: x\nRemote host said: 250 ok\n")
    stop = R.Stop(b"Zgone\n")
    assert stop.text == b"Zgone\n" and stop.args == (b"Zgone\n",)


def test_report_boundaries():
    """outsafe keeps 33..126 only; RCPT codes: <400 r, 400..499 s, >=500 h."""
    assert R.safe(bytes([0, 32, 33, 64, 126, 127, 255])) == b"??!@~??"
    assert R.recipient(399, b"p", b"") == b"r"
    assert R.recipient(400, b"p", b"") == b"sp does not like recipient.\n"
    assert R.recipient(499, b"p", b"") == b"sp does not like recipient.\n"
    assert R.recipient(500, b"p", b"") == b"hp does not like recipient.\n"


def conn_with(data, timeout=2):
    a, b = socket.socketpair()
    b.sendall(data)
    b.shutdown(socket.SHUT_WR)
    return Conn(a, b"1.2.3.4", timeout), b


def test_reply_reader():
    conn, peer = conn_with(b"250-first\r\n250-second\r\n250 last\r\n220 next\r\n25")
    assert conn.reply() == 250
    assert conn.text == b"250-first\n250-second\n250 last\n"
    assert conn.reply() == 220 and conn.take_text() == b"220 next\n" and conn.text == b""
    with pytest.raises(Dropped):
        conn.reply()                                # EOF inside a reply
    peer.close()


def test_reply_garbage_and_cap():
    conn, peer = conn_with(b"ab5 what\r\n" + b"550 " + b"x" * 6000 + b"\r\n")
    assert conn.reply() >= 500                       # C's unsigned arithmetic: a huge code
    assert conn.reply() == 550 and len(conn.text) == 5000
    peer.close()


def test_reply_timeout():
    a, b = socket.socketpair()
    conn = Conn(a, b"1.2.3.4", 0.2)
    with pytest.raises(Dropped):
        conn.reply()
    a.close()
    b.close()


def test_extensions():
    text = b"250-mx.example.com hello\n250-pipelining\n250-SIZE 1000\n250 8BITMIME\n"
    assert extensions(text) == {b"PIPELINING", b"SIZE", b"8BITMIME"}


def test_source_address():
    assert source_address("") is None and source_address("0.0.0.0") is None
    assert source_address(" 127.0.0.2 ") == "127.0.0.2"
    with pytest.raises(ValueError):
        source_address("eth0")


def test_ip_literal():
    assert ip_literal("1.2.3.4") == "1.2.3.4"
    assert ip_literal(b"[10.0.0.01]") == "10.0.0.1"
    assert ip_literal("[IPv6:::1]") == "::1"
    for no in ("1.2.3", "1.2.3.4.5", "256.1.1.1", "[1.2.3.4", "example.com", "[::1]"):
        assert ip_literal(no) is None


def test_order_is_qmails_lcg():
    mxs = [(20, "c"), (10, "a"), (10, "b"), (30, "d")]
    got = {tuple(name for _, name in order(mxs, seed)) for seed in range(0, 1 << 32, 1 << 26)}
    assert got == {("a", "b", "c", "d"), ("b", "a", "c", "d")}
    # the same seed, the same order: 0 makes random 1 (1 // 2 is below 2147483647 // 2: b first),
    # 2**31 makes it 2**31 + 1 (2**30 is not below 1073741823: a stays first)
    assert [n for _, n in order(mxs, 0)] == ["b", "a", "c", "d"]
    assert [n for _, n in order(mxs, 1 << 31)] == ["a", "b", "c", "d"]
    # seed 0: random becomes 1, 1 // 2 < 2147483647 // 2 -> the second equal one is picked first
    assert [n for _, n in order([(5, "x"), (5, "y")], 0)] == ["y", "x"]


def tcpto_file(tmp_path, records=()):
    data = bytearray(1024)
    for i, (ip, count, when) in enumerate(records):
        data[i * 16:i * 16 + 4] = socket.inet_aton(ip)
        data[i * 16 + 4] = count
        data[i * 16 + 8:i * 16 + 12] = when.to_bytes(4, "little")
    path = tmp_path / "tcpto"
    path.write_bytes(bytes(data))
    return path


def record_of(path, i):
    data = path.read_bytes()[i * 16:i * 16 + 16]
    return socket.inet_ntoa(data[:4]), data[4], int.from_bytes(data[8:12], "little")


def test_tcpto_counts_timeouts_and_skips(tmp_path):
    from qmailpy.remote.tcpto import TcpTo
    path = tcpto_file(tmp_path)
    clock = [1000000]
    cache = TcpTo(str(path), now=lambda: clock[0], pid=0)       # pid 0: skip for 60 << 6 = 3840 s
    assert not cache.is_down("192.0.2.1")
    cache.record("192.0.2.1", True)
    assert record_of(path, 0) == ("192.0.2.1", 1, 1000000)
    clock[0] += 60
    cache.record("192.0.2.1", True)                              # within 120 s: not counted
    assert record_of(path, 0) == ("192.0.2.1", 1, 1000000)
    clock[0] += 100
    cache.record("192.0.2.1", True)
    assert record_of(path, 0) == ("192.0.2.1", 2, 1000160)
    assert cache.is_down("192.0.2.1")
    clock[0] += 3840
    assert not cache.is_down("192.0.2.1")                        # old enough: try again
    cache.record("192.0.2.1", False)                             # connected: count cleared
    assert record_of(path, 0)[1] == 0
    cache.record("192.0.2.9", False)                             # success of an unknown host: nothing
    assert record_of(path, 1) == ("0.0.0.0", 0, 0)


def test_tcpto_evicts_oldest_and_ignores_ipv6_and_missing_file(tmp_path):
    from qmailpy.remote.tcpto import TcpTo
    path = tcpto_file(tmp_path, [("10.0.%d.1" % i, 1, 5000 + i) for i in range(64)])
    TcpTo(str(path), now=lambda: 9999, pid=0).record("192.0.2.1", True)
    assert record_of(path, 0) == ("192.0.2.1", 1, 9999)
    before = path.read_bytes()
    cache = TcpTo(str(path), now=lambda: 9999, pid=0)
    cache.record("::1", True)
    assert not cache.is_down("::1") and path.read_bytes() == before
    missing = TcpTo(str(tmp_path / "none"))
    missing.record("192.0.2.1", True)
    assert not missing.is_down("192.0.2.1") and not (tmp_path / "none").exists()


class CorkSocket:
    """A socket that answers every command with a scripted reply and records what is done to it."""

    def __init__(self, replies):
        self.replies, self.events = list(replies), []

    def settimeout(self, t):
        pass

    def setsockopt(self, level, option, value):
        if (level, option) == (socket.IPPROTO_TCP, socket.TCP_CORK):
            self.events.append(("cork", value))

    def send(self, data):
        self.events.append(("send", bytes(data)))
        return len(data)

    def recv(self, n):
        return self.replies.pop(0) if self.replies else b""

    def close(self):
        pass


def test_message_and_dot_leave_corked():
    """The message and its final dot are written under TCP_CORK (no Nagle wait for the dot),
    the connection is critical from the dot on, and the cork comes off once the dot is out."""
    from qmailpy.remote.client import smtp
    from qmailpy.remote.message import Message
    sock = CorkSocket([b"220 hi\r\n", b"250 hello\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n",
                       b"250 queued\r\n", b"221 bye\r\n"])
    conn = Conn(sock, b"127.0.0.1", 10)
    with pytest.raises(R.Stop) as stop:
        smtp(conn, b"me.example", b"a@b", [b"c@d"], Message(data=b"Subject: x\n\nbody\n"), [])
    assert stop.value.text.startswith(b"K127.0.0.1 accepted message.")
    ev = sock.events
    start = ev.index(("cork", 1))
    assert ev[start - 1] == ("send", b"DATA\r\n")
    assert ev[start + 1:start + 4] == [("send", b"Subject: x\r\n\r\nbody\r\n"), ("send", b".\r\n"), ("cork", 0)]
    assert ev.count(("cork", 1)) == 1 and ev.count(("cork", 0)) == 1


# -- smtproutes: any line, any host ---------------------------------------------------------

SPEC = st.binary(max_size=30) | st.lists(st.sampled_from(
    [b"[", b"]", b":", b"IPv6", b"::1", b"25", b"99999", b"0" * 20, b"x", b"."]), max_size=8).map(b"".join)


@example([b":relay:" + b"7" * 5000], b"x")         # int() refused the port's 5000 digits: ValueError
@example([b"relay:" + b"7" * 5000], b"x")          # and port_problem()'s int() of them
@example([b"relay:" + b"0" * 5000 + b"25"], b"x")  # and its int() of the zeros before 25
@given(st.lists(SPEC, max_size=4), SPEC)
def test_route_never_raises_and_ports_are_16_bits(lines, host):
    relay, port = route(parse_routes(lines), host)
    assert 0 <= port <= 65535 and (relay is None or b":" not in relay or relay.startswith(b"["))
    for line in lines:
        head, colon, tail = split_colon(line)
        assert head + colon + tail == line
        port_problem(line)


@given(st.integers(0, 10 ** 40), st.binary(max_size=3).filter(lambda b: not b[:1].isdigit()))
def test_the_port_is_scan_ulong_cut_to_16_bits(n, after):
    assert route({b"": b"relay:%d" % n + after}, b"x") == (b"relay", n % (1 << 64) & 0xFFFF)


def remote_in_netns(home, host, setup):
    """In a private netns after `setup`: (this host's IPv4 addresses as ipme sees them,
    qmail-remote's output for `host`)."""
    from netns import in_netns
    home.control("me", "test.example\n")
    home.control("timeoutconnect", "2\n")
    code = ("import os, sys\n"
            "from qmailpy.remote.main import run\n"
            "from qmailpy.remote.ipme import interface_ipv4\n"
            "print(repr(interface_ipv4()))\n"
            "r, w = os.pipe(); os.write(w, b'Subject: x\\n\\nbody\\n'); os.close(w)\n"
            "out, inn = os.pipe()\n"
            "run(['qmail-remote', %r, 'a@b.example', 'c@example.com'], r, inn, %r)\n"
            "os.close(inn); sys.stdout.write(repr(os.read(out, 4096)))\n" % (host, home.env()))
    from ast import literal_eval
    mine, report = in_netns(code, setup=setup).splitlines()
    return literal_eval(mine), literal_eval(report)


def test_every_interface_address_is_mine_however_many(home):
    """ipme.c asks SIOCGIFCONF again with a bigger buffer until the answer fits; a fixed room
    for 128 addresses missed the rest, and an MX on the 200th address of this host was
    connected to instead of being qmail's #5.4.6 (a mail loop through our own qmail-smtpd)."""
    setup = ["for i in $(seq 1 200); do ip addr add 10.9.0.$i/32 dev lo; done"]
    mine, report = remote_in_netns(home, "[10.9.0.200]", setup)
    assert len([a for a in mine if a.startswith("10.9.0.")]) == 200
    assert report == R.AMBIGMX + b"\0"


def test_an_address_of_an_interface_that_is_down_is_not_mine(home):
    """ipme.c keeps an address only when SIOCGIFFLAGS says its interface is up (IFF_UP);
    SIOCGIFCONF lists the addresses of down interfaces too, and a literal (or an MX) on one
    of them bounced with #5.4.6 where qmail tries to connect."""
    setup = ["ip link add qp0 type bridge", "ip addr add 10.7.0.1/32 dev qp0"]
    mine, report = remote_in_netns(home, "[10.7.0.1]", setup)
    assert "10.7.0.1" not in mine and "127.0.0.1" in mine
    assert report == R.NOCONN + b"\0"
    setup.append("ip link set qp0 up")
    mine, report = remote_in_netns(home, "[10.7.0.1]", setup)
    assert "10.7.0.1" in mine
    assert report == R.AMBIGMX + b"\0"


@pytest.mark.parametrize("message", [
    b"From: a@b.example\nSubject: x\n\nbody\n",
    b"Subject: x\r\n\tfolded\r\nFrom: <a@c.example>\r\n\r\nFrom: no@d.example\n",
    b".not a field\nFrom: a@b.example\n\n",
    b"From: a@b.example\n",                                 # no body, no empty line
    b"\nFrom: body@b.example\n",
    b"X-Long: " + b"y" * 200000 + b"\nFrom: late@e.example\n\n" + b"z\n" * 100000,
    b"",
])
def test_the_head_the_key_choice_reads_gives_the_fields_of_the_whole(tmp_path, message):
    """remote.message.Message.head() stops after the header block (proto.headers.block_end),
    in blocks or in memory, and the DKIM key choice sees the same From: as in the whole."""
    from qmailpy.dkim.keys import from_domain
    from qmailpy.proto.headers import fields
    from qmailpy.remote.message import BLOCK, Message
    path = tmp_path / "mess"
    path.write_bytes(message + b"body line\n" * (3 * BLOCK // 10))
    with open(path, "rb") as f:
        for m in (Message(fd=f.fileno()), Message(data=path.read_bytes())):
            head = m.head()
            assert path.read_bytes().startswith(head)
            assert list(fields(head)) == list(fields(path.read_bytes()))
            assert from_domain(head) == from_domain(path.read_bytes())
        assert len(Message(fd=f.fileno()).head()) < len(message) + 2 * BLOCK


def test_an_ipv4_mapped_aaaa_of_mine_is_mine():
    """An MX host whose AAAA record is ::ffff:127.0.0.1 (or ::ffff: one of this host's IPv4
    addresses) reaches this host through the IPv4 stack: qmail's #5.4.6, not a connection
    to our own qmail-smtpd (a mail loop). ipme.norm() took the mapped form for another address."""
    from qmailpy.remote.ipme import norm
    from qmailpy.remote.main import _candidates
    assert norm("::ffff:127.0.0.1") == norm("::FFFF:7f00:1") == "127.0.0.1"
    assert norm("2001:db8::1") == "2001:db8::1"
    with pytest.raises(R.Stop) as e:
        _candidates([(10, "::ffff:127.0.0.1", "me6.example"), (20, "192.0.2.1", "other.example")], None, ())
    assert e.value.args[0] == R.AMBIGMX
    assert _candidates([(5, "192.0.2.1", "other.example"), (10, "::ffff:127.0.0.1", "me6.example")],
                       None, ()) == [("192.0.2.1", "other.example")]


def test_a_message_that_cannot_be_read_is_qmails_read_error(tmp_path):
    """qmail-remote's temp_read(): a mess file that shrinks under it (or any read error) is
    `ZUnable to read message. (#4.3.0)`, a deferral."""
    import os
    from qmailpy.remote.message import Message
    path = tmp_path / "mess"
    path.write_bytes(b"Subject: x\n\nbody\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        message = Message(fd=fd)
        os.truncate(path, 0)
        with pytest.raises(R.Stop) as stop:
            message.read()
    finally:
        os.close(fd)
    assert stop.value.text == b"ZUnable to read message. (#4.3.0)\n"


def test_tcpto_record_dated_ahead_of_a_clock_stepped_back_is_not_a_host_down(tmp_path):
    """tcpto.c compares now() < when + limit without a lower bound: after the clock was
    stepped back by days (NTP correcting a clock that ran ahead), a host whose time-outs were
    recorded before the step is skipped until the clock catches up, and a single-MX domain's
    mail is deferred that long (bounced once queuelifetime passes). A record dated ahead of
    the clock has no known age: it does not mark the host down, and the next time-out is
    counted with the real time."""
    from qmailpy.remote.tcpto import TcpTo
    path = tcpto_file(tmp_path, [("192.0.2.1", 2, 1000000 + 3 * 86400)])
    cache = TcpTo(str(path), now=lambda: 1000000, pid=0)
    assert not cache.is_down("192.0.2.1")
    cache.record("192.0.2.1", True)
    assert record_of(path, 0) == ("192.0.2.1", 3, 1000000)
    assert cache.is_down("192.0.2.1")                            # now dated right: skipped as usual


@pytest.mark.parametrize("fault", ["socket", "SIOCGIFCONF", "always full"])
def test_interfaces_it_cannot_list_are_a_deferral_not_a_guess(home, monkeypatch, fault):
    """ipme_init() that fails (no socket, SIOCGIFCONF refused, an answer that never fits in
    200000 bytes) is qmail's temp_oserr(), 'ZSystem resources temporarily unavailable': with
    its own addresses unknown, qmail-remote cannot tell an MX that is this host (a mail loop)."""
    import fcntl

    from qmailpy.remote import ipme
    from qmailpy.remote.main import run
    real_ioctl = fcntl.ioctl

    def ioctl(fd, request, arg):
        if request != ipme.SIOCGIFCONF:
            return real_ioctl(fd, request, arg)
        if fault == "SIOCGIFCONF":
            raise OSError(22, "Invalid argument")
        room = struct.unpack("iP", arg)[0]
        return struct.pack("iP", room, 0)            # filled to the last byte: ask again, bigger
    if fault == "socket":
        def no_socket(*args):
            raise OSError(24, "Too many open files")
        monkeypatch.setattr(ipme.socket, "socket", no_socket)
    else:
        monkeypatch.setattr(fcntl, "ioctl", ioctl)
    home.control("me", "test.example\n")
    r, w = os.pipe()
    os.write(w, b"Subject: x\n\nbody\n")
    os.close(w)
    out, inn = os.pipe()
    try:
        assert run(["qmail-remote", "[127.0.0.2]", "a@b.example", "c@example.com"], r, inn, home.env()) == 0
        os.close(inn)
        assert os.read(out, 4096) == R.OSERR + b"\0"
    finally:
        os.close(r)
        os.close(out)


def test_tcpto_of_less_than_one_record_or_unlockable_is_off(tmp_path, monkeypatch):
    """tcpto.c: a file shorter than one record, or one it cannot lock and read, turns the
    cache off for this run: no address is skipped, nothing is written."""
    import fcntl

    from qmailpy.remote.tcpto import TcpTo
    short = tmp_path / "tcpto"
    short.write_bytes(b"\0" * 15)
    cache = TcpTo(str(short), now=lambda: 9999, pid=0)
    cache.record("192.0.2.1", True)
    assert not cache.is_down("192.0.2.1") and short.read_bytes() == b"\0" * 15
    path = tcpto_file(tmp_path, [("192.0.2.1", 5, 9999)])
    before = path.read_bytes()

    def no_lock(fd, op):
        raise OSError(37, "No locks available")
    monkeypatch.setattr(fcntl, "flock", no_lock)
    cache = TcpTo(str(path), now=lambda: 9999, pid=0)
    assert not cache.is_down("192.0.2.1")
    cache.record("192.0.2.1", True)
    assert path.read_bytes() == before


def test_what_counts_as_me_beside_the_interfaces(tmp_path, monkeypatch):
    """moreipme entries count however spelled (an IPv4-mapped one as its IPv4 address); one
    that is no address is passed over. /proc/net/if_inet6 lines that are not an address are
    passed over, a missing file is no IPv6 address. An interface whose flags cannot be read
    is not up (ipme.c asks SIOCGIFFLAGS and keeps the address only on success)."""
    import fcntl

    from qmailpy.remote import ipme
    mine = ipme.my_addresses(("not an address", "192.0.2.77", "::ffff:192.0.2.78", "2001:DB8::0001"))
    assert {"192.0.2.77", "192.0.2.78", "2001:db8::1", "127.0.0.1", "::1"} <= mine
    assert "not an address" not in mine and None not in mine
    inet6 = tmp_path / "if_inet6"
    inet6.write_text("00000000000000000000000000000001 01 80 10 80       lo\n\nshort 01\n"
                     "20010db8000000000000000000000025 02 40 00 80     eth0\n")
    assert ipme.interface_ipv6(str(inet6)) == ["::1", "2001:db8::25"]
    assert ipme.interface_ipv6(str(tmp_path / "none")) == []
    real_ioctl = fcntl.ioctl

    def no_flags(fd, request, arg):
        if request == ipme.SIOCGIFFLAGS:
            raise OSError(19, "No such device")
        return real_ioctl(fd, request, arg)
    assert "127.0.0.1" in ipme.interface_ipv4()
    monkeypatch.setattr(fcntl, "ioctl", no_flags)
    assert ipme.interface_ipv4() == []


def test_a_bracket_followed_by_more_than_a_colon_is_split_at_the_first_colon():
    """An IP literal keeps its colons only when `]` ends the field; `[...]x:...` is split where
    qmail splits every smtproutes line, at the first colon."""
    assert split_colon(b"[IPv6:2001:db8::25]:relay:26") == (b"[IPv6:2001:db8::25]", b":", b"relay:26")
    assert split_colon(b"[IPv6:2001:db8::25]") == (b"[IPv6:2001:db8::25]", b"", b"")
    assert split_colon(b"[192.0.2.1]x:relay") == (b"[192.0.2.1]x", b":", b"relay")
    assert split_colon(b"[IPv6:2001:db8::25]x:relay") == (b"[IPv6", b":", b"2001:db8::25]x:relay")
