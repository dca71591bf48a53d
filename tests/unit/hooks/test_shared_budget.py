"""The shared budget: many threads in several "processes" stay under N in any window.

Time is simulated (:class:`SimClock`): it stands still while any worker thread runs and
jumps to the next wake-up when all of them sleep, so minutes of traffic take a second
and a token's use time is exactly when ``acquire`` returned. The store is the real
SQLite one, each simulated process with its own engine, as separate processes have.
"""

from __future__ import annotations

import heapq
import json
import random
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from crmsync.flows import budgets as budgets_mod
from crmsync.flows.budgets import forget_task_factories, task_budget_factory, use_shared_budget
from crmsync.hooks import budget as budget_mod
from crmsync.hooks.budget import (
    RateBudget,
    budget_factory,
    get_budget,
    reset_budgets,
    set_budget_factory,
)
from crmsync.hooks.shared_budget import SharedBudgetSettings, SharedRateBudget
from crmsync.store import migrate
from crmsync.store.rate_budget import RateBudgetStore
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine


class SimClock:
    """Discrete-event virtual time shared by registered threads."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.cond = threading.Condition()
        self.running = 0
        self.wakeups: list[float] = []

    def __call__(self) -> float:
        with self.cond:
            return self.now

    def register(self, n: int = 1) -> None:
        with self.cond:
            self.running += n

    def done(self) -> None:
        with self.cond:
            self.running -= 1
            self._advance()

    def sleep(self, seconds: float) -> None:
        with self.cond:
            if seconds <= 0:
                return
            target = self.now + seconds
            self.running -= 1
            heapq.heappush(self.wakeups, target)
            self._advance()
            while self.now < target:
                assert self.cond.wait(timeout=30), "simulation stalled"

    def _advance(self) -> None:
        if self.running == 0 and self.wakeups:
            self.now = max(self.now, self.wakeups[0])
            while self.wakeups and self.wakeups[0] <= self.now:
                heapq.heappop(self.wakeups)
                self.running += 1
            self.cond.notify_all()


def max_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max((bisect_left(times, t + window) - i for i, t in enumerate(times)), default=0)


def mean_window_count(times: list[float], window: float, start: float, end: float) -> float:
    """Average number of sends in ``[t, t + window)`` for ``t`` in ``[start, end]``."""
    times = sorted(times)
    steps = 400
    total = 0
    for i in range(steps + 1):
        t = start + (end - start) * i / steps
        total += bisect_left(times, t + window) - bisect_left(times, t)
    return total / (steps + 1)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate.upgrade(engine)
    return engine


@pytest.fixture(autouse=True)
def _local_afterwards() -> Iterator[None]:
    yield
    set_budget_factory(None)
    reset_budgets()
    forget_task_factories()


def run_processes(
    engine: Engine,
    *,
    processes: int,
    threads: int,
    limit: int,
    duration: float,
    settings: SharedBudgetSettings,
    latency: Callable[[random.Random], float],
    penalty_at: float | None = None,
) -> tuple[list[float], list[SharedRateBudget], SimClock]:
    clock = SimClock()
    start = clock.now
    budgets = [
        SharedRateBudget(
            RateBudgetStore(engine, clock=clock),
            "chargebee:sim",
            limit,
            settings=settings,
            clock=clock,
            sleep=clock.sleep,
        )
        for _ in range(processes)
    ]
    sent: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    penalised = threading.Event()

    def worker(budget: SharedRateBudget, seed: int) -> None:
        rng = random.Random(seed)
        try:
            while True:
                budget.acquire()
                now = clock()
                if now >= start + duration:
                    return
                with lock:
                    sent.append(now)
                if penalty_at is not None and now >= start + penalty_at and not penalised.is_set():
                    penalised.set()
                    budget.penalise(30.0)
                clock.sleep(latency(rng))  # the request itself
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            clock.done()

    pool = [
        threading.Thread(target=worker, args=(b, p * 100 + t), daemon=True)
        for p, b in enumerate(budgets)
        for t in range(threads)
    ]
    clock.register(len(pool))
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=120)
        assert not t.is_alive(), "simulation did not finish"
    assert not errors, errors
    return [t - start for t in sent], budgets, clock


def test_many_threads_in_several_processes_never_exceed_n_in_any_minute(engine: Engine) -> None:
    """4 processes x 8 threads, 150/min, requests of 0-400 ms, 6 simulated minutes."""
    settings = SharedBudgetSettings()
    sent, budgets, _ = run_processes(
        engine,
        processes=4,
        threads=8,
        limit=150,
        duration=360.0,
        settings=settings,
        latency=lambda rng: rng.uniform(0.0, 0.4),
    )
    cap = budgets[0].cap
    assert cap == 142  # 150 minus the 5 % margin
    assert max_in_any_window(sent, 60.0) <= cap
    # ...and also under the stretched window the store enforces (sends within a lease).
    assert max_in_any_window(sent, settings.span - settings.lease) <= cap
    # Throughput: the average count in a sliding minute after the first one.
    per_minute = mean_window_count(sent, 60.0, 60.0, 300.0)
    assert per_minute >= 0.85 * 150, per_minute
    # Every process got its share, and leases kept the database cost low.
    handed = [b.stats["handed_out"] for b in budgets]
    assert min(handed) > 0.1 * sum(handed), handed
    leases = sum(b.stats["leases"] + b.stats["refusals"] for b in budgets)
    assert leases < len(sent), (leases, len(sent))


def test_small_leases_and_bursty_clients_still_hold_the_cap(engine: Engine) -> None:
    """Bucket and lease sizes at their extremes; clients idle at random for whole windows."""
    settings = SharedBudgetSettings(window_seconds=10.0, bucket_seconds=3.0, lease_seconds=2.0, max_lease=1)

    def latency(rng: random.Random) -> float:
        return rng.choice([0.0, 0.0, 0.01, 0.5, 4.0, 12.0])

    sent, budgets, _ = run_processes(
        engine, processes=3, threads=5, limit=40, duration=80.0, settings=settings, latency=latency
    )
    assert max_in_any_window(sent, 10.0) <= budgets[0].cap == 38


def test_tokens_used_late_in_their_lease_still_count(engine: Engine) -> None:
    """Slow clients spend a 10-token lease over its whole 6 s life.

    This is why the store's window is ``window + lease + slack``: with the plain
    window, this run sends 62 requests in one minute against a limit of 60.
    """
    settings = SharedBudgetSettings(lease_seconds=6.0, max_lease=10, slack_seconds=0)
    sent, budgets, _ = run_processes(
        engine,
        processes=6,
        threads=2,
        limit=60,
        duration=300.0,
        settings=settings,
        latency=lambda rng: rng.uniform(0.5, 1.5),
    )
    assert max_in_any_window(sent, 60.0) <= budgets[0].cap == 57


def test_a_429_in_one_process_pauses_all(engine: Engine) -> None:
    sent, budgets, _ = run_processes(
        engine,
        processes=3,
        threads=4,
        limit=150,
        duration=100.0,
        settings=SharedBudgetSettings(),
        latency=lambda rng: rng.uniform(0.0, 0.3),
        penalty_at=40.0,
    )
    first_after = min(t for t in sent if t >= 40.0)
    # The penalising process stops at once; the others within one lease (1 s): nobody
    # sends between then and the end of the 30 s pause.
    during = [t for t in sent if first_after + budgets[0].settings.lease < t < first_after + 30.0]
    assert during == []
    assert any(t >= first_after + 30.0 for t in sent)
    assert sum(b.stats["blocks"] for b in budgets) == 1


class ManualClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def shared(engine: Engine, clock: ManualClock, limit: int = 10, **kw: Any) -> SharedRateBudget:
    return SharedRateBudget(
        RateBudgetStore(engine, clock=clock),
        "chargebee:t",
        limit,
        settings=SharedBudgetSettings(**kw),
        clock=clock,
        sleep=clock.sleep,
    )


def test_timeout_does_not_consume(engine: Engine) -> None:
    clock = ManualClock()
    a = shared(engine, clock, limit=10, margin=0.0)
    for _ in range(10):
        assert a.acquire() == 0.0
    with pytest.raises(TimeoutError):
        a.acquire(timeout=1.0)
    waited = a.acquire()
    assert 60.0 <= waited <= 62.0  # the window (plus lease and slack) had to pass


def test_leases_grow_while_used_and_unused_tokens_go_back(engine: Engine) -> None:
    clock = ManualClock()
    a = shared(engine, clock, limit=1000)
    assert a.max_lease == 50  # 5 % of N
    for _ in range(200):
        a.acquire()
    assert a.stats["leases"] < 20  # 1, 2, 4, ... 50, 50, 50
    clock.now += 5  # the lease expires with tokens left...
    b = shared(engine, clock, limit=1000)
    b.acquire()
    a.acquire()  # ...which go back with the next lease
    assert a.stats["given_back"] > 0
    usage = a.source.usage("chargebee:t", a.settings.span)  # type: ignore[attr-defined]
    assert usage.used == a.stats["handed_out"] + b.stats["leased"] + a._tokens


def test_tighten_never_loosens(engine: Engine) -> None:
    clock = ManualClock()
    a = shared(engine, clock, limit=1000)
    a.tighten(150)
    assert (a.limit, a.cap, a.max_lease) == (150, 142, 8)
    a.tighten(3500, burst=3)
    assert (a.limit, a.max_lease) == (150, 3)
    with pytest.raises(ValueError):
        a.acquire(cost=143)


def test_settings_scale_with_the_window() -> None:
    s = SharedBudgetSettings()
    assert (s.slack, s.lease, s.bucket, s.span) == (1.0, 1.0, 0.5, 62.0)
    t = SharedBudgetSettings(window_seconds=5.0)
    assert t.span == pytest.approx(5.0 + 2 * 5 / 60)
    assert s.cap(150) == 142 and s.cap(1000) == 950 and s.cap(3500) == 3325 and s.cap(1) == 1
    assert s.lease_size(150, None) == 8 and s.lease_size(3500, None) == 175 and s.lease_size(150, 4) == 4
    for bad in ({"window_seconds": 0}, {"margin": 1.0}, {"lease_seconds": -1}, {"max_lease": 0}):
        with pytest.raises(ValueError):
            SharedBudgetSettings(**bad)


# ---------------------------------------------------------------- wiring


def test_use_shared_budget_switches_the_process(engine: Engine) -> None:
    assert budget_factory() is budget_mod.local_factory  # not in a task: process-local
    local = get_budget("chargebee:w", 150)
    use_shared_budget(engine)
    limiter = get_budget("chargebee:w", 150)
    assert isinstance(limiter, SharedRateBudget) and limiter is not local
    assert get_budget("chargebee:w", 1000) is limiter and limiter.limit == 150
    assert isinstance(get_budget("customcrm:unlimited", 0), RateBudget)  # nothing to share
    use_shared_budget(engine)  # idempotent: the same limiter stays
    assert get_budget("chargebee:w", 150) is limiter
    use_shared_budget(engine, margin=0.1)  # other settings: other limiters
    assert get_budget("chargebee:w", 150) is not limiter
    set_budget_factory(None)
    assert get_budget("chargebee:w", 150) is local


def test_margin_from_airflow_config(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CRMSYNC__RATE_LIMIT_MARGIN", "0.2")
    use_shared_budget(engine)
    limiter = get_budget("chargebee:m", 100)
    assert isinstance(limiter, SharedRateBudget) and limiter.cap == 80


@pytest.fixture
def store_conn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A migrated link store behind the ``crmsync_store`` connection."""
    from crmsync.store.engine import store_engine

    path = tmp_path / "task-store.db"
    migrate.upgrade(create_engine(f"sqlite:///{path}"))
    monkeypatch.setenv("AIRFLOW_CONN_CRMSYNC_STORE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    store_engine.cache_clear()
    yield path
    store_engine.cache_clear()


def test_a_task_injects_the_shared_budget(store_conn: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The task builds its hooks with task_budget_factory(): they share through the store;
    a hook built without it (unit tests, scripts) budgets in its process and opens no store."""
    from crmsync.hooks.chargebee import ChargebeeHook

    conn = {
        "conn_type": "chargebee",
        "host": "http://127.0.0.1:9/api/v2",
        "password": "k",
        "extra": {"rate_limit_per_minute": 1000},
    }
    monkeypatch.setenv("AIRFLOW_CONN_CB_SHARED_UNIT", json.dumps(conn))
    outside = ChargebeeHook("cb_shared_unit").budget
    assert isinstance(outside, RateBudget)  # unit tests, scripts: process-local
    assert budgets_mod._task_factories == {}  # and the hook opened no store

    inside = ChargebeeHook("cb_shared_unit", budget_factory=task_budget_factory()).budget
    assert isinstance(inside, SharedRateBudget)
    assert inside.limit == 1000 and inside.site == "chargebee:127.0.0.1:9/api/v2"
    assert str(store_conn) in repr(inside.source)
    assert ChargebeeHook("cb_shared_unit", budget_factory=task_budget_factory()).budget is inside

    monkeypatch.setenv("AIRFLOW__CRMSYNC__SHARED_RATE_BUDGET", "off")
    assert task_budget_factory() is budget_mod.local_factory
    local = ChargebeeHook("cb_shared_unit", budget_factory=task_budget_factory())
    assert isinstance(local.budget, RateBudget)


def test_an_explicit_process_budget_wins_in_a_task(engine: Engine, store_conn: Path) -> None:
    use_shared_budget(engine)
    assert task_budget_factory() is budget_factory()
    set_budget_factory(None)


def test_a_task_without_a_usable_store_keeps_the_local_budget(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from crmsync.store.engine import store_engine

    monkeypatch.setenv("AIRFLOW_CONN_CRMSYNC_STORE", json.dumps({"conn_type": "mysql", "host": "db"}))
    store_engine.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="crmsync.budget"):
            assert isinstance(get_budget("chargebee:nostore", 150, factory=task_budget_factory()), RateBudget)
        assert "no shared request budget" in caplog.text
    finally:
        store_engine.cache_clear()
