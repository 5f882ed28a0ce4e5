"""Power loss, not only a crash: each program's success report comes after what it reports is
durable (tests/durability.py replays the program's system calls under strace).

A report is qmail-queue's exit 0, qmail-local's (its exit), a tool's exit 0 after it wrote a
control, qmail-clean's unlink of todo/ (qmail-todo's hand-over), qmail-send's markdone of a
failed recipient (its bounce paragraph is all that is left of it) and its unlink of bounce/
and info/ (the bounce queued, the message finished), double bounces and the triple-bounce drop
included; an existing mbox's append, a maildirsize recount, the sendmail install; and
qmail-remote's K report, which needs nothing local on disk.
"""
import os
import re
import signal
import subprocess
import sys
import time

import durability as D
from conftest import program
from dnsserver import dns_server  # noqa: F401 (fixture)
from smtpsink import sinks  # noqa: F401 (fixture)
from qmailpy.proto import qq
from qmailpy.queue import layout
from test_local_support import Box
from test_send_support import BIN, Send, inject, scratch  # noqa: F401 (scratch: fixture)

MSG = b"From: a@example.org\nSubject: power\n\nbody\n"


def clean(lost):
    assert lost == {}, "not durable at the report: %r" % lost


# -- the checker itself

def traced_script(tmp_path, code):
    d = tmp_path / "d"
    d.mkdir()
    proc, tr = D.run([sys.executable, "-c", "import os\n" + code], cwd=str(d), roots=[str(d)])
    assert proc.returncode == 0, proc.stderr
    return str(d), tr


def test_checker_sees_unsynced_data_and_names(tmp_path):
    d, tr = traced_script(tmp_path, (
        "fd = os.open('a', os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600); os.write(fd, b'x')\n"
        "os.close(fd); os.rename('a', 'b')\n"))
    assert tr.durable(d + "/b", tr.exit_of()) == ["data not fsynced", "name b: %s/ not fsynced" % d]


def test_checker_first_fsync_of_a_new_file_covers_its_name_but_not_a_later_link(tmp_path):
    d, tr = traced_script(tmp_path, (
        "fd = os.open('a', os.O_WRONLY | os.O_CREAT, 0o600); os.write(fd, b'x'); os.fsync(fd)\n"
        "os.close(fd); os.link('a', 'b')\n"))
    assert tr.durable(d + "/a", tr.exit_of()) == []
    assert tr.durable(d + "/b", tr.exit_of()) == ["name b: %s/ not fsynced" % d]


def test_checker_fsync_of_the_directory_covers_a_rename(tmp_path):
    d, tr = traced_script(tmp_path, (
        "fd = os.open('a', os.O_WRONLY | os.O_CREAT, 0o600); os.write(fd, b'x'); os.fsync(fd)\n"
        "os.close(fd); os.rename('a', 'b'); fd = os.open('.', os.O_RDONLY); os.fsync(fd)\n"))
    assert tr.durable(d + "/b", tr.exit_of()) == []


def test_checker_a_write_after_the_fsync_is_not_durable(tmp_path):
    d, tr = traced_script(tmp_path, (
        "fd = os.open('a', os.O_WRONLY | os.O_CREAT, 0o600); os.fsync(fd); os.write(fd, b'x')\n"))
    assert tr.durable(d + "/a", tr.exit_of()) == ["data not fsynced"]


# -- qmail-queue

