"""The parent's workers: forked on demand, one connection at a time each, retired by use and idleness.

A connection goes to the most recently idle worker (its pages are the
warmest), else to a new one. A worker's `end CODE` is logged as tcpserver
logs a child's end (`end PID status CODE*256`); a worker that dies in a
session (kill -9, a crash) is logged with its raw wait status, as a child
would be. Retiring a worker is closing its channel: it sees the end and
exits 0, unlogged (a busy one after its session; its exit code is that
session's when its `end` can no longer be sent, and the parent, counting it
busy, logs it). The parent holds one channel per living worker and nothing
per connection, so its fds and memory follow the number of workers, never
the number of connections.
"""
import os
import select
import socket
import time

from qmailpy.errstr import error_str
from qmailpy.tcpserver import worker
from qmailpy.tcpserver.child import DROP

MAX_USE = 100       # sessions per worker, as Postfix's max_use
MAX_IDLE = 60       # seconds a worker waits for a connection before it is retired
PAUSE = 0.05        # seconds the loop waits after a failed poll, accept or read, not to spin


class Worker:
    __slots__ = ("pid", "chan", "busy", "uses", "idle_since")

    def __init__(self, pid, chan):
        self.pid, self.chan = pid, chan
        self.busy, self.uses, self.idle_since = False, 0, 0.0


class Pool:
    """Workers of one server; `log` writes a log line, `status` logs the running count."""

    def __init__(self, opts, runner, base_env, log, status):
        self.opts, self.runner, self.base_env = opts, runner, base_env
        self.log, self.status = log, status
        self.max_use = opts.max_use or MAX_USE
        self.max_idle = opts.max_idle or MAX_IDLE
        self.workers = {}       # pid -> Worker, until reaped (retired ones included)
        self.by_fd = {}         # channel fd -> Worker, for the workers that may still report
        self.idle = []          # idle Workers, the most recently idle last
        self.busy = 0
        self.poller = select.poll()

    def hand(self, sock, peer, parent_socks, parent_fds):
        """Give the accepted `sock` to a worker; False when no worker could be had (fork
        failed: logged as tcpserver logs it)."""
        message = worker.connection_message(peer)
        while True:
            fresh = not self.idle
            w = self._fork(parent_socks + [sock], parent_fds) if fresh else self.idle.pop()
            if w is None:
                return False
            try:
                socket.send_fds(w.chan, [message], [sock.fileno()], socket.MSG_DONTWAIT)
            except OSError as e:        # an idle worker that died: the next one; a new one: give up
                self.retire(w)
                if not fresh:
                    continue
                self._dropping("unable to hand over", e)
                return False
            w.busy = True
            self.busy += 1
            return True

    def _dropping(self, what, e):
        """tcpserver's warning for a connection no worker got (qmail's errno wording)."""
        self.log(DROP + what + ": " + error_str(e))

    def _fork(self, parent_socks, parent_fds):
        """A new Worker, or None (logged) when there is no socket pair or no fork to be had."""
        try:
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError as e:            # out of fds: as a failed fork
            self._dropping("unable to fork", e)
            return None
        try:
            pid = os.fork()
        except OSError as e:
            mine.close()
            theirs.close()
            self._dropping("unable to fork", e)
            return None
        if pid == 0:
            for s in parent_socks + [mine] + [w.chan for w in self.workers.values()]:
                if s.fileno() != -1:
                    os.close(s.detach())
            for fd in parent_fds:
                os.close(fd)
            worker.serve(theirs, self.opts, self.runner, self.base_env)
        theirs.close()
        w = Worker(pid, mine)       # a blocking channel (no call that could fail here): the parent's
        self.workers[pid] = w       # sends and reads on it are MSG_DONTWAIT
        self.by_fd[mine.fileno()] = w
        self.poller.register(mine.fileno(), select.POLLIN)
        return w

    def retire(self, w):
        """Close the worker's channel: it exits when it sees the end (a busy one after its session)."""
        if w in self.idle:
            self.idle.remove(w)
        fd = w.chan.fileno()
        if self.by_fd.pop(fd, None) is not None:
            self.poller.unregister(fd)
            w.chan.close()

    def retire_all(self):
        """Retire every worker, busy or not (SIGTERM): a busy one ends its session first."""
        for w in list(self.workers.values()):
            self.retire(w)

    def retire_idle(self, now):
        """Retire the workers idle for max_idle; the seconds until the next one is due (None: no
        idle worker)."""
        for w in list(self.idle):
            if now - w.idle_since >= self.max_idle:
                self.retire(w)
        if not self.idle:
            return None
        return max(0.0, min(w.idle_since for w in self.idle) + self.max_idle - now)

    def wait(self, extra_fds, timeout):
        """Poll the channels and `extra_fds`; the ready extra fds (channels' news is handled)."""
        for fd in extra_fds:
            self.poller.register(fd, select.POLLIN)
        try:                # EINTR: retried by Python (PEP 475); a signal wakes it through the wake-up fd
            ready = self.poller.poll(None if timeout is None else timeout * 1000)
        except OSError:     # ENOMEM: nothing is ready; the loop polls again, after a pause that
            time.sleep(PAUSE)   # keeps a lasting failure from spinning
            ready = []
        finally:
            for fd in extra_fds:
                self.poller.unregister(fd)
        got = []
        for fd, _ in ready:
            w = self.by_fd.get(fd)
            if w is None:
                got.append(fd)
            else:
                self._news(w)
        return got

    def _news(self, w):
        """What a worker's channel says: a session's end, or the worker's own end (EOF)."""
        try:
            data = w.chan.recv(worker.MESSAGE_MAX, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:                     # a channel we cannot read: the worker is let go (it exits
            self.retire(w)                  # when it sees the channel's end) and reap() logs the
            return                          # session's end by its exit, freeing its slot
        if not data:                        # it died: reap() logs it
            fd = w.chan.fileno()
            self.by_fd.pop(fd, None)
            self.poller.unregister(fd)
            return
        code = worker.parse_end(data)
        if code is None or not w.busy:
            return
        self._ended(w, code << 8)
        w.uses += 1
        if w.uses >= self.max_use:
            self.retire(w)
        elif w.chan.fileno() in self.by_fd:
            w.idle_since = time.monotonic()
            self.idle.append(w)

    def _ended(self, w, status):
        w.busy = False
        self.busy -= 1
        if self.opts.verbosity >= 2:
            self.log("tcpserver: end %d status %d" % (w.pid, status))
        self.status()

    def reap(self):
        """Collect dead workers; one that died in a session logs that session's end. False when
        waitpid failed with workers left (ECHILD included: one is dead and not reaped, or the count
        is wrong): the caller looks again soon."""
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except OSError:                 # as tcpserver's wait_nohang() loop: stop for now
                return False
            if pid == 0:
                return True
            w = self.workers.pop(pid, None)
            if w is None:
                continue
            if w.busy and w.chan.fileno() in self.by_fd:
                self._news(w)              # an end it sent before dying
            if w.busy:
                self._ended(w, status)
            self.retire(w)
            w.chan.close()                  # retire() leaves it open when the worker's end was seen first
        return True
