"""Where a qmail home keeps things, and where its programs are. No imports beyond os and sys."""
import os
import sys

DEFAULT_HOME = "/var/qmail"   # qmail's compiled-in auto_qmail
CONTROL = "control"
QUEUE = "queue"
SOCK = "sock"                 # qmail-queued's socket directory: 0755, every caller may reach it


def qmailhome(environ):
    """The qmail home: $QMAILHOME if set and non-empty, else /var/qmail."""
    return environ.get("QMAILHOME") or DEFAULT_HOME


def control_path(home, name):
    """control/NAME under the home; NAME may hold one sub-folder (srs/...)."""
    return os.path.join(home, CONTROL, name)


def queue_path(home, *parts):
    return os.path.join(home, QUEUE, *parts)


def bin_path(home, name):
    return os.path.join(home, "bin", name)


def queue_socket(home):
    """qmail-queued's Unix socket: what setuid qmail-queue was, every caller connects here."""
    return os.path.join(home, SOCK, "qmail-queue")


def program_path(environ, name, env_name):
    """$env_name if set, else NAME beside our launcher if executable, else bin/NAME of the home.

    Looking beside sys.argv[0] first lets a checkout's bin/ run against any
    $QMAILHOME (tests, `make run`) as qmail's programs find each other in bin/.
    """
    got = environ.get(env_name) if env_name else None
    if got:
        return got
    mine = os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), name)
    if os.access(mine, os.X_OK):
        return mine
    return bin_path(qmailhome(environ), name)


def authfail_path(home):
    """Where qmail-smtpd counts AUTH attempts per client IP (authfaillimit): below its sessions/."""
    return os.path.join(home, "sessions", "authfail")


def sessions_path(home):
    """Where qmail-smtpd keeps its per-IP session slots (periplimit)."""
    return os.path.join(home, "sessions")


def users_socket(home):
    """The users service's socket (qmail-usersd): where qmail-smtpd asks about its users."""
    return os.path.join(home, "sock", "users")
