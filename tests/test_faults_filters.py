"""qmail-queue's clamd and spamd conversations under strace's fault injection, at every occurrence.

A message (EICAR in it) for two recipients: b@example.net is virus-checked (clamavclients.cdb),
both are spam-checked (spamglobal). The good run: clamd (the real one of tests/test_filters.py)
finds the virus, b is refused (`refused for b@example.net: virus ... found`), spamd (real, -L)
marks c's copy with its X-Spam fields and that copy is queued for c alone. Then every call of the
filters fails once: the calls on clamd's and spamd's sockets (socket, connect, getsockopt, the
ioctl of settimeout, poll, sendto, recvfrom, shutdown), the reading of the mess file that is
streamed (openat, newfstatat, lseek, read, pread64, and close: a read-only close changes nothing)
and the writing of the copy with spamd's X-Spam fields (openat, write, fsync). What is allowed
(docs/filters.md, "When clamd or spamd is in trouble"; filterfailopen 0):

- exit 0 only with the good run's result: c's copy, byte for byte spamd's answer under
  qmail-queue's Received line, nothing for b, the same `refused for` line; and that result for
  the faults that are no trouble (a read-only close; EAGAIN from a UNIX socket's connect, its
  backlog full: waited for);
- any other exit: one of qmail-queue's temporary codes, never 31 (nobody may be refused but b),
  nor 81 (internal bug); one qmail-style line (after b's `refused for`, when the virus was found
  before the fault) naming the scanner (a socket's fault), `unable to read mess` (the mess file's)
  or the queue file being written; nothing in the queue (the insertion taken back whole).

Swept in bin/qmail-queue writing the queue itself (clamd over TCP: a connect that waits, poll and
getsockopt) and in qmail-queued (clamd over its UNIX socket; strace attached to the running service
while a client inserts through it; after each fault the service has its threads and descriptors of
before and queues the next client's message). The errnos: the program treats every errno of a call
alike but those Python or the code gives a meaning (EAGAIN: CPython waits and tries again;
ECONNRESET: the peer closed; ECONNREFUSED: nobody listens), so each call gets EIO and the errnos
that call can give for another reason: EMFILE (socket, openat), EAGAIN (connect, getsockopt, poll,
sendto, recvfrom), ECONNREFUSED (connect), ECONNRESET (sendto, recvfrom), ENOSPC (the copy's write
and fsync). Under qmail-queued the errnos beyond EIO are swept on the scanners' socket calls only
(the files are bin/qmail-queue's code, swept there), and not ECONNRESET on sendto (its injected
fault leaves clamd waiting for the rest of the stream, filtertimeout seconds), nor close() (an
injected close leaves the descriptor open: the service's count would say leaked).
"""
import os
import queue
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from qmailpy.proto import qq
from qmailpy.queue import layout, sockclient
from queuedsvc import Queued
from test_faults_queue import (IMPORTS, TEMPORARY, attach, calls, descriptors, detach, empty_queue, hit, make_home,
                               queue_files, run_traced, service_after, service_fault, strace_present,  # noqa: F401
                               wait_tasks)
from test_filters import INFECTED, VIRUS, clamd, spamd  # noqa: F401  (the real daemons, module fixtures)

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "bin"
SENDER, RCPTS = b"alice@example.org", [b"b@example.net", b"c@example.com"]
REFUSED = "refused for b@example.net: virus %s found" % VIRUS
SOCKET_CALLS = {"connect", "getsockopt", "ioctl", "poll", "sendto", "recvfrom", "shutdown"}
MESS_READS = {"openat", "newfstatat", "lseek", "read", "pread64"}
COPY_WRITES = {"openat", "write", "fsync"}
ERRNOS = {"socket": ("EIO", "EMFILE"), "connect": ("EIO", "ECONNREFUSED", "EAGAIN"), "poll": ("EIO", "EAGAIN"),
          "getsockopt": ("EIO", "EAGAIN"),
          "sendto": ("EIO", "EAGAIN", "ECONNRESET"), "recvfrom": ("EIO", "EAGAIN", "ECONNRESET"),
          "openat": ("EIO", "EMFILE"), "write": ("EIO", "ENOSPC"), "fsync": ("EIO", "ENOSPC")}
