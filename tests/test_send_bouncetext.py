"""Bounce texts byte for byte: addbounce paragraphs, quoting, QSBMF layout, the header/MIME-skeleton copy."""
import io

from qmailpy.send import bounce, bouncecopy
from qmailpy.send.bounce import Settings


def compose(now, sender, bouncetext, mess, s, copy=True):
    """The whole bounce as bytes (bouncetext: bounce/<id>, mess: the message), as qmail-send streams it."""
    return b"".join(bounce.chunks(now, sender, io.BytesIO(bouncetext), io.BytesIO(mess), s, copy))

DEFAULTS = Settings(b"MAILER-DAEMON", b"mx.example.org", b"failure notice",
                    (b"I'm afraid I wasn't able to deliver your message to the following addresses.",
                     b"This is a permanent error; I've given up. Sorry it didn't work out."), 0,
                    b"postmaster", b"mx.example.org", b"failure notice",
                    (b"I tried to deliver a bounce message to this address, but the bounce bounced!",))
NOW = 812090794          # 26 Sep 1995 04:46:34 -0000


def test_addbounce_paragraphs():
    assert bounce.addbounce(b"joe@x", b"Sorry.\n") == b"<joe@x>:\nSorry.\n\n"
    assert bounce.addbounce(b"joe@x", b"no newline") == b"<joe@x>:\nno newline\n\n"
    assert bounce.addbounce(b"joe@x", b"") == b"<joe@x>:\n\n"
    assert bounce.addbounce(b"a\nb@x", b"one\n\ntwo\n\n\nthree") == b"<a_b@x>:\none\n/two\n//three\n\n"


def test_addbounce_report_ending_in_blank_lines():
    """qmail-send.c's loop runs from len - 2 down: every newline after a newline becomes '/',
    except the report's very last one, which ends the paragraph's last line."""
    assert bounce.addbounce(b"joe@x", b"x\n\n\n") == b"<joe@x>:\nx\n/\n\n"
    assert bounce.addbounce(b"joe@x", b"x\n\n\n\n") == b"<joe@x>:\nx\n//\n\n"
    assert bounce.addbounce(b"joe@x", b"x\n\n") == b"<joe@x>:\nx\n\n\n"
    assert bounce.addbounce(b"joe@x", b"\n\nx") == b"<joe@x>:\n//x\n\n"


def test_quote():
    assert bounce.quote(b"MAILER-DAEMON") == b"MAILER-DAEMON"
    assert bounce.quote(b"bounce daemon") == b'"bounce daemon"'
    assert bounce.quote(b'a"b\\c') == b'"a\\"b\\\\c"'
    assert bounce.quote(b".x") == b'".x"' and bounce.quote(b"a..b") == b'"a..b"' and bounce.quote(b"") == b'""'
    assert bounce.quote2(b"john smith@x.example") == b'"john smith"@x.example'
    assert bounce.quote2(b"a@b@c") == b'"a@b"@c' and bounce.quote2(b"") == b""


def test_stock_layout_with_default_controls():
    mess = b"Received: (qmail 1 invoked by uid 0); 26 Sep 1995 04:46:00 -0000\nSubject: hi\n\nsecret body\n"
    got = compose(NOW, b"joe@far.example", b"<x@y>:\nSorry.\n\n", mess, DEFAULTS)
    assert got == (b"Date: 26 Sep 1995 04:46:34 -0000\n"
                   b"From: MAILER-DAEMON@mx.example.org\n"
                   b"To: joe@far.example\n"
                   b"Subject: failure notice\n"
                   b"\n"
                   b"Hi. This is the qmail-send program at mx.example.org.\n"
                   b"I'm afraid I wasn't able to deliver your message to the following addresses.\n"
                   b"This is a permanent error; I've given up. Sorry it didn't work out.\n"
                   b"\n"
                   b"<x@y>:\nSorry.\n\n"
                   b"--- Below this line is a copy of the message.\n"
                   b"\n"
                   b"Return-Path: <joe@far.example>\n"
                   b"Received: (qmail 1 invoked by uid 0); 26 Sep 1995 04:46:00 -0000\nSubject: hi\n\n")
    assert bounce.envelope(b"joe@far.example", DEFAULTS) == (b"", b"joe@far.example")


