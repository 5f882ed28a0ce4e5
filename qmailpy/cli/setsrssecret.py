"""setsrssecret: put a new SRS key on top of control/srs/, drop expired ones (docs/setsrssecret.md)."""
import os
import re
import sys
import time

import click

from qmailpy import exitcodes as X, paths
from qmailpy.cli.qmailtool import missing_control_directory, os_text
from qmailpy.ctl.reader import ControlError, Controls
from qmailpy.log import guard
from qmailpy.output import click_main, output
from qmailpy.srs import keys as K

FATAL = "setsrssecret: fatal: "
DAY = 86400


def _when(t):
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _span(seconds):
    seconds = max(0, int(seconds))
    d, rest = divmod(seconds, DAY)
    h, rest = divmod(rest, 3600)
    if d:
        return "%dd %dh" % (d, h)
    return "%dh %dm" % (h, rest // 60)


def _max_age(home):
    return Controls(home).value("srs/srs_max_age")


def _die(text):
    click.echo(FATAL + text, err=True)
    sys.exit(X.EXIT_TROUBLE)


def show_lines(home, now, max_age):
    """What --show prints: srs_max_age, then each key's fingerprint and ages. Never a secret."""
    out = ["srs_max_age: %d seconds (%s); a replaced key is kept %s after it is replaced"
           % (max_age, _span(max_age), _span(max_age + K.MARGIN))]
    problems = []
    try:
        rev = K.read_lines(paths.control_path(home, K.REVERSE))
        fwd = K.read_lines(paths.control_path(home, K.FORWARD))
        secrets = rev or fwd
        if rev != fwd:
            problems.append("srs_secrets and revers_srs_secrets differ: run setsrssecret")
    except PermissionError:
        secrets = None
        problems.append("cannot read the key files; fingerprints from srs_secrets_age only")
    ages = K.read_lines(paths.control_path(home, K.AGES))
    stamps = K.parse_ages(ages)
    if secrets is None:
        # an older file (H-Sphere's) names a key by the secret itself: shown by its fingerprint
        names = [line.split()[0] for line in ages if line.split()]
        keys = [(n if re.fullmatch("[0-9a-f]{16}", n) else K.fingerprint(n), stamps.get(n)) for n in names]
    else:
        keys = [(K.fingerprint(s), K.made_at(stamps, s)) for s in secrets]
    if not keys:
        out.append("no SRS keys: forwards keep their sender; run setsrssecret to start SRS")
    replaced = None
    for i, (fp, made) in enumerate(keys, 1):
        if made is None:
            text = "made: unknown (no srs_secrets_age line)"
        else:
            text = "made %s (%s ago)" % (_when(made), _span(now - made))
        if i == 1:
            text += ", signs new addresses"
        elif replaced is not None:
            left = replaced + max_age + K.MARGIN - now
            text += ", replaced %s ago, %s" % (
                _span(now - replaced),
                "accepted on bounces %s more" % _span(left) if left > 0 else "expired: dropped on the next run")
        out.append("key %d %s %s" % (i, fp, text))
        replaced = made
    return out + ["warning: " + p for p in problems]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--show", is_flag=True, help="Print each key's fingerprint and age (never a secret); change nothing.")
@click.option("-v", "--verbose", is_flag=True, help="Say what was added and dropped.")
def cli(show, verbose):
    """Make a new SRS key for $QMAILHOME (default /var/qmail).

    The new key goes on top of control/srs/srs_secrets and
    control/srs/revers_srs_secrets (newest first) with a line in
    control/srs/srs_secrets_age; keys replaced more than srs_max_age plus one
    day ago are dropped. Run from cron, e.g. weekly. Silent unless -v or an
    error (exit 111).
    """
    home = paths.qmailhome(os.environ)
    now = time.time()
    try:
        max_age = _max_age(home)
        if show:
            with K.Locked(home, shared=True):
                lines = show_lines(home, now, max_age)
            output("\n".join(lines))
            return 0
        missing = missing_control_directory(home)
        if missing is not None:
            _die(missing or "no control directory in %s" % home)
        K.srs_dir(home, create=True)
        with K.Locked(home):
            # the key's date is read under the lock: a run that waited for another
            # must not put an older date on top of the other run's key
            new, kept, dropped = K.rotate(home, time.time(), max_age)
    except ControlError as e:
        _die("unable to read controls: %s" % e)
    except OSError as e:
        _die(os_text(e))
    if verbose:
        output("setsrssecret: new key %s; %d kept, %d dropped%s" % (
            new.fingerprint, len(kept), len(dropped),
            "".join(" " + k.fingerprint for k in dropped)))
    return 0


@guard("setsrssecret", X.EXIT_TROUBLE)
def main():
    return click_main(cli)


if __name__ == "__main__":
    sys.exit(main())
