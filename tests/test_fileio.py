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