FD = re.compile(r"^\d+ +\w+\((?:\[\{fd=)?(\d+)<")
RESULT = re.compile(r"\)\s+= (\d+)<")


def filtered_home(root, clamd, spamd, tcp=False):
    """A qmail home (test_faults_queue's) whose b@example.net is virus-checked, everybody spam-checked;
    clamd over its UNIX socket or (tcp) its TCP port (a connect that waits: poll, getsockopt)."""
    import cdblib
    home = make_home(root)
    with open(home / "control" / "clamavclients.cdb", "wb") as f, cdblib.Writer(f) as w:
        w.put(b"b@example.net", b"")
    clamd_address = "127.0.0.1:%d" % clamd.port if tcp else clamd.sock
    for name, value in (("spamglobal", "1"), ("clamdsocket", clamd_address), ("spamdsocket", spamd.sock),
                        ("filtertimeout", "3")):
        (home / "control" / name).write_text(value + "\n")
    (Path(root) / "m").write_bytes(INFECTED)
    (Path(root) / "e").write_bytes(qq.encode(SENDER, RCPTS))
    return home


def filter_work(trace, start, closes=False):
    """[(name, occurrence, shape, line)] of the filters' calls from the first line matching `start`:
    those on a socket made after it (clamd's, spamd's), the reads of a mess file, and, once a
    scanner was asked, the writes of a pid/ file (the copy with spamd's X-Spam fields). closes:
    the close() of a mess file read too (an injected close() does not close, test_faults_queue's
    own_work: a descriptor more, which a process that exits does not mind; never a socket's)."""
    every = calls(trace)
    first = next((i for i, c in enumerate(every) if re.search(start, c[3])), None)
    assert first is not None, "the good run's trace has no %r: the sweep would inject nothing" % start
    early = {(name, n) for name, n, _, _ in every[:first]}
    sockets, work, asked = set(), [], False
    for c in every[first:]:
        name, n, _, line = c
        if (name, n) in early or any(s in line for s in IMPORTS):
            continue
        fd = FD.match(line)
        fd = fd and fd.group(1)
        if name == "socket":
            made = RESULT.search(line)
            assert made, line
            sockets.add(made.group(1))
            work.append(c)
            asked = True
        elif name == "close":
            sockets.discard(fd)
            if closes and "/queue/mess/" in line:
                work.append(c)
        elif name in SOCKET_CALLS and fd in sockets:
            work.append(c)
        elif name in MESS_READS and "/queue/mess/" in line and "AT_SYMLINK_NOFOLLOW" not in line and \
                (name != "openat" or "O_RDONLY" in line):
            work.append(c)
        elif name in COPY_WRITES and asked and "/queue/pid/" in line:
            work.append(c)
    return work


def faults(work, errnos=ERRNOS):
    for name, n, want, line in work:
        for err in errnos.get(name, ("EIO",)):
            yield name, n, err, want, line


def reason(line):
    """What the stderr line of a failure must say for the call of the good run's `line`: the
    scanner named (a socket), the mess file (its reading), or the queue file being written."""
    if "<socket:[" in line:         # under qmail-queued the N-th poll may be its client's socket's
        return r"((clamd|spamd): .+|unable to read message: .+)"     # (timing): 54, temporary too
    if "/queue/mess/" in line:
        return r"unable to read mess: .+"
    return r"unable to (create|write|fsync) .+"


