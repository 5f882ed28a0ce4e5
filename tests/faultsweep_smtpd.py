"""qmail-smtpd's own system calls made to fail, one occurrence at a time, with strace (the
technique of the fault sweeps: every occurrence of each call): the helpers of tests/test_faults_smtpd.py.

A whole session (EHLO, MAIL, RCPT in rcpthosts and in morercpthosts.cdb, DATA, the message,
AUTH PLAIN through tests/checkpassword.py, QUIT; periplimit and authfaillimit set) runs once under a full strace to list the calls the session makes on its own
files, sockets, pipes and fds 0/1/2 (not the interpreter's imports); then once per listed
call with that call failing (strace's `when=N` counts per syscall and per process). Each run
is judged by judge(): no 5xx, no traceback or internal bug, a 250 for DATA only with the
message whole in the queue, a control that cannot be read answered 421 naming it.
"""
import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

from conftest import ROOT
from qmailpy.queue.layout import create_queue

SMTPD = os.path.join(ROOT, "bin", "qmail-smtpd")
CHECKPASSWORD = [sys.executable, os.path.join(ROOT, "tests", "checkpassword.py")]
TCP_ENV = {"TCPREMOTEIP": "127.0.0.1", "TCPLOCALIP": "127.0.0.1", "TCPLOCALHOST": "localhost",
           "PROTO": "TCP", "TCPLOCALPORT": "25", "TCPREMOTEPORT": "40000"}
BODY = b"Subject: t\r\n\r\nbody\r\n"
MESSAGE = BODY + b".\r\n"
AUTH = b"AUTH PLAIN " + base64.b64encode(b"\0good@example.org\0secret") + b"\r\n"
# AUTH after the message (and RSET: a DATA that failed leaves the transaction open): before it,
# the client may relay and morercpthosts.cdb is not read
MAIL = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n"
ENVELOPE = b"\0Fa@example.com\0Tb@example.org\0Tc@example.net\0"
GOOD = ["220 test.example ESMTP", "250-test.example", "250-PIPELINING", "250-8BITMIME",
        "250-AUTH LOGIN PLAIN CRAM-MD5", "250 SIZE 100000", "250 ok", "250 ok", "250 ok", "354 go ahead",
        "250 ok * qp *", "250 flushed", "235 ok, go ahead (#2.0.0)", "221 test.example"]
CONTROLS = {"me": "test.example\n", "rcpthosts": "example.org\n", "badmailfrom": "@bad.example\n",
            "databytes": "100000\n", "smtpauth": "1\n", "smtpauthplaintext": "1\n", "periplimit": "3\n",
            "authfaillimit": "5\n"}


def make_home(root, own_queue=True):
    """A qmail home for the session: its controls, a queue and, with own_queue, qmailpy's
    bin/qmail-queue (qmail-smtpd forks it); without, the caller starts qmail-queued there."""
    os.makedirs(os.path.join(root, "control"), exist_ok=True)
    for name, text in CONTROLS.items():
        with open(os.path.join(root, "control", name), "w") as f:
            f.write(text)
    import cdblib
    with open(os.path.join(root, "control", "morercpthosts.cdb"), "wb") as f, cdblib.Writer(f) as w:
        w.put(b"example.net", b"")
    create_queue(root)
    if own_queue:
        os.makedirs(os.path.join(root, "bin"), exist_ok=True)
        shutil.copy(os.path.join(ROOT, "bin", "qmail-queue"), os.path.join(root, "bin", "qmail-queue"))
    return root


def smtpd_env(home):
    env = {k: v for k, v in os.environ.items() if k != "QMAILQUEUE"}
    env.update(TCP_ENV, QMAILHOME=home, AUTHFAILDELAY="0", QMAILPY_SINGLEUSER="1")
    return env


class Result:
    def __init__(self, rc, out, err, trace):
        self.rc, self.err, self.trace = rc, err.decode("utf-8", "replace"), trace
        self.raw = out
        self.replies = out.decode("utf-8", "replace").split("\r\n")
        self.partial = self.replies.pop()          # what came after the last CRLF

    def __str__(self):
        return "exit %s, replies %r, log %r" % (self.rc, self.replies + [self.partial], self.err)


