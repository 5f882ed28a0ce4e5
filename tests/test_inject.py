"""qmail-inject: qmail's token822 rules, the header split, and the recorded cases of tests/inject/.

Case files (tests/inject/*.txt), one directive per line:
    # comment
    @args WORDS              qmail-inject's arguments (shell words)
    @env NAME=VALUE          environment (nothing else is inherited; QMAILHOME is the case's home)
    @control NAME VALUE      control/NAME (control/me is host.example unless given)
    @mftfile ADDRESS...      a QMAILMFTFILE listing these mailing lists
    @now SECONDS, @pid N     the time and pid qmail-inject uses (default 812090814 = 26 Sep 1995
                             04:46:54, 4711)
    @qq CODE                 the exit code of qmail-queue (default 0)
    < line                   a line of stdin ("<" alone: an empty line)
    @noeol                   stdin's last line has no newline
    > line                   a line of the output: stdout with -n, else what qmail-queue got
    Q: F<sender> / T<rcpt>   the envelope qmail-queue got (none: it was not started)
    E: line                  a line of stderr
    @exit N                  the exit code (default 0)
The cases run in-process (run() with a stand-in queue); tests/test_inject_e2e.py runs the
real programs.
"""
import glob
import io
import os
import shlex

import pytest
from hypothesis import given, settings, strategies as st

from conftest import ROOT
from qmailpy.inject import headers as H
from qmailpy.inject import main as M
from qmailpy.inject import rewrite as RW
from qmailpy.inject import token822 as T
from qmailpy.proto.quote import quote2

CASES = sorted(glob.glob(os.path.join(ROOT, "tests", "inject", "*.txt")))


# -- token822

def types(text):
    return [t.type for t in T.parse(text)]


def test_parse_token_kinds():
    toks = T.parse(b'"Joe \\"Q\\"" (a (nested) \\) comment) <joe@[1.2.3.4]>, x.y;:')
    assert [(t.type, t.text) for t in toks] == [
        (T.QUOTE, b'Joe "Q"'), (T.COMMENT, b"a nested ) comment"), (T.LEFT, b""), (T.ATOM, b"joe"),
        (T.AT, b""), (T.LITERAL, b"1.2.3.4"), (T.RIGHT, b""), (T.COMMA, b""), (T.ATOM, b"x"),
        (T.DOT, b""), (T.ATOM, b"y"), (T.SEMI, b""), (T.COLON, b"")]


def test_parse_atoms_take_brackets_and_escapes():
    """An atom with ')', ']', '\\' or a byte outside 32..126 is a quoted string (atomcheck())."""
    assert [(t.type, t.text) for t in T.parse(b"a)b c]d e\\ f g\\\\h caf\xc3\xa9 x\x01y plain")] == [
        (T.QUOTE, b"a)b"), (T.QUOTE, b"c]d"), (T.ATOM, b"e f"), (T.QUOTE, b"g\\h"), (T.QUOTE, b"caf\xc3\xa9"),
        (T.QUOTE, b"x\x01y"), (T.ATOM, b"plain")]


@pytest.mark.parametrize("bad", [b"(open", b'"open', b"[open", b")x", b"]x", b'"a\\'])
def test_parse_failures(bad):
    with pytest.raises(T.ParseError):
        T.parse(bad)


def test_unparse_spacing():
    assert T.unparse(T.parse(b"To:joe@x(c)<a@b>(d),g:;")) == b"To: joe@x (c) <a@b>(d), g: ;\n"


def test_unparse_folds_after_commas_within_80_columns():
    field = b"To: " + b", ".join(b"user%02d@example.com" % i for i in range(8))
    got = T.unparse(T.parse(field))
    lines = got.split(b"\n")
    assert lines[-1] == b""
    assert all(len(line) <= 80 for line in lines)
    assert len(lines) == 4 and all(line.startswith(b"  user") for line in lines[1:-1])
    assert all(line.endswith(b",") for line in lines[:-2])
    assert T.parse(got) == T.parse(field)


