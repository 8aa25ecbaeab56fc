#!/usr/bin/env bash
# Local ClickHouse for development and CI, without Docker: the real ClickHouse
# engine from PyPI's chdb-core behind a small HTTP front (scripts/chfront/),
# speaking the ClickHouse HTTP interface on 127.0.0.1:8123.
#
#   scripts/clickhouse.sh up      create .venv/chfront if needed, start, wait for /ping
#   scripts/clickhouse.sh down    stop the front this script started (TERM, wait, KILL)
#   scripts/clickhouse.sh status  exit 0 if up and answering /ping, 1 otherwise
#   scripts/clickhouse.sh reset   down, wipe the data folder, up
#
# Env: CLICKHOUSE_HOST (127.0.0.1), CLICKHOUSE_PORT (8123), PYTHON (python3),
#      CHFRONT_MAX_CONCURRENT (4 queries at once; 1 serializes them),
#      CHFRONT_ACCESS_LOG (1: a log line per request; 0: only errors and slow ones),
#      CHFRONT_USER / CHFRONT_PASSWORD (set: every query must present them),
#      CHFRONT_TLS_CERT / CHFRONT_TLS_KEY [/ CHFRONT_TLS_CLIENT_CA] (set: HTTPS
#      only, see chfront.py; scripts/tls.sh starts such a second server),
#      CLICKHOUSE_RUN_DIR (.run/clickhouse: a second server needs its own).
# State: .run/clickhouse/{chfront.pid,chfront.log,data/}; data survives down/up.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOST="${CLICKHOUSE_HOST:-127.0.0.1}"
PORT="${CLICKHOUSE_PORT:-8123}"
VENV="$ROOT/.venv/chfront"
RUN="${CLICKHOUSE_RUN_DIR:-$ROOT/.run/clickhouse}"
PIDFILE="$RUN/chfront.pid"
LOG="$RUN/chfront.log"
DATA="$RUN/data"
FRONT="$ROOT/scripts/chfront/chfront.py"
REQS="$ROOT/scripts/chfront/requirements.txt"

say() { echo "clickhouse: $*" >&2; }
# shellcheck source=lib/service.sh
source "$ROOT/scripts/lib/service.sh"

# pid of our running front, or nothing
running_pid() { pidfile_pid "$PIDFILE" "chfront.py"; }

# GET /ping answers "Ok." (uses whatever python is at hand, no curl needed).
# Over HTTPS when CHFRONT_TLS_CERT is set: a readiness probe of our own
# server, so it does not verify the certificate, and it presents the
# server's own certificate where a client certificate is required.
ping_ok() {
  local py="$VENV/bin/python"
  [[ -x "$py" ]] || py="${PYTHON:-python3}"
  "$py" - "$HOST" "$PORT" <<'EOF' >/dev/null 2>&1
import os, ssl, sys, urllib.request
ctx, scheme = None, "http"
if os.environ.get("CHFRONT_TLS_CERT"):
    scheme, ctx = "https", ssl._create_unverified_context()
    if os.environ.get("CHFRONT_TLS_CLIENT_CA"):
        ctx.load_cert_chain(os.environ["CHFRONT_TLS_CERT"], os.environ.get("CHFRONT_TLS_KEY") or None)
with urllib.request.urlopen(f"{scheme}://{sys.argv[1]}:{sys.argv[2]}/ping", timeout=2, context=ctx) as r:
    sys.exit(0 if r.read().strip() == b"Ok." else 1)
EOF
}

ensure_venv() {
  local stamp="$VENV/.requirements.sha256" want
  want="$(sha256sum "$REQS" | cut -d' ' -f1)"
  if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating $VENV"
    mkdir -p "$(dirname "$VENV")"
    "${PYTHON:-python3}" -m venv "$VENV"
  fi
  say "installing $(grep -cv '^\s*\(#\|$\)' "$REQS") pinned packages into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$REQS"
  echo "$want" >"$stamp"
}

cmd_up() {
  local pid
  pid="$(running_pid)"
  if [[ -n "$pid" ]]; then
    echo "clickhouse already running on $HOST:$PORT (pid $pid)"
    return 0
  fi
  if ping_ok; then
    say "something else already answers on $HOST:$PORT (not started by this script)"
    return 1
  fi
  ensure_venv
  mkdir -p "$RUN" "$DATA"
  echo "=== $(date -u +%FT%TZ) starting chfront on $HOST:$PORT" >>"$LOG"
  local launcher=()
  command -v setsid >/dev/null 2>&1 && launcher=(setsid)
  # In a non-interactive shell the background job is not a process-group
  # leader, so setsid execs without forking and $! is the python pid.
  nohup "${launcher[@]}" "$VENV/bin/python" "$FRONT" --host "$HOST" --port "$PORT" \
    --data "$DATA" >>"$LOG" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PIDFILE"
  wait_ready "$pid" ping_ok 60 chfront "$LOG" "$PIDFILE" || return 1
  echo "clickhouse up on $HOST:$PORT (pid $pid)"
}

cmd_down() { service_down clickhouse "$PIDFILE" 15; }

cmd_status() { service_status clickhouse "$HOST:$PORT" ping_ok; }

cmd_reset() {
  cmd_down
  rm -rf "$DATA"
  echo "clickhouse data wiped ($DATA)"
  cmd_up
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  reset) cmd_reset ;;
  *)
    echo "usage: $0 up|down|status|reset" >&2
    exit 2
    ;;
esac