def matches(replies):
    """Are these the good session's replies?"""
    from dialogue import wildmatch
    return len(replies) == len(GOOD) and all(wildmatch(g, r) for g, r in zip(GOOD, replies))


def replies(sock, count, got):
    """Read until `count` more whole replies (the last line of each: code and space) or EOF;
    their lines are appended to `got` (a list of lines, the last maybe partial). False at EOF."""
    buf = got.pop() if got and not got[-1].endswith("\r\n") else ""
    while count:
        while "\r\n" in buf and count:
            line, buf = buf.split("\r\n", 1)
            got.append(line + "\r\n")
            if line[3:4] != "-":
                count -= 1
        if not count:
            break
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            got.append(buf)
            return False
        buf += data.decode("utf-8", "replace")
    if buf:
        got.append(buf)
    return True


def converse(sock):
    """The session as a client that waits for each reply group (PIPELINING's groups, the
    message only after 354): the server's output as one string."""
    got = []
    steps = [(b"", 1), (b"EHLO c.example\r\n", 1), (MAIL, 4), (MESSAGE, 1), (b"RSET\r\n" + AUTH, 2), (b"QUIT\r\n", 1)]
    for data, count in steps:
        if data is MESSAGE and not (got and got[-1].startswith("354 ")):
            continue
        if data:
            try:
                sock.sendall(data)
            except OSError:
                break
        if not replies(sock, count, got) or got[-1].startswith("421 "):
            break
    return "".join(got)


def run(home, strace=(), trace_path=None):
    """qmail-smtpd for one session with fd 0 and 1 on a socketpair, under strace with `strace`
    options (none: not traced); the Result (with strace's output when trace_path is given)."""
    cmd = [SMTPD, *CHECKPASSWORD]
    if strace:
        cmd = ["strace", "-qq", "-o", trace_path or "/dev/null", *strace, *cmd]
    ours, theirs = socket.socketpair()
    with ours:
        try:
            proc = subprocess.Popen(cmd, stdin=theirs, stdout=theirs, stderr=subprocess.PIPE, env=smtpd_env(home),
                                    start_new_session=True)
        finally:
            theirs.close()
        ours.settimeout(WAIT)
        out = converse(ours)
    try:
        rc = proc.wait(WAIT)
    except subprocess.TimeoutExpired:       # a session that hangs: killed, and its exit code says so
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        rc = "none: it did not end in %d s" % WAIT
    err = proc.stderr.read()
    proc.stderr.close()
    trace = ""
    if trace_path:
        with open(trace_path, errors="replace") as f:
            trace = f.read()
    return Result(rc, out.encode(), err, trace)


WAIT = 20                   # seconds a session may take, under strace on a loaded machine
STDIO = {0: "stdin", 1: "stdout", 2: "stderr"}
CALL = re.compile(r"^(?:(\d+) +)?([a-z0-9_]+)\((.*)\) += (-?\d+|\?)")
FD_CALLS = {"read", "write", "close", "newfstatat", "fstat", "getdents64", "flock", "lseek", "ftruncate",
            "sendto", "recvfrom", "connect", "ioctl", "fcntl", "sendmsg", "recvmsg", "poll",
            "fsync", "fchmod", "fchown", "shutdown", "setsockopt", "getsockopt"}


def _first_string(args):
    m = re.search(r'"((?:[^"\\]|\\.)*)"', args)
    return m.group(1) if m else None