def test_double_bounce_copies_the_whole_bounce():
    mess = b"Subject: failure notice\n\nHi. This is the qmail-send program\n"
    got = compose(NOW, b"", b"<x@y>:\nSorry.\n\n", mess, DEFAULTS)
    assert got.endswith(b"Hi. This is the qmail-send program at mx.example.org.\n"
                        b"I tried to deliver a bounce message to this address, but the bounce bounced!\n\n"
                        b"<x@y>:\nSorry.\n\n--- Below this line is the original bounce.\n\n"
                        b"Return-Path: <>\n" + mess)
    assert b"To: postmaster@mx.example.org\n" in got
    assert bounce.envelope(b"", DEFAULTS) == (b"#@[]", b"postmaster@mx.example.org")


def test_discard_reasons():
    trim = DEFAULTS._replace(doublebounceto=b"")
    assert bounce.discard_reason(b"#@[]", DEFAULTS) == "triple bounce: discarding"
    assert bounce.discard_reason(b"", trim) == "double bounce: discarding"
    assert bounce.discard_reason(b"", DEFAULTS) is None
    assert bounce.discard_reason(b"a@b", trim) is None


def test_skeleton_plain_and_headers_only():
    assert bouncecopy.skeleton(b"A: 1\nB: 2\n\nbody\n\nmore\n") == (b"A: 1\nB: 2\n\n", None)
    assert bouncecopy.skeleton(b"A: 1\nB: 2\n") == (b"A: 1\nB: 2\n", None)
    assert bouncecopy.skeleton(b"A: 1") == (b"A: 1", None)
    assert bouncecopy.skeleton(b"\nbody only\n") == (b"\n", None)
    single = b"Content-Type: text/plain; boundary=x\n\n--x\nnot a part\n"
    assert bouncecopy.skeleton(single) == (b"Content-Type: text/plain; boundary=x\n\n", None)


def test_skeleton_mime_with_crlf_padding_and_missing_close():
    # a quoted boundary with a space and quoted-pairs (a quote itself is no bchar: see test_send_bouncestream)
    mess = (b"Subject: m\r\nContent-Type: Multipart/Mixed; charset=x; BOUNDARY=\"b \\'q\\'\"\r\n\r\n"
            b"preamble\r\n--b 'q'  \r\nContent-Type: text/plain\r\n\r\nhello\r\n"
            b"--b 'q'\r\nContent-Type: image/png\r\n\r\nPNG...\r\n")
    got = bouncecopy.skeleton(mess)
    assert got.boundary == b"b 'q'"
    assert got.copy == (b"Subject: m\r\nContent-Type: Multipart/Mixed; charset=x; BOUNDARY=\"b \\'q\\'\"\r\n\r\n"
                        b"--b 'q'  \r\nContent-Type: text/plain\r\n\r\n"
                        b"--b 'q'\r\nContent-Type: image/png\r\n\r\n")


def test_skeleton_nested_and_epilogue():
    mess = (b"Content-Type: multipart/mixed; boundary=o\n\n--o\n"
            b"Content-Type: multipart/related;\n\tboundary=\"i\"\n\nignored\n--i\nX: 1\n\nbody\n"
            b"--o\nY: 2\n\nbody2\n--o--\nepilogue\n--o\nnot a part\n")
    got = bouncecopy.skeleton(mess)
    assert got == (b"Content-Type: multipart/mixed; boundary=o\n\n--o\n"
                   b"Content-Type: multipart/related;\n\tboundary=\"i\"\n\n--i\nX: 1\n\n"
                   b"--o\nY: 2\n\n--o--\n", b"o")


