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


def _send(scratch, sender, address):
    """Queue MSG from `sender` to `address`, run qmail-send until it is done: (msgid, log lines)."""
    msgid = inject(scratch.home, MSG, sender, [address])
    send = Send(scratch)
    send.wait_line(r"^end msg %d$" % msgid)
    assert send.stop() == 0
    return msgid, send.lines()


def _nothing_delivered_nor_bounced(scratch, lines):
    assert not any("starting delivery" in ln for ln in lines)
    assert not any(ln.startswith("bounce msg") for ln in lines)
    assert scratch.queue_files() == []


def test_srs_bounce_reaches_the_original_sender(scratch):
    address = codec.forward("alice@remote.example", "srs.example.org", ["key1"], time.time())
    msgid, lines = _send(scratch, "", address)
    assert "srs msg %d: <%s> is <alice@remote.example>" % (msgid, address) in lines
    assert any("to remote alice@remote.example" in ln for ln in lines)
    assert list(scratch.mail("alice@remote.example").values())


def test_expired_srs_bounce_is_dropped_without_a_bounce(scratch):
    address = codec.forward("alice@remote.example", "srs.example.org", ["key2"], time.time() - 60 * 86400)
    msgid, lines = _send(scratch, "", address)
    assert "srs msg %d: expired bounce address <%s> dropped" % (msgid, address) in lines
    _nothing_delivered_nor_bounced(scratch, lines)


def test_mail_with_a_sender_to_an_srs_address_is_dropped(scratch):
    """An SRS address stands for a bounce path only: qmail-srs's srsfilter drops what comes with
    a sender ("srsfilter: ignore: SENDER must be empty", exit 0). Taking it would make our SRS
    domain a relay: whoever can get one of our forwards (a forward of their own, a spoofed
    sender) gets a signed address good for srs_max_age and mails anyone through us with any
    sender. Nothing is delivered and nothing bounces."""
    address = codec.forward("victim@remote.example", "srs.example.org", ["key1"], time.time())
    msgid, lines = _send(scratch, "spammer@evil.example", address)
    assert "srs msg %d: <%s> dropped: the sender is not empty" % (msgid, address) in lines
    _nothing_delivered_nor_bounced(scratch, lines)
    assert scratch.mail("victim@remote.example") == {}
