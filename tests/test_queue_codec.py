"""The envelope codec, the date format and the exit-code table, against qmail's rules."""
import calendar

import pytest
from hypothesis import given, settings, strategies as st

from qmailpy import exitcodes as X
from qmailpy.proto import qq
from qmailpy.proto.date822 import date822

address = st.binary(max_size=qq.MAX_ADDRESS).filter(lambda b: b"\0" not in b)
short_address = st.binary(max_size=40).map(lambda b: b.replace(b"\0", b""))


def qmail_queue_model(data):
    """qmail-queue.c's envelope loop, byte by byte: the exit code it ends with."""
    it = iter(data)

    def address():
        for _ in range(qq.ADDR):
            ch = next(it, None)
            if ch is None:
                return X.QQ_READ_ERROR
            if ch == 0:
                return None
        return X.QQ_ADDR_TOO_LONG

    ch = next(it, None)
    if ch is None:
        return X.QQ_READ_ERROR
    if ch != ord("F"):
        return X.QQ_ENVELOPE_FORMAT
    while True:
        err = address()
        if err is not None:
            return err
        ch = next(it, None)
        if ch is None:
            return X.QQ_READ_ERROR
        if ch == 0:
            return X.QQ_OK
        if ch != ord("T"):
            return X.QQ_ENVELOPE_FORMAT


def outcome(feed_chunks):
    d = qq.Decoder()
    try:
        for chunk in feed_chunks:
            if d.feed(chunk):
                break
        d.eof()
    except qq.EnvelopeError as e:
        return e.code
    return X.QQ_OK


def split(data, cuts):
    cuts = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


@given(address, st.lists(address, max_size=5))
def test_round_trip(sender, rcpts):
    assert qq.decode(qq.encode(sender, rcpts)) == (sender, rcpts)


@given(short_address, st.lists(short_address, max_size=8), st.lists(st.integers(0, 10**6), max_size=12),
       st.binary(max_size=5))
def test_any_chunking_same_result(sender, rcpts, cuts, trailing):
    data = qq.encode(sender, rcpts) + trailing
    d = qq.Decoder()
    done = [d.feed(c) for c in split(data, cuts)]
    assert any(done) and d.eof() == (sender, rcpts)


@settings(max_examples=500)
@given(st.lists(st.sampled_from([b"F", b"T", b"\0", b"a", b"X", b"a" * 600]), max_size=12),
       st.lists(st.integers(0, 10**6), max_size=6))
def test_errors_match_qmail_queue(pieces, cuts):
    data = b"".join(pieces)
    assert outcome(split(data, cuts)) == qmail_queue_model(data) == outcome([data])


def test_exact_encoding_and_limits():
    assert qq.encode("a@b", ["c@d", b"e@f"]) == b"Fa@b\0Tc@d\0Te@f\0\0"
    assert qq.encode("", []) == b"F\0\0"
    assert qq.decode(b"F\0\0") == (b"", [])
    with pytest.raises(ValueError):
        qq.encode("a\0b", [])
    # qmail-queue.c: ADDR 1003 bytes for an address and its \0: 1002 accepted, 1003 is exit 11
    assert (qq.ADDR, qq.MAX_ADDRESS) == (1003, 1002)
    ok = b"x" * 1002
    assert qq.decode(qq.encode(ok, [ok])) == (ok, [ok])
    for bad, exc in [(b"F" + ok + b"x\0\0", qq.AddressTooLong), (b"Xa\0\0", qq.EnvelopeFormatError),
                     (b"Fa\0Ub\0\0", qq.EnvelopeFormatError), (b"Fa\0Tb\0", qq.EnvelopeTruncated)]:
        with pytest.raises(exc):
            qq.decode(bad)
    assert (qq.AddressTooLong.code, qq.EnvelopeFormatError.code, qq.EnvelopeTruncated.code) == (11, 91, 54)


def test_date822():
    assert date822(calendar.timegm((1995, 9, 26, 4, 46, 54))) == "26 Sep 1995 04:46:54 -0000"
    assert date822(0) == "1 Jan 1970 00:00:00 -0000"
    assert date822(calendar.timegm((2024, 12, 5, 23, 0, 9)) + 0.9) == "5 Dec 2024 23:00:09 -0000"


