"""Talking to clamd and spamd: one connection per request, every step under one deadline.

An address is a path (a UNIX socket; it starts with '/') or host:port
([v6-address]:port). Trouble is a ServiceError carrying qmail-queue's exit
code for it:

  56  cannot connect (no socket, refused, unreachable,   451 qq trouble making network connection
      no descriptor for ours: EMFILE)
  72  no answer in time (control/filtertimeout; a UNIX   451 connection to mail server timed out
      socket's full backlog is waited for till then)
  74  the answer is not the protocol, or cut short       451 communication with mail server failed
  71  the service answered with an error of its own      451 mail server temporarily rejected message

All of them are temporary (the client tries again later) unless
control/filterfailopen is 1, when the message goes through unfiltered.
"""
import socket
import time

from qmailpy import exitcodes as X
from qmailpy.exitcodes import QueueError


class ServiceError(QueueError):
    """clamd or spamd could not give an answer; `code` is the temporary exit code."""


class ConfigError(QueueError):
    """An address control that does not parse (exit 55)."""

    def __init__(self, reason):
        super().__init__(X.QQ_CONFIG, reason)


def parse_address(text, control="address"):
    """(family, sockaddr) for '/path' or 'host:port' / '[v6]:port'."""
    text = (text or "").strip()
    if text.startswith("/"):
        return socket.AF_UNIX, text
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("%s: not a socket path or host:port: %r" % (control, text))
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, (host[1:-1], int(port))
    if ":" in host:
        raise ConfigError("%s: write an IPv6 address as [address]:port: %r" % (control, text))
    return socket.AF_INET, (host, int(port))


class Connection:
    """A connected socket whose every operation ends by the deadline."""

    def __init__(self, service, address, timeout):
        self.service = service
        self.deadline = time.monotonic() + timeout
        family, self.sockaddr = address
        if family == socket.AF_INET:       # a host name: let getaddrinfo pick v4 or v6
            try:
                infos = socket.getaddrinfo(self.sockaddr[0], self.sockaddr[1], 0, socket.SOCK_STREAM)
            except OSError as e:
                raise ServiceError(X.QQ_NETWORK, "%s: cannot resolve %s: %s" % (service, self.sockaddr[0], e)) from None
            family, self.sockaddr = infos[0][0], infos[0][4]
        self.sock = None
        try:                                # socket() failing (EMFILE, ENOBUFS) is no connection too
            self.sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            self._timed()
            if family == socket.AF_UNIX:    # a full backlog is waited for, a long path reached
                from qmailpy.unixsock import connect
                connect(self.sock, self.sockaddr)
            else:
                self.sock.connect(self.sockaddr)
        except socket.timeout:
            self.close()
            raise ServiceError(X.QQ_CONN_TIMEOUT, "%s: connect to %s timed out" % (service, self.where())) from None
        except OSError as e:
            self.close()
            raise ServiceError(X.QQ_NETWORK, "%s: cannot connect to %s: %s" % (
                service, self.where(), e.strerror or e)) from None

    def where(self):
        if isinstance(self.sockaddr, str):
            return self.sockaddr
        return "%s:%d" % self.sockaddr[:2]

    def _timed(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        self.sock.settimeout(left)

    def _trouble(self, e, doing):
        if isinstance(e, socket.timeout):
            return ServiceError(X.QQ_CONN_TIMEOUT, "%s: timeout %s %s" % (self.service, doing, self.where()))
        return ServiceError(X.QQ_COMM_FAILED, "%s: error %s %s: %s" % (
            self.service, doing, self.where(), getattr(e, "strerror", None) or e))

    def send(self, data):
        """Send all of data; False when the peer closed its end (it may have answered why)."""
        view = memoryview(data)
        try:
            while view:
                self._timed()
                view = view[self.sock.send(view):]
        except (BrokenPipeError, ConnectionResetError):
            return False
        except OSError as e:
            raise self._trouble(e, "writing to") from None
        return True

    def shutdown_write(self):
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:         # ENOTCONN, the peer reset the connection (the others are EBADF, ENOTSOCK,
            pass                # EINVAL: not a connected socket): the read that follows reports it

    def read(self, limit, stop=None):
        """Bytes until end of file (or the byte `stop`), at most `limit`: more is garbage."""
        chunks, size = [], 0
        try:
            while True:
                self._timed()
                data = self.sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
                size += len(data)
                if size > limit:
                    raise ServiceError(X.QQ_COMM_FAILED, "%s: answer from %s longer than %d bytes" % (
                        self.service, self.where(), limit))
                if stop is not None and stop in data:
                    break
        except ConnectionResetError as e:
            if not chunks:
                raise self._trouble(e, "reading from") from None
        except ServiceError:
            raise
        except OSError as e:
            raise self._trouble(e, "reading from") from None
        return b"".join(chunks)

    def close(self):
        if self.sock is None:
            return
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
