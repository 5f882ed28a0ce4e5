"""qmail-queued: the queue service; what setuid qmail-queue was in qmail.

usage: qmail-queued (run by supervise from $QMAILHOME/service/qmail-queued)

Listens on $QMAILHOME/sock/qmail-queue (mode 0666 in a directory 0755: any
local process may queue a message, as anyone may run qmail-queue) and does
qmail-queue's whole job for each connection (qmailpy.queued.conn), one thread
per connection, at most MAX_CLIENTS at once (more are answered 71 at once), of
which one uid holds at most MAX_PER_UID unless it is root, the service's own
or one of qmail's (qmaild, qmails, alias), and those uids together at most
MAX_LIMITED: in qmail a stalled qmail-queue is its caller's own process, so
local users who connect and send nothing must not keep everybody else from
queueing until timeoutqueue.
Started as root it binds the socket (sock/ stays root's: no service's user
may replace another service's socket) and becomes qmailq (group qmail, no
other group), the queue's owner; in single-user mode (QMAILPY_SINGLEUSER,
`make run`, tests), or where no qmailq user exists, it stays who started it.
The socket is bound under a temporary name and renamed into place, so a
restarted service replaces it in one step; it is left in place when the
service stops (clients then get 73, "connection to mail server rejected",
a temporary error) so that nobody falls back to writing the queue.
SIGTERM (or SIGINT): stop accepting, give the running insertions STOP_WAIT seconds, exit.
Log lines on fd 2: start, stop, and each insertion that failed.
"""
import os
import signal
import socket
import sys
import threading
import time

from qmailpy import exitcodes as X
from qmailpy import paths
from qmailpy.fileio import fsync_dir
from qmailpy.log import bug_text, guard, write_line
from qmailpy.queue.groupsync import GroupSync
from qmailpy.unixsock import peer_credentials

MAX_CLIENTS = 500              # connections served at once; tcpsessioncount is 40 by default
MAX_PER_UID = 100              # ... of them one ordinary uid may hold (an insertion takes milliseconds)
MAX_LIMITED = MAX_CLIENTS // 2  # ... and all ordinary uids together: qmail's users keep the rest
BACKLOG = 128
ACCEPT_LOG_EVERY = 60          # seconds between two lines of the same failing accept()
STOP_WAIT = 10                 # seconds SIGTERM leaves to the insertions under way
STACK = 1 << 20                # per thread: enqueue() and the filter clients are shallow
ENVELOPES_MAX = 256 << 20      # memory the envelopes being read may take, all clients together (queued.conn);
                               # ordinary users half of it, each one message's (conn.ENVELOPE_MAX)


def log(text):
    write_line(2, "qmail-queued: %s" % text)


def prepare_socket_dir(home):
    """sock/, made 0755 if missing. As root it must be root's and writable by root alone:
    the services' sockets there (sock/qmail-queue, sock/users) are bound by root, and
    none of the services' users may replace another's socket."""
    d = os.path.dirname(paths.queue_socket(home))
    try:
        os.mkdir(d, 0o755)
    except FileExistsError:
        pass
    if os.geteuid() == 0:
        st = os.stat(d)
        if st.st_uid != 0 or st.st_mode & 0o022:
            log("warning: %s was uid %d mode %04o: made root's, 0755" % (d, st.st_uid, st.st_mode & 0o7777))
            os.chown(d, 0, 0)
            os.chmod(d, 0o755)
    return d


def listen(home):
    """The listening socket at sock/qmail-queue, 0666, put there by rename."""
    from qmailpy.unixsock import listen_at
    return listen_at(paths.queue_socket(home), BACKLOG)


def become_queue_owner(environ):
    """As root (not single-user): become qmailq:qmail, no other group. The user we end up as."""
    import pwd
    from qmailpy.privs import QUEUE_USER, become, drops_privileges
    if drops_privileges(environ):
        if become(QUEUE_USER):
            return QUEUE_USER
        log("warning: no user %s: running as root" % QUEUE_USER)
        return "root"
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return "uid %d" % os.getuid()


