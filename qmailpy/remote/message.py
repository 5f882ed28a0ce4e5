"""The message qmail-remote sends, read in blocks as qmail-remote.c's blast() reads it.

qmail-rspawn gives qmail-remote the queue's mess file on fd 0: a regular file,
read here with pread() from where fd 0 stands each time it is needed (the 8BITMIME
look, the DATA), so a message of any size costs a block of memory. Other
input (a pipe, for qmail-remote run by hand) and a DKIM-signed message are
held in memory. A read error is qmail's temp_read(): Stop(ZUnable to read
message), the connection closed without the final dot.
"""
import os
import stat

from qmailpy.remote import report as R

BLOCK = 65536


class Message:
    __slots__ = ("fd", "data", "start", "size")

    def __init__(self, fd=None, data=None):
        self.fd, self.data, self.start = fd, data, 0
        if data is not None:
            self.size = len(data)
        else:
            try:
                self.start = os.lseek(fd, 0, os.SEEK_CUR)
                self.size = max(0, os.fstat(fd).st_size - self.start)
            except OSError:
                raise R.Stop(R.READ) from None

    def blocks(self):
        """The message from its start, in blocks."""
        if self.data is not None:
            if self.data:
                yield self.data
            return
        offset = 0
        while offset < self.size:
            block = _pread(self.fd, min(BLOCK, self.size - offset), self.start + offset)
            if not block:               # the file shrank: qmail-send's files never do
                raise R.Stop(R.READ)
            offset += len(block)
            yield block

    def read(self):
        """The whole message as bytes."""
        return self.data if self.data is not None else b"".join(self.blocks())

    def head(self):
        """The message's first bytes through the end of its header block (proto.headers.head): what
        the DKIM key choice reads (its From: field), so a message no key signs is not read whole."""
        from qmailpy.proto.headers import head
        return head(self.blocks(), BLOCK)

    def isascii(self):
        return all(block.isascii() for block in self.blocks())

    def partial(self):
        """Does it end without a LF (qmail's perm_partialline())?"""
        if self.data is not None:
            return self.data[-1:] not in (b"", b"\n")
        return self.size > 0 and _pread(self.fd, 1, self.start + self.size - 1) != b"\n"


def _pread(fd, n, offset):
    try:
        return os.pread(fd, n, offset)
    except OSError:
        raise R.Stop(R.READ) from None


def from_fd(fd):
    """The message on fd: the regular file itself, anything else read whole."""
    from qmailpy.fileio import read_all
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
        if not regular:
            return Message(data=read_all(fd))
    except OSError:
        raise R.Stop(R.READ) from None
    return Message(fd=fd)
