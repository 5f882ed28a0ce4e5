"""clamd's INSTREAM exchange in-process (qmailpy/filters/clamd.py scan_fd/scan_file) against a
fake clamd on a Unix socket: the exact bytes sent, the answers and the errors. tests/test_filters.py
runs the real clamd through qmail-queue."""
import os
import socket
import struct

import pytest

from oneshotunix import OneShotUnixServer
from qmailpy import exitcodes as X
from qmailpy.filters import clamd
from qmailpy.filters.net import ServiceError


class FakeClamd(OneShotUnixServer):
    """Accepts one connection; reads INSTREAM until the zero-length chunk (or `stop_after`
    bytes), records what came, answers `answer` and closes."""

    def __init__(self, tmp_path, answer, stop_after=None, keep_open=False):
        self.answer, self.stop_after, self.got = answer, stop_after, b""
        self.keep_open = keep_open
        super().__init__(tmp_path / "clamd.sock")

    def serve_conn(self, conn):
        data = b""
        while True:
            if self.stop_after is not None and len(data) >= self.stop_after:
                break
            if data.startswith(b"zINSTREAM\0") and self._complete(data[10:]):
                break
            more = conn.recv(65536)
            if not more:
                break
            data += more
        self.got = data
        conn.sendall(self.answer)
        if self.keep_open:                  # until the client closes: it must stop at the \0
            conn.settimeout(10)
            while conn.recv(65536):
                pass

    @staticmethod
    def _complete(stream):
        while len(stream) >= 4:
            n = struct.unpack(">I", stream[:4])[0]
            if n == 0:
                return True
            stream = stream[4 + n:]
        return False

    def address(self):
        return (socket.AF_UNIX, self.path)


def message(tmp_path, data):
    path = tmp_path / "mess"
    path.write_bytes(data)
    return str(path)


def test_instream_bytes_and_clean_answer(tmp_path):
    body = b"x" * (clamd.CHUNK + 10)
    fake = FakeClamd(tmp_path, b"stream: OK\0")
    assert clamd.scan_file(message(tmp_path, body), fake.address(), 5) is None
    fake.thread.join(5)
    assert fake.got == (b"zINSTREAM\0" + struct.pack(">I", clamd.CHUNK) + body[:clamd.CHUNK]
                        + struct.pack(">I", 10) + body[clamd.CHUNK:] + struct.pack(">I", 0))


def test_empty_message(tmp_path):
    fake = FakeClamd(tmp_path, b"stream: OK\0")
    assert clamd.scan_file(message(tmp_path, b""), fake.address(), 5) is None
    fake.thread.join(5)
    assert fake.got == b"zINSTREAM\0\0\0\0\0"


def test_scan_fd_reads_from_offset_zero(tmp_path):
    fake = FakeClamd(tmp_path, b"stream: Eicar-Signature FOUND\0")
    fd = os.open(message(tmp_path, b"abc"), os.O_RDONLY)
    try:
        os.lseek(fd, 2, os.SEEK_SET)
        assert clamd.scan_fd(fd, fake.address(), 5) == "Eicar-Signature"
    finally:
        os.close(fd)
    fake.thread.join(5)
    assert fake.got == b"zINSTREAM\0\0\0\0\x03abc\0\0\0\0"


def test_clamd_closing_early_still_answers(tmp_path):
    """clamd stops reading at StreamMaxLength, answers and closes: the answer counts."""
    body = os.urandom(clamd.CHUNK * 40)
    fake = FakeClamd(tmp_path, b"INSTREAM size limit exceeded. ERROR\0", stop_after=100)
    assert clamd.scan_file(message(tmp_path, body), fake.address(), 10) == clamd.TOO_LONG


def test_no_answer_is_74(tmp_path):
    fake = FakeClamd(tmp_path, b"")
    with pytest.raises(ServiceError) as e:
        clamd.scan_file(message(tmp_path, b"abc"), fake.address(), 5)
    assert (e.value.code, e.value.reason) == (X.QQ_COMM_FAILED, "clamd: connection closed without an answer")


def test_nobody_listening_names_clamd(tmp_path):
    with pytest.raises(ServiceError) as e:
        clamd.scan_file(message(tmp_path, b"abc"), (socket.AF_UNIX, str(tmp_path / "none.sock")), 5)
    assert e.value.code == X.QQ_NETWORK
    assert e.value.reason == "clamd: cannot connect to %s: No such file or directory" % (tmp_path / "none.sock")


def test_answer_texts():
    with pytest.raises(ServiceError) as e:
        clamd.parse_answer(b"stream: lstat() failed. ERROR\0")
    assert (e.value.code, e.value.reason) == (X.QQ_TEMP_REFUSED, "clamd: stream: lstat() failed. ERROR")
    with pytest.raises(ServiceError) as e:
        clamd.parse_answer(b"x" * 300 + b"\0")
    assert (e.value.code, e.value.reason) == (X.QQ_COMM_FAILED, "clamd: unexpected answer %r" % ("x" * 200))
    with pytest.raises(ServiceError) as e:
        clamd.parse_answer(b"bad \xff\0\n\0")
    assert e.value.reason == "clamd: unexpected answer %r" % "bad \ufffd"
    assert clamd.parse_answer(b"stream: OK\n\0\n") is None
    assert clamd.parse_answer(b"stream: OK") is None
    with pytest.raises(ServiceError):
        clamd.parse_answer(b"stream: OKXX\0")


def test_the_answer_ends_at_its_nul(tmp_path):
    """clamd may keep the connection open after the answer: its \\0 ends the read, not EOF."""
    fake = FakeClamd(tmp_path, b"stream: OK\0", keep_open=True)
    assert clamd.scan_file(message(tmp_path, b"abc"), fake.address(), 2) is None


def test_the_message_is_opened_close_on_exec(tmp_path, monkeypatch):
    real, flags = os.open, []

    def recording(path, f, *a, **kw):
        flags.append(f)
        return real(path, f, *a, **kw)
    monkeypatch.setattr(os, "open", recording)
    fake = FakeClamd(tmp_path, b"stream: OK\0")
    assert clamd.scan_file(message(tmp_path, b"abc"), fake.address(), 5) is None
    assert flags == [os.O_RDONLY | os.O_CLOEXEC]


def test_clean_answer_before_the_end_of_the_message_is_74(tmp_path):
    """A clamd (or anything in its place) that stops reading, answers OK and closes has not
    scanned the rest: trouble (74, the client retries), never a clean message queued half
    scanned. A finding in the part it read still counts."""
    body = os.urandom(clamd.CHUNK * 40)
    fake = FakeClamd(tmp_path, b"stream: OK\0", stop_after=100)
    with pytest.raises(ServiceError) as e:
        clamd.scan_file(message(tmp_path, body), fake.address(), 10)
    assert (e.value.code, e.value.reason) == (
        X.QQ_COMM_FAILED, "clamd: answered OK before the end of the message (%d bytes)" % len(body))
    (tmp_path / "found").mkdir()
    fake = FakeClamd(tmp_path / "found", b"stream: Eicar-Signature FOUND\0", stop_after=100)
    assert clamd.scan_file(message(tmp_path, body), fake.address(), 10) == "Eicar-Signature"
