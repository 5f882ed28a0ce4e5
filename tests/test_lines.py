"""Command-line splitting: qmail's CRLF rule, bare LF/CR, NUL, overlong lines."""
from hypothesis import given, strategies as st

from qmailpy.proto.lines import MAX_LINE, LineReader


def all_lines(reader, data):
    out, buf = [], data
    while True:
        line, buf = reader.next_line(buf)
        if line is None:
            return out, buf
        out.append((line.text, line.bare_lf, line.error))


def test_crlf_lines():
    assert all_lines(LineReader(), b"HELO x\r\nNOOP\r\npartial") == (
        [("HELO x", False, None), ("NOOP", False, None)], b"partial")


def test_bare_lf_refused_unless_newline():
    assert all_lines(LineReader(), b"HELO x\n")[0] == [("", True, "straylf")]
    assert all_lines(LineReader(allow_bare_lf=True), b"HELO x\n")[0] == [("HELO x", True, None)]


def test_bare_cr_always_refused():
    for allow in (False, True):
        assert all_lines(LineReader(allow), b"HELO a\rb\r\n")[0] == [("", False, "straylf")]


def test_nul_and_long_lines():
    assert all_lines(LineReader(), b"HELO a\0b\r\n")[0] == [("", False, "nul")]
    assert all_lines(LineReader(), b"x" * (MAX_LINE + 1) + b"\r\nNOOP\r\n")[0] == [
        ("", False, "toolong"), ("NOOP", False, None)]
    assert all_lines(LineReader(), b"x" * MAX_LINE + b"\r\n")[0] == [("x" * MAX_LINE, False, None)]


def test_overlong_line_across_reads_is_discarded():
    r = LineReader()
    assert all_lines(r, b"y" * 5000) == ([], b"")
    assert all_lines(r, b"y" * 5000) == ([], b"")
    assert all_lines(r, b"yyy\r\nQUIT\r\n") == ([("", False, "toolong"), ("QUIT", False, None)], b"")


@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=300), max_size=6))
def test_any_split_gives_the_same_lines(data, cuts):
    whole = all_lines(LineReader(True), data)[0]
    r, got, pending = LineReader(True), [], b""
    points = sorted(set(c for c in cuts if c <= len(data)))
    for a, b in zip([0] + points, points + [len(data)]):
        lines, pending = all_lines(r, pending + data[a:b])
        got += lines
    assert got == whole
