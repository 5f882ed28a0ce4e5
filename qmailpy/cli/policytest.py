"""qmail-policytest: what would qmail-smtpd's anti-spam policy say to this client?

    qmail-policytest --ip 192.0.2.7 --helo mail.example.com --from a@example.com \\
        --rcpt b@example.org [--rcpt ...] [--host NAME] [--auth USER] [--env VAR=value ...] \\
        [--dns 'NAME TYPE VALUE' ... | --answers FILE]

Runs the checks of qmailpy.policy -- the code qmail-smtpd runs -- against the
controls of $QMAILHOME (default /var/qmail) and prints, for MAIL and each
RCPT, every check in order with its verdict, the control line (or DNS zone,
or SPF result) that decided, and the reply a session would give. DNS is live
($DNSCACHEIP, $DNSTIMEOUT, else /etc/resolv.conf) unless answers are given
with --dns / --answers (then every other name does not exist).

The client's environment is what tcpserver and tcprules would give qmail-smtpd:
TCPREMOTEIP (--ip), TCPREMOTEHOST (--host), TCPLOCALIP/TCPLOCALHOST (--local-ip,
--local-host) and each --env VAR=value (RELAYCLIENT, WHITELIST, SPFBEHAVIOR,
MFDNSCHECK, TARPITCOUNT, ...); nothing else of the caller's environment is used.

Exit status: 0 every recipient would be accepted, 1 something is refused,
3 nothing refused but a temporary failure (4xx), 2 usage errors, 111 the
controls cannot be read. See docs/qmail-policytest.md.
"""
import os
import sys
import time

import click

from qmailpy import paths
from qmailpy.ctl.reader import ControlError, Controls
from qmailpy.policy import SKIP, Verdict, where
from qmailpy.policy.engine import Envelope
from qmailpy.proto import replies as R

EXIT_OK, EXIT_REFUSED, EXIT_TEMPFAIL = 0, 1, 3
PASSED_ON = ("DNSCACHEIP", "DNSTIMEOUT")


def client_environ(ip, host, local_ip, local_host, pairs):
    env = {"TCPREMOTEIP": ip, "TCPLOCALIP": local_ip, "PROTO": "TCP"}
    if host:
        env["TCPREMOTEHOST"] = host
    if local_host:
        env["TCPLOCALHOST"] = local_host
    for name in PASSED_ON:
        if name in os.environ:
            env[name] = os.environ[name]
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not name:
            raise click.BadParameter("not VAR=value: %r" % pair, param_hint="--env")
        env[name] = value
    return env


class Report:
    """Prints verdicts; remembers the worst outcome for the exit status."""

    def __init__(self, echo):
        self.echo = echo
        self.refused = self.deferred = False

    @property
    def status(self):
        return EXIT_REFUSED if self.refused else EXIT_TEMPFAIL if self.deferred else EXIT_OK

    def verdict(self, v, after=False):
        note = v.note + (" [not reached in a session]" if after else "")
        self.echo("  %-20s %-8s %-36s %s" % (v.check, v.status, v.rule or "-", note))

    def trace(self, verdicts):
        """Every verdict; the first one that stops the command decides. That one, or None."""
        decided = None
        for v in verdicts:
            if decided is None:
                self.verdict(v)
                if v.stops:
                    decided = v
            else:
                self.verdict(v, after=True)
        return decided

    def answer(self, reply, decided=None):
        for line in reply.split("\r\n"):
            self.echo("  => " + line)
        if reply[:1] == "5":
            self.refused = True
        elif reply[:1] == "4":
            self.deferred = True
        if decided is not None and decided.quit:
            self.echo("  => the session ends here (%s)" % (
                "blackholedsender" if decided.check == "blackholedsender" else "quitasap"))


