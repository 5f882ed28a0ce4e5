"""bin/qmail-lspawn driven as qmail-send drives it, under strace fault injection at every file
call of its delivery work: the command read, the controls' stat()s, the message's open, the
users/cdb or users-database lookup, the fork, and (forked mode, the default) everything its
child does to deliver (qmail-local's main() preloaded). The fault model, the counting and the
run checks are tests/test_faults_local.py's.

strace is attached (-p) once qmail-lspawn has written its limit, and after a first delivery,
so that only the work is counted, never the interpreter's start-up nor a first import. In exec
mode ($QMAILLOCAL) only qmail-lspawn is traced: the exec'd bin/qmail-local is what
test_faults_local sweeps, and counting per process would put the N-th call of its start-up
(imports) under the same fault.

Invariants: one report, K or Z, never D (no injected fault here is a reason to bounce);
K = the message in new/ once, Z = none there; qmail-lspawn goes on to its end of input and
exits 0, with no traceback and no bug line.
"""
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from qmailpy.proto import spawnwire
from qmailpy.queue import layout
from test_faults_local import FAULTS, calls, faults, strace_ok, sweep
from test_send_support import BIN, NOBODY, ROOT_ONLY, queue_message, write_users_cdb

CONTROLS = {"me": "mx.example.org", "locals": "localhost\nmx.example.org",
            "virtualdomains": "virt.example:virt.example"}
MSG = b"Subject: x\n\nbody\n"