def test_qmail_queue_exit_0_after_mess_intd_and_todo_are_durable(tmp_path):
    home = str(tmp_path / "qmail")
    layout.create_queue(home)
    (tmp_path / "m").write_bytes(MSG)
    (tmp_path / "e").write_bytes(qq.encode(b"a@example.org", [b"b@example.net"]))
    with open(tmp_path / "m", "rb") as m, open(tmp_path / "e", "rb") as e:
        argv = ["strace", "-f", "-q", "-y", "-s", "4096", "-e", D.CALLS, "-o", str(tmp_path / "t"),
                program("qmail-queue")]
        before = D.snapshot(home)
        assert subprocess.run(argv, stdin=m, stdout=e, env=dict(os.environ, QMAILHOME=home),
                              timeout=60).returncode == 0
    tr = D.Trace((tmp_path / "t").read_text("latin-1"), home, before, [home])
    made = tr.made(r"/queue/(mess/\d+|intd|todo)/\d+$")
    assert [re.sub(r"\d+$", "N", p[len(home):]) for p in made] == [
        "/queue/mess/%s/N" % made[0].split("/")[-2], "/queue/intd/N", "/queue/todo/N"]
    clean(tr.lost_at(made, tr.exit_of()))


# -- qmail-local

def local(box, tmp_path, aliasempty, local="joe", ext=""):
    (tmp_path / "cli-msg").write_bytes(MSG)
    argv = [program("qmail-local"), "--", "joe", box.home, local, "-" if ext else "", ext, "example.com",
            "bob@ex.org", aliasempty]
    with open(tmp_path / "cli-msg", "rb") as m:
        proc, tr = _run_stdin(argv, m, box.env, [box.home, box.env["QMAILHOME"]], tmp_path)
    assert proc.returncode == 0, proc
    return tr


def _run_stdin(argv, stdin, env, roots, tmp_path):
    out = str(tmp_path / "trace")
    before = D.snapshot(*[r for r in roots if os.path.isdir(r)])
    proc = subprocess.run(["strace", "-f", "-q", "-y", "-s", "4096", "-e", D.CALLS, "-o", out] + argv,
                          stdin=stdin, capture_output=True, env=env, timeout=60)
    with open(out, encoding="latin-1") as f:
        return proc, D.Trace(f.read(), "/", before, roots)


def test_qmail_local_maildir_delivery_durable_before_it_reports(tmp_path):
    box = Box(tmp_path)
    tr = local(box, tmp_path, "./Maildir/")
    made = tr.made(r"/Maildir/new/")
    assert len(made) == 1
    clean(tr.lost_at(made, tr.exit_of()))


def test_qmail_local_new_mbox_durable_before_it_reports(tmp_path):
    box = Box(tmp_path)
    tr = local(box, tmp_path, "./Mailbox")
    mbox = os.path.join(box.home, "Mailbox")
    assert tr.made(r"/Mailbox$") == [mbox]
    clean(tr.lost_at([mbox], tr.exit_of()))


def test_qmail_local_forward_queued_durably_before_it_reports(tmp_path):
    box = Box(tmp_path)
    layout.create_queue(box.env["QMAILHOME"])
    os.makedirs(os.path.join(box.env["QMAILHOME"], "control"), exist_ok=True)
    box.dotqmail(".qmail", "&friend@remote.example\n")
    box.env["QMAILQUEUE"] = program("qmail-queue")
    tr = local(box, tmp_path, "./Maildir/")
    made = tr.made(r"/queue/(mess/\d+|intd|todo)/\d+$")
    assert len(made) == 3
    clean(tr.lost_at(made, tr.exit_of()))


# -- tools that write controls

def tool(home, *argv, roots=()):
    proc, tr = D.run([program(argv[0]), *argv[1:]], env=home.env(), roots=[home.root, *roots])
    assert proc.returncode == 0, proc.stderr
    return tr


def test_setsrssecret_secret_durable_before_it_exits(home):
    tr = tool(home, "setsrssecret")
    made = [p for p in tr.made(r"/control/srs/") if os.path.exists(p)]
    assert made
    clean(tr.lost_at(made, tr.exit_of()))


def test_qmail_newu_newmrh_and_newfilters_cdbs_durable_before_they_exit(home):
    os.makedirs(os.path.join(home.root, "users"))
    with open(os.path.join(home.root, "users", "assign"), "w") as f:
        f.write("=joe:joe:1000:1000:/home/joe:::\n.\n")
    home.control("morercpthosts", "example.org\n")
    home.control("clamavclients", "@example.org\n")
    for name, target in (("qmail-newu", "users/cdb"), ("qmail-newmrh", "control/morercpthosts.cdb"),
                         ("qmail-newfilters", "control/clamavclients.cdb")):
        tr = tool(home, name)
        clean(tr.lost_at([os.path.join(home.root, target)], tr.exit_of()))


