"""A dry run's plan as a person reads it (issue 14 item 2): per record and side,
create / update field by field old → new / delete / link, in each system's field names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crmsync.engine.plan_text import VALUE_MAX, PlanView, describe, show
from crmsync.mapping.model import load_mapping
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[3]
MAPPING = load_mapping(ROOT / "include/mappings/contact_customer.yaml")
FIELDS = {
    "email": ("Email", "email"),
    "first_name": ("FirstName", "first_name"),
    "city": ("City", "billing_address.city"),
}


def row(**kw: Any) -> PlanView:
    base: dict[str, Any] = {
        "action": "update",
        "crm_id": "42",
        "cb_id": "crm-42",
        "crm_op": None,
        "cb_op": None,
        "crm_changes": None,
        "cb_changes": None,
        "crm_before": None,
        "cb_before": None,
        "reason": None,
        "match_key": None,
    }
    base.update(kw)
    return PlanView(**base)  # type: ignore[typeddict-item]


def test_update_names_each_field_in_the_target_systems_words_old_to_new() -> None:
    lines = describe(
        MAPPING,
        row(
            cb_op="update",
            cb_changes={"email": "b@x.example", "city": "Oslo"},
            cb_before={"email": "a@x.example", "city": None, "first_name": "Ann"},
        ),
    )
    assert lines == [
        "update Chargebee customer crm-42 (⇄ Customcrm contact 42): "
        "billing_address.city (blank) → 'Oslo'; email 'a@x.example' → 'b@x.example'"
    ]


def test_create_lists_the_values_and_the_id_it_gets() -> None:
    lines = describe(
        MAPPING,
        row(
            action="create",
            crm_id="7",
            cb_id=None,
            crm_op=None,
            cb_op="create",
            cb_changes={"email": "c@x.example", "first_name": "Cy"},
        ),
    )
    assert lines == [
        "create Chargebee customer for Customcrm contact 7: email='c@x.example', first_name='Cy'"
    ]
    crm = describe(
        MAPPING,
        row(
            action="create", crm_id=None, cb_id="AzZ1", crm_op="create", crm_changes={"email": "c@x.example"}
        ),
    )
    assert crm == ["create Customcrm contact for Chargebee customer AzZ1: Email='c@x.example'"]


def test_both_sides_written_give_two_lines_and_link_delete_wait_one() -> None:
    both = describe(
        MAPPING,
        row(
            crm_op="update",
            crm_changes={"first_name": "Bo"},
            crm_before={"first_name": "Bob"},
            cb_op="update",
            cb_changes={"email": "e@x.example"},
            cb_before={"email": "d@x.example"},
        ),
    )
    assert both == [
        "update Customcrm contact 42 (⇄ Chargebee customer crm-42): FirstName 'Bob' → 'Bo'",
        "update Chargebee customer crm-42 (⇄ Customcrm contact 42): email 'd@x.example' → 'e@x.example'",
    ]
    assert describe(MAPPING, row(action="link_by_match", match_key="a@x.example")) == [
        "link Customcrm contact 42 ⇄ Chargebee customer crm-42 (match on a@x.example)"
    ]
    assert describe(MAPPING, row(action="delete", cb_op="delete")) == [
        "delete Chargebee customer crm-42 (its Customcrm contact 42 was deleted)"
    ]
    assert describe(MAPPING, row(action="wait", cb_id=None, reason="its company is not linked yet")) == [
        "wait Customcrm contact 42: its company is not linked yet"
    ]
    assert describe(MAPPING, row(action="quarantine", reason="Email is no email address")) == [
        "hold Customcrm contact 42 ⇄ Chargebee customer crm-42: Email is no email address"
    ]
    assert describe(MAPPING, row(action="unchanged")) == []


def test_long_values_are_shortened() -> None:
    shown = show("x" * 500)
    assert len(shown) == VALUE_MAX and shown.endswith("…")
    assert show("") == show(None) == "(blank)"


values = st.one_of(st.none(), st.text(max_size=80), st.integers())


@given(st.dictionaries(st.sampled_from(sorted(FIELDS)), st.tuples(values, values), min_size=1))
def test_every_changed_field_appears_once_with_its_new_value(changes: dict[str, tuple[Any, Any]]) -> None:
    lines = describe(
        MAPPING,
        row(
            crm_op="update",
            crm_changes={k: new for k, (_, new) in changes.items()},
            crm_before={k: old for k, (old, _) in changes.items()},
        ),
    )
    assert len(lines) == 1
    for k, (old, new) in changes.items():
        assert f"{FIELDS[k][0]} {show(old)} → {show(new)}" in lines[0]
