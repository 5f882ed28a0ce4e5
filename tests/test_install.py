"""make install's layout: launchers, control defaults (never overwritten), tcprules cdb, queue."""
import os
import stat
import subprocess
import sys

from conftest import ROOT


def install(home, *extra):
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "install.py"), str(home), ROOT,
                    os.path.join(ROOT, ".venv", "bin", "python3"), *extra], check=True, capture_output=True)


def test_install_lays_out_a_qmail_home(tmp_path):
    home = tmp_path / "qmail"
    install(home)
    for name in ("qmail-smtpd", "qmail-queue", "qmail-showctl", "qmail-local"):
        assert os.access(home / "bin" / name, os.X_OK)
    assert (home / "control" / "tcp.smtp").read_text() == open(os.path.join(ROOT, "control", "tcp.smtp")).read()
    assert (home / "control" / "tcp.smtp.cdb").stat().st_size >= 2048
    assert not (home / "control" / "options.example").exists()
    for d in ("pid", "intd", "todo", "bounce", "mess/0", "mess/22", "info/5", "local/5", "remote/5", "lock"):
        assert (home / "queue" / d).is_dir(), d
    assert stat.S_ISFIFO((home / "queue" / "lock" / "trigger").stat().st_mode)
    r = subprocess.run([str(home / "bin" / "qmail-showctl")], env=dict(os.environ, QMAILHOME=str(home)),
                       capture_output=True, check=True)
    assert b"concurrencyremote: (Default.) 100" in r.stdout


def test_install_never_overwrites_controls(tmp_path):
    home = tmp_path / "qmail"
    (home / "control").mkdir(parents=True)
    (home / "control" / "tcp.smtp").write_text(":allow\n")
    install(home, "--demo")
    assert (home / "control" / "tcp.smtp").read_text() == ":allow\n"
    assert (home / "control" / "me").read_text() == "qmailpy.local\n"
    (home / "control" / "me").write_text("mine.example\n")
    install(home, "--demo")
    assert (home / "control" / "me").read_text() == "mine.example\n"
