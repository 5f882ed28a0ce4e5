"""qmail-tcpserver's parent, and the hand-off to its workers, under strace fault injection: every
occurrence of the parent's own calls while it takes a round of connections (accept4, the
getsockname of Python's socket objects, its log lines on fd 2, socketpair, clone, sendmsg and
recvfrom on a worker's channel, wait4, poll, the read of its signal pipe; a test fails when the
round makes a call that is neither swept nor in NOT_SWEPT), and every call a worker makes
between taking a connection off its channel and running qmail-smtpd or sending its `end`: the
channel's recvmsg and sendto, getsockname and setsockopt (-D) of the connection, the tcpserver
lines on fd 2, and the rules cdb's (-x: both openat, newfstatat, the mmap and the dup of its
descriptor). qmail-smtpd's own calls in a worker are tests/test_faults_smtpd.py's.

The rules (real tcprules) deny one client, give another RELAYCLIENT, and give every other the
default's variable; the queue program records the environment it gets. Contract (tcpserver's):
the listener survives every fault and serves the next round as the good one; a connection the
fault hit is either served with exactly the environment of the good round or dropped without a
byte, never served with another rule's variables, and a denied client never gets a byte; no
traceback or internal bug; the `end` lines' statuses are the sessions' (0 for each served one,
25600 for the denied one, 28416 for a dropped one); once the round is over the count is back
to `status: 0/3` (no worker counted busy), and with the idle workers gone the parent has the
fds it had before. After the sweep a full -c of connections at once is still accepted. Start-up
is not counted: strace attaches once the server is warm, and a fault a round did not reach
(the calls' count depends a little on timing) is tried again, and passed over when four rounds
did not make it the N-th of its kind, as the good round did (every kind swept must still be hit
somewhere).

The helpers of tests/test_tcpserver.py (Front, tcprules, DUMP_QUEUE) and tests/faultsweep_smtpd.py
(tracing, the calls' regular expression) are reused."""
import concurrent.futures
import os
import re
import signal
import socket
import subprocess
import time

import faultsweep_smtpd as F
from conftest import Home, program
from test_tcpserver import DUMP_QUEUE, Front, recv_until, tcprules
from qmailpy.queue.layout import create_queue

RELAY, DENY, OTHER = "127.0.0.1", "127.0.9.2", "127.0.9.3"      # loopback sources (lo takes 127/8)
RULES = '%s:allow,RELAYCLIENT="",WHO="relay"\n%s:deny\n:allow,WHO="default"\n' % (RELAY, DENY)
ROUND = (RELAY, DENY, OTHER)
LIMIT = 3
GOOD = (b"220 test.example ESMTP\r\n250 test.example\r\n250 ok\r\n250 ok\r\n354 go ahead\r\n")
WAIT = 20                   # seconds, at most, for a reply or a settled server (under load: a suite on 2 cores)