def must_pass(name, err_name, line):
    """Faults that change nothing: a read-only close() (fileio.close_quietly); EAGAIN from the
    connect of a UNIX socket (its backlog full: waited for, unixsock.connect)."""
    return name == "close" or (name, err_name) == ("connect", "EAGAIN") and "AF_UNIX" in line


def outcome(home, rc, err, good, why=".+"):
    """What is wrong with a run's result ([] when nothing): `good` is the good run's c's copy;
    `why`, what the stderr line of a failure says (a regular expression). The filters' own line
    for b may come first: the virus was found before the failure."""
    files = queue_files(home)
    if rc == 0:
        todo = [f for f in files if f.startswith("todo/")]
        if len(todo) != 1:
            return ["exit 0 but the queue holds %s" % files]
        msgid = int(todo[0].split("/")[1])
        mess = Path(layout.mess_path(str(home), msgid)).read_bytes()
        records = Path(layout.intd_path(str(home), msgid)).read_bytes()
        problems = []
        if sorted(files) != sorted(["todo/%d" % msgid, "intd/%d" % msgid,
                                    "mess/%d/%d" % (msgid % layout.SPLIT, msgid)]):
            problems.append("exit 0 but the queue holds %s" % files)
        if mess.split(b"\n", 1)[1] != good:
            problems.append("exit 0, c's mess is %r" % mess[:300])
        if not records.endswith(qq.encode_records(SENDER, RCPTS[1:])):
            problems.append("exit 0, the envelope is %r" % records)
        return problems
    problems = [] if rc in TEMPORARY else ["exit %d is not temporary" % rc]
    if files:
        problems.append("exit %d but the queue holds %s" % (rc, files))
    if not re.fullmatch(r"(qmail-queue: %s\n)?qmail-queue: %s\n" % (re.escape(REFUSED), why), err) or \
            "Traceback" in err or "internal bug" in err or "[Errno" in err:
        problems.append("stderr is not one qmail-queue line matching %r" % why)
    return problems


def good_copy(home):
    """c's copy of the good run (spamd's answer under the Received line), the queue emptied."""
    [todo] = [f for f in queue_files(home) if f.startswith("todo/")]
    mess = Path(layout.mess_path(str(home), int(todo.split("/")[1]))).read_bytes()
    empty_queue(home)
    assert mess.split(b"\n", 2)[1].startswith(b"X-Spam-Checker-Version: "), mess
    return mess.split(b"\n", 1)[1]


def parallel(jobs, places, run):
    """run(place, job) for every job, as many at once as there are places; the results in order."""
    free = queue.Queue()
    for p in places:
        free.put(p)

    def one(job):
        place = free.get()
        try:
            return run(place, job)
        finally:
            free.put(place)
    with ThreadPoolExecutor(len(places)) as pool:
        return list(pool.map(one, jobs))


# -- bin/qmail-queue writing the queue itself

