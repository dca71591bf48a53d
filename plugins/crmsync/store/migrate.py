"""Run and check the link store's own alembic migrations.

Used by the Airflow DB manager (``airflow db migrate``), by ``python -m
crmsync.store.migrate`` (for deployments that keep the store elsewhere), and by the
tasks, which refuse to run against a store that is not at head: the scheduler does not
notice a pending migration, so the task must say so clearly.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from crmsync.store.schema import VERSION_TABLE

MIGRATIONS = Path(__file__).parent / "migrations"


class StoreNotReady(RuntimeError):
    """The link store's tables are missing or behind the code."""


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Config:
    cfg = Config(str(MIGRATIONS / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"the link store's migrations have {len(heads)} heads: {heads}")
    return str(heads[0])


def current_revision(connection: Connection) -> str | None:
    ctx = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    rev = ctx.get_current_revision()
    return None if rev is None else str(rev)


def upgrade(engine: Engine, revision: str = "head") -> None:
    with engine.begin() as conn:
        command.upgrade(alembic_config(connection=conn), revision)


def downgrade(engine: Engine, revision: str) -> None:
    with engine.begin() as conn:
        command.downgrade(alembic_config(connection=conn), revision)


def ensure_at_head(engine: Engine) -> None:
    """Fail with the fix in the message when the store is missing or out of date."""
    with engine.connect() as conn:
        current = current_revision(conn)
    head = head_revision()
    if current != head:
        raise StoreNotReady(
            f"the crmsync link store is at revision {current or '(none: tables missing)'}, "
            f"the code needs {head}. Run `airflow db migrate` (with the crmsync provider "
            "installed) or `python -m crmsync.store.migrate upgrade`."
        )


def main(argv: list[str] | None = None) -> None:
    from crmsync.store.engine import store_engine

    parser = argparse.ArgumentParser(prog="python -m crmsync.store.migrate")
    parser.add_argument("command", choices=["upgrade", "downgrade", "current", "check"])
    parser.add_argument("revision", nargs="?", default="head")
    parser.add_argument("--conn-id", default="crmsync_store")
    args = parser.parse_args(argv)
    engine = store_engine(args.conn_id)
    if args.command == "upgrade":
        upgrade(engine, args.revision)
    elif args.command == "downgrade":
        downgrade(engine, args.revision)
    elif args.command == "check":
        ensure_at_head(engine)
    with engine.connect() as conn:
        print(f"crmsync link store at revision {current_revision(conn)} (head {head_revision()})")


if __name__ == "__main__":
    main()
