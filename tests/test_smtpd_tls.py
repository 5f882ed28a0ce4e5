"""STARTTLS and SMTPS in qmail-smtpd under tcpserver (issue 16): swaks --tls / --tlsc,
openssl s_client -starttls smtp, the CVE-2011-0411 bytes, the replies, Received, AUTH over TLS.
Certificates are made at run time (tests/tlspeer.py), never committed."""
import os
import socket
import ssl
import subprocess
import time

import pytest

from conftest import Home, program
from qmailpy.ctl.reader import Controls
from qmailpy.queue.layout import create_queue
from qmailpy.users import admin, open_users
from test_dialogues import free_port, queued_messages, read_lines as read_lines_rest
from test_smtpd import connect
from tlspeer import tls_certs  # noqa: F401  (fixture)

EHLO_TLS = ["250-test.example", "250-PIPELINING", "250-8BITMIME", "250-STARTTLS", "250 SIZE 0"]


class Smtpd:
    """qmail-smtpd under real tcpserver on a scratch home, with the environment given."""

    def __init__(self, home, tcpserver_args=(), server="tcpserver", **env):
        self.home, self.port = home, free_port()
        self.log = os.path.join(home.root, "smtpd-%d.log" % self.port)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [server, "-q", "-H", "-R", "-l", "localhost", *tcpserver_args, "127.0.0.1", str(self.port),
                 program("qmail-smtpd")],
                env=home.env(QMAILQUEUE=program("qmail-queue"), AUTHFAILDELAY="0", **env), stderr=log)
        connect(self.port).close()

    def logged(self):
        with open(self.log) as f:
            return f.read()

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        return self.logged()


def read_lines(sock, count):
    return read_lines_rest(sock, count)[0]


def make_home(root, certs, cert=True, auth=True):
    home = Home(root)
    home.control("me", "test.example\n")
    home.control("rcpthosts", "example.org\n")
    if cert:
        pem, key = certs.server("localhost")
        with open(pem) as a, open(key) as b:
            home.control("servercert.pem", a.read() + b.read())
    if auth:
        home.control("smtpauth", "1\n")
        create_queue(home.root)
        users = open_users(home.root, Controls(home.root), create=True)
        admin.add_domain(users, "example.org")
        admin.add_user(users, "joe@example.org", "s3cret", clear=True)
        users.close()
    else:
        create_queue(home.root)
    return home


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, tls_certs):  # noqa: F811
    home = make_home(tmp_path_factory.mktemp("smtpdtls") / "qmail", tls_certs)
    server = Smtpd(home)
    yield home, server.port
    server.stop()


@pytest.fixture(scope="module")
def smtps_server(tls_server):
    home, _ = tls_server
    server = Smtpd(home, SMTPS="1")
    yield home, server.port
    server.stop()


def client_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


def starttls(port):
    """A client socket after EHLO and STARTTLS: (tls socket, what the server said in clear)."""
    s = connect(port)
    said = read_lines(s, 1)
    s.sendall(b"EHLO client.example\r\n")
    said += read_lines(s, 6)
    s.sendall(b"STARTTLS\r\n")
    said += read_lines(s, 1)
    return client_context().wrap_socket(s, server_hostname="localhost"), said


def test_ehlo_offers_starttls_and_no_auth_in_clear(tls_server):
    home, port = tls_server
    s = connect(port)
    read_lines(s, 1)
    s.sendall(b"EHLO client.example\r\n")
    assert read_lines(s, 5) == EHLO_TLS
    s.sendall(b"AUTH PLAIN AGpvZUBleGFtcGxlLm9yZwBzM2NyZXQ=\r\n")
    assert read_lines(s, 1) == ["538 Encryption required for requested authentication mechanism (#5.7.11)"]
    s.close()


def test_starttls_replies(tls_server):
    home, port = tls_server
    s = connect(port)
    read_lines(s, 1)
    s.sendall(b"STARTTLS now\r\n")
    assert read_lines(s, 1) == ["501 Syntax error (no parameters allowed) (#5.5.4)"]
    s.sendall(b"STARTTLS\r\n")
    assert read_lines(s, 1) == ["220 ready for tls"]
    t = client_context().wrap_socket(s, server_hostname="localhost")
    t.sendall(b"STARTTLS\r\n")
    assert read_lines(t, 1) == ["503 TLS already active (#5.5.1)"]
    t.sendall(b"EHLO client.example\r\n")
    assert read_lines(t, 5) == ["250-test.example", "250-PIPELINING", "250-8BITMIME",
                                "250-AUTH LOGIN PLAIN CRAM-MD5", "250 SIZE 0"]
    t.sendall(b"QUIT\r\n")
    assert read_lines(t, 1) == ["221 test.example"]
    t.close()


