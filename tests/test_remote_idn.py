"""qmail-remote and internationalized domain names (RFC 5890/5891, RFC 6531 3.2).

A recipient domain such as bücher.example is looked up in DNS as its A-label
(xn--bcher-kva.example, IDNA 2008 with UTS #46 mapping, so case does not matter
and ß stays ß); smtproutes and tlsdestinations keys may be written in either form.
In the SMTP conversation the address goes out as given to a peer that offers
SMTPUTF8; to one that does not, a non-ASCII domain goes as its A-label and a
non-ASCII local part (which cannot be converted) bounces (#5.6.7). A name that is
not a valid IDN is a permanent failure before any lookup. The reports show the
name as given, safe-quoted as qmail does. An all-ASCII delivery imports nothing new.
"""
import subprocess
import sys

import pytest

from conftest import ROOT, program
from dnsserver import dns_server  # noqa: F401  (fixture)
from smtpsink import loopback_address, need_root, scripted, smtp_script  # noqa: F401  (fixtures)

MSG = b"Subject: test\n\nhello\n"
PLAIN = b"250-sink.test\r\n250 8BITMIME\r\n"
UTF8 = b"250-sink.test\r\n250-SMTPUTF8\r\n250 8BITMIME\r\n"
ALABEL = "xn--bcher-kva.example"


# -- qmail-remote through DNS (MX on port 25: root) and through smtproutes
@pytest.fixture
def remote(home, dns_server):
    home.control("me", "test.example\n")

    def go(host, sender, recip):
        p = subprocess.run([program("qmail-remote"), host.encode(), sender.encode(), recip.encode()],
                           input=MSG, capture_output=True, env=home.env(**dns_server.environ()), timeout=60)
        assert (p.returncode, p.stderr) == (0, b"")
        return p.stdout
    go.home = home
    return go


def mx_peer(dns_server, scripted, ehlo):
    need_root()
    ip = loopback_address()
    peer = scripted(smtp_script(ehlo=ehlo), ip, 25)
    dns_server.zones = {ALABEL: {"MX": [(10, "mx." + ALABEL)]}, "mx." + ALABEL: {"A": [ip]}}
    return ip, peer


def accepted(ip):
    return b"r\0K" + ip.encode() + b" accepted message.\nRemote host said: 250 ok\n\0"


def test_idn_without_smtputf8_goes_as_alabels(remote, dns_server, scripted):
    ip, peer = mx_peer(dns_server, scripted, PLAIN)
    assert remote("bücher.example", "a@bücher.example", "user@bücher.example") == accepted(ip)
    raw = bytes(peer.peers[0].raw)
    assert b"MAIL FROM:<a@xn--bcher-kva.example>\r\nRCPT TO:<user@xn--bcher-kva.example>\r\nDATA\r\n" in raw
    assert raw.isascii()
    assert [(n, t) for n, t, _ in dns_server.queries] == [(ALABEL, "MX"), ("mx." + ALABEL, "A"),
                                                          ("mx." + ALABEL, "AAAA")]


def test_idn_with_smtputf8_goes_as_given(remote, dns_server, scripted):
    ip, peer = mx_peer(dns_server, scripted, UTF8)
    assert remote("Bücher.example", "a@b.example", "user@Bücher.example") == accepted(ip)
    raw = bytes(peer.peers[0].raw)
    assert "MAIL FROM:<a@b.example> SMTPUTF8\r\nRCPT TO:<user@Bücher.example>\r\n".encode() in raw
    assert dns_server.queries[0][:2] == (ALABEL, "MX")           # mixed case: the same A-label


def test_non_ascii_local_part_without_smtputf8_bounces(remote, dns_server, scripted):
    ip, peer = mx_peer(dns_server, scripted, PLAIN)
    assert remote("bücher.example", "a@b.example", "jürgen@bücher.example") == (
        b"DConnected to " + ip.encode() + b" but it does not support SMTPUTF8, which a non-ASCII address needs."
        b" (#5.6.7)\n\0")
    assert b"MAIL" not in bytes(peer.peers[0].raw)