def calls(trace):
    """[(syscall, occurrence, target, injected)] of one process's full trace (no -f): target is
    the path (or the fd's path, 'stdin', 'stdout', 'stderr', 'socket', 'pipe') a call works on,
    or None; injected: strace made it fail."""
    fds = dict(STDIO)
    counts, out = {}, []
    for line in trace.splitlines():
        m = CALL.match(line)
        if not m:
            continue
        name, args, ret = m.group(2), m.group(3), m.group(4)
        counts[name] = n = counts.get(name, 0) + 1
        first = args.split(",", 1)[0].strip()
        target = None
        if name in ("openat", "newfstatat", "mkdir", "rename", "unlink", "stat", "lstat", "access",
                    "readlink", "chdir", "open", "statx", "mkdirat", "unlinkat", "renameat", "renameat2",
                    "faccessat2") and (first == "AT_FDCWD" or name in ("mkdir", "rename", "unlink", "open",
                                                                       "stat", "lstat", "access", "readlink",
                                                                       "chdir")):
            target = _first_string(args)
        elif name in FD_CALLS or (name == "newfstatat" and first.isdigit()):
            target = fds.get(int(first)) if first.isdigit() else None
        elif name in ("pipe2", "pipe", "socket"):
            target = "pipe" if name != "socket" else "socket"
        elif name in ("clone", "clone3", "vfork", "fork", "wait4"):
            target = "process"
        elif name == "pselect6":
            target = "stdin" if args.startswith("1, [0]") else None
        if name in ("openat", "open") and ret.isdigit():
            fds[int(ret)] = _first_string(args)
        elif name == "socket" and ret.isdigit():
            fds[int(ret)] = "socket"
        elif name in ("pipe2", "pipe"):
            for fd in re.findall(r"\d+", args.split("]")[0]):
                fds[int(fd)] = "pipe"
        elif name in ("dup2", "dup3") and ret.isdigit():        # onto 0 and 1: a worker's connection
            fds[int(ret)] = STDIO.get(int(ret)) or fds.get(int(first))
        elif name == "fcntl" and "F_DUPFD" in args and ret.isdigit():
            fds[int(ret)] = fds.get(int(first))
        elif name == "close" and first.isdigit() and ret == "0":
            fds.pop(int(first), None)
        out.append((name, n, target, line.endswith("(INJECTED)")))
    return out


def own(target, home):
    """Is a call on `target` the session's own work (not the interpreter's imports)?"""
    if target is None:
        return False
    return target in ("stdin", "stdout", "stderr", "socket", "pipe", "process", "/dev/null") or target.startswith(home + "/") \
        or target == home


def queued(home):
    """[(envelope records, message)] committed in the queue (linked into todo/)."""
    out = []
    todo = os.path.join(home, "queue", "todo")
    for name in sorted(os.listdir(todo)):
        with open(os.path.join(home, "queue", "intd", name), "rb") as f:
            records = f.read()
        with open(os.path.join(home, "queue", "mess", str(int(name) % 23), name), "rb") as f:
            mess = f.read()
        out.append((records, mess))
    return out


def clear(home):
    """Empty the queue and sessions/ for the next run."""
    for sub in ("todo", "intd", "mess", "info", "local", "remote", "bounce", "pid"):
        for dirpath, _, names in os.walk(os.path.join(home, "queue", sub)):
            for name in names:
                os.unlink(os.path.join(dirpath, name))
    shutil.rmtree(os.path.join(home, "sessions"), ignore_errors=True)


def whole(entry):
    records, mess = entry
    return records.endswith(ENVELOPE) \
        and mess.startswith(b"Received: (qmail ") and mess.endswith(BODY.replace(b"\r\n", b"\n"))


def judge(result, entries, target):
    """What is wrong with one faulted run ([] for nothing): see the module docstring."""
    wrong = []
    if "Traceback" in result.err or "internal bug" in result.err:
        wrong.append("a traceback or internal bug")
    if result.rc not in (0, 1):
        wrong.append("exit code %s" % result.rc)
    for reply in result.replies:
        if reply[:1] == "5":
            wrong.append("a permanent reply %r" % reply)
        if not reply or reply[0] not in "2345":
            wrong.append("a reply that is not one: %r" % reply)
    if result.partial:
        wrong.append("half a reply: %r" % result.partial)
    replies = result.replies
    if "354 go ahead" in replies:
        after = replies[replies.index("354 go ahead") + 1:]
        final = after[0] if after else None
        if final is not None and final.startswith("250"):
            if len(entries) != 1 or not whole(entries[0]):
                wrong.append("250 for DATA but the queue has %r" % entries)
            if "accept sender=<a@example.com>" not in result.err and target != "stderr":
                wrong.append("250 for DATA without the accept line")
        elif final is not None and not final.startswith("4"):
            wrong.append("DATA answered %r" % final)
    if len(entries) > 1 or any(not whole(e) for e in entries):
        wrong.append("the queue has %r" % entries)
    if target is not None and "/control/" in target and any(r.startswith("421") for r in replies):
        name = "control/" + target.split("/control/", 1)[1]
        if 'error reason="unable to read controls" file=%s' % name not in result.err:
            wrong.append("421 without a log line naming %s" % name)
    return wrong


