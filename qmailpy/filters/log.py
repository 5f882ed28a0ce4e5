"""qmail-queue's log lines from the filters, on fd 2 like its other messages (no imports beyond os)."""
import os


def say(text):
    """One log line on fd 2, as qmail-queue's other messages."""
    try:
        os.write(2, ("qmail-queue: %s\n" % text).encode("utf-8", "replace"))
    except OSError:
        pass
