"""qmail-rspawn: qmail-remote's r/h/s + K/Z/D output folded into one report, as qmail-rspawn.c does."""
import os

import pytest

from qmailpy.spawn import rspawn
from test_send_support import SpawnClient, queue_message, scratch  # noqa: F401 (scratch: fixture)


@pytest.mark.parametrize("output,report", [
    (b"r\0Kmx accepted message.\n\0", b"Kmx accepted message.\n"),
    (b"rgood\0Kmx accepted.\n\0", b"Kgoodmx accepted.\n"),
    (b"h550 no\0Kmx accepted.\n\0", b"D550 no"),                       # K better than h: recipient text only
    (b"s450 later\0Kmx accepted.\n\0", b"Z450 later"),
    (b"h550 no\0Dmx said no.\n\0", b"D550 nomx said no.\n"),
    (b"s450 later\0Zmx said later.\n\0", b"Z450 latermx said later.\n"),
    (b"s450 later\0Dmx said no.\n\0", b"Z450 latermx said no.\n"),       # s forces Z whatever the message says
    (b"r\0Zconnection died.\n\0", b"Zconnection died.\n"),
    (b"ZSorry, I couldn't find any host named x. (#5.1.2)\n\0", b"ZSorry, I couldn't find any host named x. (#5.1.2)\n"),
    (b"DSorry, no MX. (#5.1.2)\n\0", b"DSorry, no MX. (#5.1.2)\n"),
    (b"r\0", b"D"),                                                    # no message report at all: D
    (b"junk without nul", b"D"),
])
def test_report_combination(output, report):
    assert rspawn.report(0, output) == report


def test_exit_status_reports():
    assert rspawn.report(-9, b"r\0K\0") == b"Zqmail-remote crashed.\n"
    assert rspawn.report(111, b"") == b"ZUnable to run qmail-remote.\n"
    assert rspawn.report(100, b"") == b"DUnable to run qmail-remote.\n"
    assert rspawn.report(1, b"r\0K\0") == b"DUnable to run qmail-remote.\n"
    assert rspawn.report(0, b"") == b"Zqmail-remote produced no output.\n"


def script(scratch, name, body):
    path = os.path.join(scratch.fake, name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, 0o755)
    return path


@pytest.mark.parametrize("body,report", [
    ("cat >/dev/null; printf 'r\\0Khost accepted: %s %s %s\\n\\0' \"$1\" \"$2\" \"$3\"",
     b"Khost accepted: far.example alice@localhost bob@far.example\n"),
    ("exit 111", b"ZUnable to run qmail-remote.\n"),
    ("exit 3", b"DUnable to run qmail-remote.\n"),
    ("cat >/dev/null", b"Zqmail-remote produced no output.\n"),
    ("kill -9 $$", b"Zqmail-remote crashed.\n"),
])
def test_real_qmail_remote_runs(scratch, body, report):
    client = SpawnClient("qmail-rspawn", scratch.env(QMAILREMOTE=script(scratch, "remote", body)))
    try:
        assert client.one(queue_message(scratch.home), b"alice@localhost", b"bob@far.example") == report
    finally:
        assert client.close()[0] == 0


def test_missing_qmail_remote(scratch):
    client = SpawnClient("qmail-rspawn", scratch.env(QMAILREMOTE="/nonexistent/qmail-remote"))
    try:
        assert client.one(queue_message(scratch.home), b"a@b", b"bob@far.example") == b"DUnable to run qmail-remote.\n"
    finally:
        client.close()


def test_start_forgets_the_hosts_qmail_remote_marked_down(scratch):
    """qmail-rspawn.c initialize() calls tcpto_clean(): every start zeroes queue/lock/tcpto
    (1024 NUL bytes), so the hosts a stopped qmail had marked down are tried again."""
    from qmailpy.queue.layout import tcpto_path
    path = tcpto_path(scratch.home)
    down = bytes([192, 0, 2, 25, 2, 0, 0, 0]) + (2 ** 31).to_bytes(4, "little") + bytes(4)
    with open(path, "wb") as f:
        f.write(down + bytes(1024 - 16))
    client = SpawnClient("qmail-rspawn", scratch.env(QMAILREMOTE=script(scratch, "remote", "cat >/dev/null; printf 'r\\0Kok\\n\\0'")))
    try:
        assert client.one(queue_message(scratch.home), b"a@b", b"bob@far.example") == b"Kok\n"
    finally:
        assert client.close()[0] == 0
    with open(path, "rb") as f:
        assert f.read() == bytes(1024)
