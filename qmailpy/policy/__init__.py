"""qmail-smtpd's anti-spam policy: pure decisions over controls, the client and DNS answers.

The policy reads nothing but the controls and the environment it is given
(qmailpy.ctl.reader.Controls, tcpserver's variables) and asks nothing but the
resolver it is given (qmailpy.dns.resolver.Resolver, a StaticResolver, or in a
session the answers its driver gave: qmailpy.smtpd.answers). qmail-policytest
drives a qmail-smtpd session (qmailpy.smtpd.session), so what the test tool
prints is what a session does.

Modules:
  engine    Policy: the checks of each SMTP stage in order, WHITELIST, quitasap,
            tarpit, and the SPF hooks
  lists     badmailfrom, badmailpatterns, blackholedsender, badrcptto,
            badrcptpatterns, badhelo, relaymailfrom (the pattern engine of
            qmailpy.ctl.patterns)
  dnscheck  mfdnscheck (+ nomfdnscheck), helodnscheck, badmailfrom-unknown, rblhosts
  spf       the qmail-spf patch (rc5) on top of pyspf: spfbehavior, spfrules,
            spfguess, spfexp; spfmacro (the macro expander), spfresult
            (Received-SPF, explanations)
  lookup    the resolver qmail-smtpd uses (bounded time-outs), existence tests,
            and StaticResolver (answers given as text, for qmail-policytest)
  relay     relay control: who may relay, rcpthosts, the relay verdict of a RCPT

Each check returns a Verdict. A session stops at the first REFUSE or
TEMPFAIL; qmail-policytest shows them all. Every module here is cheap to
import: dnspython and pyspf are imported only by the calls that need them,
so a session without DNS checks configured never loads them.
See docs/antispam.md, docs/dnschecks.md and docs/spf.md.
"""

ACCEPT, REFUSE, TEMPFAIL, SKIP = "accept", "refuse", "tempfail", "skip"


def where(setting):
    """Where a single-valued setting came from, for logs: 'control/NAME:1',
    'control/options:12', '$SPFBEHAVIOR' (environment) or 'default'."""
    if setting.source.startswith("$") or setting.source == "default":
        return setting.source
    return setting.origin()


class Verdict:
    """The outcome of one check.

    check   name of the check (the control it is named after, "spf", ...)
    status  ACCEPT, REFUSE, TEMPFAIL or SKIP (the check does not apply)
    reply   SMTP reply text for REFUSE/TEMPFAIL (may hold several CRLF-joined lines)
    rule    what decided: "control/badmailfrom:3", "$MFDNSCHECK", "control/rblhosts:2", ...
    note    a few words for people (qmail-policytest, logs)
    quit    the session ends after the reply (blackholedsender, quitasap)
    fields  extra key=value pairs for the log line (zone=, dns=, spf=, ...)
    logged  (event, fields): the log line of a refusal when it is not the anti-spam
            checks' `refused check=... rule=...` (relay control, chkuser); () for none
    """
    __slots__ = ("check", "status", "reply", "rule", "note", "quit", "fields", "logged")

    def __init__(self, check, status, reply=None, rule=None, note="", quit=False, fields=None, logged=None):
        self.check, self.status, self.reply, self.rule = check, status, reply, rule
        self.note, self.quit, self.fields, self.logged = note, quit, fields or {}, logged

    @property
    def stops(self):
        """Does this verdict end the command (a refusal or a temporary failure)?"""
        return self.status == REFUSE or self.status == TEMPFAIL

    def log_fields(self):
        out = {"check": self.check}
        if self.rule:
            out["rule"] = self.rule
        out.update(self.fields)
        return out

    def __repr__(self):
        return "Verdict(%r, %r, rule=%r, note=%r%s)" % (
            self.check, self.status, self.rule, self.note, ", quit=True" if self.quit else "")