class Spawn:
    """A qmail home with a message queued for a mailbox, and one qmail-lspawn run over it."""

    def __init__(self, base, kind, mode, controls=None):
        self.base, self.kind, self.mode = base, kind, mode
        self.controls = dict(CONTROLS, **(controls or {}))     # usersdb: a MariaDB database

    def make(self):
        shutil.rmtree(self.base, ignore_errors=True)
        home = os.path.join(self.base, "qmail")
        layout.create_queue(home)
        os.makedirs(os.path.join(home, "control"))
        for name, value in self.controls.items():
            with open(os.path.join(home, "control", name), "w") as f:
                f.write(value + "\n")
        os.chmod(self.base, 0o755)
        passwd = os.path.join(self.base, "passwd")
        open(passwd, "w").close()
        # QMAILPY_SINGLEUSER as the suite's other spawns: no mess owner check against a qmailq
        # user that a test making qmail's system accounts may have on the host meanwhile
        env = {"PATH": "/usr/bin:/bin", "QMAILHOME": home, "QMAILPY_PASSWD": passwd, "QMAILPY_SINGLEUSER": "1"}
        if self.mode == "exec":
            env["QMAILLOCAL"] = str(BIN / "qmail-local")
        if self.kind == "cdb":
            self.box, warm = os.path.join(self.base, "joe"), os.path.join(self.base, "warm")
            for box in (self.box, warm):
                for sub in ("tmp", "new", "cur"):
                    os.makedirs(os.path.join(box, "Maildir", sub))
            write_users_cdb(home, {b"!joe\0": (b"joe", NOBODY, NOBODY, self.box.encode(), b"", b""),
                                   b"!warm\0": (b"warm", NOBODY, NOBODY, warm.encode(), b"", b"")})
            self.rcpt, self.warm = b"joe@localhost", b"warm@localhost"
        else:                                   # the users database (SQLite), quotas and all
            from qmailpy.ctl.reader import Controls
            from qmailpy.users import admin, open_users
            users = open_users(home, Controls(home, {}), create=True)
            try:
                admin.add_domain(users, "virt.example")
                self.box = admin.add_user(users, "joe@virt.example", "secret", quota="10M").dir
                admin.add_user(users, "warm@virt.example", "secret", quota="10M")
            finally:
                users.close()
            self.rcpt, self.warm = b"virt.example-joe@virt.example", b"virt.example-warm@virt.example"
        for root, dirs, files in os.walk(self.base):
            for name in [root] + [os.path.join(root, f) for f in dirs + files]:
                if not name.startswith(os.path.join(home, "queue")) and "/control" not in name:
                    os.chown(name, NOBODY, NOBODY)
        users = os.path.join(home, "users")
        for path in ((users,) + tuple(os.path.join(users, f) for f in os.listdir(users))) if os.path.isdir(users) else ():
            os.chown(path, 0, 0)              # users/ and users/cdb: root's, as qmail-newu leaves them
        self.messid = queue_message(home, MSG, b"alice@localhost", [self.rcpt]).encode()
        return home, env

    def run(self, inject=None, trace=None, between=None, calls=None, again=False):
        """(exit code, reports, stderr) of qmail-lspawn given the warm-up delivery, then the traced
        one; between(home): called in between; calls: strace's trace= (all by default); again:
        the traced delivery made twice (delivery 0, then 2: what qmail-lspawn does after it)."""
        home, env = self.make()
        p = subprocess.Popen([str(BIN / "qmail-lspawn"), "./Maildir/"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=home)
        try:
            decoder = spawnwire.ReportDecoder()
            p.stdin.write(spawnwire.encode_command(1, self.messid, b"alice@localhost", self.warm))
            p.stdin.flush()
            warm = []
            while not warm:
                data = os.read(p.stdout.fileno(), 4096)
                assert data, "qmail-lspawn ended before the warm-up report"
                warm += decoder.feed(data)
            assert [(r.delnum, r.kind) for r in warm] == [(1, b"K")], warm
            if between is not None:
                between(home)
            cmd = ["strace", "-y", "-qq", "-o", trace or os.devnull, "-p", str(p.pid)]
            if calls is not None:
                cmd += ["-e", "trace=" + calls]
            if self.mode == "fork":
                cmd.insert(1, "-f")
            if inject:
                cmd += ["-e", "inject=%s:error=%s:when=%d" % inject]
            tracer = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
            attached(p.pid)
            p.stdin.write(spawnwire.encode_command(0, self.messid, b"alice@localhost", self.rcpt))
            if again:
                p.stdin.write(spawnwire.encode_command(2, self.messid, b"alice@localhost", self.rcpt))
            p.stdin.close()
            out, err = p.stdout.read(), p.stderr.read()
            code = p.wait(timeout=120)
            tracer.wait(timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        return code, decoder.feed(out), err

    def check(self, code, reports, err, fault):
        problems = []
        new = os.listdir(os.path.join(self.box, "Maildir", "new"))
        said = err.decode("utf-8", "replace")
        if code != 0:
            problems.append("qmail-lspawn exited %d" % code)
        # docs/qmail-lspawn.md: a forked child's failed chdir into the qmail home is reported as
        # a crash (Z) and its one line logged, as every crashed child's last line is
        crash = fault[0] == "chdir" and [r.kind + r.text for r in reports] == [b"Zqmail-local crashed.\n"]
        if "Traceback" in said or ("internal bug" in said and not crash):
            problems.append("a bug: %r" % said[-300:])
        if [r.delnum for r in reports] != [0]:
            problems.append("reports %r" % reports)
            return problems
        kind, text = reports[0].kind, reports[0].text.decode("utf-8", "replace")
        if kind == b"D":
            problems.append("a permanent failure")
        elif kind == b"K" and len(new) != 1:
            problems.append("K with new/ = %r" % new)
        elif kind == b"Z" and new:
            problems.append("Z with the message in new/")
        if problems:
            problems.append("report %s%r" % (kind.decode(), text[-300:]))
        return problems


def attached(pid):
    """Wait until a tracer holds pid (strace -p has attached)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open("/proc/%d/status" % pid) as f:
            if "TracerPid:\t0\n" not in f.read():
                return
        time.sleep(0.005)
    raise AssertionError("strace did not attach to %d" % pid)


def cases_of(trace):
    """[(name, n, args, errnos)]: every call the fault model covers, n counted per process
    (strace's `when`). `when=n` hits the n-th call of every process at once, so a (name, n)
    gets only the errnos that fit each process's n-th call of that name: none when one of them
    is a call on a pipe (qmail-lspawn's command and report pipes: qmail-send's side is no disk)."""
    counts, seen, order = {}, {}, []
    main = None
    for pid, name, args, _ in calls(trace):
        main = pid if main is None else main
        c = counts.setdefault(pid, {})
        c[name] = c.get(name, 0) + 1
        errnos = faults(name, args)
        if pid == main and name == "write" and args.startswith("1<"):
            errnos = ()                     # the report to qmail-send: its pipe, not a disk
        key = (name, c[name])
        if key not in seen:
            order.append(key)
            seen[key] = (set(errnos), args if errnos else None)
        else:
            both, first = seen[key]
            seen[key] = (both & set(errnos), first or (args if errnos else None))
    return [(name, n, seen[name, n][1], tuple(e for e in FAULTS.get(name, ()) + ("EPIPE",) if e in seen[name, n][0]))
            for name, n in order if seen[name, n][0]]


EXPECTED = {"fork": {"openat", "newfstatat", "clone", "pipe2", "write", "fsync", "link"},
            "exec": {"openat", "newfstatat", "clone", "pipe2"}}


@pytest.fixture
def shared_tmp():
    """A directory the mailbox owner (nobody) can enter: pytest's tmp_path is root's, mode 0700."""
    from pathlib import Path
    path = tempfile.mkdtemp(prefix="qmailpy-lspawn-faults-")
    os.chmod(path, 0o755)
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(**ROOT_ONLY)
@pytest.mark.parametrize("kind,mode", [("cdb", "fork"), ("cdb", "exec"), ("usersdb", "fork")])
def test_qmail_lspawn_under_a_fault_at_every_call(shared_tmp, kind, mode):
    strace_ok()
    tmp_path = shared_tmp
    good = Spawn(str(tmp_path / "good"), kind, mode)
    trace = str(tmp_path / "good.trace")
    code, reports, err = good.run(trace=trace)
    assert good.check(code, reports, err, ("", "", 0)) == [] and reports[0].kind == b"K", (code, reports, err)
    text = open(trace).read()
    cases = cases_of(text)
    missing = EXPECTED[mode] - {name for name, _, _, _ in cases}
    assert not missing, "the good run made none of %s: %s" % (sorted(missing), text[-3000:])
    looked_up = "/users/cdb>" if kind == "cdb" else "/users/vpopmail.sqlite"
    assert any(looked_up in args for _, _, args, _ in cases), "no fault for the lookup in %s" % looked_up

    def run_one(name, errno, n, args):
        for attempt in range(3):    # a run whose timing made fewer such calls (a loaded machine)
            base = str(tmp_path / ("%s-%s-%d-%d" % (name, errno, n, attempt)))     # is made again
            spawn = Spawn(base, kind, mode)
            trace = base + ".trace"
            problems = spawn.check(*spawn.run((name, errno, n), trace), (name, errno, n))
            with open(trace) as f:
                injected = "(INJECTED)" in f.read()
            shutil.rmtree(base, ignore_errors=True)
            os.unlink(trace)
            if injected:
                return problems
        return problems + ["the fault was never injected"]
    assert sweep(run_one, cases, "qmail-lspawn, %s, %s" % (kind, mode)) >= 15
