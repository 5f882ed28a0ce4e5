"""Tell the running qmail-send of a home to reread its controls (SIGHUP), as vadddomain does.

qmail-send and qmail-todo read locals and virtualdomains at start and on
SIGHUP only (qmail-lspawn notices changed control files itself). Where it
runs: under supervise in $QMAILHOME/service/qmail-send (the production
install; svscan on that directory or on links to it in /etc/service), else
`make run`'s $QMAILHOME/qmail-send.pid. reload_send() returns (True, what it
did) or (False, the exact command the admin must run).
"""
import os
import shutil
import subprocess

PIDFILE = "qmail-send.pid"          # tools/run.sh writes it


def send_service(home):
    return os.path.join(home, "service", "qmail-send")


def _supervised(service):
    if not os.path.exists(os.path.join(service, "supervise")) or shutil.which("svok") is None:
        return False
    return subprocess.run(["svok", service], capture_output=True).returncode == 0


def _demo_pid(home):
    """make run's qmail-send pid, when that process is alive and is qmail-send."""
    try:
        with open(os.path.join(home, PIDFILE)) as f:
            pid = int(f.read().strip())
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = f.read().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if any(arg.endswith(b"/qmail-send") for arg in argv[:3]) else None


def reload_send(home):
    service = send_service(home)
    command = "svc -h %s" % service
    if _supervised(service):
        r = subprocess.run(["svc", "-h", service], capture_output=True, text=True)
        if r.returncode == 0:
            return True, command
        return False, "%s (as root: %s)" % (command, r.stderr.strip() or "svc failed")
    pid = _demo_pid(home)
    if pid is not None:
        try:
            os.kill(pid, 1)                    # SIGHUP
            return True, "kill -HUP %d" % pid
        except OSError as e:
            return False, "kill -HUP %d (%s)" % (pid, e.strerror)
    return False, "%s (or kill -HUP the qmail-send of %s, wherever it runs; nothing to do while it is " \
                  "stopped)" % (command, home)
