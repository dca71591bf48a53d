"""The official Chargebee Python SDK (v3) against the sandbox.

The SDK is the reference client: if it can drive the sandbox, so can anything written
to Chargebee's documentation. It builds ``{protocol}://{site}.{chargebee_domain}/api/v2``
and only speaks plain HTTP when the *class* attribute ``Chargebee.verify_ca_certs`` is
False, so the fixture uses ``site="127"`` + ``chargebee_domain="0.0.1:<port>"`` (giving
``http://127.0.0.1:<port>/api/v2``) and flips ``verify_ca_certs`` for the test only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import chargebee
import pytest
from chargebee import Chargebee
from chargebee.retry_config import RetryConfig

from tests.sandbox.conftest import CB_API_KEY, T0, CbSandbox


def make_client(sb: CbSandbox, api_key: str = CB_API_KEY) -> Chargebee:
    port = sb.server.server_address[1]
    return Chargebee(api_key=api_key, site="127", chargebee_domain=f"0.0.1:{port}", protocol="http")


@pytest.fixture
def cb(chargebee_sandbox: CbSandbox) -> Iterator[Chargebee]:
    previous = Chargebee.verify_ca_certs
    Chargebee.verify_ca_certs = False
    try:
        yield make_client(chargebee_sandbox)
    finally:
        Chargebee.verify_ca_certs = previous


def list_all(fetch: Any, params: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    offset = None
    while True:
        page = fetch({**params, **({"offset": offset} if offset else {})})
        out.extend(page.list)
        offset = page.next_offset
        if not offset:
            return out


# ============================================================================ customers


def test_sdk_customer_create_update_billing_info_list_delete(
    cb: Chargebee, chargebee_sandbox: CbSandbox
) -> None:
    created = cb.Customer.create(
        {
            "id": "sdk-1",
            "first_name": "Grace",
            "last_name": "Hopper",
            "email": "grace@example.com",
            "company": "Navy",
            "meta_data": {"crm_id": "C-9"},
            "billing_address": {"line1": "1 Pier", "city": "Arlington", "country": "US", "zip": "22201"},
        }
    )
    assert created.customer.id == "sdk-1"
    assert created.customer.meta_data == {"crm_id": "C-9"}
    assert created.customer.billing_address.city == "Arlington"
    assert created.customer.deleted is False

    chargebee_sandbox.clock.advance(5)
    updated = cb.Customer.update(
        "sdk-1", {"company": "US Navy", "phone": "+1 555", "meta_data": {"crm_id": "C-10"}}
    )
    assert updated.customer.company == "US Navy"
    assert updated.customer.phone == "+1 555"
    assert updated.customer.meta_data == {"crm_id": "C-10"}
    assert updated.customer.updated_at == int(T0) + 5
    assert updated.customer.resource_version > created.customer.resource_version

    billed = cb.Customer.update_billing_info(
        "sdk-1", {"billing_address": {"line1": "2 Dock", "city": "Norfolk", "country": "US"}}
    )
    assert billed.customer.billing_address.line1 == "2 Dock"
    assert billed.customer.billing_address.zip is None, "not passed again -> removed (assignment)"

    for i in range(14):
        cb.Customer.create({"id": f"bulk-{i:02d}", "email": f"bulk{i}@example.com"})
    everything = list_all(cb.Customer.list, {"limit": 10, "sort_by": {"asc": "updated_at"}})
    assert len(everything) == 15
    assert len({e.customer.id for e in everything}) == 15
    page = cb.Customer.list({"limit": 10})
    assert len(page.list) == 10 and page.next_offset

    by_email = cb.Customer.list({"email": {"is": "bulk3@example.com"}})
    assert [e.customer.id for e in by_email.list] == ["bulk-03"]
    by_ids = cb.Customer.list({"id": {"in": ["bulk-01", "bulk-02", "nope"]}, "limit": 100})
    assert sorted(e.customer.id for e in by_ids.list) == ["bulk-01", "bulk-02"]
    recent = cb.Customer.list({"updated_at": {"after": int(T0)}, "sort_by": {"asc": "updated_at"}})
    assert recent.list[0].customer.id == "sdk-1"

    deleted = cb.Customer.delete("sdk-1")
    assert deleted.customer.deleted is False, "scheduled: purged minutes later (test_customer_deletion.py)"
    chargebee_sandbox.clock.advance(300)
    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Customer.retrieve("sdk-1")
    assert err.value.http_status_code == 404
    assert err.value.api_error_code == "resource_not_found"
    listed = list_all(cb.Customer.list, {"limit": 100, "include_deleted": True, "id": {"is": "sdk-1"}})
    assert listed == [], "a purged customer is gone from lists, include_deleted too"


def test_sdk_validation_errors(cb: Chargebee) -> None:
    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Customer.create({"email": "not-an-email"})
    assert (err.value.http_status_code, err.value.api_error_code, err.value.param) == (
        400,
        "param_wrong_value",
        "email",
    )
    cb.Customer.create({"id": "v"})
    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Customer.update("v", {"billing_address": {"city": "Oslo"}})  # type: ignore[typeddict-unknown-key]
    assert err.value.param == "billing_address[city]"
    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Customer.create({"id": "v"})
    assert err.value.api_error_code == "duplicate_entry"
    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Customer.list({"limit": 101})
    assert err.value.param == "limit"


def test_sdk_auth_error(chargebee_sandbox: CbSandbox, cb: Chargebee) -> None:
    bad = make_client(chargebee_sandbox, api_key="wrong")
    with pytest.raises(chargebee.APIError) as err:
        bad.Customer.list()
    assert err.value.http_status_code == 401
    assert err.value.api_error_code == "api_authentication_failed"
    assert not isinstance(err.value, chargebee.InvalidRequestError)


def test_sdk_idempotency_header(cb: Chargebee, chargebee_sandbox: CbSandbox) -> None:
    headers = {"chargebee-idempotency-key": "sdk-key-1"}
    first = cb.Customer.create({"first_name": "Once"}, headers)
    again = cb.Customer.create({"first_name": "Once"}, headers)
    assert first.is_idempotency_replayed is False
    assert again.is_idempotency_replayed is True
    assert again.customer.id == first.customer.id
    assert len(chargebee_sandbox.records("customers")) == 1


def test_sdk_retry_after_lost_response_creates_once(cb: Chargebee, chargebee_sandbox: CbSandbox) -> None:
    """With retries on, the SDK adds an idempotency key, so a lost answer never duplicates."""
    cb.update_retry_config(RetryConfig(enabled=True, max_retries=3, delay_ms=10))
    chargebee_sandbox.faults(lost_response_rate=1.0, lost_response_mode="500", max_faults=1)
    result = cb.Customer.create({"first_name": "Exactly once"})
    assert result.is_idempotency_replayed is True
    assert [r["id"] for r in chargebee_sandbox.records("customers")] == [result.customer.id]


def test_sdk_retries_a_429(cb: Chargebee, chargebee_sandbox: CbSandbox) -> None:
    # chargebee 3.29 looks for ``err.response_headers`` while APIError stores
    # ``http_headers``, so it falls back to its own delay instead of Retry-After.
    cb.update_retry_config(RetryConfig(enabled=True, max_retries=2, delay_ms=10))
    chargebee_sandbox.faults(rate_429=1.0, max_faults=1)
    assert cb.Customer.list().list == []
    assert chargebee_sandbox.stats()["by_endpoint"]["GET /api/v2/customers"] == {"429": 1, "200": 1}


# ============================================================================ product catalog


def test_sdk_item_families_and_items(cb: Chargebee, chargebee_sandbox: CbSandbox) -> None:
    fam = cb.ItemFamily.create({"id": "hardware", "name": "Hardware", "description": "Boxes"})
    assert fam.item_family.status == "active"
    assert (
        cb.ItemFamily.update("hardware", {"description": "Shiny boxes"}).item_family.description
        == "Shiny boxes"
    )

    item = cb.Item.create(
        {
            "id": "router-x",
            "name": "Router X",
            "type": "charge",
            "item_family_id": "hardware",
            "is_shippable": True,
            "unit": "piece",
            "metadata": {"sku": "RX-1"},
        }
    )
    assert item.item.status == "active"
    assert item.item.external_name == "Router X"
    assert item.item.metadata == {"sku": "RX-1"}
    assert item.item.is_shippable is True
    cb.Item.create({"id": "plan-basic", "name": "Basic", "type": "plan", "item_family_id": "hardware"})

    chargebee_sandbox.clock.advance(3)
    upd = cb.Item.update("router-x", {"external_name": "Router X (2025)", "description": "Fast"})
    assert upd.item.external_name == "Router X (2025)"
    assert upd.item.updated_at == int(T0) + 3
    archived = cb.Item.update("router-x", {"status": "archived"})
    assert archived.item.status == "archived" and archived.item.archived_at == int(T0) + 3

    charges = cb.Item.list({"type": {"is": "charge"}, "item_family_id": {"is": "hardware"}})
    assert [e.item.id for e in charges.list] == ["router-x"]
    assert {e.item.id for e in cb.Item.list({"sort_by": {"asc": "updated_at"}}).list} == {
        "router-x",
        "plan-basic",
    }
    assert cb.Item.retrieve("plan-basic").item.item_applicability == "all"

    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Item.create({"id": "bad", "name": "Bad", "type": "gadget", "item_family_id": "hardware"})
    assert err.value.param == "type"
    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Item.create({"id": "orphan", "name": "Orphan", "type": "addon", "item_family_id": "nope"})
    assert (err.value.http_status_code, err.value.param) == (404, "item_family_id")
    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Item.create({"id": "dup-name", "name": "router x", "type": "addon", "item_family_id": "hardware"})
    assert (err.value.api_error_code, err.value.param) == ("duplicate_entry", "name")
    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.ItemFamily.delete("hardware")
    assert err.value.api_error_code == "invalid_state_for_request"

    assert cb.Item.delete("router-x").item.status == "deleted"
    cb.Item.delete("plan-basic")
    with pytest.raises(chargebee.InvalidRequestError):
        cb.Item.retrieve("router-x")
    assert cb.Item.list().list == []
    # Item.ListParams has no include_deleted: deleted items are listed through the status filter
    every_status = {"status": {"in": ["active", "archived", "deleted"]}}
    assert {e.item.id for e in cb.Item.list(every_status).list} == {"router-x", "plan-basic"}  # type: ignore[arg-type]
    # A deleted item's id and name can be reused, as in Chargebee.
    again = cb.Item.create(
        {"id": "router-x", "name": "Router X", "type": "charge", "item_family_id": "hardware"}
    )
    assert again.item.status == "active"
    cb.Item.delete("router-x")
    assert cb.ItemFamily.delete("hardware").item_family.status == "deleted"
    assert cb.ItemFamily.list().list == []


# ============================================================================ invoices and orders


@pytest.fixture
def invoice(chargebee_sandbox: CbSandbox, cb: Chargebee) -> dict[str, Any]:
    cb.Customer.create(
        {
            "id": "buyer",
            "email": "buyer@example.com",
            "billing_address": {"line1": "Road 1", "city": "Oslo", "country": "NO"},
        }
    )
    [inv] = chargebee_sandbox.put_records(
        "invoices",
        [
            {
                "id": "INV-1",
                "customer_id": "buyer",
                "line_items": [
                    {
                        "entity_type": "charge_item_price",
                        "entity_id": "router-x-NOK",
                        "description": "Router",
                        "unit_amount": 1500,
                        "quantity": 2,
                    },
                    {"description": "Shipping", "amount": 200},
                ],
            }
        ],
    )
    return inv


def test_admin_invoice_defaults(invoice: dict[str, Any]) -> None:
    assert invoice["status"] == "payment_due"
    assert (invoice["sub_total"], invoice["total"], invoice["amount_due"], invoice["amount_paid"]) == (
        3200,
        3200,
        3200,
        0,
    )
    assert invoice["billing_address"]["city"] == "Oslo"
    assert [li["amount"] for li in invoice["line_items"]] == [3000, 200]


def test_sdk_record_payment_creates_an_order(cb: Chargebee, invoice: dict[str, Any]) -> None:
    partial = cb.Invoice.record_payment(
        "INV-1", {"transaction": {"amount": 1000, "payment_method": "bank_transfer"}}
    )
    assert partial.invoice.status == "payment_due"
    assert partial.invoice.amount_due == 2200
    assert cb.Order.list().list == [], "no order before the invoice is paid"

    paid = cb.Invoice.record_payment(
        "INV-1", {"transaction": {"payment_method": "cash", "reference_number": "R"}}
    )
    assert paid.invoice.status == "paid"
    assert paid.invoice.amount_paid == 3200
    assert paid.transaction.amount == 2200
    orders = cb.Order.list({"invoice_id": {"is": "INV-1"}}).list
    assert len(orders) == 1
    order = orders[0].order
    assert (order.order_type, order.created_by, order.payment_status) == (
        "system_generated",
        "system",
        "paid",
    )
    assert order.customer_id == "buyer" and order.total == 3200
    assert len(order.order_line_items) == 2
    assert order.shipping_address.city == "Oslo"
    assert [o.order.id for o in cb.Order.orders_for_invoice("INV-1").list] == [order.id]

    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Invoice.record_payment("INV-1", {"transaction": {"payment_method": "cash"}})
    assert err.value.api_error_code == "invalid_state_for_request"
    assert cb.Invoice.retrieve("INV-1").invoice.status == "paid"
    assert [e.invoice.id for e in cb.Invoice.list({"status": {"is": "paid"}}).list] == ["INV-1"]


def test_sdk_orders_create_update_cancel_delete(
    cb: Chargebee, chargebee_sandbox: CbSandbox, invoice: dict[str, Any]
) -> None:
    # Order.create is legacy order management's (refused on current sites:
    # tests/sandbox/test_chargebee_order_management.py)
    chargebee_sandbox.admin.post("/config", json={"order_management": "legacy"}).raise_for_status()
    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Order.create({"status": "new"})  # type: ignore[typeddict-item]
    assert err.value.param == "invoice_id"
    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Order.create({"invoice_id": "INV-404"})
    assert (err.value.http_status_code, err.value.param) == (404, "invoice_id")

    created = cb.Order.create(
        {"id": "ORD-1", "invoice_id": "INV-1", "status": "processing", "reference_id": "WMS-1"}
    )
    order = created.order
    assert (order.id, order.status, order.created_by, order.reference_id) == (
        "ORD-1",
        "processing",
        "full_access_key_v1",  # the API key's name, as in Chargebee's docs example
        "WMS-1",
    )
    assert order.order_type == "manual"

    chargebee_sandbox.clock.advance(60)
    line_id = order.order_line_items[0].id
    updated = cb.Order.update(
        "ORD-1",
        {
            "status": "shipped",
            "fulfillment_status": "Shipped by WMS",
            "tracking_id": "TRK-1",
            "tracking_url": "https://track.example.com/TRK-1",
            "batch_id": "B-7",
            "note": "Leave at door",
            "shipped_at": int(T0) + 30,
            "shipping_address": {"line1": "New road 2", "city": "Bergen", "country": "NO"},
            "order_line_items": [{"id": line_id, "status": "shipped", "sku": "RX-1"}],
        },
    ).order
    assert (updated.status, updated.tracking_id, updated.batch_id, updated.shipped_at) == (
        "shipped",
        "TRK-1",
        "B-7",
        int(T0) + 30,
    )
    assert updated.shipping_address.city == "Bergen"
    assert updated.order_line_items[0].status == "shipped" and updated.order_line_items[0].sku == "RX-1"
    assert updated.status_update_at == int(T0) + 60
    assert updated.updated_at == int(T0) + 60

    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Order.update("ORD-1", {"status": "teleported"})  # type: ignore[typeddict-item]
    assert err.value.param == "status"
    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Order.update("ORD-1", {"order_line_items": [{"id": "nope", "status": "shipped"}]})
    assert err.value.param == "order_line_items[id][0]"

    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Order.cancel("ORD-1", {})  # type: ignore[typeddict-item]
    assert err.value.param == "cancellation_reason"
    cancelled = cb.Order.cancel("ORD-1", {"cancellation_reason": "product_not_required"}).order
    assert cancelled.status == "cancelled" and cancelled.cancelled_at == int(T0) + 60
    with pytest.raises(chargebee.InvalidRequestError) as err:
        cb.Order.delete("ORD-1")
    assert err.value.api_error_code == "invalid_state_for_request", "only imported orders can be deleted"

    imported = cb.Order.import_order(
        {
            "id": "IMP-1",
            "invoice_id": "INV-1",
            "status": "delivered",
            "created_at": int(T0) - 86400,
            "order_date": int(T0) - 86400,
            "shipping_date": int(T0) - 86000,
            "delivered_at": int(T0) - 80000,
        }
    ).order
    assert imported.created_at == int(T0) - 86400 and imported.created_by == "import"
    assert cb.Order.delete("IMP-1").order.deleted is True
    with pytest.raises(chargebee.InvalidRequestError):
        cb.Order.retrieve("IMP-1")
    live = {e.order.id for e in cb.Order.list({"limit": 100}).list}
    assert live == {"ORD-1"}
    every = {e.order.id: e.order.deleted for e in cb.Order.list({"include_deleted": True}).list}
    assert every == {"ORD-1": False, "IMP-1": True}


# ============================================================================ events


def test_sdk_events(cb: Chargebee, chargebee_sandbox: CbSandbox) -> None:
    cb.Customer.create({"id": "ev"})
    chargebee_sandbox.clock.advance(10)
    cb.Customer.update("ev", {"first_name": "E"})
    cb.Customer.delete("ev")
    chargebee_sandbox.clock.advance(300)  # the purge: customer_deleted
    cb.ItemFamily.create({"id": "f", "name": "F"})
    events = cb.Event.list({"limit": 100}).list
    assert [e.event.event_type for e in events] == [
        "item_family_created",
        "customer_deleted",
        "customer_changed",
        "customer_created",
    ]
    changed = cb.Event.list(
        {
            "event_type": {"in": ["customer_changed", "customer_deleted"]},
            "occurred_at": {"after": int(T0)},
            "sort_by": {"asc": "occurred_at"},
        }
    ).list
    assert [e.event.event_type for e in changed] == ["customer_changed", "customer_deleted"]
    assert changed[0].event.content["customer"]["first_name"] == "E"
    assert changed[1].event.content["customer"]["deleted"] is True
    one = cb.Event.retrieve(changed[0].event.id).event
    assert one.occurred_at == int(T0) + 10 and one.source == "api"


def test_sdk_business_entity_events(cb: Chargebee, chargebee_sandbox: CbSandbox) -> None:
    """The SDK has no list/retrieve for business entities (only transfers): their changes are
    seen through ``business_entity_*`` events, which the sandbox serves as Chargebee does."""
    sb = chargebee_sandbox
    assert not hasattr(cb.BusinessEntity, "list") and not hasattr(cb.BusinessEntity, "retrieve")
    sb.put_records("business_entities", [{"id": "acme-no", "name": "Acme Norge AS"}])
    sb.clock.advance(5)
    sb.put_records("business_entities", [{"id": "acme-no", "name": "Acme Norway AS"}])
    sb.clock.advance(5)
    sb.admin.post("/records/business_entities/acme-no/delete").raise_for_status()
    cb.Customer.create({"id": "noise"})
    types = [
        chargebee.EventType.BUSINESS_ENTITY_CREATED.value,
        chargebee.EventType.BUSINESS_ENTITY_UPDATED.value,
        chargebee.EventType.BUSINESS_ENTITY_DELETED.value,
    ]
    events = list_all(
        cb.Event.list,
        {
            "limit": 2,
            "event_type": {"in": types},
            "occurred_at": {"after": int(T0) - 1},
            "sort_by": {"asc": "occurred_at"},
        },
    )
    got = [(e.event.event_type, e.event.occurred_at, e.event.content["business_entity"]) for e in events]
    assert [(t, at) for t, at, _ in got] == [
        ("business_entity_created", int(T0)),
        ("business_entity_updated", int(T0) + 5),
        ("business_entity_deleted", int(T0) + 10),
    ]
    created, updated, deleted = (be for _, _, be in got)
    assert created["name"] == "Acme Norge AS" and created["object"] == "business_entity"
    assert updated["name"] == "Acme Norway AS" and updated["deleted"] is False
    assert updated["resource_version"] > created["resource_version"]
    assert deleted["deleted"] is True and deleted["id"] == "acme-no"
    later = cb.Event.list({"event_type": {"in": types}, "occurred_at": {"after": int(T0) + 5}}).list
    assert [e.event.event_type for e in later] == ["business_entity_deleted"]
