"""Edges of the spawn wire (qmailpy/proto/spawnwire.py) the round-trip properties in
tests/test_send_codecs.py do not pin: what it refuses to encode, a report cut across reads."""
import pytest

from qmailpy.proto import spawnwire as sw


@pytest.mark.parametrize("field", ["messid", "sender", "recipient"])
def test_a_command_with_a_nul_is_refused(field):
    """A NUL in a field would end it early and shift the rest (a recipient taken from another
    field)."""
    args = {"messid": "3/1", "sender": b"a@b", "recipient": b"c@d"}
    args[field] = "x\0y" if field == "messid" else b"x\0y"
    with pytest.raises(ValueError) as e:
        sw.encode_command(1, **args)
    assert str(e.value) == "%s cannot contain NUL" % field


@pytest.mark.parametrize("n", [-1, sw.MAX_DELNUM + 1])
def test_a_delivery_number_must_fit_its_two_bytes(n):
    with pytest.raises(ValueError) as e:
        sw.encode_delnum(n)
    assert str(e.value) == "delivery number out of range: %d" % n


def test_a_long_report_is_cut_across_reads():
    dec = sw.ReportDecoder(expect_limit=False)
    got = []
    for piece in [b"\1\0D"] + [b"x" * 5000] * 4 + [b"\0\2\0Kok\0"]:
        got += dec.feed(piece)
    assert [(r.delnum, r.kind, len(r.text)) for r in got] == [(1, b"D", sw.REPORTMAX - 3), (2, b"K", 2)]
