"""MAIL and RCPT: address rules, the anti-spam policy, relay control and the envelope.

qmail's order is kept: the sender lists (badmailfrom, ...) are judged for the
transaction and reported at each RCPT; RELAYCLIENT's value is appended to
recipients; a recipient domain must be in rcpthosts/morercpthosts.cdb unless
the client may relay. The anti-spam checks themselves live in qmailpy.policy
(the order of the checks: qmailpy/policy/engine.py); this module asks it at
MAIL and RCPT, logs what decided, and applies quitasap and the tarpit.
"""
from qmailpy.policy import REFUSE, where
from qmailpy.policy.engine import Envelope
from qmailpy.proto import replies as R
from qmailpy.proto.grammar import apply_localiphost, lower_ascii, parse_path, split_address
from qmailpy.smtpd.relay import POP_UNKNOWN, rcpthosts_ok, relay_reason


class Transaction:
    """The envelope of the message in progress (and what the policy found for it)."""
    __slots__ = ("sender", "recipients", "size", "spf", "rcpts", "tarpitting")

    def __init__(self, sender, size, spf=None):
        self.sender, self.recipients, self.size, self.spf = sender, [], size, spf
        self.rcpts = 0              # RCPT commands given in this transaction (the tarpit counts them)
        self.tarpitting = False


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
    env = policy_envelope(session, addr)
    verdict = cfg.policy.mail(env)
    if verdict is not None:
        return refuse(session, verdict, sender=addr), None
    verdict, spf = cfg.policy.spf_mail(env, cfg.relayclient)
    if verdict.stops:
        return refuse(session, verdict, sender=addr), None
    if spf is not None:
        log("spf", result=spf.result, identity=spf.identity, domain=spf.domain or "-", **(
            {"error": spf.error} if spf.error else {}))
    return R.OK, Transaction(addr, int(size) if size else 0, spf)


def client_relay(session):
    """Why the client may relay whatever its sender (RELAYCLIENT, POP-before-SMTP, AUTH,
    relayclients, relaydomains), or None; relaymailfrom does not count, and a users
    database that cannot answer counts as "no". Asked only by checks that skip relaying
    clients, once per authentication state."""
    memo = session.relay_memo
    if memo is None or memo[0] != session.auth_user:
        reason = relay_reason(session.cfg, None, session.auth_user, session.pop_relay)
        memo = session.relay_memo = (session.auth_user, None if reason == POP_UNKNOWN else reason)
    return memo[1]


def policy_envelope(session, sender, rcpt=None):
    return Envelope(session.helo, sender, rcpt, session.auth_user, lambda: client_relay(session))


def refuse(session, verdict, **fields):
    """Log what decided and answer its reply; quitasap/blackholedsender end the session after it."""
    for k, v in fields.items():
        if v is not None:
            verdict.fields.setdefault(k, "<%s>" % v)
    session.services.log("refused" if verdict.status == REFUSE else "tempfail", **verdict.log_fields())
    if verdict.quit:
        session.quitting = verdict.check
    return verdict.reply


def rcpt_to(session, arg):
    """The reply to one RCPT; adds the recipient when it is accepted. The tarpit waits here."""
    mail = session.mail
    mail.rcpts += 1
    answer = _rcpt(session, arg)
    delay = session.cfg.policy.tarpit(mail.rcpts, policy_envelope(session, mail.sender))
    if delay:
        if not mail.tarpitting:
            mail.tarpitting = True
            session.services.log("tarpit", rule=where(session.cfg.policy.setting("tarpitcount")),
                                 rcpts=mail.rcpts, delay=delay)
        session.services.sleep(delay)
    return answer


def _rcpt(session, arg):
    cfg, mail, log = session.cfg, session.mail, session.services.log
    addr, _ = _address(session, arg)
    if addr is None:
        return R.SYNTAX
    if not addr:
        return R.NULL_RCPT
    if cfg.noathost and "@" not in addr:
        log("refused", rule="noathost", rcpt="<%s>" % addr)
        return R.NOT_FQDN
    policy = cfg.policy
    verdict = policy.rcpt(policy_envelope(session, mail.sender, addr))
    if verdict is None and mail.spf is not None:
        verdict = policy.spf_rcpt(mail.spf)
        if not verdict.stops:
            verdict = None
    if verdict is not None:
        return refuse(session, verdict, sender=mail.sender, rcpt=addr)
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
    srs = local and _srs_status(session, addr)
    if srs == "bad-hash":
        return R.SRS_INVALID
    if srs == "temp":
        return R.USERS_TEMPFAIL
    if reason == "RELAYCLIENT":
        addr += cfg.relayclient
    elif cfg.userchk and not srs:
        refusal = _chkuser(session, addr)
        if refusal:
            return refusal
    if cfg.maxrcpt and len(mail.recipients) >= cfg.maxrcpt:
        log("refused", rule="maxrecepients", rcpt="<%s>" % addr)
        return R.TOO_MANY_RCPTS
    mail.recipients.append(addr)
    return R.OK


def _srs_status(session, addr):
    """For an SRS0=/SRS1= recipient at our srs_domain: 'ok', 'expired', 'bad-hash', or 'temp' when
    the users service cannot tell now; else None.

    Only addresses that look like SRS pay for the question and the HMAC, asked of
    services.users() (the users service holds the keys in production). An expired
    address is accepted here and dropped by qmail-send without a bounce.
    """
    local, _, domain = addr.rpartition("@")
    if local[:4].upper() not in ("SRS0", "SRS1") or local[4:5] not in ("=", "-", "+"):
        return None
    controls = session.cfg.controls
    if lower_ascii(domain) != lower_ascii(controls.value("srs/srs_domain")):
        return None
    from qmailpy.srs.rewrite import NOT_SRS
    from qmailpy.users import UsersUnavailable
    try:
        status, error = session.services.users().srs_reverse(addr, session.services.now())
    except UsersUnavailable as e:
        session.services.log("tempfail", rule="srs", reason=str(e))
        return "temp"
    if status == NOT_SRS:
        return None
    session.services.log("srs", status=status, rcpt="<%s>" % addr, error=error or "")
    return status


def _chkuser(session, addr):
    """userchk: the refusal for a missing mailbox of a hosted domain, or None."""
    from qmailpy.users import UsersUnavailable
    from qmailpy.users import chkuser
    try:
        result = session.services.users().check_recipient(addr)
    except UsersUnavailable as e:
        session.services.log("tempfail", rule="userchk", reason=str(e))
        return chkuser.RESOURCE
    if result == chkuser.NOUSER:
        session.services.log("refused", rule="userchk", rcpt="<%s>" % addr)
        return chkuser.CHKUSR_06_NORCPT
    return None
