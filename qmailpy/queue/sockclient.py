"""The client side of qmail-queued: qmail-queue's fd 0 and fd 1 over the service's socket.

A SocketJob has the interface of a running qmail-queue (qmailpy.smtpd.
queueclient): write() the message, finish(sender, recipients) -> exit code,
abort(), qp. The service learns who we are from the kernel, so nothing here
is trusted. Trouble is a temporary exit code, as qmail-qmqpc reports it
(qmail-queue(8) codes 72-74): the connection is refused or the socket cannot
be used (73), the connect times out (72: no room in the service's backlog for
CONNECT_WAIT seconds), the connection breaks or the
service stops answering before its answer is complete (74). An answer the
service did send is kept even when our writing failed (it may have refused
the message early). Nothing is queued unless the service read the end of
the message and a complete envelope (proto/qqsock.py).

_socket, not socket: qmail-smtpd imports this for every message, and socket.py
imports enum and selectors (milliseconds per start).
"""
import errno
import os

import _socket

from qmailpy import exitcodes as X
from qmailpy import paths
from qmailpy.proto import qq, qqsock
from qmailpy.unixsock import connect

BUFFER = 65536                 # small writes are gathered into frames of about this size
CONNECT_WAIT = 10              # seconds to wait for room in a busy service's backlog (qmail-qmqpc's connect timeout)
NO_SERVICE = (errno.ENOENT, errno.ENOTDIR)


class NoService(OSError):
    """No qmail-queued socket in this home: the queue is written in-process (development, bare homes)."""


def socket_path(home):
    return paths.queue_socket(home)


def service_present(home):
    """Does this home have a qmail-queued socket (running or not)? A name that cannot be looked
    up (EIO, EACCES: not ENOENT) counts as there: connecting then gives a temporary code, where
    writing the queue in-process would be done as the caller, whom the queue's owner may not be."""
    try:
        os.lstat(socket_path(home))
    except OSError as e:
        return e.errno not in NO_SERVICE
    return True


def service_job(environ, controls=None, by_pid=False):
    """A SocketJob to qmail-queued, or None when the home has no qmail-queued socket.

    Its time limit is the service's (control timeoutqueue) and a minute, so the
    service's own answer (52) comes first. Only what the client needs is
    imported: qmail-smtpd calls this for every message. by_pid: this process is an
    exec'd qmail-queue, whose pid its caller prints as the qp (qqsock.BY_PID).
    """
    home = os.path.abspath(paths.qmailhome(environ))
    if not service_present(home):
        return None
    if controls is None:
        from qmailpy.ctl.reader import Controls
        controls = Controls(home, environ)
    try:
        return SocketJob(home, wait_limit(controls), qqsock.encode_origin(environ), by_pid)
    except NoService:
        return None


def wait_limit(controls):
    """How long a client waits for qmail-queued: the service's time limit (queue.layout's rule
    over control/timeoutqueue) and a minute."""
    from qmailpy.queue.layout import time_limit
    try:
        limit = controls.value("timeoutqueue")
    except OSError:
        limit = None                     # the service reads it too, and answers 55
    return time_limit(limit) + 60


class SocketJob:
    """One message on its way into qmail-queued (see the module docstring)."""

    def __init__(self, home, timeout, origin=b"", by_pid=False):
        """Connect; NoService when the socket is absent. Any other trouble is kept for finish().
        origin: the request's origin frame (qqsock.encode_origin), sent with the first message
        bytes. The mark (qqsock.BY_PID when by_pid, else BY_SERVICE) goes at once: the service
        numbers the insertion by it and then makes the mess file."""
        self.qp = None
        self.reason = ""
        self.code = None             # set when the job has failed on our side (finish() returns it)
        self.broken = False          # a write failed: an early answer may still be read
        self._buf = bytearray()
        self._origin = origin
        self.sock = None
        try:
            self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
            self.sock.settimeout(min(timeout, CONNECT_WAIT))
            connect(self.sock, socket_path(home))
            self.sock.settimeout(timeout)
        except TimeoutError:
            self._fail(X.QQ_CONN_TIMEOUT, "timeout connecting to qmail-queued")
        except OSError as e:
            self.close()
            if e.errno in NO_SERVICE:
                raise NoService(e.errno, e.strerror, socket_path(home)) from None
            self.code, self.reason = X.QQ_CONN_REJECTED, "unable to connect to qmail-queued: %s" % e.strerror
        else:
            self._send(qqsock.BY_PID if by_pid else qqsock.BY_SERVICE)

    def _fail(self, code, reason):
        self.code, self.reason = code, reason
        self.close()

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:          # the descriptor is freed all the same
                pass
            self.sock = None

    def _send(self, data):
        if self.broken or self.sock is None:
            return
        try:
            self.sock.sendall(data)
        except OSError:              # TimeoutError too: the service stopped reading
            self.broken = True
            try:                     # the service must not wait for the rest (a day): it sees the
                self.sock.shutdown(_socket.SHUT_WR)     # end, answers 54 and queues nothing
            except OSError:
                pass

    def write(self, data):
        """Stream message bytes; a broken connection is noticed here and reported at finish()."""
        self._buf += data
        if len(self._buf) >= BUFFER:
            self._flush()

    def _flush(self):
        if self._origin:
            self._send(self._origin)
            self._origin = b""
        if self._buf:
            self._send(qqsock.encode_chunk(self._buf))
            self._buf.clear()

    def finish(self, sender, recipients):
        """End the message, send the envelope, read the answer: the exit code."""
        if self.code is not None:
            return self.code
        self._flush()
        self._send(qqsock.END + qq.encode(sender, recipients))
        try:
            return self._answer()
        finally:
            self.close()

    def _answer(self):
        dec = qqsock.AnswerDecoder()
        try:
            while True:
                data = self.sock.recv(1024)
                if not data:
                    self.reason = "qmail-queued closed the connection without an answer"
                    return X.QQ_COMM_FAILED
                got = dec.feed(data)
                if got is not None:
                    code, qp, self.reason = got
                    self.qp = qp or None
                    return code
        except TimeoutError:
            self.reason = "timeout waiting for qmail-queued's answer"
        except qqsock.FrameError:
            self.reason = "qmail-queued's answer is garbled"
        except OSError as e:
            self.reason = "lost the connection to qmail-queued: %s" % e.strerror
        return X.QQ_COMM_FAILED

    def abort(self):
        """Close without the end of the message: the service queues nothing."""
        self._buf.clear()
        self.close()
