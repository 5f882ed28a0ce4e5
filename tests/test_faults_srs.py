"""SRS under I/O faults (strace fault injection, the sweep technique of tests/test_faults_smtpd.py):
the reads of control/srs/ (and of the controls that say which senders are ours) failing once.

1. qmail-send rewriting the sender of a remote delivery (qmailpy.send.srsmap): every openat,
   read, newfstatat, getdents64 and close it makes on those files (and rcpthosts, which it
   reads at the first remote delivery) failing once (EIO) either
   stops it at start (the message stays queued, untouched) or defers the delivery, which
   leaves later with the SRS sender the good run gave it; never the unrewritten sender,
   never a bounce, never a traceback.
2. qmail-smtpd judging SRS0 recipients at RCPT, reading the keys itself and asking
   qmail-usersd: a valid address gets 250 or a 4xx, a forged one 550 or a 4xx, never the
   other way round.
3. After setsrssecret replaced the keys (it sends no SIGHUP): qmail-todo's reread failing once
   is made again before the next batch, not given up until the next change of the files, so
   a bounce to the new key's address reaches the original sender; qmail-send's failing once
   defers the forward, which then leaves signed with the new key.
"""
import concurrent.futures
import glob
import os
import queue
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from conftest import Home, program
from qmailpy.queue.layout import create_queue
from qmailpy.srs import codec
from test_faults_usersd import attach, need_strace
from test_send_support import BIN, Scratch, Send, inject
from usersd import ready

FILES = ("srs/srs_domain", "srs/srs_secrets", "srs/revers_srs_secrets", "srs/srs_max_age", "srs", "")
CALLS = ("openat", "read", "newfstatat", "fstat", "getdents64", "close")
WAIT = 10
SENDER = "alice@remote.example"
# the fake qmail-remote: keeps the sender it was given beside the message
REMOTE = ('#!/bin/sh\nprintf "%s\\n" "$2" > "$FAKE_DIR/mail/$3.sender.$$"\ncat > "$FAKE_DIR/mail/$3.$$"\n'
          'printf "r\\0K%s accepted message.\\nRemote host said: 250 ok\\n\\0" "$1"\n')


def wait(predicate, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def counts(texts):
    """{call: the most occurrences any one traced process made} of strace -qq outputs."""
    best = {}
    for text in texts:
        made = {}
        for line in text.splitlines():
            m = re.match(r"(?:\d+ +)?([a-z0-9_]+)\(", line)
            if m:
                made[m.group(1)] = made.get(m.group(1), 0) + 1
        for name, n in made.items():
            best[name] = max(best.get(name, 0), n)
    return best


def cases_of(texts):
    return [(name, n) for name, k in sorted(counts(texts).items()) if name in CALLS for n in range(1, k + 1)]


def injecting(case):
    return ["-e", "inject=%s:error=EIO:when=%d" % case] if case else []


def sweep(pool, cases, one):
    """one(resource, case) -> [what is wrong] for every case, 4 at a time; the failures."""
    def run(case):
        got = pool.get()
        try:
            for _ in range(3):          # a run that ended before its N-th call is made again
                wrong, hit = one(got, case)
                if hit:
                    return case, wrong
            return case, wrong + ["the fault was never injected"]
        finally:
            pool.put(got)
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        return [(case, wrong) for case, wrong in ex.map(run, cases) if wrong]


# -- 1. qmail-send signing the sender of a remote delivery

def send_home(tmp):
    s = Scratch(Path(tempfile.mkdtemp(dir=tmp)), {
        "srs/srs_domain": "srs.example.org", "srs/srs_secrets": "key2\nkey1", "srs/revers_srs_secrets": "key2\nkey1",
        "rcpthosts": "mx.example.org"})
    s.remote = os.path.join(s.fake, "remote")
    with open(s.remote, "w") as f:
        f.write(REMOTE)
    os.chmod(s.remote, 0o755)
    return s


def qmail_send(s, log, strace=()):
    """bin/qmail-send (under `strace`, which does not follow its children) until it has finished
    a message or exited (10 s at most), then SIGTERM: its log."""
    env = s.env(QMAILREMOTE=s.remote, QMAILPY_TIMESCALE="1000")
    with open(log, "wb") as out:
        p = subprocess.Popen([*strace, str(BIN / "qmail-send")], stdout=out, stderr=out, env=env,
                             start_new_session=True)
    pid = p.pid
    try:
        if strace:
            pid = None
            wait(lambda: p.poll() is not None or traced_send(p.pid) is not None)
            pid = traced_send(p.pid)
        wait(lambda: p.poll() is not None or b"end msg " in open(log, "rb").read())
        if pid is not None and p.poll() is None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:          # it has exited (a fault at start), strace not yet
                pass
        p.wait(30)
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)        # its helpers, had it died without them
        except ProcessLookupError:
            pass
        if p.poll() is None:
            p.wait()
    with open(log, "rb") as f:
        return f.read().decode("utf-8", "replace")


