"""Programs whose output is their result, with the writes of it failing: stdout is a file, and
strace (-P that file) fails its N-th write, for every N a good run shows, with EIO, ENOSPC or
EPIPE in turn (every occurrence gets one, every errno comes up; the write is the same call of
the same helper each time, qmailpy.log.output).

Outcome, as qmail-qread.c's `if (substdio_puts(subfdout, s) == -1) _exit(111)`: exit 111 and
one line on stderr, `PROG: fatal: unable to write output: REASON` (qmail's error_str words);
never exit 0 with half the result, a Python traceback, a bug line, nor another error's message
(qmail-qread took the failed write for an unreadable info/ directory).
"""
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import program
from qmailpy.queue import layout
from test_faults_local import strace_ok
from test_send_support import queue_message, write_users_cdb

ERRNOS = ("EIO", "ENOSPC", "EPIPE")
REASON = {"EIO": "input/output error", "ENOSPC": "out of disk space", "EPIPE": "broken pipe"}
CASES = [  # (program and arguments, its name in the fatal line)
    (["qmail-showctl"], "qmail-showctl"),
    (["qmail-showctl", "--check"], "qmail-showctl"),
    (["qmail-showctl", "--json"], "qmail-showctl"),
    (["qmail-qread"], "qmail-qread"),
    (["qmail-qread", "--json"], "qmail-qread"),
    (["qmail-qstat"], "qmail-qstat"),
    (["qmail-qstat", "--json"], "qmail-qstat"),
    (["qmail-tcpok", "--help"], "qmail-tcpok"),
    (["qmail-config", "--missing", "mx.example.org"], "qmail-config"),
    (["qmail-users", "list"], "qmail-users"),
    (["qmail-users", "info", "joe@virt.example"], "qmail-users"),
    (["qmail-users", "relays"], "qmail-users"),
    (["setsrssecret", "--show"], "setsrssecret"),
    (["sendmail", "-bp"], "sendmail"),
]


def make_home(base):
    home = os.path.join(base, "qmail")
    layout.create_queue(home)
    os.makedirs(os.path.join(home, "control", "srs"))
    for name, value in {"me": "mx.example.org", "locals": "localhost\nmx.example.org",
                        "rcpthosts": "mx.example.org", "virtualdomains": "virt.example:virt.example"}.items():
        with open(os.path.join(home, "control", name), "w") as f:
            f.write(value + "\n")
    # users/cdb's catch-all to a directory with no .qmail and no Maildir: postmaster and the
    # double-bounce address reach no mailbox whatever the host's passwd holds (test_production
    # creates the alias user for a while, which took two of --check's three findings away)
    nowhere = os.path.join(base, "nowhere")
    os.makedirs(nowhere)
    write_users_cdb(home, {b"!": (b"pm", os.getuid(), os.getgid(), nowhere.encode(), b"-", b"")})
    queue_message(home)                     # one in todo/: qmail-qstat's unprocessed
    for msgid in (1000001, 1000002, 1000003):  # three as qmail-todo leaves them: qmail-qread's list
        for path, data in ((layout.mess_path(home, msgid), b"Subject: %d\n\nbody\n" % msgid),
                           (layout.info_path(home, msgid), b"Falice@localhost\0"),
                           (layout.local_path(home, msgid), b"Tjoe@localhost\0"),
                           (layout.remote_path(home, msgid), b"Tbob@example.com\0")):
            with open(path, "wb") as f:
                f.write(data)
    from qmailpy.ctl.reader import Controls
    from qmailpy.users import admin, open_users
    users = open_users(home, Controls(home, {}), create=True)
    try:
        admin.add_domain(users, "virt.example")
        for who in ("joe", "ann", "bo"):
            admin.add_user(users, "%s@virt.example" % who, "secret", quota="10M")
        users.record_relay("192.0.2.7", time.time())
    finally:
        users.close()
    return home


def run(home, argv, out, inject=None):
    trace = out + ".trace"
    cmd = ["strace", "-qq", "-o", trace, "-P", out, "-e", "trace=write"]
    if inject:
        cmd += ["-e", "inject=write:error=%s:when=%d" % inject]
    with open(out, "wb") as f:
        p = subprocess.run(cmd + [program(argv[0])] + argv[1:], stdout=f, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL, timeout=60,
                           env=dict(os.environ, QMAILHOME=home, HOME=home, TZ="UTC"))
    with open(trace) as f:
        traced = f.read()
    return p.returncode, p.stderr.decode("utf-8", "replace"), traced


