"""qmail-send for bench/run.py: who writes a queue, injection, a watched qmail-send, /proc memory.

As root, qmailpy's programs switch users as qmail's do, so the bench sets
things up the way an installed qmail home has them:

- messages enter a queue as its owner: qmailq:qmail when tools/install.py
  found qmail's users (qmail's qmail-queue is setuid qmailq, and
  qmail-lspawn/-rspawn refuse a mess file of another owner). tcpserver runs
  qmail-smtpd with -u/-g, and the in-process enqueue() runs in a forked
  child that switched to them;
- qmail-send runs without QMAILPY_SINGLEUSER, so it hands its helpers to
  qmail's users when they exist, and qmail-lspawn runs the real qmail-local
  as the mailbox's owner (vpopmail, else nobody);
- every directory those users pass through is 0755 (the bench's temporary
  tree is not left 0700).

On a shared machine another process (a test suite checking privilege
separation) may create or remove qmail's users while the bench runs, so
each qmail-send experiment gets a fresh home laid out just before it, and
run.py tries an experiment once more when the users changed under it.
Without root everything runs as the invoking user.
"""
import grp
import os
import pwd
import re
import signal
import subprocess
import time

# what a test-suite environment may carry that would change who or what runs
ENV_DROP = ("QMAILPY_SINGLEUSER", "QMAILQUEUE", "QMAILLOCAL", "QMAILREMOTE", "FAKE_DIR")


class SendFailure(Exception):
    """qmail-send did not do what the bench waits for (the caller makes it a BenchFailure)."""


def users():
    """qmail's users and group as they are now: {name: id}; empty without them.

    Other processes on a shared machine (a test suite checking privilege
    separation) may create and remove them while the bench runs.
    """
    got = {}
    for name in ("qmailq", "qmails", "qmailr"):
        try:
            got[name] = pwd.getpwnam(name).pw_uid
        except KeyError:
            pass
    try:
        got["qmail"] = grp.getgrnam("qmail").gr_gid
    except KeyError:
        pass
    return got