def run(home, env, helo, sender, rcpts, auth_user, resolver, echo):
    """The whole test; the exit status."""
    from qmailpy.smtpd.config import SmtpdConfig
    from qmailpy.smtpd.relay import POP_UNKNOWN, rcpthosts_ok, relay_reason
    controls = Controls(home, env)
    cfg = SmtpdConfig(controls, env)
    policy = cfg.policy
    if resolver is not None:
        policy.use_resolver(resolver)

    def users():
        from qmailpy.users import open_users
        return open_users(home, controls)
    policy.use_mailboxes(users)                 # badrcptto's recipient keys, as qmail-smtpd has them
    report = Report(echo)
    started = time.time()
    pop_answer = []

    def pop():
        if not pop_answer:
            from qmailpy.users import UsersUnavailable, open_users
            try:
                pop_answer.append(open_users(home, controls).relay_allowed(cfg.peer.ip, started, cfg.pop_window))
            except UsersUnavailable:
                pop_answer.append(None)
        return pop_answer[0]

    memo = []

    def relaying():
        if not memo:
            reason = relay_reason(cfg, None, auth_user, pop)
            memo.append(None if reason == POP_UNKNOWN else reason)
        return memo[0]

    echo("client %s host=%s helo=%s%s home=%s" % (
        cfg.peer.ip, cfg.peer.host, helo if helo is not None else "(none)",
        " auth=%s" % auth_user if auth_user else "", home))
    if policy.whitelisted:
        echo("WHITELIST is set: the anti-spam checks are skipped")
    for f in controls.findings:
        echo("warning: %s" % f)

    # MAIL
    echo("MAIL FROM:<%s>" % sender)
    env_mail = Envelope(helo, sender, None, auth_user, relaying)
    trace = []
    policy.mail(env_mail, trace)
    spf_verdict, spf = policy.spf_mail(env_mail, cfg.relayclient)
    trace.append(spf_verdict)
    decided = report.trace(trace)
    if spf is not None:
        echo("  " + spf.header().rstrip("\n"))
    if decided is not None:
        report.answer(decided.reply, decided)
        return report.status
    report.answer(R.OK)

    # RCPT
    for count, rcpt in enumerate(rcpts, 1):
        echo("RCPT TO:<%s>" % rcpt)
        trace = []
        policy.rcpt(Envelope(helo, sender, rcpt, auth_user, relaying), trace)
        trace.append(policy.spf_rcpt(spf) if spf is not None else Verdict(
            "spf", SKIP, rule=where(policy.setting("spfbehavior")), note="no SPF result for this transaction"))
        trace.append(relay_verdict(cfg, sender, rcpt, auth_user, pop, rcpthosts_ok, relay_reason, POP_UNKNOWN))
        decided = report.trace(trace)
        delay = policy.tarpit(count, Envelope(helo, sender, None, auth_user, relaying))
        if delay:
            echo("  tarpit: this reply waits %d s (RCPT %d > tarpitcount %d)" % (
                delay, count, policy.value("tarpitcount")))
        if decided is not None:
            report.answer(decided.reply, decided)
            if decided.quit:
                return report.status
        else:
            report.answer(R.OK)
    return report.status


def relay_verdict(cfg, sender, rcpt, auth_user, pop, rcpthosts_ok, relay_reason, pop_unknown):
    """qmail-smtpd's relay control for one recipient, as a Verdict (after the policy's checks)."""
    from qmailpy.policy import ACCEPT, REFUSE, TEMPFAIL
    local = rcpthosts_ok(cfg, rcpt)
    reason = None if local and cfg.relayclient is None else relay_reason(cfg, sender, auth_user, pop)
    if reason == pop_unknown:
        return Verdict("relay", TEMPFAIL, R.USERS_TEMPFAIL, "popbeforesmtp", "users database unavailable")
    if reason is None and not local:
        return Verdict("relay", REFUSE, R.NOT_RCPTHOSTS, "control/rcpthosts", "not one of our domains")
    if local and reason is None:
        return Verdict("relay", ACCEPT, rule="control/rcpthosts" if cfg.rcpthosts is not None else None,
                       note="one of our domains" if cfg.rcpthosts is not None else "no rcpthosts: any domain")
    return Verdict("relay", ACCEPT, note="the client may relay (%s)" % reason)


def load_resolver(dns_lines, answers):
    if not dns_lines and not answers:
        return None
    from qmailpy.policy.lookup import StaticResolver
    resolver = StaticResolver()
    lines = list(dns_lines)
    if answers:
        with open(answers, encoding="utf-8") as f:
            lines += [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    for line in lines:
        try:
            resolver.add_line(line)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--dns/--answers")
    return resolver


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--ip", required=True, help="The client's IP address (TCPREMOTEIP).")
@click.option("--host", default=None, help="The client's host name as tcpserver found it (TCPREMOTEHOST).")
@click.option("--helo", default=None, help="The HELO/EHLO name (none: the client never greets).")
@click.option("--from", "sender", required=True, help="The MAIL FROM address ('' for the null sender).")
@click.option("--rcpt", "rcpts", multiple=True, help="A RCPT TO address; repeat for more.")
@click.option("--auth", "auth_user", default=None, help="Pretend the client authenticated as USER.")
@click.option("--env", "pairs", multiple=True, help="VAR=value as tcprules would set it; repeat for more.")
@click.option("--local-ip", default="127.0.0.1", show_default=True, help="TCPLOCALIP.")
@click.option("--local-host", default=None, help="TCPLOCALHOST (the receiver in SPF texts); default: control/me.")
@click.option("--dns", "dns_lines", multiple=True, metavar="'NAME TYPE VALUE'",
              help="A DNS answer to use instead of live DNS (NAME SERVFAIL/TIMEOUT for failures); repeat.")
@click.option("--answers", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A file of 'NAME TYPE VALUE' lines, as --dns.")
def cli(ip, host, helo, sender, rcpts, auth_user, pairs, local_ip, local_host, dns_lines, answers):
    """Show what qmail-smtpd's anti-spam policy decides for one client and envelope."""
    home = paths.qmailhome(os.environ)
    try:
        if local_host is None:
            local_host = Controls(home).value("me")
        env = client_environ(ip, host, local_ip, local_host, pairs)
        resolver = load_resolver(dns_lines, answers)
        status = run(home, env, helo, sender, rcpts, auth_user, resolver, click.echo)
    except ControlError as e:
        click.echo("qmail-policytest: %s" % e, err=True)
        sys.exit(111)
    sys.exit(status)


def main():
    return cli()


if __name__ == "__main__":
    main()
