"""qmail-send's log as qmailanalog reads it: a real run through matchup (tests/matchup.py).

One run of bin/qmail-send (stopped and started again halfway, as an admin's log
holds several) with local and remote successes, deferrals that turn into failures
when the message outlives queuelifetime, a bounce, a double bounce that bounces
(triple bounce): every message and delivery must be matched, none left over, and
every line must have one of qmail-send's shapes.
"""
import re
import signal

from matchup import run
from test_send_support import Send, inject, scratch  # noqa: F401 (scratch: fixture)

MSG = b"From: alice@remote.example\nTo: joe@localhost\nSubject: hello\n\nbody line\n"
SCALE = "1000"           # QMAILPY_TIMESCALE: retries within a second or two
LIFETIME = "3000"        # virtual seconds: 3 real seconds, then a deferral is a failure

# qmail-send.c's lines (qmail-log(5)); the texts of qmail-send's own fields are logsafe()
SAFE = r"[!-$&-~]"       # bytes 33..126 without '%'
SHAPES = [
    r"status: local \d+/\d+ remote \d+/\d+( exitasap)?",
    r"status: exiting",
    r"status: qmail-todo stop processing asap",
    r"new msg \d+",
    r"info msg \d+: bytes \d+ from <%s*> qp \d+ uid \d+" % SAFE,
    r"starting delivery \d+: msg \d+ to (local|remote) %s+" % SAFE,
    r"delivery \d+: (success|failure|deferral): %s*" % SAFE,
    r"bounce msg \d+ qp \d+",
    r"end msg \d+",
    r"triple bounce: discarding bounce/\d+",
]


def stamped(lines, start):
    """multilog t's first field: one distinct TAI64N label per line, in order."""
    return ["@4000000000000000%08x %s" % (start + i, ln) for i, ln in enumerate(lines)]


def test_matchup_matches_every_message_and_delivery(scratch):
    scratch.control("queuelifetime", LIFETIME)
    scratch.control("doublebounceto", "fail-postmaster")
    scratch.control("doublebouncehost", "localhost")
    first = inject(scratch.home, MSG, "alice@remote.example",
                   ["joe@localhost", "bob@far.example", "fail-one@localhost",
                    "defer-two@far.example", "defer-three@localhost"])
    second = inject(scratch.home, MSG, "fail-sender@far.example", ["fail-four@localhost"])
    send = Send(scratch, QMAILPY_TIMESCALE=SCALE)
    send.wait_line(r"^delivery \d+: deferral: ", count=2)
    assert send.stop() == 0
    send2 = Send(scratch, QMAILPY_TIMESCALE=SCALE)
    send2.wait_line(r"^end msg %d$" % first, timeout=60)
    send2.wait_for(lambda: any(ln.startswith("triple bounce: ") for ln in send.lines() + send2.lines()),
                   timeout=60, what="the triple bounce")
    send2.wait_for(lambda: scratch.queue_files() == [], timeout=60, what="an empty queue")
    send2.proc.send_signal(signal.SIGALRM)       # nothing is left to do: an idle moment
    assert send2.stop() == 0
    lines = send.lines() + send2.lines()

    odd = [ln for ln in lines if not any(re.fullmatch(s, ln) for s in SHAPES)]
    assert odd == []

    out, pending = run(stamped(lines, 0))
    assert pending == []
    unknown = [ln for ln in out if ln.startswith("?")]
    # qmail's own bounce lines are not matchup's: it passes them on with "? ", as for qmail
    assert all(re.fullmatch(r"\? \S+ (bounce msg|triple bounce:) .*", ln) for ln in unknown), unknown
    assert len(unknown) == 4                     # 3 bounces (first, second, its double) + 1 triple
    dlines = [ln.split(" ") for ln in out if ln.startswith("d ")]
    mlines = [ln.split(" ") for ln in out if ln.startswith("m ")]
    assert all(d[6] != "?" for d in dlines), dlines       # every delivery found its message
    assert len(mlines) == 5                      # first, second, 2 bounces, 1 double bounce
    by_sender = {}
    for m in mlines:
        by_sender.setdefault(m[7], []).append(m)
    [m1] = by_sender["<alice@remote.example>"]
    numk, numd, numz = int(m1[4]), int(m1[5]), int(m1[6])
    assert (numk, numd) == (2, 3) and numz >= 2, m1
    [m2] = by_sender["<fail-sender@far.example>"]
    assert (m2[4], m2[5], m2[6]) == ("0", "1", "0")
    assert sorted((m[4], m[5], m[6]) for m in by_sender["<>"]) == [("0", "1", "0"), ("1", "0", "0")]
    [m3] = by_sender["<#@[]>"]
    assert (m3[4], m3[5], m3[6]) == ("0", "1", "0")
    started = [ln for ln in lines if ln.startswith("starting delivery")]
    assert len(dlines) == len(started)
    kinds = sorted(d[1] for d in dlines if d[6] == "<alice@remote.example>")
    assert kinds.count("k") == 2 and kinds.count("d") == 3
    recips = {d[7] for d in dlines if d[6] == "<alice@remote.example>"}
    assert recips == {"local.joe@localhost", "remote.bob@far.example", "local.fail-one@localhost",
                      "remote.defer-two@far.example", "local.defer-three@localhost"}


def test_a_backslash_in_an_address_is_logged_once_as_qmail_logs_it(scratch):
    """logsafe() leaves '\\' alone (33..126): qmail-send writes `<a\\b@...>`, one backslash."""
    msgid = inject(scratch.home, MSG, "a\\b@remote.example", ["back\\slash@far.example"])
    send = Send(scratch)
    send.wait_line(r"^end msg %d$" % msgid)
    assert send.stop() == 0
    lines = send.lines()
    assert any(re.fullmatch(r"info msg %d: bytes \d+ from <a\\b@remote\.example> qp \d+ uid \d+" % msgid, ln)
               for ln in lines), lines
    assert any(re.fullmatch(r"starting delivery \d+: msg %d to remote back\\slash@far\.example" % msgid, ln)
               for ln in lines), lines


def test_shutdown_lines_are_ext_todos(scratch):
    """svc -d: qmail-send tells qmail-todo X; qmail-todo.c's sigterm() logs its stop line once,
    before qmail-send's `status: exiting`."""
    send = Send(scratch)
    send.wait_line(r"^status: local 0/10 remote 0/20$")
    assert send.stop() == 0
    lines = send.lines()
    assert lines.count("status: qmail-todo stop processing asap") == 1, lines
    assert lines.index("status: qmail-todo stop processing asap") < lines.index("status: exiting") == len(lines) - 1