def test_nxdomain_report_names_the_host_as_given_and_its_alabel(remote, dns_server):
    dns_server.zones = {}
    assert remote("bücher.example", "a@b.example", "user@bücher.example") == (
        b"DSorry, I couldn't find any host named b??cher.example (xn--bcher-kva.example). (#5.1.2)\n\0")
    assert dns_server.queries[0][:2] == (ALABEL, "MX")


def test_an_invalid_idn_bounces_before_any_lookup(remote, dns_server):
    assert remote("bü-.example", "a@b.example", "user@bü-.example") == (
        b"DSorry, the host name b??-.example is not a valid internationalized domain name (RFC 5891)."
        b" (#5.1.3)\n\0")
    assert dns_server.queries == []


@pytest.mark.parametrize("key", ["bücher.example", ALABEL, "BÜCHER.example", ".example"])
def test_smtproutes_keys_in_either_form(remote, dns_server, scripted, key):
    peer = scripted(smtp_script(ehlo=PLAIN))
    remote.home.control("smtproutes", "%s:127.0.0.1:%d\n" % (key, peer.port))
    assert remote("bücher.example", "a@b.example", "user@bücher.example") == accepted("127.0.0.1")
    assert b"RCPT TO:<user@xn--bcher-kva.example>\r\n" in bytes(peer.peers[0].raw)
    assert dns_server.queries == []


def test_smtproutes_suffix_key_and_idn_relay(remote, dns_server, scripted):
    peer = scripted(smtp_script(ehlo=PLAIN))
    dns_server.zones = {"relay.xn--bcher-kva.example": {"A": ["127.0.0.1"]}}
    remote.home.control("smtproutes", ".bücher.example:relay.bücher.example:%d\n" % peer.port)
    assert remote("mail.bücher.example", "a@b.example", "user@mail.bücher.example") == accepted("127.0.0.1")
    assert [(n, t) for n, t, _ in dns_server.queries] == [("relay.xn--bcher-kva.example", "A"),
                                                          ("relay.xn--bcher-kva.example", "AAAA")]


def test_an_invalid_idn_relay_bounces(remote, dns_server):
    remote.home.control("smtproutes", "bücher.example:rü-.example:2525\n")
    assert remote("bücher.example", "a@b.example", "user@bücher.example") == (
        b"DSorry, the host name r??-.example is not a valid internationalized domain name (RFC 5891)."
        b" (#5.1.3)\n\0")
    assert dns_server.queries == []


@pytest.mark.parametrize("key", ["bücher.example", ALABEL])
def test_tlsdestinations_keys_in_either_form(remote, dns_server, scripted, key):
    peer = scripted(smtp_script(ehlo=PLAIN))
    remote.home.control("smtproutes", ":127.0.0.1:%d\n" % peer.port)
    remote.home.control("tlsdestinations", "-%s\n" % key)
    assert remote("bücher.example", "a@b.example", "user@bücher.example") == (
        b"ZConnected to 127.0.0.1 but it does not offer STARTTLS, which control/tlsdestinations requires"
        b" for b??cher.example. (#4.7.10)\n\0")


ASCII_RUN = r"""
import os, sys
from qmailpy.remote.main import run
r, w = os.pipe()
os.write(w, b"Subject: x\n\nhi\n"); os.close(w)
out_r, out_w = os.pipe()
code = run(["qmail-remote", "example.com", "a@b.example", "c@example.com"], r, out_w, os.environ)
os.close(out_w)
print(code, os.read(out_r, 4096), sorted(m for m in ("idna", "qmailpy.dns.idn") if m in sys.modules))
"""


def test_an_ascii_delivery_imports_no_idna(home, dns_server, scripted):
    peer = scripted(smtp_script(ehlo=UTF8))
    home.control("me", "test.example\n")
    home.control("smtproutes", ":127.0.0.1:%d\n" % peer.port)
    home.control("tlsdestinations", "!example.org\n")
    r = subprocess.run([sys.executable, "-c", ASCII_RUN], capture_output=True, timeout=60,
                       env=home.env(PYTHONPATH=str(ROOT), **dns_server.environ()))
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == b"0 b'r\\x00K127.0.0.1 accepted message.\\nRemote host said: 250 ok\\n\\x00' []\n"
    assert b"MAIL FROM:<a@b.example>\r\n" in bytes(peer.peers[0].raw)
