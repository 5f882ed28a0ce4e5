"""The OpenSPF test suites (tests/data/spf/: RFC 7208 release 2014.04, RFC 4408 release 2009.10)
run through qmail-smtpd, as a receiver would meet them.

Each scenario's zonedata is served by tests/dnsserver.py on 127.0.0.1 (TIMEOUT: the types not
listed before it are never answered; SPF records go out as type 99 and, as the suite's
drivers do, as TXT where the name has no TXT of its own). Every test is one SMTP session at
spfbehavior 1 whose result is the first word of the queued message's Received-SPF line
(qmail-spf's words: unknown is permerror, error is temperror); a test with an explanation
gets a second session at spfbehavior 3 whose RCPT reply is `550 <explanation> (#5.7.1)`
(control/spfexp is "DEFAULT", the suite's name for the receiver's own text). All tests run
in process against Session; a representative part also runs through tcpserver and the
real qmail-smtpd and qmail-queue (test_through_tcpserver).

A test that qmailpy answers otherwise on purpose is listed in DIFFERENCES with its reason
and what qmailpy gives instead, which is then what the test checks; docs/spf.md lists the
same differences.
"""
import contextlib
import os
import socket
import subprocess

import pytest
import yaml

from conftest import ROOT, Home, program
from dnsserver import DNSServer, dns_server  # noqa: F401  (fixture)
from qmailpy.ctl.reader import Controls
from qmailpy.queue.layout import create_queue
from qmailpy.smtpd.config import SmtpdConfig
from qmailpy.smtpd.driver import Conversation
from test_dialogues import TCP_ENV, FakeServices, free_port, queued_messages
from test_e2e_support import wait_listening


@pytest.fixture(autouse=True)
def fresh_query_class(monkeypatch):
    """Each test builds qmailpy.policy.spf's pyspf Query class anew: a class cached by an earlier
    test would hide a change to its methods (make mutate runs each mutant in a fork of a
    process that already built it)."""
    from qmailpy.policy import spf as spf_module
    monkeypatch.setattr(spf_module, "_Query", None)

DATA = os.path.join(ROOT, "tests", "data", "spf")
SUITES = ("rfc7208", "rfc4408")
WORDS = {"pass": "pass", "fail": "fail", "softfail": "softfail", "neutral": "neutral", "none": "none",
         "unknown": "permerror", "error": "temperror"}        # qmail-spf's word -> the suite's
RECEIVER = "receiver.qmailpy.test"
DNSTIMEOUT = "0.2"          # a TIMEOUT answer costs 2 tries of this (DNSCACHEIP names one server)

# (suite, test) -> (why qmailpy differs, what it gives instead: result and/or explanation)
NOLOCALPART = ("qmail-smtpd reads MAIL FROM:<@example.net> as a source route (RFC 5321 4.1.2) and so "
               "as the null sender: the HELO name is checked (mail.example.net, no record)",
               {"result": "none", "explanation": None})
RC5_LINES = "qmail-spf rc5: an exp= name with several TXT records gives an explanation of several lines " \
    "(a multi-line 550 reply), where RFC 7208 6.2 ignores the exp="
FOLLY = (RC5_LINES, {"explanation": "Answer a fool according to his folly.\n"
                                    "Do not answer a fool according to his folly."})
ONE_TWO = (RC5_LINES, {"explanation": "one\ntwo"})
DIFFERENCES = {
    ("rfc7208", "nolocalpart"): NOLOCALPART,
    ("rfc4408", "nolocalpart"): NOLOCALPART,
    ("rfc7208", "exp-multiple-txt"): FOLLY,
    ("rfc4408", "exp-multiple-txt"): FOLLY,
    ("rfc7208", "two-exp-records"): ONE_TWO,
    ("rfc4408", "two-exp-records"): ONE_TWO,
}


def load(suite):
    """[(scenario index, test name, test, zonedata)] of one suite file."""
    out, seen = [], set()
    with open(os.path.join(DATA, suite + "-tests.yml"), "rb") as f:
        for index, scenario in enumerate(yaml.safe_load_all(f)):
            for name, test in scenario["tests"].items():
                assert name not in seen, "%s: test %s twice" % (suite, name)
                seen.add(name)
                out.append((index, name, test, scenario["zonedata"]))
    return out


