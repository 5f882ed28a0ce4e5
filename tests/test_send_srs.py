"""qmail-send and SRS: a bounce to our SRS address goes to the original sender; an expired one is dropped."""
import time

import pytest

from qmailpy.srs import codec
from test_send_support import Scratch, Send, inject

MSG = b"Subject: bounce\n\nyour mail bounced\n"


@pytest.fixture
def scratch(tmp_path):
    s = Scratch(tmp_path, {"srs/srs_domain": "srs.example.org", "srs/revers_srs_secrets": "key2\nkey1"})
    yield s
    s.cleanup()


def test_srs_bounce_reaches_the_original_sender(scratch):
    address = codec.forward("alice@remote.example", "srs.example.org", ["key1"], time.time())
    msgid = inject(scratch.home, MSG, "", [address])
    send = Send(scratch)
    send.wait_line(r"^end msg %d$" % msgid)
    assert send.stop() == 0
    lines = send.lines()
    assert "srs msg %d: <%s> is <alice@remote.example>" % (msgid, address) in lines
    assert any("to remote alice@remote.example" in ln for ln in lines)
    assert list(scratch.mail("alice@remote.example").values())


def test_expired_srs_bounce_is_dropped_without_a_bounce(scratch):
    address = codec.forward("alice@remote.example", "srs.example.org", ["key2"], time.time() - 60 * 86400)
    msgid = inject(scratch.home, MSG, "", [address])
    send = Send(scratch)
    send.wait_line(r"^end msg %d$" % msgid)
    assert send.stop() == 0
    lines = send.lines()
    assert "srs msg %d: expired bounce address <%s> dropped" % (msgid, address) in lines
    assert not any("starting delivery" in ln for ln in lines)
    assert not any(ln.startswith("bounce msg") for ln in lines)
    assert scratch.queue_files() == []
