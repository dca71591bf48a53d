"""Issue 11 item 4: every skip, hold and pending reason names the record (side, label,
id), says truthfully what happened, and says what a person can do; a hold that waits on
a person does not promise that the next run retries it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from crmsync.engine import plan
from crmsync.engine.canonical import SideRecord, to_canonical
from crmsync.engine.plan import Action, LinkState
from crmsync.flows.refs import unresolved
from crmsync.mapping.model import Mapping, Side, load_mapping, parse_mapping

ROOT = Path(__file__).resolve().parents[3]


def load(flow: str) -> Mapping:
    return load_mapping(ROOT / "include" / "mappings" / f"{flow}.yaml")


@pytest.fixture(scope="module")
def contacts() -> Mapping:
    return load("contact_customer")


def contact(m: Mapping, deleted: bool = False) -> SideRecord:
    raw = {f.customcrm: None for f in m.fields} | {"Email": "ada@example.com"}
    return SideRecord(Side.CUSTOMCRM, "CON-000009", to_canonical(m, Side.CUSTOMCRM, raw), 1.0, "3", deleted)


def customer(m: Mapping, deleted: bool = False) -> SideRecord:
    values = to_canonical(m, Side.CHARGEBEE, {"email": "ada@example.com"})
    return SideRecord(Side.CHARGEBEE, "crm-CON-000009", values, 1.0, "1", deleted)


def link(m: Mapping) -> LinkState:
    c, k = contact(m), customer(m)
    return LinkState(c.id, k.id, dict(c.values), dict(c.values), dict(k.values))


def test_a_record_deleted_before_it_was_linked_is_named(contacts: Mapping) -> None:
    d = plan.decide_new(contacts, contact(contacts, deleted=True))
    assert d.action is Action.SKIP
    assert (
        d.reason
        == "Customcrm contact CON-000009: deleted in Customcrm before it was ever linked; nothing to do"
    )


def test_a_linked_record_deleted_under_unlink_says_so_and_names_both(contacts: Mapping) -> None:
    d = plan.decide_linked(contacts, link(contacts), contact(contacts, deleted=True), None)
    assert d.action is Action.UNLINK and d.reason
    assert d.reason.startswith(
        "Customcrm contact CON-000009 was deleted in Customcrm; its link was ended by the unlink policy "
        "and Chargebee customer crm-CON-000009 is kept"
    )
    assert "before it was ever linked" not in d.reason
    assert "a new Customcrm record with the same Email is linked to it by match" in d.reason


@pytest.mark.parametrize("policy", ["propagate", "restore"])
def test_other_delete_policies_name_both_records(contacts: Mapping, policy: str) -> None:
    m = parse_mapping(
        {**contacts.model_dump(mode="json"), "delete": {"on_chargebee_delete": policy}}, source="t"
    )
    d = plan.decide_linked(m, link(m), None, customer(m, deleted=True))
    assert d.reason and d.reason.startswith("Chargebee customer crm-CON-000009 was deleted in Chargebee")
    assert f"delete policy {policy}" in d.reason and "Customcrm contact CON-000009" in d.reason
    both = plan.decide_linked(m, link(m), contact(m, deleted=True), customer(m, deleted=True))
    assert both.reason == (
        "Customcrm contact CON-000009 ⇄ Chargebee customer crm-CON-000009: deleted on both sides; "
        "the link is ended"
    )


def test_a_survivor_is_named_and_told_how_to_sync_again(contacts: Mapping) -> None:
    d = plan.decide_survivor(contacts, contact(contacts))
    assert d.action is Action.SKIP and d.reason
    assert d.reason.startswith("Customcrm contact CON-000009: its linked Chargebee record was deleted")
    assert "create a Chargebee record with the same email" in d.reason


def order(m: Mapping, **raw: Any) -> SideRecord:
    from crmsync.engine.canonical import CHARGEBEE_META, side_record

    return side_record(m, Side.CHARGEBEE, {"id": "ord_42", "document_number": "9", **raw}, CHARGEBEE_META)


def test_an_owner_no_run_can_link_names_created_by_and_what_to_do() -> None:
    """order_order's owner is the user its created_by names: a person must act, and the
    reason shows who (not the order's own id, which is how the owner is looked up)."""
    m = load("order_order")
    owner = m.field("owner_id")
    rec = order(m, created_by="jane.roe@example.com")
    assert rec.hints == {"created_by": "jane.roe@example.com"}
    why = unresolved(owner, "ord_42", rec.hints)
    reason = plan.ref_pending_reason(m, rec.id, why)
    assert reason.startswith("Chargebee order ord_42: its OwnerUserId cannot be set")
    assert "created in Chargebee by 'jane.roe@example.com'" in reason
    assert "create that user in Customcrm with the email 'jane.roe@example.com'" in reason
    assert "set OwnerUserId on the Customcrm order by hand" in reason
    assert "retried next run" not in reason and "(id ord_42)" not in reason
    assert "stays held" in reason


def test_a_reference_another_flow_links_by_itself_is_retried() -> None:
    m = load("order_order")
    why = unresolved(m.field("contact_id"), "cus_7", {})
    assert "flow contact_customer links it when it runs" in why
    rec = order(m, customer_id="cus_7")
    d = plan.wait(m, rec, why)
    assert d.reason and d.reason.startswith(
        "Chargebee order ord_42: its contact_id (Chargebee customer_id cus_7)"
    )
    assert d.reason.endswith("it waits and is retried next run")


def test_an_order_without_invoice_waits_on_a_person() -> None:
    m = load("order_order")
    raw = {f.customcrm: None for f in m.fields} | {"Number": "5001", "Status": "new"}
    rec = SideRecord(Side.CUSTOMCRM, "ORD-7", to_canonical(m, Side.CUSTOMCRM, raw))
    d = plan.decide_new(m, rec)
    assert d.action is Action.WAIT and d.reason
    assert d.reason.startswith("Customcrm order ORD-7: InvoiceId is empty")
    assert "fill it in Customcrm" in d.reason and "retried next run" not in d.reason


def test_a_bad_fix_template_is_refused_when_the_mapping_is_parsed() -> None:
    m = load("order_order").model_dump(mode="json")
    for f in m["fields"]:
        if f["name"] == "owner_id":
            f["ref_missing_fix"] = "ask {0}"
    with pytest.raises(ValueError, match="ref_missing_fix is no valid template"):
        parse_mapping(m, source="t")


@pytest.mark.parametrize(
    "flow, side, raw, says",
    [
        ("quote_order", Side.CHARGEBEE, {"document_number": "7", "reference_id": "Q-9"}, "give the quote"),
        ("user_order", Side.CUSTOMCRM, {"Email": "ann@example.com"}, "nothing to do until they create one"),
        (
            "customer_business_entity",
            Side.CUSTOMCRM,
            {"Name": "Fjordlys AS"},
            "create the entity in Chargebee",
        ),
    ],
)
def test_a_record_this_flow_cannot_create_a_partner_for_says_what_to_do(
    flow: str, side: Side, raw: dict[str, Any], says: str
) -> None:
    m = load(flow)
    if side is Side.CUSTOMCRM:
        raw = {f.customcrm: None for f in m.fields} | raw
    rec = SideRecord(side, "REC-1", to_canonical(m, side, raw))
    d = plan.decide_new(m, rec)
    label = m.customcrm.label if side is Side.CUSTOMCRM else m.chargebee.label
    assert d.action is Action.SKIP and d.reason, d
    assert d.reason.startswith(f"{'Customcrm' if side is Side.CUSTOMCRM else 'Chargebee'} {label} REC-1: ")
    assert says in d.reason
