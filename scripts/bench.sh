#!/usr/bin/env bash
# The benchmark suite (BENCHMARKS.md has the results, docs/benchmarks.md what each figure includes):
#
#   scripts/bench.sh                       # engine, generator, consumer + its peers (Spark, Flink, Kafka Streams, Quix Streams)
#   scripts/bench.sh engine                # any subset of: engine generator consumer scaling
#   scripts/bench.sh scaling               # cost/memory vs keys and window size (not in the default set)
#   scripts/bench.sh scaleout              # 1, 2, 3 run processes in one group (not in the default set)
#   scripts/bench.sh range                 # 30 days of windows: 10 s rows vs the 1 h rollup (not in the default set)
#   scripts/bench.sh learner               # CTR model vs the Bayes optimum, VW, river, a count baseline (not in the default set)
#   scripts/bench.sh profile               # perf profile of one `adstream run --drain`, split by stage (not in the default set)
#   scripts/bench.sh serving               # live pipeline: window closed -> readable in Redis; GET /ctr vs HGET (not in the default set)
#
# Like scripts/test.sh it installs and starts what it needs: the real Kafka
# broker and ClickHouse engine (unless ADSTREAM_BROKERS / ADSTREAM_CLICKHOUSE_URL
# point at running ones), and the consumer bench's peers: pyspark (PyPI, into
# .venv/spark) plus Spark's Kafka connector jars (Maven Central, into
# .cache/spark); apache-flink (PyPI, .venv/flink) plus Flink's Kafka SQL
# connector (Maven Central, .cache/flink); the Kafka Streams peer
# (bench/kstreams, compiled by Maven with its jars from Maven Central into
# target/kstreams); quixstreams (PyPI, .venv/quix). Results: a table per bench,
# the peer table, a summary table, and
# target/bench/{engine,generator,consumer,scaling,scaleout}.json (logs of each run beside them).
#
# Sizes (defaults are the issue's): BENCH_REPS=3, BENCH_ENGINE_EVENTS=5000000,
# BENCH_GENERATOR_EVENTS=5000000, BENCH_CONSUMER_EVENTS=2000000 (the peers
# process 5,000–20,000 events/s here, so more takes long),
# BENCH_SCALING_EVENTS=2000000 per point (the memory check runs twice that),
# BENCH_SCALEOUT_EVENTS=20000000 (12 partitions, 1/2/3 processes per rep);
# BENCH_SPARK=0, BENCH_FLINK=0, BENCH_KSTREAMS=0, BENCH_QUIX=0 skip a peer
# (BENCH_PEERS=0 skips them all). LEARNER_EVENTS=2000000 per setting of
# the learner bench (seed, segmented, segmented with 10,000 campaigns, and
# segmented spread over 22 h of event time);
# LEARNER_PEERS=vw,river picks the per-event peers (empty: only the
# optimum, adstream and the count baseline). The learner's peers need
# vowpalwabbit and river: installed once from PyPI into .venv/bench-learner.
# The serving bench also needs Redis (scripts/redis.sh unless ADSTREAM_REDIS_URL
# is set): SERVING_RATE=2000 events/s, SERVING_WINDOWS=24 windows measured,
# SERVING_POLLS=1s,200ms (one learner each), SERVING_REQUESTS=100000.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: the newest pyspark whose Kafka connector
# (org.apache.spark:spark-sql-kafka-0-10_2.13) Maven Central serves here;
# 4.3.0's is not served. Spark 4.x needs Java 17+.
SPARK_VERSION="${SPARK_VERSION:-4.2.0}"
# Pinned: the newest apache-flink (PyPI) whose Kafka SQL connector Maven
# Central serves here: flink-sql-connector-kafka 5.0.0-2.2 is built for Flink
# 2.2 (none is served for 2.3, PyPI's newest); 2.2.1 is the newest 2.2 wheel.
FLINK_VERSION="${FLINK_VERSION:-2.2.1}"
FLINK_CONNECTOR_VERSION="${FLINK_CONNECTOR_VERSION:-5.0.0-2.2}"
# Kafka Streams at the broker's version (scripts/kafka.sh's KAFKA_VERSION
# default; served on Maven Central).
KSTREAMS_VERSION="${KSTREAMS_VERSION:-${KAFKA_VERSION:-4.3.1}}"
# Pinned: the newest quixstreams on PyPI here (it brings confluent-kafka,
# i.e. librdkafka, and rocksdict from PyPI as wheels).
QUIX_VERSION="${QUIX_VERSION:-3.28.1}"
REPS="${BENCH_REPS:-3}"
OUT="${BENCH_OUT:-target/bench}"
benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(engine generator consumer)
wants() { local b; for b in "${benches[@]}"; do [ "$b" = "$1" ] && return 0; done; return 1; }

step() { printf '\n== %s\n' "$*"; }

step "build (release)"
cargo build --release --locked --bins
BENCH=target/release/adstream-bench
mkdir -p "$OUT"

