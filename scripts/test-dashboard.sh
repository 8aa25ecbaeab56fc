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
# if it is not running and stops it again at the end if it started it.
# Env: as scripts/test.sh (ADSTREAM_BROKERS, ADSTREAM_CLICKHOUSE_URL,
# KAFKA_PORT, CLICKHOUSE_PORT), SUPERSET_PORT (8088).
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

started=0
if ! scripts/superset.sh status >/dev/null 2>&1; then started=1; fi
cleanup() { if [ "$started" = 1 ]; then scripts/superset.sh down || true; fi; }
trap cleanup EXIT

start=$(date +%s)
status=0
"$VENV/bin/python" tests/browser/dashboard_test.py || status=$?
echo "dashboard test took $(($(date +%s) - start)) s"
exit "$status"
