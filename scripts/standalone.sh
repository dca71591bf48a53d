#!/usr/bin/env bash
# `make up`: Airflow standalone (api-server with the UI, scheduler, dag-processor,
# triggerer) in the foreground, with the sandboxes running and the crmsync DAGs unpaused.
# Ctrl-C stops Airflow (forcefully after AIRFLOW_STOP_TIMEOUT seconds, default 30: an idle
# LocalExecutor worker can keep `airflow standalone` from exiting), and the sandboxes if
# this script started them. Another API port: AIRFLOW__API__PORT=8081 make up.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"
if [ -x "$ROOT/.venv/bin/airflow" ]; then export PATH="$ROOT/.venv/bin:$PATH"; fi

# DAGs start paused and are unpaused below only once the API server answers: tasks call
# its Execution API, and unpaused at creation their first tries failed with "Connection
# refused" (shown as try 2 in the UI).
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="${AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION:-True}"
MAPPINGS_DIR="${CRMSYNC_MAPPINGS_DIR:-$ROOT/include/mappings}"
API_PORT="${AIRFLOW__API__PORT:-8080}"
# Tasks call the api-server's Execution API; its default URL assumes port 8080.
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="${AIRFLOW__CORE__EXECUTION_API_SERVER_URL:-http://localhost:$API_PORT/execution/}"
STOP_TIMEOUT="${AIRFLOW_STOP_TIMEOUT:-30}"
PASSWORDS_FILE="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated}"
mkdir -p "$AIRFLOW_HOME"

started_sandboxes=0
if ! bash "$ROOT/scripts/sandboxes.sh" status >/dev/null 2>&1; then
  started_sandboxes=1
fi
bash "$ROOT/scripts/sandboxes.sh" start

watcher_pid=""
airflow_pid=""

group_alive() { # pgid: is any non-zombie process left in the group?
  local p
  for p in $(pgrep -g "$1" 2>/dev/null); do
    case "$(ps -o stat= -p "$p" 2>/dev/null)" in
      Z* | "") ;;
      *) return 0 ;;
    esac
  done
  return 1
}

stop_airflow() {
  [ -n "$airflow_pid" ] || return 0
  group_alive "$airflow_pid" || return 0
  echo "standalone: stopping Airflow (forcefully after ${STOP_TIMEOUT}s)"
  kill -INT -- "-$airflow_pid" 2>/dev/null || true
  local waited=0
  while group_alive "$airflow_pid" && [ "$waited" -lt $((STOP_TIMEOUT * 2)) ]; do
    sleep 0.5
    waited=$((waited + 1))
  done
  if group_alive "$airflow_pid"; then
    echo "standalone: Airflow still running after ${STOP_TIMEOUT}s: SIGTERM, then SIGKILL"
    kill -TERM -- "-$airflow_pid" 2>/dev/null || true
    sleep 5
    kill -KILL -- "-$airflow_pid" 2>/dev/null || true
  fi
}

cleanup() {
  trap - INT TERM
  if [ -n "$watcher_pid" ]; then kill "$watcher_pid" 2>/dev/null || true; fi
  stop_airflow
  if [ "$started_sandboxes" = 1 ]; then
    bash "$ROOT/scripts/sandboxes.sh" stop || true
  else
    echo "standalone: the sandboxes were already running and are left running ('make stop' stops them)"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

unpaused_count() { # how many DAGs the metadata DB knows unpaused
  airflow dags list --columns dag_id,is_paused -o json 2>/dev/null |
    python -c '
import json, sys
# stdout also carries warnings (graphviz): the list is the line that starts with "["
rows = next((json.loads(ln) for ln in sys.stdin if ln.startswith("[")), [])
print(sum(1 for d in rows if str(d.get("is_paused")).lower() == "false"))' 2>/dev/null || echo 0
}

# Once the API answers: unpause the DAGs (as the dag-processor registers them) and say
# where to log in.
(
  want=$(find "$MAPPINGS_DIR" -maxdepth 1 -name '*.yaml' | wc -l)
  for _ in $(seq 1 300); do
    if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$API_PORT/api/v2/monitor/health" 2>/dev/null &&
      [ -f "$PASSWORDS_FILE" ]; then
      # the sandbox connections into the metadata DB when absent (never overwritten), before
      # any DAG is unpaused: also when this script is run without `make up`
      if [ "${CRMSYNC_SANDBOX_CONNECTIONS:-1}" != 0 ]; then
        python "$ROOT/scripts/sandbox_connections.py" --quiet || true
      fi
      for _ in $(seq 1 60); do
        airflow dags unpause --treat-dag-id-as-regex --yes '.*' >/dev/null 2>&1 || true
        [ "$(unpaused_count)" -ge "$want" ] && break
        sleep 2
      done
      cat <<EOF

================================================================================
 crmsync is up:   http://localhost:$API_PORT
 user:            admin
 password:        in $PASSWORDS_FILE
                  (cat it, or see "Login with username" above)
 sandboxes:       Chargebee http://127.0.0.1:$SANDBOX_CHARGEBEE_PORT/api/v2   Customcrm http://127.0.0.1:$SANDBOX_CUSTOMCRM_PORT
 DAGs:            $(unpaused_count) of $want unpaused, once the API answered
 stop:            Ctrl-C
================================================================================

EOF
      exit 0
    fi
    sleep 1
  done
  echo "standalone: the API did not answer on :$API_PORT within 300s" >&2
) &
watcher_pid=$!

echo "standalone: AIRFLOW_HOME=$AIRFLOW_HOME, metadata DB ${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN%%://*}://..."
echo "standalone: the admin password will be in $PASSWORDS_FILE"
# Its own process group, so that on exit everything it started can be stopped together.
setsid airflow standalone &
airflow_pid=$!
wait "$airflow_pid" || true