def test_quote2():
    assert quote2(b"joe@x") == b"joe@x"
    assert quote2(b"joe blow@x") == b'"joe blow"@x'
    assert quote2(b'a"b\\c@x') == b'"a\\"b\\\\c"@x'
    assert quote2(b".joe@x") == b'".joe"@x'
    assert quote2(b"a..b") == b'"a..b"'
    assert quote2(b"") == b""
    assert quote2(b"@x") == b'""@x'
    assert quote2(b"a@b@x") == b'"a@b"@x'


SAFE = st.binary(max_size=40).filter(lambda b: b"\\" not in b)


SOUP = st.binary(max_size=30) | st.lists(st.sampled_from(
    [b"a", b"b", b" ", b"\\", b"(", b")", b'"', b"[", b"]", b"<", b">", b",", b";", b":", b"@", b".", b"\n", b"\r",
     b"\t", b"\xe9", b"\x01"]), max_size=15).map(b"".join)


def plain_atoms(tokens):
    """No atom that an escape gave white space or a special, nor an empty one (a backslash at
    the end): qmail writes atoms back unescaped (token822_unparse), so those re-read as other
    tokens, in qmail too; the stability below is claimed for the rest."""
    return all(t.text and not T.NOT_ATOM.intersection(t.text) for t in tokens if t.type == T.ATOM)


@settings(max_examples=300)
@given(SAFE | SOUP)
def test_parse_then_render_is_stable(data):
    """render(parse(render(parse(x)))) == render(parse(x)), and only ParseError is raised;
    without a backslash, the rendered text parses back to the same tokens."""
    try:
        tokens = T.parse(data)
    except T.ParseError:
        return
    T.unquote(tokens)
    if b"\\" not in data:
        assert T.parse(T.unparse(tokens)) == tokens
    if not plain_atoms(tokens):
        return
    once = T.unparse(tokens)
    assert T.unparse(T.parse(once)) == once


@settings(max_examples=300)
@given(SOUP)
def test_address_lists_render_stably(data):
    """addrlist(): ParseError or a list that renders, parses and renders again the same (the commas
    it puts between two words are there the second time)."""
    def render(text):
        return T.unparse(T.addrlist(T.parse(text), lambda addr: None))
    try:
        tokens = T.parse(b"To: " + data)
        once = render(b"To: " + data)
    except T.ParseError:
        return
    if plain_atoms(tokens):
        assert render(once) == once


@given(st.binary(max_size=30))
def test_quote2_then_unquote_gives_the_address_back(local):
    addr = local + b"@example.com"
    assert T.unquote(T.parse(quote2(addr))) == addr


def test_addrlist_reads_right_to_left_and_adds_missing_commas():
    seen = []

    def cb(addr):
        seen.append(T.unquote(reversed(addr)))
    out = T.addrlist(T.parse(b"To: a b, <c> d, g: e; f"), cb)
    assert seen == [b"f", b"e", b"d", b"c", b"b", b"a"]
    assert T.unparse(out) == b"To: a, b, <c>, d, g: e;, f\n"


@pytest.mark.parametrize("field", [
    b"To: joe@x>",                  # a '>' without '<'
    b"To: list: a, b",              # a ':' outside a group (no ';' after it)
    b"To: a;;",                     # a group inside a group
])
def test_addrlist_refuses_what_qmail_refuses(field):
    with pytest.raises(T.ParseError):
        T.addrlist(T.parse(field), lambda a: None)


@pytest.mark.parametrize("field, addresses, text", [
    (b"To: joe <joe@x", [b"joe<joe@x"], b"To: joe <joe@x\n"),     # a '<' without '>' is in the address
    (b"To: <a@x> g: b;", [b"b"], b"To: <a@x>g: b;\n"),            # a group's name runs back to a comma
    (b"To: g: a, b;, c", [b"c", b"b", b"a"], b"To: g: a, b;, c\n"),
])
def test_addrlist_as_qmails_token822_addrlist(field, addresses, text):
    seen = []
    out = T.addrlist(T.parse(field), lambda addr: seen.append(T.unquote(reversed(addr))))
    assert (seen, T.unparse(out)) == (addresses, text)