def test_qmail_config_controls_durable_before_it_exits(home):
    tr = tool(home, "qmail-config", "mx.example.com")
    made = [p for p in tr.made(r"/control/[^/.][^/]*$") if os.path.isfile(p)]
    assert os.path.join(home.root, "control", "me") in made
    clean(tr.lost_at(made, tr.exit_of()))


def test_qmail_users_adddomain_and_adduser_durable_before_they_report(home, tmp_path):
    home.control("me", "mx.example.org\n")
    home.control("vpopmaildir", str(tmp_path / "vpopmail") + "\n")
    tr = tool(home, "qmail-users", "adddomain", "example.org", roots=[str(tmp_path)])
    controls = [p for p in tr.made(r"/control/(virtualdomains|rcpthosts|morercpthosts)$")]
    assert controls
    domain = tr.made(r"/domains/example\.org$")
    assert domain
    clean(tr.lost_at(controls + domain, tr.exit_of()))
    tr = tool(home, "qmail-users", "adduser", "bob@example.org", "-p", "secret", roots=[str(tmp_path)])
    box = [p for p in tr.made(r"/bob(/Maildir)?(/(new|cur|tmp))?$")]
    db = [p for p in tr.made(r"\.(sqlite|db)3?$")]
    clean(tr.lost_at(box + db, tr.exit_of()))


# -- qmail-send: qmail-todo's hand-over, a bounce, the end of a message

class TracedSend(Send):
    """bin/qmail-send under strace -f; stop() ends it and reads the trace."""

    def __init__(self, scratch, **env):
        self.trace_path = os.path.join(scratch.fake, "send.strace")
        self.before = D.snapshot(scratch.home)
        real = BIN
        import test_send_support as S
        S.BIN = type(real)(scratch.fake)
        wrapper = os.path.join(scratch.fake, "qmail-send")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nexec strace -f -q -y -s 4096 -e '%s' -o %s %s\n"
                    % (D.CALLS, self.trace_path, real / "qmail-send"))
        os.chmod(wrapper, 0o755)
        try:
            super().__init__(scratch, **env)
        finally:
            S.BIN = real

    def send_pid(self):
        return int(open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)).read().split()[0])

    def kill9(self):
        """A failed test's cleanup (Scratch.cleanup): SIGKILL to strace alone would leave the
        traced qmail-send running, detached, with its helpers; kill it first."""
        try:
            os.kill(self.send_pid(), signal.SIGKILL)
        except (OSError, IndexError, ValueError):
            pass                    # not started yet, or gone
        super().kill9()

    def stop_traced(self):
        os.kill(self.send_pid(), signal.SIGTERM)
        assert self.proc.wait(timeout=60) == 0
        self.logfile.close()
        with open(self.trace_path, encoding="latin-1") as f:
            return D.Trace(f.read(), "/", self.before, [self.scratch.home])


