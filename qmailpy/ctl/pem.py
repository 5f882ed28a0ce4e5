"""Whether a PEM control (control/servercert.pem) can be used, asked two ways.

looks_usable() is what qmail-smtpd asks before it offers STARTTLS: readable,
a certificate and a private key block, no ssl import (a plain session stays
light). problem() is what qmail-showctl --check asks: the file loaded as the
server would load it (ssl), the key matching the certificate; its text names
what is wrong, None when the file is fine.
"""
import os

CERT = b"-----BEGIN CERTIFICATE-----"
KEY_END = b"PRIVATE KEY-----"


def looks_usable(path):
    """A readable file with a certificate and a private key (no ssl import)."""
    if path is None:
        return False
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError:
        return False
    return CERT in data and KEY_END in data


def problem(path, dhparams=None):
    """None when `path` (certificate chain and key) loads into a server context, else why not."""
    if not os.access(path, os.R_OK):
        return "unreadable"
    if not looks_usable(path):
        return "no certificate and private key in PEM"
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(path)
    except (ssl.SSLError, OSError) as e:
        return "unusable: %s" % (getattr(e, "reason", None) or e.strerror or e)
    if dhparams is not None:
        try:
            ctx.load_dh_params(dhparams)
        except (ssl.SSLError, OSError) as e:
            return "unusable: %s" % (getattr(e, "reason", None) or e.strerror or e)
    return None
