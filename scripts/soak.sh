#!/usr/bin/env bash
# A week of traffic, compressed: tests/soak.rs with a release build over
# ADSTREAM_SOAK_DAYS (default 7) simulated days — nightly quiet hours,
# campaigns starting and ending every day, 0.1 % of events from clocks up
# to 30 minutes off, redeliveries, a restart every simulated 12 h (SIGKILL
# and SIGTERM in turn), one offset reset, 60 s of a ClickHouse that accepts
# and never answers — checked against the oracle, with a line of figures
# per simulated day (RELIABILITY.md, "The soak"). Beside `run`, two
# `adstream learn` of one model (a writer and a standby; the writer killed
# -9 once, redis-server killed -9 once): every closed window learned once
# or in ad_ctr_abandoned, versions monotonic, the learner's memory per day.
# scripts/test.sh runs the 1-day variant.
#
#   scripts/soak.sh                 # 7 days
#   ADSTREAM_SOAK_DAYS=2 scripts/soak.sh
#
# Like scripts/test.sh it installs and starts Kafka, ClickHouse and Redis
# unless ADSTREAM_BROKERS / ADSTREAM_CLICKHOUSE_URL / ADSTREAM_REDIS_URL
# point at running ones, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
export ADSTREAM_SOAK_DAYS="${ADSTREAM_SOAK_DAYS:-7}"

started=()
cleanup() {
  for s in "${started[@]}"; do scripts/"$s".sh down || true; done
}
trap cleanup EXIT
if [ -z "${ADSTREAM_BROKERS:-}" ]; then
  if ! scripts/kafka.sh status >/dev/null 2>&1; then started+=(kafka); fi
  scripts/kafka.sh up
fi
if [ -z "${ADSTREAM_CLICKHOUSE_URL:-}" ]; then
  if ! scripts/clickhouse.sh status >/dev/null 2>&1; then started+=(clickhouse); fi
  scripts/clickhouse.sh up
fi
if [ -z "${ADSTREAM_REDIS_URL:-}" ]; then
  if ! scripts/redis.sh status >/dev/null 2>&1; then started+=(redis); fi
  scripts/redis.sh up
  export ADSTREAM_REDIS_URL="redis://127.0.0.1:${REDIS_PORT:-6379}"
elif [ -z "${ADSTREAM_TEST_EXTERNAL_SERVICES:-}" ]; then
  # Your Redis: the soak does not kill it (that step prints SKIPPED).
  export ADSTREAM_TEST_EXTERNAL_SERVICES=redis
fi
start=$(date +%s)
cargo test --release --test soak -- --include-ignored --nocapture
echo "soak of $ADSTREAM_SOAK_DAYS simulated day(s) took $(( $(date +%s) - start )) s (build included)"