# -- rewriting

CTL = RW.ControlTokens(b"mail", b"example.com", b"plus.example")


@pytest.mark.parametrize("given_, expected", [
    (b"joe", b"joe@mail.example.com"),
    (b"joe@hq", b"joe@hq.example.com"),
    (b"joe@hq+", b"joe@hq.plus.example"),
    (b"joe@x.example.", b"joe@x.example"),
    (b"joe@", b"joe@mail.example.com"),
    (b"@r1,@r2:joe@x.example", b"@r1,@r2:joe@x.example"),    # quote2 quotes the route: no route
    (b"joe@[192.0.2.1]", b"joe@[192.0.2.1]"),
    (b"foo@[]", b"foo@[]"),
    (b"", b""),
    (b"joe blow@x.example", b"joe blow@x.example"),
])
def test_rewrite_text(given_, expected):
    assert RW.rewrite_text(given_, CTL) == expected


@pytest.mark.parametrize("to", [b"<@foo:>", b"<.>", b"<@>", b"<@.>", b"<@a.example>", b"<@a,@b:>"])
def test_addresses_rwgeneric_empties_in_a_header_are_the_null_address(tmp_path, to):
    """rwgeneric(): a route alone (<@foo:>), a lone '.' or '@', a route with no colon: <>."""
    code, got, _ = _run_bytes(tmp_path, ["-n"], b"To: " + to + b"\n\nbody\n")
    assert (code, got.split(b"\n")[4]) == (0, b"To: <>")


def test_plus_applies_to_defaulthost():
    assert RW.rewrite_text(b"joe", RW.ControlTokens(b"hq+", b"example.com", b"plus.example")) == (
        b"joe@hq.plus.example")


# -- header fields

@pytest.mark.parametrize("field, number", [
    (b"To: x\n", H.TO), (b"TO: x\n", H.TO), (b"tO :x\n", H.TO), (b"Resent-Cc: x\n", H.R_CC),
    (b"RESENT-BCC: x\n", H.R_BCC), (b"Toe: x\n", 0), (b"To\n", 0), (b"Content-Length: 3\n", H.CONTENTLENGTH),
    (b"Mail-Followup-To: x\n", H.MAILFOLLOWUPTO), (b"X-To: x\n", 0), (b"Resent_To: x\n", 0)])
def test_known_fields(field, number):
    assert H.known(field) == number


@pytest.mark.parametrize("line, ok", [
    (b"Subject: x\n", True), (b"X-A :x\n", True), (b":x\n", False), (b" To: x\n", False),
    (b"no colon\n", False), (b"Two words: x\n", False), (b"caf\xc3\xa9: x\n", False), (b"X:\n", True)])
def test_valid_fields(line, ok):
    assert H.valid(line) is ok


def test_split():
    lines = [b"From alice Tue\n", b"A: 1\n", b"  more\n", b"B: 2\n", b"not a field\n"]
    assert list(H.split(iter(lines))) == [
        ("field", b"MBOX-Line: From alice Tue\n"), ("field", b"A: 1\n  more\n"), ("field", b"B: 2\n"),
        ("end", None), ("body", b"\nnot a field\n")]
    assert list(H.split(iter([b"A: 1\n", b"\r\n", b"x\n"]))) == [("field", b"A: 1\n"), ("end", None), ("body", b"\n\r\n")]
    assert list(H.split(iter([b"A: 1\n", b"\n", b"x"]))) == [("field", b"A: 1\n"), ("end", None), ("body", b"\n")]
    assert list(H.split(iter([b"A: 1"]))) == [("field", b"A: 1\n"), ("end", None)]


