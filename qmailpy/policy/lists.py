"""The list checks: an address or HELO name against a list control.

Literal lists (badmailfrom, badrcptto, relaymailfrom, nomfdnscheck,
badmailfrom-unknown) use qmail's constmap rules (whole address or '@domain',
ASCII case folded); pattern lists (badmailpatterns, badrcptpatterns, badhelo,
blackholedsender) the spamcontrol wildmat language with '!' exceptions
(qmailpy.ctl.patterns). badhelo asks its lines as whole names first, case
folded, as spamcontrol's bhelocheck (constmap, then wildmat) does. A hit names the deciding line as SOURCE:LINE, where
SOURCE is the control file or control/options the list came from.

The null sender <> is never matched by a sender list: bounces must flow,
and a pattern such as '*' would otherwise refuse every one of them.
"""
from qmailpy.policy import ACCEPT, REFUSE, SKIP, Verdict
from qmailpy.proto import replies as R


def origin(setting, match):
    """'control/NAME:LINE' (or 'control/options:LINE') of a matched entry."""
    return "%s:%d" % (setting.source, match.line_number)


def list_check(policy, name, value, reply, quit=False, what="address", literal=False):
    """The verdict of list control `name` on `value`; `literal`: a pattern list's lines are
    first asked as names, case folded (PatternList.literal), as spamcontrol's badhelo."""
    matcher, setting = policy.compiled(name)
    if matcher is None:
        return Verdict(name, SKIP, note="no entries")
    m = (literal and matcher.literal(value)) or matcher.matches(value)
    if m is None:
        return Verdict(name, ACCEPT, rule=setting.source, note="%s not listed" % what)
    rule = origin(setting, m)
    if m.exception:
        return Verdict(name, ACCEPT, rule=rule, note="excepted by %r" % m.line)
    return Verdict(name, REFUSE, reply, rule, note="listed as %r" % m.line, quit=quit)


def _sender(name, reply, quit=False):
    def check(policy, env):
        if not env.sender:
            return Verdict(name, SKIP, note="null sender")
        return list_check(policy, name, env.sender, reply, quit)
    check.__name__ = name
    return check


badmailfrom = _sender("badmailfrom", R.BADMAILFROM)
badmailpatterns = _sender("badmailpatterns", R.BADMAILFROM)
# blackholedsender: "the same as badmailpatterns but quits the session immediately
# even if quitasap is disabled" (H-Sphere): refused at MAIL with badmailfrom's reply.
blackholedsender = _sender("blackholedsender", R.BADMAILFROM, quit=True)


def badrcptto(policy, env):
    """The recipient as written, then each of its keys (policy.recipient_keys: the mailbox it will
    be delivered to, ...) against badrcptto: `bob@alias.example` is refused when bob@example.com is listed."""
    verdict = list_check(policy, "badrcptto", env.rcpt, R.BADRCPTTO)
    if verdict.status != ACCEPT:
        return verdict
    for key in policy.recipient_keys(env.rcpt):
        found = list_check(policy, "badrcptto", key, R.BADRCPTTO)
        if found.status == REFUSE:
            found.note += " (delivered as <%s>)" % key
            return found
    return verdict


def badrcptpatterns(policy, env):
    return list_check(policy, "badrcptpatterns", env.rcpt, R.BADRCPTTO)


def badhelo(policy, env):
    if env.helo is None:
        return Verdict("badhelo", SKIP, note="no HELO/EHLO given")
    if policy.compiled("badhelo")[0] is None:
        return Verdict("badhelo", SKIP, note="no entries")
    skip = policy.splithorizon_skip(env, "badhelo")
    if skip is not None:
        return skip
    return list_check(policy, "badhelo", env.helo, R.BADHELO, what="HELO name", literal=True)


def relaymailfrom(policy, sender):
    """The deciding 'control/relaymailfrom:LINE' when `sender` may relay, else None."""
    if not sender:
        return None
    matcher, setting = policy.compiled("relaymailfrom")
    m = matcher.matches(sender) if matcher is not None else None
    return origin(setting, m) if m is not None else None


def nomfdnscheck(policy, sender):
    """The deciding 'control/nomfdnscheck:LINE' when `sender` is exempt from mfdnscheck, else None."""
    matcher, setting = policy.compiled("nomfdnscheck")
    m = matcher.matches(sender) if matcher is not None else None
    return origin(setting, m) if m is not None else None
