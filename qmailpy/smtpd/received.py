"""The Received: line qmail-smtpd puts on top of every message (qmail's received.c)."""
from qmailpy.proto.date822 import date822
from qmailpy.proto.grammar import lower_ascii

SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.@%+/=:-")


def safe(text):
    """Bytes outside qmail's safe set become '?', one per byte as safeput() does (a UTF-8
    'é' is two): no header injection through HELO."""
    raw = text.encode("utf-8", "surrogateescape")
    return "".join(chr(b) if b in SAFE else "?" for b in raw)


def received_line(peer, helo, now, protocol="SMTP", info=None):
    """Bytes of the Received line, LF-terminated like the stored message.

    The HELO part appears only when the HELO name differs (ignoring ASCII case: case_diffs())
    from TCPREMOTEHOST, as in qmail. `info`: qmail's remoteinfo, `info@` before the IP
    (TCPREMOTEINFO, or the AUTH user: qmailpy.smtpd.message.remoteinfo), None for none.
    """
    parts = ["Received: from ", safe(peer.host)]
    if helo is not None and lower_ascii(helo) != lower_ascii(peer.host):
        parts += [" (HELO ", safe(helo), ")"]
    parts.append(" (")
    if info is not None:                # received.c: a NULL test; an empty one still gives "(@ip)"
        parts += [safe(info), "@"]
    parts += [safe(peer.ip), ")\n  by ", safe(peer.local_host), " with ", protocol, "; ", date822(now), "\n"]
    return "".join(parts).encode("ascii")
