"""The filters' pure parts: answers of clamd/spamd, URL scanner, run scripts, qmail-newfilters."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import example, given, strategies as st

from qmailpy import exitcodes as X
from qmailpy.ctl.cdbmap import CdbMap
from qmailpy.ctl.reader import Controls
from qmailpy.filters import clamd, net, runscripts, select, spamd, urls
from qmailpy.filters.net import ServiceError

ROOT = Path(__file__).resolve().parents[1]


def test_select_by_recipient_keys(tmp_path):
    """select() asks the cdb for every key of qmailpy.addr.keys; spamd's User is the first key."""
    import cdblib
    home = tmp_path / "qmail"
    (home / "control").mkdir(parents=True)
    for name, text in (("locals", "mx.example.net\nlocalhost"), ("envnoathost", "mx.example.net"),
                       ("virtualdomains", "example.com:example.com\nalias.example:example.com"),
                       ("percenthack", "relay.example.net")):
        (home / "control" / name).write_text(text + "\n")
    for name, keys in (("clamavclients.cdb", (b"bob@mx.example.net", b"@example.com")),
                       ("spamdclients.cdb", (b"ann@example.com",))):
        with open(home / "control" / name, "wb") as f, cdblib.Writer(f) as w:
            for k in keys:
                w.put(k, b"")
    rcpts = [b"bob", b"Bob@LocalHost", b"x@alias.example", b"ann-list@alias.example",
             b"ann%example.com@relay.example.net", b"bob@far.example", b"bob"]
    logged = []
    clam, spam, keys = select.select(Controls(str(home), {}), rcpts, logged.append)
    assert clam == [b"bob", b"Bob@LocalHost", b"x@alias.example", b"ann-list@alias.example",
                    b"ann%example.com@relay.example.net", b"bob"]
    assert spam == [b"ann-list@alias.example", b"ann%example.com@relay.example.net"]
    assert keys[b"ann-list@alias.example"] == b"ann-list@example.com"        # no users database here
    assert keys[b"bob"] == keys[b"Bob@LocalHost"] == b"bob@mx.example.net" and logged == []
    (home / "control" / "clamavclients.cdb").unlink()
    (home / "control" / "spamdclients.cdb").unlink()
    assert select.select(Controls(str(home), {}), rcpts, logged.append) == ([], [], {})
    (home / "control" / "clamglobal").write_text("1\n")
    assert select.select(Controls(str(home), {}), rcpts, logged.append) == (rcpts, [], {})


def test_parse_address():
    assert net.parse_address("/run/clamav/clamd.ctl") == (socket.AF_UNIX, "/run/clamav/clamd.ctl")
    assert net.parse_address(" 127.0.0.1:783\n") == (socket.AF_INET, ("127.0.0.1", 783))
    assert net.parse_address("localhost:3310") == (socket.AF_INET, ("localhost", 3310))
    assert net.parse_address("[::1]:783") == (socket.AF_INET6, ("::1", 783))
    for bad in ("", "clamd.ctl", "host:", ":783", "host:0", "host:99999", "::1:783", "host:x1"):
        with pytest.raises(net.ConfigError) as e:
            net.parse_address(bad, "control/clamdsocket")
        assert e.value.code == X.QQ_CONFIG and "control/clamdsocket" in e.value.reason


def test_clamd_answers():
    assert clamd.parse_answer(b"stream: OK\0") is None
    assert clamd.parse_answer(b"stream: Eicar-Test-Signature FOUND\0") == "Eicar-Test-Signature"
    assert clamd.parse_answer(b"stream: Win.Test.EICAR_HDB-1 FOUND\n") == "Win.Test.EICAR_HDB-1"
    assert clamd.parse_answer(b"INSTREAM size limit exceeded. ERROR\0") == clamd.TOO_LONG
    assert clamd.not_malware(clamd.TOO_LONG) and clamd.not_malware("Heuristics.Encrypted.Zip")
    assert not clamd.not_malware("Heuristics.Phishing.Email") and not clamd.not_malware("Eicar-Signature")
    for answer, code in ((b"stream: lstat() failed: No such file. ERROR\0", X.QQ_TEMP_REFUSED),
                         (b"UNKNOWN COMMAND\0", X.QQ_COMM_FAILED), (b"stream:  FOUND\0", X.QQ_COMM_FAILED),
                         (b"PONG\0", X.QQ_COMM_FAILED)):
        with pytest.raises(ServiceError) as e:
            clamd.parse_answer(answer)
        assert e.value.code == code, answer


