"""One delivery channel of qmail-send (local or remote): its spawn, slots and queue.

Commands to the spawn go into an output buffer flushed when the pipe is
writable (qmail-send's comm_*); reports come back through one ReportDecoder.
Delivery numbers are slots 0..limit-1, the smallest free one first.
pq is the channel's priority queue of (time, message id); `known` holds
the ids in pq or in an open job, so a message is never scheduled twice.
"""
import heapq
import os

from qmailpy.proto import spawnwire

NAMES = ("local", "remote")


class Delivery:
    __slots__ = ("job", "delid", "offset", "recip")

    def __init__(self, job, delid, offset, recip):
        self.job, self.delid, self.offset, self.recip = job, delid, offset, recip


class Channel:
    def __init__(self, index, fd_out, fd_in, limit):
        self.index, self.name = index, NAMES[index]
        self.fd_out, self.fd_in = fd_out, fd_in
        self.limit = limit
        self.concurrency = 0
        self.alive = True
        self.outbuf = bytearray()
        self.decoder = spawnwire.ReportDecoder(expect_limit=False)
        self.active = {}
        self.free = list(range(limit))
        self.pq = []
        self.known = set()
        self.pass_ = None

    def set_concurrency(self, wanted):
        """concurrencylocal/remote, clamped to what the spawn said it can run."""
        self.concurrency = max(0, min(wanted, self.limit))

    def avail(self):
        return self.alive and len(self.active) < self.concurrency

    def schedule(self, msgid, when):
        heapq.heappush(self.pq, (when, msgid))
        self.known.add(msgid)

    def due(self, now):
        """The id at the head of pq when its time has come, else None."""
        if self.pq and self.pq[0][0] <= now:
            return self.pq[0][1]
        return None

    def pop(self):
        return heapq.heappop(self.pq)

    def next_time(self):
        return self.pq[0][0] if self.pq else None

    def run_all(self, now):
        """SIGALRM: everything in the queue is due now."""
        self.pq = [(now, msgid) for _, msgid in self.pq]
        heapq.heapify(self.pq)

    def start(self, delivery, messid, sender, recip):
        """Take a slot and queue the command; return the delivery number."""
        delnum = heapq.heappop(self.free)
        self.active[delnum] = delivery
        self.outbuf += spawnwire.encode_command(delnum, messid, sender, recip)
        return delnum

    def done(self, delnum):
        """The Delivery for a report's number (None: out of range), slot freed."""
        d = self.active.pop(delnum, None)
        if d is not None:
            heapq.heappush(self.free, delnum)
        return d

    def flush(self):
        """Write what the pipe takes; False when the spawn is gone (EPIPE)."""
        try:
            n = os.write(self.fd_out, self.outbuf)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        del self.outbuf[:n]
        return True

    def read(self):
        """Reports available now; None at end of file (the spawn died)."""
        try:
            data = os.read(self.fd_in, 65536)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            data = b""
        if not data:
            return None
        return self.decoder.feed(data)

    def status(self):
        return "%s %d/%d" % (self.name, len(self.active), self.concurrency)
