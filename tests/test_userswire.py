"""The qmail-usersd socket codec (qmailpy/proto/userswire.py): both ends' one encode and decode."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmailpy.proto import userswire as W

field = st.binary(max_size=200)


@given(st.sampled_from(sorted(W.QUESTIONS)), st.data())
def test_questions_round_trip(word, data):
    fields = data.draw(st.lists(field, min_size=W.QUESTIONS[word], max_size=W.QUESTIONS[word]))
    line = W.encode_question(word, *fields)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert all(33 <= b < 127 or b in b" \n" for b in line)       # printable on the wire
    assert W.decode_question(line) == (word, fields)


@given(st.sampled_from(sorted(W.ANSWERS)), st.data())
def test_answers_round_trip(word, data):
    fields = data.draw(st.lists(field, min_size=W.ANSWERS[word], max_size=W.ANSWERS[word]))
    assert W.decode_answer(W.encode_answer(word, *fields)) == (word, fields)


def test_exact_bytes():
    assert W.encode_question("AUTH", "PLAIN", "joe@example.org", "pass word%\0\xe9", "") == \
        b"AUTH PLAIN joe@example.org pass%20word%25%00%C3%A9 \n"
    assert W.decode_answer(b"TEMP users%20database%20down\n") == ("TEMP", [b"users database down"])
    assert W.decode_question(b"RCPT \n") == ("RCPT", [b""])
    assert W.decode_question(b"ADDR a%3a b\n") == ("ADDR", [b"a:", b"b"])       # lower-case hex read too


@pytest.mark.parametrize("line", [
    b"HELO x\n", b"auth PLAIN a b c\n", b"RCPT\n", b"RCPT a b\n", b"RCPT a\r\n", b"RCPT a\tb\n",
    b"RCPT %4\n", b"RCPT %zz\n", b"RCPT a", b"RCPT \xff\n", b"RCPT %41\xff\n", b"RCPT %41\tb\n", b"\n", b"RCPT " + b"a" * W.MAX_LINE + b"\n",
    b"YES\n",
])
def test_not_a_question(line):
    with pytest.raises(W.WireError):
        W.decode_question(line)


def test_answers_and_questions_are_told_apart():
    with pytest.raises(W.WireError):
        W.decode_answer(b"RCPT a\n")
    with pytest.raises(ValueError):
        W.encode_answer("FOUND")                # FOUND takes its address


@given(st.binary(max_size=300))
def test_any_bytes_decode_or_wire_error(data):
    for decode in (W.decode_question, W.decode_answer):
        try:
            word, fields = decode(data)
        except W.WireError:
            continue
        assert data.endswith(b"\n") and len(data) <= W.MAX_LINE
        assert (W.encode_question if decode is W.decode_question else W.encode_answer)(word, *fields) \
            .upper() == data.upper()


def test_too_long_to_encode():
    with pytest.raises(W.WireError):
        W.encode_question("RCPT", b"\0" * (W.MAX_LINE // 3))


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=100).map(lambda b: b.replace(b"\n", b"")), max_size=10),
       st.lists(st.integers(min_value=0, max_value=2000), max_size=6))
def test_line_buffer_any_chunking(lines, cuts):
    data = b"".join(line + b"\n" for line in lines)
    got, buf, start = [], W.LineBuffer(), 0
    for cut in sorted(cuts) + [len(data)]:
        got += buf.feed(data[start:cut])
        start = max(start, cut)
    assert got == [line + b"\n" for line in lines] and buf.buf == b""


def test_line_buffer_holds_at_most_one_line():
    buf = W.LineBuffer()
    assert buf.feed(b"x" * (W.MAX_LINE - 1)) == []
    with pytest.raises(W.WireError):
        buf.feed(b"x")
    with pytest.raises(W.WireError):
        W.LineBuffer().feed(b"y" * W.MAX_LINE + b"\nRCPT a\n")
