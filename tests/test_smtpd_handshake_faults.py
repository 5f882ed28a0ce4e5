"""qmail-smtpd (the real program) on one end of a socketpair, for what a client can do to the
TLS handshake and to the session's clocks: no certificate for SMTPS, a silent client, a
session that runs out of time during the handshake or while the server works, a client gone
before the alert, a close_notify, DH parameters. Each ends as qmail's TLS patch ends it
(nothing more said, exit 1, one log line) or with the reply qmail gives, never a traceback."""
import os
import socket
import ssl
import subprocess
import sys
import time

import pytest

from conftest import ROOT, program
from test_dialogues import TCP_ENV
from test_smtpd_tls import client_context, make_home
from tlspeer import tls_certs  # noqa: F401  (fixture)


class Running:
    """qmail-smtpd with fd 0 and 1 on a socketpair; `sock` is the client's end."""

    def __init__(self, home, argv=(), **env):
        self.sock, theirs = socket.socketpair()
        self.proc = subprocess.Popen([program("qmail-smtpd"), *argv], stdin=theirs, stdout=theirs,
                                     stderr=subprocess.PIPE, env=home.env(**dict(TCP_ENV, **env)))
        theirs.close()
        self.sock.settimeout(20)

    def lines(self, count):
        got = b""
        while got.count(b"\r\n") < count:
            data = self.sock.recv(4096)
            assert data, got
            got += data
        return got.decode().split("\r\n")[:-1]

    def end(self):
        """(exit code, log) once the program is over."""
        rc = self.proc.wait(20)
        log = self.proc.stderr.read().decode()
        self.sock.close()
        assert "Traceback" not in log and " error " not in log, log
        return rc, log


@pytest.fixture
def home(tmp_path, tls_certs):  # noqa: F811
    return make_home(tmp_path / "qmail", tls_certs, auth=False)


def test_smtps_without_a_certificate_says_nothing_and_logs_why(tmp_path, tls_certs):  # noqa: F811
    """SMTPS has no cleartext to answer 454 in: the connection ends, as a failed handshake."""
    home = make_home(tmp_path / "qmail", tls_certs, cert=False, auth=False)
    smtpd = Running(home, SMTPS="1")
    assert smtpd.sock.recv(100) == b""
    rc, log = smtpd.end()
    assert rc == 1 and ' tls-failed reason="control/servercert.pem: missing"' in log, log


def test_smtps_client_silent_during_the_handshake(home):
    home.control("timeoutsmtpd", "1\n")
    smtpd = Running(home, SMTPS="1")
    started = time.monotonic()
    assert smtpd.sock.recv(100) == b""
    rc, log = smtpd.end()
    assert rc == 1 and ' tls-failed reason="handshake: the client was silent for timeoutsmtpd"' in log, log
    assert 0.9 < time.monotonic() - started < 10


def test_session_time_limit_reached_during_the_handshake(home):
    home.control("timeoutsmtpd", "30\n")
    home.control("timeoutsession", "1\n")
    smtpd = Running(home, SMTPS="1")
    smtpd.sock.sendall(b"\x16\x03\x01")             # a ClientHello that never ends
    started = time.monotonic()
    assert smtpd.sock.recv(100) == b""
    rc, log = smtpd.end()
    assert rc == 1 and ' tls-failed reason="handshake: cut off (deadline)"' in log, log
    assert time.monotonic() - started < 10


def test_client_gone_before_the_handshake_alert(home):
    """A ClientHello of length 0 (OpenSSL answers with a decode_error alert), and the client has
    closed: the alert cannot be written (EPIPE); the handshake's own error is what is logged."""
    smtpd = Running(home, SMTPS="1")
    smtpd.sock.sendall(b"\x16\x03\x01\x00\x04\x01\x00\x00\x00")
    smtpd.sock.shutdown(socket.SHUT_RDWR)
    rc, log = smtpd.end()
    assert rc == 1 and ' tls-failed reason="handshake: LENGTH_TOO_SHORT"' in log, log


