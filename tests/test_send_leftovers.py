"""What a power loss may leave of a finished message, and what qmail-send makes of it.

When every delivery of a message is done, qmail-send unlinks its channel file, bounce/ (once
the bounce is queued) and info/, and qmail-clean intd/ and mess/; todo/ went at qmail-todo's
hand-over. None of these unlinks is followed by a directory fsync (as qmail), and ext4
without a journal writes directories back in any order: after a power loss any of them may
be back. Each combination is built here in one queue (a message each, all its recipients
marked D unless `T`: the D was lost too) and qmail-send is run once over all of them, a week
of virtual time a few seconds long (QMAILPY_TIMESCALE), info/ an hour old.

mess/ goes last, so a message without mess/ was finished: nothing of it is delivered or
bounced again, and whatever todo/ or info/ names is removed with a log line. With mess/ still
there, todo/ back (its unlink at the hand-over lost) or a lost D is a second delivery, never a
lost one (docs/qmail-send.md, "After a power loss").
"""
import os
import re
import time

from qmailpy.queue import layout
from test_send_support import Send, inject, scratch  # noqa: F401 (scratch: fixture)

MSG = b"From: alice@localhost\nSubject: leftover\n\nbody\n"

# the files left of each message ("local" with D records, "T": the D lost)
COMBOS = [
    # mess/ gone: finished
    "todo", "todo intd", "todo info", "todo info local", "todo info local T", "todo intd info local bounce",
    "info", "info local", "info local T", "info bounce", "info local T bounce", "intd info local",
    "intd", "local", "local T", "intd local T",
    # mess/ still there
    "todo intd mess", "todo intd mess info local", "mess info local", "mess info local T", "mess info",
    "intd mess", "mess", "mess local",
]
MESS_GONE_CLEANED = {c for c in COMBOS if "mess" not in c.split() and ({"todo", "info"} & set(c.split()))}
DELIVERED_AGAIN = {"todo intd mess", "todo intd mess info local", "mess info local T"}
LEFT_ALONE = {"intd": ["intd"], "local": ["local"], "local T": ["local"], "intd local T": ["intd", "local"],
              "intd mess": ["intd", "mess"], "mess": ["mess"], "mess local": ["local", "mess"]}


def build(home, msgid, combo, rcpt):
    parts = combo.split()
    paths = {"todo": layout.todo_path(home, msgid), "intd": layout.intd_path(home, msgid),
             "mess": layout.mess_path(home, msgid), "info": layout.info_path(home, msgid),
             "local": layout.local_path(home, msgid), "bounce": layout.bounce_path(home, msgid)}
    with open(paths["info"], "wb") as f:
        f.write(b"Falice@localhost\0")
    with open(paths["local"], "wb") as f:
        f.write((b"T" if "T" in parts else b"D") + rcpt + b"\0")
    with open(paths["bounce"], "wb") as f:
        f.write(b"<" + rcpt + b">:\nSorry, no mailbox here by that name. (#5.1.1)\n\n")
    hour_ago = time.time() - 3600
    for name, path in paths.items():
        if name in parts:
            os.utime(path, (hour_ago, hour_ago))
        else:
            os.unlink(path)


def test_leftovers_of_a_finished_message_are_never_delivered_nor_bounced_again(scratch):  # noqa: F811
    home = scratch.home
    ids = {}
    for n, combo in enumerate(COMBOS):
        rcpt = b"m%d@localhost" % n
        ids[combo] = inject(home, MSG, b"alice@localhost", [rcpt])
        build(home, ids[combo], combo, rcpt)
    send = Send(scratch, QMAILPY_TIMESCALE="100000")
    for combo in DELIVERED_AGAIN:
        send.wait_line(r"^end msg %d$" % ids[combo])
    for combo in MESS_GONE_CLEANED:
        send.wait_line(r"^warning: .*msg %d: mess/\d+/%d is gone" % (ids[combo], ids[combo]))
    time.sleep(2)       # 1600 retry intervals of 123 s: a message retried for ever shows
    assert send.stop() == 0
    lines = send.lines()
    for n, combo in enumerate(COMBOS):
        msgid = ids[combo]
        mine = [ln for ln in lines if re.search(r"\b%d\b" % msgid, ln)]
        got = sorted(os.path.basename(m).split("@")[0] for m in scratch.mail("m%d@" % n))
        assert got == (["m%d" % n] if combo in DELIVERED_AGAIN else []), (combo, mine)
        assert not [ln for ln in mine if "failure" in ln or "bounce" in ln or "unable" in ln], (combo, mine)
        left = sorted(name.split("/")[0] for name in scratch.queue_files()
                      if name.rsplit("/", 1)[-1] == str(msgid))
        assert left == LEFT_ALONE.get(combo, []), (combo, left, mine)
        if combo in MESS_GONE_CLEANED:
            assert len([ln for ln in mine if "is gone" in ln]) == 1, (combo, mine)
    assert scratch.mail("alice@") == {}, "a bounce was sent"