def test_a_result_that_cannot_be_written_is_exit_111_and_one_line(tmp_path):
    base = str(tmp_path)
    strace_ok()
    shared = make_home(base)
    # qmail-config writes the control files it finds missing: its runs get a home of their own,
    # or qmail-showctl --check would have fewer findings (writes) than in its good run
    os.mkdir(os.path.join(base, "config"))
    homes = {"qmail-config": make_home(os.path.join(base, "config"))}
    jobs = []
    for i, (argv, name) in enumerate(CASES):    # once before counting: a tool may change the
        run(homes.get(argv[0], shared), argv, os.path.join(base, "warm%d" % i))  # home the others read
    for i, (argv, name) in enumerate(CASES):
        home = homes.get(argv[0], shared)
        out = os.path.join(base, "good%d" % i)
        code, err, traced = run(home, argv, out)
        # --check: exit 1 with its findings (this home has some: no postmaster route...)
        assert code == (1 if "--check" in argv else 0) and os.path.getsize(out), (argv, code, err)
        writes = traced.count("write(")
        assert writes >= 1, (argv, traced)
        jobs += [(argv, name, (ERRNOS[(n + i) % 3], n)) for n in range(1, writes + 1)]
    def one(k, argv, name, inject):
        out = os.path.join(base, "out%d" % k)
        for _ in range(3):
            # a run that ended before the N-th write (fewer lines than the good run) is made
            # again, as test_faults_delivery's reached() does
            code, err, traced = run(homes.get(argv[0], shared), argv, out, inject)
            if "(INJECTED)" in traced or traced.count("write(") >= inject[1]:
                break
        problems = []
        if "(INJECTED)" not in traced:
            with open(out, "rb") as f:
                problems.append("the fault was never injected (%d writes: %r)" % (traced.count("write("), f.read()[-400:]))
        want = "%s: fatal: unable to write output: %s\n" % (name, REASON[inject[0]])
        if code != 111 or err != want:
            problems.append("exit %d, stderr %r" % (code, err[-400:]))
        os.unlink(out)
        os.unlink(out + ".trace")
        return problems and ["%s, write #%d %s: %s" % (" ".join(argv), inject[1], inject[0], "; ".join(problems))]
    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as ex:
        failed = [p for got in ex.map(lambda job: one(*job), [(k,) + j for k, j in enumerate(jobs)]) for p in got]
    assert not failed, "%d of %d runs (%.1f s):\n%s" % (len(failed), len(jobs), time.monotonic() - t0, "\n".join(failed))
    assert len(jobs) >= len(CASES)


HELPS = ("qmail-users", "qmail-showctl", "qmail-config", "setsrssecret", "qmail-qread", "qmail-qstat",
         "qmail-policytest", "qmail-newfilters", "qmail-newu", "qmail-newmrh", "maildirmake", "qmail-tcpok")


def test_help_that_cannot_be_written_is_the_same_fatal_line(tmp_path):
    """--help is printed by click itself for the click tools, not through qmailpy.output: a full
    disk there was `internal bug: OSError` and exit 120 (and Python's `Exception ignored` at
    exit). Every admin tool: exit 111 and the one fatal line; with a good stdout, exit 0."""
    env = dict(os.environ, QMAILHOME=str(tmp_path), HOME=str(tmp_path))
    wrong = []
    for name in HELPS:
        good = subprocess.run([program(name), "--help"], capture_output=True, env=env, timeout=60)
        with open("/dev/full", "wb") as full:
            p = subprocess.run([program(name), "--help"], stdout=full, stderr=subprocess.PIPE, env=env, timeout=60)
        got = (good.returncode, bool(good.stdout), p.returncode, p.stderr.decode())
        if got != (0, True, 111, "%s: fatal: unable to write output: out of disk space\n" % name):
            wrong.append("%s: %r" % (name, got))
    assert not wrong, "\n".join(wrong)
