"""qmailpy.scan.scan_ulong, the one reading of qmail's number fields (smtproutes ports,
tcpserver's options, qmail-todo's u/p records): djb's scan_ulong into an unsigned long."""
from hypothesis import example, given, strategies as st

from qmailpy.scan import scan_ulong

ULONG = 1 << 64


@example("0" * 5000 + "40", "x")           # int() refuses more than 4300 digits
@example("9" * 5000, "")
@given(st.text(alphabet="0123456789", max_size=200), st.text(max_size=5))
def test_the_leading_digits_wrap_as_an_unsigned_long(digits, rest):
    if rest[:1].isascii() and rest[:1].isdigit():
        rest = "x" + rest
    want = int(digits or "0") % ULONG if len(digits) <= 4000 else int(digits[-64:]) % ULONG
    assert scan_ulong(digits + rest) == want
    assert scan_ulong((digits + rest).encode()) == want


def test_no_leading_digit_is_zero():
    assert scan_ulong("") == scan_ulong("x12") == scan_ulong(b" 12") == scan_ulong("\u0663") == 0
    assert scan_ulong("25x") == 25 and scan_ulong(b"18446744073709551617") == 1
