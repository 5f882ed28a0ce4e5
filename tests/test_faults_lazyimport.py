"""The third-party modules qmail-smtpd and qmail-remote import on first use (dnspython for DNS
lookups, pyspf for the SPF check, pymysql for a MySQL users database), with their files
failing to open or to read mid-session: strace (-P every file of the module's package and
its __pycache__) fails every openat, or read, from its N-th on (`when=N+`), for N spread over
the occurrences a good run shows (the first: not even the .pyc opens; later: a package half
imported, the next file failing).

Outcome (qmail's rule: trouble on our side is temporary): each reply is the good run's, or a
4xx for that command (451: SPF lookup failure at spfbehavior 3, DNS temporary failure for
mfdnscheck, chkuser's 451; 421 and the end of the session for one of qmailpy's own modules),
or the 503 that follows a refused MAIL; never a 250 where the good
run refused (a check skipped), never another 5xx, never a bug line or a session that ends
without its replies. qmail-remote (exec'd, as $QMAILREMOTE): its good report, or a Z.
"""
import glob
import importlib.util
import os
import re
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor

from conftest import ROOT, program
from dnsserver import dns_server  # noqa: F401 (fixture)
from qmailpy.queue.layout import create_queue
from test_faults_local import strace_ok

# where the programs load them from (the launchers' site-packages), symlinks resolved: strace -P
# matches the real path
SITE = os.path.dirname(os.path.realpath(importlib.util.find_spec("spf").origin))
DIALOGUE = b"HELO c.example\r\nMAIL FROM:<x@fail.example>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nQUIT\r\n"
ZONES = {"fail.example": {"TXT": ["v=spf1 -all"], "MX": [(10, "mx.fail.example")]},
         "mx.fail.example": {"A": ["192.0.2.1"]},
         "example.com": {"MX": [(10, "mx.example.com")]}, "mx.example.com": {"A": ["127.0.0.2"]}}
OWN = os.path.realpath(ROOT)                # qmailpy's own modules a check loads on first use
SMTPD = {  # module: (its files' globs, under SITE unless absolute; controls); good replies below
    "spf": (["spf.py", "__pycache__/spf.*"],
            {"spfbehavior": "3", "mfdnscheck": "1"}),
    "dns": (["dns/*.py", "dns/__pycache__/*", "dns/rdtypes/*.py", "dns/rdtypes/__pycache__/*",
             "dns/rdtypes/*/*.py", "dns/rdtypes/*/__pycache__/*"],
            {"spfbehavior": "3", "mfdnscheck": "1"}),
    "pymysql": (["pymysql/*.py", "pymysql/__pycache__/*", "pymysql/*/*.py", "pymysql/*/__pycache__/*"],
                {"virtualdomains": "example.org:example.org", "userchk": "1",
                 "usersdb": "127.0.0.1|1|u|p|vpopmail"}),    # port 1: refused, the good run's 451
    "qmailpy.policy.spf": ([OWN + "/qmailpy/policy/spf*.py", OWN + "/qmailpy/policy/__pycache__/spf*"],
                           {"spfbehavior": "3", "mfdnscheck": "1"}),
}
GOOD = {"spf": ["220 test.example ESMTP", "250 test.example", "250 ok", "550 *", "550 *", "221 test.example"],
        "pymysql": ["220 test.example ESMTP", "250 test.example", "250 ok", "451 *", "451 *", "221 test.example"]}
GOOD["dns"] = GOOD["qmailpy.policy.spf"] = GOOD["spf"]
POINTS = 4                                  # values of N per (module, call)


def files(globs):
    found = sorted({p for g in globs for p in glob.glob(os.path.join(SITE, g))})
    assert found, globs
    return found


def home_for(base, controls):
    home = os.path.join(base, "qmail")
    os.makedirs(os.path.join(home, "control"))
    for name, value in dict({"me": "test.example", "rcpthosts": "example.org"}, **controls).items():
        with open(os.path.join(home, "control", name), "w") as f:
            f.write(value + "\n")
    create_queue(home)
    return home


def strace(paths, call, when, trace):
    cmd = ["strace", "-f", "-qq", "-o", trace, "-e", "trace=" + call]
    if when:
        cmd += ["-e", "inject=%s:error=EIO:when=%d+" % (call, when)]
    for p in paths:
        cmd += ["-P", p]
    return cmd