def test_qmail_queue_every_fault_of_the_filters(tmp_path, clamd, spamd):
    roots = [tmp_path / str(i) for i in range(3)]
    homes = [filtered_home(r, clamd, spamd, tcp=True) for r in roots]
    argv = [str(BIN / "qmail-queue")]

    def traced(root, args):
        env = dict(os.environ, QMAILHOME=str(root / "qmail"))
        return run_traced(argv, env, args, root / "m", root / "e")

    for _ in range(2):                         # the first run may write __pycache__: count on the second
        rc, err, trace = traced(roots[0], ["-e", "trace=all"])
        assert (rc, err) == (0, "qmail-queue: %s\n" % REFUSED)
        good = good_copy(homes[0])
    work = filter_work(trace, r"read\(1<", closes=True)
    jobs = sorted(faults(work), key=lambda j: j[:3] != ("sendto", j[1], "ECONNRESET"))  # the slow ones first:
    # clamd waits filtertimeout for the rest of a stream whose sending was "reset"

    def run(root, job):
        name, n, err_name, want, line = job
        for _ in range(4):             # a run that made fewer of these calls (poll) is made again
            rc, err, trace = traced(root, ["-e", "trace=" + name, "-e",
                                           "inject=%s:error=%s:when=%d" % (name, err_name, n)])
            ok, where = hit(trace, want)
            if ok or "(INJECTED)" in trace:
                break
            empty_queue(root / "qmail")
        problems = [] if ok else ["the fault missed %r (struck %s)" % (want, where)]
        problems += outcome(root / "qmail", rc, err, good, reason(line))
        if must_pass(name, err_name, line) and rc != 0:
            problems.append("this fault is no trouble: exit 0 and the message queued")
        if rc == 0 and err != "qmail-queue: %s\n" % REFUSED:
            problems.append("exit 0 with stderr %r" % err)
        empty_queue(root / "qmail")
        return problems and "%s#%d %s: exit %d, stderr %r: %s [good run: %s]" % (
            name, n, err_name, rc, err, "; ".join(problems), line)

    failures = [f for f in parallel(jobs, roots, run) if f]
    assert failures == [], "\n".join(failures)
    names = {j[0] for j in jobs}
    assert {"socket", "connect", "getsockopt", "ioctl", "poll", "sendto", "recvfrom", "shutdown", "openat",
            "pread64", "read", "close", "write", "fsync"} <= names, names


# -- qmail-queued while a client inserts through it

def client(home):
    """qmail-queued's client in this process (bin/qmail-queue's code): (code, its stderr line)."""
    job = sockclient.SocketJob(str(home), 30)
    job.write(INFECTED)
    code = job.finish(SENDER, RCPTS)
    return code, "qmail-queue: %s\n" % job.reason if code else ""


SCANNER_ERRNOS = dict({name: errs for name, errs in ERRNOS.items() if name in SOCKET_CALLS | {"socket"}},
                      sendto=("EIO", "EAGAIN"))


def test_qmail_queued_every_fault_of_the_filters(tmp_path, clamd, spamd):
    roots = [tmp_path / str(i) for i in range(3)]
    services = []
    try:
        for root in roots:
            home = filtered_home(root, clamd, spamd)
            services.append(Queued(home, os.environ, log=str(root / "queued.log")).start())
        pid = services[0].proc.pid
        for svc in services:
            for _ in range(2):                  # its lazy imports done
                assert client(svc.home) == (0, "")
                good = good_copy(Path(svc.home))
        tracer = attach(pid, ["-e", "trace=all"], roots[0] / "trace")
        assert client(services[0].home) == (0, "")
        wait_tasks(pid, 1)
        detach(tracer)
        good = good_copy(Path(services[0].home))
        work = filter_work((roots[0] / "trace").read_text(), r"accept4\(")
        jobs = list(faults(work, SCANNER_ERRNOS))

        def run(svc, job):
            name, n, err_name, want, line = job
            home, pid = Path(svc.home), svc.proc.pid
            fds = descriptors(pid)
            (rc, err), threads, ok, where = service_fault(home, pid, (name, n, err_name, want), home.parent / "trace",
                                                          lambda: client(home))
            problems = [] if ok else ["the fault missed %r (struck %s)" % (want, where)]
            problems += outcome(home, rc, err, good, reason(line))
            if must_pass(name, err_name, line) and rc != 0:
                problems.append("this fault is no trouble: exit 0 and the message queued")
            if svc.proc.poll() is not None:
                return "%s#%d %s: the service exited %d" % (name, n, err_name, svc.proc.returncode)
            problems += service_after(home, pid, threads, fds, lambda: client(home),
                                      lambda rc, err: outcome(home, rc, err, good))
            return problems and "%s#%d %s: exit %d, stderr %r: %s [good run: %s]" % (
                name, n, err_name, rc, err, "; ".join(problems), line)

        failures = [f for f in parallel(jobs, services, run) if f]
    finally:
        codes = [svc.stop() for svc in services]
    logs = [(root / "queued.log").read_text() for root in roots]
    assert failures == [], "\n".join(failures)
    names = {j[0] for j in jobs}
    assert {"socket", "connect", "ioctl", "poll", "sendto", "recvfrom", "shutdown", "openat", "pread64", "read",
            "write", "fsync"} <= names, names
    for code, text in zip(codes, logs):
        assert code == 0 and text.endswith("qmail-queued: exiting\n"), text[-2000:]
        assert "Traceback" not in text and "internal bug" not in text, text
        assert ": " + REFUSED + "\n" in text, text[-2000:]