started=()
cleanup() {
  for s in "${started[@]}"; do scripts/"$s".sh down || true; done
}
trap cleanup EXIT
if wants generator || wants consumer || wants profile || wants scaleout || wants range || wants serving; then
  if [ -z "${ADSTREAM_BROKERS:-}" ]; then
    step "Kafka (scripts/kafka.sh)"
    if ! scripts/kafka.sh status >/dev/null 2>&1; then started+=(kafka); fi
    scripts/kafka.sh up
    export ADSTREAM_BROKERS="127.0.0.1:${KAFKA_PORT:-9092}"
  fi
  if [ -z "${ADSTREAM_CLICKHOUSE_URL:-}" ]; then
    step "ClickHouse (scripts/clickhouse.sh)"
    if ! scripts/clickhouse.sh status >/dev/null 2>&1; then started+=(clickhouse); fi
    scripts/clickhouse.sh up
    export ADSTREAM_CLICKHOUSE_URL="http://127.0.0.1:${CLICKHOUSE_PORT:-8123}"
  fi
fi
if wants serving && [ -z "${ADSTREAM_REDIS_URL:-}" ]; then
  step "Redis (scripts/redis.sh)"
  if ! scripts/redis.sh status >/dev/null 2>&1; then started+=(redis); fi
  scripts/redis.sh up
  export ADSTREAM_REDIS_URL="redis://127.0.0.1:${REDIS_PORT:-6379}"
fi

peer_args=()
peers_on() { [ "${BENCH_PEERS:-1}" != 0 ] && [ "${1:-1}" != 0 ]; }
# Spark 4.x, Flink 2.x and Kafka Streams 4.x run on Java 17+.
if wants consumer && [ -z "${JAVA_HOME:-}" ] && [ -d /usr/lib/jvm/java-17-openjdk-amd64 ]; then
  export JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64
fi
if wants consumer && peers_on "${BENCH_SPARK:-1}"; then
  step "Spark $SPARK_VERSION (pyspark in .venv/spark, Kafka connector jars in .cache/spark)"
  if ! .venv/spark/bin/python -c "import pyspark, sys; sys.exit(pyspark.__version__ != '$SPARK_VERSION')" 2>/dev/null; then
    python3 -m venv .venv/spark
    .venv/spark/bin/pip install -q "pyspark==$SPARK_VERSION"
  fi
  JARS=".cache/spark/jars-$SPARK_VERSION"
  if ! ls "$JARS"/spark-sql-kafka-0-10_2.13-"$SPARK_VERSION".jar >/dev/null 2>&1; then
    mvn -q -B -f bench/spark/pom.xml -Dspark.version="$SPARK_VERSION" \
      dependency:copy-dependencies -DoutputDirectory="$PWD/$JARS"
  fi
  peer_args+=(--spark-python .venv/spark/bin/python --spark-job bench/spark/job.py --spark-jars "$JARS")
fi
if wants consumer && peers_on "${BENCH_FLINK:-1}"; then
  step "Flink $FLINK_VERSION (apache-flink in .venv/flink, Kafka SQL connector $FLINK_CONNECTOR_VERSION in .cache/flink)"
  if ! .venv/flink/bin/python -c "import sys; from importlib.metadata import version; sys.exit(version('apache-flink') != '$FLINK_VERSION')" 2>/dev/null; then
    python3 -m venv .venv/flink
    .venv/flink/bin/pip install -q "apache-flink==$FLINK_VERSION"
  fi
  FJARS=".cache/flink/jars-$FLINK_CONNECTOR_VERSION"
  if ! ls "$FJARS"/flink-sql-connector-kafka-"$FLINK_CONNECTOR_VERSION".jar >/dev/null 2>&1; then
    mvn -q -B -f bench/flink/pom.xml -Dflink.connector.version="$FLINK_CONNECTOR_VERSION" \
      dependency:copy-dependencies -DoutputDirectory="$PWD/$FJARS"
  fi
  peer_args+=(--flink-python .venv/flink/bin/python --flink-job bench/flink/job.py --flink-jars "$FJARS")
fi
if wants consumer && peers_on "${BENCH_KSTREAMS:-1}"; then
  step "Kafka Streams $KSTREAMS_VERSION (bench/kstreams, built into target/kstreams)"
  mvn -q -B -f bench/kstreams/pom.xml -Dkafka.version="$KSTREAMS_VERSION" compile dependency:copy-dependencies
  peer_args+=(--kstreams-classpath "target/kstreams/classes:target/kstreams/lib/*" --kstreams-java "${JAVA_HOME:+$JAVA_HOME/bin/}java")
fi
if wants consumer && peers_on "${BENCH_QUIX:-1}"; then
  step "Quix Streams $QUIX_VERSION (quixstreams in .venv/quix)"
  if ! .venv/quix/bin/python -c "import sys; from importlib.metadata import version; sys.exit(version('quixstreams') != '$QUIX_VERSION')" 2>/dev/null; then
    python3 -m venv .venv/quix
    .venv/quix/bin/pip install -q "quixstreams==$QUIX_VERSION"
  fi
  peer_args+=(--quix-python .venv/quix/bin/python --quix-job bench/quix/job.py)
fi

