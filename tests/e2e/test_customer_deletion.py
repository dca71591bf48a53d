"""Customer deletes as Chargebee makes them: scheduled, then purged minutes later.

Chargebee's "Delete a customer" schedules the deletion ("permanently deleted after a few
minutes") and publishes ``customer_deleted`` when it happens. The strict sandbox shows
nothing until the purge (the customer is listed unchanged) and nothing after it (the
customer is in no list, ``include_deleted`` too), so contact_customer learns of the delete
from the event (``chargebee.delete_events``). These tests move the sandbox clock past the
purge (``customer_purge_seconds``, 300 by default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from crmsync.store.schema import audit, link, quarantine
from sqlalchemy import func, select

from tests.e2e.test_contact_customer import _linked_pair, writes

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PAST_THE_PURGE = 301


def _advance(sandboxes: Any, seconds: float = PAST_THE_PURGE) -> None:
    requests.post(
        f"{sandboxes.cb_url}/_sandbox/clock", json={"advance": seconds}, timeout=10
    ).raise_for_status()


def _admin_customer(sandboxes: Any, cb_id: str) -> dict[str, Any] | None:
    r = requests.get(f"{sandboxes.cb_url}/_sandbox/records/customers/{cb_id}", timeout=10)
    return r.json()["record"] if r.status_code == 200 else None


def _linked(store: Any, cb_id: str) -> Any:
    with store.connect() as conn:
        return conn.execute(select(link.c.crm_id).where(link.c.cb_id == cb_id)).first()


def _audits(store: Any, kind: str, cb_id: str) -> int:
    with store.connect() as conn:
        return int(
            conn.execute(select(func.count()).where(audit.c.kind == kind, audit.c.cb_id == cb_id)).scalar()
            or 0
        )


def _held(store: Any, *ids: str) -> list[Any]:
    """Held records (a reference pending through another flow is the seed's, not a delete's)."""
    with store.connect() as conn:
        return list(
            conn.execute(
                select(quarantine.c.record_id, quarantine.c.reason).where(
                    quarantine.c.record_id.in_(ids), quarantine.c.kind != "ref_pending"
                )
            ).all()
        )


def _contacts_with_email(sandboxes: Any, email: str) -> list[str]:
    return [
        c["Id"]
        for c in sandboxes.crm_contacts()
        if not c.get("Deleted") and (c.get("Email") or "").strip().lower() == email.strip().lower()
    ]


def _no_problem_names(summary: dict[str, Any], *ids: str) -> None:
    """No problem of the run names the records (a reference still pending through another
    flow, ``ref_pending``, is the seed's and not about deletes)."""
    named = [
        p["reason"]
        for p in summary.get("problems", [])
        if p["kind"] != "ref_pending" and any(i in (p["reason"] or "") for i in ids)
    ]
    assert not named, named


def test_a_person_deletes_a_linked_customer_and_the_policy_applies_at_the_purge(run_flow, sandboxes, store):
    assert run_flow().ok
    crm_id, cb_id = _linked_pair(store)
    email = sandboxes.cb("GET", f"customers/{cb_id}")["customer"]["email"]
    sandboxes.cb("POST", f"customers/{cb_id}/delete")  # a person, in Chargebee

    # the pending window: Chargebee shows nothing, so nothing changes and nothing is held
    before = writes(sandboxes)
    r = run_flow()
    assert r.ok, r.failed_tasks
    assert r.summary["unlinked"] == 0 and r.summary["deleted"] == {"customcrm": 0, "chargebee": 0}
    assert writes(sandboxes) == before, "a run in the pending window writes nothing"
    _no_problem_names(r.summary, crm_id, cb_id)
    assert _linked(store, cb_id) is not None and not _held(store, crm_id, cb_id)

    # a Customcrm edit in the window is synced (Chargebee takes it; the purge drops it)
    sandboxes.crm("PATCH", f"contacts/{crm_id}", json={"LastName": "EditedInTheWindow"})
    r = run_flow()
    assert r.ok and r.summary["updated"]["chargebee"] == 1, r.summary
    assert not _held(store, crm_id, cb_id)

    # past the purge: the customer_deleted event is read and the policy (unlink) applies once
    _advance(sandboxes)
    r = run_flow()
    assert r.ok, r.failed_tasks
    assert r.summary["unlinked"] == 1, r.summary
    assert _linked(store, cb_id) is None
    assert _audits(store, "unlink", cb_id) == 1
    contact = sandboxes.crm("GET", f"contacts/{crm_id}")
    assert contact["LastName"] == "EditedInTheWindow", "policy unlink keeps the contact as it is"
    assert sandboxes.cb_customers() and all(c["id"] != cb_id for c in sandboxes.cb_customers())

    # later runs: nothing more, nothing re-created in Chargebee, no second audit
    before = writes(sandboxes)
    again = run_flow()
    assert again.ok and again.summary["unlinked"] == 0
    assert again.summary["created"] == {"customcrm": 0, "chargebee": 0}
    assert writes(sandboxes) == before
    assert _audits(store, "unlink", cb_id) == 1
    assert _contacts_with_email(sandboxes, email) == [crm_id]


def test_the_syncs_own_propagated_delete_is_not_resurrected_in_the_pending_window(
    dags, sandboxes, store, tmp_path
):
    import yaml
    from crmsync.flows.factory import build_dag

    from scripts.runner import run_flow as _run

    doc = yaml.safe_load((ROOT / "include/mappings/contact_customer.yaml").read_text())
    doc["delete"] = {"on_customcrm_delete": "propagate", "on_chargebee_delete": "unlink"}
    path = tmp_path / "contact_customer.yaml"
    path.write_text(yaml.safe_dump(doc))
    dag = build_dag(path)
    assert _run(dag).ok
    crm_id, cb_id = _linked_pair(store)
    email = sandboxes.cb("GET", f"customers/{cb_id}")["customer"]["email"]

    sandboxes.crm("DELETE", f"contacts/{crm_id}")
    r = _run(dag)
    assert r.ok and r.summary["deleted"]["chargebee"] == 1, r.summary
    assert _audits(store, "delete", cb_id) == 1
    # scheduled: still there and listed alive until the purge
    assert sandboxes.cb("GET", f"customers/{cb_id}")["customer"]["deleted"] is False

    # a person edits the pending customer (so every list shows it as changed), then runs,
    # a full resync too: it is not linked again, no contact is re-created, nothing written to it
    sandboxes.cb("POST", f"customers/{cb_id}", data={"first_name": "StillHere"})
    for conf in ({}, {"full_resync": True}):
        before = writes(sandboxes)
        r = _run(dag, conf)
        assert r.ok, (conf, r.failed_tasks)
        assert r.summary["created"] == {"customcrm": 0, "chargebee": 0}, (conf, r.summary)
        assert r.summary["linked_by_match"] == 0 and r.summary["unlinked"] == 0, (conf, r.summary)
        assert writes(sandboxes) == before, conf
        assert _linked(store, cb_id) is None
        assert _contacts_with_email(sandboxes, email) == []
        _no_problem_names(r.summary, cb_id)
        assert not _held(store, cb_id)

    # the purge: its event is no news (the run that deleted it reported it)
    _advance(sandboxes)
    r = _run(dag)
    assert r.ok and r.summary["unlinked"] == 0 and r.summary["deleted"] == {"customcrm": 0, "chargebee": 0}
    assert _admin_customer(sandboxes, cb_id) is None
    assert _audits(store, "delete", cb_id) == 1
    assert _contacts_with_email(sandboxes, email) == []


def test_a_delete_event_read_while_a_list_still_shows_the_customer(run_flow, sandboxes, store):
    """The event wins over a live copy in the same run, and the live copy never re-links later."""
    assert run_flow().ok
    crm_id, cb_id = _linked_pair(store)
    snapshot = _admin_customer(sandboxes, cb_id)
    assert snapshot is not None
    sandboxes.cb("POST", f"customers/{cb_id}/delete")
    _advance(sandboxes)
    assert _admin_customer(sandboxes, cb_id) is None  # purged, customer_deleted published
    # a list that lags behind the purge: the customer listed alive (and as changed) again,
    # without an event (the sandbox's admin upsert stands in for the stale list)
    requests.post(
        f"{sandboxes.cb_url}/_sandbox/records/customers",
        json={"records": [snapshot], "emit": False},
        timeout=10,
    ).raise_for_status()

    r = run_flow()
    assert r.ok, r.failed_tasks
    assert r.summary["unlinked"] == 1, r.summary
    assert _linked(store, cb_id) is None and _audits(store, "unlink", cb_id) == 1
    for _ in range(2):
        before = writes(sandboxes)
        again = run_flow()
        assert again.ok
        assert again.summary["linked_by_match"] == 0 and again.summary["unlinked"] == 0, again.summary
        assert again.summary["created"] == {"customcrm": 0, "chargebee": 0}
        assert writes(sandboxes) == before
        assert _linked(store, cb_id) is None
        assert not _held(store, crm_id, cb_id)
    assert sandboxes.crm("GET", f"contacts/{crm_id}")["Id"] == crm_id


def test_a_write_to_a_linked_customer_that_answers_404_says_why(run_flow, sandboxes, store):
    """A customer gone without a delete the run has read (here wiped from the sandbox with
    its events): the write is dropped as stale with the reason, nothing is held."""
    assert run_flow().ok
    crm_id, cb_id = _linked_pair(store)
    requests.delete(f"{sandboxes.cb_url}/_sandbox/records/customers/{cb_id}", timeout=10).raise_for_status()
    sandboxes.crm("PATCH", f"contacts/{crm_id}", json={"LastName": "AfterThePurge"})
    r = run_flow()
    assert r.ok, r.failed_tasks
    assert r.summary["stale"]["chargebee"] == 1, r.summary
    [reason] = [p["reason"] for p in r.summary["problems"] if p["kind"] == "stale"]
    assert cb_id in reason, reason
    assert "answered 404" in reason and "customer_deleted" in reason and "unlink" in reason, reason
    assert not _held(store, crm_id, cb_id)


def test_restore_re_creates_a_purged_customer_under_its_id_once(dags, sandboxes, store, tmp_path):
    """Policy restore: the purge frees the id, the customer is made again under it, and the
    old customer_deleted event (re-read while inside the extract's window) is about the
    record before it: no loop of deletes and restores."""
    import yaml
    from crmsync.flows.factory import build_dag

    from scripts.runner import run_flow as _run

    doc = yaml.safe_load((ROOT / "include/mappings/contact_customer.yaml").read_text())
    doc["delete"] = {"on_customcrm_delete": "unlink", "on_chargebee_delete": "restore"}
    path = tmp_path / "contact_customer.yaml"
    path.write_text(yaml.safe_dump(doc))
    dag = build_dag(path)
    contact = sandboxes.crm(
        "POST", "contacts", json={"FirstName": "Rita", "Email": "rita.restore@example.com"}
    )
    assert _run(dag).ok
    cb_id = f"crm-{contact['Id']}"
    assert _linked(store, cb_id) is not None
    sandboxes.cb("POST", f"customers/{cb_id}/delete")
    _advance(sandboxes)
    r = _run(dag)
    assert r.ok and r.summary["created"]["chargebee"] == 1, r.summary
    restored = sandboxes.cb("GET", f"customers/{cb_id}")["customer"]
    assert restored["email"] == "rita.restore@example.com" and restored["first_name"] == "Rita"
    assert _linked(store, cb_id) == (contact["Id"],)
    for _ in range(2):
        before = writes(sandboxes)
        again = _run(dag)
        assert again.ok and again.summary["unlinked"] == 0, again.summary
        assert again.summary["created"] == {"customcrm": 0, "chargebee": 0}, again.summary
        assert writes(sandboxes) == before
        assert _linked(store, cb_id) == (contact["Id"],)


def test_delete_events_must_be_the_resources_delete_event(tmp_path):
    import yaml
    from crmsync.mapping.model import MappingError, load_mapping

    doc = yaml.safe_load((ROOT / "include/mappings/contact_customer.yaml").read_text())
    assert load_mapping(ROOT / "include/mappings/contact_customer.yaml").chargebee.delete_events == [
        "customer_deleted"
    ]
    doc["chargebee"]["delete_events"] = ["item_deleted"]
    path = tmp_path / "contact_customer.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises((MappingError, ValueError), match="customer_deleted"):
        load_mapping(path)
