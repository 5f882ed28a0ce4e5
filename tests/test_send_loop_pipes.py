"""qmail-send's loop and its spawn pipes: commands that do not fit the pipe, a spawn gone.

qmail-send.c's comm_write()/comm_do(): commands go into a buffer written when the pipe
to the spawn is writable, so a spawn slow to read holds up nothing and every command
arrives whole, once, in order; a write that fails (the spawn died) is 'alert: oh no! lost
spawn connection! dying...' and qmail-send stops. The loop runs in-process on real pipes;
the test plays qmail-lspawn (and keeps qmail-todo's pipes open).
"""
import fcntl
import os
from pathlib import Path

import pytest

from qmailpy.proto import spawnwire
from qmailpy.queue import layout
from qmailpy.send import loop
from qmailpy.send.channel import Channel
from test_send_finish_faults import scheduler
from test_send_support import scratch  # noqa: F401 (scratch: fixture)

PIPE_SIZE = 4096
COUNT = 10
BASE = 2000


class Todo:
    """qmail-todo's end: fds the loop reads from and writes to."""
    def __init__(self):
        self.frm, self.their_w = os.pipe()
        self.their_r, self.to = os.pipe()


class Rig:
    """A Loop over a scheduler whose local channel's pipes the test holds (the other end)."""

    def __init__(self, scratch):
        self.cmd_r, cmd_w = os.pipe()
        fcntl.fcntl(cmd_w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        rep_r, self.rep_w = os.pipe()
        self.remote = [os.pipe(), os.pipe()]
        self.sched = scheduler(scratch)
        self.sched.channels = [Channel(0, cmd_w, rep_r, 10), Channel(1, self.remote[0][1], self.remote[1][0], 20)]
        for ch, wanted in zip(self.sched.channels, (10, 20)):
            ch.set_concurrency(wanted)
        self.todo = Todo()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK)
        self.flags = loop.Flags()
        self.loop = loop.Loop(self.sched, self.todo, os.getpid(), self.wake_r, self.flags, scratch.env())
        self.fds = [self.cmd_r, cmd_w, rep_r, self.rep_w, *self.remote[0], *self.remote[1], self.todo.frm,
                    self.todo.their_w, self.todo.their_r, self.todo.to, self.wake_r, self.wake_w]

    def turn(self):
        """One turn of the loop that does not wait (a byte on the signal pipe, as a signal would)."""
        os.write(self.wake_w, b"\0")
        self.loop.turn()

    def close(self):
        self.loop.sel.close()
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def rig(scratch):
    r = Rig(scratch)
    yield r
    r.close()


def long_recipient(n):
    return b"user%d-%s@localhost" % (n, b"x" * 900)


def queue(scratch, sched, now):
    for n in range(COUNT):
        msgid = BASE + n
        Path(layout.mess_path(scratch.home, msgid)).write_bytes(b"Subject: x\n\nbody\n")
        Path(layout.info_path(scratch.home, msgid)).write_bytes(b"Falice@localhost\0")
        Path(layout.local_path(scratch.home, msgid)).write_bytes(b"T" + long_recipient(n) + b"\0")
        os.utime(layout.local_path(scratch.home, msgid), (now - 1, now - 1))
        sched.pqadd(msgid, now)


def test_commands_that_do_not_fit_the_pipe_arrive_whole_once_and_in_order(scratch, rig):
    queue(scratch, rig.sched, rig.sched.now())
    ch = rig.sched.channels[0]
    rig.turn()
    assert len(ch.active) == COUNT and ch.outbuf          # the pipe took 4096 bytes, the rest waits
    got, waited = bytearray(), 0
    while ch.outbuf:
        assert waited < 100, "commands still waiting: %d bytes" % len(ch.outbuf)
        got += os.read(rig.cmd_r, 65536)
        rig.turn()
        assert ch in rig.loop.writing                     # the loop waits for the pipe to take more
        waited += 1
    rig.turn()
    assert ch not in rig.loop.writing                     # nothing left: no wait on a writable pipe (a spin)
    os.set_blocking(rig.cmd_r, False)
    try:
        got += os.read(rig.cmd_r, 65536)
    except BlockingIOError:
        pass
    decoder = spawnwire.CommandDecoder()
    commands = decoder.feed(bytes(got))
    assert [(c.delnum, c.messid, c.sender, c.recipient) for c in commands] == [
        (n, b"%d/%d" % ((BASE + n) % 23, BASE + n), b"alice@localhost", long_recipient(n)) for n in range(COUNT)]
    assert not rig.flags.exit


