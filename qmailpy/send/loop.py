"""qmail-send's main loop: one selector over the helpers' pipes and a signal pipe.

Each turn: apply SIGALRM (everything due now) and SIGHUP (reread controls,
tell qmail-todo H, qmail-lspawn SIGHUP), wait for a pipe or the next due
time, then write pending commands, take reports and qmail-todo's records,
and start what can start. A bounce going into qmail-queue is fed a few
chunks whenever its pipe is writable and finished when its pidfd says
qmail-queue exited, so it never holds up the rest. SIGTERM: no new
deliveries nor bounces, X to qmail-todo, wait for the running deliveries,
bounces and qmail-todo's X, persist retry times.
"""
import os
import selectors
import signal

from qmailpy import clock
from qmailpy.ctl.reader import ControlError, Controls
from qmailpy.proto import todowire
from qmailpy.send import finish
from qmailpy.send.cleanclient import CleanDied
from qmailpy.send.config import SendConfig


class Flags:
    __slots__ = ("exit", "run", "read")

    def __init__(self):
        self.exit = self.run = self.read = False


class Loop:
    def __init__(self, sched, todo, lspawn_pid, wake_fd, flags, environ):
        self.sched, self.todo, self.lspawn_pid = sched, todo, lspawn_pid
        self.wake_fd, self.flags, self.environ = wake_fd, flags, environ
        self.todo_alive, self.told_todo, self.clean_dead = True, False, False
        self.todo_decoder = todowire.RecordDecoder()
        self.sel = selectors.DefaultSelector()
        for ch in sched.channels:
            os.set_blocking(ch.fd_out, False)
            os.set_blocking(ch.fd_in, False)
            self.sel.register(ch.fd_in, selectors.EVENT_READ, ("reports", ch))
        os.set_blocking(todo.frm, False)
        self.sel.register(todo.frm, selectors.EVENT_READ, ("todo", None))
        self.sel.register(wake_fd, selectors.EVENT_READ, ("signal", None))
        self.writing = set()
        self.injecting = {}                # Injection -> its pipe registered for writing (or None)

    def log(self, text):
        self.sched.log.line(text)

    def reread(self):
        """SIGHUP: qmail-send.c's reread(); a control it cannot use keeps the old values, logged
        as qmail's `alert: unable to reread control/locals` plus the line and the reason."""
        sched = self.sched
        try:
            config = SendConfig(Controls(sched.home, self.environ))
        except ControlError as e:
            self.log("alert: unable to reread %s" % e)
            return
        except OSError as e:
            self.log("alert: unable to reread controls: %s" % e)
            return
        sched.config = config
        for ch, wanted in zip(sched.channels, config.concurrency):
            ch.set_concurrency(wanted)
        self.tell_todo(todowire.RELOAD)
        try:
            os.kill(self.lspawn_pid, signal.SIGHUP)
        except OSError:
            pass
        sched.status()

    def tell_todo(self, byte):
        """S, H or X to qmail-todo. One that cannot be written (qmail-todo gone, the pipe broken)
        is a lost qmail-todo, as in ext-todo's todo_init(): without S qmail-todo never starts and
        nothing would take messages out of todo/; supervise starts us again."""
        if self.todo_alive:
            try:
                os.write(self.todo.to, byte)
            except OSError:
                self.todo_gone()

    def spawndied(self, ch):
        self.log("alert: oh no! lost spawn connection! dying...")
        ch.alive = False
        self.flags.exit = True
        self.sel.unregister(ch.fd_in)

    def on_todo(self, now):
        try:
            data = os.read(self.todo.frm, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            return self.todo_gone()
        for rec in self.todo_decoder.feed(data):
            if isinstance(rec, todowire.Done):
                self.sched.todo_done(rec.msgid, (rec.local, rec.remote), now)
            elif isinstance(rec, todowire.LogLine):
                self.sched.log.raw(rec.text)
            elif isinstance(rec, todowire.Exiting):
                return self.todo_gone()
            elif rec.record[:1] == b"D":       # ext-todo qmail-send.c todo_del()'s wording
                self.log("warning: qmail-send unable to understand qmail-todo")
            elif rec.record:                   # todo_do(): an empty record is skipped
                self.log("warning: qmail-send unable to understand qmail-todo: report mangled")

    def todo_gone(self):
        """qmail-todo's X or end of file: expected after our X; else ext-todo's tododied(),
        since nobody would take new messages out of todo/ any more."""
        if not self.told_todo:
            self.log("alert: oh no! lost qmail-todo connection! dying...")
        self.todo_alive, self.flags.exit = False, True
        self.sel.unregister(self.todo.frm)

    def update_writers(self):
        for ch in self.sched.channels:
            want = ch.alive and bool(ch.outbuf)
            if want and ch not in self.writing:
                self.sel.register(ch.fd_out, selectors.EVENT_WRITE, ("commands", ch))
                self.writing.add(ch)
            elif not want and ch in self.writing:
                self.sel.unregister(ch.fd_out)
                self.writing.discard(ch)

    def watch(self, msgid, inj):
        """Register the bounce's pidfd once and the pipe it writes to now (call right after
        step(): a pipe it closed is unregistered before any new fd can take its number)."""
        if inj not in self.injecting:
            self.sel.register(inj.pidfd, selectors.EVENT_READ, ("injected", (msgid, inj)))
            self.injecting[inj] = None
        have, want = self.injecting[inj], inj.fileno()
        if have != want:
            if have is not None:
                self.sel.unregister(have)
            if want is not None:
                self.sel.register(want, selectors.EVENT_WRITE, ("inject", (msgid, inj)))
            self.injecting[inj] = want

    def unwatch(self, inj):
        have = self.injecting.pop(inj)
        if have is not None:
            self.sel.unregister(have)
        self.sel.unregister(inj.pidfd)

    def update_injections(self):
        for msgid, b in self.sched.bounces.items():
            self.watch(msgid, b.injection)

    def on_injection(self, what, msgid, inj, now):
        if inj not in self.injecting:
            return                         # finished earlier in this turn
        if what == "inject":
            inj.step()
            self.watch(msgid, inj)
        else:
            self.unwatch(inj)
            finish.bounce_exited(self.sched, msgid, now)

    def turn(self):
        sched, flags = self.sched, self.flags
        now = sched.now()
        if flags.run:
            flags.run = False
            sched.pqrun(now)
        if flags.read:
            flags.read = False
            self.reread()
        if flags.exit and not self.told_todo:
            self.told_todo, sched.exitasap = True, True
            self.tell_todo(todowire.EXIT)
            sched.status()
        if self.may_exit():
            return                         # no select: nothing is left to wait for
        self.update_writers()
        self.update_injections()
        wakeup = sched.wakeup(now)
        timeout = 0 if wakeup <= now else wakeup - now + sched.clock.delay(clock.SLEEP_FUZZ)
        events = self.sel.select(min(timeout, clock.SLEEP_FOREVER))
        now = sched.now()
        for key, _ in events:
            what, ch = key.data
            if what == "commands":
                if ch.alive and not ch.flush():
                    self.spawndied(ch)
            elif what == "reports":
                if not ch.alive:
                    continue
                reports = ch.read()
                if reports is None:
                    self.spawndied(ch)
                    continue
                for rep in reports:
                    sched.on_report(ch, rep, now)
            elif what == "todo":
                if self.todo_alive:
                    self.on_todo(now)
            elif what in ("inject", "injected"):
                self.on_injection(what, *ch, now)
            else:
                _drain(self.wake_fd)
        sched.pass_do(now)
        for ch in sched.channels:          # new commands go out now, not one turn later
            if ch.alive and ch.outbuf and not ch.flush():
                self.spawndied(ch)

    def may_exit(self):
        """qmail-send.c's loop condition: exiting, qmail-todo gone, no delivery running."""
        return self.flags.exit and self.told_todo and self.sched.can_exit() and not self.todo_alive

    def lost_clean(self):
        """qmail-send.c's cleandied(): the alert once, then stop as after SIGTERM."""
        if not self.clean_dead:
            self.log("alert: oh no! lost qmail-clean connection! dying...")
        self.clean_dead, self.flags.exit = True, True

    def start(self):
        """Build the queues from info/, then tell qmail-todo to start (ext-todo's todo_init()).
        A leftover of a finished message asks qmail-clean already: one that is gone (or never
        started) stops us as it does later on, and qmail-todo gets no S, only the X."""
        sched = self.sched
        try:
            sched.pqstart(sched.now())
        except CleanDied:
            self.lost_clean()
        sched.status()
        if not self.flags.exit:
            self.tell_todo(todowire.START)

    def run(self):
        while not self.may_exit():
            try:
                self.turn()
            except CleanDied:
                self.lost_clean()
        self.sched.exitasap = True
        self.sched.pqfinish()
        self.log("status: exiting")
        return 0


def _drain(fd):
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def install_signals(flags):
    """SIGTERM/SIGINT: exit asap; SIGALRM: retry all now; SIGHUP: reread; woken through a pipe."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def on_term(signum, frame):
        flags.exit = True

    def on_alarm(signum, frame):
        flags.run = True

    def on_hup(signum, frame):
        flags.read = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGHUP, on_hup)
    return wake_r