def zombies(pid):
    """The children of `pid` that died and are not reaped, and the living ones."""
    dead, alive = [], []
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            kids = [int(p) for p in f.read().split()]
    except OSError:
        return [], []
    for kid in kids:
        try:
            with open("/proc/%d/stat" % kid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        (dead if state in "ZX" else alive).append(kid)
    return dead, alive


class Server:
    """qmail-tcpserver -v -D -HR -l h -c 3 -x rules.cdb on 127.0.0.1, its sessions' queue program
    writing their environment into dumps/; `max_use` sessions per worker."""

    def __init__(self, root, max_use):
        os.makedirs(root)
        self.root = root
        home = Home(os.path.join(root, "qmail"))
        home.control("me", "test.example\n")
        home.control("rcpthosts", "example.org\n")
        create_queue(home.root)
        import pathlib
        self.cdb = tcprules(pathlib.Path(root), RULES)
        self.dumps = os.path.join(root, "dumps")
        os.mkdir(self.dumps)
        queue = os.path.join(root, "queue-program")
        with open(queue, "w") as f:
            f.write(DUMP_QUEUE)
        os.chmod(queue, 0o755)
        env = home.env(QMAILQUEUE=queue, DUMPDIR=self.dumps, QMAILPY_MAXUSE=str(max_use),
                       QMAILPY_SINGLEUSER="1")
        self.front = Front(program("qmail-tcpserver"), ["-v", "-D", "-HR", "-l", "h", "-c", str(LIMIT),
                                                        "-x", self.cdb], env, pathlib.Path(root))
        self.pid = self.front.proc.pid

    def client(self, source):
        """One connection from `source`: (what the server wrote, the environment its queue
        program got or None). A session runs up to the message (its 250 or 451 is qp-numbered,
        so the message's reply is read but not kept), then QUIT."""
        before = set(os.listdir(self.dumps))
        start = len(self.front.log())
        got = b""
        try:
            with socket.create_connection(("127.0.0.1", self.front.port), timeout=WAIT,
                                          source_address=(source, 0)) as s:
                port = s.getsockname()[1]
                got = recv_until(s, b"\r\n", WAIT)
                if got:
                    s.sendall(b"HELO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
                    got += recv_until(s, b"354 go ahead\r\n", WAIT)
                    s.sendall(b"hi\r\n.\r\nQUIT\r\n")
                    rest = recv_until(s, b"221 test.example\r\n", WAIT)
                    if not re.fullmatch(rb"250 ok \d+ qp \d+\r\n221 test.example\r\n", rest):
                        got += rest
        except OSError as e:
            got += b"[%s]" % str(e).encode()
        self.settle(start)
        new = sorted(set(os.listdir(self.dumps)) - before)
        envs = []
        for name in new:
            with open(os.path.join(self.dumps, name)) as f:
                envs.append(f.read().replace("TCPREMOTEPORT=%d\n" % port, "TCPREMOTEPORT=CLIENT\n"))
            os.unlink(os.path.join(self.dumps, name))
        return got, (envs[0] if len(envs) == 1 else envs or None)

    def settle(self, start):
        """Wait (a few seconds at most) until the session is over in the parent: its `end` and
        `status: 0/3` lines (either, when a fault kept the other from the log), and every worker
        it let go reaped (settled())."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            lines = [x for x in self.front.log()[start:].split("\n") if x.startswith("tcpserver: ")]
            if ("tcpserver: status: 0/%d" % LIMIT in lines or (lines and lines[-1].startswith("tcpserver: end ")))\
                    and self.settled():
                return
            time.sleep(0.005)

    def round(self):
        return [self.client(source) for source in ROUND]

    def fds(self):
        try:
            return sorted(os.listdir("/proc/%d/fd" % self.pid), key=int)
        except FileNotFoundError:               # it exited: judge() says so
            return []

    def stop(self):
        return self.front.stop()

    def settled(self):
        """No session running: the parent holds one channel per living worker, and has reaped the
        rest (a retired worker's exit and reaping come after the round's last line)."""
        dead, alive = zombies(self.pid)
        sockets = sum(1 for fd in self.fds() if _link(self.pid, fd).startswith("socket:"))
        return not dead and sockets - 1 == len(alive) and not unread(self.pid, 4) and polling(self.pid)

    def wait_settled(self):
        deadline = time.monotonic() + WAIT
        while not self.settled() and time.monotonic() < deadline:
            time.sleep(0.005)

    def end_idle_workers(self):
        """Kill the idle workers (every living one, once the round is over), so that the next round
        starts with none; True when the parent logged nothing for them (no session was running)."""
        self.wait_settled()
        start = len(self.front.log())
        for kid in zombies(self.pid)[1]:
            os.kill(kid, signal.SIGKILL)
        deadline = time.monotonic() + WAIT
        while any(zombies(self.pid)) and time.monotonic() < deadline:
            time.sleep(0.005)
        self.wait_settled()
        return "tcpserver: end " not in self.front.log()[start:]

    def fresh_worker(self):
        """One idle worker that has run a session (its lazy imports done): its pid."""
        self.end_idle_workers()
        self.client(OTHER)
        self.wait_settled()
        [pid] = zombies(self.pid)[1]
        return pid


# poll (ppoll where there is none), and restart_syscall: a poll strace interrupted to attach
POLL = {"x86_64": ("7", "219"), "aarch64": ("73", "128")}.get(os.uname().machine, ("7", "219"))


def polling(pid):
    """Is `pid` waiting in poll (the parent's loop, with nothing left to do)?"""
    try:
        with open("/proc/%d/syscall" % pid) as f:
            return f.read().split(" ", 1)[0] in POLL
    except OSError:
        return False


def unread(pid, fd):
    """The bytes waiting in the pipe that is `pid`'s `fd` (the parent's signal pipe: a SIGCHLD
    it has yet to see)."""
    import fcntl
    import termios
    try:
        mine = os.open("/proc/%d/fd/%d" % (pid, fd), os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return 0
    try:
        return int.from_bytes(fcntl.ioctl(mine, termios.FIONREAD, b"\0\0\0\0"), "little")
    finally:
        os.close(mine)


def _link(pid, fd):
    try:
        return os.readlink("/proc/%d/fd/%s" % (pid, fd))
    except OSError:
        return ""


class Gone(Exception):
    """The process to trace was gone."""


def traced(pid, options, path, work):
    """`work()` with strace -qq `options` attached to `pid` (attached before, detached after)."""
    tracer = subprocess.Popen(["strace", "-qq", "-o", path, *options, "-p", str(pid)], stderr=subprocess.PIPE)
    try:
        F.wait_for(lambda: tracer.poll() is not None or not os.path.exists("/proc/%d" % pid) or F.tracing(pid),
                   "strace attached to %d" % pid)
        if tracer.poll() not in (None, 0):     # 0: it attached, and the process ended at once
            raise Gone("strace did not attach to %d: %s" % (pid, tracer.stderr.read().decode()))
        return work()
    finally:
        tracer.send_signal(signal.SIGTERM)
        tracer.wait(30)
        tracer.stderr.close()


# -- what a trace's calls work on

def each_call(trace):
    """(call, occurrence, its arguments, what it returned, its first argument, injected) for each
    call of a trace of one process (strace's `when=N` counts per call and process)."""
    counts = {}
    for line in trace.splitlines():
        m = F.CALL.match(line)
        if m:
            name, args, ret = m.group(2), m.group(3), m.group(4)
            counts[name] = counts.get(name, 0) + 1
            yield name, counts[name], args, ret, args.split(",", 1)[0].strip(), line.endswith("(INJECTED)")


def parent_calls(trace):
    """[(call, occurrence, target, injected)] of the parent's trace: target names what the call
    works on: listener, connection, channel, log (fd 2), wake (the signal pipe), process, poll."""
    fds = {2: "log", 3: "listener", 4: "wake", 5: "wake"}
    out = []
    for name, n, args, ret, first, injected in each_call(trace):
        target = fds.get(int(first)) if first.isdigit() else None
        if name in ("clone", "clone3", "wait4"):
            target = "process"
        elif name in ("poll", "socketpair"):
            target = name
        if name == "accept4" and ret.isdigit():
            fds[int(ret)] = "connection"
        elif name == "socketpair":
            pair = re.findall(r"\d+", args.rsplit("[", 1)[1]) if ret == "0" else None
            if pair:
                fds[int(pair[0])] = fds[int(pair[1])] = "channel"
        elif name == "close" and first.isdigit() and int(first) > 5:
            fds.pop(int(first), None)
        out.append((name, n, target, injected))
    return out


def worker_calls(trace, cdb):
    """[(call, occurrence, target, injected)] of a worker's trace: channel (recvmsg, sendto),
    connection (the received socket), tcpserver (its log lines on fd 2), cdb (the rules file's
    descriptors), or None for the session's own calls."""
    fds, out = {}, []
    for name, n, args, ret, first, injected in each_call(trace):
        target = fds.get(int(first)) if first.isdigit() else None
        if name == "mmap":
            fd = args.split(",")[4].strip()
            target = fds.get(int(fd)) if fd.isdigit() else None
        if name == "recvmsg":
            fds[int(first)] = target = "channel"
            got = re.search(r"SCM_RIGHTS, cmsg_data=\[(\d+)\]", args)
            if got:
                fds[int(got.group(1))] = "connection"
        elif name == "write" and first == "2":
            target = "tcpserver" if args.split(",", 1)[1].strip().startswith('"tcpserver: ') else None
        elif name == "openat":
            path = F._first_string(args)
            opened = path == cdb or (path or "").startswith("/proc/self/fd/") and fds.get(int(path[14:])) == "cdb"
            target = "cdb" if opened else None
            if opened and ret.isdigit():
                fds[int(ret)] = "cdb"
        elif (name == "dup" or name == "fcntl" and "F_DUPFD" in args) and ret.isdigit():
            fds[int(ret)] = target
        if name == "close" and first.isdigit():
            fds.pop(int(first), None)
        out.append((name, n, target, injected))
    return out


# (call, target): the errnos injected, each at every occurrence of the good round
PARENT_FAULTS = {("accept4", "listener"): ("EMFILE", "ECONNABORTED"), ("getsockname", "connection"): ("ENOBUFS",),
                 ("getsockname", "channel"): ("ENOBUFS",), ("write", "log"): ("EPIPE", "EIO"),
                 ("read", "wake"): ("EIO",), ("socketpair", "socketpair"): ("EMFILE",),
                 ("clone", "process"): ("EAGAIN",), ("sendmsg", "channel"): ("EPIPE", "ENOBUFS"),
                 ("recvfrom", "channel"): ("ECONNRESET", "EIO"), ("wait4", "process"): ("ECHILD", "EIO"),
                 ("poll", "poll"): ("ENOMEM",)}
WORKER_FAULTS = {("recvmsg", "channel"): ("EIO",), ("sendto", "channel"): ("EPIPE", "EIO"),
                 ("getsockname", "connection"): ("ENOBUFS",), ("setsockopt", "connection"): ("ENOMEM",),
                 ("write", "tcpserver"): ("EPIPE", "EIO"), ("openat", "cdb"): ("EIO", "EACCES", "ENOENT", "EMFILE"),
                 ("newfstatat", "cdb"): ("EIO",), ("mmap", "cdb"): ("ENOMEM",), ("fcntl", "cdb"): ("EMFILE",)}


def plan(calls, faults):
    """Every occurrence of each call of `faults`, once with each of its errnos."""
    return [(name, n, target, errno) for name, n, target, _ in calls for errno in faults.get((name, target), ())]


def judge(server, case, good, faulted, check, log, leaked):
    """What went wrong in one case ([] for nothing): see the module docstring."""
    wrong = []
    for source, (want, want_env), (got, env) in zip(ROUND, good, faulted):
        if source == DENY and (env is not None or got not in (b"", b"[[Errno 104] Connection reset by peer]")):
            wrong.append("the denied client got %r, its queue program %r" % (got, env))
        elif source != DENY and (got, env) != (want, want_env) and \
                (env is not None or got not in (b"", b"[[Errno 104] Connection reset by peer]")):
            wrong.append("%s was neither served as in the good round nor dropped: %r, environment %s" % (
                source, got, "the good one" if env == want_env else "\n" + str(env)))
    if check != good:
        wrong.append("the next round was not served as the good one: %r" % ([g for g, _ in check],))
    for bad in ("Traceback", "internal bug", "Exception ignored"):
        if bad in log:
            wrong.append("%r in the log" % bad)
    if server.front.proc.poll() is not None:
        wrong.append("the server exited %s" % server.front.proc.returncode)
    statuses = re.findall(r"tcpserver: status: (\d+/\d+)", log)
    if statuses[-1:] != ["0/%d" % LIMIT]:
        wrong.append("the count after the next round: %s" % statuses[-1:])
    if leaked:
        wrong.append(leaked)
    return wrong


NOT_REACHED = None      # run_case(): in four rounds the planned call never was the N-th of its kind


def run_case(server, case, good, base_fds, who):
    """One case (up to 4 tries when the round's N-th call of the kind was not the planned one):
    the failures, or NOT_REACHED after four such rounds (how often the parent polls, reaps or
    reads its signal pipe in a round, and where a worker's N-th getsockname falls, depends a
    little on timing)."""
    name, n, target, errno = case
    for _ in range(4):
        pid = server.pid if who == "parent" else server.fresh_worker()
        if who == "parent":
            server.end_idle_workers()
        start = len(server.front.log())
        path = server.root + ".trace"
        try:
            faulted = traced(pid, ["-e", "trace=all", "-e", "inject=%s:error=%s:when=%d" % (name, errno, n)], path,
                             server.round)
        except Gone as e:
            return ["%s #%d (%s) %s: %s; log: %s" % (name, n, target, errno, e, server.front.log()[-3000:])]
        with open(path, errors="replace") as f:
            trace = f.read()
        calls = parent_calls(trace) if who == "parent" else worker_calls(trace, server.cdb)
        hit = [(c[0], c[2]) for c in calls if c[3]]
        if hit == [(name, target)]:
            break
    else:
        return NOT_REACHED
    middle = len(server.front.log())
    check = server.round()
    log = server.front.log()[start:]
    ends = re.findall(r"tcpserver: end \d+ status (\d+)\n", log[:middle - start])
    leaked = None
    if not server.end_idle_workers():
        leaked = "a worker the parent counted busy after the round"
    elif server.fds() != base_fds:
        leaked = "the parent's fds were %r, now %r" % (base_fds, server.fds())
    wrong = judge(server, case, good, faulted, check, log, leaked)
    served = sum(1 for got, env in faulted if env is not None)
    if target == "log" or name == "recvfrom":   # a lost line; an end unread (the worker's exit is it: 0)
        pass
    elif ends.count("0") != served or ends.count("25600") > 1 or set(ends) - {"0", "25600", "28416"}:
        wrong.append("%d sessions served, their ends logged with the statuses %s" % (served, ends))
    return ["%s #%d (%s) %s: %s\n  log: %s" % (name, n, target, errno, "; ".join(wrong), log.strip().replace(
        "\n", "\n       "))] if wrong else []


def servers(tmp_path, count, max_use):
    made = []
    try:
        for i in range(count):
            made.append(Server(str(tmp_path / ("s%d" % i)), max_use))
    except BaseException:
        for s in made:
            s.stop()
        raise
    return made


def full_limit(server):
    """-c 3 after the sweep: three sessions at once are greeted, a fourth client waits until one
    of them ends, and with all gone the count is back to 0/3 (no slot was lost)."""
    def greeted(s, timeout):
        s.settimeout(timeout)
        try:
            return s.recv(100).startswith(b"220 ")
        except socket.timeout:
            return False
    start = len(server.front.log())
    held = [socket.create_connection(("127.0.0.1", server.front.port), timeout=WAIT) for _ in range(LIMIT)]
    try:
        assert all(greeted(s, WAIT) for s in held), server.front.log()[start:]
        with socket.create_connection(("127.0.0.1", server.front.port), timeout=WAIT) as extra:
            assert not greeted(extra, 0.3)
            held.pop().close()
            assert greeted(extra, WAIT)
    finally:
        for s in held:
            s.close()
    server.settle(start)
    server.wait_settled()
    assert re.findall(r"tcpserver: status: (\d+/\d+)", server.front.log())[-1] == "0/%d" % LIMIT


def warm(server):
    """(the good round, the parent's fds with no worker) of a server past its lazy imports."""
    for _ in range(2):
        good = server.round()
    server.end_idle_workers()
    return good, server.fds()


def sweep(tmp_path, who, max_use, faults):
    """The good round traced in the first server, then every case of its plan across four."""
    import queue
    made = servers(tmp_path, 4, max_use)
    try:
        goods = [warm(server) for server in made]
        first = made[0]
        assert [g for g, _ in goods[0][0]] == [GOOD, b"", GOOD], goods[0][0]
        assert "\nRELAYCLIENT=\n" in goods[0][0][0][1] and "\nWHO=relay\n" in goods[0][0][0][1]
        assert "RELAYCLIENT" not in goods[0][0][2][1] and "\nWHO=default\n" in goods[0][0][2][1]
        pid = first.pid if who == "parent" else first.fresh_worker()
        path = first.root + ".trace"
        again = traced(pid, ["-e", "trace=all"], path, first.round)
        assert again == goods[0][0], again
        with open(path, errors="replace") as f:
            trace = f.read()
        calls = parent_calls(trace) if who == "parent" else worker_calls(trace, first.cdb)
        cases = plan(calls, faults)
        free = queue.Queue()
        for i in range(len(made)):
            free.put(i)

        def one(case):
            i = free.get()
            try:
                got = run_case(made[i], case, goods[i][0], goods[i][1], who)
                if made[i].front.proc.poll() is not None:       # a new server for the next cases
                    made[i].stop()
                    made[i] = Server(made[i].root + "+", max_use)
                    goods[i] = warm(made[i])
                return got
            finally:
                free.put(i)
        with concurrent.futures.ThreadPoolExecutor(len(made)) as pool:
            results = list(pool.map(one, cases))
        failures = [f for got in results if got is not NOT_REACHED for f in got]
        cases = [case for case, got in zip(cases, results) if got is not NOT_REACHED]
        for server, (good, _) in zip(made, goods):
            assert server.round() == good
            full_limit(server)
    finally:
        for server in made:
            server.stop()
    return calls, cases, failures


# the parent's calls of a round left out: close (one strace fails stays open, which a real failing
# close does not), a signal's return, and the write of Python's C signal handler to the wake-up
# pipe (its own, non-blocking: only EAGAIN, which Python ignores; any other error Python reports
# on stderr itself)
NOT_SWEPT = {("close", "connection"), ("close", "channel"), ("restart_syscall", None), ("rt_sigreturn", None),
             ("write", "wake")}


def test_every_call_of_the_parent_failing(tmp_path):
    calls, cases, failures = sweep(tmp_path, "parent", LIMIT, PARENT_FAULTS)
    covered = {(c[0], c[2]) for c in cases}
    assert failures == [], "%d of %d faulted rounds went wrong:\n%s" % (len(failures), len(cases), "\n".join(failures))
    assert set(PARENT_FAULTS) <= covered, sorted(set(PARENT_FAULTS) - covered)
    made = {(c[0], c[2]) for c in calls}
    assert made - covered <= NOT_SWEPT, sorted(made - covered - NOT_SWEPT)     # every other call is swept


def test_every_call_of_a_worker_taking_a_connection_failing(tmp_path):
    _, cases, failures = sweep(tmp_path, "worker", 100, WORKER_FAULTS)
    assert failures == [], "%d of %d faulted rounds went wrong:\n%s" % (len(failures), len(cases), "\n".join(failures))
    covered = {(c[0], c[2]) for c in cases}
    assert set(WORKER_FAULTS) <= covered, sorted(set(WORKER_FAULTS) - covered)