@pytest.mark.parametrize("when", ["with commands waiting", "before the first command"])
def test_a_spawn_that_stops_reading_is_lost_and_qmail_send_stops(scratch, rig, when):
    """The spawn's end of the command pipe closed, with commands waiting for the pipe or
    before the first one is written: EPIPE, qmail's alert once, no more commands, exitasap."""
    queue(scratch, rig.sched, rig.sched.now())
    ch = rig.sched.channels[0]
    if when == "with commands waiting":
        rig.turn()
        assert ch.outbuf
    os.close(rig.cmd_r)
    rig.fds.remove(rig.cmd_r)
    rig.turn()
    assert rig.sched.log.lines.count("alert: oh no! lost spawn connection! dying...") == 1
    assert not ch.alive and rig.flags.exit
    rig.turn()
    assert rig.sched.exitasap and rig.sched.log.lines.count("alert: oh no! lost spawn connection! dying...") == 1


def test_a_bounce_whose_qmail_queue_exits_before_reading_it_is_tried_again(scratch, rig):
    """qmail-queue's exit and its pipe's error come in one select, the exit first: the bounce
    is finished once (exit 0 without reading all: 'qq read error', tried again in 123 s), its
    pipe unregistered with it, and the pipe's event after it is ignored, not written to."""
    import select
    from qmailpy.send.inject import Injector
    from test_send_finish_faults import MSGID, finished
    finished(scratch.home)
    rig.sched.injector = Injector(scratch.home, scratch.env(QMAILQUEUE="/bin/true"))
    rig.sched.copy_refused.add(MSGID)           # any size will do: the copy is left out
    now = rig.sched.now()
    rig.sched.messdone(MSGID, now)
    inj = rig.sched.bounces[MSGID].injection
    rig.loop.update_injections()
    assert select.select([inj.pidfd], [], [], 30)[0]
    assert rig.loop.injecting[inj] == inj.msg_w       # still waiting to write the message
    before = len(rig.loop.sel.get_map())
    rig.loop.on_injection("injected", MSGID, inj, now)
    rig.loop.on_injection("inject", MSGID, inj, now)
    assert rig.sched.log.lines == ["warning: trouble injecting bounce message, will try later"]
    assert rig.sched.pqdone == [(now + 123, MSGID)] and not rig.sched.bounces and not rig.loop.injecting
    assert before - len(rig.loop.sel.get_map()) == 2           # its pidfd and its pipe
    assert os.path.exists(layout.bounce_path(scratch.home, MSGID))


def test_reports_of_a_spawn_found_dead_in_the_same_turn_are_not_read(scratch, rig):
    """One select gives the command pipe's error and then a report: as qmail-send.c (del_do()
    reads only a spawn still alive), the report is not taken, so its record stays T: after the
    restart that recipient gets the message again (twice, never lost)."""
    queue(scratch, rig.sched, rig.sched.now())
    ch = rig.sched.channels[0]
    rig.turn()
    rig.turn()                                  # commands waiting: the pipe is watched for writing
    assert ch.outbuf and ch in rig.loop.writing
    os.close(rig.cmd_r)                         # the error comes first, the report after it
    rig.fds.remove(rig.cmd_r)
    os.write(rig.rep_w, spawnwire.encode_report(0, b"K", b"did_0+0+1/"))
    rig.turn()
    assert rig.sched.log.lines.count("alert: oh no! lost spawn connection! dying...") == 1
    assert not any(ln.startswith("delivery 1:") for ln in rig.sched.log.lines)
    assert 0 in ch.active
    assert Path(layout.local_path(scratch.home, BASE)).read_bytes()[:1] == b"T"