TESTS = {suite: load(suite) for suite in SUITES}


def zones_of(zonedata):
    """tests/dnsserver.py zones for a scenario's zonedata."""
    zones = {}
    for owner, records in zonedata.items():
        entry, spf_as_txt, answered, timeout = {}, [], set(), False
        has_txt = any(isinstance(r, dict) and "TXT" in r for r in records)
        for record in records:
            if record == "TIMEOUT":
                timeout = True
                continue
            (rtype, value), = record.items()
            if value == "NONE":             # no such record (and no TXT made from SPF records)
                continue
            if not timeout:
                answered.add(rtype)
            if rtype in ("TXT", "SPF"):
                value = tuple(value) if isinstance(value, list) else value
                if rtype == "SPF" and not has_txt:
                    spf_as_txt.append(value)
            elif rtype == "MX":
                value = (value[0], value[1])
            elif rtype == "CNAME":
                entry["CNAME"] = value
                continue
            entry.setdefault(rtype, []).append(value)
        if spf_as_txt:
            entry["TXT"] = spf_as_txt       # generated last: after a TIMEOUT, as the suite's own drivers
        if timeout:
            for rtype in list(entry):
                if rtype not in answered:
                    entry[rtype] = "TIMEOUT"
            entry["*"] = "TIMEOUT"
        zones[owner] = entry
    return zones


def expected(suite, name, test):
    """(acceptable result words, explanation or None) that qmailpy must give."""
    want = DIFFERENCES.get((suite, name), ("", {}))[1]
    result = want.get("result", test["result"])
    results = result if isinstance(result, list) else [result]
    return results, want.get("explanation", test.get("explanation"))


def commands(test):
    sender = test["mailfrom"]
    return ["HELO %s" % test["helo"], "MAIL FROM:<%s>" % sender, "RCPT TO:<postmaster@example.org>"]


def reply_text(lines):
    """The explanation of a 550 reply's lines, without the code and qmail's (#5.7.1)."""
    assert all(line.startswith(("550-", "550 ")) for line in lines), lines
    assert lines[-1].endswith(" (#5.7.1)"), lines
    text = "\n".join(line[4:] for line in lines)
    return text[:-len(" (#5.7.1)")]


def spf_word(message):
    """The result word of a queued message's Received-SPF line, in the suite's terms."""
    for line in message.split(b"\n"):
        if line.startswith(b"Received-SPF: "):
            return WORDS[line.split()[1].decode()]
    raise AssertionError("no Received-SPF line in %r" % message[:300])


@pytest.fixture(scope="module")
def dns():
    server = DNSServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def qmail_home(tmp_path_factory):
    home = Home(tmp_path_factory.mktemp("spfsuite") / "qmail")
    home.control("me", "test.example\n")
    home.control("rcpthosts", "example.org\n")
    home.control("spfexp", "DEFAULT\n")
    create_queue(home.root)
    return home


def in_process(home, dns, test, behavior):
    """The replies of one session (its messages in services.queued)."""
    env = dict(TCP_ENV, TCPREMOTEIP=test["host"], TCPLOCALHOST=RECEIVER, SPFBEHAVIOR=str(behavior),
               DNSTIMEOUT=DNSTIMEOUT, **dns.environ())
    controls = Controls(home.root, env)
    services = FakeServices(controls)
    session = Conversation(SmtpdConfig(controls, env), services)
    session.start()
    replies = [session.feed(line.encode() + b"\r\n").decode("utf-8", "replace") for line in commands(test)]
    if behavior == 1:
        assert replies[1:] == ["250 ok\r\n"] * 2, replies
        replies.append(session.feed(b"DATA\r\n").decode())
        replies.append(session.feed(b"Subject: spf\r\n\r\nx\r\n.\r\n").decode())
        assert replies[-2] == "354 go ahead\r\n" and replies[-1].startswith("250 ok "), replies
    return replies, services