def assert_pipelined_dropped(port):
    """CVE-2011-0411: "STARTTLS\\r\\nRSET\\r\\n" in one write; RSET is answered neither in clear
    nor inside TLS (the first reply inside TLS is the NOOP's)."""
    s = connect(port)
    read_lines(s, 1)
    s.sendall(b"EHLO client.example\r\n")
    read_lines(s, 5)
    s.sendall(b"STARTTLS\r\nRSET\r\n")
    s.settimeout(10)
    clear = b""
    while not clear.endswith(b"\r\n"):
        clear += s.recv(1)          # byte by byte: nothing of the TLS handshake is read here
    assert clear == b"220 ready for tls\r\n"
    t = client_context().wrap_socket(s, server_hostname="localhost")
    t.sendall(b"NOOP\r\n")
    assert read_lines(t, 1) == ["250 ok"]
    t.close()


def test_pipelined_after_starttls_is_discarded(tls_server):
    home, port = tls_server
    assert_pipelined_dropped(port)


def test_tls_session_forgets_helo_and_transaction(tls_server):
    home, port = tls_server
    s = connect(port)
    read_lines(s, 1)
    s.sendall(b"EHLO client.example\r\nMAIL FROM:<a@example.com>\r\n")
    assert read_lines(s, 6)[-1] == "250 ok"
    s.sendall(b"STARTTLS\r\n")
    read_lines(s, 1)
    t = client_context().wrap_socket(s, server_hostname="localhost")
    t.sendall(b"RCPT TO:<joe@example.org>\r\n")
    assert read_lines(t, 1) == ["503 MAIL first (#5.5.1)"]
    t.sendall(b"AUTH PLAIN AGpvZUBleGFtcGxlLm9yZwBzM2NyZXQ=\r\n")       # RFC 3207: EHLO again first
    assert read_lines(t, 1) == ["503 EHLO first (#5.5.1)"]
    t.close()


def swaks(port, *args):
    return subprocess.run(["swaks", "--server", "127.0.0.1:%d" % port, "--from", "a@example.com",
                           "--to", "joe@example.org", *args], capture_output=True, timeout=60)


def received_of_last(home):
    env, body = queued_messages(home)[-1]
    return env, body.split(b"\n", 2)


def test_swaks_tls_delivers_with_esmtps(tls_server):
    home, port = tls_server
    r = swaks(port, "--tls", "--header", "Subject: over starttls")
    assert r.returncode == 0, r.stdout.decode()
    assert "<-  220 ready for tls" in r.stdout.decode()
    env, (first, second, rest) = received_of_last(home)
    assert env == ["Fa@example.com", "Tjoe@example.org"]
    assert first.startswith(b"Received: from unknown (HELO ")
    assert second.startswith(b"  by localhost with ESMTPS (TLS_") and b" encrypted); " in second
    assert b"Subject: over starttls" in rest


def test_swaks_tls_auth_relays_with_esmtpsa(tls_server):
    home, port = tls_server
    r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % port, "--from", "joe@example.org",
                        "--to", "friend@elsewhere.example", "--tls", "--auth", "PLAIN", "--auth-user",
                        "joe@example.org", "--auth-password", "s3cret"], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stdout.decode()
    env, (first, second, rest) = received_of_last(home)
    assert env == ["Fjoe@example.org", "Tfriend@elsewhere.example"]
    assert second.startswith(b"  by localhost with ESMTPSA (TLS_") and b" encrypted, authenticated); " in second


def test_swaks_auth_without_tls_is_refused(tls_server):
    home, port = tls_server
    r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % port, "--from", "joe@example.org",
                        "--to", "friend@elsewhere.example", "--auth", "PLAIN", "--auth-user",
                        "joe@example.org", "--auth-password", "s3cret"], capture_output=True, timeout=60)
    assert r.returncode != 0
    # swaks does not see AUTH in the EHLO reply, and says so
    assert "Host did not advertise authentication" in r.stdout.decode() + r.stderr.decode()


