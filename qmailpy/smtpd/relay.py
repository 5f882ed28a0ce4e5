"""May this client relay, and is a recipient domain one of ours? Pure decisions."""
from qmailpy.proto.grammar import lower_ascii, split_address


POP_UNKNOWN = "pop?"     # the relay table could not be read: no decision


def relay_reason(cfg, sender, auth_user, pop=None):
    """Why the client may send to any domain, or None. The names go to the log.

    `pop()` asks the POP-before-SMTP relay table (True, False, or None when
    the database is down). A POP3 login happened before this connection, so
    when both apply it was established before SMTP AUTH and wins, as the
    H-Sphere spec asks ("uses the one that was established first").
    """
    if cfg.relayclient is not None:
        return "RELAYCLIENT"
    if pop is not None and cfg.popbeforesmtp:
        recorded = pop()
        if recorded:
            return "pop"
        if recorded is None and auth_user is None:
            return POP_UNKNOWN
    if auth_user is not None:
        return "auth"
    if cfg.relayclients and cfg.relayclients.matches(cfg.peer.ip):
        return "relayclients"
    if cfg.relaydomains and cfg.peer.host != "unknown" and cfg.relaydomains.matches(cfg.peer.host):
        return "relaydomains"
    if sender and cfg.policy.relaymailfrom(sender):
        return "relaymailfrom"
    return None


def domain_keys(domain):
    """The domain and each suffix starting at a dot, as rcpthosts.c tries them."""
    yield domain
    for i, ch in enumerate(domain):
        if ch == ".":
            yield domain[i:]


def rcpthosts_ok(cfg, addr):
    """qmail's rcpthosts(): no rcpthosts file accepts all; no '@' is accepted too."""
    if cfg.rcpthosts is None:
        return True
    local, domain = split_address(addr)
    if "@" not in addr:
        return True
    domain = lower_ascii(domain)
    if cfg.rcpthosts.matches(domain):
        return True
    return _in_morercpthosts(cfg, domain)


def _in_morercpthosts(cfg, domain):
    if not cfg.morercpthosts_path:
        return False
    from qmailpy.ctl.cdbmap import open_cdb
    db = open_cdb(cfg.morercpthosts_path, "control/morercpthosts.cdb")
    if db is None:
        return False
    try:
        return any(key.encode("utf-8", "surrogateescape") in db for key in domain_keys(domain))
    finally:
        db.close()