def test_split_keeps_a_long_folded_field_whole():
    """A field of many continuation lines (a newsletter script's Bcc, one address a line) comes
    out as one field, byte for byte. split() collects its lines and joins them once, as
    headerbody.c's stralloc_cat() grows it in place (adding each line to a bytes object copied
    the field every time: 17 s at 100,000 lines; speed is make bench's, not a test's, to judge)."""
    n = 2000
    lines = [b"Bcc: a0@x.example,\n"] + [b" a%d@x.example,\n" % i for i in range(1, n)] + [b"\tz@x.example\n",
                                                                                     b"\n", b"body\n"]
    got = list(H.split(iter(lines)))
    assert got == [("field", b"".join(lines[:-2])), ("end", None), ("body", b"\n")]


# -- recorded cases

class Case:
    def __init__(self, path):
        self.name = os.path.basename(path)
        self.args, self.env, self.controls, self.mft = [], {}, {"me": "host.example"}, None
        self.now, self.pid, self.qq, self.exit = 812090814, 4711, 0, 0
        self.stdin, self.noeol, self.out, self.envelope, self.err = [], False, [], [], []
        with open(path, encoding="utf-8") as f:
            for line in f.read().split("\n"):
                self._line(line)

    def _line(self, line):
        if not line or line.startswith("#"):
            return
        word, _, rest = line.partition(" ")
        if word == "@args":
            self.args = shlex.split(rest)
        elif word == "@env":
            name, _, value = rest.partition("=")
            self.env[name] = value
        elif word == "@control":
            name, _, value = rest.partition(" ")
            self.controls[name] = value
        elif word == "@mftfile":
            self.mft = rest.split()
        elif word in ("@now", "@pid", "@qq", "@exit"):
            setattr(self, word[1:], int(rest))
        elif word == "@noeol":
            self.noeol = True
        elif word == "<":
            self.stdin.append(rest)
        elif word == ">":
            self.out.append(rest)
        elif word == "Q:":
            self.envelope.append(rest)
        elif word == "E:":
            self.err.append(rest)
        else:
            raise ValueError("%s: cannot parse %r" % (self.name, line))

    def stdin_bytes(self):
        data = "".join(line + "\n" for line in self.stdin).encode("utf-8")
        return data[:-1] if self.noeol else data


class FakeQueue:
    def __init__(self, code):
        self.code, self.message, self.envelope = code, bytearray(), None

    def write(self, data):
        self.message += data

    def finish(self, sender, recipients):
        self.envelope = ["F" + sender.decode()] + ["T" + r.decode() for r in recipients]
        return self.code

    def abort(self):
        self.envelope = "aborted"


@pytest.mark.parametrize("path", CASES, ids=os.path.basename)
def test_case(tmp_path, capfd, path):
    case = Case(path)
    home = tmp_path / "qmail"
    (home / "control").mkdir(parents=True)
    for name, value in case.controls.items():
        (home / "control" / name).write_text(value + "\n")
    env = {"QMAILHOME": str(home)}
    if case.mft is not None:
        (tmp_path / "lists").write_text("".join(a + "\n" for a in case.mft))
        env["QMAILMFTFILE"] = str(tmp_path / "lists")
    env.update(case.env)
    queue = FakeQueue(case.qq)
    stdout = io.BytesIO()
    code = M.run(case.args, env, io.BytesIO(case.stdin_bytes()), stdout, now=case.now, pid=case.pid,
                 open_queue=lambda environ: queue)
    err = capfd.readouterr().err
    assert err.split("\n")[:-1] == case.err
    assert code == case.exit
    got = stdout.getvalue() or bytes(queue.message)
    assert got.decode("utf-8").split("\n") == (case.out + [""] if case.out else [""])
    assert (queue.envelope or []) == case.envelope


def test_n_ignores_a_closed_stdout(tmp_path):
    """-n: qmail-inject's put() drops substdio_put()'s -1, so a reader that goes away early
    (qmail-inject -n | head -1) costs nothing: the message is read to its end, exit 0."""
    import subprocess
    from conftest import program
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "me").write_text("host.example\n")
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([program("qmail-inject"), "-n", "joe"], stdout=w, stderr=subprocess.PIPE,
                           input=b"Subject: big\n\n" + b"x" * 200 + b"\n" * 100000, timeout=60,
                           env={"QMAILHOME": str(tmp_path), "USER": "bob", "PATH": os.environ["PATH"]})
    finally:
        os.close(w)
    assert (p.returncode, p.stderr) == (0, b"")


