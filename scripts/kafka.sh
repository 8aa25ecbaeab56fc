#!/usr/bin/env bash
# scripts/kafka.sh — a real, single-node Apache Kafka broker for development
# and tests, run natively with the JDK (no Docker, no Kafka tarball needed).
#
#   scripts/kafka.sh up              start (fetches the jars on first use) and wait until it serves
#   scripts/kafka.sh down [--wipe]   stop the broker this script started; --wipe also deletes its data
#   scripts/kafka.sh reset           same as `down --wipe`
#   scripts/kafka.sh status          exit 0 if running, 1 if not
#   scripts/kafka.sh topics ARGS...  kafka-topics          (org.apache.kafka.tools.TopicCommand)
#   scripts/kafka.sh groups ARGS...  kafka-consumer-groups (org.apache.kafka.tools.consumer.group.ConsumerGroupCommand)
#   scripts/kafka.sh produce ARGS... kafka-console-producer (org.apache.kafka.tools.ConsoleProducer)
#   scripts/kafka.sh consume ARGS... kafka-console-consumer (org.apache.kafka.tools.consumer.ConsoleConsumer)
#   scripts/kafka.sh configs ARGS... kafka-configs         (kafka.admin.ConfigCommand), e.g. SCRAM users
#   (the five passthroughs get --bootstrap-server preset: the plaintext listener)
#
# How: the broker's jars come from Maven Central (the only place reachable
# here), fetched once with scripts/kafka/pom.xml into
# .cache/kafka/<version>/libs and reused afterwards. The broker runs in KRaft
# combined mode (broker + controller in one JVM, no ZooKeeper) with its data in
# .run/kafka/data, which survives down/up so topics and committed offsets stay.
# Its log is .run/kafka/kafka.log; JVM stdout/stderr go to .run/kafka/stdout.log.
#
# Environment (all optional):
#   KAFKA_VERSION          Kafka release to fetch/run       (default 4.3.1)
#   KAFKA_PORT             client listener on 127.0.0.1     (default 9092)
#   KAFKA_CONTROLLER_PORT  KRaft controller listener         (default 9093)
#   KAFKA_HEAP_OPTS        broker heap                       (default -Xmx512m -Xms256m)
#   KAFKA_START_TIMEOUT    seconds `up` waits for readiness  (default 60)
#   JAVA_HOME              JDK to use (17+); else `java` on PATH
# TLS listeners beside the plaintext one (off unless KAFKA_TLS_DIR is set;
# scripts/tls.sh sets them up, makes the certificates and the SCRAM users):
#   KAFKA_TLS_DIR          folder with ca.pem and kafka-server.pem (key + certificate, PEM)
#   KAFKA_SASL_SSL_PORT    SASL_SSL listener: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (default 9094)
#   KAFKA_SSL_PORT         SSL listener requiring a client certificate (mutual TLS) (default 9095)
#   KAFKA_PLAIN_USER       the PLAIN user                     (default adstream)
#   KAFKA_PLAIN_PASSWORD_FILE  file holding its password      (default $KAFKA_TLS_DIR/kafka-password)
set -euo pipefail

# Pinned to 4.3.1, a bugfix release whose whole dependency tree Maven Central
# serves here. KAFKA_VERSION=4.4.0 also works (thanks to the connect-runtime
# exclusion in the pom). A data dir formatted by a newer version may refuse to
# start under an older one: `reset` it after downgrading.
KAFKA_VERSION="${KAFKA_VERSION:-4.3.1}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
HOST=127.0.0.1
BOOTSTRAP="$HOST:$KAFKA_PORT"
KAFKA_TLS_DIR="${KAFKA_TLS_DIR:-}"
KAFKA_SASL_SSL_PORT="${KAFKA_SASL_SSL_PORT:-9094}"
KAFKA_SSL_PORT="${KAFKA_SSL_PORT:-9095}"
KAFKA_PLAIN_USER="${KAFKA_PLAIN_USER:-adstream}"

