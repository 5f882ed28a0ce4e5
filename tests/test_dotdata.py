"""DATA codec: qmail's blast() byte for byte, the smuggling defence, and dot-stuffing."""
import pytest
from hypothesis import given, settings, strategies as st

from qmailpy.proto.dotdata import DataReader
from qmailpy.proto.dotstuff import PARTIAL_LINE, Stuffer, stuff

MODES = {"strict": {}, "bare_lf_ok": {"bare_lf_ok": True}, "lf_mode": {"lf_mode": True}}


def ref_blast(data, mode="strict", databytes=0, maxhops=100):
    """Per-byte transliteration of qmail-smtpd.c blast() (+ the two documented modes).

    Returns (message, consumed, done, error, hops, size).
    """
    out = bytearray()
    state, hops, inhdr, pos = 1, 0, True, 0
    mx = my = mz = True
    for idx, ch in enumerate(data):
        if inhdr:
            if pos < 9:
                if ch != b"delivered"[pos] and ch != b"DELIVERED"[pos]:
                    mz = False
                if mz and pos == 8:
                    hops += 1
                if pos < 8:
                    if ch != b"received"[pos] and ch != b"RECEIVED"[pos]:
                        mx = False
                    if mx and pos == 7:
                        hops += 1
                if pos < 2 and ch != b"\r\n"[pos]:
                    my = False
                if my and pos == 1:
                    inhdr = False
                if mode != "strict" and pos == 0 and ch == 10:
                    inhdr = False           # an LF-only empty line also ends the header
                pos += 1
            if ch == 10:
                pos, mx, my, mz = 0, True, True, True
        if ch == 10 and state in (0, 1, 2):
            if mode == "strict":
                return bytes(out), idx + 1, False, "straylf", hops, len(out)
            if mode == "lf_mode":
                if state == 2:
                    return bytes(out), idx + 1, True, None, hops, len(out)
                out += b"\n"
                state = 1
            else:
                out += b".\n" if state == 2 else b"\n"
                state = 0
            continue
        if state == 0:
            if ch == 13:
                state = 4
                continue
        elif state == 1:
            if ch == 46:
                state = 2
                continue
            if ch == 13:
                state = 4
                continue
            state = 0
        elif state == 2:
            if ch == 13:
                state = 3
                continue
            state = 0
        elif state == 3:
            if ch == 10:
                return bytes(out), idx + 1, True, None, hops, len(out)
            out += b".\r"
            if ch == 13:
                state = 4
                continue
            state = 0
        elif state == 4:
            if ch == 10:
                state = 1
            elif ch != 13:
                out += b"\r"
                state = 0
        out.append(ch)
    return bytes(out), len(data), False, None, hops, len(out)


def run(chunks, **kw):
    """Feed chunks like a session would; return (message, consumed, reader)."""
    r = DataReader(**kw)
    msg, used = [], 0
    for c in chunks:
        n = r.feed(c)
        used += n
        msg.append(r.take())
        if r.done or r.error:
            break
    return b"".join(msg), used, r


def whole(data, **kw):
    return run([data], **kw)


# --- qmail's own cases (strict mode) -------------------------------------------

@pytest.mark.parametrize("data,stored", [
    (b"Subject: x\r\n\r\nhello\r\n.\r\n", b"Subject: x\n\nhello\n"),
    (b".\r\n", b""),
    (b"\r\n.\r\n", b"\n"),
    (b"..foo\r\n.bar\r\n...\r\n..\r\n.\r\n", b".foo\nbar\n..\n.\n"),
    (b"a.b\r\n .\r\n.\r\n", b"a.b\n .\n"),
    (b"a\rb\r\n.\r\n", b"a\rb\n"),              # lone CR kept
    (b"a\r\r\n.\r\n", b"a\r\n"),                # CR CR LF -> CR LF
    (b"a\r\r\rb\r\n.\r\n", b"a\r\r\rb\n"),
    (b"a\r\n\r\r\n.\r\n", b"a\n\r\n"),
    (b".\rx\r\n.\r\n", b".\rx\n"),              # ".\r" + non-LF keeps the dot
    (b".\r\r\n.\r\n", b".\r\n"),                # ".\r\r\n": dot and first CR kept
    (b".\r.\r\n.\r\n", b".\r.\n"),
    (b"x\r\n.\r\r.\r\n.\r\n", b"x\n.\r\r.\n"),
    (b"a\r\n.x.\r\n.\r\n", b"a\nx.\n"),
    (b"trail\r", b"trail"),                     # pending CR withheld, no end yet
    (b"a\x00b\r\n\x00\r\n.\r\n", b"a\x00b\n\x00\n"),
])
def test_qmail_cases(data, stored):
    msg, used, r = whole(data)
    assert msg == stored
    assert used == len(data)
    assert r.done == (data.endswith(b"\r\n.\r\n") or data == b".\r\n")
    assert r.error is None
    assert (msg, used, r.done, r.error) == ref_blast(data)[:4]


