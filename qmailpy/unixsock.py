"""Unix-domain sockets of the services (qmail-queued, qmail-usersd): one rule for
long paths and one for putting a listening socket in place.

A path longer than sun_path (a deep test directory, a long $QMAILHOME) is
reached through its directory opened O_PATH: /proc/self/fd/N/NAME. A listening
socket is bound beside its path and renamed over it, so that a client never
finds no socket while a service restarts. _socket, not socket, for clients:
qmail-smtpd connects for every message, and socket.py imports enum and
selectors (milliseconds per start).
"""
import errno
import os
import struct

import _socket

SUN_PATH = 107                 # longest socket path connect() and bind() take (sun_path less its NUL)
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_TIMEVAL = struct.Struct("ll")   # struct timeval: seconds, microseconds


def address(path):
    """(what to give connect()/bind(), fd to close afterwards or None) for a socket path."""
    if len(os.fsencode(path)) <= SUN_PATH:
        return path, None
    fd = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return "/proc/self/fd/%d/%s" % (fd, os.path.basename(path)), fd


def connect(sock, path):
    """sock.connect() to the socket at `path`, however long the path. With a timeout set on
    sock, a listener whose backlog is full is waited for up to that timeout (TimeoutError
    after it): a Unix socket's non-blocking connect fails at once with EAGAIN there, where a
    TCP one waits, so the wait is the kernel's (blocking, bounded by SO_SNDTIMEO)."""
    where, fd = address(path)
    timeout = sock.gettimeout()
    try:
        if not timeout:               # blocking (waits by itself), or non-blocking by the caller's choice
            sock.connect(where)
            return
        sock.settimeout(None)
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDTIMEO, _TIMEVAL.pack(int(timeout), int(timeout % 1 * 1e6)))
        try:
            sock.connect(where)
        except BlockingIOError:       # EAGAIN: still no room when SO_SNDTIMEO ran out
            raise TimeoutError(errno.ETIMEDOUT, "no room in the listener's backlog", path) from None
        finally:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDTIMEO, _TIMEVAL.pack(0, 0))
            sock.settimeout(timeout)
    finally:
        if fd is not None:
            os.close(fd)


def client(path, timeout):
    """A connected stream socket (_socket.socket) to `path`; OSError as connect() raises it."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        connect(sock, path)
    except BaseException:
        sock.close()
        raise
    return sock


def listen_at(path, backlog):
    """A listening socket.socket at `path`, mode 0666 (the service checks its callers
    with SO_PEERCRED), bound beside it and renamed over any old one."""
    import socket
    tmp = "%s.%d" % (path, os.getpid())
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    where, fd = address(tmp)
    try:
        sock.bind(where)
        os.chmod(tmp, 0o666)
        sock.listen(backlog)
        os.rename(tmp, path)
    except BaseException:
        sock.close()
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        if fd is not None:
            os.close(fd)
    return sock


def peer_credentials(sock):
    """(pid, uid, gid) of the process at the other end of a Unix socket, from the kernel
    (SO_PEERCRED, as it was when that process connected): never what the client says."""
    return _PEERCRED.unpack(sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, _PEERCRED.size))
