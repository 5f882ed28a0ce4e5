"""qmail-newfilters: build control/clamavclients.cdb and control/spamdclients.cdb.

Like qmail-newmrh: control/clamavclients and control/spamdclients are text
files with one key a line, an address (user@domain) or @domain for a whole
mail domain; blank lines and lines starting with '#' are skipped, keys are
lower-cased. Each cdb is written to a temporary file beside NAME.cdb, fsynced
and renamed over it, so qmail-queue sees the old or the new database, never half of one.
A missing text file leaves its cdb as it is (empty the file to filter nobody).
Run it after changing either file. Exit 111 on trouble, as qmail's tools.
"""
import os
import sys

import click

from qmailpy import exitcodes as X, paths
from qmailpy.log import guard
from qmailpy.output import click_main

LISTS = ("clamavclients", "spamdclients")
FATAL = "qmail-newfilters: fatal: "


def read_keys(path):
    """The keys of one text file (bytes, lower-cased, in file order, no duplicates); OSError
    naming `path` (FileNotFoundError when it is absent)."""
    from qmailpy.fileio import read_file
    data = read_file(path)
    keys, seen = [], set()
    for n, raw in enumerate(data.split(b"\n"), 1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        if len(line.split()) != 1:
            raise ValueError("%s:%d: one address or @domain a line: %r" % (path, n, line.decode("utf-8", "replace")))
        key = line.lower()
        if key not in seen:
            seen.add(key)
            keys.append(key)
    return keys


def build(home, names=LISTS):
    """Build each named cdb whose text file exists: [(name, number of keys)]; the cdb is replaced
    atomically and durably (qmailtool.write_cdb: Fatal 'unable to write control/NAME.cdb: ...')."""
    from qmailpy.cli.qmailtool import oserror, write_cdb
    done = []
    for name in names:
        text = paths.control_path(home, name)
        try:
            keys = read_keys(text)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise oserror(e, "read control/%s" % name) from None
        write_cdb(text + ".cdb", ((key, b"") for key in keys), "control/%s.cdb" % name)
        done.append((name, len(keys)))
    return done


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("names", nargs=-1, type=click.Choice(LISTS))
@click.option("-v", "--verbose", is_flag=True, help="Say what was built.")
def cli(names, verbose):
    """Build control/clamavclients.cdb and control/spamdclients.cdb for $QMAILHOME
    (default /var/qmail) from control/clamavclients and control/spamdclients
    (one address or @domain a line). NAMES limits it to some of the two.
    """
    home = paths.qmailhome(os.environ)
    from qmailpy.cli.qmailtool import Fatal, os_text
    try:
        done = build(home, names or LISTS)
    except Fatal as e:
        click.echo(FATAL + e.text, err=True)
        sys.exit(e.code)
    except ValueError as e:
        click.echo(FATAL + str(e), err=True)
        sys.exit(X.EXIT_TROUBLE)
    except OSError as e:
        click.echo(FATAL + os_text(e), err=True)
        sys.exit(X.EXIT_TROUBLE)
    if verbose:
        for name, count in done:
            click.echo("qmail-newfilters: control/%s.cdb: %d keys" % (name, count))
        if not done:
            click.echo("qmail-newfilters: no control/clamavclients or control/spamdclients: nothing built")
    return 0


@guard("qmail-newfilters", X.EXIT_TROUBLE)
def main():
    return click_main(cli)


if __name__ == "__main__":
    sys.exit(main())
