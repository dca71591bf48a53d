"""The shared budget's store: sliding-window arithmetic, leases, give-backs and pauses on SQLite."""

from __future__ import annotations

from bisect import bisect_left
from pathlib import Path

import pytest
from crmsync.store import migrate
from crmsync.store.rate_budget import (
    CONTROL_ROW,
    RateBudgetStore,
    SharedBudgetError,
    Usage,
    bucket_end_ms,
    plan_lease,
)
from crmsync.store.schema import rate_budget
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, select


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def max_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max((bisect_left(times, t + window) - i for i, t in enumerate(times)), default=0)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> RateBudgetStore:
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate.upgrade(engine)
    return RateBudgetStore(engine, clock=clock)


# -------------------------------------------------------------- pure arithmetic


def test_plan_grants_what_is_free_up_to_want() -> None:
    live = [(1000, 3), (2000, 4)]
    assert plan_lease(live, now=2.0, want=5, need=1, cap=10, span=60, blocked_until=None).granted == 3
    assert plan_lease(live, now=2.0, want=2, need=1, cap=10, span=60, blocked_until=None).granted == 2


def test_plan_says_when_enough_old_buckets_leave_the_window() -> None:
    live = [(1000, 3), (2000, 4), (3000, 3)]
    d = plan_lease(live, now=3.0, want=5, need=4, cap=10, span=60, blocked_until=None)
    assert d.granted == 0 and d.retry_at == pytest.approx(2.0 + 60)  # the first two must go


def test_plan_honours_a_pause() -> None:
    d = plan_lease([], now=10.0, want=5, need=1, cap=10, span=60, blocked_until=40.0)
    assert d.granted == 0 and d.retry_at == 40.0
    assert plan_lease([], now=40.0, want=5, need=1, cap=10, span=60, blocked_until=40.0).granted == 5


def test_plan_rejects_impossible_requests() -> None:
    with pytest.raises(ValueError):
        plan_lease([], now=0, want=11, need=11, cap=10, span=60, blocked_until=None)
    with pytest.raises(ValueError):
        plan_lease([], now=0, want=1, need=2, cap=10, span=60, blocked_until=None)


def test_bucket_end_is_never_before_now() -> None:
    assert bucket_end_ms(10.0, 0.5) == 10_000
    assert bucket_end_ms(10.0001, 0.5) == 10_500
    assert bucket_end_ms(10.4999, 0.5) == 10_500


@settings(max_examples=60, deadline=None)
@given(
    cap=st.integers(1, 60),
    bucket=st.sampled_from([0.05, 0.5, 1.0, 7.0]),
    steps=st.lists(st.tuples(st.floats(0, 20), st.integers(1, 12), st.integers(1, 3)), max_size=60),
)
def test_store_never_leases_more_than_cap_in_any_span(
    tmp_path_factory: pytest.TempPathFactory,
    cap: int,
    bucket: float,
    steps: list[tuple[float, int, int]],
) -> None:
    """Whatever the arrival pattern and bucket size: ≤ cap tokens leased in any ``span``."""
    clock = Clock()
    engine = create_engine(f"sqlite:///{tmp_path_factory.mktemp('p') / 's.db'}")
    rate_budget.create(engine)
    store = RateBudgetStore(engine, clock=clock)
    span = 60.0
    leased: list[float] = []
    for idle, want, need in steps:
        clock.now += idle
        need = min(need, cap, want)
        lease = store.lease("s", want=want, need=need, cap=cap, span=span, bucket_seconds=bucket)
        if lease.granted:
            assert need <= lease.granted <= want
            leased += [clock.now] * lease.granted
        else:
            assert lease.wait > 0
    assert max_in_any_window(leased, span) <= cap
    store.dispose()


# ------------------------------------------------------------------- the store


def test_lease_then_refusal_with_the_exact_wait(store: RateBudgetStore, clock: Clock) -> None:
    kw = {"cap": 10, "span": 60.0, "bucket_seconds": 0.5}
    assert store.lease("s", want=6, need=1, **kw).granted == 6
    clock.now += 10
    assert store.lease("s", want=6, need=1, **kw).granted == 4  # partial: what is left
    clock.now += 10
    refused = store.lease("s", want=6, need=1, **kw)
    assert refused.granted == 0 and refused.wait == pytest.approx(40.0, abs=0.5)
    clock.now += refused.wait
    assert store.lease("s", want=6, need=1, **kw).granted == 6  # the first lease left the window
    assert store.usage("s", 60.0).used == 10


