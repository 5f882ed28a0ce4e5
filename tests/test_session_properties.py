"""Properties of the sans-IO SMTP session (qmailpy.smtpd.session through its driver), in process.

- Every command line sent alone gets exactly one reply in qmail's form: lines `ddd-...` of
  one code, the last `ddd ...`, each ending CRLF (AUTH exchange lines count as commands).
- RSET leaves the transaction as a fresh session has it: the same later replies, the same
  tarpit sleeps, the same queued message.
- DATA against a model of qmail's blast() (reference section 1.6) written independently of
  qmailpy.proto.dotdata: the message ends at the first <CR><LF>.<CR><LF> (the DATA line's CRLF
  counts), a bare LF before it is 451 and the end of the session, lines are stored with LF,
  a line-start dot is dropped unless ".\\r" follows, lone CRs are kept; databytes and hops as
  blast() counts them. Whatever the split of the input, nothing is queued unless the client
  sent the terminator, and what follows the terminator is read as commands.

Kept brief (a few seconds); tests/fuzz has the longer targets.
"""
import atexit
import re
import shutil
import tempfile

from hypothesis import assume, given, strategies as st

from conftest import Home
from fuzz.profile import fuzz_settings
from test_dialogues import TCP_ENV, FakeServices
from qmailpy.ctl.reader import Controls
from qmailpy.proto import replies as R
from qmailpy.smtpd.config import SmtpdConfig
from qmailpy.smtpd.driver import Conversation
from qmailpy.smtpd.session import DATA, READY

_ROOT = tempfile.mkdtemp(prefix="qmailpy-props-")
atexit.register(shutil.rmtree, _ROOT, True)
_HOME = Home(_ROOT + "/home")
_HOME.control("me", "test.example\n")
_HOME.control("rcpthosts", "example.org\n")
_HOME.control("smtpauth", "1\n")
_HOME.control("smtpauthplaintext", "1\n")
_HOME.control("maxrecepients", "3\n")
DATABYTES = 200


def conversation(**env):
    environ = dict(TCP_ENV, **env)
    controls = Controls(_HOME.root, environ)
    services = FakeServices(controls, True)        # checkpassword: good@example.org / secret
    return Conversation(SmtpdConfig(controls, environ), services), services


REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([ -])[^\r\n]*\Z")
VERBS = ["HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "VRFY", "HELP", "AUTH", "STARTTLS",
         "EXPN", "ehlo", "Rcpt", "", "X"]
ARGS = ["", "h.example", "FROM:<a@example.com>", "TO:<b@example.org>", "TO:<c@evil.example>", "FROM:<>",
        "TO:<>", "PLAIN", "LOGIN", "CRAM-MD5", "GSSAPI", "FROM:<a@b> SIZE=10", "FROM:<a@b> SIZE=99999",
        "FROM:<a@b> SIZE=x", "FROM:<a@b> SMTPUTF8", "TO:<\"q r\"@example.org>", "FROM:a@b", "*", "=",
        "TO:<@x,@y:u@example.org>", "AGdvb2RAZXhhbXBsZS5vcmcAc2VjcmV0", "Z29vZEBleGFtcGxlLm9yZw==", "c2VjcmV0",
        "FROM:<" + "x" * 901 + ">", "x" * 1001]
