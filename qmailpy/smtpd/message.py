"""DATA: the message from the client to qmail-queue (a part of qmailpy.smtpd.session).

start() opens the queue (OpenQueue), writes qmail-smtpd's Received line (and
the qmail-spf patch's Received-SPF after it, which counts against databytes as
in that patch) and answers 354; feed() streams
what the client sends through the DataReader (qmail's blast(): dot-unstuffing,
CRLF, hops, databytes) into QueueWrite actions; end() gives qmail-queue the
envelope (QueueFinish) and answers with its exit code, or drops the message
(QueueAbort) when it loops or is too big.
"""
from qmailpy.proto import replies as R
from qmailpy.smtpd.actions import Log, OpenQueue, QueueAbort, QueueFinish, QueueWrite


def start(session, line):
    """DATA with recipients: open the queue, write the Received lines, 354; False when the
    queue cannot be opened (451)."""
    spf = session.mail.spf
    if (yield OpenQueue(spf.result if spf is not None else None, session.auth_user)) is not True:
        session.reply(R.QQT_FAILURE)
        return False
    from qmailpy.proto.dotdata import DataReader
    from qmailpy.smtpd.received import received_line
    yield QueueWrite(received_line(session.cfg.peer, session.helo, session.now(), protocol=protocol(session),
                                   info=remoteinfo(session)))
    spf_line = b""
    if session.mail.spf is not None:          # the qmail-spf patch's line, after ours
        spf_line = session.mail.spf.header().encode("ascii", "replace")
        yield QueueWrite(spf_line)
    lf_client = bool(session.cfg.newline) and line.bare_lf
    # qmail-spf's spfreceived() takes its line off databytes ("bytestooverflow -= rcvd_spf.len");
    # a databytes smaller than the line itself is 552 here, where qmail answers qmail-queue's 451
    session.data = DataReader(lf_mode=lf_client, bare_lf_ok=bool(session.cfg.newline),
                              databytes=session.cfg.databytes, counted=len(spf_line))
    session.reply(R.GO_AHEAD)
    return True



def remoteinfo(session):
    """qmail's remoteinfo: TCPREMOTEINFO, replaced by the user once AUTH succeeded (the AUTH
    patches' "remoteinfo = user.s"), so the Received line reads (user@ip)."""
    return session.auth_user or session.cfg.peer.info


def protocol(session):
    """The protocol of the Received line: SMTP, ESMTP or ESMTPA; over TLS the qmail TLS patch's
    "ESMTPS (<cipher> encrypted)" and, after AUTH, "ESMTPSA (<cipher> encrypted, authenticated)"."""
    if session.tls is not None:
        if session.auth_user:
            return "ESMTPSA (%s encrypted, authenticated)" % session.tls.cipher
        return "ESMTPS (%s encrypted)" % session.tls.cipher
    if session.auth_user:       # the AUTH patches' protocol = "ESMTPA" outlives a later HELO
        return "ESMTPA"
    return "ESMTP" if session.esmtp else "SMTP"


def feed(session):
    """Message bytes from session.pending into the queue; True when the message is over
    (queued, refused, or a bare LF that ends the session)."""
    data, buf = session.data, session.pending
    used = data.feed(buf)
    session.pending = buf[used:]
    chunk = data.take()
    if chunk and not data.toobig:
        yield QueueWrite(chunk)
    if data.error:
        yield QueueAbort()
        session.data = session.mail = None
        yield Log("refused", {"reason": "bare LF in DATA"})
        session.close(R.STRAY_LF, 1)
        return True
    if data.done:
        yield from end(session)
        return True
    return False


def end(session):
    """The message is complete: to the queue with its envelope, or dropped; the reply."""
    data, mail = session.data, session.mail
    session.data = session.mail = None
    if data.toomanyhops or data.toobig:
        yield QueueAbort()
        reason = R.LOOPING if data.toomanyhops else R.TOO_BIG
        yield Log("refused", {"reason": reason[:3], "bytes": data.size})
        return session.reply(reason)
    code, qp = yield QueueFinish(mail.sender, mail.recipients)
    if code == 0:
        yield Log("accept", {"sender": "<%s>" % mail.sender, "rcpts": len(mail.recipients),
                             "bytes": data.size, "qp": qp})
        return session.reply(R.QUEUED.format(time=int(session.now()), qp=qp))
    from qmailpy.exitcodes import qq_reply
    smtp, text = qq_reply(code)
    yield Log("queue-failed", {"code": code})
    session.reply("%d %s" % (smtp, text))
