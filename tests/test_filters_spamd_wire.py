"""spamd's answers and its PROCESS exchange in-process (qmailpy/filters/spamd.py): every refusal
with its exact code and reason, and the exact request against a fake spamd on a Unix socket.
tests/test_filters.py runs the real spamd through qmail-queue."""
import socket

import pytest

from oneshotunix import OneShotUnixServer, read_to_eof
from qmailpy import exitcodes as X
from qmailpy.filters import spamd
from qmailpy.filters.net import ServiceError

BODY = b"X-Spam-Flag: YES\r\nSubject: x\r\n\r\nbody\r\n"


def answer(body=BODY, spam=b"True ; 15.5 / 5.0", status=b"SPAMD/1.1 0 EX_OK", extra=b""):
    return status + b"\r\nContent-length: %d\r\nSpam: " % len(body) + spam + b"\r\n" + extra + b"\r\n" + body


def refusal(data):
    with pytest.raises(ServiceError) as e:
        spamd.parse_answer(data)
    return e.value.code, e.value.reason


G = X.QQ_COMM_FAILED


@pytest.mark.parametrize("data,want", [
    (b"HTTP/1.1 200 OK\r\n\r\n", (G, "spamd: bad status line b'HTTP/1.1 200 OK'")),
    (b"SPAMD/1.1\r\n\r\n", (G, "spamd: bad status line b'SPAMD/1.1'")),
    (b"SPAMD/1.1 x EX_OK\r\n\r\n", (G, "spamd: bad status line b'SPAMD/1.1 x EX_OK'")),
    (b"SPAMD/1.1 " + b"9" * 100 + b"\r\n", (X.QQ_TEMP_REFUSED, "spamd: error " + "9" * 100)),
    (b"SPAMD/1.0 76 Bad header line: \xff\r\n", (X.QQ_TEMP_REFUSED, "spamd: error 76 Bad header line: \ufffd")),
    (b"SPAMD/1.0 76 Bad  header\tline\r\n", (X.QQ_TEMP_REFUSED, "spamd: error 76 Bad  header\tline")),
    (answer(spam=b"True ; 1 / 5 :x"), (G, "spamd: not a score: '5 :x'")),
    (b"S" * 100 + b" 0\r\n", (G, "spamd: bad status line %r" % (b"S" * 80))),
    (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n", (G, "spamd: answer without a header block (38 bytes)")),
    (b"SPAMD/1.1 0 EX_OK\r\n" + b"h" * 90 + b"\r\n\r\n", (G, "spamd: bad header line %r" % (b"h" * 80))),
    (b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1 / 5\r\n\r\n", (G, "spamd: no Content-length")),
    (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 5\r\nSpam: True ; 1 / 5\r\n\r\nabc",
     (G, "spamd: Content-length 5, got 3 bytes")),
    (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 3\r\n\r\nabc", (G, "spamd: no Spam header")),
    (answer(spam=b"True 15.5 / 5.0"), (G, "spamd: bad Spam header b'True 15.5 / 5.0'")),
    (answer(spam=b"True ; 15.5 5.0"), (G, "spamd: bad Spam header b'True ; 15.5 5.0'")),
    (answer(spam=b"Maybe ; 1 / 5"), (G, "spamd: bad Spam header b'Maybe ; 1 / 5'")),
    (answer(spam=b"True ; 1 / 5 ; " + b"x" * 90), (G, "spamd: not a score: %r" % ("5 ; " + "x" * 36))),
    (answer(spam=b"True ; 1 / 5 / 6"), (G, "spamd: not a score: '5 / 6'")),
    (answer(spam=b"True ; a;b / 5"), (G, "spamd: not a score: 'a;b'")),
    (answer(spam=b"True ; \xff / 5"), (G, "spamd: not a score: '\ufffd'")),
    (answer(spam=b"True ; 5 / \xff"), (G, "spamd: not a score: '\ufffd'")),
    (answer(spam=b"x" * 100), (G, "spamd: bad Spam header %r" % (b"x" * 80))),
])
def test_refusals(data, want):
    assert refusal(data) == want


def test_verdicts():
    v = spamd.parse_answer(answer(spam=b"Yes ; 15.5 / 5.0"))
    assert (v.spam, v.score, v.required, v.reject, v.message) == (True, 15.5, 5.0, None, BODY)
    assert spamd.parse_answer(answer(spam=b"yes ; 1 / 5")).spam is True
    assert spamd.parse_answer(answer(spam=b"NO ; 1 / 5")).spam is False
    assert spamd.parse_answer(answer(spam=b"False ; 1 / 5")).spam is False
    assert spamd.parse_answer(answer(extra=b"Spam: False ; 0 / 5\r\n")).spam is True    # the first counts
    assert spamd.parse_answer(answer(extra=b"X-Other: a:b\r\n")).score == 15.5
    v = spamd.parse_answer(answer(body=b"X-Spam-Reject-Score: 9\r\n\r\nb\r\n"))
    assert v.reject == 9.0
    body_with_crlf = b"Subject: a\r\n\r\nline one\r\nline two\r\n"
    assert spamd.parse_answer(answer(body=body_with_crlf)).message == body_with_crlf


def test_spamd_fields_start_at_the_first_x_spam_field():
    msg = b"Received: x\r\nX-Spam-Flag: YES\r\nX-Spam-Level: **\r\nSubject: s\r\nX-Spam-Other: no\r\n\r\nb"
    assert [n for n, _ in spamd.spamd_fields(msg)] == [b"x-spam-flag", b"x-spam-level"]


class FakeSpamd(OneShotUnixServer):
    def __init__(self, tmp_path, reply):
        self.reply, self.got = reply, None
        super().__init__(tmp_path / "spamd.sock")

    def serve_conn(self, conn):
        self.got = read_to_eof(conn)
        conn.sendall(self.reply)


def test_process_sends_one_request_and_reads_the_answer(tmp_path):
    fake = FakeSpamd(tmp_path, answer())
    v = spamd.process(b"Subject: hi\r\n\r\nbody\r\n", b"joe@example.org", (socket.AF_UNIX, fake.path), 5)
    fake.thread.join(5)
    assert fake.got == (b"PROCESS SPAMC/1.5\r\nContent-length: 21\r\nUser: joe@example.org\r\n\r\n"
                        b"Subject: hi\r\n\r\nbody\r\n")
    assert (v.spam, v.score, v.message) == (True, 15.5, BODY)


def test_process_without_answer_and_too_long(tmp_path):
    fake = FakeSpamd(tmp_path, b"")
    with pytest.raises(ServiceError) as e:
        spamd.process(b"m", None, (socket.AF_UNIX, fake.path), 5)
    assert (e.value.code, e.value.reason) == (G, "spamd: connection closed without an answer")
    (tmp_path / "spamd.sock").unlink()
    fake = FakeSpamd(tmp_path, b"x" * ((1 << 20) + 3))
    with pytest.raises(ServiceError) as e:
        spamd.process(b"m", None, (socket.AF_UNIX, fake.path), 5)
    assert (e.value.code, e.value.reason) == (G, "spamd: answer from %s longer than %d bytes"
                                              % (fake.path, (1 << 20) + 2))


def test_process_answer_limit_grows_with_the_message(tmp_path):
    """spamd may return the message with its report: up to twice the message plus 1 MiB."""
    fake = FakeSpamd(tmp_path, b"x" * ((1 << 20) + 1500))
    with pytest.raises(ServiceError) as e:
        spamd.process(b"m" * 1000, None, (socket.AF_UNIX, fake.path), 5)
    assert e.value.reason == "spamd: bad status line %r" % (b"x" * 80)