def test_crlf_dot_crlf_split_everywhere():
    data = b"Received: a\r\n\r\nbody\r\n..dot\r\n.\r\n"
    msg, used, r = run([data[i:i + 1] for i in range(len(data))])
    assert (msg, used, r.done, r.hops) == (b"Received: a\n\nbody\n.dot\n", len(data), True, 1)


def test_pipelined_commands_not_consumed():
    data = b"a\r\n.\r\nMAIL FROM:<x@y>\r\nQUIT\r\n"
    r = DataReader()
    assert r.feed(data) == len(b"a\r\n.\r\n")
    assert r.done and r.take() == b"a\n"
    assert r.feed(b"more") == 0 and r.take() == b""


def test_pipelined_lf_mode():
    data = b"a\n.\nQUIT\n"
    r = DataReader(lf_mode=True)
    assert r.feed(data) == 4 and r.done and r.take() == b"a\n"


def test_empty_feed_and_bytes_like():
    r = DataReader()
    assert r.feed(b"") == 0 and not r.done
    assert r.feed(bytearray(b"x\r\n")) == 3
    assert r.feed(memoryview(b".\r\n")) == 3
    assert r.done and r.take() == b"x\n"


def test_long_line_and_nul_pass_through():
    line = b"x\x00" * 300000
    msg, used, r = run([line[:1000], line[1000:] + b"\r\n.\r\n"])
    assert msg == line + b"\n" and r.done and r.size == len(line) + 1


# --- bare LF: strict rejects ---------------------------------------------------

@pytest.mark.parametrize("data,used,stored", [
    (b"a\nb", 2, b"a"),
    (b"\n", 1, b""),
    (b"a\r\n.\n", 5, b"a\n"),
    (b"a\r\n\n", 4, b"a\n"),
    (b"a\n.\r\n", 2, b"a"),
])
def test_strict_bare_lf_is_fatal(data, used, stored):
    msg, n, r = whole(data)
    assert (r.error, n, r.done, msg) == ("straylf", used, False, stored)
    assert r.feed(b"\r\n.\r\n") == 0 and not r.done


# --- SMTP smuggling (reference 10) ---------------------------------------------

SMUGGLE = b"MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nforged\r\n"

# variant, message stored in bare_lf_ok mode (terminator never seen inside)
VARIANTS = [
    (b"<LF>.<LF>", b"a\n.\n", b"a\n.\n"),
    (b"<CR><LF>.<LF>", b"a\r\n.\n", b"a\n.\n"),
    (b"<LF>.<CR><LF>", b"a\n.\r\n", b"a\n.\n"),
    (b"<CR>.<CR>", b"a\r.\r", b"a\r.\r"),
    (b"<CR>.<CR><LF>", b"a\r.\r\n", b"a\r.\n"),
    (b"<CR><LF>.<CR>", b"a\r\n.\r", b"a\n.\r"),
]


@pytest.mark.parametrize("name,fake,stored", VARIANTS, ids=[v[0].decode() for v in VARIANTS])
def test_smuggling_bare_lf_ok(name, fake, stored):
    data = fake + SMUGGLE + b".\r\n"
    for chunks in ([data], [data[i:i + 1] for i in range(len(data))]):
        msg, used, r = run(chunks, bare_lf_ok=True)
        assert used == len(data) and r.done and r.error is None
        assert msg == stored + SMUGGLE.replace(b"\r\n", b"\n")
    r = DataReader(bare_lf_ok=True)
    assert r.feed(fake) == len(fake) and not r.done


