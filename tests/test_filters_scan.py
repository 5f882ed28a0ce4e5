"""qmail-queue's filter step in-process (qmailpy/filters/scan.py): who is refused, who gets which
copy, what is logged, and the exit codes, with clamd's and spamd's answers given by the test.
tests/test_filters.py runs the same decisions through qmail-queue with real clamd and spamd."""
import socket
from types import SimpleNamespace

import pytest

from qmailpy import exitcodes as X
from qmailpy.exitcodes import QueueError
from qmailpy.filters import clamd, scan, spamd, urls
from qmailpy.filters.net import ServiceError

HEAD = b"Received: (qmail 1 invoked by uid 0); 1 Jan 2026 00:00:00 -0000\n"
BODY = b"Subject: hi\n\nsee http://bad.example/x and http://bad.example/y\n"
CLAM = "/run/clamd.sock"
SPAM = "127.0.0.1:783"


class Controls:
    def __init__(self, **values):
        self.values = {"clamdsocket": CLAM, "spamdsocket": SPAM, "filtertimeout": 0, "filterfailopen": 0,
                       "badurls": 0, "badurlscommand": None, "urlscnt": 10, "spamdmaxsize": 0}
        self.values.update(values)

    def value(self, name):
        v = self.values[name]
        if isinstance(v, OSError):
            raise v
        return v


def staged(tmp_path, recipients, body=BODY):
    mess = tmp_path / "mess"
    mess.write_bytes(HEAD + body)
    return SimpleNamespace(recipients=list(recipients), mess_path=str(mess), head=HEAD, sender=b"from@example.org")


@pytest.fixture
def calls(monkeypatch):
    """Record clamd/spamd/urls calls; answers come from calls.virus / calls.spam[user]."""
    rec = SimpleNamespace(clam=[], spamd=[], reported=[], virus=None, spam={})

    def scan_file(path, address, timeout):
        rec.clam.append((path, address, timeout))
        if isinstance(rec.virus, Exception):
            raise rec.virus
        return rec.virus

    def process(message, user, address, timeout):
        rec.spamd.append((message, user, address, timeout))
        answer = rec.spam.get(user)
        if isinstance(answer, Exception):
            raise answer
        return answer or spamd.Verdict(False, 1.0, 5.0, None, b"X-Spam-Status: No\n" + message)

    monkeypatch.setattr(clamd, "scan_file", scan_file)
    monkeypatch.setattr(spamd, "process", process)
    monkeypatch.setattr(urls, "report", lambda *a: rec.reported.append(a))
    return rec


def spam_verdict(score, reject, tag=b""):
    return spamd.Verdict(True, score, 5.0, reject, b"X-Spam-Status: Yes" + tag + b"\n" + BODY)


def test_show_and_user_and_num():
    assert scan._show([b"a@x", b"b\xff@y"]) == "a@x, b\ufffd@y"
    assert scan._user(b"Ann@Example.COM") == b"ann@example.com"
    assert scan._user(bytearray(b"Ann")) == b"ann" and type(scan._user(bytearray(b"a"))) is bytes
    assert scan._user(b"") is None
    assert scan._user(b"a b") is None and scan._user(b"a\x1fb") is None
    assert scan._user(b"a!b~") == b"a!b~"
    assert scan._user(b"a\x7fb") is None and scan._user(b"a\xc3\xa9") is None
    assert scan._num(None) == "-" and scan._num(5) == "5.0" and scan._num(7.25) == "7.2"


def test_value_and_timeout():
    f = scan.Filter(Controls(filtertimeout=-3), [], [])
    assert f.timeout() == 1
    assert scan.Filter(Controls(filtertimeout=0), [], []).timeout() == 60
    assert scan.Filter(Controls(filtertimeout=None), [], []).timeout() == 60
    assert scan.Filter(Controls(filtertimeout=1), [], []).timeout() == 1
    assert scan.Filter(Controls(filtertimeout=7), [], []).timeout() == 7
    broken = scan.Filter(Controls(filtertimeout=OSError(13, "Permission denied")), [], [])
    with pytest.raises(QueueError) as e:
        broken.timeout()
    assert e.value.code == X.QQ_CONFIG == 55
    assert e.value.reason == "unable to read controls: [Errno 13] Permission denied"


