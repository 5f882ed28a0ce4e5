"""DKIM: qmail-remote signs with control/domainkeys/DOMAIN/SELECTOR (keys made by openssl now),
the signature verifies with dkimpy's dkimverify and OpenDKIM's opendkim-testmsg, a tampered
message fails; qmail-queue's dkimverify step writes Authentication-Results with the DKIM
results and qmail-smtpd's SPF result, and removes forged ones of ours."""
import base64
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, program
from dnsserver import dns_server  # noqa: F401  (fixture)
from netns import in_netns
from qmailpy.queue.layout import create_queue
from smtpsink import sinks  # noqa: F401  (fixture)
from test_dialogues import TCP_ENV, queued_messages

MSG = (b"From: Alice <alice@example.com>\nTo: bob@example.org\nSubject: signed\n"
       b"Date: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <1@example.com>\n\nhello\n.leading dot\nbye\n")


class Key:
    def __init__(self, where, name):
        self.path = os.path.join(where, name)
        subprocess.run(["openssl", "genrsa", "-out", self.path, "2048"], check=True, capture_output=True)
        der = subprocess.run(["openssl", "rsa", "-in", self.path, "-pubout", "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self.txt = "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()
        with open(self.path, "rb") as f:
            self.pem = f.read()


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    where = tmp_path_factory.mktemp("dkimkeys")
    return Key(where, "one"), Key(where, "two")


@pytest.fixture
def remote(home, dns_server, sinks, keys):
    """remote(message, sender) -> (report, data the peer got); example.com's key is 'sel'."""
    home.control("me", "test.example\n")
    home.control("domainkeys/example.com/sel", keys[0].pem.decode())
    sink = sinks()
    home.control("smtproutes", ":127.0.0.1:%d\n" % sink.port)
    dns_server.zones = {"sel._domainkey.example.com": {"TXT": [keys[0].txt]},
                        "new._domainkey.example.com": {"TXT": [keys[1].txt]}}

    def go(message=MSG, sender="alice@example.com"):
        p = subprocess.run([program("qmail-remote"), "example.org", sender, "bob@example.org"], input=message,
                           capture_output=True, env=home.env(**dns_server.environ()), timeout=60)
        assert (p.returncode, p.stderr) == (0, b"")
        data = sink.messages[-1].data if sink.messages and p.stdout.startswith(b"r\0K") else None
        return p.stdout, data
    go.home, go.sink = home, sink
    return go


def dkimverify(message, dns_server):
    """dkimpy's own dkimverify program (dkim.dkimverify.main), its resolver pointed at the test DNS."""
    code = ("import sys, dns.resolver\n"
            "r = dns.resolver.Resolver(configure=False)\n"
            "r.nameservers = ['127.0.0.1']; r.port = %d\n"
            "dns.resolver.default_resolver = r\n"
            "from dkim.dkimverify import main\n"
            "sys.argv = ['dkimverify']\n"
            "main()\n") % dns_server.port
    p = subprocess.run([os.path.join(ROOT, ".venv", "bin", "python"), "-c", code], input=message,
                       capture_output=True, timeout=60)
    return p.returncode, (p.stdout + p.stderr).decode().strip()


def test_signed_by_qmail_remote_and_verified_by_dkimpy(remote, dns_server):
    report, data = remote()
    assert report.startswith(b"r\0K127.0.0.1 accepted message.")
    assert data.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com;\r\n"
                           b" i=@example.com; q=dns/txt; s=sel; t=")
    assert b"h=from : to : subject : date : message-id : from;" in data.replace(b"\r\n ", b" ")
    assert data.endswith(b"\r\n\r\nhello\r\n.leading dot\r\nbye\r\n")
    assert dkimverify(data, dns_server) == (0, "signature ok")
    code, said = dkimverify(data.replace(b"hello", b"hellO"), dns_server)
    assert code == 1 and said.endswith("dkim.ValidationError: body hash mismatch (got b'%s', expected b'%s')" % (
        said.split("got b'")[1].split("'")[0], said.split("expected b'")[1].split("'")[0]))
    code, said = dkimverify(data.replace(b"Subject: signed", b"Subject: changed"), dns_server)
    assert (code, said) == (1, "signature verification failed")


def test_opendkim_testmsg_verifies_it_and_refuses_the_tampered_one(remote, keys):
    _, data = remote()
    code = ("import subprocess, sys\n"
            "from dnsserver import DNSServer\n"
            "with DNSServer({'sel._domainkey.example.com': {'TXT': [%r]}}, port=53):\n"
            "    for m in (%r, %r):\n"
            "        p = subprocess.run(['opendkim-testmsg'], input=m, capture_output=True)\n"
            "        print(p.returncode, p.stderr.decode().strip().replace(chr(10), ' '))\n"
            ) % (keys[0].txt, data, data.replace(b"hello", b"hellO"))
    out = in_netns(code, resolv_conf="nameserver 127.0.0.1\n").splitlines()
    assert out[0] == "0 "
    assert out[1] == "70 opendkim-testmsg: dkim_eom(): Bad signature"


def test_domain_without_key_goes_unsigned_and_envelope_domain_is_the_fallback(remote):
    report, data = remote(MSG.replace(b"alice@example.com", b"alice@other.example"), sender="x@other.example")
    assert report.startswith(b"r\0K") and data.startswith(b"From: Alice")
    # a bounce: From: is the bounce host's, the envelope sender is ours
    report, data = remote(MSG.replace(b"alice@example.com", b"MAILER-DAEMON@other.example"), sender="x@example.com")
    assert b"d=example.com;" in data.split(b"\r\n\r\n")[0]


def test_a_partial_final_line_bounces_signed_or_not(remote):
    """A last line without LF (a bare CR is no line end) is qmail-remote's D (#5.6.2): signing must
    not turn the final CR into a line end and send a message that unsigned would bounce."""
    unsigned = MSG.replace(b"alice@example.com", b"alice@other.example")
    for message, sender in ((MSG, "alice@example.com"), (unsigned, "x@other.example")):
        for tail in (b"bare cr\r", b"no line end", b"two\r\r"):
            assert remote(message + tail, sender=sender) == (
                b"r\0DSMTP cannot transfer messages with partial final lines. (#5.6.2)\n\0", None)
    assert remote.sink.messages == []


def test_every_key_of_the_domain_signs_in_name_order(remote, keys, dns_server):
    remote.home.control("domainkeys/example.com/new.private", keys[1].pem.decode())   # opendkim-genkey's name
    remote.home.control("domainkeys/example.com/new.txt", "the DNS record\n")         # not a key
    remote.home.control("domainkeys/example.com/sel.pub", "dknewkey's public key\n")  # not a key
    _, data = remote()
    head = data.split(b"\r\n\r\n")[0].replace(b"\r\n ", b" ")
    assert [line.split(b"s=")[1].split(b";")[0] for line in head.split(b"\r\n") if line.startswith(b"DKIM-")] \
        == [b"new", b"sel"]
    assert dkimverify(data, dns_server) == (0, "signature ok")       # the first, 'new', is checked


def test_dkimsignheaders_chooses_the_fields(remote, dns_server):
    remote.home.control("dkimsignheaders", "Subject\nX-Absent\n")
    _, data = remote()
    assert b"h=from : subject : x-absent;" in data.replace(b"\r\n ", b" ")
    assert dkimverify(data, dns_server) == (0, "signature ok")
    remote.home.control("dkimsignheaders", "Received\n")
    report, _ = remote()
    assert report == (b"ZUnable to read control files: control/dkimsignheaders: The b'received' header field "
                      b"SHOULD NOT be signed (#4.3.0)\n\0")


def test_a_key_that_is_not_a_key_defers(remote):
    remote.home.control("domainkeys/example.com/sel", "hello\n")
    report, _ = remote()
    assert report == (b"ZUnable to read control files: control/domainkeys/example.com/sel: not a private key "
                      b"in PEM form (#4.3.0)\n\0")
    assert remote.sink.messages == []


# -- qmail-queue's verification step, behind the real qmail-smtpd

@pytest.fixture(params=["exec", "service"])
def smtpd(request, home, dns_server, keys, tmp_path):
    """qmail-smtpd handing its messages to qmail-queue exec'd ($QMAILQUEUE), or to qmail-queued
    over its socket (production): the origin frame carries $TCPREMOTEIP and $SPFRESULT there."""
    home.control("me", "test.example\n")
    home.control("rcpthosts", "example.org\n")
    home.control("dkimverify", "1\n")
    create_queue(home.root)
    queue_env = {"QMAILQUEUE": program("qmail-queue")}
    if request.param == "service":
        from queuedsvc import Queued
        service = Queued(home.root, home.env(**dns_server.environ()), log=str(tmp_path / "queued.log")).start()
        request.addfinalizer(service.stop)
        queue_env = {}
    dns_server.zones = {"sel._domainkey.example.com": {"TXT": [keys[0].txt]},
                        "example.com": {"TXT": ["v=spf1 ip4:127.0.0.9 -all"]},
                        "bad.example": {"TXT": ["v=spf1 -all"]}}

    def go(message, sender="alice@example.com", **env):
        data = (b"EHLO client.example\r\nMAIL FROM:<" + sender.encode() + b">\r\nRCPT TO:<bob@example.org>\r\n"
                b"DATA\r\n" + message.replace(b"\n", b"\r\n").replace(b"\r\n.", b"\r\n..") + b".\r\nQUIT\r\n")
        environ = home.env(**dict(TCP_ENV, TCPREMOTEIP="127.0.0.9", **queue_env, **dns_server.environ(), **env))
        if not queue_env:
            environ.pop("QMAILQUEUE", None)
        p = subprocess.run([program("qmail-smtpd")], input=data, capture_output=True, env=environ, timeout=60)
        assert b"\r\n250 ok 1" in p.stdout, p.stdout
        got = queued_messages(home)[-1][1]
        log = p.stderr.decode()
        if not queue_env:
            log += (tmp_path / "queued.log").read_text()
        return got, log
    return go


def signed(keys, message=MSG):
    from qmailpy.dkim.keys import Key as K
    from qmailpy.dkim.sign import signatures
    return signatures(message, [K(b"example.com", b"sel", keys[0].pem, "test")])[0] + message


def header_b(message):
    """header.b of the message's first signature as the field writes it: quoted when it holds a '/'."""
    b = message.split(b" b=")[1][:8].decode()
    return '"%s"' % b if "/" in b else b


def authres(got):
    field = got.split(b"\nReceived: from ")[0]
    assert field.startswith(b"Authentication-Results: ")
    return field.decode()


def test_authentication_results_with_dkim_pass_and_spf(smtpd, keys):
    message = signed(keys)
    b = header_b(message)
    got, log = smtpd(message, SPFBEHAVIOR="1")
    assert authres(got) == ("Authentication-Results: test.example;\n\tdkim=pass header.d=example.com header.s=sel "
                            "header.b=%s;\n\tspf=pass smtp.mailfrom=alice@example.com" % b)
    assert got[len(authres(got)) + 1:].startswith(b"Received: from ")   # then qmail-smtpd's lines, as they were
    # qmail-queue's stderr in-process; qmail-queued's log names the insertion
    assert re.search(r"^qmail-queue(d: qp \d+ uid \d+ pid \d+)?: dkim: dkim=pass header.d=example.com ", log, re.M)


def test_a_signed_message_above_dkimverifymaxsize_is_not_read_whole(smtpd, keys, home):
    """A signed message is read whole (dkimpy hashes it in memory, twice its size and more) by
    qmail-queued, one process for every client: a DKIM-Signature on a message of gigabytes
    (databytes 0 is qmail's default) took the memory of the whole queue service. Above
    dkimverifymaxsize the signatures are not verified: dkim=policy, and only the header block is
    read, as for an unsigned message."""
    home.control("dkimverifymaxsize", "2000\n")
    message = signed(keys, MSG + b"x" * 3000 + b"\n")
    b = header_b(message)
    got, log = smtpd(message)
    assert authres(got) == ('Authentication-Results: test.example;\n\tdkim=policy reason="message larger than '
                            'dkimverifymaxsize" header.d=example.com header.s=sel header.b=%s' % b)
    assert got.endswith(b"x" * 3000 + b"\n")
    assert authres(smtpd(signed(keys))[0]).startswith("Authentication-Results: test.example;\n\tdkim=pass ")


def test_tampered_message_fails_and_the_field_says_so(smtpd, keys):
    message = signed(keys).replace(b"hello", b"hellO")
    got, _ = smtpd(message, sender="x@bad.example", SPFBEHAVIOR="1")
    assert authres(got).startswith('Authentication-Results: test.example;\n\tdkim=fail reason="body hash did not '
                                   'verify" header.d=example.com header.s=sel header.b=')
    assert authres(got).endswith(";\n\tspf=fail smtp.mailfrom=x@bad.example")


def test_a_signed_field_changed_fails_as_a_signature_that_did_not_verify(smtpd, keys):
    """The body hash holds, the signature over the fields does not (a Subject changed on the
    way): dkim=fail with its own reason."""
    got, _ = smtpd(signed(keys).replace(b"Subject: signed", b"Subject: changed"))
    assert authres(got).startswith('Authentication-Results: test.example;\n\tdkim=fail reason="signature did '
                                   'not verify" header.d=example.com header.s=sel header.b=')


def test_unsigned_no_key_and_dns_trouble(smtpd, keys, dns_server):
    got, _ = smtpd(MSG, SPFBEHAVIOR="1")
    assert authres(got) == ("Authentication-Results: test.example;\n\tdkim=none;\n\t"
                            "spf=pass smtp.mailfrom=alice@example.com")
    message = signed(keys)
    del dns_server.zones["sel._domainkey.example.com"]
    got, _ = smtpd(message)
    assert 'dkim=permerror reason="no key for signature" header.d=example.com' in authres(got)
    dns_server.zones["sel._domainkey.example.com"] = "SERVFAIL"
    got, _ = smtpd(message)
    assert 'dkim=temperror reason="key lookup failed: servfail" header.d=example.com' in authres(got)
    dns_server.zones["sel._domainkey.example.com"] = {"TXT": ["v=DKIM1; k=rsa; p="]}      # revoked
    got, _ = smtpd(message)
    assert 'dkim=permerror reason="key unusable: ' in authres(got)


def test_spf_is_taken_only_from_qmail_smtpd(smtpd):
    forged = b"Received-SPF: pass (forged by the client)\n" + MSG
    # SPF off: qmail-smtpd writes no Received-SPF, so the client's one sits where ours would be
    got, _ = smtpd(forged)
    assert authres(got) == "Authentication-Results: test.example;\n\tdkim=none"
    got, _ = smtpd(forged, SPFBEHAVIOR="1", RELAYCLIENT="")
    assert authres(got) == "Authentication-Results: test.example;\n\tdkim=none"
    # SPF on: ours is the one right after our Received line; the client's is below it
    got, _ = smtpd(forged, sender="x@bad.example", SPFBEHAVIOR="1")
    assert authres(got).endswith("\n\tspf=fail smtp.mailfrom=x@bad.example")


def test_spf_of_a_relay_client_qmail_queue_cannot_see_is_never_taken(smtpd, home):
    """A client that may relay by control/relayclients: qmail-smtpd skips SPF and says so to
    qmail-queue ($SPFRESULT unset), so the client's Received-SPF is not read as ours; nor is a
    $SPFRESULT qmail-smtpd inherited (tcprules)."""
    forged = b"Received-SPF: pass (forged by the client)\n" + MSG
    home.control("relayclients", "127.0.0.9:\n")
    got, _ = smtpd(forged, SPFBEHAVIOR="1")
    assert authres(got) == "Authentication-Results: test.example;\n\tdkim=none"
    os.unlink(os.path.join(home.root, "control", "relayclients"))
    got, _ = smtpd(forged, SPFRESULT="pass")
    assert authres(got) == "Authentication-Results: test.example;\n\tdkim=none"


def test_forged_results_of_ours_are_removed_others_kept(smtpd):
    """Ours however spelled: authserv-id is an RFC 2045 value (RFC 8601 2.2), a quoted-string too."""
    message = (b"Authentication-Results: test.example; dkim=pass header.d=paypal.com\n"
               b"Authentication-Results: (comment) TEST.example ; spf=pass\n"
               b'Authentication-Results: "test.example"; dkim=pass header.d=paypal.com\n'
               b'Authentication-Results: (c) "TEST.\\example" (c) 1; spf=pass smtp.mailfrom=paypal.com\n'
               b"Authentication-Results: mx.elsewhere.example; dkim=pass\n" + MSG)
    got, _ = smtpd(message)
    assert got.count(b"Authentication-Results:") == 2
    assert b"Authentication-Results: mx.elsewhere.example; dkim=pass\n" in got
    assert b"paypal" not in got


def test_comments_of_a_huge_field_are_dropped_in_linear_time():
    """A client's Authentication-Results of a million "()" before its authserv-id: dropping the
    comments one at a time copied the rest each time (minutes of qmail-queued's CPU for 2 MB).
    Under a 10 s CPU limit the field is read, found not ours, and kept."""
    code = ("import resource; resource.setrlimit(resource.RLIMIT_CPU, (10, 10))\n"
            "from qmailpy.dkim.verify import without_ours\n"
            "msg = b'Authentication-Results: ' + b'()' * 1000000 + b' mx.elsewhere.example; dkim=pass\\n\\nhi\\n'\n"
            "got = without_ours(msg, 'test.example')\n"
            "mine = without_ours(msg.replace(b'mx.elsewhere', b'TEST'), 'test.example')\n"
            "print(got == msg, mine == b'\\nhi\\n')\n")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert (got.returncode, got.stdout, got.stderr) == (0, "True True\n", "")


def test_a_field_of_a_million_lines_is_parsed_in_linear_time():
    """dkimpy's parser added each continuation line to the field so far (quadratic: over a minute
    for a field of a million " x" lines, for each DKIM-Signature). Under a 10 s CPU limit the
    message is parsed and the signature judged (no key: permerror)."""
    code = ("import resource; resource.setrlimit(resource.RLIMIT_CPU, (10, 10))\n"
            "from qmailpy.dkim.verify import dkim_results\n"
            "from qmailpy.policy.lookup import StaticResolver\n"
            "msg = (b'DKIM-Signature: v=1; a=rsa-sha256; d=x.example; s=s; h=from; bh=YQ==; b=YQ==\\n'\n"
            "       b'From: a@x.example\\nX-Long: a\\n' + b' x\\n' * 1000000 + b'\\nhi\\n')\n"
            "print([(r.result, r.reason) for r in dkim_results(msg, StaticResolver())])\n")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert (got.returncode, got.stdout, got.stderr) == (0, "[('permerror', 'no key for signature')]\n", "")


def test_a_long_run_of_blanks_is_canonicalized_in_linear_time(keys):
    """dkimpy's relaxed body canonicalization (re.sub of [\\t ]+\\r\\n) was quadratic in a run of
    blanks not followed by CRLF: a body line of a million spaces then "x", under a signature
    whose key the sender publishes, would take an hour. Under a 10 s CPU limit the body hash is
    computed and found wrong (the signature's bh= is made up)."""
    code = ("import resource; resource.setrlimit(resource.RLIMIT_CPU, (10, 10))\n"
            "from qmailpy.dkim.verify import dkim_results\n"
            "from qmailpy.policy.lookup import StaticResolver\n"
            "dns = StaticResolver(['s._domainkey.x.example TXT %s'])\n"
            "msg = (b'DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=x.example; s=s; h=from; bh=YQ==; b=YQ==\\n'\n"
            "       b'From: a@x.example\\n\\n' + b' ' * 1000000 + b'x\\n')\n"
            "print([(r.result, r.reason) for r in dkim_results(msg, dns)])\n") % keys[0].txt
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert (got.returncode, got.stdout, got.stderr) == (0, "[('fail', 'body hash did not verify')]\n", "")


def test_many_names_in_h_over_many_fields_take_linear_time(keys):
    """dkimpy searched the whole header from the bottom for each name of h=: 8,000 names no
    field has over 80,000 fields took about a minute, to sign and again to verify. Under a
    10 s CPU limit such a message is signed and its signature verifies."""
    code = ("import resource; resource.setrlimit(resource.RLIMIT_CPU, (10, 10))\n"
            "from qmailpy.dkim.lib import dkimpy\n"
            "from qmailpy.dkim.verify import dkim_results\n"
            "from qmailpy.policy.lookup import StaticResolver\n"
            "dkim = dkimpy()\n"
            "pem = open(%r, 'rb').read()\n"
            "msg = b'From: a@x.example\\n' + b'X-Many: b\\n' * 80000 + b'\\nhi\\n'\n"
            "names = [b'from'] + [b'absent-%%d' %% i for i in range(8000)]\n"
            "sig = dkim.sign(msg, b's', b'x.example', pem, include_headers=names, linesep=b'\\n')\n"
            "dns = StaticResolver(['s._domainkey.x.example TXT %s'])\n"
            "print([r.result for r in dkim_results(sig + msg, dns)])\n") % (keys[0].path, keys[0].txt)
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert (got.returncode, got.stdout, got.stderr) == (0, "['pass']\n", "")


def test_blank_lines_after_b_are_taken_out_in_linear_time(keys):
    """dkimpy's pattern that takes the b= value out of the signature field read a run of white
    space two ways: blank continuation lines after b=, then a ";", took a minute for 30,000
    lines. Under a 10 s CPU limit the field is hashed and the signature (which did not cover
    those lines) fails."""
    code = ("import resource; resource.setrlimit(resource.RLIMIT_CPU, (10, 10))\n"
            "from qmailpy.dkim.lib import dkimpy\n"
            "from qmailpy.dkim.verify import dkim_results\n"
            "from qmailpy.policy.lookup import StaticResolver\n"
            "dkim = dkimpy()\n"
            "pem = open(%r, 'rb').read()\n"
            "msg = b'From: a@x.example\\n\\nhi\\n'\n"
            "sig = dkim.sign(msg, b's', b'x.example', pem, linesep=b'\\n')\n"
            "dns = StaticResolver(['s._domainkey.x.example TXT %s'])\n"
            "bad = sig[:-1] + b'\\n ' * 30000 + b';\\n'\n"
            "print([(r.result, r.reason) for r in dkim_results(sig + msg, dns) + dkim_results(bad + msg, dns)])\n"
            ) % (keys[0].path, keys[0].txt)
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert (got.returncode, got.stdout, got.stderr) == (
        0, "[('pass', ''), ('fail', 'signature did not verify')]\n", "")


def _rsa_record(n, e):
    """A key record of the RSAPublicKey (n, e), DER as dkimpy reads it."""
    def tlv(tag, body):
        size = len(body)
        head = bytes([size]) if size < 128 else bytes([0x80 | ((size.bit_length() + 7) // 8)]) + size.to_bytes(
            (size.bit_length() + 7) // 8, "big")
        return bytes([tag]) + head + body

    def integer(x):
        return tlv(0x02, x.to_bytes(x.bit_length() // 8 + 1, "big"))
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(tlv(0x30, integer(n) + integer(e))).decode()


@pytest.mark.parametrize("bits,e,reason", [
    (16385, 65537, "key unusable: modulus too large"),
    (4096, (1 << 64) + 1, "key unusable: bad e value"),
    (2048, (1 << 2048) + 1, "key unusable: bad e value"),
    (16384, (1 << 63) + 1, "body hash did not verify"),
    (3072, (1 << 3000) + 1, "body hash did not verify"),
], ids=["modulus", "exponent-over-3072", "exponent-over-modulus", "largest-modulus", "large-exponent"])
def test_rsa_keys_past_openssls_bounds_are_not_used(bits, e, reason):
    """dkimpy verifies with Python's pow() whatever the key's size: a sender's key record of a
    16384-bit modulus and exponent cost 10 s of CPU per signature, a longer one hours. Keys past
    OpenSSL's bounds for the RSA public operation are a permerror before any arithmetic."""
    from qmailpy.dkim.verify import dkim_results
    from qmailpy.policy.lookup import StaticResolver
    n = (1 << (bits - 1)) | 1
    dns = StaticResolver(["s._domainkey.x.example TXT " + _rsa_record(n, e)])
    msg = (b"DKIM-Signature: v=1; a=rsa-sha256; d=x.example; s=s; h=from; bh=YQ==; b=YQ==\n"
           b"From: a@x.example\n\nhi\n")
    got = [(r.result, r.reason) for r in dkim_results(msg, dns)]
    assert got == [("fail" if reason.startswith("body") else "permerror", reason)]


def test_not_for_local_injection(home, tmp_path):
    """qmail-queue run by qmail-inject, qmail-local (no $TCPREMOTEIP): nothing to verify against."""
    from qmailpy.proto import qq
    home.control("me", "test.example\n")
    home.control("dkimverify", "1\n")
    create_queue(home.root)
    env = home.env()
    env.pop("TCPREMOTEIP", None)
    (tmp_path / "m").write_bytes(MSG)
    (tmp_path / "e").write_bytes(qq.encode(b"a@example.com", [b"b@example.org"]))
    with open(tmp_path / "m", "rb") as m, open(tmp_path / "e", "rb") as e:
        r = subprocess.run([program("qmail-queue")], stdin=m, stdout=e, stderr=subprocess.PIPE, env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    assert queued_messages(home)[-1][1] == MSG


def test_plain_delivery_imports_neither_ssl_nor_dkimpy(home, tmp_path, sinks):
    """A delivery to a peer without STARTTLS, for a domain without a key, imports no ssl, dkim or
    email; a key directory for another domain adds the From: parsing only."""
    sink = sinks()
    code = ("import sys, os; sys.path.insert(0, %r)\n"
            "from qmailpy.remote.main import run\n"
            "r = os.open(%r, os.O_RDONLY); w = os.open(os.devnull, os.O_WRONLY)\n"
            "run(['qmail-remote', 'example.org', 'a@example.com', 'b@example.org'], r, w, dict(os.environ))\n"
            "print(','.join(sorted({m.split('.')[0] for m in sys.modules} & {'dkim', 'ssl', '_ssl', 'email'})))\n"
            ) % (ROOT, str(tmp_path / "msg"))
    (tmp_path / "msg").write_bytes(MSG)
    home.control("me", "test.example\n")
    home.control("smtproutes", ":127.0.0.1:%d\n" % sink.port)
    p = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, env=home.env(), timeout=60)
    assert (p.returncode, p.stdout.decode().strip()) == (0, ""), p.stderr
    home.control("domainkeys/other.example/sel", "x\n")
    p = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, env=home.env(), timeout=60)
    assert (p.returncode, p.stdout.decode().strip()) == (0, "email"), p.stderr
    assert len(sink.messages) == 2 and not sink.messages[1].data.startswith(b"DKIM-Signature")


def test_queue_without_dkimverify_imports_no_dkim(home, tmp_path):
    """qmail-queue for mail from qmail-smtpd, dkimverify 0 (the default): no qmailpy.dkim, no dkimpy."""
    from qmailpy.proto import qq
    home.control("me", "test.example\n")
    create_queue(home.root)
    (tmp_path / "m").write_bytes(MSG)
    (tmp_path / "e").write_bytes(qq.encode(b"a@example.com", [b"b@example.org"]))
    code = ("import sys, os; sys.path.insert(0, %r)\n"
            "from qmailpy.ctl.reader import Controls\n"
            "from qmailpy.queue.main import run\n"
            "env = dict(os.environ, TCPREMOTEIP='127.0.0.9')\n"
            "rc = run(os.open(%r, os.O_RDONLY), os.open(%r, os.O_RDONLY), env, Controls(%r, env))\n"
            "print(rc, ','.join(sorted(m for m in sys.modules if m.split('.')[0] == 'dkim' or "
            "m.startswith('qmailpy.dkim') or m == 'qmailpy.filters.dkimstep')))\n"
            ) % (ROOT, str(tmp_path / "m"), str(tmp_path / "e"), home.root)
    p = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, env=home.env(), timeout=60)
    assert p.stdout.decode().strip() == "0", p.stderr


def test_an_idn_domain_signs_as_its_idna_2008_a_labels(tmp_path):
    """d= is the key domain's A-labels by IDNA 2008, as DNS holds it and qmail-remote looks it
    up: Python's idna codec (IDNA 2003) made faß.example fass.example, another domain."""
    from qmailpy.ctl.reader import ControlError
    from qmailpy.dkim.keys import domain_keys
    home = str(tmp_path)
    for domain in ("bücher.example", "faß.example", "bü-.example"):
        os.makedirs(os.path.join(home, "control", "domainkeys", domain))
        with open(os.path.join(home, "control", "domainkeys", domain, "sel"), "wb") as f:
            f.write(b"-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n")
    assert [(k.domain, k.selector) for k in domain_keys(home, "Bücher.example")] == [(b"xn--bcher-kva.example", b"sel")]
    assert [k.domain for k in domain_keys(home, "faß.example")] == [b"xn--fa-hia.example"]
    with pytest.raises(ControlError, match="not a valid internationalized name"):
        domain_keys(home, "bü-.example")


def test_a_header_dkimpy_cannot_parse_is_permerror_and_the_mail_is_taken(smtpd, keys):
    """A signed message whose header block has a line dkimpy's parser refuses (no colon, a
    field name with a space before the colon) is taken with dkim=permerror: the step never
    refuses mail (it was qmail-queue's internal bug, 451 to the client, for as long as it
    retried)."""
    message = signed(keys)
    b = header_b(message)
    for line in (b"bad header line\n", b"Subject : spaced\n"):
        at = message.index(b"From: ")
        got, log = smtpd(message[:at] + line + message[at:])
        assert authres(got) == ('Authentication-Results: test.example;\n\tdkim=permerror reason="signature '
                                "unusable: Unexpected characters in RFC822 header: b'%s'\" header.d=example.com "
                                "header.s=sel header.b=%s" % (line.decode().strip(), b))
        assert got.endswith(message[at:])


def test_a_from_domain_that_names_no_directory_has_no_key(remote, dns_server):
    """A From: domain too long for a file name (ENAMETOOLONG) or holding a NUL has no key: the
    envelope sender's domain signs, as for any From: domain without keys. The first deferred the
    message ('Unable to read control files') at every attempt, the second crashed qmail-remote."""
    for domain in (b"a" * 300 + b".example", b"exa\0mple.com"):
        report, data = remote(MSG.replace(b"alice@example.com", b"alice@" + domain))
        assert report.startswith(b"r\0K127.0.0.1 accepted message.")
        assert data.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com;\r\n")
        assert dkimverify(data, dns_server) == (0, "signature ok")


def test_a_message_starting_with_a_continuation_line_goes_unsigned(remote):
    """A first line starting with white space (a message put into the queue by a program of its
    own; qmail-inject makes it body) continues no field: dkimpy's parser raised IndexError there
    and qmail-remote died (111). It is a header dkimpy cannot parse: sent unsigned, as qmail would."""
    report, data = remote(b" x\n" + MSG)
    assert report.startswith(b"r\0K127.0.0.1 accepted message.")
    assert data == (b" x\n" + MSG).replace(b"\n", b"\r\n")


def test_a_key_directory_that_cannot_be_listed_defers(remote):
    """control/domainkeys there but not listable (here a symlink loop; in production a mode
    qmailr cannot read) defers, as an unlistable control/domainkeys/DOMAIN does: the mail
    never leaves unsigned because of the keys' trouble. It went out unsigned, silently."""
    where = os.path.join(remote.home.root, "control", "domainkeys")
    os.rename(where, where + ".real")
    os.symlink("domainkeys", where)
    report, _ = remote()
    assert report == (b"ZUnable to read control files: control/domainkeys: unable to list: Too many levels of "
                      b"symbolic links (#4.3.0)\n\0")
    assert remote.sink.messages == []


def test_a_key_that_cannot_be_read_defers_and_a_directory_is_no_key(remote):
    """A name under control/domainkeys/DOMAIN/ that is a directory is no key (the others
    sign); a key file that cannot be read (a dangling link here) defers: the mail never leaves
    unsigned because of its keys' trouble."""
    base = os.path.join(remote.home.root, "control", "domainkeys", "example.com")
    os.mkdir(os.path.join(base, "old"))
    report, data = remote()
    assert report.startswith(b"r\0K127.0.0.1 accepted message.") and data.startswith(b"DKIM-Signature: ")
    assert data.count(b"DKIM-Signature: ") == 1 and b" s=sel;" in data
    os.symlink("nowhere", os.path.join(base, "new"))
    report, _ = remote()
    assert report == (b"ZUnable to read control files: control/domainkeys/example.com/new: unable to read: "
                      b"No such file or directory (#4.3.0)\n\0")
    assert len(remote.sink.messages) == 1


def test_a_header_b_with_a_slash_is_quoted(smtpd, keys):
    """RFC 8601 pvalue: a token (RFC 2045: no tspecials, '/' and '?' among them) or an address;
    a b= prefix holding '/' (one signature in eight) is a quoted-string, as OpenDKIM writes it."""
    message = signed(keys)
    b = message.split(b" b=")[1][:8]
    got, _ = smtpd(message.replace(b" b=" + b, b" b=ab/cd+EF", 1))
    assert authres(got) == ('Authentication-Results: test.example;\n\tdkim=fail reason="signature did not verify" '
                            'header.d=example.com header.s=sel header.b="ab/cd+EF"')


def test_a_message_without_from_is_signed_with_from_absent(remote, dns_server):
    """No From: field (a script's mail over SMTP; RFC 5322 wants one, qmail sends it anyway): the
    envelope sender's key signs it with From in h= as an absent field (RFC 6376 5.4: From MUST
    be signed; 5.4.2: a field not there may be), so none can be added. dkimpy refused the
    default list without From, and the message was deferred at every attempt ('Unable to read
    control files: ... The From header field MUST be signed') until it bounced."""
    report, data = remote(MSG.replace(b"From: Alice <alice@example.com>\n", b""))
    assert report.startswith(b"r\0K127.0.0.1 accepted message.")
    assert b"h=to : subject : date : message-id : from;" in data.replace(b"\r\n ", b" ")
    assert dkimverify(data, dns_server) == (0, "signature ok")
    assert dkimverify(data.replace(b"\r\n\r\n", b"\r\nFrom: boss@example.com\r\n\r\n", 1), dns_server) == (
        1, "signature verification failed")
    report, data = remote(b"")                                  # nothing at all: sent as it is
    assert report.startswith(b"r\0K127.0.0.1 accepted message.") and data == b""


def test_an_ed25519_signature_verifies(smtpd, dns_server):
    """RFC 8463: an Ed25519-SHA256 signature (dkimpy's, with PyNaCl, a dependency for this) is
    dkim=pass; without PyNaCl it was 'key unusable: pynacl module required'."""
    import dkim
    import nacl.signing
    key = nacl.signing.SigningKey.generate()
    dns_server.zones["ed._domainkey.example.com"] = {
        "TXT": ["v=DKIM1; k=ed25519; p=" + base64.b64encode(bytes(key.verify_key)).decode()]}
    message = dkim.sign(MSG, b"ed", b"example.com", base64.b64encode(bytes(key)),
                        signature_algorithm=b"ed25519-sha256", linesep=b"\n") + MSG
    got, _ = smtpd(message)
    assert authres(got) == ("Authentication-Results: test.example;\n\tdkim=pass header.d=example.com header.s=ed "
                            "header.b=%s" % header_b(message))


SIGNED_IN_A_CHILD = r"""
import os, sys
from qmailpy.spawn import rspawn
spawner = rspawn.Remote(os.environ["QMAILHOME"], os.environ)
spawner.preload()
spawner.ready_for(b"example.org")           # as qmail-rspawn does before forking the delivery's child
before = set(sys.modules)
from qmailpy.remote.main import run
r, w = os.pipe()
code = run(["qmail-remote", "example.org", "alice@example.com", "bob@example.org"], 0, w, os.environ)
os.close(w)
print(code, os.read(r, 4096)[:3], "|", " ".join(sorted(set(sys.modules) - before)))
"""


def test_qmail_rspawn_loads_dkimpy_before_a_signing_child(remote):
    """With keys in control/domainkeys/, qmail-rspawn imports dkimpy before forking (36 ms of
    CPU in each signing child otherwise): a signed delivery's child imports nothing; without
    keys it is never loaded (it brings threading and logging, whose at-fork handlers every
    later child would run)."""
    env = remote.home.env(PYTHONPATH=str(ROOT))
    r = subprocess.run([os.path.join(ROOT, ".venv", "bin", "python3"), "-c", SIGNED_IN_A_CHILD], input=MSG,
                       capture_output=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    out, _, imported = r.stdout.decode().partition("|")
    assert out.startswith("0 b'r\\x00K'") and imported.split() == [], r.stdout
    assert b"DKIM-Signature:" in remote.sink.messages[-1].data
    probe = ("import os, sys\nfrom qmailpy.spawn import rspawn\ns = rspawn.Remote(os.environ['QMAILHOME'], os.environ)\n"
             "s.ready_for(b'example.org')\nprint('dkim' in sys.modules)\n")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env).stdout == "True\n"
    import shutil
    shutil.rmtree(os.path.join(remote.home.root, "control", "domainkeys"))
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env).stdout == "False\n"


def test_a_dkimpy_qmail_rspawn_cannot_load_is_left_to_the_child(remote, capfd):
    """dkimpy that cannot be imported in qmail-rspawn (its files unreadable, an upgrade under
    way) is a warning there, never qmail-rspawn's end with every delivery it runs: the child
    meets it again and reports it."""
    from qmailpy.spawn import rspawn
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k == "dkim" or k.startswith("dkim.")}
    sys.modules["dkim"] = None                  # "import dkim" raises ImportError
    try:
        spawner = rspawn.Remote(remote.home.root, remote.home.env())
        spawner.dns_loaded = True               # only the DKIM part is the question
        spawner.ready_for(b"example.org")
    finally:
        del sys.modules["dkim"]
        sys.modules.pop("dkim.dnsplug", None)
        sys.modules.update(saved)
    assert spawner.dkim_loaded
    assert "warning: cannot preload qmailpy.dkim.lib:dkimpy: ModuleNotFoundError: " in capfd.readouterr().err
