"""The shared rate budget and the link store must leave Airflow its SQLite file.

On SQLite the link store and the budget live in Airflow's own database file, which has
one write lock. Airflow's connections wait for it only 5 s (``sqlite3``'s default
timeout; Airflow sets none), then its REST API answers HTTP 500 "Database error" and the
scheduler logs "database is locked" (issue 11: ``make chaos`` failed that way). So:

* our engines put the file in WAL mode (as Airflow does), commit without an ``fsync``
  under the lock (``synchronous=NORMAL``) and wait long themselves (busy timeout 60 s);
* while four processes hammer the budget (the lease is a ``BEGIN IMMEDIATE``
  transaction, the busiest writer of ours), a connection set up like Airflow's writes
  every 50 ms and must never fail nor wait anywhere near its timeout, and no lease
  transaction may hold the lock long;
* a write transaction that does hold the lock long is measured and named in the log
  (what ``tests/e2e/test_all_flows_scheduler.py`` reads from the task logs), and such a
  transaction does make an Airflow-like writer fail: the measurement the other tests
  rely on catches what it is meant to catch.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from crmsync.store.engine import (
    AIRFLOW_SQLITE_TIMEOUT_SECONDS,
    BUSY_TIMEOUT_SECONDS,
    engine_for_url,
    write_lock_stats,
)
from sqlalchemy import create_engine, text

WINDOW = 5.0
LIMIT = 60  # per WINDOW, as test_rate_budget_processes.py: 12 leases' worth of requests a second
DURATION = 8.0
PROCESSES = 4
THREADS = 4
#: An Airflow-like writer must get the lock well within Airflow's timeout (half of it),
#: on a machine shared with other test runs.
WAIT_BOUND = AIRFLOW_SQLITE_TIMEOUT_SECONDS / 2
#: No lease transaction may hold the lock longer than this (measured: well under 0.1 s).
HOLD_BOUND = 1.0


class AirflowLikeWriter:
    """A thread writing to ``path`` every ``interval`` s through a connection like Airflow's."""

    def __init__(self, path: Path, interval: float = 0.05, timeout: float = AIRFLOW_SQLITE_TIMEOUT_SECONDS):
        self.path, self.interval, self.timeout = path, interval, timeout
        self.waits: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> AirflowLikeWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 5)

    def _run(self) -> None:
        con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            con.execute("CREATE TABLE IF NOT EXISTS airflow_like (at REAL)")
            while not self._stop.wait(self.interval):
                t0 = time.monotonic()
                try:
                    con.execute("BEGIN IMMEDIATE")
                    self.waits.append(time.monotonic() - t0)
                    con.execute("INSERT INTO airflow_like VALUES (?)", (time.time(),))
                    con.execute("COMMIT")
                except sqlite3.OperationalError as exc:
                    self.failures.append(f"after {time.monotonic() - t0:.2f} s: {exc}")
        finally:
            con.close()


def _lease_worker(url: str, site: str, duration: float, barrier: Any, out: Any) -> None:
    """One worker process: THREADS threads acquiring from the shared budget for ``duration`` s."""
    from crmsync.hooks.shared_budget import SharedBudgetSettings, SharedRateBudget
    from crmsync.store.engine import write_lock_stats
    from crmsync.store.rate_budget import RateBudgetStore

    store = RateBudgetStore(create_engine(url))
    budget = SharedRateBudget(store, site, LIMIT, settings=SharedBudgetSettings(window_seconds=WINDOW))
    sent = 0
    lock = threading.Lock()
    barrier.wait(timeout=120)
    end = time.monotonic() + duration

    def run() -> None:
        nonlocal sent
        while (left := end - time.monotonic()) > 0:
            try:
                budget.acquire(timeout=left)
            except TimeoutError:
                return
            with lock:
                sent += 1

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = write_lock_stats()
    out.put(
        {
            "sent": sent,
            "transactions": store.transactions,
            "lock_holds": stats.transactions,
            "longest_hold": stats.longest,
            "longest_statement": stats.longest_statement,
        }
    )


