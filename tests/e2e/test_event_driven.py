"""An edit reaches the other side by itself within a minute (issue 15 item 1).

A real Airflow (``airflow standalone``: scheduler with its own schedules and Asset
scheduling, LocalExecutor, dag-processor, **triggerer**) against the sandboxes, change
detection at its default interval (15 s). ``customer_business_entity`` and
``contact_customer`` are unpaused: the first runs (triggered, as its clock would), the second after it
(links Asset); then a person edits a contact in Customcrm, and with no trigger from the
test a ``contact_customer`` run starts (its changes Asset, updated by the Customcrm
watcher) and Chargebee shows the edit, and the sync's own writes start no further run.
The seconds from the edit to Chargebee are printed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from crmsync.store.schema import link
from sqlalchemy import create_engine, select
from sqlalchemy.pool import NullPool

from tests.e2e.conftest import Sandboxes
from tests.e2e.standalone import Standalone, scheduling_standalone, wait_quiet

pytestmark = [pytest.mark.e2e, pytest.mark.scheduler]

FLOWS = ["customer_business_entity", "contact_customer"]
PHONE = "+47 412 34 567"


def _by_changes(sa: Standalone, dag_id: str, run_ids: set[str]) -> set[str]:
    """The runs among ``run_ids`` that an event of the flow's changes Asset started (read from
    Airflow's REST API: the run's upstream asset events), not a clock or an upstream's links."""
    uri = f"crmsync://{dag_id}/changes"
    started: set[str] = set()
    for run_id in run_ids:
        path = f"dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/upstreamAssetEvents"
        if any(e.get("uri") == uri for e in sa.api("GET", path)["asset_events"]):
            started.add(run_id)
    return started


def _linked_contact(db_url: str) -> tuple[str, str]:
    engine = create_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                select(link.c.crm_id, link.c.cb_id)
                .where(link.c.flow == "contact_customer")
                .order_by(link.c.id)
            ).first()
    finally:
        engine.dispose()
    assert row is not None, "contact_customer linked nothing"
    return str(row[0]), str(row[1])


def _wait_for_phone(sb: Sandboxes, cb_id: str, timeout: float) -> float | None:
    """Seconds until Chargebee's customer shows the edit, or None after ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if sb.cb("GET", f"customers/{cb_id}")["customer"].get("phone") == PHONE:
            return time.monotonic() - t0
        time.sleep(1)
    return None


def test_an_edit_in_customcrm_reaches_chargebee_by_itself_within_a_minute(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    with scheduling_standalone(tmp_path / "airflow", FLOWS) as clocked:
        sa, earlier = clocked.sa, clocked.before  # earlier: a shared PostgreSQL database's
        # its clock's latest tick may have run already (a database shared with an earlier test)
        sa.trigger("customer_business_entity")
        wait_quiet(sa, FLOWS, earlier, timeout=300)
        crm_id, cb_id = _linked_contact(sa.db_url)
        before: dict[str, set[str]] = {"contact_customer": set(sa.dag_runs("contact_customer"))}
        time.sleep(1.1)  # whole-second timestamps: the edit is after the watermark
        sandboxes.crm("PATCH", f"contacts/{crm_id}", json={"Phone": PHONE})
        seconds = _wait_for_phone(sandboxes, cb_id, timeout=90)
        runs: dict[str, Any] = sa.dag_runs("contact_customer")
        # only runs its changes Asset started: at the top of the hour the upstream's clock tick
        # publishes its links Asset, which also starts a contact_customer run (not an edit's run)
        new = _by_changes(sa, "contact_customer", set(runs) - before["contact_customer"])
        shown = "never" if seconds is None else f"{seconds:.1f} s"
        print(f"\nCustomcrm edit → Chargebee in {shown} (measured); new contact_customer runs: {sorted(new)}")
        assert new, "no contact_customer run started by itself\n" + sa.output_tail()
        assert seconds is not None and seconds <= 60, f"took {seconds} s\n" + sa.output_tail()
        # the run's own writes (Chargebee's customer_changed, its Customcrm writes) start no run
        wait_quiet(sa, ["contact_customer"], before, timeout=120)
        settled = set(sa.dag_runs("contact_customer"))
        time.sleep(40)  # more than two polls at the default 15 s
        extra = _by_changes(sa, "contact_customer", set(sa.dag_runs("contact_customer")) - settled)
        assert not extra, f"runs started by the sync's own writes: {extra}"
