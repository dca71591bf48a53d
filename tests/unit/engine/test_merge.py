"""The three-way merge: exhaustive cases and properties over random records."""

from __future__ import annotations

from typing import Any

from crmsync.engine.merge import merge
from crmsync.mapping.model import Mapping, Side, parse_mapping
from hypothesis import given, settings
from hypothesis import strategies as st

FIELDS = ["a", "b", "c"]


def mapping(**overrides: Any) -> Mapping:
    doc: dict[str, Any] = {
        "flow": "t",
        "customcrm": {"resource": "contacts", "label": "contact"},
        "chargebee": {"resource": "customers", "label": "customer"},
        "match": {"keys": ["email"]},
        "fields": [
            {"name": "email", "customcrm": "Email", "chargebee": "email", "transform": "email"},
            {"name": "a", "customcrm": "A", "chargebee": "first_name"},
            {"name": "b", "customcrm": "B", "chargebee": "last_name"},
            {"name": "c", "customcrm": "C", "chargebee": "company"},
        ],
    }
    doc.update(overrides)
    return parse_mapping(doc)


M = mapping()


def rec(**kw: Any) -> dict[str, Any]:
    return {"email": "x@example.com", "a": None, "b": None, "c": None, **kw}


def test_nothing_changed_writes_nothing() -> None:
    r = merge(M, rec(a="1"), rec(a="1"), rec(a="1"))
    assert not r.writes and not r.conflicts


def test_one_side_edit_flows_to_the_other() -> None:
    r = merge(M, rec(a="1"), rec(a="2"), rec(a="1"))
    assert r.to_chargebee == {"a": "2"} and r.to_customcrm == {}
    r = merge(M, rec(a="1"), rec(a="1"), rec(a="3"))
    assert r.to_customcrm == {"a": "3"} and r.to_chargebee == {}


def test_different_fields_edited_on_both_sides_both_survive() -> None:
    r = merge(M, rec(a="1", b="1"), rec(a="2", b="1"), rec(a="1", b="9"))
    assert r.to_chargebee == {"a": "2"}
    assert r.to_customcrm == {"b": "9"}
    assert r.merged["a"] == "2" and r.merged["b"] == "9"
    assert not r.conflicts


def test_same_field_same_value_on_both_sides_is_settled() -> None:
    r = merge(M, rec(a="1"), rec(a="2"), rec(a="2"))
    assert not r.writes and not r.conflicts


def test_conflict_newest_wins_and_is_reported() -> None:
    r = merge(M, rec(a="1"), rec(a="crm"), rec(a="cb"), crm_updated_at=10, cb_updated_at=20)
    assert r.to_customcrm == {"a": "cb"} and not r.to_chargebee
    assert len(r.conflicts) == 1 and r.conflicts[0].winner is Side.CHARGEBEE
    r = merge(M, rec(a="1"), rec(a="crm"), rec(a="cb"), crm_updated_at=30, cb_updated_at=20)
    assert r.to_chargebee == {"a": "crm"}


def test_conflict_tie_goes_to_the_tie_breaker() -> None:
    m = mapping(conflict={"policy": "newest_wins", "tie_breaker": "chargebee"})
    r = merge(m, rec(a="1"), rec(a="crm"), rec(a="cb"), crm_updated_at=5, cb_updated_at=5)
    assert r.conflicts[0].winner is Side.CHARGEBEE and r.conflicts[0].rule == "tie_breaker"


def test_fixed_policies() -> None:
    for policy, winner in (("customcrm_wins", Side.CUSTOMCRM), ("chargebee_wins", Side.CHARGEBEE)):
        m = mapping(conflict={"policy": policy})
        r = merge(m, rec(a="1"), rec(a="crm"), rec(a="cb"), crm_updated_at=1, cb_updated_at=99)
        assert r.conflicts[0].winner is winner


def test_blank_never_overwrites_by_default() -> None:
    r = merge(M, rec(a="1"), rec(a=None), rec(a="1"))
    assert not r.writes
    assert r.merged["a"] == "1"
    assert [n.kind for n in r.notes] == ["blank_ignored"]


def test_blank_overwrites_when_the_field_says_so() -> None:
    m = mapping(
        fields=[
            {"name": "email", "customcrm": "Email", "chargebee": "email"},
            {"name": "a", "customcrm": "A", "chargebee": "first_name", "empty_overwrites": True},
        ]
    )
    r = merge(m, {"email": "e", "a": "1"}, {"email": "e", "a": None}, {"email": "e", "a": "1"})
    assert r.to_chargebee == {"a": None}


