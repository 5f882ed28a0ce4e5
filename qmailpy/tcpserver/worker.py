"""A worker: a forked copy of the loaded server that runs sessions one after another.

The parent accepts each connection and hands it to an idle worker over the
worker's channel (a SOCK_SEQPACKET pair: the socket travels as SCM_RIGHTS
with the client's address, `IP PORT`); the worker runs the session
(qmailpy.tcpserver.child.session) and answers `end CODE`, the session's exit
code, which the parent logs as tcpserver logs a child's end. Forking a
worker costs what forking a child per connection cost (1-2 ms of pages
copied as the session touches them); a worker pays it once for up to
$QMAILPY_MAXUSE sessions, as Postfix's smtpd does with max_use. The channel's
end (the parent closes it: max use reached, idle too long, SIGTERM, or the
parent died) is the worker's exit. The two messages' codec lives here, for
both ends.
"""
import os
import socket

from qmailpy.errstr import error_str
from qmailpy.exitcodes import EXIT_TROUBLE
from qmailpy.log import write_bug, write_line
from qmailpy.progstart import fresh_signals, ignored_signals
from qmailpy.tcpserver import child

MESSAGE_MAX = 128


def connection_message(peer):
    """What the parent sends with a connection's socket: the client's address."""
    return ("%s %d" % (peer[0], peer[1])).encode()


def parse_connection(data):
    ip, port = data.decode().rsplit(" ", 1)
    return ip, int(port)


def end_message(code):
    """What a worker answers when a session ends: its exit code."""
    return b"end %d" % code


def parse_end(data):
    """The exit code of an `end` message (None for anything else)."""
    word, _, code = data.partition(b" ")
    if word != b"end" or not code.isdigit():
        return None
    return int(code)


def report(chan, code):
    """Send a session's end; when it cannot be sent (the parent is gone, or the channel failed),
    the worker's exit is the end, with the session's code, which the parent then logs."""
    try:
        chan.send(end_message(code & 0xff))
    except OSError:
        os._exit(code & 0xff)


def serve(chan, opts, runner, base_env):
    """The worker's life (never returns): sessions until the channel ends, then exit 0."""
    try:
        log = (lambda line: write_line(2, line)) if opts.verbosity else (lambda line: None)
        ignored = ignored_signals()         # the server's: what an exec'd session would find ignored
        while True:
            fresh_signals(ignored)          # as an exec'd session: not the parent's handlers, nor the last session's
            try:
                data, fds, _, _ = socket.recv_fds(chan, MESSAGE_MAX, 1)
            except ConnectionResetError:    # the parent closed the channel with our last `end` unread
                break
            except OSError as e:            # the connection handed over cannot be had: it is dropped
                log(child.DROP + "unable to take over: " + error_str(e))    # (closed with the channel),
                os._exit(EXIT_TROUBLE)      # and the parent logs this worker's end as its session's
            if not data:
                break
            if len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                report(chan, 111)
                continue
            # family and type given: Python then needs no getsockname of its own (one that failed
            # would raise here); child.session's is tcpserver's `unable to get local address`
            sock = socket.socket(opts.family, socket.SOCK_STREAM, 0, fds[0])
            code = child.session(sock, parse_connection(data), opts, runner, base_env, log)
            report(chan, code)
    except KeyboardInterrupt:               # SIGINT between sessions: as a fresh program, no traceback
        os._exit(130)
    except Exception as e:                  # a bug: one log line (never raises), qmail's trouble exit
        write_bug(child.PROGRAM, e)
        os._exit(EXIT_TROUBLE)
    except BaseException:                   # SystemExit...: never back into the parent's code
        os._exit(EXIT_TROUBLE)
    os._exit(0)
