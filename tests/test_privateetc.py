"""The suite's own /etc (tests/privateetc.py): as root, this process and what it starts see a
copy of /etc without qmail's accounts, and the machine's /etc is another directory."""
import os
import subprocess

import pytest

from privateetc import ENV, drop_accounts, qmail_accounts


@pytest.mark.skipif(os.getuid() != 0, reason="as root only: nothing else creates accounts")
def test_the_suite_sees_its_own_etc():
    etc = os.environ.get(ENV)
    assert etc and os.path.samestat(os.stat("/etc"), os.stat(etc)), etc
    # mounted here, in a mount namespace that is not pid 1's (the machine's), which has no such mount
    with open("/proc/self/mountinfo") as mine, open("/proc/1/mountinfo") as machines:
        assert " /etc " in mine.read() and " /etc " not in machines.read()
    child = subprocess.run(["stat", "-c", "%d:%i", "/etc"], capture_output=True, text=True, check=True).stdout
    st = os.stat(etc)
    assert child == "%d:%d\n" % (st.st_dev, st.st_ino)


def test_qmails_accounts_are_taken_out_of_the_copy(tmp_path):
    files = {
        "passwd": "root:x:0:0:root:/root:/bin/bash\nalias:x:999:994::/var/qmail/alias:/usr/sbin/nologin\n"
                  "joe:x:1000:1000::/home/joe:/bin/sh\nqmaild:x:998:994::/var/qmail:/usr/sbin/nologin\n",
        "shadow": "root:*:1::::::\nalias:!:1::::::\njoe:!:1::::::\n",
        "group": "root:x:0:\nnofiles:x:994:\nqmail:x:995:qmaild,joe\nmail:x:8:alias,joe,vpopmail\n",
        "gshadow": "root:*::\nnofiles:!::\nmail:!::alias,joe\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    drop_accounts(str(tmp_path), *qmail_accounts())
    assert (tmp_path / "passwd").read_text() == ("root:x:0:0:root:/root:/bin/bash\n"
                                                 "joe:x:1000:1000::/home/joe:/bin/sh\n")
    assert (tmp_path / "shadow").read_text() == "root:*:1::::::\njoe:!:1::::::\n"
    assert (tmp_path / "group").read_text() == "root:x:0:\nmail:x:8:joe\n"
    assert (tmp_path / "gshadow").read_text() == "root:*::\nmail:!::joe\n"