def test_qmail_send_hands_over_bounces_and_finishes_only_what_is_durable(scratch):  # noqa: F811
    msgid = inject(scratch.home, MSG, b"alice@localhost", [b"joe@localhost", b"fail@localhost"])
    send = TracedSend(scratch)
    send.wait_line(r"^end msg %d$" % msgid)
    send.wait_for(lambda: scratch.mail("alice@localhost"), what="the bounce")
    send.wait_line(r"^end msg (?!%d$)\d+$" % msgid)
    tr = send.stop_traced()
    q = os.path.join(scratch.home, "queue")
    split = layout.SPLIT
    info = "%s/info/%d/%d" % (q, msgid % split, msgid)
    chan = "%s/local/%d/%d" % (q, msgid % split, msgid)
    bounce = "%s/bounce/%d" % (q, msgid)

    # qmail-todo -> qmail-clean: todo/ goes only when info/ and local/ are on disk
    clean(tr.lost_at([info, chan], tr.unlinked(r"/queue/todo/%d$" % msgid)))
    for at in tr.find_all(lambda ev: ev.call == "unlink" and re.search(r"/queue/todo/\d+$", ev.paths[0])):
        n = int(tr.events[at].paths[0].rsplit("/", 1)[1])      # the bounce's hand-over too
        made = tr.made(r"/queue/(info|local|remote)/%d/%d$" % (n % split, n))
        assert made[0].endswith("/info/%d/%d" % (n % split, n))
        clean(tr.lost_at(made, at))
    # a failed recipient is marked done only when its paragraph in bounce/ is on disk
    appended = tr.find(lambda ev: ev.call == "write" and ev.fdpath == bounce, "append to bounce/")
    marked = tr.find(lambda ev: ev.index > appended and ev.call == "pwrite64" and ev.fdpath == chan,
                     "markdone after the bounce paragraph")
    clean(tr.lost_at([bounce], marked))
    # bounce/ goes only when the bounce is queued, info/ only after that
    gone = tr.unlinked(re.escape(bounce) + "$")
    queued = [p for p in tr.made(r"/queue/(mess/\d+|intd|todo)/\d+$") if not p.endswith("/%d" % msgid)]
    assert len(queued) == 3, queued
    linked = tr.find(lambda ev: ev.call == "link" and ev.paths[1] == queued[-1], "the bounce's commit")
    exited = tr.exit_of(tr.events[linked].pid)    # qmail-queue's exit 0: what qmail-send waits for
    assert exited < gone
    lost = tr.lost_at(queued, exited)
    if lost and all(why == ["removed"] for why in lost.values()):
        assert tr.unlinked(r"/queue/todo/%s$" % queued[-1].rsplit("/", 1)[1]) < exited
        lost = {}                   # qmail-todo took it before qmail-queue exited: checked above
    clean(lost)
    assert tr.unlinked(re.escape(info) + "$") > gone


# -- qmail-queued: its reply to the client

def test_qmail_queued_replies_0_after_mess_intd_and_todo_are_durable(tmp_path):
    from queuedsvc import QUEUED, Queued
    home = str(tmp_path / "qmail")
    layout.create_queue(home)
    os.makedirs(os.path.join(home, "control"))
    trace = str(tmp_path / "trace")
    before = D.snapshot(home)
    svc = Queued(home, os.environ, argv=["strace", "-f", "-q", "-y", "-s", "4096", "-e", D.CALLS, "-o", trace,
                                         QUEUED]).start()
    try:
        (tmp_path / "m").write_bytes(MSG)
        (tmp_path / "e").write_bytes(qq.encode(b"a@example.org", [b"b@example.net"]))
        with open(tmp_path / "m", "rb") as m, open(tmp_path / "e", "rb") as e:
            assert subprocess.run([program("qmail-queue")], stdin=m, stdout=e, timeout=60,
                                  env=dict(os.environ, QMAILHOME=home)).returncode == 0
    finally:
        real = int(open("/proc/%d/task/%d/children" % (svc.proc.pid, svc.proc.pid)).read().split()[0])
        os.kill(real, signal.SIGTERM)
        svc.proc.wait(timeout=60)
    with open(trace, encoding="latin-1") as f:
        tr = D.Trace(f.read(), "/", before, [home])
    made = tr.made(r"/queue/(mess/\d+|intd|todo)/\d+$")
    assert len(made) == 3, made
    reply = tr.find(lambda ev: ev.call in ("write", "sendto", "sendmsg") and (ev.fdpath or "").startswith("socket:")
                    and re.match(rb"\d+:0 \d+,", ev.data), "the service's 0 reply")
    clean(tr.lost_at(made, reply))


# -- qmail-smtpd: 250 ok

