"""order_order on a site with current order management (issue 12). Pure.

Chargebee generates orders from invoices; ``POST /orders`` is legacy order management,
refused by every site since 2021-10-01. The shipped mapping therefore never creates a
Chargebee order: a Customcrm order waits, with what a person can do, until the order of
its invoice exists, and links to it by number, else by invoice, even when Chargebee has
not numbered the order yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from crmsync.engine import plan
from crmsync.engine.canonical import SideRecord, to_canonical
from crmsync.engine.match import Outcome, decide_group
from crmsync.engine.plan import Action
from crmsync.mapping.model import Mapping, MappingError, Side, load_mapping, parse_mapping

from tests.legacy_orders import legacy_order_order_doc

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "include" / "mappings" / "order_order.yaml"


@pytest.fixture(scope="module")
def m() -> Mapping:
    return load_mapping(SHIPPED)


def crm_order(m: Mapping, rid: str = "ORD-1", **raw: Any) -> SideRecord:
    raw = {"Number": None, "InvoiceId": "INV-1", "Status": "new", **raw}
    return SideRecord(Side.CUSTOMCRM, rid, to_canonical(m, Side.CUSTOMCRM, raw), 100, "1")


def cb_order(m: Mapping, rid: str = "ord_1", **raw: Any) -> SideRecord:
    raw = {"document_number": "5011", "invoice_id": "INV-1", "status": "queued", "total": 100, **raw}
    return SideRecord(Side.CHARGEBEE, rid, to_canonical(m, Side.CHARGEBEE, raw), 100, "1700")


def test_a_crm_order_naming_an_invoice_waits_for_its_order_instead_of_a_create(m: Mapping) -> None:
    d = plan.decide_new(m, crm_order(m, Number="SO-1"))
    assert d.action is Action.WAIT and d.cb_write is None and d.reason
    assert d.reason.startswith("Customcrm order ORD-1: no order matches it yet; Chargebee generates orders")
    assert "create and pay the invoice in Chargebee" in d.reason
    assert plan.needs_a_person(d.reason.removeprefix("Customcrm order ORD-1: "))


def test_a_crm_order_without_invoice_is_told_to_name_one(m: Mapping) -> None:
    d = plan.decide_new(m, crm_order(m, InvoiceId=None))
    assert d.action is Action.WAIT and d.reason
    assert "InvoiceId is empty: Chargebee generates orders from invoices" in d.reason


def test_an_order_chargebee_has_not_numbered_is_created_in_customcrm_not_held(m: Mapping) -> None:
    d = plan.decide_new(m, cb_order(m, document_number=None))
    assert d.action is Action.CREATE, d.reason
    neither = plan.decide_new(m, cb_order(m, document_number=None, invoice_id=None))
    assert neither.action is Action.QUARANTINE and "document_number is empty" in (neither.reason or "")


def test_an_unnumbered_order_links_by_its_invoice(m: Mapping) -> None:
    assert m.match.rules == [["number"], ["invoice_id"]], "by number, else by invoice"
    crm, cb = crm_order(m), cb_order(m, document_number=None)
    d = decide_group(m, 1, [crm, cb])
    assert d.outcome is Outcome.LINK and d.crm is crm and d.cb is cb


def test_a_crm_number_does_not_block_the_link_to_the_order_of_its_invoice(m: Mapping) -> None:
    """The number flows from Chargebee only: a Customcrm order numbered in the CRM
    (SO-2025-0103) naming INV-1 is the order Chargebee generated from INV-1 (5011)."""
    d = decide_group(m, 1, [crm_order(m, Number="SO-2025-0103"), cb_order(m)])
    assert d.outcome is Outcome.LINK
    two = decide_group(m, 1, [crm_order(m), cb_order(m), cb_order(m, "ord_2", document_number="5012")])
    assert two.outcome is Outcome.AMBIGUOUS, "several orders of one invoice: never guessed"


def test_creating_orders_must_say_the_site_has_legacy_order_management() -> None:
    doc: dict[str, Any] = yaml.safe_load(SHIPPED.read_text())
    assert doc["chargebee"]["create"] is False
    doc["chargebee"]["create"] = True
    with pytest.raises(MappingError, match=r"chargebee\.create: legacy_order_management if your site has it"):
        parse_mapping(doc)
    legacy = parse_mapping(legacy_order_order_doc())
    assert legacy.chargebee.create == "legacy_order_management"
    d = plan.decide_new(legacy, crm_order(legacy, Number="SO-1"))
    assert d.action is Action.CREATE and d.cb_write is not None


def test_legacy_order_management_is_an_option_of_orders_only() -> None:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "include/mappings/product_item.yaml").read_text())
    doc["chargebee"]["create"] = "legacy_order_management"
    with pytest.raises(MappingError, match="applies only to Chargebee orders"):
        parse_mapping(doc)
    doc["chargebee"]["create"] = "sometimes"
    with pytest.raises(MappingError, match=r"chargebee\.create"):
        parse_mapping(doc)