def test_first_link_fills_blanks_both_ways() -> None:
    r = merge(M, None, rec(a="1", b=None), rec(a=None, b="2"))
    assert r.to_chargebee == {"a": "1"} and r.to_customcrm == {"b": "2"}
    assert not r.conflicts


def test_one_way_field_reverts_edits_on_the_non_source_side() -> None:
    m = mapping(
        fields=[
            {"name": "email", "customcrm": "Email", "chargebee": "email"},
            {"name": "a", "customcrm": "A", "chargebee": "first_name", "direction": "to_customcrm"},
        ]
    )
    r = merge(m, {"email": "e", "a": "1"}, {"email": "e", "a": "edited"}, {"email": "e", "a": "1"})
    assert r.to_customcrm == {"a": "1"} and not r.to_chargebee
    assert r.notes[0].kind == "reverted_read_only"


def test_one_way_field_blanked_on_the_non_source_side_is_restored() -> None:
    """A Customcrm order whose Total is blank (made in Customcrm, or blanked there) takes
    Chargebee's total: the blank is a read-only edit, not a blank to keep."""
    fields = [
        {"name": "email", "customcrm": "Email", "chargebee": "email"},
        {"name": "a", "customcrm": "A", "chargebee": "first_name", "direction": "to_customcrm"},
    ]
    r = merge(
        mapping(fields=fields), {"email": "e", "a": "1"}, {"email": "e", "a": None}, {"email": "e", "a": "1"}
    )
    assert r.to_customcrm == {"a": "1"} and not r.to_chargebee
    assert [n.kind for n in r.notes] == ["reverted_read_only"]
    # keep: the blank stays (reported); a blank on the source side never blanks the other
    keep = mapping(fields=fields, read_only_edits="keep")
    r = merge(keep, {"email": "e", "a": "1"}, {"email": "e", "a": None}, {"email": "e", "a": "1"})
    assert not r.writes and [n.kind for n in r.notes] == ["blank_ignored"]
    r = merge(
        mapping(fields=fields), {"email": "e", "a": "1"}, {"email": "e", "a": "1"}, {"email": "e", "a": None}
    )
    assert not r.writes and [n.kind for n in r.notes] == ["blank_ignored"]


values = st.one_of(st.none(), st.sampled_from(["x", "y", "z"]))
records = st.fixed_dictionaries({"email": st.just("e@x.io"), **{f: values for f in FIELDS}})


def apply(side: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    return {**side, **changes}


@settings(max_examples=400)
@given(
    base=st.one_of(st.none(), records), crm=records, cb=records, t1=st.integers(0, 3), t2=st.integers(0, 3)
)
def test_merge_converges_and_is_echo_free(base: Any, crm: Any, cb: Any, t1: int, t2: int) -> None:
    """After writing a merge's changes, merging again writes nothing (no echo, no ping-pong)."""
    r = merge(M, base, crm, cb, crm_updated_at=t1, cb_updated_at=t2)
    crm2, cb2 = apply(crm, r.to_customcrm), apply(cb, r.to_chargebee)
    again = merge(M, r.merged, crm2, cb2, crm_updated_at=t1 + 10, cb_updated_at=t2 + 10)
    assert not again.writes, (r, again)
    assert again.merged == r.merged
    # Every field is either equal on both sides, or one side is blank and the other holds the merged value.
    for f in FIELDS:
        if crm2[f] != cb2[f]:
            assert None in (crm2[f], cb2[f]) and r.merged[f] in (crm2[f], cb2[f])


@given(base=records, crm=records, cb=records)
def test_conflicts_only_when_both_sides_changed(base: Any, crm: Any, cb: Any) -> None:
    r = merge(M, base, crm, cb)
    for c in r.conflicts:
        assert crm[c.field] != base[c.field] and cb[c.field] != base[c.field] and crm[c.field] != cb[c.field]
    for f in FIELDS:
        if crm[f] == base[f] or cb[f] == base[f]:
            assert f not in {c.field for c in r.conflicts}


@given(base=records, crm=records, cb=records)
def test_an_edit_on_one_side_only_is_never_lost(base: Any, crm: Any, cb: Any) -> None:
    r = merge(M, base, crm, cb)
    for f in FIELDS:
        if crm[f] != base[f] and cb[f] == base[f] and crm[f] is not None:
            assert r.merged[f] == crm[f] and r.to_chargebee.get(f) == crm[f]
        if cb[f] != base[f] and crm[f] == base[f] and cb[f] is not None:
            assert r.merged[f] == cb[f] and r.to_customcrm.get(f) == cb[f]
