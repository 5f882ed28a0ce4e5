"""The queue's write path under strace's fault injection, at every occurrence of every call.

Each sweep runs the real program once without faults, traced, and lists the system calls of
its own work (the import machinery's calls, on files of this tree or of Python's, are left
out: a fault there is out of scope); then it runs the program again for each occurrence N of
each call NAME with `strace -e inject=NAME:error=ERRNO:when=N` (EIO, and ENOSPC for the calls
that can fill a disk), checks that the fault hit the call the good run made at that place,
and checks what the run left:

- exit 0: one queue entry, committed whole (todo/<id> = intd/<id> = the u/p/F/T records,
  mess/ = the Received line + the message) and nothing else in the queue (unless the fault was
  the unlink of what it would have removed);
- any other exit: one of qmail-queue's temporary codes (never 31, 81, 91), one qmail-style
  line on stderr (no traceback); nothing committed, or (a fault after the commit point) the
  whole message committed; debris only where qmail's stale-file rule cleans (pid/, intd/,
  mess/ without todo/).

Swept: bin/qmail-queue writing the queue itself (plain, a message of two reads, and a message
spamd splits into two copies: a failure between their commit links leaves the first queued, as
docs/queue.md says); qmail-queued (strace attached to the running service) while a client
inserts through it, with the service's descriptors, threads and next client checked after each
fault; bin/qmail-queue as the service's client (a fault on the answer after the commit: 74 and
the message queued, at least once); qmail-inject and sendmail, with and without the service.
strace counts when=N per process and thread, and an injected close() is not made (the
descriptor stays): see own_work() for what that leaves out. An I/O fault on our own files and
sockets is always a temporary failure (docs/queue.md).
"""
import collections
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from qmailpy.proto import qq
from qmailpy.queue import layout, sockclient
from oneshotunix import UnixServer, read_to_eof
from queuedsvc import Queued

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "bin"
MSG = b"From: a@example.org\nSubject: hello\n\nbody line\n"
SENDER, RCPTS = b"a@example.org", [b"b@example.net", b"c@example.com"]
ENV = qq.encode(SENDER, RCPTS)
TEMPORARY = set(range(51, 57)) | set(range(61, 67)) | set(range(71, 75))     # qmail-queue(8)'s 5x, 6x, 7x
DISK_CALLS = {"write", "fsync", "openat", "link", "rename", "mkdir"}          # ENOSPC too
# calls that are not the program's I/O: memory, signals, identity, clocks
SKIP = {"mmap", "munmap", "mprotect", "brk", "madvise", "futex", "rt_sigprocmask", "rt_sigaction",
        "rt_sigreturn", "getpid", "gettid", "getuid", "geteuid", "getgid", "getegid", "getppid", "exit",
        "exit_group", "rseq", "set_robust_list", "uname", "alarm", "umask", "clock_gettime", "getrandom",
        "sysinfo", "prlimit64", "sched_getaffinity", "set_tid_address", "clock_nanosleep", "getcwd"}
IMPORTS = (str(ROOT) + "/", "/lib/python3", ".pyc", "/usr/lib/locale", "/usr/lib/x86_64-linux-gnu")
RECEIVED = re.compile(rb"Received: \(qmail (\d+) invoked by uid %d\); \d+ \w+ \d{4} \d\d:\d\d:\d\d -0000\n"
                      % os.getuid())
CALL = re.compile(r"^(\d+) +(\w+)\((.*)$")
RESUMED = re.compile(r"^(\d+) +<\.\.\. (\w+) resumed>")


@pytest.fixture(scope="module", autouse=True)
def strace_present():
    assert shutil.which("strace"), "strace is needed for the fault sweeps"
    assert subprocess.run(["strace", "-V"], capture_output=True).returncode == 0, "strace is needed"


def make_home(root):
    home = Path(root) / "qmail"
    if home.exists():
        shutil.rmtree(home)
    layout.create_queue(str(home))
    (home / "control").mkdir()
    (home / "control" / "me").write_text("me.example\n")      # a control read (open, read, close)
    (home / "bin").mkdir()
    (home / "bin" / "qmail-queue").symlink_to(BIN / "qmail-queue")  # qmail-inject's, run as a fork
    return home


