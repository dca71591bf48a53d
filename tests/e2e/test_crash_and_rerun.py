"""Crashes and manual reruns: SIGKILL mid-upsert, lost responses, tasks cleared and rerun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from crmsync.store.schema import link, plan
from sqlalchemy import func, select

from tests.e2e.test_contact_customer import assert_converged, writes

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MAPPING = str(ROOT / "include" / "mappings" / "contact_customer.yaml")


def step(name: str, run_id: str, side: str | None = None, *, mapping: str = MAPPING, **params: Any) -> None:
    """Run one task callable the way a worker does (same run_id = a cleared task rerun)."""
    from crmsync.flows.tasks import run_step

    kwargs: dict[str, Any] = {"run_id": run_id, "params": params}
    if side:
        kwargs["side"] = side
    run_step(name, mapping, **kwargs)


def all_steps(run_id: str, *, mapping: str = MAPPING) -> None:
    step("extract", run_id, "customcrm", mapping=mapping)
    step("extract", run_id, "chargebee", mapping=mapping)
    step("transform", run_id, mapping=mapping)
    step("upsert", run_id, "chargebee", mapping=mapping)
    step("upsert", run_id, "customcrm", mapping=mapping)
    step("update_links", run_id, mapping=mapping)


def creates(sb: Any) -> int:
    stats = sb.stats("chargebee")
    return sum(
        r["count"] for r in stats["requests"] if r["method"] == "POST" and r["path"] == "/api/v2/customers"
    )


def test_every_task_rerun_gives_the_same_result(sandboxes, store):
    run_id = "manual__rerun_each_task"
    step("extract", run_id, "customcrm")
    step("extract", run_id, "chargebee")
    step("extract", run_id, "chargebee")  # cleared and rerun
    step("transform", run_id)
    step("transform", run_id)  # rebuilt: nothing executed yet
    step("upsert", run_id, "chargebee")
    n_creates = creates(sandboxes)
    step("transform", run_id)  # plan kept: writes were attempted
    step("upsert", run_id, "chargebee")  # nothing left to do
    assert creates(sandboxes) == n_creates
    step("upsert", run_id, "customcrm")
    step("update_links", run_id)
    before = writes(sandboxes)
    for name, side in (
        ("extract", "customcrm"),
        ("transform", None),
        ("upsert", "customcrm"),
        ("update_links", None),
    ):
        step(name, run_id, side)
    assert writes(sandboxes) == before
    assert_converged(sandboxes, store)
    # and the next scheduled run finds nothing to write
    all_steps("manual__after_reruns")
    all_steps("manual__idle")
    assert writes(sandboxes) == before


def _wait_for_creates(sb: Any, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while creates(sb) < n:
        assert time.monotonic() < deadline, "the upsert never got going"
        time.sleep(0.05)


@pytest.mark.parametrize("kill_after", [1, 6])
def test_sigkill_during_upsert_creates_no_duplicate(sandboxes, store, kill_after, tmp_path):
    # Two writer threads and slow answers: the 17 creates take about 3 s, so the kill
    # after the first or sixth lands with writes in flight however loaded the machine is
    # (with the threads sized to the rate budget, every create could be answered before
    # the test saw the sixth one).
    doc = yaml.safe_load(Path(MAPPING).read_text())
    doc["run"] = {**doc.get("run", {}), "max_workers": 2}
    mapping = str(tmp_path / "contact_customer.yaml")
    Path(mapping).write_text(yaml.safe_dump(doc))
    run_id = f"manual__sigkill_{kill_after}"
    step("extract", run_id, "customcrm", mapping=mapping)
    step("extract", run_id, "chargebee", mapping=mapping)
    step("transform", run_id, mapping=mapping)
    sandboxes.faults("chargebee", seed=1, latency_ms=300)
    code = (
        "from crmsync.flows.tasks import run_step\n"
        f"run_step('upsert', {mapping!r}, side='chargebee', run_id={run_id!r}, params={{}})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy(), cwd=ROOT)
    try:
        _wait_for_creates(sandboxes, kill_after)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with store.connect() as conn:
        in_flight = conn.execute(
            select(func.count()).where(plan.c.run_id == run_id, plan.c.cb_status == "in_flight")
        ).scalar()
    assert in_flight >= 1, "the kill should leave a write in flight"
    sandboxes.faults("chargebee", seed=1, latency_ms=0)
    # Airflow retries the task (or a person clears it): the rerun finishes the job.
    step("upsert", run_id, "chargebee", mapping=mapping)
    step("upsert", run_id, "customcrm", mapping=mapping)
    step("update_links", run_id, mapping=mapping)
    assert_converged(sandboxes, store)
    with store.connect() as conn:
        left = conn.execute(
            select(func.count()).where(
                plan.c.run_id == run_id, plan.c.cb_status.in_(("pending", "in_flight"))
            )
        ).scalar()
        assert left == 0
        n_links = conn.execute(select(func.count()).select_from(link)).scalar()
    # Every Chargebee customer the flow created is linked exactly once.
    customers = [c for c in sandboxes.cb_customers() if c["id"].startswith("crm-")]
    assert len(customers) == len({c["email"] for c in customers})
    assert n_links >= len(customers)
    before = writes(sandboxes)
    all_steps("manual__after_kill")
    all_steps("manual__idle_after_kill")
    assert writes(sandboxes) == before, "after recovery, runs without edits write nothing"
    assert_converged(sandboxes, store)


def test_lost_responses_neither_duplicate_nor_lose(run_flow, sandboxes, store):
    """The nasty fault: the write is applied, the response is lost; the hook retries."""
    sandboxes.faults("chargebee", seed=7, lost_response_rate=0.3)
    sandboxes.faults("customcrm", seed=7, lost_response_rate=0.3)
    faulty = run_flow()
    injected = sandboxes.stats("chargebee")["faults_injected"]
    assert injected, ("the fault must actually have been injected", faulty.summary, faulty.failed_tasks)
    sandboxes.faults("chargebee", seed=7)
    sandboxes.faults("customcrm", seed=7)
    # whatever failed in the faulty run is retried; one clean run finishes the job
    run_flow()
    r = run_flow()
    assert r.ok
    assert_converged(sandboxes, store)


def test_an_abandoned_create_then_an_edit_neither_duplicates_nor_sticks(sandboxes, store):
    """A run created a Chargebee customer and then failed before update_links recorded the
    link (its retries spent, nobody cleared it). The contact's email is then edited in
    Customcrm. The next scheduled run must link the customer the failed run made: not
    create a second one (whose create would reuse its idempotency key with another body,
    which Chargebee refuses run after run), and not copy it back as a Customcrm twin."""
    all_steps("manual__baseline")
    new = sandboxes.crm(
        "POST", "contacts", json={"FirstName": "Lost", "LastName": "Link", "Email": "lost.link@example.com"}
    )
    made_id = f"crm-{new['Id']}"
    run_id = "manual__abandoned"
    step("extract", run_id, "customcrm")
    step("extract", run_id, "chargebee")
    step("transform", run_id)
    step("upsert", run_id, "chargebee")  # then update_links never runs
    made = [c for c in sandboxes.cb_customers() if c["id"] == made_id]
    assert made and made[0]["email"] == "lost.link@example.com", "the abandoned run made the customer"

    sandboxes.crm("PATCH", f"contacts/{new['Id']}", json={"Email": "found.link@example.com"})
    all_steps("manual__next")
    with store.connect() as conn:
        linked = conn.execute(select(link.c.cb_id).where(link.c.crm_id == new["Id"])).scalars().all()
        failed = conn.execute(
            select(func.count()).where(
                plan.c.run_id == "manual__next", plan.c.cb_status.in_(("rejected", "failed"))
            )
        ).scalar()
    assert linked == [made_id] and failed == 0
    before = writes(sandboxes)
    all_steps("manual__idle")
    assert writes(sandboxes) == before, "after recovery, runs without edits write nothing"

    mine = [c for c in sandboxes.cb_customers() if not c.get("deleted") and "link@example.com" in c["email"]]
    assert [(c["id"], c["email"]) for c in mine] == [(made_id, "found.link@example.com")]
    twins = [c for c in sandboxes.crm_contacts() if (c.get("Email") or "").endswith("link@example.com")]
    assert [c["Id"] for c in twins] == [new["Id"]], twins
    assert_converged(sandboxes, store)


def test_an_abandoned_customcrm_create_is_found_by_its_external_ref(sandboxes, store):
    """The same the other way: the failed run made a Customcrm contact (its ExternalRef
    names the Chargebee customer), then the customer's email was edited in Chargebee."""
    all_steps("manual__baseline")
    cb_new = sandboxes.cb(
        "POST", "customers", data={"first_name": "Lost", "last_name": "Ref", "email": "lost.ref@example.com"}
    )["customer"]
    run_id = "manual__abandoned"
    step("extract", run_id, "customcrm")
    step("extract", run_id, "chargebee")
    step("transform", run_id)
    step("upsert", run_id, "customcrm")  # then update_links never runs
    made = [c for c in sandboxes.crm_contacts() if c.get("ExternalRef") == cb_new["id"]]
    assert len(made) == 1 and made[0]["Email"] == "lost.ref@example.com", "the abandoned run made the contact"

    # an edit made later than the create, as the next run's newest_wins sees it: the pair
    # has no base yet, and Chargebee's updated_at counts whole seconds
    time.sleep(1.1)
    sandboxes.cb("POST", f"customers/{cb_new['id']}", data={"email": "found.ref@example.com"})
    all_steps("manual__next")
    with store.connect() as conn:
        linked = conn.execute(select(link.c.crm_id).where(link.c.cb_id == cb_new["id"])).scalars().all()
    assert linked == [made[0]["Id"]]
    before = writes(sandboxes)
    all_steps("manual__idle")
    assert writes(sandboxes) == before, "after recovery, runs without edits write nothing"

    contacts = [c for c in sandboxes.crm_contacts() if (c.get("Email") or "").endswith("ref@example.com")]
    assert [(c["Id"], c["Email"]) for c in contacts] == [(made[0]["Id"], "found.ref@example.com")]
    twins = [
        c for c in sandboxes.cb_customers() if not c.get("deleted") and c["email"].endswith("ref@example.com")
    ]
    assert [c["id"] for c in twins] == [cb_new["id"]], twins
    assert_converged(sandboxes, store)