def test_qmail_smtpd_says_250_ok_after_the_message_is_durable(home, tmp_path):
    layout.create_queue(home.root)
    home.control("me", "mx.example.org")
    home.control("rcpthosts", "example.org")
    dialogue = (b"HELO client.example\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
                b"Subject: power\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    proc, tr = D.run([program("qmail-smtpd")], input=dialogue, roots=[home.root],
                     env=home.env(TCPREMOTEIP="127.0.0.1", TCPLOCALIP="127.0.0.1", TCPLOCALPORT="25",
                                  QMAILQUEUE=program("qmail-queue")))
    assert b"\r\n250 ok " in proc.stdout, proc.stdout
    made = tr.made(r"/queue/(mess/\d+|intd|todo)/\d+$")
    assert len(made) == 3, made
    clean(tr.lost_at(made, tr.written(b"250 ok ")))


def test_qmail_send_finishes_a_message_only_after_qmail_local_made_it_durable(scratch):  # noqa: F811
    maildir = os.path.join(scratch.fake, "Maildir")
    owner = os.getuid() if os.getuid() else 65534      # qmail-lspawn runs the delivery as this user
    os.chmod(scratch.fake, 0o755)                        # qmail-local defers for a writable home
    for sub in ("", "tmp", "new", "cur"):
        os.mkdir(os.path.join(maildir, sub))
        os.chown(os.path.join(maildir, sub), owner, -1)
    with open(os.path.join(scratch.fake, ".qmail-default"), "w") as f:
        f.write("./Maildir/\n")
    msgid = inject(scratch.home, MSG, b"alice@localhost", [b"joe@localhost"])
    send = TracedSend(scratch, QMAILLOCAL=program("qmail-local"))
    send.wait_line(r"^end msg %d$" % msgid)
    tr = send.stop_traced()
    q = os.path.join(scratch.home, "queue")
    delivered = tr.made(re.escape(maildir) + r"/new/")
    assert len(delivered) == 1, os.listdir(os.path.join(maildir, "new"))
    info = "%s/info/%d/%d" % (q, msgid % layout.SPLIT, msgid)
    chan = "%s/local/%d/%d" % (q, msgid % layout.SPLIT, msgid)
    for gone in (tr.unlinked(re.escape(chan) + "$"), tr.unlinked(re.escape(info) + "$"),
                 tr.unlinked(r"/queue/mess/\d+/%d$" % msgid)):
        clean(tr.lost_at(delivered, gone))


# -- qmailpy-install's sendmail: the moved foreign one and ours

def test_sendmail_install_replace_durable_before_it_reports(tmp_path):
    root = tmp_path / "sys"
    os.makedirs(root / "usr" / "sbin")
    (root / "usr" / "sbin" / "sendmail").write_text("#!/bin/sh\n# the other MTA\n")
    proc, tr = D.run([sys.executable, "-c", "from qmailpy.install import sendmail as S\n"
                      "print(S.install('/var/qmail', 'replace', ('/usr/sbin/sendmail',), %r))" % str(root)],
                     roots=[str(root)], env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(D.__file__))))
    assert proc.returncode == 0 and b"-> /var/qmail/bin/sendmail" in proc.stdout, proc
    target = str(root / "usr" / "sbin" / "sendmail")
    assert os.readlink(target) == "/var/qmail/bin/sendmail"
    assert os.path.exists(target + ".pre-qmailpy")
    clean(tr.lost_at([target, target + ".pre-qmailpy"], tr.exit_of()))


def test_qmail_local_existing_mbox_durable_before_it_reports(tmp_path):
    box = Box(tmp_path)
    mbox = os.path.join(box.home, "Mailbox")
    with open(mbox, "wb") as f:
        f.write(b"From old@example.org Thu Jan  1 00:00:00 2026\nSubject: old\n\nold\n\n")
    os.chown(mbox, *[int(x) for x in (os.stat(box.home).st_uid, os.stat(box.home).st_gid)])
    size = os.path.getsize(mbox)
    tr = local(box, tmp_path, "./Mailbox")
    assert os.path.getsize(mbox) > size
    assert tr.find_all(lambda ev: ev.call == "write" and ev.fdpath == mbox)
    clean(tr.lost_at([mbox], tr.exit_of()))


