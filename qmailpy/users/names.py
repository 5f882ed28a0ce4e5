"""Splitting logins and addresses, spelling IPs, and which names can be mailboxes at all.

A mailbox name matches exactly: the only folding is ASCII A-Z to a-z (qmail
lower-cases domains, vpopmail lower-cases user names), never Unicode case
folding (Python's str.lower() turns the Kelvin sign into 'k') nor a
database collation (MariaDB's utf8mb4_general_ci makes 'jóe', 'joe ' and
'joe' equal). Users answers "no such user" for a name outside the
characters qmail-users allows before it asks the database anything.
"""
from qmailpy.users.schema import MAX_DOMAIN, MAX_NAME

LOGIN_SEPARATORS = "@%/"    # vpopmail's ATCHARS: user@domain, user%domain, user/domain
DOMAIN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")
USER_CHARS = DOMAIN_CHARS | frozenset("_+=&")
_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def lower(s):
    """A-Z to a-z and nothing else."""
    return s.translate(_LOWER)


def valid_user(name):
    """A user name qmail-users could have made (already lower-cased)."""
    return 0 < len(name) <= MAX_NAME and USER_CHARS.issuperset(name) and not name.startswith(".")


def valid_domain(name):
    """A domain qmail-users could have made (lower-cased, no trailing dot)."""
    return (0 < len(name) <= MAX_DOMAIN and DOMAIN_CHARS.issuperset(name)
            and not name.startswith((".", "-")) and ".." not in name)


def split_login(login):
    """(user, domain) of an AUTH or POP3 login, split at the first of @ % / as vpopmail does."""
    for i, ch in enumerate(login):
        if ch in LOGIN_SEPARATORS:
            return lower(login[:i]), lower(login[i + 1:])
    return lower(login), ""


def split_address(addr):
    """(user, domain) of an envelope address, split at the last @."""
    user, at, domain = addr.rpartition("@")
    if not at:
        return lower(addr), ""
    return lower(user), lower(domain).rstrip(".")


def plain_ip(ip):
    """One spelling per client address, so tcpserver's and Dovecot's forms match: an IPv4-mapped
    IPv6 address as plain IPv4, any other IPv6 address as inet_ntop spells it (RFC 5952:
    lower case, the longest run of two or more zero groups as '::'). Dovecot's $IP is that
    spelling; ucspi-tcp6's ip6_fmt() compresses a lone zero group too, older ones not at all."""
    ip = (ip or "").strip()
    if ":" not in ip:
        return ip
    import ipaddress
    try:
        addr = ipaddress.IPv6Address(ip)
    except ValueError:
        return ip
    return str(addr.ipv4_mapped or addr)
