"""The DNS checks: mfdnscheck, helodnscheck, badmailfrom-unknown and rblhosts.

Answers are classified as qmail's dns.c does (qmailpy.dns.resolver): ok,
hard (the name or record does not exist) or soft (SERVFAIL, time-out, ...).
A hard answer may refuse; a soft one never does: the checks then answer
`451 DNS temporary failure (#4.3.0)` (mfdnscheck, helodnscheck,
badmailfrom-unknown) or, for a DNSBL, count the zone as not listing the
client (rblsmtpd's default, "fail open"), so a dead DNSBL cannot stop mail.
Every answer is cached for the session (Policy.cached).
"""
from qmailpy.dns.resolver import HARD, OK, SOFT
from qmailpy.policy import ACCEPT, REFUSE, SKIP, TEMPFAIL, Verdict, where
from qmailpy.policy import lookup
from qmailpy.policy.lists import nomfdnscheck, origin
from qmailpy.proto import replies as R
from qmailpy.proto.grammar import lower_ascii, split_address

RBL_TEXT_MAX = 200          # rblsmtpd keeps at most 200 characters of the TXT text


def _setting_rule(policy, name):
    return where(policy.setting(name))


def _exists(policy, name):
    key = ("exists", lower_ascii(name).rstrip("."))
    return policy.cached(key, lambda: lookup.exists(policy.resolver(), name))


def mfdnscheck(policy, env):
    """The MAIL FROM domain must have an MX or an address record."""
    name = "mfdnscheck"
    if not policy.value(name):
        return Verdict(name, SKIP, note="off")
    if not env.sender:
        return Verdict(name, SKIP, note="null sender")
    domain = split_address(env.sender)[1]
    if not domain:
        return Verdict(name, SKIP, note="sender without a domain")
    exempt = nomfdnscheck(policy, env.sender)
    if exempt is not None:
        return Verdict(name, ACCEPT, rule=exempt, note="exempt (nomfdnscheck)")
    if lookup.is_literal(domain):
        return Verdict(name, ACCEPT, note="address literal")
    if env.relaying():
        return Verdict(name, SKIP, note="client may relay (%s)" % env.relaying())
    got = _exists(policy, domain)
    rule = _setting_rule(policy, name)
    fields = {"sender": "<%s>" % env.sender, "dns": "%s:%s" % (got.status, got.reason or got.values[0])}
    if got.status == OK:
        return Verdict(name, ACCEPT, rule=rule, note="%s has %s" % (domain, got.values[0]))
    if got.status == HARD:
        return Verdict(name, REFUSE, R.MFDNS_HARD, rule, "%s: %s" % (domain, got.reason), fields=fields)
    return Verdict(name, TEMPFAIL, R.DNS_TEMPFAIL, rule, "%s: %s" % (domain, got.reason), fields=fields)


def helodnscheck(policy, env):
    """The HELO/EHLO name must have an MX or an address record (a HELO is then required)."""
    name = "helodnscheck"
    if not policy.value(name):
        return Verdict(name, SKIP, note="off")
    skip = policy.splithorizon_skip(env, name)
    if skip is not None:
        return skip
    rule = _setting_rule(policy, name)
    if not env.helo:
        return Verdict(name, REFUSE, R.BADHELO, rule, "no HELO/EHLO name given", fields={"helo": "none"})
    if lookup.is_literal(env.helo):
        return Verdict(name, ACCEPT, rule=rule, note="address literal")
    got = _exists(policy, env.helo)
    fields = {"helo": env.helo, "dns": "%s:%s" % (got.status, got.reason or got.values[0])}
    if got.status == OK:
        return Verdict(name, ACCEPT, rule=rule, note="%s has %s" % (env.helo, got.values[0]))
    if got.status == HARD:
        return Verdict(name, REFUSE, R.BADHELO, rule, "%s: %s" % (env.helo, got.reason), fields=fields)
    return Verdict(name, TEMPFAIL, R.DNS_TEMPFAIL, rule, "%s: %s" % (env.helo, got.reason), fields=fields)