def _run_bytes(tmp_path, args, data, env=None):
    (tmp_path / "control").mkdir(exist_ok=True)
    (tmp_path / "control" / "me").write_text("host.example\n")
    queue, stdout = FakeQueue(0), io.BytesIO()
    code = M.run(args, dict({"QMAILHOME": str(tmp_path), "USER": "bob"}, **(env or {})), io.BytesIO(data),
                 stdout, now=812090814, pid=4711, open_queue=lambda environ: queue)
    return code, stdout.getvalue() or bytes(queue.message), queue.envelope


def test_a_nul_in_the_return_path_ends_the_sender_as_in_qmail(tmp_path):
    """qmail_from(&qqt,sender.s) and quote2(sa.s) take the sender as a C string: a Return-Path
    field with a NUL in its address gives the envelope sender up to the NUL (the Return-Path line
    of -n too). qmailpy handed the whole address to the queue, whose envelope cannot hold a NUL:
    'internal bug', exit 111, nothing queued."""
    msg = b"Return-Path: <a\0b@x>\nTo: joe@x.example\n\nbody\n"
    head = (b"Date: 26 Sep 1995 04:46:54 -0000\nMessage-ID: <19950926044654.4711.qmail@host.example>\n"
            b"From: bob@host.example\nTo: joe@x.example\n\nbody\n")
    assert _run_bytes(tmp_path, [], msg) == (0, head, ["Fa", "Tjoe@x.example"])
    assert _run_bytes(tmp_path, ["-n"], msg) == (0, b"Return-Path: <a>\n" + head, None)


def test_a_sender_that_does_not_parse_is_shown_as_qmail_shows_it(tmp_path, capfd):
    """-f: qmail-inject.c's doordie(&sender,...) prints the sender as quote2() made it, and
    with no newline after it (the line it shows is not a header field). qmailpy printed the
    argument as given, with a newline."""
    assert _run_bytes(tmp_path, ["-f", "a b@x(y", "joe"], b"To: joe\n\nbody\n") == (100, b"", None)
    assert capfd.readouterr().err == 'qmail-inject: fatal: unable to parse this line:\n"a b"@x(y'


def test_a_control_that_does_not_parse_is_shown_as_qmail_shows_it(tmp_path, capfd):
    """getcontrols() parses '.' defaultdomain, then '@' defaulthost, then '.' plusdomain, and
    doordie() shows the first text that fails, with no newline after it; qmailpy showed the
    three values joined by spaces, with a newline."""
    env = {"QMAILDEFAULTHOST": "h(", "QMAILDEFAULTDOMAIN": "ex(ample"}
    assert _run_bytes(tmp_path, ["joe"], b"\nbody\n", env) == (100, b"", None)
    assert capfd.readouterr().err == "qmail-inject: fatal: unable to parse this line:\n.ex(ample"
    assert _run_bytes(tmp_path, ["joe"], b"\nbody\n", {"QMAILDEFAULTHOST": "h("}) == (100, b"", None)
    assert capfd.readouterr().err == "qmail-inject: fatal: unable to parse this line:\n@h("


def test_an_unreadable_mailing_list_file_is_a_read_error_at_the_start(tmp_path, capfd):
    """qmail-inject.c reads QMAILMFTFILE first (getcontrols()'s mft_init()), whatever the message:
    a file it cannot read is die_read()'s 'read error', exit 111, even for a resend or a message
    with its own Mail-Followup-To. qmailpy read it only for a To/Cc message without one, and said
    'unable to read PATH: Is a directory'."""
    lists = tmp_path / "lists"
    lists.mkdir()
    for msg in (b"To: joe\n\nbody\n", b"Resent-To: joe\n\nbody\n", b"Mail-Followup-To: x\nTo: joe\n\nbody\n"):
        assert _run_bytes(tmp_path, ["-n"], msg, {"QMAILMFTFILE": str(lists)}) == (111, b"", None)
        assert capfd.readouterr().err == "qmail-inject: fatal: read error\n"


