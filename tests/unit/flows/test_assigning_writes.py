"""Assigning endpoints: the Chargebee writer re-sends what the mapping does not own.

``update_billing_info`` removes every billing field a call does not send (Chargebee
documents it as an assignment), so the writer reads the customer fresh right before the
write and re-sends each covered field the mapping does not own; that read is also the
stale-write guard. A fake hook that behaves like the endpoint (it assigns) shows what a
write leaves behind and counts the API calls. The end-to-end proof against the sandboxes
is ``tests/e2e/test_unowned_fields.py``.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any, get_args, get_origin

from chargebee.models.customer.operations import Customer
from chargebee.models.order.operations import Order
from crmsync.flows.writers import ChargebeeWriter
from crmsync.mapping.capabilities import ADDRESS_PARAMS, BILLING_INFO, capability
from crmsync.mapping.model import load_mapping

ROOT = Path(__file__).resolve().parents[3]
CONTACTS = load_mapping(ROOT / "include/mappings/contact_customer.yaml")
ORDERS = load_mapping(ROOT / "include/mappings/order_order.yaml")
QUOTES = load_mapping(ROOT / "include/mappings/quote_order.yaml")

BILLING = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "company": "Analytical Engines Ltd",
    "line1": "Street 1",
    "city": "Oslo",
    "zip": "0150",
    "country": "NO",
    "validation_status": "valid",
}
CUSTOMER = {
    "id": "cb_1",
    "resource_version": 7,
    "first_name": "Ada",
    "vat_number": "NO123456789",
    "vat_number_prefix": "NO",
    "registered_for_gst": True,
    "einvoicing_method": "manual",
    "billing_address": {**BILLING, "object": "billing_address"},
}


def row(**kw: Any) -> dict[str, Any]:
    base = {
        "id": 1,
        "run_id": "r",
        "action": "update",
        "crm_id": "CON-1",
        "cb_id": "cb_1",
        "merged": "{}",
        "cb_op": "update",
        "cb_changes": None,
        "cb_if_version": None,
        "crm_op": None,
        "crm_changes": None,
        "crm_if_version": None,
    }
    base.update(kw)
    return base


class AssigningChargebee:
    """Like Chargebee: ``update_billing_info`` assigns, ``update`` changes what is sent
    (an order's ``shipping_address`` is replaced when sent: the stricter reading)."""

    def __init__(self, records: dict[str, dict[str, Any]]) -> None:
        self.records = json.loads(json.dumps(records))
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def retrieve(self, resource: str, rid: str) -> dict[str, Any] | None:
        self.calls.append(("retrieve", rid, {}))
        rec = self.records.get(rid)
        return json.loads(json.dumps(rec)) if rec is not None else None

    def update(self, resource: str, rid: str, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.calls.append(("update", rid, params))
        rec = self.records[rid]
        for key, value in params.items():
            rec[key] = dict(value) if key == "shipping_address" else value
        rec["resource_version"] = int(rec.get("resource_version", 0)) + 1
        return rec

    def action(
        self, resource: str, rid: str, action: str, params: dict[str, Any] | None = None, **_: Any
    ) -> dict[str, Any]:
        assert action == "update_billing_info"
        params = params or {}
        self.calls.append((action, rid, params))
        rec = self.records[rid]
        for key in BILLING_INFO.fields:
            rec.pop(key, None)
        rec.pop("billing_address", None)
        rec.update(params)
        rec["resource_version"] = int(rec.get("resource_version", 0)) + 1
        return rec

    def count(self, kind: str) -> int:
        return sum(1 for c in self.calls if c[0] == kind)


def test_a_billing_write_keeps_vat_and_billing_names_the_mapping_does_not_own() -> None:
    hook = AssigningChargebee({"cb_1": CUSTOMER})
    w = ChargebeeWriter(CONTACTS, hook, "r")
    merged = {"address_line1": "Street 1", "city": "Oslo", "zip": "0151", "country": "NO"}
    out = w.execute(
        row(cb_changes=json.dumps({"zip": "0151"}), merged=json.dumps(merged), cb_if_version="7"),
        recovering=False,
        reread=False,
    )
    assert out.status == "done", out.error
    after = hook.records["cb_1"]
    assert after["billing_address"] == {**BILLING, "zip": "0151"}
    for key in ("vat_number", "vat_number_prefix", "registered_for_gst", "einvoicing_method"):
        assert after[key] == CUSTOMER[key], key
    # the cost: one retrieve per update_billing_info write
    assert hook.count("retrieve") == 1 and hook.count("update_billing_info") == 1
    assert w.fresh_reads == 1 and w.rereads == 1


def test_a_customer_changed_since_extract_is_stale_and_not_written() -> None:
    hook = AssigningChargebee({"cb_1": {**CUSTOMER, "resource_version": 8}})
    w = ChargebeeWriter(CONTACTS, hook, "r")
    out = w.execute(
        row(cb_changes=json.dumps({"zip": "0151"}), cb_if_version="7"), recovering=False, reread=False
    )
    assert out.status == "stale" and "changed since it was read" in (out.error or "")
    assert hook.count("update_billing_info") == 0
    assert hook.records["cb_1"]["billing_address"]["zip"] == "0150"


def test_a_customer_deleted_since_extract_is_stale() -> None:
    hook = AssigningChargebee({})
    w = ChargebeeWriter(CONTACTS, hook, "r")
    out = w.execute(row(cb_changes=json.dumps({"zip": "0151"})), recovering=False, reread=False)
    assert out.status == "stale" and "deleted" in (out.error or "")


def test_the_stale_write_re_read_is_reused_no_second_retrieve() -> None:
    hook = AssigningChargebee({"cb_1": CUSTOMER})
    w = ChargebeeWriter(CONTACTS, hook, "r")
    out = w.execute(
        row(cb_changes=json.dumps({"zip": "0151", "first_name": "Ada B."}), cb_if_version="7"),
        recovering=False,
        reread=True,
    )
    assert out.status == "done", out.error
    assert hook.count("retrieve") == 1 and w.rereads == 1 and w.fresh_reads == 0
    assert hook.records["cb_1"]["vat_number"] == "NO123456789"
    assert hook.records["cb_1"]["first_name"] == "Ada B."


def test_a_plain_update_reads_nothing_first() -> None:
    hook = AssigningChargebee({"cb_1": CUSTOMER})
    w = ChargebeeWriter(CONTACTS, hook, "r")
    out = w.execute(row(cb_changes=json.dumps({"first_name": "Ada B."})), recovering=False, reread=False)
    assert out.status == "done" and hook.count("retrieve") == 0 and w.fresh_reads == 0


def test_a_cleared_mapped_line_is_not_brought_back_from_the_fresh_read() -> None:
    """A clear is an edit: the fresh read only fills fields the mapping does not own."""
    hook = AssigningChargebee({"cb_1": {**CUSTOMER, "billing_address": {**BILLING, "line2": "Flat 3"}}})
    w = ChargebeeWriter(CONTACTS, hook, "r")
    merged = {"address_line1": "Street 1", "address_line2": None, "city": "Oslo", "zip": "0150"}
    out = w.execute(
        row(cb_changes=json.dumps({"address_line2": None}), merged=json.dumps(merged)),
        recovering=False,
        reread=False,
    )
    assert out.status == "done", out.error
    addr = hook.records["cb_1"]["billing_address"]
    assert "line2" not in addr and addr["first_name"] == "Ada" and addr["validation_status"] == "valid"


def test_an_order_shipping_line_is_sent_with_the_rest_of_the_address() -> None:
    order = {
        "id": "o_1",
        "resource_version": 3,
        "note": "keep",
        "shipping_address": {"first_name": "Ada", "line1": "Street 1", "city": "Oslo", "zip": "0150"},
    }
    hook = AssigningChargebee({"o_1": order})
    w = ChargebeeWriter(ORDERS, hook, "r")
    merged = {"ship_line1": "Street 1", "ship_city": "Bergen", "ship_zip": "0150"}
    out = w.execute(
        row(cb_id="o_1", cb_changes=json.dumps({"ship_city": "Bergen"}), merged=json.dumps(merged)),
        recovering=False,
        reread=False,
    )
    assert out.status == "done", out.error
    assert hook.records["o_1"]["shipping_address"] == {
        "first_name": "Ada",
        "line1": "Street 1",
        "city": "Bergen",
        "zip": "0150",
    }
    assert hook.count("retrieve") == 1


def test_an_order_note_alone_reads_nothing_first() -> None:
    hook = AssigningChargebee(
        {"o_1": {"id": "o_1", "resource_version": 3, "shipping_address": {"city": "Oslo"}}}
    )
    w = ChargebeeWriter(QUOTES, hook, "r")
    out = w.execute(row(cb_id="o_1", cb_changes=json.dumps({"notes": "new"})), recovering=False, reread=False)
    assert out.status == "done" and hook.count("retrieve") == 0
    assert hook.records["o_1"]["shipping_address"] == {"city": "Oslo"}


# -- the declared lists against the SDK (the contract) ------------------------------------------


def _params(cls: Any) -> set[str]:
    return set(cls.__annotations__)


def _is_list(t: Any) -> bool:
    while get_origin(t) in (typing.NotRequired, typing.Required):
        t = get_args(t)[0]
    return get_origin(t) in (list, typing.List)  # noqa: UP006


def test_billing_info_assignment_covers_every_param_of_the_sdk_operation() -> None:
    sdk = _params(Customer.UpdateBillingInfoParams)
    # entity_identifiers: each entry carries its own operation, entries not sent stay
    assert set(BILLING_INFO.fields) | {"billing_address", "entity_identifiers"} == sdk
    assert _is_list(Customer.UpdateBillingInfoParams.__annotations__["entity_identifiers"])
    assert BILLING_INFO.objects == {"billing_address": ADDRESS_PARAMS}
    assert set(ADDRESS_PARAMS) == _params(Customer.UpdateBillingInfoBillingAddressParams)
    assert set(ADDRESS_PARAMS) == _params(Order.UpdateShippingAddressParams)


def test_assignments_are_declared_for_routes_the_writer_uses() -> None:
    customers = capability("customers")
    assert customers.assignment("update_billing_info", ["billing_address.zip"]) is BILLING_INFO
    assert customers.assignment("update", ["first_name"]) is None
    orders = capability("orders")
    assert orders.assignment("update", ["note"]) is None
    assert orders.assignment("update", ["shipping_address.city"]) is not None
    assert capability("items").assignments == {}


# -- Customcrm: PATCH changes only what is sent; a CRM configured with PUT replaces -------------


class ReplacingCrm:
    """A CRM whose connection says ``update_method: PUT``: the body replaces the record."""

    class api:  # mirrors CustomcrmHook.api
        update_method = "PUT"

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = dict(record)
        self.calls: list[str] = []

    def get(self, resource: str, rid: str) -> dict[str, Any] | None:
        self.calls.append("get")
        return dict(self.record)

    def update(
        self, resource: str, rid: str, body: dict[str, Any], *, if_match: Any = None
    ) -> dict[str, Any]:
        self.calls.append("put")
        meta = {k: self.record[k] for k in ("Id", "Version", "CreatedAt", "UpdatedAt", "Deleted")}
        self.record = {**body, **meta, "Version": int(meta["Version"]) + 1}
        return dict(self.record)


CONTACT = {
    "Id": "CON-1",
    "Version": 4,
    "CreatedAt": "2026-01-01T00:00:00Z",
    "UpdatedAt": "2026-01-01T00:00:00Z",
    "Deleted": False,
    "FirstName": "Ada",
    "ZipCode": "0150",
    "Title": "CTO",
    "Notes": "met at the fair",
}


def test_a_crm_that_replaces_on_put_gets_the_whole_record_back() -> None:
    from crmsync.flows.writers import CustomcrmWriter

    hook = ReplacingCrm(CONTACT)
    w = CustomcrmWriter(CONTACTS, hook, "r")
    out = w.execute(
        row(cb_op=None, crm_op="update", crm_changes=json.dumps({"zip": "0151"}), crm_if_version="4"),
        recovering=False,
        reread=False,
    )
    assert out.status == "done", out.error
    assert hook.record["ZipCode"] == "0151"
    assert hook.record["Title"] == "CTO" and hook.record["Notes"] == "met at the fair"
    assert hook.record["FirstName"] == "Ada"
    assert hook.calls == ["get", "put"]


def test_a_crm_record_changed_since_extract_is_stale_before_a_put() -> None:
    from crmsync.flows.writers import CustomcrmWriter

    hook = ReplacingCrm({**CONTACT, "Version": 5, "Title": "CEO"})
    w = CustomcrmWriter(CONTACTS, hook, "r")
    out = w.execute(
        row(cb_op=None, crm_op="update", crm_changes=json.dumps({"zip": "0151"}), crm_if_version="4"),
        recovering=False,
        reread=False,
    )
    assert out.status == "stale" and hook.calls == ["get"]
    assert hook.record["Title"] == "CEO"


def test_our_own_billing_write_applied_before_a_crash_counts_as_done_on_rerun() -> None:
    """The rerun of a row whose write was applied but not recorded finds a moved
    resource_version; the record already holds the planned values, so it is done (not
    stale, which would leave the link behind a crash-free run's)."""
    applied = {**CUSTOMER, "resource_version": 8, "billing_address": {**BILLING, "zip": "0151"}}
    hook = AssigningChargebee({"cb_1": applied})
    w = ChargebeeWriter(CONTACTS, hook, "r")
    out = w.execute(
        row(cb_changes=json.dumps({"zip": "0151"}), cb_if_version="7"), recovering=True, reread=False
    )
    assert out.status == "done", out.error
    assert out.result is not None and out.result["values"]["zip"] == "0151"
    assert hook.count("update_billing_info") == 0
