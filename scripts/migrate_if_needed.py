#!/usr/bin/env python
"""``airflow db migrate`` only when it has something to do (``make run`` / ``make sync``).

``airflow db migrate`` takes 4-5 s on this machine even when the database is current (it
imports Airflow, loads every migration script, asks each DB manager): a quarter of a
one-edit ``make sync``. After a migrate, this script records what produced the database (a
hash of the SQLAlchemy URL, the installed ``apache-airflow*`` distributions, the external DB
managers, the link store's migration files) and where it left it (the revisions in every
``*alembic_version*`` table). Next time, if all of that is unchanged, the database is
exactly where ``airflow db migrate`` would leave it, and the step is skipped; anything
different (an upgrade, a new link-store migration, another database, a dropped or
downgraded table) runs the real migrate. ``make migrate`` always migrates.

Only SQLAlchemy is imported for the check (no Airflow): about 0.3 s.

    python scripts/migrate_if_needed.py [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STORE_MIGRATIONS = ROOT / "plugins" / "crmsync" / "store" / "migrations"


def _record_path() -> Path:
    return Path(os.environ["AIRFLOW_HOME"]) / "crmsync-migrated.json"


def _inputs(url: str) -> dict[str, Any]:
    """What ``airflow db migrate`` depends on; the URL hashed (it may hold a password)."""
    files = hashlib.sha256()
    for path in sorted(STORE_MIGRATIONS.rglob("*.py")) + sorted(STORE_MIGRATIONS.glob("*.ini")):
        files.update(str(path.relative_to(STORE_MIGRATIONS)).encode() + b"\0" + path.read_bytes())
    dists = sorted(
        f"{d.metadata['Name']}=={d.version}"
        for d in metadata.distributions()
        if (d.metadata["Name"] or "").lower().startswith("apache-airflow")
    )
    return {
        "url": hashlib.sha256(url.encode()).hexdigest(),
        "distributions": dists,
        "db_managers": os.environ.get("AIRFLOW__DATABASE__EXTERNAL_DB_MANAGERS", ""),
        "store_migrations": files.hexdigest(),
    }


def _revisions(url: str) -> dict[str, list[str]] | None:
    """{version table: sorted revisions} of the database, or None when unreachable."""
    from sqlalchemy import create_engine, inspect, text
    from sqlalchemy.pool import NullPool

    try:
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                tables = [t for t in inspect(conn).get_table_names() if "alembic_version" in t]
                return {
                    t: sorted(str(r[0]) for r in conn.execute(text(f'SELECT version_num FROM "{t}"')))
                    for t in sorted(tables)
                }
        finally:
            engine.dispose()
    except Exception:  # no database yet, or unreachable: let `airflow db migrate` say why
        return None


def current(url: str) -> bool:
    """The database is where the last recorded migrate left it, with the same code."""
    try:
        recorded = json.loads(_record_path().read_text())
    except (OSError, ValueError):
        return False
    revisions = _revisions(url)
    return bool(revisions) and recorded == {"inputs": _inputs(url), "revisions": revisions}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--force", action="store_true", help="migrate even when the record says current")
    args = parser.parse_args()
    url = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")
    if url and not args.force and current(url):
        print("migrate: the metadata DB and the link store are current (skipped `airflow db migrate`)")
        return 0
    Path(os.environ["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    # the venv's airflow, next to this interpreter (as make's PATH has it)
    airflow = Path(sys.executable).parent / "airflow"
    rc = subprocess.call([str(airflow) if airflow.exists() else "airflow", "db", "migrate"])  # noqa: S603
    revisions = _revisions(url) if rc == 0 and url else None
    if revisions:
        record = {"inputs": _inputs(url), "revisions": revisions}
        _record_path().write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    else:
        _record_path().unlink(missing_ok=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
