"""Issue 11 items 6 and 4 end to end, against both sandboxes and real DAG runs.

* A clear is an edit: a Phone cleared on a linked contact is cleared on its customer,
  and a phone cleared on a customer is cleared on its contact (and a billing line through
  update_billing_info); then nothing more is written.
* A linked contact deleted under policy unlink is reported once, naming it and saying
  that its link was ended by the policy, not "deleted before it was ever linked" in every
  later run.
* An order whose creator is not a Customcrm user says who is missing (its created_by)
  and what a person can do, not "its owner_id (id ord_...) ... retried next run".
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from crmsync.store.schema import audit, link
from sqlalchemy import select

from tests.e2e.test_contact_customer import writes
from tests.e2e.test_order_flows import ALL

pytestmark = pytest.mark.e2e


def linked_with_phone(sandboxes: Any, store: Any) -> list[tuple[str, str]]:
    """Linked pairs whose contact and customer both hold the same phone and city."""
    crm = {c["Id"]: c for c in sandboxes.crm_contacts() if not c.get("Deleted")}
    cb = {c["id"]: c for c in sandboxes.cb_customers() if not c.get("deleted")}
    with store.connect() as conn:
        links = conn.execute(
            select(link.c.crm_id, link.c.cb_id).where(link.c.flow == "contact_customer").order_by(link.c.id)
        ).all()
    return [
        (c, k)
        for c, k in links
        if c in crm
        and k in cb
        and crm[c].get("Phone")
        and crm[c]["Phone"] == cb[k].get("phone")
        and crm[c].get("City")
        and crm[c]["City"] == (cb[k].get("billing_address") or {}).get("city")
    ]


def test_a_clear_is_an_edit_in_both_directions(run_flow, sandboxes, store):
    assert run_flow().ok
    pairs = linked_with_phone(sandboxes, store)
    assert len(pairs) >= 2, "the seed must have linked pairs with a phone and a city"
    (crm_a, cb_a), (crm_b, cb_b) = pairs[:2]

    sandboxes.crm("PATCH", f"contacts/{crm_a}", json={"Phone": None, "City": None})
    sandboxes.cb("POST", f"customers/{cb_b}", data={"phone": ""})
    assert "phone" not in sandboxes.cb("GET", f"customers/{cb_b}")["customer"], "the sandbox clears it"

    r = run_flow()
    assert r.ok, r.failed_tasks
    customer = sandboxes.cb("GET", f"customers/{cb_a}")["customer"]
    assert customer.get("phone") is None, "the Phone cleared in Customcrm is cleared in Chargebee"
    assert (customer.get("billing_address") or {}).get("city") is None, "and the City in the billing address"
    assert customer["email"], "nothing else of the customer is touched"
    assert sandboxes.crm("GET", f"contacts/{crm_b}")["Phone"] is None, "the phone cleared in Chargebee too"
    s = r.summary
    assert s["cleared"] == 3, "\n".join(s["cleared_records"])
    assert any(
        line.startswith(f"Customcrm contact {crm_a} ⇄ Chargebee customer {cb_a}: phone was cleared")
        for line in s["cleared_records"]
    ), s["cleared_records"]
    assert any(f"Customcrm contact {crm_b} ⇄" in line for line in s["cleared_records"])

    # converged: the clears are the new base, nothing is echoed or copied back
    before = writes(sandboxes)
    again = run_flow()
    assert again.ok and writes(sandboxes) == before
    assert sandboxes.crm("GET", f"contacts/{crm_a}")["Phone"] is None


def test_a_deleted_linked_contact_is_reported_once_and_truthfully(run_flow, sandboxes, store):
    assert run_flow().ok
    with store.connect() as conn:
        crm_id, cb_id = conn.execute(
            select(link.c.crm_id, link.c.cb_id).where(link.c.flow == "contact_customer").order_by(link.c.id)
        ).first()
    sandboxes.crm("DELETE", f"contacts/{crm_id}")
    first = run_flow()
    assert first.ok and first.summary["unlinked"] == 1
    with store.connect() as conn:
        (detail,) = conn.execute(
            select(audit.c.detail).where(audit.c.kind == "unlink", audit.c.crm_id == crm_id)
        ).one()
    assert json.loads(detail)["reason"].startswith(
        f"Customcrm contact {crm_id} was deleted in Customcrm; its link was ended by the unlink policy "
        f"and Chargebee customer {cb_id} is kept"
    )
    # The next runs read the tombstone again (the extract's overlap window): no news.
    for _ in range(2):
        r = run_flow()
        assert r.ok
        skipped = r.summary["skipped_records"]
        assert not any(crm_id in reason for reason in skipped), skipped
        assert "deleted before it was ever linked" not in skipped, skipped
        assert r.summary["unlinked"] == 0


def test_an_owner_no_run_can_link_says_who_is_missing_and_what_to_do(run_flow, sandboxes, store):
    for flow in ALL:
        assert run_flow(flow).ok, flow
    r = run_flow("order_order")
    assert r.ok
    orders = {
        o["order"]["id"]: o["order"] for o in sandboxes.cb("GET", "orders", params={"limit": 100})["list"]
    }
    pending = [p["reason"] for p in r.summary["problems"] if p["kind"] == "ref_pending"]
    assert pending, "the seed has orders created by people who are no Customcrm users"
    for reason in pending:
        order_id = reason.split("Chargebee order ", 1)[1].split(":", 1)[0]
        made_by = orders[order_id]["created_by"]
        assert reason.startswith(f"Chargebee order {order_id}: its OwnerUserId cannot be set"), reason
        assert f"created in Chargebee by {made_by!r}" in reason, reason
        assert f"create that user in Customcrm with the email {made_by!r}" in reason, reason
        assert "set OwnerUserId on the Customcrm order by hand" in reason, reason
        assert "retried next run" not in reason and f"(id {order_id})" not in reason, reason
