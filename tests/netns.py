"""Run Python code in a private network namespace (only its own loopback) and mount namespace.

    out = in_netns(code, resolv_conf="nameserver 127.0.0.1\\n", setup=["ip -6 route add ..."])

The child is `unshare -m -n`: a new network namespace whose lo is brought up
(127.0.0.1 and ::1 of its own, nothing reaches the machine's interfaces or
port numbers), `setup` shell lines run there first, and /etc/resolv.conf is
bind-mounted over in the private mount namespace when resolv_conf is given
(for programs that ask the C library's resolver, e.g. opendkim-testmsg).
code runs under this interpreter with tests/ and the checkout on sys.path;
its stdout is returned (exit 0 required). Root only: need_root() skips.
"""
import os
import shlex
import subprocess
import sys
import tempfile

from conftest import ROOT
from smtpsink import need_root


def in_netns(code, resolv_conf=None, setup=(), timeout=120, env=None):
    need_root()
    lines = ["set -e", "ip link set lo up", *setup]
    with tempfile.TemporaryDirectory() as tmp:
        if resolv_conf is not None:
            path = os.path.join(tmp, "resolv.conf")
            with open(path, "w") as f:
                f.write(resolv_conf)
            lines.append("mount --bind %s /etc/resolv.conf" % shlex.quote(path))
        lines.append('exec "$0" -c "$1"')
        environ = dict(env or os.environ)
        environ["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "tests"), ROOT])
        p = subprocess.run(["unshare", "-m", "-n", "sh", "-c", "\n".join(lines), sys.executable, code],
                           capture_output=True, env=environ, timeout=timeout)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return p.stdout.decode()