def test_sites_are_independent(store: RateBudgetStore) -> None:
    kw = {"cap": 5, "span": 60.0, "bucket_seconds": 0.5}
    assert store.lease("a", want=5, need=1, **kw).granted == 5
    assert store.lease("b", want=5, need=1, **kw).granted == 5
    assert store.lease("a", want=1, need=1, **kw).granted == 0


def test_give_back_frees_unused_tokens_for_others(store: RateBudgetStore, clock: Clock) -> None:
    kw = {"cap": 10, "span": 60.0, "bucket_seconds": 0.5}
    first = store.lease("s", want=10, need=1, **kw)
    assert first.granted == 10 and first.bucket is not None
    assert store.lease("s", want=1, need=1, **kw).granted == 0
    clock.now += 1
    # The first process used 3 and hands 7 back with its next request.
    again = store.lease("s", want=2, need=1, give_back=(first.bucket, 7), **kw)
    assert again.granted == 2
    assert store.usage("s", 60.0).used == 5


def test_block_pauses_every_lease_and_never_shortens(store: RateBudgetStore, clock: Clock) -> None:
    kw = {"cap": 10, "span": 60.0, "bucket_seconds": 0.5}
    assert store.block("s", 30.0) == pytest.approx(30.0)
    assert store.block("s", 5.0) == pytest.approx(30.0)
    refused = store.lease("s", want=1, need=1, **kw)
    assert refused.granted == 0 and refused.wait == pytest.approx(30.0)
    assert store.usage("s", 60.0).blocked_for == pytest.approx(30.0)
    clock.now += 30
    assert store.lease("s", want=1, need=1, **kw).granted == 1


def test_expired_and_future_rows_are_deleted(store: RateBudgetStore, clock: Clock) -> None:
    kw = {"cap": 10, "span": 60.0, "bucket_seconds": 0.5}
    store.lease("s", want=3, need=1, **kw)
    clock.now -= 3600  # a wall-clock step backwards: that row is now an hour "ahead"
    assert store.lease("s", want=10, need=1, **kw).granted == 10
    clock.now += 3600 + 120
    assert store.lease("s", want=1, need=1, **kw).granted == 1
    with store.engine.connect() as conn:
        rows = conn.execute(select(rate_budget.c.bucket_end_ms, rate_budget.c.used)).all()
    assert sorted(r[1] for r in rows if r[0] != CONTROL_ROW) == [1]


def test_clear_forgets_a_site(store: RateBudgetStore) -> None:
    kw = {"cap": 2, "span": 60.0, "bucket_seconds": 0.5}
    store.lease("s", want=2, need=1, **kw)
    store.block("s", 30)
    store.clear("s")
    assert store.usage("s", 60.0) == Usage(0, 0.0)


def test_missing_table_says_how_to_fix_it(tmp_path: Path) -> None:
    store = RateBudgetStore(create_engine(f"sqlite:///{tmp_path / 'empty.db'}"))
    with pytest.raises(SharedBudgetError, match="airflow db migrate"):
        store.lease("s", want=1, need=1, cap=1, span=60, bucket_seconds=0.5)


def test_in_memory_sqlite_cannot_be_shared() -> None:
    with pytest.raises(ValueError, match="file"):
        RateBudgetStore(create_engine("sqlite://"))


def test_store_leaves_the_link_store_engine_alone(tmp_path: Path) -> None:
    """SQLite needs BEGIN IMMEDIATE: on an engine of its own, not the link store's."""
    engine = create_engine(f"sqlite:///{tmp_path / 's.db'}")
    migrate.upgrade(engine)
    store = RateBudgetStore(engine)
    assert store.engine is not engine
    statements: list[str] = []
    from sqlalchemy import event

    event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    store.lease("s", want=1, need=1, cap=5, span=60, bucket_seconds=0.5)
    assert statements[0] == "BEGIN IMMEDIATE"
    store.dispose()


def test_migration_0002_goes_down_and_up_alone(tmp_path: Path) -> None:
    from sqlalchemy import inspect

    engine = create_engine(f"sqlite:///{tmp_path / 's.db'}")
    migrate.upgrade(engine)
    assert migrate.head_revision() >= "0002"  # later revisions (0003: quarantine.retry_requested) stack on it
    migrate.downgrade(engine, "0001")
    names = set(inspect(engine).get_table_names())
    assert rate_budget.name not in names and "crmsync_link" in names
    migrate.upgrade(engine)
    assert rate_budget.name in set(inspect(engine).get_table_names())