def test_openssl_s_client_starttls(tls_server):
    home, port = tls_server
    proc = subprocess.Popen(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-starttls", "smtp",
                             "-quiet"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        proc.stdin.write(b"EHLO c.example\r\nQUIT\r\n")     # kept open: s_client quits at its end
        proc.stdin.flush()
        out = [proc.stdout.readline() for _ in range(6)]
    finally:
        proc.kill()
        proc.wait()
    assert out == [b"250-test.example\r\n", b"250-PIPELINING\r\n", b"250-8BITMIME\r\n",
                   b"250-AUTH LOGIN PLAIN CRAM-MD5\r\n", b"250 SIZE 0\r\n", b"221 test.example\r\n"]


def test_swaks_tlsc_smtps(smtps_server):
    home, port = smtps_server
    r = swaks(port, "--tlsc", "--header", "Subject: over smtps")
    assert r.returncode == 0, r.stdout.decode()
    env, (first, second, rest) = received_of_last(home)
    assert second.startswith(b"  by localhost with ESMTPS (TLS_")
    assert b"Subject: over smtps" in rest


def test_smtps_plain_client_gets_nothing(smtps_server):
    """SMTPS speaks TLS from the first byte: a cleartext client gets no greeting."""
    home, port = smtps_server
    s = connect(port)
    s.sendall(b"EHLO x\r\n")
    s.settimeout(10)
    got = b""
    while True:
        data = s.recv(4096)
        if not data:
            break
        got += data
    assert b"220" not in got and b"250" not in got


def test_no_certificate_no_starttls(tmp_path, tls_certs):  # noqa: F811
    home = make_home(tmp_path / "qmail", tls_certs, cert=False, auth=False)
    server = Smtpd(home)
    try:
        s = connect(server.port)
        read_lines(s, 1)
        s.sendall(b"EHLO client.example\r\nSTARTTLS\r\n")
        assert read_lines(s, 5) == ["250-test.example", "250-PIPELINING", "250-8BITMIME", "250 SIZE 0",
                                    "454 TLS not available: missing certificate (#4.3.0)"]
        s.close()
    finally:
        server.stop()


def test_unusable_certificate_is_not_offered_and_is_a_finding(tmp_path, tls_certs):  # noqa: F811
    home = make_home(tmp_path / "qmail", tls_certs, cert=False, auth=False)
    home.control("servercert.pem", "not a certificate\n")
    server = Smtpd(home)
    try:
        s = connect(server.port)
        read_lines(s, 1)
        s.sendall(b"EHLO client.example\r\n")
        assert "250-STARTTLS" not in read_lines(s, 4)
        s.close()
    finally:
        server.stop()
    r = home.run("qmail-showctl", "--check")
    assert ("control/servercert.pem: no certificate and private key in PEM: qmail-smtpd offers no STARTTLS"
            in r.stdout.decode() + r.stderr.decode())


def test_certificate_with_wrong_key_is_a_finding(tmp_path, tls_certs):  # noqa: F811
    home = make_home(tmp_path / "qmail", tls_certs, cert=False, auth=False)
    pem, _ = tls_certs.server("localhost")
    _, other_key = tls_certs.selfsigned
    with open(pem) as a, open(other_key) as b:
        home.control("servercert.pem", a.read() + b.read())
    r = home.run("qmail-showctl", "--check")
    out = r.stdout.decode() + r.stderr.decode()
    assert "control/servercert.pem: unusable: KEY_VALUES_MISMATCH: qmail-smtpd offers no STARTTLS" in out, out


def test_starttls_with_a_certificate_that_does_not_load_is_454_and_the_session_goes_on(tmp_path, tls_certs):  # noqa: F811
    """servercert.pem looks usable (a certificate and a key) but its key is another's: the TLS
    patch makes its context before '220 ready for tls' and, when it cannot, says 454 and goes on
    in clear; a 220 followed by a closed connection would leave the client nothing to do."""
    home = make_home(tmp_path / "qmail", tls_certs, cert=False, auth=False)
    pem, _ = tls_certs.server("localhost")
    _, other_key = tls_certs.selfsigned
    with open(pem) as a, open(other_key) as b:
        home.control("servercert.pem", a.read() + b.read())
    server = Smtpd(home)
    try:
        s = connect(server.port)
        read_lines(s, 1)
        s.sendall(b"EHLO client.example\r\n")
        assert read_lines(s, 5) == EHLO_TLS
        s.sendall(b"STARTTLS\r\n")
        assert read_lines(s, 1) == ["454 TLS unable to initialize ctx (#4.3.0)"]
        s.sendall(b"NOOP\r\nQUIT\r\n")
        assert read_lines(s, 2) == ["250 ok", "221 test.example"]
        s.close()
    finally:
        log = server.stop()
    assert " tls-unavailable reason=" in log and "KEY_VALUES_MISMATCH" in log, log
    assert "Traceback" not in log


def test_client_gone_during_the_handshake_is_logged_not_a_crash(tmp_path, tls_certs):  # noqa: F811
    import struct
    home = make_home(tmp_path / "qmail", tls_certs, auth=False)
    server = Smtpd(home, SMTPS="1")
    try:
        for garbage in (b"EHLO x\r\n", b"\x16\x03\x01"):      # not TLS; a ClientHello cut short
            s = connect(server.port)
            s.sendall(garbage)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()                                           # RST
        deadline = time.time() + 10
        while server.logged().count("tls-failed") < 3 and time.time() < deadline:
            time.sleep(0.05)
    finally:
        log = server.stop()
    # three: Smtpd's own probe (connect, close), the cleartext EHLO, the reset
    assert log.count(" tls-failed reason=") == 3, log
    assert ' tls-failed reason="handshake: WRONG_VERSION_NUMBER"' in log
    assert "Traceback" not in log


def test_client_certificate_signed_by_clientca_is_logged_verified(tmp_path, tls_certs):  # noqa: F811
    home = make_home(tmp_path / "qmail", tls_certs, auth=False)
    with open(tls_certs.ca) as f:
        home.control("clientca.pem", f.read())
    server = Smtpd(home)
    try:
        for cert in (tls_certs.server("client.example"), None):
            s = connect(server.port)
            read_lines(s, 1)
            s.sendall(b"STARTTLS\r\n")
            assert read_lines(s, 1) == ["220 ready for tls"]
            ctx = client_context()
            if cert is not None:
                ctx.load_cert_chain(*cert)
            t = ctx.wrap_socket(s, server_hostname="localhost")
            t.sendall(b"QUIT\r\n")
            assert read_lines(t, 1) == ["221 test.example"]
            t.close()
    finally:
        log = server.stop()
    assert log.count(" verified=yes") == 1 and log.count(" verified=no") == 1, log


def test_unusable_dh_parameters_are_a_finding(tmp_path, tls_certs):  # noqa: F811
    home = make_home(tmp_path / "qmail", tls_certs, auth=False)
    home.control("dh2048.pem", "-----BEGIN DH PARAMETERS-----\nnonsense\n-----END DH PARAMETERS-----\n")
    r = home.run("qmail-showctl", "--check")
    out = r.stdout.decode() + r.stderr.decode()
    assert "control/dh2048.pem: unusable: " in out, out


@pytest.mark.parametrize("name,text,finding", [
    ("tlsserverciphers", "NOSUCHCIPHER\n",
     "control/tlsserverciphers: ('No cipher can be selected.',): qmail-smtpd answers STARTTLS with 454"),
    ("clientca.pem", "not a certificate\n", "control/clientca.pem: "),
])
def test_tls_controls_smtpd_refuses_are_findings(tmp_path, tls_certs, name, text, finding):  # noqa: F811
    """qmail-smtpd offers STARTTLS and cannot make its context: 454 before any 220, as the TLS
    patch's tls_init(), the session goes on in clear, a log line names the file.
    qmail-showctl --check said nothing about it."""
    home = make_home(tmp_path / "qmail", tls_certs, auth=False)
    home.control(name, text)
    server = Smtpd(home)
    try:
        s = connect(server.port)
        read_lines(s, 1)
        s.sendall(b"STARTTLS\r\nRSET\r\n")         # RSET pipelined after STARTTLS: dropped all the same
        assert read_lines(s, 1) == ["454 TLS unable to initialize ctx (#4.3.0)"]
        s.sendall(b"NOOP\r\n")
        assert read_lines(s, 1) == ["250 ok"]
        s.close()
    finally:
        log = server.stop()
    assert ' tls-unavailable reason="control/%s: ' % name in log, log
    r = home.run("qmail-showctl", "--check")
    assert r.returncode == 1
    assert [line for line in r.stdout.decode().splitlines() if line.startswith(finding)], r.stdout


def test_tls_controls_remote_refuses_are_findings(tmp_path, tls_certs):  # noqa: F811
    """qmail-remote defers with 'Unable to read control files' naming these (remote.tls.client_context);
    qmail-showctl --check said nothing about them."""
    home = make_home(tmp_path / "qmail", tls_certs, cert=False, auth=False)
    home.control("rcpthosts", "example.org\n")
    home.control("tlsclientciphers", "NOSUCHCIPHER\n")
    home.control("clientcert.pem", "not a certificate\n")
    home.control("tlsdestinations", "example.net\nexample.com:/nonexistent/ca.pem\n")
    out = home.run("qmail-showctl", "--check").stdout.decode().splitlines()
    assert "control/tlsclientciphers: unusable: ('No cipher can be selected.',)" in out, out
    assert [x for x in out if x.startswith("control/tlsdestinations: unusable: /nonexistent/ca.pem: ")], out
    home.control("tlsclientciphers", "HIGH\n")
    out = home.run("qmail-showctl", "--check").stdout.decode().splitlines()
    assert [x for x in out if x.startswith("control/clientcert.pem: unusable: ")], out
    assert not [x for x in out if x.startswith("control/tlsclientciphers")], out


def test_under_qmail_tcpserver_starttls_smtps_and_the_cve_bytes(tmp_path, tls_certs):  # noqa: F811
    """The same program under qmail-tcpserver (forked, not exec'd): STARTTLS, SMTPS=1, and the
    pipelined RSET after STARTTLS dropped."""
    home = make_home(tmp_path / "qmail", tls_certs, auth=False)
    plain, smtps = Smtpd(home, server=program("qmail-tcpserver")), Smtpd(home, server=program("qmail-tcpserver"),
                                                                        SMTPS="1")
    try:
        for port, flag in ((plain.port, "--tls"), (smtps.port, "--tlsc")):
            r = swaks(port, flag, "--header", "Subject: qmail-tcpserver " + flag)
            assert r.returncode == 0, r.stdout.decode()
            env, (first, second, rest) = received_of_last(home)
            assert second.startswith(b"  by localhost with ESMTPS (TLS_")
        assert_pipelined_dropped(plain.port)
    finally:
        plain.stop()
        smtps.stop()


def refused_handshake(port, **client):
    """The ssl.SSLError a client gets when qmail-smtpd refuses its handshake after STARTTLS.
    client: 'ciphers' (TLS 1.2 only then) or 'version' (that version only, any cipher)."""
    ctx = client_context()
    if "ciphers" in client:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(client["ciphers"])
    else:
        ctx.set_ciphers("DEFAULT@SECLEVEL=0")
        ctx.minimum_version = ctx.maximum_version = client["version"]
    s = connect(port)
    read_lines(s, 1)
    s.sendall(b"STARTTLS\r\n")
    assert read_lines(s, 1) == ["220 ready for tls"]
    with pytest.raises(ssl.SSLError) as e:
        ctx.wrap_socket(s, server_hostname="localhost")
    s.close()
    return e.value


def test_a_refused_handshake_is_told_to_the_client_with_a_tls_alert(tls_server):
    """As any OpenSSL server (the TLS patch's SSL_accept): the alert goes out before the close,
    so the client learns why; it used to see only the connection's end (unexpected EOF)."""
    home, port = tls_server
    e = refused_handshake(port, ciphers="DHE-RSA-AES128-GCM-SHA256")     # no dh2048.pem: no DHE
    assert e.reason == "SSLV3_ALERT_HANDSHAKE_FAILURE", e


def test_protocol_versions_tls12_and_tls13_only(tls_server):
    """TLS 1.2 and 1.3; TLS 1.1 and 1.0 are refused with an alert (qmail-smtpd sets no versions:
    OpenSSL's defaults and the system's openssl.cnf decide, as for the TLS patch; Debian's
    security level 2 leaves a TLS 1.0/1.1 handshake no signature algorithm: internal_error)."""
    home, port = tls_server
    for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        ctx = client_context()
        ctx.minimum_version = ctx.maximum_version = version
        s = connect(port)
        read_lines(s, 1)
        s.sendall(b"STARTTLS\r\n")
        read_lines(s, 1)
        t = ctx.wrap_socket(s, server_hostname="localhost")
        assert t.version() == name
        t.sendall(b"QUIT\r\n")
        assert read_lines(t, 1) == ["221 test.example"]
        t.close()
    for version in (ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1):
        reason = refused_handshake(port, version=version).reason
        assert reason.startswith(("TLSV1_ALERT_", "SSLV3_ALERT_")), reason


def test_servercert_chain_is_sent_whole_to_openssl_s_client(tmp_path, tls_certs):  # noqa: F811
    """servercert.pem = the server's certificate, an intermediate CA's, the key: s_client gets
    both certificates and verifies the chain up to a root it alone trusts."""
    from tlspeer import openssl
    d = str(tmp_path)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "root.key", "-out", "root.pem",
            "-days", "2", "-subj", "/CN=test root", cwd=d)
    (tmp_path / "ca.ext").write_text("basicConstraints=critical,CA:TRUE\nkeyUsage=keyCertSign,cRLSign\n")
    (tmp_path / "leaf.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, signer, ext in (("int", "root", "ca.ext"), ("leaf", "int", "leaf.ext")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out", name + ".csr",
                "-subj", "/CN=" + {"int": "test intermediate", "leaf": "localhost"}[name], cwd=d)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", signer + ".pem", "-CAkey", signer + ".key",
                "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile", ext, cwd=d)
    home = make_home(tmp_path / "qmail", tls_certs, auth=False)
    home.control("servercert.pem", "".join((tmp_path / f).read_text() for f in ("leaf.pem", "int.pem", "leaf.key")))
    server = Smtpd(home)
    try:
        r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % server.port, "-starttls", "smtp",
                            "-CAfile", os.path.join(d, "root.pem"), "-verify_return_error", "-showcerts"],
                           input=b"QUIT\r\n", capture_output=True, timeout=60)
    finally:
        server.stop()
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert "Certificate chain\n 0 s:CN = localhost\n   i:CN = test intermediate\n" in out, out
    assert "\n 1 s:CN = test intermediate\n   i:CN = test root\n" in out, out
    assert "Verify return code: 0 (ok)" in out


