"""The request budget all worker processes share, kept in the link store's database.

Why a database: Chargebee allows N requests a minute per *site* and blocks the whole
site for about a minute after a breach. Every flow DAG and every worker process of a
deployment talks to the same site, each with its own thread pool, so a process-local
budget lets six concurrent flows send six times N. The metadata database is the one
thing every task already reaches (through the ``crmsync_store`` connection, never
Airflow's ORM), on SQLite and on PostgreSQL alike, so it holds the shared count.

Table ``crmsync_rate_budget`` (see :data:`crmsync.store.schema.rate_budget`):

* one row per site and time bucket: ``bucket_end_ms`` (epoch milliseconds at which the
  bucket ends) and ``used``, the tokens leased during that bucket;
* one control row per site (``bucket_end_ms = 0``) holding ``blocked_until`` after a
  429, so a rate-limit response seen by one worker pauses them all. Leases of a site
  lock this row, which serialises them.

**Lease.** A process does not ask the database per request: it leases a small block of
tokens (see :mod:`crmsync.hooks.shared_budget`), hands them to its threads, and may use
them for at most ``lease_seconds`` after asking. Tokens it did not use are given back
with its next lease, so they free up for other processes at once.

**Sliding window (the guarantee).** A lease asked at database time ``t`` is recorded in
the bucket ending at ``e`` (``t <= e < t + bucket``) and granted only if, with it, the
rows ending after ``t - span`` hold at most ``cap`` tokens, where
``span = window + lease_seconds + slack``. Because leases are serialised by the lock and
stamped with one clock, the tokens leased in any interval of length ``span`` never
exceed ``cap``. A token is sent within ``lease_seconds`` of its lease and reaches the
server within ``slack`` (latency *variance*) of being sent, so **the server receives at
most ``cap`` requests in any interval of ``window`` seconds, wherever that interval
starts** (a fixed minute window would allow 2N across a boundary). ``cap`` is N minus
a safety margin (default 5 %). The cost: at saturation the sustained rate is
``cap * window / (span + bucket)``, about 91 % of N with the defaults (N per 60 s,
margin 5 %, lease 1 s, slack 1 s, bucket 0.5 s).

**Clocks.** On PostgreSQL the time comes from the database (``clock_timestamp()``), so
workers on several machines need no clock agreement; a process converts the answers to
its own monotonic clock conservatively (a lease expires ``lease_seconds`` after the
process *asked*, a wait is counted from when it *received* the answer). SQLite is one
machine, so the processes share its wall clock. A wall-clock step backwards would
leave rows "in the future": rows more than ``span`` ahead are discarded as stale.

**Atomicity.** PostgreSQL: ``SELECT ... FOR UPDATE`` of the control row under READ
COMMITTED (so the sum read after the lock sees every earlier lease), then an
``INSERT ... ON CONFLICT DO UPDATE`` of the bucket. SQLite: ``BEGIN IMMEDIATE`` takes the
database's write lock before reading (SQLite's default deferred transaction would
read first and fail to upgrade), waiting up to the busy timeout; this needs an engine
of its own, so the link store's engine is left as it is.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, Unpack

from sqlalchemy import create_engine, delete, event, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from crmsync.engine.lease import LeaseTerms
from crmsync.store.engine import BUSY_TIMEOUT_SECONDS, sqlite_pragmas, track_write_locks
from crmsync.store.schema import rate_budget

log = logging.getLogger("crmsync.budget")

#: ``bucket_end_ms`` of a site's control row (``blocked_until``; the row leases lock).
CONTROL_ROW = 0

_T = rate_budget
_R = TypeVar("_R")


class SharedBudgetError(RuntimeError):
    """The shared budget cannot be used (table missing, database unreachable)."""


@dataclass(frozen=True)
class LeaseDecision:
    """What :func:`plan_lease` decided: tokens granted, or when asking again can succeed."""

    granted: int
    retry_at: float | None  # database-clock epoch seconds; None when granted


def plan_lease(
    live: Sequence[tuple[int, int]],
    *,
    now: float,
    want: int,
    need: int,
    cap: int,
    span: float,
    blocked_until: float | None,
) -> LeaseDecision:
    """Decide a lease from the live bucket rows ``(bucket_end_ms, used)`` of a site.

    Grants ``min(want, free)`` when at least ``need`` tokens are free in the sliding
    window; otherwise returns the earliest time at which enough old buckets have left
    the window (a bucket ending at ``e`` counts while ``now < e + span``). Pure, so the
    window arithmetic is tested without a database.
    """
    if need < 1 or want < need:
        raise ValueError("need must be >= 1 and want >= need")
    if need > cap:
        raise ValueError(f"{need} tokens can never fit a budget of {cap}")
    if blocked_until is not None and now < blocked_until:
        return LeaseDecision(0, blocked_until)
    used = sum(u for _, u in live)
    free = cap - used
    if free >= need:
        return LeaseDecision(min(want, free), None)
    remaining = used
    for end_ms, count in sorted(live):
        remaining -= count
        if remaining + need <= cap:
            return LeaseDecision(0, end_ms / 1000.0 + span)
    raise AssertionError("unreachable: need <= cap")  # pragma: no cover


def bucket_end_ms(now: float, bucket_seconds: float) -> int:
    """End (epoch ms) of the bucket that ``now`` falls in; always ``>= now``."""
    size = max(1, round(bucket_seconds * 1000))
    return max(1, math.ceil(now * 1000 / size) * size)


@dataclass(frozen=True)
class Lease:
    """A database answer: ``granted`` tokens counted in row ``bucket``, or wait ``wait`` s."""

    granted: int
    bucket: int | None
    wait: float


@dataclass(frozen=True)
class Usage:
    """A site's state, for operators and tests."""

    used: int  # tokens in the sliding window
    blocked_for: float  # seconds until a 429 pause ends (0 when none)


