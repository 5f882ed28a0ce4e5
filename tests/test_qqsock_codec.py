"""The qmail-queued socket codec (proto/qqsock.py): both ends agree, for any chunking; garbage is refused."""
import pytest
from hypothesis import example, given, settings, strategies as st

from qmailpy import exitcodes as X
from qmailpy.proto import qq, qqsock

addresses = st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\0", b"")), min_size=1, max_size=4)


def split(data, cuts):
    cuts = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


def decode_request(chunks, dec=None):
    """(message, envelope bytes after END) as the service reads them (with `dec`, given to see its origin)."""
    dec, message, rest = dec or qqsock.MessageDecoder(), [], []
    for chunk in chunks:
        if dec.done:
            rest.append(chunk)
            continue
        message.append(dec.feed(chunk))
        if dec.done:
            rest.append(dec.rest)
    assert dec.done
    return b"".join(message), b"".join(rest)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=6), addresses, st.lists(st.integers(0, 5000), max_size=12))
def test_any_message_and_chunking_round_trips(pieces, addrs, cuts):
    envelope = qq.encode(addrs[0], addrs[1:])
    stream = b"".join(qqsock.encode_chunk(p) for p in pieces) + qqsock.END + envelope
    message, rest = decode_request(split(stream, cuts))
    assert message == b"".join(pieces)
    assert qq.decode(rest) == (addrs[0], addrs[1:])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(0, 400), max_size=8))
def test_a_stream_cut_before_its_end_is_never_complete(message, cuts):
    stream = qqsock.encode_request(message, qq.encode(b"a", [b"b"]))
    end = stream.index(qqsock.END, len(qqsock.encode_chunk(message))) if message else 0
    for n in range(end + len(qqsock.END)):
        dec = qqsock.MessageDecoder()
        for chunk in split(stream[:n], cuts):
            dec.feed(chunk)
        assert not dec.done


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_garbage_is_refused_or_read_as_netstrings(data):
    """Whatever bytes come, the decoder either raises FrameError (exit 91) or what it returned
    is exactly the payload of the well-formed netstrings it read."""
    dec = qqsock.MessageDecoder()
    try:
        got = dec.feed(data)
    except qqsock.FrameError as e:
        assert e.code == X.QQ_ENVELOPE_FORMAT
        return
    if dec.done:
        assert got == _frames(data[:len(data) - len(dec.rest)])


def _frames(stream):
    out, pos = [], 0
    while True:
        colon = stream.index(b":", pos)
        n = int(stream[pos:colon])
        if n == 0:
            return b"".join(out)
        out.append(stream[colon + 1:colon + 1 + n])
        pos = colon + 2 + n


@pytest.mark.parametrize("stream", [
    b"x", b":", b"01:a,", b"00:,", b"1:ab", b"1:a;", b"-1:a,", b" 1:a,", b"1 :a,", b"0:;",
    b"%d:" % (qqsock.MAX_CHUNK + 1), b"12345678", b"0:,F", ])
def test_malformed_streams(stream):
    dec = qqsock.MessageDecoder()
    with pytest.raises(qqsock.FrameError):
        dec.feed(stream)
        if dec.done:          # data after END in a second feed
            dec.feed(b"more")
        if not dec.done:
            raise qqsock.FrameError("never ended")    # cut short: the service sees the end of input


def test_end_split_across_reads():
    dec = qqsock.MessageDecoder()
    assert dec.feed(b"3:abc,0") == b"abc"
    assert dec.feed(b":") == b"" and not dec.done
    assert dec.feed(b",Fx\0\0") == b"" and dec.done and dec.rest == b"Fx\0\0"


def test_longest_chunk_is_taken_and_long_data_is_split():
    data = b"y" * (qqsock.MAX_CHUNK * 2 + 5)
    encoded = qqsock.encode_chunk(data)
    assert encoded.count(b":") == 3
    assert decode_request([encoded + qqsock.END])[0] == data
    assert qqsock.encode_chunk(b"") == b""


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 255), st.integers(0, 2 ** 31), st.text(max_size=80).map(lambda t: t.replace("\0", "")),
       st.lists(st.integers(0, 200), max_size=5))
def test_answers_round_trip(code, qp, reason, cuts):
    data = qqsock.encode_answer(code, qp, reason)
    dec, got = qqsock.AnswerDecoder(), None
    for chunk in split(data, cuts):
        if got is None:
            got = dec.feed(chunk)
        else:
            assert chunk == b""
    assert got == (code, qp, reason.encode("utf-8", "replace").decode("utf-8"))


