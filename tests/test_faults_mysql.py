"""The MySQL/MariaDB users backend under socket faults: strace fault injection at every
occurrence of the calls on the connection to MariaDB (notes: the sweep technique;
tests/test_faults_usersd.py swept the SQLite backend, whose helpers this reuses).

control/usersdb points at a scratch database on 127.0.0.1:3306 (tests/mysql_fixture.py); each
call of the good run on the MariaDB socket (socket, ioctl (settimeout), connect, poll,
getsockopt, setsockopt, sendto, recvfrom) fails once, with the errno that call meets (EMFILE,
ETIMEDOUT, ECONNRESET, EAGAIN where it can, else EIO). A new connection's sweep fails its
set-up (the calls before the work's first statement), a kept one's the statements; qmail-smtpd's
and qmail-lspawn's leave out the polls of the socket's time-out, whose failure is the recv's or
the send's after them (swept(); the service's sweep fails them all):

1. qmail-usersd's workers answering a good and a wrong password, a recipient that exists and
   one that does not, an alias domain's mailbox, a POP-before-SMTP check, and authfailshared's
   AUTHBEGIN and AUTHFORGET: on a new connection (control/usersdb changed: every worker
   reconnects) and on the one each worker keeps. Each answer is the good run's or TEMP (or the
   connection closed: the client's 451/454), never YES, NO or NOUSER for a check that did not
   run; the shared AUTH-failure table holds exactly the checks COUNTED (one more at most for a
   TEMP); the next client is answered truly by every worker; no traceback or bug line; the
   service holds one MariaDB connection per worker at most, and nothing else it did not hold.
2. qmail-smtpd exec'd with the database read in-process (no qmail-usersd): AUTH PLAIN (a wrong
   then the right password) and a chkuser RCPT (one that exists, one that does not): 454/451
   or the good reply, never 235/535/550 by mistake, one temporary reply at most (the next
   question asked on a new connection), the checks counted exactly (one more where the count
   itself was lost, logged), exit 0, no traceback.
3. qmail-lspawn's mailbox lookup for a virtual-domain recipient: K or Z, never D; its next
   delivery K (the database reopened).
MariaDB that cannot be reached fails these tests (conftest.py's mariadb, tests/services.py).
"""
import functools
import os
import re
import shutil
import signal
import tempfile
import time

import pytest

import test_faults_usersd as F
from mysql_fixture import MysqlDatabase, mysql_admin, usersdb_line
from qmailpy.proto import userswire as W
from qmailpy.users.authfail import CREATE, TABLE as AUTHFAIL
from qmailpy.usersd.server import WORKERS
from test_faults_filters import parallel
from test_faults_lspawn import Spawn
from test_send_support import ROOT_ONLY
from test_usersd import make_home

CALLS = ("socket", "ioctl", "connect", "poll", "getsockopt", "setsockopt", "sendto", "recvfrom")
ERRNOS = {"socket": ("EMFILE",), "connect": ("ETIMEDOUT",), "poll": ("ENOMEM",), "sendto": ("ECONNRESET", "EAGAIN"),
          "recvfrom": ("ECONNRESET", "EAGAIN")}   # else EIO; EAGAIN on a kept connection only
MYSQL_PORT = "0CEA"         # 3306 in /proc/net/tcp
BEGIN_IP, FORGET_IP, FORGET_ID = "198.51.100.7", "198.51.100.8", 4242
# pymysql makes an SSL context for each connection (TLS if the server offers it, unverified:
# CERT_NONE), loading the system's CA bundle that it never uses: 20 ms of CPU per connection,
# most of these sweeps' time (every fault costs reconnections). An empty bundle here: the
# same connections, the same calls on their sockets.
NO_CA = {"SSL_CERT_FILE": os.devnull, "SSL_CERT_DIR": os.devnull}


