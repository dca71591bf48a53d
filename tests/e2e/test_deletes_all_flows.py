"""A delete on either side follows each flow's policy (all flows ship with `unlink`)."""

from __future__ import annotations

import pytest
from crmsync.store.schema import audit, link
from sqlalchemy import select

from tests.e2e.test_contact_customer import writes

pytestmark = pytest.mark.e2e

CRM_RESOURCE = {
    "customer_business_entity": "customers",
    "product_item": "products",
    "quote_order": "quotes",
    "user_order": "users",
}


@pytest.mark.parametrize("flow", sorted(CRM_RESOURCE))
def test_a_customcrm_delete_unlinks_and_leaves_chargebee_alone(flow, run_flow, sandboxes, store):
    assert run_flow(flow).ok
    with store.connect() as conn:
        crm_id, _ = conn.execute(select(link.c.crm_id, link.c.cb_id).where(link.c.flow == flow)).first()
    sandboxes.crm("DELETE", f"{CRM_RESOURCE[flow]}/{crm_id}")
    before = writes(sandboxes)["chargebee"]
    r = run_flow(flow)
    assert r.ok, r.summary
    assert r.summary["unlinked"] >= 1
    assert writes(sandboxes)["chargebee"] == before, "unlink never writes to Chargebee"
    with store.connect() as conn:
        assert conn.execute(select(link).where(link.c.flow == flow, link.c.crm_id == crm_id)).first() is None
        assert conn.execute(select(audit).where(audit.c.kind == "unlink", audit.c.crm_id == crm_id)).first()


def test_a_chargebee_item_delete_unlinks_the_product(run_flow, sandboxes, store):
    assert run_flow("product_item").ok
    with store.connect() as conn:
        crm_id, cb_id = conn.execute(
            select(link.c.crm_id, link.c.cb_id).where(link.c.flow == "product_item")
        ).first()
    sandboxes.cb("POST", f"items/{cb_id}/delete")
    r = run_flow("product_item")
    assert r.ok and r.summary["unlinked"] == 1, r.summary
    assert sandboxes.crm("GET", f"products/{crm_id}")["Id"] == crm_id
