"""The users service's loop: a selector for the connections, a few workers for the questions.

One thread reads and writes every connection without blocking (a client that
stalls, floods or sends garbage costs one file descriptor and is dropped at its
time-out or first bad line); complete questions go to WORKERS threads, each with
its own database handle (qmailpy.users.answers.Answers over controls that notice
a changed file), so a slow database delays only the questions waiting for it.
A connection has one question in flight at a time; questions sent ahead wait in
order. The caller's uid comes from the kernel (SO_PEERCRED) and decides what it
may ask (Peers); a refused caller gets REFUSED and is closed. The socket is 0666,
so the connections of callers that may ask nothing (strangers) are counted apart:
at most MAX_STRANGERS of them at once, never taking the places of MAX_CONNECTIONS.
A failing system call costs one connection at most, never the loop nor a worker:
a caller that cannot be told or a connection that cannot be watched is closed, and
finished answers are looked for at every round, so a lost wake-up delays one by a round.
"""
import os
import queue
import selectors
import socket
import threading
import time

from qmailpy.lazyload import forget
from qmailpy.log import bug_text
from qmailpy.proto import userswire as W
from qmailpy.unixsock import peer_credentials
from qmailpy.usersd.questions import answer, text

WORKERS = 8
MAX_CONNECTIONS = 512          # of the callers it answers
MAX_STRANGERS = 16             # of the uids that may ask nothing (they are only told REFUSED)
IDLE = 60.0             # seconds a connection may wait between questions
PARTIAL = 10.0          # seconds to finish a question once begun
ACCEPT_PAUSE = 0.5      # seconds the listener is left alone after accept() failed (EMFILE...)
READ_SIZE = 4096


class Conn:
    __slots__ = ("sock", "pid", "uid", "lines", "waiting", "out", "busy", "closing", "draining", "deadline",
                 "stranger")

    def __init__(self, sock, pid, uid, deadline, stranger=False):
        self.sock, self.pid, self.uid = sock, pid, uid
        self.stranger = stranger    # a uid that may ask nothing
        self.lines = W.LineBuffer()
        self.waiting = []           # questions read while one is in flight
        self.out = b""
        self.busy = False
        self.closing = False        # close once `out` is written
        self.draining = False       # written and shut down: read (and drop) until the client closes
        self.deadline = deadline


