"""qmail-remote's STARTTLS against aiosmtpd peers with TLS (tests/tlspeer.py), certificates made
by openssl at run time: opportunistic TLS, verification in the report, control/tlsdestinations
requiring TLS (a deferral, never plaintext), the levels' fall-backs, and the plaintext that
must not survive the handshake. Everything on 127.0.0.0/8; DNS from tests/dnsserver.py.
"""
import socket
import ssl
import subprocess
import threading

import pytest

from conftest import program
from dnsserver import dns_server  # noqa: F401  (fixture)
from smtpsink import scripted, smtp_script  # noqa: F401  (fixture)
from tlspeer import TlsSink, tls_certs, tls_sinks  # noqa: F401  (fixtures)

MSG = b"Subject: tls\n\nhello over TLS\n"
MX = "mx.test.example"
CIPHER13 = b"TLSv1.3 TLS_AES_256_GCM_SHA384"


@pytest.fixture
def remote(home, dns_server):
    """remote(port, cafile=None) -> stdout of qmail-remote example.com a@b.example c@example.com,
    routed by smtproutes to mx.test.example (A 127.0.0.1) on port; cafile: $SSL_CERT_FILE, the
    "system" CAs (unset: the machine's, which do not know the test CA)."""
    home.control("me", "test.example\n")
    dns_server.zones = {MX: {"A": ["127.0.0.1"]}}

    def go(port, cafile=None, host="example.com", relay=MX, message=MSG):
        home.control("smtproutes", "%s:%s:%d\n" % (host, relay, port))
        env = home.env(**dns_server.environ())
        for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
            env.pop(name, None)
        if cafile:
            env["SSL_CERT_FILE"] = cafile
        p = subprocess.run([program("qmail-remote"), host, "a@b.example", "c@" + host], input=message,
                           capture_output=True, env=env, timeout=60)
        assert (p.returncode, p.stderr) == (0, b"")
        return p.stdout
    go.home = home
    return go


def accepted(tls_line):
    return b"r\0K127.0.0.1 accepted message.\n" + tls_line + b"Remote host said: 250 ok queued\n\0"


def test_opportunistic_starttls_with_a_verified_certificate(remote, tls_certs, tls_sinks):
    sink = tls_sinks(cert=tls_certs.server(MX))
    out = remote(sink.port, cafile=tls_certs.ca)
    assert out == accepted(b"TLS: " + CIPHER13 + b", certificate verified for mx.test.example.\n")
    assert len(sink.messages) == 1 and sink.tls[0] is not None
    assert sink.messages[0].data == b"Subject: tls\r\n\r\nhello over TLS\r\n"
    assert sink.messages[0].helo == "test.example"      # the EHLO after STARTTLS counts
    assert sink.connections == 1


def test_unverified_certificate_is_reported_and_the_mail_still_goes_encrypted(remote, tls_certs, tls_sinks):
    sink = tls_sinks(cert=tls_certs.server(MX))
    out = remote(sink.port)                              # the machine's CAs: the test CA is unknown
    assert out == accepted(b"TLS: " + CIPHER13 + b", certificate not verified: unable to get local issuer "
                           b"certificate.\n")
    assert len(sink.messages) == 1 and sink.tls[0] is not None
    assert sink.connections == 2                         # the check failed the first handshake


def test_peer_without_starttls_gets_plaintext_and_the_report_of_qmail(remote, tls_sinks):
    sink = tls_sinks(cert=None)
    assert remote(sink.port) == accepted(b"")
    assert sink.tls == [None]


def test_required_tls_that_the_peer_lacks_is_a_deferral(remote, tls_sinks):
    sink = tls_sinks(cert=None)
    remote.home.control("tlsdestinations", "example.com\n")
    assert remote(sink.port) == (b"ZConnected to 127.0.0.1 but it does not offer STARTTLS, which "
                                 b"control/tlsdestinations requires for example.com. (#4.7.10)\n\0")
    assert sink.messages == []


