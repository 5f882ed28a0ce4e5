"""The password-check path under I/O faults: strace fault injection at every occurrence
(notes: the sweep technique; tests/test_faults_smtpd.py for qmail-smtpd's own calls).

1. bin/qmail-usersd in homes of its own (tests/test_usersd.py's), strace attached to its
   threads (strace counts `when=` per thread): to its loop's thread for its socket calls
   (accept4, the SO_PEERCRED getsockopt, ioctl FIONBIO, epoll_ctl, recvfrom, sendto) and its
   reads of the wake-up pipe, on a running service; to its workers, on a fresh service, for
   their calls on the home (the SQLite file's openat, newfstatat, pread64 and fcntl locks; the
   controls: counted and failed among those alone, strace -P) and their writes to the wake-up
   pipe. One client asks a good password, a recipient that exists, a wrong password, an
   alias domain's mailbox (ADDR) and a POP-before-SMTP login (RELAY), each answered by a
   fresh worker (the workers take turns). Each answer is the true one or TEMP
   (never YES for a check that failed, never NO or NOUSER for one that could not be made), or
   the connection closed (the client's "users service unavailable": 454, 451); no traceback
   or "internal bug" in the log; then, the fault over, a next client is answered truly by
   every worker, and the service holds what it held after a good run (no fd leaked).
   A module a worker could not read (its first question's lazy import) is read again.
2. qmail-smtpd's chkuser RCPT and AUTH through the service (its client,
   qmailpy.users.service), a mailbox that exists, a wrong then the right password: every
   occurrence of its look at sock/users, socket, ioctl, connect, sendto, poll and recvfrom
   failing gives 451/454 or the true reply (250, 535, 235), and sessions/authfail/ counts
   exactly the checks answered 535 (none that was not made); exec'd per session, and in a
   qmail-tcpserver worker, which then serves the next session with the fds it had.
"""
import base64
import concurrent.futures
import glob
import os
import re
import shutil
import signal
import queue
import socket
import subprocess
import time

from conftest import ROOT, program
from qmailpy import paths
import faultsweep_smtpd as F
from qmailpy.proto import userswire as W
from test_usersd import make_home
from usersd import UsersService

QUESTIONS = [(W.encode_question("AUTH", "PLAIN", "joe@example.org", "s3cret word", ""), b"YES"),
             (W.encode_question("RCPT", "joe@example.org"), b"OK"),
             (W.encode_question("AUTH", "LOGIN", "joe@example.org", "wrong", ""), b"NO"),
             (W.encode_question("ADDR", "joe", "example.net"), b"FOUND joe@example.org"),
             (W.encode_question("RELAY", "192.0.2.9", str(time.time() + 3600), "7200"), b"YES")]
NEXT = QUESTIONS * 2            # 10 questions: round every one of the 8 workers
LOOP_CALLS = {"accept4", "getsockopt", "ioctl", "epoll_ctl", "recvfrom", "sendto", "read"}
# not close: a close strace fails stays open
WORKER_CALLS = {"openat", "newfstatat", "fstat", "pread64", "read", "fcntl", "lseek"}
ERRNOS = {"accept4": ("EIO", "EMFILE", "EAGAIN"), "recvfrom": ("EIO", "EAGAIN"), "sendto": ("EIO", "EAGAIN"),
          "connect": ("EIO", "EAGAIN"), "openat": ("EIO", "EMFILE", "ENOSPC"), "fcntl": ("EIO", "EAGAIN"),
          "write": ("EIO", "EAGAIN"), "read": ("EIO", "EAGAIN")}     # else EIO
LINE = re.compile(r"^([a-z0-9_]+)\((.*)\) += (-?\d+|\?)(?:<([^>]*)>)?")
WAIT = 10
PAUSE = 0.03


def need_strace():
    assert subprocess.run(["strace", "-V"], capture_output=True).returncode == 0, "strace is needed"


