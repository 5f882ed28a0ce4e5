"""qmail-clean: fd 0 = requests, fd 1 = one answer byte per request.

Removes intd+todo (for qmail-todo) and intd+mess (for qmail-send) on request,
so the program that owns each directory is the one that unlinks in it. At
start and every SLEEP_CLEANUP seconds (scaled by QMAILPY_TIMESCALE), and every
30 requests, it removes old pid/ files, as qmail-clean's cleanuppid(). Stale
message files are qmail-send's to find (qmailpy.send.cleanup, qmail's
cleanup_do()), one decider: two qmail-cleans (qmail-send's and qmail-todo's)
each removing what they had both listed as stale could unlink, the second
time, the files of a new message that had been given the freed inode number
and with it the same names. Exits 0 at end of input, 111 if the queue cannot
be found.
"""
import os
import select
import signal
import time

from qmailpy import clock, exitcodes as X, paths
from qmailpy.log import guard
from qmailpy.progstart import start
from qmailpy.proto import cleanwire as wire
from qmailpy.queue import clean, layout

PID_EVERY = 30


def _unlink(path):
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


def answer(home, request, split=layout.SPLIT):
    """The answer byte for one request (without its \\0), after doing the work."""
    parsed = wire.parse(request)
    if parsed is None:
        return wire.BAD
    kind, msgid = parsed
    second = layout.todo_path(home, msgid) if kind == wire.TODO else layout.mess_path(home, msgid, split)
    if _unlink(layout.intd_path(home, msgid)) and _unlink(second):
        return wire.OK
    return wire.TROUBLE


def clean_pids(home, now, ossified=layout.OSSIFIED):
    """cleanuppid(): pid/ files not used for OSSIFIED seconds (the rule: qmailpy.queue.clean)."""
    for path in clean.stale_pids(home, now, ossified):
        _unlink(path)


class Server:
    """The request loop over fds; time comes from a clock.Clock."""

    def __init__(self, home, clk, fd_in=0, fd_out=1):
        self.home, self.clock = home, clk
        self.fd_in, self.fd_out = fd_in, fd_out
        self.requests = wire.RequestDecoder()
        self.until_pids = 0
        self.next_stale = 0.0

    def stale(self):
        now = self.clock.now()
        self.next_stale = self.clock.capped(self.next_stale, now, clock.SLEEP_CLEANUP)
        if now >= self.next_stale:
            clean_pids(self.home, now)
            self.next_stale = now + self.clock.delay(clock.SLEEP_CLEANUP)

    def serve(self):
        while True:
            self.stale()
            ready, _, _ = select.select([self.fd_in], [], [], max(0.0, self.next_stale - self.clock.now()))
            if not ready:
                continue
            data = os.read(self.fd_in, 4096)
            if not data:
                return 0
            for request in self.requests.feed(data):
                if self.until_pids:
                    self.until_pids -= 1
                else:
                    clean_pids(self.home, time.time())
                    self.until_pids = PID_EVERY
                os.write(self.fd_out, answer(self.home, request))


USAGE = """usage: qmail-clean
Started by qmail-send: requests on fd 0, one answer byte each on fd 1.
See docs/qmail-clean.md."""


@guard("qmail-clean", X.EXIT_TROUBLE)
def main():
    start(USAGE)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    for name in ("SIGINT", "SIGHUP", "SIGALRM"):     # only end of input stops us
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    home = os.path.abspath(paths.qmailhome(os.environ))
    if not os.path.isdir(paths.queue_path(home)):
        return X.EXIT_TROUBLE
    try:
        return Server(home, clock.Clock(clock.parse_scale(os.environ))).serve()
    except OSError:
        return X.EXIT_TROUBLE
