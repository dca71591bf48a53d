#!/usr/bin/env bash
# `make up`: Airflow standalone (api-server with the UI, scheduler, dag-processor,
# triggerer) in the foreground, with the sandboxes running and the crmsync DAGs unpaused.
# Ctrl-C stops Airflow, and the sandboxes if this script started them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"
if [ -x "$ROOT/.venv/bin/airflow" ]; then export PATH="$ROOT/.venv/bin:$PATH"; fi

# New DAGs start unpaused ([core] dags_are_paused_at_creation); ones already known are
# unpaused below once the API answers.
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="${AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION:-False}"
API_PORT="${AIRFLOW__API__PORT:-8080}"
PASSWORDS_FILE="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated}"
mkdir -p "$AIRFLOW_HOME"

started_sandboxes=0
if ! bash "$ROOT/scripts/sandboxes.sh" status >/dev/null 2>&1; then
  started_sandboxes=1
fi
bash "$ROOT/scripts/sandboxes.sh" start

watcher_pid=""
cleanup() {
  if [ -n "$watcher_pid" ]; then kill "$watcher_pid" 2>/dev/null || true; fi
  if [ "$started_sandboxes" = 1 ]; then
    bash "$ROOT/scripts/sandboxes.sh" stop || true
  else
    echo "standalone: the sandboxes were already running and are left running ('make stop' stops them)"
  fi
}
trap cleanup EXIT

# Once the API answers: unpause the DAGs and say where to log in.
(
  for _ in $(seq 1 300); do
    if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$API_PORT/api/v2/monitor/health" 2>/dev/null &&
      [ -f "$PASSWORDS_FILE" ]; then
      sleep 5 # give the dag-processor a moment to register the DAGs
      airflow dags unpause --treat-dag-id-as-regex --yes '.*' >/dev/null 2>&1 || true
      cat <<EOF

================================================================================
 crmsync is up:   http://localhost:$API_PORT
 user:            admin
 password:        in $PASSWORDS_FILE
                  (cat it, or see "Login with username" above)
 sandboxes:       Chargebee http://127.0.0.1:$SANDBOX_CHARGEBEE_PORT/api/v2   Customcrm http://127.0.0.1:$SANDBOX_CUSTOMCRM_PORT
 DAGs:            unpaused (AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False)
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
airflow standalone
