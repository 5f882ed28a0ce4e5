"""MAIL and RCPT as decisions: address rules, the anti-spam policy, relay control, the envelope.

qmail's order is kept: the sender lists (badmailfrom, ...) are judged for the
transaction and reported at each RCPT; RELAYCLIENT's value is appended to
recipients; a recipient domain must be in rcpthosts/morercpthosts.cdb unless
the client may relay (qmailpy.policy.relay). The anti-spam checks live in
qmailpy.policy (their order: qmailpy/policy/engine.py).

mail_from() and rcpt_to() are pure: they read the session and return what to
answer and what to change (MailResult, RcptResult), putting their log lines
and the tarpit's Sleep into `effects`; the DNS and users questions they ask go
through the session's answers (qmailpy.smtpd.answers), so the session may run
them again. Each recipient passes one pipeline of verdicts (rcpt_verdict):
anti-spam checks, SPF, relay, SRS, chkuser, maxrecepients. A session stops at
the first that refuses or fails; with a trace (qmail-policytest) all are run
and listed, and the decision is the same.
"""
from qmailpy.policy import ACCEPT, REFUSE, SKIP, TEMPFAIL, Verdict, where
from qmailpy.policy.engine import Envelope
from qmailpy.proto import replies as R
from qmailpy.proto.grammar import apply_localiphost, lower_ascii, parse_path, split_address
from qmailpy.smtpd.actions import Log, Sleep


class Transaction:
    """The envelope of the message in progress (and what the policy found for it)."""
    __slots__ = ("sender", "recipients", "size", "spf", "rcpts", "tarpitting")

    def __init__(self, sender, size, spf=None):
        self.sender, self.recipients, self.size, self.spf = sender, [], size, spf
        self.rcpts = 0              # RCPT commands given in this transaction (the tarpit counts them)
        self.tarpitting = False


class MailResult:
    __slots__ = ("reply", "transaction", "quitting", "trace", "decided", "spf")

    def __init__(self, reply, transaction=None, quitting=None, trace=None, decided=None, spf=None):
        self.reply, self.transaction, self.quitting = reply, transaction, quitting
        self.trace, self.decided, self.spf = trace, decided, spf


class RcptResult:
    __slots__ = ("reply", "recipient", "quitting", "trace", "decided", "count", "tarpitting")

    def __init__(self, reply, recipient=None, quitting=None, trace=None, decided=None):
        self.reply, self.recipient, self.quitting = reply, recipient, quitting
        self.trace, self.decided = trace, decided
        self.count, self.tarpitting = 0, False


def normalize(cfg, addr):
    """stripsinglequotes, lowercase and localiphost, in that order."""
    if cfg.stripsinglequotes:
        addr = addr.replace("'", "")
    if cfg.lowercase:
        addr = lower_ascii(addr)
    return apply_localiphost(addr, cfg.my_ips(), cfg.localiphost)


def _address(cfg, arg):
    parsed = parse_path(arg)
    if parsed is None:
        return None, None
    addr, params = parsed
    return normalize(cfg, addr), params


def policy_envelope(session, sender, rcpt=None):
    return Envelope(session.helo, sender, rcpt, session.auth_user, session.relaying)


def refuse(effects, verdict, **fields):
    """Log what decided; (its reply, the check that ends the session after it or None). The
    verdict is not changed: a check may give the same one again (rblhosts, once a session)."""
    if verdict.logged is None:
        logged = verdict.log_fields()
        for k, v in fields.items():             # the sender and the recipient: never None
            logged.setdefault(k, "<%s>" % v)
        effects.append(Log("refused" if verdict.status == REFUSE else "tempfail", logged))
    elif verdict.logged:
        event, logged = verdict.logged
        effects.append(Log(event, dict(logged)))
    return verdict.reply, (verdict.check if verdict.quit else None)


