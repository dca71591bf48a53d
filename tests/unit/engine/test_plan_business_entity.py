"""customer_business_entity: a broken match key is held, never matched or reported as
"no match". Found by tests/chaos/test_hostile_input_business_entity.py: an entity whose
name was a list linked to a customer whose Name was a list (both had the same wrong-type
marker as match key); Customcrm customers with a blank or control-character Name were
skipped as "no match; create the entity in Chargebee"; duplicate names were held with a
reason that did not name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from crmsync.engine import plan
from crmsync.engine.canonical import SideRecord, match_key, to_canonical
from crmsync.engine.plan import Action
from crmsync.mapping.model import Mapping, Side, load_mapping

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def mapping() -> Mapping:
    return load_mapping(ROOT / "include" / "mappings" / "customer_business_entity.yaml")


def customer(mapping: Mapping, name: Any) -> SideRecord:
    return SideRecord(Side.CUSTOMCRM, "CUS-1", to_canonical(mapping, Side.CUSTOMCRM, {"Name": name}))


def entity(mapping: Mapping, name: Any) -> SideRecord:
    return SideRecord(Side.CHARGEBEE, "be_1", to_canonical(mapping, Side.CHARGEBEE, {"name": name}))


@pytest.mark.parametrize("name", [["Acme", "AS"], {"name": "Acme"}, True, "Bad\x00Name", "Acme\x07 AS"])
def test_a_wrong_type_or_control_characters_are_no_match_key(mapping: Mapping, name: Any) -> None:
    assert match_key(mapping, customer(mapping, name).values) is None
    assert match_key(mapping, entity(mapping, name).values) is None


@pytest.mark.parametrize(
    ("name", "says"),
    [
        (None, "Name is empty"),
        ("   ", "Name is empty"),
        ("Acme\x07 AS", "Name contains control characters; remove them in Customcrm"),
        (["Acme"], "Name holds a list, not text; correct it in Customcrm"),
    ],
)
def test_a_customer_with_a_broken_name_is_held_not_reported_as_unmatched(
    mapping: Mapping, name: Any, says: str
) -> None:
    d = plan.decide_new(mapping, customer(mapping, name))
    assert d.action is Action.QUARANTINE and d.hold_kind == "invalid", d
    assert "CUS-1" in (d.reason or "") and says in (d.reason or "")


def test_a_customer_with_a_good_name_and_no_entity_is_reported_with_what_to_do(mapping: Mapping) -> None:
    d = plan.decide_new(mapping, customer(mapping, "Brand New AS"))
    assert d.action is Action.SKIP and d.held_side is None
    assert "CUS-1" in (d.reason or "") and "create the entity in Chargebee" in (d.reason or "")


def test_an_entity_with_a_broken_name_is_held(mapping: Mapping) -> None:
    d = plan.decide_new(mapping, entity(mapping, ["Acme"]))
    assert (
        d.action is Action.QUARANTINE
        and "be_1" in (d.reason or "")
        and "name holds a list" in (d.reason or "")
    )


def test_an_ambiguous_reason_names_the_match_key(mapping: Mapping) -> None:
    d = plan.ambiguous(mapping, entity(mapping, "Twice AS"), ["Chargebee be_1", "Chargebee be_2"], "shared")
    assert "be_1" in (d.reason or "") and "(name)" in (d.reason or "")


def test_a_very_long_name_is_a_match_key_the_link_store_can_hold(mapping: Mapping) -> None:
    long = "ø" * 600
    k = match_key(mapping, entity(mapping, long).values)
    assert k is not None and len(k) <= 512
    assert k == match_key(mapping, customer(mapping, f"  {long.upper()} ").values)
    assert k != match_key(mapping, entity(mapping, long + "x").values)
    assert match_key(mapping, entity(mapping, "ø" * 512).values) == "ø" * 512
