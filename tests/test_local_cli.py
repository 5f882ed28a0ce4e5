"""bin/qmail-local as qmail-lspawn runs it: message on fd 0, report on fd 1, exit code."""
import glob
import os
import subprocess

from conftest import program
from qmailpy.queue import layout
from test_local_support import Box

MSG = b"Subject: cli\n\nbody\n"


def run(box, *args, message=MSG, env=None):
    path = os.path.join(str(box.root), "cli-msg")
    with open(path, "wb") as f:
        f.write(message)
    with open(path, "rb") as m:
        p = subprocess.run([program("qmail-local"), *args], stdin=m, capture_output=True,
                           env=env or box.env, timeout=60)
    return p.returncode, p.stdout, p.stderr


def args(box, ext="", dash="", sender="bob@ex.org", aliasempty="./Maildir/"):
    local = "joe" + dash + ext
    return ["joe", box.home, local, dash, ext, "example.com", sender, aliasempty]


def test_success(tmp_path):
    box = Box(tmp_path)
    assert run(box, *args(box)) == (0, b"did 1+0+0\n", b"")
    assert box.only()[1] == b"Return-Path: <bob@ex.org>\nDelivered-To: joe@example.com\n" + MSG


def test_no_mailbox(tmp_path):
    box = Box(tmp_path)
    assert run(box, *args(box, ext="x", dash="-")) == (
        100, b"Sorry, no mailbox here by that name. (#5.1.1)\n", b"")


def test_usage(tmp_path):
    box = Box(tmp_path)
    code, out, _ = run(box, "joe")
    assert code == 100 and out.startswith(b"qmail-local: usage: ")


def test_over_quota(tmp_path):
    box = Box(tmp_path)
    assert run(box, *args(box), env=dict(box.env, MAILDIRQUOTA="10S")) == (
        100, b"User over quota. (#5.1.1)\n", b"")


def test_program_output_and_temp_failure(tmp_path):
    box = Box(tmp_path)
    box.dotqmail(".qmail", "|echo deferred: $LOCAL; exit 111\n")
    assert run(box, *args(box)) == (111, b"deferred: joe\n", b"")


def test_non_utf8_bytes_survive(tmp_path):
    box = Box(tmp_path)
    box.dotqmail(".qmail", "|printf '%s\\377\\n' \"$DTLINE\"; exit 100\n")
    code, out, _ = run(box, "joe", box.home, "j\udcffoe", "", "", "h\udcfe", "s", "./x/")
    assert (code, out) == (100, b"Delivered-To: j\xffoe@h\xfe\n\xff\n")


def test_forward_into_real_queue(tmp_path):
    box = Box(tmp_path)
    qhome = box.env["QMAILHOME"]
    layout.create_queue(qhome)
    box.dotqmail(".qmail", "&a@x.org\n&b@y.org\n")
    env = dict(box.env, QMAILQUEUE=program("qmail-queue"))
    code, out, err = run(box, *args(box), env=env)
    assert code == 0, (out, err)
    assert out.startswith(b"did 0+2+0\nqp ")
    mess = glob.glob(os.path.join(qhome, "queue", "mess", "*", "*"))
    assert len(mess) == 1
    with open(mess[0], "rb") as f:
        queued = f.read()
    assert queued.startswith(b"Received: (qmail ")
    assert queued.endswith(b"\nDelivered-To: joe@example.com\n" + MSG)
    todo = [t for t in glob.glob(os.path.join(qhome, "queue", "todo", "**"), recursive=True)
            if os.path.isfile(t)]
    assert len(todo) == 1
    with open(todo[0], "rb") as f:
        assert f.read().endswith(b"\0Fbob@ex.org\0Ta@x.org\0Tb@y.org\0")
