"""Whether a PEM control (control/servercert.pem) can be used, asked two ways.

looks_usable() is what qmail-smtpd asks before it offers STARTTLS: readable,
a certificate and a private key block, no ssl import (a plain session stays
light). problem() is what qmail-showctl --check asks: the file loaded as the
server would load it (ssl), the key matching the certificate; its text names
what is wrong, None when the file is fine.
"""
CERT = b"-----BEGIN CERTIFICATE-----"
KEY_END = b"PRIVATE KEY-----"


def _blocks(path):
    """Whether the file has a certificate and a private key block; OSError when unreadable."""
    with open(path, "rb") as f:
        data = f.read(1 << 20)
    return CERT in data and KEY_END in data


def looks_usable(path):
    """A readable file with a certificate and a private key (no ssl import)."""
    try:
        return _blocks(path)
    except OSError:
        return False


def problem(path, dhparams=None):
    """None when `path` (certificate chain and key) loads into a server context, else why not."""
    try:
        if not _blocks(path):
            return "no certificate and private key in PEM"
    except OSError as e:
        return "unreadable: %s" % (e.strerror or e)
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
