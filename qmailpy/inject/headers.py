"""qmail's header fields (hfield.c) and its header/body split (headerbody.c).

Field names qmail-inject knows are matched case-insensitively (ASCII
letters; '-' exactly), with spaces or tabs allowed before the colon. A
field is valid when it has a colon after a non-empty name of printable
non-space ASCII. The header ends at the first empty line (which belongs to
the body) or at the first line that is neither a valid field, a
continuation line (starting with a space or tab) nor an mbox `From ` line
(kept as `MBOX-Line: From ...`); such a line starts the body, after an
empty line put before it (headerbody.c: hdone(), dobl("\n"), dobl(line)).
A last line without a newline gets one.
"""

NAMES = ("sender", "from", "reply-to", "to", "cc", "bcc", "date", "message-id", "subject",
         "resent-sender", "resent-from", "resent-reply-to", "resent-to", "resent-cc", "resent-bcc",
         "resent-date", "resent-message-id", "return-receipt-to", "errors-to", "apparently-to",
         "received", "return-path", "delivered-to", "content-length", "content-type",
         "content-transfer-encoding", "notice-requested-upon-delivery-to", "mail-followup-to")
(SENDER, FROM, REPLYTO, TO, CC, BCC, DATE, MESSAGEID, SUBJECT,
 R_SENDER, R_FROM, R_REPLYTO, R_TO, R_CC, R_BCC, R_DATE, R_MESSAGEID,
 RETURNRECEIPTTO, ERRORSTO, APPARENTLYTO, RECEIVED, RETURNPATH, DELIVEREDTO, CONTENTLENGTH,
 CONTENTTYPE, CONTENTTRANSFERENCODING, NOTICEREQUESTED, MAILFOLLOWUPTO) = range(1, len(NAMES) + 1)
RESENT = frozenset((R_SENDER, R_FROM, R_REPLYTO, R_TO, R_CC, R_BCC, R_DATE, R_MESSAGEID))
_ENCODED = tuple(n.encode("ascii") for n in NAMES)
MBOX_PREFIX = b"MBOX-Line: "


def _match(field, name):
    """hmatch(): `name` (lower case) then optional spaces/tabs then ':'."""
    n = len(name)
    if len(field) <= n:
        return False
    for i in range(n):
        ch, want = field[i], name[i]
        if ch != want and (want == 0x2D or ch != want - 32):
            return False
    i = n
    while i < len(field):
        ch = field[i]
        if ch == 0x3A:
            return True
        if ch not in (0x20, 0x09):
            return False
        i += 1
    return False


def known(field):
    """The type number of a field qmail-inject knows (1..28), else 0."""
    for number, name in enumerate(_ENCODED, 1):
        if _match(field, name):
            return number
    return 0


def valid(field):
    """hfield_valid(): a colon after a non-empty name of bytes 33..126 (blanks before the colon allowed)."""
    j = field.find(b":")
    if j < 0:
        return False
    while j and field[j - 1] in (0x20, 0x09):
        j -= 1
    return j > 0 and all(32 < ch < 127 for ch in field[:j])


def split(lines):
    """Read the header from an iterator of lines (bytes, each ending with a newline but
    perhaps the last): yields ("field", bytes) for each header field (continuation
    lines included), ("end", None) once, then ("body", line) for the line that
    started the body, if any (after the empty line qmail puts before a line
    that is not one). The rest of the body is the caller's to copy (a last
    line without a newline gets one there too)."""
    field = None                        # the lines of the field being read (joined once: linear time)
    for line in lines:
        if not line.endswith(b"\n"):
            line += b"\n"
        if field is not None:
            if line[:1] in (b" ", b"\t"):
                field.append(line)
                continue
            yield "field", b"".join(field)
            field = None
        if line == b"\n":
            break
        if line.startswith(b"From "):
            field = [MBOX_PREFIX, line]
        elif valid(line):
            field = [line]
        else:
            break
    else:
        if field is not None:
            yield "field", b"".join(field)
        yield "end", None
        return
    yield "end", None
    yield "body", line if line == b"\n" else b"\n" + line