def has_ptr(policy):
    """Answer about the client's reverse DNS: ok (TCPREMOTEHOST or a PTR record), hard or soft."""
    peer = policy.peer
    if peer.host and peer.host != "unknown":
        from qmailpy.dns.resolver import Answer
        return Answer(OK, [peer.host])
    return policy.cached(("ptr", peer.ip), lambda: policy.resolver().ptr(peer.ip))


def badmailfrom_unknown(policy, env):
    """Listed sender domains are refused when the client IP has no PTR record (qmail-ldap)."""
    name = "badmailfrom-unknown"
    if not env.sender:
        return Verdict(name, SKIP, note="null sender")
    matcher, setting = policy.compiled(name)
    if matcher is None:
        return Verdict(name, SKIP, note="no entries")
    m = matcher.matches(env.sender)
    if m is None:
        return Verdict(name, ACCEPT, rule=setting.source, note="address not listed")
    rule = origin(setting, m)
    if env.relaying():
        return Verdict(name, SKIP, rule=rule, note="client may relay (%s)" % env.relaying())
    ip = policy.peer.ip
    if ip == "unknown":
        return Verdict(name, SKIP, rule=rule, note="client IP unknown")
    got = has_ptr(policy)
    fields = {"sender": "<%s>" % env.sender, "ip": ip, "dns": "%s:%s" % (got.status, got.reason or "ptr")}
    if got.status == OK and got.values:
        return Verdict(name, ACCEPT, rule=rule, note="listed, and %s has reverse DNS (%s)" % (ip, got.values[0]))
    if got.status == SOFT:
        return Verdict(name, TEMPFAIL, R.DNS_TEMPFAIL, rule, "PTR lookup: %s" % got.reason, fields=fields)
    return Verdict(name, REFUSE, R.BMF_UNKNOWN.format(ip=ip), rule,
                   "listed as %r and %s has no PTR record" % (m.line, ip), fields=fields)


def clean_text(text):
    """rblsmtpd's treatment of a DNSBL text: 200 characters at most, non-printables as '?'."""
    text = text[:RBL_TEXT_MAX]
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def rblhosts(policy, env):
    """The reversed client IP under each zone of rblhosts, in order; an A record = listed."""
    name = "rblhosts"
    matcher, setting = policy.compiled(name)
    if matcher is None:
        return Verdict(name, SKIP, note="no entries")
    ip = policy.peer.ip
    labels = lookup.reverse_ip(ip)
    if labels is None:
        return Verdict(name, SKIP, note="client IP %s cannot be looked up" % ip)
    if env.relaying():
        return Verdict(name, SKIP, note="client may relay (%s)" % env.relaying())
    return policy.cached(("rbl", ip), lambda: _rbl(policy, setting, ip, labels))


def _rbl(policy, setting, ip, labels):
    resolver = policy.resolver()
    soft = []
    for zone, lineno in zip(setting.value, setting.linenos):
        zone = zone.strip().strip(".")
        if not zone:
            continue
        qname = labels + "." + zone
        got = resolver.a(qname)
        if got.status == SOFT:
            soft.append("%s:%s" % (zone, got.reason))
            continue
        if got.status != OK or not got.values:
            continue
        txt = resolver.txt(qname)
        text = " ".join(txt.values) if txt.status == OK and txt.values else ""
        text = clean_text(text) if text else R.RBL_DEFAULT_TEXT.format(ip=ip, zone=zone)
        rule = "%s:%d" % (setting.source, lineno)
        return Verdict("rblhosts", REFUSE, R.RBL_LISTED.format(text=text), rule,
                       "%s listed at %s (%s)" % (ip, zone, ", ".join(got.values)),
                       fields={"zone": zone, "ip": ip, "a": ",".join(got.values)})
    zones = ", ".join(z.strip(".") for z in setting.value)
    if soft:
        return Verdict("rblhosts", ACCEPT, rule=setting.source, note="%s not listed at %s; no answer from %s "
                       "(fail open)" % (ip, zones, ", ".join(soft)), fields={"dns": ",".join(soft)})
    return Verdict("rblhosts", ACCEPT, rule=setting.source, note="%s not listed at %s" % (ip, zones))
