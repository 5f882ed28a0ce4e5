"""qmail-local .qmail handling: lookup, environment, programs, mbox, safety checks."""
import os

import pytest

from qmailpy.local import dotqmail, headers
from qmailpy.local.mbox import gfrom
from test_local_support import Box, maildirmake

MSG = b"Subject: t\n\nbody\n"


@pytest.fixture
def box(tmp_path):
    return Box(tmp_path)


def env_dump(box, name="env.out"):
    """A program line that writes its environment (NUL-separated) to a file."""
    return "|env -0 > %s\n" % os.path.join(box.home, name)


def read_env(box, name="env.out"):
    with open(os.path.join(box.home, name), "rb") as f:
        pairs = [p.split(b"=", 1) for p in f.read().split(b"\0") if p]
    return {k.decode(): v.decode() for k, v in pairs}


@pytest.mark.parametrize("files, ext, chosen, default", [
    ([".qmail-a-b-c", ".qmail-a-b-default", ".qmail-default"], "a-b-c", ".qmail-a-b-c", None),
    ([".qmail-a-b-default", ".qmail-a-default", ".qmail-default"], "a-b-c", ".qmail-a-b-default", "c"),
    ([".qmail-a-default", ".qmail-default"], "a-b-c", ".qmail-a-default", "b-c"),
    ([".qmail-default"], "a-b-c", ".qmail-default", "a-b-c"),
    ([".qmail-a-default"], "a-", ".qmail-a-default", ""),
    ([".qmail-a:b-default"], "A.B-Xy", ".qmail-a:b-default", "Xy"),   # lower case, '.' -> ':'
    ([".qmail-foo-default"], "foo-default", ".qmail-foo-default", "default"),
    ([".qmail-"], "", ".qmail-", None),
    ([".qmail-default"], "", ".qmail-default", ""),
])
def test_lookup_order(box, files, ext, chosen, default):
    for name in files:
        box.dotqmail(name, env_dump(box, name.lstrip(".") + ".env"))
    code, report = box.deliver(MSG, local="joe-" + ext, dash="-", ext=ext)
    assert (code, report) == (0, "did 0+0+1\n")
    outs = sorted(f for f in os.listdir(box.home) if f.endswith(".env"))
    assert outs == [chosen.lstrip(".") + ".env"]
    env = read_env(box, outs[0])
    assert env.get("DEFAULT") == default


def test_search_returns_none_without_files(box):
    assert dotqmail.search(box.home, "-", "x") is None


def test_no_mailbox_for_extension(box):
    code, report = box.deliver(MSG, local="joe-nope", dash="-", ext="nope")
    assert (code, report) == (100, "Sorry, no mailbox here by that name. (#5.1.1)\n")


def test_no_dotqmail_uses_aliasempty(box):
    assert box.deliver(MSG) == (0, "did 1+0+0\n")
    assert len(box.files()) == 1


def test_empty_dotqmail_uses_aliasempty(box):
    box.dotqmail(".qmail", "")
    assert box.deliver(MSG) == (0, "did 1+0+0\n")


def test_program_environment(box):
    box.dotqmail(".qmail-x-default", env_dump(box))
    code, report = box.deliver(MSG, local="joe-x-Y-z-w", dash="-", ext="x-Y-z-w",
                               host="mail.example.co.uk", sender="bob@ex.org")
    assert code == 0, report
    env = read_env(box)
    assert env["HOST"] == "mail.example.co.uk"
    assert (env["HOST2"], env["HOST3"], env["HOST4"]) == ("mail.example.co", "mail.example", "mail")
    assert env["HOME"] == box.home and env["USER"] == "joe" and env["LOCAL"] == "joe-x-Y-z-w"
    assert env["RECIPIENT"] == "joe-x-Y-z-w@mail.example.co.uk"
    assert env["DTLINE"] == "Delivered-To: joe-x-Y-z-w@mail.example.co.uk\n"
    assert env["RPLINE"] == "Return-Path: <bob@ex.org>\n"
    assert env["SENDER"] == env["NEWSENDER"] == "bob@ex.org"
    assert env["UFLINE"].startswith("From bob@ex.org ") and env["UFLINE"].endswith("\n")
    assert (env["EXT"], env["EXT2"], env["EXT3"], env["EXT4"]) == ("x-Y-z-w", "Y-z-w", "z-w", "w")
    assert env["DEFAULT"] == "Y-z-w"
    assert env["PATH"] == "/usr/bin:/bin"                       # the caller's environment stays