command = st.one_of(
    st.tuples(st.sampled_from(VERBS), st.sampled_from(ARGS)).map(lambda t: " ".join(x for x in t if x).encode()),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")))


def replies(out):
    """The reply lines of `out`, checked for form; the number of complete replies."""
    assert out.endswith(b"\r\n"), out
    lines = out[:-2].split(b"\r\n")
    count, code = 0, None
    for line in lines:
        m = REPLY_LINE.match(line)
        assert m, out
        if code is not None:
            assert m.group(1) == code, out         # a multi-line reply keeps its code
        code = m.group(1)
        if m.group(2) == b" ":
            count, code = count + 1, None
    assert code is None, out                      # the last line ends the reply
    return count


@fuzz_settings(300)
@given(st.lists(command, max_size=20), st.sampled_from([b"\r\n", b"\n"]))
def test_every_command_gets_exactly_one_reply(lines, eol):
    s, _ = conversation()
    assert replies(s.start()) == 1
    for line in lines:
        if s.closed:
            break
        if s.session.state is DATA:
            assert replies(s.feed(b"x\r\n.\r\n")) == 1
            continue
        assert replies(s.feed(line + eol)) == 1, line


PROBE = ([b"RCPT TO:<b@example.org>", b"DATA", b"MAIL FROM:<s@example.com>"]
         + [b"RCPT TO:<b%d@example.org>" % i for i in range(5)] + [b"DATA", b"body", b".", b"QUIT"])


def after_rset(lines):
    """What a session says, sleeps and queues for PROBE after HELO, `lines`, RSET; None when
    `lines` ended it (or left it in DATA)."""
    s, services = conversation(TARPITCOUNT="2", TARPITDELAY="1")
    s.start()
    for line in [b"HELO h.example"] + lines + [b"RSET"]:
        if s.closed or s.session.state is DATA:
            return None
        s.feed(line + b"\r\n")
    if s.closed or s.session.state is not READY:
        return None
    slept, queued = len(services.slept), len(services.queued)
    out = s.feed(b"".join(line + b"\r\n" for line in PROBE))
    return (re.sub(rb"250 ok \d+ qp", b"250 ok T qp", out), services.slept[slept:],
            [(env, re.sub(rb"; [^\n]* -0000\n", b"\n", body)) for env, body in services.queued[queued:]])


transaction_line = st.one_of(
    st.tuples(st.sampled_from(["MAIL", "RCPT", "NOOP", "VRFY", "RSET", "DATA", "HELP"]),
              st.sampled_from(ARGS)).map(lambda t: " ".join(x for x in t if x).encode()),
    st.sampled_from([b"x", b".", b"..", b"Received: x"]))


@fuzz_settings(150)
@given(st.lists(transaction_line, max_size=15))
def test_rset_gives_a_fresh_transaction(lines):
    got = after_rset(lines)
    assume(got is not None)
    assert got == after_rset([])


# -- DATA against blast()

def blast_model(body, databytes=0):
    """qmail-smtpd's reply and stored message for `body`, sent after a CRLF-ended DATA line:
    (reply, message or None, bytes used) -- None when the input holds no end yet."""
    text = b"\r\n" + body
    end = text.find(b"\r\n.\r\n")
    seen = text if end < 0 else text[:end + 2]
    for i in range(1, len(seen)):
        if seen[i] == 10 and seen[i - 1] != 13:
            return R.STRAY_LF, None, i - 1
    if end < 0:
        return None, None, len(body)
    lines = text[2:end + 2].split(b"\r\n")[:-1]
    message = b"".join((line if line.startswith(b".\r") else line[1:] if line[:1] == b"." else line) + b"\n"
                       for line in lines)
    hops = 0
    for line in lines:
        if line == b"":
            break
        hops += line[:8].lower() == b"received" or line[:9].lower() == b"delivered"
    if hops >= 100:
        return R.LOOPING, None, end + 3
    if databytes and len(message) > databytes:
        return R.TOO_BIG, None, end + 3
    return "250", message, end + 3


PIECES = [b"\r", b"\n", b".", b"..", b"a", b"\0", b"\xff", b"\r\n", b"\r\n.", b".\r\n", b"\r\n.\r\n", b"\n.\n",
          b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\r\n", b".\r", b"Received: x\r\n", b"DELIVERED-to: y\r\n",
          b"\r\n\r\n", b"x" * 60]
body_st = st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=4)), max_size=60).map(b"".join)
cuts_st = st.lists(st.integers(0, 10 ** 6), max_size=8)


def split(data, cuts):
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0] + points, points + [len(data)])]


@fuzz_settings(400)
@given(body_st, cuts_st, st.sampled_from([0, DATABYTES]), st.booleans())
def test_data_is_blast(body, cuts, databytes, hops):
    if hops:
        body = b"Received: x\r\n" * 99 + body
    s, services = conversation(DATABYTES=str(databytes))
    s.start()
    head = s.feed(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
    assert head == b"250 ok\r\n250 ok\r\n354 go ahead\r\n"
    out = b"".join(s.feed(chunk) for chunk in split(body + b"NOOP\r\n", cuts))
    data = body + b"NOOP\r\n"
    reply, message, used = blast_model(data, databytes)
    if reply is None:                     # no end: nothing queued, nothing said, still in DATA
        assert (out, services.queued, s.session.state) == (b"", [], DATA)
        s.eof()
        assert services.queued == []
        return
    if reply == R.STRAY_LF:
        assert (out, services.queued, s.closed) == (R.STRAY_LF.encode() + b"\r\n", [], True)
        return
    fresh, _ = conversation()             # what follows the end is read as by a new session
    fresh.start()
    rest = fresh.feed(data[used:])
    if message is None:
        assert out == reply.encode() + b"\r\n" + rest
        assert services.queued == []
        return
    assert re.fullmatch(rb"250 ok \d+ qp 999\r\n", out[:-len(rest)]), out
    assert out.endswith(rest)
    [(envelope, stored)] = services.queued
    assert envelope == ["Fa@example.com", "Tb@example.org"]
    first, by, stored = stored.split(b"\n", 2)
    assert (first, by[:26]) == (b"Received: from unknown (127.0.0.1)", b"  by localhost with SMTP; ")
    assert stored == message