def traced_send(tracer):
    """The pid of the qmail-send strace started (its child once it has exec'd the program), or None."""
    try:
        with open("/proc/%d/task/%d/children" % (tracer, tracer)) as f:
            kids = f.read().split()
        for kid in kids:
            with open("/proc/%s/comm" % kid) as f:
                if f.read().strip() == "qmail-send":
                    return int(kid)
    except OSError:
        pass
    return None


def forward_run(s, case=None):
    """A message from SENDER to a remote address queued, qmail-send run once under strace
    (`case` failing), and once more if it did not finish the message: (wrong, injected?)."""
    for name in os.listdir(os.path.join(s.fake, "mail")):
        os.unlink(os.path.join(s.fake, "mail", name))
    trace = os.path.join(s.fake, "trace")
    t0 = time.time()
    msgid = inject(s.home, b"Subject: x\n\nbody\n", SENDER.encode(), [b"bob@far.example"])
    control = os.path.join(s.home, "control")
    only = [a for name in FILES + ("rcpthosts",)              # read for the first remote delivery
            for a in ("-P", os.path.join(control, name).rstrip("/"))]
    log = qmail_send(s, trace + ".log", ["strace", "-qq", "-y", "-o", trace, *only, *injecting(case)])
    with open(trace) as f:
        text = f.read()
    wrong = []
    if "Traceback" in log or "internal bug" in log:
        wrong.append("a traceback: %s" % log)
    if "end msg %d" % msgid not in log:
        if not re.search(r"^alert: cannot start: unable to read controls: control/[a-z_/.]+: unable to read: "
                         r"Input/output error$", log, re.M):
            wrong.append("not finished, and not said why: %s" % log)
        if s.mail():
            wrong.append("delivered by a qmail-send that did not finish it: %r" % s.mail())
        log = qmail_send(s, trace + ".log2")           # the fault over: delivered now
    senders = [v.decode().strip() for k, v in s.mail().items() if ".sender." in k]
    signed = {codec.forward(SENDER, "srs.example.org", ["key2"], t) for t in (t0, time.time())}
    if len(senders) != 1 or senders[0] not in signed:
        wrong.append("left with senders %r, not one of %r: %s" % (senders, signed, log))
    if "bounce" in log or s.queue_files():
        wrong.append("bounced or left in the queue: %r %s" % (s.queue_files(), log))
    return wrong, text


def test_qmail_send_signs_every_forward_or_defers_it(tmp_path):
    need_strace()
    homes = [send_home(tmp_path) for _ in range(5)]
    try:
        wrong, text = forward_run(homes[0])
        assert not wrong, wrong
        cases = cases_of([text])
        assert {name for name, _ in cases} >= {"openat", "read", "newfstatat", "getdents64", "close"}, cases
        pool = queue.Queue()
        for s in homes[1:]:
            pool.put(s)

        def one(s, case):
            wrong, text = forward_run(s, case)
            return wrong, "(INJECTED)" in text
        assert sweep(pool, cases, one) == []
    finally:
        for s in homes:
            s.cleanup()


# -- 2. qmail-smtpd judging SRS recipients, itself or through qmail-usersd

TCP_ENV = {"TCPREMOTEIP": "127.0.0.1", "TCPLOCALIP": "127.0.0.1", "TCPLOCALHOST": "localhost", "PROTO": "TCP"}
KEYS = ["newest-key", "older-key"]
VALID = codec.forward(SENDER, "srs.example.org", ["older-key"], time.time())
FORGED = codec.forward(SENDER, "srs.example.org", ["not-our-key"], time.time())
GOOD_REPLIES = ["250 ok", "550 sorry, this SRS bounce address is invalid or forged (#5.1.1)"]
TEMPORARY = ("421 unable to read controls (#4.3.0)", "451 temporary failure reading the users database (#4.3.0)")


def smtpd_home(tmp):
    home = Home(tempfile.mkdtemp(dir=tmp))
    home.control("me", "test.example\n")
    home.control("rcpthosts", "example.org\nsrs.example.org\n")
    home.control("srs/srs_domain", "srs.example.org\n")
    home.control("srs/revers_srs_secrets", "".join(k + "\n" for k in KEYS))
    home.control("srs/srs_max_age", "864000\n")
    create_queue(home.root)
    return home


