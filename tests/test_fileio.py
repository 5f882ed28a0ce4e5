"""fileio.atomic_write: the one way a file is replaced (mode, owner, temp place, failures)."""
import os

import pytest

from qmailpy.fileio import atomic_write


@pytest.mark.parametrize("durable", [True, False])
def test_replaces_whole_with_mode(tmp_path, durable):
    path = tmp_path / "f"
    path.write_bytes(b"old")
    atomic_write(str(path), b"new\n", durable=durable, mode=0o640)
    assert path.read_bytes() == b"new\n"
    assert path.stat().st_mode & 0o7777 == 0o640
    assert os.listdir(tmp_path) == ["f"]          # no temp file left


def test_owner_and_temp_place(tmp_path):
    (tmp_path / "tmp").mkdir()
    path = tmp_path / "f"
    owner = (12345, 23456) if os.geteuid() == 0 else (-1, -1)
    atomic_write(str(path), b"x", mode=0o600, owner=owner, tmp=str(tmp_path / "tmp" / "t.1"))
    st = path.stat()
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == owner
    assert os.listdir(tmp_path / "tmp") == []


def test_a_failure_leaves_the_old_file_and_no_debris(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"old")
    with pytest.raises(TypeError):
        atomic_write(str(path), "not bytes")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f"]
    with pytest.raises(FileNotFoundError):
        atomic_write(str(path), b"new", tmp=str(tmp_path / "missing" / "t"))
    assert path.read_bytes() == b"old"


# Loops that write until all is written and stay outside fileio.write_all, each for a reason.
OWN_WRITE_LOOPS = {
    "fileio.py": "write_all itself",
    "log.py": "foundation, beside fileio: may not import it (tests/test_layers.py)",
    "progstart.py": "foundation, beside fileio: may not import it",
    "queue/files.py": "qmail-send's trouble(): each failed write is retried after a pause",
    "smtpd/main.py": "qmail-smtpd: a plain session loads no module it can do without "
                     "(tests/test_smtpd.py::test_plain_session_imports_nothing_heavy); also non-blocking",
    "smtpd/queueclient.py": "qmail-smtpd, loaded by every session: the same budget",
    "send/inject.py": "non-blocking, resumed by qmail-send's loop",
}


def test_write_all_is_the_one_write_until_done_loop():
    """dd2419e made fileio.write_all the one loop that writes until every byte is out, but left
    copies of it in qmail-local's report, the spawns' children, qmail-todo and its qmail-clean
    client. A module calls write_all and keeps its own reading of an error; only the loops
    above keep their own, each for the reason given."""
    import re
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "qmailpy")
    loop = re.compile(r"([A-Za-z_][A-Za-z_0-9.]*) = \1\[os\.write\(")
    found = set()
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                with open(path, encoding="utf-8") as f:
                    if loop.search(f.read()):
                        found.add(os.path.relpath(path, root))
    assert found == set(OWN_WRITE_LOOPS)


def test_open_regular_opens_only_a_regular_file(tmp_path):
    """fileio.open_regular: a regular file (through a link too) is opened for reading; a FIFO,
    whose writer waits for a reader, and a directory are never opened; an error names the path."""
    import stat
    import threading

    from qmailpy.fileio import open_regular
    (tmp_path / "f").write_bytes(b"data\n")
    os.symlink("f", tmp_path / "link")
    for name in ("f", "link"):
        fd, mode = open_regular(str(tmp_path / name))
        try:
            assert (os.read(fd, 100), stat.S_ISREG(mode)) == (b"data\n", True)
        finally:
            os.close(fd)
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    released = threading.Event()

    def writer():
        try:
            os.close(os.open(fifo, os.O_WRONLY))     # blocks until a reader opens the FIFO
        finally:
            released.set()
    threading.Thread(target=writer, daemon=True).start()
    fd, mode = open_regular(fifo)
    assert (fd, stat.S_ISFIFO(mode)) == (None, True)
    assert not released.wait(0.3)                    # the waiting writer was not let go
    os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
    assert released.wait(5)
    fd, mode = open_regular(str(tmp_path))
    assert (fd, stat.S_ISDIR(mode)) == (None, True)
    with pytest.raises(FileNotFoundError) as e:
        open_regular(str(tmp_path / "none"))
    assert e.value.filename == str(tmp_path / "none")


def without_proc(monkeypatch):
    """fileio's os.open as it is where /proc is not mounted: /proc/self/fd/N is not there."""
    import errno
    from qmailpy import fileio
    real_open = os.open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/self/fd/"):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(fileio.os, "open", no_proc)


def test_open_regular_without_proc_is_trouble_never_a_file_that_is_not_there(tmp_path, monkeypatch):
    """The file is there (its O_PATH descriptor is open) but /proc/self/fd is not (no /proc in a
    chroot or container): that is the system's trouble, EIO, which every caller takes for a
    temporary failure. It was FileNotFoundError, which callers take for no file: qmail-local
    skipped a .qmail, and qmail-tcpserver -X served every client without its rules (denied ones
    too)."""
    import errno
    from qmailpy import fileio
    (tmp_path / "f").write_bytes(b"data\n")
    without_proc(monkeypatch)
    with pytest.raises(OSError) as e:
        fileio.open_regular(str(tmp_path / "f"))
    assert type(e.value) is OSError and e.value.errno == errno.EIO and e.value.filename == str(tmp_path / "f")
    assert "/proc" in e.value.strerror


def test_open_regular_is_the_one_home_of_the_regular_file_rule():
    """users/cdb (ctl.cdbmap), .qmail-default (users.domainfiles) and .qmail files
    (local.dotqmail) are opened by one rule: no module reopens an O_PATH descriptor itself."""
    import pathlib

    import qmailpy
    root = pathlib.Path(qmailpy.__file__).parent
    homes = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if '"/proc/self/fd/%d"' in p.read_text())
    assert homes == ["fileio.py"]
