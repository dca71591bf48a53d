"""One Airflow DAG per mapping file in include/mappings/ (Customcrm ⇄ Chargebee sync flows).

Kept thin and cheap to parse: the factory validates each mapping with pydantic (a bad
file shows as an import error naming the field and the fix) and builds the DAG; hooks,
SQLAlchemy and the sync engine are imported only when a task runs.
"""

from __future__ import annotations

import os
from pathlib import Path

from crmsync.flows.factory import build_dags

MAPPINGS = Path(
    os.environ.get("CRMSYNC_MAPPINGS_DIR", Path(__file__).resolve().parent.parent / "include" / "mappings")
)

globals().update(build_dags(MAPPINGS))
