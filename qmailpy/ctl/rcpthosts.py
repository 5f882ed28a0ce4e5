"""qmail's rcpthosts(): is an address's domain one of ours, by control/rcpthosts and
control/morercpthosts.cdb. The one home of that rule: qmail-smtpd's relay control
(qmailpy.policy.relay) and SRS's "our own sender" (qmailpy.srs.rewrite) both ask here,
so they cannot disagree on a domain.

As rcpthosts.c: the domain is what follows the last '@', lower-cased (ASCII only); it
and each of its suffixes that starts at a '.' are looked up, first in rcpthosts (whose
lines may end in ':'), then in morercpthosts.cdb, which is opened only when rcpthosts
exists. No rcpthosts means every domain (qmail-smtpd's open relay); an address without
'@' is ours too. A corrupt morercpthosts.cdb raises ControlError, never "not ours".
"""
from qmailpy.ctl.patterns import HostList, fold

MORE = "control/morercpthosts.cdb"


def domain_keys(domain):
    """The domain and each suffix starting at a dot, as rcpthosts.c tries them."""
    yield domain
    for i, ch in enumerate(domain):
        if ch == ".":
            yield domain[i:]


def hosts(controls):
    """control/rcpthosts as a HostList, None when there is no such control (as
    qmailpy.smtpd.config reads it for a session, without importing this module)."""
    lines = controls.value("rcpthosts")
    return None if lines is None else HostList(lines)


def ours(rcpthosts, more_path, address):
    """rcpthosts(): `rcpthosts` a HostList or None, `more_path` morercpthosts.cdb's path or None."""
    if rcpthosts is None:
        return True
    at, domain = address.rpartition("@")[1:]
    if not at:
        return True
    domain = fold(domain)
    if rcpthosts.matches(domain):
        return True
    if not more_path:
        return False
    from qmailpy.ctl.cdbmap import open_cdb         # lazy: a session that relays nothing never reads a cdb
    db = open_cdb(more_path, MORE)
    if db is None:
        return False
    try:
        return any(key.encode("utf-8", "surrogateescape") in db for key in domain_keys(domain))
    finally:
        db.close()