def questions():
    """F.QUESTIONS and a wrong recipient, then authfailshared's two: [(question, good answer)]
    (AUTHBEGIN's: COUNTED 1 and a check number, compared by its start)."""
    return F.QUESTIONS + [
        (W.encode_question("RCPT", "nobody@example.org"), b"NOUSER"),
        (W.encode_question("AUTHBEGIN", BEGIN_IP, "5", "600", str(time.time())), b"COUNTED 1 "),
        (W.encode_question("AUTHFORGET", FORGET_IP, str(FORGET_ID)), b"OK")]


def swept(name, args, made=None):
    """Is this call (strace -yy, or -y) one on the connection to MariaDB that qmail-smtpd's and
    qmail-lspawn's sweeps fail? All but the polls of the socket's time-out before each recvfrom
    and sendto (CPython's sock_call: the poll failing is the recv or send failing, same error,
    same path; the service's sweep fails them all): the connect's poll (POLLERR) and the
    look at a kept connection (MysqlDB's _dropped(): time-out 0) are swept."""
    if name not in CALLS:
        return False
    where = made if name == "socket" else args.split(",", 1)[0]
    if not ("TCP:" in (where or "") or "socket:" in (where or "")):
        return False
    return name != "poll" or "POLLERR" in args or args.endswith(", 0")


def sweep(places, cases, one):
    """one(place, case) -> [problem] for every case, len(places) at once: every problem found."""
    return [problem for got in parallel(cases, places, one) for problem in got]


def injected(trace):
    with open(trace, errors="replace") as f:
        return "(INJECTED)" in f.read()


def good(truth, got):
    return got == truth or (truth.endswith(b" ") and got is not None and got.startswith(truth))


@pytest.fixture
def databases(mariadb):
    """scratch(): a new database on the test MariaDB (dropped at the end)."""
    made = []

    def scratch():
        conn = mysql_admin()
        assert conn is not None, "no MariaDB at 127.0.0.1:3306"
        made.append(MysqlDatabase(conn))
        return made[-1]
    yield scratch
    for db in made:
        db.drop()


