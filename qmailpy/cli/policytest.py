"""qmail-policytest: what would qmail-smtpd decide for this client and envelope, and why?

    qmail-policytest --ip 192.0.2.7 --helo mail.example.com --from a@example.com \\
        --rcpt b@example.org [--rcpt ...] [--host NAME] [--auth USER] [--env VAR=value ...] \\
        [--tcprules FILE | --no-tcprules] [--dns 'NAME TYPE VALUE' ... | --answers FILE]

It runs a qmail-smtpd session (qmailpy.smtpd.session, the object qmail-smtpd
drives) against the controls of $QMAILHOME (default /var/qmail): HELO, MAIL
and each RCPT, with the session's trace on, and prints for MAIL and each RCPT
every check in order (anti-spam, SPF, relay control, SRS, chkuser,
maxrecepients) with its verdict, the control line (or DNS zone, or SPF result)
that decided, and the reply the session gives. DNS is live ($DNSCACHEIP,
$DNSTIMEOUT, else /etc/resolv.conf) unless answers are given with --dns /
--answers (then every other name does not exist); the users database is the
home's.

The client's environment is what tcpserver would give qmail-smtpd: TCPREMOTEIP
(--ip, an IPv6 one spelled as qmail-tcpserver spells it), TCPREMOTEHOST (--host), TCPLOCALIP/TCPLOCALHOST (--local-ip,
--local-host), then the variables of the rule tcpserver -x applies to the
client (control/tcp.smtp.cdb, as the installed run script has it, or
--tcprules), then each --env VAR=value; nothing else of the caller's
environment is used. A rule that denies the client ends the test: tcpserver
would drop the connection.

Exit status: 0 every recipient would be accepted, 1 something is refused (or
tcprules denies the client), 3 nothing refused but a temporary failure (4xx),
2 usage errors, 111 the controls (or the tcprules cdb) cannot be read.
See docs/qmail-policytest.md.
"""
import os
import sys
import time

import click

from qmailpy import exitcodes as X, paths
from qmailpy.ctl.reader import ControlError, Controls
from qmailpy.log import guard
from qmailpy.output import click_main
from qmailpy.smtpd import actions as A

EXIT_OK, EXIT_REFUSED, EXIT_TEMPFAIL = 0, 1, 3
PASSED_ON = ("DNSCACHEIP", "DNSTIMEOUT")
TCPRULES = "control/tcp.smtp.cdb"


def client_environ(ip, host, local_ip, local_host, rule_env, pairs):
    """qmail-smtpd's environment as tcpserver makes it, then the rule's variables, then --env."""
    env = {"PROTO": "TCP6" if ":" in ip else "TCP", "TCPREMOTEIP": ip, "TCPLOCALIP": local_ip,
           "TCPLOCALPORT": "25"}
    if host:
        env["TCPREMOTEHOST"] = host
    if local_host:
        env["TCPLOCALHOST"] = local_host
    for name in PASSED_ON:
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(rule_env)
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not name:
            raise click.BadParameter("not VAR=value: %r" % pair, param_hint="--env")
        env[name] = value
    return env


def tcprules(path, shown, ip, host):
    """(key, 'allow'|'deny', variables) of the rule tcpserver -x `path` applies, None without
    one; 'none' when there is no such file."""
    from qmailpy.ctl.cdbmap import open_cdb, tcprules_lookup
    db = open_cdb(path, shown)
    if db is None:
        return "none"
    try:
        return tcprules_lookup(db, ip, host)
    finally:
        db.close()