def test_mime_bounce_declares_the_boundary_and_maxbytes_cuts():
    mess = b"Content-Type: multipart/mixed; boundary=\"zz\"\n\n--zz\nA: b\n\ntext\n--zz--\n"
    got = compose(NOW, b"joe@far.example", b"", mess, DEFAULTS._replace(maxbytes=20))
    assert b'To: joe@far.example\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="zz"\n' \
           b"Subject: failure notice\n\n" in got
    assert got.endswith(b"Return-Path: <joe@far.example>\n" + mess[:20] + b"\n\n--- End of message stripped.\n")
    assert bouncecopy.limit(b"short", 20) == b"short" and bouncecopy.limit(b"x" * 30, 0) == b"x" * 30


class FakeControls:
    def __init__(self, **values):
        self.values = values

    def value(self, name):
        return self.values[name]


def test_settings_from_controls():
    """Every bounce control lands in its own field, as bytes (str with surrogate escapes
    given back byte for byte); no bouncemaxbytes is 0."""
    c = FakeControls(bouncefrom="MAILER-DAEMON", bouncehost="b\udcffhost", bouncesubject=b"subj",
                     bouncemessage=["line one", b"line two"], bouncemaxbytes=None,
                     doublebounceto="pm", doublebouncehost="dbhost", doublebouncesubject="dbsubj",
                     doublebouncemessage=("db \u00e9",))
    assert bounce.settings(c) == Settings(b"MAILER-DAEMON", b"b\xffhost", b"subj", (b"line one", b"line two"), 0,
                                          b"pm", b"dbhost", b"dbsubj", ("db \u00e9".encode(),))
    c.values["bouncemaxbytes"] = 5000
    assert bounce.settings(c).maxbytes == 5000
    assert type(bounce.settings(c).bouncesubject) is bytes
    assert bounce._b(bytearray(b"x")) == b"x" and type(bounce._b(bytearray(b"x"))) is bytes


def test_double_bounce_has_its_own_subject():
    s = DEFAULTS._replace(bouncesubject=b"single", doublebouncesubject=b"double")
    assert b"\nSubject: double\n" in compose(NOW, b"", b"<x@y>:\nSorry.\n\n", b"Subject: a\n\nb\n", s)
    assert b"\nSubject: single\n" in compose(NOW, b"joe@far.example", b"<x@y>:\nSorry.\n\n", b"Subject: a\n\nb\n", s)



def test_a_failed_write_of_a_paragraph_goes_on_from_where_it_stopped(tmp_path, monkeypatch):
    """qmail-send's addbounce(): a write that fails is tried again with what is not yet
    written. Tried again whole (the paragraph once more from its start), the part that had
    gone out before the failure (ENOSPC, EIO) was in the bounce twice."""
    import os
    import time
    from types import SimpleNamespace
    from qmailpy.queue import layout
    from qmailpy.send import finish
    os.makedirs(os.path.dirname(layout.bounce_path(str(tmp_path), 7)))
    logged = []
    sched = SimpleNamespace(home=str(tmp_path), log=SimpleNamespace(line=logged.append),
                            config=SimpleNamespace(rewriter=SimpleNamespace(strip_prefix=lambda r: r)))
    report = b"Sorry, no mailbox here by that name. (#5.1.1)\n"
    real_write, calls = os.write, []

    def write(fd, data):            # the first write gets 10 bytes out, the second fails
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:10]))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(time, "sleep", lambda s: None)
    finish.addbounce(sched, 7, b"joe@x", report)
    monkeypatch.undo()
    text = bounce.addbounce(b"joe@x", report)
    with open(layout.bounce_path(str(tmp_path), 7), "rb") as f:
        assert f.read() == text
    assert logged == ["alert: unable to append to bounce message; HELP! sleeping..."]
    assert calls == [len(text), len(text) - 10, len(text) - 10]
