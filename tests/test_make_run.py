"""`make run`'s script end to end: swaks in, Maildir out, read back over POP3, then stop."""
import os
import subprocess
import time

from conftest import ROOT
from test_dialogues import free_port


def test_demo_instance():
    import shutil
    import tempfile
    from pathlib import Path
    top = tempfile.mkdtemp(prefix="qmailpy-run-")     # not pytest's 0700 tmp: vpopmail must reach it
    os.chmod(top, 0o755)
    rundir = Path(top) / "run"
    port, pop3 = free_port(), free_port()
    env = dict(os.environ, RUNDIR=str(rundir), PORT=str(port), POP3PORT=str(pop3))
    script = os.path.join(ROOT, "tools", "run.sh")
    try:
        r = subprocess.run([script], env=env, capture_output=True, timeout=120)
        out = r.stdout.decode()
        assert r.returncode == 0, out + r.stderr.decode()
        assert "swaks --server 127.0.0.1:%d --from you@example.com --to demo@demo.example" % port in out
        maildir = rundir / "vpopmail" / "domains" / "demo.example" / "demo" / "Maildir"
        assert str(maildir / "new") in out
        s = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % port, "--from", "you@example.com",
                            "--to", "demo@demo.example", "--body", "hello from the demo"],
                           capture_output=True, timeout=60)
        assert s.returncode == 0, s.stdout.decode()
        deadline = time.time() + 20
        while not os.listdir(maildir / "new") and time.time() < deadline:
            time.sleep(0.1)
        [name] = os.listdir(maildir / "new")
        stored = (maildir / "new" / name).read_bytes()
        assert stored.startswith(b"Return-Path: <you@example.com>\nDelivered-To: demo.example-demo@demo.example\n")
        assert b"hello from the demo" in stored
        got = subprocess.run(["curl", "-s", "--user", "demo@demo.example:demo", "pop3://127.0.0.1:%d/1" % pop3],
                             capture_output=True, timeout=30).stdout
        assert got.replace(b"\r\n", b"\n").rstrip(b"\n") == stored.rstrip(b"\n")
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, timeout=60)
        time.sleep(0.3)
        stopped = [name for name in ("qmail-send.pid", "tcpserver.pid") if not (rundir / name).exists()]
        shutil.rmtree(top, ignore_errors=True)
    assert stopped == ["qmail-send.pid", "tcpserver.pid"]
