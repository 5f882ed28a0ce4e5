"""qmail-queue's log lines from the filters, on fd 2 like its other messages (qmailpy.log's escaping)."""
from qmailpy.log import write_line


def say(text):
    """One log line on fd 2, as qmail-queue's other messages."""
    write_line(2, "qmail-queue: %s" % text)
