"""The message on fd 0: rewound before every use, read in chunks or lines.

qmail-lspawn hands qmail-local the queue's mess file, so fd 0 is a seekable
regular file; each delivery (and the loop check) seeks back to the start,
as qmail-local's seek_begin(0) does.
"""
import os

from qmailpy.local import errors

CHUNK = 65536


def rewind(fd):
    try:
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        raise errors.temp(errors.REWIND) from None


def chunks(fd):
    """The message from the start, in chunks; OSError from read propagates."""
    rewind(fd)
    yield from read_chunks(fd)


def read_chunks(fd):
    """What is left to read on fd, in chunks (a pipe too); OSError from read propagates."""
    while True:
        data = os.read(fd, CHUNK)
        if not data:
            return
        yield data


def line_starts(fd, keep):
    """Each line of the message from the start as (its first `keep` bytes, its length with its
    \\n, whether it has one: only the last may lack it). A line of any length costs `keep` bytes
    and a chunk: a reader that compares lines with a known one needs no more."""
    start, length = bytearray(), 0
    for data in chunks(fd):
        pos, n = 0, len(data)
        while pos < n:
            nl = data.find(b"\n", pos)
            end = n if nl < 0 else nl + 1
            if len(start) < keep:
                start += data[pos:min(end, pos + keep - len(start))]
            length += end - pos
            pos = end
            if nl >= 0:
                yield bytes(start), length, True
                start, length = bytearray(), 0
    if length:
        yield bytes(start), length, False


def size(fd):
    """Bytes in the message: fstat for a regular file, else counted by reading."""
    try:
        st = os.fstat(fd)
    except OSError:
        st = None
    if st is not None and (st.st_mode & 0o170000) == 0o100000:
        return st.st_size
    return sum(len(c) for c in chunks(fd))


def check_loop(fd, dtline):
    """Refuse (exit 100) if the header already holds our exact Delivered-To line.

    As qmail's bouncexf(): header = lines up to the first line of 0 or 1 byte
    (so "\\n"); the comparison is byte-exact, case and all.
    """
    try:
        for start, length, ended in line_starts(fd, len(dtline)):
            if not ended or length <= 1:
                return
            if length == len(dtline) and start == dtline:
                raise errors.perm(errors.LOOPING)
    except OSError as e:
        raise errors.temp("Unable to read message: %s. (#4.3.0)" % errors.error_str(e)) from None
