"""The e2e fixture for a migrated metadata DB, shared with the contract tests."""

from tests.e2e.conftest import airflow_db  # noqa: F401
