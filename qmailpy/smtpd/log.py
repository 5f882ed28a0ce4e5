"""One log line per event on stderr, multilog-friendly: `program: pid event key=value ...`.

Values are made printable (no newlines can split a line); passwords never
reach a logger because no caller passes them.
"""
import os


def printable(value):
    text = str(value)
    if text.isprintable() and " " not in text:
        return text
    return "".join(c if c.isprintable() and c != " " else "?" for c in text)


class Logger:
    def __init__(self, program, pid, fd=2):
        self.prefix = "%s: %d " % (program, pid)
        self.fd = fd

    def __call__(self, event, **fields):
        line = self.prefix + event + "".join(" %s=%s" % (k, printable(v)) for k, v in fields.items()) + "\n"
        try:
            os.write(self.fd, line.encode("utf-8", "backslashreplace"))
        except OSError:
            pass
