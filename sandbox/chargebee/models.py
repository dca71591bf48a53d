"""Resource catalogue and record defaults for the Chargebee sandbox.

Records are stored as plain JSON dicts shaped like Chargebee's objects. Internal
bookkeeping lives in keys starting with ``_`` (``_seq``: creation order, the keyset
tie-breaker; ``_imported``: order came from ``import_order``) and is stripped by
:func:`public`. Attributes without a value are *absent*, as in Chargebee's JSON, never
``null`` - clients must cope with missing keys against the real API too.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ResourceSpec:
    """How one API resource is named, listed and announced in events."""

    name: str  # plural path segment, e.g. "customers"
    object: str  # object key / "object" value, e.g. "customer"
    created_event: str | None
    updated_event: str | None
    deleted_event: str | None
    default_sort: tuple[str, str]  # (field, "asc"|"desc"); "_seq" = creation order
    sortable: frozenset[str]
    id_prefix: str = ""


SPECS: dict[str, ResourceSpec] = {
    "customers": ResourceSpec(
        "customers",
        "customer",
        "customer_created",
        "customer_changed",
        "customer_deleted",
        ("created_at", "desc"),
        frozenset({"created_at", "updated_at"}),
    ),
    "item_families": ResourceSpec(
        "item_families",
        "item_family",
        "item_family_created",
        "item_family_updated",
        "item_family_deleted",
        ("_seq", "asc"),
        frozenset({"updated_at"}),
    ),
    "items": ResourceSpec(
        "items",
        "item",
        "item_created",
        "item_updated",
        "item_deleted",
        ("_seq", "asc"),
        frozenset({"name", "id", "updated_at"}),
    ),
    "business_entities": ResourceSpec(
        "business_entities",
        "business_entity",
        "business_entity_created",
        "business_entity_updated",
        "business_entity_deleted",
        ("created_at", "asc"),
        frozenset({"created_at", "updated_at"}),
    ),
    # customers/subscriptions moved between entities (GET /business_entities/transfers,
    # the only read the official SDK has for business entities); made through the admin API
    "business_entity_transfers": ResourceSpec(
        "business_entity_transfers",
        "business_entity_transfer",
        None,
        None,
        None,
        ("created_at", "desc"),
        frozenset({"created_at"}),
    ),
    "invoices": ResourceSpec(
        "invoices",
        "invoice",
        "invoice_generated",
        "invoice_updated",
        "invoice_deleted",
        ("date", "desc"),
        frozenset({"date", "updated_at"}),
    ),
    "orders": ResourceSpec(
        "orders",
        "order",
        "order_created",
        "order_updated",
        "order_deleted",
        ("created_at", "desc"),
        frozenset({"created_at", "updated_at"}),
    ),
    "events": ResourceSpec(
        "events",
        "event",
        None,
        None,
        None,
        ("occurred_at", "desc"),
        frozenset({"occurred_at"}),
        "ev_",
    ),
}

# Resources that carry ``created_at`` in Chargebee's JSON (items and families do not).
HAS_CREATED_AT = frozenset({"customers", "business_entities", "business_entity_transfers", "orders"})


def public(record: dict[str, Any]) -> dict[str, Any]:
    """Client view: no ``_internal`` keys, no ``None`` values (recursively)."""
    return _clean(record)


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if not k.startswith("_") and v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _setdefaults(rec: dict[str, Any], defaults: dict[str, Any]) -> None:
    for key, value in defaults.items():
        if key not in rec:
            rec[key] = copy.deepcopy(value)


def address(data: dict[str, Any] | None, kind: str = "billing_address") -> dict[str, Any] | None:
    if not data:
        return None
    out = {k: v for k, v in data.items() if v is not None and v != ""}
    if not out:
        return None
    out.setdefault("validation_status", "not_validated")
    out["object"] = kind
    return out


def customer_defaults(rec: dict[str, Any]) -> None:
    _setdefaults(
        rec,
        {
            "auto_collection": "on",
            "net_term_days": 0,
            "allow_direct_debit": False,
            "taxability": "taxable",
            "pii_cleared": "active",
            "channel": "web",
            "card_status": "no_card",
            "preferred_currency_code": "USD",
            "promotional_credits": 0,
            "refundable_credits": 0,
            "excess_payments": 0,
            "unbilled_charges": 0,
        },
    )
    if rec.get("billing_address"):
        rec["billing_address"] = address(rec["billing_address"])


def item_family_defaults(rec: dict[str, Any]) -> None:
    _setdefaults(rec, {"status": "active", "channel": "web"})


def item_defaults(rec: dict[str, Any]) -> None:
    _setdefaults(
        rec,
        {
            "status": "active",
            "is_shippable": False,
            "is_giftable": False,
            "enabled_for_checkout": True,
            "enabled_in_portal": True,
            "metered": False,
            "channel": "web",
        },
    )
    if rec.get("type") == "plan":
        rec.setdefault("item_applicability", "all")
    if rec.get("name") is not None:
        rec.setdefault("external_name", rec["name"])


def business_entity_defaults(rec: dict[str, Any]) -> None:
    _setdefaults(rec, {"status": "active"})


def invoice_defaults(rec: dict[str, Any], now: int, customer: dict[str, Any] | None) -> None:
    """Fill totals and line items so an admin-created invoice looks like a generated one."""
    date = int(rec.get("date") or now)
    rec["date"] = date
    lines = []
    for i, raw in enumerate(rec.get("line_items") or []):
        line = dict(raw)
        qty = int(line.get("quantity", 1))
        if "unit_amount" in line:
            unit = int(line["unit_amount"])
        else:
            unit = int(line.get("amount", 0)) // max(qty, 1)
        line.setdefault("id", f"li_{rec.get('id', 'inv')}_{i + 1}")
        line.setdefault("date_from", date)
        line.setdefault("date_to", date)
        line["quantity"] = qty
        line["unit_amount"] = unit
        line.setdefault("amount", unit * qty)
        line.setdefault("pricing_model", "flat_fee")
        line.setdefault("is_taxed", False)
        line.setdefault("tax_amount", 0)
        line.setdefault("discount_amount", 0)
        line.setdefault("item_level_discount_amount", 0)
        line.setdefault("entity_type", "adhoc")
        line.setdefault("description", line.get("entity_id") or "Charge")
        if rec.get("customer_id"):
            line.setdefault("customer_id", rec["customer_id"])
        line["object"] = "line_item"
        lines.append(line)
    rec["line_items"] = lines
    sub_total = sum(int(li["amount"]) for li in lines)
    tax = sum(int(li.get("tax_amount", 0)) for li in lines)
    rec.setdefault("sub_total", sub_total)
    rec.setdefault("tax", tax)
    rec.setdefault("total", int(rec["sub_total"]) + int(rec["tax"]))
    status = rec.setdefault("status", "payment_due")
    if status == "paid":
        rec.setdefault("amount_paid", rec["total"])
        rec.setdefault("paid_at", date)
    _setdefaults(
        rec,
        {
            "amount_paid": 0,
            "amount_adjusted": 0,
            "write_off_amount": 0,
            "credits_applied": 0,
            "currency_code": (customer or {}).get("preferred_currency_code", "USD"),
            "price_type": "tax_exclusive",
            "recurring": False,
            "first_invoice": False,
            "has_advance_charges": False,
            "term_finalized": True,
            "is_gifted": False,
            "exchange_rate": 1.0,
            "net_term_days": 0,
            "channel": "web",
        },
    )
    rec.setdefault("due_date", date + 86400 * int(rec["net_term_days"]))
    rec.setdefault("generated_at", date)
    rec.setdefault("amount_due", max(0, int(rec["total"]) - int(rec["amount_paid"])))
    rec.setdefault("amount_to_collect", rec["amount_due"])
    if customer and customer.get("billing_address") and "billing_address" not in rec:
        rec["billing_address"] = copy.deepcopy(customer["billing_address"])
    if rec.get("billing_address"):
        rec["billing_address"] = address(rec["billing_address"])
    if rec.get("shipping_address"):
        rec["shipping_address"] = address(rec["shipping_address"], "shipping_address")
    if customer and customer.get("business_entity_id"):
        rec.setdefault("business_entity_id", customer["business_entity_id"])


ORDER_LINE_STATUS_FOR = {
    "new": "queued",
    "processing": "queued",
    "queued": "queued",
    "awaiting_shipment": "awaiting_shipment",
    "on_hold": "on_hold",
    "shipped": "shipped",
    "delivered": "delivered",
    "partially_delivered": "partially_delivered",
    "returned": "returned",
    "cancelled": "cancelled",
    "complete": "delivered",
    "voided": "cancelled",
}


def order_from_invoice(invoice: dict[str, Any], now: int, *, status: str = "new") -> dict[str, Any]:
    """The order Chargebee derives from an invoice: amounts, lines and addresses copied."""
    paid = invoice.get("status") == "paid"
    lines = []
    for i, li in enumerate(invoice.get("line_items") or []):
        lines.append(
            {
                "id": f"oli_{invoice['id']}_{i + 1}",
                "invoice_id": invoice["id"],
                "invoice_line_item_id": li.get("id"),
                "unit_price": li.get("unit_amount", 0),
                "description": li.get("description"),
                "amount": li.get("amount", 0),
                "fulfillment_quantity": li.get("quantity", 1),
                "fulfillment_amount": li.get("amount", 0),
                "tax_amount": li.get("tax_amount", 0),
                "amount_paid": li.get("amount", 0) if paid else 0,
                "amount_adjusted": 0,
                "refundable_credits_issued": 0,
                "refundable_credits": 0,
                "is_shippable": True,
                "status": ORDER_LINE_STATUS_FOR.get(status, "queued"),
                "entity_type": li.get("entity_type", "adhoc"),
                "item_level_discount_amount": 0,
                "discount_amount": 0,
                "entity_id": li.get("entity_id"),
                "object": "order_line_item",
            }
        )
    order: dict[str, Any] = {
        "invoice_id": invoice["id"],
        "customer_id": invoice.get("customer_id"),
        "subscription_id": invoice.get("subscription_id"),
        "status": status,
        "payment_status": "paid" if paid else "not_paid",
        "order_type": "manual",
        "price_type": invoice.get("price_type", "tax_exclusive"),
        "order_date": now,
        "shipping_date": now,
        "status_update_at": now,
        "tax": invoice.get("tax", 0),
        "amount_paid": invoice.get("amount_paid", 0),
        "amount_adjusted": 0,
        "refundable_credits_issued": 0,
        "refundable_credits": 0,
        "rounding_adjustement": 0,
        "discount": 0,
        "sub_total": invoice.get("sub_total", 0),
        "total": invoice.get("total", 0),
        "currency_code": invoice.get("currency_code", "USD"),
        "is_resent": False,
        "is_gifted": False,
        "order_line_items": lines,
        "business_entity_id": invoice.get("business_entity_id"),
    }
    if paid and invoice.get("paid_at"):
        order["paid_on"] = invoice["paid_at"]
    if invoice.get("billing_address"):
        order["billing_address"] = address(invoice["billing_address"])
    ship = invoice.get("shipping_address") or invoice.get("billing_address")
    if ship:
        order["shipping_address"] = address(ship, "shipping_address")
    return order


def order_defaults(rec: dict[str, Any], now: int) -> None:
    created = int(rec.get("created_at") or now)
    _setdefaults(
        rec,
        {
            "status": "new",
            "order_type": "manual",
            "payment_status": "not_paid",
            "price_type": "tax_exclusive",
            "order_date": created,
            "shipping_date": created,
            "status_update_at": created,
            "currency_code": "USD",
            "is_resent": False,
            "is_gifted": False,
            "sub_total": 0,
            "total": 0,
            "tax": 0,
            "amount_paid": 0,
            "order_line_items": [],
            "created_by": "system",
        },
    )
    for kind in ("billing_address", "shipping_address"):
        if rec.get(kind):
            rec[kind] = address(rec[kind], kind)
