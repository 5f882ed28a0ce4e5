"""Lay out a qmail home: bin/ launchers, control/ defaults, the queue.

usage: python tools/install.py QMAILHOME ROOT PYTHON [--demo]
Existing control files are never overwritten. --demo adds what `make run`
needs: a host name and a demo domain on 127.0.0.1.
"""
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from qmailpy.queue.layout import create_queue  # noqa: E402

DEMO = {"me": "qmailpy.local", "rcpthosts": "demo.example\nqmailpy.local",
        "locals": "qmailpy.local", "virtualdomains": "demo.example:demo.example"}


def write_if_absent(path, text):
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(text)


def main(argv):
    home, root, python = argv[:3]
    demo = "--demo" in argv
    subprocess.run([python, os.path.join(root, "tools", "mklaunchers.py"), root, python,
                    os.path.join(home, "bin")], check=True)
    control = os.path.join(home, "control")
    os.makedirs(control, exist_ok=True)
    for name in sorted(os.listdir(os.path.join(root, "control"))):
        src = os.path.join(root, "control", name)
        if name.endswith(".example"):
            continue
        if not os.path.exists(os.path.join(control, name)):
            shutil.copyfile(src, os.path.join(control, name))
    if demo:
        for name, text in DEMO.items():
            write_if_absent(os.path.join(control, name), text + "\n")
    rules = os.path.join(control, "tcp.smtp")
    if shutil.which("tcprules") and os.path.exists(rules):
        with open(rules, "rb") as f:
            subprocess.run(["tcprules", rules + ".cdb", rules + ".tmp"], stdin=f, check=True)
    create_queue(home)
    print("installed qmail home %s" % home)


if __name__ == "__main__":
    main(sys.argv[1:])
