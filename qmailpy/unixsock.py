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
import time

import _socket

SUN_PATH = 107                 # longest socket path connect() and bind() take (sun_path less its NUL)
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


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
    TCP one waits. The connect is tried again after a pause that grows to a tenth of a second
    (not a blocking connect: a signal in its wait made Python's retry of it fail, EINVAL)."""
    where, fd = address(path)
    timeout = sock.gettimeout()
    try:
        if not timeout:               # blocking (waits by itself), or non-blocking by the caller's choice
            sock.connect(where)
            return
        deadline = time.monotonic() + timeout
        pause = 0.001
        while True:
            try:
                sock.connect(where)
                return
            except BlockingIOError:   # EAGAIN: no room in the backlog yet
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(errno.ETIMEDOUT, "no room in the listener's backlog", path) from None
                time.sleep(min(pause, left))
                pause = min(pause * 2, 0.1)
    finally:
        if fd is not None:
            os.close(fd)


def client(path, timeout):
    """A connected stream socket (_socket.socket) to `path`; OSError as connect() raises it."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)        # its ioctl may fail too: the socket is not kept then
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
