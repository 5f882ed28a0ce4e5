"""The SMTP dialogue of qmail-remote's smtp(), with EHLO, PIPELINING and 8BITMIME.

Order and texts are qmail's: greeting must be 220; EHLO is tried first and a
non-250 answer falls back to HELO (as the common TLS/auth patches do), a
non-250 HELO ends with "my name was rejected"; MAIL 5xx/4xx ends with D/Z
"sender was rejected"; each RCPT gives r/h/s; nobody accepted -> "Giving
up"; DATA 5xx/4xx -> "failed on DATA command"; then the message, and the
reply to the final dot decides K/Z/D. When the server advertises PIPELINING,
MAIL and every RCPT go out in one write (RFC 2920), the replies are read in
order; with 8BITMIME and 8-bit bytes in the message, MAIL says BODY=8BITMIME.
A connection that dies raises Dropped (the caller reports it); every other
end raises Stop after QUIT. Partial final line: the D report, and the
connection is closed mid-DATA so the server discards what it got.
"""
from qmailpy.proto.dotstuff import stuff
from qmailpy.remote import report as R


def extensions(ehlo_text):
    """Upper-case keywords of an EHLO reply text ("250-PIPELINING\\n250 8BITMIME\\n")."""
    found = set()
    for line in ehlo_text.split(b"\n")[1:]:
        words = line[4:].split()
        if words:
            found.add(words[0].upper())
    return found


def _end(conn, prepend, append):
    conn.quit()
    raise R.Stop(R.finished(prepend, conn.partner, append, conn.take_text()))


def smtp(conn, helohost, sender, recips, message, reports):
    """Deliver message; appends recipient reports to `reports`; always raises Stop or Dropped."""
    if conn.reply() != 220:
        _end(conn, b"ZConnected to ", b" but greeting failed")
    conn.send(b"EHLO " + helohost + b"\r\n")
    if conn.reply() == 250:
        ext = extensions(conn.text)
    else:
        conn.send(b"HELO " + helohost + b"\r\n")
        if conn.reply() != 250:
            _end(conn, b"ZConnected to ", b" but my name was rejected")
        ext = set()

    mail = b"MAIL FROM:<" + sender + b">"
    if b"8BITMIME" in ext and not message.isascii():
        mail += b" BODY=8BITMIME"
    rcpts = [b"RCPT TO:<" + r + b">\r\n" for r in recips]
    pipelining = b"PIPELINING" in ext
    conn.send(mail + b"\r\n" + (b"".join(rcpts) if pipelining else b""))
    code = conn.reply()
    if code >= 500:
        _end(conn, b"DConnected to ", b" but sender was rejected")
    if code >= 400:
        _end(conn, b"ZConnected to ", b" but sender was rejected")

    accepted = False
    for line in rcpts:
        if not pipelining:
            conn.send(line)
        code = conn.reply()
        reports.append(R.recipient(code, conn.partner, conn.take_text()) + b"\0")
        accepted = accepted or code < 400
    if not accepted:
        _end(conn, b"DGiving up on ", b"")

    conn.send(b"DATA\r\n")
    code = conn.reply()
    if code >= 500:
        _end(conn, b"D", b" failed on DATA command")
    if code >= 400:
        _end(conn, b"Z", b" failed on DATA command")
    try:
        data = stuff(message)
    except ValueError:
        conn.close()
        raise R.Stop(R.PARTIAL) from None
    conn.send(memoryview(data)[:-3])
    conn.critical = True
    conn.send(b".\r\n")
    code = conn.reply()
    conn.critical = False
    if code >= 500:
        _end(conn, b"D", b" failed after I sent the message")
    if code >= 400:
        _end(conn, b"Z", b" failed after I sent the message")
    _end(conn, b"K", b" accepted message")