def cases(select=None):
    return [pytest.param(suite, name, id="%s-%s" % (suite, name))
            for suite in SUITES for index, name, test, zonedata in TESTS[suite]
            if select is None or select(suite, name, test)]


def find(suite, name):
    for index, n, test, zonedata in TESTS[suite]:
        if n == name:
            return test, zonedata
    raise KeyError(name)


@pytest.mark.parametrize("suite,name", cases())
def test_in_process(qmail_home, dns, suite, name):
    test, zonedata = find(suite, name)
    dns.zones = zones_of(zonedata)
    results, explanation = expected(suite, name, test)
    _, services = in_process(qmail_home, dns, test, 1)
    assert spf_word(services.queued[0][1]) in results
    if explanation is not None:
        replies, _ = in_process(qmail_home, dns, test, 3)
        rcpt = replies[2].split("\r\n")[:-1]
        assert reply_text(rcpt) == explanation


def test_differences_are_real_and_documented():
    """Every listed difference names a test of its suite, and docs/spf.md names it too."""
    with open(os.path.join(ROOT, "docs", "spf.md")) as f:
        doc = f.read()
    for (suite, name), (reason, _) in DIFFERENCES.items():
        find(suite, name)
        assert reason and "`%s`" % name in doc, name


# -- through tcpserver and the real programs

EXTRA = {"control-char-policy", "badip4", "null-text", "txttimeout", "alltimeout", "macro-mania-in-domain",
         "ptr-cname-loop", "nolocalpart", "exp-multiple-txt"}


def through_tcpserver(suite, name, test):
    """The representative part, of the RFC 7208 suite: each scenario's first test, every test
    with an explanation, and the tests of the failures this suite was brought in for."""
    if suite != "rfc7208":
        return False
    first = [t for t in TESTS[suite] if t[1] == name][0][0]
    firsts = {index: n for index, n, _, _ in reversed(TESTS[suite])}
    return firsts[first] == name or "explanation" in test or name in EXTRA


TCP_CASES = cases(through_tcpserver)


def source_ip(behavior, k):
    return "127.%d.%d.%d" % (behavior, k // 250, k % 250 + 1)


@pytest.fixture(scope="module")
def smtpd(qmail_home, dns, tmp_path_factory):
    """tcpserver + bin/qmail-smtpd on 127.0.0.1; each test connects from its own 127.B.x.y,
    whose tcprules line sets the suite's client address and spfbehavior B."""
    rules = []
    for k, param in enumerate(TCP_CASES):
        suite, name = param.values
        test, _ = find(suite, name)
        for behavior in (1, 3):
            rules.append('%s:allow,TCPREMOTEIP="%s",SPFBEHAVIOR="%d"\n' % (source_ip(behavior, k), test["host"],
                                                                          behavior))
    rules.append(":deny\n")
    cdb = str(tmp_path_factory.mktemp("spfrules") / "tcp.cdb")
    subprocess.run(["tcprules", cdb, cdb + ".tmp"], input="".join(rules).encode(), check=True)
    env = qmail_home.env(DNSTIMEOUT=DNSTIMEOUT, **dns.environ())
    with running_smtpd(env, "-x", cdb) as port:
        yield port


@contextlib.contextmanager
def running_smtpd(env, *args, program_args=()):
    """tcpserver [args] + bin/qmail-smtpd (via `program_args`, e.g. env VAR=...) with the real
    qmail-queue, on a free port of 127.0.0.1 (yielded), stopped at the end."""
    port = free_port()
    env = dict(env, QMAILQUEUE=program("qmail-queue"))
    server = subprocess.Popen(["tcpserver", "-q", "-H", "-R", "-l", RECEIVER, *args, "127.0.0.1", str(port),
                               *program_args, program("qmail-smtpd")], env=env)
    try:
        wait_listening("127.0.0.1", port, server, what="tcpserver")
        yield port
    finally:
        server.terminate()
        server.wait(10)


class Client:
    """An SMTP client socket from a given source address, reading whole replies."""

    def __init__(self, port, source):
        self.sock = socket.socket()
        self.sock.bind((source, 0))
        self.sock.settimeout(60)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""

    def reply(self, data=None):
        """The lines of one SMTP reply (after sending `data`, if given)."""
        if data is not None:
            self.sock.sendall(data)
        lines = []
        while not lines or lines[-1][3:4] == "-":
            while b"\r\n" not in self.buf:
                got = self.sock.recv(65536)
                assert got, "connection closed after %r" % lines
                self.buf += got
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode("utf-8", "replace"))
        return lines


