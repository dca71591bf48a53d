"""engine/pairing.py: claims, key groups and one-to-many pairing of unlinked records. Pure.

Examples per rule, and properties over generated groups. The flow-level tests
(tests/unit/flows/test_transform_match.py, test_transform_user_order.py,
test_tombstones.py) and the e2e tests (test_crash_references.py, test_order_flows.py,
test_customer_business_entity.py) run the same rules through the store.
"""

from __future__ import annotations

from pathlib import Path

from crmsync.engine.canonical import SideRecord, match_key
from crmsync.engine.pairing import (
    Claim,
    Defer,
    Emit,
    GroupContext,
    Step,
    claim_open,
    claims,
    decide_claim,
    decide_key,
    needs_linked_owner,
    one_to_many,
    tombstone,
)
from crmsync.engine.plan import Action
from crmsync.engine.refs import Translated
from crmsync.engine.status import HoldKind
from crmsync.mapping.model import Side, load_mapping
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[3]
CONTACTS = load_mapping(ROOT / "include" / "mappings" / "contact_customer.yaml")
USERS = load_mapping(ROOT / "include" / "mappings" / "user_order.yaml")
LAST = GroupContext(rule=0, last_rule=True)


def contact(rid: str, email: str = "a@x.com", **values: str | None) -> SideRecord:
    return SideRecord(Side.CUSTOMCRM, rid, {"email": email, "first_name": "A", **values}, 100, "1")


def customer(rid: str, email: str = "a@x.com", **values: str | None) -> SideRecord:
    return SideRecord(Side.CHARGEBEE, rid, {"email": email, "first_name": "A", **values}, 100, "1700")


def decisions(steps: list[Step]) -> list[tuple[Action, str | None, str | None]]:
    return [(s.decision.action, s.decision.crm_id, s.decision.cb_id) for s in steps if isinstance(s, Emit)]


# --- claims ----------------------------------------------------------------------------------


def test_claims_pair_made_records_with_their_source() -> None:
    found = claims(CONTACTS, [("C1", "cus_x")], ["crm-C2", "other"])
    assert found == [Claim("C1", "cus_x", Side.CUSTOMCRM), Claim("C2", "crm-C2", Side.CHARGEBEE)]
    assert claims(CONTACTS, [("C1", "a"), ("C1", "b")], []) == [], "a record claimed twice is never guessed"
    assert claims(USERS, [("U1", "ord_1")], []) == [], "one-to-many flows claim nothing"


def test_a_claim_links_only_records_read_unlinked_and_not_ended() -> None:
    c = Claim("C1", "crm-C1", Side.CHARGEBEE)
    assert claim_open(c, {"C1"}, {"crm-C1"}, {})
    assert not claim_open(c, set(), {"crm-C1"}, {})
    assert not claim_open(c, {"C1"}, {"crm-C1"}, {Side.CHARGEBEE: {"crm-C1"}}), "ended by unlink: match only"


def test_a_made_customer_keeps_its_unlinked_default_entity_pending() -> None:
    raw = customer("crm-C1", company_id="be_default")
    translated = Translated(customer("crm-C1"), soft="its company_id is not linked yet")
    step = decide_claim(CONTACTS, Claim("C1", "crm-C1", Side.CHARGEBEE), contact("C1"), raw, translated)
    assert step.decision.action is Action.LINK_BY_MATCH
    assert (
        step.decision.reason is not None
        and "earlier run that did not record the link" in step.decision.reason
    )
    assert step.pending == {"company_id": "be_default"} and step.soft is None
    by_ref = decide_claim(CONTACTS, Claim("C1", "crm-C1", Side.CUSTOMCRM), contact("C1"), raw, translated)
    assert by_ref.pending == {} and by_ref.soft == "its company_id is not linked yet"


# --- key groups ------------------------------------------------------------------------------


def test_one_per_side_links_and_a_waiting_reference_links_too() -> None:
    steps = decide_key(CONTACTS, "a@x.com", [contact("C1"), customer("K1")], LAST, {"K1": "why"})
    assert decisions(steps) == [(Action.LINK_BY_MATCH, "C1", "K1")]
    assert isinstance(steps[0], Emit) and steps[0].soft == "why"


