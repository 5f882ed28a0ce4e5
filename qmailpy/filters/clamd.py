"""clamd's INSTREAM command: the message streamed in chunks, one verdict back.

Request: b"zINSTREAM\\0", then chunks each preceded by its length as 4 bytes
big-endian, then a zero length. Answer (\\0-terminated with the z prefix):
"stream: OK", "stream: <virus name> FOUND" or "<text> ERROR". See clamd(8).

A message clamd cannot scan in full is never clean: with the clamd.conf of
runscripts (AlertExceedsMax, AlertEncrypted) clamd names it
`Heuristics.Limits.Exceeded.<limit>` or `Heuristics.Encrypted.<kind>`, and
the one limit clamd answers with an error, StreamMaxLength ("INSTREAM size
limit exceeded"), is given the name TOO_LONG here. Either is a finding like
a virus: a refusal, which control/filterfailopen does not waive. An OK from a
clamd that stopped reading before the zero-length chunk is not a verdict on
the message: trouble (74), as a cut-short answer.
"""
import os
import struct

from qmailpy import exitcodes as X
from qmailpy.fileio import close_quietly
from qmailpy.filters.net import Connection, ServiceError

CHUNK = 65536
ANSWER_LIMIT = 4096
SIZE_LIMIT_ERROR = "INSTREAM size limit exceeded. ERROR"
TOO_LONG = "Heuristics.Limits.Exceeded.StreamMaxLength"      # clamd's name style for its other limits
UNSCANNED = ("Heuristics.Limits.Exceeded.", "Heuristics.Encrypted.")   # not known malware: no badurls report


def not_malware(name):
    """True for a finding that says "could not scan all of it" rather than "malware"."""
    return name.startswith(UNSCANNED)


def parse_answer(answer):
    """None for a clean message, the virus name (or TOO_LONG) when not; ServiceError otherwise."""
    text = answer.rstrip(b"\0\n").decode("utf-8", "replace")
    if text.startswith("stream: "):
        verdict = text[len("stream: "):]
        if verdict == "OK":
            return None
        if verdict.endswith(" FOUND") and len(verdict) > len(" FOUND"):
            return verdict[:-len(" FOUND")]
    if text == SIZE_LIMIT_ERROR:
        return TOO_LONG
    if text.endswith(" ERROR"):
        raise ServiceError(X.QQ_TEMP_REFUSED, "clamd: %s" % text)
    raise ServiceError(X.QQ_COMM_FAILED, "clamd: unexpected answer %r" % text[:200])


def scan_fd(fd, address, timeout):
    """Scan what fd holds from offset 0: None (clean) or the virus name."""
    with Connection("clamd", address, timeout) as conn:
        complete = conn.send(b"zINSTREAM\0")
        offset = 0
        while complete:
            data = os.pread(fd, CHUNK, offset)
            offset += len(data)
            complete = conn.send(struct.pack(">I", len(data)) + data)
            if not data:
                break
        answer = conn.read(ANSWER_LIMIT, stop=b"\0")
    if not answer:
        raise ServiceError(X.QQ_COMM_FAILED, "clamd: connection closed without an answer")
    verdict = parse_answer(answer)
    if verdict is None and not complete:        # it stopped reading: the rest was never scanned
        raise ServiceError(X.QQ_COMM_FAILED, "clamd: answered OK before the end of the message (%d bytes)" % (
            os.fstat(fd).st_size))
    return verdict


def scan_file(path, address, timeout):
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return scan_fd(fd, address, timeout)
    finally:
        close_quietly(fd)       # read-only
