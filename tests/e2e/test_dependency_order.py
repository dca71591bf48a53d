"""Unpausing every DAG at once ends like running the flows in dependency order (issue 15, item 2).

With every DAG on a clock, ``make up`` (all DAGs unpaused together) ran ``contact_customer``
while ``customer_business_entity`` had not linked the entities yet, and the customers it
created stayed in Chargebee's default entity for good. Now a flow whose fields reference
another flow's links is scheduled on that flow's links Asset (``publish_links`` updates
it after ``update_links``), so it runs after it.

The test runs the seed twice:

1. **Through a real scheduler** (``airflow standalone``, LocalExecutor, the scheduler's own
   cron and Asset scheduling switched on): every DAG is unpaused at once, as ``make up``
   does; the flows without references start on their clock (the latest tick, as
   ``catchup=False`` does) and the others must start only from Assets, after their
   upstream flow's run. Then the flows without references run once more (the next tick)
   and everything settles.
2. **In dependency order**, in this process (``dag.test()``, as ``make run``), twice.

Both must end in the same state: the same customers in the same business entities, the
same contacts, as many links per flow, the same records held and why. No customer is in
the default entity because of ordering.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from crmsync.mapping.model import load_mappings
from crmsync.store.schema import TABLES, link, quarantine
from sqlalchemy import create_engine, delete, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from scripts.runner import ORDER
from tests.e2e.conftest import CB_KEY, CRM_TOKEN, ROOT, SEEDS, Sandboxes
from tests.e2e.standalone import Standalone, scheduling_standalone, wait_quiet

pytestmark = [pytest.mark.e2e, pytest.mark.scheduler]

MAPPINGS = {m.flow: m for m in load_mappings(ROOT / "include" / "mappings")}
#: flows that reference another flow (scheduled on its Asset) and those that do not (on their clock)
DOWNSTREAM = {f: m.depends_on for f, m in MAPPINGS.items() if m.depends_on}
ROOTS = [f for f in ORDER if f not in DOWNSTREAM]


@pytest.fixture
def second_sandboxes(tmp_path: Path) -> Iterator[Sandboxes]:
    """Another seeded pair, for the scheduler's run (the ``sandboxes`` fixture serves the
    in-process run)."""
    from sandbox.chargebee.server import serve_in_thread as serve_cb
    from sandbox.customcrm.server import serve_in_thread as serve_crm

    with ExitStack() as stack:
        _, cb_url = stack.enter_context(
            serve_cb(tmp_path / "cb2.json", port=0, seed_path=SEEDS / "chargebee.json")
        )
        _, crm_url = stack.enter_context(
            serve_crm(tmp_path / "crm2.json", port=0, seed_path=SEEDS / "customcrm.json")
        )
        yield Sandboxes(cb_url.rstrip("/"), crm_url.rstrip("/"))


def connections(sb: Sandboxes) -> dict[str, str]:
    cb = {
        "conn_type": "chargebee",
        "host": "sandbox",
        "password": CB_KEY,
        "extra": {"base_url": f"{sb.cb_url}/api/v2", "rate_limit_per_minute": 100000},
    }
    crm = {"conn_type": "customcrm", "host": sb.crm_url, "password": CRM_TOKEN}
    return {
        "AIRFLOW_CONN_CHARGEBEE_DEFAULT": json.dumps(cb),
        "AIRFLOW_CONN_CUSTOMCRM_DEFAULT": json.dumps(crm),
    }


def end_state(sb: Sandboxes, engine: Engine) -> dict[str, Any]:
    """What both systems and the link store hold, by natural keys (ids the sandboxes assign
    to created records depend on the order of creation)."""
    customers = sorted(
        ((c.get("email") or "").lower(), c.get("business_entity_id"))
        for c in sb.cb_customers()
        if not c.get("deleted")
    )
    contacts = sorted(
        ((c.get("Email") or "").lower(), c.get("CustomerId") or "", c.get("Company") or "")
        for c in sb.crm_contacts()
        if not c.get("Deleted")
    )
    with engine.connect() as conn:
        links = dict(conn.execute(select(link.c.flow, func.count()).group_by(link.c.flow)).all())
        held = Counter(
            (flow, side, kind, record_id)
            for flow, side, kind, record_id in conn.execute(
                select(quarantine.c.flow, quarantine.c.side, quarantine.c.kind, quarantine.c.record_id)
            ).all()
        )
    return {"customers": customers, "contacts": contacts, "links": links, "held": sorted(held)}


def run_details(sa: Standalone, dag_id: str, before: set[str]) -> list[dict[str, Any]]:
    """The DAG's runs the test did not see before, with their type and times."""
    body = sa.api("GET", f"dags/{dag_id}/dagRuns", params={"limit": 100, "order_by": "-run_after"})
    return [r for r in body["dag_runs"] if r["dag_run_id"] not in before]


