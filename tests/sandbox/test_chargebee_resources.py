"""Chargebee sandbox resources beyond customers, over raw HTTP.

Business entities have no list/retrieve in the official SDK, so the sandbox answers
those 404 and entities are seen through events, customers and transfers (tested here);
so are the admin-side events and the list parameters the crmsync hook sends to every
resource.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.sandbox.conftest import T0, CbSandbox


def event_types(sb: CbSandbox, **params: Any) -> list[str]:
    body = sb.api.get("/events", params={"limit": 100, "sort_by[asc]": "occurred_at", **params}).json()
    return [e["event"]["event_type"] for e in body["list"]]


def test_business_entities_have_no_list_or_retrieve(chargebee_sandbox: CbSandbox) -> None:
    """The official SDK has only create_transfers / get_transfers: the list and the
    retrieve answer 404 with Chargebee's error, like any undeclared operation, and no
    setting serves them (the lenient mode is gone)."""
    sb = chargebee_sandbox
    sb.put_records("business_entities", [{"id": "acme-no", "name": "Acme Norge AS"}])
    assert "strict" not in sb.admin.get("/config").json()
    assert sb.admin.post("/config", json={"strict": False}).status_code == 200  # an unknown key: ignored
    for path in ("/business_entities", "/business_entities/acme-no"):
        refused = sb.api.get(path, params={"limit": 100} if path == "/business_entities" else None)
        assert refused.status_code == 404
        body = refused.json()
        assert body["api_error_code"] == "resource_not_found" and body["http_status_code"] == 404
        assert {"message", "type"} <= set(body)
    # counted under the path asked, so a test can see the request was made and refused
    by_endpoint = sb.stats()["by_endpoint"]
    assert by_endpoint["GET /api/v2/business_entities"] == {"404": 1}
    assert by_endpoint["GET /api/v2/business_entities/acme-no"] == {"404": 1}


def test_transfers_are_listed_with_the_sdk_params(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    sb.put_records("business_entities", [{"id": "be-a", "name": "A"}, {"id": "be-b", "name": "B"}])
    sb.put_records(
        "business_entity_transfers",
        [
            {
                "id": "t1",
                "resource_type": "customer",
                "resource_id": "c1",
                "active_resource_id": "c1",
                "source_business_entity_id": "be-a",
                "destination_business_entity_id": "be-b",
                "reason_code": "correction",
            }
        ],
    )
    page = sb.api.get("/business_entities/transfers", params={"limit": 10, "resource_type[is]": "customer"})
    assert page.status_code == 200, page.text
    [entry] = page.json()["list"]
    assert entry["business_entity_transfer"]["destination_business_entity_id"] == "be-b"
    assert sb.api.get("/business_entities/transfers", params={"include_deleted": "true"}).status_code == 400


def test_business_entities_are_admin_managed_and_seen_through_events(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    [be] = sb.put_records("business_entities", [{"id": "acme-no", "name": "Acme Norge AS"}])
    assert be["status"] == "active" and be["object"] == "business_entity"
    # no create or update in the SDK either
    assert sb.api.post("/business_entities", data={"id": "x", "name": "X"}).status_code == 404
    assert sb.api.post("/business_entities/acme-no", data={"name": "X"}).status_code == 404

    sb.clock.advance(20)
    [edited] = sb.put_records("business_entities", [{"id": "acme-no", "name": "Acme Norway AS"}])
    assert edited["updated_at"] == int(T0) + 20
    sb.put_records("business_entities", [{"id": "acme-no", "deleted": True}])
    assert [r["deleted"] for r in sb.records("business_entities")] == [True]
    assert event_types(sb) == [
        "business_entity_created",
        "business_entity_updated",
        "business_entity_deleted",
    ]
    body = sb.api.get("/events", params={"limit": 100, "sort_by[asc]": "occurred_at"}).json()
    names = [e["event"]["content"]["business_entity"]["name"] for e in body["list"]]
    assert names == ["Acme Norge AS", "Acme Norway AS", "Acme Norway AS"]


def test_customers_get_the_default_business_entity(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    sb.put_records("business_entities", [{"id": "be-1", "name": "One"}, {"id": "be-2", "name": "Two"}])
    plain = sb.api.post("/customers", data={"id": "a"}).json()["customer"]
    assert plain["business_entity_id"] == "be-1"
    chosen = sb.api.post("/customers", data={"id": "b", "business_entity_id": "be-2"}).json()["customer"]
    assert chosen["business_entity_id"] == "be-2"
    bad = sb.api.post("/customers", data={"id": "c", "business_entity_id": "nope"})
    assert bad.status_code == 404 and bad.json()["param"] == "business_entity_id"
    filtered = sb.api.get("/customers", params={"business_entity_id[is]": "be-2"}).json()["list"]
    assert [e["customer"]["id"] for e in filtered] == ["b"]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"name": "No id"}, "id"),
        ({"id": "f"}, "name"),
        ({"id": "f", "name": "x" * 51}, "name"),
        ({"id": "f", "name": "F", "description": "d" * 501}, "description"),
        ({"id": "f", "name": "F", "status": "active"}, "status"),
    ],
)
def test_item_family_validation(chargebee_sandbox: CbSandbox, params: dict[str, str], param: str) -> None:
    resp = chargebee_sandbox.api.post("/item_families", data=params)
    assert resp.status_code == 400 and resp.json()["param"] == param


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"name": "X", "type": "plan", "item_family_id": "fam"}, "id"),
        ({"id": "i", "name": "n" * 101, "type": "plan", "item_family_id": "fam"}, "name"),
        ({"id": "i", "name": "X", "type": "plan"}, "item_family_id"),
        (
            {"id": "i", "name": "X", "type": "plan", "item_family_id": "fam", "is_shippable": "maybe"},
            "is_shippable",
        ),
        ({"id": "i", "name": "X", "type": "plan", "item_family_id": "fam", "metadata": "nope"}, "metadata"),
        (
            {"id": "i", "name": "X", "type": "plan", "item_family_id": "fam", "external_name": "e" * 101},
            "external_name",
        ),
        ({"id": "i", "name": "X", "type": "charge", "item_family_id": "fam", "metered": "true"}, "metered"),
        ({"id": "i", "name": "X", "type": "plan", "item_family_id": "fam", "unit": "u" * 31}, "unit"),
    ],
)
def test_item_validation(chargebee_sandbox: CbSandbox, params: dict[str, str], param: str) -> None:
    chargebee_sandbox.api.post("/item_families", data={"id": "fam", "name": "Fam"})
    resp = chargebee_sandbox.api.post("/items", data=params)
    assert resp.status_code == 400 and resp.json()["param"] == param


def test_item_unit_is_at_most_30_characters(chargebee_sandbox: CbSandbox) -> None:
    """Chargebee's items API: unit, string, max 30 chars."""
    sb = chargebee_sandbox
    sb.api.post("/item_families", data={"id": "fam", "name": "Fam"})
    made = sb.api.post(
        "/items", data={"id": "i", "name": "X", "type": "plan", "item_family_id": "fam", "unit": "u" * 30}
    )
    assert made.status_code == 200 and made.json()["item"]["unit"] == "u" * 30
    refused = sb.api.post("/items/i", data={"unit": "u" * 31})
    assert refused.status_code == 400 and refused.json()["param"] == "unit"


