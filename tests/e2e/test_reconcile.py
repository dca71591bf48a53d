"""The reconciliation report end to end (issue 14 item 7): a reconcile run against the real
sandboxes names what a sync has not settled, and writes nothing anywhere."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import requests
from crmsync.store.schema import link, plan, quarantine, watermark
from sqlalchemy import select

from tests.e2e.test_contact_customer import writes

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def _rows(store: Any, table: Any) -> list[tuple[Any, ...]]:
    with store.connect() as conn:
        return [tuple(r) for r in conn.execute(select(table).order_by(*table.primary_key.columns))]


def _store_state(store: Any) -> dict[str, Any]:
    return {t.name: _rows(store, t) for t in (link, watermark, quarantine)}


def _a_linked_pair(store: Any) -> tuple[str, str]:
    with store.connect() as conn:
        crm_id, cb_id = conn.execute(
            select(link.c.crm_id, link.c.cb_id).where(link.c.flow == "contact_customer").order_by(link.c.id)
        ).first()
    return str(crm_id), str(cb_id)


def _behind_the_syncs_back(sandboxes: Any, cb_id: str) -> None:
    """A Chargebee edit with no new version, updated_at or event (an import, a support
    fix): no incremental extract reads it."""
    requests.post(
        f"{sandboxes.cb_url}/_sandbox/records/customers",
        json={"records": [{"id": cb_id, "phone": "+47 555 0199"}], "touch": False, "emit": False},
        timeout=10,
    ).raise_for_status()


def test_reconcile_names_drift_duplicates_and_unlinked_records_and_writes_nothing(
    run_flow, sandboxes, store, tmp_path, capsys
):
    assert run_flow().ok
    crm_id, cb_id = _a_linked_pair(store)
    email = sandboxes.crm("GET", f"contacts/{crm_id}")["Email"]
    _behind_the_syncs_back(sandboxes, cb_id)
    twin = sandboxes.crm("POST", "contacts", json={"FirstName": "Twin", "Email": email})
    loner = sandboxes.cb(
        "POST", "customers", data={"first_name": "Lone", "email": "lone.reconcile@example.com"}
    )
    loner_id = loner["customer"]["id"]

    before, state = writes(sandboxes), _store_state(store)
    r = run_flow(reconcile=True)
    assert r.ok, (r.failed_tasks, r.failures)

    # nothing written: no API write, no link, no watermark, no quarantine entry, no plan row
    assert writes(sandboxes) == before
    assert _store_state(store) == state
    with store.connect() as conn:
        assert conn.execute(select(plan.c.id).where(plan.c.run_id == r.run_id)).first() is None

    report = r.summary["reconciliation"]
    assert r.summary["reconcile"] is True
    diff = [
        d for d in report["differences"] if (d["crm_id"], d["cb_id"], d["field"]) == (crm_id, cb_id, "phone")
    ]
    assert diff, report["differences"]
    assert diff[0]["chargebee"] == "+47 555 0199" and diff[0]["unseen"] == ["chargebee"]
    assert diff[0]["verdict"] == "to_customcrm"
    dupes = {(d["side"], tuple(d["ids"])) for d in report["duplicates"]}
    assert ("customcrm", tuple(sorted([crm_id, twin["Id"]]))) in dupes, report["duplicates"]
    unlinked = {(u["side"], u["id"]) for u in report["unlinked"]}
    assert {("customcrm", twin["Id"]), ("chargebee", loner_id)} <= unlinked, report["unlinked"]
    counts = report["counts"]
    assert counts["unseen_edits"] >= 1 and counts["duplicate_keys"]["customcrm"] >= 1
    assert counts["linked_pairs"] == len(state["crmsync_link"])

    # the report's remedy for an edit without a new version: a full resync settles it (an
    # incremental run may or may not re-read the record: only inside its overlap window)
    report_run = run_flow(reconcile=True)
    assert run_flow(full_resync=True).ok
    settled = run_flow(reconcile=True)
    assert not any(
        (d["crm_id"], d["field"]) == (crm_id, "phone")
        for d in settled.summary["reconciliation"]["differences"]
    ), settled.summary["reconciliation"]["differences"]
    again = report_run

    # make reconcile: the JSON file it writes and the lines it prints
    spec = importlib.util.spec_from_file_location("run_flows", ROOT / "scripts" / "run_flows.py")
    assert spec is not None and spec.loader is not None
    run_flows = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_flows)
    run_flows._print_reconciliation(again, tmp_path)
    out = capsys.readouterr().out
    path = Path(out.strip().splitlines()[-1].removeprefix("reconciliation report: "))
    saved = json.loads(path.read_text())
    assert (
        saved["flow"] == "contact_customer" and saved["counts"] == again.summary["reconciliation"]["counts"]
    )
    assert f"differs Customcrm contact {crm_id} ⇄ Chargebee customer {cb_id}: phone" in out


def test_every_flow_dag_has_the_reconcile_param_off_by_default_and_described(dags):
    for dag in dags.values():
        param = dag.params.get_param("reconcile")
        assert param.value is False and param.schema.get("type") == "boolean", dag.dag_id
        assert "nothing" in (param.description or ""), dag.dag_id
        assert "`reconcile`" in (dag.doc_md or ""), dag.dag_id