def test_maildirsize_recount_durable_when_it_returns(tmp_path):
    md = tmp_path / "Maildir"
    for sub in ("tmp", "new", "cur"):
        os.makedirs(md / sub)
    (md / "cur" / "1.2.host,S=120:2,S").write_bytes(b"x" * 120)
    (md / "maildirsize").write_bytes(b"1000000S\n999 9\n")
    proc, tr = D.run([sys.executable, "-c", "from qmailpy import maildirpp\n"
                      "maildirpp.recount(%r, '1000000S', host='host')" % str(md)],
                     roots=[str(md)], env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(D.__file__))))
    assert proc.returncode == 0, proc.stderr
    assert (md / "maildirsize").read_bytes() == b"1000000S\n120 1\n"
    clean(tr.lost_at([str(md / "maildirsize")], tr.exit_of()))


def _bounces_handed_over_durably(tr, q):
    """Every failed recipient marked done after its paragraph in bounce/ is durable, and every
    bounce/ unlinked after the qmail-queue that took its bounce exited with it durable."""
    checked = 0
    for ev in tr.events:
        if ev.call == "write" and (ev.fdpath or "").startswith(q + "/bounce/"):
            n = int(ev.fdpath.rsplit("/", 1)[1])
            chans = tuple("%s/%s/%d/%d" % (q, c, n % layout.SPLIT, n) for c in ("local", "remote"))
            marked = tr.find(lambda m: m.index > ev.index and m.call == "pwrite64" and m.fdpath in chans,
                             "markdone after the paragraph of bounce/%d" % n)
            clean(tr.lost_at([ev.fdpath], marked))
            checked += 1
    taken = set()
    for gone in tr.find_all(lambda ev: ev.call == "unlink" and re.search(r"/queue/bounce/\d+$", ev.paths[0])):
        links = [ev for ev in tr.events[:gone] if ev.call == "link" and re.search(r"/queue/todo/\d+$", ev.paths[1])]
        if not links or links[-1].index in taken:
            continue                     # a discarded (triple) bounce: nothing was queued for it
        taken.add(links[-1].index)
        m = int(links[-1].paths[1].rsplit("/", 1)[1])
        exited = tr.exit_of(links[-1].pid)
        assert exited < gone
        made = tr.made(r"/queue/(mess/\d+|intd|todo)/%d$" % m)
        # qmail-queue triggers qmail-send before it exits: todo/ and intd/ may already be taken
        # and removed by qmail-todo and qmail-clean, which only ever see them once durable
        clean({p: why for p, why in tr.lost_at(made, exited).items() if why != ["removed"]})
        checked += 1
    return checked


def test_qmail_send_double_bounce_and_triple_bounce_drop_durable(scratch):  # noqa: F811
    """A bounce to a sender that fails, bounced again to doublebounceto; then doublebounceto
    failing too: the double bounce is dropped ('triple bounce')."""
    for dbl, last in (("postmaster", r"^end msg \d+$"), ("fail-dbl", r"^triple bounce: discarding bounce/\d+$")):
        scratch.control("doublebounceto", dbl)
        msgid = inject(scratch.home, MSG, b"fail-sender@localhost", [b"fail@localhost"])
        send = TracedSend(scratch)
        send.wait_line(r"^end msg %d$" % msgid)
        send.wait_line(last, count=3 if dbl == "postmaster" else 1)
        time.sleep(0.3)
        tr = send.stop_traced()
        q = os.path.join(scratch.home, "queue")
        # paragraphs + bounces queued: 2 + 2, or 3 + 2 (the double bounce's own failure, dropped unqueued)
        assert _bounces_handed_over_durably(tr, q) == (4 if dbl == "postmaster" else 5)
        lines = send.lines()
        assert len([ln for ln in lines if re.match(r"^bounce msg \d+ qp \d+$", ln)]) == 2, lines
        assert len([ln for ln in lines if re.match(r"^end msg \d+$", ln)]) == 3, lines
        assert scratch.queue_files() == [], scratch.queue_files()
    assert [name.split(".")[0] for name in scratch.mail()] == ["postmaster@mx"]


