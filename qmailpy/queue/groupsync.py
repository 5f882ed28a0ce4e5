"""One fsync of todo/ for every commit made before it started: a group commit.

qmail-queued commits many sessions' messages at once. Each commit link must be
on disk before its client hears exit 0, but one fsync of the directory covers
every link made before the fsync began. A caller that arrives while an fsync is
in flight cannot count on it (its link may have come too late), so it joins the
next round; that round starts when the one in flight ends, led by whichever of
its callers gets there first, and answers all of them at once. An fsync that
fails fails every caller of its round, and is never retried for them: after a
failed fsync, a second one may succeed although the names were lost (Linux
forgets the error), so "queued" is never said on a retry.
"""
import errno
import threading


class _Round:
    __slots__ = ("started", "finished", "error")

    def __init__(self):
        self.started = self.finished = False
        self.error = None


class GroupSync:
    """sync(path): return once an fsync of `path` begun after the call has succeeded; raise its
    OSError otherwise. One instance per directory (todo/ of one home)."""

    def __init__(self, fsync_dir):
        self._fsync_dir = fsync_dir
        self._cond = threading.Condition()
        self._flying = None         # the round whose fsync runs now
        self._gathering = None      # the round callers join while one flies

    def sync(self, path):
        with self._cond:
            if self._flying is None:
                mine = self._flying = _Round()
            else:
                if self._gathering is None:
                    self._gathering = _Round()
                mine = self._gathering
                while not mine.started:
                    if self._flying is None:      # the round before ended: lead this one
                        self._flying, self._gathering = mine, None
                        break
                    self._cond.wait()
            if not mine.started:
                mine.started = True
                self._cond.release()
                try:
                    self._fsync_dir(path)
                except BaseException as e:      # whatever stopped it, nobody of this round is on disk
                    mine.error = e
                    raise
                finally:
                    self._cond.acquire()
                    mine.finished, self._flying = True, None
                    self._cond.notify_all()
            while not mine.finished:
                self._cond.wait()
            if isinstance(mine.error, OSError):
                raise mine.error
            if mine.error is not None:          # the leader's own exception stays the leader's
                raise OSError(errno.EIO, "the shared fsync of todo/ did not finish: %r" % (mine.error,))
