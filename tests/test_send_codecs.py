"""Pure pieces of qmail-send: the spawn, todo and clean wires, rewrite(), nextretry(), log safety."""
import math

from hypothesis import example, given, strategies as st

from qmailpy.proto import spawnwire as sw
from qmailpy import clock
from qmailpy.proto import cleanwire, todowire
from qmailpy.proto.nulrecords import NulRecords
from qmailpy.log import qmail_safe as safe
from qmailpy.addr.rewrite import LOCAL, REMOTE, Rewriter
from qmailpy.send.rewrite import bounce_sender, verp_sender

addr = st.binary(max_size=40).map(lambda b: b.replace(b"\0", b"x"))


def chunks(data, cuts):
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0] + points, points + [len(data)])]


@given(st.lists(st.tuples(st.integers(0, sw.MAX_DELNUM), addr, addr, addr), max_size=5), st.lists(st.integers(0, 10**6)))
def test_commands_survive_any_chunking(cmds, cuts):
    data = b"".join(sw.encode_command(*c) for c in cmds)
    dec, got = sw.CommandDecoder(), []
    for piece in chunks(data, cuts):
        got += dec.feed(piece)
    assert got == [sw.Command(*c) for c in cmds] and not dec.pending


@given(st.integers(0, sw.MAX_DELNUM),
       st.lists(st.tuples(st.integers(0, sw.MAX_DELNUM), st.sampled_from([b"K", b"Z", b"D"]), addr), max_size=5),
       st.lists(st.integers(0, 10**6)))
def test_reports_survive_any_chunking(limit, reps, cuts):
    data = sw.encode_limit(limit) + b"".join(sw.encode_report(*r) for r in reps)
    dec, got = sw.ReportDecoder(), []
    for piece in chunks(data, cuts):
        got += dec.feed(piece)
    assert dec.limit == limit and got == [sw.Report(*r) for r in reps]


def test_wire_bytes_are_big_concurrency():
    assert sw.encode_limit(500) == b"\xf4\x01"
    assert sw.encode_command(258, "3/1234", b"a@b", b"c@d") == b"\x02\x013/1234\0a@b\0c@d\0"
    assert sw.encode_report(0, b"K", b"ok\0ignored") == b"\0\0Kok\0"
    dec = sw.ReportDecoder(expect_limit=False)       # a NUL inside the delivery number is not an end
    assert dec.feed(b"\0\0Kfine\0\x00\x01\0") == [sw.Report(0, b"K", b"fine"), sw.Report(256, b"", b"")]


def test_report_is_cut_at_reportmax():
    dec = sw.ReportDecoder(expect_limit=False)
    [rep] = dec.feed(b"\1\0D" + b"x" * 20000 + b"\0")
    assert len(rep.text) == sw.REPORTMAX - 3 and rep.delnum == 1


def test_todo_records():
    data = (todowire.encode_log("new msg 5") + todowire.encode_done(5, True, False)
            + todowire.encode_done(6, False, True) + todowire.encode_exit() + b"Q?\0")
    assert data.startswith(b"Lnew msg 5\0D105\0D016\0X\0")
    dec = todowire.RecordDecoder()
    got = [r for i in range(len(data)) for r in dec.feed(data[i:i + 1])]
    assert got == [todowire.LogLine(b"new msg 5"), todowire.Done(5, True, False), todowire.Done(6, False, True),
                   todowire.Exiting(), todowire.Unknown(b"Q?")]


@given(st.lists(st.integers(1, 10 ** 6), min_size=1, max_size=50), st.lists(st.integers(0, 10000), max_size=8))
def test_clean_requests_any_chunking(ids, cuts):
    data = b"".join(cleanwire.encode(cleanwire.FOOP if i % 2 else cleanwire.TODO, i) for i in ids)
    dec = cleanwire.RequestDecoder()
    got = [r for c in chunks(data, cuts) for r in dec.feed(c)]
    assert [cleanwire.parse(r) for r in got] == [(cleanwire.FOOP if i % 2 else cleanwire.TODO, i) for i in ids]


