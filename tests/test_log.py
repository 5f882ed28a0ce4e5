"""qmailpy/log.py: the one log-line format of every program -- readable, one line, unforgeable."""
import os

from hypothesis import example, given, strategies as st

from qmailpy.log import Log, Logger, escape, field, fields, qmail_safe, write_line

ANY = st.one_of(st.text(), st.binary())


def unescape(text):
    """The inverse of escape(), to prove it loses nothing."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        kind = text[i + 1]
        if kind in "nrt0\\":
            out.append({"n": "\n", "r": "\r", "t": "\t", "0": "\0", "\\": "\\"}[kind])
            i += 2
        else:
            width = {"x": 2, "u": 4, "U": 8}[kind]
            n = int(text[i + 2:i + 2 + width], 16)
            out.append(chr(0xDC00 + n if kind == "x" and n >= 0x80 else n))
            i += 2 + width
    return "".join(out)


def parse_fields(line):
    """event and [(key, value)] of a Logger line body, honouring quotes."""
    event, _, rest = line.partition(" ")
    items = []
    while rest:
        key, _, rest = rest.partition("=")
        if rest.startswith('"'):
            i, value = 1, []
            while rest[i] != '"':
                if rest[i] == "\\":                # a pair: \" is a quote, any other keeps escape()'s text
                    value.append('"' if rest[i + 1] == '"' else rest[i:i + 2])
                    i += 2
                else:
                    value.append(rest[i])
                    i += 1
            items.append((key, "".join(value)))
            rest = rest[i + 2:]
        else:
            value, _, rest = rest.partition(" ")
            items.append((key, value))
    return event, items


def test_spaces_stay_spaces_and_control_bytes_are_escaped():
    assert escape("unable to read controls") == "unable to read controls"
    assert escape("a\r\nb\0c\td\x1b[2J\x7f\x85\u2028\\") == "a\\r\\nb\\0c\\td\\x1b[2J\\x7f\\u0085\\u2028\\\\"
    assert escape(b"caf\xc3\xa9 \xff") == "caf\xe9 \\xff"
    assert field("bare LF in DATA") == '"bare LF in DATA"'
    assert field("<a@b.example>") == "<a@b.example>" and field("") == ""
    assert fields("spf", [("error", "DNS problem"), ("helo", 'x" ip=1.2.3.4')]) == \
        'spf error="DNS problem" helo="x\\" ip=1.2.3.4"'


@given(ANY)
def test_escape_gives_one_printable_line_and_loses_nothing(value):
    text = escape(value)
    assert all(c == " " or c.isprintable() for c in text)
    original = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
    assert unescape(text) == original


@given(st.lists(st.tuples(st.from_regex(r"[a-z]{1,8}", fullmatch=True), st.text()), max_size=5))
@example([("a", '"\\')])                     # a value ending in a backslash: its \\ ends before the closing quote
def test_no_value_can_pose_as_another_field(items):
    """Whatever a client puts in a value (spaces, '=', quotes, newlines), the fields parse back as given."""
    line = fields("event", items)
    assert "\n" not in line and "\r" not in line
    event, got = parse_fields(line)
    assert event == "event"
    assert got == [(k, escape(v)) for k, v in items]


def test_writers_write_whole_escaped_lines(tmp_path):
    path = tmp_path / "log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    Logger("qmail-smtpd", 42, fd)("refused", reason="bare LF in DATA", helo="a\nqmail-smtpd: 1 accept")
    write_line(fd, "qmail-queue: unable to read controls: control/x: bad\nforged")
    Log(fd).line("delivery 1: success: " + qmail_safe(b"did 0+0+1\n") + "\n")
    Log(fd).raw(b"alert: qmail-todo: x\r\ny")
    # qmail's lines built with qsutil.c logsafe(), which leaves '\\' alone: one backslash
    Log(fd).qmail("starting delivery 1: msg 5 to remote " + qmail_safe(b"a\\b c%d@x\n"))
    Log(fd).raw(b"info msg 5: bytes 9 from <a\\b@x> qp 7 uid 0\n")
    Log(fd).raw(b"srs msg 5: <a\\b\n@x> dropped")
    os.close(fd)
    assert path.read_text().splitlines() == [
        'qmail-smtpd: 42 refused reason="bare LF in DATA" helo="a\\nqmail-smtpd: 1 accept"',
        "qmail-queue: unable to read controls: control/x: bad\\nforged",
        "delivery 1: success: did_0+0+1/",
        "alert: qmail-todo: x\\r\\ny",
        "starting delivery 1: msg 5 to remote a\\b_c_d@x/",
        "info msg 5: bytes 9 from <a\\b@x> qp 7 uid 0",
        "srs msg 5: <a\\\\b\\n@x> dropped",
    ]


def test_a_log_that_cannot_be_written_does_not_stop_anyone():
    r, w = os.pipe()
    os.close(r)
    import signal
    old = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        write_line(w, "nobody reads this")
        Logger("qmail-smtpd", 1, w)("eof")
    finally:
        signal.signal(signal.SIGPIPE, old)
        os.close(w)
