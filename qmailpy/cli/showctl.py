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
            click.echo(str(f))
        sys.exit(1 if findings else 0)
    if as_json:
        click.echo(json.dumps(show.as_json(controls), indent=1))
        return
    for c in R.CONTROLS:
        try:
            lines = show.render(controls.setting(c.name))
        except ControlError as e:
            lines = ["%s: (Oops! Trouble reading this file: %s)" % (c.name, e)]
        click.echo("\n".join(lines))
    for f in controls.findings:
        click.echo("qmail-showctl: warning: %s" % f, err=True)


def checks(home, controls):
    """show.check()'s findings about the control files, then where postmaster's mail goes."""
    from qmailpy.spawn import reach
    findings = show.check(controls)
    try:
        findings += reach.findings(home, controls)
    except ControlError as e:        # a control the route needs cannot be read: show.check named it
        findings.append(Finding("control", 0, "cannot follow postmaster's route: %s" % e))
    return findings


def main():
    return cli()
