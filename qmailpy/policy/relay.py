"""Relay control: may this client relay, is a recipient domain one of ours, and the one
verdict qmail-smtpd gives a recipient on those grounds (after the anti-spam checks).

Pure decisions over the session's configuration (qmailpy.smtpd.config) and the
POP-before-SMTP answer `pop()`. qmail-smtpd's RCPT (qmailpy.smtpd.envelope), the
checks that skip relaying clients (splithorizon, the DNS checks, SPF, tarpit:
Envelope.relaying) and so qmail-policytest, which drives a session, all decide here.
"""
from qmailpy.ctl import rcpthosts
from qmailpy.policy import ACCEPT, REFUSE, TEMPFAIL, Verdict, where
from qmailpy.proto import replies as R


POP_UNKNOWN = "pop?"     # the relay table could not be read: no decision


def relay_reason(cfg, sender, auth_user, pop=None):
    """Why the client may send to any domain, or None. The names go to the log.

    `pop()` asks the POP-before-SMTP relay table (True, False, or None when
    the database is down). A POP3 login happened before this connection, so
    when both apply it was established before SMTP AUTH and wins, as the
    H-Sphere spec asks ("uses the one that was established first"). A table
    that cannot be read is POP_UNKNOWN only when no other reason applies.
    """
    if cfg.relayclient is not None:
        return "RELAYCLIENT"
    unknown = False
    if pop is not None and cfg.popbeforesmtp:
        recorded = pop()
        if recorded:
            return "pop"
        unknown = recorded is None
    if auth_user is not None:
        return "auth"
    if cfg.relayclients and cfg.relayclients.matches(cfg.peer.ip):
        return "relayclients"
    if cfg.relaydomains and cfg.peer.host != "unknown" and cfg.relaydomains.matches(cfg.peer.host):
        return "relaydomains"
    if sender and cfg.policy.relaymailfrom(sender):
        return "relaymailfrom"
    return POP_UNKNOWN if unknown else None


def relay_verdict(cfg, sender, rcpt, auth_user, pop):
    """qmail-smtpd's relay control for one recipient: (Verdict, why the client may relay or
    None, is the recipient's domain one of ours).

    A recipient of ours (rcpthosts, morercpthosts.cdb) needs no reason unless
    RELAYCLIENT is set (its value is then appended); any other needs one; a relaying
    client's sender must be of ours with smdcheck, and always for POP-before-SMTP
    (H-Sphere's "local sender, remote recipient").
    """
    local = rcpthosts_ok(cfg, rcpt)
    reason = None if local and cfg.relayclient is None else relay_reason(cfg, sender, auth_user, pop)
    if reason == POP_UNKNOWN:
        why = "users database unavailable"
        return Verdict("relay", TEMPFAIL, R.USERS_TEMPFAIL, "popbeforesmtp", why,
                       logged=("tempfail", {"rule": "popbeforesmtp", "reason": why})), None, local
    if reason is None and not local:
        return Verdict("relay", REFUSE, R.NOT_RCPTHOSTS, "control/rcpthosts", "not one of our domains",
                       logged=("refused", {"rule": "rcpthosts", "rcpt": "<%s>" % rcpt})), None, local
    if not local and sender and not rcpthosts_ok(cfg, sender) and (cfg.smdcheck or reason == "pop"):
        rule = "smdcheck" if cfg.smdcheck else "popbeforesmtp"
        return Verdict("relay", REFUSE, R.INVALID_SENDER,
                       where(cfg.controls.setting("smdcheck")) if cfg.smdcheck else rule,
                       "relaying (%s) for a sender not of our domains" % reason,
                       logged=("refused", {"rule": rule, "relay": reason, "sender": "<%s>" % sender})), reason, local
    if reason is None:
        listed = cfg.rcpthosts is not None
        return Verdict("relay", ACCEPT, rule="control/rcpthosts" if listed else None,
                       note="one of our domains" if listed else "no rcpthosts: any domain"), None, local
    return Verdict("relay", ACCEPT, note="the client may relay (%s)" % reason), reason, local


def rcpthosts_ok(cfg, addr):
    """qmail's rcpthosts() over this session's controls (qmailpy.ctl.rcpthosts, the one rule):
    no rcpthosts file accepts all; no '@' is accepted too."""
    return rcpthosts.ours(cfg.rcpthosts, cfg.morercpthosts_path, addr)
