#!/bin/sh
# `make run`: a demo qmail home under ./run/: tcpserver + qmail-smtpd on 127.0.0.1:2525,
# qmail-send, a virtual domain demo.example with the mailbox demo@demo.example
# (password demo), and Dovecot POP3 on 127.0.0.1:1110. `make stop` stops it all.
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

stop() {
    for f in "$RUN"/*.pid "$RUN/dovecot/run/master.pid"; do
        [ -f "$f" ] || continue
        kill "$(cat "$f")" 2>/dev/null || true
        rm -f "$f"
    done
}

if [ "$1" = stop ]; then stop; echo "stopped"; exit 0; fi
stop
"$PY" tools/install.py "$RUN" "$TOP" "$PY" --demo
mkdir -p "$RUN/log"

# The daemons run as you (even where qmail's users exist: the demo queue has qmail's
# plain layout). Deliveries never run as root: as root the demo's mailbox belongs to
# vpopmail (created here if missing), and qmail-local runs as vpopmail.
export QMAILPY_SINGLEUSER=1
if [ "$(id -u)" = 0 ]; then
    getent group vchkpw >/dev/null || groupadd -r vchkpw
    getent passwd vpopmail >/dev/null || useradd -r -g vchkpw -d "$RUN/vpopmail" -s /usr/sbin/nologin vpopmail
fi

"$RUN/bin/qmail-users" adddomain demo.example >/dev/null 2>&1 || true
"$RUN/bin/qmail-users" adduser demo@demo.example --password demo --clear >/dev/null 2>&1 || true
[ "$(id -u)" = 0 ] && chown -R vpopmail:vchkpw "$RUN/vpopmail"
MAILDIR=$RUN/vpopmail/domains/demo.example/demo/Maildir

nohup "$RUN/bin/qmail-send" ./Maildir/ >>"$RUN/log/send" 2>&1 &
echo $! > "$RUN/qmail-send.pid"

SESSIONS=$("$RUN/bin/qmail-showctl" --json | "$PY" -c \
    'import json,sys; print({r["name"]: r["value"] for r in json.load(sys.stdin)}["tcpsessioncount"])')
nohup tcpserver -R -H -l localhost -c "$SESSIONS" -x "$RUN/control/tcp.smtp.cdb" \
    127.0.0.1 "$PORT" "$RUN/bin/qmail-smtpd" >>"$RUN/log/smtpd" 2>&1 &
echo $! > "$RUN/tcpserver.pid"

POP3="not started (see $RUN/log/dovecot)"
if command -v dovecot >/dev/null 2>&1 &&
   "$PY" -m qmailpy.pop3.dovecot "$RUN" "$RUN/dovecot" --port "$POP3PORT" >"$RUN/log/dovecot" 2>&1 &&
   dovecot -c "$RUN/dovecot/dovecot.conf" >>"$RUN/log/dovecot" 2>&1; then
    POP3="127.0.0.1:$POP3PORT (user demo@demo.example, password demo)"
fi

sleep 0.5
for p in qmail-send tcpserver; do
    kill -0 "$(cat "$RUN/$p.pid")" 2>/dev/null || { echo "$p did not start; see $RUN/log/" >&2; exit 1; }
done

cat <<MSG

qmailpy is running with its qmail home in $RUN
  SMTP  127.0.0.1:$PORT      (tcpserver + qmail-smtpd; log $RUN/log/smtpd)
  queue qmail-send          (log $RUN/log/send)
  POP3  $POP3

Send a test message:
    swaks --server 127.0.0.1:$PORT --from you@example.com --to demo@demo.example

It lands, within a second, in
    $MAILDIR/new/

Read it over POP3:
    curl -s --user demo@demo.example:demo pop3://127.0.0.1:$POP3PORT/1

Also: QMAILHOME=$RUN $RUN/bin/qmail-showctl, qmail-qstat, qmail-users list.
DNS goes to $DNSCACHEIP only: mail to other domains stays queued (deferred).
Stop with: make stop
MSG