def smtpd(base, module, call, when, dns):
    """(replies, log, exit code, trace) of one session."""
    globs, controls = SMTPD[module]
    home = home_for(base, controls)
    trace = os.path.join(base, "trace")
    env = dict(os.environ, QMAILHOME=home, TCPREMOTEIP="192.0.2.10", TCPLOCALIP="127.0.0.1",
               TCPLOCALHOST="localhost", PROTO="TCP", QMAILPY_SINGLEUSER="1", **dns.environ())
    ours, theirs = socket.socketpair()
    with ours:
        p = subprocess.Popen(strace(files(globs), call, when, trace) + [program("qmail-smtpd")],
                             stdin=theirs, stdout=theirs, stderr=subprocess.PIPE, env=env)
        theirs.close()
        ours.sendall(DIALOGUE)
        ours.settimeout(60)
        with ours.makefile("rb") as replies:
            out = replies.read()            # to the end of the session
    err = p.stderr.read().decode("utf-8", "replace")
    code = p.wait(60)
    with open(trace) as f:
        traced = f.read()
    return [line for line in out.decode("utf-8", "replace").split("\r\n") if line], err, code, traced


def judge_smtpd(replies, good, err):
    from dialogue import wildmatch
    problems = []
    if "Traceback" in err or "internal bug" in err:
        problems.append("a bug")
    if len(replies) != len(good) and not (replies and replies[-1].startswith("421 ")):
        problems.append("%d replies for %d" % (len(replies), len(good)))
    mail_refused = len(replies) > 2 and replies[2].startswith("4")
    for got, want in zip(replies, good):
        if not (wildmatch(want, got) or got.startswith("4") or (got.startswith("503 ") and mail_refused)):
            problems.append("%r where the good run said %r" % (got, want))
    return problems


def remote(base, call, when, dns, host):
    """(exit code, stdout, stderr, trace) of bin/qmail-remote delivering to host by DNS."""
    home = home_for(base, {"me": "test.example", "timeoutconnect": "2", "timeoutremote": "5"})
    os.makedirs(os.path.join(home, "queue", "lock"), exist_ok=True)
    trace = os.path.join(base, "trace")
    mess = os.path.join(base, "mess")
    with open(mess, "wb") as f:
        f.write(b"Subject: x\n\nbody\n")
    env = dict(os.environ, QMAILHOME=home, **dns.environ())
    with open(mess, "rb") as fd0:
        p = subprocess.run(strace(files(SMTPD["dns"][0]), call, when, trace) +
                           [program("qmail-remote"), host, "a@b.example", "c@" + host],
                           stdin=fd0, capture_output=True, timeout=60, env=env)
    with open(trace) as f:
        traced = f.read()
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace"), traced


def opens(trace, call):
    return len(re.findall(r"^(?:\d+ +)?%s\(" % call, trace, re.M))