def test_clamd_limits():
    """Raised together from databytes, never below clamd's defaults, within what ClamAV can do."""
    default = [("StreamMaxLength", 100 << 20), ("MaxFileSize", 100 << 20), ("MaxScanSize", 400 << 20)]
    assert runscripts.clamd_limits(0) == runscripts.clamd_limits(10 << 20) == default
    s = (150 << 20) + 65536
    assert runscripts.clamd_limits(150 << 20) == [("StreamMaxLength", s), ("MaxFileSize", s), ("MaxScanSize", 4 * s)]
    assert runscripts.clamd_limits(3 << 30) == [("StreamMaxLength", (3 << 30) + 65536), ("MaxFileSize", (2 << 30) - 1),
                                                ("MaxScanSize", (4 << 30) - 1)]
    assert runscripts.clamd_limits(5 << 30)[0] == ("StreamMaxLength", (4 << 30) - 1)


def _spamd(body, spam=b"True ; 15.5 / 5.0", length=None, status=b"SPAMD/1.1 0 EX_OK"):
    head = status + b"\r\nContent-length: %d\r\n" % (len(body) if length is None else length)
    if spam is not None:
        head += b"Spam: " + spam + b"\r\n"
    return head + b"\r\n" + body


def test_spamd_request():
    assert spamd.request(b"hi\n", b"bob@example.net") == \
        b"PROCESS SPAMC/1.5\r\nContent-length: 3\r\nUser: bob@example.net\r\n\r\nhi\n"
    assert spamd.request(b"", None) == b"PROCESS SPAMC/1.5\r\nContent-length: 0\r\n\r\n"


