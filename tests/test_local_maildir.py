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


@pytest.mark.parametrize("reader,report", [
    ("_copy", "Unable to read message. (#4.3.0)\n"),
    ("line_starts", "Unable to read message: input/output error. (#4.3.0)\n"),
])
def test_message_that_cannot_be_read(box, monkeypatch, reader, report):
    """A read error on the message while it is copied is qmail-local's maildir child's exit 4:
    `Unable to read message. (#4.3.0)`; while the header is searched for our Delivered-To
    line it is bouncexf()'s temp_read(), `Unable to read message: E. (#4.3.0)`. Both
    temporary; nothing stays in tmp/ or new/."""
    import sys
    chunks = md.message.chunks

    def broken(fd):
        if sys._getframe(1).f_code.co_name != reader:
            yield from chunks(fd)
            return
        yield b"Subject: x\n"
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(md.message, "chunks", broken)
    assert box.deliver(MSG) == (111, report)
    assert box.files("tmp") == [] and box.files() == []


def test_timeout(box, monkeypatch):
    monkeypatch.setattr(md, "DEADLINE", -1)
    assert box.deliver(MSG) == (111, "Timeout on maildir delivery. (#4.3.0)\n")
    assert box.files("tmp") == [] and box.files() == []


def test_a_maildir_that_is_a_file_is_unable_to_chdir(box):
    """qmail's maildir child: chdir() failing with a lasting error is exit 2, `Unable to chdir`."""
    path = os.path.join(box.home, "Mailfile")
    open(path, "w").close()
    assert box.deliver(MSG, aliasempty="./Mailfile/") == (111, "Unable to chdir to maildir. (#4.2.1)\n")


def test_a_temporary_error_entering_the_maildir_is_a_temporary_error(box, monkeypatch):
    """chdir() failing with a temporary errno (EIO: a disk or NFS hiccup) is the maildir child's
    exit 1, `Temporary error on maildir delivery`, not the chdir text an admin would chase."""
    real = os.stat

    def stat(path, *a, **kw):
        if os.path.normpath(path) == box.maildir:
            raise OSError(5, "Input/output error", path)
        return real(path, *a, **kw)
    monkeypatch.setattr(md.os, "stat", stat)
    assert box.deliver(MSG) == (111, "Temporary error on maildir delivery. (#4.3.0)\n")
    assert box.files("tmp") == [] and box.files() == []


def test_a_message_whose_size_cannot_be_read_is_a_read_error(box, monkeypatch):
    monkeypatch.setattr(md.message, "size", lambda fd: (_ for _ in ()).throw(OSError(5, "Input/output error")))
    assert box.deliver(MSG) == (111, "Unable to read message. (#4.3.0)\n")
    assert box.files("tmp") == [] and box.files() == []


def test_an_unreadable_maildirsize_defers_before_anything_is_written(box):
    os.mkdir(os.path.join(box.maildir, "maildirsize"))          # read() fails: EISDIR
    assert box.deliver(MSG) == (111, "Temporary error on maildir delivery. (#4.3.0)\n")
    assert box.files("tmp") == [] and box.files() == []


def test_a_name_taken_in_tmp_is_tried_three_times_two_seconds_apart(box, monkeypatch):
    """qmail's maildir child: a tmp/ name that exists is retried after sleep(2), three tries in
    all, then `Temporary error`; the file already there is never opened or removed."""
    name = "1.M1P1Q1.host,S=1"
    taken = os.path.join(box.maildir, "tmp", name)
    with open(taken, "wb") as f:
        f.write(b"someone else's")
    slept = []
    monkeypatch.setattr(md, "unique_name", lambda size, host: name)
    monkeypatch.setattr(md.time, "sleep", slept.append)
    assert box.deliver(MSG) == (111, "Temporary error on maildir delivery. (#4.3.0)\n")
    assert slept == [2, 2]
    assert box.files("tmp") == [name] and box.read(name, "tmp") == b"someone else's" and box.files() == []


def test_a_name_free_at_the_second_try_is_delivered(box, monkeypatch):
    names = iter(["1.M1P1Q1.host,S=1", "2.M1P1Q2.host,S=%d" % (len(MSG) + 62)])
    open(os.path.join(box.maildir, "tmp", "1.M1P1Q1.host,S=1"), "w").close()
    slept = []
    monkeypatch.setattr(md, "unique_name", lambda size, host: next(names))
    monkeypatch.setattr(md.time, "sleep", slept.append)
    assert box.deliver(MSG) == (0, "did 1+0+0\n")
    assert slept == [2] and box.files() == ["2.M1P1Q2.host,S=%d" % (len(MSG) + 62)]


def test_a_link_reported_failed_but_made_is_a_delivery(box, monkeypatch):
    """NFS: a retransmitted link() can fail (EEXIST) after the first one was made; the file
    is then in new/ and the delivery is done, once, not deferred (a retry would duplicate it)."""
    real = os.link

    def link(src, dst):
        real(src, dst)
        raise FileExistsError(17, "File exists", dst)
    monkeypatch.setattr(md.os, "link", link)
    assert box.deliver(MSG) == (0, "did 1+0+0\n")
    assert box.only()[1].endswith(MSG) and box.files("tmp") == []