# -- qmail-remote: its K report needs nothing local on disk

def test_qmail_remote_success_report_needs_nothing_local_durable(home, dns_server, sinks):  # noqa: F811
    """qmail-remote's K means the peer took the message; qmail-send's D mark follows. Nothing of
    qmail-remote's own is needed after a power loss: it writes only the report and, on a
    connection that timed out, lock/tcpto (a cache: qmail's is not fsynced either)."""
    home.control("me", "test.example")
    sink = sinks()
    home.control("smtproutes", ":127.0.0.1:%d" % sink.port)
    proc, tr = D.run([program("qmail-remote"), "example.com", "a@b.example", "c@example.com"], input=MSG,
                     env=home.env(**dns_server.environ()), roots=[home.root])
    assert proc.returncode == 0 and proc.stdout.startswith(b"r\0K127.0.0.1 accepted message."), proc
    report = tr.find(lambda ev: ev.call == "write" and ev.data.startswith(b"r\0K"), "the K report")
    written = {ev.fdpath for ev in tr.events[:report]
               if ev.call in D.WRITES and ev.fdpath and ev.fdpath.startswith(home.root)}
    assert written <= {os.path.join(home.root, "queue", "lock", "tcpto")}, written
    assert tr.made(re.escape(home.root)) == []



def test_checker_sees_an_unsynced_removal(tmp_path):
    d, tr = traced_script(tmp_path, (
        "open('a', 'w').close(); open('b', 'w').close(); fd = os.open('.', os.O_RDONLY); os.fsync(fd)\n"
        "os.rename('a', 'c'); os.unlink('b')\n"))
    assert tr.back_after(d + "/a", tr.exit_of()) == ["removal of a: %s/ not fsynced" % d]
    assert tr.back_after(d + "/b", tr.exit_of()) == ["removal of b: %s/ not fsynced" % d]
    os.mkdir(tmp_path / "x")
    d2, tr = traced_script(tmp_path / "x", "open('a', 'w').close(); os.rename('a', 'c'); os.fsync(os.open('.', os.O_RDONLY))\n")
    assert tr.back_after(d2 + "/a", tr.exit_of()) == []


def test_qmail_users_deluser_and_deldomain_directory_gone_for_good_before_the_commit(home, tmp_path):
    """deluser/deldomain move the tree aside inside the transaction. The move is durable before
    the commit is: else a power loss after the report could bring the Maildir back under its
    name with no row, and an adduser of the same name would take it, and the old mail, as its
    own. (The other way round, the move kept and the commit lost, is a killed deluser's state:
    the next command of the domain puts the tree back, docs/qmail-users.md.)"""
    home.control("me", "mx.example.org\n")
    home.control("vpopmaildir", str(tmp_path / "vpopmail") + "\n")
    tool(home, "qmail-users", "adddomain", "example.org", roots=[str(tmp_path)])
    tool(home, "qmail-users", "adduser", "bob@example.org", "-p", "secret", roots=[str(tmp_path)])
    domain = str(tmp_path / "vpopmail" / "domains" / "example.org")
    for argv, gone in ((("deluser", "bob@example.org"), domain + "/bob"), (("deldomain", "example.org"), domain)):
        tr = tool(home, "qmail-users", *argv, roots=[str(tmp_path)])
        assert not os.path.exists(gone)
        moved = tr.find(lambda ev: ev.call == "rename" and ev.paths[0] == gone, "the move aside of " + gone)
        commit = tr.find(lambda ev: ev.index > moved and ev.call in D.SYNCS
                         and re.search(r"\.(sqlite|db)3?$", ev.fdpath or ""), "the commit's fsync")
        assert tr.back_after(gone, commit) == [], argv
