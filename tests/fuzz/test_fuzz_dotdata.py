"""Fuzz targets for the DATA codec (qmailpy.proto.dotdata, qmailpy.proto.dotstuff).

Any input, any chunking, every mode: no exception; the result does not depend on how
the bytes were split; it matches a per-byte transliteration of qmail's blast(); the
message ends exactly where the smuggling rules say (docs/qmail-smtpd.md); stuffing
then reading gives the message back. Brief in `make test`, at length in `make fuzz`.
"""
import re

from hypothesis import given, strategies as st

from fuzz.profile import fuzz_settings
from test_dotdata import ref_blast
from qmailpy.proto.dotdata import DataReader
from qmailpy.proto.dotstuff import stuff

MODES = {"strict": {}, "bare_lf_ok": {"bare_lf_ok": True}, "lf_mode": {"lf_mode": True}}
PIECES = [b"\r", b"\n", b".", b"..", b"a", b"\x00", b"\xff", b"\r\n", b"\r\n.", b".\r\n", b"\r\n.\r\n",
          b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\r\n", b".\r", b"Received: x", b"DELIVERED-to: y",
          b"\r\n\r\n", b"\n\n", b" ", b"\t"]
soup = st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=6)), max_size=80).map(b"".join)
inputs = st.one_of(soup, st.binary(max_size=3000))
modes = st.sampled_from(sorted(MODES))
cut_points = st.lists(st.integers(0, 10 ** 6), max_size=16)


def split(data, cuts):
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0] + points, points + [len(data)])]


def run(chunks, **kw):
    """Feed chunks like Session does, checking the reader's contract at every call."""
    r = DataReader(**kw)
    parts, used = [], 0
    for chunk in chunks:
        before_done = r.done or r.error is not None
        n = r.feed(chunk)
        assert 0 <= n <= len(chunk)
        if before_done:
            assert n == 0
        elif not (r.done or r.error):
            assert n == len(chunk)              # nothing left over until the end
        used += n
        parts.append(r.take())
        assert not (r.done and r.error)
        if r.done or r.error:
            break
    assert r.take() == b""
    stored = b"".join(parts)
    if r.toobig:
        assert stored == b"" or r.databytes and len(stored) <= r.databytes
    else:
        assert len(stored) == r.size
        assert not r.databytes or r.size <= r.databytes
    return stored, used, r


def outcome(chunks, **kw):
    stored, used, r = run(chunks, **kw)
    return (None if r.toobig else stored, used, r.done, r.error, r.size, r.toobig, r.toomanyhops,
            None if r.toomanyhops else r.hops)


@fuzz_settings(300)
@given(inputs, modes, st.sampled_from([0, 1, 7, 100, 10 ** 6]), st.sampled_from([1, 3, 100]), cut_points)
def test_any_input_any_split_same_outcome(data, mode, databytes, maxhops, cuts):
    kw = dict(MODES[mode], databytes=databytes, maxhops=maxhops)
    whole = outcome([data], **kw)
    assert outcome(split(data, cuts), **kw) == whole
    if len(data) <= 300:
        assert outcome([data[i:i + 1] for i in range(len(data))], **kw) == whole


@fuzz_settings(300)
@given(inputs, modes, st.booleans())
def test_matches_qmail_blast_byte_for_byte(data, mode, terminate):
    if terminate:
        data += b"\r\n.\r\n"
    msg, used, done, error, hops, size = ref_blast(data, mode)
    stored, n, r = run([data], **MODES[mode])
    assert (stored, n, r.done, r.error, r.size) == (msg, used, done, error, size)
    if done:
        assert r.hops == hops and r.toomanyhops == (hops >= 100)


def bare_lf(data):
    """Index of the first LF not preceded by CR (the start counts as after an LF), or None."""
    m = re.search(rb"(?:^|[^\r])\n", data)
    return None if m is None else m.end() - 1


@fuzz_settings(400)
@given(inputs, modes, cut_points)
def test_the_message_ends_exactly_at_the_terminator(data, mode, cuts):
    """The smuggling defence as a property of the bytes alone.

    strict and bare_lf_ok: the end is the first <CR><LF>.<CR><LF> (the start of DATA counts
    as just after <CR><LF>) and nothing else; strict stops at the first bare LF before it.
    lf_mode: the first line "." ended by LF or CRLF, a line starting after any LF."""
    stored, used, r = run(split(data, cuts), **MODES[mode])
    if mode == "lf_mode":
        m = re.search(rb"\n\.\r?\n", b"\n" + data)
        end = None if m is None else m.end() - 1
        assert (r.done, r.error) == (end is not None, None)
        assert used == (end if end is not None else len(data))
        return
    i = (b"\r\n" + data).find(b"\r\n.\r\n")
    end = None if i < 0 else i + 3
    lf = bare_lf(data)
    if mode == "strict" and lf is not None and (end is None or lf < end):
        assert (r.done, r.error, used) == (False, "straylf", lf + 1)
    elif end is not None:
        assert (r.done, r.error, used) == (True, None, end)
    else:
        assert (r.done, r.error, used) == (False, None, len(data))


message_st = st.one_of(st.binary(max_size=2000), soup).map(lambda m: m + b"\n")


@fuzz_settings(300)
@given(message_st, modes, cut_points, st.binary(max_size=40))
def test_stuffed_message_reads_back(message, mode, cuts, after):
    """qmail-remote's encoding read by qmail-smtpd in any mode: the message comes back with its
    line ends as LF (a lone CR becomes a line end, as notqmail sends it) and the reader stops
    right after the terminator, leaving what follows for the command reader."""
    wire = stuff(message)
    stored, used, r = run(split(wire + after, cuts), **MODES[mode])
    assert (r.done, r.error, used) == (True, None, len(wire))
    assert stored == message.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    # the wire carries no bare CR or LF, so no reader can find another end in it
    assert b"\r" not in wire.replace(b"\r\n", b"") and b"\n" not in wire.replace(b"\r\n", b"")
    assert wire.find(b"\r\n.\r\n") in (len(wire) - 5, -1) and (b"\r\n" + wire).find(b"\r\n.\r\n") == len(wire) - 3


@fuzz_settings(200)
@given(st.lists(st.binary(max_size=30).map(lambda l: l.replace(b"\r", b"").replace(b"\n", b"")), max_size=30),
       modes, cut_points)
def test_unstuffing_round_trip(lines, mode, cuts):
    """Lines without CR or LF: what a client stuffs is exactly what is stored, in every mode
    (LF-only clients stuff the same way and end lines with LF)."""
    message = b"".join(l + b"\n" for l in lines)
    wire = stuff(message)
    if mode == "lf_mode" and len(cuts) % 2:
        wire = wire.replace(b"\r\n", b"\n")
    stored, used, r = run(split(wire, cuts), **MODES[mode])
    assert (stored, used, r.done) == (message, len(wire), True)
