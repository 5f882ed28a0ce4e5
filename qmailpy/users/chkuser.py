"""chkuser: refuse, at RCPT, recipients of hosted domains that have no mailbox.

check_recipient() follows chkuser 2.0's realrcpt() (chkuser.c 2.0.8, as in
denislemire/netqmail chkuser.c): domains we do not host are not checked;
then a catch-all .qmail-default, a .qmail-<user> alias file, a
.qmail-<prefix>-default file, a mailbox user (without vpopmail's
BOUNCE_MAIL flag) or an ezmlm list directory each make the recipient valid.
A database that cannot answer raises UsersUnavailable: answer RESOURCE (451).

The replies are chkuser 2.0.8's (chkuser_settings.h, same repository), but
RESOURCE answers 451 where chkuser says 430, which is no SMTP reply code.
H-Sphere 2.4 shipped a modified chkuser 0.6 whose refusal read
CHKUSR_06_NORCPT (as quoted in bounces, e.g. Sisimai's qmail samples).
"""
import os

from qmailpy.users.names import split_address
from qmailpy.users.schema import BOUNCE_MAIL

OK, NOUSER, NOTOURS = "ok", "nouser", "notours"

NORCPT = "511 sorry, no mailbox here by that name (#5.1.1 - chkuser)"
RESOURCE = "451 system temporary unavailable, try again later (#4.3.0 - chkuser)"
MBXFULL = "522 sorry, recipient mailbox is full (#5.2.2 - chkuser)"
MAXRCPT = "571 sorry, reached maximum number of recipients for one session (#5.7.1 - chkuser)"
MAXWRONGRCPT = "571 sorry, you are violating our security policies (#5.1.1 - chkuser)"
DOMAINMISSING = "511 sorry, you must specify a domain (#5.1.1 - chkuser)"
RCPTFORMAT = "511 sorry, recipient address has invalid format (#5.1.1 - chkuser)"
RCPTMX = "511 sorry, can't find a valid MX for rcpt domain (#5.1.1 - chkuser)"
SENDERFORMAT = "571 sorry, sender address has invalid format (#5.7.1 - chkuser)"
SENDERMX = "511 sorry, can't find a valid MX for sender domain (#5.1.1 - chkuser)"
INTRUSIONTHRESHOLD = "571 sorry, you are violating our security policies (#5.7.1 - chkuser)"
NORELAY = "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.5.3 - chkuser)"
DNS_TEMPFAIL = "451 DNS temporary failure (#4.5.1 - chkuser)"
CHKUSR_06_NORCPT = "550 sorry, no mailbox here by that name (#5.1.1 - chkusr)"

BOUNCE_STRING = b"bounce-no-mailbox"   # CHKUSER_BOUNCE_STRING: vdelivermail's "no catch-all"
DEFAULT_READ = 1023                    # chkuser looks at the first 1023 bytes of .qmail-default
DASH = "-"


def _exists(path):
    try:
        os.stat(path)
    except OSError:
        return False
    return True


def _dotqmail(name):
    """qmail's .qmail file name for an extension: dots become colons."""
    return ".qmail-" + name.replace(".", ":")


def is_catchall(domain_dir):
    """True when .qmail-default delivers everything: it exists and does not bounce-no-mailbox.

    vpopmail's own .qmail-default (`| vdelivermail '' bounce-no-mailbox`) is
    not a catch-all, exactly as for chkuser. With no .qmail-default there is
    no catch-all either (chkuser would not check such a domain at all; here
    deliveries of unknown users bounce, so they are refused at RCPT).
    """
    try:
        with open(os.path.join(domain_dir, ".qmail-default"), "rb") as f:
            head = f.read(DEFAULT_READ)
    except OSError:
        return False
    return BOUNCE_STRING not in head


def has_alias_file(domain_dir, user):
    """A .qmail-<user> file, or .qmail-<prefix>-default for user <prefix>-<anything>."""
    if _exists(os.path.join(domain_dir, _dotqmail(user))):
        return True
    i = user.rfind(DASH)
    while i > 0:
        if _exists(os.path.join(domain_dir, _dotqmail(user[:i] + DASH + "default"))):
            return True
        i = user.rfind(DASH, 0, i)
    return False


def is_list(domain_dir, user):
    """An ezmlm list: <domain dir>/<list>/mailinglist for <list>-<anything>."""
    i = user.rfind(DASH)
    while i > 0:
        if not user.startswith(".") and _exists(os.path.join(domain_dir, user[:i], "mailinglist")):
            return True
        i = user.rfind(DASH, 0, i)
    return False


def check_recipient(users, addr):
    """'ok', 'nouser' or 'notours' (a domain we do not host: not ours to judge).

    Raises UsersUnavailable when the database cannot answer.
    """
    user, domain = split_address(addr)
    if not user or not domain:
        return NOTOURS
    real = users.domain_of(domain)
    if real is None:
        return NOTOURS
    domain_dir = users.domain_dir(real)
    files_ok = "/" not in user and "\0" not in user     # never look outside the domain directory
    if is_catchall(domain_dir) or (files_ok and has_alias_file(domain_dir, user)):
        return OK
    box = users.lookup(user, real)
    if box is not None:
        return NOUSER if box.flags & BOUNCE_MAIL else OK
    return OK if files_ok and is_list(domain_dir, user) else NOUSER


def reply_for(result):
    """The RCPT reply for a refused result, or None when the recipient is accepted."""
    return NORCPT if result == NOUSER else None
