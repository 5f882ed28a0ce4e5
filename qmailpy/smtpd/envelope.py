"""MAIL and RCPT: address rules, relay control and the envelope being built.

qmail's order is kept: badmailfrom is decided at MAIL but reported at each
RCPT; RELAYCLIENT's value is appended to recipients; a recipient domain must
be in rcpthosts/morercpthosts.cdb unless the client may relay.
"""
from qmailpy.proto import replies as R
from qmailpy.proto.grammar import apply_localiphost, lower_ascii, parse_path, split_address
from qmailpy.smtpd.relay import POP_UNKNOWN, rcpthosts_ok, relay_reason


class Transaction:
    """The envelope of the message in progress."""
    __slots__ = ("sender", "recipients", "badmailfrom", "size")

    def __init__(self, sender, badmailfrom, size):
        self.sender, self.recipients, self.badmailfrom, self.size = sender, [], badmailfrom, size


def normalize(cfg, addr):
    """stripsinglequotes, lowercase and localiphost, in that order."""
    if cfg.stripsinglequotes:
        addr = addr.replace("'", "")
    if cfg.lowercase:
        addr = lower_ascii(addr)
    return apply_localiphost(addr, cfg.my_ips(), cfg.localiphost)


def _address(session, arg):
    parsed = parse_path(arg)
    if parsed is None:
        return None, None
    addr, params = parsed
    return normalize(session.cfg, addr), params


def mail_from(session, arg):
    """(reply, Transaction or None)."""
    cfg, log = session.cfg, session.services.log
    addr, params = _address(session, arg)
    if addr is None:
        return R.SYNTAX, None
    if cfg.noathost and addr and "@" not in addr:
        log("refused", rule="noathost", sender="<%s>" % addr)
        return R.NOT_FQDN, None
    size = params.get("SIZE", "")
    if size and not size.isdigit():
        return R.PARAM_UNKNOWN, None
    if size and cfg.databytes and int(size) > cfg.databytes:
        log("refused", rule="databytes", size=size)
        return R.TOO_BIG, None
    if session.auth_user and cfg.authsender:
        if lower_ascii(split_address(addr)[1]) != lower_ascii(split_address(session.auth_user)[1]):
            log("refused", rule="authsender", sender="<%s>" % addr, user=session.auth_user)
            return R.AUTH_SENDER, None
    bad = cfg.badmailfrom.matches(addr) if cfg.badmailfrom and addr else None
    return R.OK, Transaction(addr, bad, int(size) if size else 0)


def rcpt_to(session, arg):
    """The reply to one RCPT; adds the recipient when it is accepted."""
    cfg, mail, log = session.cfg, session.mail, session.services.log
    addr, _ = _address(session, arg)
    if addr is None:
        return R.SYNTAX
    if not addr:
        return R.NULL_RCPT
    if cfg.noathost and "@" not in addr:
        log("refused", rule="noathost", rcpt="<%s>" % addr)
        return R.NOT_FQDN
    if mail.badmailfrom is not None:
        log("refused", rule="control/badmailfrom:%d" % mail.badmailfrom.line_number, sender="<%s>" % mail.sender)
        return R.BADMAILFROM
    local = rcpthosts_ok(cfg, addr)
    reason = None if local and cfg.relayclient is None else relay_reason(
        cfg, mail.sender, session.auth_user, session.pop_relay)
    if reason == POP_UNKNOWN:
        log("tempfail", rule="popbeforesmtp", reason="users database unavailable")
        return R.USERS_TEMPFAIL
    if reason is None and not local:
        log("refused", rule="rcpthosts", rcpt="<%s>" % addr)
        return R.NOT_RCPTHOSTS
    if not local and mail.sender and not rcpthosts_ok(cfg, mail.sender):
        if cfg.smdcheck or reason == "pop":      # pop: H-Sphere's "local sender, remote recipient"
            log("refused", rule="smdcheck" if cfg.smdcheck else "popbeforesmtp", relay=reason,
                sender="<%s>" % mail.sender)
            return R.INVALID_SENDER
    if reason == "RELAYCLIENT":
        addr += cfg.relayclient
    elif cfg.userchk:
        refusal = _chkuser(session, addr)
        if refusal:
            return refusal
    if cfg.maxrcpt and len(mail.recipients) >= cfg.maxrcpt:
        log("refused", rule="maxrecepients", rcpt="<%s>" % addr)
        return R.TOO_MANY_RCPTS
    mail.recipients.append(addr)
    return R.OK


def _chkuser(session, addr):
    """userchk: the refusal for a missing mailbox of a hosted domain, or None."""
    from qmailpy.users import UsersUnavailable
    from qmailpy.users import chkuser
    try:
        result = chkuser.check_recipient(session.services.users(), addr)
    except UsersUnavailable as e:
        session.services.log("tempfail", rule="userchk", reason=str(e))
        return chkuser.RESOURCE
    if result == chkuser.NOUSER:
        session.services.log("refused", rule="userchk", rcpt="<%s>" % addr)
        return chkuser.CHKUSR_06_NORCPT
    return None
