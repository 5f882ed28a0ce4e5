"""chkuser: refuse, at RCPT, recipients of hosted domains that have no mailbox.

check_recipient() follows chkuser 2.0's realrcpt() (chkuser.c 2.0.8, as in
denislemire/netqmail chkuser.c): domains we do not host are not checked;
then a .qmail-<user> or .qmail-<prefix>-default alias file, a mailbox user
(without vpopmail's BOUNCE_MAIL flag), or a catch-all .qmail-default each make
the recipient valid (qmailpy.users.domainfiles), exactly what delivery
delivers. chkuser's ezmlm list-directory test is left out: without a
.qmail-<list>-default nothing would deliver such mail. A database that cannot
answer, or a domain directory we cannot look into, raises UsersUnavailable:
answer RESOURCE (451), never "no mailbox".

The replies are chkuser 2.0.8's (chkuser_settings.h, same repository), but
RESOURCE answers 451 where chkuser says 430, which is no SMTP reply code.
H-Sphere 2.4 shipped a modified chkuser 0.6 whose refusal read
CHKUSR_06_NORCPT (as quoted in bounces, e.g. Sisimai's qmail samples).
"""
from qmailpy.users import domainfiles
from qmailpy.users.base import UsersUnavailable
from qmailpy.users.names import split_address

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


def check_recipient(users, addr):
    """'ok', 'nouser' or 'notours' (a domain we do not host: not ours to judge).

    The order is qmail-lspawn's (qmailpy.spawn.mailbox): an alias file, else a
    mailbox, else a catch-all .qmail-default. Raises UsersUnavailable when
    the database cannot answer or the domain directory cannot be looked into.
    """
    user, domain = split_address(addr)
    if not user or not domain:
        return NOTOURS
    real = users.domain_of(domain)
    if real is None:
        return NOTOURS
    domain_dir = users.domain_dir(real)
    try:
        if domainfiles.alias_file(domain_dir, user):
            return OK
        box = users.lookup(user, real)
        if box is not None:
            return NOUSER if box.bounces else OK
        if domainfiles.is_catchall(domainfiles.default_head(domain_dir)):
            return OK
    except OSError as e:
        raise UsersUnavailable("cannot look into %s: %s" % (e.filename or domain_dir, e.strerror or e)) from None
    return NOUSER


def reply_for(result):
    """The RCPT reply for a refused result, or None when the recipient is accepted."""
    return NORCPT if result == NOUSER else None
