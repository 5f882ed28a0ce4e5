"""qmail-queue's DKIM step (control/dkimverify): verify, add Authentication-Results, in place.

It runs first in the filter step (filters.select.content_filter), for mail
that came in over SMTP (qmail-queue started by qmail-smtpd: $TCPREMOTEIP
set; a local injection or a forward has nothing to verify against). The
staged mess file is rewritten in place (qmail-queue's Received line kept,
then the new field, then the message) and fsynced again before intd/ is
made, so clamd, spamd (which sees the field) and the queue entry all get
the same bytes; a failure here is qmail-queue's write error (53) and the
usual rollback. One log line per message: `dkim: dkim=pass ... spf=...`.

Only a signed message is read whole (dkimpy hashes the body from memory: a
message of N bytes costs about 2N), and only up to control/dkimverifymaxsize:
qmail-queued's memory is every client's, so a larger signed message gets
dkim=policy and is treated as an unsigned one. An unsigned one, most mail, costs a
block: its header block is read, and the rest of the file is moved in
blocks to make room for the new field (or close the gap of removed ones).
"""
import os
import time

from qmailpy import exitcodes as X
from qmailpy.exitcodes import QueueError


def _read(staged):
    try:
        with open(staged.mess_path, "rb") as f:
            f.seek(len(staged.head))
            return f.read()
    except OSError as e:
        raise QueueError(X.QQ_READ_ERROR, "unable to read mess: %s" % (e.strerror or e)) from None


BLOCK = 65536


def _blocks(fd, offset):
    """What fd holds from offset on, in blocks."""
    while True:
        block = os.pread(fd, BLOCK, offset)
        if not block:
            return
        offset += len(block)
        yield block


def _read_head(staged):
    """The message's first bytes through its header block (proto.headers.head), and a read fd on
    the mess file (the caller closes it)."""
    from qmailpy.proto.headers import head
    try:
        fd = os.open(staged.mess_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise QueueError(X.QQ_READ_ERROR, "unable to read mess: %s" % (e.strerror or e)) from None
    try:
        return head(_blocks(fd, len(staged.head)), BLOCK), fd
    except OSError as e:
        os.close(fd)
        raise QueueError(X.QQ_READ_ERROR, "unable to read mess: %s" % (e.strerror or e)) from None


def _replace_head(staged, fd, old, new):
    """The mess file's `old` first bytes (after qmail-queue's Received line) become `new`, the
    rest moved in blocks through the read fd (from its end when it moves up, from its start
    when it moves down, so no block is overwritten before it is read); fsynced."""
    out, base = staged.mess_fd, len(staged.head)
    try:
        start = base + len(old)
        size = os.fstat(fd).st_size - start
        shift = len(new) - len(old)
        if shift:
            offsets = range(0, size, BLOCK)
            for offset in (reversed(offsets) if shift > 0 else offsets):
                block = os.pread(fd, min(BLOCK, size - offset), start + offset)
                _pwrite_all(out, block, start + offset + shift)
        _pwrite_all(out, new, base)
        os.ftruncate(out, base + len(new) + size)
        os.fsync(out)
    except OSError as e:
        raise QueueError(X.QQ_WRITE_ERROR, "unable to write mess: %s" % (e.strerror or e)) from None


def _pwrite_all(fd, data, offset):
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _rewrite(staged, data):
    """The mess file from after qmail-queue's Received line on becomes data; fsynced."""
    fd, offset = staged.mess_fd, len(staged.head)
    try:
        _pwrite_all(fd, data, offset)
        os.ftruncate(fd, offset + len(data))
        os.fsync(fd)
    except OSError as e:
        raise QueueError(X.QQ_WRITE_ERROR, "unable to write mess: %s" % (e.strerror or e)) from None


def came_over_smtp(controls):
    """Was qmail-queue started by qmail-smtpd under tcpserver ($TCPREMOTEIP)?"""
    return bool((controls.environ or {}).get("TCPREMOTEIP"))


def run(staged, controls, log):
    """Verify the staged message and put the Authentication-Results field into it."""
    from qmailpy.dkim import verify
    from qmailpy.dns.resolver import Resolver
    environ = controls.environ or {}
    head, fd = _read_head(staged)
    try:
        try:
            me = controls.value("me")
            resolver = Resolver(environ).until(time.monotonic() + verify.LOOKUP_TIME)

            def checked(received):
                return verify.smtpd_checked_spf(environ, controls, received)
            whole = unverified = None
            if verify.signature_values(head):
                limit = controls.value("dkimverifymaxsize")
                if limit and os.fstat(fd).st_size - len(staged.head) > limit:
                    unverified = "message larger than dkimverifymaxsize"
                else:
                    whole = _read(staged)
            new, results = verify.authenticate(head if whole is None else whole, staged.sender, me, resolver,
                                               checked, unverified)
        except OSError as e:             # ctl.reader.ControlError (spfbehavior, me), resolv.conf
            raise QueueError(X.QQ_CONFIG, "unable to read controls: %s" % e) from None
        if whole is None:
            _replace_head(staged, fd, head, new)
        else:
            _rewrite(staged, new)
    finally:
        os.close(fd)
    log("dkim: " + "; ".join(r.text() for r in results))
