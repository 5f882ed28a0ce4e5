"""Splitting logins and addresses, and spelling IPs, the way vpopmail and qmail do."""

LOGIN_SEPARATORS = "@%/"    # vpopmail's ATCHARS: user@domain, user%domain, user/domain


def split_login(login):
    """(user, domain) of an AUTH or POP3 login, split at the first of @ % / as vpopmail does."""
    for i, ch in enumerate(login):
        if ch in LOGIN_SEPARATORS:
            return login[:i].lower(), login[i + 1:].lower()
    return login.lower(), ""


def split_address(addr):
    """(user, domain) of an envelope address, split at the last @."""
    user, at, domain = addr.rpartition("@")
    if not at:
        return addr.lower(), ""
    return user.lower(), domain.lower().rstrip(".")


def plain_ip(ip):
    """An IPv4-mapped IPv6 address as plain IPv4, so tcpserver's and Dovecot's forms match."""
    ip = (ip or "").strip()
    if ip.lower().startswith("::ffff:") and "." in ip:
        return ip[7:]
    return ip
