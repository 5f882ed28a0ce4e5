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


def lines(fd):
    """The message from the start, line by line; each line keeps its \\n (the last may lack it)."""
    rest = bytearray()
    for data in chunks(fd):
        scan = len(rest)            # no \n before here: a long line is scanned once
        rest += data
        start = 0
        while True:
            nl = rest.find(b"\n", max(start, scan))
            if nl < 0:
                break
            yield bytes(rest[start:nl + 1])
            start = nl + 1
        if start:
            del rest[:start]
    if rest:
        yield bytes(rest)


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
        for line in lines(fd):
            if not line.endswith(b"\n") or len(line) <= 1:
                return
            if line == dtline:
                raise errors.perm(errors.LOOPING)
    except OSError as e:
        raise errors.temp("Unable to read message: %s. (#4.3.0)" % errors.error_str(e)) from None
