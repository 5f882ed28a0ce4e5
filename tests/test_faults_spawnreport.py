"""qmail-remote's report under bin/qmail-rspawn, driven as qmail-send drives it, under strace
fault injection (the model and the counting of tests/test_faults_lspawn.py): every occurrence
of the calls that carry a delivery's result from qmail-remote to qmail-send:

- the child's write of its report into the pipe to qmail-rspawn (EPIPE, EIO), forked (its
  main() preloaded) and exec'd ($QMAILREMOTE; there a wrapper runs each qmail-remote of the
  three under its own strace, so that its write fails and qmail-rspawn's do not);
- qmail-rspawn's reads of those pipes and of its commands (EIO), its writes of the reports to
  qmail-send (EPIPE, EIO), and its wait4 of each child (ECHILD, EIO), the second and third
  as much as the first.

strace attaches (-p) after a first delivery, so the interpreter's start and first imports are
never counted; `when=N` hits the N-th such call of every traced process at once. In exec mode
the children are followed (-f) only for the write sweep: their reads are the interpreter's
start-up, which test_faults_delivery sweeps.

Three deliveries are started at once, each to its own recipient at a scripted SMTP peer on
127.0.0.1 (smtproutes). Invariants, qmail's: each delivery is reported at most once, K or Z,
never D (no injected fault here is a reason to bounce); K only when the peer took that
recipient's message with its final dot; every delivery is reported, unless qmail-rspawn could
not write to qmail-send, and then it closes its output (qmail-send's "lost spawn connection",
and a restart) rather than leave qmail-send waiting for reports that never come; qmail-rspawn
goes on to its end of input and exits 0, with no traceback and no bug line.
"""
import os
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from qmailpy.proto import spawnwire
from qmailpy.queue import layout
from smtpsink import Scripted, smtp_script
from test_faults_local import calls, strace_ok
from test_faults_lspawn import attached
from test_send_support import BIN, queue_message

RCPTS = [b"r%d@example.com" % i for i in range(3)]
ERRNOS = {"write": ("EPIPE", "EIO"), "read": ("EIO",), "wait4": ("ECHILD", "EIO")}
# the peer's answer to the final dot: a long reply (qmail-remote's report quotes it), so that
# qmail-rspawn reads the report in more than one read, and a read fault can cut it
END = b"".join(b"250-queued, line %02d %s\r\n" % (i, b"x" * 90) for i in range(60)) + b"250 ok\r\n"
WAIT = 20                                   # seconds for every report of a run