# -- what a trace says

def shape(name, args):
    """What identifies a call across runs: its name and what it works on (the file or the fd's
    file with -y, digits and addresses made N), not its data or result."""
    args = re.sub(r"\)\s+= .*$", "", args.replace(" <unfinished ...>", ""))
    if args.startswith(("[", "0x")):            # pipe2(): the first argument is what it returns
        return name
    first = args.split(", ", 1)
    what = first[0] if not first[0].startswith("AT_FDCWD") or len(first) < 2 else first[1].split(", ", 1)[0]
    what = what.replace("(deleted)", "")
    return name + " " + re.sub(r"0x[0-9a-f]+|\d+", "N", what)


def calls(trace):
    """[(name, occurrence, shape, line)] of every call line, in order. strace counts `when=N` in
    each traced process (and thread) on its own, from its start: so does occurrence."""
    seen, out = collections.Counter(), []
    for line in trace.splitlines():
        m = CALL.match(line)
        if not m or "resumed>" in line:
            continue
        name = m.group(2)
        seen[m.group(1), name] += 1
        out.append((name, seen[m.group(1), name], shape(name, m.group(3)), line))
    return out


def own_work(trace, start):
    """The calls from the first line matching `start` on, without the import machinery's and SKIP.
    when=N strikes in every process: a call of a forked child is left out when its N would strike
    the parent's start-up too (that part of the child's work is qmail-queue's, swept alone above).
    close() of a pipe is left out: an injected close() is not made, the descriptor stays open,
    which no real close() does (Linux frees it even when close fails), and the process at the
    other end would wait for an end of file for ever."""
    every = calls(trace)
    first = next((i for i, c in enumerate(every) if re.search(start, c[3])), None)
    assert first is not None, "the good run's trace has no %r: the sweep would inject nothing" % start
    early = {(name, n) for name, n, _, _ in every[:first]}
    return [c for c in every[first:] if c[0] not in SKIP and not any(s in c[3] for s in IMPORTS)
            and (c[0], c[1]) not in early and not (c[0] == "close" and "<pipe:[" in c[3])]


def faults(work):
    for name, n, want, line in work:
        for err in ("EIO", "ENOSPC") if name in DISK_CALLS else ("EIO",):
            yield name, n, err, want, line


def struck(trace):
    """The calls (as calls() gives them) strace's fault struck. With -f, a call that another
    process's or thread's line interrupts is written in two lines, `NAME(... <unfinished ...>`
    and `<... NAME resumed>... (INJECTED)`: the mark is on the second, the call on the first."""
    every, i, waiting, got = calls(trace), 0, {}, []
    for line in trace.splitlines():
        resumed = RESUMED.match(line)
        if resumed:
            c = waiting.pop(resumed.groups(), None)
            if c is not None and "(INJECTED)" in line:
                got.append(c)
        elif i < len(every) and every[i][3] == line:
            c, i = every[i], i + 1
            if line.endswith("<unfinished ...>"):
                waiting[line.split(None, 1)[0], c[0]] = c
            elif "(INJECTED)" in line:
                got.append(c)
    return got


def hit(trace, want, processes=1):
    """Did the injected fault strike the call `want` (its shape)? when=N strikes the Nth call of
    every process that makes N of them: with a forked child (processes > 1) the other process's
    fault may come first and end the run before `want`; a fault struck is enough then."""
    got = struck(trace)
    ok = any(c[2] == want for c in got) or processes > 1 and got
    return ok, " | ".join(c[3] for c in got) or "no INJECTED call"


def processes(trace):
    return len({line.split(None, 1)[0] for line in trace.splitlines() if CALL.match(line)})


# -- what the queue holds

def queue_files(home):
    q = home / "queue"
    return sorted(str(p.relative_to(q)) for p in q.rglob("*") if p.is_file() and p.parts[len(q.parts)] != "lock")


def empty_queue(home):
    for name in queue_files(home):
        os.unlink(home / "queue" / name)