# What is swept: the brief's calls on the session's own files, sockets, pipes and fds 0/1.
SWEPT = {"openat", "read", "newfstatat", "fstat", "getdents64", "close", "write", "mkdir", "rename", "unlink",
         "flock", "ftruncate", "lseek", "socket", "connect", "sendto", "recvfrom", "pipe2", "clone", "wait4",
         "pselect6"}
ENOSPC_TOO = {"write", "openat", "mkdir", "rename", "ftruncate"}


def plan(trace, home):
    """[(syscall, occurrence, target, errno)] to inject, from a good run's full trace: the
    session's own calls from its first look at the home on (before it: the interpreter's
    start-up); close only on files (a pipe's or socket's close does not fail, and one strace
    fails stays open); ENOSPC too where the call makes or grows a file of the home."""
    out, started, waited = [], False, set()
    for (name, n, target, _), line in zip(calls(trace), [x for x in trace.splitlines() if CALL.match(x)]):
        if target is not None and target.startswith(home):
            started = True
        if not started or name not in SWEPT or not own(target, home):
            continue
        if name == "wait4":                 # the first for each child: Popen.wait(timeout) polls it
            child = line.split("(", 1)[1].split(",", 1)[0]      # (WNOHANG) a number of times that
            if child in waited:                                 # depends on the clock
                continue
            waited.add(child)
        if name == "close" and not target.startswith(home):
            continue
        out.append((name, n, target, "EIO"))
        if name in ENOSPC_TOO and target.startswith(home + "/"):
            out.append((name, n, target, "ENOSPC"))
    return out


def same(a, b):
    """Targets alike but for pids (sessions/127.0.0.1.PID) and the home's name."""
    return re.sub(r"\d+", "N", a or "") == re.sub(r"\d+", "N", b or "")


def sweep(homes, cases, home0):
    """Run every case of plan() (made in home0) in one of `homes` (4 at a time); the failures
    as text, each naming the call, its occurrence, the errno, the exit code and the log."""
    import concurrent.futures
    import queue
    free = queue.Queue()
    for home in homes:
        free.put(home)

    def one(case):
        name, n, target, errno = case
        home = free.get()
        try:
            t = target.replace(home0, home)
            r = run(home, ["-e", "trace=all", "-e", "inject=%s:error=%s:when=%d" % (name, errno, n)],
                    trace_path=home + ".trace")
            hit = [c[2] for c in calls(r.trace) if c[3]]
            wrong = judge(r, queued(home), t)
            if len(hit) != 1 or not same(hit[0], t):
                wrong.append("the fault hit %r, not %r" % (hit, t))
            clear(home)
        finally:
            free.put(home)
        return ["%s #%d (%s) %s: %s; %s" % (name, n, target, errno, "; ".join(wrong), r)] if wrong else []

    with concurrent.futures.ThreadPoolExecutor(len(homes)) as pool:
        return [line for got in pool.map(one, cases) for line in got]


# -- in a qmail-tcpserver worker: strace -p during one session, then the next session

