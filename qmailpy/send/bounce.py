"""Bounce messages in qmail's QSBMF layout, with H-Sphere's controls.

addbounce(): the paragraph qmail-send appends to bounce/<id> per failed
recipient. chunks(): the bounce injectbounce() queues, byte for byte
qmail's when every control has its default; bouncesubject/bouncemessage
(doublebouncesubject/doublebouncemessage) replace the Subject and the lines
after "Hi. This is the qmail-send program at <bouncehost>.", and the copy
of the message is bouncecopy's (header + MIME skeleton, bouncemaxbytes).
It reads bounce/<id> and the message in blocks and hands the bounce out in
chunks, so a bounce of any size costs bounded memory and bounded work per
chunk. The bounce's own header is fixed text: the controls, the date, the
original sender (CR, LF and NUL made '_') and a boundary only when valid.
"""
from collections import namedtuple

from qmailpy.proto.date822 import date822
from qmailpy.proto.quote import quote, quote2
from qmailpy.send import bouncecopy
from qmailpy.send.mime import HeaderScan

COPY_SEP = b"--- Below this line is a copy of the message.\n\n"
ORIGINAL_SEP = b"--- Below this line is the original bounce.\n\n"
NOCOPY_SEP = b"--- The copy of the message is left out: the mail server refused it.\n"
TRIPLE = b"#@[]"               # the sender of a double bounce

Settings = namedtuple("Settings", "bouncefrom bouncehost bouncesubject bouncemessage maxbytes "
                                  "doublebounceto doublebouncehost doublebouncesubject doublebouncemessage")
Settings.__doc__ = "The bounce controls as bytes (message texts: tuples of lines)."


def _b(s):
    return s.encode("utf-8", "surrogateescape") if isinstance(s, str) else bytes(s)


def settings(controls):
    v = controls.value
    return Settings(_b(v("bouncefrom")), _b(v("bouncehost")), _b(v("bouncesubject")),
                    tuple(_b(x) for x in v("bouncemessage")), v("bouncemaxbytes") or 0,
                    _b(v("doublebounceto")), _b(v("doublebouncehost")), _b(v("doublebouncesubject")),
                    tuple(_b(x) for x in v("doublebouncemessage")))


_UNSAFE = bytes.maketrans(b"\r\n\0", b"___")


def safe_address(addr):
    """An address for a line of the bounce's text: CR, LF and NUL become '_' (qmail: LF only)."""
    return addr.translate(_UNSAFE)


def addbounce(recip, report):
    """The bounce/<id> paragraph for one failed recipient (address already vdom-stripped)."""
    text = bytearray(b"<" + safe_address(recip) + b">:\n" + report)
    if report and not report.endswith(b"\n"):
        text += b"\n"
    for pos in range(len(text) - 2, 0, -1):       # a blank line would end the paragraph
        if text[pos] == 10 and text[pos - 1] == 10:
            text[pos] = 0x2F
    return bytes(text + b"\n")


def discard_reason(sender, s):
    """Why a bounce for `sender` is not sent: a log prefix, or None to send it."""
    if sender == TRIPLE:
        return "triple bounce: discarding"
    if not sender and not s.doublebounceto:     # doublebounce-trim: empty control/doublebounceto
        return "double bounce: discarding"
    return None


def envelope(sender, s):
    """(bounce sender, bounce recipient) for a message whose sender was `sender`."""
    if sender:
        return b"", sender
    return TRIPLE, s.doublebounceto + b"@" + s.doublebouncehost


def chunks(now, sender, report, mess, s, copy=True):
    """The bounce (qmail-queue adds its Received line on top) in chunks of about a block,
    some empty (a block of the message read). report, mess: binary files, mess seekable.
    copy False: the report without the copy (a filter refused the bounce with it)."""
    double = not sender
    _, recip = envelope(sender, s)
    scan = None
    if copy and not double:
        scan = HeaderScan()
        yield from bouncecopy.scan_chunks(mess, scan)
    boundary = scan.boundary if scan is not None else None
    head = [b"Date: ", date822(now).encode(), b"\nFrom: ", quote(s.bouncefrom), b"@", s.bouncehost,
            b"\nTo: ", quote2(safe_address(recip)), b"\n"]
    if boundary is not None:
        head += [b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="', boundary, b'"\n']
    head += [b"Subject: ", s.doublebouncesubject if double else s.bouncesubject, b"\n\n"]
    head += [b"Hi. This is the qmail-send program at ", s.bouncehost, b".\n"]
    head += [line + b"\n" for line in (s.doublebouncemessage if double else s.bouncemessage)]
    yield b"".join(head + [b"\n"])
    while True:
        data = report.read(bouncecopy.BLOCK)
        if not data:
            break
        yield data
    if not copy:
        yield NOCOPY_SEP
        return
    yield (ORIGINAL_SEP if double else COPY_SEP) + b"Return-Path: <" + quote2(sender) + b">\n"
    yield from bouncecopy.copy_chunks(mess, scan, s.maxbytes, whole=double)
