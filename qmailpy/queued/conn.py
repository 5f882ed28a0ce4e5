"""One client of qmail-queued: read its message and envelope, queue them, answer.

The work is qmail-queue's, done by the same code (qmailpy.queue.enqueue,
the controls and filters of qmailpy.queue.main), with three differences that
the socket brings: the caller's uid is the kernel's (SO_PEERCRED), never
anything the client says; the time limit (control timeoutqueue, qmail-queue's
alarm) is a deadline on every read from the client and on the filters
(clamd, spamd: qmailpy.filters.scan keeps to it), so a client that stalls,
or a filter that takes too long, ends with exit code 52 and holds only its
own thread; and the number of the insertion (`qp`: the Received line's
`qmail N`, intd's p record, qmail-smtpd's 250 reply) is this thread's kernel
id, unique among running tasks as qmail-queue's pid was, or, for an exec'd
qmail-queue (its request begins with qqsock.BY_PID), that process's pid as the
kernel gives it: the qp its caller prints, as with qmail.
"""
import os
import threading
import time

from qmailpy import exitcodes as X
from qmailpy.proto import qqsock
from qmailpy.queue.enqueue import QueueError, enqueue_all
from qmailpy.queue.main import attempt, content_filter, time_limit

ANSWER_TIMEOUT = 30            # seconds to hand over the answer to a client that does not read it
# qmail-queue writes the envelope into intd/ as it reads it; the service holds it in memory until
# the filters have run, so what envelopes may take is bounded: one message's (ENVELOPE_MAX) and
# all the clients' at once (the Service's Budget, of which an ordinary user holds one message's
# worth at most, and all of them half: the qmail users keep the rest). Past any of these the
# client gets 51, qmail-queue's code for memory ("qq out of memory", temporary), and nothing is queued.
RECORD_COST = 64               # what an address costs in memory beyond its bytes (a bytes object, its slot)
ENVELOPE_MAX = 32 << 20        # about 390,000 recipients of 20 bytes


class Budget:
    """Memory that the envelopes being read may take (thread-safe): `total` for all clients
    together; of it the uids the service limits (main.MAX_PER_UID: the ordinary users) hold
    `limited` at most together and `share` each, so that a user whose clients send an envelope
    and then wait (until timeoutqueue) cannot leave qmail-smtpd and qmail-send nothing: 51 for
    all the mail of the host. uid None: a client the service does not limit."""
    __slots__ = ("left", "limited_left", "share", "held", "lock")

    def __init__(self, total, limited=None, share=None):
        self.left = total
        self.limited_left = total if limited is None else limited
        self.share = total if share is None else share
        self.held = {}                  # limited uid -> what its clients hold
        self.lock = threading.Lock()

    def take(self, n, uid=None):
        with self.lock:
            if n > self.left:
                return False
            if uid is not None:
                held = self.held.get(uid, 0) + n
                if n > self.limited_left or held > self.share:
                    return False
                self.held[uid] = held
                self.limited_left -= n
            self.left -= n
            return True

    def give(self, n, uid=None):
        with self.lock:
            self.left += n
            if uid is not None:
                self.limited_left += n
                held = self.held.pop(uid, 0) - n
                if held > 0:
                    self.held[uid] = held


class ClientReader:
    """The message (read) and then the envelope (read_envelope) of one client, each read
    bounded by the deadline (time.monotonic()); the envelope's memory is taken from `budget`
    (the service's Budget) as it comes, on behalf of `uid` (None: a client the service does not
    limit), and given back by release()."""
    __slots__ = ("conn", "deadline", "frames", "budget", "uid", "taken", "pending")

    def __init__(self, conn, deadline, budget, uid=None):
        self.conn, self.deadline = conn, deadline
        self.frames = qqsock.MessageDecoder()
        self.budget, self.uid, self.taken = budget, uid, 0
        self.pending = b""            # message bytes start() read

    def start(self):
        """Read the request's first byte (qmailpy's clients send their mark, qqsock.BY_PID or
        BY_SERVICE, on connecting): the insertion's number depends on it, and comes before the
        mess file. Message bytes read with it are kept for read()."""
        try:
            while not self.frames.numbered:
                self.pending += self._feed(self._recv(65536))
        except OSError as e:        # before enqueue(), which names the others: 54, as qmail-queue's read error
            raise QueueError(X.QQ_READ_ERROR, "unable to read message: %s" % (e.strerror or e)) from None

    def _recv(self, n):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise QueueError(X.QQ_TIMEOUT, "timeout")
        self.conn.settimeout(left)
        try:
            return self.conn.recv(n)
        except TimeoutError:
            raise QueueError(X.QQ_TIMEOUT, "timeout") from None
        # any other OSError: enqueue() reports it as a read error (54)

    def _feed(self, data):
        if not data:
            raise QueueError(X.QQ_READ_ERROR, "unable to read message: the connection ended inside it")
        try:
            return self.frames.feed(data)
        except qqsock.FrameError as e:
            raise QueueError(e.code, "bad message stream: %s" % e) from None

    def read(self, n):
        """Message bytes; b"" once the end of the message has been read."""
        if self.pending:
            got, self.pending = self.pending, b""
            return got
        while not self.frames.done:
            got = self._feed(self._recv(n))
            if got:
                return got
        return b""

    def read_envelope(self, n):
        if self.frames.rest:
            data, self.frames.rest = self.frames.rest, b""
        else:
            data = self._recv(n)
        cost = len(data) + RECORD_COST * data.count(b"\0")
        if self.taken + cost > ENVELOPE_MAX:
            raise QueueError(X.QQ_NO_MEMORY, "out of memory: an envelope takes more than %d bytes" % ENVELOPE_MAX)
        if not self.budget.take(cost, self.uid):
            if self.uid is None:
                raise QueueError(X.QQ_NO_MEMORY, "out of memory: the envelopes being read take all there is")
            raise QueueError(X.QQ_NO_MEMORY, "out of memory: the envelopes being read take all users may hold")
        self.taken += cost
        return data

    def release(self):
        self.budget.give(self.taken, self.uid)
        self.taken = 0


