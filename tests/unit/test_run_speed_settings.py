"""What keeps a one-edit run short (issue 15 item 3): the settings the stack ships with and
``make sync``'s skip of a no-op ``airflow db migrate``. Behaviour only, no timing."""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
IDLE_SLEEP = "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"


def _env_sh() -> dict[str, str]:
    """The environment scripts/env.sh gives a clean shell."""
    out = subprocess.run(
        ["bash", "-c", f"source {ROOT / 'scripts' / 'env.sh'} >/dev/null 2>&1; env -0"],
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")},
        capture_output=True,
        check=True,
    ).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def test_scheduler_idle_sleep_is_short_in_env_sh_and_compose() -> None:
    # Airflow's default (1 s) made every task hop of a flow wait 0.5 s on average.
    assert float(_env_sh()[IDLE_SLEEP]) <= 0.5
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    assert float(compose["x-airflow-common"]["environment"][IDLE_SLEEP]) <= 0.5


def _migrate_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "migrate_if_needed", ROOT / "scripts" / "migrate_if_needed.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, str, Path]:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    path = tmp_path / "airflow.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.execute("INSERT INTO alembic_version VALUES ('head1')")
        conn.execute("CREATE TABLE crmsync_alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.execute("INSERT INTO crmsync_alembic_version VALUES ('0003')")
    module = _migrate_script()
    url = f"sqlite:///{path}"
    record = {"inputs": module._inputs(url), "revisions": module._revisions(url)}
    (tmp_path / "crmsync-migrated.json").write_text(json.dumps(record))
    return module, url, path


def test_migrate_skipped_only_while_the_database_is_where_the_last_migrate_left_it(
    db: tuple[ModuleType, str, Path],
) -> None:
    module, url, path = db
    assert module.current(url)
    with sqlite3.connect(path) as conn:  # e.g. `airflow db downgrade`, or another migrate's tables
        conn.execute("UPDATE crmsync_alembic_version SET version_num = '0002'")
    assert not module.current(url)


def test_migrate_not_skipped_for_another_database_or_changed_code(
    db: tuple[ModuleType, str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module, url, path = db
    other = tmp_path / "other.db"
    other.write_bytes(path.read_bytes())
    assert not module.current(f"sqlite:///{other}")
    monkeypatch.setenv("AIRFLOW__DATABASE__EXTERNAL_DB_MANAGERS", "another.Manager")
    assert not module.current(url)
    monkeypatch.undo()
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setattr(module, "STORE_MIGRATIONS", tmp_path)  # other migration files
    assert not module.current(url)


def test_migrate_not_skipped_without_a_record_or_a_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    module = _migrate_script()
    assert not module.current(f"sqlite:///{tmp_path / 'missing.db'}")
