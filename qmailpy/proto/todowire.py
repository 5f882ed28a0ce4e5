"""The qmail-todo <-> qmail-send pipe (ext-todo patch), one codec for both ends.

qmail-todo -> qmail-send, each record ended by \\0:
  D<l><r><id>   message <id> is preprocessed; <l>/<r> are '1' or '0': it has
                local/ and/or remote/ recipients (`D10123` = local only)
  L<text>       a log line for qmail-send to print
  X             qmail-todo is exiting
qmail-send -> qmail-todo, single bytes: S (start: qmail-send has rebuilt its queues from
info/, so qmail-todo may now take messages out of todo/), H (reread controls), X (stop asap).
Pure: no I/O.
"""
from collections import namedtuple

from qmailpy.proto.nulrecords import NulRecords

START, RELOAD, EXIT = b"S", b"H", b"X"
Done = namedtuple("Done", "msgid local remote")
LogLine = namedtuple("LogLine", "text")
Exiting = namedtuple("Exiting", "")
Unknown = namedtuple("Unknown", "record")


def encode_done(msgid, local, remote):
    return b"D%s%s%d\0" % (b"1" if local else b"0", b"1" if remote else b"0", msgid)


def encode_log(text):
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogateescape")
    return b"L" + bytes(text).replace(b"\0", b"_") + b"\0"


def encode_exit():
    return b"X\0"


ID_DIGITS = 20          # a message id is an inode number: 64 bits, at most 20 digits


def parse_record(rec):
    """One record (without its \\0) as Done, LogLine, Exiting or Unknown (a Done whose id has
    more digits than a 64-bit number, which no qmail-todo writes, too: int() refuses 4301)."""
    kind = rec[:1]
    if kind == b"D" and 3 < len(rec) <= 3 + ID_DIGITS and rec[1:2] in b"01" and rec[2:3] in b"01" and rec[3:].isdigit():
        return Done(int(rec[3:]), rec[1:2] == b"1", rec[2:3] == b"1")
    if kind == b"L":
        return LogLine(rec[1:])
    if rec == b"X":
        return Exiting()
    return Unknown(rec)


class RecordDecoder:
    """Incremental decoder of qmail-todo's records; a record is cut at `limit` bytes."""
    __slots__ = ("_records",)

    def __init__(self, limit=10000):
        self._records = NulRecords(limit)

    def feed(self, data):
        return [parse_record(r) for r in self._records.feed(data)]
