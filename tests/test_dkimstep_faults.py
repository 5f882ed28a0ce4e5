"""qmail-queue's DKIM step (qmailpy/filters/dkimstep.py) in-process on a staged mess file, for
the faults a running queue cannot be made to show: a mess file that cannot be read (54), one
that cannot be rewritten (a full disk: 53), a control that cannot be read (55). Each is the
QueueError that makes qmail-queue roll the insertion back (a 451 to the client), never a
message queued without its field or with half of it; and a field that replaces one of ours of
the same length is written in place."""
import errno
import os

import pytest

from qmailpy import exitcodes as X
from qmailpy.ctl.reader import Controls
from qmailpy.exitcodes import QueueError
from qmailpy.filters import dkimstep
from qmailpy.queue.enqueue import Staged

RECEIVED = b"Received: (qmail 1 invoked by uid 0); 1 Jan 2024 00:00:00 -0000\n"
MSG = b"From: alice@example.com\nTo: bob@example.org\nSubject: x\n\nhello\n"
SIGNED = (b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=sel; c=relaxed/relaxed; h=from;\n"
          b"\tbh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA\n" + MSG)
FIELD = b"Authentication-Results: test.example;\n\tdkim=none\n"


@pytest.fixture
def staged(home, tmp_path):
    home.control("me", "test.example\n")

    def make(message):
        path = tmp_path / "mess"
        path.write_bytes(RECEIVED + message)
        fd = os.open(path, os.O_RDWR)
        made = Staged(home.root, 1, str(path), fd, b"alice@example.com", [b"bob@example.org"], RECEIVED)
        return made, Controls(home.root, home.env(TCPREMOTEIP="127.0.0.9"))
    return make


def run(staged, controls):
    logged = []
    try:
        dkimstep.run(staged, controls, logged.append)
    finally:
        os.close(staged.mess_fd)
    return logged


def refusal(staged, controls):
    with pytest.raises(QueueError) as e:
        run(staged, controls)
    return e.value.code, e.value.reason


def enospc(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def eio(*args):
    raise OSError(errno.EIO, os.strerror(errno.EIO))


def test_unsigned_message_gets_the_field(staged):
    s, controls = staged(MSG)
    assert run(s, controls) == ["dkim: dkim=none"]
    with open(s.mess_path, "rb") as f:
        assert f.read() == RECEIVED + FIELD + MSG


def test_a_field_of_ours_of_the_same_length_is_replaced_in_place(staged):
    """The client's forged field of ours is taken out, ours goes in: nothing moves."""
    forged = FIELD.replace(b"none", b"pass")
    s, controls = staged(forged + MSG)
    assert run(s, controls) == ["dkim: dkim=none"]
    with open(s.mess_path, "rb") as f:
        assert f.read() == RECEIVED + FIELD + MSG


def test_full_disk_while_moving_the_message_is_53(staged, monkeypatch):
    s, controls = staged(MSG)
    monkeypatch.setattr(os, "pwrite", enospc)
    assert refusal(s, controls) == (X.QQ_WRITE_ERROR, "unable to write mess: No space left on device")


def test_full_disk_while_rewriting_a_signed_message_is_53(staged, monkeypatch):
    s, controls = staged(SIGNED)
    monkeypatch.setattr(os, "ftruncate", enospc)
    assert refusal(s, controls) == (X.QQ_WRITE_ERROR, "unable to write mess: No space left on device")


def test_mess_that_cannot_be_opened_is_54(staged):
    s, controls = staged(MSG)
    os.unlink(s.mess_path)
    assert refusal(s, controls) == (X.QQ_READ_ERROR, "unable to read mess: No such file or directory")


def test_read_error_in_the_header_block_is_54(staged, monkeypatch):
    s, controls = staged(MSG)
    monkeypatch.setattr(os, "pread", eio)
    assert refusal(s, controls) == (X.QQ_READ_ERROR, "unable to read mess: Input/output error")


def test_read_error_of_a_signed_message_read_whole_is_54(staged, monkeypatch):
    s, controls = staged(SIGNED)
    monkeypatch.setattr(dkimstep, "open", eio, raising=False)
    assert refusal(s, controls) == (X.QQ_READ_ERROR, "unable to read mess: Input/output error")


def test_unreadable_control_is_55(staged, home):
    s, controls = staged(MSG)
    os.unlink(os.path.join(home.root, "control", "me"))
    os.mkdir(os.path.join(home.root, "control", "me"))
    code, reason = refusal(s, controls)
    assert (code, reason) == (X.QQ_CONFIG, "unable to read controls: control/me: unable to read: Is a directory")
    with open(s.mess_path, "rb") as f:
        assert f.read() == RECEIVED + MSG       # untouched
