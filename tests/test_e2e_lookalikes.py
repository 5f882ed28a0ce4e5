"""Look-alike mailboxes on MariaDB with its default collation (issue 22): `jóe`, `joe `, `joe\\ `
and `JOE` against mailbox joe, through the real chain (tcpserver + bin/qmail-smtpd + qmail-queue +
clamd, bin/qmail-send + qmail-lspawn + qmail-local).

The users database is a scratch MariaDB database whose tables were made by vpopmail's DDL with the
server's defaults (utf8mb4_general_ci: there 'jóe' = 'joe ' = 'JOE' = 'joe'). What must hold:
RCPT (chkuser), delivery, AUTH and the clamd filter agree that the look-alikes are nobody, and that
JOE is joe (A-Z fold, as vpopmail and qmail fold them), with joe's virus check.
"""
import base64
import os
import socket
import subprocess

import pytest

from mysql_fixture import MysqlDatabase, mysql_admin, usersdb_line
from qmailpy.users import schema
from test_e2e_support import BIN, DOMAIN, World
from test_filters import INFECTED, clamd  # noqa: F401 (fixture)

D = DOMAIN.encode()
# what the client writes in RCPT / AUTH, and the local part qmail-smtpd takes from it
LOOKALIKES = {"jóe": (b"<j\xc3\xb3e@" + D + b">", "jóe"),
              "joe ": (b'<"joe "@' + D + b">", "joe "),
              "joe\\ ": (b'<"joe\\\\ "@' + D + b">", "joe\\ ")}
NORCPT = "550 sorry, no mailbox here by that name (#5.1.1 - chkusr)"
CLEAN = b"Subject: hello %s\r\n\r\nhello\r\n"


@pytest.fixture
def mworld():
    conn = mysql_admin()
    assert conn is not None, "no MariaDB at 127.0.0.1:3306 (the users database of this test)"
    db = MysqlDatabase(conn)
    try:
        for stmt in schema.create_statements():            # vpopmail's DDL: the server's collation
            db.execute(stmt)
        [(collation,)] = db.execute(
            "SELECT collation_name FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = 'vpopmail' AND column_name = 'pw_name'", (db.name,))
        assert collation.endswith("_ci"), collation
        w = World(controls={"usersdb": usersdb_line(db.name)})
        try:
            w.dns_env = {"AUTHFAILDELAY": "0"}              # World.env() hands it to qmail-smtpd
            w.adduser("joe", password="joe pass")
            w.adduser("alice")
            # the server itself folds the look-alikes into joe's row
            assert [r[0] for r in db.execute("SELECT pw_name FROM vpopmail WHERE pw_name = %s AND "
                                             "pw_name = %s AND pw_name = %s", ("jóe", "joe ", "JOE"))] == ["joe"]
            yield w
        finally:
            w.cleanup()
    finally:
        db.drop()


class Client:
    """A plain SMTP client: cmd() sends one line and returns the reply's lines."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""
        assert self.reply()[0].startswith("220 ")

    def reply(self):
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                got = self.sock.recv(4096)
                assert got, "connection closed after %r" % lines
                self.buf += got
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode("utf-8", "replace"))
            if line[3:4] != b"-":
                return lines

    def cmd(self, line):
        self.sock.sendall(line + b"\r\n")
        return self.reply()[-1]

    def send(self, rcpt, body, sender=b"<alice@" + D + b">"):
        """MAIL, RCPT, DATA: the RCPT reply, or the reply to the end of DATA."""
        assert self.cmd(b"MAIL FROM:" + sender) == "250 ok"
        got = self.cmd(b"RCPT TO:" + rcpt)
        if not got.startswith("250"):
            self.cmd(b"RSET")
            return got
        assert self.cmd(b"DATA").startswith("354")
        return self.cmd(body + b".")

    def close(self):
        self.cmd(b"QUIT")
        self.sock.close()


def auth_plain(port, login, password):
    c = Client(port)
    assert c.cmd(b"EHLO client.example").startswith("250 ")
    token = base64.b64encode(b"\0" + login.encode() + b"\0" + password.encode())
    got = c.cmd(b"AUTH PLAIN " + token)
    c.close()
    return got


def test_lookalike_mailboxes_on_mariadb(mworld, clamd):  # noqa: F811
    w = mworld
    w.control("smtpauth", "1")
    w.control("smtpauthplaintext", "1\n")   # AUTH in clear (legacy clients)
    w.control("userchk", "1")
    w.control("clamdsocket", clamd.sock)
    w.control("clamavclients", "joe@" + DOMAIN)
    r = subprocess.run([str(BIN / "qmail-newfilters"), "clamavclients"], env=w.env(), capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    port = w.smtpd()

    # RCPT: chkuser refuses the look-alikes, accepts JOE (it is joe)
    c = Client(port)
    assert c.cmd(b"HELO client.example").startswith("250 ")
    for name, (rcpt, _) in LOOKALIKES.items():
        assert c.send(rcpt, CLEAN % name.encode()) == NORCPT, name
    # the clamd filter: JOE is joe, with joe's virus check
    assert c.send(b"<JOE@" + D + b">", INFECTED.replace(b"\n", b"\r\n")) == \
        "554 mail server permanently rejected message (#5.3.0)"
    c.close()

    # AUTH: joe's password does not log a look-alike in; JOE@ is joe
    for name in LOOKALIKES:
        assert auth_plain(port, name + "@" + DOMAIN, "joe pass").startswith("535 "), name
    assert auth_plain(port, "JOE@" + DOMAIN.upper(), "joe pass").startswith("235 ")

    # delivery: with userchk off the look-alikes are accepted, and bounce; JOE reaches joe
    w.control("userchk", "0")
    send = w.send()
    c = Client(port)
    assert c.cmd(b"HELO client.example").startswith("250 ")
    for name, (rcpt, _) in LOOKALIKES.items():
        assert c.send(rcpt, CLEAN % name.encode()).startswith("250 ok "), name
        # not joe's mailbox, so not joe's virus check either: accepted, and bounced below
        assert c.send(rcpt, INFECTED.replace(b"\n", b"\r\n")).startswith("250 ok "), name
    assert c.send(b"<JOE@" + D + b">", CLEAN % b"JOE").startswith("250 ok ")
    c.close()
    send.wait_for(lambda: len(w.delivered("alice")) == 2 * len(LOOKALIKES) and w.delivered("joe"),
                  timeout=60, what="the deliveries and bounces")
    [got] = w.delivered("joe").values()
    assert b"Subject: hello JOE\n" in got
    bounces = list(w.delivered("alice").values())
    for name, (_, local) in LOOKALIKES.items():
        told = [b for b in bounces if b"\n<%s@%s>:\nSorry, no mailbox here by that name. (#5.1.1)\n"
                % (local.encode(), D) in b]
        assert len(told) == 2, (name, bounces)
    assert send.stop() == 0
    assert len(w.delivered("joe")) == 1                   # nothing else reached joe: no EICAR
