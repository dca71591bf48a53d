"""The link store's SQLAlchemy engine, built from an ordinary Airflow Connection.

Task code must not touch Airflow's ORM (a real Airflow 3 worker forbids it, and the
configured ``sql_alchemy_conn`` is a dummy inside a task), so the store is reached
through a Connection (default ``crmsync_store``) that names the same database as
Airflow's metadata: SQLite for the embedded default, PostgreSQL in production.

**SQLite: sharing one file with Airflow.** SQLite has one write lock per file. Airflow's
own connections wait for it only 5 s (Python's ``sqlite3`` default; Airflow sets no
timeout) and then fail: the REST API answers HTTP 500 ``Database error``, the scheduler
logs ``database is locked``. So every write transaction of ours must be short, whatever
the load. What this module does about it:

* ``journal_mode=WAL``, as Airflow itself sets on every connection it opens
  (``airflow.utils.orm_event_handlers``): readers never block the writer nor wait for it,
  so only writes contend. The mode is stored in the file, so ours is the same setting,
  made even when our connection is the first to open the file.
* ``synchronous=NORMAL`` on *our* connections (Airflow's keep the default, ``FULL``): in
  WAL mode a commit then only appends to the WAL instead of also waiting for an
  ``fsync`` while it holds the write lock; the WAL is synced at checkpoints, outside the
  lock. The database stays consistent after a crash or SIGKILL; only a power loss can
  roll back the last commits, which the sync already survives (a write applied but not
  recorded is found again by the ids it gave the record; see README "Guarantees").
  ``fsync`` took a median 0.5 ms here on a quiet disk but is the part of a commit that
  grows without bound when the disk is shared.
* a long busy timeout for *our* connections (60 s): a task waits for the lock rather than
  fail; it never makes anybody else wait longer.
* every write transaction's hold of the write lock (from its first write statement, or
  ``BEGIN IMMEDIATE``, to the end of its commit) is measured: :func:`write_lock_stats`
  keeps the longest per process, and a hold over :data:`SLOW_WRITE_SECONDS` is logged
  with the statement that took the lock, so a long transaction names itself in the task
  log instead of showing up as a 500 in someone else's request.

**Airflow's own transactions.** Measured during ``make chaos`` (issue 11: its
rate-budget run failed with HTTP 500 "Database error"), by sampling which process held
the WAL write lock (an ``fcntl`` lock on byte 120 of ``airflow.db-shm``, in
``/proc/locks``) every 20 ms, and by the measurement above: every hold over 0.3 s was
Airflow's (scheduler up to 0.96 s, api-server, dag-processor); none of ours reached
0.3 s (the longest logged: 0.25 s, an ``update_links`` chunk; leases under 0.2 s). The
failures themselves are a self-deadlock inside Airflow's api-server: an action-logged
REST call (trigger, clear, pause) inserts its audit row with a *synchronous* session
from an ``async`` dependency (``airflow.api_fastapi.logging.decorators.log_action``),
so while it waits for the write lock the event loop is blocked; when a sync
execution-API request of the same process (a task's heartbeat or ``/run``) holds the
lock, its commit needs that event loop, and both wait until the busy timeout: 5 s, then
the REST call fails (with Airflow's connections at 30 s the api-server held the lock
30.2 s and the client timed out). No busy timeout can fix that, and ours are not the
holders: the test deployment serves the execution API from its own process instead
(``tests/e2e/standalone.py``), where the lock holder commits without the public API's
event loop.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

DEFAULT_CONN_ID = "crmsync_store"

log = logging.getLogger("crmsync.store")

#: How long our SQLite connections wait for the write lock before "database is locked".
BUSY_TIMEOUT_SECONDS = 60.0
#: Airflow's own SQLite connections wait this long by default (``sqlite3.connect``'s
#: default timeout; Airflow passes none): a write lock held longer fails Airflow's writes.
AIRFLOW_SQLITE_TIMEOUT_SECONDS = 5.0
#: A write-lock hold longer than this is logged (a fifth of Airflow's timeout; the
#: environment variable ``CRMSYNC_SLOW_WRITE_SECONDS`` lowers it to investigate).
SLOW_WRITE_SECONDS = float(os.environ.get("CRMSYNC_SLOW_WRITE_SECONDS") or 1.0)

#: Statements that take SQLite's write lock (pysqlite begins its transaction lazily,
#: right before the first of them, so reads before it take no lock).
_WRITE_VERBS = ("INSERT", "UPDATE", "DELETE", "REPLACE", "BEGIN IMMEDIATE", "BEGIN EXCLUSIVE")
_SINCE = "crmsync_write_since"
_FIRST = "crmsync_write_first"


@dataclass
class WriteLockStats:
    """Write-lock holds of this process's SQLite connections (all engines made here)."""

    transactions: int = 0
    longest: float = 0.0
    longest_statement: str = ""
    slow: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, seconds: float, statement: str) -> None:
        with self._lock:
            self.transactions += 1
            if seconds > self.longest:
                self.longest, self.longest_statement = seconds, statement
            if seconds > SLOW_WRITE_SECONDS:
                self.slow += 1

    def reset(self) -> None:
        with self._lock:
            self.transactions, self.longest, self.longest_statement, self.slow = 0, 0.0, "", 0