@pytest.mark.parametrize("name,fake,stored", VARIANTS, ids=[v[0].decode() for v in VARIANTS])
def test_smuggling_strict(name, fake, stored):
    data = fake + SMUGGLE + b".\r\n"
    msg, used, r = whole(data)
    if b"\n" in fake.replace(b"\r\n", b""):          # a bare LF: qmail drops the session
        assert (r.error, r.done) == ("straylf", False)
    else:                                           # CR-only variants: stored, real end only
        assert (r.error, r.done, used) == (None, True, len(data))
        assert msg == stored + SMUGGLE.replace(b"\r\n", b"\n")
    r = DataReader()
    r.feed(fake)
    assert not r.done


def test_smuggling_crlf_dot_crlf_still_ends_after_bare_lf():
    data = b"a\n\r\n.\r\nNEXT"
    msg, used, r = whole(data, bare_lf_ok=True)
    assert (msg, used, r.done) == (b"a\n\n", len(data) - 4, True)


@pytest.mark.parametrize("fake,used", [
    (b"a\n.\n", 4), (b"a\r\n.\n", 5), (b"a\n.\r\n", 5), (b"a\r\n.\r\n", 6),
])
def test_lf_mode_ends_at_lf_dot_lf(fake, used):
    msg, n, r = whole(fake + SMUGGLE, lf_mode=True)
    assert (msg, n, r.done) == (b"a\n", used, True)


def test_lf_mode_cr_dot_cr_does_not_end():
    msg, n, r = whole(b"a\r.\rb\n.\n", lf_mode=True)
    assert (msg, r.done) == (b"a\r.\rb\n", True) and n == 8


def test_lf_mode_unstuffs():
    msg, n, r = whole(b"..a\n.b\r\n\n.\rx\n.\n", lf_mode=True)
    assert msg == b".a\nb\n\n.\rx\n" and r.done


# --- hops and databytes ----------------------------------------------------------

def hop_message(n, line=b"Received: from x\r\n"):
    return line * n + b"Subject: s\r\n\r\n" + b"Received: body\r\n" * 5 + b".\r\n"


@pytest.mark.parametrize("n,too", [(99, False), (100, True), (150, True), (0, False)])
def test_hops_limit(n, too):
    msg, used, r = whole(hop_message(n))
    assert r.toomanyhops is too and r.done
    if not too:
        assert r.hops == n


def test_hops_what_counts():
    head = (b"RECEIVED: a\r\nreceived\r\nDelivered-To: b\r\nDELIVEREDX\r\nReCeIvEd: c\r\n"
            b"Receive: no\r\nDeliver: no\r\n.Received: stuffed, no\r\nX-Received: no\r\n"
            b" Received: no\r\n\r\nReceived: body, no\r\n.\r\n")
    msg, used, r = whole(head)
    assert r.hops == 5 == ref_blast(head)[4]
    assert r.hops == run([head[i:i + 1] for i in range(len(head))])[2].hops


def test_hops_maxhops_parameter_and_empty_line_forms():
    assert whole(hop_message(3), maxhops=3)[2].toomanyhops
    assert not whole(hop_message(2), maxhops=3)[2].toomanyhops
    # "\r\r\n" is not an empty line; "\n" is one outside strict mode
    assert whole(b"X: 1\r\n\r\r\nReceived: a\r\n.\r\n")[2].hops == 1
    assert whole(b"X: 1\n\nReceived: a\n.\n", lf_mode=True)[2].hops == 0
    assert whole(b"X: 1\r\n\nReceived: a\r\n.\r\n", bare_lf_ok=True)[2].hops == 0


@pytest.mark.parametrize("extra,too", [(0, False), (1, True)])
def test_databytes_exact_limit(extra, too):
    body = b"abc\r\n..d\r\n" + b"e" * extra      # stores "abc\n.d\n" = 7 bytes (+extra)
    data = body + b"\r\n.\r\nQUIT\r\n"
    msg, used, r = whole(data, databytes=8)
    assert r.done and used == len(data) - 6
    assert r.size == 8 + extra and r.toobig is too
    assert msg == (b"" if too else b"abc\n.d\n\n")