# -- faults the sweeps found: each has its own test

def inject_after_envelope(root, name, k, err_name, on=""):
    """bin/qmail-queue in root/qmail with the k-th `name` call (whose trace line has `on`) after its
    read of the envelope failing; (exit code, stderr, the INJECTED lines)."""
    env = dict(os.environ, QMAILHOME=str(root / "qmail"))
    argv = [str(BIN / "qmail-queue")]
    for _ in range(2):                         # the first run may write __pycache__: count on the second
        rc, err, trace = run_traced(argv, env, ["-e", "trace=read,%s" % name], root / "m", root / "e")
        assert rc == 0, err
        empty_queue(root / "qmail")
    every = calls(trace)
    start = next(i for i, c in enumerate(every) if c[3].split(None, 1)[1].startswith("read(1<"))
    n = [c for c in every[start:] if c[0] == name and on in c[3]][k - 1][1]
    rc, err, trace = run_traced(argv, env, ["-e", "trace=%s" % name, "-e", "inject=%s:error=%s:when=%d"
                                            % (name, err_name, n)], root / "m", root / "e")
    return rc, err, [line for line in trace.splitlines() if "(INJECTED)" in line]


@pytest.mark.parametrize("k, scanner", [(1, "clamd"), (2, "spamd")])
def test_a_scanner_socket_that_cannot_be_made_is_network_trouble(tmp_path, clamd, spamd, k, scanner):
    """socket() for clamd or spamd failing (EMFILE): spamd's was an internal bug (81, a traceback
    line), clamd's `unable to read mess` (54, our file blamed); both are now 56, `cannot connect`
    with the service named, nothing queued, as when its connect fails."""
    filtered_home(tmp_path, clamd, spamd)
    rc, err, injected = inject_after_envelope(tmp_path, "socket", k, "EMFILE")
    assert len(injected) == 1, injected
    sock = clamd.sock if scanner == "clamd" else spamd.sock
    assert (rc, err.splitlines()[-1]) == (56, "qmail-queue: %s: cannot connect to %s: Too many open files"
                                          % (scanner, sock))
    assert queue_files(tmp_path / "qmail") == []


def test_a_spamd_socket_that_cannot_be_made_fails_open_with_filterfailopen(tmp_path, clamd, spamd):
    """... and it is service trouble like the others: with control/filterfailopen 1 it is logged and
    the message goes on without X-Spam fields (it was exit 81 there too)."""
    home = filtered_home(tmp_path, clamd, spamd)
    (home / "control" / "filterfailopen").write_text("1\n")
    rc, err, injected = inject_after_envelope(tmp_path, "socket", 2, "EMFILE")
    assert len(injected) == 1, injected
    assert (rc, err) == (0, "qmail-queue: spamd: cannot connect to %s: Too many open files; filterfailopen: "
                            "going on unfiltered\nqmail-queue: %s\n" % (spamd.sock, REFUSED))
    [todo] = [f for f in queue_files(home) if f.startswith("todo/")]
    assert Path(layout.mess_path(str(home), int(todo.split("/")[1]))).read_bytes().split(b"\n", 1)[1] == \
        (tmp_path / "m").read_bytes()


