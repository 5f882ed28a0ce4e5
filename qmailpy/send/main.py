"""qmail-send (with qmail-start's job): schedules deliveries, retries and bounces.

usage: qmail-send [defaultdelivery]   (default ./Maildir/, handed to qmail-lspawn)
Reads $QMAILHOME (default /var/qmail) and its controls; logs to stderr, one
line per event. Exit 0 after SIGTERM, 111 when it cannot start (controls,
queue, lock/sendmutex held by a running qmail-send, helpers that do not
start). See docs/qmail-send.md.
"""
import errno
import fcntl
import os
import sys
import time

from qmailpy import clock, exitcodes as X, paths
from qmailpy.ctl.reader import Controls
from qmailpy.send import loop, start
from qmailpy.send.cleanclient import CleanClient
from qmailpy.send.channel import Channel
from qmailpy.send.config import SendConfig
from qmailpy.send.inject import Injector
from qmailpy.log import Log, guard
from qmailpy.send.scheduler import Scheduler
from qmailpy.progstart import start as start_program
from qmailpy.proto import spawnwire
from qmailpy.queue import layout

DEFAULT_DELIVERY = "./Maildir/"
LOCK_WAIT = 10.0        # seconds to wait for a previous qmail-send's helpers to let go of the lock
REAP_WAIT = 30.0


def take_lock(home):
    """An fd holding lock/sendmutex, or None when another qmail-send keeps it. We are root and
    lock/ is qmailq's: a link there is not followed and only a regular file is locked (OSError),
    so root never opens a device nor waits on a FIFO."""
    fd = layout.open_own_regular(paths.queue_path(home, "lock", "sendmutex"), os.O_WRONLY)
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or time.monotonic() > deadline:
                os.close(fd)
                return None
            time.sleep(0.05)


def read_limit(fd):
    """The 2-byte limit a spawn writes first; None when it died instead."""
    data = b""
    while len(data) < spawnwire.WIDTH:
        try:
            got = os.read(fd, spawnwire.WIDTH - len(data))
        except OSError:
            return None
        if not got:
            return None
        data += got
    return spawnwire.decode_delnum(data)


USAGE = """usage: qmail-send [defaultdelivery]
The scheduler: starts qmail-lspawn (with defaultdelivery, default ./Maildir/),
qmail-rspawn, qmail-clean and qmail-todo, and runs until SIGTERM.
See docs/qmail-send.md."""


@guard("qmail-send", X.EXIT_TROUBLE)
def main():
    start_program(USAGE)
    flags = loop.Flags()
    wake_fd = loop.install_signals(flags)     # first, as qmail-send.c: an early svc -h/-a/-t must not kill us
    log = Log(2)
    home = os.path.abspath(paths.qmailhome(os.environ))
    environ = dict(os.environ, QMAILHOME=home)      # the helpers must not depend on our cwd
    aliasempty = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_DELIVERY
    try:
        config = SendConfig(Controls(home, environ))
    except OSError as e:
        log.line("alert: cannot start: unable to read controls: %s" % e)
        return X.EXIT_TROUBLE
    if not os.path.isdir(paths.queue_path(home)):
        log.line("alert: cannot start: unable to switch to queue directory")
        return X.EXIT_TROUBLE
    foreign = layout.foreign_layout(home)
    if foreign:
        log.line("alert: cannot start: %s" % foreign)
        return X.EXIT_TROUBLE
    os.umask(0o077)
    injector = Injector(home, environ)            # finds qmail-queue beside us: before any chdir
    try:
        lock_fd = take_lock(home)
    except OSError:
        log.line("alert: cannot start: unable to open mutex")
        return X.EXIT_TROUBLE
    if lock_fd is None:
        log.line("alert: cannot start: qmail-send is already running")
        return X.EXIT_TROUBLE
    ids = start.qmail_ids(environ)
    children = start.start_children(environ, aliasempty, lock_fd, ids)
    start.drop_privileges(ids)
    os.chdir(home)
    channels = []
    for c, name in enumerate(("lspawn", "rspawn")):
        limit = read_limit(children[name].frm)
        if limit is None:
            log.line("alert: cannot start: hath the daemon spawn no fire?")
            start.reap(children, REAP_WAIT)
            return X.EXIT_TROUBLE
        channels.append(Channel(c, children[name].to, children[name].frm, limit))
        channels[-1].set_concurrency(config.concurrency[c])
    clk = clock.Clock(clock.parse_scale(environ))
    sched = Scheduler(home, clk, log, config, channels,
                      CleanClient(children["clean"].to, children["clean"].frm), injector)
    the_loop = loop.Loop(sched, children["todo"], children["lspawn"].pid, wake_fd, flags, environ)
    the_loop.start()
    rc = the_loop.run()
    start.reap(children, REAP_WAIT)
    return rc
