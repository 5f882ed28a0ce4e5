"""The Received: line qmail-smtpd puts on top of every message (qmail's received.c)."""
from qmailpy.proto.date822 import date822

SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.@%+/=:-")


def safe(text):
    """Characters outside qmail's safe set become '?' (no header injection through HELO)."""
    return "".join(c if c in SAFE else "?" for c in text)


def received_line(peer, helo, now, protocol="SMTP", info=None):
    """Bytes of the Received line, LF-terminated like the stored message.

    The HELO part appears only when the HELO name differs (ignoring case) from
    TCPREMOTEHOST, as in qmail. `info`: qmail's remoteinfo, `info@` before the IP
    (TCPREMOTEINFO, or the AUTH user: qmailpy.smtpd.message.remoteinfo).
    """
    parts = ["Received: from ", safe(peer.host)]
    if helo is not None and helo.lower() != peer.host.lower():
        parts += [" (HELO ", safe(helo), ")"]
    parts.append(" (")
    if info:
        parts += [safe(info), "@"]
    parts += [safe(peer.ip), ")\n  by ", safe(peer.local_host), " with ", protocol, "; ", date822(now), "\n"]
    return "".join(parts).encode("ascii")
