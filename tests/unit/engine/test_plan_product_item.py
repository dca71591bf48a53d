"""product_item: what the plan does with a new product it cannot create as it is.

Found by tests/chaos/test_hostile_input_product_item.py: a Sku that is no valid Chargebee
id was renamed by the writer (``HP 11`` → item ``hp_11``, then written back as the Sku),
a product with no Kind waited with a reason that did not say what to do, and Metadata
that is not a JSON object crashed the upsert task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from crmsync.engine import plan
from crmsync.engine.canonical import SideRecord, to_canonical, to_side, validate
from crmsync.engine.plan import Action, Op
from crmsync.mapping.model import Mapping, Side, load_mapping

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def mapping() -> Mapping:
    return load_mapping(ROOT / "include" / "mappings" / "product_item.yaml")


def product(mapping: Mapping, **fields: Any) -> SideRecord:
    raw = {"Id": "PRD-1", "Sku": "HP-1", "Name": "Hub", "Kind": "plan", **fields}
    return SideRecord(Side.CUSTOMCRM, "PRD-1", to_canonical(mapping, Side.CUSTOMCRM, raw))


@pytest.mark.parametrize("sku", ["HP-1", "hp.1~x", "HP_1@A", "x" * 50])
def test_a_sku_chargebee_takes_as_an_item_id_creates_the_item(mapping: Mapping, sku: str) -> None:
    d = plan.decide_new(mapping, product(mapping, Sku=sku))
    assert d.action is Action.CREATE and d.cb_write is not None and d.cb_write.op is Op.CREATE


@pytest.mark.parametrize("sku", ["HP 11", "HP-1-Ø", "HP/1", "HP-1\x07", "x" * 51])
def test_a_sku_that_is_no_chargebee_id_is_held_not_renamed(mapping: Mapping, sku: str) -> None:
    d = plan.decide_new(mapping, product(mapping, Sku=sku))
    assert d.action is Action.QUARANTINE and d.cb_write is None
    assert d.held_side is Side.CUSTOMCRM and d.hold_kind == "invalid"
    assert "PRD-1" in (d.reason or "") and "Sku" in (d.reason or "")
    assert "correct Sku in Customcrm" in (d.reason or "")


def test_no_kind_waits_with_a_reason_that_says_what_to_do(mapping: Mapping) -> None:
    d = plan.decide_new(mapping, product(mapping, Kind=None))
    assert d.action is Action.WAIT
    assert "PRD-1" in (d.reason or "") and "Kind" in (d.reason or "")
    assert "fill it in Customcrm" in (d.reason or "")


@pytest.mark.parametrize("metadata", ["not json {", "tier=gold", [1, 2], "[1, 2]", 42])
def test_metadata_that_is_no_json_object_is_reported_not_crashing_the_write(
    mapping: Mapping, metadata: Any
) -> None:
    d = plan.decide_new(mapping, product(mapping, Metadata=metadata))
    assert d.action is Action.QUARANTINE
    assert "Metadata" in (d.reason or "") and "JSON object" in (d.reason or "")
    assert "fix it in Customcrm" in (d.reason or "")


def test_metadata_objects_pass_and_are_written_as_objects(mapping: Mapping) -> None:
    values = {"metadata": to_canonical(mapping, Side.CHARGEBEE, {"metadata": {"tier": "gold"}})["metadata"]}
    assert validate(mapping, values, source=Side.CHARGEBEE, target=Side.CUSTOMCRM) == []
    assert to_side(mapping, Side.CUSTOMCRM, values) == {"Metadata": {"tier": "gold"}}
    problems = validate(mapping, {"metadata": "tier=gold"}, source=Side.CHARGEBEE, target=Side.CUSTOMCRM)
    assert [p.field for p in problems] == ["metadata"] and "fix it in Chargebee" in problems[0].message


def test_a_name_cleared_in_customcrm_is_held_because_chargebee_cannot_clear_it(mapping: Mapping) -> None:
    """A clear is an edit, but Chargebee has no way to clear an item's name: the record is
    held with a reason that says so and what to do, instead of a write Chargebee refuses."""
    from crmsync.engine.plan import LinkState

    c = product(mapping, Name=None)
    base = {**c.values, "name": "Hub"}
    state = LinkState("PRD-1", "hp-1", base, base, dict(base), "1", "1")
    d = plan.decide_linked(mapping, state, c, None)
    assert d.action is Action.QUARANTINE and d.held_side is Side.CUSTOMCRM
    assert d.reason and "PRD-1" in d.reason and "Name was cleared in Customcrm" in d.reason
    assert "Chargebee item name cannot be cleared" in d.reason and "fill it in again in Customcrm" in d.reason


def test_a_unit_chargebee_takes_is_synced(mapping: Mapping) -> None:
    """Chargebee's items API: unit, max 30 chars."""
    d = plan.decide_new(mapping, product(mapping, Unit="u" * 30))
    assert d.action is Action.CREATE and d.cb_write is not None and d.cb_write.changes["unit"] == "u" * 30


def test_a_unit_longer_than_chargebee_s_30_characters_is_held_naming_record_and_field(
    mapping: Mapping,
) -> None:
    """Chargebee's items API: unit, max 30 chars. A longer Unit is not sent to be refused."""
    d = plan.decide_new(mapping, product(mapping, Unit="u" * 31))
    assert d.action is Action.QUARANTINE and d.cb_write is None
    assert d.held_side is Side.CUSTOMCRM and d.hold_kind == "invalid"
    reason = d.reason or ""
    assert "PRD-1" in reason and "Unit is 31 characters" in reason and "at most 30" in reason
    # an edit of a linked product too
    from crmsync.engine.plan import LinkState

    base = product(mapping).values
    state = LinkState("PRD-1", "hp-1", dict(base), dict(base), dict(base), "1", "1")
    d = plan.decide_linked(mapping, state, product(mapping, Unit="u" * 31), None)
    assert d.action is Action.QUARANTINE and d.held_side is Side.CUSTOMCRM and d.cb_write is None
    assert (
        d.reason and "PRD-1" in d.reason and "Unit is 31 characters" in d.reason and "at most 30" in d.reason
    )