def test_unmatched_records_defer_until_the_last_rule_then_wait_skip_or_create() -> None:
    early = GroupContext(rule=0, last_rule=False)
    assert decide_key(CONTACTS, "a@x.com", [contact("C1")], early, {}) == [Defer(Side.CUSTOMCRM, "C1")]
    survivors = GroupContext(rule=0, last_rule=True, survivors={Side.CUSTOMCRM: {"C1"}})
    assert decisions(decide_key(CONTACTS, "a@x.com", [contact("C1")], survivors, {})) == [
        (Action.SKIP, "C1", None)
    ]
    assert decisions(decide_key(CONTACTS, None, [customer("K1")], LAST, {"K1": "why"})) == [
        (Action.WAIT, None, "K1")
    ]
    assert decisions(decide_key(CONTACTS, "a@x.com", [contact("C1")], LAST, {})) == [
        (Action.CREATE, "C1", None)
    ]


def test_a_key_shared_or_taken_is_ambiguous() -> None:
    group = [contact("C1"), contact("C2"), customer("K1")]
    steps = decide_key(CONTACTS, "a@x.com", group, LAST, {})
    assert [a for a, _, _ in decisions(steps)] == [Action.QUARANTINE] * 3
    taken = GroupContext(rule=0, last_rule=True, taken={"a@x.com": ("C9", "K9")})
    steps = decide_key(CONTACTS, "a@x.com", [contact("C1")], taken, {})
    assert isinstance(steps[0], Emit) and steps[0].decision.hold_kind is HoldKind.AMBIGUOUS


def test_a_tombstone_ended_by_an_earlier_run_says_nothing() -> None:
    gone = SideRecord(Side.CHARGEBEE, "K1", {}, deleted=True)
    assert tombstone(CONTACTS, gone, {Side.CHARGEBEE: {"K1"}}) is None
    step = tombstone(CONTACTS, gone, {})
    assert step is not None and step.decision.action is Action.SKIP


# --- one-to-many -----------------------------------------------------------------------------


def user(rid: str, email: str = "u@x.com") -> SideRecord:
    return SideRecord(Side.CUSTOMCRM, rid, {"email": email}, 100, "1")


def orders(n: int, email: str = "u@x.com") -> list[SideRecord]:
    return [SideRecord(Side.CHARGEBEE, f"ord_{i}", {"email": email}, 100, "1") for i in range(n)]


def test_one_user_links_every_order_with_its_email() -> None:
    steps = one_to_many(USERS, [user("U1")], orders(3), None)
    assert decisions(list(steps)) == [(Action.LINK_BY_MATCH, "U1", f"ord_{i}") for i in range(3)]


def test_orders_of_a_linked_user_link_to_it() -> None:
    ctx = GroupContext(rule=0, last_rule=True, taken={"u@x.com": ("U1", "ord_0")})
    assert needs_linked_owner(USERS, "u@x.com", orders(2), ctx)
    assert not needs_linked_owner(USERS, "u@x.com", [user("U2"), *orders(1)], ctx)
    assert not needs_linked_owner(CONTACTS, "u@x.com", orders(1), ctx), "one-to-one: taken is ambiguous"
    steps = decide_key(USERS, "u@x.com", orders(2), ctx, {}, linked_owner=user("U1"))
    assert decisions(steps) == [(Action.LINK_BY_MATCH, "U1", "ord_0"), (Action.LINK_BY_MATCH, "U1", "ord_1")]


# --- properties ------------------------------------------------------------------------------

emails = st.sampled_from(["a@x.com", "b@x.com"])
group_st = st.tuples(
    st.lists(emails, max_size=3), st.lists(emails, max_size=3), st.booleans(), st.booleans(), st.booleans()
)


