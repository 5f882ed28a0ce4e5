"""The header block of a message read as RFC 5322 fields (pure; bytes in, fields out).

The block is the lines before the first empty line, whichever line end the
message uses (LF LF or CRLF CRLF: a line holding only CR is empty). A line
starting with a space or tab continues the field before it (folding), so a
folded line is never a field of its own. A field name is printable ASCII
other than ':' with no white space before the colon; the first line that is
neither a field nor a continuation ends the block as an empty line would.
"""

WSP = (0x20, 0x09)


def _name_ok(name):
    return bool(name) and all(0x20 < c < 0x7f for c in name)


def fields(message):
    """(lower-cased name, unfolded value) of each field of the header block, in order (a generator)."""
    message = bytes(message)
    size = len(message)
    pos = 0
    name = value = None
    while pos < size:
        end = message.find(b"\n", pos)
        if end < 0:
            end = size
        line = message[pos:end]
        pos = end + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            break
        if line[0] in WSP:
            if name is None:
                break
            value += line
            continue
        key, colon, rest = line.partition(b":")
        if not colon or not _name_ok(key):
            break
        if name is not None:
            yield name, value.strip()
        name, value = key.lower(), rest
    if name is not None:
        yield name, value.strip()

