"""The registry's `readers` (the "read by" column of docs/controls*.md and each program's table)
name every program that reads a control: each test runs one program's code in-process over
a home that has the controls it reads, records every control it asks the reader for, and
checks that the registry lists the program for each of them."""
import base64
import os

import pytest

from qmailpy.ctl import registry as R
from qmailpy.ctl.reader import Controls
from qmailpy.fileio import write_cdb
from qmailpy.queue.layout import create_queue


@pytest.fixture
def asked(monkeypatch):
    """The names of the controls read through any Controls while the test runs."""
    names = set()
    setting = Controls.setting

    def recording(self, name):
        names.add(R.BY_NAME[name].name)
        return setting(self, name)
    monkeypatch.setattr(Controls, "setting", recording)
    return names


@pytest.fixture
def qhome(home):
    """me, locals, rcpthosts with a virtual domain, SRS keys: what the SRS and users paths read."""
    home.control("me", "mx.example\n")
    home.control("locals", "mx.example\n")
    home.control("rcpthosts", "mx.example\nvirt.example\n")
    home.control("virtualdomains", "virt.example:virt.example\n")
    home.control("srs/srs_secrets", "k1\n")
    home.control("srs/revers_srs_secrets", "k1\n")
    create_queue(home.root)
    return home


def not_listed(names, program):
    return sorted(n for n in names if program not in R.BY_NAME[n].readers)


def test_qmail_smtpd(qhome, asked):
    """qmail-smtpd asks srs_domain whether an SRS0= recipient is ours, and (without the users
    service) opens the users database itself: usersdb and vpopmaildir."""
    from qmailpy.smtpd.main import serve
    from test_dialogues import TCP_ENV
    for name in ("smtpauth", "smtpauthplaintext", "userchk"):
        qhome.control(name, "1\n")
    plain = base64.b64encode(b"\0joe@virt.example\0pw").decode()
    data = ("EHLO c.example\r\nAUTH PLAIN %s\r\nMAIL FROM:<a@example.com>\r\n"
            "RCPT TO:<SRS0=abcd=ZZ=example.com=a@mx.example>\r\nRCPT TO:<joe@virt.example>\r\nQUIT\r\n"
            % plain).encode()
    rd, wr = os.pipe()
    os.write(wr, data)
    os.close(wr)
    out_r, out_w = os.pipe()
    try:
        serve(rd, out_w, dict(TCP_ENV, QMAILHOME=qhome.root, AUTHFAILDELAY="0"))
    finally:
        os.close(rd)
        os.close(out_w)
    with os.fdopen(out_r, "rb") as f:
        assert f.read().endswith(b"221 mx.example\r\n")
    assert {"srs/srs_domain", "usersdb", "vpopmaildir"} <= asked
    assert not_listed(asked, "qmail-smtpd") == []


def test_qmail_queue_filter_keys(qhome, asked):
    """The filter keys of a virtual-domain recipient come from the users database."""
    from qmailpy.filters.select import select
    write_cdb(os.path.join(qhome.root, "control", "spamdclients.cdb"), [(b"@other.example", b"")])
    assert select(Controls(qhome.root, {}), [b"joe@virt.example"], log=lambda text: None) == ([], [], {
        b"joe@virt.example": b"joe@virt.example"})
    assert {"usersdb", "vpopmaildir"} <= asked
    assert not_listed(asked, "qmail-queue") == []


def test_qmail_send(qhome, asked):
    """qmail-send reverses SRS recipients of bounces (revers_srs_secrets) and signs the sender of a
    remote delivery that is not ours, which it tells by rcpthosts and morercpthosts.cdb."""
    from qmailpy.send.config import SendConfig
    cfg = SendConfig(Controls(qhome.root, {}))
    assert cfg.srs_forward(b"a@foreign.example").startswith(b"SRS0=")
    assert {"srs/revers_srs_secrets", "rcpthosts", "morercpthosts.cdb"} <= asked
    assert not_listed(asked, "qmail-send") == []


def test_qmail_lspawn(qhome, asked):
    """qmail-lspawn finds a virtual-domain recipient's mailbox in the users database."""
    from qmailpy.spawn.mailbox import Resolver
    resolver = Resolver(qhome.root, Controls(qhome.root, {}), True)
    try:
        resolver.resolve(b"virt.example-joe", b"virt.example")
    finally:
        resolver.close()
    assert {"usersdb", "vpopmaildir"} <= asked
    assert not_listed(asked, "qmail-lspawn") == []


def test_setsrssecret(qhome, asked, monkeypatch):
    from click.testing import CliRunner
    from qmailpy.cli.setsrssecret import cli
    monkeypatch.setenv("QMAILHOME", qhome.root)
    assert CliRunner().invoke(cli, ["--show"]).exit_code == 0
    assert asked == {"srs/srs_max_age"}
    assert not_listed(asked, "setsrssecret") == []


def test_qmail_users_clearopensmtp(qhome, asked, monkeypatch):
    from click.testing import CliRunner
    from qmailpy.cli.users import cli
    monkeypatch.setenv("QMAILHOME", qhome.root)
    got = CliRunner().invoke(cli, ["clearopensmtp"])
    assert got.exit_code == 0, got.output
    assert {"popbeforesmtptimeout", "usersdb", "vpopmaildir"} <= asked
    assert not_listed(asked, "qmail-users") == []