class _Envelope:
    __slots__ = ("read",)

    def __init__(self, read):
        self.read = read


def trusted_origin(origin, uid):
    """The client's origin frame ({} without one) when it comes from qmail-smtpd's user (qmaild, or
    in single-user mode the service's own user); None when someone else sent one. Any local user
    may connect: only qmail-smtpd may say that mail came in over SMTP and what SPF said."""
    if not origin or uid == os.geteuid():
        return origin
    import pwd
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return None
    return origin if name == "qmaild" else None


def serve_client(conn, pid, uid, home, controls_for, log, dir_sync, budget, limited=False):
    """Queue what one connection sends and answer it; returns (code, qp, uid, pid) for the log.
    pid, uid: the client's, from the kernel (SO_PEERCRED, read once, where the service
    accepted it). dir_sync: the service's GroupSync.sync (one fsync of todo/ shared by
    concurrent commits). budget: the service's Budget for envelopes, held on behalf of uid when
    `limited` (an ordinary user's client, main.MAX_PER_UID)."""
    number = [threading.get_native_id()]     # the insertion's qp; an exec'd qmail-queue's pid (work())
    got = {}

    def work():
        controls = controls_for()
        reader = ClientReader(conn, time.monotonic() + time_limit(controls), budget, uid if limited else None)

        def filter_log(text):
            """The filters' lines (qmail-queue's stderr in-process), naming this insertion."""
            log("qp %d uid %d pid %d: %s" % (number[0], uid, pid, text))
        step = content_filter(controls, filter_log)

        def filter_step(staged):
            """The filters with the origin the client gave (read before the message by now), within
            the insertion's deadline as qmail-queue's alarm: past it, 52 and nothing queued."""
            origin = trusted_origin(reader.frames.origin, uid)
            if origin is None:
                log("qp %d uid %d pid %d: origin ignored: not qmail-smtpd's user" % (number[0], uid, pid))
            chosen = step
            if origin:              # this message's own environment: the files read stay cached
                controls.environ.update(origin)
                chosen = content_filter(controls, filter_log)
            staged.deadline = reader.deadline
            got = None if chosen is None else chosen(staged)
            if time.monotonic() > reader.deadline:
                raise QueueError(X.QQ_TIMEOUT, "timeout")
            return got
        try:
            reader.start()
            if reader.frames.by_pid and pid > 0:     # 0: a client the kernel cannot name in our pid namespace
                number[0] = pid
            got["ids"] = enqueue_all(home, reader, _Envelope(reader.read_envelope), uid, number[0], time.time(),
                                     content_filter=filter_step, dir_sync=dir_sync)
        finally:
            reader.release()

    code, reason = attempt(work)
    qp = number[0]
    if code:
        log("qp %d uid %d pid %d: code %d: %s" % (qp, uid, pid, code, reason))
    answer(conn, code, qp if code == 0 else 0, reason)
    return code, qp, uid, pid


def answer(conn, code, qp=0, reason=""):
    """Send the one answer; a client that went away gets nothing (its message is queued or not, as
    the code says: qmail's at-least-once after the commit)."""
    try:
        conn.settimeout(ANSWER_TIMEOUT)
        conn.sendall(qqsock.encode_answer(code, qp, reason))
    except OSError:
        pass