def test_required_tls_holds_for_the_domain_written_with_its_final_dot(remote, tls_sinks):
    """c@example.com. is the same domain to DNS (an absolute name), so the same tlsdestinations
    line holds: without that, a trailing dot sent it in plaintext past a 'verify' line."""
    sink = tls_sinks(cert=None)
    remote.home.control("tlsdestinations", "example.com\n")
    assert remote(sink.port, host="example.com.") == (
        b"ZConnected to 127.0.0.1 but it does not offer STARTTLS, which "
        b"control/tlsdestinations requires for example.com.. (#4.7.10)\n\0")
    assert sink.messages == []


def test_required_tls_whose_certificate_does_not_verify_is_a_deferral(remote, tls_certs, tls_sinks):
    sink = tls_sinks(cert=tls_certs.server(MX))
    remote.home.control("tlsdestinations", "example.com\n")
    assert remote(sink.port) == (b"ZConnected to 127.0.0.1 but its TLS certificate did not verify: unable to "
                                 b"get local issuer certificate. (#4.7.5)\n\0")
    assert sink.messages == [] and sink.connections == 1     # one connection, no fall-back
    # the CA file of the line makes it verify
    remote.home.control("tlsdestinations", "example.com:%s\n" % tls_certs.ca)
    assert remote(sink.port) == accepted(b"TLS: " + CIPHER13 + b", certificate verified for mx.test.example.\n")


def test_required_tls_checks_the_host_name(remote, tls_certs, tls_sinks, dns_server):
    sink = tls_sinks(cert=tls_certs.server("other.test.example"))
    dns_server.zones = {MX: {"A": ["127.0.0.1"]}}
    remote.home.control("tlsdestinations", ".example.com:%s\n" % tls_certs.ca)
    out = remote(sink.port, host="a.example.com")
    assert out == (b"ZConnected to 127.0.0.1 but its TLS certificate did not verify: Hostname mismatch, "
                   b"certificate is not valid for 'mx.test.example'. (#4.7.5)\n\0")
    assert sink.messages == []


def test_encrypt_level_takes_any_certificate_never_plaintext(remote, tls_certs, tls_sinks):
    sink = tls_sinks(cert=tls_certs.selfsigned)
    remote.home.control("tlsdestinations", "-example.com\n")
    assert remote(sink.port) == accepted(b"TLS: " + CIPHER13 + b", certificate not verified: self-signed "
                                         b"certificate.\n")
    plain = tls_sinks(cert=None)
    assert remote(plain.port).startswith(b"ZConnected to 127.0.0.1 but it does not offer STARTTLS")
    assert plain.messages == []


def test_none_level_and_star(remote, tls_certs, tls_sinks):
    sink = tls_sinks(cert=tls_certs.server(MX))
    remote.home.control("tlsdestinations", "!example.com\n*\n")
    assert remote(sink.port) == accepted(b"")                       # offered, not used
    assert sink.tls == [None]
    # '*' requires (and verifies) TLS for every destination not listed
    assert remote(sink.port, host="example.org").startswith(
        b"ZConnected to 127.0.0.1 but its TLS certificate did not verify")


def test_required_tls_moves_on_to_the_next_address(remote, tls_certs, tls_sinks, dns_server):
    plain = tls_sinks(cert=None, host="127.0.0.1")
    secure = tls_sinks(cert=tls_certs.server(MX), host="127.0.0.2", port=plain.port)
    dns_server.zones = {MX: {"A": ["127.0.0.1", "127.0.0.2"]}}
    remote.home.control("tlsdestinations", "example.com:%s\n" % tls_certs.ca)
    out = remote(plain.port)
    assert out == (b"r\0K127.0.0.2 accepted message.\nTLS: " + CIPHER13 + b", certificate verified for "
                   b"mx.test.example.\nRemote host said: 250 ok queued\n\0")
    assert plain.messages == [] and len(secure.messages) == 1