class Driver:
    """Performs a traced session's actions: DNS from `resolver` (made on first use by
    `make_resolver`), questions to the home's users database; collects what one command
    gave (its Verdicts, the tarpit's Sleep, the reply bytes)."""

    def __init__(self, session, make_resolver, open_users):
        self.session, self.make_resolver, self.open_users = session, make_resolver, open_users
        self.resolver = self.users = None

    def _users(self):
        if self.users is None:
            self.users = self.open_users()
        return self.users

    def command(self, line=None):
        """Feed one command line (None: just start); (verdict events, tarpit seconds, reply text)."""
        from qmailpy.smtpd.answers import answer_lookup, answer_users
        session = self.session
        if line is not None:
            session.receive(line.encode("utf-8", "surrogateescape") + b"\r\n")
        events, tarpit, replies = [], 0, []
        while True:
            action = session.next_action()
            if action is A.NEED_DATA or action is A.CLOSED:
                return events, tarpit, b"".join(replies).decode("utf-8", "surrogateescape").rstrip("\r\n")
            kind = type(action)
            if kind is A.Send:
                replies.append(action.data)
            elif kind is A.Verdicts:
                events.append(action)
            elif kind is A.Sleep:
                tarpit += action.seconds
            elif kind is A.Lookup:
                if self.resolver is None:
                    self.resolver = self.make_resolver()
                session.answer(answer_lookup(self.resolver, action))
            elif kind is A.AskUsers:
                session.answer(answer_users(self._users, action))
            elif action.question:
                raise RuntimeError("qmail-policytest cannot answer %r" % action)


class Report:
    """Prints what each command gave; remembers the worst reply for the exit status."""

    def __init__(self, echo):
        self.echo = echo
        self.refused = self.deferred = False

    @property
    def status(self):
        return EXIT_REFUSED if self.refused else EXIT_TEMPFAIL if self.deferred else EXIT_OK

    def command(self, got, tarpit_note=None):
        """Print one command's verdicts, notes and reply; True when the session goes on."""
        events, tarpit, reply = got
        decided = None
        for event in events:
            after = False
            for v in event.verdicts:
                note = v.note + (" [not reached in a session]" if after else "")
                self.echo("  %-20s %-8s %-36s %s" % (v.check, v.status, v.rule or "-", note))
                after = after or v is event.decided
            if event.spf is not None:
                self.echo("  " + event.spf.header().rstrip("\n"))
            decided = event.decided or decided
        if tarpit and tarpit_note:
            self.echo("  tarpit: this reply waits %d s (%s)" % (tarpit, tarpit_note))
        for line in reply.split("\r\n"):
            self.echo("  => " + line)
        if reply[:1] == "5":
            self.refused = True
        elif reply[:1] == "4":
            self.deferred = True
        if decided is not None and decided.quit:
            self.echo("  => the session ends here (%s)" % (
                "blackholedsender" if decided.check == "blackholedsender" else "quitasap"))
            return False
        return reply[:1] == "2"


def run(home, env, helo, sender, rcpts, auth_user, resolver, echo, notes=()):
    """The whole test; the exit status. `notes` are printed after the client line."""
    from qmailpy.smtpd.config import SmtpdConfig
    from qmailpy.smtpd.session import Session
    controls = Controls(home, env)
    cfg = SmtpdConfig(controls, env)

    def make_resolver():
        if resolver is not None:
            return resolver
        from qmailpy.policy.lookup import smtpd_resolver
        return smtpd_resolver(env)

    def open_users():
        """The questions qmail-smtpd asks, answered from the database in this process (an
        administrator's tool: the users service answers qmail-smtpd's user alone)."""
        from qmailpy.users import open_users
        from qmailpy.users.answers import Answers
        return Answers(lambda: open_users(home, controls), controls)

    session = Session(cfg, time.time, os.getpid(), trace=True)
    driver, report = Driver(session, make_resolver, open_users), Report(echo)
    echo("client %s host=%s helo=%s%s home=%s" % (
        cfg.peer.ip, cfg.peer.host, helo if helo is not None else "(none)",
        " auth=%s" % auth_user if auth_user else "", home))
    for note in notes:
        echo(note)
    if cfg.policy.whitelisted:
        echo("WHITELIST is set: the anti-spam checks are skipped")
    for f in controls.findings:
        echo("warning: %s" % f)
    driver.command()                        # the greeting
    if auth_user:
        session.assume_auth(auth_user)
    if helo is not None:
        driver.command("HELO " + helo)
    echo("MAIL FROM:<%s>" % sender)
    if not report.command(driver.command("MAIL FROM:<%s>" % sender)):
        return report.status
    tarpitcount = cfg.policy.value("tarpitcount")
    for count, rcpt in enumerate(rcpts, 1):
        echo("RCPT TO:<%s>" % rcpt)
        note = "RCPT %d > tarpitcount %d" % (count, tarpitcount or 0)
        if not report.command(driver.command("RCPT TO:<%s>" % rcpt), note) and session.closed:
            break
    return report.status


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


