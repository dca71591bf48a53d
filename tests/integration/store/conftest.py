"""A link store built by the migrations for each test: a SQLite file, or a private schema
of PostgreSQL when CRMSYNC_TEST_DB=postgres (CRMSYNC_PG_URL names the server)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from crmsync.store import migrate
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    if os.environ.get("CRMSYNC_TEST_DB") != "postgres":
        eng = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
        migrate.upgrade(eng)
        yield eng
        eng.dispose()
        return
    url = os.environ.get("CRMSYNC_PG_URL", "postgresql+psycopg2://crmsync:crmsync@127.0.0.1:5432/crmsync")
    schema = f"crmsync_store_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    eng = create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        migrate.upgrade(eng)
        yield eng
    finally:
        eng.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
