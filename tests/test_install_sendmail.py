"""qmailpy.install.sendmail: the system's sendmail pointed at a qmail home, never over a foreign one silently."""
import os
import subprocess

import pytest

from qmailpy.install import sendmail as S


@pytest.fixture
def root(tmp_path):
    for d in ("usr/sbin", "usr/lib"):
        os.makedirs(tmp_path / "sys" / d)
    return str(tmp_path / "sys")


def test_var_qmail_gets_symlinks_and_a_rerun_changes_nothing(root):
    assert S.install("/var/qmail", root=root) == [
        "sendmail: /usr/sbin/sendmail -> /var/qmail/bin/sendmail",
        "sendmail: /usr/lib/sendmail -> /var/qmail/bin/sendmail"]
    for t in S.TARGETS:
        assert os.readlink(root + t) == "/var/qmail/bin/sendmail"
    assert S.install("/var/qmail", root=root) == [
        "sendmail: /usr/sbin/sendmail is already /var/qmail's", "sendmail: /usr/lib/sendmail is already /var/qmail's"]


def test_another_home_gets_a_script_that_sets_qmailhome(root, tmp_path):
    home = str(tmp_path / "my home")
    os.makedirs(os.path.join(home, "bin"))
    with open(os.path.join(home, "bin", "sendmail"), "w") as f:
        f.write('#!/bin/sh\necho "$QMAILHOME|$*"\n')
    os.chmod(os.path.join(home, "bin", "sendmail"), 0o755)
    S.install(home, targets=("/usr/sbin/sendmail",), root=root)
    path = root + "/usr/sbin/sendmail"
    assert not os.path.islink(path) and os.stat(path).st_mode & 0o777 == 0o755
    r = subprocess.run([path, "-t", "a b"], capture_output=True, env={"PATH": "/usr/bin:/bin"}, timeout=30)
    assert r.stdout == ("%s|-t a b\n" % home).encode()
    assert S.install(home, targets=("/usr/sbin/sendmail",), root=root) == [
        "sendmail: /usr/sbin/sendmail is already %s's" % home]


def test_a_foreign_sendmail_is_kept_unless_replace(root):
    path = root + "/usr/sbin/sendmail"
    with open(path, "w") as f:
        f.write("postfix's\n")
    assert S.install("/var/qmail", targets=("/usr/sbin/sendmail",), root=root) == [
        "sendmail: /usr/sbin/sendmail exists and is not ours: left alone (install with --sendmail replace "
        "to move it to /usr/sbin/sendmail.pre-qmailpy)"]
    assert open(path).read() == "postfix's\n"
    assert S.install("/var/qmail", mode="replace", targets=("/usr/sbin/sendmail",), root=root) == [
        "sendmail: /usr/sbin/sendmail moved to /usr/sbin/sendmail.pre-qmailpy",
        "sendmail: /usr/sbin/sendmail -> /var/qmail/bin/sendmail"]
    assert open(path + ".pre-qmailpy").read() == "postfix's\n"
    assert os.readlink(path) == "/var/qmail/bin/sendmail"
    os.unlink(path)
    os.symlink("/usr/sbin/exim4", path)         # another MTA again, and the saved name is taken
    assert S.install("/var/qmail", mode="replace", targets=("/usr/sbin/sendmail",), root=root) == [
        "sendmail: /usr/sbin/sendmail exists and /usr/sbin/sendmail.pre-qmailpy too: left alone"]
    assert os.readlink(path) == "/usr/sbin/exim4"


def test_missing_directory_and_mode_no(tmp_path):
    root = str(tmp_path)
    assert S.install("/var/qmail", root=root) == [
        "sendmail: /usr/sbin/sendmail skipped: no directory /usr/sbin",
        "sendmail: /usr/lib/sendmail skipped: no directory /usr/lib"]
    assert S.install("/var/qmail", mode="no", root=root)[0] == "sendmail: /usr/sbin/sendmail not touched (--sendmail no)"
    with pytest.raises(ValueError):
        S.install("/var/qmail", mode="force", root=root)
    assert os.listdir(root) == []


def test_a_link_that_cannot_be_put_in_place_leaves_no_temporary_name(root, monkeypatch):
    """The rename onto /usr/sbin/sendmail fails (a read-only /usr, EIO): the error reaches
    install.py and the temporary link beside it is gone."""
    import errno

    def refused(src, dst):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(os, "rename", refused)
    with pytest.raises(OSError) as e:
        S.install("/var/qmail", targets=("/usr/sbin/sendmail",), root=root)
    assert e.value.errno == errno.EROFS
    assert os.listdir(root + "/usr/sbin") == []
