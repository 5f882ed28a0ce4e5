"""qmail-qread: list the messages in the queue with their recipients, as qmail's qmail-qread.

One line per message (`26 Sep 1995 04:46:54 GMT  #<id>  <size>  <sender> `,
plus ` bouncing` when bounce/<id> exists), then one line per recipient:
`\\tlocal\\t<addr>` or `\\tremote\\t<addr>`, prefixed `  done` once delivered.
Bytes outside printable ASCII are shown as `_`. --json gives the same as data.
Only preprocessed messages (with an info/ file) are listed, as qmail does.
"""
import json
import os
import sys

import click

from qmailpy import paths
from qmailpy.proto.date822 import date822
from qmailpy.queue import layout

_PRINTABLE = bytes(b if 32 <= b <= 126 else 0x5F for b in range(256))


def printable(b):
    return bytes(b).translate(_PRINTABLE).decode("ascii")


def _records(path):
    with open(path, "rb") as f:
        return [r for r in f.read().split(b"\0")[:-1]]


def message(home, msgid, split=layout.SPLIT):
    """What qmail-qread shows about one message; raises OSError."""
    size = os.stat(layout.mess_path(home, msgid, split)).st_size
    with open(layout.info_path(home, msgid, split), "rb") as f:
        sender = f.read().split(b"\0", 1)[0][1:]
        qtime = os.fstat(f.fileno()).st_mtime
    recips = []
    for channel in ("local", "remote"):
        try:
            records = _records(layout.split_path(home, channel, msgid, split))
        except FileNotFoundError:
            continue
        recips += [{"channel": channel, "address": printable(r[1:]), "done": r[:1] == b"D"}
                   for r in records if r[:1] in (b"T", b"D")]
    return {"id": msgid, "time": int(qtime), "date": date822(qtime)[:-len(" -0000")] + " GMT", "size": size,
            "sender": printable(sender), "bouncing": os.path.exists(layout.bounce_path(home, msgid)),
            "recipients": recips}


def ids(home, split=layout.SPLIT):
    for n in range(split):
        try:
            names = os.listdir(paths.queue_path(home, "info", str(n)))
        except FileNotFoundError:
            continue
        yield from sorted(int(x) for x in names if x.isdigit())


def render(m):
    lines = ["%s  #%d  %d  <%s> %s" % (m["date"], m["id"], m["size"], m["sender"], " bouncing" if m["bouncing"] else "")]
    lines += ["%s\t%s\t%s" % ("  done" if r["done"] else "", r["channel"], r["address"]) for r in m["recipients"]]
    return lines


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--json", "as_json", is_flag=True, help="Print the messages as a JSON list.")
def cli(as_json):
    """List the messages in the queue of $QMAILHOME (default /var/qmail)."""
    home = paths.qmailhome(os.environ)
    out, code = [], 0
    try:
        for msgid in ids(home):
            try:
                m = message(home, msgid)
            except OSError as e:
                click.echo("warning: trouble with #%d: %s" % (msgid, e.strerror or e), err=as_json)
                continue
            out.append(m)
            if not as_json:
                click.echo("\n".join(render(m)))
    except OSError as e:
        click.echo("fatal: unable to read the queue: %s" % e, err=True)
        code = 111
    if as_json:
        click.echo(json.dumps(out, indent=1))
    sys.exit(code)


def main():
    return cli()