def mysql_sockets(pid):
    """How many of pid's fds are TCP connections to port 3306."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            with open("/proc/%d/net/%s" % (pid, table)) as f:
                for line in f.readlines()[1:]:
                    fields = line.split()
                    if fields[2].endswith(":" + MYSQL_PORT):
                        inodes.add(fields[9])
        except OSError:
            pass
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            n += 1
    return n


class Rig:
    """qmail-usersd in a home of its own whose usersdb is a scratch MariaDB database."""

    def __init__(self, root, db):
        self.db = db
        self.home = make_home(root, usersdb_line(db.name))
        self.home.env = functools.partial(self.home.env, **NO_CA)
        self.db.execute(CREATE)
        self.svc = None
        self.stamp = 0

    def service(self):
        """The running service, every worker having answered, the questions asked once (what they
        import is imported: a worker's calls on its MariaDB socket are then the same each run)."""
        if self.svc is None or self.svc.proc.poll() is not None:
            self.svc = F.warm(F.started(self.home))
            F.converse(self.svc.path, questions() * 2)
        return self.svc

    def stop(self):
        log = self.svc.stop() if self.svc is not None else ""
        self.svc = None
        return log

    def reconnect(self):
        """control/usersdb changed: each worker's next question opens a new connection."""
        self.stamp += 1
        path = os.path.join(self.home.root, "control", "usersdb")
        t = int(time.time() * 1e9) + self.stamp * 1000
        os.utime(path, ns=(t, t))

    def run(self, fresh, strace, trace):
        """The questions asked of workers under strace (-e options `strace`); then every worker asked."""
        svc = self.service()
        pid = svc.proc.pid
        self.db.execute("DELETE FROM " + AUTHFAIL)
        self.db.execute("INSERT INTO " + AUTHFAIL + " (id, ip_addr, stamp) VALUES (%s, %s, %s)",
                        (FORGET_ID, FORGET_IP, int(time.time())))
        if fresh:
            self.reconnect()
        r = Outcome()
        asked = questions()
        for old in F.glob.glob(trace + ".*"):
            os.unlink(old)
        tids = sorted(int(t) for t in os.listdir("/proc/%d/task" % pid) if int(t) != pid)
        tracer = F.attach(pid, tids, strace, trace)
        try:
            # one after the other, each to the worker waiting longest: a worker of its own
            r.answers = F.converse(svc.path, asked)
        finally:
            tracer.send_signal(signal.SIGTERM)
            tracer.wait(F.WAIT)
            tracer.stderr.close()
        r.truth = [t for _, t in asked]
        r.rows = {ip: n for ip, n in self.db.execute("SELECT ip_addr, COUNT(*) FROM " + AUTHFAIL + " GROUP BY ip_addr")}
        r.next = F.converse(svc.path, F.NEXT)
        deadline = time.monotonic() + 2
        while len(F.fds(pid)) - mysql_sockets(pid) > self.held and time.monotonic() < deadline:
            time.sleep(0.01)         # the clients' connections closed
        r.mysql, r.others = mysql_sockets(pid), len(F.fds(pid)) - mysql_sockets(pid)
        r.log = F.log_so_far(svc)
        r.threads = {int(p.rsplit(".", 1)[1]): F.thread_calls(p) for p in F.glob.glob(trace + ".*")}
        r.trace = trace
        if r.next != [t for _, t in F.NEXT] or r.mysql > WORKERS or r.others != self.held:
            r.log += self.stop()            # broken (judged): a new one for the next run
        return r

    def baseline(self):
        """What the running service holds but MariaDB connections: each run's end must match it."""
        svc = self.service()
        time.sleep(0.1)
        self.held = len(F.fds(svc.proc.pid)) - mysql_sockets(svc.proc.pid)     # fds but MariaDB's


class Outcome:
    """What one run of Rig.run() got: answers, the shared count's rows, the next client's answers,
    the service's MariaDB connections and other fds after, its log, the threads' calls."""

    def injected(self):
        return [c for calls in self.threads.values() for c in calls if c[3]]

    def wrong(self, held):
        out = []
        for truth, got in zip(self.truth, self.answers):
            if got is not None and not good(truth, got) and not got.startswith(b"TEMP "):
                out.append("%r for %r" % (got, truth))
        counted = self.answers[-2] is not None and good(self.truth[-2], self.answers[-2])
        if self.rows.get(BEGIN_IP, 0) != 1 and counted or self.rows.get(BEGIN_IP, 0) > 1:
            out.append("%d checks of %s in %s for %r" % (self.rows.get(BEGIN_IP, 0), BEGIN_IP, AUTHFAIL,
                                                          self.answers[-2]))
        forgot = self.answers[-1] == b"OK"
        if self.rows.get(FORGET_IP, 0) != (0 if forgot else 1) and (forgot or self.rows.get(FORGET_IP, 0) > 1):
            out.append("AUTHFORGET %r left %d rows" % (self.answers[-1], self.rows.get(FORGET_IP, 0)))
        if self.next != [t for _, t in F.NEXT]:
            out.append("the next client got %r" % self.next)
        if "Traceback" in self.log or "internal bug" in self.log:
            out.append("a traceback or internal bug")
        if self.mysql > WORKERS or self.others != held:
            out.append("%d connections to MariaDB, %d other fds (%d before)" % (self.mysql, self.others, held))
        if not self.injected():
            out.append("nothing injected")
        return out


QUERY = re.compile(r'\\3(?!SET )[A-Z]')      # a COM_QUERY of the work, not the set-up's SET NAMES


def numbered(path):
    """(call, n, args, <result's path>) for each call of one process's (or thread's) trace, n
    counted per call (strace's when=)."""
    counts = {}
    with open(path, errors="replace") as f:
        for line in f:
            m = F.LINE.match(line)
            if m:
                name = m.group(1)
                counts[name] = counts.get(name, 0) + 1
                yield name, counts[name], m.group(2), m.group(4)


def set_up(path):
    """[(call, n)] of one thread's trace before the first statement of its work was sent: the
    connection's set-up (a worker's stale one closed, a new one made, SET NAMES, select_db)."""
    out = []
    for name, n, args, _ in numbered(path):
        if name == "sendto" and QUERY.search(args):
            break
        out.append((name, n))
    return out


def plan(good_run, fresh):
    """[(name, n, errno)]: each call on a MariaDB socket, n counted per thread (strace's when=):
    of a new connection, its set-up (its statements are those of a kept one: the other phase)."""
    cases = set()
    for tid, calls in good_run.threads.items():
        first = set(set_up(good_run.trace + "." + str(tid))) if fresh else None
        for name, n, where, _ in calls:
            if name in CALLS and (where or "").startswith("socket:") and (first is None or (name, n) in first):
                for errno in ERRNOS.get(name, ("EIO",)):
                    if not (fresh and errno == "EAGAIN"):
                        cases.add((name, n, errno))
    return sorted(cases)


def test_usersd_with_mysql_every_socket_fault_is_a_true_answer_or_temp(tmp_path, databases):
    F.need_strace()
    rigs = [Rig(tmp_path / ("h%d" % i), databases()) for i in range(4)]
    try:
        for rig in rigs:
            rig.baseline()
        goods = {fresh: rigs[0].run(fresh, ["-e", "trace=" + ",".join(CALLS)], str(tmp_path / ("good%d" % fresh)))
                 for fresh in (True, False)}
        for g in goods.values():
            assert g.wrong(rigs[0].held) == ["nothing injected"], (g.answers, g.next, g.log)
        cases = [(fresh,) + c for fresh, g in goods.items() for c in plan(g, fresh)]
        covered = {(fresh, name) for fresh, name, _, _ in cases}
        assert {(True, c) for c in CALLS} | {(False, c) for c in ("poll", "sendto", "recvfrom")} <= covered, covered

        passed_over = []

        def one(rig, case):
            fresh, name, n, errno = case
            for _ in range(3):          # a run whose workers made fewer calls than N: again
                r = rig.run(fresh, ["-e", "trace=" + name, "-e", "inject=%s:error=%s:when=%d" % (name, errno, n)],
                            str(rig.home.root) + ".trace")
                if r.injected():
                    break
            else:
                if all(sum(1 for c in calls if c[0] == name) < n for calls in r.threads.values()):
                    passed_over.append(case)   # no worker made N such calls: which worker takes
                    return []                  # which question, and how many, is the kernel's choice
            wrong = r.wrong(rig.held)
            return ["%s %s #%d %s: %s; answers %r; log %r" % ("new" if fresh else "kept", name, n, errno,
                                                               "; ".join(wrong), r.answers, r.log[-1500:])] if wrong else []

        failures = sweep(rigs, cases, one)
    finally:
        for rig in rigs:
            rig.stop()
    assert failures == [], "%d of %d faulted runs went wrong:\n%s" % (len(failures), len(cases), "\n".join(failures))
    hit = {(fresh, name) for fresh, name, _, _ in set(cases) - set(passed_over)}
    assert hit == covered, sorted(covered - hit)       # every kind of call still faulted somewhere


# -- 2. qmail-smtpd reading the database itself ---------------------------------------------------

SESSION = (b"EHLO c.example\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<joe@example.org>\r\n"
           b"RCPT TO:<nobody@example.org>\r\nRSET\r\n" + F.plain(b"wrong") + F.plain(b"s3cret word") + b"QUIT\r\n")
CHKUSER_TEMP = "451 system temporary unavailable, try again later (#4.3.0 - chkuser)"
AUTH_TEMP = "454 temporary authentication failure (#4.3.0)"
REPLIES = [("250 ok",), ("250 ok", CHKUSER_TEMP), ("550 sorry, no mailbox here by that name (#5.1.1 - chkusr)", CHKUSER_TEMP),
           ("250 flushed",), ("535 authentication failed (#5.7.1)", AUTH_TEMP), ("235 ok, go ahead (#2.0.0)", AUTH_TEMP),
           ("221 test.example",)]


class SmtpHome:
    """A home for qmail-smtpd over a scratch MariaDB database, no qmail-usersd: authfaillimit 5,
    authfailshared 1 (the count in the database, this host's files while it cannot answer)."""

    def __init__(self, root, db):
        self.db = db
        self.home = make_home(root, usersdb_line(db.name))
        self.home.env = functools.partial(self.home.env, **NO_CA)
        self.home.control("authfaillimit", "5\n")
        self.home.control("authfailshared", "1\n")
        self.db.execute(CREATE)         # as after the first session (the sessions swept make the same calls)

    def session(self, strace, trace):
        """(exit code, replies after EHLO's, log, checks counted here and in the database)."""
        r = F.subprocess.run(["strace", "-qq", "-yy", "-o", trace, *strace, F.program("qmail-smtpd")], input=SESSION,
                             capture_output=True, timeout=60, env=self.home.env(**F.SMTPD_ENV))
        try:
            shared = self.db.execute("SELECT COUNT(*) FROM " + AUTHFAIL)[0][0]
            self.db.execute("DELETE FROM " + AUTHFAIL)
        except Exception:           # not made yet: a fault before its CREATE
            shared = 0
        replies = F.after_ehlo(r.stdout.decode("utf-8", "replace").split("\r\n"))
        return r.returncode, replies, r.stderr.decode("utf-8", "replace"), F.counted(self.home) + shared


def smtpd_cases(trace):
    """[(name, n, errno)]: the calls on the connection to MariaDB (-yy: TCP:[...]) in one process,
    but the polls of its socket time-out (swept())."""
    return [(name, n, errno) for name, n, args, made in numbered(trace) if swept(name, args, made)
            for errno in ERRNOS.get(name, ("EIO",)) if errno != "EAGAIN"]


def smtpd_wrong(rc, replies, log, checks):
    wrong = []
    if len(replies) != len(REPLIES) or any(got not in allowed for got, allowed in zip(replies, REPLIES)):
        wrong.append("replies %r" % replies)
    elif sum(got != allowed[0] for got, allowed in zip(replies, REPLIES)) > 1:
        wrong.append("one fault, more than one temporary reply (the next question not asked anew): %r" % replies)
    failed = replies.count(REPLIES[4][0])
    # one more where the database lost its answer to a count or a take-back, logged: counted on
    # this host instead (authfail-local), or left counted (authfail-kept)
    extra = "authfail-local" in log or "authfail-kept" in log
    if not failed <= checks <= failed + extra:
        wrong.append("%d checks counted for %d x 535" % (checks, failed))
    if rc != 0 or "Traceback" in log or "internal bug" in log:
        wrong.append("exit %s, a traceback or internal bug" % rc)
    return wrong


def test_smtpd_reading_mysql_itself_every_socket_fault_is_451_454_or_the_good_reply(tmp_path, databases):
    F.need_strace()
    homes = [SmtpHome(tmp_path / ("s%d" % i), databases()) for i in range(4)]
    trace = str(tmp_path / "smtpd.trace")
    good = homes[0].session(["-e", "trace=" + ",".join(CALLS)], trace)
    assert smtpd_wrong(*good) == [] and good[1] == [r[0] for r in REPLIES] and good[3] == 1, good
    cases = smtpd_cases(trace)
    assert {c[0] for c in cases} == set(CALLS), cases

    def one(h, case):
        name, n, errno = case
        trace = str(tmp_path / ("%s-%d-%s" % case))
        for _ in range(3):              # a run that ended before its N-th call: again
            got = h.session(["-e", "trace=" + name, "-e", "inject=%s:error=%s:when=%d" % (name, errno, n)], trace)
            if injected(trace):
                break
        wrong = smtpd_wrong(*got) + ([] if injected(trace) else ["nothing injected"])
        return ["%s #%d %s: %s; %r" % (name, n, errno, "; ".join(wrong), got)] if wrong else []

    failures = sweep(homes, cases, one)
    assert failures == [], "%d of %d faulted sessions went wrong:\n%s" % (len(failures), len(cases), "\n".join(failures))


# -- 3. qmail-lspawn's mailbox lookup --------------------------------------------------------------

class MysqlSpawn(Spawn):
    """test_faults_lspawn's Spawn of a virtual-domain recipient, its users database a MariaDB one
    (emptied for each run)."""

    def __init__(self, base, db):
        super().__init__(base, "usersdb", "fork", {"usersdb": usersdb_line(db.name)})
        self.db = db

    def check_again(self, code, reports, err):
        """Delivery 0 (faulted) K or Z, never D; delivery 2 after it K: the database reopened;
        the mailbox holds one message per K; exit 0, no traceback or bug line."""
        said = err.decode("utf-8", "replace")
        kinds = {r.delnum: r.kind for r in reports}
        new = os.listdir(os.path.join(self.box, "Maildir", "new"))
        problems = []
        if code != 0 or "Traceback" in said or "internal bug" in said:
            problems.append("exit %d, %r" % (code, said[-300:]))
        if sorted(kinds) != [0, 2] or kinds[0] not in (b"K", b"Z") or kinds[2] != b"K":
            problems.append("reports %r" % reports)
        elif len(new) != list(kinds.values()).count(b"K"):
            problems.append("%d messages in new/ for %r" % (len(new), reports))
        return problems

    def make(self):
        for (table,) in self.db.execute("SHOW TABLES"):
            self.db.execute("DELETE FROM `%s`" % table)        # (DROP TABLE and CREATE: slower)
        home, env = super().make()
        env.update(NO_CA)
        return home, env


def reconnect(home):
    """control/usersdb changed: qmail-lspawn reopens the database for the next delivery."""
    path = os.path.join(home, "control", "usersdb")
    t = int(time.time() * 1e9) + 10 ** 9
    os.utime(path, ns=(t, t))


@pytest.mark.skipif(**ROOT_ONLY)
def test_lspawn_mailbox_lookup_in_mysql_every_socket_fault_is_k_or_z(databases):
    F.need_strace()
    base = tempfile.mkdtemp(prefix="qmailpy-mysql-lspawn-")
    os.chmod(base, 0o755)           # the mailbox owner (nobody) enters it
    try:
        spawns = [MysqlSpawn(os.path.join(base, "s%d" % i), databases()) for i in range(4)]
        cases = []
        for fresh in (True, False):
            trace = os.path.join(base, "good%d.trace" % fresh)
            got = spawns[0].run(trace=trace, between=reconnect if fresh else None, calls=",".join(CALLS))
            assert spawns[0].check(*got, ("", "", 0)) == [] and got[1][0].kind == b"K", got
            with open(trace) as f:
                text = f.read()
            main = lspawn_calls(text)
            cases += [(fresh, name, n, errno) for name, n in main for errno in ERRNOS.get(name, ("EIO",))
                      if errno != "EAGAIN"]
        covered = {(fresh, name) for fresh, name, _, _ in cases}
        assert {(True, c) for c in CALLS} | {(False, c) for c in ("poll", "sendto", "recvfrom")} <= covered, covered

        def one(spawn, case):
            fresh, name, n, errno = case
            trace = spawn.base + ".trace"
            for _ in range(3):          # a run that ended before its N-th call: again
                got = spawn.run((name, errno, n), trace, reconnect if fresh else None, name, again=True)
                if injected(trace):
                    break
            problems = spawn.check_again(*got) + ([] if injected(trace) else ["nothing injected"])
            return ["%s %s #%d %s: %s" % ("new" if fresh else "kept", name, n, errno, "; ".join(problems))] \
                if problems else []

        failures = sweep(spawns, cases, one)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert failures == [], "%d of %d faulted deliveries went wrong:\n%s" % (len(failures), len(cases),
                                                                             "\n".join(failures))


def lspawn_calls(text):
    """[(name, n)] of qmail-lspawn's own calls (strace -f: the first pid's) on its MariaDB socket
    that the sweep fails (swept())."""
    from test_faults_local import calls
    counts, out, main = {}, [], None
    for pid, name, args, result in calls(text):
        main = pid if main is None else main
        if pid != main:
            continue
        counts[name] = counts.get(name, 0) + 1
        if swept(name, args, result):
            out.append((name, counts[name]))
    return out
