"""qmail-local Maildir delivery: exact bytes, file names, a standard reader, failures."""
import mailbox
import os
import re

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from qmailpy.local import maildir as md
from test_local_support import Box

MSG = b"Received: from x\nSubject: hello\n\nFrom the body\nlast line without newline"
NAME = re.compile(r"^(\d+)\.M(\d{1,6})P(\d+)Q(\d+)\.([^/:]+),S=(\d+)$")


@pytest.fixture
def box(tmp_path):
    return Box(tmp_path)


def test_exact_bytes(box):
    code, report = box.deliver(MSG)
    assert (code, report) == (0, "did 1+0+0\n")
    name, data = box.only()
    assert data == b"Return-Path: <alice@example.org>\nDelivered-To: joe@example.com\n" + MSG
    assert box.files("tmp") == []
    assert box.files("cur") == []
    assert os.stat(os.path.join(box.maildir, "new", name)).st_mode & 0o777 == 0o600


def test_name_format(box):
    box.deliver(MSG)
    box.deliver(MSG)
    names = box.files()
    assert len(names) == 2                       # same second, same pid: still two names
    for name in names:
        m = NAME.match(name)
        assert m, name
        sec, usec, pid, q, host, size = m.groups()
        assert abs(int(sec) - __import__("time").time()) < 60
        assert int(usec) < 1000000 and int(pid) == os.getpid()
        assert host == md.hostname()
        assert int(size) == len(box.read(name))


def test_hostname_is_sanitized(monkeypatch):
    class U:
        nodename = "a/b:c" + "x" * 80
    monkeypatch.setattr(os, "uname", lambda: U)
    host = md.hostname()
    assert host.startswith("a\\057b\\072c") and "/" not in host and ":" not in host
    assert len("a/b:c" + "x" * 59) == 64 and host.endswith("x" * 59) and not host.endswith("x" * 60)


def test_standard_reader_sees_it(box):
    box.deliver(MSG, sender="")
    box.deliver(b"Subject: second\n\nbody\n")
    mbox = mailbox.Maildir(box.maildir, factory=None, create=False)
    msgs = sorted((m["Subject"], m) for m in mbox)
    assert [s for s, _ in msgs] == ["hello", "second"]
    hello = msgs[0][1]
    assert hello["Return-Path"] == "<>"
    assert hello["Delivered-To"] == "joe@example.com"
    assert hello.get_subdir() == "new"
    key = [k for k in mbox.keys() if mbox[k]["Subject"] == "hello"][0]
    assert mbox.get_bytes(key) == b"Return-Path: <>\nDelivered-To: joe@example.com\n" + MSG


def test_return_path_quoting(box):
    box.deliver(b"\n", sender='a b"c@ex.org')
    assert box.only()[1].startswith(b'Return-Path: <"a b\\"c"@ex.org>\n')


def test_delivered_to_has_full_local_with_extension(box):
    box.dotqmail(".qmail-list", "./Maildir/\n")
    code, _ = box.deliver(MSG, local="joe-list", dash="-", ext="list", host="Example.COM")
    assert code == 0
    assert b"\nDelivered-To: joe-list@Example.COM\n" in box.only()[1]


def test_loop_detected(box):
    code, report = box.deliver(b"Delivered-To: joe@example.com\nSubject: x\n\nbody\n")
    assert (code, report) == (100, "This message is looping: it already has my Delivered-To line. (#5.4.6)\n")
    assert box.files() == []


@pytest.mark.parametrize("msg", [
    b"Subject: x\n\nDelivered-To: joe@example.com\n",          # in the body: not a loop
    b"Delivered-To: JOE@example.com\n\n",                       # byte-exact comparison
    b"Delivered-To: joe@example.com\r\n\r\n",                   # CRLF is another line
    b"Delivered-To: joe@example.com",                           # no newline: not a whole line
    b"Delivered-To: joe@example.com.au\n\n",
])
def test_not_a_loop(box, msg):
    assert box.deliver(msg)[0] == 0


def test_loop_check_skipped_with_n(box):
    code, report = box.deliver(b"Delivered-To: joe@example.com\n\n", flags=["-n"])
    assert (code, report) == (0, "maildir ./Maildir/\ndid 1+0+0\n")
    assert box.files() == []


def test_missing_maildir(box):
    code, report = box.deliver(MSG, aliasempty="./Nowhere/")
    assert (code, report) == (111, "Unable to chdir to maildir. (#4.2.1)\n")


def test_maildir_without_tmp(box):
    os.rmdir(os.path.join(box.maildir, "tmp"))
    code, report = box.deliver(MSG)
    assert (code, report) == (111, "Temporary error on maildir delivery. (#4.3.0)\n")
    assert box.files() == []


def test_failed_link_leaves_nothing(box):
    new = os.path.join(box.maildir, "new")
    os.rmdir(new)
    open(new, "w").close()                       # link() into new/ fails (ENOTDIR), even for root
    code, report = box.deliver(MSG)
    assert (code, report) == (111, "Temporary error on maildir delivery. (#4.3.0)\n")
    assert box.files("tmp") == []


def test_unseekable_message(box):
    from qmailpy.local.deliver import deliver
    r, w = os.pipe()                              # qmail-lspawn gives a file; a pipe cannot rewind
    try:
        code, report = deliver(["joe", box.home, "joe", "", "", "h", "s", "./Maildir/"], r, box.env)
    finally:
        os.close(r)
        os.close(w)
    assert (code, report) == (111, "Unable to rewind message. (#4.3.0)\n")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=3000), st.text(max_size=30).filter(lambda s: "\0" not in s))
def test_any_message_round_trips(tmp_path_factory, data, sender):
    box = Box(tmp_path_factory.mktemp("rt"))
    code, report = box.deliver(data, sender=sender)
    assert code == 0, report
    name, got = box.only()
    first, second, rest = got.split(b"\n", 2)
    assert first.startswith(b"Return-Path: <") and first.endswith(b">")
    assert second == b"Delivered-To: joe@example.com"
    assert rest == data
    assert name.endswith(",S=%d" % len(got))


def test_message_that_cannot_be_read(box, monkeypatch):
    """A read error on the message while it is copied is qmail-local's maildir child's exit 4:
    `Unable to read message. (#4.3.0)`, temporary; nothing stays in tmp/ or new/."""
    import sys
    chunks = md.message.chunks

    def broken(fd):
        if sys._getframe(1).f_code.co_name != "_copy":     # the Delivered-To check reads it first
            yield from chunks(fd)
            return
        yield b"Subject: x\n"
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(md.message, "chunks", broken)
    assert box.deliver(MSG) == (111, "Unable to read message. (#4.3.0)\n")
    assert box.files("tmp") == [] and box.files() == []


def test_timeout(box, monkeypatch):
    monkeypatch.setattr(md, "DEADLINE", -1)
    assert box.deliver(MSG) == (111, "Timeout on maildir delivery. (#4.3.0)\n")
    assert box.files("tmp") == [] and box.files() == []