def test_spamd_answers():
    body = b"X-Spam-Flag: YES\nX-Spam-Reject-Score: 12\nSubject: x\n\nX-Spam-Reject-Score: 1\n"
    v = spamd.parse_answer(_spamd(body))
    assert (v.spam, v.score, v.required, v.reject, v.message) == (True, 15.5, 5.0, 12.0, body)
    assert v.refused()
    v = spamd.parse_answer(_spamd(b"Subject: x\n\nbody\n", b"False ; 1.0 / 5.0"))
    assert (v.spam, v.reject, v.refused()) == (False, None, False)
    v = spamd.parse_answer(_spamd(b"X-Spam-Reject-Score: 20\n\n", b"True ; 15.5 / 5.0"))
    assert not v.refused()                                   # below the reject score: marked only
    v = spamd.parse_answer(_spamd(b"X-Spam-Reject-Score: 1\n\n", b"False ; 4.0 / 5.0"))
    assert not v.refused()                                   # not spam: never refused
    # docs/filters.md: refused "at or above" the reject score
    assert spamd.parse_answer(_spamd(b"X-Spam-Reject-Score: 15.5\n\n", b"True ; 15.5 / 5.0")).refused()
    assert not spamd.parse_answer(_spamd(b"X-Spam-Reject-Score: 15.6\n\n", b"True ; 15.5 / 5.0")).refused()
    for answer, code in (
            (b"garbage", X.QQ_COMM_FAILED),
            (b"SPAMD/1.0 76 Bad header line: (EOF)\r\n", X.QQ_TEMP_REFUSED),
            (_spamd(b"abc", length=4), X.QQ_COMM_FAILED),
            (_spamd(b"abc", spam=None), X.QQ_COMM_FAILED),
            (_spamd(b"abc", spam=b"Maybe ; 1 / 2"), X.QQ_COMM_FAILED),
            (_spamd(b"abc", spam=b"True ; lots / 2"), X.QQ_COMM_FAILED),
            (_spamd(b"abc", status=b"SPAMD/1.1 EX_OK"), X.QQ_COMM_FAILED),
            (b"SPAMD/1.1 0 EX_OK\r\nno colon\r\n\r\n", X.QQ_COMM_FAILED),
            (b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1 / 2\r\n\r\nabc", X.QQ_COMM_FAILED)):
        with pytest.raises(ServiceError) as e:
            spamd.parse_answer(answer)
        assert e.value.code == code, answer


SA_TOP = b"X-Spam-Checker-Version: SpamAssassin 4.0.1\nX-Spam-Status: Yes, score=15.5 required=5.0\n\ttests=GTUBE\n"


@pytest.mark.parametrize("nl", [b"\n", b"\r\n"])
def test_reject_score_only_from_spamds_block(nl):
    """A folded line, a body line or a field below the sender's headers never gives the reject score."""
    def msg(text):
        return text.replace(b"\n", nl)
    folded = b"Received: from x\nSubject: hi\n X-Spam-Reject-Score: 99999\n\nbody\nX-Spam-Reject-Score: 99999\n"
    assert spamd.reject_score(msg(SA_TOP + b"X-Spam-Reject-Score: 10\n" + folded)) == 10.0
    assert spamd.reject_score(msg(SA_TOP + folded)) is None
    assert spamd.reject_score(msg(SA_TOP + b"Subject: x\nX-Spam-Reject-Score: 99999\n\n")) is None
    assert spamd.reject_score(msg(SA_TOP + b"X-Spam-Reject-Score: 10\nX-Spam-Reject-Score: 99999\n\n")) == 10.0
    assert spamd.reject_score(msg(b"Return-Path: <a@b>\n\t(c)\n" + SA_TOP + b"X-Spam-Reject-Score: 7 \n\n")) == 7.0
    assert spamd.reject_score(msg(SA_TOP + b"X-Spam-Prev-Subject: x\nX-Spam-Reject-Score: 99999\n\n")) is None
    report_safe = (b"Received: from localhost by mx\n\twith SpamAssassin (version 4.0.1);\nFrom: a@b\n"
                   b"Subject: hi\n X-Spam-Reject-Score: 99999\n" + SA_TOP + b"X-Spam-Reject-Score: 20\n"
                   b"MIME-Version: 1.0\nX-Spam-Reject-Score: 99999\n\nX-Spam-Reject-Score: 99999\n")
    assert spamd.reject_score(msg(report_safe)) == 20.0       # report_safe: spamd's block under its copies
    assert spamd.reject_score(msg(b"X-Spam-Reject-Score : 99999\n\n")) is None
    assert spamd.reject_score(msg(b"X-Spam-Reject-Score: lots\nX-Spam-Reject-Score: 9\n\n")) is None
    assert spamd.reject_score(msg(b"\nX-Spam-Reject-Score: 9\n")) is None
    v = spamd.parse_answer(_spamd(msg(SA_TOP + b"X-Spam-Reject-Score: 20\n" + folded)))
    assert (v.spam, v.score, v.reject, v.refused()) == (True, 15.5, 20.0, False)


def test_header_fields():
    from qmailpy.proto.headers import fields
    assert list(fields(b"A: 1\nB-c:  two\n\tthree \nD:\n\nE: body\n")) == [
        (b"a", b"1"), (b"b-c", b"two\tthree"), (b"d", b"")]
    assert list(fields(b"A: 1\r\nB: 2\r\n X: 3\r\n\r\nC: 4\r\n")) == [(b"a", b"1"), (b"b", b"2 X: 3")]
    assert list(fields(b" X: 1\nA: 2\n")) == []                  # no field to continue: not a header block
    assert list(fields(b"A: 1\nnot a field\nB: 2\n")) == [(b"a", b"1")]
    assert list(fields(b"A : 1\nB: 2\n")) == []
    assert list(fields(b"A: 1")) == [(b"a", b"1")]
    assert list(fields(b"")) == []


@given(st.lists(st.tuples(st.from_regex(rb"\A[!-9;-~]{1,12}\Z"),
                          st.lists(st.from_regex(rb"\A[ -~]{0,20}\Z"), min_size=1, max_size=3)), max_size=6),
       st.sampled_from([b"\n", b"\r\n"]), st.binary(max_size=40))
def test_header_fields_property(block, nl, body):
    """Written fields come back in order, folded lines joined to theirs, whatever the body holds."""
    from qmailpy.proto.headers import fields
    text = b"".join(name + b":" + nl.join([parts[0]] + [b"\t" + p for p in parts[1:]]) + nl
                    for name, parts in block)
    want = [(name.lower(), b"\t".join(parts).strip(b" \t")) for name, parts in block]
    got = [(k, v.replace(b"\r", b"")) for k, v in fields(text + nl + body)]
    assert [(k, v.strip(b" \t")) for k, v in got] == want


@given(st.binary(max_size=200) | st.lists(st.sampled_from(
    [b"A", b"b-c", b":", b" ", b"\t", b"\n", b"\r", b"\r\n", b"\x7f", b"\xe9", b"x"]), max_size=30).map(b"".join))
@example(b"!:\n ")                       # a continuation line at the end, with no newline
def test_header_spans_of_any_bytes(message):
    """spans() of any bytes: fields one after another from the start, each a name, a colon, and
    its lines; fields() is the same fields unfolded."""
    from qmailpy.proto.headers import fields, spans, unfold
    got, pos = list(spans(message)), 0
    for name, start, end in got:
        assert start == pos < end <= len(message)
        raw = message[start:end]
        assert raw.lower().startswith(name + b":") and 0x20 < min(name) and max(name) < 0x7f
        lines = (raw[:-1] if raw.endswith(b"\n") else raw).split(b"\n")   # the last field may end at EOF
        assert all(line[:1] in (b" ", b"\t") for line in lines[1:]), raw
        pos = end
    assert list(fields(message)) == [(name, unfold(message[s:e])) for name, s, e in got]


def test_find_urls():
    msg = (b"Subject: x\n\nsee <http://a.example/x>, and (https://b.example/y?z=1).\n"
           b"again http://a.example/x\nqp: http://c.exa=\nmple/p=3Dq\n"
           b"Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
           b"PGEgaHJlZj0iaHR0cDovL2QuZXhhbXBsZS9ldmlsIj5jbGljazwvYT4=\n\n"
           b"ftp://e.example/f http:// HTTPS://F.example/\n")
    assert urls.find_urls(msg, 10) == ["http://a.example/x", "https://b.example/y?z=1", "http://c.example/p=q",
                                       "ftp://e.example/f", "HTTPS://F.example/", "http://d.example/evil"]
    assert urls.find_urls(msg, 2) == ["http://a.example/x", "https://b.example/y?z=1"]
    assert urls.find_urls(msg, 0) == []
    assert urls.find_urls(b"no links here", 5) == []


def run_here(code):
    """`code` run by a new interpreter on this checkout's qmailpy (its own limits, its own memory)."""
    root = str(Path(urls.__file__).resolve().parents[2])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=root))


