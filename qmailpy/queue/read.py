"""qmail-qread's listing of the queue, as qmail's qmail-qread shows it.

One line per message (`26 Sep 1995 04:46:54 GMT  #<id>  <size>  <sender> `,
plus ` bouncing` when bounce/<id> exists), then one line per recipient:
`\\tlocal\\t<addr>` or `\\tremote\\t<addr>`, prefixed `  done` once delivered.
Bytes outside printable ASCII are shown as `_`. Only preprocessed messages
(with an info/ file) are listed, as qmail does. Used by qmail-qread
(qmailpy.cli.qread) and by sendmail -bp / mailq.
"""
import json
import os

from qmailpy import exitcodes as X, paths
from qmailpy.errstr import error_str
from qmailpy.proto.date822 import date822
from qmailpy.queue import files, layout

_PRINTABLE = bytes(b if 32 <= b <= 126 else 0x5F for b in range(256))


def printable(b):
    return bytes(b).translate(_PRINTABLE).decode("ascii")


def message(home, msgid, split=layout.SPLIT):
    """What qmail-qread shows about one message; raises OSError. A local/ or remote/ file that
    cannot be read for another reason than its absence does not hide the message, as in
    qmail-qread.c: its warning goes in "troubles" as (where among the recipients, text)."""
    size = os.stat(layout.mess_path(home, msgid, split)).st_size
    with open(layout.open_own_regular(layout.info_path(home, msgid, split), os.O_RDONLY), "rb") as f:
        sender = f.read().split(b"\0", 1)[0][1:]
        qtime = os.fstat(f.fileno()).st_mtime
    recips, troubles = [], []
    for c, channel in enumerate(files.CHANNEL_DIRS):
        try:
            records = files.read_records(files.channel_path(home, msgid, c, split))
        except FileNotFoundError:
            continue
        except OSError as e:
            troubles.append((len(recips), trouble(msgid, e)))
            continue
        recips += [{"channel": channel, "address": printable(r[1:]), "done": r[:1] == b"D"}
                   for _, r in records if r[:1] in (b"T", b"D")]
    return {"id": msgid, "time": int(qtime), "date": date822(qtime)[:-len(" -0000")] + " GMT", "size": size,
            "sender": printable(sender), "bouncing": os.path.exists(layout.bounce_path(home, msgid)),
            "recipients": recips, "troubles": troubles}


def trouble(msgid, e):
    """qmail-qread.c's err(): the warning for a message it cannot read."""
    reason = error_str(e)
    return "warning: trouble with #%d: %s" % (msgid, e.strerror if reason == "unknown error" and e.strerror else reason)


def render(m):
    lines = ["%s  #%d  %d  <%s> %s" % (m["date"], m["id"], m["size"], m["sender"], " bouncing" if m["bouncing"] else "")]
    recips = ["%s\t%s\t%s" % ("  done" if r["done"] else "", r["channel"], r["address"]) for r in m["recipients"]]
    for where, text in reversed(m["troubles"]):
        recips.insert(where, text)
    return lines + recips


def die_on_closed_pipe():
    """qmail-qread leaves SIGPIPE at its default: when its reader goes away (mailq | head -1,
    mailq | grep -q x) the signal ends it at once, with no message. Python starts with
    SIGPIPE ignored; the programs that print the listing (qmail-qread, sendmail -bp and
    mailq) call this first."""
    import signal
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)


def listing(home, echo, warn, as_json=False):
    """Show the queue of `home` through echo(text) (warnings: warn(text)); the exit code
    (EXIT_TROUBLE when the queue cannot be read). The troubles are qmail-qread.c's lines
    (die_chdir, die_opendir, err), on stdout as qmail's; with as_json on stderr. One message
    is held at a time, as in qmail-qread.c; --json writes its list as it goes (the text of
    json.dumps(list, indent=1)), after every info/ subdirectory has been read, so that a
    fatal error still leaves no JSON."""
    say = warn if as_json else echo
    queue = paths.queue_path(home)
    try:
        os.stat(queue)
    except OSError as e:
        say("fatal: unable to chdir: %s" % error_str(e))
        return X.EXIT_TROUBLE
    try:
        ids = files.info_ids(home, ordered=True)
        if as_json:
            ids = list(ids)
        pending = None
        for msgid in ids:
            try:
                m = message(home, msgid)
            except OSError as e:
                say(trouble(msgid, e))
                continue
            if as_json:
                for _, text in m.pop("troubles"):
                    say(text)
                echo(pending + "," if pending else "[")     # the comma once another follows
                pending = " " + json.dumps(m, indent=1).replace("\n", "\n ")
            else:
                echo("\n".join(render(m)))
    except OSError as e:
        where = os.path.relpath(e.filename, queue) if e.filename else "info"
        say("fatal: unable to opendir %s: %s" % (where, error_str(e)))
        return X.EXIT_TROUBLE
    if as_json:
        echo(pending + "\n]" if pending else "[]")
    return 0
