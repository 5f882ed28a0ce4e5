#!/bin/sh
# `make run`: a demo qmail home under ./run/: tcpserver + qmail-smtpd on 127.0.0.1:$PORT (2525),
# qmail-send, qmail-usersd (the users service qmail-smtpd asks, on run/sock/users), a virtual domain demo.example with the mailbox demo@demo.example
# (password demo), and Dovecot POP3 on 127.0.0.1:$POP3PORT (1110). `make stop` stops it all.
# Environment: PORT, POP3PORT (the ports), RUNDIR (the home, default ./run), DNSCACHEIP.
# It fails (exit 1, nothing left running) when a port is taken or a server does not start.
set -e
cd "$(dirname "$0")/.."
TOP=$PWD
RUN=${RUNDIR:-$TOP/run}
PY=$TOP/.venv/bin/python3
PORT=${PORT:-2525}
POP3PORT=${POP3PORT:-1110}
export QMAILHOME="$RUN"
# The demo never asks an outside DNS server: remote mail waits in the queue (deferred).
export DNSCACHEIP=${DNSCACHEIP:-127.0.0.1}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# ours PID: the process PID runs in this home (its command line names $RUN/): a pid file left
# by a demo that did not stop (a reboot, kill -9) may name another process by now
ours() {
    case "$1" in ''|*[!0-9]*) return 1 ;; esac
    [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$RUN/"
}

