"""chkuser: refuse, at RCPT, recipients of hosted domains that have no mailbox.

check_recipient() follows chkuser 2.0's realrcpt() (chkuser.c 2.0.8, as in
denislemire/netqmail chkuser.c): domains we do not host are not checked;
then a .qmail-<user> or .qmail-<prefix>-default alias file, a mailbox user
(without vpopmail's BOUNCE_MAIL flag), a catch-all .qmail-default, or the mailbox
u of user = u-ext each make the recipient valid (qmailpy.users.domainfiles), exactly what delivery
delivers. chkuser's ezmlm list-directory test is left out: without a
.qmail-<list>-default nothing would deliver such mail. A database that cannot
answer, or a domain directory we cannot look into, raises UsersUnavailable:
answer RESOURCE (451), never "no mailbox".

The two replies qmail-smtpd gives: RESOURCE is chkuser 2.0.8's
(chkuser_settings.h, same repository), but 451 where chkuser says 430, which
is no SMTP reply code; a missing mailbox gets CHKUSR_06_NORCPT, the refusal of
the modified chkuser 0.6 H-Sphere 2.4 shipped (as quoted in bounces, e.g.
Sisimai's qmail samples). chkuser's other checks (formats, MX, intrusion
thresholds) are qmail-smtpd's own rules here, with qmail's replies.
"""
from qmailpy.users import domainfiles
from qmailpy.users.base import UsersUnavailable
from qmailpy.users.names import split_address

OK, NOUSER, NOTOURS = "ok", "nouser", "notours"

RESOURCE = "451 system temporary unavailable, try again later (#4.3.0 - chkuser)"
CHKUSR_06_NORCPT = "550 sorry, no mailbox here by that name (#5.1.1 - chkusr)"


def check_recipient(users, addr, virtualdomains=()):
    """'ok', 'nouser' or 'notours' (a domain we do not host: not ours to judge).

    An address with a line of its own in `virtualdomains` (control/virtualdomains'
    lines: `postmaster@domain:alias`, which qmail-users adddomain writes) is routed by
    qmail-send to that prefix, never to the domain's mailboxes: not ours to judge either.
    The order is qmail-lspawn's (qmailpy.spawn.mailbox): an alias file, else a
    mailbox, else a catch-all .qmail-default, else the mailbox u of user = u-ext. Raises UsersUnavailable when
    the database cannot answer or the domain directory cannot be looked into.
    """
    user, domain = split_address(addr)
    if not user or not domain:
        return NOTOURS
    if routed_alone(virtualdomains, "%s@%s" % (user, domain)):
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
        # qmail-lspawn's next step: the mailbox u of user = u-ext, the longest first
        from qmailpy.addr.keys import mailbox_names
        for short, ext in mailbox_names(user.encode("utf-8", "surrogateescape")):
            if ext is not None:
                box = users.lookup(short.decode("utf-8", "surrogateescape"), real)
                if box is not None:
                    return NOUSER if box.bounces else OK
    except OSError as e:
        raise UsersUnavailable("cannot look into %s: %s" % (e.filename or domain_dir, e.strerror or e)) from None
    return NOUSER


def routed_alone(virtualdomains, address):
    """Does a virtualdomains line `address:prefix` (qmail-send's first, whole-address key) name
    this lower-cased address? (addr.rewrite reads the lines, as qmail-send does.)"""
    from qmailpy.addr.rewrite import vdom_map
    return address.encode("utf-8", "surrogateescape") in vdom_map(virtualdomains)