def test_timeout_is_bounded_by_the_insertions_deadline():
    """Under qmail-queued (a deadline, no SIGALRM) a conversation gets what timeoutqueue leaves,
    and none is begun once it has passed: qmail-queue's 52, never a message queued late."""
    import time
    ahead = scan.Filter(Controls(filtertimeout=9), [], [], deadline=time.monotonic() + 5)
    assert 4 < ahead.timeout() <= 5
    assert scan.Filter(Controls(filtertimeout=3), [], [], deadline=time.monotonic() + 50).timeout() == 3
    passed = scan.Filter(Controls(filtertimeout=9), [], [], deadline=time.monotonic() - 1)
    with pytest.raises(QueueError) as e:
        passed.timeout()
    assert (e.value.code, e.value.reason) == (X.QQ_TIMEOUT, "timeout")


def test_clean_message_passes_all_with_one_scan(tmp_path, calls):
    log = []
    st = staged(tmp_path, [b"a@x", b"b@x"])
    f = scan.Filter(Controls(filtertimeout=9), [b"a@x"], [], log.append)
    assert f.run(st) == [([b"a@x", b"b@x"], None)]
    assert calls.clam == [(st.mess_path, (socket.AF_UNIX, CLAM), 9)] and calls.spamd == [] and log == []


def test_virus_refuses_the_checked_recipients_only(tmp_path, calls):
    calls.virus = "Eicar-Signature"
    log = []
    st = staged(tmp_path, [b"a@x", b"b@x", b"c@x"])
    f = scan.Filter(Controls(), [b"a@x", b"c@x"], [], log.append)
    assert f.run(st) == [([b"b@x"], None)]
    assert log == ["refused for a@x: virus Eicar-Signature found", "refused for c@x: virus Eicar-Signature found"]
    assert calls.reported == []                         # badurls is 0


def test_virus_for_everyone_exits_31_with_each_reason_once(tmp_path, calls):
    calls.virus = "Eicar-Signature"
    st = staged(tmp_path, [b"a@x", b"b@x"])
    with pytest.raises(QueueError) as e:
        scan.Filter(Controls(), [b"a@x", b"b@x"], []).run(st)
    assert e.value.code == X.QQ_PERM_REFUSED == 31
    assert e.value.reason == "message refused: virus Eicar-Signature found"


def test_virus_and_spam_reasons_together(tmp_path, calls):
    calls.virus = "Eicar-Signature"
    calls.spam[b"b@x"] = spam_verdict(9.0, 5.0)
    st = staged(tmp_path, [b"a@x", b"b@x"])
    with pytest.raises(QueueError) as e:
        scan.Filter(Controls(), [b"a@x"], [b"a@x", b"b@x"]).run(st)
    assert e.value.reason == "message refused: virus Eicar-Signature found; spam, score 9.0 >= reject score 5.0"
    assert [c[1] for c in calls.spamd] == [b"b@x"]      # a@x is gone before spamd


def test_badurls_reports_malware_only(tmp_path, calls):
    log = []
    st = staged(tmp_path, [b"a@x", b"b@x"])
    controls = Controls(badurls=1, badurlscommand="/bin/report", urlscnt=1, filtertimeout=8)
    calls.virus = "Heuristics.Encrypted.Zip"
    scan.Filter(controls, [b"a@x"], [], log.append).run(st)
    assert calls.reported == []
    calls.virus = "Eicar-Signature"
    scan.Filter(controls, [b"a@x"], [], log.append).run(st)
    assert calls.reported == [("/bin/report", ["http://bad.example/x"], "Eicar-Signature", b"from@example.org", 8,
                               log.append)]