stop() {
    pids=""
    for f in "$RUN"/*.pid "$RUN/dovecot/run/master.pid"; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        if ours "$pid" && kill "$pid" 2>/dev/null; then pids="$pids $pid"; else rm -f "$f"; fi
    done
    # wait (10 s at most) until they are gone, so the ports are free for the next `make run`
    left=""
    for _ in $(seq 100); do
        left=""
        for pid in $pids; do kill -0 "$pid" 2>/dev/null && left="$left $pid"; done
        [ -z "$left" ] && break
        sleep 0.1
    done
    # a pid file goes once its process has (Dovecot removes its master.pid itself, and logs an
    # Error when it finds it gone): one still running keeps its file for the next `make stop`
    for f in "$RUN"/*.pid "$RUN/dovecot/run/master.pid"; do
        if [ -f "$f" ] && ! ours "$(cat "$f")"; then rm -f "$f"; fi
    done
    if [ -n "$left" ]; then
        echo "still running after 10 s:$left (qmail-send finishes the deliveries it started; make stop again later)" >&2
        return 1
    fi
}

fail() {
    echo "make run: $*" >&2
    stop || true
    exit 1
}

# port_free PORT: nobody listens on 127.0.0.1:PORT (bind test)
port_free() {
    "$PY" -c 'import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$1"
}

# listening PORT: wait (10 s at most) until something accepts on 127.0.0.1:PORT
listening() {
    "$PY" -c 'import socket, sys, time
end = time.time() + 10
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        break
    except OSError:
        if time.time() > end:
            sys.exit(1)
        time.sleep(0.1)' "$1"
}

# answering PATH: wait (10 s at most) until something accepts on the Unix socket PATH
answering() {
    "$PY" -c 'import socket, sys, time
end = time.time() + 10
while True:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(sys.argv[1])
        break
    except OSError:
        if time.time() > end:
            sys.exit(1)
        time.sleep(0.1)
    finally:
        s.close()' "$1"
}

if [ "$1" = stop ]; then stop || exit 1; echo "stopped"; exit 0; fi
stop || exit 1
[ "$PORT" != "$POP3PORT" ] || fail "PORT and POP3PORT are both $PORT"
port_free "$PORT" || fail "127.0.0.1:$PORT (SMTP) is in use, by another make run or server; stop it, or choose another port: make run PORT=2526"
port_free "$POP3PORT" || fail "127.0.0.1:$POP3PORT (POP3) is in use, by another make run or server; stop it, or choose another port: make run POP3PORT=1111"

# As root this also makes vpopmail:vchkpw (tools/install.py --demo): the daemons run as
# root (single-user mode), deliveries never do: the demo's mailbox belongs to vpopmail,
# qmail-local runs as vpopmail:vchkpw, and its forwards go through qmail-queued.
mkdir -p "$RUN/log"
"$PY" tools/install.py "$RUN" "$TOP" "$PY" --demo >"$RUN/log/install" 2>&1 ||
    fail "tools/install.py failed: $(tail -n 5 "$RUN/log/install")"
export QMAILPY_SINGLEUSER=1

"$RUN/bin/qmail-users" adddomain demo.example >/dev/null 2>&1 || true
"$RUN/bin/qmail-users" adduser demo@demo.example --password demo --clear >/dev/null 2>&1 || true
[ "$(id -u)" != 0 ] || chown -R vpopmail:vchkpw "$RUN/vpopmail"
MAILDIR=$RUN/vpopmail/domains/demo.example/demo/Maildir

# As root, deliveries run as vpopmail: a home it cannot reach (a checkout under root's 0700
# /root) would take every message and defer it ("Unable to switch to ...: access denied")
as_vpopmail() { setpriv --reuid=vpopmail --regid=vchkpw --clear-groups "$@"; }
if [ "$(id -u)" = 0 ]; then
    for box in "$MAILDIR" "$RUN/alias/Maildir"; do
        as_vpopmail test -w "$box/new" && continue
        closed="" d=$box
        while [ "$d" != / ]; do d=$(dirname "$d"); as_vpopmail test -x "$d" || closed=$d; done
        fail "deliveries run as vpopmail, who cannot reach $box${closed:+ ($closed is closed to other users)}; put the checkout where other users may enter, e.g. /opt/qmailpy or /srv/qmailpy"
    done
fi

# STARTTLS: a certificate made now (never committed), as control/servercert.pem (cert + key)
if [ ! -s "$RUN/control/servercert.pem" ] && command -v openssl >/dev/null 2>&1; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$RUN/control/servercert.key" -out "$RUN/control/servercert.crt" >>"$RUN/log/install" 2>&1 &&
        (umask 077; cat "$RUN/control/servercert.crt" "$RUN/control/servercert.key" >"$RUN/control/servercert.pem")
    rm -f "$RUN/control/servercert.crt" "$RUN/control/servercert.key"
fi

# the users service first: qmail-smtpd asks it (AUTH, chkuser, POP-before-SMTP) once sock/users is there
nohup "$RUN/bin/qmail-usersd" >>"$RUN/log/usersd" 2>&1 &
echo $! > "$RUN/qmail-usersd.pid"
answering "$RUN/sock/users" || fail "qmail-usersd not answering on $RUN/sock/users: $(tail -n 3 "$RUN/log/usersd")"

# the queue service: every message (SMTP, bounces, forwards) goes through its socket
nohup "$RUN/bin/qmail-queued" >>"$RUN/log/queued" 2>&1 &
echo $! > "$RUN/qmail-queued.pid"
answering "$RUN/sock/qmail-queue" || fail "qmail-queued did not start: $(tail -n 3 "$RUN/log/queued")"

nohup "$RUN/bin/qmail-send" ./Maildir/ >>"$RUN/log/send" 2>&1 &
echo $! > "$RUN/qmail-send.pid"

SESSIONS=$("$RUN/bin/qmail-showctl" --json | "$PY" -c \
    'import json,sys; print({r["name"]: r["value"] for r in json.load(sys.stdin)}["tcpsessioncount"])')
nohup tcpserver -R -H -l localhost -c "$SESSIONS" -x "$RUN/control/tcp.smtp.cdb" \
    127.0.0.1 "$PORT" "$RUN/bin/qmail-smtpd" >>"$RUN/log/smtpd" 2>&1 &
echo $! > "$RUN/tcpserver.pid"

command -v dovecot >/dev/null 2>&1 || fail "POP3 not started: no dovecot (apt-get install dovecot-pop3d)"
"$PY" -m qmailpy.pop3.dovecot "$RUN" "$RUN/dovecot" --port "$POP3PORT" >"$RUN/log/dovecot" 2>&1 &&
    dovecot -c "$RUN/dovecot/dovecot.conf" >>"$RUN/log/dovecot" 2>&1 ||
    fail "POP3 not started: $(tail -n 3 "$RUN/log/dovecot")"

listening "$PORT" || fail "SMTP not started on 127.0.0.1:$PORT: $(tail -n 3 "$RUN/log/smtpd")"
listening "$POP3PORT" || fail "POP3 not started on 127.0.0.1:$POP3PORT: $(tail -n 3 "$RUN/dovecot/dovecot.log" 2>/dev/null)"
for p in qmail-queued qmail-usersd qmail-send tcpserver; do
    alive "$RUN/$p.pid" || fail "$p did not start; see $RUN/log/"
done

# postmaster's mail: the demo's alias/ stands in for the alias user only where this machine has
# none; a qmail host's alias user (~alias in its own qmail home) takes it, as qmail does
ALIAS_HOME=$(cd "$TOP" && "$PY" -c 'import sys
from qmailpy.install.accounts import alias_elsewhere
print(alias_elsewhere(sys.argv[1]) or "")' "$RUN")
POSTMASTER_BOX=$RUN/alias/Maildir/new/
[ -z "$ALIAS_HOME" ] || POSTMASTER_BOX="$ALIAS_HOME (this machine's alias user, as in qmail)"

cat <<MSG

qmailpy is running with its qmail home in $RUN
  SMTP  127.0.0.1:$PORT      (tcpserver + qmail-smtpd; log $RUN/log/smtpd)
  queue qmail-queued        (the queue service: $RUN/sock/qmail-queue; log $RUN/log/queued)
        qmail-send          (log $RUN/log/send)
  users qmail-usersd        (socket $RUN/sock/users; log $RUN/log/usersd)
  POP3  127.0.0.1:$POP3PORT      (Dovecot; user demo@demo.example, password demo)

Send a test message:
    swaks --server 127.0.0.1:$PORT --from you@example.com --to demo@demo.example

It lands, within a second, in
    $MAILDIR/new/

Try STARTTLS (certificate made now by openssl req -x509: $RUN/control/servercert.pem):
    swaks --server 127.0.0.1:$PORT --tls --from you@example.com --to demo@demo.example
    openssl s_client -connect 127.0.0.1:$PORT -starttls smtp -crlf -quiet
AUTH is offered only after STARTTLS (control/smtpauth; control/smtpauthplaintext allows it in clear):
    echo 1 > $RUN/control/smtpauth
    swaks --server 127.0.0.1:$PORT --tls --auth PLAIN --auth-user demo@demo.example --auth-password demo \
        --from demo@demo.example --to someone@elsewhere.example

Read it over POP3:
    curl -s --user demo@demo.example:demo pop3://127.0.0.1:$POP3PORT/1

The controls (--check: what is missing or wrong), the queue, the users; postmaster's mail
lands in $POSTMASTER_BOX:
    QMAILHOME=$RUN $RUN/bin/qmail-showctl --check
    QMAILHOME=$RUN $RUN/bin/qmail-qstat
    QMAILHOME=$RUN $RUN/bin/qmail-users list
DNS goes to $DNSCACHEIP only: mail to other domains stays queued (deferred).
Other ports: make run PORT=2526 POP3PORT=1111. Stop with: make stop
MSG