def test_base64_blocks_are_the_regex_blocks_found_in_linear_time():
    """base64_blocks() finds what urls.BASE64_TEXT does (random messages of header, part and
    base64 lines); a message of 60,000 "Content-Type: text/a" parts without an empty line cost
    the regex hours (cubic) and runs under a 10 s CPU limit now, its URL found."""
    import random
    rng = random.Random(7)
    parts = [b"Content-Type: text/a\n", b"content-type:\ttext/x; y\n", b"Content-Transfer-Encoding: base64\n",
             b"CONTENT-TRANSFER-ENCODING:  BASE64 x\n", b"X: y\n", b" cont\n", b"\n", b"QUJD\n", b"QUJD\r\n",
             b"!!\n", b"body line\n", b"x Content-Type: text/p\n", b"Content-Type: image/x\n", b"\r\n", b"QQ"]
    for _ in range(20000):
        msg = b"".join(rng.choice(parts) for _ in range(rng.randint(0, 12)))
        assert list(urls.base64_blocks(msg)) == [m.group(1) for m in urls.BASE64_TEXT.finditer(msg)], msg
    code = ("import resource; resource.setrlimit(resource.RLIMIT_CPU, (10, 10))\n"
            "from qmailpy.filters.urls import find_urls\n"
            "unit = b'Content-Type: text/a\\nContent-Transfer-Encoding: base64\\nX: y\\n'\n"
            "print(find_urls(unit * 60000 + b'\\nhttp://a.example/\\n', 5))\n")
    got = run_here(code)
    assert (got.returncode, got.stdout, got.stderr) == (0, "['http://a.example/']\n", "")


