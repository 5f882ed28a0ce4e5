"""The loop shared by qmail-lspawn and qmail-rspawn (qmail's spawn.c).

fd 0: commands from qmail-send; fd 1: reports (qmailpy.proto.spawnwire).
For each command it opens the message, starts the delivery program with the
message on fd 0 and a pipe on fd 1 and 2, collects that output, and once
the pipe is at end of file AND the program has exited (a pidfd tells; when
none can be had, the child is waited for once its pipe is at end of file), it
writes one report. A `Program` (lspawn.Local, rspawn.Remote) supplies
spawn() (a Popen or a fork.Child, or a report when nothing is run),
report(status, output), refresh() (before each batch of commands), preload()
(once, after the limit is written: qmail-send need not wait for it), truncreport and unread
(the report of a delivery whose output could not be read whole, when its output is its result;
None when its exit status is). Exits 0 when qmail-send closes fd 0 and no delivery
is left; reports that can no longer be written are dropped, as in qmail.
"""
import os
import resource
import selectors

from qmailpy.fileio import close_quietly, open_regular, write_all
from qmailpy.proto import spawnwire
from qmailpy.queue import layout

SPAWN_MAX = 500                 # our conf-spawn: concurrencylocal/remote stop at 500
TRUNCMESS = b"\nError report too long, sorry.\n"
NO_FORK = b"Zqmail-spawn unable to fork. (#4.3.0)\n"
WRONG_TYPE = b"ZSorry, message has wrong type. (#4.3.5)\n"
READ = 4096