def test_close_notify_ends_the_session_as_the_end_of_input(home):
    """The client's close_notify: the end of its input (no error logged), as a closed connection."""
    smtpd = Running(home)
    assert smtpd.lines(1) == ["220 test.example ESMTP"]
    smtpd.sock.sendall(b"STARTTLS\r\n")
    assert smtpd.lines(1) == ["220 ready for tls"]
    tls = client_context().wrap_socket(smtpd.sock, server_hostname="localhost")
    tls.sendall(b"NOOP\r\n")
    assert tls.recv(100) == b"250 ok\r\n"
    tls.unwrap()                                    # close_notify, the socket left open
    rc, log = smtpd.end()
    assert rc == 1 and " tls version=" in log, log


def test_dh_parameters_are_loaded_at_starttls(home, tmp_path):
    """control/dh2048.pem is part of the context STARTTLS makes: good ones give a handshake
    (with a DHE cipher over TLS 1.2), bad ones the TLS patch's 454 and the session goes on."""
    subprocess.run(["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "dh_param:ffdhe2048",
                    "-out", str(tmp_path / "dh.pem")], check=True, capture_output=True, timeout=60)
    home.control("dh2048.pem", (tmp_path / "dh.pem").read_text())
    smtpd = Running(home)
    assert smtpd.lines(1) == ["220 test.example ESMTP"]
    smtpd.sock.sendall(b"STARTTLS\r\n")
    assert smtpd.lines(1) == ["220 ready for tls"]
    ctx = client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("DHE-RSA-AES256-GCM-SHA384")
    tls = ctx.wrap_socket(smtpd.sock, server_hostname="localhost")
    assert tls.cipher()[0] == "DHE-RSA-AES256-GCM-SHA384"
    tls.sendall(b"QUIT\r\n")
    assert tls.recv(100) == b"221 test.example\r\n"
    assert smtpd.end()[0] == 0

    home.control("dh2048.pem", "-----BEGIN DH PARAMETERS-----\nnonsense\n-----END DH PARAMETERS-----\n")
    smtpd = Running(home)
    assert smtpd.lines(1) == ["220 test.example ESMTP"]
    smtpd.sock.sendall(b"STARTTLS\r\n")
    assert smtpd.lines(1) == ["454 TLS unable to initialize ctx (#4.3.0)"]
    smtpd.sock.sendall(b"QUIT\r\n")
    assert smtpd.lines(1) == ["221 test.example"]
    rc, log = smtpd.end()
    assert rc == 0 and ' tls-unavailable reason="control/dh2048.pem: ' in log, log


def test_a_silent_client_is_timed_out_by_timeoutsmtpd_under_a_far_session_limit(home):
    home.control("timeoutsmtpd", "1\n")
    home.control("timeoutsession", "3600\n")
    smtpd = Running(home)
    assert smtpd.lines(2) == ["220 test.example ESMTP", "451 timeout (#4.4.2)"]
    assert smtpd.end()[0] == 1


def test_session_time_limit_spent_while_the_server_works(home, tmp_path):
    """The limit passes while a checkpassword program runs: the next read is not waited for,
    the session ends with qmail's 421 at once."""
    home.control("timeoutsession", "1\n")
    home.control("smtpauth", "1\n")
    home.control("smtpauthplaintext", "1\n")
    slow = tmp_path / "slowcheck"
    slow.write_text("#!/bin/sh\nsleep 2\nexec %s %s\n" % (sys.executable, os.path.join(ROOT, "tests", "checkpassword.py")))
    slow.chmod(0o755)
    smtpd = Running(home, [str(slow)], AUTHFAILDELAY="0")
    smtpd.sock.sendall(b"EHLO c\r\nAUTH PLAIN AGdvb2RAZXhhbXBsZS5vcmcAc2VjcmV0\r\n")
    lines = smtpd.lines(9)
    assert lines[-2:] == ["235 ok, go ahead (#2.0.0)",
                          "421 session time limit exceeded, closing connection (#4.4.2)"]
    rc, log = smtpd.end()
    assert rc == 1 and " cutoff reason=deadline " in log, log


def test_option_findings_are_logged_at_connect(home):
    home.control("options", "bogus: 1\n")
    smtpd = Running(home)
    smtpd.sock.sendall(b"QUIT\r\n")
    assert smtpd.lines(2) == ["220 test.example ESMTP", "221 test.example"]
    rc, log = smtpd.end()
    assert rc == 0 and " warning finding=\"control/options:1: unknown parameter 'bogus'\"" in log, log
