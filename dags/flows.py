"""One Airflow DAG per mapping file in include/mappings/ (Customcrm ⇄ Chargebee sync flows).

Kept thin and cheap to parse: the factory validates each mapping with pydantic (a bad
file shows as an import error naming the field and the fix) and builds the DAG; hooks,
SQLAlchemy and the sync engine are imported only when a task runs.
"""

from __future__ import annotations

from crmsync.flows.factory import build_dags
from crmsync.mapping.order import mappings_dir

#: CRMSYNC_MAPPINGS_DIR, else include/mappings of this project
MAPPINGS = mappings_dir()

globals().update(build_dags(MAPPINGS))
