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

if os.environ.get("CRMSYNC_TEST_DB") == "postgres":
    _url = os.environ.get("CRMSYNC_PG_URL", "postgresql+psycopg2://crmsync:crmsync@127.0.0.1:5432/crmsync")
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = _url
    _u = urlparse(_url)
    os.environ["AIRFLOW_CONN_CRMSYNC_STORE"] = json.dumps(
        {"conn_type": "postgres", "host": _u.hostname, "port": _u.port or 5432, "login": _u.username or "",
         "password": _u.password or "", "schema": _u.path.lstrip("/")}
    )
else:
    _db = _HOME / "airflow.db"
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_db}"
    os.environ["AIRFLOW_CONN_CRMSYNC_STORE"] = json.dumps({"conn_type": "sqlite", "host": str(_db)})