def test_badurls_without_command_or_mess(tmp_path, calls):
    log = []
    st = staged(tmp_path, [b"a@x", b"b@x"])
    f = scan.Filter(Controls(badurls=1), [b"a@x"], [], log.append)
    f.report_urls(st, "Eicar")
    assert log == ["badurls is 1 but control/badurlscommand is not set: URLs not reported"]
    log.clear()
    f = scan.Filter(Controls(badurls=1, badurlscommand="/bin/report"), [b"a@x"], [], log.append)
    f.report_urls(SimpleNamespace(mess_path=str(tmp_path / "gone"), head=HEAD, sender=b""), "Eicar")
    assert log == ["badurls: unable to read mess: [Errno 2] No such file or directory: %r" % str(tmp_path / "gone")]
    assert calls.reported == []
    log.clear()
    staged_head_urls = staged(tmp_path, [b"a@x"], body=b"\n")
    staged_head_urls.head = b"X: http://head.example/\n"
    (tmp_path / "mess").write_bytes(staged_head_urls.head + b"\nno links\n")
    f.report_urls(staged_head_urls, "Eicar")        # the head is ours: its URLs are not the sender's
    assert calls.reported == [] and log == []


def test_clamd_trouble_fails_closed_or_open(tmp_path, calls):
    st = staged(tmp_path, [b"a@x"])
    calls.virus = ServiceError(X.QQ_COMM_FAILED, "clamd: connection refused")
    with pytest.raises(ServiceError) as e:
        scan.Filter(Controls(), [b"a@x"], []).run(st)
    assert e.value.code == X.QQ_COMM_FAILED
    log = []
    assert scan.Filter(Controls(filterfailopen=1), [b"a@x"], [], log.append).run(st) == [([b"a@x"], None)]
    assert log == ["clamd: connection refused; filterfailopen: going on unfiltered"]


def test_unreadable_mess_for_clamd_is_54(tmp_path, calls):
    calls.virus = FileNotFoundError(2, "No such file or directory")
    with pytest.raises(QueueError) as e:
        scan.Filter(Controls(filterfailopen=1), [b"a@x"], []).run(staged(tmp_path, [b"a@x"]))
    assert (e.value.code, e.value.reason) == (X.QQ_READ_ERROR, "unable to read mess: No such file or directory")
    calls.virus = OSError("odd")
    with pytest.raises(QueueError) as e:
        scan.Filter(Controls(), [b"a@x"], []).run(staged(tmp_path, [b"a@x"]))
    assert e.value.reason == "unable to read mess: odd"


def test_spam_copies_grouped_by_output(tmp_path, calls):
    calls.spam[b"a@x"] = spamd.Verdict(False, 1.0, 5.0, None, b"X-Spam: A\n" + BODY)
    calls.spam[b"c@x"] = spamd.Verdict(False, 1.0, 5.0, None, b"X-Spam: A\n" + BODY)
    calls.spam[b"d@x"] = spamd.Verdict(True, 6.0, 5.0, 10.0, b"X-Spam: D\n" + BODY)
    calls.spam[b"e@x"] = spam_verdict(10.0, 10.0)
    log = []
    st = staged(tmp_path, [b"a@x", b"b@x", b"c@x", b"d@x", b"e@x"])
    f = scan.Filter(Controls(filtertimeout=3), [], [b"A@X", b"a@x", b"c@x", b"d@x", b"e@x"], log.append,
                    keys={b"c@x": b"C@Y"})
    calls.spam[b"c@y"] = calls.spam[b"c@x"]
    assert f.run(st) == [([b"b@x"], None), ([b"a@x", b"c@x"], HEAD + b"X-Spam: A\n" + BODY),
                         ([b"d@x"], HEAD + b"X-Spam: D\n" + BODY)]
    assert calls.spamd == [(BODY, user, (socket.AF_INET, ("127.0.0.1", 783)), 3)
                           for user in (b"a@x", b"c@y", b"d@x", b"e@x")]
    assert log == ["refused for e@x: spam, score 10.0 >= reject score 10.0"]