def test_ext_and_host_parts():
    assert headers.ext_parts("") == ["", "", "", ""]
    assert headers.ext_parts("a") == ["a", "", "", ""]
    assert headers.host_parts("localhost") == ["localhost"] * 3
    assert headers.host_parts("a.b") == ["a", "a", "a"]


@pytest.mark.parametrize("files, sender, newsender", [
    ([], "bob@ex.org", "bob@ex.org"),
    ([".qmail-list-owner"], "bob@ex.org", "joe-list-owner@example.com"),
    ([".qmail-list-owner", ".qmail-list-owner-default"], "bob@ex.org", "joe-list-owner-@example.com-@[]"),
    ([".qmail-list-owner"], "", ""),
    ([".qmail-list-owner"], "#@[]", "#@[]"),
])
def test_newsender(box, files, sender, newsender):
    for name in files:
        box.dotqmail(name, "# owner\n")
    box.dotqmail(".qmail-list", env_dump(box))
    code, _ = box.deliver(MSG, local="joe-list", dash="-", ext="list", sender=sender)
    assert code == 0
    assert read_env(box)["NEWSENDER"] == newsender


@pytest.mark.parametrize("status, code", [
    (0, 0), (99, 0), (100, 100), (64, 100), (65, 100), (70, 100), (76, 100), (77, 100),
    (78, 100), (112, 100), (111, 111), (1, 111), (2, 111), (75, 111), (101, 111),
])
def test_program_exit_codes(box, status, code):
    box.dotqmail(".qmail", "|echo said $SENDER; cat > /dev/null; exit %d\n" % status)
    got, report = box.deliver(MSG)
    assert got == code
    assert report == "said alice@example.org\n" + ("did 0+0+1\n" if code == 0 else "")


def test_program_gets_message_and_stderr_reported(box):
    out = os.path.join(box.home, "got")
    box.dotqmail(".qmail", "|cat > %s; echo oops >&2\n" % out)
    assert box.deliver(MSG) == (0, "oops\ndid 0+0+1\n")
    with open(out, "rb") as f:
        assert f.read() == MSG                                 # no Return-Path: programs see the raw message


def test_program_crash(box):
    box.dotqmail(".qmail", "|kill -9 $$\n")
    assert box.deliver(MSG) == (111, "Aack, child crashed. (#4.3.0)\n")


def test_a_program_whose_shell_cannot_start_or_fork_is_a_deferral(box, monkeypatch):
    """qmail-local.c mailprogram(): exec of /bin/sh failing is `Unable to run /bin/sh: E`, a
    fork() refused (RLIMIT_NPROC's EAGAIN) temp_fork()'s `Unable to fork: E`; both 111, and the
    lines after it in .qmail are not reached."""
    from qmailpy.local import program
    box.dotqmail(".qmail", "|echo hi\n./Maildir/\n")
    monkeypatch.setattr(program, "SHELL", "/nonexistent/sh")
    assert box.deliver(MSG) == (111, "Unable to run /bin/sh: file does not exist. (#4.3.0)\n")
    monkeypatch.undo()

    def fork():
        raise BlockingIOError(11, "Resource temporarily unavailable")
    monkeypatch.setattr(os, "fork", fork)
    assert box.deliver(MSG) == (111, "Unable to fork: temporary failure. (#4.3.0)\n")
    assert box.files() == []


def test_99_stops_later_lines(box):
    box.dotqmail(".qmail", "./Maildir/\n|exit 99\n./Maildir/\n")
    assert box.deliver(MSG) == (0, "did 1+0+1\n")
    assert len(box.files()) == 1


def test_lines_in_order_and_comments(box):
    other = maildirmake(os.path.join(box.home, "Other"))
    box.dotqmail(".qmail", "# comment\n./Maildir/  \t\n\n./Other/\n+ignored\n")
    assert box.deliver(MSG) == (0, "did 2+0+0\n")
    assert len(box.files()) == 1 and len(box.files(maildir=other)) == 1