def test_a_control_it_cannot_read_is_a_read_error(tmp_path, capfd):
    """getcontrols(): control_rldef() failing on control/defaultdomain, defaulthost, plusdomain
    or idhost is die_read(), 'read error', exit 111, nothing queued. qmailpy said 'unable to
    read controls: control/defaulthost: unable to read: Is a directory'."""
    for name in ("defaultdomain", "defaulthost", "plusdomain", "idhost"):
        home = tmp_path / name
        (home / "control" / name).mkdir(parents=True)
        assert _run_bytes(home, ["joe"], b"\nbody\n") == (111, b"", None)
        assert capfd.readouterr().err == "qmail-inject: fatal: read error\n"


def test_nul_8bit_and_very_long_lines_pass_byte_for_byte(tmp_path):
    """qmail-inject is 8-bit clean: a field it does not rewrite and the body go through as they
    came, NUL bytes, bytes over 127 and lines of hundreds of kilobytes included. In an address
    the NUL byte makes its word a quoted string (atomcheck()) and ends the envelope address
    (qmail_to() takes a C string)."""
    subject = b"Subject: a\0b \xe9\xff " + b"x" * 200000 + b"\n"
    body = b"body\0with nul " + b"y" * 300000 + b"\n\xff\xfe\n"
    code, got, envelope = _run_bytes(tmp_path, [], subject + b"To: a\0b@x.example\n\n" + body)
    assert (code, envelope) == (0, ["Fbob@host.example", "Ta"])
    assert got == (b"Date: 26 Sep 1995 04:46:54 -0000\nMessage-ID: <19950926044654.4711.qmail@host.example>\n"
                   b"From: bob@host.example\n" + subject + b'To: "a\0b"@x.example\n\n' + body)


@pytest.mark.parametrize("argv, closed, want", [
    (["qmail-inject", "joe"], 0, (111, b"qmail-inject: fatal: read error\n")),
    (["sendmail", "joe"], 0, (111, b"qmail-inject: fatal: read error\n")),
    (["qmail-inject", "-n", "joe"], 1, (0, b"")),
])
def test_a_closed_stdin_or_stdout_is_qmails_read_error_or_nothing(tmp_path, argv, closed, want):
    """Run with descriptor 0 closed, qmail-inject's first read of the message fails: die_read(),
    'read error', exit 111; with descriptor 1 closed, -n's output is dropped as any failed write
    (put() does not look), exit 0. Python starts such a program with sys.stdin or sys.stdout
    None, and qmailpy said 'qmail-inject: internal bug: AttributeError', exit 111."""
    import subprocess
    from conftest import program
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "me").write_text("host.example\n")
    p = subprocess.run([program(argv[0])] + argv[1:], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, input=b"Subject: x\n\nbody\n", timeout=60,
                       preexec_fn=lambda: os.close(closed), env={
                           "QMAILHOME": str(tmp_path), "USER": "bob", "PATH": os.environ["PATH"],
                           "QMAILQUEUE": "/nonexistent/qmail-queue"})
    assert (p.returncode, p.stderr) == want


class BrokenInput(io.BytesIO):
    """A message whose read fails (EIO) once `data` is read: a disk or pipe error mid-message."""

    def _more(self, got):
        if not got:
            raise OSError(5, "Input/output error")
        return got

    def readline(self, *args):
        return self._more(super().readline(*args))

    def read(self, *args):
        return self._more(super().read(*args))


def test_a_read_error_after_the_header_aborts_the_queued_message(tmp_path, capfd):
    """qmail-queue has the header already when the body cannot be read: the job is aborted
    (qmail-queue sees no envelope and queues nothing), never finished with half a message,
    and qmail-inject says 'read error', exit 111, for the caller to try again."""
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "me").write_text("host.example\n")
    for data, aborted in ((b"To: joe\n\nfirst body line\n", True), (b"To: joe\n", False)):
        queue = FakeQueue(0)
        code = M.run([], {"QMAILHOME": str(tmp_path), "USER": "bob"}, BrokenInput(data), io.BytesIO(),
                     now=812090814, pid=4711, open_queue=lambda environ: queue)
        assert (code, capfd.readouterr().err) == (111, "qmail-inject: fatal: read error\n")
        # within the header no job was started yet: nothing to abort
        assert (queue.envelope, bool(queue.message)) == (("aborted", True) if aborted else (None, False))


