#!/usr/bin/env bash
# Apache Superset with adstream's dashboard, without Docker: Superset from PyPI
# in .venv/superset, its metadata in SQLite under .run/superset, the ClickHouse
# database adstream writes registered, and the dashboard "Ad performance (10 s)"
# imported from superset/dashboard/.
#
#   scripts/superset.sh up      install if needed, provision, start, wait for /health
#   scripts/superset.sh down    stop the server this script started (TERM, wait, KILL)
#   scripts/superset.sh status  exit 0 if up and answering /health, 1 otherwise
#
# `up` is idempotent: every run re-imports the dashboard (overwriting what is
# in Superset with the files in the repo) and re-points the ClickHouse
# database at the current settings, also when the server is already running.
#
# Env: SUPERSET_HOST (127.0.0.1), SUPERSET_PORT (8088), PYTHON (python3),
#      SUPERSET_ADMIN_USER / SUPERSET_ADMIN_PASSWORD (admin / admin),
#      ADSTREAM_CLICKHOUSE_URL (http://127.0.0.1:${CLICKHOUSE_PORT:-8123}),
#      ADSTREAM_CLICKHOUSE_USER / _PASSWORD / _PASSWORD_FILE, ADSTREAM_DATABASE (adtech).
# State: .run/superset/{superset.db,secret_key,superset.pid,superset.log}; the
# secret key is generated on first `up` and kept (it encrypts stored passwords).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOST="${SUPERSET_HOST:-127.0.0.1}"
PORT="${SUPERSET_PORT:-8088}"
VENV="$ROOT/.venv/superset"
RUN="$ROOT/.run/superset"
PIDFILE="$RUN/superset.pid"
LOG="$RUN/superset.log"
REQS="$ROOT/superset/requirements.txt"
CONSTRAINTS="$ROOT/superset/constraints.txt"

say() { echo "superset: $*" >&2; }
# shellcheck source=lib/service.sh
source "$ROOT/scripts/lib/service.sh"

export SUPERSET_HOME="$RUN"
export SUPERSET_CONFIG_PATH="$ROOT/superset/superset_config.py"
export FLASK_APP=superset
export SCARF_ANALYTICS=false # no usage pings
# Superset evaluates relative time ranges ("last hour": DATEADD(DATETIME("now")…))
# in its process's local time and compares them with the columns as they are;
# adstream's are UTC, so Superset must run in UTC too.
export TZ=UTC
export ADSTREAM_CLICKHOUSE_URL="${ADSTREAM_CLICKHOUSE_URL:-http://127.0.0.1:${CLICKHOUSE_PORT:-8123}}"

running_pid() { pidfile_pid "$PIDFILE" "gunicorn"; }

health_ok() {
  local py="$VENV/bin/python"
  [[ -x "$py" ]] || py="${PYTHON:-python3}"
  "$py" - "$HOST" "$PORT" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
with urllib.request.urlopen(f"http://{sys.argv[1]}:{sys.argv[2]}/health", timeout=2) as r:
    sys.exit(0 if r.read().strip() == b"OK" else 1)
EOF
}

ensure_venv() {
  local stamp="$VENV/.requirements.sha256" want
  want="$(cat "$REQS" "$CONSTRAINTS" | sha256sum | cut -d' ' -f1)"
  if [[ -x "$VENV/bin/superset" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating $VENV"
    mkdir -p "$(dirname "$VENV")"
    "${PYTHON:-python3}" -m venv "$VENV"
  fi
  say "installing apache-superset and clickhouse-connect into $VENV (first time: ~2 min)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS" -c "$CONSTRAINTS"
  echo "$want" >"$stamp"
}

ensure_secret() {
  local f="$RUN/secret_key"
  if [[ ! -s "$f" ]]; then
    (umask 077 && "$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(48))' >"$f")
    say "generated a new SECRET_KEY in $f"
  fi
  SUPERSET_SECRET_KEY="$(cat "$f")"
  export SUPERSET_SECRET_KEY
}

# `superset db upgrade` + `superset init` once per Superset version (each
# takes a while; the metadata database keeps their result).
ensure_metadata() {
  local stamp="$RUN/.initialized" want
  want="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("apache-superset"))')"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -f "$RUN/superset.db" ]]; then
    return 0
  fi
  say "creating the metadata database (superset db upgrade, superset init)"
  "$VENV/bin/superset" db upgrade >>"$LOG" 2>&1 || { say "superset db upgrade failed; see $LOG"; tail -n 30 "$LOG" >&2; return 1; }
  "$VENV/bin/superset" init >>"$LOG" 2>&1 || { say "superset init failed; see $LOG"; tail -n 30 "$LOG" >&2; return 1; }
  echo "$want" >"$stamp"
}

cmd_up() {
  ensure_venv
  mkdir -p "$RUN"
  ensure_secret
  ensure_metadata
  "$VENV/bin/python" "$ROOT/superset/provision.py" 2>>"$LOG" || {
    say "provisioning failed; see $LOG"
    tail -n 30 "$LOG" >&2
    return 1
  }
  local pid
  pid="$(running_pid)"
  if [[ -n "$pid" ]]; then
    echo "superset already running on http://$HOST:$PORT (pid $pid); dashboard re-imported"
    return 0
  fi
  if health_ok; then
    say "something else already answers on $HOST:$PORT (not started by this script)"
    return 1
  fi
  echo "=== $(date -u +%FT%TZ) starting superset on $HOST:$PORT" >>"$LOG"
  local launcher=()
  command -v setsid >/dev/null 2>&1 && launcher=(setsid)
  # gthread: the dashboard fires one request per chart at once; 2 workers
  # x 8 threads serve them in parallel on 2 cores.
  nohup "${launcher[@]}" "$VENV/bin/gunicorn" --bind "$HOST:$PORT" --workers 2 \
    --worker-class gthread --threads 8 --timeout 120 --limit-request-line 0 \
    --limit-request-field_size 0 "superset.app:create_app()" >>"$LOG" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PIDFILE"
  wait_ready "$pid" health_ok 120 gunicorn "$LOG" "$PIDFILE" || return 1
  echo "superset up on http://$HOST:$PORT (pid $pid); login ${SUPERSET_ADMIN_USER:-admin}, dashboard /superset/dashboard/ad-performance/"
}

cmd_down() { service_down superset "$PIDFILE" 30; }

cmd_status() { service_status superset "http://$HOST:$PORT" health_ok; }

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
