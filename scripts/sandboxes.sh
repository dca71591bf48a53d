#!/usr/bin/env bash
# Start / stop the two local API sandboxes (Chargebee on 8602, Customcrm on 8601).
#
#   scripts/sandboxes.sh start    start both in the background (skips one that already answers),
#                                 wait until each answers GET /_sandbox/stats
#   scripts/sandboxes.sh stop     stop the ones this script started (pid files under var/run)
#   scripts/sandboxes.sh status   say which answer
#
# State, logs and pid files live under var/: var/sandbox/<name>.json (the sandbox's state,
# seeded from sandbox/seed/<name>.json when missing), var/log/sandbox-<name>.log,
# var/run/sandbox-<name>.pid. Delete var/sandbox/ (or POST /_sandbox/reset) to start over.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"

if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
STATE_DIR="$ROOT/var/sandbox"
LOG_DIR="$ROOT/var/log"
RUN_DIR="$ROOT/var/run"
WAIT_SECONDS="${SANDBOX_WAIT_SECONDS:-30}"

# name port
SANDBOXES=(
  "customcrm $SANDBOX_CUSTOMCRM_PORT"
  "chargebee $SANDBOX_CHARGEBEE_PORT"
)

log() { printf 'sandboxes: %s\n' "$*" >&2; }

answers() { # port
  curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$1/_sandbox/stats" 2>/dev/null
}

pid_of() { # name -> pid of a live process started by us, or nothing
  local pidfile="$RUN_DIR/sandbox-$1.pid" pid
  [ -f "$pidfile" ] || return 0
  pid="$(cat "$pidfile")"
  # Guard against a recycled pid: the process must still be our sandbox module.
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-m sandbox\.$1"; then
    echo "$pid"
  else
    rm -f "$pidfile"
  fi
}

start_one() { # name port
  local name="$1" port="$2" pid waited=0
  if answers "$port"; then
    log "$name already answers on 127.0.0.1:$port"
    return 0
  fi
  pid="$(pid_of "$name")"
  if [ -z "$pid" ]; then
    mkdir -p "$STATE_DIR" "$LOG_DIR" "$RUN_DIR"
    log "starting $name on 127.0.0.1:$port (log: var/log/sandbox-$name.log)"
    # setsid: own session, so Ctrl-C in the terminal that ran `make` does not kill it.
    (cd "$ROOT" && exec setsid "$PYTHON" -m "sandbox.$name" --host 127.0.0.1 --port "$port" \
      --state "$STATE_DIR/$name.json" --seed "$ROOT/sandbox/seed/$name.json" \
      >>"$LOG_DIR/sandbox-$name.log" 2>&1 </dev/null) &
    pid=$!
    echo "$pid" >"$RUN_DIR/sandbox-$name.pid"
  fi
  until answers "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$RUN_DIR/sandbox-$name.pid"
      log "$name exited before answering; last lines of var/log/sandbox-$name.log:"
      tail -n 20 "$LOG_DIR/sandbox-$name.log" >&2 || true
      return 1
    fi
    if [ "$waited" -ge $((WAIT_SECONDS * 10)) ]; then
      log "$name (pid $pid) does not answer GET http://127.0.0.1:$port/_sandbox/stats after ${WAIT_SECONDS}s"
      tail -n 20 "$LOG_DIR/sandbox-$name.log" >&2 || true
      return 1
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  log "$name ready on http://127.0.0.1:$port (pid $pid)"
}

stop_one() { # name port
  local name="$1" port="$2" pid
  pid="$(pid_of "$name")"
  if [ -z "$pid" ]; then
    if answers "$port"; then
      log "$name answers on $port but was not started by this script: left alone"
    fi
    return 0
  fi
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name did not stop in 5s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN_DIR/sandbox-$name.pid"
}

status_one() { # name port
  local name="$1" port="$2" pid
  pid="$(pid_of "$name")"
  if answers "$port"; then
    echo "$name: up on http://127.0.0.1:$port${pid:+ (pid $pid, started by make)}"
  else
    echo "$name: down${pid:+ (pid $pid alive but not answering)}"
    return 1
  fi
}

cmd="${1:-start}"
rc=0
for entry in "${SANDBOXES[@]}"; do
  # shellcheck disable=SC2086
  set -- $entry
  case "$cmd" in
    start) start_one "$1" "$2" || rc=1 ;;
    stop) stop_one "$1" "$2" || rc=1 ;;
    status) status_one "$1" "$2" || rc=1 ;;
    *)
      echo "usage: $0 start|stop|status" >&2
      exit 2
      ;;
  esac
done
exit "$rc"
