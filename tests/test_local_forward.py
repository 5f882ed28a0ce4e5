"""qmail-local forwards: one qmail-queue call, captured through $QMAILQUEUE."""
import os

import pytest

from qmailpy.proto.qq import decode
from test_local_support import Box

MSG = b"Subject: fwd\n\nbody\n"
DT = b"Delivered-To: joe@example.com\n"

SCRIPT = """#!/bin/sh
cat > "$CAPTURE/msg"
cat <&1 > "$CAPTURE/env"
pwd > "$CAPTURE/cwd"
echo $$ > "$CAPTURE/pid"
exit ${QQ_EXIT:-0}
"""


@pytest.fixture
def box(tmp_path):
    b = Box(tmp_path)
    b.capture = str(tmp_path / "capture")
    os.makedirs(b.capture)
    os.makedirs(b.env["QMAILHOME"])
    qq = str(tmp_path / "fake-qq")
    with open(qq, "w") as f:
        f.write(SCRIPT)
    os.chmod(qq, 0o755)
    b.env.update(QMAILQUEUE=qq, CAPTURE=b.capture)
    return b


def captured(box):
    out = {}
    for name in ("msg", "env", "cwd", "pid"):
        with open(os.path.join(box.capture, name), "rb") as f:
            out[name] = f.read()
    return out


def test_forwards_in_one_queue_call(box):
    box.dotqmail(".qmail", "&a@x.org\n./Maildir/\nb@y.org\n# c@z\n&c@z.org  \n")
    code, report = box.deliver(MSG, sender="bob@ex.org")
    got = captured(box)
    assert code == 0
    assert report == "did 1+3+0\nqp %d\n" % int(got["pid"])
    assert got["msg"] == DT + MSG                                   # Delivered-To only, no Return-Path
    assert decode(got["env"]) == (b"bob@ex.org", [b"a@x.org", b"b@y.org", b"c@z.org"])
    assert got["cwd"].strip() == os.path.realpath(box.env["QMAILHOME"]).encode()
    assert len(box.files()) == 1                                    # the file line ran first


def test_forward_uses_newsender(box):
    box.dotqmail(".qmail-list", "&a@x.org\n")
    box.dotqmail(".qmail-list-owner", "&owner@x.org\n")
    code, _ = box.deliver(MSG, local="joe-list", dash="-", ext="list")
    assert code == 0
    assert decode(captured(box)["env"])[0] == b"joe-list-owner@example.com"


def test_forward_after_99(box):
    box.dotqmail(".qmail", "a@x.org\n|exit 99\nb@y.org\n")
    assert box.deliver(MSG, sender="")[0] == 0
    assert decode(captured(box)["env"]) == (b"", [b"a@x.org"])


@pytest.mark.parametrize("status, code, text", [
    (31, 100, "Unable to forward message: mail server permanently rejected message (#5.3.0).\n"),
    (11, 100, "Unable to forward message: envelope address too long for qq (#5.1.3).\n"),
    (53, 111, "Unable to forward message: qq write error or disk full (#4.3.0).\n"),
    (91, 111, "Unable to forward message: qq internal bug (#4.3.0).\n"),
    (25, 100, "Unable to forward message: qq permanent problem (#5.3.0).\n"),
    (99, 111, "Unable to forward message: qq temporary problem (#4.3.0).\n"),
])
def test_queue_failures(box, status, code, text):
    box.dotqmail(".qmail", "&a@x.org\n")
    assert box.deliver(MSG, env={"QQ_EXIT": str(status)}) == (code, text)


def test_queue_missing(box):
    box.dotqmail(".qmail", "&a@x.org\n")
    assert box.deliver(MSG, env={"QMAILQUEUE": "/nonexistent/qq"}) == (
        111, "Unable to forward message: unable to exec qq (#4.3.0).\n")


def test_qmail_home_missing(box):
    box.dotqmail(".qmail", "&a@x.org\n")
    missing = str(box.root / "no-such-home")     # not /nonexistent: nobody's home, which anything may make
    assert box.deliver(MSG, env={"QMAILHOME": missing}) == (
        111, "Unable to forward message: qq trouble in home directory (#4.3.0).\n")


def test_default_queue_program_is_home_bin(box):
    bindir = os.path.join(box.env["QMAILHOME"], "bin")
    os.makedirs(bindir)
    os.rename(box.env["QMAILQUEUE"], os.path.join(bindir, "qmail-queue"))
    box.dotqmail(".qmail", "&a@x.org\n")
    env = dict(box.env)
    del env["QMAILQUEUE"]
    box.env = env
    assert box.deliver(MSG)[0] == 0
    assert decode(captured(box)["env"])[1] == [b"a@x.org"]


def test_forward_keeps_the_sender_srs_is_qmail_sends_job(box):
    box.dotqmail(".qmail", "&a@x.org\n")
    assert box.deliver(MSG, sender="bob@ex.org")[0] == 0
    assert decode(captured(box)["env"])[0] == b"bob@ex.org"


BIG = b"Subject: fwd\n\n" + b"0123456789abcdef\n" * 12000          # more than a pipe holds


@pytest.mark.parametrize("script", [
    "#!/bin/sh\nexit 0\n",                                  # took none of the message
    "#!/bin/sh\nexec 1>&-\ncat >/dev/null\nexit 0\n",       # took the message, not the envelope
])
def test_a_queue_program_that_exits_0_without_taking_everything_is_no_forward(box, script):
    """qmail_close(): a write that failed (flagerr) is `qq read error`, whatever qmail-queue's exit
    said; a success there would have lost the forward, as nothing was queued."""
    with open(box.env["QMAILQUEUE"], "w") as f:
        f.write(script)
    box.dotqmail(".qmail", "&a@x.org\n")
    assert box.deliver(BIG) == (111, "Unable to forward message: qq read error (#4.3.0).\n")


def test_a_forward_the_queue_service_cannot_take_is_aborted(box, monkeypatch):
    """Through qmail-queued's socket: a write that fails aborts the insertion (nothing queued)
    and is `qq read error`, a deferral; the envelope is never sent."""
    from qmailpy.queue import sockclient
    calls = []

    class Job:
        qp = 7

        def write(self, data):
            calls.append("write")
            raise BrokenPipeError(32, "Broken pipe")

        def abort(self):
            calls.append("abort")

        def finish(self, sender, recipients):
            calls.append("finish")
            return 0
    monkeypatch.setattr(sockclient, "service_job", lambda environ: Job())
    box.env.pop("QMAILQUEUE")
    box.dotqmail(".qmail", "&a@x.org\n")
    assert box.deliver(MSG) == (111, "Unable to forward message: qq read error (#4.3.0).\n")
    assert calls == ["write", "abort"]


def test_a_fork_refused_for_the_queue_is_unable_to_fork(box, monkeypatch):
    """qmail-local.c mailforward(): qmail_open() failing (its fork refused) is temp_fork(),
    `Unable to fork: E. (#4.3.0)`, 111; not a queue program that could not be run."""
    def fork():
        raise BlockingIOError(11, "Resource temporarily unavailable")
    monkeypatch.setattr(os, "fork", fork)
    box.dotqmail(".qmail", "&a@x.org\n")
    assert box.deliver(MSG) == (111, "Unable to fork: temporary failure. (#4.3.0)\n")
