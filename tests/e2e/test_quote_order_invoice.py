"""quote_order's second match rule end to end: a quote that names an invoice links to the
order made from that invoice (when no order's reference_id names the quote)."""

from __future__ import annotations

from typing import Any

import pytest
from crmsync.store.schema import link, quarantine
from sqlalchemy import select

from tests.e2e.test_contact_customer import writes

pytestmark = pytest.mark.e2e


def order_of_invoice(sandboxes: Any, invoice_id: str) -> list[dict[str, Any]]:
    page = sandboxes.cb("GET", "orders", params={"invoice_id[is]": invoice_id, "limit": 100})
    return [e["order"] for e in page["list"]]


def new_quote(sandboxes: Any, number: str, invoice_id: str) -> str:
    quote = sandboxes.crm(
        "POST",
        "quotes",
        json={
            "Number": number,
            "Status": "accepted",
            "InvoiceId": invoice_id,
            "Notes": "Billed, see invoice",
        },
    )
    return str(quote["Id"])


def test_a_quote_naming_an_invoice_links_to_the_order_made_from_it(run_flow, sandboxes, store):
    [order] = order_of_invoice(sandboxes, "INV-1008")
    assert not order.get("reference_id"), "the seed order names no quote: only the invoice can match"
    quote_id = new_quote(sandboxes, "Q-2025-0042", "INV-1008")

    first = run_flow("quote_order")
    assert first.ok, first.summary
    with store.connect() as conn:
        pairs = dict(
            conn.execute(select(link.c.crm_id, link.c.cb_id).where(link.c.flow == "quote_order")).all()
        )
    assert pairs[quote_id] == order["id"]
    assert len(pairs) >= 4, "the seed's quotes still link by reference_id"
    quote = sandboxes.crm("GET", f"quotes/{quote_id}")
    assert quote["OrderNumber"] == order["document_number"] and quote["Amount"] == order["total"]
    assert sandboxes.cb("GET", f"orders/{order['id']}")["order"]["reference_id"] == "Q-2025-0042", (
        "the order now names its quote"
    )
    assert first.summary["created"] == {"customcrm": 0, "chargebee": 0}

    before = writes(sandboxes)
    again = run_flow("quote_order")
    assert again.ok and writes(sandboxes) == before, "a second run writes nothing"

    sandboxes.crm("PATCH", f"quotes/{quote_id}", json={"Notes": "Delivery in two parts"})
    edited = run_flow("quote_order")
    assert edited.ok, edited.summary
    assert sandboxes.cb("GET", f"orders/{order['id']}")["order"]["note"] == "Delivery in two parts"
    sandboxes.cb("POST", f"orders/{order['id']}", data={"note": "Second part shipped"})
    back = run_flow("quote_order")
    assert back.ok, back.summary
    assert sandboxes.crm("GET", f"quotes/{quote_id}")["Notes"] == "Second part shipped"


def test_two_orders_from_the_named_invoice_hold_the_quote_instead_of_guessing(run_flow, sandboxes, store):
    [first_order] = order_of_invoice(sandboxes, "INV-1007")
    second = sandboxes.cb("POST", "orders", data={"id": "ord-second-1007", "invoice_id": "INV-1007"})["order"]
    quote_id = new_quote(sandboxes, "Q-2025-0043", "INV-1007")

    r = run_flow("quote_order")
    assert r.ok, r.summary
    with store.connect() as conn:
        linked = {crm for (crm,) in conn.execute(select(link.c.crm_id).where(link.c.flow == "quote_order"))}
        held = dict(
            conn.execute(
                select(quarantine.c.record_id, quarantine.c.reason).where(
                    quarantine.c.flow == "quote_order", quarantine.c.kind == "ambiguous"
                )
            ).all()
        )
    assert quote_id not in linked
    assert "invoice_id is shared by several records" in held[quote_id]
    assert (
        f"Chargebee {first_order['id']}" in held[quote_id] and f"Chargebee {second['id']}" in held[quote_id]
    )
    assert not sandboxes.cb("GET", f"orders/{first_order['id']}")["order"].get("reference_id")
