"""qmail-todo (ext-todo): preprocesses todo/ so qmail-send only schedules.

fds (set up by qmail-send): 0 = bytes from qmail-send (S start, H reread
controls, X stop), 1 = records to qmail-send (qmailpy.proto.todowire), 2 = stderr,
3 = requests to its own qmail-clean, 4 = qmail-clean's answers, 5 = the
held lock/sendmutex (never touched: a new qmail-send waits for it). Woken by
one byte in lock/trigger (qmail-queue's triggerpull), and scans todo/ at
least every SLEEP_TODO seconds anyway, but not before qmail-send's S: it
rebuilds its queues from info/ first, and a message both found there and
reported by us later could be finished before our report, which would then
queue a message that is gone (qmail-todo.c waits for that byte too). Messages go in batches of up to
BATCH (todo.preprocess_many: their files fsynced together by FSYNC_THREADS
threads, so one journal commit covers many). End of input on fd 0
(qmail-send died) stops it at once; X or SIGTERM stop it after the current
batch, with a final X record. Exit 0, or 111 when it cannot start.
"""
import os
import select
import selectors
import signal

from qmailpy import clock, exitcodes as X, paths
from qmailpy.ctl.reader import ControlError
from qmailpy.ctl.watch import FailedReread, WatchedControls
from qmailpy.fileio import write_all
from qmailpy.log import guard, write_line
from qmailpy.progstart import start
from qmailpy.proto import todowire
from qmailpy.queue import layout
from qmailpy.send.cleanclient import CleanClient, CleanDied
from qmailpy.send.rewrite import rewriter
from qmailpy.send.todo import fsync_each, fsync_ok, preprocess_many

FROM_SEND, TO_SEND, TO_CLEAN, FROM_CLEAN = 0, 1, 3, 4
BATCH = 64             # messages preprocessed at once
FSYNC_THREADS = 16     # fsyncs in flight at once


class ParallelFsync:
    """fsync_many for preprocess_many(): the fsyncs of a batch in parallel threads (the GIL is
    released in fsync), so the file system's journal commits them together."""

    def __init__(self, threads=FSYNC_THREADS):
        self.threads, self.pool = threads, None

    def __call__(self, fds):
        if len(fds) < 2:
            return fsync_each(fds)
        if self.pool is None:
            from concurrent.futures import ThreadPoolExecutor
            self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="fsync")
        return list(self.pool.map(fsync_ok, fds))


