"""qmail-qread: list the messages in the queue with their recipients, as qmail's qmail-qread.

The listing is qmailpy.queue.read's (also sendmail -bp's); --json gives the same as data.
"""
import os
import sys

import click

from qmailpy import paths
from qmailpy.exitcodes import EXIT_TROUBLE
from qmailpy.log import guard
from qmailpy.output import click_main, output
from qmailpy.queue.read import die_on_closed_pipe, listing


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--json", "as_json", is_flag=True, help="Print the messages as a JSON list.")
def cli(as_json):
    """List the messages in the queue of $QMAILHOME (default /var/qmail)."""
    home = paths.qmailhome(os.environ)
    die_on_closed_pipe()
    sys.exit(listing(home, output, lambda text: click.echo(text, err=True), as_json))


@guard("qmail-qread", EXIT_TROUBLE)
def main():
    return click_main(cli)