@pytest.mark.parametrize("errno", [1, 18, 95])          # EPERM, EXDEV, EOPNOTSUPP: no hard links here
def test_where_links_are_unsupported_the_file_is_renamed(box, monkeypatch, errno):
    monkeypatch.setattr(md.os, "link", lambda src, dst: (_ for _ in ()).throw(OSError(errno, "no links", dst)))
    assert box.deliver(MSG) == (0, "did 1+0+0\n")
    assert box.only()[1].endswith(MSG) and box.files("tmp") == []


def test_rename_never_replaces_a_file_in_new(box, monkeypatch):
    """The rename fallback keeps link()'s promise: a name already in new/ is never overwritten."""
    name = "1.M1P1Q1.host,S=1"
    with open(os.path.join(box.maildir, "new", name), "wb") as f:
        f.write(b"delivered before")
    monkeypatch.setattr(md, "unique_name", lambda size, host: name)
    monkeypatch.setattr(md.os, "link", lambda src, dst: (_ for _ in ()).throw(OSError(18, "cross-device", dst)))
    assert box.deliver(MSG) == (111, "Temporary error on maildir delivery. (#4.3.0)\n")
    assert box.only() == (name, b"delivered before") and box.files("tmp") == []


@pytest.mark.parametrize("errno,want,delivered", [
    (22, (0, "did 1+0+0\n"), 1),            # EINVAL: this file system cannot sync a directory
    (5, (111, "Temporary error on maildir delivery. (#4.3.0)\n"), 0),
])
def test_a_failed_fsync_of_new_takes_the_file_back_out(box, monkeypatch, errno, want, delivered):
    """The link is made but new/ cannot be synced (EIO): the message is not durable, the
    delivery is deferred, and the file leaves new/ again, or the retry would deliver it twice.
    A file system that cannot sync a directory at all (EINVAL) is not an error."""
    real = os.fsync

    def fsync(fd):
        if os.path.isdir("/proc/self/fd/%d" % fd):
            raise OSError(errno, os.strerror(errno))
        real(fd)
    monkeypatch.setattr(md.os, "fsync", fsync)
    assert box.deliver(MSG) == want
    assert len(box.files()) == delivered and box.files("tmp") == []


def test_a_tmp_file_that_cannot_be_removed_after_the_link_is_still_a_delivery(box, monkeypatch):
    """The message is in new/ and synced: an unlink of its tmp/ name that fails leaves a stray
    tmp/ file (cleaned as any), never a deferral that would deliver it again."""
    def unlink(path):
        raise OSError(5, "Input/output error", path)
    monkeypatch.setattr(md.os, "unlink", unlink)
    assert box.deliver(MSG) == (0, "did 1+0+0\n")
    name, data = box.only()
    assert data.endswith(MSG) and box.files("tmp") == [name]


def test_a_bug_in_qmail_local_is_a_deferral_with_one_line(box, monkeypatch):
    """An exception nobody expected (a bug) must not lose the message: exit 111, the report one
    line `qmail-local: unexpected TYPE: TEXT at WHERE (#4.3.0)`, and nothing delivered."""
    import qmailpy.local.deliver as deliver

    def dtline(local, host):
        raise KeyError("a bug")
    monkeypatch.setattr(deliver.headers, "dtline", dtline)
    code, report = box.deliver(MSG)
    assert code == 111
    assert re.fullmatch(r"qmail-local: unexpected KeyError: 'a bug' at test_local_maildir\.py:\d+:dtline"
                        r" < qmailpy/local/deliver\.py:\d+:_lines < .* \(#4\.3\.0\)\n", report), report
    assert box.files() == [] and box.files("tmp") == []


def test_a_maildir_the_owner_cannot_search_is_unable_to_chdir(box, monkeypatch):
    """qmail-local runs as the mailbox owner: a Maildir it may not enter (mode 0600) is chdir()'s
    EACCES, `Unable to chdir to maildir`, 111. (Root, running the tests, may enter any directory:
    access() says what the owner would meet.)"""
    real = os.access
    monkeypatch.setattr(md.os, "access", lambda path, mode: False if os.path.normpath(path) == box.maildir else real(path, mode))
    assert box.deliver(MSG) == (111, "Unable to chdir to maildir. (#4.2.1)\n")
    assert box.files("tmp") == [] and box.files() == []


@pytest.mark.parametrize("how", ["fstat fails", "not a regular file"])
def test_the_size_in_the_name_is_counted_when_fstat_cannot_tell(box, monkeypatch, how):
    """Maildir++'s S=: fstat's st_size for the regular mess file qmail-lspawn gives; counted by
    reading when fstat fails or fd 0 is something else that can be rewound (a device)."""
    from qmailpy.local.deliver import deliver
    if how == "fstat fails":
        real = os.fstat
        monkeypatch.setattr(md.message.os, "fstat",
                            lambda fd: (_ for _ in ()).throw(OSError(5, "Input/output error")) if fd == fd0 else real(fd))
        fd0 = box.message_fd(MSG)
    else:
        fd0 = os.open("/dev/null", os.O_RDONLY)           # a character device: an empty message
    try:
        assert deliver(["joe", box.home, "joe", "", "", "example.com", "a@b", "./Maildir/"], fd0, box.env) == (
            0, "did 1+0+0\n")
    finally:
        os.close(fd0)
    name, data = box.only()
    assert data == b"Return-Path: <a@b>\nDelivered-To: joe@example.com\n" + (MSG if how == "fstat fails" else b"")
    assert name.endswith(",S=%d" % len(data))
