"""A date that is no date or a total that is no whole number is held with a reason before
any write (found by tests/chaos/test_hostile_input_order_order.py: a Customcrm OrderDate of
'soon' made upsert_chargebee crash converting it, and the task's other writes did not run)."""

from __future__ import annotations

from pathlib import Path

import pytest
from crmsync.engine import plan
from crmsync.engine.canonical import SideRecord, to_canonical
from crmsync.engine.plan import Action
from crmsync.mapping.model import Mapping, Side, load_mapping

ROOT = Path(__file__).resolve().parents[3]


def rec(m: Mapping, side: Side, rid: str, raw: dict[str, object]) -> SideRecord:
    return SideRecord(side, rid, to_canonical(m, side, raw))


@pytest.fixture(scope="module")
def orders() -> Mapping:
    return load_mapping(ROOT / "include" / "mappings" / "order_order.yaml")


@pytest.mark.parametrize("field, value", [("OrderDate", "soon"), ("ShippedAt", "tomorrow")])
def test_crm_order_with_a_date_that_is_no_date_is_held_not_crashing_the_write(
    orders: Mapping, field: str, value: str
) -> None:
    raw = {"Number": "5001", "InvoiceId": "INV-1", "Status": "new", field: value}
    d = plan.decide_new(
        orders, SideRecord(Side.CUSTOMCRM, "ORD-1", to_canonical(orders, Side.CUSTOMCRM, raw))
    )
    assert d.action is Action.QUARANTINE and d.hold_kind == "invalid"
    assert d.reason and "ORD-1" in d.reason and field in d.reason and "fix it in Customcrm" in d.reason


@pytest.mark.parametrize("total", ["abc", 12.5, float("nan"), float("inf")])
def test_chargebee_order_with_a_total_that_is_no_whole_number_is_held(orders: Mapping, total: object) -> None:
    raw = {"document_number": "5001", "status": "new", "total": total, "currency_code": "EUR"}
    d = plan.decide_new(
        orders, SideRecord(Side.CHARGEBEE, "ord_1", to_canonical(orders, Side.CHARGEBEE, raw))
    )
    assert d.action is Action.QUARANTINE and d.hold_kind == "invalid"
    assert d.reason and "ord_1" in d.reason and "total" in d.reason and "whole number" in d.reason


def test_a_good_order_is_still_created(orders: Mapping) -> None:
    raw = {"document_number": "5001", "status": "new", "total": 100, "order_date": 1740787200}
    d = plan.decide_new(
        orders, SideRecord(Side.CHARGEBEE, "ord_1", to_canonical(orders, Side.CHARGEBEE, raw))
    )
    assert d.action is Action.CREATE