def test_no_home_or_no_qmail_queue_is_a_temporary_failure(tmp_path, capfd, monkeypatch):
    """A QMAILHOME that is no directory (qmail's chdir(auto_qmail)) and a qmail-queue that
    cannot be started (pipe or fork failing: die_qqt) are exit 111 with qmail's words."""
    from qmailpy.smtpd import queueclient
    assert _run_bytes(tmp_path, ["joe"], b"\nbody\n", {"QMAILHOME": str(tmp_path / "none")}) == (111, b"", None)
    assert capfd.readouterr().err == "qmail-inject: fatal: internal bug\n"

    def no_fork(environ):
        raise BlockingIOError(11, "Resource temporarily unavailable")
    monkeypatch.setattr(queueclient, "start_job", no_fork)
    code = M.run(["joe"], {"QMAILHOME": str(tmp_path), "USER": "bob"}, io.BytesIO(b"\nbody\n"), io.BytesIO(),
                 now=812090814, pid=4711)
    assert (code, capfd.readouterr().err) == (111, "qmail-inject: fatal: unable to run qmail-queue\n")


def test_options_later_on_the_line_win(tmp_path):
    """-h takes the recipients from the header, ignoring the arguments; -A after it takes them
    from the arguments again; -N after -n queues the message after all (qmail's getopt loop)."""
    msg = b"To: ann@x.example\n\nbody\n"
    assert _run_bytes(tmp_path, ["-h", "joe@x.example"], msg)[2] == ["Fbob@host.example", "Tann@x.example"]
    assert _run_bytes(tmp_path, ["-h", "-A", "joe@x.example"], msg)[2] == ["Fbob@host.example", "Tjoe@x.example"]
    code, _, envelope = _run_bytes(tmp_path, ["-n", "-N", "joe@x.example"], msg)
    assert (code, envelope) == (0, ["Fbob@host.example", "Tjoe@x.example"])


def test_a_recipient_argument_that_does_not_parse_and_a_missing_list_file(tmp_path, capfd):
    """dorecip(): an argument token822 cannot parse is 'unable to parse address: ARG', exit 100,
    nothing queued; mft_init(): a QMAILMFTFILE that does not exist is no list (control_readfile
    returns 0), never an error."""
    assert _run_bytes(tmp_path, ["joe@(x"], b"\nbody\n") == (100, b"", None)
    assert capfd.readouterr().err == "qmail-inject: fatal: unable to parse address: joe@(x\n"
    code, got, envelope = _run_bytes(tmp_path, [], b"To: joe@x.example\n\nbody\n",
                                     {"QMAILMFTFILE": str(tmp_path / "no-such-file")})
    assert (code, envelope) == (0, ["Fbob@host.example", "Tjoe@x.example"])
    assert b"Mail-Followup-To" not in got and capfd.readouterr().err == ""


def test_an_interrupt_mid_message_aborts_the_queued_message(tmp_path):
    """Ctrl-C (or any exception) after qmail-queue has the header: the job is aborted before
    the exception goes on, so nothing half-read is queued."""
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "me").write_text("host.example\n")

    class Interrupted(BrokenInput):
        def _more(self, got):
            if not got:
                raise KeyboardInterrupt
            return got
    queue = FakeQueue(0)
    with pytest.raises(KeyboardInterrupt):
        M.run([], {"QMAILHOME": str(tmp_path), "USER": "bob"}, Interrupted(b"To: joe\n\nbody\n"), io.BytesIO(),
              now=812090814, pid=4711, open_queue=lambda environ: queue)
    assert queue.envelope == "aborted" and queue.message