def tracing(home, trace, case, follow=()):
    only = [a for name in FILES for a in ("-P", os.path.join(home.root, "control", name).rstrip("/"))]
    return ["strace", "-qq", "-y", *follow, "-o", trace, *only, *injecting(case)]


def rcpt(home, address, wrap=()):
    """A bounce to `address`: (the RCPT reply, or the last reply of a session that ended sooner; the log)."""
    r = subprocess.run([*wrap, program("qmail-smtpd")], input=b"MAIL FROM:<>\r\nRCPT TO:<%s>\r\nQUIT\r\n" % address.encode(),
                       capture_output=True, env=home.env(**TCP_ENV), timeout=30)
    lines = r.stdout.decode("utf-8", "replace").split("\r\n")[:-1]
    return (lines[2] if len(lines) > 2 else lines[-1] if lines else ""), r.stderr.decode("utf-8", "replace")


def smtpd_run(home, case=None, service=False):
    """The replies to a valid and a forged SRS bounce, each in a session of its own, the
    keys read by qmail-smtpd under strace or by a qmail-usersd started under strace
    (following its worker threads: each counts its own calls); (replies, logs, traces)."""
    trace = os.path.join(home.root, "trace")
    for old in glob.glob(trace + "*"):
        os.unlink(old)
    if not service:
        got = [rcpt(home, address, tracing(home, trace, case)) for address in (VALID, FORGED)]
        with open(trace) as f:
            return [g[0] for g in got], "".join(g[1] for g in got), [f.read()]
    svc = subprocess.Popen(tracing(home, trace, case, ["-ff"]) + [program("qmail-usersd")], env=home.env(),
                           stderr=subprocess.PIPE, start_new_session=True)
    try:
        path = os.path.join(home.root, "sock", "users")
        assert wait(lambda: svc.poll() is not None or ready(path)) and svc.poll() is None, "qmail-usersd did not start"
        got = [rcpt(home, address) for address in (VALID, FORGED)]
    finally:
        kids = "/proc/%d/task/%d/children" % (svc.pid, svc.pid)
        for kid in open(kids).read().split() if svc.poll() is None else ():
            os.kill(int(kid), signal.SIGTERM)
        try:
            _, err = svc.communicate(timeout=30)
        finally:
            try:
                os.killpg(svc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    texts = []
    for name in sorted(glob.glob(trace + ".*")):
        with open(name) as f:
            texts.append(f.read())
    return [g[0] for g in got], "".join(g[1] for g in got) + err.decode("utf-8", "replace"), texts


def test_qmail_smtpd_never_takes_a_forged_srs_bounce_nor_refuses_a_valid_one(tmp_path):
    """Keys read by qmail-smtpd: a fault is `421 unable to read controls` (docs/qmail-smtpd.md);
    asked of qmail-usersd: `451 temporary failure reading the users database`; else the good
    run's replies."""
    need_strace()
    for service in (False, True):
        good = smtpd_home(tmp_path)
        replies, log, texts = smtpd_run(good, service=service)
        assert replies == GOOD_REPLIES, (replies, log)
        cases = cases_of(texts)
        assert {name for name, _ in cases} >= {"openat", "read", "newfstatat", "close"}, cases
        pool = queue.Queue()
        for _ in range(4):
            pool.put(smtpd_home(tmp_path))

        def one(home, case):
            replies, log, texts = smtpd_run(home, case, service)
            wrong = ["%s answered %r" % (what, got) for what, got, good in zip(("valid", "forged"), replies, GOOD_REPLIES)
                     if got != good and got != TEMPORARY[service]]
            if "Traceback" in log or "internal bug" in log:
                wrong.append("a traceback: " + log)
            return wrong, any("(INJECTED)" in t for t in texts)
        assert sweep(pool, cases, one) == [], service


# -- 3. qmail-todo rereading the keys setsrssecret replaced

def replace(path, text):
    """As setsrssecret does: a new file renamed over the old one."""
    with open(path + ".new", "w") as f:
        f.write(text)
    os.rename(path + ".new", path)


def queue_one(send, message, sender, recipient):
    """Queue a message for the running qmail-send and wait until it is done: its id."""
    done = [ln for ln in send.lines() if ln.startswith("end msg ")]
    inject(send.scratch.home, message, sender.encode(), [recipient.encode()])
    ended = send.wait_for(lambda: [ln for ln in send.lines() if ln.startswith("end msg ")][len(done):], what="end msg")
    return int(ended[0].split()[2])


def test_qmail_todo_rereads_new_srs_keys_after_a_failed_reread(tmp_path):
    """setsrssecret sends no SIGHUP: qmail-todo rereads the keys when the files change. That
    reread failing once (EIO) kept the old keys for good, the change seen: a bounce to an
    address signed with the new key was not turned back into the original sender and went
    to the SRS address itself. The reread is now made again before the next batch."""
    need_strace()
    s = send_home(tmp_path)
    keys = os.path.join(s.home, "control", "srs")
    replace(os.path.join(keys, "srs_secrets"), "key1\n")
    replace(os.path.join(keys, "revers_srs_secrets"), "key1\n")
    send = Send(s, QMAILREMOTE=s.remote, QMAILPY_TIMESCALE="1000")
    try:
        queue_one(send, b"Subject: x\n\nbody\n", SENDER, "bob@far.example")     # qmail-todo has read its controls
        todo = send.wait_for(lambda: [k for k in send.children()
                                      if open("/proc/%d/comm" % k).read().strip() == "qmail-todo"], what="qmail-todo")[0]
        trace = os.path.join(s.fake, "todo")
        tracer = attach(todo, [todo], ["-P", os.path.join(keys, "revers_srs_secrets"),
                                       "-e", "inject=openat:error=EIO:when=1"], trace)
        try:
            replace(os.path.join(keys, "srs_secrets"), "key2\nkey1\n")
            replace(os.path.join(keys, "revers_srs_secrets"), "key2\nkey1\n")
            queue_one(send, b"Subject: x\n\nbody\n", SENDER, "bob@far.example")
        finally:
            tracer.send_signal(signal.SIGTERM)
            tracer.wait(WAIT)
            tracer.stderr.close()
        with open("%s.%d" % (trace, todo)) as f:
            assert "(INJECTED)" in f.read()
        assert ("alert: qmail-todo: unable to reread control/srs/revers_srs_secrets: unable to read: "
                "Input/output error") in send.lines()
        address = codec.forward(SENDER, "srs.example.org", ["key2"], time.time())
        bounce = queue_one(send, b"Subject: bounce\n\nyour mail bounced\n", "", address)
        assert "srs msg %d: <%s> is <%s>" % (bounce, address, SENDER) in send.lines()
        assert [v for k, v in s.mail().items() if k.startswith(SENDER + ".sender.")] == [b"\n"]
        assert not [k for k in s.mail() if k.startswith("SRS")]
        assert send.stop() == 0
    finally:
        s.cleanup()


def test_qmail_send_signs_with_the_new_key_after_a_failed_reread(tmp_path):
    """qmail-send's side of the same change (send/srsmap.py): the reread of srs_secrets that
    setsrssecret replaced failing once defers the delivery, which then leaves signed with the
    new key, never with the old one nor unsigned."""
    need_strace()
    s = send_home(tmp_path)
    keys = os.path.join(s.home, "control", "srs")
    replace(os.path.join(keys, "srs_secrets"), "key1\n")
    send = Send(s, QMAILREMOTE=s.remote, QMAILPY_TIMESCALE="1000")
    try:
        queue_one(send, b"Subject: x\n\nbody\n", SENDER, "bob@far.example")
        trace = os.path.join(s.fake, "send")
        tracer = attach(send.proc.pid, [send.proc.pid], ["-P", os.path.join(keys, "srs_secrets"),
                                                          "-e", "inject=openat:error=EIO:when=1"], trace)
        try:
            replace(os.path.join(keys, "srs_secrets"), "key2\nkey1\n")
            t0 = time.time()
            msgid = queue_one(send, b"Subject: x\n\nbody\n", SENDER, "carol@far.example")
        finally:
            tracer.send_signal(signal.SIGTERM)
            tracer.wait(WAIT)
            tracer.stderr.close()
        with open("%s.%d" % (trace, send.proc.pid)) as f:
            assert "(INJECTED)" in f.read()
        assert ("warning: unable to read controls: control/srs/srs_secrets: unable to read: Input/output error; "
                "will try msg %d again later" % msgid) in send.lines()
        signed = {codec.forward(SENDER, "srs.example.org", ["key2"], t) for t in (t0, time.time())}
        got = [v.decode().strip() for k, v in s.mail().items() if k.startswith("carol@far.example.sender.")]
        assert len(got) == 1 and got[0] in signed, (got, signed)
        assert not any(ln.startswith("bounce msg") for ln in send.lines())
        assert send.stop() == 0
    finally:
        s.cleanup()
