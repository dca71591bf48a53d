"""The request budget: never more than N requests in any window, shared per site."""

from __future__ import annotations

import threading
from bisect import bisect_left
from typing import Any

import pytest
from crmsync.hooks.budget import (
    RateBudget,
    RateLimiter,
    get_budget,
    reset_budgets,
    set_budget_factory,
)
from hypothesis import given, settings
from hypothesis import strategies as st


class FakeClock:
    """A monotonic clock that only moves when someone sleeps (or the test advances it)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        with self.lock:
            self.now += seconds


def max_in_any_window(times: list[float], window: float) -> int:
    """Largest number of times inside any half-open window ``[t, t + window)``."""
    times = sorted(times)
    return max((bisect_left(times, t + window) - i for i, t in enumerate(times)), default=0)


def test_never_more_than_n_in_any_60s_window_and_keeps_the_rate() -> None:
    clock = FakeClock()
    budget = RateBudget(150, burst=10, clock=clock, sleep=clock.sleep)
    sent = []
    for _ in range(1500):
        budget.acquire()
        sent.append(clock())
    assert max_in_any_window(sent, 60.0) <= 150
    assert max_in_any_window(sent, budget.window_seconds) <= 150
    # ...while still using the budget: 1500 requests need about 10 windows, not more.
    assert sent[-1] - sent[0] <= 10 * budget.window_seconds


def test_burst_goes_back_to_back_then_the_rate_applies() -> None:
    clock = FakeClock()
    budget = RateBudget(120, burst=5, clock=clock, sleep=clock.sleep)
    waits = [budget.acquire() for _ in range(7)]
    assert waits[:5] == [0, 0, 0, 0, 0]
    assert waits[5] == pytest.approx(0.5) and waits[6] == pytest.approx(0.5)  # 2 per second


def test_default_is_chargebee_test_site_limit() -> None:
    budget = RateBudget()
    assert budget.limit == 150 and budget.burst == 10


def test_penalise_pauses_every_caller() -> None:
    clock = FakeClock()
    budget = RateBudget(150, clock=clock, sleep=clock.sleep)
    budget.acquire()
    budget.penalise(30.0)
    start = clock()
    assert budget.acquire() == pytest.approx(30.0)
    assert clock() - start == pytest.approx(30.0)
    # A shorter penalty never shortens a longer one already in force.
    budget.penalise(10.0)
    budget.penalise(5.0)
    assert budget.acquire() == pytest.approx(10.0)


def test_penalise_applies_even_without_a_client_side_limit() -> None:
    clock = FakeClock()
    budget = RateBudget(0, clock=clock, sleep=clock.sleep)
    assert budget.unlimited
    assert [budget.acquire() for _ in range(1000)] == [0.0] * 1000
    budget.penalise(2.0)
    assert budget.acquire() == pytest.approx(2.0)


def test_timeout_does_not_consume() -> None:
    clock = FakeClock()
    budget = RateBudget(60, burst=1, clock=clock, sleep=clock.sleep)
    budget.acquire()
    with pytest.raises(TimeoutError):
        budget.acquire(timeout=0.1)
    assert budget.acquire() == pytest.approx(1.0)  # the failed attempt reserved nothing


def test_threads_share_the_budget() -> None:
    """16 threads x 50 acquisitions against a frozen clock: the reserved send times
    (now + wait) must still respect the window, so the lock serialises correctly."""
    now = 5000.0
    budget = RateBudget(150, burst=10, clock=lambda: now, sleep=lambda s: None)
    times: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(50):
            wait = budget.acquire()
            with lock:
                times.append(now + wait)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(times) == 800
    assert max_in_any_window(times, 60.0) <= 150


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 200),
    burst=st.none() | st.integers(1, 50),
    steps=st.lists(
        st.tuples(st.floats(0, 90), st.integers(1, 30), st.none() | st.floats(0, 70)), max_size=25
    ),
)
def test_window_property(limit: int, burst: int | None, steps: list[tuple[float, int, float | None]]) -> None:
    """Whatever the arrival pattern and penalties, ≤ N sends in any 60 s window."""
    clock = FakeClock()
    budget = RateBudget(limit, burst, clock=clock, sleep=clock.sleep)
    sent = []
    for idle, count, penalty in steps:
        clock.sleep(idle)
        if penalty is not None:
            budget.penalise(penalty)
        for _ in range(count):
            budget.acquire()
            sent.append(clock())
    assert max_in_any_window(sent, 60.0) <= limit


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        RateBudget(-1)
    with pytest.raises(ValueError):
        RateBudget(0.5)
    with pytest.raises(ValueError):
        RateBudget(10).acquire(cost=11)


# ----------------------------------------------------------------- registry


def test_registry_shares_one_budget_per_site() -> None:
    a = get_budget("chargebee:acme-test.chargebee.com/api/v2", 150)
    b = get_budget("chargebee:acme-test.chargebee.com/api/v2", 150)
    c = get_budget("chargebee:other.chargebee.com/api/v2", 150)
    assert a is b and a is not c


def test_registry_tightens_never_loosens() -> None:
    a = get_budget("site", 1000)
    assert isinstance(a, RateBudget)
    assert get_budget("site", 150) is a and a.limit == 150
    assert get_budget("site", 3500) is a and a.limit == 150


def test_pluggable_factory() -> None:
    class Shared:
        def __init__(self) -> None:
            self.acquired = 0

        def acquire(self, cost: int = 1, timeout: float | None = None) -> float:
            self.acquired += cost
            return 0.0

        def penalise(self, retry_after: float) -> None:
            pass

    made: list[tuple[str, Any, Any]] = []

    def factory(key: str, rate: float | None, burst: int | None) -> RateLimiter:
        made.append((key, rate, burst))
        return Shared()

    set_budget_factory(factory)
    try:
        reset_budgets()
        limiter = get_budget("chargebee:x", 150, 5)
        assert isinstance(limiter, Shared) and isinstance(limiter, RateLimiter)
        assert made == [("chargebee:x", 150, 5)]
    finally:
        set_budget_factory(None)
        reset_budgets()
    assert isinstance(get_budget("chargebee:x", 150), RateBudget)