def unlimited_uids():
    """The uids MAX_PER_UID does not apply to: root, ours, and the qmail users that qmail-queue
    names in its Received line (qmail-smtpd's sessions, qmail-send's bounces, alias's deliveries)."""
    import pwd
    from qmailpy.queue.enqueue import NAMED_USERS
    uids = {0, os.geteuid()}
    for name in NAMED_USERS:
        try:
            uids.add(pwd.getpwnam(name).pw_uid)
        except KeyError:
            pass
    return frozenset(uids)


def close_client(conn):
    """Close a client's socket. Linux frees the descriptor even when close() fails, and the
    answer was sent or not before: a failure changes nothing, and must not stop the accept
    loop nor keep a finished client counted as active (a full house for ever)."""
    try:
        conn.close()
    except OSError:
        pass


class Service:
    def __init__(self, home, environ, listener):
        self.home, self.environ, self.listener = home, environ, listener
        self.lock = threading.Lock()
        self.todo_sync = GroupSync(fsync_dir)    # one fsync of todo/ for the commits made meanwhile
        from qmailpy.queued.conn import ENVELOPE_MAX, Budget
        self.envelopes = Budget(ENVELOPES_MAX, ENVELOPES_MAX // 2, ENVELOPE_MAX)
        self.active = 0
        self.per_uid = {}                        # uid -> connections it holds (limited uids only)
        self.limited = 0                         # connections the limited uids hold together
        self.unlimited = unlimited_uids()
        self.idle = threading.Condition(self.lock)
        self.stopping = False
        self.conns = set()                       # the clients' sockets while their insertions run
        self.accept_reason, self.accept_logged, self.accept_failures = None, 0.0, 0

    def stop(self, signum=None, frame=None):
        """SIGTERM: no new connections (accept() fails at once); serve_forever() returns."""
        self.stopping = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def controls(self):
        """Fresh controls per message, as qmail-queue reads them per exec: a changed file counts at
        once. Their environment is a copy of the service's without the origin names
        (qmailpy.proto.qqsock ORIGIN_NAMES), which the message's own origin frame adds to."""
        from qmailpy.ctl.reader import Controls
        from qmailpy.proto.qqsock import ORIGIN_NAMES
        return Controls(self.home, {k: v for k, v in self.environ.items() if k not in ORIGIN_NAMES})

    def serve_forever(self):
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except OSError as e:
                if self.stopping:
                    return
                self.accept_failed(e.strerror)           # EMFILE and the like: a moment, then on
                time.sleep(0.1)
                continue
            try:
                pid, uid, _ = peer_credentials(conn)  # the kernel's, taken at connect
            except OSError as e:                      # no uid to name: refused for now, the service goes on
                self.refuse(conn, "unable to get a client's credentials: %s: one refused for now" % e.strerror,
                            "qmail-queued cannot identify the client")
                continue
            limited = uid not in self.unlimited
            with self.lock:
                busy = self.active >= MAX_CLIENTS
                crowded = not busy and limited and self.per_uid.get(uid, 0) >= MAX_PER_UID
                shared = not (busy or crowded) and limited and self.limited >= MAX_LIMITED
                if not (busy or crowded or shared):
                    self.active += 1
                    self.conns.add(conn)         # from now on: a thread not yet running is cut short too
                    if limited:
                        self.per_uid[uid] = self.per_uid.get(uid, 0) + 1
                        self.limited += 1
            if busy:
                self.refuse_busy(conn)
                continue
            if crowded:
                self.refuse(conn, "uid %d holds %d connections: one refused for now" % (uid, MAX_PER_UID),
                            "too many connections from uid %d" % uid)
                continue
            if shared:
                self.refuse(conn, "ordinary users hold %d connections: one of uid %d refused for now"
                            % (MAX_LIMITED, uid), "qmail-queued is busy")
                continue
            try:
                threading.Thread(target=self.client, args=(conn, pid, uid), daemon=True).start()
            except RuntimeError as e:    # no thread to be had (a pids limit, no memory): 71, as a full house
                with self.lock:
                    self.conns.discard(conn)
                self.done(uid)
                self.refuse(conn, "unable to start a thread for a client: %s: one refused for now" % e,
                            "qmail-queued is busy")

    def accept_failed(self, reason, now=None):
        """Log a failed accept() the first time, then once a minute while it goes on (tries come
        every 0.1 s: without this, 36,000 lines an hour while no descriptor is left)."""
        now = time.monotonic() if now is None else now
        self.accept_failures += 1
        if reason != self.accept_reason or now - self.accept_logged >= ACCEPT_LOG_EVERY:
            more = self.accept_failures - 1
            log("warning: accept: %s" % reason + (" (%d more since the last line)" % more if more else ""))
            self.accept_reason, self.accept_logged, self.accept_failures = reason, now, 0

    def refuse_busy(self, conn):
        self.refuse(conn, "too many clients (%d): one refused for now" % MAX_CLIENTS, "qmail-queued is busy")

    def refuse(self, conn, logged, reason):
        from qmailpy.queued.conn import answer
        log(logged)
        answer(conn, X.QQ_TEMP_REFUSED, 0, reason)
        close_client(conn)

    def client(self, conn, pid, uid):
        from qmailpy.queued.conn import serve_client
        try:
            serve_client(conn, pid, uid, self.home, self.controls, log, self.todo_sync.sync, self.envelopes,
                         uid not in self.unlimited)
        except Exception as e:           # a bug outside the insertion itself: the client gets 74
            log("internal bug: " + bug_text(e))
        finally:
            with self.lock:
                self.conns.discard(conn)
            close_client(conn)
            self.done(uid)

    def finish(self, seconds):
        """After serve_forever(): the insertions under way get `seconds`; those still running
        then are cut short (their number is returned)."""
        left = self.wait_idle(seconds)
        if left:
            self.cut_short()
        return left

    def cut_short(self):
        """After STOP_WAIT: shut the sockets of the insertions still under way, so that none of
        their clients can get an answer from here on (the process exits; its threads stop
        wherever they are). Each client sees the connection end without an answer: qmail-smtpd's
        451, qmail-queue's exit. Without this a thread could still answer "queued" while the
        log says its insertion was cut short. What such a thread committed stays queued (the
        client retries: at least once, never lost)."""
        with self.lock:
            for conn in self.conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def done(self, uid):
        with self.lock:
            held = self.per_uid.get(uid)
            if held is not None:
                self.limited -= 1
                if held > 1:
                    self.per_uid[uid] = held - 1
                else:
                    del self.per_uid[uid]
            self.active -= 1
            if not self.active:
                self.idle.notify_all()

    def wait_idle(self, seconds):
        deadline = time.monotonic() + seconds
        with self.lock:
            while self.active:
                left = deadline - time.monotonic()
                if left <= 0:
                    return self.active
                self.idle.wait(left)
        return 0


USAGE = """usage: qmail-queued
The queue service: listens on $QMAILHOME/sock/qmail-queue and queues each
connection's message as qmail-queue does, as the queue's owner, naming the
caller's uid from the kernel. See docs/qmail-queued.md."""


@guard("qmail-queued", X.EXIT_TROUBLE)
def main():
    from qmailpy.progstart import start
    start(USAGE)
    if len(sys.argv) > 1:
        write_line(2, USAGE.split("\n", 1)[0])
        return 100
    environ = os.environ
    home = os.path.abspath(paths.qmailhome(environ))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)       # nothing to reread: controls are read per message
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        prepare_socket_dir(home)
        listener = listen(home)          # as root: nobody but root may replace it
        user = become_queue_owner(environ)
        os.umask(0o033)
    except OSError as e:
        log("alert: cannot start: %s" % e)
        time.sleep(1)                    # supervise restarts us: not in a tight loop
        return 111
    threading.stack_size(STACK)
    service = Service(home, environ, listener)
    signal.signal(signal.SIGTERM, service.stop)
    signal.signal(signal.SIGINT, service.stop)         # svc -i: the same, as qmail-send and qmail-usersd read it
    log("listening on %s as %s" % (paths.queue_socket(home), user))
    service.serve_forever()
    listener.close()
    left = service.finish(STOP_WAIT)
    log("exiting" + (" with %d insertions cut short" % left if left else ""))
    return 0
