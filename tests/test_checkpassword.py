"""SMTP AUTH through a checkpassword program that fails: exit 111, a program that
cannot start, one killed by a signal, one that hangs. Each is a temporary failure
(454, the client may retry), never a 235 and never a relay."""
import base64
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT, program
from qmailpy.queue.layout import create_queue
from qmailpy.smtpd import checkpassword as cp
from test_dialogues import TCP_ENV

GOOD = base64.b64encode(b"\0good@example.org\0secret").decode()
TEMPFAIL = "454 temporary authentication failure (#4.3.0)"
NO_RELAY = "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"


@pytest.fixture
def qhome(home):
    home.control("me", "test.example\n")
    home.control("rcpthosts", "example.org\n")
    home.control("smtpauth", "1\n")
    home.control("smtpauthplaintext", "1\n")
    create_queue(home.root)
    return home


def script(tmp_path, name, body):
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def auth_session(home, argv):
    """AUTH PLAIN with the good password, then a relay attempt: (replies, log)."""
    data = ("EHLO c.example\r\nAUTH PLAIN %s\r\nMAIL FROM:<a@example.org>\r\n"
            "RCPT TO:<x@elsewhere.example>\r\nQUIT\r\n" % GOOD).encode()
    r = subprocess.run([program("qmail-smtpd"), *argv], input=data, capture_output=True,
                       env=home.env(**dict(TCP_ENV, AUTHFAILDELAY="0")), timeout=30)
    lines = r.stdout.decode().split("\r\n")[:-1]
    return lines[lines.index("250 SIZE 0") + 1:], r.stderr.decode()


def test_good_password_is_accepted_and_relays(qhome):
    """The reference point for the failures below: the same session with a working program."""
    lines, _ = auth_session(qhome, [sys.executable, os.path.join(ROOT, "tests", "checkpassword.py")])
    assert lines == ["235 ok, go ahead (#2.0.0)", "250 ok", "250 ok", "221 test.example"]


@pytest.mark.parametrize("body", ["cat <&3 >/dev/null\nexit 111\n",     # checkpassword's temporary failure
                                  "cat <&3 >/dev/null\nexit 3\n",       # neither 0 nor 1/2: cannot tell
                                  "kill -9 $$\n"])                      # crashed
def test_program_temporary_failure_is_454_and_no_relay(qhome, tmp_path, body):
    lines, log = auth_session(qhome, [script(tmp_path, "cp", body)])
    assert lines == [TEMPFAIL, "250 ok", NO_RELAY, "221 test.example"]
    assert " auth-tempfail mech=PLAIN user=good@example.org" in log and "secret" not in log


def test_program_that_cannot_start_is_454(qhome, tmp_path):
    """A missing program and one that is not executable: the exec fails in Popen."""
    lines, _ = auth_session(qhome, [str(tmp_path / "missing")])
    assert lines == [TEMPFAIL, "250 ok", NO_RELAY, "221 test.example"]
    noexec = tmp_path / "noexec"
    noexec.write_text("#!/bin/sh\nexit 0\n")
    noexec.chmod(0o644)
    lines, _ = auth_session(qhome, [str(noexec)])
    assert lines == [TEMPFAIL, "250 ok", NO_RELAY, "221 test.example"]


def test_refused_is_535(qhome, tmp_path):
    for code in (1, 2):
        lines, log = auth_session(qhome, [script(tmp_path, "cp", "cat <&3 >/dev/null\nexit %d\n" % code)])
        assert lines == ["535 authentication failed (#5.7.1)", "250 ok", NO_RELAY, "221 test.example"]
        assert " auth-failed mech=PLAIN user=good@example.org" in log


def test_program_that_hangs_is_killed_and_a_temporary_failure(tmp_path, monkeypatch):
    """TIMEOUT seconds, then the program is killed and reaped: None (454), not a wait forever."""
    pidfile = tmp_path / "pid"
    argv = [script(tmp_path, "hang", "echo $$ >%s\nexec sleep 60\n" % pidfile)]
    monkeypatch.setattr(cp, "TIMEOUT", 1)
    started = time.monotonic()
    assert cp.checkpassword(argv, "good@example.org", "secret", None, dict(os.environ)) is None
    assert time.monotonic() - started < 10
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):         # killed and reaped: no zombie left
        os.kill(pid, 0)


def test_program_gone_before_it_reads(tmp_path, monkeypatch):
    """The write to fd 3 fails (EPIPE: the program closed it): no traceback, its exit
    code decides (the test program read nothing, so it refuses)."""
    real_write = os.write

    def broken(fd, data):
        if bytes(data).startswith(b"good@example.org\0"):
            raise BrokenPipeError(32, "Broken pipe")
        return real_write(fd, data)
    monkeypatch.setattr(os, "write", broken)
    argv = [sys.executable, os.path.join(ROOT, "tests", "checkpassword.py")]
    assert cp.checkpassword(argv, "good@example.org", "secret", None, dict(os.environ)) is False
    monkeypatch.setattr(os, "write", real_write)
    assert cp.checkpassword(argv, "good@example.org", "secret", None, dict(os.environ)) is True
