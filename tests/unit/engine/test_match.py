"""Match rules: the first rule, then alternatives (quote ⇄ order by invoice). Pure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from crmsync.engine.canonical import SideRecord, match_key, to_canonical
from crmsync.engine.match import Outcome, contradiction, decide_group
from crmsync.mapping.model import Mapping, MappingError, Side, load_mapping, parse_mapping

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def m() -> Mapping:
    return load_mapping(ROOT / "include" / "mappings" / "quote_order.yaml")


def quote(m: Mapping, rid: str = "QUO-1", **raw: Any) -> SideRecord:
    raw = {"Number": "Q-1", "InvoiceId": None, **raw}
    return SideRecord(Side.CUSTOMCRM, rid, to_canonical(m, Side.CUSTOMCRM, raw), 100, "1")


def order(m: Mapping, rid: str = "ord_1", **raw: Any) -> SideRecord:
    raw = {"document_number": "5001", "invoice_id": "INV-1", **raw}
    return SideRecord(Side.CHARGEBEE, rid, to_canonical(m, Side.CHARGEBEE, raw), 100, "1700")


def test_quote_order_tries_reference_id_then_invoice(m: Mapping) -> None:
    assert m.match.rules == [["quote_number"], ["invoice_id"]]
    q = quote(m, InvoiceId=" inv-1 ")
    assert match_key(m, q.values) == "q-1"
    assert match_key(m, q.values, 1) == "inv-1"
    assert match_key(m, order(m).values, 0) is None, "an order without reference_id has no first key"
    assert match_key(m, order(m).values, 1) == "inv-1"


def test_first_rule_links_one_per_side_and_holds_duplicates(m: Mapping) -> None:
    q, o = quote(m), order(m, reference_id="Q-1")
    assert decide_group(m, 0, [q, o]).outcome is Outcome.LINK
    assert decide_group(m, 0, [q]).outcome is Outcome.UNMATCHED
    two = decide_group(m, 0, [q, o, order(m, "ord_2", reference_id="Q-1")])
    assert two.outcome is Outcome.AMBIGUOUS and "shared by several records" in (two.why or "")
    assert set(two.candidates) == {"Customcrm QUO-1", "Chargebee ord_1", "Chargebee ord_2"}
    taken = decide_group(m, 0, [q], taken=("QUO-9", "ord_9"))
    assert taken.outcome is Outcome.AMBIGUOUS and "already linked" in (taken.why or "")


def test_alternative_links_a_quote_to_the_order_of_its_invoice(m: Mapping) -> None:
    q, o = quote(m, InvoiceId="INV-1"), order(m)
    d = decide_group(m, 1, [q, o])
    assert d.outcome is Outcome.LINK and d.crm is q and d.cb is o


def test_two_orders_from_one_invoice_hold_the_quote_never_guess(m: Mapping) -> None:
    q = quote(m, InvoiceId="INV-1")
    d = decide_group(m, 1, [q, order(m), order(m, "ord_2", document_number="5002")])
    assert d.outcome is Outcome.AMBIGUOUS
    assert "invoice_id is shared by several records" in (d.why or "")
    assert "Chargebee ord_2" in d.candidates and d.fix


def test_two_quotes_naming_one_invoice_are_ambiguous(m: Mapping) -> None:
    d = decide_group(
        m, 1, [quote(m, InvoiceId="INV-1"), quote(m, "QUO-2", Number="Q-2", InvoiceId="INV-1"), order(m)]
    )
    assert d.outcome is Outcome.AMBIGUOUS


def test_records_of_one_side_sharing_an_alternative_key_are_just_unmatched(m: Mapping) -> None:
    """Two orders made from one invoice, and no quote names it: nothing to decide."""
    assert decide_group(m, 1, [order(m), order(m, "ord_2")]).outcome is Outcome.UNMATCHED
    assert decide_group(m, 1, [quote(m, InvoiceId="INV-1")]).outcome is Outcome.UNMATCHED


def test_an_alternative_never_overrides_a_contradicting_first_rule(m: Mapping) -> None:
    q = quote(m, InvoiceId="INV-1")
    o = order(m, reference_id="Q-OTHER")
    why = contradiction(m, 1, q, o)
    assert why and "quote_number differs" in why and "'Q-OTHER'" in why
    d = decide_group(m, 1, [q, o])
    assert d.outcome is Outcome.AMBIGUOUS and d.why == why
    # an order with no reference_id does not contradict
    assert contradiction(m, 1, q, order(m)) is None


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "include/mappings/quote_order.yaml").read_text())
    return doc


def test_alternative_keys_must_be_fields() -> None:
    doc = _doc()
    doc["match"]["alternatives"] = [["nope"]]
    with pytest.raises(MappingError, match="match alternative 1 'nope' is not one of the fields"):
        parse_mapping(doc)
    doc["match"]["alternatives"] = [[]]
    with pytest.raises(MappingError, match=r"match\.alternatives\.0"):
        parse_mapping(doc)


def test_alternatives_are_refused_for_one_to_many() -> None:
    doc = _doc()
    doc["cardinality"] = "one_to_many"
    with pytest.raises(MappingError, match="not supported for cardinality one_to_many"):
        parse_mapping(doc)