@settings(max_examples=300, deadline=None)
@given(group=group_st, rule_last=st.booleans())
def test_every_live_record_gets_exactly_one_step(
    group: tuple[list[str], list[str], bool, bool, bool], rule_last: bool
) -> None:
    crm_emails, cb_emails, taken, survivor, wait_first = group
    recs = [contact(f"C{i}", e) for i, e in enumerate(crm_emails)] + [
        customer(f"K{i}", e) for i, e in enumerate(cb_emails)
    ]
    key = "a@x.com"
    live = [r for r in recs if match_key(CONTACTS, r.values) == key]
    ctx = GroupContext(
        rule=0,
        last_rule=rule_last,
        survivors={Side.CUSTOMCRM: {"C0"}} if survivor else {},
        taken={key: ("C9", "K9")} if taken else {},
    )
    waits = {"K0": "why"} if wait_first else {}
    steps = decide_key(CONTACTS, key, live, ctx, waits)
    seen: list[tuple[Side, str]] = []
    for s in steps:
        if isinstance(s, Defer):
            assert not rule_last, "the last rule defers nothing"
            seen.append((s.side, s.id))
            continue
        d = s.decision
        if d.action is Action.LINK_BY_MATCH:
            assert s.crm is not None and s.cb is not None and not taken
            seen += [(Side.CUSTOMCRM, s.crm.id), (Side.CHARGEBEE, s.cb.id)]
            assert s.soft == waits.get(s.cb.id)
        else:
            one = s.crm or s.cb
            assert one is not None and (s.crm is None or s.cb is None)
            seen.append((one.side, one.id))
            assert s.soft is None, "only a link carries a ref-pending reason"
            assert not (d.action is Action.CREATE and one.id in waits), "a waiting record is never created"
    assert sorted(seen) == sorted((r.side, r.id) for r in live)
    links = [s for s in steps if isinstance(s, Emit) and s.decision.action is Action.LINK_BY_MATCH]
    crms = [r for r in live if r.side is Side.CUSTOMCRM]
    assert len(links) == (1 if len(crms) == 1 and len(live) == 2 and not taken else 0)


@settings(max_examples=300, deadline=None)
@given(n_users=st.integers(0, 3), n_orders=st.integers(0, 4), linked=st.booleans())
def test_one_to_many_properties(n_users: int, n_orders: int, linked: bool) -> None:
    users = [user(f"U{i}") for i in range(n_users)]
    owner = user("U9") if linked else None
    steps = one_to_many(USERS, users, orders(n_orders), owner)
    acts = [s.decision.action for s in steps]
    if n_users > 1:
        assert acts == [Action.QUARANTINE] * (n_users + n_orders), "several users: every record held"
    elif n_users == 1 or linked:
        expect = users[0].id if users else "U9"
        if n_orders:
            assert all(s.decision.crm_id == expect for s in steps) and len(steps) == n_orders
            assert set(acts) == {Action.LINK_BY_MATCH}
        else:
            assert len(steps) == 1 and steps[0].crm is not None and steps[0].cb is None
            assert steps[0].decision.crm_id == expect
    else:
        assert len(steps) == n_orders, "no user: each order decided alone"
        assert all(s.crm is None and s.cb is not None for s in steps)
        assert Action.LINK_BY_MATCH not in acts


@settings(max_examples=200, deadline=None)
@given(
    refs=st.lists(st.tuples(st.sampled_from(["C1", "C2", "C3"]), st.sampled_from(["k1", "k2"])), max_size=4),
    made=st.lists(st.sampled_from(["crm-C1", "crm-C2", "crm-C4", "x"]), max_size=3),
)
def test_claims_never_name_a_record_twice(refs: list[tuple[str, str]], made: list[str]) -> None:
    found = claims(CONTACTS, refs, made)
    assert len({c.crm_id for c in found}) == len(found) == len({c.cb_id for c in found})
    for c in found:
        by_ref = (c.crm_id, c.cb_id) in refs
        assert by_ref or c.cb_id == f"crm-{c.crm_id}"
        assert c.made_side is (Side.CUSTOMCRM if by_ref else Side.CHARGEBEE)
