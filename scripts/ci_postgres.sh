#!/usr/bin/env bash
# Make a local PostgreSQL server ready for the test suite, as root on Debian (CI), and
# print the SQLAlchemy URL to use on stdout (everything else goes to stderr):
#
#   CRMSYNC_PG_URL="$(bash scripts/ci_postgres.sh)"
#
# Idempotent: installs the `postgresql` package only when no server is installed, starts
# the Debian cluster (or, failing that, a private cluster under /tmp) only when it is not
# answering, and creates the role and the database only when missing.
#
# Knobs: CRMSYNC_PG_USER / CRMSYNC_PG_PASSWORD / CRMSYNC_PG_DB (crmsync), CRMSYNC_PG_PORT (5432),
#        CRMSYNC_PG_FALLBACK_DIR (/tmp/crmsync-pg, used only when no Debian cluster works).
set -euo pipefail

PG_USER="${CRMSYNC_PG_USER:-crmsync}"
PG_PASSWORD="${CRMSYNC_PG_PASSWORD:-crmsync}"
PG_DB="${CRMSYNC_PG_DB:-crmsync}"
PG_PORT="${CRMSYNC_PG_PORT:-5432}"
FALLBACK_DIR="${CRMSYNC_PG_FALLBACK_DIR:-/tmp/crmsync-pg}"

log() { printf 'ci_postgres: %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    log "needs root (or sudo) to install and start PostgreSQL"
    exit 1
  fi
fi
as_postgres() { $SUDO runuser -u postgres -- "$@"; }

# shellcheck disable=SC2012  # version folder names: 15, 16...
pg_version() { ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1; }

# 1. Install the server (Debian 12: PostgreSQL 15) unless one is there.
if [ -z "$(pg_version)" ] || [ ! -x "/usr/lib/postgresql/$(pg_version)/bin/postgres" ]; then
  log "installing postgresql (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >&2
  $SUDO apt-get install -y -qq postgresql >&2
fi
VERSION="$(pg_version)"
BIN="/usr/lib/postgresql/$VERSION/bin"
log "PostgreSQL $VERSION at $BIN"

ready() { "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2 >/dev/null 2>&1; }

# 2. Start a server on 127.0.0.1:$PG_PORT unless one answers.
if ready; then
  log "a server already answers on 127.0.0.1:$PG_PORT"
else
  started=0
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    if ! pg_lsclusters -h 2>/dev/null | awk '{print $1, $2}' | grep -qx "$VERSION main"; then
      log "creating Debian cluster $VERSION/main"
      $SUDO pg_createcluster --port "$PG_PORT" "$VERSION" main >&2 || true
    fi
    if pg_lsclusters -h 2>/dev/null | awk '{print $1, $2, $3}' | grep -qx "$VERSION main $PG_PORT"; then
      log "starting Debian cluster $VERSION/main"
      if $SUDO pg_ctlcluster "$VERSION" main start >&2; then started=1; fi
    else
      log "Debian cluster $VERSION/main is not on port $PG_PORT: using a private cluster"
    fi
  fi
  if [ "$started" = 0 ]; then
    log "starting a private cluster in $FALLBACK_DIR"
    $SUDO mkdir -p "$FALLBACK_DIR"
    $SUDO chown postgres:postgres "$FALLBACK_DIR"
    if [ ! -f "$FALLBACK_DIR/data/PG_VERSION" ]; then
      as_postgres "$BIN/initdb" -D "$FALLBACK_DIR/data" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >&2
    fi
    as_postgres "$BIN/pg_ctl" -D "$FALLBACK_DIR/data" -l "$FALLBACK_DIR/server.log" -w -t 60 \
      -o "-p $PG_PORT -k $FALLBACK_DIR -c listen_addresses=127.0.0.1" start >&2
  fi
  for _ in $(seq 1 60); do
    ready && break
    sleep 1
  done
  if ! ready; then
    log "PostgreSQL does not answer on 127.0.0.1:$PG_PORT"
    exit 1
  fi
fi

# 3. Role and database (as the postgres superuser over the local socket).
SOCKET_DIR=/var/run/postgresql
if [ -S "$FALLBACK_DIR/.s.PGSQL.$PG_PORT" ]; then SOCKET_DIR="$FALLBACK_DIR"; fi
psql_su() { as_postgres "$BIN/psql" -h "$SOCKET_DIR" -p "$PG_PORT" -X -q -v ON_ERROR_STOP=1 "$@"; }

# CREATEDB lets tests make scratch databases of their own.
psql_su -d postgres -v user="$PG_USER" -v password="$PG_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', :'user', :'password')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('ALTER ROLE %I LOGIN CREATEDB PASSWORD %L', :'user', :'password') \gexec
SQL
psql_su -d postgres -v user="$PG_USER" -v db="$PG_DB" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I ENCODING %L TEMPLATE template0 LC_COLLATE %L LC_CTYPE %L',
              :'db', :'user', 'UTF8', 'C.UTF-8', 'C.UTF-8')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL

URL="postgresql+psycopg2://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
# Check the URL works over TCP with the password, as the tests will use it.
if ! PGPASSWORD="$PG_PASSWORD" "$BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d "$PG_DB" -X -qAt \
  -c 'SELECT 1' >/dev/null; then
  log "cannot log in as $PG_USER over TCP"
  exit 1
fi
log "ready: ${URL/:$PG_PASSWORD@/:***@}"
echo "$URL"
