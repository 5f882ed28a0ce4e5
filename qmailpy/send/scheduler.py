"""qmail-send's scheduling: priority queues, jobs, passes and delivery reports.

Follows qmail-send.c: a *pass* walks one message's channel file and starts a
delivery per T record while slots are free; the pass and each delivery hold
a reference on the message's *job*; when the last one lets go, the channel
file is unlinked (every recipient done) or the message goes back into the
channel's queue at its next retry time (nextretry from the info birth).
A message with no channel file left goes to pqdone, where finish.messdone()
starts its bounce (the loop feeds it to qmail-queue meanwhile: `bounces`)
and removes it.
"""
import collections
import heapq
import os
import time

from qmailpy import clock
from qmailpy.addr.rewrite import REMOTE as REMOTE_CHANNEL
from qmailpy.ctl.reader import ControlError
from qmailpy.log import qmail_safe as safe
from qmailpy.proto.spawnwire import DEFERRAL, FAILURE, SUCCESS
from qmailpy.queue import files as qf, layout
from qmailpy.send import cleanup, finish
from qmailpy.send.channel import Delivery
from qmailpy.send.rewrite import verp_sender
from qmailpy.send.todo import rel

LIFETIME_TEXT = b"I'm not going to try again; this message has been in the queue too long.\n"


class Job:
    __slots__ = ("msgid", "channel", "retry", "sender", "numtodo", "hiteof", "dying", "refs")

    def __init__(self, msgid, channel, retry, sender, dying):
        self.msgid, self.channel, self.retry, self.sender, self.dying = msgid, channel, retry, sender, dying
        self.numtodo, self.hiteof, self.refs = 0, False, 1


class Pass:
    __slots__ = ("job", "records", "index")

    def __init__(self, job, records):
        self.job, self.records, self.index = job, records, 0


