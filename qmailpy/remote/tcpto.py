"""qmail's host-down cache queue/lock/tcpto (tcpto.c), shared with qmail-tcpto/qmail-tcpok.

64 records of 16 bytes: bytes 0-3 an IPv4 address, byte 4 the count of
consecutive connect time-outs (max 10), bytes 8-11 the time of the last one
(little-endian). An address with 2 or more is skipped while the last
time-out is younger than (60 + (pid & 31)) << 6 seconds (about 1 to 1.6 h).
A time-out within 120 s of the previous one is not counted twice; a
successful connection clears the count; refused connections do not count.
A new address takes a free record, else the oldest (weighted by its count).
The file is locked (flock) while read and written; a missing file turns
the cache off, as in qmail. Unlike qmail, a record dated ahead of the clock
(stepped back since) counts as old, not as days of host-down. IPv6 addresses are never recorded.
"""
import os
import time

RECORD = 16
SIZE = 1024


def _when(rec):
    return int.from_bytes(rec[8:12], "little")


def _within(rec, now, seconds):
    """The record's last time-out is less than `seconds` old. One dated ahead of the clock
    (a clock stepped back since) is not: tcpto.c would wait until the clock catches up."""
    return 0 <= now - _when(rec) < seconds


class TcpTo:
    def __init__(self, path, now=None, pid=None):
        self.path = path
        self.now = now or (lambda: int(time.time()))
        self.pid = os.getpid() if pid is None else pid
        self.was_there = False

    def _open(self):
        """(locked write fd, table bytes) or (None, b"") when the cache is unusable."""
        import fcntl
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return None, b""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with open(self.path, "rb") as f:
                buf = f.read(SIZE)
        except OSError:
            os.close(fd)
            return None, b""
        buf = buf[:len(buf) & ~(RECORD - 1)]
        if not buf:
            os.close(fd)
            return None, b""
        return fd, buf

    @staticmethod
    def _key(ip):
        """The record key of an IPv4 address (DNS's or a literal's text, always well formed);
        None for IPv6, which tcpto never records."""
        import socket
        return socket.inet_aton(ip) if "." in ip and ":" not in ip else None

    def is_down(self, ip):
        """tcpto(): skip this address now?"""
        self.was_there = False
        key = self._key(ip)
        if key is None:
            return False
        fd, buf = self._open()
        if fd is None:
            return False
        os.close(fd)
        for i in range(0, len(buf), RECORD):
            rec = buf[i:i + RECORD]
            if rec[:4] == key:
                self.was_there = True
                limit = (60 + (self.pid & 31)) << 6
                return rec[4] >= 2 and _within(rec, self.now(), limit)
        return False

    def record(self, ip, timed_out):
        """tcpto_err(): note a connect time-out, or clear the count after a success."""
        key = self._key(ip)
        if key is None or (not timed_out and not self.was_there):
            return
        fd, buf = self._open()
        if fd is None:
            return
        try:
            table = [bytearray(buf[i:i + RECORD]) for i in range(0, len(buf), RECORD)]
            now = self.now()
            for i, rec in enumerate(table):
                if rec[:4] == key:
                    if not timed_out:
                        rec[4] = 0
                    elif rec[4] and _within(rec, now, 120):
                        return
                    else:
                        rec[4] = min(rec[4] + 1, 10)
                        rec[8:12] = (now & 0xFFFFFFFF).to_bytes(4, "little")
                    return _write(fd, i, rec)
            if not timed_out:
                return
            free = [i for i, rec in enumerate(table) if not rec[4]]
            i = free[0] if free else min(range(len(table)), key=lambda j: _when(table[j]) + (table[j][4] << 10))
            rec = table[i]
            rec[:4] = key
            rec[4] = 1
            rec[8:12] = (now & 0xFFFFFFFF).to_bytes(4, "little")
            _write(fd, i, rec)
        finally:
            os.close(fd)


def _write(fd, index, rec):
    try:
        os.pwrite(fd, bytes(rec), index * RECORD)
    except OSError:
        pass


def clear(path):
    """qmail-tcpok: zero the whole table under the lock (the file must exist; OSError otherwise).

    Run by root in lock/, which qmailq owns: a link there (ELOOP) is never followed, and only a
    regular file is written, so root never zeroes another file, a disk or a FIFO's reader."""
    import fcntl

    from qmailpy.queue.layout import open_own_regular
    fd = open_own_regular(path, os.O_WRONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(bytes(SIZE))
        offset = 0
        while offset < SIZE:
            offset += os.pwrite(fd, view[offset:], offset)
    finally:
        os.close(fd)
