"""SMTP DATA encoding for the client side (qmail-remote's blast(), notqmail rules).

A stored message (LF line endings) becomes the DATA payload: every line end is
sent as CRLF, a line starting with "." gets a second ".", and ".\\r\\n" ends it.
notqmail's CR rule (commit 83e8e32) is kept because it stops us relaying
smuggling-capable bytes: an existing CRLF is sent as is and a CR not followed
by LF is sent as CRLF, so the wire never carries a bare CR or LF, and a dot
after such a CR is doubled like any line-start dot.

Stuffer does the same in blocks (qmail-remote sends the mess file as it reads
it): a CR at the end of a block waits for the next one.

A message whose last line lacks "\\n" (including one ending in a bare CR)
raises ValueError; qmail-remote reports it as
"DSMTP cannot transfer messages with partial final lines. (#5.6.2)".
"""

PARTIAL_LINE = "SMTP cannot transfer messages with partial final lines. (#5.6.2)"


def lf_lines(message):
    """The message with the line ends the wire will carry, as LF: CRLF and a bare CR each
    become one line end (what stuff() sends; a DKIM signature is made over this). A CR that
    ends the message stays: it ends no line, the message has a partial final line."""
    message = bytes(message)
    if b"\r" in message:
        end = len(message) - message.endswith(b"\r")
        message = message[:end].replace(b"\r\n", b"\n").replace(b"\r", b"\n") + message[end:]
    return message


class Stuffer:
    """stuff() in pieces, for a message read in blocks (qmail's blast() streams it): feed() the
    message's bytes in order; each call returns the DATA bytes they make (a CR at the end of
    a block waits for the next one: it may start a CRLF). The blocks of a message with a
    final LF make, joined, what stuff() makes of the whole, without the terminator."""
    __slots__ = ("at_start", "cr")

    def __init__(self):
        self.at_start, self.cr = True, False

    def feed(self, data):
        data = bytes(data)
        if self.cr:
            data = b"\r" + data
        self.cr = data.endswith(b"\r")
        if self.cr:
            data = data[:-1]
        if not data:
            return b""
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")     # lf_lines(): no CR ends it here
        dot = b"." if self.at_start and data[:1] == b"." else b""
        self.at_start = data.endswith(b"\n")
        return dot + data.replace(b"\n.", b"\n..").replace(b"\n", b"\r\n")


def stuff(message):
    """Return the SMTP DATA bytes for message, terminator included."""
    message = bytes(message)
    if message and message[-1] != 10:
        raise ValueError(PARTIAL_LINE)
    return Stuffer().feed(message) + b".\r\n"
