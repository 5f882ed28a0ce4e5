"""qmailpy/filters/net.py's Connection against daemons that misbehave in ways the clamd and
spamd wire tests do not reach: a full listen queue, a name that does not resolve, a daemon
that stops reading or resets the connection, a deadline spent between two steps. Each is
a ServiceError with a temporary qmail-queue code (56, 72, 74) and a reason naming the
service, never an answer taken as a verdict."""
import socket
import struct
import threading
import time

import pytest

from oneshotunix import OneShotUnixServer
from qmailpy import exitcodes as X
from qmailpy.filters import clamd, net, spamd
from qmailpy.filters.net import Connection, ServiceError


def refusal(call):
    with pytest.raises(ServiceError) as e:
        call()
    return e.value.code, e.value.reason


class Silent(OneShotUnixServer):
    """Accepts, reads `reads` bytes, then (close_early) closes, or holds the connection
    unread until the client goes."""

    def __init__(self, path, reads=0, close_early=False):
        self.reads, self.close_early = reads, close_early
        super().__init__(path)

    def serve_conn(self, conn):
        if self.reads:
            conn.recv(self.reads)
        if self.close_early:
            return                  # closed with the client's bytes unread: it sees a reset
        conn.settimeout(20)
        try:
            while conn.recv(1):     # one byte at a time, only once the client gave up
                time.sleep(20)
        except OSError:
            pass


def test_connect_to_a_full_listen_queue_times_out_72():
    """A daemon too busy to accept: the SYN waits in vain, filtertimeout ends the connect."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    queued = socket.create_connection(srv.getsockname(), timeout=5)     # the queue's one place
    port = srv.getsockname()[1]
    try:
        started = time.monotonic()
        assert refusal(lambda: Connection("clamd", (socket.AF_INET, ("127.0.0.1", port)), 1)) == (
            X.QQ_CONN_TIMEOUT, "clamd: connect to 127.0.0.1:%d timed out" % port)
        assert 0.9 < time.monotonic() - started < 10
    finally:
        queued.close()
        srv.close()


def test_name_that_does_not_resolve_is_56(monkeypatch):
    def gaierror(*args):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(net.socket, "getaddrinfo", gaierror)
    assert refusal(lambda: Connection("spamd", net.parse_address("spamd.invalid:783"), 5)) == (
        X.QQ_NETWORK, "spamd: cannot resolve spamd.invalid: [Errno -2] Name or service not known")


def test_daemon_that_stops_reading_times_out_72(tmp_path):
    """clamd accepts and reads nothing: the message cannot be sent, filtertimeout ends it."""
    fake = Silent(tmp_path / "clamd.sock")
    path = tmp_path / "mess"
    path.write_bytes(b"x" * (8 << 20))          # more than the socket buffers hold
    started = time.monotonic()
    assert refusal(lambda: clamd.scan_file(str(path), (socket.AF_UNIX, fake.path), 1)) == (
        X.QQ_CONN_TIMEOUT, "clamd: timeout writing to %s" % fake.path)
    assert 0.9 < time.monotonic() - started < 10


def test_reset_before_any_answer_is_74(tmp_path):
    """The daemon closes with the message unread (it crashed): the write sees a closed
    pipe, the read the reset; no answer is no verdict."""
    fake = Silent(tmp_path / "clamd.sock", reads=5, close_early=True)   # of 10 bytes sent first
    path = tmp_path / "mess"
    path.write_bytes(b"x" * (4 << 20))
    assert refusal(lambda: clamd.scan_file(str(path), (socket.AF_UNIX, fake.path), 5)) == (
        X.QQ_COMM_FAILED, "clamd: error reading from %s: Connection reset by peer" % fake.path)


def test_spamd_resetting_the_connection_is_74(monkeypatch):
    """spamd resets the connection (TCP RST) before the request: its send and the half-close
    find the connection gone (ENOTCONN), and the empty read says so: no answer, 74."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    connected = threading.Event()

    def reset():
        conn, _ = srv.accept()
        connected.wait(5)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
    thread = threading.Thread(target=reset, daemon=True)
    thread.start()
    real_send = Connection.send

    def send_after_the_reset(self, data):
        connected.set()
        thread.join(5)
        time.sleep(0.2)                     # the RST has arrived
        return real_send(self, data)
    monkeypatch.setattr(Connection, "send", send_after_the_reset)
    try:
        assert refusal(lambda: spamd.process(b"Subject: x\n\nbody\n", None,
                                             (socket.AF_INET, srv.getsockname()), 5)) == (
            X.QQ_COMM_FAILED, "spamd: connection closed without an answer")
    finally:
        srv.close()


def test_deadline_spent_between_steps_is_72(tmp_path):
    """Every step gets what is left of the one deadline; none left is a timeout before the
    step, not a wait of a fresh filtertimeout."""
    fake = Silent(tmp_path / "spamd.sock")
    with Connection("spamd", (socket.AF_UNIX, fake.path), 5) as conn:
        conn.deadline = time.monotonic() - 1
        assert refusal(lambda: conn.send(b"PROCESS")) == (
            X.QQ_CONN_TIMEOUT, "spamd: timeout writing to %s" % fake.path)
        assert refusal(lambda: conn.read(100)) == (
            X.QQ_CONN_TIMEOUT, "spamd: timeout reading from %s" % fake.path)