_STATS = WriteLockStats()


def write_lock_stats() -> WriteLockStats:
    """The longest write-lock hold (seconds) of this process's link-store connections, etc."""
    return _STATS


def _statement_name(statement: str) -> str:
    """``INSERT INTO crmsync_link``: what took the lock, without values (no customer data)."""
    words = statement.split()
    return " ".join(words[:3])[:80]


def track_write_locks(engine: Engine) -> None:
    """Measure every write-lock hold of a SQLite engine (see the module docstring).

    The hold starts when the first write statement of a transaction (or ``BEGIN
    IMMEDIATE``) has returned, i.e. once the lock is ours (the wait for it is not
    counted), and ends when the connection goes back to the pool or is reset, i.e. after
    its commit or rollback (SQLAlchemy has no event after the DBAPI commit itself).
    """

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        info = conn.info
        if _SINCE not in info and statement.lstrip().upper().startswith(_WRITE_VERBS):
            info[_SINCE] = time.monotonic()
            info[_FIRST] = _statement_name(statement)

    def _end(record: Any) -> None:
        if record is None or _SINCE not in record.info:
            return
        held = time.monotonic() - record.info.pop(_SINCE)
        first = record.info.pop(_FIRST, "")
        _STATS.record(held, first)
        if held > SLOW_WRITE_SECONDS:
            log.warning(
                "link store: a write transaction held SQLite's write lock for %.2f s (first "
                "statement: %s); Airflow's own connections give up after %.0f s",
                held,
                first,
                AIRFLOW_SQLITE_TIMEOUT_SECONDS,
            )

    @event.listens_for(engine.pool, "reset")
    def _reset(_dbapi_conn: Any, record: Any, _reset_state: Any) -> None:
        _end(record)

    @event.listens_for(engine.pool, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        _end(record)


def sqlite_pragmas(dbapi_conn: Any) -> None:
    """Busy timeout, WAL and ``synchronous=NORMAL`` on a new SQLite connection (see above)."""
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
    finally:
        cur.close()


def url_from_connection(conn: Any) -> str:
    """SQLAlchemy URL for an Airflow Connection of type sqlite or postgres."""
    extra = conn.extra_dejson if hasattr(conn, "extra_dejson") else {}
    if extra.get("sqlalchemy_url"):
        return str(extra["sqlalchemy_url"])
    ctype = (conn.conn_type or "").lower()
    if ctype == "sqlite":
        path = conn.host or conn.schema
        if not path:
            raise ValueError("the crmsync_store connection (sqlite) needs the database path in host")
        return f"sqlite:///{path}"
    if ctype in ("postgres", "postgresql"):
        auth = ""
        if conn.login:
            auth = quote(conn.login, safe="")
            if conn.password:
                auth += ":" + quote(conn.password, safe="")
            auth += "@"
        port = f":{conn.port}" if conn.port else ""
        return f"postgresql+psycopg2://{auth}{conn.host or 'localhost'}{port}/{conn.schema or ''}"
    raise ValueError(
        f"the crmsync_store connection has type {conn.conn_type!r}; use sqlite or postgres "
        "(or set extra.sqlalchemy_url)"
    )


def engine_for_url(url: str) -> Engine:
    """Engine for the link store's URL; SQLite gets the settings of the module docstring."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": BUSY_TIMEOUT_SECONDS, "check_same_thread": False}
        )
        event.listen(engine, "connect", lambda dbapi_conn, _record: sqlite_pragmas(dbapi_conn))
        track_write_locks(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


@functools.cache
def store_engine(conn_id: str = DEFAULT_CONN_ID) -> Engine:
    """Engine of the link store (cached per process)."""
    from airflow.sdk import BaseHook

    return engine_for_url(url_from_connection(BaseHook.get_connection(conn_id)))
