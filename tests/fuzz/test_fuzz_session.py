"""Fuzz targets for the command stream: qmailpy.proto.lines and a whole Session.

Any bytes, any chunking: no exception, the same lines and the same replies and queue
whatever the split, well-formed replies, bounded buffers (an overlong line too,
whatever its ending: see test_adversarial.py).
"""
import atexit
import re
import shutil
import tempfile

from hypothesis import given, strategies as st

from fuzz.profile import fuzz_settings
from test_dialogues import TCP_ENV, FakeServices
from qmailpy.ctl.reader import Controls
from qmailpy.proto.lines import MAX_LINE, LineReader
from qmailpy.smtpd.config import SmtpdConfig
from qmailpy.smtpd.driver import Conversation

PIECES = [b"\r\n", b"\n", b"\r", b"\0", b" ", b"x", b"\xff", b"NOOP", b"HELO h", b"EHLO e", b"RSET", b"QUIT",
          b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@example.org>", b"RCPT TO:<v@evil.example>", b"DATA",
          b"\r\n.\r\n", b"\n.\n", b"\r.\r", b"..", b"AUTH PLAIN", b"AUTH LOGIN", b"*", b"x" * 300]
soup = st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=5)), max_size=120).map(b"".join)
cut_points = st.lists(st.integers(0, 10 ** 6), max_size=16)


def split(data, cuts):
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0] + points, points + [len(data)])]


def read_lines(chunks, allow_bare_lf):
    reader, pending, out, biggest = LineReader(allow_bare_lf), b"", [], 0
    for chunk in chunks:
        buf = pending + chunk
        while True:
            line, buf = reader.next_line(buf)
            if line is None:
                break
            out.append((line.text, line.bare_lf, line.error))
        pending = buf
        biggest = max(biggest, len(pending))
    return out, biggest


long_lines = st.lists(st.one_of(st.sampled_from([b"\r\n", b"\n", b"\r", b"\0", b"a"]),
                                st.integers(900, 2500).map(lambda n: b"y" * n)), max_size=12).map(b"".join)


@fuzz_settings(300)
@given(st.one_of(soup, long_lines, st.binary(max_size=3000)), st.booleans(), cut_points)
def test_lines_any_split_same_lines_bounded_buffer(data, allow_bare_lf, cuts):
    whole, _ = read_lines([data], allow_bare_lf)
    got, biggest = read_lines(split(data, cuts), allow_bare_lf)
    assert got == whole
    assert biggest <= MAX_LINE + 1 + max(map(len, split(data, cuts)), default=0)
    for text, bare, error in got:
        assert error in (None, "straylf", "toolong", "nul")
        if error is None:
            raw = text.encode("utf-8", "surrogateescape")
            assert len(raw) <= MAX_LINE and b"\0" not in raw and b"\r" not in raw and b"\n" not in raw
            assert allow_bare_lf or not bare


_CONTROLS = {}
_ROOT = tempfile.mkdtemp(prefix="qmailpy-fuzz-")
atexit.register(shutil.rmtree, _ROOT, True)


def session(newline):
    if newline not in _CONTROLS:
        from conftest import Home
        home = Home("%s/nl%d" % (_ROOT, newline))
        home.control("me", "test.example\n")
        home.control("rcpthosts", "example.org\n")
        home.control("newline", "%d\n" % newline)
        home.control("smtpauth", "1\n")
        home.control("smtpauthplaintext", "1\n")   # AUTH in clear (legacy clients)
        _CONTROLS[newline] = home.root
    env = dict(TCP_ENV)
    controls = Controls(_CONTROLS[newline], env)
    services = FakeServices(controls, True)
    return Conversation(SmtpdConfig(controls, env), services), services


REPLY = re.compile(rb"[2-5][0-9][0-9][ -][^\r\n]*\r\n")


def converse(chunks, newline):
    s, services = session(newline)
    out = [s.start()]
    for chunk in chunks:
        reply = s.feed(chunk)
        assert REPLY.sub(b"", reply) == b""                  # only whole, well-formed reply lines
        assert s.pending == b"" or len(s.pending) <= MAX_LINE + 1 + len(chunk)
        out.append(reply)
    if s.closed:
        assert out[-1] == b"" or re.search(rb"(^|\n)(221|451) [^\r\n]*\r\n$", b"".join(out))
    return b"".join(out), [(r, bytes(b)) for r, b in services.queued], s.closed


@fuzz_settings(300)
@given(soup, st.sampled_from([0, 1]), cut_points)
def test_session_any_input_any_split(data, newline, cuts):
    """Random command soup: no exception, well-formed replies, and the same replies, queue
    and end state whatever the split (the Received line's clock aside)."""
    whole = converse([data], newline)
    chunked = converse(split(data, cuts), newline)
    strip = lambda r: (re.sub(rb"250 ok \d+ qp", b"250 ok T qp", r[0]),      # noqa: E731
                       [(env, re.sub(rb"; [^\n]* -0000\n", b"; DATE\n", body, count=1)) for env, body in r[1]],
                       r[2])
    assert strip(chunked) == strip(whole)
    for env, body in whole[1]:
        assert body.startswith(b"Received: from unknown ")
        assert all(not r[1:].startswith("v@evil") for r in env)       # never relayed