def one_line(value, hint):
    """A value that goes into a command line: no CR, LF or NUL (usage error otherwise)."""
    if value is not None and any(c in value for c in "\r\n\0"):
        raise click.BadParameter("CR, LF or NUL in %r" % value, param_hint=hint)
    return value


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--ip", required=True, help="The client's IP address (TCPREMOTEIP).")
@click.option("--host", default=None, help="The client's host name as tcpserver found it (TCPREMOTEHOST).")
@click.option("--helo", default=None, help="The HELO name (none: the client never greets).")
@click.option("--from", "sender", required=True, help="The MAIL FROM address ('' for the null sender).")
@click.option("--rcpt", "rcpts", multiple=True, help="A RCPT TO address; repeat for more.")
@click.option("--auth", "auth_user", default=None, help="Pretend the client authenticated as USER.")
@click.option("--env", "pairs", multiple=True, help="VAR=value as tcprules would set it; repeat for more.")
@click.option("--local-ip", default="127.0.0.1", show_default=True, help="TCPLOCALIP.")
@click.option("--local-host", default=None, help="TCPLOCALHOST (the receiver in SPF texts); default: control/me.")
@click.option("--tcprules", "rules", type=click.Path(dir_okay=False), default=None,
              help="The tcprules cdb tcpserver -x reads (default: %s of the home, if there)." % TCPRULES)
@click.option("--no-tcprules", is_flag=True, help="Apply no tcprules cdb.")
@click.option("--dns", "dns_lines", multiple=True, metavar="'NAME TYPE VALUE'",
              help="A DNS answer to use instead of live DNS (NAME SERVFAIL/TIMEOUT for failures); repeat.")
@click.option("--answers", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A file of 'NAME TYPE VALUE' lines, as --dns.")
def cli(ip, host, helo, sender, rcpts, auth_user, pairs, local_ip, local_host, rules, no_tcprules,
        dns_lines, answers):
    """Show what qmail-smtpd decides for one client and envelope, check by check."""
    from qmailpy.tcpserver.child import client_text
    home = paths.qmailhome(os.environ)
    ip = client_text(ip)        # as qmail-tcpserver has it: its rules keys, TCPREMOTEIP
    one_line(helo, "--helo")
    one_line(sender, "--from")
    for rcpt in rcpts:
        one_line(rcpt, "--rcpt")
    try:
        if local_host is None:
            local_host = Controls(home).value("me")
        rule, shown = "none", rules or TCPRULES
        if not no_tcprules:
            rule = tcprules(rules or os.path.join(home, TCPRULES), shown, ip, host)
            if rule == "none" and rules:
                raise ControlError(shown, 0, "no such file")
        env = client_environ(ip, host, local_ip, local_host, rule[2] if isinstance(rule, tuple) else {}, pairs)
        resolver = load_resolver(dns_lines, answers)
        if isinstance(rule, tuple) and rule[1] == "deny":
            click.echo("tcprules: %s: rule %r denies %s: tcpserver drops the connection" % (shown, rule[0], ip))
            sys.exit(EXIT_REFUSED)
        notes = []
        if isinstance(rule, tuple):
            notes.append("tcprules: %s: rule %r allows: %s" % (shown, rule[0], " ".join(
                "%s=%r" % kv for kv in sorted(rule[2].items())) or "no variables"))
        elif rule is None:
            notes.append("tcprules: %s: no rule for %s (allowed, no variables)" % (shown, ip))
        status = run(home, env, helo, sender, rcpts, auth_user, resolver, click.echo, notes)
    except ControlError as e:
        click.echo("qmail-policytest: %s" % e, err=True)
        sys.exit(X.EXIT_TROUBLE)
    sys.exit(status)


@guard("qmail-policytest", X.EXIT_TROUBLE)
def main():
    return click_main(cli)


if __name__ == "__main__":
    main()