@pytest.mark.parametrize("k, scanner", [(1, "clamd"), (2, "spamd")])
def test_a_failing_close_of_the_mess_file_read_changes_nothing(tmp_path, clamd, spamd, k, scanner):
    """close() of the mess file the filter read for clamd (the stream) or spamd failing (EIO) after
    the whole file was read: it was exit 54, `unable to read mess`, the client told to retry a
    message that was scanned whole. A read-only descriptor's close changes nothing (Linux frees it
    whatever close says: fileio.close_quietly): the message is queued as without the fault."""
    home = filtered_home(tmp_path, clamd, spamd)
    rc, err, injected = inject_after_envelope(tmp_path, "close", k, "EIO", on="/queue/mess/")
    assert len(injected) == 1 and "/queue/mess/" in injected[0], injected
    assert (rc, err) == (0, "qmail-queue: %s\n" % REFUSED)
    [todo] = [f for f in queue_files(home) if f.startswith("todo/")]
    mess = Path(layout.mess_path(str(home), int(todo.split("/")[1]))).read_bytes()
    assert mess.split(b"\n", 2)[1].startswith(b"X-Spam-Checker-Version: "), mess


class BusyClamd:
    """A clamd on a UNIX socket whose backlog is full (listen(0) and one connection waiting) for
    `after` seconds; then it takes the next connection and answers its INSTREAM `stream: OK`."""

    def __init__(self, path, after):
        import socket
        import threading
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(str(path))
        self.srv.listen(0)
        self.filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.filler.connect(str(path))
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.setblocking(False)
        try:
            with pytest.raises(BlockingIOError):         # the backlog is full: EAGAIN at once
                probe.connect(str(path))
        finally:
            probe.close()
        self.thread = threading.Thread(target=self.serve, args=(after,), daemon=True)
        self.thread.start()

    def serve(self, after):
        import time
        time.sleep(after)
        self.srv.settimeout(5)
        try:
            self.srv.accept()[0].close()                # the filler's
            conn = self.srv.accept()[0]
            data = b""
            while not data.endswith(b"\0\0\0\0"):       # the zero-length chunk: the end of the stream
                got = conn.recv(65536)
                if not got:
                    return
                data += got
            conn.sendall(b"stream: OK\0")
            conn.close()
        except OSError:
            pass

    def close(self):
        self.thread.join(10)
        self.filler.close()
        self.srv.close()


def test_a_clamd_whose_backlog_is_full_is_waited_for(tmp_path):
    """A UNIX socket's connect fails at once with EAGAIN while the listener's backlog is full (a
    TCP one waits): the filters took that for `cannot connect` (56, or with filterfailopen the
    message queued unscanned) the moment clamd was busy. It is waited for within filtertimeout,
    as qmail-queued's clients wait for the service (unixsock.connect): the message is scanned."""
    home = make_home(tmp_path)
    for name, value in (("clamglobal", "1"), ("clamdsocket", str(tmp_path / "clamd.sock")), ("filtertimeout", "10")):
        (home / "control" / name).write_text(value + "\n")
    (tmp_path / "m").write_bytes(b"From: alice@example.org\nSubject: hello\n\nbody line\n")
    (tmp_path / "e").write_bytes(qq.encode(SENDER, RCPTS))
    busy = BusyClamd(tmp_path / "clamd.sock", 0.5)
    try:
        with open(tmp_path / "m", "rb") as m, open(tmp_path / "e", "rb") as e:
            p = subprocess.run([str(BIN / "qmail-queue")], stdin=m, stdout=e, stderr=subprocess.PIPE, timeout=30,
                               env=dict(os.environ, QMAILHOME=str(home)))
    finally:
        busy.close()
    assert (p.returncode, p.stderr) == (0, b"")
    [todo] = [f for f in queue_files(home) if f.startswith("todo/")]
    assert Path(layout.mess_path(str(home), int(todo.split("/")[1]))).read_bytes().split(b"\n", 1)[1] == \
        (tmp_path / "m").read_bytes()
