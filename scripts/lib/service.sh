# scripts/lib/service.sh — pid-file helpers and the `down`/`status` commands
# shared by scripts/clickhouse.sh, scripts/superset.sh and scripts/kafka.sh
# (sourced, not run). Each caller defines `say` and `running_pid` (the pid of
# the service it started, or nothing).

# pidfile_pid FILE PATTERN: the pid in FILE when that process is alive and
# its command line contains PATTERN (so a recycled pid is not mistaken for
# ours); nothing otherwise.
pidfile_pid() {
  local file="$1" pattern="$2" pid
  [[ -f "$file" ]] || return 0
  pid="$(cat "$file" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$pattern"; then
    echo "$pid"
  fi
}

# wait_ready PID PROBE SECONDS WHAT LOG PIDFILE: polls the function PROBE
# every 0.1 s until it succeeds. Fails, showing LOG since its last "=== "
# start marker, if PID exits first; fails after SECONDS.
wait_ready() {
  local pid="$1" probe="$2" seconds="$3" what="$4" log="$5" pidfile="$6" i
  for ((i = 0; i < seconds * 10; i++)); do
    "$probe" && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      say "$what exited during startup; its log ($log):"
      tac "$log" | sed '/^=== /q' | tac | tail -n 40 >&2 || true
      rm -f "$pidfile"
      return 1
    fi
    sleep 0.1
  done
  say "$what (pid $pid) did not become ready within $seconds s; see $log"
  return 1
}

# stop_pid PID SECONDS: SIGTERM, then SIGKILL to its process group (the
# scripts start services with setsid) if it is still alive after SECONDS.
stop_pid() {
  local pid="$1" seconds="$2" i
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < seconds * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  say "pid $pid still alive after $seconds s, sending KILL to its process group"
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  sleep 0.2
}

# service_down NAME PIDFILE SECONDS: stops the service this script started
# (see stop_pid) and removes its pid file.
service_down() {
  local name="$1" pidfile="$2" seconds="$3" pid
  pid="$(running_pid)"
  if [[ -z "$pid" ]]; then
    rm -f "$pidfile"
    echo "$name not running"
    return 0
  fi
  stop_pid "$pid" "$seconds"
  rm -f "$pidfile"
  echo "$name stopped (pid $pid)"
}

# service_status NAME WHERE PROBE: exit 0 when the service this script
# started runs and the function PROBE succeeds (it answers on WHERE).
service_status() {
  local name="$1" where="$2" probe="$3" pid
  pid="$(running_pid)"
  if [[ -n "$pid" ]] && "$probe"; then
    echo "$name up on $where (pid $pid)"
    return 0
  fi
  if [[ -n "$pid" ]]; then
    echo "$name process $pid is running but $where does not answer"
  else
    echo "$name down"
  fi
  return 1
}
