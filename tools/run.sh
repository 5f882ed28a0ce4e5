#!/bin/sh
# `make run`: a demo qmail home under ./run/ on 127.0.0.1:2525. `make stop` stops it.
set -e
cd "$(dirname "$0")/.."
TOP=$PWD
RUN=$TOP/run
PY=$TOP/.venv/bin/python3
PORT=${PORT:-2525}

stop() {
    for f in "$RUN"/*.pid; do
        [ -f "$f" ] || continue
        kill "$(cat "$f")" 2>/dev/null || true
        rm -f "$f"
    done
}

if [ "$1" = stop ]; then stop; echo "stopped"; exit 0; fi
stop
"$PY" tools/install.py "$RUN" "$TOP" "$PY" --demo
mkdir -p "$RUN/log"
SESSIONS=$(QMAILHOME=$RUN "$RUN/bin/qmail-showctl" --json | "$PY" -c \
    'import json,sys; print({r["name"]: r["value"] for r in json.load(sys.stdin)}["tcpsessioncount"])')
QMAILHOME=$RUN nohup tcpserver -R -H -l localhost -c "$SESSIONS" -x "$RUN/control/tcp.smtp.cdb" \
    127.0.0.1 "$PORT" "$RUN/bin/qmail-smtpd" >>"$RUN/log/smtpd" 2>&1 &
echo $! > "$RUN/tcpserver.pid"
sleep 0.3
kill -0 "$(cat "$RUN/tcpserver.pid")" || { echo "tcpserver did not start; see $RUN/log/smtpd" >&2; exit 1; }
cat <<MSG

qmailpy is listening on 127.0.0.1:$PORT (qmail home: $RUN, log: $RUN/log/smtpd).

Send a test message:
    swaks --server 127.0.0.1:$PORT --from you@example.com --to demo@demo.example

It is queued under $RUN/queue (ls $RUN/queue/todo $RUN/queue/mess/*).
Local delivery to Maildir arrives with qmail-send (see README.md, status).
Stop with: make stop
MSG