def test_failure_stops_and_keeps_earlier_deliveries(box):
    box.dotqmail(".qmail", "./Maildir/\n|exit 100\n./Maildir/\n")
    assert box.deliver(MSG) == (100, "")
    assert len(box.files()) == 1


def test_blank_first_line(box):
    box.dotqmail(".qmail", "\n./Maildir/\n")
    assert box.deliver(MSG) == (111, "Uh-oh: first line of .qmail file is blank. (#4.2.1)\n")


def test_n_flag_lists_and_counts(box):
    box.dotqmail(".qmail", "./Maildir/\n./Mailbox\n|prog arg\n&a@b\nc@d\n")
    assert box.deliver(MSG, flags=["-n"]) == (0, "maildir ./Maildir/\nmbox ./Mailbox\n"
                                             "program prog arg\nforward a@b\nforward c@d\ndid 2+2+1\n")
    assert box.files() == []


@pytest.mark.parametrize("line, text", [
    ("./Maildir/", "Uh-oh: .qmail has file delivery but has x bit set. (#4.7.0)\n"),
    ("|true", "Uh-oh: .qmail has prog delivery but has x bit set. (#4.7.0)\n"),
])
def test_forward_only(box, line, text):
    box.dotqmail(".qmail", "%s\n" % line, mode=0o744)
    assert box.deliver(MSG) == (111, text)
    box.dotqmail(".qmail", "+list\n%s\n" % line, mode=0o644)
    assert box.deliver(MSG) == (111, text)


def test_writable_home(box):
    os.chmod(box.home, 0o757)
    assert box.deliver(MSG) == (111, "Uh-oh: home directory is writable. (#4.7.0)\n")


def test_sticky_home(box):
    os.chmod(box.home, 0o1755)
    assert box.deliver(MSG) == (111, "Home directory is sticky: user is editing his .qmail file. (#4.2.1)\n")
    assert box.deliver(MSG, flags=["-n"]) == (0, "Warning: home directory is sticky.\nmaildir ./Maildir/\ndid 1+0+0\n")


def test_writable_dotqmail(box):
    box.dotqmail(".qmail", "./Maildir/\n", mode=0o646)
    assert box.deliver(MSG) == (111, "Uh-oh: .qmail file is writable. (#4.7.0)\n")


def test_a_dotqmail_that_is_a_fifo_is_none_and_never_waited_on(box):
    """qmail-local's qmeexists(): open_read() (O_NDELAY), then a .qmail that is not a regular
    file is none. Opened blocking, a FIFO .qmail-x held qmail-local (and its qmail-lspawn slot)
    until something wrote into it."""
    import signal

    def stuck(signum, frame):
        raise AssertionError(".qmail opened blocking")
    os.mkfifo(os.path.join(box.home, ".qmail-x"))
    box.dotqmail(".qmail-default", "./Maildir/\n")
    old = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(5)
    try:
        assert box.deliver(MSG, local="joe-x", dash="-", ext="x") == (0, "did 1+0+0\n")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_a_dotqmail_that_is_no_file_is_never_opened(box):
    """qmail-showctl --check follows postmaster's route through these files as root: a .qmail
    linked to a device must not be opened for reading (/dev/watchdog's open starts the
    watchdog), nor a FIFO (its waiting writer would be let go). The name is resolved to an
    O_PATH descriptor and only a regular file is opened."""
    from waitingfifo import writer_waiting_behind
    with writer_waiting_behind(box.home, ".qmail-x"):
        assert dotqmail.read_file(box.home, ".qmail-x") is None


def test_missing_home(box):
    argv = ["joe", box.home + "/nope", "joe", "", "", "h", "s", "./Maildir/"]
    from qmailpy.local.deliver import deliver
    fd = box.message_fd(MSG)
    try:
        assert deliver(argv, fd, {}) == (
            111, "Unable to switch to %s/nope: file does not exist. (#4.3.0)\n" % box.home)
    finally:
        os.close(fd)