def test_databytes_toobig_keeps_reading_and_discards():
    r = DataReader(databytes=10)
    assert r.feed(b"0123456789") == 10 and r.take() == b"0123456789"
    assert r.feed(b"abc\r\n") == 5 and r.toobig and r.take() == b""
    assert r.feed(b"more\r\n.\r\nX") == 9 and r.done and r.size == 19 and r.take() == b""


def test_databytes_counts_bytes_written_before_the_message():
    """qmail-spf: bytestooverflow = databytes + 1 - len(Received-SPF); 0 left is still room for nothing."""
    r = DataReader(databytes=10, counted=4)
    assert r.feed(b"01234\r\n.\r\n") and r.done and not r.toobig
    r = DataReader(databytes=10, counted=4)
    r.feed(b"012345\r\n.\r\n")
    assert r.done and r.toobig
    r = DataReader(databytes=10, counted=10)
    r.feed(b".\r\n")
    assert r.done and not r.toobig
    r = DataReader(databytes=10, counted=10)
    r.feed(b"a\r\n.\r\n")
    assert r.toobig
    assert DataReader(databytes=10, counted=11).toobig
    assert not DataReader(databytes=0, counted=500).toobig


# --- properties ------------------------------------------------------------------

PIECES = [b"\r", b"\n", b".", b"a", b"\x00", b"\r\n", b"\r\n.", b".\r\n", b"\r\n.\r\n", b"\n.\n",
          b"Received: x", b"DELIVERED", b"\r\n\r\n", b"xyz" * 7]
data_st = st.lists(st.sampled_from(PIECES), max_size=40).map(b"".join)


def split(data, cuts):
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0] + points, points + [len(data)])]


def outcome(chunks, **kw):
    msg, used, r = run(chunks, **kw)
    too_many = r.toomanyhops
    return (msg if not r.toobig else None, used, r.done, r.error, r.size, r.toobig,
            too_many, None if too_many else r.hops)


@settings(max_examples=400, deadline=None)
@given(data_st, st.lists(st.integers(0, 10 ** 6), max_size=12), st.sampled_from(sorted(MODES)),
       st.sampled_from([0, 5, 40]), st.sampled_from([2, 100]))
def test_any_split_same_result(data, cuts, mode, databytes, maxhops):
    kw = dict(MODES[mode], databytes=databytes, maxhops=maxhops)
    assert outcome(split(data, cuts), **kw) == outcome([data], **kw)


@settings(max_examples=400, deadline=None)
@given(data_st, st.sampled_from(sorted(MODES)), st.booleans())
def test_matches_reference_blast(data, mode, terminate):
    if terminate:
        data += b"\r\n.\r\n"
    msg, used, done, error, hops, size = ref_blast(data, mode)
    got, n, r = whole(data, **MODES[mode])
    assert (got, n, r.done, r.error, r.size) == (msg, used, done, error, size)
    if done:                                 # a partial last line is counted once complete
        assert r.toomanyhops == (hops >= 100)
        assert r.hops == hops


lines_st = st.lists(st.binary(max_size=20).filter(lambda b: b"\r" not in b and b"\n" not in b)
                    | st.sampled_from([b"", b".", b"..", b".x", b"Received: a"]), max_size=20)


@settings(max_examples=300, deadline=None)
@given(lines_st, st.lists(st.integers(0, 10 ** 6), max_size=6))
def test_stuff_round_trip(lines, cuts):
    message = b"".join(line + b"\n" for line in lines)
    wire = stuff(message)
    msg, used, r = run(split(wire + b"NEXT", cuts))
    assert (msg, used, r.done) == (message, len(wire), True)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"\r", b"\n", b".", b"a", b"\r\n"]), max_size=30).map(b"".join))
def test_stuff_with_cr_never_smuggles(body):
    message = body + b"\n"
    wire = stuff(message)
    for mode in MODES:                     # every reader sees exactly one end, at the end
        msg, used, r = whole(wire, **MODES[mode])
        assert (used, r.done, r.error) == (len(wire), True, None)
        assert msg == message.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    stripped = wire.replace(b"\r\n", b"")
    assert b"\r" not in stripped and b"\n" not in stripped


