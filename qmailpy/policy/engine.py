"""Policy: the checks of each SMTP stage, in order, over one session's controls.

Stages and order (docs/antispam.md explains the choices):

  MAIL  blackholedsender (refuse, end the session), then SPF (its DNS lookup;
        a temporary error is answered here when spfbehavior >= 2)
  RCPT  rblhosts, badhelo, helodnscheck, badmailfrom, badmailpatterns,
        badmailfrom-unknown, mfdnscheck, badrcptto, badrcptpatterns, then the
        SPF rejection decided at MAIL; relay control (qmailpy.policy.relay),
        SRS, chkuser and maxrecepients follow (smtpd/envelope.py: rcpt_verdict)
  tarpit: after `tarpitcount` RCPT commands in a transaction, every further
        RCPT reply waits `tarpitdelay` seconds

Like spamcontrol, sender checks are decided per transaction and reported at
each RCPT, and HELO checks are reported at RCPT too, when it is known whether
the client may relay (splithorizon).

Run-time switches, per client from tcprules (no restart: tcprules rebuilds the cdb):
  WHITELIST   set and not "0": the client skips every anti-spam check here
              (the lists, the DNS checks, rblhosts, tarpit, quitasap); relay
              control and SPF stay (SPFBEHAVIOR switches SPF per client)
  quitasap    (control) 1: the first refusal by a check here ends the session
              after its reply; temporary failures (4xx) never do
"""
from qmailpy.ctl.patterns import AddressList, PatternList
from qmailpy.policy import ACCEPT, REFUSE, SKIP, TEMPFAIL, Verdict, where
from qmailpy.proto import replies as R


class Envelope:
    """What the checks look at.

    relaying: a callable giving why the client may relay (RELAYCLIENT, auth,
    relayclients, relaydomains, pop) or None; asked only when a check needs it.
    """
    __slots__ = ("helo", "sender", "rcpt", "auth_user", "relaying")

    def __init__(self, helo=None, sender=None, rcpt=None, auth_user=None, relaying=None):
        self.helo, self.sender, self.rcpt, self.auth_user = helo, sender, rcpt, auth_user
        self.relaying = relaying or (lambda: None)


def _checks():
    """{"MAIL_CHECKS": ..., "RCPT_CHECKS": ...}: (name, check) in order. Made on first use, so a
    session that never gets to MAIL does not import the checks (and the resolver they use)."""
    global _CHECKS
    if _CHECKS is None:
        from qmailpy.policy import dnscheck, lists
        _CHECKS = {
            "MAIL_CHECKS": (("blackholedsender", lists.blackholedsender),),
            "RCPT_CHECKS": (
                ("rblhosts", dnscheck.rblhosts),
                ("badhelo", lists.badhelo),
                ("helodnscheck", dnscheck.helodnscheck),
                ("badmailfrom", lists.badmailfrom),
                ("badmailpatterns", lists.badmailpatterns),
                ("badmailfrom-unknown", dnscheck.badmailfrom_unknown),
                ("mfdnscheck", dnscheck.mfdnscheck),
                ("badrcptto", lists.badrcptto),
                ("badrcptpatterns", lists.badrcptpatterns),
            )}
    return _CHECKS


_CHECKS = None


def __getattr__(name):          # MAIL_CHECKS and RCPT_CHECKS, as module attributes
    if name in ("MAIL_CHECKS", "RCPT_CHECKS"):
        return _checks()[name]
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
SPF_REJECTS = {"fail": 3, "softfail": 4, "neutral": 5, "none": 6, "unknown": 6}   # lowest spfbehavior


