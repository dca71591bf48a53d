# shellcheck shell=bash disable=SC2089,SC2090
# Environment for running crmsync locally: `source scripts/env.sh` (bash or zsh), or let
# the Makefile do it (every make target sources this file).
#
# Every variable is set only when it is not already set, so you can point the flows at a
# real Chargebee site, a real CRM or another database by exporting the variable first
# (or, better, by editing the connection in Admin → Connections):
#
#   export AIRFLOW_CONN_CHARGEBEE_DEFAULT='{"conn_type":"chargebee","host":"acme-test","password":"<api key>"}'
#
# Knobs read here (all optional):
#   CRMSYNC_ROOT       repository root (default: the folder above this script)
#   AIRFLOW_HOME       default $CRMSYNC_ROOT/var/airflow
#   CRMSYNC_DB         sqlite (default) | postgres: which metadata database to use
#   CRMSYNC_PG_URL     SQLAlchemy URL used when CRMSYNC_DB=postgres
#                      (default postgresql+psycopg2://crmsync:crmsync@127.0.0.1:5432/crmsync)
#   SANDBOX_CHARGEBEE_PORT / SANDBOX_CUSTOMCRM_PORT   sandbox ports (8602 / 8601)
#   CRMSYNC_SANDBOX_CONNECTIONS  1 (default) | 0: with 0, `make migrate` does not create
#                      the sandbox connections chargebee_default / customcrm_default in the
#                      metadata DB (use your own: UI, `airflow connections add`, a secrets
#                      backend). It never overwrites existing ones either way.
#
# This file is sourced into interactive shells: it must not `set -e`, `exit`, or leave
# helper variables behind.

if [ -z "${CRMSYNC_ROOT:-}" ]; then
  if [ -n "${BASH_SOURCE:-}" ]; then
    CRMSYNC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  elif [ -n "${ZSH_VERSION:-}" ]; then
    eval 'CRMSYNC_ROOT="$(cd "$(dirname "${(%):-%x}")/.." && pwd)"'
  else
    CRMSYNC_ROOT="$(pwd)"
  fi
fi
export CRMSYNC_ROOT

export AIRFLOW_HOME="${AIRFLOW_HOME:-$CRMSYNC_ROOT/var/airflow}"
export CRMSYNC_DB="${CRMSYNC_DB:-sqlite}"
export SANDBOX_CHARGEBEE_PORT="${SANDBOX_CHARGEBEE_PORT:-8602}"
export SANDBOX_CUSTOMCRM_PORT="${SANDBOX_CUSTOMCRM_PORT:-8601}"

export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$CRMSYNC_ROOT/dags}"
export AIRFLOW__CORE__LOAD_EXAMPLES="${AIRFLOW__CORE__LOAD_EXAMPLES:-False}"
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-4}"
export AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG="${AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG:-4}"
# The scheduler sleeps this long after a loop with nothing to do (Airflow's default 1 s):
# a triggered run's start and each of a flow's 6 task hops waited about half of it (3.9 s
# of a one-edit run). 0.5 s: 2.2 s; 0.2 s: 1.7 s, but the idle stack's CPU grows with
# every extra loop (2.7 / 4.1 / 5.8 CPU-s per minute at 1 / 0.5 / 0.2 s) on 2 shared
# cores. bench/RESULTS.md "Where a one-edit run spends its time".
export AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME="${AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME:-0.5}"
# The link store's tables are migrated by `airflow db migrate` through this DB manager
# (also registered in the provider info; the `airflow db-manager` commands need it here).
export AIRFLOW__DATABASE__EXTERNAL_DB_MANAGERS="${AIRFLOW__DATABASE__EXTERNAL_DB_MANAGERS:-crmsync.store.db_manager.LinkStoreDBManager}"

if [ -z "${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-}" ]; then
  case "$CRMSYNC_DB" in
    postgres | postgresql)
      AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="${CRMSYNC_PG_URL:-postgresql+psycopg2://crmsync:crmsync@127.0.0.1:5432/crmsync}"
      ;;
    sqlite) AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$AIRFLOW_HOME/airflow.db" ;;
    *) echo "scripts/env.sh: CRMSYNC_DB must be sqlite or postgres, not '$CRMSYNC_DB'" >&2 ;;
  esac
fi
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN

# chargebee_default and customcrm_default are NOT set here: they live in the metadata DB,
# where Admin → Connections lists and edits them. `make migrate` (so make run / sync / up)
# creates them for the sandboxes when absent, never overwriting one (scripts/sandbox_connections.py).
# An AIRFLOW_CONN_CHARGEBEE_DEFAULT / AIRFLOW_CONN_CUSTOMCRM_DEFAULT you export yourself is
# kept and wins over the metadata DB (Airflow reads environment variables first).

# The link store lives in the same database as Airflow's metadata, reached through its
# own connection: derive it from the SQLAlchemy URL unless it is set explicitly. This one
# stays an environment variable on purpose: it IS the metadata DB, so it must always match
# AIRFLOW__DATABASE__SQL_ALCHEMY_CONN (a copy saved in the DB, or edited in the UI, would
# drift from the URL, and a worker would then write links to another database).
if [ -z "${AIRFLOW_CONN_CRMSYNC_STORE:-}" ]; then
  AIRFLOW_CONN_CRMSYNC_STORE="$(
    "${CRMSYNC_PYTHON:-python3}" - "${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-}" <<'PY'
import json
import sys
from urllib.parse import unquote, urlsplit

url = sys.argv[1]
scheme = url.split(":", 1)[0].split("+", 1)[0]
if scheme == "sqlite":
    # sqlite:////abs/airflow.db -> "/abs/airflow.db"
    path = url.split(":///", 1)[1] if ":///" in url else ""
    print(json.dumps({"conn_type": "sqlite", "host": path.split("?", 1)[0]}))
elif scheme in ("postgresql", "postgres"):
    parts = urlsplit(url)
    print(json.dumps({
        "conn_type": "postgres",
        "host": parts.hostname or "localhost",
        "login": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "port": parts.port or 5432,
        "schema": unquote(parts.path.lstrip("/")),
    }))
else:
    sys.exit(f"scripts/env.sh: cannot derive AIRFLOW_CONN_CRMSYNC_STORE from a {scheme!r} URL: set it yourself")
PY
  )" || AIRFLOW_CONN_CRMSYNC_STORE=""
fi
if [ -n "${AIRFLOW_CONN_CRMSYNC_STORE:-}" ]; then export AIRFLOW_CONN_CRMSYNC_STORE; else unset AIRFLOW_CONN_CRMSYNC_STORE; fi
