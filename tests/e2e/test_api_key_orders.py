"""Orders an API key made name no person (issue 12), end to end with the real sandboxes.

Chargebee writes the name of the API key into ``created_by`` of what the API made (its
docs' example: ``full_access_key_v1``; the site's admins choose names freely). Orders
whose created_by is ``full_access_key_v1``, ``Airflow Sync (prod)`` or an email-like key
name the Chargebee connection lists in ``api_key_names`` are linked to no user by
user_order and held by neither flow; order_order links them with no owner and nothing
waits. An order a person made (their email) still gets its owner.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import requests
from crmsync.store.schema import link, plan, quarantine
from sqlalchemy import select

pytestmark = pytest.mark.e2e

#: an API key named like an email address: a person's unless the connection lists it
LISTED_KEY = "Billing@Nordpulse.example"
CUSTOMER = "cust_AzZbU4J8uc8gfXPw"  # a seeded customer that contact_customer links
PERSON = ("lukas.meier@nordpulse.example", "USR-000002")  # a seeded Customcrm user

ORDERS = {
    "ord_apikey_v1": "full_access_key_v1",
    "ord_apikey_sync": "Airflow Sync (prod)",
    "ord_apikey_listed": LISTED_KEY.lower(),
    "ord_by_person": PERSON[0],
}
NO_PERSON = ("ord_apikey_v1", "ord_apikey_sync", "ord_apikey_listed")


def _order(n: int, oid: str, created_by: str) -> dict[str, Any]:
    return {
        "id": oid,
        "object": "order",
        "document_number": f"{91000 + n}",
        "invoice_id": f"INV-APIKEY-{n}",
        "customer_id": CUSTOMER,
        "status": "queued",
        "order_type": "system_generated",
        "created_by": created_by,
        "deleted": False,
        "total": 4200,
        "currency_code": "EUR",
    }


def list_api_key_names(monkeypatch: pytest.MonkeyPatch, names: list[str]) -> None:
    """The Chargebee connection the tests use (AIRFLOW_CONN_CHARGEBEE_DEFAULT), with
    ``api_key_names`` in its extra."""
    conn = json.loads(os.environ["AIRFLOW_CONN_CHARGEBEE_DEFAULT"])
    conn["extra"] = {**conn.get("extra", {}), "api_key_names": names}
    monkeypatch.setenv("AIRFLOW_CONN_CHARGEBEE_DEFAULT", json.dumps(conn))


def rows(store: Any, table: Any, flow: str) -> list[dict[str, Any]]:
    with store.connect() as conn:
        return [dict(r) for r in conn.execute(select(table).where(table.c.flow == flow)).mappings()]


def test_orders_of_api_keys_link_to_no_user_and_get_no_owner(
    run_flow: Any, sandboxes: Any, store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    list_api_key_names(monkeypatch, [LISTED_KEY])
    requests.post(
        f"{sandboxes.cb_url}/_sandbox/records/orders",
        json={"records": [_order(n, oid, by) for n, (oid, by) in enumerate(ORDERS.items())]},
        timeout=30,
    ).raise_for_status()
    for oid, by in ORDERS.items():
        assert sandboxes.cb("GET", f"orders/{oid}")["order"]["created_by"] == by

    assert run_flow("contact_customer").ok

    # user_order: the API keys' orders link to nobody and are not held; the person's links
    users = run_flow("user_order")
    assert users.ok, users.summary
    owner_of = {r["cb_id"]: r["crm_id"] for r in rows(store, link, "user_order")}
    assert owner_of.get("ord_by_person") == PERSON[1], owner_of
    held = {r["record_id"]: r["reason"] for r in rows(store, quarantine, "user_order")}
    decided = {r["cb_id"]: r for r in rows(store, plan, "user_order") if r["cb_id"] in NO_PERSON}
    for oid in NO_PERSON:
        assert oid not in owner_of and oid not in held, (oid, owner_of.get(oid), held.get(oid))
        assert decided[oid]["action"] == "skip", decided[oid]
        assert "names no Customcrm user by design" in decided[oid]["reason"], decided[oid]
    problems = " | ".join(p["reason"] for p in users.summary["problems"])
    assert not any(oid in problems for oid in ORDERS), problems

    # order_order: all four linked; the API keys' orders have no owner and wait for nothing
    orders = run_flow("order_order")
    assert orders.ok, orders.summary
    crm_of = {r["cb_id"]: r["crm_id"] for r in rows(store, link, "order_order")}
    assert set(ORDERS) <= set(crm_of), crm_of
    pending = [p["reason"] for p in orders.summary["problems"] if any(oid in p["reason"] for oid in ORDERS)]
    assert not pending, pending
    assert not {r["record_id"] for r in rows(store, quarantine, "order_order")} & set(ORDERS)
    for oid in NO_PERSON:
        crm_order = sandboxes.crm("GET", f"orders/{crm_of[oid]}")
        assert crm_order["OwnerUserId"] is None, (oid, crm_order)
        assert crm_order["InvoiceId"] == sandboxes.cb("GET", f"orders/{oid}")["order"]["invoice_id"]
    assert sandboxes.crm("GET", f"orders/{crm_of['ord_by_person']}")["OwnerUserId"] == PERSON[1]

    # a second run of each: still nothing held, nothing waiting, no owner invented
    for flow in ("user_order", "order_order"):
        again = run_flow(flow)
        assert again.ok, again.summary
        assert not [p for p in again.summary["problems"] if any(oid in p["reason"] for oid in ORDERS)]
    for oid in NO_PERSON:
        assert sandboxes.crm("GET", f"orders/{crm_of[oid]}")["OwnerUserId"] is None


def test_an_unlisted_email_like_key_name_is_taken_for_a_person(
    run_flow: Any, sandboxes: Any, store: Any
) -> None:
    """Without ``api_key_names`` an order whose created_by looks like an email is a
    person's: user_order finds no user with that email (not linked, not "no person"),
    and order_order says what a person can do about its owner."""
    requests.post(
        f"{sandboxes.cb_url}/_sandbox/records/orders",
        json={"records": [_order(9, "ord_apikey_unlisted", LISTED_KEY.lower())]},
        timeout=30,
    ).raise_for_status()
    assert run_flow("contact_customer").ok
    users = run_flow("user_order")
    assert users.ok, users.summary
    decided = {r["cb_id"]: r for r in rows(store, plan, "user_order")}["ord_apikey_unlisted"]
    assert "by design" not in (decided["reason"] or ""), decided
    assert "ord_apikey_unlisted" not in {r["cb_id"] for r in rows(store, link, "user_order")}
    orders = run_flow("order_order")
    assert orders.ok, orders.summary
    reasons = [p["reason"] for p in orders.summary["problems"] if "ord_apikey_unlisted" in p["reason"]]
    assert reasons and LISTED_KEY.lower() in reasons[0], orders.summary["problems"]
