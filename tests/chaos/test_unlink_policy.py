"""Delete policy ``unlink``: the link ends and the survivor stays, *and nothing else happens*.

Found by the chaos runs. After an unlink, the survivor is an ordinary unlinked record
again: whenever it is re-read (it changed, or it is inside the extract's overlap
window, which after a sync it always is for a few minutes) the transform treats it as
new and plans a *create* on the side that deleted it:

* a survivor whose pair was linked by match gets a brand-new twin on the deleting
  side: the delete is undone with a new id (policy ``restore`` in disguise);
* a survivor whose twin the sync had created replays that first create (same
  idempotency key across runs), which "succeeds" with the old response: the survivor
  is linked to the deleted record, the next run unlinks it again, and so on, with a
  write and an audit row on every other run of an otherwise idle system;
* once the survivor was edited, the replay is refused (same key, other body), and the
  survivor is quarantined as ``rejected`` with a reason about an idempotency key that
  no person can act on.

These tests say what ``unlink`` promises. Fixed: a survivor is never re-created on the
side that deleted its twin (flows/transform.py checks the unlink audit rows).
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from crmsync.store.schema import audit, link, quarantine
from sqlalchemy import func, select

from tests.e2e.test_contact_customer import writes


def _purge(sandboxes: Any) -> None:
    """Move the Chargebee clock past the purge of the customers deleted so far."""
    requests.post(f"{sandboxes.cb_url}/_sandbox/clock", json={"advance": 301}, timeout=10).raise_for_status()


pytestmark = pytest.mark.e2e


def _links_of(store: Any, *, crm_id: str | None = None, cb_id: str | None = None) -> int:
    cond = link.c.crm_id == crm_id if crm_id else link.c.cb_id == cb_id
    with store.connect() as conn:
        return int(conn.execute(select(func.count()).where(cond)).scalar() or 0)


def test_a_contact_deleted_in_customcrm_is_not_recreated_from_the_chargebee_survivor(
    run_flow, sandboxes, store
):
    assert run_flow().ok
    with store.connect() as conn:
        crm_id, cb_id = conn.execute(
            select(link.c.crm_id, link.c.cb_id).where(~link.c.cb_id.like("crm-%")).order_by(link.c.id)
        ).first()
    email = sandboxes.cb("GET", f"customers/{cb_id}")["customer"]["email"]
    sandboxes.crm("DELETE", f"contacts/{crm_id}")
    assert run_flow().ok  # unlink
    sandboxes.cb("POST", f"customers/{cb_id}", data={"phone": "+47 400 11 222"})  # later, a person edits it
    assert run_flow().ok
    live = [
        c["Id"] for c in sandboxes.crm_contacts() if not c["Deleted"] and (c["Email"] or "").lower() == email
    ]
    assert live == [], f"policy unlink, yet Customcrm has a new contact for {email}: {live}"


def test_after_an_unlink_idle_runs_write_nothing_and_link_nothing(run_flow, sandboxes, store):
    contact = sandboxes.crm("POST", "contacts", json={"FirstName": "Una", "Email": "una.link@chaos.example"})
    assert run_flow().ok  # creates crm-<Id> in Chargebee
    cb_id = f"crm-{contact['Id']}"
    assert _links_of(store, cb_id=cb_id) == 1
    sandboxes.cb("POST", f"customers/{cb_id}/delete")
    _purge(sandboxes)  # Chargebee purges a deleted customer minutes later (customer_deleted)
    assert run_flow().ok  # unlink: the contact stays, the link ends
    assert _links_of(store, crm_id=contact["Id"]) == 0
    before = writes(sandboxes)
    for _ in range(2):  # nothing changed anywhere
        assert run_flow().ok
        assert _links_of(store, crm_id=contact["Id"]) == 0, "the survivor was linked to the deleted customer"
    assert writes(sandboxes) == before, "idle runs after an unlink wrote (replayed the first create)"
    with store.connect() as conn:
        unlinks = conn.execute(
            select(func.count()).where(audit.c.kind == "unlink", audit.c.crm_id == contact["Id"])
        ).scalar()
    assert unlinks == 1


def test_editing_the_survivor_after_an_unlink_does_not_quarantine_it(run_flow, sandboxes, store):
    contact = sandboxes.crm(
        "POST", "contacts", json={"FirstName": "Vera", "Email": "vera.link@chaos.example"}
    )
    assert run_flow().ok
    sandboxes.cb("POST", f"customers/crm-{contact['Id']}/delete")
    _purge(sandboxes)  # Chargebee purges a deleted customer minutes later (customer_deleted)
    assert run_flow().ok  # unlink
    sandboxes.crm("PATCH", f"contacts/{contact['Id']}", json={"Phone": "+47 400 33 444"})
    r = run_flow()
    with store.connect() as conn:
        held = conn.execute(
            select(quarantine.c.kind, quarantine.c.reason).where(quarantine.c.record_id == contact["Id"])
        ).all()
    assert held == [], f"the survivor of an unlink was held: {held}"
    assert r.summary is not None and r.summary["failed"] == {"customcrm": 0, "chargebee": 0}, r.summary