def over_tcp(port, test, behavior, k):
    client = Client(port, source_ip(behavior, k))
    with client.sock:
        assert client.reply()[0].startswith("220 ")
        replies = [client.reply((line + "\r\n").encode()) for line in commands(test)]
        if behavior == 1:
            assert replies[1:] == [["250 ok"]] * 2, replies
            assert client.reply(b"DATA\r\n") == ["354 go ahead"]
            assert client.reply(b"Subject: spf\r\n\r\nx\r\n.\r\n")[0].startswith("250 ok ")
        client.reply(b"QUIT\r\n")
    return replies


@pytest.mark.parametrize("suite,name", TCP_CASES)
def test_through_tcpserver(qmail_home, dns, smtpd, suite, name):
    test, zonedata = find(suite, name)
    k = [p.values for p in TCP_CASES].index((suite, name))
    dns.zones = zones_of(zonedata)
    results, explanation = expected(suite, name, test)
    before = len(queued_messages(qmail_home))
    over_tcp(smtpd, test, 1, k)
    messages = queued_messages(qmail_home)
    assert len(messages) == before + 1
    assert spf_word(messages[-1][1]) in results
    if explanation is not None:
        rcpt = over_tcp(smtpd, test, 3, k)[2]
        assert reply_text(rcpt) == explanation


# -- time limits: a name server that never answers

NEVER = {"never.example": "DROP"}
SLOW_DNS = "30"             # the largest $DNSTIMEOUT: 2 rounds x 3 servers x 30 s = 180 s per lookup unbounded


def test_check_ends_within_its_limit_in_process(qmail_home, dns_server, monkeypatch):
    """Every lookup is cut to what is left of QUERYTIME (1 s here): one try, then error."""
    from qmailpy.policy import spf
    monkeypatch.setattr(spf, "QUERYTIME", 1)
    dns_server.zones = NEVER
    where = "127.0.0.1:%d" % dns_server.port
    env = dict(TCP_ENV, TCPREMOTEIP="192.0.2.1", SPFBEHAVIOR="2", DNSTIMEOUT=SLOW_DNS,
               DNSCACHEIP=" ".join([where] * 3))
    controls = Controls(qmail_home.root, env)
    session = Conversation(SmtpdConfig(controls, env), FakeServices(controls))
    session.start()
    assert session.feed(b"HELO c.example\r\n") == b"250 test.example\r\n"
    assert session.feed(b"MAIL FROM:<joe@never.example>\r\n") == b"451 SPF lookup failure (#4.3.0)\r\n"
    assert dns_server.queries == [("never.example", "TXT", "udp")]


def test_check_ends_within_its_limit_through_tcpserver(qmail_home, dns_server, tmp_path):
    """The real program, QUERYTIME's 20 s: the MAIL reply is the 451 after one cut-short try."""
    dns_server.zones = NEVER
    where = "127.0.0.1:%d" % dns_server.port
    env = qmail_home.env(DNSTIMEOUT=SLOW_DNS, SPFBEHAVIOR="2", DNSCACHEIP=" ".join([where] * 3))
    with running_smtpd(env, program_args=("env", "TCPREMOTEIP=192.0.2.1")) as port:
        client = Client(port, "127.0.0.1")
        with client.sock:
            client.sock.settimeout(90)          # a bound for the test, not a measurement
            assert client.reply()[0].startswith("220 ")
            assert client.reply(b"HELO c.example\r\n") == ["250 test.example"]
            assert client.reply(b"MAIL FROM:<joe@never.example>\r\n") == ["451 SPF lookup failure (#4.3.0)"]
            assert client.reply(b"QUIT\r\n")[0].startswith("221 ")
    assert dns_server.queries == [("never.example", "TXT", "udp")]