class Worker:
    """qmail-tcpserver for `home` (tests/test_tcpserver.py's Front) whose sessions one worker runs
    while they come one at a time; trace() attaches strace to it for one session. qmail-smtpd
    gets `args` (the checkpassword program); `talk(sock)` is the client (converse())."""

    def __init__(self, home, tmp_path, args=CHECKPASSWORD, talk=None):
        from test_tcpserver import Front
        env = {k: v for k, v in smtpd_env(home).items() if k not in TCP_ENV}
        self.home = home
        self.front = Front(os.path.join(ROOT, "bin", "qmail-tcpserver"), ["-v", "-HR", "-l", "h"], env, tmp_path,
                           args=args)
        self.talk = talk or converse
        self.pid = None

    def session(self, strace=(), trace_path=None):
        """One session over TCP, under `strace` attached to the worker when given; (Result, pid
        of the worker that ran it). The Result's exit code is the `end` line's."""
        tracer = None
        if strace:
            tracer = subprocess.Popen(["strace", "-qq", "-o", trace_path, *strace, "-p", str(self.pid)],
                                      stderr=subprocess.PIPE)
            wait_for(lambda: tracer.poll() is not None or tracing(self.pid), "strace attached to %d" % self.pid)
            assert tracer.poll() is None, tracer.stderr.read()
        before = self.front.log()
        with self.front.connect() as sock:
            out = self.talk(sock)
            sock.settimeout(30)
            try:
                while sock.recv(65536):     # the session's end: the worker closes the connection
                    pass
            except OSError:
                pass
        wait_for(lambda: " status " in self.front.log()[len(before):], "the end of the session")
        if tracer is not None:
            tracer.send_signal(signal.SIGTERM)  # detaches
            tracer.wait(30)
            tracer.stderr.close()
        log = self.front.log()[len(before):]
        pids = re.findall(r"tcpserver: pid (\d+) from", log)
        status = re.findall(r"tcpserver: end \d+ status (\d+)", log)
        trace = ""
        if trace_path:
            with open(trace_path, errors="replace") as f:
                trace = f.read()
        err = "\n".join(line for line in log.split("\n") if not line.startswith("tcpserver: ")).encode()
        return Result(int(status[0]) >> 8 if status else None, out.encode(), err, trace), int(pids[0]) if pids else None

    def fds(self):
        """The worker's open files, as /proc names them."""
        d = "/proc/%d/fd" % self.pid
        out = []
        for fd in sorted(os.listdir(d), key=int):
            try:
                out.append((int(fd), os.readlink(os.path.join(d, fd))))
            except OSError:
                pass
        return out

    def stop(self):
        return self.front.stop()


def tracing(pid):
    with open("/proc/%d/status" % pid) as f:
        return re.search(r"^TracerPid:\s+[1-9]", f.read(), re.M) is not None


def wait_for(condition, what, timeout=30):
    import time
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "no %s in %d s" % (what, timeout)
        time.sleep(0.01)


def worker_sweep(worker, cases):
    """Each case in the worker (strace -p for that session only), then a good session: the
    failures, as sweep()'s, with what the next session found (another worker, other fds)."""
    home, failures = worker.home, []
    fds = worker.fds()
    for name, n, target, errno in cases:
        r, pid = worker.session(["-e", "trace=" + name, "-e", "inject=%s:error=%s:when=%d" % (name, errno, n)],
                                home + ".trace")
        wrong = judge(r, queued(home), target)
        if r.trace.count("(INJECTED)") != 1:
            wrong.append("injected %d times" % r.trace.count("(INJECTED)"))
        clear(home)
        after, next_pid = worker.session()
        clear(home)
        if (pid, next_pid) != (worker.pid, worker.pid):
            wrong.append("worker %d ran the session in %s and the next one in %s" % (worker.pid, pid, next_pid))
        if not matches(after.replies) or after.rc != 0:
            wrong.append("the next session: %s" % after)
        if next_pid == worker.pid and worker.fds() != fds:
            wrong.append("the worker's fds were %r, now %r" % (fds, worker.fds()))
        if wrong:
            failures.append("%s #%d (%s) %s: %s; %s" % (name, n, target, errno, "; ".join(wrong), r))
            fds = worker.fds() if next_pid == worker.pid else fds
    return failures