class Scheduler:
    def __init__(self, home, clk, log, config, channels, cleaner, injector, split=layout.SPLIT):
        self.home, self.clock, self.log, self.config = home, clk, log, config
        self.channels, self.cleaner, self.injector, self.split = channels, cleaner, injector, split
        self.jobs_open = 0
        self.pqdone, self.done_known, self.pqfail = [], set(), []
        self.masterdelid = 1
        self.exitasap = False
        self.next_cleanup = 0.0
        self.bounces = {}              # msgid -> finish.Bouncing, going into qmail-queue
        self.bounce_wait = collections.deque()     # msgids waiting for a free bounce slot, in order
        self.bounce_waiting = set()                # the same, to ask whether one waits
        self.copy_refused = set()      # msgids whose bounce qmail-queue refused with the copy
        self.last_read = None          # (wall clock, elapsed) at the last now()
        self.stepped = 0.0             # the wall clock's steps since start, summed (forward > 0)

    def now(self):
        """The wall clock for the loop. A step of it (NTP, a VM snapshot: the wall clock
        moving apart from elapsed time) moves every queued time by the step, so every wait
        keeps its length: qmail-send keeps the times, and after a step back waits until the
        clock catches up."""
        now, elapsed = self.clock.now(), self.clock.elapsed()
        if self.last_read is not None:
            step = (now - self.last_read[0]) - (elapsed - self.last_read[1])
            if abs(step) > clock.STEP:
                self.stepped += step
                self.move_times(step)
        self.last_read = (now, elapsed)
        return now

    def move_times(self, by):
        """Every time the scheduler waits for, `by` seconds later (heap order is kept)."""
        for ch in self.channels:
            ch.pq = [(when + by, msgid) for when, msgid in ch.pq]
            jobs = [d.job for d in ch.active.values()] + ([ch.pass_.job] if ch.pass_ else [])
            for job in {id(j): j for j in jobs}.values():
                job.retry += by
        self.pqfail = [(when + by, msgid) for when, msgid in self.pqfail]
        self.pqdone = [(when + by, msgid) for when, msgid in self.pqdone]
        self.next_cleanup += by

    def dying(self, birth, now):
        """Older than queuelifetime by the wall clock less the net forward steps seen since
        start: a clock that jumps forward for a while makes nothing die, as it would in qmail."""
        return self.clock.dying(birth, now - max(self.stepped, 0.0), self.config.lifetime)

    # -- queues
    def numjobs(self):
        return sum(ch.concurrency for ch in self.channels)

    def path(self, msgid, c):
        return qf.channel_path(self.home, msgid, c, self.split)

    def sysfail(self, now):
        return now + self.clock.delay(clock.SLEEP_SYSFAIL)

    def done_add(self, msgid, when):
        if msgid not in self.done_known:
            self.done_known.add(msgid)
            heapq.heappush(self.pqdone, (when, msgid))

    def pqadd(self, msgid, now):
        """A message found on disk (start-up or retry after trouble): queue what it has.
        qmail-send.c's order: info/ (gone: nothing to do), todo/ (there: qmail-todo has not
        finished it), then (not in qmail) mess/ (gone: the message was finished and a power
        loss kept its last unlink, finish.leftovers), the channel files; a stat that fails
        otherwise names its file."""
        info = qf.exists(layout.info_path(self.home, msgid, self.split))
        todo = qf.exists(layout.todo_path(self.home, msgid)) if info else False
        if info is False or todo is True:
            return
        mess = qf.exists(layout.mess_path(self.home, msgid, self.split)) if info and todo is False else True
        if mess is False:           # a power loss kept the last unlink of a finished message
            if not finish.leftovers(self, msgid):
                heapq.heappush(self.pqfail, (self.sysfail(now), msgid))
            return
        failed = "info" if info is None else "todo" if todo is None else "mess" if mess is None else None
        times = []
        for ch in self.channels if failed is None else ():
            try:
                times.append(qf.mtime(self.path(msgid, ch.index)))
            except OSError:
                failed = ch.name
                break
        if failed is not None:
            self.log.line("warning: unable to stat %s; will try again later" % rel(failed, msgid, self.split))
            heapq.heappush(self.pqfail, (self.sysfail(now), msgid))
            return
        found = False
        for ch, when in zip(self.channels, times):
            if when is not None:
                found = True
                if msgid not in ch.known:        # a time persisted before a step back: no longer
                    ch.schedule(msgid, min(when, now + self.clock.longest_wait(ch.index, self.config.lifetime)))
        if not found:
            self.done_add(msgid, now)

    def todo_done(self, msgid, flags, now):
        """qmail-todo's D record: the message is ready, deliver it now."""
        for ch, flag in zip(self.channels, flags):
            if flag and msgid not in ch.known:
                ch.schedule(msgid, now)
        if not any(flags):
            self.done_add(msgid, now)

    def pqstart(self, now):
        for msgid in qf.info_ids(self.home, self.split, pause=self.pausedir):
            self.pqadd(msgid, now)

    def pausedir(self, name):
        """qmail-send.c pausedir(): a queue subdirectory it cannot read is read again, not skipped."""
        self.log.line("alert: unable to opendir %s, sleeping..." % name)
        time.sleep(self.clock.delay(clock.SLEEP_PAUSEDIR))

    def pqrun(self, now):
        for ch in self.channels:
            ch.run_all(now)

    def pqfinish(self):
        """At exit: persist each queued retry time as its channel file's mtime. A message
        whose pass is still open keeps its mtime, so its recipients go first at restart."""
        for ch in self.channels:
            for when, msgid in ch.pq:
                if not qf.set_retry(self.path(msgid, ch.index), when):
                    self.log.line("warning: unable to utime %s; message will be retried too soon"
                                  % rel(ch.name, msgid, self.split))

    # -- jobs and passes
    def job_close(self, job, now):
        job.refs -= 1
        if job.refs > 0:
            return
        self.jobs_open -= 1
        ch, when = self.channels[job.channel], job.retry
        if job.hiteof and not job.numtodo:
            try:
                os.unlink(self.path(job.msgid, job.channel))
            except OSError:
                self.log.line("warning: unable to unlink %s; will try again later" % rel(ch.name, job.msgid, self.split))
                when = self.sysfail(now)
            else:
                ch.known.discard(job.msgid)
                for other in self.channels:
                    if other is not ch:
                        got = qf.exists(self.path(job.msgid, other.index))
                        if got:
                            return                 # more channels going
                        if got is None:
                            self.log.line("warning: unable to stat %s" % rel(other.name, job.msgid, self.split))
                self.done_add(job.msgid, now)
                return
        ch.schedule(job.msgid, when)

    def open_pass(self, ch, now):
        """Start a pass on the channel's most urgent message; False when none is due."""
        if self.jobs_open >= self.numjobs():
            return False
        msgid = ch.due(now)
        if msgid is None:
            return False
        ch.pop()
        try:
            records = qf.read_records(self.path(msgid, ch.index))
        except OSError:
            records = None
        info = qf.getinfo(self.home, msgid, self.split) if records is not None else None
        if info is None:
            self.log.line("warning: trouble opening %s; will try again later" % rel(ch.name, msgid, self.split))
            ch.schedule(msgid, self.sysfail(now))
            return True
        sender, birth = info
        job = Job(msgid, ch.index, self.clock.nextretry(birth, now, ch.index), sender, self.dying(birth, now))
        self.jobs_open += 1
        ch.pass_ = Pass(job, records)
        return True

    def pass_channel(self, ch, now):
        while not self.exitasap:
            p = ch.pass_
            if p is None:
                if not self.open_pass(ch, now):
                    return
                continue
            if not ch.avail():
                return
            if p.index >= len(p.records):
                p.job.hiteof, ch.pass_ = True, None
                self.job_close(p.job, now)
                continue
            offset, rec = p.records[p.index]
            p.index += 1
            if rec[:1] == b"T":
                try:
                    sender = self.sender_for(ch, p.job, rec[1:])
                except ControlError as e:        # SRS cannot tell whether the sender is one of ours
                    self.log.line("warning: unable to read controls: %s; will try msg %d again later"
                                  % (e, p.job.msgid))
                    p.job.retry = max(p.job.retry, self.sysfail(now))
                    ch.pass_ = None
                    self.job_close(p.job, now)
                    continue
                p.job.numtodo += 1
                self.del_start(ch, p.job, offset, rec[1:], sender)
            elif rec[:1] != b"D":
                self.log.line("warning: unknown record type in %s!" % rel(ch.name, p.job.msgid, self.split))
                ch.pass_ = None
                self.job_close(p.job, now)

    def sender_for(self, ch, job, recip):
        """The envelope sender of one delivery: VERP, then SRS for a remote one (ControlError:
        a control SRS needs, e.g. morercpthosts.cdb, cannot be read)."""
        sender = verp_sender(job.sender, recip)
        if ch.index == REMOTE_CHANNEL and self.config.srs_forward is not None:
            sender = self.config.srs_forward(sender)
        return sender

    def del_start(self, ch, job, offset, recip, sender):
        delid, self.masterdelid = self.masterdelid, self.masterdelid + 1
        job.refs += 1
        messid = "%d/%d" % (job.msgid % self.split, job.msgid)
        ch.start(Delivery(job, delid, offset, recip), messid, sender, recip)
        self.log.qmail("starting delivery %d: msg %d to %s %s" % (delid, job.msgid, ch.name, safe(recip)))
        self.status()

    # -- reports
    def on_report(self, ch, report, now):
        d = ch.done(report.delnum)
        if d is None:
            self.log.line("warning: internal error: delivery report out of range")
            return
        kind, text, job = report.kind, report.text, d.job
        if kind == DEFERRAL and job.dying:
            kind, text = FAILURE, text + LIFETIME_TEXT
        what = {SUCCESS: "success", DEFERRAL: "deferral", FAILURE: "failure"}.get(kind)
        if what is None:
            self.log.line("delivery %d: report mangled, will defer" % d.delid)
        else:
            self.log.qmail("delivery %d: %s: %s" % (d.delid, what, safe(text)))
        if kind == FAILURE:
            finish.addbounce(self, job.msgid, d.recip, text)
        if kind in (SUCCESS, FAILURE):
            if not qf.markdone(self.path(job.msgid, ch.index), d.offset):
                self.log.line("warning: trouble marking %s; message will be delivered twice!"
                              % rel(ch.name, job.msgid, self.split))
            job.numtodo -= 1
        self.job_close(job, now)
        self.status()

    # -- loop helpers
    def pass_do(self, now):
        for ch in self.channels:
            self.pass_channel(ch, now)
        while self.pqfail and self.pqfail[0][0] <= now:
            self.pqadd(heapq.heappop(self.pqfail)[1], now)
        while self.bounce_wait and len(self.bounces) < finish.BOUNCES_AT_ONCE:
            msgid = self.bounce_wait.popleft()     # a free slot: the message that has waited longest,
            self.bounce_waiting.discard(msgid)     # before any that finished since
            self.messdone(msgid, now)
        while self.pqdone and self.pqdone[0][0] <= now:
            msgid = heapq.heappop(self.pqdone)[1]
            self.done_known.discard(msgid)
            self.messdone(msgid, now)
        if now >= self.next_cleanup:
            self.next_cleanup = now + self.clock.delay(clock.SLEEP_CLEANUP)
            cleanup.cleanup(self, now)

    def messdone(self, msgid, now):
        got = finish.messdone(self, msgid, now)
        if got == finish.RETRY:
            self.done_add(msgid, self.sysfail(now))
        elif got == finish.WAITING and msgid not in self.bounce_waiting:
            self.bounce_waiting.add(msgid)
            self.bounce_wait.append(msgid)

    def wakeup(self, now):
        """When the loop must act again without any fd event: now when an open pass has a free
        delivery slot (qmail-send.c pass_selprep(); a SIGHUP that raised a concurrency from 0
        leaves such a pass, and no report will come to move it on)."""
        if not self.exitasap and any(ch.pass_ is not None and ch.avail() for ch in self.channels):
            return now
        times = [now + clock.SLEEP_FOREVER, self.next_cleanup]
        if not self.exitasap and self.jobs_open < self.numjobs():
            times += [t for t in (ch.next_time() for ch in self.channels if ch.pass_ is None) if t is not None]
        times += [q[0][0] for q in (self.pqfail, self.pqdone) if q]
        return min(times)

    def can_exit(self):
        return not self.bounces and all(not ch.alive or not ch.active for ch in self.channels)

    def status(self):
        self.log.line("status: %s%s" % (" ".join(ch.status() for ch in self.channels),
                                        " exitasap" if self.exitasap else ""))