def links_updated_at(sa: Standalone, dag_id: str, run_id: str) -> str:
    """When the run's update_links ended: its links are complete from then on (the run
    itself ends a moment later, after publish_links updated the Asset)."""
    ti = sa.api("GET", f"dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/update_links")
    return str(ti["end_date"])


def assert_downstream_after_upstream(sa: Standalone, before: dict[str, set[str]]) -> None:
    """Every run of a flow with references came from Assets, and its first started after
    the first run of each of its upstream flows had updated its links."""
    runs = {d: run_details(sa, d, before.get(d, set())) for d in ORDER}
    for dag_id, upstream in DOWNSTREAM.items():
        assert runs[dag_id], f"{dag_id} never ran"
        kinds = {r["run_type"] for r in runs[dag_id]}
        assert kinds == {"asset_triggered"}, f"{dag_id} ran as {kinds}: it must run only after its upstream"
        first = min(r["start_date"] for r in runs[dag_id])
        for up in upstream:
            first_up = min(runs[up], key=lambda r: r["start_date"])
            linked = links_updated_at(sa, up, first_up["dag_run_id"])
            assert first >= linked, f"{dag_id} started {first} before {up} updated its links {linked}"


def test_unpausing_every_dag_at_once_ends_as_running_them_in_order(
    sandboxes: Sandboxes, second_sandboxes: Sandboxes, run_flow: Any, store: Engine, tmp_path: Path
) -> None:
    # as `make up`: DAGs created paused, all unpaused at once, the scheduler runs their
    # clocks and Assets
    with scheduling_standalone(tmp_path / "airflow", ORDER, connections(second_sandboxes)) as clocked:
        sa, before = clocked.sa, clocked.before
        for dag_id, dag in clocked.dags.items():
            assert dag["is_paused"], f"{dag_id} was not created paused"
        # the flows without references start on their clock's latest tick, unless a run of
        # that tick exists already (a PostgreSQL database shared with an earlier test in the
        # same hour): a manual trigger is the same start, whatever the clock did
        for dag_id in ROOTS:
            sa.trigger(dag_id)
        wait_quiet(sa, ORDER, before, timeout=420)
        assert_downstream_after_upstream(sa, before)
        # the next tick: the flows without references run again, the others after them
        before = {d: set(sa.dag_runs(d)) for d in ORDER}
        for dag_id in ROOTS:
            sa.trigger(dag_id)
        wait_quiet(sa, ORDER, before, timeout=420)
        engine = create_engine(sa.db_url, poolclass=NullPool)
        try:
            by_assets = end_state(second_sandboxes, engine)
        finally:
            engine.dispose()

    # the same seed in dependency order, in this process, on this session's link store
    # (emptied: on PostgreSQL the standalone shared this session's database)
    with store.begin() as conn:
        for table in TABLES:
            conn.execute(delete(table))
    for _ in range(2):
        for dag_id in ORDER:
            assert run_flow(dag_id).ok, dag_id
    in_order = end_state(sandboxes, store)

    assert by_assets["customers"] == in_order["customers"], "customers or their business entities differ"
    assert by_assets["contacts"] == in_order["contacts"]
    assert by_assets["links"] == in_order["links"]
    assert by_assets["held"] == in_order["held"]