class Server:
    """serve() until stop() (another thread, or a signal handler)."""

    def __init__(self, listener, make_answers, peers, log, workers=WORKERS, idle=IDLE, partial=PARTIAL,
                 clock=time.monotonic):
        self.listener, self.make_answers, self.peers, self.log = listener, make_answers, peers, log
        self.idle, self.partial, self.clock = idle, partial, clock
        self.nworkers = workers
        self.jobs = queue.Queue()
        self.done = queue.Queue()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        # serve() closes the pipe while stop() or a worker may wake; reentrant, because stop()
        # also runs from a signal handler, which may interrupt this thread holding it
        self.wake_lock = threading.RLock()
        self.sel = selectors.DefaultSelector()
        self.conns = {}
        self.strangers = 0          # how many of conns are strangers'
        self.running = True
        self.accept_again = None    # when to watch the listener again (accept() failed)

    def stop(self):
        self.running = False
        self._wake()

    def _wake(self):
        """Wake the loop; nothing once serve() has ended and closed the pipe (stop() racing
        the loop's own exit, a worker finishing after it): never a write to a closed fd,
        nor to whatever file took its number since."""
        with self.wake_lock:
            if self.wake_w is None:
                return
            try:
                os.write(self.wake_w, b"x")
            except OSError:
                pass                # a wake-up is pending already (EAGAIN), or lost: the loop
                                    # looks for finished questions at each round anyway

    # -- workers
    def _work(self):
        answers = None
        while True:
            job = self.jobs.get()
            if job is None:
                break
            conn, word, fields = job
            try:
                if answers is None or answers.stale():
                    if answers is not None:
                        answers.close()
                    answers = self.make_answers()
                line = answer(answers, word, fields)
            except Exception as e:      # never lose the connection's answer: say "not now"
                self.log("error", question=word, reason="internal bug: " + bug_text(e))
                if isinstance(e, ImportError):
                    forget()            # a module not readable now (EIO): tried again next time
                line = W.encode_answer("TEMP", "internal error")
                if answers is not None:
                    answers.close()
                    answers = None
            if line.startswith(b"TEMP "):
                self.log("tempfail", question=word, uid=conn.uid, reason=text(W.decode_answer(line)[1][0]))
            self.done.put((conn, line))
            self._wake()
        if answers is not None:
            answers.close()

    # -- the loop
    def serve(self):
        threads = [threading.Thread(target=self._work, daemon=True) for _ in range(self.nworkers)]
        for t in threads:
            t.start()
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        try:
            while self.running:
                wait = 1.0 if self.accept_again is None else min(1.0, max(0.0, self.accept_again - self.clock()))
                for key, events in self.sel.select(timeout=wait):
                    if key.data is None:
                        self._accept()
                    elif key.data == "wake":
                        self._woken()
                    else:
                        if events & selectors.EVENT_READ:
                            self._read(key.data)
                        if events & selectors.EVENT_WRITE and key.data.sock.fileno() >= 0:
                            self._flush(key.data)
                self._finished()
                self._expire()
                self._listen_again()
        finally:
            for _ in threads:
                self.jobs.put(None)
            for conn in list(self.conns.values()):
                self._close(conn)
            self.sel.close()
            with self.wake_lock:
                wake_w, self.wake_w = self.wake_w, None     # first: a handler run here finds None
                os.close(self.wake_r)
                os.close(wake_w)

    def _accept(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                # EMFILE and the like: the listener stays readable, so the connections wait in
                # the backlog for ACCEPT_PAUSE, not a round (and a log line) per failure
                self.log("error", reason="accept: %s" % (e.strerror or e))
                self.sel.unregister(self.listener)
                self.accept_again = self.clock() + ACCEPT_PAUSE
                return
            try:
                pid, uid, _ = peer_credentials(sock)
                sock.setblocking(False)
            except OSError as e:        # the caller unknown: closed, as if it had gone
                self.log("error", reason="accept: %s" % (e.strerror or e))
                sock.close()
                continue
            stranger = not self.peers.knows(uid)
            if (self.strangers >= MAX_STRANGERS if stranger
                    else len(self.conns) - self.strangers >= MAX_CONNECTIONS):
                self.log("refused", uid=uid, pid=pid, reason="too many connections")
                sock.close()
                continue
            conn = Conn(sock, pid, uid, self.clock() + self.idle, stranger)
            self.conns[sock.fileno()] = conn
            self.strangers += stranger
            self._interest(conn)

    def _listen_again(self):
        if self.accept_again is None or self.clock() < self.accept_again:
            return
        try:
            self.sel.register(self.listener, selectors.EVENT_READ, None)
        except OSError as e:
            self.log("error", reason="unable to watch the socket: %s" % (e.strerror or e))
            self.accept_again = self.clock() + ACCEPT_PAUSE
            return
        self.accept_again = None

    def _read(self, conn):
        try:
            data = conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return self._close(conn)
        if not data:
            return self._close(conn)
        if conn.draining:
            return
        try:
            conn.waiting += conn.lines.feed(data)
        except W.WireError as e:
            return self._fail(conn, "BAD", str(e))
        conn.deadline = self.clock() + (self.partial if conn.lines.buf else self.idle)
        self._next(conn)

    def _next(self, conn):
        """Hand the connection's next question to a worker, unless one is in flight."""
        if conn.busy or conn.closing or not conn.waiting:
            return self._interest(conn)
        line = conn.waiting.pop(0)
        try:
            word, fields = W.decode_question(line)
        except W.WireError as e:
            return self._fail(conn, "BAD", str(e))
        if not self.peers.allows(conn.uid, word):
            self.log("refused", uid=conn.uid, pid=conn.pid, question=word)
            return self._fail(conn, "REFUSED", "uid %d may not ask %s" % (conn.uid, word))
        conn.busy = True
        self.jobs.put((conn, word, fields))
        self._interest(conn)

    def _woken(self):
        try:
            while os.read(self.wake_r, 4096):
                pass
        except OSError:             # emptied (EAGAIN), or not now: _finished() runs either way
            pass

    def _finished(self):
        """Write the answers the workers have finished (each round: a wake-up may be lost)."""
        while True:
            try:
                conn, line = self.done.get_nowait()
            except queue.Empty:
                return
            if conn.sock.fileno() < 0:
                continue                # closed meanwhile
            conn.busy = False
            conn.deadline = self.clock() + self.idle
            conn.out += line
            if line.startswith(b"BAD "):    # a question it cannot parse the arguments of
                self.log("bad", uid=conn.uid, pid=conn.pid, reason=text(W.decode_answer(line)[1][0]))
                conn.waiting, conn.closing = [], True
            self._flush(conn)
            if conn.sock.fileno() >= 0:
                self._next(conn)

    def _fail(self, conn, word, reason):
        if word == "BAD":
            self.log("bad", uid=conn.uid, pid=conn.pid, reason=reason)
        conn.waiting = []
        conn.closing = True
        conn.out += W.encode_answer(word, reason)
        self._flush(conn)

    def _flush(self, conn):
        try:
            while conn.out:
                conn.out = conn.out[conn.sock.send(conn.out):]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            return self._close(conn)
        if conn.closing and not conn.out and not conn.draining:
            # the last answer is out: shut our side, and read what the client still sends until
            # it closes (or PARTIAL passes), so that closing never discards our answer with a reset
            conn.draining = True
            conn.deadline = self.clock() + self.partial
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                return self._close(conn)
        self._interest(conn)

    def _interest(self, conn):
        """Watch for reads when the connection may send its next question (its answers so far
        written: a client that never reads them must not grow `out`), for writes while its
        answer is not all out; nothing while a worker has its question."""
        if conn.sock.fileno() < 0:
            return
        events = selectors.EVENT_WRITE if conn.out else 0
        if conn.draining or not (conn.busy or conn.closing or conn.waiting or conn.out):
            events |= selectors.EVENT_READ
        try:
            key = self.sel.get_key(conn.sock)
        except KeyError:
            key = None
        try:
            if not events:
                if key is not None:
                    self.sel.unregister(conn.sock)
            elif key is None:
                self.sel.register(conn.sock, events, conn)
            elif key.events != events:
                self.sel.modify(conn.sock, events, conn)
        except OSError as e:
            # epoll_ctl failed (ENOMEM, ENOSPC; EEXIST after a failed EPOLL_CTL_DEL, which
            # selectors ignores): the connection cannot be watched, so it is closed (its client: 454)
            self.log("error", uid=conn.uid, pid=conn.pid, reason="unable to watch the connection: %s"
                     % (e.strerror or e))
            self._close(conn)

    def _expire(self):
        now = self.clock()
        for conn in list(self.conns.values()):
            if not conn.busy and now > conn.deadline:
                if (conn.lines.buf or conn.out) and not conn.draining:
                    self.log("timeout", uid=conn.uid, pid=conn.pid)
                self._close(conn)

    def _close(self, conn):
        fd = conn.sock.fileno()
        if fd < 0:
            return
        try:
            self.sel.unregister(conn.sock)
        except KeyError:
            pass
        if self.conns.pop(fd, None) is not None:
            self.strangers -= conn.stranger
        conn.sock.close()