def spread(count):
    """Up to POINTS values of N in 1..count: the first, the last and some between."""
    step = max(1, count // (POINTS - 1))
    return sorted({1, count} | set(range(1, count + 1, step)))[:POINTS + 1]


def test_a_module_qmail_smtpd_cannot_load_is_a_temporary_answer(tmp_path, dns_server):
    base = str(tmp_path)
    strace_ok()
    dns_server.zones = ZONES
    jobs = []
    for module in SMTPD:
        for call in ("openat", "read"):
            replies, err, code, traced = smtpd(os.path.join(base, "good-%s-%s" % (module, call)), module, call, 0,
                                               dns_server)
            assert judge_smtpd(replies, GOOD[module], err) == [] and code == 0, (module, replies, err)
            assert [r[:3] for r in replies] == [g[:3] for g in GOOD[module]], (module, replies)
            count = opens(traced, call)
            assert count >= 1, (module, call, traced[-2000:])
            jobs += [(module, call, n) for n in spread(count)]

    def one(k, module, call, n):
        replies, err, code, traced = smtpd(os.path.join(base, "run%d" % k), module, call, n, dns_server)
        problems = judge_smtpd(replies, GOOD[module], err)
        if "(INJECTED)" not in traced:
            problems.append("the fault was never injected")
        return problems and ["%s %s from #%d: %s; replies %r; log %r" % (module, call, n, "; ".join(problems),
                                                                          replies, err[-600:])]
    with ThreadPoolExecutor(4) as ex:
        failed = [p for got in ex.map(lambda job: one(*job), [(k,) + j for k, j in enumerate(jobs)]) for p in got]
    assert not failed, "%d of %d runs:\n%s" % (len(failed), len(jobs), "\n".join(failed))


def test_qmail_remote_that_cannot_load_dnspython_defers(tmp_path, dns_server):
    base = str(tmp_path)
    strace_ok()
    dns_server.zones = ZONES
    jobs, good = [], {}
    for host in ("example.com", "nx.example"):
        for call in ("openat", "read"):
            code, out, err, traced = remote(os.path.join(base, "good-%s-%s" % (host, call)), call, 0, dns_server, host)
            assert code == 0 and err == "", (host, code, out, err)
            good[host] = out
            jobs += [(host, call, n) for n in spread(opens(traced, call))]
    assert good["nx.example"].startswith(b"DSorry, I couldn't find any host named nx.example"), good
    assert good["example.com"].startswith(b"Z"), good

    def one(k, host, call, n):
        code, out, err, traced = remote(os.path.join(base, "run%d" % k), call, n, dns_server, host)
        problems = []
        if "(INJECTED)" not in traced:
            problems.append("the fault was never injected")
        if code != 0 or err or not (out == good[host] or out.startswith(b"Z") and out.endswith(b"\0")):
            problems.append("exit %d, report %r, stderr %r" % (code, out, err[-400:]))
        return problems and ["%s %s from #%d: %s" % (host, call, n, "; ".join(problems))]
    with ThreadPoolExecutor(4) as ex:
        failed = [p for got in ex.map(lambda job: one(*job), [(k,) + j for k, j in enumerate(jobs)]) for p in got]
    assert not failed, "%d of %d runs:\n%s" % (len(failed), len(jobs), "\n".join(failed))


TWICE = r"""
import os, sys
from qmailpy.dns.resolver import Resolver
resolver = Resolver(dict(os.environ))
print(" ".join("%s/%s" % (a.status, a.reason) for a in (resolver.mx("example.com"), resolver.mx("example.com"))))
"""


def test_a_package_directory_python_could_not_look_at_is_looked_at_again(dns_server, tmp_path):  # noqa: F811
    """One EIO on the stat of a dnspython package directory (dns/, dns/rdtypes/, ...) the first
    time a lookup loads it: Python remembers that directory as having no finder, and every
    later import from it fails in the same process. In a long-running one (a qmail-tcpserver
    worker serving session after session) that was every later lookup "noload" until the
    worker ended. The failed lookup is soft; the next one must load dnspython and answer."""
    strace_ok()
    dns_server.zones = ZONES
    dirs = sorted({os.path.dirname(p) for p in files(SMTPD["dns"][0]) if "__pycache__" not in p})
    env = dict(os.environ, PYTHONPATH=str(ROOT), **dns_server.environ())
    python = os.path.join(ROOT, ".venv", "bin", "python3")

    def traced(*inject):
        out = os.path.join(tmp_path, "trace.%s" % (inject[1].rsplit("=", 1)[1] if inject else "good"))
        argv = ["strace", "-qq", "-o", out, "-e", "trace=newfstatat,stat,statx"]
        for d in dirs:
            argv += ["-P", d]
        r = subprocess.run(argv + list(inject) + [python, "-c", TWICE], capture_output=True, text=True, env=env,
                           timeout=60)
        with open(out) as f:
            return r, f.read()
    _, good = traced()
    count = len([line for line in good.splitlines() if line and not line.startswith("+++")])
    assert count >= 2, good

    def one(n):
        return n, traced("-e", "inject=newfstatat,stat,statx:error=EIO:when=%d" % n)
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(one, range(1, count + 1)))
    hit = 0
    for n, (r, trace) in runs:
        assert r.returncode == 0, (n, r.stderr[-2000:])
        first, second = r.stdout.split()
        assert second == "ok/", (n, r.stdout, [ln for ln in trace.splitlines() if "INJECTED" in ln])
        hit += "(INJECTED)" in trace
    assert hit == count
