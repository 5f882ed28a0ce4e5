"""qmail-config: qmail's config-fast step (docs/qmail-config.md)."""
import os
import sys

import click

from qmailpy import exitcodes as X, paths
from qmailpy.cli.qmailtool import missing_control_directory, os_text
from qmailpy.install import config
from qmailpy.log import guard
from qmailpy.output import click_main, output


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("fqdn")
@click.option("--force", "mode", flag_value=config.FORCE,
              help="Replace me, defaultdomain and plusdomain; add FQDN to locals and rcpthosts.")
@click.option("--missing", "mode", flag_value=config.MISSING, help="Write only the files that are absent.")
def cli(fqdn, mode):
    """Write control/me, defaultdomain, plusdomain, locals and rcpthosts of $QMAILHOME
    (default /var/qmail) for the host name FQDN, as qmail's config-fast does.

    Refuses (exit 1, nothing written) when any of them is there already,
    unless --force or --missing is given.
    """
    home = paths.qmailhome(os.environ)
    missing = missing_control_directory(home)
    if missing is not None:
        click.echo("qmail-config: %s" % (missing or "no %s: install the qmail home first"
                                          % paths.control_path(home, "")), err=True)
        sys.exit(X.EXIT_TROUBLE)
    try:
        output("Your fully qualified host name is %s." % config.check_name(fqdn))
        lines = config.configure(home, fqdn, mode or config.REFUSE)
    except config.ConfigError as e:
        click.echo("qmail-config: %s" % e, err=True)
        sys.exit(1)
    except OSError as e:
        click.echo("qmail-config: %s" % os_text(e), err=True)
        sys.exit(X.EXIT_TROUBLE)
    for line in lines:
        output(line)


@guard("qmail-config", X.EXIT_TROUBLE)
def main():
    return click_main(cli, prog_name="qmail-config")