def spawn_limit(want=SPAWN_MAX):
    """How many deliveries fit in RLIMIT_NOFILE (each holds 2 fds here), raising the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 3 * want + 64
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return want
    return max(1, min(want, (soft - 64) // 3))


def shrug_off_signals(*names):
    """Survive these signals with a no-op handler, not SIG_IGN: a caught signal is
    back to its default in the programs we exec, an ignored one would stay ignored.
    Only qmail-send closing fd 0 stops a spawn, so no report is lost."""
    import signal
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)     # subprocess restores it for the children
    for name in names:
        signal.signal(getattr(signal, name), _ignore)


def _ignore(signum, frame):
    pass


def qmailq_uid(environ=None):
    """uid every mess file must have (spawn.c's check), when the qmailq user exists.

    None (no check) in single-user mode, where the invoking user wrote the queue.
    """
    import os
    import pwd
    from qmailpy.privs import single_user
    if single_user(os.environ if environ is None else environ):
        return None
    try:
        return pwd.getpwnam("qmailq").pw_uid
    except KeyError:
        return None


class Delivery:
    __slots__ = ("delnum", "cmd", "proc", "fd", "pidfd", "output", "eof", "status", "cut")

    def __init__(self, delnum, cmd, proc, fd, pidfd):
        self.delnum, self.cmd, self.proc, self.fd, self.pidfd = delnum, cmd, proc, fd, pidfd
        self.output = bytearray()
        self.eof = False
        self.status = None
        self.cut = False                     # a read of the output failed: what came is not all


UNWAITED = -256                 # the status of a child wait4 failed for: reported as a crash (a deferral)
WAIT_TRIES = 3


def waited(proc):
    """The exit code of proc (a Popen or a fork.Child, which keep it as returncode), waited for
    here, not by proc.wait(): Popen's takes ECHILD for an exit 0, a success nobody saw. A wait4
    that fails is tried again (spawn.c's wait loop goes on after an error; the child has exited:
    its pidfd or its pipe's end of file said so). A child that cannot be waited for is
    UNWAITED: its result unknown, a crash (Z), never a spawner that dies with every other
    delivery."""
    for _ in range(WAIT_TRIES):
        try:
            _, status = os.waitpid(proc.pid, 0)
        except OSError:
            continue
        proc.returncode = os.waitstatus_to_exitcode(status)
        return proc.returncode
    return UNWAITED


def check_messid(messid):
    """spawn.c's checks on `<split>/<id>`: the error report, or None."""
    for i, ch in enumerate(messid):
        if not (48 <= ch <= 57 or (i and ch == 0x2F)):
            return b"DInternal error: messid has nonnumerics. (#5.3.5)\n"
    if len(messid) + 1 > 100:
        return b"DInternal error: messid too long. (#5.3.5)\n"
    if not messid:
        return b"DInternal error: messid too short. (#5.3.5)\n"
    return None


class Server:
    def __init__(self, home, program, limit, qmailq_uid=None, fd_in=0, fd_out=1):
        self.home, self.program, self.limit = home, program, limit
        self.qmailq_uid = qmailq_uid         # spawn.c: a message file must be qmailq's (qmail-queued wrote it)
        self.fd_in, self.fd_out = fd_in, fd_out
        self.sel = selectors.DefaultSelector()
        self.active = {}                     # delnum -> Delivery
        self.reading = self.writing = True
        self.decoder = spawnwire.CommandDecoder()

    def write(self, data):
        """spawn.c's okwrite(): a report that cannot be written stops the writing and closes
        fd 1, so qmail-send reads end of file (its "lost spawn connection": it stops and is
        started again) instead of waiting for reports that will never come."""
        if not self.writing:
            return
        try:
            write_all(self.fd_out, data)
        except OSError:
            self.writing = False
            close_quietly(self.fd_out)

    def err(self, delnum, report):
        """Write one report: `report` is its kind byte (K, Z, D) and text."""
        self.write(spawnwire.encode_report(delnum, report[:1], report[1:]))

    def docmd(self, cmd):
        delnum = cmd.delnum
        if delnum >= self.limit:
            return self.err(delnum, b"ZInternal error: delnum too big. (#4.3.5)\n")
        if delnum in self.active:
            return self.err(delnum, b"ZInternal error: delnum in use. (#4.3.5)\n")
        bad = check_messid(cmd.messid)
        if bad:
            return self.err(delnum, bad)
        at = cmd.recipient.rfind(b"@")
        if at < 0:
            return self.err(delnum, b"DSorry, address must include host name. (#5.1.3)\n")
        try:        # not opened unless a regular file: mess/ is qmailq's, and qmail-lspawn is root
            fdmess, _ = open_regular(layout.messid_path(self.home, os.fsdecode(cmd.messid)))
        except OSError:
            return self.err(delnum, b"Zqmail-spawn unable to open message. (#4.3.0)\n")
        if fdmess is None:
            return self.err(delnum, WRONG_TYPE)
        try:
            trouble = self.check_mess(fdmess)
            if trouble:
                return self.err(delnum, trouble)
            self.start(delnum, fdmess, cmd, at)
        finally:
            close_quietly(fdmess)       # read-only, as spawn.c's close(fdmess): never the spawn's end

    def check_mess(self, fdmess):
        try:
            st = os.fstat(fdmess)
        except OSError:
            return b"Zqmail-spawn unable to fstat message. (#4.3.0)\n"
        if self.qmailq_uid is not None and st.st_uid != self.qmailq_uid:
            return b"ZSorry, message has wrong owner. (#4.3.5)\n"
        return None

    def start(self, delnum, fdmess, cmd, at):
        try:
            r, w = os.pipe2(os.O_CLOEXEC)
        except OSError:
            return self.err(delnum, b"Zqmail-spawn unable to create pipe. (#4.3.0)\n")
        try:
            got = self.program.spawn(fdmess, w, cmd.sender, cmd.recipient, at)
        except OSError:                      # fork() refused (EAGAIN, ENOMEM): spawn.c's deferral
            got = NO_FORK
        finally:
            os.close(w)
        if isinstance(got, bytes):           # decided without running anything
            os.close(r)
            return self.err(delnum, got)
        try:
            pidfd = os.pidfd_open(got.pid)
        except OSError:                      # EMFILE: the child is reaped at its pipe's end of file
            pidfd = None
        os.set_blocking(r, False)
        d = self.active[delnum] = Delivery(delnum, cmd, got, r, pidfd)
        self.sel.register(r, selectors.EVENT_READ, (d, "out"))
        if pidfd is not None:
            self.sel.register(pidfd, selectors.EVENT_READ, (d, "exit"))

    def collect(self, d):
        try:
            data = os.read(d.fd, READ)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, d.cut = b"", True
        if not data:
            d.eof = True
            self.sel.unregister(d.fd)
            os.close(d.fd)
            if d.pidfd is None:              # no pidfd to wait on: the exit follows the pipe's close
                d.status = waited(d.proc)
            return
        d.output += data
        limit = self.program.truncreport
        if limit > 100 and len(d.output) > limit:
            del d.output[limit - len(TRUNCMESS) - 3:]
            d.output += TRUNCMESS

    def reap(self, d):
        d.status = waited(d.proc)
        self.sel.unregister(d.pidfd)
        os.close(d.pidfd)

    def finish(self, d):
        del self.active[d.delnum]
        if (d.output.strip() or d.status == UNWAITED) and self.program.drops_output(d.status):
            self.log_lost(d)
        if d.cut and self.program.unread and not self.program.drops_output(d.status):
            return self.err(d.delnum, self.program.unread)   # the result was in what could not be read
        self.err(d.delnum, self.program.report(d.status, bytes(d.output)))

    def log_lost(self, d):
        """A report that is fixed text for this exit (a crash; qmail-remote's 111, "Unable to
        run qmail-remote.") drops what the child wrote: its last words (a bug's one line) go
        to the log, one line, or nobody would ever read them. The line names the delivery as
        qmail-send's `starting delivery N: msg M to local R` does (N, qmail-send's number, is
        never sent to the spawn; the slot number here would match nothing in the log)."""
        from qmailpy.log import qmail_safe, write_line
        last = (bytes(d.output).strip().splitlines() or [b"no output"])[-1][:300].decode("utf-8", "replace")
        how = ("could not be waited for" if d.status == UNWAITED else
               "crashed (signal %d)" % -d.status if d.status < 0 else "exited %d" % d.status)
        write_line(2, "alert: delivery of msg %s to %s %s %s: %s" % (
            os.fsdecode(d.cmd.messid.rsplit(b"/", 1)[-1]), self.program.channel,
            qmail_safe(d.cmd.recipient), how, last))

    def commands(self):
        try:
            data = os.read(self.fd_in, READ)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.reading = False
            self.sel.unregister(self.fd_in)
            return
        self.program.refresh()
        for cmd in self.decoder.feed(data):
            self.docmd(cmd)

    def serve(self):
        self.write(spawnwire.encode_limit(self.limit))
        self.program.preload()
        try:
            os.set_blocking(self.fd_in, False)
            self.sel.register(self.fd_in, selectors.EVENT_READ, None)
        except OSError:                  # started with fd 0 closed: no command will come
            self.reading = False         # (as a read error, as end of input)
        while self.reading or self.active:
            for key, _ in self.sel.select():
                if key.data is None:
                    self.commands()
                    continue
                d, what = key.data         # each key once a batch: its fd is open, its child unreaped
                if what == "out":
                    self.collect(d)
                else:
                    self.reap(d)
                if d.eof and d.status is not None:
                    self.finish(d)
        return 0
