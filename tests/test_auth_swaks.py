"""SMTP AUTH PLAIN, LOGIN and CRAM-MD5 by swaks against qmail-smtpd and the users database."""
import subprocess

import pytest

from conftest import program
from qmailpy.ctl.reader import Controls
from qmailpy.queue.layout import create_queue
from qmailpy.users import admin, open_users
from test_dialogues import free_port, queued_messages
from test_smtpd import connect


@pytest.fixture(scope="module", params=["direct", "usersd"])
def server(tmp_path_factory, request):
    """qmail-smtpd reading the users database itself, and asking qmail-usersd (as in production)."""
    from conftest import Home
    home = Home(tmp_path_factory.mktemp("auth") / "qmail")
    home.control("me", "test.example\n")
    home.control("rcpthosts", "example.org\n")
    home.control("smtpauth", "1\n")
    home.control("smtpauthplaintext", "1\n")   # AUTH in clear (legacy clients)
    create_queue(home.root)
    users = open_users(home.root, Controls(home.root), create=True)
    admin.add_domain(users, "example.org")
    admin.add_user(users, "joe@example.org", "s3cret", clear=True)
    users.close()
    service = None
    if request.param == "usersd":
        from usersd import UsersService
        service = UsersService(home.root, home.env()).start()
    port = free_port()
    proc = subprocess.Popen(["tcpserver", "-q", "-H", "-R", "-l", "localhost", "127.0.0.1", str(port),
                             program("qmail-smtpd")], env=home.env(QMAILQUEUE=program("qmail-queue"),
                                                                    AUTHFAILDELAY="0"))
    connect(port).close()
    yield home, port
    proc.terminate()
    proc.wait()
    if service is not None:
        assert "s3cret" not in service.stop()


def swaks(port, mech, password, to="friend@elsewhere.example"):
    return subprocess.run(["swaks", "--server", "127.0.0.1:%d" % port, "--from", "joe@example.org", "--to", to,
                           "--auth", mech, "--auth-user", "joe@example.org", "--auth-password", password,
                           "--header", "Subject: auth %s" % mech], capture_output=True, timeout=60)


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_auth_then_relay(server, mech):
    home, port = server
    before = len(queued_messages(home))
    r = swaks(port, mech, "s3cret")
    out = r.stdout.decode()
    assert r.returncode == 0, out
    assert "<-  235 ok, go ahead (#2.0.0)" in out
    msgs = queued_messages(home)
    assert len(msgs) == before + 1
    assert any(env == ["Fjoe@example.org", "Tfriend@elsewhere.example"] and b"Subject: auth %s" % mech.encode() in body
               and b" with ESMTPA; " in body for env, body in msgs)


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_wrong_password_is_refused(server, mech):
    home, port = server
    r = swaks(port, mech, "wrong")
    assert r.returncode != 0
    assert "<** 535 authentication failed (#5.7.1)" in r.stdout.decode()
