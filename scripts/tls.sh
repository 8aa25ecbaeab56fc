#!/usr/bin/env bash
# scripts/tls.sh — the secured services for the TLS tests (tests/tls.rs),
# beside the plaintext ones, all real and started natively:
#
#   scripts/tls.sh certs   make the test PKI in $TLS_DIR (once; `certs --force` remakes it)
#   scripts/tls.sh up      certs, then:
#                          - Kafka (scripts/kafka.sh) with a SASL_SSL listener (PLAIN,
#                            SCRAM-SHA-256, SCRAM-SHA-512) and an SSL listener that
#                            requires a client certificate, beside its plaintext one
#                            (restarted with them if it runs without); SCRAM users
#                            created with kafka-configs;
#                          - a second ClickHouse front (scripts/clickhouse.sh) serving
#                            HTTPS only, with a password, data in .run/clickhouse-tls;
#                          - redis-server with TLS only (tls-port, client certificates
#                            required) and an ACL user, the default user off.
#   scripts/tls.sh down    stop the ClickHouse front and redis-server this script started
#                          (Kafka keeps running: stop it with scripts/kafka.sh down)
#   scripts/tls.sh env     print the settings of the secured services as `export` lines
#
# Environment (all optional; the plaintext ports are the other scripts'):
#   TLS_DIR              certificates and passwords     (default .run/tls)
#   KAFKA_SASL_SSL_PORT  Kafka SASL_SSL listener        (default 9094)
#   KAFKA_SSL_PORT       Kafka SSL (mutual TLS) listener (default 9095)
#   CLICKHOUSE_TLS_PORT  ClickHouse HTTPS               (default 8443)
#   REDIS_TLS_PORT       Redis TLS                       (default 6380)
#   TLS_SERVER_NAMES     more DNS names for the server certificate, comma-separated
#                        (docker-compose.yml's tls profile: its service names)
#   TLS_SHARED=1         keys readable by every user (a volume shared by
#                        containers running as different users; never on a host)
#   plus KAFKA_PORT, KAFKA_CONTROLLER_PORT as for scripts/kafka.sh.
#
# The PKI (openssl): ca.pem/ca.key (the test CA), server.pem/server.key
# (127.0.0.1 and localhost, serverAuth), client.pem/client.key (CN adstream,
# clientAuth), kafka-server.pem (key + certificate, Kafka's PEM key store),
# and other-ca.pem, a CA nobody uses (the "wrong CA" tests). Keys are
# PKCS#8 (`openssl genpkey`). Passwords (random) in kafka-password,
# clickhouse-password, redis-password.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
TLS_DIR="${TLS_DIR:-$ROOT/.run/tls}"
export KAFKA_SASL_SSL_PORT="${KAFKA_SASL_SSL_PORT:-9094}"
export KAFKA_SSL_PORT="${KAFKA_SSL_PORT:-9095}"
CLICKHOUSE_TLS_PORT="${CLICKHOUSE_TLS_PORT:-8443}"
REDIS_TLS_PORT="${REDIS_TLS_PORT:-6380}"
HOST=127.0.0.1
KAFKA_USER=adstream
REDIS_USER=adstream
REDIS_RUN="$ROOT/.run/redis-tls/$REDIS_TLS_PORT"

say() { echo "tls.sh: $*" >&2; }
die() { say "$*"; exit 1; }
# shellcheck source=lib/service.sh
source "$ROOT/scripts/lib/service.sh"

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# --- certificates ----------------------------------------------------------

# A key (PKCS#8) and a certificate signed by the CA in $TLS_DIR.
issue() {
  local name="$1" subj="$2" ext="$3"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TLS_DIR/$name.key" 2>/dev/null
  openssl req -new -key "$TLS_DIR/$name.key" -subj "$subj" -out "$TLS_DIR/$name.csr"
  printf '%s\n' "$ext" >"$TLS_DIR/$name.ext"
  openssl x509 -req -in "$TLS_DIR/$name.csr" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca.key" -CAcreateserial \
    -days 30 -sha256 -extfile "$TLS_DIR/$name.ext" -out "$TLS_DIR/$name.pem" 2>/dev/null
  rm -f "$TLS_DIR/$name.csr" "$TLS_DIR/$name.ext"
}

