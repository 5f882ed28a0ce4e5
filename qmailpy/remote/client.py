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

STARTTLS (remote.tls, when the plan uses TLS and the server offers it):
after the EHLO, STARTTLS, 220, the handshake, then EHLO again, whose
extensions count from then on. A TLS that did not work out raises
tls.Trouble before any MAIL (the caller tries again, or the next address).
SMTPUTF8 (RFC 6531): a sender or recipient with a byte above 127 goes as it is
to a server that offers SMTPUTF8, and MAIL then says SMTPUTF8; to one that does
not, a non-ASCII domain goes as its A-labels (RFC 6531 3.2, qmailpy.dns.idn)
and a non-ASCII local part, which nothing may convert, bounces the message
(D, #5.6.7), as Postfix does. Non-ASCII in the message only (not
in the envelope) does not ask for it: 8BITMIME covers the bytes.
"""
from qmailpy.proto.dotstuff import Stuffer
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
    raise R.Stop(R.finished(prepend, conn.partner, append, conn.take_text(), conn.tls))


def _hello(conn, helohost):
    """EHLO (HELO when refused): the server's extensions."""
    conn.send(b"EHLO " + helohost + b"\r\n")
    if conn.reply() == 250:
        return extensions(conn.text)
    conn.send(b"HELO " + helohost + b"\r\n")
    if conn.reply() != 250:
        _end(conn, b"ZConnected to ", b" but my name was rejected")
    return set()


def _starttls(conn, helohost, ext, plan, dest):
    """The extensions after STARTTLS and a new EHLO; the same ones when TLS is not used."""
    from qmailpy.remote import tls
    if b"STARTTLS" not in ext:
        if plan.required:
            conn.quit()
            raise tls.Trouble("policy", "STARTTLS not offered", R.tls_not_offered(conn.partner, dest))
        return ext
    conn.send(b"STARTTLS\r\n")
    if conn.reply() != 220:
        if plan.required:
            conn.quit()
            raise tls.Trouble("policy", "STARTTLS refused", R.tls_refused(conn.partner, dest, conn.take_text()))
        conn.tls = b"TLS: STARTTLS refused, sent without TLS.\n"
        return ext                      # RFC 3207: the session goes on as before
    context = plan.context()
    try:
        conn.starttls(context, plan.hostname)
    except (OSError, ValueError) as e:  # ssl.SSLError is an OSError; SSLCertVerificationError a ValueError too
        raise tls.handshake_trouble(e, conn, plan) from None
    conn.tls = tls.describe(conn.sock, plan)
    return _hello(conn, helohost)


def _downgraded(conn, sender, recips):
    """The addresses with their domains as A-labels for a peer without SMTPUTF8 (RFC 6531
    3.2); a non-ASCII local part cannot be converted: the message bounces (#5.6.7)."""
    from qmailpy.dns.idn import address_to_ascii
    sender, recips = address_to_ascii(sender), [address_to_ascii(r) for r in recips]
    if sender is None or None in recips:
        conn.quit()
        raise R.Stop(R.smtputf8(conn.partner))
    return sender, recips


def _wants_tls(code, plan):
    """RFC 3207's 530 ("Must issue a STARTTLS command first") on a connection made without TLS
    only because the TLS handshake failed on the one before: the next try may get TLS through,
    so a deferral, never a bounce."""
    return code == 530 and plan is not None and plan.fell_back


def smtp(conn, helohost, sender, recips, message, reports, plan=None, dest=b""):
    """Deliver message; appends recipient reports to `reports`; always raises Stop or Dropped
    (or remote.tls.Trouble: plan is the connection's TLS plan, None for no TLS at all)."""
    if conn.reply() != 220:
        _end(conn, b"ZConnected to ", b" but greeting failed")
    ext = _hello(conn, helohost)
    if plan is not None:
        if plan.use:
            ext = _starttls(conn, helohost, ext, plan, dest)
        elif plan.note:
            conn.tls = b"TLS: " + plan.note + b".\n"

    utf8 = b""
    if not (sender.isascii() and all(r.isascii() for r in recips)):
        if b"SMTPUTF8" in ext:
            utf8 = b" SMTPUTF8"
        else:
            sender, recips = _downgraded(conn, sender, recips)
    mail = b"MAIL FROM:<" + sender + b">"
    if b"8BITMIME" in ext and not message.isascii():
        mail += b" BODY=8BITMIME"
    mail += utf8
    rcpts = [b"RCPT TO:<" + r + b">\r\n" for r in recips]
    pipelining = b"PIPELINING" in ext
    conn.send(mail + b"\r\n" + (b"".join(rcpts) if pipelining else b""))
    code = conn.reply()
    if code >= 500 and not _wants_tls(code, plan):
        _end(conn, b"DConnected to ", b" but sender was rejected")
    if code >= 400:
        _end(conn, b"ZConnected to ", b" but sender was rejected")

    accepted = False
    for line in rcpts:
        if not pipelining:
            conn.send(line)
        code = conn.reply()
        if _wants_tls(code, plan):
            code = 450                  # a soft refusal: the text stays the server's 530
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
    if message.partial():
        conn.close()
        raise R.Stop(R.PARTIAL)
    conn.cork(True)                     # the message and its dot leave together (wire.Conn.cork)
    try:
        stuffer = Stuffer()
        for block in message.blocks():  # a read error: Stop(Z), closed without the dot
            conn.send(stuffer.feed(block))
        conn.critical = True
        conn.send(b".\r\n")
    finally:
        conn.cork(False)
    code = conn.reply()
    conn.critical = False
    if code >= 500:
        _end(conn, b"D", b" failed after I sent the message")
    if code >= 400:
        _end(conn, b"Z", b" failed after I sent the message")
    _end(conn, b"K", b" accepted message")
