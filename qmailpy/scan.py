"""djb's scan_ulong(): how qmail reads a number it finds in a text, one home for every reader
of qmail's number fields (smtproutes ports, tcpserver's options, qmail-todo's u/p records)."""
ULONG = 1 << 64


def scan_ulong(text):
    """The number spelled by the leading ASCII digits of `text` (str or bytes), modulo 2**64 as
    an unsigned long wraps; 0 when there are none. Only the last 64 of the digits are read:
    10**64 is a multiple of 2**64, so they decide, and int() refuses more than 4300 digits."""
    zero, nine = (48, 57) if isinstance(text, (bytes, bytearray)) else ("0", "9")
    end = 0
    for c in text:
        if not zero <= c <= nine:
            break
        end += 1
    return int(text[max(0, end - 64):end]) % ULONG if end else 0