def mailbox_owner():
    """(name, uid, gid) qmail-local delivers as when the bench runs as root (vpopmail, else nobody); None."""
    if os.geteuid() != 0:
        return None
    for name in ("vpopmail", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return name, pw.pw_uid, pw.pw_gid
    return None


def queue_writer(home):
    """(uid, gid) that writes the queue of home, as qmail's setuid qmail-queue would: the owner of
    queue/todo when that is not us (install.py gave it to qmailq:qmail), else None (ourselves)."""
    st = os.stat(os.path.join(home, "queue", "todo"))
    return None if st.st_uid == os.geteuid() else (st.st_uid, st.st_gid)


def describe(ids):
    """'qmailq:qmail' or 'uid 0' for a queue_writer() value."""
    if ids is None:
        return "uid %d" % os.geteuid()
    try:
        user = pwd.getpwuid(ids[0]).pw_name
    except KeyError:
        user = str(ids[0])
    try:
        group = grp.getgrgid(ids[1]).gr_name
    except KeyError:
        group = str(ids[1])
    return "%s:%s" % (user, group)


def send_env(home):
    env = {k: v for k, v in os.environ.items() if k not in ENV_DROP}
    env.update(QMAILHOME=home, DNSCACHEIP="127.0.0.1")     # never an outside resolver
    return env


def inject(home, messages, queue_ids):
    """Queue every (body, envelope) with enqueue() in a forked child (as queue_ids); seconds taken."""
    from qmailpy.queue.enqueue import enqueue
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:                                    # child: never returns
        code = 1
        try:
            if queue_ids:
                os.setgroups([])
                os.setgid(queue_ids[1])
                os.setuid(queue_ids[0])
            uid, me = os.getuid(), os.getpid()
            for body, envelope in messages:
                enqueue(home, body, envelope, uid, me, time.time())
            code = 0
        except BaseException as e:                  # noqa: B036 - report whatever it is, then _exit
            try:
                os.write(2, ("bench: enqueue in %s: %s: %s\n" % (home, type(e).__name__, e)).encode())
            except OSError:
                pass
        finally:
            os._exit(code)
    status = os.waitpid(pid, 0)[1]
    if status:
        raise SendFailure("enqueue() into %s failed (status %#x)" % (home, status))
    return time.perf_counter() - start


def memory(pid):
    """{"name", "rss", "hwm" (MiB), "uid"} of a live process from /proc/PID/status, or None."""
    got = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key == "Name":
                    got["name"] = value.strip()
                elif key in ("VmRSS", "VmHWM"):
                    got[key[2:].lower()] = int(value.split()[0]) / 1024
                elif key == "Uid":
                    got["uid"] = int(value.split()[0])
    except OSError:
        return None
    return got if "rss" in got else None


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


COUNTED = {
    "start": re.compile(rb"^starting delivery \d+: "),
    "success": re.compile(rb"^delivery \d+: success: "),
    "deferral": re.compile(rb"^delivery \d+: deferral: "),
    "failure": re.compile(rb"^delivery \d+: failure: "),
    "new": re.compile(rb"^new msg \d+$"),
    "end": re.compile(rb"^end msg \d+$"),
    "status": re.compile(rb"^status: "),
    "alert": re.compile(rb"^alert: "),
}


class QmailSend:
    """bin/qmail-send of a home, its log read as it grows, counts of its log lines."""

    def __init__(self, home, log):
        self.home, self.log = home, log
        self.out = open(log, "ab")
        self.offset = os.path.getsize(log)
        self.partial = b""
        self.counts = dict.fromkeys(COUNTED, 0)
        self.first = {}                             # kind -> time.perf_counter() it was first seen
        self.bad = []                               # deferral and failure lines
        self.proc = subprocess.Popen([os.path.join(home, "bin", "qmail-send"), "./Maildir/"],
                                     env=send_env(home), stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=self.out)

    def poll(self):
        """Read what qmail-send logged since the last call and count it."""
        with open(self.log, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        if not data:
            return
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        now = time.perf_counter()
        for line in lines:
            for kind, rx in COUNTED.items():
                if rx.match(line):
                    self.counts[kind] += 1
                    self.first.setdefault(kind, now)
                    if kind in ("deferral", "failure") and len(self.bad) < 5:
                        self.bad.append(line.decode("utf-8", "replace"))

    def tail(self, n=8):
        with open(self.log, "rb") as f:
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])

    def wait(self, predicate, timeout, what, interval=0.01, stall=60):
        """Poll until predicate(); SendFailure on timeout, after `stall` s without a log line, on
        qmail-send's exit, on an alert or on any deferral or failure."""
        now = time.monotonic()
        deadline, quiet_since, seen = now + timeout, now, self.offset
        while True:
            self.poll()
            if self.counts["deferral"] or self.counts["failure"]:
                raise SendFailure("qmail-send of %s: %s" % (self.home, "; ".join(self.bad)))
            if self.counts["alert"]:
                raise SendFailure("qmail-send of %s:\n%s" % (self.home, self.tail()))
            if predicate():
                return time.perf_counter()
            if self.proc.poll() is not None:
                raise SendFailure("qmail-send of %s exited with %s while waiting for %s:\n%s"
                                  % (self.home, self.proc.returncode, what, self.tail()))
            now = time.monotonic()
            if self.offset != seen:
                seen, quiet_since = self.offset, now
            if now > deadline or now - quiet_since > stall:
                raise SendFailure("qmail-send of %s: no %s after %d s (%d s without a log line):\n%s"
                                  % (self.home, what, now - deadline + timeout, now - quiet_since, self.tail()))
            time.sleep(interval)

    def ready(self, timeout=30):
        self.wait(lambda: self.counts["status"], timeout, "status line")

    def tree(self):
        """[(role, memory dict)] of qmail-send, its helpers, and their children (qmail-remote, ...)."""
        out = [("send", memory(self.proc.pid))]
        for pid in children(self.proc.pid):
            out.append(("helper", memory(pid)))
            out += [("grandchild", memory(g)) for g in children(pid)]
        return [(role, m) for role, m in out if m]

    def stop(self, timeout=60, after_term=None):
        """SIGTERM (then after_term(), e.g. letting held deliveries go), wait; SIGKILL if it hangs."""
        try:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGTERM)
                if after_term:
                    time.sleep(0.2)                 # let it stop scheduling before held deliveries end
                    after_term()
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
        finally:
            self.out.close()
        return self.proc.returncode