@pytest.mark.parametrize("argv", [
    [], ["a"] * 7, ["a"] * 9, ["joe", "relative/home", "a", "", "", "h", "s", "./Maildir/"],
])
def test_usage(argv):
    from qmailpy.local.deliver import deliver
    assert deliver(argv, 0, {}) == (100, "qmail-local: usage: qmail-local [ -nN ] user homedir "
                                    "local dash ext domain sender aliasempty\n")


def test_an_illegal_option_is_getopts_complaint_then_the_usage_both_for_fd_2():
    from qmailpy.local.deliver import report_parts
    assert report_parts(["-x", "joe", "/", "a", "", "", "h", "s", "./Maildir/"], 0, {}) == (
        100, [(2, b"qmail-local: illegal option -- x\n"),
              (2, b"qmail-local: usage: qmail-local [ -nN ] user homedir local dash ext domain sender "
                  b"aliasempty\n")])


def test_mbox_delivery_and_from_quoting(box):
    body = b"Subject: q\n\nFrom me\n>From you\n>>From them\nFromage\n From x\nlast"
    box.dotqmail(".qmail", "./Mailbox\n")
    assert box.deliver(body, sender="") == (0, "did 1+0+0\n")
    assert box.deliver(b"Subject: 2\n\nx\n", sender="a b@c") == (0, "did 1+0+0\n")
    with open(os.path.join(box.home, "Mailbox"), "rb") as f:
        data = f.read()
    first, second = data.split(b"\n\nFrom a-b@c ")
    head, rest = first.split(b"\n", 1)
    assert head.startswith(b"From MAILER-DAEMON ") and len(head) == len(b"From MAILER-DAEMON Thu Feb 01 09:05:03 2024")
    assert rest == (b"Return-Path: <>\nDelivered-To: joe@example.com\nSubject: q\n\n>From me\n"
                    b">>From you\n>>>From them\nFromage\n From x\nlast")
    assert second.endswith(b"\nReturn-Path: <\"a b\"@c>\nDelivered-To: joe@example.com\nSubject: 2\n\nx\n\n")
    assert os.stat(os.path.join(box.home, "Mailbox")).st_mode & 0o777 == 0o600
    import mailbox
    assert [m["Subject"] for m in mailbox.mbox(os.path.join(box.home, "Mailbox"))] == ["q", "2"]


def test_mbox_unopenable(box):
    box.dotqmail(".qmail", "./nodir/Mailbox\n")
    assert box.deliver(MSG) == (111, "Unable to open ./nodir/Mailbox: file does not exist. (#4.2.1)\n")


def test_gfrom():
    assert gfrom(b"From x") and gfrom(b">>From ") and not gfrom(b"From") and not gfrom(b" From ")


def test_myctime():
    assert headers.myctime(0) == "Thu Jan 01 00:00:00 1970\n"
    assert headers.myctime(1706778303) == "Thu Feb 01 09:05:03 2024\n"


@pytest.mark.parametrize("addr, out", [
    (b"", b""), (b"a@b", b"a@b"), (b"a b@c", b'"a b"@c'), (b"x", b"x"), (b"a.@b", b'"a."@b'),
    (b"a..b@c", b'"a..b"@c'), (b'a"\\@b@c', b'"a\\"\\\\@b"@c'), (b"#@[]", b"#@[]"),
    (b"\xc3\xa9@x", b'"\xc3\xa9"@x'), (b"@b", b'""@b'),
])
def test_quote2(addr, out):
    assert headers.quote2(addr) == out


def test_mbox_lock_held_too_long(box, monkeypatch):
    import fcntl
    from qmailpy.local import mbox
    monkeypatch.setattr(mbox, "LOCK_WAIT", 0.2)
    box.dotqmail(".qmail", "./Mailbox\n")
    path = os.path.join(box.home, "Mailbox")
    with open(path, "ab") as held:
        held.write(b"old\n")
        held.flush()
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert box.deliver(MSG) == (111, "File has been locked for 30 seconds straight. (#4.3.0)\n")
    with open(path, "rb") as f:
        assert f.read() == b"old\n"