def mail_from(session, effects, arg, trace=False):
    """MAIL FROM: a MailResult (its transaction None when refused); `trace`: with every verdict."""
    cfg = session.cfg
    trace = [] if trace else None
    addr, params = _address(cfg, arg)
    if addr is None:
        return MailResult(R.SYNTAX)
    if cfg.noathost and addr and "@" not in addr:
        effects.append(Log("refused", {"rule": "noathost", "sender": "<%s>" % addr}))
        return MailResult(R.NOT_FQDN)
    if "SMTPUTF8" in params:            # RFC 6531: not offered, so an unknown parameter to refuse
        effects.append(Log("refused", {"rule": "smtputf8", "sender": "<%s>" % addr}))
        return MailResult(R.SMTPUTF8_REFUSED)
    size = params.get("SIZE", "")
    if size:
        from qmailpy.scan import scan_ulong        # spamcontrol's mailfrom_parms(): `SIZE=bogus` is 0
        size = scan_ulong(size)
        if cfg.databytes and size > cfg.databytes:
            effects.append(Log("refused", {"rule": "databytes", "size": params["SIZE"]}))
            return MailResult(R.TOO_BIG)
    user = session.auth_user
    # the null sender names no domain to forge, and read receipts (RFC 8098) come from it
    if user and cfg.authsender and addr and lower_ascii(split_address(addr)[1]) != _login_domain(user):
        effects.append(Log("refused", {"rule": "authsender", "sender": "<%s>" % addr, "user": user}))
        return MailResult(R.AUTH_SENDER)
    env = policy_envelope(session, addr)
    decided = cfg.policy.mail(env, trace)
    spf = None
    if decided is None or trace is not None:
        verdict, spf = cfg.policy.spf_mail(env)
        decided = _first(decided, verdict, trace)
    if decided is not None:
        reply, quitting = refuse(effects, decided, sender=addr)
        return MailResult(reply, None, quitting, trace, decided, spf)
    if spf is not None:
        effects.append(Log("spf", dict({"result": spf.result, "identity": spf.identity, "domain": spf.domain or "-"},
                                       **({"error": spf.error} if spf.error else {}))))
    return MailResult(R.OK, Transaction(addr, size or 0, spf), None, trace, None, spf)


def _login_domain(login):
    """The domain an AUTH login authenticated in: after the first of @ % /, as vchkpw splits it
    (user%domain and user/domain are user@domain), lower case."""
    from qmailpy.users.names import split_login
    return split_login(login)[1]


def _first(decided, verdict, trace):
    """The verdict that decides so far: `decided`, else `verdict` when it stops; traced."""
    if trace is not None:
        trace.append(verdict)
    return decided if decided is not None or not verdict.stops else verdict


def rcpt_to(session, effects, arg, trace=False):
    """RCPT TO: an RcptResult (its recipient None when refused); `trace`: with every verdict.
    The tarpit's Sleep comes after the decision, before the reply."""
    mail = session.mail
    got = _rcpt(session, effects, arg, [] if trace else None)
    got.count = mail.rcpts + 1
    policy = session.cfg.policy
    delay = policy.tarpit(got.count, policy_envelope(session, mail.sender))
    got.tarpitting = mail.tarpitting or bool(delay)
    if delay:
        if not mail.tarpitting:
            effects.append(Log("tarpit", {"rule": where(policy.setting("tarpitcount")), "rcpts": got.count,
                                          "delay": delay}))
        effects.append(Sleep(delay, "tarpit"))
    return got


def _rcpt(session, effects, arg, trace):
    cfg = session.cfg
    addr, _ = _address(cfg, arg)
    if addr is None:
        return RcptResult(R.SYNTAX)
    if not addr:
        return RcptResult(R.NULL_RCPT)
    if cfg.noathost and "@" not in addr:
        effects.append(Log("refused", {"rule": "noathost", "rcpt": "<%s>" % addr}))
        return RcptResult(R.NOT_FQDN)
    decided, recipient = rcpt_verdict(session, effects, addr, trace)
    if decided is None:
        return RcptResult(R.OK, recipient, None, trace)
    reply, quitting = refuse(effects, decided, sender=session.mail.sender, rcpt=addr)
    return RcptResult(reply, None, quitting, trace, decided)


