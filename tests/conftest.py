"""Test-wide Airflow environment, set before anything imports Airflow.

Every test session gets its own AIRFLOW_HOME and metadata database: SQLite by default,
PostgreSQL when CRMSYNC_TEST_DB=postgres (CRMSYNC_PG_URL names the server, as in CI).
The link store is reached through the ``crmsync_store`` connection naming that same
database, exactly as in production.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
_HOME = Path(tempfile.mkdtemp(prefix="crmsync-test-airflow-"))

os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ["AIRFLOW__DATABASE__EXTERNAL_DB_MANAGERS"] = "crmsync.store.db_manager.LinkStoreDBManager"
os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = os.environ.get("CRMSYNC_TEST_LOG_LEVEL", "WARNING")
os.environ["CRMSYNC_TASK_RETRIES"] = "0"
# One Fernet key for every process of every test session (a test-only key, guarding nothing):
# Airflow encrypts connections and the change triggers' kwargs with it, and on PostgreSQL
# the session, each `airflow standalone` a test starts, and later sessions share one
# database. With a key per AIRFLOW_HOME, a process reads another's rows as InvalidToken.
os.environ["AIRFLOW__CORE__FERNET_KEY"] = "A-dYPuE-yf_HP6b8tcxwALz3g6uBgqVBygmFD-nzfXE="

if os.environ.get("CRMSYNC_TEST_DB") == "postgres":
    _url = os.environ.get("CRMSYNC_PG_URL", "postgresql+psycopg2://crmsync:crmsync@127.0.0.1:5432/crmsync")
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = _url
    _u = urlparse(_url)
    os.environ["AIRFLOW_CONN_CRMSYNC_STORE"] = json.dumps(
        {
            "conn_type": "postgres",
            "host": _u.hostname,
            "port": _u.port or 5432,
            "login": _u.username or "",
            "password": _u.password or "",
            "schema": _u.path.lstrip("/"),
        }
    )
else:
    _db = _HOME / "airflow.db"
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_db}"
    os.environ["AIRFLOW_CONN_CRMSYNC_STORE"] = json.dumps({"conn_type": "sqlite", "host": str(_db)})


_FOLDER_MARKERS = {
    "unit": "unit",
    "integration": "integration",
    "sandbox": "integration",
    "contract": "integration",
    "e2e": "e2e",
    "chaos": "chaos",
}


def pytest_sessionstart(session: Any) -> None:
    """PostgreSQL is shared with earlier sessions: forget the change triggers they left
    (encrypted with whatever key those sessions had, and re-created from the DAGs)."""
    if os.environ.get("CRMSYNC_TEST_DB") != "postgres":
        return
    from sqlalchemy import create_engine, inspect, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], poolclass=NullPool)
    try:
        if {"asset_watcher", "trigger", "task_instance"} <= set(inspect(engine).get_table_names()):
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM asset_watcher"))
                conn.execute(text("UPDATE task_instance SET trigger_id = NULL WHERE trigger_id IS NOT NULL"))
                conn.execute(text("DELETE FROM trigger"))
    finally:
        engine.dispose()


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Mark every test by its folder, so ``-m unit`` / ``-m "not chaos"`` select by kind
    without each file having to say it (``make unit`` runs ``-m unit``)."""
    import pytest

    tests_dir = Path(__file__).resolve().parent
    for item in items:
        try:
            folder = Path(str(item.fspath)).resolve().relative_to(tests_dir).parts[0]
        except ValueError:
            continue
        marker = _FOLDER_MARKERS.get(folder)
        if marker:
            item.add_marker(getattr(pytest.mark, marker))