def test_tlsclientciphers_that_openssl_refuses_is_a_control_error(remote, tls_certs, tls_sinks):
    sink = tls_sinks(cert=tls_certs.server(MX))
    remote.home.control("tlsclientciphers", "NO-SUCH-CIPHER\n")
    assert remote(sink.port, cafile=tls_certs.ca) == (
        b"ZUnable to read control files: control/tlsclientciphers: unusable: ('No cipher can be selected.',) "
        b"(#4.3.0)\n\0")
    assert sink.messages == []


def test_clientcert_is_shown_to_a_server_that_asks(remote, tls_certs, tls_sinks):
    sink = tls_sinks(cert=tls_certs.server(MX))
    ctx = sink.controller.SMTP_kwargs["tls_context"]
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.load_verify_locations(tls_certs.ca)
    cert, key = tls_certs.server("client.test.example")
    with open(cert) as c, open(key) as k:
        remote.home.control("clientcert.pem", c.read() + k.read())
    assert remote(sink.port, cafile=tls_certs.ca).startswith(b"r\0K127.0.0.1 accepted message.\nTLS: ")
    assert sink.tls[0] is not None


def _tls_peer(certs, plaintext_after_220=b"", handshake=True):
    """A raw server: 220, EHLO with STARTTLS, 220 to STARTTLS followed by plaintext_after_220
    (what a man in the middle injects), then TLS and an accept-all dialogue under it. said: the
    lines it got; b"EARLY ..." when the client sent on after its EHLO under TLS without waiting
    for the answer (it took an injected line for it)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*certs.server(MX))
    said = []

    def script(peer):
        peer.send(b"220 raw.test ESMTP\r\n")
        peer.line()
        peer.send(b"250-raw.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n")
        said.append(peer.line())
        peer.send(b"220 go ahead\r\n" + plaintext_after_220)
        if not handshake:
            peer.send(b"this is not TLS\r\n" * 20)
            peer.line()
            return
        tls = ctx.wrap_socket(peer.conn, server_side=True)
        f = tls.makefile("rwb", buffering=0)
        said.append(f.readline())                       # the EHLO under TLS
        tls.settimeout(1.5)
        try:
            early = tls.recv(200)
        except (OSError, ssl.SSLError):
            early = b""
        if early:
            said.append(b"EARLY " + early)
        tls.settimeout(10)
        f.write(b"250-raw.test\r\n250 8BITMIME\r\n")
        for line in iter(f.readline, b""):
            said.append(line)
            cmd = line[:4].upper()
            if cmd == b"DATA":
                f.write(b"354 go\r\n")
                while f.readline() not in (b".\r\n", b""):
                    pass
                f.write(b"250 ok\r\n")
            elif cmd == b"QUIT":
                return
            else:
                f.write(b"250 ok\r\n")
    return script, said


def test_plaintext_sent_with_the_220_is_not_taken_as_said_under_tls(remote, tls_certs, scripted):
    # CVE-2011-0411, client side: a reply injected before the handshake must not answer the EHLO
    # sent after it (it would announce PIPELINING, and every later reply would be one off).
    script, said = _tls_peer(tls_certs, b"250-INJECTED\r\n250 PIPELINING\r\n")
    server = scripted(script)
    out = remote(server.port, cafile=tls_certs.ca)
    assert out == accepted(b"TLS: " + CIPHER13 + b", certificate verified for mx.test.example.\n").replace(
        b"250 ok queued", b"250 ok")
    assert said[:3] == [b"STARTTLS\r\n", b"EHLO test.example\r\n", b"MAIL FROM:<a@b.example>\r\n"]


def test_a_failed_handshake_of_opportunistic_tls_goes_plaintext_on_a_new_connection(remote, tls_certs,
                                                                                    scripted):
    bad, _ = _tls_peer(tls_certs, handshake=False)
    calls = []

    def script(peer):
        calls.append(1)
        if len(calls) == 1:
            return bad(peer)
        return smtp_script()(peer)
    server = scripted(script)
    out = remote(server.port, cafile=tls_certs.ca)
    assert out.startswith(b"r\0K127.0.0.1 accepted message.\nTLS: handshake failed (")
    assert b"), sent without TLS.\nRemote host said: 250" in out
    assert len(calls) == 2


def _insists_on_tls(answer_mail, answer_rcpt=b"250 ok\r\n"):
    """A plaintext dialogue of a server that wants STARTTLS first (RFC 3207's 530)."""
    return smtp_script(ehlo=b"250-strict.test\r\n250 PIPELINING\r\n",
                       answers={b"MAIL": answer_mail, b"RCPT": answer_rcpt})


@pytest.mark.parametrize("mail, rcpt, expected", [
    (b"530 5.7.0 Must issue a STARTTLS command first\r\n", b"250 ok\r\n",
     b"ZConnected to 127.0.0.1 but sender was rejected.\nTLS: handshake failed ("),
    (b"250 ok\r\n", b"530 5.7.0 Must issue a STARTTLS command first\r\n",
     b"s127.0.0.1 does not like recipient.\nRemote host said: 530 5.7.0 Must issue a STARTTLS command "
     b"first\n\0DGiving up on 127.0.0.1.\nTLS: handshake failed ("),
])
def test_a_530_after_a_failed_handshake_is_a_deferral_not_a_bounce(remote, tls_certs, scripted,
                                                                   mail, rcpt, expected):
    """Opportunistic TLS whose handshake failed goes plaintext on a new connection; a server that
    insists on TLS answers that with 530, which would bounce the mail, where the TLS patch defers
    at the handshake and the next try may get TLS through."""
    bad, _ = _tls_peer(tls_certs, handshake=False)
    calls = []

    def script(peer):
        calls.append(1)
        return (bad if len(calls) == 1 else _insists_on_tls(mail, rcpt))(peer)
    out = remote(scripted(script).port, cafile=tls_certs.ca)
    assert out.startswith(expected), out
    assert b"), sent without TLS.\n" in out and len(calls) == 2


def test_a_530_without_a_failed_handshake_stays_a_bounce(remote, scripted):
    """A server that never offered STARTTLS and answers 530: plaintext by policy, qmail's bounce."""
    out = remote(scripted(_insists_on_tls(b"530 5.7.0 Must issue a STARTTLS command first\r\n")).port)
    assert out.startswith(b"DConnected to 127.0.0.1 but sender was rejected.\nRemote host said: 530"), out


def test_the_wire_drops_buffered_plaintext_at_starttls(tls_certs):
    """remote.wire.Conn.starttls on a socketpair: bytes after the 220 are gone, TLS bytes follow."""
    from qmailpy.remote.wire import Conn
    ours, theirs = socket.socketpair()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*tls_certs.server(MX))

    def server():
        theirs.sendall(b"220 go ahead\r\n250 INJECTED\r\n")
        tls = ctx.wrap_socket(theirs, server_side=True)
        tls.sendall(b"250 real\r\n")
        tls.recv(10)
    t = threading.Thread(target=server)
    t.start()
    conn = Conn(ours, b"127.0.0.1", 10)
    assert conn.reply() == 220
    client = ssl.create_default_context(cafile=tls_certs.ca)
    conn.starttls(client, MX)
    assert (conn.reply(), conn.text) == (250, b"250 real\n")
    conn.sock.sendall(b"x")
    t.join()
    conn.close()