def verdict(home, rc, err, complete, prog="qmail-queue", entries=1, unlink_failed=False):
    """The problems with what a run left ([] when none). complete(id) checks a committed entry;
    `entries`: how many a message makes (a filter's copies: on a failure, those committed before it
    stay, docs/queue.md). unlink_failed: the fault was an unlink(), so exit 0 may leave what it
    would have removed (in pid/, intd/, mess/: qmail's stale-file rule cleans it)."""
    problems = []
    files = queue_files(home)
    todo = [int(f.split("/")[1]) for f in files if f.startswith("todo/")]
    for msgid in todo:
        problems += complete(msgid)
    theirs = set()
    for msgid in todo:
        theirs |= {"todo/%d" % msgid, "intd/%d" % msgid, "mess/%d/%d" % (msgid % layout.SPLIT, msgid)}
    debris = [f for f in files if f not in theirs]
    if any(f.split("/")[0] not in ("pid", "intd", "mess") for f in debris):
        problems.append("debris outside pid/ intd/ mess/: %s" % debris)
    if rc == 0:
        if len(todo) != entries or debris and not unlink_failed:
            problems.append("exit 0 but queue holds %s" % files)
        if err:
            problems.append("exit 0 with stderr %r" % err)
        return problems
    if len(todo) > entries:
        problems.append("%d entries committed" % len(todo))
    lines = err.splitlines()                    # a forked qmail-queue's own line may come first
    if not lines or not lines[-1].startswith(prog + ": ") or "Traceback" in err or "internal bug" in err or \
            "[Errno" in err or \
            any(not line.startswith("qmail-queue: ") for line in lines[:-1]) or len(lines) > 2:
        problems.append("stderr is not one %s line: %r" % (prog, err))
    return problems


def complete_entry(home, body, records=None):
    """complete(id) for verdict(): the mess file is a Received line and then `body` (or ends with
    it, body given as ("ends", bytes)), todo = intd = u, p (the Received line's number), F, T records."""
    def check(msgid):
        try:
            mess = Path(layout.mess_path(str(home), msgid)).read_bytes()
            todo = Path(layout.todo_path(str(home), msgid)).read_bytes()
            intd = Path(layout.intd_path(str(home), msgid)).read_bytes()
        except OSError as e:
            return ["entry %d incomplete: %s" % (msgid, e)]
        m = re.match(RECEIVED, mess) if records is None else re.match(rb"Received: \(qmail (\d+) [^\n]*\n", mess)
        if m is None:
            return ["entry %d: mess starts %r" % (msgid, mess[:80])]
        if isinstance(body, tuple) and not mess.endswith(body[1]) or not isinstance(body, tuple) and \
                mess[m.end():] != body:
            return ["entry %d: mess is %r" % (msgid, mess)]
        want = b"u%d\0p%s\0" % (os.getuid(), m.group(1)) + (records or qq.encode_records(SENDER, RCPTS))
        if records is not None:             # the good run's todo/ file: its p record is another run's
            want = re.sub(rb"^(u\d+\0)p\d+\0", rb"\g<1>p" + m.group(1) + b"\0", records)
        if todo != want or intd != want:
            return ["entry %d: todo %r intd %r, not %r" % (msgid, todo, intd, want)]
        return []
    return check


def run_traced(argv, env, strace_args, stdin, fd1=None, timeout=30):
    """argv under `strace -f -qq -y`, its trace in a file; (exit code, stderr, trace)."""
    out = Path(env["QMAILHOME"]).parent / "trace"
    with open(stdin, "rb") as i, open(fd1 or os.devnull, "rb" if fd1 else "wb") as o:
        p = subprocess.run(["strace", "-f", "-qq", "-y", "-o", str(out)] + strace_args + argv, stdin=i, stdout=o,
                           stderr=subprocess.PIPE, env=env, timeout=timeout)
    return p.returncode, p.stderr.decode("utf-8", "replace"), out.read_text()


