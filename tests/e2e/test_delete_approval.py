"""Delete policy ``approve`` against the real sandboxes (issue 14 item 1).

A delete is held for a person: runs write nothing and keep the link until someone
decides (``crmsync.store.approvals.decide_delete``, which the Sync page calls); approved,
the next run deletes the partner as ``propagate``; rejected, it ends the link as
``unlink`` and keeps the partner; an undelete in the meantime drops the held delete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from crmsync.store.approvals import decide_delete, pending_approvals
from crmsync.store.schema import audit, link, quarantine
from sqlalchemy import select

from tests.e2e.test_contact_customer import writes

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FLOW = "contact_customer"


@pytest.fixture
def approving(dags: dict[str, Any], store: Any, sandboxes: Any, tmp_path: Path) -> Any:
    """contact_customer with ``approve`` for deletes on both sides; returns ``run(**conf)``."""
    from crmsync.flows.factory import build_dag

    from scripts.runner import run_flow as _run

    doc = yaml.safe_load((ROOT / "include/mappings/contact_customer.yaml").read_text())
    doc["delete"] = {"on_customcrm_delete": "approve", "on_chargebee_delete": "approve"}
    path = tmp_path / "contact_customer.yaml"
    path.write_text(yaml.safe_dump(doc))
    dag = build_dag(path)
    return lambda **conf: _run(dag, conf)


def _pairs(store: Any) -> list[tuple[str, str]]:
    with store.connect() as conn:
        rows = conn.execute(
            select(link.c.crm_id, link.c.cb_id).where(link.c.flow == FLOW).order_by(link.c.id)
        )
        return [(c, k) for c, k in rows]


def _linked(store: Any, crm_id: str) -> bool:
    return any(c == crm_id for c, _ in _pairs(store))


def _audit(store: Any, kind: str, crm_id: str) -> list[dict[str, Any]]:
    with store.connect() as conn:
        rows = conn.execute(select(audit.c.detail).where(audit.c.kind == kind, audit.c.crm_id == crm_id))
        return [json.loads(d) for (d,) in rows]


def _held(store: Any) -> dict[tuple[str, str], str]:
    with store.connect() as conn:
        rows = conn.execute(select(quarantine.c.side, quarantine.c.record_id, quarantine.c.kind))
        return {(s, r): k for s, r, k in rows if k in ("approval", "approved", "declined")}


def _live_customer(sandboxes: Any, cb_id: str) -> bool:
    return any(c["id"] == cb_id and not c.get("deleted") for c in sandboxes.cb_customers())


def test_a_held_delete_waits_then_is_approved_or_rejected(approving, sandboxes, store):
    assert approving().ok
    (a_crm, a_cb), (b_crm, b_cb), (c_crm, c_cb) = _pairs(store)[:3]
    for crm_id in (a_crm, b_crm, c_crm):
        sandboxes.crm("DELETE", f"contacts/{crm_id}")

    # held: nothing written in Chargebee, every link kept, run after run
    for attempt in (1, 2):
        before = writes(sandboxes)
        r = approving()
        assert r.ok, r.failed_tasks
        assert writes(sandboxes)["chargebee"] == before["chargebee"], "a held delete wrote to Chargebee"
        assert r.summary["approvals_waiting"] == 3 and r.summary["deleted"]["chargebee"] == 0, r.summary
        assert r.summary["unlinked"] == 0
        assert all(_linked(store, c) for c in (a_crm, b_crm, c_crm)), attempt
        assert _held(store) == {("customcrm", c): "approval" for c in (a_crm, b_crm, c_crm)}
    reasons = {p.record_id: p.reason for p in pending_approvals(store, FLOW)}
    assert f"Customcrm contact {a_crm} was deleted in Customcrm" in reasons[a_crm]
    assert f"delete of Chargebee customer {a_cb}" in reasons[a_crm] and "Sync page" in reasons[a_crm]
    assert any("approval" in p["kind"] for p in r.summary["problems"])
    assert all(_live_customer(sandboxes, k) for k in (a_cb, b_cb, c_cb))

    # a decides yes, b no; c is restored in Customcrm before anyone decides
    assert decide_delete(store, FLOW, "customcrm", a_crm, approve=True, by="alice")
    assert decide_delete(store, FLOW, "customcrm", b_crm, approve=False, by="bob")
    sandboxes.crm("POST", f"contacts/{c_crm}/restore")
    r = approving()
    assert r.ok, r.failed_tasks
    assert r.summary["deleted"]["chargebee"] == 1 and r.summary["unlinked"] == 1, r.summary
    assert r.summary["approvals_waiting"] == 0
    assert _held(store) == {}
    assert not _linked(store, a_crm) and not _linked(store, b_crm) and _linked(store, c_crm)
    (approved,) = _audit(store, "delete", a_crm)
    assert approved["approved_by"] == "alice"
    (rejected,) = _audit(store, "unlink", b_crm)
    assert rejected["rejected_by"] == "bob"
    assert _audit(store, "delete", c_crm) == [] and _audit(store, "unlink", c_crm) == []
    # Chargebee schedules the approved delete and purges the customer minutes later
    requests.post(f"{sandboxes.cb_url}/_sandbox/clock", json={"advance": 301}, timeout=10).raise_for_status()
    assert not any(c["id"] == a_cb for c in sandboxes.cb_customers())
    assert _live_customer(sandboxes, b_cb) and _live_customer(sandboxes, c_cb)

    # and then: idle (the purge's event is no news), nothing re-created, nothing held
    r = approving()
    assert r.ok and r.summary["deleted"] == {"customcrm": 0, "chargebee": 0}, r.summary
    before = writes(sandboxes)
    r = approving()
    assert r.ok and writes(sandboxes) == before, r.summary
    assert r.summary["created"] == {"customcrm": 0, "chargebee": 0} and _held(store) == {}


def test_an_approved_chargebee_delete_deletes_the_contact(approving, sandboxes, store):
    assert approving().ok
    crm_id, cb_id = _pairs(store)[0]
    sandboxes.cb("POST", f"customers/{cb_id}/delete")
    requests.post(f"{sandboxes.cb_url}/_sandbox/clock", json={"advance": 301}, timeout=10).raise_for_status()
    before = writes(sandboxes)
    r = approving()
    assert r.ok and r.summary["approvals_waiting"] == 1, r.summary
    assert writes(sandboxes)["customcrm"] == before["customcrm"]
    assert _held(store) == {("chargebee", cb_id): "approval"} and _linked(store, crm_id)
    assert not decide_delete(
        store, FLOW, "customcrm", crm_id, approve=True, by="alice"
    )  # keyed by the deleted
    assert decide_delete(store, FLOW, "chargebee", cb_id, approve=True, by="alice")
    r = approving()
    assert r.ok and r.summary["deleted"]["customcrm"] == 1, r.summary
    assert [c["Deleted"] for c in sandboxes.crm_contacts() if c["Id"] == crm_id] == [True]
    assert not _linked(store, crm_id) and _held(store) == {}
    (approved,) = _audit(store, "delete", crm_id)
    assert approved["approved_by"] == "alice"
