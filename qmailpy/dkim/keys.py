"""Which DKIM keys sign a message: control/domainkeys/DOMAIN/SELECTOR, as the qmail DKIM patches lay them out.

The qmail DKIM patches (Kyle Wheeler's qmail-remote wrapper, Manvendra
Bhangui's qmail-dkim as in sagredo's and indimail's qmail) sign with the key
file DKIMSIGN=control/domainkeys/%/default, '%' being the domain and the
file's name the selector. qmailpy reads the same directory: every file of
control/domainkeys/DOMAIN/ whose name has no '.' is a key with that name as
selector (dknewkey writes SELECTOR and SELECTOR.pub), and SELECTOR.private
(what opendkim-genkey writes) is one too; other names (.pub, .txt) are not
keys. A domain with several keys is signed with each, in name order (a new
key next to the old one while DNS changes over).

The domain: the From: field's address domain when it has keys (what DMARC
aligns with), else the envelope sender's domain (bounces: From: is
MAILER-DAEMON@ the bounce host). Without control/domainkeys/ this costs one
failed listing and imports nothing.
"""
import errno
import os

from qmailpy import paths
from qmailpy.ctl.reader import ControlError, unreadable

DIR = "domainkeys"


class Key:
    """One signing key: domain and selector (bytes), the PEM text, the file it came from."""
    __slots__ = ("domain", "selector", "pem", "where")

    def __init__(self, domain, selector, pem, where):
        self.domain, self.selector, self.pem, self.where = domain, selector, pem, where

    def __repr__(self):
        return "Key(%r, %r)" % (self.domain, self.selector)


def selector_of(filename):
    """The selector a file name gives, or None when the file is not a key."""
    if filename.endswith(".private"):
        filename = filename[:-len(".private")]
    if not filename or "." in filename or filename.startswith("-"):
        return None
    return filename


def _listing(home, sub):
    """The sorted names in control/SUB, None when it is not there; a listing that fails
    otherwise (a mode qmailr cannot read) is a ControlError."""
    try:
        return sorted(os.listdir(paths.control_path(home, sub)))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:   # a From: domain too long to name a directory
            return None
        raise ControlError("control/" + sub, 0, "unable to list: %s" % (e.strerror or e)) from None


def any_keys(home):
    """Has control/domainkeys/ any entry (some message may be signed)? A listing that fails:
    a ControlError, as for signing_keys."""
    return bool(_listing(home, DIR))


def domain_keys(home, domain):
    """[Key] of one domain (str, any case); [] when it has none. An unreadable key or a
    listing that fails other than by absence is a ControlError."""
    domain = domain.lower().rstrip(".")
    if not domain or "/" in domain or "\0" in domain or domain.startswith("."):
        return []
    base = paths.control_path(home, DIR + "/" + domain)
    names = _listing(home, DIR + "/" + domain)
    if names is None:
        return []
    keys = []
    for name in names:
        selector = selector_of(name)
        if selector is None:
            continue
        where = "control/%s/%s/%s" % (DIR, domain, name)
        try:
            with open(os.path.join(base, name), "rb") as f:
                pem = f.read()
        except IsADirectoryError:
            continue
        except OSError as e:
            raise unreadable(where, e) from None
        if b"PRIVATE KEY-----" not in pem:
            raise ControlError(where, 0, "not a private key in PEM form")
        keys.append(Key(signing_domain(domain, where), selector.encode(), pem, where))
    return keys


def signing_domain(domain, where):
    """d= of a key's domain (str): its A-labels, as DNS knows it and as qmail-remote looks it up
    (qmailpy.dns.idn, IDNA 2008: Python's "idna" codec is IDNA 2003 and turned faß.example into
    fass.example, another domain's name); a domain that is no valid IDN is a ControlError."""
    if domain.isascii():
        return domain.encode()
    from qmailpy.dns.idn import to_ascii
    try:
        return to_ascii(domain.encode("utf-8", "surrogateescape"))
    except ValueError as e:
        raise ControlError(where, 0, "the domain is not a valid internationalized name: %s" % e) from None


def _domain(address):
    at = address.rfind("@")
    return address[at + 1:].strip().strip("<>").strip() if at >= 0 else ""


def from_domain(message):
    """The domain of the first From: address of the header block, or ''."""
    from qmailpy.proto.headers import fields
    for name, value in fields(message):
        if name == b"from":
            from email.utils import getaddresses
            got = getaddresses([value.decode("utf-8", "replace")])
            return _domain(got[0][1]) if got else ""
    return ""


def signing_keys(controls, read_header, sender):
    """[Key] that sign this message: the From: domain's, else the envelope sender's; []
    (after one listing, the message unread) when control/domainkeys/ is empty or not there;
    a ControlError when it cannot be listed. read_header(): the message's header block (bytes),
    asked only when control/domainkeys/ has entries."""
    home = controls.home
    if not any_keys(home):
        return []
    for domain in (from_domain(read_header()), _domain(os.fsdecode(sender))):
        if domain:
            keys = domain_keys(home, domain)
            if keys:
                return keys
    return []