class Rig:
    """A qmail home with one queued message, a scripted peer, one qmail-rspawn run."""

    def __init__(self, base, mode, child=None):
        self.base, self.mode = base, mode
        self.child = child                  # exec mode: (errno, n) for each qmail-remote's write

    def make(self, port):
        shutil.rmtree(self.base, ignore_errors=True)
        home = os.path.join(self.base, "qmail")
        layout.create_queue(home)
        os.makedirs(os.path.join(home, "control"))
        for name, value in {"me": "mx.example.org", "smtproutes": ":127.0.0.1:%d" % port,
                            "timeoutremote": "20", "timeoutconnect": "10"}.items():
            with open(os.path.join(home, "control", name), "w") as f:
                f.write(value + "\n")
        env = {"PATH": "/usr/bin:/bin", "QMAILHOME": home, "QMAILPY_SINGLEUSER": "1", "DNSCACHEIP": "127.0.0.1"}
        if self.mode == "exec":
            env["QMAILREMOTE"] = str(BIN / "qmail-remote")
        if self.child:
            env["QMAILREMOTE"] = wrapper(self.base, *self.child)
        messid = queue_message(home, b"Subject: x\n\nbody\n", b"alice@localhost", RCPTS).encode()
        return home, env, messid

    def run(self, calls_, follow, inject=None, trace=None):
        """(exit code, {delnum: report}, stderr, stdout closed early, peers' raw bytes)."""
        server = Scripted(smtp_script(end=END)).start()
        try:
            home, env, messid = self.make(server.port)
            p = subprocess.Popen([str(BIN / "qmail-rspawn")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=env, cwd=home)
            try:
                return self.drive(p, messid, calls_, follow, inject, trace) + (
                    [bytes(peer.raw) for peer in server.peers],)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        finally:
            server.stop()

    def drive(self, p, messid, calls_, follow, inject, trace):
        decoder = spawnwire.ReportDecoder()
        fd = p.stdout.fileno()
        got = []
        p.stdin.write(spawnwire.encode_command(9, messid, b"alice@localhost", b"warm@example.com"))
        p.stdin.flush()
        while not got:
            data = os.read(fd, 4096)
            assert data, "qmail-rspawn ended before the warm-up report"
            got += decoder.feed(data)
        assert [(r.delnum, r.kind) for r in got] == [(9, b"K")], got
        cmd = ["strace", "-y", "-qq", "-o", trace or os.devnull, "-e", "trace=" + calls_, "-p", str(p.pid)]
        if follow:
            cmd.insert(1, "-f")
        if inject:
            cmd += ["-e", "inject=%s:error=%s:when=%d" % inject]
        tracer = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        attached(p.pid)
        for i, rcpt in enumerate(RCPTS):
            p.stdin.write(spawnwire.encode_command(i, messid, b"alice@localhost", rcpt))
        p.stdin.flush()
        # qmail-send keeps its command pipe open: every report must come, or qmail-rspawn's
        # output must end (qmail-send then sees its spawn gone); a report just never coming is
        # a delivery qmail-send waits for until it is restarted
        reports, closed, deadline = [], False, time.monotonic() + WAIT
        os.set_blocking(fd, False)
        while len(reports) < len(RCPTS) and time.monotonic() < deadline:
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            if not data:
                closed = True
                break
            reports += decoder.feed(data)
        os.set_blocking(fd, True)
        p.stdin.close()
        if not closed:
            rest = p.stdout.read()
            reports += decoder.feed(rest)
        err = p.stderr.read()
        code = p.wait(timeout=60)
        tracer.wait(timeout=60)
        return code, reports, err, closed

    def check(self, code, reports, err, closed, raw):
        problems = []
        said = err.decode("utf-8", "replace")
        if code != 0:
            problems.append("qmail-rspawn exited %d" % code)
        if "Traceback" in said or "internal bug" in said:
            problems.append("a bug: %r" % said[-300:])
        seen = [r.delnum for r in reports]
        if len(seen) != len(set(seen)) or not set(seen) <= {0, 1, 2}:
            problems.append("reports %r" % reports)
        if len(seen) < len(RCPTS) and not closed:
            problems.append("%d of %d reports came, and qmail-rspawn's output stayed open" % (len(seen), len(RCPTS)))
        for r in reports:
            if r.kind == b"D":
                problems.append("a permanent failure: %r" % (r.text[:120],))
            elif r.kind == b"K":
                went = [got for got in raw if b"<%s>" % RCPTS[r.delnum] in got and b"\r\n.\r\n" in got]
                if len(went) != 1:
                    problems.append("K for %s, which the peer got %d times" % (RCPTS[r.delnum], len(went)))
        return problems


WRAPPER = """#!/bin/sh
[ "$3" = warm@example.com ] && exec {real} "$@"
exec strace -qq -o {base}/child.$$.trace -e trace=write {inject} {real} "$@"
"""


def wrapper(base, errno, n):
    """A $QMAILREMOTE that runs bin/qmail-remote traced, its n-th write failing (none for n 0),
    but for the warm-up delivery."""
    path = os.path.join(base, "qmail-remote")
    inject = "-e inject=write:error=%s:when=%d" % (errno, n) if n else ""
    with open(path, "w") as f:
        f.write(WRAPPER.format(real=BIN / "qmail-remote", base=base, inject=inject))
    os.chmod(path, 0o755)
    return path


def child_traces(base):
    """The straces of the wrapped qmail-remotes, one text each."""
    return [open(os.path.join(base, f)).read() for f in sorted(os.listdir(base)) if f.startswith("child.")]


def on_pipe(args):
    return "<pipe:" in args.split(",", 1)[0]


def cases_of(trace, names):
    """[(name, n)]: every n-th call of a tracee (strace's `when` counts per process) that is a
    call on a pipe (the report pipes, qmail-send's pipes) or a wait4."""
    counts, out = {}, []
    for pid, name, args, _ in calls(trace):
        if name not in names:
            continue
        c = counts.setdefault(pid, {})
        c[name] = c.get(name, 0) + 1
        if (name == "wait4" or on_pipe(args)) and (name, c[name]) not in out:
            out.append((name, c[name]))
    return out


SWEEPS = {  # mode: [(calls traced, follow the children; None: exec'd children through the wrapper)]
    "fork": [("write,read,wait4", True)],
    "exec": [("write", None), ("read,wait4,write", False)]}


@pytest.fixture
def shared_tmp():
    path = tempfile.mkdtemp(prefix="qmailpy-rspawn-faults-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("mode", ["fork", "exec"])
def test_qmail_rspawn_reports_under_a_fault_at_every_call(shared_tmp, mode):
    strace_ok()
    jobs = []
    for traced, follow in SWEEPS[mode]:
        trace = os.path.join(shared_tmp, "good.trace")
        good = Rig(os.path.join(shared_tmp, "good"), mode, child=("EIO", 0) if follow is None else None)
        result = good.run(traced, bool(follow), trace=trace)
        assert good.check(*result) == [] and sorted((r.delnum, r.kind) for r in result[1]) == [
            (0, b"K"), (1, b"K"), (2, b"K")], result
        text = open(trace).read()
        if follow is None:                  # each qmail-remote's writes: its report among them
            children = child_traces(good.base)
            assert len(children) == len(RCPTS), children
            writes = max(len(re.findall(r"^write\(", t, re.M)) for t in children)
            assert writes >= 1 and all("write(1, \"r\\0K127.0.0.1" in t for t in children), children
            jobs += [(traced, None, ("write", errno, n)) for n in range(1, writes + 1) for errno in ERRNOS["write"]]
            continue
        cases = cases_of(text, traced.split(","))
        names = {name for name, _ in cases}
        assert names == set(traced.split(",")), (names, text[-3000:])
        if follow:                          # the children's report writes are among them
            assert any(name == "write" and n >= 2 for name, n in cases), text[-3000:]
        if "wait4" in names:                # the second and third children's too
            assert sum(name == "wait4" for name, _ in cases) >= 3, text[-3000:]
        jobs += [(traced, follow, (name, errno, n)) for name, n in cases for errno in ERRNOS[name]]

    passed_over = []

    def run_one(traced, follow, inject):
        base = os.path.join(shared_tmp, "%s-%s-%s-%d" % ((traced.replace(",", "_"),) + inject))
        trace = base + ".trace"
        for _ in range(3):      # a run whose processes made fewer such calls (how often qmail-rspawn
            shutil.rmtree(base, ignore_errors=True)     # reaps depends on timing): again
            rig = Rig(base, mode, child=inject[1:] if follow is None else None)
            result = rig.run(traced, bool(follow), None if follow is None else inject, trace)
            problems = rig.check(*result)
            text = "".join(child_traces(base)) if follow is None else open(trace).read()
            if "(INJECTED)" in text:
                break
            if follow is None or (inject[0], inject[2]) in cases_of(text, traced.split(",")):
                problems.append("the fault was never injected")
                break
        else:
            passed_over.append(inject)
            problems = []
        shutil.rmtree(base, ignore_errors=True)
        return problems and ["%s %s #%d (%s, %s): %s; reports %r; stderr %r" % (
            inject[0], inject[1], inject[2], traced, {None: "each qmail-remote", True: "-f"}.get(follow, "main only"), "; ".join(problems),
            [(r.delnum, (r.kind + r.text)[:120]) for r in result[1]], result[2][-300:])]
    with ThreadPoolExecutor(4) as ex:
        failed = [p for problems in ex.map(lambda job: run_one(*job), jobs) for p in problems]
    assert not failed, "%d of %d runs:\n%s" % (len(failed), len(jobs), "\n".join(failed))
    # every kind of call still faulted somewhere
    assert {job[2][0] for job in jobs} == {job[2][0] for job in jobs if job[2] not in passed_over}, passed_over
    assert len(jobs) >= 15, jobs
