"""The migrations build exactly the schema the code declares, and go down and up again."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from crmsync.store import migrate
from crmsync.store.schema import TABLES, VERSION_TABLE, metadata
from sqlalchemy import create_engine, inspect


def test_migrations_match_the_metadata(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 's.db'}")
    migrate.upgrade(engine)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        diff = [
            d
            for d in compare_metadata(ctx, metadata)
            if not (d[0] == "remove_table" and d[1].name == VERSION_TABLE)
        ]
        assert diff == [], diff
        assert migrate.current_revision(conn) == migrate.head_revision()
    migrate.ensure_at_head(engine)


def test_downgrade_removes_our_tables_only(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 's.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE dag (id INTEGER)")  # stands in for Airflow's tables
    migrate.upgrade(engine)
    migrate.downgrade(engine, "base")
    names = set(inspect(engine).get_table_names())
    assert "dag" in names and not names & {t.name for t in TABLES}
    migrate.upgrade(engine)
    assert {t.name for t in TABLES} <= set(inspect(engine).get_table_names())


def test_tasks_refuse_a_store_that_is_not_at_head(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 's.db'}")
    try:
        migrate.ensure_at_head(engine)
    except migrate.StoreNotReady as exc:
        assert "airflow db migrate" in str(exc)
    else:
        raise AssertionError("expected StoreNotReady")


def test_version_table_is_our_own() -> None:
    env = (migrate.MIGRATIONS / "env.py").read_text()
    assert env.count("version_table=VERSION_TABLE") == 2 and VERSION_TABLE != "alembic_version"