def test_spam_user_that_would_break_the_header(tmp_path, calls):
    st = staged(tmp_path, [b"a b@x"])
    scan.Filter(Controls(), [], [b"a b@x"]).run(st)
    assert [c[1] for c in calls.spamd] == [None]


def test_spamdmaxsize(tmp_path, calls):
    log = []
    st = staged(tmp_path, [b"a@x"])
    f = scan.Filter(Controls(spamdmaxsize=len(BODY) - 1), [], [b"a@x"], log.append)
    assert f.run(st) == [([b"a@x"], None)]
    assert calls.spamd == []
    assert log == ["message of %d bytes is above spamdmaxsize %d: not spam-checked" % (len(BODY), len(BODY) - 1)]
    f = scan.Filter(Controls(spamdmaxsize=len(BODY)), [], [b"a@x"], log.append)
    f.run(st)
    assert [c[0] for c in calls.spamd] == [BODY]


def test_spamd_trouble_fails_closed_or_open(tmp_path, calls):
    calls.spam[b"a@x"] = spam_verdict(9.0, 5.0)
    calls.spam[b"b@x"] = ServiceError(X.QQ_TIMEOUT, "spamd: timed out")
    st = staged(tmp_path, [b"a@x", b"b@x", b"c@x"])
    with pytest.raises(ServiceError):
        scan.Filter(Controls(), [], [b"a@x", b"b@x", b"c@x"]).run(st)
    log = []
    groups = scan.Filter(Controls(filterfailopen=1), [], [b"a@x", b"b@x", b"c@x"], log.append).run(st)
    assert groups == [([b"b@x", b"c@x"], None)]
    assert [c[1] for c in calls.spamd] == [b"a@x", b"b@x"] * 2    # after the failure, nobody more is asked
    assert log == ["spamd: timed out; filterfailopen: going on unfiltered",
                   "refused for a@x: spam, score 9.0 >= reject score 5.0"]


def test_unreadable_mess_for_spamd_is_54(tmp_path, calls):
    st = SimpleNamespace(recipients=[b"a@x"], mess_path=str(tmp_path / "gone"), head=HEAD, sender=b"")
    with pytest.raises(QueueError) as e:
        scan.Filter(Controls(), [], [b"a@x"]).run(st)
    assert (e.value.code, e.value.reason) == (X.QQ_READ_ERROR, "unable to read mess: No such file or directory")


def test_bad_socket_controls_are_55_naming_the_control(tmp_path, calls):
    st = staged(tmp_path, [b"a@x"])
    with pytest.raises(QueueError) as e:
        scan.Filter(Controls(clamdsocket="nowhere"), [b"a@x"], []).run(st)
    assert (e.value.code, e.value.reason) == (55, "control/clamdsocket: not a socket path or host:port: 'nowhere'")
    with pytest.raises(QueueError) as e:
        scan.Filter(Controls(spamdsocket="nowhere"), [], [b"a@x"]).run(st)
    assert (e.value.code, e.value.reason) == (55, "control/spamdsocket: not a socket path or host:port: 'nowhere'")


def test_spamd_not_asked_when_nobody_is_left(tmp_path, calls):
    """Only the virus-checked recipient was spam-checked too, and a virus took him: spamd's
    controls are not even read (a broken spamdsocket or a size limit change nothing)."""
    calls.virus = "Eicar-Signature"
    log = []
    st = staged(tmp_path, [b"a@x", b"b@x"])
    f = scan.Filter(Controls(spamdsocket="nowhere", spamdmaxsize=1), [b"a@x"], [b"a@x"], log.append)
    assert f.run(st) == [([b"b@x"], None)]
    assert log == ["refused for a@x: virus Eicar-Signature found"] and calls.spamd == []


def test_num_of_an_infinite_score():
    assert scan._num(float("inf")) == "inf"