def test_destinations_table():
    from qmailpy.remote.tls import ENCRYPT, MAY, NONE, VERIFY, Policy, parse_destinations, policy_for
    table = parse_destinations(["Example.COM", "-enc.example", "!plain.example:/ignored", ".sub.example:/ca.pem",
                                "*:/all.pem", ":x", "bad:"])
    assert policy_for(table, b"example.com") == Policy(VERIFY)
    assert policy_for(table, b"EXAMPLE.com") == Policy(VERIFY)
    assert policy_for(table, b"example.com.") == Policy(VERIFY)          # absolute: the same domain
    assert policy_for(table, b"a.sub.example.") == Policy(VERIFY, "/ca.pem")
    assert policy_for(table, b"enc.example") == Policy(ENCRYPT)
    assert policy_for(table, b"plain.example") == Policy(NONE)
    assert policy_for(table, b"a.sub.example") == Policy(VERIFY, "/ca.pem")
    assert policy_for(table, b"sub.example") == Policy(VERIFY, "/all.pem")      # '.sub' is below only
    assert policy_for(table, b"bad") == Policy(VERIFY)
    assert policy_for({}, b"anything") == Policy(MAY)
    assert policy_for(parse_destinations(["a.example"]), b"b.example") == Policy(MAY)
    # a line written as an absolute name holds for the domain (was: a key no destination matched)
    table = parse_destinations(["bank.example.", "-.corp.example."])
    assert policy_for(table, b"bank.example") == policy_for(table, b"bank.example.") == Policy(VERIFY)
    assert policy_for(table, b"mx.corp.example") == Policy(ENCRYPT)
    # an IPv6-literal destination: its colons are the address's, not the CA file's (was: key '[ipv6', so 'may')
    table = parse_destinations(["-[IPv6:2001:db8::25]", "[IPv6:::1]:/ca.pem", "[192.0.2.1]"])
    assert policy_for(table, b"[IPv6:2001:DB8::25]") == Policy(ENCRYPT)
    assert policy_for(table, b"[IPv6:::1]") == Policy(VERIFY, "/ca.pem")
    assert policy_for(table, b"[192.0.2.1]") == Policy(VERIFY)