def test_clean_request_too_long_is_refused_whole():
    dec = cleanwire.RequestDecoder()
    assert dec.feed(b"todo/" + b"1" * 5000) == []
    [req] = dec.feed(b"2\0" + cleanwire.encode(cleanwire.TODO, 7))[:1]
    assert req.startswith(b"todo/111") and cleanwire.parse(req) is None
    assert cleanwire.parse(cleanwire.encode(cleanwire.TODO, 7)[:-1]) == (cleanwire.TODO, 7)


REW = Rewriter(["localhost", "Mx.Example.Org"],
               ["virt.example:vprefix", ".sub.example:wild", "joe@other.example:joepre", "empty.example:",
                "virt.example:later"],
               ["pct.example"], "envnoat.example")


def test_rewrite():
    assert REW.rewrite(b"u@LOCALHOST") == (LOCAL, b"u@LOCALHOST")
    assert REW.rewrite(b"u@mx.example.org") == (LOCAL, b"u@mx.example.org")
    assert REW.rewrite(b"u@virt.example") == (LOCAL, b"later-u@virt.example")       # last line wins
    assert REW.rewrite(b"u@a.sub.example") == (LOCAL, b"wild-u@a.sub.example")
    assert REW.rewrite(b"joe@other.example") == (LOCAL, b"joepre-joe@other.example")
    assert REW.rewrite(b"ann@other.example") == (REMOTE, b"ann@other.example")
    assert REW.rewrite(b"u@empty.example") == (REMOTE, b"u@empty.example")           # empty prefix: not virtual
    assert REW.rewrite(b"u@far.example") == (REMOTE, b"u@far.example")
    assert REW.rewrite(b"noat") == (REMOTE, b"noat@envnoat.example")
    assert REW.rewrite(b"a@b@localhost") == (LOCAL, b"a@b@localhost")                  # the LAST @ splits
    assert REW.rewrite(b"u%far.example@pct.example") == (REMOTE, b"u@far.example")
    assert REW.rewrite(b"u%localhost%x@pct.example") == (REMOTE, b"u%localhost@x")
    assert REW.rewrite(b"u%x%pct.example@pct.example") == (REMOTE, b"u@x")


def test_bounce_address_forms():
    assert REW.strip_prefix(b"later-u@virt.example") == b"u@virt.example"
    assert REW.strip_prefix(b"wild-u@a.sub.example") == b"u@a.sub.example"
    assert REW.strip_prefix(b"vprefix-u@virt.example") == b"vprefix-u@virt.example"
    assert REW.strip_prefix(b"u@far.example") == b"u@far.example"
    assert verp_sender(b"owner-@lists.example-@[]", b"joe@far.example") == b"owner-joe=far.example@lists.example"
    assert verp_sender(b"owner@lists.example", b"joe@far.example") == b"owner@lists.example"
    # qmail's senderadd(): no '@' in the recipient, or none before '-@[]', leaves the sender as it is
    assert verp_sender(b"owner-@lists.example-@[]", b"joe") == b"owner-@lists.example-@[]"
    assert verp_sender(b"owner-@[]", b"joe@far.example") == b"owner-@[]"
    assert bounce_sender(b"owner-@lists.example-@[]") == b"owner-@lists.example"
    assert bounce_sender(b"") == b""


def test_nextretry_is_qmails():
    c = clock.Clock()
    born = 1_000_000
    assert c.nextretry(born, born, 1) == born + 400
    assert c.nextretry(born, born + 400, 1) == born + 1600
    assert c.nextretry(born, born + 1600, 0) == born + 2500
    assert c.nextretry(born, born - 5, 0) == born + 95                  # birth ahead of the clock: from now, n = 0
    assert c.nextretry(born, born + 10**5, 1) == born + (math.isqrt(10**5) + 20) ** 2
    fast = clock.Clock(100)
    assert fast.nextretry(born, born + 4, 1) == born + 16               # age 400 virtual s -> 1600 -> 16 real s
    assert fast.dying(born, born + 6049, 604800) is True and fast.dying(born, born + 6048, 604800) is False
    assert clock.parse_scale({"QMAILPY_TIMESCALE": "x"}) == 1.0 and clock.parse_scale({}) == 1.0
    assert clock.parse_scale({"QMAILPY_TIMESCALE": "-3"}) == 1.0 and clock.parse_scale({"QMAILPY_TIMESCALE": "50"}) == 50