@example(b"9" * 5000 + b":")             # int() refused the 5000 digits: ValueError, not FrameError
@settings(max_examples=200)
@given(st.binary(max_size=40) | st.lists(st.sampled_from([b"1", b"0", b"9" * 20, b":", b",", b" ", b"x"]),
                                         max_size=10).map(b"".join))
def test_any_bytes_are_an_answer_or_a_frame_error(data):
    try:
        qqsock.AnswerDecoder().feed(data)
    except qqsock.FrameError:
        pass


def test_answer_exact_bytes():
    assert qqsock.encode_answer(0, 1234) == b"6:0 1234,"
    assert qqsock.encode_answer(53, 0, "unable to write mess: No space") == b"35:53 0 unable to write mess: No space,"
    assert qqsock.AnswerDecoder().feed(b"6:0 1234,") == (0, 1234, "")


@pytest.mark.parametrize("data", [b"x", b"99999:", b"3:0 1;", b"2:01,", b"5:abc d,", b"7:300 1 x,", b"01:0,"])
def test_bad_answers(data):
    with pytest.raises(qqsock.FrameError):
        got = qqsock.AnswerDecoder().feed(data)
        assert got is not None


origin_values = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), min_size=1,
                        max_size=40)


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({}, optional={"TCPREMOTEIP": origin_values, "SPFRESULT": origin_values}),
       st.binary(max_size=300), st.lists(st.integers(0, 1000), max_size=10))
def test_an_origin_frame_and_the_message_round_trip_for_any_chunking(origin, message, cuts):
    """qmail-smtpd's origin ($TCPREMOTEIP, $SPFRESULT) before the message: the service reads both,
    however the stream is cut; without one the request is as before and origin is {}."""
    frame = qqsock.encode_origin(dict(origin, PATH="/bin", TCPLOCALIP="127.0.0.1"))   # others are not sent
    stream = qqsock.encode_request(message, qq.encode(b"a", [b"b"]), frame)
    dec = qqsock.MessageDecoder()
    assert decode_request(split(stream, cuts), dec) == (message, qq.encode(b"a", [b"b"]))
    assert dec.origin == origin


@pytest.mark.parametrize("stream", [
    b"o0:,0:,",                               # an empty origin
    b"o9:PATH=/bin,0:,",                      # a name that is not an origin name
    b"o11:TCPREMOTEIP,0:,",                   # no value
    b"o12:TCPREMOTEIP=,0:,",                  # an empty value
    b"o9999:" + b"x" * 10,                    # longer than MAX_ORIGIN
    b"5:hello,o3:a=b,0:,",                    # an origin after the message began
    b"o29:SPFRESULT=pass\0SPFRESULT=fail,0:,",  # a name twice
])
def test_a_bad_origin_is_a_frame_error(stream):
    with pytest.raises(qqsock.FrameError):
        qqsock.MessageDecoder().feed(stream)



@settings(max_examples=200, deadline=None)
@given(st.sampled_from([b"", qqsock.BY_PID, qqsock.BY_SERVICE]),
       st.sampled_from([{}, {"TCPREMOTEIP": "127.0.0.1"}]), st.binary(max_size=100),
       st.lists(st.integers(0, 300), max_size=6))
def test_a_mark_comes_first_for_any_chunking(mark, origin, message, cuts):
    """A client's mark (BY_PID: an exec'd qmail-queue; BY_SERVICE), then the origin frame and the
    message: all read back; the mark is known once the first byte is (`numbered`), before the
    message starts: qmailpy's clients send it on connecting."""
    stream = mark + qqsock.encode_request(message, qq.encode(b"a", [b"b"]), qqsock.encode_origin(origin))
    dec = qqsock.MessageDecoder()
    assert decode_request(split(stream, cuts), dec) == (message, qq.encode(b"a", [b"b"]))
    assert (dec.by_pid, dec.origin) == (mark == qqsock.BY_PID, origin)
    first = qqsock.MessageDecoder()
    assert (first.feed(stream[:1]), first.numbered, first.by_pid) == (b"", True, mark == qqsock.BY_PID)


@pytest.mark.parametrize("stream", [b"PP0:,", b"PS0:,", b"SP0:,", b"oP0:,", b"5:helloP,0:,",
                                    b"o17:TCPREMOTEIP=1.2.3.4,P0:,"])
def test_a_mark_anywhere_but_first_is_a_frame_error(stream):
    with pytest.raises(qqsock.FrameError):
        qqsock.MessageDecoder().feed(stream)
