"""qmail's quote.c: local parts in double quotes only when RFC 821/822 need them.

One codec for qmail-local's Return-Path, qmail-send's bounce headers and
qmail-remote's MAIL/RCPT addresses.
"""
# quote.c's ok[] table: bytes that never force quoting (atoms and dots)
ATOM = frozenset(b"!#$%&'*+-./0123456789=?ABCDEFGHIJKLMNOPQRSTUVWXYZ^_`abcdefghijklmnopqrstuvwxyz{|}~")


def quote_needed(box):
    """Empty, a leading or trailing dot, '..', or a byte outside the atom table."""
    if not box or box[:1] == b"." or box[-1:] == b"." or b".." in box:
        return True
    return any(c not in ATOM for c in box)


def quote(box):
    """The local part as is, or in double quotes with a backslash before CR, LF, '"' and '\\'."""
    if not quote_needed(box):
        return box
    out = bytearray(b'"')
    for c in box:
        if c in b'\r\n"\\':
            out.append(92)
        out.append(c)
    out.append(34)
    return bytes(out)


def quote2(addr):
    """quote.c quote2(): quote the part before the last '@' (all of it when there is none)."""
    if not addr:
        return addr
    at = addr.rfind(b"@")
    if at < 0:
        return quote(addr)
    return quote(addr[:at]) + addr[at:]