class Todo:
    """State of the qmail-todo loop; signal handlers only set flags."""

    def __init__(self, home, environ, clk):
        self.home, self.environ, self.clock = home, environ, clk
        self.controls = WatchedControls(home, environ)
        self.rewriter = self.read_controls(self.controls)
        self.failed = FailedReread()
        self.cleaner = CleanClient(TO_CLEAN, FROM_CLEAN)
        self.stop = self.reload = self.started = False
        self.send_alive = True
        self.next_scan = 0.0
        self.fsync_many = ParallelFsync()

    def send(self, data):
        """Records for qmail-send. One that cannot be written stops us at once: qmail-clean has
        already removed the todo/ files of the messages it reports, so taking more would leave
        them in info/ unknown to qmail-send until it restarts; qmail-send, seeing us gone, dies
        and (started again) finds every one of them in info/."""
        if not self.send_alive:
            return
        try:
            write_all(TO_SEND, data)
        except OSError as e:
            self.send_alive, self.stop = False, True
            write_line(2, "alert: qmail-todo: unable to write to qmail-send: %s; exiting" % (e.strerror or e))

    def log(self, text):
        self.send(todowire.encode_log(text))

    def stop_asap(self):
        """qmail-todo.c's sigterm(), for SIGTERM and for qmail-send's X alike: its log line
        once, then stop after the current message."""
        if not self.stop:
            self.log("status: qmail-todo stop processing asap")
        self.stop = True

    def read_controls(self, controls):
        """The rewriting rules from `controls`, every control qmail-todo reads read now
        (ControlError if one cannot be used)."""
        return rewriter(controls.require("qmail-todo"))

    def do_reload(self, asked=True):
        """Reread the controls (`asked`: on qmail-send's H, else because a file changed). The
        new controls are taken with the new rules or not at all: after a reread that failed,
        the old ones still see the changed file, so fresh() tries again before each next batch
        (had the new ones been kept, having stamped the file as they read it, the change, and
        setsrssecret's new key, would be lost until the next change or H). The alert is said
        at each H, and otherwise again only when a file has changed since it was last said."""
        self.reload = False
        controls = WatchedControls(self.home, self.environ)
        try:
            self.rewriter = self.read_controls(controls)
        except OSError as e:
            if self.failed.said(controls, asked):
                if isinstance(e, ControlError):     # ext-todo's `alert: qmail-todo: unable to reread control/locals`
                    self.log("alert: qmail-todo: unable to reread %s" % e)
                else:
                    self.log("alert: qmail-todo: unable to reread controls: %s" % e)
            return
        self.controls = controls
        self.failed.cleared()

    def fresh(self):
        """Reread the controls after qmail-send's H, or when a file they came from has changed
        (ctl.watch: a SIGHUP is asynchronous, a message queued right after an edit is not)."""
        if self.reload:
            self.do_reload()
        elif self.controls.changed():
            self.do_reload(asked=False)

    def commands(self, data):
        if not data:
            self.send_alive = False          # qmail-send is gone: nobody to tell
            self.stop = True
            return
        for ch in data:
            if ch == todowire.START[0]:
                self.started = True
            elif ch == todowire.RELOAD[0]:
                self.reload = True
            elif ch == todowire.EXIT[0]:
                self.stop_asap()
            else:
                self.log("warning: qmail-todo: qmail-send speaks an obscure dialect")

    def poll_send(self):
        """Between two messages: take qmail-send's H/X (or its death) into account."""
        if select.select([FROM_SEND], [], [], 0)[0]:
            self.commands(_from_send())

    def scan(self):
        self.next_scan = self.clock.now() + self.clock.delay(clock.SLEEP_TODO)
        try:
            names = os.listdir(paths.queue_path(self.home, "todo"))
        except OSError:            # qmail-todo.c's pausedir(): say so, try again in 10 s
            self.log("alert: unable to opendir todo, sleeping...")
            self.next_scan = self.clock.now() + self.clock.delay(clock.SLEEP_PAUSEDIR)
            return
        ids = sorted(layout.numeric_ids(names))
        for at in range(0, len(ids), BATCH):
            if self.stop:
                return
            self.fresh()
            for _, records, _ in preprocess_many(self.home, ids[at:at + BATCH], self.rewriter, self.cleaner,
                                                 layout.SPLIT, self.fsync_many):
                self.send(b"".join(records))
            self.poll_send()

    def scan_wait(self, now):
        """Seconds until todo/ is scanned again (0: now), never more than SLEEP_TODO."""
        self.next_scan = self.clock.capped(self.next_scan, now, clock.SLEEP_TODO)
        return max(0.0, self.next_scan - now)

    def wait_start(self, wakeup_fd):
        """Touch nothing in todo/ before qmail-send's S (or stop: X, SIGTERM, qmail-send gone)."""
        while not (self.started or self.stop):
            for fd in select.select([FROM_SEND, wakeup_fd], [], [])[0]:
                if fd == FROM_SEND:
                    self.commands(_from_send())
                else:
                    _drain(wakeup_fd)

    def run(self, trigger_fd, wakeup_fd):
        self.wait_start(wakeup_fd)
        if self.stop:                        # before qmail-send's S: nothing was started
            self.send(todowire.encode_exit())
            return 0
        sel = selectors.DefaultSelector()
        sel.register(FROM_SEND, selectors.EVENT_READ, "send")
        sel.register(trigger_fd, selectors.EVENT_READ, "trigger")
        sel.register(wakeup_fd, selectors.EVENT_READ, "signal")
        while not self.stop:
            if self.reload:
                self.do_reload()
            pulled = False
            timeout = self.scan_wait(self.clock.now())
            for key, _ in sel.select(min(timeout, clock.SLEEP_FOREVER)):
                if key.data == "send":
                    self.commands(_from_send())
                elif key.data == "trigger":
                    pulled = _drain(trigger_fd) or pulled
                else:
                    _drain(wakeup_fd)
            if self.stop:
                break
            if pulled or not self.scan_wait(self.clock.now()):
                self.scan()
        self.send(todowire.encode_exit())
        return 0


def _from_send():
    """What qmail-send wrote; b"" (end of file) when fd 0 cannot be read at all (qmail-todo
    started with it closed): qmail-send is gone to us either way."""
    try:
        return os.read(FROM_SEND, 64)
    except OSError:
        return b""


def _drain(fd):
    """Read every pending trigger byte; True if there was one."""
    got = False
    while True:
        try:
            if not os.read(fd, 1024):
                return got
            got = True
        except BlockingIOError:
            return got


USAGE = """usage: qmail-todo
Started by qmail-send on its pipes (fds 0 to 5), not by hand. See docs/qmail-todo.md."""


@guard("qmail-todo", X.EXIT_TROUBLE)
def main():
    start(USAGE)
    environ = os.environ
    home = os.path.abspath(paths.qmailhome(environ))
    for name in ("SIGPIPE", "SIGINT", "SIGALRM"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    try:
        todo = Todo(home, environ, clock.Clock(clock.parse_scale(environ)))
        # O_RDWR: we are a writer too, so the FIFO never reports end of file
        trigger_fd = os.open(layout.trigger_path(home), os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        what = "unable to read controls: " if isinstance(e, ControlError) else ""
        write_line(2, "alert: qmail-todo: cannot start: %s%s" % (what, e))
        return X.EXIT_TROUBLE

    def on_term(signum, frame):
        todo.stop_asap()

    def on_hup(signum, frame):
        todo.reload = True

    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_hup)
    try:
        return todo.run(trigger_fd, wake_r)
    except CleanDied:
        todo.log("alert: qmail-todo: oh no! lost qmail-clean connection! dying...")
        todo.send(todowire.encode_exit())
        return X.EXIT_TROUBLE
