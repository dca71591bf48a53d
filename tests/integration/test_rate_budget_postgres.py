"""The shared budget's table and transactions on PostgreSQL (CRMSYNC_TEST_DB=postgres).

Each test works in a private schema, so it neither needs nor disturbs the shared
metadata database's own ``crmsync_*`` tables.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from crmsync.store import migrate
from crmsync.store.rate_budget import RateBudgetStore
from crmsync.store.schema import VERSION_TABLE, metadata, rate_budget
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg() -> Iterator[Engine]:
    if os.environ.get("CRMSYNC_TEST_DB") != "postgres":
        pytest.skip("PostgreSQL run only (CRMSYNC_TEST_DB=postgres)")
    url = os.environ.get("CRMSYNC_PG_URL", "postgresql+psycopg2://crmsync:crmsync@127.0.0.1:5432/crmsync")
    schema = f"crmsync_rb_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_migrations_match_the_metadata_on_postgres(pg: Engine) -> None:
    migrate.upgrade(pg)
    with pg.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        diff = [
            d
            for d in compare_metadata(ctx, metadata)
            if not (d[0] == "remove_table" and d[1].name == VERSION_TABLE)
        ]
        assert diff == [], diff
    migrate.downgrade(pg, "0001")
    assert rate_budget.name not in inspect(pg).get_table_names()
    migrate.upgrade(pg)
    assert rate_budget.name in inspect(pg).get_table_names()


def test_leases_use_the_database_clock_and_lock(pg: Engine) -> None:
    rate_budget.create(pg)
    store = RateBudgetStore(pg)
    kw = {"cap": 10, "span": 60.0, "bucket_seconds": 0.5}
    first = store.lease("s", want=6, need=1, **kw)
    assert first.granted == 6 and first.bucket is not None
    refused = store.lease("s", want=5, need=5, **kw)
    assert refused.granted == 0 and 59.0 < refused.wait <= 60.6
    assert store.lease("s", want=5, need=1, give_back=(first.bucket, 2), **kw).granted == 5
    assert store.usage("s", 60.0).used == 9
    assert 29.0 < store.block("s", 30.0) <= 30.0
    assert store.lease("s", want=1, need=1, **kw).granted == 0


def test_concurrent_leases_never_oversubscribe(pg: Engine) -> None:
    """16 threads with their own connections race for a budget of 100: exactly 100 granted."""
    rate_budget.create(pg)
    stores = [RateBudgetStore(pg) for _ in range(4)]
    granted: list[int] = []
    lock = threading.Lock()

    def worker(store: RateBudgetStore) -> None:
        for _ in range(20):
            lease = store.lease("race", want=3, need=1, cap=100, span=60.0, bucket_seconds=0.5)
            with lock:
                granted.append(lease.granted)

    threads = [threading.Thread(target=worker, args=(stores[i % 4],)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 100
    assert stores[0].usage("race", 60.0).used == 100