@pytest.mark.parametrize("message,wire", [
    (b"", b".\r\n"),
    (b"a\n", b"a\r\n.\r\n"),
    (b".\n", b"..\r\n.\r\n"),
    (b"a\n.b\n..\n.\n", b"a\r\n..b\r\n...\r\n..\r\n.\r\n"),
    (b"a\r\nb\n", b"a\r\nb\r\n.\r\n"),             # existing CRLF sent as is
    (b"a\rb\n", b"a\r\nb\r\n.\r\n"),               # bare CR -> CRLF
    (b"a\r.\r\n", b"a\r\n..\r\n.\r\n"),            # ... and the dot after it is stuffed
    (b"\n\n", b"\r\n\r\n.\r\n"),
])
def test_stuff_examples(message, wire):
    assert stuff(message) == wire


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"\r", b"\n", b".", b"a", b"\r\n"]), max_size=30).map(b"".join),
       st.lists(st.integers(0, 31), max_size=6))
def test_stuffer_in_blocks_is_stuff_of_the_whole(body, cuts):
    """qmail-remote stuffs the mess file block by block: a CRLF, a bare CR or a line-start dot cut
    by a block boundary comes out as stuff() makes it of the whole message."""
    message = body + b"\n"
    stuffer, out, prev = Stuffer(), b"", 0
    for cut in sorted(min(c, len(message)) for c in cuts) + [len(message)]:
        out += stuffer.feed(message[prev:cut])
        prev = cut
    assert out + b".\r\n" == stuff(message)


@pytest.mark.parametrize("blocks,wire", [
    ([b".\n\r", b".\r", b"\r\r", b"\ra\n"], b"..\r\n\r\n..\r\n\r\n\r\n\r\na\r\n"),   # CRs held over blocks
    ([b"a\r", b"\nb\n"], b"a\r\nb\r\n"),
    ([b"a\n", b".b\n"], b"a\r\n..b\r\n"),
    ([b"a", b".b\n"], b"a.b\r\n"),
])
def test_stuffer_examples(blocks, wire):
    stuffer = Stuffer()
    assert b"".join(stuffer.feed(b) for b in blocks) == wire


@pytest.mark.parametrize("message", [b"a", b"a\nb", b"a\r", b"."])
def test_stuff_partial_final_line(message):
    with pytest.raises(ValueError, match="partial final lines"):
        stuff(message)
    assert "#5.6.2" in PARTIAL_LINE


# --- exhaustive small inputs (make mutate: the fast paths must agree with blast()) ------

def _all_strings(alphabet, longest):
    level = [b""]
    for _ in range(longest + 1):
        yield from level
        level = [s + c for s in level for c in alphabet]


SMALL = list(_all_strings([b"\r", b"\n", b".", b"a"], 5))


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_short_input_matches_blast_whole_and_byte_by_byte(mode):
    """Every string of CR, LF, '.', 'a' up to 5 bytes, alone and after a CRLF line and
    before a terminator: the decoder fed whole and fed byte by byte gives blast()'s message,
    consumed length, end and error."""
    for body in SMALL:
        for data in (body, b"ab\r\n" + body + b"\r\n.\r\n"):
            msg, used, done, error, hops, size = ref_blast(data, mode)
            want = (msg, used, done, error, size)
            got, n, r = whole(data, **MODES[mode])
            assert (got, n, r.done, r.error, r.size) == want, (mode, data)
            got, n, r = run([data[i:i + 1] for i in range(len(data))], **MODES[mode])
            assert (got, n, r.done, r.error, r.size) == want, (mode, data, "byte by byte")


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_short_input_split_in_two(mode):
    for body in SMALL[:341]:                            # up to 4 bytes
        data = b"x\r\n" + body + b"y\r\n.\r\n"
        want = ref_blast(data, mode)
        want = (want[0], want[1], want[2], want[3], want[5])
        for cut in range(len(data) + 1):
            got, n, r = run([data[:cut], data[cut:]], **MODES[mode])
            assert (got, n, r.done, r.error, r.size) == want, (mode, data, cut)