def test_items_list_deleted_ones_by_status_not_include_deleted(chargebee_sandbox: CbSandbox) -> None:
    """Item.ListParams has no include_deleted: the sandbox refuses it as an unsupported
    filter (400 param_not_allowed, like the transfers list); deleted items are listed when
    the status filter lets them through (status is active, archived or deleted)."""
    sb = chargebee_sandbox
    sb.api.post("/item_families", data={"id": "fam", "name": "Fam"})
    for rid, status in (("a", "active"), ("b", "archived"), ("d", "active")):
        sb.api.post("/items", data={"id": rid, "name": rid.upper(), "type": "plan", "item_family_id": "fam"})
        if status != "active":
            sb.api.post(f"/items/{rid}", data={"status": status}).raise_for_status()
    sb.api.post("/items/d/delete").raise_for_status()

    def ids(params: dict[str, Any]) -> dict[str, str]:
        resp = sb.api.get("/items", params={"limit": 100, **params})
        assert resp.status_code == 200, resp.text
        return {e["item"]["id"]: e["item"]["status"] for e in resp.json()["list"]}

    for value in ("true", "false"):
        refused = sb.api.get("/items", params={"include_deleted": value})
        assert refused.status_code == 400
        body = refused.json()
        assert (body["api_error_code"], body["param"], body["http_status_code"]) == (
            "param_not_allowed",
            "include_deleted",
            400,
        )
        assert body["type"] == "invalid_request" and body["message"]
    assert ids({}) == {"a": "active", "b": "archived"}
    every = {"a": "active", "b": "archived", "d": "deleted"}
    assert ids({"status[in]": '["active","archived","deleted"]'}) == every
    assert ids({"status[in]": "['active', 'archived', 'deleted']"}) == every, "the Python SDK's str(list)"
    assert ids({"status[is]": "deleted"}) == {"d": "deleted"}
    assert ids({"status[is_not]": "active"}) == {"b": "archived", "d": "deleted"}
    assert ids({"status[in]": '["active","archived"]'}) == {"a": "active", "b": "archived"}
    deleted = sb.api.get("/items", params={"status[is]": "deleted"}).json()["list"][0]["item"]
    assert deleted["deleted"] is True


