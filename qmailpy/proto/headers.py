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


def spans(message):
    """(lower-cased name, start, end) of each field of the header block, in order (a generator):
    message[start:end] is the field as written, its continuation lines and line ends included."""
    message = bytes(message)
    size = len(message)
    pos = 0
    name = start = None
    while pos < size:
        end = message.find(b"\n", pos)
        nxt = size if end < 0 else end + 1
        line = message[pos:nxt].rstrip(b"\n")
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            break
        if line[0] in WSP:
            if name is None:
                break
            pos = nxt
            continue
        key, colon, _ = line.partition(b":")
        if not colon or not _name_ok(key):
            break
        if name is not None:
            yield name, start, pos
        name, start, pos = key.lower(), pos, nxt
    if name is not None:
        yield name, start, pos


def block_end(data):
    """Where the header block ends in `data`, the start of a message: the offset of the line
    that ends it (spans()' end), or None while every complete line of data is still in the
    block (it may go on in what follows: a reader of the header alone reads on)."""
    complete = data.rfind(b"\n") + 1
    end = 0
    for _, _, end in spans(data[:complete]):
        pass
    return end if end < complete else None


def head(blocks, check=65536):
    """The first bytes of a message given as blocks (an iterable of bytes), through the end of
    its header block (block_end): what a reader of the header alone needs, so a message of any
    size is not read whole. Checked as the data doubles: a header of any size costs linear
    time. All of it when the header block does not end before the message does."""
    chunks, size = [], 0
    for block in blocks:
        chunks.append(block)
        size += len(block)
        if size >= check:
            check = 2 * size
            data = b"".join(chunks)
            if block_end(data) is not None:
                return data
            chunks = [data]
    return b"".join(chunks)


def unfold(raw):
    """The value of one field as written (a span of spans()): its lines joined without their
    line ends, the text after the first ':', stripped."""
    lines = raw.split(b"\n")
    joined = b"".join(line[:-1] if line.endswith(b"\r") else line for line in lines)
    return joined.partition(b":")[2].strip()


def fields(message):
    """(lower-cased name, unfolded value) of each field of the header block, in order (a generator)."""
    message = bytes(message)
    for name, start, end in spans(message):
        yield name, unfold(message[start:end])
