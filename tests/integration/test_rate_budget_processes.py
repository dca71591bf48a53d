"""The shared rate budget across real processes: SQLite, PostgreSQL and the Chargebee sandbox.

Each test starts separate processes (``spawn``, as LocalExecutor and Celery workers are
separate interpreters), lets them pass a barrier together and hammer the budget from
several threads. Windows are scaled down (N per 5 s instead of per 60 s) so a run
covers three windows in about 15 s; everything else (lease, slack and bucket sizes)
scales with the window, so the figures carry over to the real minute.

What is asserted, on the send times all processes recorded (one machine, one clock):

* the cap held: at most ``cap`` (N minus the 5 % margin) sends in any window,
  wherever it starts;
* the budget was used: the average number of sends in a sliding window, after the
  first one, is at least 85 % of N.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import threading
import time
import uuid
from bisect import bisect_left
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

WINDOW = 5.0
LIMIT = 60  # per WINDOW: 12 requests/s, i.e. 720/min
DURATION = 15.0
PROCESSES = 4
THREADS = 4


def max_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max((bisect_left(times, t + window) - i for i, t in enumerate(times)), default=0)


def mean_window_count(times: list[float], window: float, start: float, end: float) -> float:
    times = sorted(times)
    steps = 500
    total = 0
    for i in range(steps + 1):
        t = start + (end - start) * i / steps
        total += bisect_left(times, t + window) - bisect_left(times, t)
    return total / (steps + 1)


def _engine(url: str, schema: str | None) -> Engine:
    if schema:
        return create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    return create_engine(url)


# --------------------------------------------------------------- worker processes
# Top-level functions: ``spawn`` imports this module in the child to find them.


def _hammer(
    url: str,
    schema: str | None,
    site: str,
    duration: float,
    barrier: Any,
    out: Any,
) -> None:
    from crmsync.hooks.shared_budget import SharedBudgetSettings, SharedRateBudget
    from crmsync.store.rate_budget import RateBudgetStore

    store = RateBudgetStore(_engine(url, schema))
    budget = SharedRateBudget(store, site, LIMIT, settings=SharedBudgetSettings(window_seconds=WINDOW))
    sent: list[float] = []
    lock = threading.Lock()
    barrier.wait(timeout=120)
    end = time.monotonic() + duration

    def run() -> None:
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            try:
                budget.acquire(timeout=left)
            except TimeoutError:
                return
            with lock:
                sent.append(time.time())

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put({"sent": sent, "stats": budget.stats, "transactions": store.transactions, "cap": budget.cap})


def _hook_worker(
    conn_id: str,
    store_url: str | None,
    threads: int,
    duration: float,
    barrier: Any,
    out: Any,
) -> None:
    from crmsync.flows.budgets import use_shared_budget
    from crmsync.hooks.chargebee import ChargebeeHook
    from crmsync.hooks.errors import RateLimited
    from crmsync.hooks.retry import RetryPolicy

    if store_url is not None:
        use_shared_budget(create_engine(store_url), window_seconds=WINDOW)
    hook = ChargebeeHook(conn_id, retry_policy=RetryPolicy(max_attempts=1))
    kind = type(hook.budget).__name__
    answered: list[float] = []
    limited = 0
    lock = threading.Lock()
    barrier.wait(timeout=120)
    end = time.monotonic() + duration

    def run() -> None:
        nonlocal limited
        while time.monotonic() < end:
            try:
                hook.retrieve("customers", "nobody")
                with lock:
                    answered.append(time.time())
            except RateLimited:
                with lock:
                    limited += 1

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put({"budget": kind, "answered": answered, "limited": limited, "calls": sum(hook.calls.values())})


def _run_processes(target: Any, args_for: list[tuple[Any, ...]]) -> tuple[list[dict[str, Any]], float]:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(args_for) + 1)
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, out), daemon=True) for args in args_for]
    for p in procs:
        p.start()
    try:
        barrier.wait(timeout=120)
    except threading.BrokenBarrierError:  # pragma: no cover - a child failed to start
        pytest.fail(f"worker processes did not start: exit codes {[p.exitcode for p in procs]}")
    started = time.time()
    results = [out.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0, f"worker exited with {p.exitcode}"
    return results, started


def _check(results: list[dict[str, Any]], started: float, label: str) -> dict[str, Any]:
    sent = sorted(t for r in results for t in r["sent"])
    cap = results[0]["cap"]
    worst = max_in_any_window(sent, WINDOW)
    steady = mean_window_count(sent, WINDOW, started + WINDOW, started + DURATION - WINDOW)
    figures = {
        "label": label,
        "sent": len(sent),
        "per_process": [len(r["sent"]) for r in results],
        "cap": cap,
        "max_in_any_window": worst,
        "mean_per_window_after_first": round(steady, 1),
        "of_limit": round(steady / LIMIT, 3),
        "db_transactions": sum(r["transactions"] for r in results),
    }
    print(json.dumps(figures))
    assert worst <= cap <= LIMIT, figures
    assert steady >= 0.85 * LIMIT, figures
    # Not asserted: that every process got a share. Leasing is not fair (a process that
    # starts late can find the window full for the whole run); the cap and the total are.
    assert figures["db_transactions"] < len(sent), figures  # leases, not a query per request
    return figures


# ------------------------------------------------------------------------ SQLite


def test_four_processes_share_one_budget_on_sqlite(tmp_path: Path) -> None:
    from crmsync.store import migrate

    url = f"sqlite:///{tmp_path / 'store.db'}"
    migrate.upgrade(create_engine(url))
    site = "chargebee:sqlite-test"
    results, started = _run_processes(_hammer, [(url, None, site, DURATION)] * PROCESSES)
    _check(results, started, "sqlite")


# -------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    """A private schema holding the budget table, so concurrent test runs do not meet."""
    if os.environ.get("CRMSYNC_TEST_DB") != "postgres":
        pytest.skip("PostgreSQL run only (CRMSYNC_TEST_DB=postgres)")
    from crmsync.store.schema import rate_budget

    url = os.environ.get("CRMSYNC_PG_URL", "postgresql+psycopg2://crmsync:crmsync@127.0.0.1:5432/crmsync")
    schema = f"crmsync_rb_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    scoped = _engine(url, schema)
    rate_budget.create(scoped)
    scoped.dispose()
    try:
        yield url, schema
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.mark.postgres
def test_four_processes_share_one_budget_on_postgres(pg_schema: tuple[str, str]) -> None:
    url, schema = pg_schema
    results, started = _run_processes(_hammer, [(url, schema, "chargebee:pg-test", DURATION)] * PROCESSES)
    _check(results, started, "postgres")


# ------------------------------------------------------------- Chargebee sandbox


def _sandbox_stats(url: str) -> dict[str, Any]:
    with urlopen(f"{url}/_sandbox/stats", timeout=10) as resp:
        return dict(json.loads(resp.read()))


def test_three_hook_processes_never_get_a_429_from_the_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three processes, each a ChargebeeHook with 4 threads, against a sandbox allowing 30 per 5 s.

    First without the shared budget (each process keeps its own, as before): the
    sandbox answers 429, which shows the scaled-down limit bites. Then with it: no 429.
    """
    server_mod = pytest.importorskip("sandbox.chargebee.server")
    from crmsync.store import migrate

    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    migrate.upgrade(create_engine(store_url))
    limit = 30
    with server_mod.serve_in_thread(
        tmp_path / "cb.json", port=0, rate_limit_per_minute=limit, block_seconds=WINDOW
    ) as (server, url):
        server.limiter.window_seconds = WINDOW  # the sandbox counts per 5 s, like the budget
        conn = {
            "conn_type": "chargebee",
            "host": f"{url}/api/v2",
            "password": "sandbox_api_key",
            "extra": {"rate_limit_per_minute": limit},
        }
        monkeypatch.setenv("AIRFLOW_CONN_CB_RATE_SHARED", json.dumps(conn))

        # Process-local budgets: each process thinks it has the site to itself.
        local, _ = _run_processes(_hook_worker, [("cb_rate_shared", None, 3, 6.0)] * 3)
        assert {r["budget"] for r in local} == {"RateBudget"}
        assert _sandbox_stats(url)["rate_limited"] > 0

        # Shared budget. Start from a clean site: the sandbox's block has to end first.
        time.sleep(WINDOW + 0.5)
        server.limiter.reset()
        with urlopen(url + "/_sandbox/stats/reset", data=b"{}", timeout=10):
            pass
        duration = DURATION
        shared, started = _run_processes(_hook_worker, [("cb_rate_shared", store_url, 4, duration)] * 3)
        stats = _sandbox_stats(url)
        answered = sorted(t for r in shared for t in r["answered"])
        figures = {
            "budgets": sorted({r["budget"] for r in shared}),
            "requests": sum(r["calls"] for r in shared),
            "per_process": [len(r["answered"]) for r in shared],
            "rate_limited": stats["rate_limited"],
            "client_429": sum(r["limited"] for r in shared),
            "sandbox_404": stats["by_status"].get("404", 0),
            "max_answered_in_any_window": max_in_any_window(answered, WINDOW),
            "mean_per_window_after_first": round(
                mean_window_count(answered, WINDOW, started + WINDOW, started + duration - WINDOW), 1
            ),
        }
        print(json.dumps(figures))
        assert figures["budgets"] == ["SharedRateBudget"]
        assert stats["rate_limited"] == 0 and figures["client_429"] == 0, figures
        assert figures["max_answered_in_any_window"] <= limit, figures
        # The cap is 28 per 5 s; the three processes together used most of it.
        assert figures["mean_per_window_after_first"] >= 0.85 * limit, figures