def test_base64_blocks_take_no_memory_in_proportion_to_the_lines():
    """A 5 MB message of empty lines after a Content-Type: text/ line (an infected message anyone
    can send, scanned in qmail-queued's one process) took half a gigabyte when base64_blocks()
    made lists of the lines and facts about each; it now walks the message in place."""
    code = ("import resource\n"
            "from qmailpy.filters.urls import find_urls\n"
            "msg = b'Content-Type: text/plain\\n' + b'\\n' * 5000000 + b'http://a.example/\\n'\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "print(find_urls(msg, 5), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024)\n")
    got = run_here(code)
    assert (got.returncode, got.stdout, got.stderr) == (0, "['http://a.example/'] True\n", "")


def test_report_command(tmp_path):
    out, logged = tmp_path / "out", []
    assert urls.report("cat > %s; echo \"$VIRUS/$SENDER\" >> %s" % (out, out), ["http://a/", "http://b/"],
                       "Eicar", b"s@x", 10, logged.append)
    assert out.read_text() == "http://a/\nhttp://b/\nEicar/s@x\n" and logged == []
    assert not urls.report("echo oops >&2; exit 3", ["u"], "V", b"", 10, logged.append)
    assert logged == ["badurlscommand exited 3: oops"]
    assert not urls.report("sleep 5", ["u"], "V", b"", 1, logged.append)
    assert logged[-1] == "badurlscommand timed out after 1 seconds"


def test_report_command_that_cannot_start_is_logged(monkeypatch):
    """No process for /bin/sh (EAGAIN: the process limit): logged, the message still refused
    as a virus (report() never raises)."""
    import errno
    logged = []

    def no_fork(*args, **kw):
        raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
    monkeypatch.setattr(subprocess, "run", no_fork)
    assert not urls.report("true", ["u"], "V", b"", 10, logged.append)
    assert logged == ["badurlscommand: cannot run: [Errno 11] Resource temporarily unavailable"]


def test_urls_in_base64_that_does_not_decode_and_a_content_type_at_the_end():
    """A base64 run of bad padding is skipped, the message's own text still searched; a
    Content-Type line that ends the message has no body to search."""
    msg = (b"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\nabcde\n\n"
           b"see http://plain.example/x\n")
    assert urls.find_urls(msg, 10) == ["http://plain.example/x"]
    assert list(urls.base64_blocks(b"Subject: x\n\nContent-Type: text/plain")) == []


def test_runscripts():
    assert runscripts.clamd_command("/etc/c.conf") == ["clamd", "--foreground", "--config-file=/etc/c.conf"]
    conf = runscripts.clamd_config("/run/clamav/clamd.ctl", "/db", databytes=1000, user="clamav")
    assert conf.splitlines()[1:] == ["Foreground yes", "LocalSocket /run/clamav/clamd.ctl", "LocalSocketMode 666",
                                     "FixStaleSocket yes", "DatabaseDirectory /db", "ScanMail yes", "LogSyslog no",
                                     "LogTime yes", "StreamMaxLength 104857600", "MaxFileSize 104857600",
                                     "MaxScanSize 419430400", "AlertExceedsMax yes", "AlertEncrypted yes",
                                     "User clamav"]
    assert "AlertEncrypted no\n" in runscripts.clamd_config("/s", alert_encrypted=False)
    assert "TCPSocket 3310\nTCPAddr 127.0.0.1\n" in runscripts.clamd_config("127.0.0.1:3310")
    assert runscripts.spamd_command("127.0.0.1:783") == [
        "spamd", "--max-children=10", "--syslog=stderr", "-q", "-x", "--username=debian-spamd",
        "-i", "127.0.0.1", "-p", "783", "-L"]
    assert runscripts.spamd_command("/s.sock", children=25, sanetcheck=1, user=None, siteconfigpath="/etc/sa",
                                    sql=False) == [
        "spamd", "--max-children=25", "--syslog=stderr", "--socketpath=/s.sock", "--siteconfigpath=/etc/sa"]
    assert runscripts.run_script(["spamd", "-x", "a b"]) == "#!/bin/sh\nexec 2>&1\nexec spamd -x 'a b'\n"
    assert runscripts.freshclam_crontab().splitlines()[-1] == "0 * * * * freshclam --quiet"
    assert runscripts.spamd_sql_config("db", username="u", password="p") == (
        "user_scores_dsn DBI:mysql:db:127.0.0.1:3306\nuser_scores_sql_username u\nuser_scores_sql_password p\n")
    assert runscripts.spamd_sql_config("db", username="u") == (      # no password line for an empty one
        "user_scores_dsn DBI:mysql:db:127.0.0.1:3306\nuser_scores_sql_username u\n")


def test_runscripts_from_controls(tmp_path):
    home = tmp_path / "qmail"
    (home / "control").mkdir(parents=True)
    for name, text in (("spamdchildren", "30"), ("sanetcheck", "1"), ("spamdsocket", "/run/spamd.sock"),
                       ("clamdsocket", "127.0.0.1:3310"), ("databytes", "1000000")):
        (home / "control" / name).write_text(text + "\n")
    got = runscripts.from_controls(Controls(str(home), {}))
    assert got["spamd/run"].splitlines()[-1] == \
        "exec spamd --max-children=30 --syslog=stderr -q -x --username=debian-spamd --socketpath=/run/spamd.sock"
    assert "TCPSocket 3310\n" in got["clamd.conf"] and "StreamMaxLength 104857600\n" in got["clamd.conf"]
    assert "AlertEncrypted yes\n" in got["clamd.conf"]
    assert got["clamd/run"].endswith("exec clamd --foreground --config-file=/etc/clamav/clamd.conf\n")
    (home / "control" / "databytes").write_text("%d\n" % (300 << 20))
    (home / "control" / "clamdalertencrypted").write_text("0\n")
    conf = runscripts.from_controls(Controls(str(home), {}))["clamd.conf"].splitlines()
    stream = (300 << 20) + 65536
    assert conf[-5:] == ["StreamMaxLength %d" % stream, "MaxFileSize %d" % stream, "MaxScanSize %d" % (4 * stream),
                         "AlertExceedsMax yes", "AlertEncrypted no"]
    (home / "control" / "sanetcheck").write_text("0\n")
    got = runscripts.from_controls(Controls(str(home), {}))
    assert got["spamd/run"].rstrip().endswith(" -L")


def test_filter_controls_defaults_and_files(tmp_path):
    home = tmp_path / "qmail"
    (home / "control").mkdir(parents=True)
    c = Controls(str(home), {})
    assert [c.value(n) for n in ("clamdsocket", "spamdsocket", "filtertimeout", "filterfailopen",
                                 "spamdmaxsize", "badurlscommand")] == [
        "/var/run/clamav/clamd.ctl", "127.0.0.1:783", 60, 0, 512000, ""]
    (home / "control" / "filtertimeout").write_text("5\n")
    (home / "control" / "filterfailopen").write_text("7\n")
    c = Controls(str(home), {})
    assert (c.value("filtertimeout"), c.value("filterfailopen")) == (5, 1)


def newfilters(home, *args):
    return subprocess.run([os.path.join(ROOT, "bin", "qmail-newfilters"), *args], cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, QMAILHOME=str(home)), timeout=30)


