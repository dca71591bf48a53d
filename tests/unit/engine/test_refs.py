"""engine/refs.py: reference translation over known links. Pure.

Examples per rule, and properties over generated records and links. The flow-level
tests (tests/unit/flows/test_pending_refs.py, test_clears.py) and the e2e tests
(test_crash_references.py, test_entity_on_create.py, test_order_flows.py) run the same
rules through the link store.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from crmsync.engine.canonical import SideRecord
from crmsync.engine.plan import NEEDS_A_PERSON, Action, Decision, LinkState, Op, SideWrite
from crmsync.engine.refs import (
    KnownLinks,
    chargebee_lookups,
    customcrm_lookups,
    decision_lookups,
    hold_ref_pending,
    pending_lookups,
    pending_refs,
    resolve_link,
    to_chargebee,
    translate_decision,
    translate_record,
)
from crmsync.engine.settle import PENDING_REFS
from crmsync.engine.status import HoldKind
from crmsync.mapping.model import Mapping, Side, load_mapping
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[3]
ORDERS = load_mapping(ROOT / "include" / "mappings" / "order_order.yaml")
CONTACTS = load_mapping(ROOT / "include" / "mappings" / "contact_customer.yaml")
CUSTOMERS, USERS, ENTITIES = "contact_customer", "user_order", "customer_business_entity"


@pytest.fixture(scope="module")
def m() -> Mapping:
    return ORDERS


def order(contact: str | None = "cus_1", owner: str | None = "ord_u1", **values: str | None) -> SideRecord:
    return SideRecord(
        Side.CHARGEBEE, "ord_9", {"contact_id": contact, "owner_id": owner, "note": "n", **values}
    )


def test_linked_references_are_translated_to_customcrm_ids(m: Mapping) -> None:
    links = KnownLinks(cb_to_crm={(CUSTOMERS, "cus_1"): "C1", (USERS, "ord_u1"): "U1"})
    t = translate_record(m, order(), links)
    assert t.record.values == {"contact_id": "C1", "owner_id": "U1", "note": "n"}
    assert t.hard is None and t.soft is None


def test_an_unlinked_required_reference_waits_and_an_optional_one_is_soft(m: Mapping) -> None:
    t = translate_record(m, order(), KnownLinks())
    assert "contact_id" not in t.record.values and "owner_id" not in t.record.values, "unknown, not a clear"
    assert t.hard is not None and "cus_1" in t.hard and "flow contact_customer links it" in t.hard
    assert t.soft is not None and t.soft.endswith(NEEDS_A_PERSON), "owner: ref_missing_fix names a person"


def test_customcrm_records_and_flows_without_references_are_left_alone(m: Mapping) -> None:
    crm = SideRecord(Side.CUSTOMCRM, "O1", {"contact_id": "C1"})
    assert translate_record(m, crm, KnownLinks()).record is crm
    users = load_mapping(ROOT / "include" / "mappings" / "user_order.yaml")
    rec = SideRecord(Side.CHARGEBEE, "ord_1", {"email": "a@x"})
    assert translate_record(users, rec, KnownLinks()).record is rec


def test_to_chargebee_translates_or_says_why_not(m: Mapping) -> None:
    links = KnownLinks(crm_to_cb={(CUSTOMERS, "C1"): "cus_1"})
    assert to_chargebee(m, {"contact_id": "C1", "note": "x"}, links) == (
        {"contact_id": "cus_1", "note": "x"},
        None,
    )
    out, why = to_chargebee(m, {"contact_id": "C2"}, links)
    assert out == {"contact_id": None} and why is not None and "C2 is not linked to Chargebee yet" in why
    assert to_chargebee(m, {"contact_id": None}, KnownLinks()) == ({"contact_id": None}, None), (
        "a clear is sent"
    )


def test_a_create_whose_on_create_reference_is_unlinked_is_created_with_the_default() -> None:
    d = Decision(
        Action.CREATE, "C1", None, cb_write=SideWrite(Op.CREATE, {"email": "a@x", "company_id": "CU1"})
    )
    out = translate_decision(CONTACTS, d, None, KnownLinks())
    assert out.action is Action.CREATE and out.cb_write is not None
    assert out.cb_write.changes == {"email": "a@x"}, "left out: Chargebee applies its default entity"
    assert [n.kind for n in out.notes] == ["created_with_default"]
    linked = translate_decision(CONTACTS, d, None, KnownLinks(crm_to_cb={(ENTITIES, "CU1"): "be_1"}))
    assert linked.cb_write is not None and linked.cb_write.changes == {"email": "a@x", "company_id": "be_1"}
    assert not linked.notes


def test_an_update_with_an_unlinked_reference_holds_the_source(m: Mapping) -> None:
    src = SideRecord(Side.CUSTOMCRM, "O1", {"contact_id": "C2"})
    d = Decision(Action.UPDATE, "O1", "ord_1", cb_write=SideWrite(Op.UPDATE, {"contact_id": "C2"}))
    out = translate_decision(m, d, src, KnownLinks())
    assert out.action is Action.WAIT and out.held_side is Side.CUSTOMCRM and out.cb_id == "ord_1"
    assert decision_lookups(m, d) == {(CUSTOMERS, "C2")}
    assert (
        translate_decision(m, Decision(Action.UNCHANGED, "O1", "ord_1"), src, KnownLinks()).action
        is Action.UNCHANGED
    )


def test_resolve_link_translates_pending_references_and_drops_the_marker() -> None:
    pending = {PENDING_REFS: {"company_id": "be_1"}}
    state = LinkState("C1", "cus_1", {"email": "a", **pending}, {}, {"email": "a", **pending})
    assert pending_lookups(CONTACTS, state) == {(ENTITIES, "be_1")}
    before = resolve_link(CONTACTS, state, KnownLinks())
    assert before.base == {"email": "a", "company_id": None}, "base: nothing agreed"
    assert before.cb_snapshot == {"email": "a"}, "snapshot: unknown, never a clear"
    after = resolve_link(CONTACTS, state, KnownLinks(cb_to_crm={(ENTITIES, "be_1"): "CU1"}))
    assert after.base["company_id"] == "CU1" == after.cb_snapshot["company_id"]
    plain = LinkState("C1", "cus_1", {}, {}, {})
    assert resolve_link(CONTACTS, plain, KnownLinks()) is plain


def test_hold_ref_pending() -> None:
    d = Decision(Action.UPDATE, "C1", "cus_1")
    held, settled = hold_ref_pending(CONTACTS, d, "cus_1", "its company_id is not linked yet")
    assert settled and held.held_side is Side.CHARGEBEE and held.hold_kind is HoldKind.REF_PENDING
    assert held.reason is not None and "the other fields are synced" in held.reason
    assert hold_ref_pending(CONTACTS, d, "cus_1", None) == (d, False)
    waiting = Decision(Action.WAIT, "C1", "cus_1", held_side=Side.CUSTOMCRM, hold_kind=HoldKind.WAITING)
    assert hold_ref_pending(CONTACTS, waiting, "cus_1", "x") == (waiting, False), "keeps its own reason"
    skip = Decision(Action.SKIP, None, "cus_1")
    assert hold_ref_pending(CONTACTS, skip, "cus_1", "x") == (skip, True), "nothing syncs: dropped"


def test_pending_refs_names_the_untranslated_ones() -> None:
    assert pending_refs(CONTACTS, {"company_id": "be_1", "email": "a"}, {"email": "a"}) == {
        "company_id": "be_1"
    }
    assert pending_refs(CONTACTS, {"company_id": "be_1"}, {"company_id": "CU1"}) == {}


# --- properties ------------------------------------------------------------------------------

ids = st.sampled_from(["a", "b", "c", "d"])
maybe_id = st.one_of(st.none(), ids)
#: a link store links each record once: partners are one-to-one (None: read, not linked)
partners = st.dictionaries(ids, st.booleans(), max_size=4).map(
    lambda d: {k: (k.upper() if linked else None) for k, linked in d.items()}
)


def _links(customers: dict[str, str | None], users: dict[str, str | None]) -> KnownLinks:
    cb_to_crm = {(CUSTOMERS, k): v for k, v in customers.items()} | {(USERS, k): v for k, v in users.items()}
    crm_to_cb = {(flow, v): k for (flow, k), v in cb_to_crm.items() if v is not None}
    return KnownLinks(cb_to_crm, crm_to_cb)


@settings(max_examples=200, deadline=None)
@given(contact=maybe_id, owner=maybe_id, customers=partners, users=partners)
def test_translation_properties(
    contact: str | None, owner: str | None, customers: dict[str, str | None], users: dict[str, str | None]
) -> None:
    rec = order(contact, owner)
    links = _links(customers, users)
    t = translate_record(ORDERS, rec, links)
    assert t.record.values["note"] == "n", "other fields untouched"
    for name, raw, partner, reason in (
        ("contact_id", contact, customers.get(contact or ""), t.hard),
        ("owner_id", owner, users.get(owner or ""), t.soft),
    ):
        if raw is None:
            assert t.record.values[name] is None
        elif partner is not None:
            assert t.record.values[name] == partner
        else:
            assert name not in t.record.values, "an unlinked reference is unknown, never a clear"
            assert reason is not None
    assert (t.hard is None) == (contact is None or customers.get(contact) is not None)
    assert (t.soft is None) == (owner is None or users.get(owner) is not None)
    # the links the lookups name are all it reads
    wanted = chargebee_lookups(ORDERS, [rec])
    only = KnownLinks({k: v for k, v in links.cb_to_crm.items() if k in wanted})
    assert translate_record(ORDERS, rec, only) == t
    # and back: a translated reference goes to Chargebee as the id it came from
    if t.hard is None and contact is not None:
        back, why = to_chargebee(ORDERS, {"contact_id": t.record.values["contact_id"]}, links)
        assert why is None and back == {"contact_id": contact}
        assert customcrm_lookups(ORDERS, {"contact_id": t.record.values["contact_id"]}) <= set(
            links.crm_to_cb
        )


@settings(max_examples=200, deadline=None)
@given(
    entity=ids,
    linked=st.one_of(st.none(), st.just("CU1")),
    base_has=st.booleans(),
    snap_has=st.booleans(),
    known=st.one_of(st.none(), st.just("CU0")),
)
def test_resolve_link_properties(
    entity: str, linked: str | None, base_has: bool, snap_has: bool, known: str | None
) -> None:
    marker = {PENDING_REFS: {"company_id": entity}}
    base = {"email": "a", "company_id": known, **(marker if base_has else {})}
    snap = {"email": "a", **(marker if snap_has else {})}
    state = LinkState("C1", "cus_1", base, {}, snap)
    out = resolve_link(CONTACTS, state, KnownLinks({(ENTITIES, entity): linked}))
    assert PENDING_REFS not in out.base and PENDING_REFS not in out.cb_snapshot, "never reaches the merge"
    if base_has:
        assert out.base["company_id"] == (known if known is not None else linked)
    else:
        assert out.base == base
    if snap_has and linked is not None:
        assert out.cb_snapshot["company_id"] == linked
    else:
        assert "company_id" not in out.cb_snapshot
    assert out.crm_id == "C1" and out.cb_id == "cus_1"


actions = st.sampled_from(list(Action))
held_sides = st.one_of(st.none(), st.sampled_from(list(Side)))


@settings(max_examples=200, deadline=None)
@given(action=actions, held=held_sides, soft=st.one_of(st.none(), st.just("why")))
def test_hold_ref_pending_properties(action: Action, held: Side | None, soft: str | None) -> None:
    d = Decision(action, "C1", "cus_1", held_side=held)
    out, settled = hold_ref_pending(CONTACTS, d, "cus_1", soft)
    if out is not d:
        assert soft is not None and held is None and settled
        assert out.hold_kind is HoldKind.REF_PENDING and out.action is action
    if action in (Action.UNLINK, Action.DELETE, Action.SKIP):
        assert out is d and settled, "nothing syncs: the reason is never replaced"
    elif held is not None or soft is None:
        assert out is d and not settled