def test_only_dot_lines_and_chunk_end_crs_reach_the_byte_machine(monkeypatch):
    """The module's speed promise: whole lines go through bytes methods in C; a line-start
    "." followed by CR or LF, a CR at a chunk end and (strict) a bare LF take _step()."""
    from qmailpy.proto import dotdata
    seen = []
    real = dotdata._step

    def counting(mode, st, c, put):
        seen.append(c)
        return real(mode, st, c, put)

    monkeypatch.setattr(dotdata, "_step", counting)
    r = DataReader()
    assert r.feed(b"Subject: x\r\n\r\n..stuffed\r\n.x\r\nbody\rcr\r\n") == 38
    assert seen == [] and r.take() == b"Subject: x\n\n.stuffed\nx\nbody\rcr\n"
    r.feed(b"end\r")
    assert seen == [13]
    r.feed(b"\n.\r\n")
    assert seen == [13, 10, 46, 13, 10] and r.done and r.take() == b"end\n"
    seen.clear()
    r = DataReader(lf_mode=True)
    assert r.feed(b"a\nb\r\nc\n.\n") == 9 and r.done and r.take() == b"a\nb\nc\n"
    assert seen == [46, 10]
    seen.clear()
    r = DataReader(bare_lf_ok=True)
    r.feed(b"a\nb\r\n")
    assert seen == [] and r.take() == b"a\nb\n"
    r = DataReader()
    r.feed(b"x\r\n..y\r\n")                      # a stuffed dot on the second line: still C
    assert seen == [] and r.take() == b"x\n.y\n"
    r = DataReader()
    r.feed(b"a\r\n.\rb\r\n..x\r\n")              # after ".\r" the bulk path takes over again
    assert seen == [46, 13, 98] and r.take() == b"a\n.\rb\n.x\n"
    seen.clear()
    r = DataReader()
    assert r.feed(b"x\r\ny\nz") == 5 and r.error == "straylf"       # strict: only the bare LF steps
    assert seen == [10]
    seen.clear()
    r = DataReader()
    r.feed(b"a\r\n..b\r\n.\rc\r\n")               # a ".\r" ahead: the lines before it still in C
    assert seen == [46, 13, 99] and r.take() == b"a\n.b\n.\rc\n"
    seen.clear()
    r = DataReader(bare_lf_ok=True)
    r.feed(b"a\r\n.\nb\r\n..x\r\n")              # after ".\n" the bulk path takes over again
    assert seen == [46, 10] and r.take() == b"a\n.\nb\n.x\n"


def test_bytes_like_input_gives_bytes():
    r = DataReader()
    assert r.feed(memoryview(b"ab\r\n")) == 4
    data = r.take()
    assert data == b"ab\n" and type(data) is bytes


def test_databytes_one():
    msg, used, r = whole(b"a\r\n.\r\n", databytes=1)
    assert r.toobig and r.done and r.size == 2 and msg == b""
    msg, used, r = whole(b"\r\n.\r\n", databytes=1)
    assert not r.toobig and msg == b"\n"


def test_hops_stop_at_the_first_empty_line():
    """The header ends at the first empty line, CRLF or (outside strict) LF-only, wherever
    the other kind of empty line comes later in the same chunk."""
    msg, used, r = whole(b"Received: a\n\nReceived: b\n\nReceived: c\n.\n", lf_mode=True)
    assert r.done and r.hops == 1
    msg, used, r = whole(b"\r\nReceived: x\r\n\n\r\n.\r\n", bare_lf_ok=True)
    assert r.done and r.hops == 0
    msg, used, r = whole(b"Received: a\r\n\r\nReceived: b\n\nReceived: c\r\n.\r\n", bare_lf_ok=True)
    assert r.done and r.hops == 1
    msg, used, r = whole(b"Received: a\n\nReceived: b\r\n\r\nReceived: c\r\n.\r\n", bare_lf_ok=True)
    assert r.done and r.hops == 1


def test_maxhops_zero_or_less_refuses_at_once_one_allows_none_over():
    assert DataReader(maxhops=0).toomanyhops is True
    assert DataReader(maxhops=-1).toomanyhops is True
    r = DataReader(maxhops=1)
    assert r.toomanyhops is False
    r.feed(b"Subject: x\r\n")
    assert r.toomanyhops is False
    r.feed(b"Received: y\r\n")
    assert r.toomanyhops is True
