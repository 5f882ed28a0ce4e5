"""qmail-remote and SMTPUTF8 (RFC 6531): a non-ASCII envelope address goes out with MAIL ...
SMTPUTF8 to a peer that offers it, and bounces (#5.6.7) at one that does not; non-ASCII in the
message alone changes nothing (8BITMIME)."""
import subprocess

import pytest

from conftest import program
from dnsserver import dns_server  # noqa: F401  (fixture)
from tlspeer import tls_sinks  # noqa: F401  (fixture)

MSG = "Subject: héllo\n\nbody ü\n".encode()


@pytest.fixture
def remote(home, dns_server):
    home.control("me", "test.example\n")

    def go(port, sender, recip):
        home.control("smtproutes", ":127.0.0.1:%d\n" % port)
        p = subprocess.run([program("qmail-remote"), "example.com", sender, recip], input=MSG,
                           capture_output=True, env=home.env(**dns_server.environ()), timeout=60)
        assert (p.returncode, p.stderr) == (0, b"")
        return p.stdout
    return go


def test_non_ascii_recipient_uses_smtputf8_when_offered(remote, tls_sinks):
    sink = tls_sinks(smtputf8=True)
    out = remote(sink.port, "a@b.example", "jürgen@example.com")
    assert out == b"r\0K127.0.0.1 accepted message.\nRemote host said: 250 ok queued\n\0"
    assert sink.messages[0].mail_options == ["BODY=8BITMIME", "SMTPUTF8"]
    assert sink.messages[0].rcpt_tos == ["jürgen@example.com"]


def test_non_ascii_sender_to_a_peer_without_smtputf8_bounces(remote, tls_sinks):
    sink = tls_sinks()
    out = remote(sink.port, "jürgen@b.example", "c@example.com")
    assert out == (b"DConnected to 127.0.0.1 but it does not support SMTPUTF8, which a non-ASCII address needs."
                   b" (#5.6.7)\n\0")
    assert sink.messages == []


def test_non_ascii_message_with_ascii_envelope_needs_no_smtputf8(remote, tls_sinks):
    sink = tls_sinks()
    assert remote(sink.port, "a@b.example", "c@example.com").startswith(b"r\0K127.0.0.1 accepted message.")
    assert sink.messages[0].mail_options == ["BODY=8BITMIME"]
