"""Airflow's hook into our migrations: ``airflow db migrate`` also migrates the store.

``airflow.utils.db_manager`` is not a public Airflow interface, so its use is kept to
this one module (and a test that exercises it on a real database). The manager is
named in the provider info under ``db-managers`` and in ``[database]
external_db_managers``. ``supports_table_dropping`` stays False so ``airflow db
reset`` keeps the links.
"""

from __future__ import annotations

from typing import Any

from airflow.utils.db_manager import BaseDBManager

from crmsync.store.migrate import MIGRATIONS, alembic_config
from crmsync.store.schema import VERSION_TABLE, metadata


class LinkStoreDBManager(BaseDBManager):
    metadata = metadata
    migration_dir = str(MIGRATIONS)
    alembic_file = str(MIGRATIONS / "alembic.ini")
    version_table_name = VERSION_TABLE
    supports_table_dropping = False

    def get_alembic_config(self) -> Any:
        from airflow import settings

        return alembic_config(url=settings.SQL_ALCHEMY_CONN)

    def downgrade(
        self, to_revision: str, from_revision: str | None = None, show_sql_only: bool = False
    ) -> None:
        from alembic import command

        config = self.get_alembic_config()
        if from_revision:
            to_revision = f"{from_revision}:{to_revision}"
        command.downgrade(config, revision=to_revision, sql=show_sql_only)