def sweep(tmp_path, argv, env, stdin, fd1, start, complete, prog="qmail-queue", expect=TEMPORARY, settle=None,
          only=None, entries=1):
    """The whole sweep for one way of queueing; the failures, each naming its fault. complete(home,
    good) gives verdict()'s check of a committed entry (good: the good run's todo/ file).
    settle(): called after each run (qmail-queued's insertion done). only: the calls swept (all), or
    a function of the trace line. entries: verdict()'s."""
    home = tmp_path / "qmail"
    if not home.exists():
        make_home(tmp_path)
    env = dict(env, QMAILHOME=str(home))
    for _ in range(2):                      # the first run may write __pycache__: count on the second
        empty_queue(home)
        rc, err, trace = run_traced(argv, env, ["-e", "trace=all"], stdin, fd1)
        assert rc == 0, err
        (settle or (lambda: None))()
    good = [f for f in queue_files(home) if f.startswith("todo/")][0]
    complete = complete(home, (home / "queue" / good).read_bytes())
    work, count = own_work(trace, start), processes(trace)
    work = [c for c in work if only is None or (only(c[3]) if callable(only) else c[0] in only)]
    failures, names = [], set()
    for name, n, err_name, want, line in faults(work):
        names.add(name)
        empty_queue(home)
        rc, err, trace = run_traced(argv, env, ["-e", "trace=" + name, "-e", "inject=%s:error=%s:when=%d"
                                                % (name, err_name, n)], stdin, fd1)
        (settle or (lambda: None))()
        ok, where = hit(trace, want, count)
        problems = [] if ok else ["the fault missed %r (struck %s)" % (want, where)]
        if rc != 0 and rc not in expect:
            problems.append("exit %d is not temporary" % rc)
        problems += verdict(home, rc, err, complete, prog, entries, name == "unlink")
        if problems:
            failures.append("%s#%d %s: exit %d, stderr %r: %s [good run: %s]"
                            % (name, n, err_name, rc, err, "; ".join(problems), line))
    return failures, names


def message_files(tmp_path, body=MSG, envelope=ENV):
    (tmp_path / "m").write_bytes(body)
    (tmp_path / "e").write_bytes(envelope)
    return tmp_path / "m", tmp_path / "e"


# -- 1. bin/qmail-queue writing the queue itself

def test_a_fault_on_a_call_written_in_two_lines_is_seen():
    """strace -f writes a call another tracee interrupts in two lines, the (INJECTED) mark on the
    resumed one: hit() read only the first and said "no INJECTED call" (the sweep failed, or made
    its run again for nothing)."""
    trace = ("7 read(0</m>,  <unfinished ...>\n8 read(3</x>, \"\", 9) = 0\n"
             "7 <... read resumed>0x1, 9) = -1 EIO (Input/output error) (INJECTED)\n")
    assert hit(trace, "read N</m>") == (True, "7 read(0</m>,  <unfinished ...>")
    assert hit(trace, "read N</x>") == (False, "7 read(0</m>,  <unfinished ...>")


def test_qmail_queue_in_process_every_fault(tmp_path):
    m, e = message_files(tmp_path)
    failures, names = sweep(tmp_path, [str(BIN / "qmail-queue")], dict(os.environ), m, e, r"umask\(033\)",
                            lambda home, good: complete_entry(home, MSG))
    assert failures == [], "\n".join(failures)
    assert {"chdir", "openat", "getdents64", "write", "fsync", "link", "unlink", "close", "newfstatat",
            "read"} <= names, names


def test_qmail_queue_in_process_a_message_of_two_reads(tmp_path):
    """The calls that a longer message repeats: read of fd 0, write of the mess file."""
    body = MSG + b"x" * 70000 + b"\n"
    m, e = message_files(tmp_path, body)
    failures, names = sweep(tmp_path, [str(BIN / "qmail-queue")], dict(os.environ), m, e, r"umask\(033\)",
                            lambda home, good: complete_entry(home, body), only=("read", "write"))
    assert failures == [], "\n".join(failures)
    assert names == {"read", "write"}, names


class FakeSpamd(UnixServer):
    """spamd on a Unix socket, on a thread of this process: each recipient's copy gets its own
    X-Spam-Status field (spamd's User: is the recipient), so a message is queued as two copies."""

    def serve_conn(self, conn):
        try:
            head, _, msg = read_to_eof(conn).partition(b"\r\n\r\n")
            user = re.search(rb"\r\nUser: (\S+)", head).group(1)
            body = b"X-Spam-Status: No, user " + user + b"\n" + msg
            conn.sendall(b"SPAMD/1.1 0 EX_OK\r\nContent-length: %d\r\nSpam: False ; 1.0 / 5.0\r\n\r\n"
                         % len(body) + body)
        except (OSError, AttributeError):   # a client the sweep broke
            pass