def test_item_update_rules(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    sb.api.post("/item_families", data={"id": "fam", "name": "Fam"})
    sb.api.post("/item_families", data={"id": "fam2", "name": "Fam 2"})
    sb.api.post("/items", data={"id": "i", "name": "Item", "type": "addon", "item_family_id": "fam"})
    assert sb.api.post("/items/i", data={"type": "plan"}).json()["param"] == "type", "type is fixed"
    moved = sb.api.post("/items/i", data={"item_family_id": "fam2", "applicable_items[0]": "x"}).json()[
        "item"
    ]
    assert moved["item_family_id"] == "fam2"
    assert moved["applicable_items"] == [{"id": "x"}]
    assert sb.api.post("/items/i", data={"item_family_id": "nope"}).status_code == 404
    archived = sb.api.post("/items/i", data={"status": "archived"}).json()["item"]
    assert archived["status"] == "archived" and "archived_at" in archived
    active = sb.api.post("/items/i", data={"status": "active"}).json()["item"]
    assert "archived_at" not in active
    assert sb.api.post("/items/i", data={"status": "deleted"}).json()["param"] == "status"
    assert event_types(sb) == [
        "item_family_created",
        "item_family_created",
        "item_created",
        "item_updated",
        "item_updated",
        "item_updated",
    ]


def test_admin_pay_and_order_events(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    sb.put_records("customers", [{"id": "cus"}], emit=False)
    sb.put_records(
        "invoices", [{"id": "I-1", "customer_id": "cus", "line_items": [{"amount": 500}]}], emit=False
    )
    paid = sb.admin.post("/invoices/I-1/pay", json={}).json()
    assert paid["invoice"]["status"] == "paid"
    [order] = sb.api.get("/orders").json()["list"]
    oid = order["order"]["id"]
    assert order["order"]["status"] == "queued"
    sb.api.post(f"/orders/{oid}", data={"status": "delivered"})
    sb.api.post(f"/orders/{oid}/cancel", data={"cancellation_reason": "others"})
    assert event_types(sb) == [
        "payment_succeeded",
        "invoice_updated",
        "order_created",
        "order_updated",
        "order_delivered",
        "order_cancelled",
    ]
    again = sb.api.post(f"/orders/{oid}/cancel", data={"cancellation_reason": "others"})
    assert again.status_code == 400 and again.json()["api_error_code"] == "invalid_state_for_request"
    assert sb.admin.post("/invoices/nope/pay", json={}).status_code == 404


def test_record_payment_validation(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    sb.put_records("invoices", [{"id": "I-1", "line_items": [{"amount": 500}]}], emit=False)
    missing = sb.api.post("/invoices/I-1/record_payment", data={"transaction[amount]": "100"})
    assert missing.json()["param"] == "transaction[payment_method]"
    too_much = sb.api.post(
        "/invoices/I-1/record_payment",
        data={"transaction[amount]": "501", "transaction[payment_method]": "cash"},
    )
    assert too_much.json()["param"] == "transaction[amount]"
    assert sb.api.post("/invoices/I-404/record_payment", data={}).status_code == 404


def test_events_time_window(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    sb.api.post("/customers", data={"id": "a"})
    sb.clock.advance(100)
    sb.api.post("/customers", data={"id": "b"})
    later = sb.api.get("/events", params={"occurred_at[after]": int(T0) + 50}).json()["list"]
    assert [e["event"]["content"]["customer"]["id"] for e in later] == ["b"]
    legacy = sb.api.get("/events", params={"start_time": int(T0), "end_time": int(T0) + 10}).json()["list"]
    assert [e["event"]["content"]["customer"]["id"] for e in legacy] == ["a"]
    types = sb.api.get("/events", params={"event_type[is]": "customer_created", "limit": 1}).json()
    assert len(types["list"]) == 1 and types["next_offset"]
    assert sb.api.get("/events/ev_missing").status_code == 404


@pytest.mark.parametrize(
    ("resource", "sort_field"),
    [
        ("customers", "updated_at"),
        ("items", "updated_at"),
        ("item_families", "updated_at"),
        ("invoices", "updated_at"),
        ("orders", "updated_at"),
        ("events", "occurred_at"),
    ],
)
def test_every_list_accepts_the_hook_parameters(
    chargebee_sandbox: CbSandbox, resource: str, sort_field: str
) -> None:
    params = {
        "limit": "100",
        "sort_by[asc]": sort_field,
        f"{sort_field}[after]": "0",
        # items have no include_deleted (Item.ListParams): their deletes are listed by status
        **(
            {"status[in]": '["active", "archived", "deleted"]'}
            if resource == "items"
            else {"include_deleted": "true"}
        ),
    }
    resp = chargebee_sandbox.api.get(f"/{resource}", params=params)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"list": []}


def test_idempotency_keys_are_kept_30_minutes_by_default(chargebee_sandbox: CbSandbox) -> None:
    """Chargebee's idempotency page states a 30-minute window (the SDK README's 24 h is the
    kinder reading): a replay within it carries the replayed header, after it the key is new."""
    sb = chargebee_sandbox
    assert sb.admin.get("/config").json()["idempotency_ttl"] == 1800
    headers = {"chargebee-idempotency-key": "create-ada"}
    first = sb.api.post("/customers", data={"first_name": "Ada"}, headers=headers)
    sb.clock.advance(1799)
    replay = sb.api.post("/customers", data={"first_name": "Ada"}, headers=headers)
    assert replay.headers["chargebee-idempotency-replayed"] == "true"
    assert replay.json() == first.json()
    sb.clock.advance(2)
    fresh = sb.api.post("/customers", data={"first_name": "Ada"}, headers=headers)
    assert fresh.status_code == 200 and "chargebee-idempotency-replayed" not in fresh.headers
    assert fresh.json()["customer"]["id"] != first.json()["customer"]["id"]
    assert sb.stats()["counters"]["idempotent_replays"] == 1


def test_idempotency_window_is_set_through_the_admin_endpoint(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    assert sb.admin.post("/config", json={"idempotency_ttl": 60}).json()["idempotency_ttl"] == 60
    for bad in (-1, "soon", True):
        assert sb.admin.post("/config", json={"idempotency_ttl": bad}).status_code == 400
    headers = {"chargebee-idempotency-key": "k"}
    sb.api.post("/customers", data={"first_name": "x"}, headers=headers)
    sb.clock.advance(61)
    again = sb.api.post("/customers", data={"first_name": "x"}, headers=headers)
    assert "chargebee-idempotency-replayed" not in again.headers
    assert len(sb.records("customers")) == 2


def test_api_made_orders_are_created_by_the_api_key_name(chargebee_sandbox: CbSandbox) -> None:
    """Chargebee's docs example: an order made through the API has created_by = the API
    key's name (full_access_key_v1); key names are the site admins' choice."""
    sb = chargebee_sandbox
    sb.put_records("invoices", [{"id": "I-1", "status": "paid", "amount_due": 0}], emit=False)
    config = sb.admin.post("/config", json={"order_management": "legacy"}).json()
    assert config["api_key_name"] == "full_access_key_v1"
    first = sb.api.post("/orders", data={"id": "o-1", "invoice_id": "I-1"}).json()["order"]
    assert first["created_by"] == "full_access_key_v1"
    assert sb.admin.post("/config", json={"api_key_name": "CRM Sync (prod)"}).json()["api_key_name"] == (
        "CRM Sync (prod)"
    )
    for bad in ("", "   ", "x" * 101, "a\nb", 7):
        assert sb.admin.post("/config", json={"api_key_name": bad}).status_code == 400
    second = sb.api.post("/orders", data={"id": "o-2", "invoice_id": "I-1"}).json()["order"]
    assert second["created_by"] == "CRM Sync (prod)"
    # orders Chargebee made or imported keep their actors
    imported = sb.api.post(
        "/orders/import_order",
        data={
            "id": "o-3",
            "invoice_id": "I-1",
            "status": "delivered",
            "created_at": int(T0) - 100,
            "order_date": int(T0) - 100,
            "shipping_date": int(T0) - 50,
        },
    )
    assert imported.json()["order"]["created_by"] == "import", imported.text