QMAIL_C = {   # qmail.c qmail_close(), notqmail
    11: "Denvelope address too long for qq (#5.1.3)",
    115: "Denvelope address too long for qq (#5.1.3)",
    31: "Dmail server permanently rejected message (#5.3.0)",
    51: "Zqq out of memory (#4.3.0)",
    52: "Zqq timeout (#4.3.0)",
    53: "Zqq write error or disk full (#4.3.0)",
    54: "Zqq read error (#4.3.0)",
    55: "Zqq unable to read configuration (#4.3.0)",
    56: "Zqq trouble making network connection (#4.3.0)",
    61: "Zqq trouble in home directory (#4.3.0)",
    62: "Zqq trouble creating files in queue (#4.3.0)",
    63: "Zqq trouble creating files in queue (#4.3.0)",
    64: "Zqq trouble creating files in queue (#4.3.0)",
    65: "Zqq trouble creating files in queue (#4.3.0)",
    66: "Zqq trouble creating files in queue (#4.3.0)",
    71: "Zmail server temporarily rejected message (#4.3.0)",
    72: "Zconnection to mail server timed out (#4.4.1)",
    73: "Zconnection to mail server rejected (#4.4.1)",
    74: "Zcommunication with mail server failed (#4.4.2)",
    81: "Zqq internal bug (#4.3.0)",
    91: "Zqq internal bug (#4.3.0)",
    120: "Zunable to exec qq (#4.3.0)",
    12: "Dqq permanent problem (#5.3.0)",
    40: "Dqq permanent problem (#5.3.0)",
    1: "Zqq temporary problem (#4.3.0)",
    41: "Zqq temporary problem (#4.3.0)",
    82: "Zqq temporary problem (#4.3.0)",
}


@pytest.mark.parametrize("code, want", sorted(QMAIL_C.items()))
def test_qq_texts_and_replies(code, want):
    kind, text = X.qq_status(code)
    assert kind + text == want
    assert X.qq_reply(code) == ({"D": 554, "Z": 451}[want[0]], want[1:])


def test_named_codes():
    assert X.qq_reply(X.QQ_OK) == (250, "ok")
    assert X.qq_reply(X.QQ_WRITE_ERROR) == (451, "qq write error or disk full (#4.3.0)")
    assert X.qq_reply(X.QQ_CUSTOM, b"Dspam score too high") == (554, "spam score too high")
    assert X.qq_reply(X.QQ_CUSTOM, "Ztry later") == (451, "try later")
    assert X.qq_crash_reply() == X.qq_reply(-9) == (451, "qq crashed (#4.3.0)")
    codes = [X.QQ_OK, X.QQ_ADDR_TOO_LONG, X.QQ_PERM_REFUSED, X.QQ_NO_MEMORY, X.QQ_TIMEOUT, X.QQ_WRITE_ERROR,
             X.QQ_READ_ERROR, X.QQ_CONFIG, X.QQ_NETWORK, X.QQ_HOME, X.QQ_QUEUE_DIR, X.QQ_PID, X.QQ_MESS,
             X.QQ_INTD, X.QQ_TODO, X.QQ_TEMP_REFUSED, X.QQ_CONN_TIMEOUT, X.QQ_CONN_REJECTED,
             X.QQ_COMM_FAILED, X.QQ_BUG, X.QQ_CUSTOM, X.QQ_ENVELOPE_FORMAT, X.QQ_EXEC_FAILED]
    assert codes == [0, 11, 31, 51, 52, 53, 54, 55, 56, 61, 62, 63, 64, 65, 66, 71, 72, 73, 74, 81, 82, 91, 120]
    assert (X.DELIVERY_OK, X.DELIVERY_OK_STOP, X.DELIVERY_PERMANENT, X.DELIVERY_TEMPORARY) == (0, 99, 100, 111)


def test_custom_reply_edges():
    """Code 82's fd 6 text counts only as D/Z + at least one character, and only for 82."""
    other = (451, "qq temporary problem (#4.3.0)")
    assert X.qq_reply(X.QQ_CUSTOM, "D") == other
    assert X.qq_reply(X.QQ_CUSTOM, "Xnope") == other
    assert X.qq_reply(X.QQ_CUSTOM, "") == other and X.qq_reply(X.QQ_CUSTOM, None) == other
    assert X.qq_reply(X.QQ_CUSTOM, "Dx") == (554, "x")
    assert X.qq_reply(X.QQ_CUSTOM, b"Dbad \xff byte") == (554, "bad \ufffd byte")
    assert X.qq_reply(X.QQ_WRITE_ERROR, "Dignored") == (451, "qq write error or disk full (#4.3.0)")
    assert X.qq_status(10) == ("Z", "qq temporary problem (#4.3.0)")
    e = X.QueueError(53, "unable to write mess: No space left on device")
    assert (e.code, e.reason, e.args) == (53, "unable to write mess: No space left on device",
                                          ("unable to write mess: No space left on device",))