def copies_complete(home, good):
    """verdict()'s check of one of the two copies: the recipient's own X-Spam field, its own T."""
    def check(msgid):
        try:
            intd = Path(layout.intd_path(str(home), msgid)).read_bytes()
        except OSError as e:
            return ["entry %d incomplete: %s" % (msgid, e)]
        rcpt = intd.rsplit(b"\0T", 1)[-1].rstrip(b"\0")
        if rcpt not in RCPTS:
            return ["entry %d: intd %r" % (msgid, intd)]
        return complete_entry(home, b"X-Spam-Status: No, user %s\n" % rcpt + MSG,
                              b"u0\0p0\0" + qq.encode_records(SENDER, [rcpt]))(msgid)
    return check


def test_qmail_queue_in_process_a_message_split_into_copies_every_fault(tmp_path):
    """spamglobal with a spamd that gives each recipient his own X-Spam field: two copies, each its
    own mess/ and intd/, both fsynced before the first commit link (docs/queue.md). Every call on
    the queue's files fails once: exit 0 with both copies whole, or a temporary code with each
    committed copy whole (a failure between the two commit links leaves the first queued: at least
    once, as documented) and the rest taken back. From the reading of the envelope on: the staged
    message before it is the plain sweep's."""
    m, e = message_files(tmp_path)
    home = make_home(tmp_path)
    (home / "control" / "spamglobal").write_text("1\n")
    (home / "control" / "spamdsocket").write_text(str(tmp_path / "spamd.sock") + "\n")
    spamd = FakeSpamd(tmp_path / "spamd.sock")
    try:
        failures, names = sweep(tmp_path, [str(BIN / "qmail-queue")], dict(os.environ), m, e, r"read\(1<",
                                copies_complete, only=lambda line: "/qmail/queue/" in line, entries=2)
    finally:
        spamd.close()
    assert failures == [], "\n".join(failures)
    assert {"openat", "newfstatat", "link", "unlink", "write", "fsync", "close"} <= names, names


# -- 2. qmail-queued while bin/qmail-queue inserts through it

def tasks(pid):
    return len(os.listdir("/proc/%d/task" % pid))


