"""The lines qmail-local writes (Return-Path, Delivered-To, mbox From_) and the
environment it gives programs, byte for byte as qmail-local.c builds them.

Arguments arrive as str (surrogate-escaped argv); everything written to a
file is bytes, so os.fsencode() gets the exact argv bytes back.
"""
import os
import time

from qmailpy.proto.quote import quote2  # noqa: F401  (qmail-local's Return-Path quoting)

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")       # tm_wday 0 = Monday
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def dtline(local, host):
    """b'Delivered-To: local@host\\n' (a \\n inside becomes '_')."""
    line = b"Delivered-To: " + os.fsencode(local) + b"@" + os.fsencode(host)
    return line.replace(b"\n", b"_") + b"\n"


def rpline(sender):
    """b'Return-Path: <sender>\\n', the local part quoted as quote2() does."""
    line = b"Return-Path: <" + quote2(os.fsencode(sender))
    return line.replace(b"\n", b"_") + b">\n"


def myctime(ts):
    """myctime.c: 'Thu Feb 01 09:05:03 2024\\n' in UTC (day zero-padded, unlike ctime)."""
    t = time.gmtime(int(ts))
    return "%s %s %02d %02d:%02d:%02d %d\n" % (
        _DAYS[t.tm_wday], _MONTHS[t.tm_mon - 1], t.tm_mday,
        t.tm_hour, t.tm_min, t.tm_sec, t.tm_year)


def ufline(sender, ts):
    """The mbox 'From ' line: sender with blanks made '-', MAILER-DAEMON for <>."""
    s = os.fsencode(sender)
    if s:
        s = s.replace(b" ", b"-").replace(b"\t", b"-").replace(b"\n", b"-")
    else:
        s = b"MAILER-DAEMON"
    return b"From " + s + b" " + myctime(ts).encode("ascii")


def ext_parts(ext):
    """EXT, EXT2, EXT3, EXT4: each drops one more '-'-separated word from the front."""
    out = [ext]
    x = ext
    for _ in range(3):
        dash = x.find("-")
        x = "" if dash < 0 else x[dash + 1:]
        out.append(x)
    return out


def host_parts(host):
    """HOST2, HOST3, HOST4: each drops one more '.'-separated word from the end."""
    out = []
    end = len(host)
    for _ in range(3):
        dot = host.rfind(".", 0, end)
        end = end if dot < 0 else dot
        out.append(host[:end])
    return out


def environment(base, a, lines, newsender, default=None):
    """The environment qmail-local hands programs and qmail-queue.

    `a` has user, homedir, local, ext, host, sender; `lines` has dt, rp, uf
    (bytes). NEWSENDER is always set, DEFAULT only when a -default file matched, as in qmail.
    """
    env = dict(base)
    env.update(HOST=a.host, HOME=a.homedir, USER=a.user, LOCAL=a.local,
               RECIPIENT="%s@%s" % (a.local, a.host),
               DTLINE=os.fsdecode(lines.dt), SENDER=a.sender,
               RPLINE=os.fsdecode(lines.rp), UFLINE=os.fsdecode(lines.uf))
    for name, value in zip(("EXT", "EXT2", "EXT3", "EXT4"), ext_parts(a.ext)):
        env[name] = value
    for name, value in zip(("HOST2", "HOST3", "HOST4"), host_parts(a.host)):
        env[name] = value
    if default is not None:
        env["DEFAULT"] = default
    env["NEWSENDER"] = newsender
    return env
