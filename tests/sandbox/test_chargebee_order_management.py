"""The sandbox's ``order_management`` site setting (issue 12).

Every Chargebee site since 2021-10-01 has current order management: orders are generated
from invoices and ``POST /orders``, the manual create of legacy order management, is
refused. The sandbox must never be kinder than Chargebee, so ``current`` is its default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import chargebee
import pytest
from chargebee import Chargebee

from tests.sandbox.conftest import CbSandbox
from tests.sandbox.test_chargebee_sdk import make_client

PAID_INVOICE = {
    "id": "I-1",
    "status": "paid",
    "amount_due": 0,
    "line_items": [{"id": "li-1", "amount": 500, "description": "Box"}],
}


def orders_of(sb: CbSandbox, invoice_id: str) -> list[dict[str, Any]]:
    return [o for o in sb.records("orders") if o.get("invoice_id") == invoice_id]


def test_current_order_management_refuses_the_manual_create_as_chargebee_does(
    chargebee_sandbox: CbSandbox,
) -> None:
    sb = chargebee_sandbox
    sb.put_records("invoices", [dict(PAID_INVOICE, status="posted", amount_due=500)], emit=False)
    resp = sb.api.post("/orders", data={"id": "crm-1", "invoice_id": "I-1"})
    assert resp.status_code == 400
    body = resp.json()
    assert (body["api_error_code"], body["type"], body["http_status_code"]) == (
        "configuration_incompatible",
        "invalid_request",
        400,
    )
    assert "generates orders from invoices" in body["message"]
    assert not orders_of(sb, "I-1"), "a refused create leaves nothing behind"
    assert sb.admin.get("/config").json()["order_management"] == "current"


def test_the_sdk_sees_the_refusal_as_an_invalid_request(chargebee_sandbox: CbSandbox) -> None:
    previous = Chargebee.verify_ca_certs
    Chargebee.verify_ca_certs = False
    try:
        cb = make_client(chargebee_sandbox)
        chargebee_sandbox.put_records("invoices", [PAID_INVOICE], emit=False)
        with pytest.raises(chargebee.InvalidRequestError) as err:
            cb.Order.create({"invoice_id": "I-1"})
        assert err.value.api_error_code == "configuration_incompatible"
    finally:
        Chargebee.verify_ca_certs = previous


def test_legacy_order_management_is_set_through_the_admin_endpoint(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    sb.put_records("invoices", [PAID_INVOICE], emit=False)
    assert (
        sb.admin.post("/config", json={"order_management": "legacy"}).json()["order_management"] == "legacy"
    )
    order = sb.api.post("/orders", data={"id": "crm-1", "invoice_id": "I-1"}).json()["order"]
    assert (order["id"], order["created_by"], order["order_type"]) == (
        "crm-1",
        "full_access_key_v1",
        "manual",
    )
    bad = sb.admin.post("/config", json={"order_management": "manual"})
    assert bad.status_code == 400 and "order_management must be one of" in bad.json()["error"]
    sb.admin.post("/config", json={"order_management": "current"})
    assert sb.api.post("/orders", data={"invoice_id": "I-1"}).status_code == 400


def test_a_paid_invoice_of_the_seed_has_its_order_under_current_only(
    chargebee_sandbox_factory: Any, tmp_path: Path
) -> None:
    seed = {"invoices": [PAID_INVOICE]}
    current = chargebee_sandbox_factory(seed=seed, state_path=tmp_path / "current.json")
    [order] = orders_of(current, "I-1")
    assert (order["created_by"], order["order_type"]) == ("system", "system_generated")
    assert order["document_number"] and order["total"] == 500
    legacy = chargebee_sandbox_factory(
        seed=seed, state_path=tmp_path / "legacy.json", order_management="legacy"
    )
    assert not orders_of(legacy, "I-1"), "legacy sites made orders by hand"
    # a reset reloads the seed under the site's setting
    legacy.admin.post("/config", json={"order_management": "current"})
    legacy.admin.post("/reset", json={})
    assert len(orders_of(legacy, "I-1")) == 1


def test_orders_can_lack_a_number_until_one_is_assigned(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    sb.put_records("invoices", [PAID_INVOICE], emit=False)
    order = sb.admin.post("/invoices/I-1/generate_order", json={"assign_number": False}).json()["order"]
    assert not order.get("document_number") and order["invoice_id"] == "I-1"
    got = sb.api.get(f"/orders/{order['id']}").json()["order"]
    assert "document_number" not in got
    numbered = sb.api.post(f"/orders/{order['id']}/assign_order_number").json()["order"]
    assert numbered["document_number"]
    again = sb.api.post(f"/orders/{order['id']}/assign_order_number").json()["order"]
    assert again["document_number"] == numbered["document_number"], "assigned only if not already assigned"
