"""The bounce copy as qmail-send built it before the streaming rewrite (issue 22): the oracle.

Kept verbatim (whole message in memory, every "--" line tested against every
open boundary; only the Content-Type parameter parser, unchanged, is shared) so tests/test_send_bouncestream.py can check that the streaming
copy gives the same bytes for honest MIME messages. Not used by qmailpy.
"""
from collections import namedtuple

from qmailpy.proto.date822 import date822
from qmailpy.proto.quote import quote, quote2
from qmailpy.send import bounce, mime

STRIPPED = b"\n\n--- End of message stripped.\n"
Skeleton = namedtuple("Skeleton", "copy boundary")


def _lines(data):
    """Lines with their \\n (the last may lack it)."""
    parts = data.split(b"\n")
    out = [p + b"\n" for p in parts[:-1]]
    if parts[-1]:
        out.append(parts[-1])
    return out


def _blank(line):
    return line.rstrip(b"\r\n") == b""


def header_value(lines, name):
    """The unfolded value of the first `name:` field in header lines, or None."""
    want = name.lower() + b":"
    value = None
    for line in lines:
        if value is not None:
            if line[:1] in (b" ", b"\t"):
                value += b" " + line.strip()
                continue
            return value
        if line.lower().startswith(want):
            value = line[len(want):].strip()
    return value


def multipart_boundary(content_type):
    """The boundary of a multipart Content-Type value, or None (unchecked, as before)."""
    return mime.boundary_param(content_type)


def _delimiter(line, stack):
    """(index in stack, closing?) when line is a delimiter of one of the open boundaries."""
    text = line.rstrip(b" \t\r\n")
    if not text.startswith(b"--"):
        return None
    for k in range(len(stack) - 1, -1, -1):
        delim = b"--" + stack[k]
        if text == delim:
            return k, False
        if text == delim + b"--":
            return k, True
    return None


def skeleton(mess):
    """The header (and MIME skeleton) of a message; its top multipart boundary or None."""
    lines = _lines(mess)
    out, i = [], 0
    while i < len(lines) and not _blank(lines[i]):
        i += 1
    header = lines[:i]
    out.extend(lines[:i + 1])                # the header and the blank line that ends it
    top = multipart_boundary(header_value(header, b"content-type"))
    if top is None or i >= len(lines):
        return Skeleton(b"".join(out), None)
    stack, part, in_header = [top], [], False
    for line in lines[i + 1:]:
        if in_header:
            out.append(line)
            if not _blank(line):
                part.append(line)
                continue
            in_header = False
            inner = multipart_boundary(header_value(part, b"content-type"))
            if inner is not None:
                stack.append(inner)
            continue
        hit = _delimiter(line, stack)
        if hit is None:
            continue                            # a body, preamble or epilogue line
        k, closing = hit
        del stack[k + 1:]
        out.append(line if line.endswith(b"\n") else line + b"\n")
        if closing:
            stack.pop()
            if not stack:
                break
        else:
            in_header, part = True, []
    return Skeleton(b"".join(out), top)


def limit(copy, maxbytes):
    """bouncemaxbytes: at most maxbytes of the copy (0 = all), marked when cut."""
    if maxbytes and len(copy) > maxbytes:
        return copy[:maxbytes] + STRIPPED
    return copy


def compose(now, sender, bouncetext, mess, s):
    """The bounce message bytes (qmail-queue adds its Received line on top)."""
    double = not sender
    _, recip = bounce.envelope(sender, s)
    if double:
        copy, boundary = mess, None
    else:
        copy, boundary = skeleton(mess)
    head = [b"Date: ", date822(now).encode(), b"\nFrom: ", quote(s.bouncefrom), b"@", s.bouncehost,
            b"\nTo: ", quote2(recip), b"\n"]
    if boundary is not None:
        head += [b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="', boundary, b'"\n']
    head += [b"Subject: ", s.doublebouncesubject if double else s.bouncesubject, b"\n\n"]
    lines = s.doublebouncemessage if double else s.bouncemessage
    body = [b"Hi. This is the qmail-send program at ", s.bouncehost, b".\n"]
    body += [line + b"\n" for line in lines]
    body += [b"\n", bouncetext, bounce.ORIGINAL_SEP if double else bounce.COPY_SEP,
             b"Return-Path: <", quote2(sender), b">\n", limit(copy, s.maxbytes)]
    return b"".join(head + body)