class Policy:
    """The anti-spam policy of one session: controls read on first use, DNS answers cached."""

    def __init__(self, controls, environ, peer, my_ips=(), resolver=None):
        self.controls, self.environ, self.peer = controls, environ, peer
        self.my_ips = frozenset(my_ips)
        self._resolver = resolver
        self._lists = {}
        self._cache = {}
        self._mailboxes = None      # opens the users database, for recipient keys
        self._keys = None
        wl = environ.get("WHITELIST")
        self.whitelisted = wl is not None and wl.strip() != "0"

    # -- data
    def use_resolver(self, resolver):
        """Ask `resolver` (a StaticResolver, a configured Resolver): the session gives its own
        (smtpd.session: the resolver its Lookup actions are answered with) before any check."""
        self._resolver = resolver

    def use_mailboxes(self, opener):
        """Find a virtual-domain recipient's mailbox in the users database `opener()` returns
        (qmail-smtpd's), for recipient_keys()."""
        self._mailboxes, self._keys = opener, None

    def recipient_keys(self, rcpt):
        """The recipient's keys (qmailpy.addr.keys): the mailbox it will be delivered to, then the
        other forms of its address; what badrcptto is asked for. Without the users database (not
        given, or down) the keys come from the controls alone."""
        if self._keys is None:
            from qmailpy.addr.keys import RecipientKeys
            finder = None
            if self._mailboxes is not None:
                from qmailpy.users.base import AddressFinder
                finder = AddressFinder(self._mailboxes)
            self._keys = RecipientKeys.from_controls(self.controls, finder)
        keys = self._keys.keys(rcpt.encode("utf-8", "surrogateescape"))
        return [k.decode("utf-8", "surrogateescape") for k in keys.addresses]

    def resolver(self):
        return self._resolver

    def setting(self, name):
        return self.controls.setting(name)

    def value(self, name):
        return self.controls.value(name)

    def compiled(self, name):
        """(matcher or None when the list is empty, Setting) of a list control."""
        got = self._lists.get(name)
        if got is None:
            s = self.setting(name)
            cls = PatternList if s.control.kind == "patterns" else AddressList
            got = self._lists[name] = (cls(s.value, s.linenos) if s.value else None, s)
        return got

    def cached(self, key, compute):
        """compute() once per session for `key` (DNS answers, DNSBL verdicts)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def splithorizon_skip(self, env, check):
        """A SKIP verdict when splithorizon exempts this relaying client from `check`, else None."""
        if not self.value("splithorizon"):
            return None
        why = env.relaying()
        if why is None:
            return None
        return Verdict(check, SKIP, rule=where(self.setting("splithorizon")),
                       note="splithorizon: client may relay (%s)" % why)

    def relaymailfrom(self, sender):
        from qmailpy.policy.lists import relaymailfrom
        return relaymailfrom(self, sender)

    # -- stages
    def run(self, checks, env, trace=None):
        """The first verdict that stops the command, or None; `trace` (a list) gets
        every verdict and then every check is run, as qmail-policytest shows them."""
        quitasap = None
        first = None
        for name, check in checks:
            if self.whitelisted:
                v = Verdict(name, SKIP, note="WHITELIST is set for this client")
            else:
                v = check(self, env)
            if v.status == REFUSE and not v.quit:
                if quitasap is None:
                    quitasap = bool(self.value("quitasap"))
                v.quit = quitasap
            if trace is None:
                if v.stops:
                    return v
                continue
            trace.append(v)
            if first is None and v.stops:
                first = v
        return first

    def mail(self, env, trace=None):
        return self.run(_checks()["MAIL_CHECKS"], env, trace)

    def rcpt(self, env, trace=None):
        return self.run(_checks()["RCPT_CHECKS"], env, trace)

    def tarpit(self, count, env):
        """Seconds to wait before answering the `count`-th RCPT of a transaction (0: none)."""
        limit = self.value("tarpitcount")
        if not limit or count <= limit or self.whitelisted:
            return 0
        delay = self.value("tarpitdelay")
        if not delay or env.relaying():
            return 0
        return delay

    # -- SPF (the qmail-spf patch; qmailpy.policy.spf)
    def spf_behavior(self):
        return self.value("spfbehavior") or 0

    def spf_mail(self, env):
        """(Verdict, SpfResult or None) at MAIL: SKIP when off or for clients that may relay."""
        behavior = self.spf_behavior()
        rule = where(self.setting("spfbehavior"))
        if not behavior:
            return Verdict("spf", SKIP, rule=rule, note="spfbehavior 0"), None
        why = env.relaying()
        if why is not None:
            return Verdict("spf", SKIP, rule=rule, note="client may relay (%s)" % why), None
        from qmailpy.policy import spf
        result = spf.evaluate(self, env)
        fields = {"spf": result.result, "domain": result.domain or "-"}
        if result.result == "error" and behavior >= 2:
            return Verdict("spf", TEMPFAIL, R.SPF_TEMPFAIL, rule, "error: %s" % result.error, fields=fields), result
        return Verdict("spf", ACCEPT, rule=rule, note=result.summary(), fields=fields), result

    def spf_rcpt(self, result):
        """The SPF refusal at RCPT for a result found at MAIL (spfbehavior 3..6), as a Verdict."""
        behavior = self.spf_behavior()
        rule = where(self.setting("spfbehavior"))
        if result is None:
            return Verdict("spf", SKIP, rule=rule, note="no SPF check for this transaction")
        lowest = SPF_REJECTS.get(result.result)
        if lowest is None or behavior < lowest:
            return Verdict("spf", ACCEPT, rule=rule, note="%s is not refused at spfbehavior %d" % (
                result.result, behavior))
        v = Verdict("spf", REFUSE, result.reject_reply(), rule, "%s refused at spfbehavior %d" % (
            result.result, behavior), fields={"spf": result.result, "domain": result.domain or "-"})
        if not self.whitelisted and self.value("quitasap"):
            v.quit = True
        return v
