"""qmail-showctl: print every control parameter of a qmail home, or check them."""
import json
import os
import sys

import click

from qmailpy import paths
from qmailpy.ctl import registry as R
from qmailpy.ctl import show
from qmailpy.ctl.options import Finding
from qmailpy.ctl.reader import ControlError, Controls
from qmailpy.exitcodes import EXIT_TROUBLE
from qmailpy.log import guard
from qmailpy.output import click_main, output


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--check", is_flag=True,
              help="Report unknown or malformed control files and options lines, an open relay, and a postmaster "
                   "or double-bounce address that reaches no mailbox; exit 1 if any.")
@click.option("--json", "as_json", is_flag=True, help="Print the parameters as JSON.")
def cli(check, as_json):
    """Show the control parameters of $QMAILHOME (default /var/qmail).

    Each line is `name: value`, or `name: (Default.) value` when no control
    file (nor control/options) sets it; list entries follow, indented.
    """
    home = paths.qmailhome(os.environ)
    controls = Controls(home)
    if check:
        findings = checks(home, controls)
        for f in findings:
            output(str(f))
        sys.exit(1 if findings else 0)
    if as_json:
        output(json.dumps(show.as_json(controls), indent=1))
        return
    for c in R.CONTROLS:
        try:
            lines = show.render(controls.setting(c.name))
        except ControlError as e:
            lines = ["%s: (Oops! Trouble reading this file: %s)" % (c.name, e)]
        output("\n".join(lines))
    for f in controls.findings:
        click.echo("qmail-showctl: warning: %s" % f, err=True)


def checks(home, controls):
    """show.check()'s findings about the control files, what the programs' own rules refuse,
    then where postmaster's mail goes."""
    from qmailpy.spawn import reach
    findings = show.check(controls)
    findings += program_findings(controls)
    try:
        findings += reach.findings(home, controls)
    except ControlError as e:        # a control the route needs cannot be read: show.check named it
        findings.append(Finding("control", 0, "cannot follow postmaster's route: %s" % e))
    return findings


FILTERED = "qmail-queue refuses the mail it would filter (exit 55)"


def program_findings(controls):
    """Controls a program parses with a rule of its own before it uses them, asked with that rule
    (its one home is the program's module), so that --check refuses what the programs refuse:
    outgoingip (qmail-remote: Z, every delivery), an smtproutes port qmail-remote reads otherwise
    than written (qmail's scan_ulong: it connects there), an smtproutes or tlsdestinations key that is
no valid IDN (it matches no host), clamdsocket and spamdsocket (qmail-queue's
    filters: exit 55), the cipher lists and PEM files of qmail-remote (Z) and of qmail-smtpd
    (STARTTLS gets 454; a servercert.pem or dh2048.pem show.check finds unusable is
    reported there), a relayclients line no client address can match (qmail-smtpd's
    IPPrefixList: it lets nobody relay), a badmailpatterns-style line no string can match
    (qmail-smtpd's PatternList: an unclosed '[' or a final backslash). A control that cannot
    be read at all is show.check's finding already."""
    found = []
    for ask in (_outgoingip, _smtproutes, _tlsdestinations, _filter_socket("clamdsocket"), _filter_socket("spamdsocket"),
                _remote_tls, _smtpd_tls, _relayclients, _patterns):
        try:
            found += ask(controls)
        except ControlError:
            pass                    # unreadable: show.check named it
    return found


def _outgoingip(controls):
    from qmailpy.remote.connect import source_address
    s = controls.setting("outgoingip")
    try:
        source_address(s.value or "")
    except ValueError as e:
        return [s.finding("%s: qmail-remote defers every delivery" % e)]
    return []


def _smtproutes(controls):
    from qmailpy.remote.routes import key_problem, port_problem
    s = controls.setting("smtproutes")
    found = []
    for i, line in enumerate(s.value or ()):
        key, colon, spec = line.encode("utf-8", "surrogateescape").partition(b":")
        if not colon:
            continue
        why = port_problem(spec)
        if why is not None:
            found.append(_line_finding(s, i, "%s: qmail-remote connects there" % why))
        why = key_problem(key)
        if why is not None:
            found.append(_line_finding(s, i, "%s: qmail-remote routes no host by it" % why))
    return found


def _tlsdestinations(controls):
    from qmailpy.remote.routes import key_problem
    from qmailpy.remote.tls import destination
    s = controls.setting("tlsdestinations")
    found = []
    for i, line in enumerate(s.value or ()):
        why = key_problem(destination(line)[1])
        if why is not None:
            found.append(_line_finding(s, i, "%s: qmail-remote applies it to no host" % why))
    return found


def _relayclients(controls):
    """relayclients lines qmail-smtpd's IPPrefixList can match with no client address."""
    from qmailpy.ctl.patterns import IPPrefixList
    s = controls.setting("relayclients")
    if not s.value:
        return []
    dead = set(IPPrefixList(s.value, range(len(s.value))).malformed)
    return [_line_finding(s, i, "no IP address or prefix ('192.0.2.7', '192.168.1.', '2001:db8::'): "
                                "qmail-smtpd lets no client relay by it") for i in sorted(dead)]


def _patterns(controls):
    """Lines of the pattern lists (badmailpatterns, badrcptpatterns, badhelo, blackholedsender)
    that qmail-smtpd's PatternList compiles to nothing: wildmat matches no string by them."""
    from qmailpy.ctl.patterns import PatternList
    found = []
    for c in R.CONTROLS:
        if c.kind != R.PATTERNS:
            continue
        try:
            s = controls.setting(c.name)
        except ControlError:
            continue                # unreadable: show.check named it
        if s.value:
            for i in PatternList(s.value, range(len(s.value))).malformed:
                found.append(_line_finding(s, i, "an unclosed '[' or a final backslash: "
                                                 "qmail-smtpd's wildmat matches nothing by it"))
    return found


def _line_finding(s, i, why):
    """A Finding about entry i of setting s, with its line number and the line itself."""
    lineno = s.linenos[i] if i < len(s.linenos) else 0
    return Finding(s.source, lineno, "%s: %s" % (s.value[i], why))


def _filter_socket(name):
    def ask(controls):
        from qmailpy.exitcodes import QueueError
        from qmailpy.filters.net import parse_address
        s = controls.setting(name)
        try:
            parse_address(s.value, name)
        except QueueError as e:         # its reason is "NAME: why"
            return [s.finding("%s: %s" % (e.reason[len(name) + 2:], FILTERED))]
        return []
    return ask


def _remote_tls(controls):
    from qmailpy.remote.tls import client_context, parse_destinations
    tries = [({"tlsclientciphers": controls.value("tlsclientciphers"),
               "clientcert": controls.value("clientcert.pem")}, False, None)]
    tries += [({}, True, p.cafile) for p in parse_destinations(controls.value("tlsdestinations")).values()
              if p.cafile]
    found = []
    for settings, verify, cafile in tries:
        try:
            client_context(settings, verify, cafile)
        except ControlError as e:
            found.append(e.finding())
    return found


def _smtpd_tls(controls):
    from qmailpy.ctl import pem
    from qmailpy.smtpd.tls import TlsUnavailable, server_context
    cert = controls.value("servercert.pem")
    if cert is None or pem.problem(cert, controls.value("dh2048.pem")) is not None:
        return []
    try:
        server_context(controls)
    except TlsUnavailable as e:
        return [Finding(e.where, e.lineno, e.reason + ": qmail-smtpd answers STARTTLS with 454")]
    return []


@guard("qmail-showctl", EXIT_TROUBLE)
def main():
    return click_main(cli)
