"""qmail-qstat: how many messages are in the queue, and how many not yet preprocessed.

Counts the files under queue/mess/* and queue/todo/, as qmail's qmail-qstat
script does. Exit 0; 111 when the queue cannot be read.
"""
import json
import os
import sys

import click

from qmailpy import exitcodes as X, paths
from qmailpy.log import guard
from qmailpy.output import click_main, output


def count_files(directory, nested):
    """Files in directory (or in its subdirectories when nested)."""
    if not nested:
        return sum(1 for e in os.scandir(directory) if not e.is_dir(follow_symlinks=False))
    return sum(count_files(e.path, False) for e in os.scandir(directory) if e.is_dir(follow_symlinks=False))


def stats(home):
    """{'messages': N, 'unprocessed': M} for a qmail home; raises OSError."""
    return {"messages": count_files(paths.queue_path(home, "mess"), True),
            "unprocessed": count_files(paths.queue_path(home, "todo"), False)}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def cli(as_json):
    """Summarize the queue of $QMAILHOME (default /var/qmail)."""
    try:
        got = stats(paths.qmailhome(os.environ))
    except OSError as e:
        click.echo("qmail-qstat: fatal: unable to read the queue: %s" % e, err=True)
        sys.exit(X.EXIT_TROUBLE)
    if as_json:
        output(json.dumps(got))
        return
    output("messages in queue: %d" % got["messages"])
    output("messages in queue but not yet preprocessed: %d" % got["unprocessed"])


@guard("qmail-qstat", X.EXIT_TROUBLE)
def main():
    return click_main(cli)