def test_log_safe():
    assert safe(b"did 0+0+1\n") == "did_0+0+1/"
    assert safe("100%\tb\xe9") == "100__b__"


# -- any bytes, any split: the decoders raise nothing and give what one feed of the whole gives

junk = st.binary(max_size=300) | st.lists(st.sampled_from([b"\0", b"D", b"L", b"X", b"0", b"1", b"9", b"todo/",
                                                          b"foop/", b"K", b"x" * 60]), max_size=40).map(b"".join)


def fed(dec, data, cuts):
    return [r for piece in chunks(data, cuts) for r in dec.feed(piece)]


@given(junk, st.lists(st.integers(0, 10**6), max_size=8), st.integers(1, 20))
def test_nul_records_any_bytes_any_split(data, cuts, limit):
    recs = NulRecords(limit)
    got = fed(recs, data, cuts)
    assert got == [r[:limit] for r in data.split(b"\0")[:-1]]       # the model: split, cut
    assert len(recs._buf) <= limit


@given(junk, st.lists(st.integers(0, 10**6), max_size=8))
def test_todo_and_clean_decoders_any_bytes_any_split(data, cuts):
    assert fed(todowire.RecordDecoder(), data, cuts) == todowire.RecordDecoder().feed(data)
    got = fed(cleanwire.RequestDecoder(), data, cuts)
    assert got == cleanwire.RequestDecoder().feed(data)
    for req in got:
        parsed = cleanwire.parse(req)
        assert parsed is None or cleanwire.encode(*parsed) == req + b"\0" or req[5:6] == b"0"


@given(junk, st.lists(st.integers(0, 10**6), max_size=8), st.booleans())
def test_spawn_decoders_any_bytes_any_split(data, cuts, expect_limit):
    cmds = sw.CommandDecoder()
    assert fed(cmds, data, cuts) == sw.CommandDecoder().feed(data)
    whole = sw.ReportDecoder(expect_limit)
    reps = sw.ReportDecoder(expect_limit)
    assert fed(reps, data, cuts) == whole.feed(data) and reps.limit == whole.limit


@given(st.lists(st.one_of(
    st.tuples(st.just("done"), st.integers(0, 2**64), st.booleans(), st.booleans()),
    st.tuples(st.just("log"), st.binary(max_size=50)),
    st.tuples(st.just("exit"))), max_size=8), st.lists(st.integers(0, 10**6), max_size=8))
def test_todo_records_round_trip(records, cuts):
    data, want = b"", []
    for rec in records:
        if rec[0] == "done":
            data += todowire.encode_done(*rec[1:])
            want.append(todowire.Done(*rec[1:]))
        elif rec[0] == "log":
            data += todowire.encode_log(rec[1])
            want.append(todowire.LogLine(rec[1].replace(b"\0", b"_")))
        else:
            data += todowire.encode_exit()
            want.append(todowire.Exiting())
    assert fed(todowire.RecordDecoder(), data, cuts) == want


@example(b"D11" + b"1" * 5000)         # int() refuses more than 4300 digits: the decoder raised ValueError
@given(st.binary(max_size=40) | st.builds(lambda n, lr: b"D" + lr + b"7" * n, st.integers(0, 6000),
                                          st.sampled_from([b"00", b"01", b"10", b"11"])))
def test_any_todo_record_parses(rec):
    got = todowire.parse_record(rec)
    assert isinstance(got, (todowire.Done, todowire.LogLine, todowire.Exiting, todowire.Unknown))