if wants engine; then
  step "engine bench"
  "$BENCH" --out "$OUT" --reps "$REPS" engine --events "${BENCH_ENGINE_EVENTS:-5000000}"
fi
if wants generator; then
  step "generator bench"
  "$BENCH" --out "$OUT" --reps "$REPS" generator --events "${BENCH_GENERATOR_EVENTS:-5000000}"
fi
if wants consumer; then
  step "consumer end-to-end bench${peer_args:+ with its peers}"
  "$BENCH" --out "$OUT" --reps "$REPS" consumer --events "${BENCH_CONSUMER_EVENTS:-2000000}" "${peer_args[@]}"
fi
if wants profile; then
  step "profile: perf record of one adstream run --drain (BENCH_PROFILE_EVENTS=${BENCH_PROFILE_EVENTS:-2000000} events)"
  command -v perf >/dev/null || apt-get install -y -q linux-perf >/dev/null
  ptopic="bench_profile_$$"
  target/release/adstream generate --topic "$ptopic" --rate 0 --seed 42 --jitter 1s --event-rate 10000 \
    --count "${BENCH_PROFILE_EVENTS:-2000000}" >"$OUT/profile-preload.out" 2>&1
  perf record -q -F 4999 -o "$OUT/profile.perf.data" -- target/release/adstream run --drain --topic "$ptopic" \
    --group "${ptopic}_g" --database "${ptopic}_db" >"$OUT/profile-run.out" 2>"$OUT/profile-run.err"
  perf report -i "$OUT/profile.perf.data" --no-children --sort comm,dso,sym --stdio 2>/dev/null >"$OUT/profile.txt"
  python3 bench/perf_split.py <"$OUT/profile.txt" | tee "$OUT/profile-split.md"
  # Leave nothing behind: the profile's topic, group and database.
  scripts/kafka.sh topics --delete --topic "$ptopic" >/dev/null 2>&1 || echo "note: could not delete topic $ptopic" >&2
  scripts/kafka.sh groups --delete --group "${ptopic}_g" >/dev/null 2>&1 || true
  curl -fsS "${ADSTREAM_CLICKHOUSE_URL:-http://127.0.0.1:${CLICKHOUSE_PORT:-8123}}/" \
    --data-binary "DROP DATABASE IF EXISTS ${ptopic}_db" >/dev/null || echo "note: could not drop ${ptopic}_db" >&2
fi
if wants scaling; then
  step "scaling bench (keys × window size)"
  se="${BENCH_SCALING_EVENTS:-2000000}"
  "$BENCH" --out "$OUT" --reps "$REPS" scaling --events "$se" --memory-events "$((2 * se))"
fi
if wants scaleout; then
  step "scale-out bench (1, 2, 3 run processes in one group)"
  "$BENCH" --out "$OUT" --reps "$REPS" scaleout --events "${BENCH_SCALEOUT_EVENTS:-20000000}"
fi
if wants range; then
  step "long-range query bench (30 days: 10 s rows vs the 1 h rollup)"
  "$BENCH" --out "$OUT" --reps "$REPS" range --events "${BENCH_RANGE_EVENTS:-5000000}"
fi
if wants learner; then
  step "CTR learner bench (vs the Bayes optimum; VW, river, count baseline in .venv/bench-learner)"
  if ! .venv/bench-learner/bin/python -c "import vowpalwabbit, river" 2>/dev/null; then
    python3 -m venv .venv/bench-learner
    .venv/bench-learner/bin/pip install -q vowpalwabbit river
  fi
  le="${LEARNER_EVENTS:-2000000}"
  peers="${LEARNER_PEERS-vw,river}"
  rm -f "$OUT"/learner-peers-*.json
  # traffic, campaigns, events per simulated second: at generate's default
  # 1000/s, 2M events span 33 min of event time (one UTC hour); the last
  # setting spreads them over 22 h, so the hour of day varies.
  for setting in "seed 5 1000" "segmented 5 1000" "segmented 10000 1000" "segmented 5 25"; do
    set -- $setting
    name="learner-$1-${2}c"
    [ "$3" = 1000 ] || name="$name-${3}eps"
    "$BENCH" --out "$OUT" --reps "$REPS" learner --events "$le" --traffic "$1" --campaigns "$2" \
      --event-rate "$3" --export "$OUT/$name.csv"
    .venv/bench-learner/bin/python bench/learner_peers.py --export "$OUT/$name.csv" \
      --adstream "$OUT/$name.json" --out "$OUT" --methods "$peers"
  done
  step "CTR learner: every setting"
  .venv/bench-learner/bin/python bench/learner_peers.py --table "$OUT"
fi
if wants serving; then
  step "serving bench (window closed -> Redis per poll interval; GET /ctr and HGET latency)"
  "$BENCH" --out "$OUT" serving --rate "${SERVING_RATE:-2000}" --windows "${SERVING_WINDOWS:-24}" \
    --poll-intervals "${SERVING_POLLS:-1s,200ms}" --requests "${SERVING_REQUESTS:-100000}"
fi
step "summary ($OUT/*.json)"
"$BENCH" --out "$OUT" summary
