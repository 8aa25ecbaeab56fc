#!/usr/bin/env bash
# The whole test suite, on a fresh machine: lint, unit tests, and the
# end-to-end tests against a real Apache Kafka broker, the real ClickHouse
# engine and a real redis-server, all installed and started by this repo's
# own scripts, then the
# Superset dashboard rendered in headless Chromium (scripts/test-dashboard.sh).
#
#   scripts/test.sh
#
# Point ADSTREAM_BROKERS / ADSTREAM_CLICKHOUSE_URL / ADSTREAM_REDIS_URL at your own services to
# test against them instead; the local ones are then not started, and the
# steps that stop and restart one of those services (tests/reliability.rs:
# broker restart, ClickHouse outage; tests/learn.rs: redis-server killed)
# are skipped, each printing a SKIPPED line (ADSTREAM_TEST_EXTERNAL_SERVICES
# lists them, e.g. `redis`), since those services are not ours to take down.
# When this script started every service itself, a SKIPPED line fails the
# run: nothing may pass without running.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "format and lint"
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi
cargo fmt --check
cargo clippy --all-targets -- -D warnings

step "build"
cargo build --all-targets

external=()
[ -n "${ADSTREAM_BROKERS:-}" ] && external+=(kafka)
[ -n "${ADSTREAM_CLICKHOUSE_URL:-}" ] && external+=(clickhouse)
[ -n "${ADSTREAM_REDIS_URL:-}" ] && external+=(redis)
if [ "${#external[@]}" -gt 0 ]; then
  ADSTREAM_TEST_EXTERNAL_SERVICES="$(IFS=,; echo "${external[*]}")"
  export ADSTREAM_TEST_EXTERNAL_SERVICES
fi

started=()
cleanup() {
  for s in "${started[@]}"; do scripts/"$s".sh down || true; done
}
trap cleanup EXIT

if [ -z "${ADSTREAM_BROKERS:-}" ]; then
  step "Kafka (scripts/kafka.sh)"
  if ! scripts/kafka.sh status >/dev/null 2>&1; then started+=(kafka); fi
  scripts/kafka.sh up
fi
if [ -z "${ADSTREAM_CLICKHOUSE_URL:-}" ]; then
  step "ClickHouse (scripts/clickhouse.sh)"
  if ! scripts/clickhouse.sh status >/dev/null 2>&1; then started+=(clickhouse); fi
  scripts/clickhouse.sh up
fi

if [ -z "${ADSTREAM_REDIS_URL:-}" ]; then
  step "Redis (scripts/redis.sh)"
  if ! scripts/redis.sh status >/dev/null 2>&1; then started+=(redis); fi
  scripts/redis.sh up
fi

if [ -z "${ADSTREAM_TEST_EXTERNAL_SERVICES:-}" ]; then
  # tests/tls.rs: Kafka's SASL_SSL and mutual-TLS listeners (the broker is
  # restarted with them), ClickHouse over HTTPS with a password, Redis over
  # TLS with an ACL user; certificates made with openssl. Ports:
  # KAFKA_SASL_SSL_PORT, KAFKA_SSL_PORT, CLICKHOUSE_TLS_PORT, REDIS_TLS_PORT.
  step "TLS services (scripts/tls.sh)"
  started+=(tls)
  scripts/tls.sh up
fi

if [ -x .venv/chfront/bin/python ]; then
  step "ClickHouse HTTP front unit tests"
  .venv/chfront/bin/python -m unittest discover -s scripts/chfront -p 'test_*.py'
fi

step "tests (unit, demo, end to end)"
start=$(date +%s)
status=0
log="$(mktemp)"
cargo test --all-targets -- --include-ignored --nocapture 2>&1 | tee "$log" || status=$?
echo "tests took $(( $(date +%s) - start )) s"
if [ "${#external[@]}" -eq 0 ] && grep -q "SKIPPED" "$log"; then
  echo "FAILED: tests were skipped although this script started every service itself:" >&2
  grep "SKIPPED" "$log" >&2
  status=1
fi
rm -f "$log"

# Slower, and needs a browser: runs even when a cargo test failed, so one
# run reports both. First run installs Superset and Chromium (~5 min).
step "Superset dashboard in headless Chromium (scripts/test-dashboard.sh)"
scripts/test-dashboard.sh || status=$?
exit "$status"
