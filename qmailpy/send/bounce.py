"""Bounce messages in qmail's QSBMF layout, with H-Sphere's controls.

addbounce(): the paragraph qmail-send appends to bounce/<id> per failed
recipient. compose(): the bounce injectbounce() queues, byte for byte
qmail's when every control has its default; bouncesubject/bouncemessage
(doublebouncesubject/doublebouncemessage) replace the Subject and the lines
after "Hi. This is the qmail-send program at <bouncehost>.", and the copy
of the message is bouncecopy's (header + MIME skeleton, bouncemaxbytes).
Pure: the caller reads the files and injects.
"""
from collections import namedtuple

from qmailpy.proto.date822 import date822
from qmailpy.proto.quote import quote, quote2
from qmailpy.send import bouncecopy

COPY_SEP = b"--- Below this line is a copy of the message.\n\n"
ORIGINAL_SEP = b"--- Below this line is the original bounce.\n\n"
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


def addbounce(recip, report):
    """The bounce/<id> paragraph for one failed recipient (address already vdom-stripped)."""
    text = bytearray(b"<" + recip.replace(b"\n", b"_") + b">:\n" + report)
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


def compose(now, sender, bouncetext, mess, s):
    """The bounce message bytes (qmail-queue adds its Received line on top)."""
    double = not sender
    _, recip = envelope(sender, s)
    if double:
        copy, boundary = mess, None
    else:
        copy, boundary = bouncecopy.skeleton(mess)
    head = [b"Date: ", date822(now).encode(), b"\nFrom: ", quote(s.bouncefrom), b"@", s.bouncehost,
            b"\nTo: ", quote2(recip), b"\n"]
    if boundary is not None:
        head += [b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="', boundary, b'"\n']
    head += [b"Subject: ", s.doublebouncesubject if double else s.bouncesubject, b"\n\n"]
    lines = s.doublebouncemessage if double else s.bouncemessage
    body = [b"Hi. This is the qmail-send program at ", s.bouncehost, b".\n"]
    body += [line + b"\n" for line in lines]
    body += [b"\n", bouncetext, ORIGINAL_SEP if double else COPY_SEP,
             b"Return-Path: <", quote2(sender), b">\n", bouncecopy.limit(copy, s.maxbytes)]
    return b"".join(head + body)