@pytest.mark.parametrize("protocol", ["ESMTPSA", "SSMTPA"])     # STARTTLS; TLS on connect (SMTPS)
@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_swaks_every_mechanism_over_tls_pipelined(tls_server, smtps_server, protocol, mech):
    home, port = tls_server if protocol == "ESMTPSA" else smtps_server
    r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % port, "--protocol", protocol, "--pipeline",
                        "--auth", mech, "--auth-user", "joe@example.org", "--auth-password", "s3cret",
                        "--from", "joe@example.org", "--to", "friend@elsewhere.example",
                        "--header", "Subject: %s %s" % (protocol, mech)], capture_output=True, timeout=60)
    out = r.stdout.decode()
    assert r.returncode == 0, out
    assert " ~> AUTH %s" % mech in out and "<~  235 ok, go ahead (#2.0.0)" in out, out
    # --pipeline: MAIL, RCPT and DATA in one write, then their three replies
    assert (" ~> MAIL FROM:<joe@example.org>\n ~> RCPT TO:<friend@elsewhere.example>\n ~> DATA\n"
            "<~  250 ok\n<~  250 ok\n<~  354 go ahead\n") in out, out
    env, (first, second, rest) = received_of_last(home)
    assert env == ["Fjoe@example.org", "Tfriend@elsewhere.example"]
    assert first.startswith(b"Received: from unknown (HELO ") and first.endswith(b") (joe@example.org@127.0.0.1)")
    assert second.startswith(b"  by localhost with ESMTPSA (TLS_") and b" encrypted, authenticated); " in second
    assert b"Subject: %s %s" % (protocol.encode(), mech.encode()) in rest
