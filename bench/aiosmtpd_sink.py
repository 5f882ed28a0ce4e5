"""The aiosmtpd peer of bench/run.py: a stock Controller, one fsync'd file per message.

usage: python bench/aiosmtpd_sink.py PORT DIR

This is the long-running asyncio design qmailpy is weighed against (no exec
per connection, no queue protocol): the handler writes each message to its
own new file in DIR and fsyncs it before replying 250, so "accepted" means
"on disk" as it does for qmail. The write blocks the event loop, as a plain
handler's would. Prints "ready" once it accepts connections; stops on SIGTERM.
"""
import itertools
import os
import signal
import sys

from aiosmtpd.controller import Controller


class FsyncHandler:
    """Accept every recipient; DATA -> DIR/<pid>.<n>, fsynced."""

    def __init__(self, directory):
        self.directory = directory
        self.seq = itertools.count()

    async def handle_DATA(self, server, session, envelope):
        path = os.path.join(self.directory, "%d.%d" % (os.getpid(), next(self.seq)))
        with open(path, "xb") as f:
            f.write(envelope.original_content)
            f.flush()
            os.fsync(f.fileno())
        return "250 OK"


def main(argv):
    port, directory = int(argv[0]), argv[1]
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)   # before start(): the loop thread inherits the mask
    controller = Controller(FsyncHandler(directory), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    signal.sigwait(stop)
    controller.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
