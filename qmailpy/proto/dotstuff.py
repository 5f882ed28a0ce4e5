"""SMTP DATA encoding for the client side (qmail-remote's blast(), notqmail rules).

A stored message (LF line endings) becomes the DATA payload: every line end is
sent as CRLF, a line starting with "." gets a second ".", and ".\\r\\n" ends it.
notqmail's CR rule (commit 83e8e32) is kept because it stops us relaying
smuggling-capable bytes: an existing CRLF is sent as is and a CR not followed
by LF is sent as CRLF, so the wire never carries a bare CR or LF, and a dot
after such a CR is doubled like any line-start dot.

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


def stuff(message):
    """Return the SMTP DATA bytes for message, terminator included."""
    message = bytes(message)
    if message and message[-1] != 10:
        raise ValueError(PARTIAL_LINE)
    message = lf_lines(message)
    if message[:1] == b".":
        message = b"." + message
    return message.replace(b"\n.", b"\n..").replace(b"\n", b"\r\n") + b".\r\n"
