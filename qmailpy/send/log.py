"""qmail-send's log: one line per event, made safe exactly as qsutil.c does.

Text coming from outside (addresses, delivery reports) goes through safe():
newline -> '/', '%' and bytes outside 33..126 (space included) -> '_', so
`did 0+0+1\\n` is logged as `did_0+0+1/` as in qmail's logs.
"""
import os

_TABLE = bytes((0x2F if b == 0x0A else b if 33 <= b <= 126 and b != 0x25 else 0x5F) for b in range(256))


def safe(text):
    """qsutil.c logsafe(): bytes or str -> str of printable ASCII."""
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogateescape")
    return bytes(text).translate(_TABLE).decode("ascii")


class Log:
    """Writes whole lines to one fd (qmail-send's stderr); never raises."""
    __slots__ = ("fd",)

    def __init__(self, fd=2):
        self.fd = fd

    def line(self, text):
        data = (text if text.endswith("\n") else text + "\n").encode("utf-8", "replace")
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError:
            pass

    def raw(self, data):
        """A line already made safe by someone else (qmail-todo's L records)."""
        self.line(bytes(data).decode("utf-8", "replace"))