@pytest.mark.parametrize("chunk", [1, 2, 3, 7])
def test_mbox_quoting_is_the_same_whatever_the_read_size(box, monkeypatch, chunk):
    """Reads that end inside a line's '>' run or its first five bytes (quoted() then holds them,
    and a block may have nothing to write yet) give the bytes one big read gives."""
    from qmailpy.local import mbox
    body = b"Subject: q\n\nFrom me\n>From you\n>>From them\nFromage\n>>>\nFro\nlast"
    box.dotqmail(".qmail", "./Mailbox\n")
    path = os.path.join(box.home, "Mailbox")
    assert box.deliver(body) == (0, "did 1+0+0\n")
    with open(path, "rb") as f:
        whole = f.read().split(b"\n", 1)[1]              # after the From_ line and its date
    os.unlink(path)
    monkeypatch.setattr(mbox.message, "CHUNK", chunk)
    assert box.deliver(body) == (0, "did 1+0+0\n")
    with open(path, "rb") as f:
        assert f.read().split(b"\n", 1)[1] == whole
    assert whole.endswith(b"\n>From me\n>>From you\n>>>From them\nFromage\n>>>\nFro\nlast\n\n")

def mbox_faults(monkeypatch, flock=None, read=None, write=None, ftruncate=None):
    """Make mbox delivery's flock, message read, write or ftruncate fail with OSError(errno)."""
    import fcntl
    from qmailpy.local import mbox

    def fail(errno):
        raise OSError(errno, os.strerror(errno))
    if flock:
        monkeypatch.setattr(fcntl, "flock", lambda fd, how: fail(flock))
    if read:
        import sys
        real = mbox.message.chunks

        def chunks(fd):
            if sys._getframe(1).f_code.co_name != "quoted":     # the Delivered-To check reads it first
                yield from real(fd)
                return
            yield b"Subject: x\n"
            fail(read)
        monkeypatch.setattr(mbox.message, "chunks", chunks)
    if write:
        monkeypatch.setattr(mbox, "write_all", lambda fd, data: (os.write(fd, bytes(data[:10])), fail(write)))
    if ftruncate:
        monkeypatch.setattr(mbox.os, "ftruncate", lambda fd, size: fail(ftruncate))


@pytest.mark.parametrize("faults,report,left", [
    # a read error or a full disk while the lock is held: the mbox is cut back to its old end
    (dict(read=5), (111, "Unable to read message: input/output error. (#4.3.0)\n"), b"old\n"),
    (dict(write=28), (111, "Unable to write ./Mailbox: out of disk space. (#4.3.0)\n"), b"old\n"),
    # a cut that fails too: still a deferral (what was written stays: nothing can take it back)
    (dict(write=28, ftruncate=5), (111, "Unable to write ./Mailbox: out of disk space. (#4.3.0)\n"),
     b"old\nFrom alice"),
    # no locks here (ENOLCK: NFS without lockd): qmail appends unlocked, and cuts nothing back
    (dict(flock=37), (0, "did 1+0+0\n"), None),
    (dict(flock=37, write=28), (111, "Unable to write ./Mailbox: out of disk space. (#4.3.0)\n"),
     b"old\nFrom alice"),
])
def test_mbox_failures_defer_and_leave_no_half_message_where_locked(box, monkeypatch, faults, report, left):
    box.dotqmail(".qmail", "./Mailbox\n")
    path = os.path.join(box.home, "Mailbox")
    with open(path, "wb") as f:
        f.write(b"old\n")
    mbox_faults(monkeypatch, **faults)
    assert box.deliver(MSG) == report
    with open(path, "rb") as f:
        data = f.read()
    if left is None:
        assert data.startswith(b"old\nFrom alice@example.org ") and data.endswith(MSG + b"\n")
    else:
        assert data == left

# -- the line grammar, the errors and the file's bits, one by one (qmail-local.c's main loop,
#    qmeexists(), checkhome())

