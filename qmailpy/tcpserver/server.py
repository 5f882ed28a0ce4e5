"""The listening parent: bind, drop privileges, accept within -c, hand each connection to a worker.

As tcpserver: while -c sessions run it accepts nothing (the kernel's backlog
holds new clients) until one ends; each session's end is logged as a
child's, with its wait status. Signals reach the loop through a wake-up
pipe, so a worker that dies however it dies (kill -9 included) is only an
`end` line here: the listener is never in a worker's hands. SIGTERM exits 0
at once, as tcpserver's: the listener is closed (new clients are refused
until supervise has started the next server, which binds at once) and every
worker is retired; a running session goes on in its worker to its end,
unlogged, as a child of tcpserver goes on alone. SIGINT kills it, as it kills tcpserver
(the sessions go on the same way). SIGHUP does nothing: every setting a session uses (controls, the rules cdb) is read
per connection. The workers are qmailpy.tcpserver.pool's.
"""
import gc
import os
import signal
import socket
import time

from qmailpy.errstr import error_str
from qmailpy.log import write_line
from qmailpy.tcpserver.pool import PAUSE, Pool

FATAL = "tcpserver: fatal: "
REAP_AGAIN = 1.0    # seconds until a failed waitpid is tried again


class Fatal(Exception):
    """Start-up failed: message for `tcpserver: fatal: `, exit 111; a failed system call in
    qmail's errno wording (qmailpy.errstr), as tcpserver's strerr_die2sys writes it."""


def listen(opts):
    """The bound, listening socket for host and port (an IPv6 host: an IPv6 socket)."""
    port = _port(opts.port)
    host = opts.host
    family = opts.family
    if family == socket.AF_INET and not _is_ipv4(host):
        try:
            host = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
        except OSError:
            raise Fatal("no IP address for " + opts.host) from None
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise Fatal("unable to bind: " + error_str(e)) from None
        s.listen(opts.backlog)
    except BaseException:
        s.close()
        raise
    return s


def _is_ipv4(host):
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() and len(p) <= 3 for p in parts)


def _port(text):
    if text.isdigit():
        return int(text)
    try:
        return socket.getservbyname(text, "tcp")
    except OSError:
        raise Fatal("unable to figure out port number for " + text) from None


def drop_privileges(opts):
    """-g then -u, as tcpserver's prot_gid (the only group) and prot_uid; 0 keeps what we are."""
    try:
        if opts.gid:
            os.setgroups([opts.gid])
            os.setgid(opts.gid)
    except OSError as e:
        raise Fatal("unable to set gid: " + error_str(e)) from None
    try:
        if opts.uid:
            os.setuid(opts.uid)
    except OSError as e:
        raise Fatal("unable to set uid: " + error_str(e)) from None


class Server:
    """The accept loop over one listener, its connections run by a Pool of workers."""

    def __init__(self, opts, runner, listener, base_env):
        self.opts, self.listener = opts, listener
        self.stopping = False
        self.log = (lambda line: write_line(2, line)) if opts.verbosity else (lambda line: None)
        self.pool = Pool(opts, runner, base_env, self.log, self.status)

    def status(self, running=None):
        if self.opts.verbosity >= 2:
            count = self.pool.busy if running is None else running
            self.log("tcpserver: status: %d/%d" % (count, self.opts.limit))

    def _term(self, signum, frame):
        self.stopping = True

    def catch_signals(self):
        """Signals reach the loop through a pipe; call before announcing the port (-1)."""
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
            os.set_inheritable(fd, False)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.signal(signal.SIGTERM, self._term)
        signal.signal(signal.SIGHUP, lambda signum, frame: None)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_DFL)     # svc -i: killed by it, as tcpserver, no traceback

    def run(self):
        """Serve until SIGTERM, the last session's end and the last worker's exit: the exit code."""
        pool, wake_r = self.pool, self.wake_r
        self.listener.setblocking(False)
        gc.collect()
        gc.freeze()             # the loaded code stays shared with every worker (no copy-on-write by gc)
        self.status()
        while True:
            reaped = pool.reap()
            if self.stopping:
                self.listener.close()
                pool.retire_all()
                return 0
            timeout = pool.retire_idle(time.monotonic())
            if not reaped:                      # waitpid failed: look again in a second
                timeout = REAP_AGAIN if timeout is None else min(timeout, REAP_AGAIN)
            watch = [wake_r]
            if pool.busy < self.opts.limit:
                watch.append(self.listener.fileno())
            ready = pool.wait(watch, timeout)
            if wake_r in ready:
                self.drain(wake_r)
            if self.listener.fileno() in ready and not self.stopping:
                self.accept()

    @staticmethod
    def drain(wake_r):
        """Empty the signal pipe (its bytes only wake the loop up)."""
        try:
            while os.read(wake_r, 256):
                pass
        except BlockingIOError:
            pass
        except OSError:             # what is left wakes the next poll: a pause, not a spin
            time.sleep(PAUSE)

    def accept(self):
        # Linux: the accepted socket is blocking (accept4 without SOCK_NONBLOCK), as the session needs
        try:
            sock, peer = self.listener.accept()
        except (BlockingIOError, ConnectionAbortedError):
            return
        except OSError:             # out of fds and the like: tcpserver goes on, silently;
            time.sleep(PAUSE)       # a pause so that a lasting EMFILE does not spin
            return
        try:
            self.status(self.pool.busy + 1)     # counted before the hand-off, as tcpserver counts before its fork
            if not self.pool.hand(sock, peer, [self.listener], [self.wake_r, self.wake_w]):
                self.status()
        finally:
            sock.close()