def _is_missing_table(exc: BaseException) -> bool:
    text = str(exc).lower()
    return _T.name in text and ("no such table" in text or "does not exist" in text)


def _is_transient(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    return any(
        s in text
        for s in (
            "database is locked",
            "database is busy",
            "deadlock detected",
            "could not serialize",
            "server closed the connection",
            "connection refused",
            "terminating connection",
            "could not obtain lock",
            "lock timeout",
        )
    )


def _sqlite_engine(engine: Engine) -> Engine:
    """A SQLite engine of the same file whose transactions start with ``BEGIN IMMEDIATE``.

    pysqlite's own transaction handling begins lazily at the first write, so a
    read-then-write could see a stale sum or fail to upgrade its lock; taking the write
    lock up front makes the lease one serial step. Separate from the link store's
    engine so its behaviour does not change.
    """
    database = engine.url.database
    if not database or database == ":memory:" or "mode=memory" in str(engine.url):
        raise ValueError("the shared rate budget needs a SQLite *file* (processes must share it)")
    own = create_engine(
        engine.url, connect_args={"timeout": BUSY_TIMEOUT_SECONDS, "check_same_thread": False}
    )

    @event.listens_for(own, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        sqlite_pragmas(dbapi_conn)  # the link store's: busy timeout, WAL, synchronous=NORMAL

    @event.listens_for(own, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    track_write_locks(own)
    return own


class RateBudgetStore:
    """Leases and pauses of the shared per-site budget, one short transaction each.

    :param engine: the link store's engine (``store_engine(conn_id)``).
    :param clock: wall clock in epoch seconds; default: the database's on PostgreSQL,
        ``time.time`` on SQLite. Injectable for tests.
    :param retry_for: how long to retry transient database errors (a locked SQLite
        file, a dropped connection) before giving up with :class:`SharedBudgetError`.
        Failing closed is deliberate: a breach blocks the site for every worker.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], float] | None = None,
        retry_for: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.dialect = engine.dialect.name
        if self.dialect == "sqlite":
            self.engine = _sqlite_engine(engine)
            self._owns_engine = True
        elif self.dialect == "postgresql":
            # READ COMMITTED: after the control row's lock, the sum sees every earlier lease.
            self.engine = engine.execution_options(isolation_level="READ COMMITTED")
            self._owns_engine = False
        else:
            raise ValueError(f"the shared rate budget supports SQLite and PostgreSQL, not {self.dialect}")
        self.url = engine.url.render_as_string(hide_password=True)
        self._clock = clock
        self._retry_for = retry_for
        self._sleep = sleep
        self.transactions = 0

    def __repr__(self) -> str:
        return f"RateBudgetStore({self.url!r})"

    def dispose(self) -> None:
        """Close the store's own connections (SQLite only; PostgreSQL shares the caller's pool)."""
        if self._owns_engine:
            self.engine.dispose()

    # ------------------------------------------------------------------ public

    def lease(self, site: str, **terms: Unpack[LeaseTerms]) -> Lease:
        """Lease up to ``want`` (at least ``need``) tokens of ``site``'s window, or say how long to wait.

        ``give_back=(bucket, n)`` first returns ``n`` unused tokens of an earlier lease
        (the terms: :class:`~crmsync.engine.lease.LeaseTerms`).
        """
        give_back = terms.get("give_back")
        want, need, cap, span = terms["want"], terms["need"], terms["cap"], terms["span"]

        def tx(conn: Connection) -> Lease:
            blocked = self._lock_site(conn, site)
            now = self._now(conn)
            if give_back is not None:
                self._give_back(conn, site, give_back)
            live = self._live_rows(conn, site, now, span)
            decision = plan_lease(
                live, now=now, want=want, need=need, cap=cap, span=span, blocked_until=blocked
            )
            if not decision.granted:
                assert decision.retry_at is not None
                return Lease(0, None, max(0.0, decision.retry_at - now))
            end = bucket_end_ms(now, terms["bucket_seconds"])
            self._add(conn, site, end, decision.granted)
            return Lease(decision.granted, end, 0.0)

        return self._run(tx)

    def block(self, site: str, seconds: float, give_back: tuple[int, int] | None = None) -> float:
        """Pause every process of ``site`` for ``seconds`` (a 429); returns the pause left."""

        def tx(conn: Connection) -> float:
            blocked = self._lock_site(conn, site)
            now = self._now(conn)
            if give_back is not None:
                self._give_back(conn, site, give_back)
            until = max(blocked or 0.0, now + max(0.0, seconds))
            conn.execute(
                update(_T)
                .where(_T.c.site == site, _T.c.bucket_end_ms == CONTROL_ROW)
                .values(blocked_until=until)
            )
            return until - now

        return self._run(tx)

    def usage(self, site: str, span: float) -> Usage:
        """Tokens in ``site``'s sliding window of ``span`` seconds and the pause left."""

        def tx(conn: Connection) -> Usage:
            blocked = self._lock_site(conn, site)
            now = self._now(conn)
            live = self._live_rows(conn, site, now, span)
            return Usage(sum(u for _, u in live), max(0.0, (blocked or 0.0) - now))

        return self._run(tx)

    def clear(self, site: str) -> None:
        """Forget a site's counts and pause (tests, or after changing its plan)."""

        def tx(conn: Connection) -> None:
            conn.execute(delete(_T).where(_T.c.site == site))

        self._run(tx)

    # ----------------------------------------------------------------- helpers

    def _run(self, tx: Callable[[Connection], _R]) -> _R:
        deadline = time.monotonic() + self._retry_for
        delay = 0.05
        while True:
            try:
                with self.engine.begin() as conn:
                    self.transactions += 1
                    return tx(conn)
            except DBAPIError as exc:
                if _is_missing_table(exc):
                    raise SharedBudgetError(
                        f"the shared rate budget table {_T.name} is missing: run `airflow db migrate` "
                        "(or `python -m crmsync.store.migrate upgrade`)"
                    ) from exc
                if not _is_transient(exc) or time.monotonic() + delay > deadline:
                    raise SharedBudgetError(
                        f"the shared rate budget in {self.url} is unavailable: {type(exc.orig).__name__}"
                    ) from exc
                log.warning(
                    "shared rate budget: transient database error (%s); retrying", type(exc.orig).__name__
                )
                self._sleep(delay)
                delay = min(delay * 2, 2.0)

    def _lock_site(self, conn: Connection, site: str) -> float | None:
        """Lock the site's control row (creating it once) and return ``blocked_until``."""
        query = select(_T.c.blocked_until).where(_T.c.site == site, _T.c.bucket_end_ms == CONTROL_ROW)
        if self.dialect == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            conn.execute(
                self._insert()
                .values(site=site, bucket_end_ms=CONTROL_ROW, used=0, blocked_until=None)
                .on_conflict_do_nothing()
            )
            row = conn.execute(query).first()
        return None if row is None or row[0] is None else float(row[0])

    def _now(self, conn: Connection) -> float:
        if self._clock is not None:
            return self._clock()
        if self.dialect == "postgresql":
            return float(conn.execute(select(func.extract("epoch", func.clock_timestamp()))).scalar_one())
        return time.time()

    def _give_back(self, conn: Connection, site: str, give_back: tuple[int, int]) -> None:
        bucket, count = give_back
        if count > 0:
            conn.execute(
                update(_T)
                .where(_T.c.site == site, _T.c.bucket_end_ms == bucket, _T.c.used >= count)
                .values(used=_T.c.used - count)
            )

    def _live_rows(self, conn: Connection, site: str, now: float, span: float) -> list[tuple[int, int]]:
        """The site's buckets still in the window; expired ones (and clock-step leftovers) are deleted."""
        rows = conn.execute(
            select(_T.c.bucket_end_ms, _T.c.used).where(_T.c.site == site, _T.c.bucket_end_ms != CONTROL_ROW)
        ).all()
        low, high = (now - span) * 1000, (now + span) * 1000
        live = [(int(e), int(u)) for e, u in rows if low < e <= high]
        stale = [int(e) for e, _ in rows if not low < e <= high]
        if stale:
            conn.execute(delete(_T).where(_T.c.site == site, _T.c.bucket_end_ms.in_(stale)))
        return live

    def _add(self, conn: Connection, site: str, end: int, count: int) -> None:
        ins = self._insert().values(site=site, bucket_end_ms=end, used=count, blocked_until=None)
        conn.execute(
            ins.on_conflict_do_update(
                index_elements=[_T.c.site, _T.c.bucket_end_ms],
                set_={"used": _T.c.used + ins.excluded.used},
            )
        )

    def _insert(self) -> Any:
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(_T)


__all__ = [
    "CONTROL_ROW",
    "Lease",
    "LeaseDecision",
    "RateBudgetStore",
    "SharedBudgetError",
    "Usage",
    "bucket_end_ms",
    "plan_lease",
]