def test_newfilters(tmp_path):
    home = tmp_path / "qmail"
    control = home / "control"
    control.mkdir(parents=True)
    p = newfilters(home, "-v")
    assert p.returncode == 0 and "nothing built" in p.stdout
    (control / "clamavclients").write_text("# virus-checked\n\n  Bob@Example.NET  \n@Domain.example\nbob@example.net\n")
    p = newfilters(home, "-v")
    assert (p.returncode, p.stdout) == (0, "qmail-newfilters: control/clamavclients.cdb: 2 keys\n")
    cdb = CdbMap(str(control / "clamavclients.cdb"))
    assert len(cdb) == 2 and b"bob@example.net" in cdb and b"@domain.example" in cdb
    cdb.close()
    assert not (control / "spamdclients.cdb").exists() and not (control / "clamavclients.cdb.tmp").exists()
    (control / "spamdclients").write_text("")
    assert newfilters(home, "spamdclients").returncode == 0
    assert len(CdbMap(str(control / "spamdclients.cdb"))) == 0
    (control / "clamavclients").write_text("two keys here\n")
    p = newfilters(home)
    assert p.returncode == 111 and "clamavclients:1: one address or @domain a line" in p.stderr
    assert len(CdbMap(str(control / "clamavclients.cdb"))) == 2      # the old database stays
    assert newfilters(home, "nosuchlist").returncode != 0


def test_select_when_the_users_database_is_down(tmp_path):
    """Logged once; the keys come from the controls alone (every name: nothing listed is skipped)."""
    import cdblib
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]                    # closed again: nobody listens there
    home = tmp_path / "qmail"
    (home / "control").mkdir(parents=True)
    (home / "control" / "virtualdomains").write_text("example.com:example.com\n")
    (home / "control" / "usersdb").write_text("127.0.0.1|%d|u|p|vpopmail\n" % port)
    with open(home / "control" / "spamdclients.cdb", "wb") as f, cdblib.Writer(f) as w:
        w.put(b"y@example.com", b"")
    logged = []
    rcpts = [b"y-foo@example.com", b"z@example.com"]
    assert select.select(Controls(str(home), {}), rcpts, logged.append) == (
        [], [b"y-foo@example.com"], {b"y-foo@example.com": b"y-foo@example.com", b"z@example.com": b"z@example.com"})
    assert len(logged) == 1 and logged[0].startswith("users database unavailable (usersdb 127.0.0.1: ")
    assert logged[0].endswith("): recipient keys from the controls alone")


def test_a_clients_cdb_removed_since_the_controls_were_read_lists_nobody(tmp_path):
    """control/clamavclients.cdb was there when the controls were read and is gone when opened
    (an admin removed it): nobody is listed, as when it was never there; not a 55."""
    assert select._open(str(tmp_path / "clamavclients.cdb"), "control/clamavclients.cdb") is None