def test_commands_kinds_and_line_ends():
    got = list(dotqmail.commands(
        b"/home/joe/Maildir/\n/home/joe/Mailbox\n./Maildir/\r\n&BOX\nhelp@example.org \t\n"
        b"|prog\0one\0two\n\0after a NUL\n# comment\n+list\n+other\n"))
    assert got == [("maildir", "/home/joe/Maildir/"), ("mbox", "/home/joe/Mailbox"),
                   ("mbox", "./Maildir/\r"),                 # only blanks and tabs are stripped
                   ("forward", "BOX"), ("forward", "help@example.org"),
                   ("program", "prog"),                     # a NUL ends the line's argument
                   ("list", None)]                          # a line starting with NUL is blank


def test_safe_ext_keeps_bytes_outside_utf8():
    ext = os.fsdecode(b"Caf\xe9.Au-LAIT")
    assert dotqmail.safe_ext(ext) == os.fsdecode(b"caf\xe9:au-lait")
    assert dotqmail.safe_ext("\u00c9t\u00c9") == "\u00c9t\u00c9"      # only ASCII is lower-cased


def test_home_that_is_no_directory_or_not_searchable(box, monkeypatch):
    path = os.path.join(box.home, "file")
    open(path, "w").close()
    with pytest.raises(dotqmail.errors.Die) as e:
        dotqmail.check_home(path, True)
    assert (e.value.code, e.value.text) == (111, "Unable to switch to %s: not a directory. (#4.3.0)" % path)
    monkeypatch.setattr(os, "access", lambda p, mode: False)
    with pytest.raises(dotqmail.errors.Die) as e:
        dotqmail.check_home(box.home, True)
    assert (e.value.code, e.value.text) == (111, "Unable to switch to %s: access denied. (#4.3.0)" % box.home)


@pytest.mark.parametrize("err, text", [
    (13, "Unable to open .qmail-x: access denied. (#4.3.0)"),
    (1, "Unable to open .qmail-x: permission denied. (#4.3.0)"),
    (5, "Unable to open .qmail-x: input/output error. (#4.3.0)"),
    (2, None), (40, None), (20, None),
])
def test_an_unopenable_dotqmail_defers_or_is_absent(box, monkeypatch, err, text):
    """qmeexists(): a temporary error, EPERM and EACCES defer; any other error is no file."""
    import qmailpy.fileio

    def refuse(path):
        raise OSError(err, os.strerror(err))
    monkeypatch.setattr(qmailpy.fileio, "open_regular", refuse)
    if text is None:
        assert dotqmail.read_file(box.home, ".qmail-x") is None
        return
    with pytest.raises(dotqmail.errors.Die) as e:
        dotqmail.read_file(box.home, ".qmail-x")
    assert (e.value.code, e.value.text) == (111, text)


def test_a_dotqmail_that_cannot_be_read_defers(box, monkeypatch):
    box.dotqmail(".qmail-x", "&joe@example.org\n")

    def fail(fd, n):
        raise OSError(5, "I/O")
    monkeypatch.setattr(os, "read", fail)
    with pytest.raises(dotqmail.errors.Die) as e:
        dotqmail.read_file(box.home, ".qmail-x")
    assert (e.value.code, e.value.text) == (111, "Unable to read .qmail-x: input/output error. (#4.3.0)")


def test_owner_file_stat_error_defers(box, monkeypatch):
    """qmeox() for NEWSENDER: a temporary error stats as one, not as no -owner file."""
    real = os.stat

    def stat(path, *a, **k):
        if path.endswith("-owner"):
            raise OSError(5, "I/O")
        return real(path, *a, **k)
    monkeypatch.setattr(os, "stat", stat)
    with pytest.raises(dotqmail.errors.Die) as e:
        dotqmail.new_sender(box.home, "-", "list", "joe", "example.org", "a@b")
    assert (e.value.code, e.value.text) == (111, "Unable to open .qmail-list-owner: input/output error. (#4.3.0)")


def test_big_dotqmail_whole_and_only_the_owner_x_bit_counts(box):
    text = "".join("&member%05d@example.org\n" % n for n in range(4000))     # > 64 KiB
    assert len(text) > 65536
    box.dotqmail(".qmail-big", text, mode=0o601)
    assert dotqmail.read_file(box.home, ".qmail-big") == (text.encode(), False)
    box.dotqmail(".qmail-x", "|true\n", mode=0o700)
    assert dotqmail.read_file(box.home, ".qmail-x") == (b"|true\n", True)
