"""Mapping files are validated at parse time with messages that name the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from crmsync.mapping.model import MappingError, load_mapping, load_mappings, parse_mapping
from crmsync.mapping.transforms import check_format, email, strip

ROOT = Path(__file__).resolve().parents[3]


def base() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "include/mappings/contact_customer.yaml").read_text())


def test_shipped_mappings_are_valid() -> None:
    flows = [m.flow for m in load_mappings(ROOT / "include/mappings")]
    assert "contact_customer" in flows


def test_unknown_match_key() -> None:
    doc = base()
    doc["match"]["keys"] = ["nope"]
    with pytest.raises(MappingError, match="match key 'nope' is not one of the fields"):
        parse_mapping(doc, source="x.yaml")


def test_unknown_transform_lists_the_choices() -> None:
    doc = base()
    doc["fields"][0]["transform"] = "shout"
    with pytest.raises(MappingError, match=r"fields\.0\.transform: unknown transform 'shout'; use one of"):
        parse_mapping(doc)


def test_unknown_key_is_rejected() -> None:
    doc = base()
    doc["fields"][0]["colour"] = "blue"
    with pytest.raises(MappingError, match="colour"):
        parse_mapping(doc)


def test_writing_a_field_chargebee_cannot_write_is_rejected() -> None:
    doc = base()
    doc["fields"].append({"name": "created", "customcrm": "CreatedAt", "chargebee": "created_at"})
    with pytest.raises(MappingError, match=r"Chargebee cannot write .*direction: to_customcrm"):
        parse_mapping(doc)
    doc["fields"][-1]["direction"] = "to_customcrm"
    assert parse_mapping(doc).field("created").direction.value == "to_customcrm"


def test_create_id_must_be_deterministic() -> None:
    doc = base()
    doc["chargebee"]["create_id"] = "cust-{random}"
    with pytest.raises(MappingError, match="crm_id"):
        parse_mapping(doc)


def test_bad_yaml_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "broken.yaml"
    p.write_text("flow: [unclosed\n")
    with pytest.raises(MappingError, match=r"broken\.yaml: not valid YAML"):
        load_mapping(p)


def test_transforms() -> None:
    assert email("  Ada@Example.COM ") == "ada@example.com"
    assert strip("   ") is None and strip(None) is None
    assert check_format("email", "a@@b") is not None and check_format("email", "a@b.io") is None
    assert check_format("country_code", "NO") is None and check_format("country_code", "Norway")


def test_change_events_must_be_event_type_names() -> None:
    doc = yaml.safe_load((ROOT / "include/mappings/customer_business_entity.yaml").read_text())
    assert parse_mapping(doc).chargebee.change_events[-1] == "business_entity_deleted"
    doc["chargebee"]["change_events"] = ["Business Entity Updated"]
    with pytest.raises(MappingError, match="change_events must be Chargebee event types"):
        parse_mapping(doc)


def test_on_create_only_for_fields_that_flow_to_customcrm() -> None:
    doc = base()
    field = next(f for f in doc["fields"] if f["name"] == "email")
    field["on_create"] = True
    with pytest.raises(MappingError, match="on_create: true, which only applies to a field with"):
        parse_mapping(doc)


def test_on_create_needs_a_create_parameter() -> None:
    doc = yaml.safe_load((ROOT / "include/mappings/product_item.yaml").read_text())
    doc["fields"].append(
        {"name": "made", "customcrm": "CreatedAt", "chargebee": "created_at", "direction": "to_customcrm"}
    )
    parse_mapping(doc)
    doc["fields"][-1]["on_create"] = True
    with pytest.raises(MappingError, match="does not accept created_at; remove on_create"):
        parse_mapping(doc)


def test_ref_absent_when_needs_a_ref_and_the_shared_rule() -> None:
    doc = base()
    field = next(f for f in doc["fields"] if f["name"] == "email")
    field["ref_absent_when"] = {"chargebee": "created_by", "no_person": True}
    with pytest.raises(MappingError, match="ref_absent_when, which only applies to a field with `ref:`"):
        parse_mapping(doc)
    doc = yaml.safe_load((ROOT / "include/mappings/order_order.yaml").read_text())
    owner = next(f for f in doc["fields"] if f["name"] == "owner_id")
    # the pattern of old mapping files: one rule now, said how to migrate
    owner["ref_absent_when"] = {"chargebee": "created_by", "matches": "[a-z0-9_-]+"}
    with pytest.raises(MappingError, match="replaced by `no_person: true`"):
        parse_mapping(doc)


def test_order_owner_is_absent_exactly_for_the_orders_user_order_never_links() -> None:
    """order_order must not wait for an owner link that user_order will never make: the
    two mappings name the same Chargebee value and the same rule."""
    orders = load_mapping(ROOT / "include/mappings/order_order.yaml")
    users = load_mapping(ROOT / "include/mappings/user_order.yaml")
    absent = orders.field("owner_id").ref_absent_when
    assert orders.field("owner_id").ref == users.flow and absent is not None
    (key,) = users.match.keys
    assert absent.chargebee == users.field(key).chargebee
    # both ask the product's one rule (crmsync.mapping.creators), not patterns of their own
    assert absent.no_person and users.chargebee.no_partner == absent.chargebee


def test_delete_policy_approve_is_accepted_on_either_side() -> None:
    from crmsync.mapping.model import DeletePolicy, Side

    doc = base()
    doc["delete"] = {"on_customcrm_delete": "approve", "on_chargebee_delete": "approve"}
    m = parse_mapping(doc)
    assert m.delete.policy_for(Side.CUSTOMCRM) is DeletePolicy.APPROVE
    assert m.delete.policy_for(Side.CHARGEBEE) is DeletePolicy.APPROVE
    doc["delete"]["on_chargebee_delete"] = "ask"
    with pytest.raises(MappingError, match="on_chargebee_delete"):
        parse_mapping(doc)


@pytest.mark.parametrize("policy", ["approve", "propagate"])
def test_a_delete_chargebee_cannot_make_is_rejected(policy: str) -> None:
    doc = yaml.safe_load((ROOT / "include/mappings/order_order.yaml").read_text())
    doc["delete"] = {"on_customcrm_delete": policy}
    with pytest.raises(MappingError, match=f"on_customcrm_delete: {policy} would delete Chargebee order"):
        parse_mapping(doc)
    doc["delete"] = {"on_chargebee_delete": policy}  # deletes in Customcrm: fine
    assert parse_mapping(doc).delete.on_chargebee_delete.value == policy