def target(name, args, made):
    """The path a call works on (-y: an fd argument shows its path in <>; socket(): the one it
    made), or None."""
    if name == "socket":
        return made
    m = re.match(r'(?:AT_FDCWD(?:<[^>]*>)?, )?"([^"]*)"', args)
    if m:
        return m.group(1)
    m = re.match(r"(?:\[\{fd=)?-?\d+<([^>]*)>", args)         # poll: its first fd's
    return m.group(1) if m else None


def thread_calls(path):
    """[(call, occurrence, target, injected)] of one thread's trace file."""
    counts, out = {}, []
    with open(path, errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            name = m.group(1)
            counts[name] = n = counts.get(name, 0) + 1
            out.append((name, n, target(name, m.group(2), m.group(4)), line.rstrip().endswith("(INJECTED)")))
    return out


def fds(pid):
    """The service's open files, sockets and pipes by kind only (their numbers change)."""
    out = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            out.append(re.sub(r":\[\d+\]", "", os.readlink("/proc/%d/fd/%s" % (pid, fd))))
        except OSError:
            pass
    return sorted(out)


def closed(pid):
    """Wait (2 s at most) for the service to close the connections (its listener left)."""
    deadline = time.monotonic() + 2
    while fds(pid).count("socket") > 1 and time.monotonic() < deadline:
        time.sleep(0.01)


def attach(pid, tids, strace, trace):
    tracer = subprocess.Popen(["strace", "-qq", "--output-separately", "-y", "-o", trace, *strace,
                               *[a for tid in tids for a in ("-p", str(tid))]], stderr=subprocess.PIPE)
    deadline = time.monotonic() + WAIT
    while not all(traced(pid, tid) for tid in tids):
        assert tracer.poll() is None, tracer.stderr.read()
        assert time.monotonic() < deadline, "strace did not attach to %s" % tids
        time.sleep(0.01)
    return tracer


def traced(pid, tid):
    with open("/proc/%d/task/%d/status" % (pid, tid)) as f:
        return re.search(r"^TracerPid:\s+[1-9]", f.read(), re.M) is not None


def converse(path, questions, pause=0):
    """Each question on one connection, in turn, `pause` s after the last answer: [answer line,
    or None when the service closed the connection or said nothing in WAIT s] (a closed
    connection: a new one for the next)."""
    got, sock = [], None
    for question, _ in questions:
        if got:
            time.sleep(pause)
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(WAIT)
            try:
                sock.connect(path)
            except OSError:
                sock.close()
                sock = None
                got.append(None)
                continue
        buf = b""
        try:
            sock.sendall(question)
            while not buf.endswith(b"\n"):
                data = sock.recv(4096)
                if not data:
                    break
                buf += data
        except OSError:
            pass
        if buf.endswith(b"\n"):
            got.append(buf.rstrip(b"\n"))
        else:
            got.append(None)
            sock.close()
            sock = None
    if sock is not None:
        sock.close()
    return got


def started(home):
    """qmail-usersd in `home`, its 8 workers started; its log read as it goes (log())."""
    svc = UsersService(home.root, home.env()).start()
    os.set_blocking(svc.proc.stderr.fileno(), False)
    deadline = time.monotonic() + WAIT
    while len(os.listdir("/proc/%d/task" % svc.proc.pid)) < 9:     # the loop and its 8 workers
        assert time.monotonic() < deadline, "qmail-usersd has not started its workers"
        time.sleep(0.01)
    return svc


def warm(svc):
    """The service after its workers have answered (as the loop's runs find it: its calls then
    come at the pace of workers that import nothing)."""
    assert converse(svc.path, NEXT) == [truth for _, truth in NEXT]
    return svc


def log_so_far(svc):
    try:
        return (os.read(svc.proc.stderr.fileno(), 1 << 20) or b"").decode("utf-8", "replace")
    except BlockingIOError:
        return ""


class Run:
    """qmail-usersd in `home`, strace (`strace` options) attached to its loop thread (`who`
    "loop") or its workers ("workers") while QUESTIONS are asked; then NEXT asked. Started for
    the run, or the running `svc` (the loop's calls do not depend on what its workers did)."""

    def __init__(self, home, who, strace, trace, svc=None):
        for old in glob.glob(trace + ".*"):
            os.unlink(old)
        own = svc is None
        if own:
            svc = started(home)
        self.log = ""
        try:
            pid = svc.proc.pid
            tids = sorted(int(t) for t in os.listdir("/proc/%d/task" % pid))
            tracer = attach(pid, [pid] if who == "loop" else [t for t in tids if t != pid], strace, trace)
            try:
                # each to a worker of its own: the one that answered waits for work again (the
                # workers take turns) before the next question comes, which strace slows
                self.answers = converse(svc.path, QUESTIONS, PAUSE)
                closed(pid)                 # the connection's end traced too
            finally:
                tracer.send_signal(signal.SIGTERM)          # detaches
                tracer.wait(WAIT)
                tracer.stderr.close()
            self.next = converse(svc.path, NEXT)
            closed(pid)
            self.fds = fds(pid)
        finally:
            self.log = log_so_far(svc)
            if own:
                self.log += svc.stop()
        self.threads = {int(p.rsplit(".", 1)[1]): thread_calls(p) for p in glob.glob(trace + ".*")}
        self.loop = pid

    def injected(self):
        return [c for calls in self.threads.values() for c in calls if c[3]]


def plan(good, home):
    """[(who, call, occurrence, errno, paths)] of a good run traced whole: the loop's calls on
    sockets, epoll and its wake-up pipe; the workers' calls on the home's files, counted and
    injected among those alone (strace -P: the workers' lazy imports vary with which worker
    takes a question, and are the interpreter's); the workers' writes (the wake-up pipe)."""
    cases = set()
    paths = tuple(sorted({where for tid, calls in good.threads.items() if tid != good.loop
                          for _, _, where, _ in calls if where and where.startswith(home.root + "/")}))
    for tid, calls in good.threads.items():
        who = "loop" if tid == good.loop else "workers"
        mine = {}
        for name, n, where, _ in calls:
            kind = (where or "").split(":")[0]
            if who == "loop" and name in LOOP_CALLS and kind in ("socket", "anon_inode", "pipe"):
                if name == "read" and n > 4:    # its reads of the wake-up pipe: after the first two
                    continue                    # answers' (a wake-up, then EAGAIN), as many as wake-ups came apart
                case = (who, name, n, ())
            elif who == "workers" and name == "write" and kind == "pipe":
                case = (who, name, n, ())
            elif who == "workers" and name in WORKER_CALLS and where in paths:
                mine[name] = m = mine.get(name, 0) + 1
                case = (who, name, m, paths)
            else:
                continue
            for errno in ERRNOS.get(name, ("EIO",)):
                cases.add(case[:3] + (errno, case[3]))
    return sorted(cases)


def judge(run, good):
    wrong = []
    for (question, truth), got in zip(QUESTIONS, run.answers):
        if got is not None and got != truth and not got.startswith(b"TEMP "):
            wrong.append("%r answered %r" % (question, got))
    if run.next != [truth for _, truth in NEXT]:
        wrong.append("the next client got %r" % run.next)
    if "Traceback" in run.log or "internal bug" in run.log:
        wrong.append("a traceback or internal bug")
    if held(run.fds) != held(good.fds):
        wrong.append("fds %r, after a good run %r" % (run.fds, good.fds))
    if not run.injected():
        wrong.append("nothing injected")
    return wrong


def held(files):
    """What the service holds, but for the users database's connections: one a worker that has
    answered (which of the 8 answer the next client's questions varies)."""
    db = [f for f in files if f.endswith("/users/vpopmail.sqlite")]
    return [f for f in files if f not in db], len(db) <= 8


def made(run, name):
    """The most calls `name` any traced thread made."""
    return max((sum(1 for c in calls if c[0] == name) for calls in run.threads.values()), default=0)


def test_usersd_every_fault_is_a_true_answer_or_temp(tmp_path):
    need_strace()
    homes = [make_home(tmp_path / ("h%d" % i)) for i in range(4)]
    home = homes[0]
    trace = str(tmp_path / "good")
    Run(home, "workers", ["-e", "trace=none"], trace)         # the imports' .pyc files written
    for _ in range(3):          # the plan from a run whose questions took a worker each, as most do
        good = Run(home, "workers", ["-e", "trace=all"], trace)
        if sum(1 for calls in good.threads.values() if any(c[0] == "pread64" for c in calls)) == len(QUESTIONS):
            break
    assert good.answers == [t for _, t in QUESTIONS] and good.next == [t for _, t in NEXT], good.answers
    svc = started(home)
    try:
        warm(svc)
        # the loop's calls, twice: how many of each it makes varies with the workers' pace (a
        # wake-up alone or two at once...); the plan has the occurrences both runs reached
        loops = [Run(home, "loop", ["-e", "trace=all"], trace, svc) for _ in range(2)]
    finally:
        svc.stop()
    for loop in loops:
        assert loop.answers == good.answers and held(loop.fds) == held(good.fds), (loop.fds, good.fds)
    loop = min(loops, key=lambda r: len(r.threads[r.loop]))
    reached = {name: min(made(r, name) for r in loops) for name in LOOP_CALLS}
    good.threads[loop.loop] = [c for c in loop.threads[loop.loop] if c[1] <= reached.get(c[0], c[1])]
    good.loop = loop.loop
    cases = plan(good, home)
    covered = {(who, name) for who, name, _, _, _ in cases}
    want = {("loop", c) for c in ("accept4", "getsockopt", "ioctl", "epoll_ctl", "recvfrom", "sendto", "read")} | \
        {("workers", c) for c in ("openat", "newfstatat", "pread64", "fcntl", "write")}
    assert want <= covered, sorted(want - covered)

    free = queue.Queue()
    for h in homes:
        free.put(h)
    running = {}                # home -> its service for the loop's runs

    def one(case):
        who, name, n, errno, paths = case
        h = free.get()
        only = [a for p in paths for a in ("-P", p.replace(home.root, h.root))]
        try:
            for _ in range(4):      # which worker takes a question varies: a run whose threads
                svc = None          # made fewer calls than N is made again
                if who == "loop":
                    if h.root not in running or running[h.root].proc.poll() is not None:
                        running[h.root] = warm(started(h))
                    svc = running[h.root]
                r = Run(h, who, ["-e", "trace=" + name, "-e", "inject=%s:error=%s:when=%d" % (name, errno, n), *only],
                        str(h.root) + ".trace", svc)
                if svc is not None and r.next != [truth for _, truth in NEXT]:
                    r.log += running.pop(h.root).stop()     # broken (judged below): a new one next
                if r.injected() or made(r, name) >= n:
                    break
        finally:
            free.put(h)
        wrong = judge(r, good)
        return ["%s %s #%d %s: %s; answers %r; log %r" % (who, name, n, errno, "; ".join(wrong), r.answers,
                                                           r.log[-2000:])] if wrong else []

    try:
        with concurrent.futures.ThreadPoolExecutor(len(homes)) as pool:
            failures = [f for got in pool.map(one, cases) for f in got]
    finally:
        for svc in running.values():
            svc.stop()
    assert failures == [], "%d of %d faulted runs went wrong:\n%s" % (len(failures), len(cases), "\n".join(failures))


# -- 2. qmail-smtpd's AUTH through the service ---------------------------------------------------

def plain(password):
    return b"AUTH PLAIN " + base64.b64encode(b"\0joe@example.org\0" + password) + b"\r\n"


SESSION = (b"EHLO c.example\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<joe@example.org>\r\nRSET\r\n"
           + plain(b"wrong") + plain(b"s3cret word") + b"QUIT\r\n")
# after EHLO's: each reply of the good session, and the one temporary reply allowed instead
REPLIES = [("250 ok", None), ("250 ok", "451 system temporary unavailable, try again later (#4.3.0 - chkuser)"),
           ("250 flushed", None), ("535 authentication failed (#5.7.1)", "454 temporary authentication failure (#4.3.0)"),
           ("235 ok, go ahead (#2.0.0)", "454 temporary authentication failure (#4.3.0)"), ("221 test.example", None)]
CLIENT_CALLS = {"socket", "ioctl", "connect", "sendto", "recvfrom", "poll", "newfstatat"}
SMTPD_ENV = {"TCPREMOTEIP": "127.0.0.1", "TCPLOCALIP": "127.0.0.1", "TCPLOCALHOST": "localhost", "PROTO": "TCP",
             "AUTHFAILDELAY": "0"}


class Session:
    """qmail-smtpd for SESSION (pipelined on its stdin) under strace: its AUTH replies, log,
    trace, and the checks counted in sessions/authfail/ (then removed for the next run)."""

    def __init__(self, home, strace, trace):
        r = subprocess.run(["strace", "-qq", "-yy", "-o", trace, *strace, program("qmail-smtpd")], input=SESSION,
                           capture_output=True, timeout=60, env=home.env(**SMTPD_ENV))
        self.rc, self.log = r.returncode, r.stderr.decode("utf-8", "replace")
        self.replies = r.stdout.decode("utf-8", "replace").split("\r\n")
        self.after_ehlo = after_ehlo(self.replies)
        with open(trace, errors="replace") as f:
            self.trace = f.read()
        self.calls = thread_calls(trace)
        self.counted = counted(home)


def after_ehlo(replies):
    """The replies after EHLO's (whole lines: not the empty one after the last CRLF)."""
    after = replies[replies.index("250 SIZE 0") + 1:] if "250 SIZE 0" in replies else []
    return after[:-1] if after[-1:] == [""] else after


def counted(home):
    """The password checks counted in sessions/authfail/, which is then removed for the next run."""
    where, lines = os.path.join(home.root, "sessions", "authfail"), 0
    if os.path.isdir(where):
        for name in os.listdir(where):
            with open(os.path.join(where, name), "rb") as f:
                lines += len(f.read().splitlines())
        shutil.rmtree(where)
    return lines


def wrong_replies(after, checks):
    """What is wrong with the replies after EHLO's and the checks counted."""
    wrong = []
    if len(after) != len(REPLIES) or any(got not in allowed for got, allowed in zip(after, REPLIES)):
        wrong.append("replies %r" % after)
    if checks != after.count(REPLIES[3][0]):
        wrong.append("%d checks counted for %d x 535" % (checks, after.count(REPLIES[3][0])))
    return wrong


def client_cases(calls, home):
    """[(call, occurrence, errno)]: the calls on the sockets it makes (the service's, traced
    with -yy: UNIX-STREAM:[inode]) and the look at the service's path; not on the sockets it
    had before (a qmail-tcpserver worker's connection, its reports to the server)."""
    out, made = [], set()
    sock = paths.users_socket(home.root)
    for name, n, where, _ in calls:
        inode = re.match(r"UNIX-STREAM:\[(\d+)", where or "")
        if name == "socket" and inode:
            made.add(inode.group(1))
        if name not in CLIENT_CALLS:
            continue
        if name == "newfstatat" and where != sock:
            continue
        if name != "newfstatat" and not (inode and inode.group(1) in made):
            continue
        for errno in ERRNOS.get(name, ("EIO",)) + (("EMFILE",) if name == "socket" else ()):
            out.append((name, n, errno))
    return out


def test_smtpd_chkuser_and_auth_through_the_service_every_client_fault_is_451_454(tmp_path):
    need_strace()
    homes = [make_home(tmp_path / ("h%d" % i)) for i in range(4)]
    for h in homes:
        h.control("authfaillimit", "5\n")
    services = [UsersService(h.root, h.env()).start() for h in homes]
    try:
        home = homes[0]
        trace = str(tmp_path / "good.trace")
        Session(home, ["-e", "trace=none"], trace)
        good = Session(home, ["-e", "trace=all"], trace)
        assert good.after_ehlo == [good for good, _ in REPLIES] and good.counted == 1, (good.replies, good.log)
        cases = client_cases(good.calls, home)
        assert {c[0] for c in cases} == CLIENT_CALLS, cases

        free = queue.Queue()
        for h in homes:
            free.put(h)

        def one(case):
            name, n, errno = case
            h = free.get()
            try:
                r = Session(h, ["-e", "trace=" + name, "-e", "inject=%s:error=%s:when=%d" % (name, errno, n)],
                            str(h.root) + ".trace")
            finally:
                free.put(h)
            wrong = []
            if "(INJECTED)" not in r.trace:
                wrong.append("nothing injected")
            wrong += wrong_replies(r.after_ehlo, r.counted)
            if name == "newfstatat" and not any(got == temp for got, (_, temp) in zip(r.after_ehlo, REPLIES)):
                wrong.append("a sock/users it could not look at was taken for none (the database read in-process)")
            if "Traceback" in r.log or "internal bug" in r.log or r.rc != 0:
                wrong.append("exit %s, a traceback or internal bug" % r.rc)
            return ["%s #%d %s: %s; replies %r; log %r" % (name, n, errno, "; ".join(wrong), r.replies, r.log)] \
                if wrong else []

        with concurrent.futures.ThreadPoolExecutor(len(homes)) as pool:
            failures = [f for got in pool.map(one, cases) for f in got]
    finally:
        for s in services:
            s.stop()
    assert failures == [], "%d of %d faulted sessions went wrong:\n%s" % (len(failures), len(cases),
                                                                           "\n".join(failures))


def test_a_module_a_worker_could_not_read_is_read_again(tmp_path):
    """A worker imports what a question needs on its first such question; an I/O error then
    (here: every look at qmailpy/addr/, whose rewrite module chkuser imports) is TEMP for that
    question, and the next ones import it again: Python remembers a package directory it could
    not look into as one without modules (sys.path_importer_cache), which made every RCPT
    TEMP "internal error" until the service was restarted."""
    need_strace()
    home = make_home(tmp_path / "h")
    trace = str(tmp_path / "t")
    rcpt = [q for q in QUESTIONS if q[0].startswith(b"RCPT ")]
    svc = UsersService(home.root, home.env()).start()
    try:
        pid = svc.proc.pid
        deadline = time.monotonic() + WAIT
        while len(os.listdir("/proc/%d/task" % pid)) < 9:
            assert time.monotonic() < deadline, "qmail-usersd has not started its workers"
            time.sleep(0.01)
        workers = [int(t) for t in os.listdir("/proc/%d/task" % pid) if int(t) != pid]
        tracer = attach(pid, workers, ["-e", "trace=newfstatat,openat", "-e", "inject=newfstatat,openat:error=EIO",
                                       "-P", os.path.join(ROOT, "qmailpy", "addr")], trace)
        try:
            assert converse(svc.path, rcpt) == [b"TEMP internal%20error"]
        finally:
            tracer.send_signal(signal.SIGTERM)
            tracer.wait(WAIT)
            tracer.stderr.close()
        assert converse(svc.path, rcpt * 9) == [b"OK"] * 9
    finally:
        log = svc.stop()
    assert "Traceback" not in log, log


def talk(sock):
    """SESSION, pipelined, as a client of a qmail-tcpserver worker: what it answered."""
    sock.sendall(SESSION)
    out = b""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            out += data
    except OSError:
        pass
    return out.decode("utf-8", "replace")


def test_a_tcpserver_worker_after_each_client_fault_serves_the_next_session(tmp_path):
    """qmail-smtpd in a qmail-tcpserver worker (one process, session after session): each client
    fault (EIO) in one session, then a good session in the same worker, with the fds it had
    (the users service's connection closed with the session that opened it)."""
    need_strace()
    home = make_home(tmp_path / "h")
    home.control("authfaillimit", "5\n")
    good = [g for g, _ in REPLIES]
    svc = UsersService(home.root, home.env()).start()
    worker = None
    try:
        worker = F.Worker(home.root, tmp_path, args=(), talk=talk)
        for _ in range(2):              # its lazy imports done: the same calls each session
            r, worker.pid = worker.session()
            assert after_ehlo(r.replies) == good and counted(home) == 1, r
        fds = worker.fds()
        trace = str(tmp_path / "w.trace")
        r, pid = worker.session(["-yy", "-e", "trace=all"], trace)
        assert pid == worker.pid and after_ehlo(r.replies) == good and counted(home) == 1, r
        cases = [c for c in client_cases(thread_calls(trace), home) if c[2] == "EIO"]
        assert {c[0] for c in cases} == CLIENT_CALLS, cases
        failures = []
        for name, n, errno in cases:
            r, pid = worker.session(["-yy", "-e", "trace=" + name, "-e", "inject=%s:error=%s:when=%d" % (name, errno, n)],
                                    trace)
            wrong = wrong_replies(after_ehlo(r.replies), counted(home))
            if r.trace.count("(INJECTED)") != 1:
                wrong.append("injected %d times" % r.trace.count("(INJECTED)"))
            after, next_pid = worker.session()
            if (pid, next_pid) != (worker.pid, worker.pid):
                wrong.append("worker %d ran the session in %s and the next one in %s" % (worker.pid, pid, next_pid))
            if after_ehlo(after.replies) != good or counted(home) != 1:
                wrong.append("the next session: %s" % after)
            if next_pid != worker.pid:      # gone: the next one goes on from where it is
                worker.pid, fds = next_pid, worker.fds() if next_pid else fds
            elif worker.fds() != fds:
                wrong.append("the worker's fds were %r, now %r" % (fds, worker.fds()))
                fds = worker.fds()
            if wrong:
                failures.append("%s #%d %s: %s; %s" % (name, n, errno, "; ".join(wrong), r))
    finally:
        if worker is not None:
            worker.stop()
        svc.stop()
    assert failures == [], "%d of %d faulted sessions went wrong:\n%s" % (len(failures), len(cases),
                                                                           "\n".join(failures))


def test_accept_failing_for_a_while_is_waited_out_not_spun_on(tmp_path):
    """accept() failing as long as the fds are used up (EMFILE, every call for a second): the
    loop leaves the listener alone for a moment after each failure, and serves the caller
    waiting in the backlog once accept() works. It used to try again at once, round after
    round, a log line each: thousands a second (here the log's pipe filled and the service
    stuck; under multilog, a flood that rotates the useful lines away)."""
    need_strace()
    home = make_home(tmp_path / "h")
    svc = started(home)
    try:
        pid = svc.proc.pid
        tracer = attach(pid, [pid], ["-e", "trace=accept4", "-e", "inject=accept4:error=EMFILE"], str(tmp_path / "t"))
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(WAIT)
            sock.connect(svc.path)
            time.sleep(1)
        finally:
            tracer.send_signal(signal.SIGTERM)
            tracer.wait(WAIT)
            tracer.stderr.close()
        with sock:
            sock.sendall(QUESTIONS[1][0])
            assert sock.recv(4096) == QUESTIONS[1][1] + b"\n"
    finally:
        log = log_so_far(svc) + svc.stop()
    assert 1 <= log.count("error reason=\"accept: Too many open files\"") <= 4, log[:2000]
