"""qmail-config (qmail's config-fast) and tools/install.py --me: the files, their values, refusals."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT, program
from qmailpy.install import config

FILES = ("me", "defaultdomain", "plusdomain", "locals", "rcpthosts")


@pytest.mark.parametrize("fqdn,ddom,pdom", [
    ("mx.example.com", "example.com", "example.com"),
    ("a.b.example.co.uk", "b.example.co.uk", "co.uk"),          # config-fast's seds, as they are
    ("example.com", "example.com", "example.com"),
    ("localhost", "localhost", "localhost"),
])
def test_config_fast_values(fqdn, ddom, pdom):
    assert config.values(fqdn) == {"me": fqdn, "defaultdomain": ddom, "plusdomain": pdom,
                                   "locals": fqdn, "rcpthosts": fqdn}


def read(home):
    out = {}
    for name in FILES:
        try:
            with open(os.path.join(home.root, "control", name)) as f:
                out[name] = f.read()
        except FileNotFoundError:
            pass
    return out


def test_qmail_config_writes_what_config_fast_writes(home):
    r = home.run("qmail-config", "mx.example.com")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines() == [
        "Your fully qualified host name is mx.example.com.",
        "Putting mx.example.com into control/me...",
        "Putting example.com into control/defaultdomain...",
        "Putting example.com into control/plusdomain...",
        "Putting mx.example.com into control/locals...",
        "Putting mx.example.com into control/rcpthosts...",
        "Now qmail will refuse to accept SMTP messages except to mx.example.com.",
        "Make sure to change rcpthosts if you add hosts to locals or virtualdomains!"]
    assert read(home) == {"me": "mx.example.com\n", "defaultdomain": "example.com\n",
                          "plusdomain": "example.com\n", "locals": "mx.example.com\n",
                          "rcpthosts": "mx.example.com\n"}
    assert oct(os.stat(os.path.join(home.root, "control", "rcpthosts")).st_mode & 0o777) == "0o644"
    r = home.run("qmail-showctl")
    assert "rcpthosts:" in r.stdout.decode().splitlines() and "  mx.example.com" in r.stdout.decode()


def test_qmail_config_refuses_to_overwrite_unless_told(home):
    home.control("rcpthosts", "example.org\n")
    r = home.run("qmail-config", "mx.example.com")
    assert r.returncode == 1
    assert r.stderr.decode().startswith("qmail-config: control/rcpthosts already there: nothing written")
    assert read(home) == {"rcpthosts": "example.org\n"}
    # --missing: only the absent ones
    r = home.run("qmail-config", "--missing", "mx.example.com")
    assert r.returncode == 0 and "control/rcpthosts is there already: left as it is" in r.stdout.decode()
    assert read(home)["rcpthosts"] == "example.org\n" and read(home)["me"] == "mx.example.com\n"
    # --force: replaces me, defaultdomain, plusdomain; adds to locals and rcpthosts (config-fast's >>)
    r = home.run("qmail-config", "--force", "mail.example.net")
    assert r.returncode == 0, r.stderr
    assert read(home) == {"me": "mail.example.net\n", "defaultdomain": "example.net\n",
                          "plusdomain": "example.net\n", "locals": "mx.example.com\nmail.example.net\n",
                          "rcpthosts": "example.org\nmail.example.net\n"}
    r = home.run("qmail-config", "--force", "mail.example.net")
    assert "control/rcpthosts lists mail.example.net already" in r.stdout.decode()
    assert read(home)["rcpthosts"] == "example.org\nmail.example.net\n"


def test_qmail_config_says_which_file_it_cannot_write(home, tmp_path):
    """A control it cannot write (a directory in its place): 'qmail-config: FILE: reason', exit
    111; no control/ at all: it says to install the home first, exit 111."""
    rcpthosts = os.path.join(home.root, "control", "rcpthosts")
    os.mkdir(rcpthosts)
    r = home.run("qmail-config", "--force", "mx.example.com")
    assert (r.returncode, r.stderr.decode()) == (111, "qmail-config: %s: Is a directory\n" % rcpthosts)
    bare = tmp_path / "bare"
    bare.mkdir()
    r = subprocess.run([program("qmail-config"), "mx.example.com"], capture_output=True, text=True,
                       env=dict(os.environ, QMAILHOME=str(bare)), timeout=30)
    assert (r.returncode, r.stderr) == (111, "qmail-config: no %s/control/: install the qmail home first\n" % bare)


def test_qmail_config_counts_control_options_and_checks_the_name(home):
    home.control("options", "rcpthosts:\n  example.org\n")
    r = home.run("qmail-config", "--force", "mx.example.com")
    assert r.returncode == 0
    assert "control/rcpthosts is set in control/options: add mx.example.com there" in r.stdout.decode()
    assert "rcpthosts" not in read(home)                   # a file would shadow the options value
    for bad in ("", "mx example.com", "-mx.example.com", "mx..example.com", "mx/example.com"):
        r = home.run("qmail-config", "--", bad)
        assert r.returncode == 1 and b"invalid host name" in r.stderr, bad


def test_install_with_me_writes_the_missing_files_and_says_what_is_left(tmp_path):
    home = tmp_path / "qmail"
    (home / "control").mkdir(parents=True)
    (home / "control" / "locals").write_text("localhost\n")
    run = [sys.executable, os.path.join(ROOT, "tools", "install.py"), str(home), ROOT,
           os.path.join(ROOT, ".venv", "bin", "python3")]
    r = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "  control/rcpthosts: absent: qmail-smtpd accepts mail for any domain (open relay)" in r.stdout
    assert "qmail-config FQDN" in r.stdout
    r = subprocess.run(run + ["--me", "mx.example.com"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "control/locals is there already: left as it is" in r.stdout
    assert "open relay" not in r.stdout
    assert (home / "control" / "rcpthosts").read_text() == "mx.example.com\n"
    assert (home / "control" / "locals").read_text() == "localhost\n"
    r = subprocess.run(run + ["--me", "not a name"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "invalid host name" in r.stderr
