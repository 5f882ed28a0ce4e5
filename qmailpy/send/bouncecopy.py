"""What of the bounced message goes into a bounce (H-Sphere's Painceira/Lindberg patch).

H-Sphere's qmail carries Jose Luis Painceira's patch, which deletes the body
of the bounced message, built on Fred Lindberg's patch, which keeps a MIME
message's structure. So the copy keeps the message's header and, for a
multipart message, each part's delimiter line and header (nested multiparts
too), dropping every body, preamble and epilogue. The multipart boundary is
returned so the bounce can declare itself multipart with it and read as the
original's (now empty) parts. Pure: bytes in, bytes out.
"""
from collections import namedtuple

Skeleton = namedtuple("Skeleton", "copy boundary")
STRIPPED = b"\n\n--- End of message stripped.\n"


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
    """The boundary of a multipart Content-Type value, or None."""
    if content_type is None:
        return None
    media, _, params = content_type.partition(b";")
    if not media.strip().lower().startswith(b"multipart/"):
        return None
    rest = params
    while rest:
        rest = rest.lstrip(b" \t;")
        name, eq, rest = rest.partition(b"=")
        if not eq:
            return None
        rest = rest.lstrip(b" \t")
        if rest[:1] == b'"':
            end = 1
            value = bytearray()
            while end < len(rest) and rest[end:end + 1] != b'"':
                if rest[end:end + 1] == b"\\" and end + 1 < len(rest):
                    end += 1
                value += rest[end:end + 1]
                end += 1
            value, rest = bytes(value), rest[end + 1:]
        else:
            value, _, rest = rest.partition(b";")
            value = value.strip()
        if name.strip().lower() == b"boundary":
            return value or None
    return None


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