def _pragmas(engine: Any) -> tuple[str, int, int]:
    with engine.connect() as conn:
        return (
            str(conn.exec_driver_sql("PRAGMA journal_mode").scalar()),
            int(conn.exec_driver_sql("PRAGMA synchronous").scalar()),
            int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar()),
        )


def test_our_sqlite_connections_use_wal_no_fsync_under_the_lock_and_wait_long(tmp_path: Path) -> None:
    from crmsync.store.rate_budget import RateBudgetStore

    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = engine_for_url(url)
    store = RateBudgetStore(engine)
    try:
        # WAL (1 = NORMAL), and our own writers wait up to the busy timeout.
        expected = ("wal", 1, int(BUSY_TIMEOUT_SECONDS * 1000))
        assert _pragmas(engine) == expected
        assert _pragmas(store.engine) == expected
        # The mode is the file's: a plain connection (Airflow's) sees WAL too.
        con = sqlite3.connect(tmp_path / "store.db")
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        con.close()
    finally:
        store.dispose()
        engine.dispose()


def test_an_airflow_like_writer_is_never_held_up_by_four_processes_leasing(tmp_path: Path) -> None:
    from crmsync.store import migrate

    db = tmp_path / "airflow.db"
    url = f"sqlite:///{db}"
    migrate.upgrade(engine_for_url(url))
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES + 1)
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=_lease_worker, args=(url, "chargebee:lock-test", DURATION, barrier, out), daemon=True
        )
        for _ in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    with AirflowLikeWriter(db) as airflow:
        barrier.wait(timeout=120)
        results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0, f"worker exited with {p.exitcode}"
    waits = sorted(airflow.waits)
    figures = {
        "requests_leased": sum(r["sent"] for r in results),
        "lease_transactions": sum(r["transactions"] for r in results),
        "our_longest_hold_s": round(max(r["longest_hold"] for r in results), 3),
        "airflow_like_writes": len(waits),
        "airflow_like_failures": len(airflow.failures),
        "airflow_like_longest_wait_s": round(waits[-1], 3) if waits else None,
        "airflow_like_p99_wait_s": round(waits[int(0.99 * (len(waits) - 1))], 3) if waits else None,
    }
    print(json.dumps(figures))
    assert figures["lease_transactions"] > 4 * PROCESSES, figures  # the processes did contend
    assert all(r["lock_holds"] >= r["transactions"] for r in results), results  # every lease measured
    assert not airflow.failures, (airflow.failures[:5], figures)
    assert waits and waits[-1] < WAIT_BOUND, figures
    assert figures["our_longest_hold_s"] < HOLD_BOUND, (figures, [r["longest_statement"] for r in results])


def test_a_long_write_transaction_is_measured_named_and_does_fail_an_airflow_like_writer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The failure mode itself: hold the lock past a (short) Airflow-like timeout."""
    db = tmp_path / "airflow.db"
    engine = engine_for_url(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE crmsync_probe (n INTEGER)"))
    write_lock_stats().reset()
    hold = 1.5
    try:
        with (
            caplog.at_level(logging.WARNING, logger="crmsync.store"),
            AirflowLikeWriter(db, interval=0.05, timeout=0.5) as airflow,
        ):
            time.sleep(0.3)
            with engine.begin() as conn:
                conn.execute(text("SELECT count(*) FROM crmsync_probe"))  # a read takes no lock
                conn.execute(text("INSERT INTO crmsync_probe VALUES (1)"))
                time.sleep(hold)  # e.g. a long batch, or the process losing the CPU
            time.sleep(0.3)
    finally:
        engine.dispose()
    stats = write_lock_stats()
    assert stats.transactions >= 1
    assert hold <= stats.longest < hold + 1.0, stats
    assert stats.longest_statement.upper().startswith("INSERT INTO CRMSYNC_PROBE"), stats
    assert any("held SQLite's write lock for" in r.getMessage() for r in caplog.records), caplog.text
    assert airflow.failures and "locked" in airflow.failures[0], airflow.failures
