#!/usr/bin/env bash
# The Superset dashboard test (tests/browser/dashboard_test.py): real pipeline
# -> ClickHouse -> Superset -> headless Chromium -> target/screenshots/dashboard.png.
# scripts/test.sh runs it after the cargo tests, with Kafka and ClickHouse up.
#
#   scripts/test-dashboard.sh
#
# Installs what it needs when missing: Debian's chromium (apt-get), Playwright
# for Python in .venv/browser (it drives /usr/bin/chromium; no browser
# download), Superset in .venv/superset (scripts/superset.sh). Starts Superset
# if it is not running, and Redis (scripts/redis.sh, where `adstream learn`
# publishes) unless ADSTREAM_REDIS_URL is set or one already answers on
# REDIS_PORT, and stops what it started at the end.
# Env: as scripts/test.sh (ADSTREAM_BROKERS, ADSTREAM_CLICKHOUSE_URL,
# KAFKA_PORT, CLICKHOUSE_PORT), SUPERSET_PORT (8088), ADSTREAM_REDIS_URL
# (redis://127.0.0.1:${REDIS_PORT:-6379}).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "test-dashboard: $*" >&2; }

if ! [ -x /usr/bin/chromium ]; then
  say "installing Debian's chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi

VENV=.venv/browser
REQS=tests/browser/requirements.txt
want="$(sha256sum "$REQS" | cut -d' ' -f1)"
if ! [ -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  say "installing Playwright for Python into $VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
  echo "$want" >"$VENV/.requirements.sha256"
fi

cargo build --bin adstream

export ADSTREAM_BROKERS="${ADSTREAM_BROKERS:-127.0.0.1:${KAFKA_PORT:-9092}}"
export ADSTREAM_CLICKHOUSE_URL="${ADSTREAM_CLICKHOUSE_URL:-http://127.0.0.1:${CLICKHOUSE_PORT:-8123}}"

started=()
cleanup() { for s in "${started[@]}"; do scripts/"$s".sh down || true; done; }
trap cleanup EXIT
if ! scripts/superset.sh status >/dev/null 2>&1; then started+=(superset); fi
if [ -z "${ADSTREAM_REDIS_URL:-}" ]; then
  export ADSTREAM_REDIS_URL="redis://127.0.0.1:${REDIS_PORT:-6379}"
  # Any server answering counts (another checkout's too); else ours.
  if ! scripts/redis.sh ping; then
    started+=(redis)
    scripts/redis.sh up
  fi
fi

start=$(date +%s)
status=0
"$VENV/bin/python" tests/browser/dashboard_test.py || status=$?
echo "dashboard test took $(($(date +%s) - start)) s"
exit "$status"