cmd_certs() {
  if [[ "${1:-}" != --force && -f "$TLS_DIR/.complete" ]]; then return 0; fi
  command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"
  rm -rf "$TLS_DIR"
  mkdir -p "$TLS_DIR"
  chmod 700 "$TLS_DIR"
  local ca
  for ca in ca other-ca; do
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TLS_DIR/$ca.key" -out "$TLS_DIR/$ca.pem" -days 30 \
      -subj "/CN=adstream test $ca" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  done
  local sans="IP:127.0.0.1,DNS:localhost" name
  local IFS=,
  for name in ${TLS_SERVER_NAMES:-}; do sans+=",DNS:$name"; done
  unset IFS
  issue server "/CN=localhost" "subjectAltName=$sans
extendedKeyUsage=serverAuth,clientAuth
keyUsage=critical,digitalSignature,keyEncipherment"
  issue client "/CN=adstream" "extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature,keyEncipherment"
  cat "$TLS_DIR/server.key" "$TLS_DIR/server.pem" >"$TLS_DIR/kafka-server.pem"
  local pw
  for pw in kafka clickhouse redis; do
    head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$TLS_DIR/$pw-password"
  done
  if [[ "${TLS_SHARED:-0}" == 1 ]]; then
    chmod 755 "$TLS_DIR" && chmod 644 "$TLS_DIR"/*
  else
    chmod 600 "$TLS_DIR"/*.key "$TLS_DIR"/*-password "$TLS_DIR/kafka-server.pem"
  fi
  touch "$TLS_DIR/.complete"
  say "test PKI in $TLS_DIR"
}

# --- Kafka -----------------------------------------------------------------

kafka_up() {
  export KAFKA_TLS_DIR="$TLS_DIR"
  if ! port_open "$KAFKA_SASL_SSL_PORT" || ! port_open "$KAFKA_SSL_PORT"; then
    if bash "$ROOT/scripts/kafka.sh" status >/dev/null 2>&1; then
      say "restarting Kafka with its TLS listeners"
      bash "$ROOT/scripts/kafka.sh" down
    fi
  fi
  bash "$ROOT/scripts/kafka.sh" up
  local pw
  pw="$(cat "$TLS_DIR/kafka-password")"
  # One mechanism per request (the broker refuses two for one user in one).
  local mech
  for mech in SCRAM-SHA-256 SCRAM-SHA-512; do
    bash "$ROOT/scripts/kafka.sh" configs --alter --entity-type users --entity-name "$KAFKA_USER" \
      --add-config "$mech=[password=$pw]" >/dev/null 2>"$TLS_DIR/configs.log" \
      || { grep -v password "$TLS_DIR/configs.log" | head -5 >&2; die "creating the $mech user $KAFKA_USER failed"; }
  done
}

# --- ClickHouse ------------------------------------------------------------

clickhouse_env() {
  export CLICKHOUSE_PORT="$CLICKHOUSE_TLS_PORT" CLICKHOUSE_RUN_DIR="$ROOT/.run/clickhouse-tls"
  export CHFRONT_TLS_CERT="$TLS_DIR/server.pem" CHFRONT_TLS_KEY="$TLS_DIR/server.key"
  CHFRONT_USER=adstream CHFRONT_PASSWORD="$(cat "$TLS_DIR/clickhouse-password")"
  export CHFRONT_USER CHFRONT_PASSWORD
  unset CHFRONT_TLS_CLIENT_CA
}

# --- Redis -----------------------------------------------------------------

redis_cli() {
  redis-cli -h "$HOST" -p "$REDIS_TLS_PORT" --tls --cacert "$TLS_DIR/ca.pem" \
    --cert "$TLS_DIR/client.pem" --key "$TLS_DIR/client.key" \
    --user "$REDIS_USER" --pass "$(cat "$TLS_DIR/redis-password")" --no-auth-warning "$@"
}

redis_ping() { [[ "$(redis_cli PING 2>/dev/null)" == PONG ]]; }

redis_pid() { pidfile_pid "$REDIS_RUN/redis.pid" "redis-server"; }
# what service_down stops
running_pid() { redis_pid; }

redis_up() {
  if [[ -n "$(redis_pid)" ]] && redis_ping; then
    echo "redis (TLS) already running on $HOST:$REDIS_TLS_PORT"
    return 0
  fi
  port_open "$REDIS_TLS_PORT" && die "something else already listens on $HOST:$REDIS_TLS_PORT"
  # scripts/redis.sh installs Debian's redis-server if it is missing.
  command -v redis-server >/dev/null || bash "$ROOT/scripts/redis.sh" install
  mkdir -p "$REDIS_RUN"
  local pw
  pw="$(cat "$TLS_DIR/redis-password")"
  # The ACL line holds the password: the file is private, and the password
  # never appears on a command line.
  (umask 077; cat >"$REDIS_RUN/redis.conf" <<CONF
# Generated by scripts/tls.sh on every 'up'.
bind $HOST
port 0
tls-port $REDIS_TLS_PORT
tls-cert-file $TLS_DIR/server.pem
tls-key-file $TLS_DIR/server.key
tls-ca-cert-file $TLS_DIR/ca.pem
tls-auth-clients yes
protected-mode yes
daemonize no
dir $REDIS_RUN
logfile ""
save ""
appendonly no
user default off
user $REDIS_USER on >$pw ~adstream:* &* +@all
CONF
  )
  local launcher=()
  command -v setsid >/dev/null 2>&1 && launcher=(setsid)
  nohup "${launcher[@]}" redis-server "$REDIS_RUN/redis.conf" >>"$REDIS_RUN/redis.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$REDIS_RUN/redis.pid"
  wait_ready "$pid" redis_ping 30 redis-server "$REDIS_RUN/redis.log" "$REDIS_RUN/redis.pid" || exit 1
  echo "redis (TLS, ACL user $REDIS_USER) up on $HOST:$REDIS_TLS_PORT (pid $pid)"
}

# --- commands --------------------------------------------------------------

cmd_up() {
  cmd_certs
  kafka_up
  (clickhouse_env && bash "$ROOT/scripts/clickhouse.sh" up)
  redis_up
}

cmd_down() {
  (clickhouse_env && bash "$ROOT/scripts/clickhouse.sh" down)
  service_down "redis (TLS)" "$REDIS_RUN/redis.pid" 10
}

cmd_env() {
  cat <<ENV
export ADSTREAM_BROKERS=$HOST:$KAFKA_SASL_SSL_PORT ADSTREAM_KAFKA_SECURITY_PROTOCOL=sasl_ssl
export ADSTREAM_KAFKA_SASL_MECHANISM=SCRAM-SHA-512 ADSTREAM_KAFKA_SASL_USERNAME=$KAFKA_USER
export ADSTREAM_KAFKA_SASL_PASSWORD_FILE=$TLS_DIR/kafka-password ADSTREAM_KAFKA_SSL_CA_FILE=$TLS_DIR/ca.pem
export ADSTREAM_CLICKHOUSE_URL=https://$HOST:$CLICKHOUSE_TLS_PORT ADSTREAM_CLICKHOUSE_USER=adstream
export ADSTREAM_CLICKHOUSE_PASSWORD_FILE=$TLS_DIR/clickhouse-password ADSTREAM_CLICKHOUSE_CA_FILE=$TLS_DIR/ca.pem
export ADSTREAM_REDIS_URL=rediss://$HOST:$REDIS_TLS_PORT ADSTREAM_REDIS_USER=$REDIS_USER
export ADSTREAM_REDIS_PASSWORD_FILE=$TLS_DIR/redis-password ADSTREAM_REDIS_CA_FILE=$TLS_DIR/ca.pem
export ADSTREAM_REDIS_CERT_FILE=$TLS_DIR/client.pem ADSTREAM_REDIS_KEY_FILE=$TLS_DIR/client.key
ENV
}

case "${1:-}" in
  certs) shift; cmd_certs "$@" ;;
  up) cmd_up ;;
  down) cmd_down ;;
  env) cmd_env ;;
  *)
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