def descriptors(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def wait_tasks(pid, count, limit=10):
    deadline = time.monotonic() + limit
    while tasks(pid) != count and time.monotonic() < deadline:
        time.sleep(0.005)
    return tasks(pid)


def attach(pid, args, out):
    """strace -f attached to every thread of the running `pid`; the strace process."""
    tracer = subprocess.Popen(["strace", "-f", "-qq", "-y", "-o", str(out), "-p", str(pid)] + args,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        with open("/proc/%d/status" % pid) as f:
            if next(line for line in f if line.startswith("TracerPid:")).split()[1] != "0":
                break
        assert tracer.poll() is None and time.monotonic() < deadline, "strace did not attach to %d" % pid
        time.sleep(0.005)
    time.sleep(0.05)
    return tracer


def detach(tracer):
    tracer.terminate()
    tracer.wait(10)


def client(home):
    """qmail-queued's client in this process (qmail-smtpd's and qmail-inject's code, the one
    bin/qmail-queue runs): (code, the line bin/qmail-queue would write on stderr)."""
    job = sockclient.SocketJob(str(home), 30)
    job.write(MSG)
    code = job.finish(SENDER, RCPTS)
    return code, "qmail-queue: %s\n" % job.reason if code else ""


def service_fault(home, pid, fault, out, insert):
    """strace attached to qmail-queued (`pid`, trace in `out`) with the fault (name, n, errno name,
    the shape of the good run's call) in each of its threads while insert() queues through it:
    (insert()'s result, the threads left after, did the fault strike that call, what it struck).
    A run where nothing was struck (the service's main thread made fewer of those calls than in
    the good run: they come as the clients come) is made again, at most three times more."""
    name, n, err_name, want = fault
    for _ in range(4):
        tracer = attach(pid, ["-e", "trace=" + name, "-e", "inject=%s:error=%s:when=%d" % (name, err_name, n)], out)
        got = insert()
        threads = wait_tasks(pid, 1)
        detach(tracer)
        trace = out.read_text()
        ok, where = hit(trace, want)
        if ok or "(INJECTED)" in trace:
            break
        empty_queue(home)
    return got, threads, ok, where


def service_after(home, pid, threads, fds, next_client, check):
    """What is wrong with qmail-queued (`pid`) once a faulty insertion is done: its `threads` (one
    left), its descriptors (`fds` as before), and the next client's insertion (next_client() ->
    (code, stderr line), check(code, line): its problems), the queue emptied after it."""
    problems = []
    if threads != 1:
        problems.append("%d threads left" % threads)
    if descriptors(pid) != fds:
        problems.append("descriptors %d before, %d after" % (fds, descriptors(pid)))
    empty_queue(home)
    after = next_client()
    wait_tasks(pid, 1)                  # its connection closed: the next fault's count of descriptors starts here
    if after != (0, "") or check(*after):
        problems.append("the next client: %s, %s" % (after, check(*after)))
    empty_queue(home)
    return problems


def test_qmail_queued_every_fault_of_an_insertion(tmp_path):
    """strace attached to the running service while a client inserts through it: every call
    of the insertion (accept4 to the last close, the queue's files, the client's socket) fails once.
    The client's code says what was committed; after each fault the service has its threads and
    descriptors of before (an injected close() is not made: its descriptor stays, one more) and
    queues the next client's message whole; at the end it stops with nothing counted as running."""
    home = make_home(tmp_path)
    log = tmp_path / "queued.log"
    svc = Queued(home, os.environ, log=str(log)).start()
    pid = svc.proc.pid
    complete = complete_entry(home, MSG)
    try:
        for _ in range(2):                   # its lazy imports done
            assert client(home) == (0, "")
        empty_queue(home)
        tracer = attach(pid, ["-e", "trace=all"], tmp_path / "trace")
        assert client(home) == (0, "")
        wait_tasks(pid, 1)
        detach(tracer)
        empty_queue(home)
        work = own_work((tmp_path / "trace").read_text(), r"accept4\(")
        failures, names = [], set()
        for name, n, err_name, want, line in faults(work):
            names.add(name)
            fds = descriptors(pid)
            (rc, err), threads, ok, where = service_fault(home, pid, (name, n, err_name, want), tmp_path / "trace",
                                                          lambda: client(home))
            problems = [] if ok else ["the fault missed %r (struck %s)" % (want, where)]
            if rc != 0 and rc not in TEMPORARY:
                problems.append("exit %d is not temporary" % rc)
            problems += verdict(home, rc, err, complete)
            if svc.proc.poll() is not None:
                failures.append("%s#%d %s: the service exited %d" % (name, n, err_name, svc.proc.returncode))
                break
            problems += service_after(home, pid, threads, fds + (name == "close"), lambda: client(home),
                                      lambda rc, err: verdict(home, rc, err, complete))
            if problems:
                failures.append("%s#%d %s: exit %d, stderr %r: %s [good run: %s]"
                                % (name, n, err_name, rc, err, "; ".join(problems), line))
    finally:
        code = svc.stop()
    text = log.read_text()
    assert failures == [], "\n".join(failures)
    assert {"accept4", "getsockopt", "recvfrom", "openat", "write", "fsync", "link", "close",
            "sendto"} <= names, names
    assert code == 0 and text.endswith("qmail-queued: exiting\n"), text[-2000:]
    assert "Traceback" not in text and "internal bug" not in text, text


@pytest.fixture
def service(tmp_path):
    """qmail-queued in tmp_path/qmail (the home the sweeps make), and a settle() that waits until
    it has finished with the last client (its insertion thread gone)."""
    home = make_home(tmp_path)
    log = tmp_path / "queued.log"
    svc = Queued(home, os.environ, log=str(log)).start()
    svc.settle = lambda: wait_tasks(svc.proc.pid, 1)
    yield svc
    code = svc.stop()
    text = log.read_text()
    assert code == 0 and text.endswith("qmail-queued: exiting\n"), text[-2000:]
    assert "Traceback" not in text and "internal bug" not in text, text


def test_qmail_queue_as_the_services_client_every_fault(tmp_path, service):
    """bin/qmail-queue streaming to qmail-queued (not traced): every call of the client from its
    look for the socket on. Its code is the service's answer, or its own temporary one; what it
    says is queued is queued whole (a fault on the answer after the commit: 74, at least once)."""
    m, e = message_files(tmp_path)
    failures, names = sweep(tmp_path, [str(BIN / "qmail-queue")], dict(os.environ), m, e, r"sock/qmail-queue",
                            lambda home, good: complete_entry(home, MSG), settle=service.settle)
    assert failures == [], "\n".join(failures)
    assert {"newfstatat", "socket", "connect", "sendto", "recvfrom", "read", "close"} <= names, names


INJECTED = b"To: b@example.net, c@example.com\nSubject: hello\n\nbody line\n"


@pytest.mark.parametrize("prog, args", [("qmail-inject", []), ("sendmail", ["-t"])])
@pytest.mark.parametrize("with_service", [True, False], ids=["qmail-queued", "in-process"])
def test_inject_and_sendmail_every_fault(tmp_path, request, prog, args, with_service):
    """qmail-inject and sendmail handing a message to the queue, through qmail-queued or (a home
    without its socket) to qmail-queue's code in a forked child, every call from the reading of
    the message on: exit 0 with the message queued whole, or 111 with one `PROG: fatal:` line and
    nothing queued but (a fault after the commit) the whole message."""
    settle = request.getfixturevalue("service").settle if with_service else None
    m = tmp_path / "m"
    m.write_bytes(INJECTED)
    env = dict(os.environ, USER="joe", QMAILUSER="joe", QMAILHOST="me.example")
    failures, names = sweep(tmp_path, [str(BIN / prog)] + args, env, m, None, r"read\(0<",
                            lambda home, good: complete_entry(home, ("ends", b"\n\nbody line\n"), good),
                            prog="qmail-inject", expect={111}, settle=settle)
    assert failures == [], "\n".join(failures)
    assert ({"read", "connect", "sendto", "recvfrom"} if with_service else
            {"read", "pipe2", "clone", "write", "fsync", "link", "wait4"}) <= names, names


# -- faults the invariants above let through: each has its own test

def inject_at(tmp_path, home, path, name, m, e, env=None):
    """bin/qmail-queue with the first `name` call on `path` failing (EIO); (code, stderr, INJECTED lines)."""
    rc, err, trace = run_traced([str(BIN / "qmail-queue")], env or dict(os.environ, QMAILHOME=str(home)),
                                ["-P", str(path), "-e", "trace=" + name, "-e", "inject=%s:error=EIO:when=1" % name],
                                m, e)
    return rc, err, [line for line in trace.splitlines() if "(INJECTED)" in line]


def test_a_recipient_cdb_that_cannot_be_looked_up_is_exit_55_not_unfiltered(tmp_path):
    """control/clamavclients.cdb there but its stat failing (EIO): taken for absent, the message was
    queued unscanned (exit 0). Now 55, the file named, nothing queued, as for a corrupt cdb."""
    import cdblib
    home = make_home(tmp_path)
    with open(home / "control" / "clamavclients.cdb", "wb") as f, cdblib.Writer(f) as w:
        w.put(b"@example.net", b"")
    (home / "control" / "clamdsocket").write_text(str(tmp_path / "no-clamd.sock") + "\n")
    m, e = message_files(tmp_path)
    rc, err, injected = inject_at(tmp_path, home, home / "control" / "clamavclients.cdb", "newfstatat", m, e)
    assert len(injected) == 1, injected
    assert (rc, err) == (55, "qmail-queue: unable to read controls: control/clamavclients.cdb: unable to read: "
                             "Input/output error\n")
    assert queue_files(home) == []


def test_an_id_whose_lookup_fails_is_not_taken(tmp_path):
    """The check that no queue file still names a new message's id (layout.referenced): a lookup
    that fails with EIO said "free" and the id was taken; now it counts as in use, the next is taken."""
    home = make_home(tmp_path)
    m, e = message_files(tmp_path)
    rc, err, trace = run_traced([str(BIN / "qmail-queue")], dict(os.environ, QMAILHOME=str(home)),
                                ["-e", "trace=newfstatat"], m, e)
    good = [c for c in calls(trace) if c[0] == "newfstatat"]
    n = next(c[1] for c in good if "/queue/mess/" in c[3] and "AT_SYMLINK_NOFOLLOW" in c[3])
    empty_queue(home)
    rc, err, trace = run_traced([str(BIN / "qmail-queue")], dict(os.environ, QMAILHOME=str(home)),
                                ["-e", "trace=newfstatat", "-e", "inject=newfstatat:error=EIO:when=%d" % n], m, e)
    [injected] = [line for line in trace.splitlines() if "(INJECTED)" in line]
    refused = int(re.search(r"/queue/mess/\d+/(\d+)\"", injected).group(1))
    assert (rc, err) == (0, "")
    [todo] = [f for f in queue_files(home) if f.startswith("todo/")]
    assert int(todo.split("/")[1]) != refused
    assert complete_entry(home, MSG)(int(todo.split("/")[1])) == []


def test_a_failing_close_of_todo_after_its_fsync_is_queued(tmp_path):
    """close() of todo/ after its fsync succeeded: the commit is on disk (and Linux freed the
    descriptor). It was exit 53, "unable to fsync todo/": a client retry, a duplicate."""
    home = make_home(tmp_path)
    m, e = message_files(tmp_path)
    rc, err, injected = inject_at(tmp_path, home, home / "queue" / "todo", "close", m, e)
    assert len(injected) == 1, injected
    assert (rc, err) == (0, "")
    [todo] = [f for f in queue_files(home) if f.startswith("todo/")]
    assert complete_entry(home, MSG)(int(todo.split("/")[1])) == []


def test_a_service_socket_that_cannot_be_looked_up_is_not_a_missing_one(tmp_path):
    """qmail-queued's socket there (the service stopped) but its lstat failing: the client took the
    home for one without the service and wrote the queue as its caller. It connects: 73."""
    home = make_home(tmp_path)
    Queued(home, os.environ, log=str(tmp_path / "queued.log")).start().stop()
    sock = home / "sock" / "qmail-queue"
    assert sock.is_socket()
    m, e = message_files(tmp_path)
    rc, err, injected = inject_at(tmp_path, home, sock, "newfstatat", m, e)
    assert len(injected) == 1, injected
    assert (rc, err) == (73, "qmail-queue: unable to connect to qmail-queued: Connection refused\n")
    assert queue_files(home) == []


FAILING_PIPE_CLOSE = """
import os, stat, sys
from qmailpy.smtpd import queueclient
real = os.close

def close(fd):                      # what Linux does when close() fails: the fd is freed, EIO said
    fifo = stat.S_ISFIFO(os.fstat(fd).st_mode)
    real(fd)
    if fifo:
        raise OSError(5, "Input/output error")
os.close = close
job = queueclient.start_job(dict(os.environ))
assert isinstance(job, queueclient.QueueJob), job
job.write(sys.stdin.buffer.read())
print(job.finish(b"a@example.org", [b"b@example.net", b"c@example.com"]))
"""


def test_pipe_ends_whose_close_fails_are_closed_all_the_same(tmp_path):
    """qmail-inject's, qmail-smtpd's and qmail-local's queue job (no qmail-queued: qmail-queue's code
    in a forked child) with every close() of a pipe failing after it closed (an injected one would
    not close it, and the child would wait for the end of the message for ever): the job ignores
    it, as qmail does, where it was an internal bug, and the child's 81."""
    home = make_home(tmp_path)
    p = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", FAILING_PIPE_CLOSE], input=MSG,
                       capture_output=True, env=dict(os.environ, QMAILHOME=str(home), PYTHONPATH=str(ROOT)),
                       timeout=60)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"0\n", b"")
    [todo] = [f for f in queue_files(home) if f.startswith("todo/")]
    assert complete_entry(home, MSG)(int(todo.split("/")[1])) == []