def rcpt_verdict(session, effects, addr, trace=None):
    """(the verdict that refuses `addr` or None, the recipient as it is added): the pipeline."""
    cfg, mail = session.cfg, session.mail
    policy = cfg.policy
    decided = policy.rcpt(policy_envelope(session, mail.sender, addr), trace)
    if decided is None or trace is not None:
        decided = _first(decided, policy.spf_rcpt(mail.spf), trace)
    if decided is not None and trace is None:
        return decided, None
    from qmailpy.policy.relay import relay_verdict
    verdict, reason, local = relay_verdict(cfg, mail.sender, addr, session.auth_user, session.pop_relay)
    decided = _first(decided, verdict, trace)
    if decided is not None and trace is None:
        return decided, None
    srs = local and _srs_status(session, effects, addr)
    decided = _first(decided, _srs_verdict(srs), trace)
    if decided is not None and trace is None:
        return decided, None
    if reason == "RELAYCLIENT":
        addr += cfg.relayclient
        verdict = Verdict("userchk", SKIP, note="RELAYCLIENT: %r appended" % cfg.relayclient)
    elif cfg.userchk and not srs:
        verdict = _chkuser(session, addr)
    else:
        verdict = Verdict("userchk", SKIP, note="an SRS address" if srs else "off")
    decided = _first(decided, verdict, trace)
    if decided is not None and trace is None:
        return decided, None
    decided = _first(decided, _maxrcpt(cfg, mail, addr), trace)
    return decided, (addr if decided is None else None)


def _srs_status(session, effects, addr):
    """For an SRS0=/SRS1= recipient at our srs_domain: 'ok', 'expired', 'bad-hash', or 'temp' when
    the users service cannot tell now; else None.

    Only addresses that look like SRS pay for the question and the HMAC, asked of the
    users database port (the users service holds the keys in production). An expired
    address is accepted here and dropped by qmail-send without a bounce.
    """
    from qmailpy.srs import codec
    if not codec.is_srs(addr):          # before any control is read: most recipients stop here
        return None
    if not codec.at_domain(addr, session.cfg.controls.value("srs/srs_domain")):
        return None
    from qmailpy.srs.rewrite import NOT_SRS
    from qmailpy.users.errors import UsersUnavailable
    try:
        status, error = session.answers.users.srs_reverse(addr, session.now())
    except UsersUnavailable as e:
        effects.append(Log("tempfail", {"rule": "srs", "reason": str(e)}))
        return "temp"
    if status == NOT_SRS:
        return None
    effects.append(Log("srs", {"status": status, "rcpt": "<%s>" % addr, "error": error or ""}))
    return status


def _srs_verdict(srs):
    if srs == "bad-hash":
        return Verdict("srs", REFUSE, R.SRS_INVALID, "control/srs", "SRS address with a bad hash", logged=())
    if srs == "temp":
        return Verdict("srs", TEMPFAIL, R.USERS_TEMPFAIL, "control/srs", "the users service cannot check it now",
                       logged=())
    if srs:
        return Verdict("srs", ACCEPT, note="SRS address: %s" % srs)
    return Verdict("srs", SKIP, note="not an SRS address of ours")


def _chkuser(session, addr):
    """userchk: does the mailbox of a hosted domain exist (the users database answers)?"""
    from qmailpy.users import chkuser
    from qmailpy.users.errors import UsersUnavailable
    rule = where(session.cfg.controls.setting("userchk"))
    try:
        result = session.answers.users.check_recipient(addr)
    except UsersUnavailable as e:
        return Verdict("userchk", TEMPFAIL, chkuser.RESOURCE, rule, "users database: %s" % e,
                       logged=("tempfail", {"rule": "userchk", "reason": str(e)}))
    if result == chkuser.NOUSER:
        return Verdict("userchk", REFUSE, chkuser.CHKUSR_06_NORCPT, rule, "no such mailbox",
                       logged=("refused", {"rule": "userchk", "rcpt": "<%s>" % addr}))
    return Verdict("userchk", ACCEPT, rule=rule, note="a mailbox" if result == chkuser.OK else "not a hosted domain")


def _maxrcpt(cfg, mail, addr):
    if not cfg.maxrcpt:
        return Verdict("maxrecepients", SKIP, note="no limit")
    rule = where(cfg.controls.setting("maxrecepients"))
    if len(mail.recipients) >= cfg.maxrcpt:
        return Verdict("maxrecepients", REFUSE, R.TOO_MANY_RCPTS, rule, "%d recipients already" % cfg.maxrcpt,
                       logged=("refused", {"rule": "maxrecepients", "rcpt": "<%s>" % addr}))
    return Verdict("maxrecepients", ACCEPT, rule=rule, note="recipient %d of %d" % (len(mail.recipients) + 1,
                                                                                    cfg.maxrcpt))