def _refuses_starttls(peer):
    """Offers STARTTLS, answers it 454, and accepts the mail without TLS; commands kept in peer.raw."""
    peer.send(b"220 sink.test ESMTP\r\n")
    while True:
        verb = peer.line()[:4].upper()
        if verb in (b"", b"QUIT"):
            return
        if verb == b"EHLO":
            peer.send(b"250-sink.test\r\n250 STARTTLS\r\n")
        elif verb == b"STAR":
            peer.send(b"454 4.7.0 TLS not available due to temporary reason\r\n")
        elif verb == b"DATA":
            peer.send(b"354 go ahead\r\n")
            peer.until(b"\r\n.\r\n")
            peer.send(b"250 ok queued\r\n")
        else:
            peer.send(b"250 ok\r\n")


def test_starttls_refused_sends_plaintext_when_tls_is_opportunistic(remote, scripted):
    """RFC 3207: after a refused STARTTLS the session goes on as before; the report says so."""
    peer = scripted(_refuses_starttls)
    assert remote(peer.port) == accepted(b"TLS: STARTTLS refused, sent without TLS.\n")
    assert b"hello over TLS\r\n.\r\n" in peer.peers[0].raw


def test_starttls_refused_when_tls_is_required_is_a_deferral_and_no_mail_goes(remote, scripted):
    """control/tlsdestinations requires TLS: a 454 to STARTTLS ends the connection before MAIL,
    a deferral (#4.7.10) with the server's reply."""
    peer = scripted(_refuses_starttls)
    remote.home.control("tlsdestinations", "example.com\n")
    assert remote(peer.port) == (
        b"ZConnected to 127.0.0.1 but STARTTLS was refused, and control/tlsdestinations requires TLS for "
        b"example.com. (#4.7.10)\nRemote host said: 454 4.7.0 TLS not available due to temporary reason\n\0")
    assert [bytes(p.raw).split(b"\r\n")[1:3] for p in peer.peers] == [[b"STARTTLS", b"QUIT"]]
