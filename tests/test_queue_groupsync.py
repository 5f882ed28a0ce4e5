"""qmail-queued's group commit of todo/ (qmailpy/queue/groupsync.py): one fsync for the
commits made before it began, never a caller told "on disk" by an fsync that began before
its own link, and a failed fsync failing every caller it was meant to cover."""
import threading
import time

import pytest

from qmailpy.queue.groupsync import GroupSync


class Disk:
    """A directory fsync that notes what it covers: the links made when it began."""

    def __init__(self, fail_rounds=()):
        self.lock = threading.Lock()
        self.links = 0
        self.rounds = []                # links covered by each fsync, in order
        self.fail_rounds = set(fail_rounds)

    def link(self):
        with self.lock:
            self.links += 1
            return self.links

    def fsync(self, path):
        assert path == "todo"
        with self.lock:
            covered = self.links
            n = len(self.rounds)
            self.rounds.append(covered)
        time.sleep(0.01)                # long enough for others to link and wait meanwhile
        if n in self.fail_rounds:
            raise OSError(5, "Input/output error")
        return covered


def run_callers(disk, group, count):
    results = {}

    def caller():
        ticket = disk.link()
        rounds_before = len(disk.rounds)
        try:
            group.sync("todo")
            results[ticket] = ("ok", rounds_before)
        except OSError as e:
            results[ticket] = ("error %d" % e.errno, rounds_before)

    threads = [threading.Thread(target=caller) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_every_caller_is_covered_by_an_fsync_that_began_after_its_link():
    disk = Disk()
    results = run_callers(disk, GroupSync(disk.fsync), 60)
    assert sorted(results) == list(range(1, 61))
    assert all(status == "ok" for status, _ in results.values())
    for ticket, (_, rounds_before) in results.items():
        # some fsync that began after this caller's link (and after it called) covers it
        assert any(covered >= ticket for covered in disk.rounds[rounds_before:]), (ticket, disk.rounds)
    assert len(disk.rounds) < 60          # shared: 60 commits, fewer fsyncs
    assert disk.rounds == sorted(disk.rounds)


def test_one_caller_alone_gets_its_own_fsync():
    disk = Disk()
    group = GroupSync(disk.fsync)
    for _ in range(3):
        disk.link()
        group.sync("todo")
    assert disk.rounds == [1, 2, 3]


def test_a_failed_fsync_fails_its_whole_round_and_is_not_retried_for_it():
    disk = Disk(fail_rounds={0})
    group = GroupSync(disk.fsync)
    first = {}

    def leader():
        disk.link()
        try:
            group.sync("todo")
            first["got"] = "ok"
        except OSError as e:
            first["got"] = e.errno

    t = threading.Thread(target=leader)
    t.start()
    while not disk.rounds:
        time.sleep(0.001)
    results = run_callers(disk, group, 10)      # they join round 1, after the failing round 0
    t.join(30)
    assert first["got"] == 5
    assert disk.rounds[0] == 1
    assert all(status == "ok" for status, _ in results.values()), results
    assert len(disk.rounds) >= 2


@pytest.mark.parametrize("failing", [1, 2])
def test_callers_of_a_failed_round_all_get_its_error(failing):
    disk = Disk(fail_rounds={failing})
    results = run_callers(disk, GroupSync(disk.fsync), 40)
    failed = {t for t, (status, _) in results.items() if status != "ok"}
    assert {results[t][0] for t in failed} <= {"error 5"}
    covered = disk.rounds
    # a caller is told ok only if a successful fsync that began after its link covers it
    for ticket, (status, rounds_before) in results.items():
        if status == "ok":
            assert any(c >= ticket for n, c in enumerate(covered) if n >= rounds_before and n != failing)
    if len(covered) > failing:
        assert failed, (covered, results)


def test_an_fsync_stopped_by_anything_else_tells_nobody_of_its_round_it_is_on_disk():
    """A leader's fsync stopped by something that is not an OSError (MemoryError, a signal's
    exception): the leader gets its exception, the others of the round EIO, never success."""
    calls = []

    def fsync(path):
        calls.append(path)
        time.sleep(0.3)                 # the three others gather meanwhile
        if len(calls) == 2:
            raise MemoryError()

    group = GroupSync(fsync)
    results = []

    def caller():
        try:
            group.sync("todo")
            results.append("ok")
        except MemoryError:
            results.append("leader's own")
        except OSError as e:
            results.append("error %d" % e.errno)

    first = threading.Thread(target=caller)
    first.start()
    while not calls:
        time.sleep(0.001)
    others = [threading.Thread(target=caller) for _ in range(3)]     # one round, after the first
    for t in others:
        t.start()
    for t in [first] + others:
        t.join(10)
    assert len(calls) == 2
    assert sorted(results) == ["error 5", "error 5", "leader's own", "ok"]