# Resolve everything from the script's own location so it works from any cwd
# and on a fresh clone.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
CONF_DIR="$ROOT/scripts/kafka"
LIBS="$ROOT/.cache/kafka/$KAFKA_VERSION/libs"
RUN_DIR="$ROOT/.run/kafka"
DATA_DIR="$RUN_DIR/data"
PID_FILE="$RUN_DIR/kafka.pid"
PROPS="$RUN_DIR/server.properties"
PROBE_PROPS="$RUN_DIR/probe.properties"
LOG_FILE="$RUN_DIR/kafka.log"
STDOUT_LOG="$RUN_DIR/stdout.log"

if [[ -n "${JAVA_HOME:-}" ]]; then JAVA="$JAVA_HOME/bin/java"; else JAVA=java; fi

die() { echo "kafka.sh: $*" >&2; exit 1; }
say() { echo "kafka.sh: $*" >&2; }
# shellcheck source=lib/service.sh
source "$ROOT/scripts/lib/service.sh"

# --- jars ------------------------------------------------------------------

# Fetch the broker + tools + log4j2 jars once. Maven resolves into a temp dir
# that is renamed into place only when complete, so an interrupted fetch is
# simply retried next time; once present, Maven is never invoked again.
ensure_libs() {
  [[ -f "$LIBS/.complete" ]] && return 0
  command -v mvn >/dev/null || die "mvn not found (needed once to fetch Kafka $KAFKA_VERSION jars)"
  echo "kafka.sh: fetching Kafka $KAFKA_VERSION jars from Maven Central into ${LIBS#"$ROOT"/} (one time)..." >&2
  local tmp="$LIBS.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$(dirname "$LIBS")"
  local mvn_log
  mvn_log="$(dirname "$LIBS")/mvn.log"
  if ! mvn -B -f "$CONF_DIR/pom.xml" dependency:copy-dependencies \
        -Dkafka.version="$KAFKA_VERSION" -DincludeScope=runtime \
        -DoutputDirectory="$tmp" >"$mvn_log" 2>&1; then
    tail -n 40 "$mvn_log" >&2
    rm -rf "$tmp"
    die "could not fetch Kafka $KAFKA_VERSION jars with Maven (full log: ${mvn_log#"$ROOT"/})"
  fi
  [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" && -f "$tmp/kafka-tools-$KAFKA_VERSION.jar" ]] \
    || { rm -rf "$tmp"; die "Maven finished but the Kafka $KAFKA_VERSION jars are missing"; }
  touch "$tmp/.complete"
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
}

# Run a Kafka CLI class in a short-lived JVM: small heap, quick startup, and
# warnings-only logging to stderr so stdout is just the tool's output.
run_tool() {
  local main="$1"; shift
  ensure_libs
  "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$CONF_DIR/tools-log4j2.yaml" \
    -cp "$LIBS/*" "$main" "$@"
}

# --- process bookkeeping ---------------------------------------------------

# The pid from the pid file if that process is alive AND is our broker
# (guards against a stale pid file whose pid got reused by something else).
running_pid() { pidfile_pid "$PID_FILE" "kafka\.Kafka $PROPS"; }

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# Serialise up/down/reset (e.g. parallel test processes calling `up`).
# fd 9 must not leak into the broker, or it would hold the lock forever.
take_lock() {
  mkdir -p "$RUN_DIR"
  exec 9>"$RUN_DIR/.lock"
  if command -v flock >/dev/null; then flock 9; fi
}

show_logs() {
  echo "---- last 50 lines of ${LOG_FILE#"$ROOT"/} ----" >&2
  tail -n 50 "$LOG_FILE" >&2 2>/dev/null || echo "(no log)" >&2
  if [[ -s "$STDOUT_LOG" ]]; then
    echo "---- last 50 lines of ${STDOUT_LOG#"$ROOT"/} ----" >&2
    tail -n 50 "$STDOUT_LOG" >&2
  fi
}

# --- broker config ---------------------------------------------------------

# Regenerated on every `up` so port overrides take effect. The quorum is
# static (controller.quorum.voters), not the dynamic `--standalone` kind, so
# the controller port is not baked into the formatted data dir.
write_config() {
  local listeners="PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT"
  local advertised="PLAINTEXT://$HOST:$KAFKA_PORT"
  local protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
  if [[ -n "$KAFKA_TLS_DIR" ]]; then
    listeners+=",SASL_SSL://$HOST:$KAFKA_SASL_SSL_PORT,SSL://$HOST:$KAFKA_SSL_PORT"
    advertised+=",SASL_SSL://$HOST:$KAFKA_SASL_SSL_PORT,SSL://$HOST:$KAFKA_SSL_PORT"
    protocols+=",SASL_SSL:SASL_SSL,SSL:SSL"
  fi
  cat >"$PROPS" <<EOF
# Generated by scripts/kafka.sh on every 'up'; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protocols
log.dirs=$DATA_DIR

# Single node: every internal topic must live with replication factor 1.
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Fewer internal partitions than the default 50: faster first group/txn use.
offsets.topic.num.partitions=10
transaction.state.log.num.partitions=10

num.partitions=3
auto.create.topics.enable=true
# Consumers join at once instead of waiting 3 s for more members.
group.initial.rebalance.delay.ms=0

# Room for 2 MiB+ records (tests send a 1 MiB poison message; clients must
# still raise their own max.request.size / fetch sizes).
message.max.bytes=4194304
replica.fetch.max.bytes=4194304
socket.request.max.bytes=104857600

# Keep data until it is deleted by hand (reset); tests restart mid-stream.
log.retention.ms=-1
log.retention.bytes=-1

# Small machine (2 cores, other services beside it).
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
background.threads=4
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=33554432
EOF
  if [[ -n "$KAFKA_TLS_DIR" ]]; then write_tls_config; fi
  # Used only by the readiness probe: fail fast instead of the 60 s defaults.
  cat >"$PROBE_PROPS" <<EOF
request.timeout.ms=3000
default.api.timeout.ms=5000
EOF
}

# The TLS listeners' settings (KAFKA_TLS_DIR): PEM key store and trust
# store (no keytool, no JKS), SASL on SASL_SSL with PLAIN (its one user in
# the JAAS line) and SCRAM (users stored in the cluster metadata, created
# with `kafka.sh configs`), and client certificates required on SSL.
write_tls_config() {
  local dir="$KAFKA_TLS_DIR" pw_file="${KAFKA_PLAIN_PASSWORD_FILE:-$KAFKA_TLS_DIR/kafka-password}" pw
  [[ -r "$dir/ca.pem" && -r "$dir/kafka-server.pem" ]] || die "KAFKA_TLS_DIR=$dir lacks ca.pem or kafka-server.pem (scripts/tls.sh certs makes them)"
  [[ -r "$pw_file" ]] || die "no PLAIN password file $pw_file (KAFKA_PLAIN_PASSWORD_FILE)"
  pw="$(cat "$pw_file")"
  [[ "$pw" =~ ^[A-Za-z0-9_.-]+$ ]] || die "the password in $pw_file must be letters, digits, _ . - (it goes into a JAAS line)"
  cat >>"$PROPS" <<EOF

# TLS listeners (KAFKA_TLS_DIR=$dir)
ssl.keystore.type=PEM
ssl.keystore.location=$dir/kafka-server.pem
ssl.truststore.type=PEM
ssl.truststore.location=$dir/ca.pem
listener.name.ssl.ssl.client.auth=required
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$KAFKA_PLAIN_USER="$pw";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
EOF
}

# KRaft needs its log dir formatted once (kafka-storage.sh format). A fresh
# cluster id is generated for it; later starts reuse the formatted dir.
format_if_needed() {
  [[ -f "$DATA_DIR/meta.properties" ]] && return 0
  mkdir -p "$DATA_DIR"
  local cluster_id
  cluster_id="$(run_tool kafka.tools.StorageTool random-uuid | tail -n 1)"
  [[ -n "$cluster_id" ]] || die "StorageTool random-uuid printed nothing"
  run_tool kafka.tools.StorageTool format -t "$cluster_id" -c "$PROPS" >"$RUN_DIR/format.log" 2>&1 \
    || { cat "$RUN_DIR/format.log" >&2; die "formatting $DATA_DIR failed"; }
}

# --- commands --------------------------------------------------------------

cmd_up() {
  take_lock
  local pid
  pid="$(running_pid)"
  if [[ -n "$pid" ]]; then
    echo "kafka already running on $BOOTSTRAP (pid $pid)"
    return 0
  fi
  rm -f "$PID_FILE"
  local port
  local ports=("$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT")
  if [[ -n "$KAFKA_TLS_DIR" ]]; then ports+=("$KAFKA_SASL_SSL_PORT" "$KAFKA_SSL_PORT"); fi
  for port in "${ports[@]}"; do
    if port_open "$port"; then
      die "something else already listens on $HOST:$port (not a broker started by this script)"
    fi
  done
  command -v "$JAVA" >/dev/null || die "java not found (need JDK 17+; set JAVA_HOME)"
  ensure_libs
  write_config
  format_if_needed

  : >"$STDOUT_LOG"
  # setsid + nohup: the broker gets its own session, so a Ctrl-C or hang-up
  # aimed at whoever ran `up` (a shell, a test runner) does not kill it.
  # The inner shell writes its own pid and then execs java, so the pid file
  # holds the JVM's pid whatever setsid does. 9>&- drops the lock fd.
  # KAFKA_HEAP_OPTS is word-split on purpose; $$ / $0 / $@ belong to the inner shell.
  # shellcheck disable=SC2086,SC2016
  setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" \
    "$JAVA" $KAFKA_HEAP_OPTS \
    -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -Dkafka.logs.dir="$RUN_DIR" \
    -Dlog4j2.configurationFile="$CONF_DIR/log4j2.yaml" \
    -cp "$LIBS/*" kafka.Kafka "$PROPS" \
    </dev/null >"$STDOUT_LOG" 2>&1 9>&- &

  # Ready = the broker answers a metadata request (list topics), not merely
  # an open port. Fail early if the JVM dies.
  local deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  while :; do
    sleep 0.5
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    if [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null; then
      [[ -z "$pid" && $SECONDS -lt $deadline ]] && continue
      echo "kafka.sh: broker exited during startup" >&2
      show_logs
      rm -f "$PID_FILE"
      exit 1
    fi
    if port_open "$KAFKA_PORT" &&
       timeout 20 bash "${BASH_SOURCE[0]}" topics --command-config "$PROBE_PROPS" --list >/dev/null 2>&1; then
      break
    fi
    if ((SECONDS >= deadline)); then
      echo "kafka.sh: broker not ready after ${KAFKA_START_TIMEOUT}s, stopping it" >&2
      show_logs
      stop_pid "$pid" 20
      rm -f "$PID_FILE"
      exit 1
    fi
  done
  echo "kafka up on $BOOTSTRAP (pid $pid)"
}

# SIGTERM lets Kafka do a clean shutdown (flush, close logs, so the next
# start needs no recovery); SIGKILL only if it hangs past 20 s.
cmd_down() {
  local wipe=0
  case "${1:-}" in
    "") ;;
    --wipe) wipe=1 ;;
    *) die "usage: kafka.sh down [--wipe]" ;;
  esac
  take_lock
  service_down kafka "$PID_FILE" 20
  if ((wipe)); then
    rm -rf "$DATA_DIR"
    echo "kafka data wiped (${DATA_DIR#"$ROOT"/})"
  fi
}

kafka_answers() { port_open "$KAFKA_PORT"; }

cmd_status() { service_status kafka "$BOOTSTRAP" kafka_answers; }

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
  up) cmd_up ;;
  down) cmd_down "$@" ;;
  reset) cmd_down --wipe ;;
  status) cmd_status ;;
  topics) run_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" "$@" ;;
  groups) run_tool org.apache.kafka.tools.consumer.group.ConsumerGroupCommand --bootstrap-server "$BOOTSTRAP" "$@" ;;
  produce) run_tool org.apache.kafka.tools.ConsoleProducer --bootstrap-server "$BOOTSTRAP" "$@" ;;
  consume) run_tool org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$BOOTSTRAP" "$@" ;;
  configs) run_tool kafka.admin.ConfigCommand --bootstrap-server "$BOOTSTRAP" "$@" ;;
  *) usage ;;
esac
