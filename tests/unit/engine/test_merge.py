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


def test_a_clear_of_a_synced_value_propagates_by_default() -> None:
    """Issue 11 item 6 (was test_blank_never_overwrites_by_default, which asserted the old
    default): a Phone cleared in Customcrm is cleared in Chargebee, and the reverse."""
    r = merge(M, rec(a="1"), rec(a=None), rec(a="1"))
    assert r.to_chargebee == {"a": None} and not r.to_customcrm
    assert r.merged["a"] is None and not r.conflicts
    assert [n.kind for n in r.notes] == ["cleared"]
    r = merge(M, rec(a="1"), rec(a="1"), rec(a=None))
    assert r.to_customcrm == {"a": None} and not r.to_chargebee
    assert r.merged["a"] is None


def test_blank_never_overwrites_when_the_field_says_false() -> None:
    m = mapping(
        fields=[
            {"name": "email", "customcrm": "Email", "chargebee": "email"},
            {"name": "a", "customcrm": "A", "chargebee": "first_name", "empty_overwrites": False},
        ]
    )
    r = merge(m, {"email": "e", "a": "1"}, {"email": "e", "a": None}, {"email": "e", "a": "1"})
    assert not r.writes and r.merged["a"] == "1"
    assert [n.kind for n in r.notes] == ["blank_ignored"]
    assert "empty_overwrites: false" in r.notes[0].message
    # cleared on one side, edited on the other: the value wins, whatever the timestamps
    r = merge(
        m,
        {"email": "e", "a": "1"},
        {"email": "e", "a": None},
        {"email": "e", "a": "2"},
        crm_updated_at=99,
        cb_updated_at=1,
    )
    assert r.to_customcrm == {"a": "2"} and r.conflicts[0].rule == "empty_never_overwrites"


def test_blank_overwrites_when_the_field_says_so() -> None:
    m = mapping(
        fields=[
            {"name": "email", "customcrm": "Email", "chargebee": "email"},
            {"name": "a", "customcrm": "A", "chargebee": "first_name", "empty_overwrites": True},
        ]
    )
    r = merge(m, {"email": "e", "a": "1"}, {"email": "e", "a": None}, {"email": "e", "a": "1"})
    assert r.to_chargebee == {"a": None}


def test_a_clear_against_an_edit_is_a_conflict_resolved_by_policy() -> None:
    r = merge(M, rec(a="1"), rec(a=None), rec(a="2"), crm_updated_at=20, cb_updated_at=10)
    assert r.to_chargebee == {"a": None} and r.merged["a"] is None
    assert r.conflicts[0].winner is Side.CUSTOMCRM and r.conflicts[0].rule == "newest_wins"
    r = merge(M, rec(a="1"), rec(a=None), rec(a="2"), crm_updated_at=10, cb_updated_at=20)
    assert r.to_customcrm == {"a": "2"} and r.conflicts[0].winner is Side.CHARGEBEE


def test_a_blank_never_synced_fills_from_the_value() -> None:
    """No base value: the blank is no edit, the value fills it (first link, or a field
    that was empty on both sides when last synced)."""
    r = merge(M, rec(a=None), rec(a=None), rec(a="2"))
    assert r.to_customcrm == {"a": "2"} and not r.to_chargebee
    r = merge(M, None, rec(a="1"), rec(a=None))
    assert r.to_chargebee == {"a": "1"} and not r.to_customcrm


def test_a_field_absent_from_a_record_is_unknown_never_a_clear() -> None:
    crm_without_a = {k: v for k, v in rec(a="1").items() if k != "a"}
    r = merge(M, rec(a="1"), crm_without_a, rec(a="1"))
    assert not r.writes and r.merged["a"] == "1"
    # the other side's edit still reaches it
    r = merge(M, rec(a="1"), crm_without_a, rec(a="2"))
    assert r.to_customcrm == {"a": "2"} and not r.to_chargebee
    # and with nothing synced, the other side's value fills it (never the reverse)
    r = merge(M, None, crm_without_a, rec(a="2"))
    assert r.to_customcrm == {"a": "2"} and "a" not in r.to_chargebee
    r = merge(M, None, crm_without_a, rec(a=None))
    assert not r.writes


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
    # keep: the blank stays, reported as a kept read-only edit (a clear is an edit; this
    # asserted blank_ignored under the old default)
    keep = mapping(fields=fields, read_only_edits="keep")
    r = merge(keep, {"email": "e", "a": "1"}, {"email": "e", "a": None}, {"email": "e", "a": "1"})
    assert not r.writes and [n.kind for n in r.notes] == ["kept_read_only_edit"]
    # A clear on the source side is an edit there and flows (issue 11 item 6; this
    # asserted the old default, blank_ignored); with empty_overwrites: false it does not.
    r = merge(
        mapping(fields=fields), {"email": "e", "a": "1"}, {"email": "e", "a": "1"}, {"email": "e", "a": None}
    )
    assert r.to_customcrm == {"a": None} and not r.to_chargebee
    protected = [fields[0], {**fields[1], "empty_overwrites": False}]
    r = merge(
        mapping(fields=protected),
        {"email": "e", "a": "1"},
        {"email": "e", "a": "1"},
        {"email": "e", "a": None},
    )
    assert not r.writes and [n.kind for n in r.notes] == ["blank_ignored"]


values = st.one_of(st.none(), st.sampled_from(["x", "y", "z"]))
records = st.fixed_dictionaries({"email": st.just("e@x.io"), **{f: values for f in FIELDS}})
#: a record as a side returned it: a field may be missing (not returned: unknown)
partial = st.fixed_dictionaries({"email": st.just("e@x.io")}, optional={f: values for f in FIELDS})


