"""DKIM-sign a message before qmail-remote sends it (dkimpy), with the keys of qmailpy.dkim.keys.

One DKIM-Signature per key, put on top of the message. Canonicalization
relaxed/relaxed (a relay re-folding a header or trimming trailing spaces
does not break it), rsa-sha256, d= the key's domain, s= its selector, t=
the signing time, no l= (nothing appended to the body stays covered). The
header fields signed are control/dkimsignheaders as listed (From is always
added; a listed field that is absent is signed as absent, so it cannot be
added later); without it, the fields of RFC 6376 5.4.1 that the message has,
and From once more (oversigned: a second From cannot be added; a message
without From has it once, as absent). The signature is made over the message
with the line ends it is sent with (proto.dotstuff.lf_lines). A message whose
header dkimpy cannot parse, and an empty one, are sent unsigned; a key or dkimsignheaders entry dkimpy refuses is a
ControlError (qmail-remote defers: "Unable to read control files").
"""
from qmailpy.ctl.reader import ControlError
from qmailpy.proto.dotstuff import lf_lines

CANON = (b"relaxed", b"relaxed")


def _include(controls):
    """dkimsignheaders as the list dkimpy signs (From added), or None for dkimpy's default."""
    names = [n.strip().lower().encode("ascii", "replace") for n in controls.value("dkimsignheaders") or ()]
    names = [n for n in names if n]
    if not names:
        return None
    if b"from" not in names:
        names.insert(0, b"from")
    return names


def _default(signer):
    """dkimpy's default list (the RFC 6376 5.4.1 fields the message has, From once more); for a
    message without From, From once, signed as absent (RFC 6376 5.4: h= MUST hold From)."""
    names = signer.default_sign_headers()
    return names if any(name.lower() == b"from" for name in names) else names + [b"from"]


def signatures(message, keys, include=None, now=None):
    """The DKIM-Signature fields (bytes, LF line ends) for message, one per key."""
    from qmailpy.dkim.lib import dkimpy
    dkim = dkimpy()
    out = []
    for key in keys:
        try:
            signer = dkim.DKIM(message, linesep=b"\n")
        except IndexError:              # its parser, when the first line is a continuation line
            raise dkim.MessageFormatError("the first line continues no header field") from None
        try:
            out.append(signer.sign(key.selector, key.domain, key.pem, canonicalize=CANON,
                                   include_headers=include or _default(signer)))
        except dkim.KeyFormatError as e:
            raise ControlError(key.where, 0, "unusable key: %s" % e) from None
        except dkim.ParameterError as e:
            if include is None:
                raise ControlError(key.where, 0, "unusable: %s" % e) from None
            raise ControlError("control/dkimsignheaders", 0, str(e)) from None
    return out


def sign(controls, message, keys):
    """The message (lf_lines) with one DKIM-Signature field per key on top; the message as it
    came when its header cannot be parsed."""
    from qmailpy.dkim.lib import dkimpy
    dkim = dkimpy()
    message = lf_lines(message)
    if not message:                         # nothing dkimpy can parse: it fails on an empty one
        return message
    try:
        fields = signatures(message, keys, _include(controls))
    except dkim.MessageFormatError:
        return message
    return b"".join(fields) + message
