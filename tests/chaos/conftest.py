"""Chaos, hostile-input and secrets tests: they reuse the end-to-end fixtures.

``pytest_plugins`` is only honoured in the root conftest, so the fixtures are imported
here instead (importing a fixture function into a conftest registers it).
"""

from __future__ import annotations

from tests.e2e.conftest import (  # noqa: F401
    Sandboxes,
    airflow_db,
    dags,
    legacy_orders,
    run_flow,
    sandboxes,
    store,
)