def with_option(option: bool | None) -> Mapping:
    """The test mapping with every field's ``empty_overwrites`` set to ``option``."""
    fields = [{"name": "email", "customcrm": "Email", "chargebee": "email", "transform": "email"}]
    for name, cb in zip(FIELDS, ("first_name", "last_name", "company"), strict=True):
        field: dict[str, Any] = {"name": name, "customcrm": name.upper(), "chargebee": cb}
        if option is not None:
            field["empty_overwrites"] = option
        fields.append(field)
    return mapping(fields=fields)


MAPPINGS = {option: with_option(option) for option in (None, False, True)}
options = st.sampled_from([None, False, True])


def apply(side: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    return {**side, **changes}


@settings(max_examples=400)
@given(
    base=st.one_of(st.none(), records),
    crm=partial,
    cb=partial,
    t1=st.integers(0, 3),
    t2=st.integers(0, 3),
    option=options,
)
def test_merge_converges_and_is_echo_free(
    base: Any, crm: Any, cb: Any, t1: int, t2: int, option: bool | None
) -> None:
    """After writing a merge's changes, merging again writes nothing (no echo, no ping-pong),
    for every setting of empty_overwrites, clears and fields a side did not return included."""
    m = MAPPINGS[option]
    r = merge(m, base, crm, cb, crm_updated_at=t1, cb_updated_at=t2)
    crm2, cb2 = apply(crm, r.to_customcrm), apply(cb, r.to_chargebee)
    again = merge(m, r.merged, crm2, cb2, crm_updated_at=t1 + 10, cb_updated_at=t2 + 10)
    assert not again.writes, (r, again)
    assert again.merged == r.merged
    # Every field both sides returned is equal on both sides, or one side is blank (a blank
    # that may not overwrite) and the other holds the merged value.
    for f in FIELDS:
        if f in crm2 and f in cb2 and crm2[f] != cb2[f]:
            assert None in (crm2[f], cb2[f]) and r.merged[f] in (crm2[f], cb2[f])


@given(base=records, crm=records, cb=records)
def test_conflicts_only_when_both_sides_changed(base: Any, crm: Any, cb: Any) -> None:
    r = merge(M, base, crm, cb)
    for c in r.conflicts:
        assert crm[c.field] != base[c.field] and cb[c.field] != base[c.field] and crm[c.field] != cb[c.field]
    for f in FIELDS:
        if crm[f] == base[f] or cb[f] == base[f]:
            assert f not in {c.field for c in r.conflicts}


@given(base=records, crm=records, cb=records, option=st.sampled_from([None, True]))
def test_an_edit_on_one_side_only_is_never_lost(base: Any, crm: Any, cb: Any, option: bool | None) -> None:
    """By default a one-sided edit always flows, a clear of a synced value included."""
    r = merge(MAPPINGS[option], base, crm, cb)
    for f in FIELDS:
        if crm[f] != base[f] and cb[f] == base[f]:
            assert r.merged[f] == crm[f] and r.to_chargebee.get(f, "-") == crm[f]
        if cb[f] != base[f] and crm[f] == base[f]:
            assert r.merged[f] == cb[f] and r.to_customcrm.get(f, "-") == cb[f]


@given(base=records, crm=records, cb=records, t1=st.integers(0, 3), t2=st.integers(0, 3))
def test_a_clear_propagates_unless_the_field_says_false(
    base: Any, crm: Any, cb: Any, t1: int, t2: int
) -> None:
    for option, m in MAPPINGS.items():
        r = merge(m, base, crm, cb, crm_updated_at=t1, cb_updated_at=t2)
        for f in FIELDS:
            for cleared, kept, to_kept in ((crm, cb, r.to_chargebee), (cb, crm, r.to_customcrm)):
                if base[f] is not None and cleared[f] is None and kept[f] == base[f]:
                    if option is False:
                        assert f not in to_kept and r.merged[f] == base[f]
                    else:
                        assert to_kept.get(f, "-") is None and r.merged[f] is None


@given(
    base=st.one_of(st.none(), records), crm=records, cb=records, t1=st.integers(0, 3), t2=st.integers(0, 3)
)
def test_property_a_blank_never_synced_never_overwrites(
    base: Any, crm: Any, cb: Any, t1: int, t2: int
) -> None:
    """Where the base holds no value, no setting writes a blank over a value."""
    for m in MAPPINGS.values():
        r = merge(m, base, crm, cb, crm_updated_at=t1, cb_updated_at=t2)
        for f in FIELDS:
            if base is None or base[f] is None:
                assert r.to_chargebee.get(f, "-") is not None and r.to_customcrm.get(f, "-") is not None
                if crm[f] is not None or cb[f] is not None:
                    assert r.merged[f] is not None


@given(base=st.one_of(st.none(), records), crm=partial, cb=partial, option=options)
def test_a_field_a_side_did_not_return_never_flows_from_it(
    base: Any, crm: Any, cb: Any, option: bool | None
) -> None:
    """Absent is unknown: nothing is written to the other side on its account, least of all a clear."""
    r = merge(MAPPINGS[option], base, crm, cb)
    for f in FIELDS:
        if f not in crm:
            assert f not in r.to_chargebee
        if f not in cb:
            assert f not in r.to_customcrm


def test_an_unknown_reference_never_clears_the_other_side() -> None:
    """A Chargebee reference not linked yet (or with nothing to refer to by design) is left
    out of the canonical record: the Customcrm value, synced or set by hand, stays."""
    r = merge(M, rec(a="CUS-1"), rec(a="CUS-1"), {k: v for k, v in rec().items() if k != "a"})
    assert not r.writes and r.merged["a"] == "CUS-1"
