"""The filter qmail-queue runs when some recipient is virus- or spam-checked.

1. clamd (if any recipient is virus-checked): one INSTREAM scan of the mess
   file. Infected: the virus-checked recipients are refused (logged, the
   virus named); the others keep the message.
2. spamd (for each remaining spam-checked recipient): PROCESS with
   `User: <the recipient's mailbox>` (its key, select.py), so spamd applies
   that user's SQL preferences. The recipient gets spamd's output (his
   X-Spam headers) as his own copy;
   recipients whose output is byte-for-byte the same share one copy. Spam at
   or above the user's X-Spam-Reject-Score (see spamd.py) is refused for him.
3. Nobody left: exit 31 (554), the reasons on stderr. Else the groups go back
   to enqueue(), which writes one queue entry per copy.

clamd/spamd trouble (down, control/filtertimeout exceeded, garbage) refuses
the message for now (56/72/74/71, 451: the client retries) and nothing is
queued, unless control/filterfailopen is 1: then it is logged and the
message goes on unfiltered for the service that failed. Under qmail-queued,
where no SIGALRM ends the insertion, the filter keeps to its deadline
(control/timeoutqueue) itself: no conversation goes past it, and reaching
it is qmail-queue's timeout (52), whatever filterfailopen says.
"""
import os
import time

from qmailpy import exitcodes as X
from qmailpy.filters.log import say
from qmailpy.filters.net import ServiceError, parse_address
from qmailpy.exitcodes import QueueError


def _show(addresses):
    return ", ".join(a.decode("utf-8", "replace") for a in addresses)


def _user(address):
    """The User: spamd gets: the recipient's key (the mailbox, lower-cased: select.py); None if it
    would break the header."""
    low = bytes(address).lower()
    if not low or any(c <= 0x20 or c >= 0x7f for c in low):
        return None
    return low


class Filter:
    """One message's filtering; run(staged) returns enqueue's groups or raises QueueError."""

    def __init__(self, controls, clam, spam, log=say, keys=None, deadline=None):
        self.controls, self.clam, self.spam, self.log = controls, list(clam), list(spam), log
        self.keys = keys or {}          # recipient -> its key (the mailbox: spamd's User:)
        self.deadline = deadline        # time.monotonic() of timeoutqueue (qmail-queued), or None

    def value(self, name):
        try:
            return self.controls.value(name)
        except OSError as e:
            raise QueueError(X.QQ_CONFIG, "unable to read controls: %s" % e) from None

    def timeout(self):
        """Seconds the next conversation may take: filtertimeout, and no more than the deadline leaves."""
        limit = max(1, self.value("filtertimeout") or 60)
        if self.deadline is None:
            return limit
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise QueueError(X.QQ_TIMEOUT, "timeout")
        return min(limit, left)

    def _service_failed(self, e):
        """Fail open (log, go on unfiltered) or re-raise: control/filterfailopen. Past the deadline
        (a conversation cut short by it) it is qmail-queue's timeout."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise QueueError(X.QQ_TIMEOUT, "timeout") from None
        if not self.value("filterfailopen"):
            raise e
        self.log("%s; filterfailopen: going on unfiltered" % e.reason)

    def run(self, staged):
        recipients = list(staged.recipients)
        refused = []                    # (recipient, reason)
        if self.clam:
            virus = self.virus(staged)
            if virus is not None:
                from qmailpy.filters.clamd import not_malware
                gone = set(self.clam)
                refused += [(r, "virus %s found" % virus) for r in self.clam]
                recipients = [r for r in recipients if r not in gone]
                if not not_malware(virus):
                    self.report_urls(staged, virus)
        kept = set(recipients)
        spam_now = [r for r in self.spam if r in kept]
        copies, refused_spam = self.spamcheck(staged, spam_now) if spam_now else ({}, [])
        refused += refused_spam
        gone = {r for r, _ in refused_spam}
        recipients = [r for r in recipients if r not in gone]
        own_copy = {r for group in copies.values() for r in group}
        plain = [r for r in recipients if r not in own_copy]
        if not recipients:
            reasons = []
            for _, why in refused:
                if why not in reasons:
                    reasons.append(why)
            raise QueueError(X.QQ_PERM_REFUSED, "message refused: %s" % "; ".join(reasons))
        for rcpt, why in refused:
            self.log("refused for %s: %s" % (_show([rcpt]), why))
        groups = []
        if plain:
            groups.append((plain, None))
        for data, group in copies.items():
            groups.append((group, data))
        return groups

    # -- clamd
    def virus(self, staged):
        """The virus name, or None (clean, or clamd failed with filterfailopen)."""
        from qmailpy.filters import clamd
        address = parse_address(self.value("clamdsocket"), "control/clamdsocket")
        try:
            try:
                return clamd.scan_file(staged.mess_path, address, self.timeout())
            except ServiceError:
                raise
            except OSError as e:            # our own mess file
                raise QueueError(X.QQ_READ_ERROR, "unable to read mess: %s" % (e.strerror or e)) from None
        except ServiceError as e:
            self._service_failed(e)
            return None

    def report_urls(self, staged, virus):
        if not self.value("badurls"):
            return
        command = self.value("badurlscommand")
        if not command:
            self.log("badurls is 1 but control/badurlscommand is not set: URLs not reported")
            return
        from qmailpy.filters import urls
        try:
            with open(staged.mess_path, "rb") as f:
                message = f.read()
        except OSError as e:
            self.log("badurls: unable to read mess: %s" % e)
            return
        found = urls.find_urls(message[len(staged.head):], self.value("urlscnt"))
        if found:
            urls.report(command, found, virus, staged.sender, self.timeout(), self.log)

    # -- spamd
    def spamcheck(self, staged, recipients):
        """({spamd output incl. our Received line: recipients}, [(refused, reason)])."""
        from qmailpy.filters import spamd
        from qmailpy.fileio import close_quietly, read_all
        limit = self.value("spamdmaxsize")
        try:
            fd = os.open(staged.mess_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                size = os.fstat(fd).st_size - len(staged.head)
                if limit and size > limit:
                    self.log("message of %d bytes is above spamdmaxsize %d: not spam-checked" % (size, limit))
                    return {}, []
                os.lseek(fd, len(staged.head), os.SEEK_SET)
                message = read_all(fd)
            finally:
                close_quietly(fd)       # read-only
        except OSError as e:
            raise QueueError(X.QQ_READ_ERROR, "unable to read mess: %s" % (e.strerror or e)) from None
        address = parse_address(self.value("spamdsocket"), "control/spamdsocket")
        copies, refused = {}, []
        for rcpt in recipients:
            try:
                verdict = spamd.process(message, _user(self.keys.get(rcpt, rcpt)), address, self.timeout())
            except ServiceError as e:
                self._service_failed(e)
                break                       # fail-open: the rest get the message as it came
            if verdict.refused():
                refused.append((rcpt, "spam, score %s >= reject score %s" % (
                    _num(verdict.score), _num(verdict.reject))))
                continue
            copies.setdefault(staged.head + verdict.message, []).append(rcpt)
        return copies, refused


def _num(x):
    return ("%.1f" % x) if x is not None else "-"
