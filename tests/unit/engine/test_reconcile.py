"""The reconciliation report's comparison (issue 14 item 7): pure, typed values in and out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crmsync.engine.canonical import SideRecord
from crmsync.engine.plan import LinkState
from crmsync.engine.reconcile import (
    FieldDiff,
    Missing,
    Report,
    Verdict,
    compare_pair,
    duplicates,
    report_lines,
    unlinked,
)
from crmsync.mapping.model import Side, load_mapping
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[3]
CONTACTS = load_mapping(ROOT / "include/mappings/contact_customer.yaml")
USER_ORDER = load_mapping(ROOT / "include/mappings/user_order.yaml")

#: two-way text fields of contact_customer, free of format rules
TEXT_FIELDS = ["first_name", "last_name", "phone", "company", "city", "state", "zip"]
text = st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,19}", fullmatch=True)
BASE: dict[str, Any] = {
    "email": "ann@example.com",
    "first_name": "Ann",
    "last_name": "Lee",
    "phone": "123",
    "company": "Acme",
    "city": "Oslo",
    "state": "Oslo",
    "zip": "0150",
    "country": "NO",
}


def pair(
    crm: dict[str, Any],
    cb: dict[str, Any],
    base: dict[str, Any] | None = None,
    crm_version: str = "2",
    cb_version: str = "8",
) -> tuple[LinkState, SideRecord, SideRecord]:
    b = dict(BASE if base is None else base)
    link = LinkState("42", "crm-42", b, dict(b), dict(b), crm_version="1", cb_version="7")
    return (
        link,
        SideRecord(Side.CUSTOMCRM, "42", crm, 10.0, crm_version),
        SideRecord(Side.CHARGEBEE, "crm-42", cb, 20.0, cb_version),
    )


def diffs(findings: list[FieldDiff | Missing]) -> dict[str, FieldDiff]:
    return {f.field: f for f in findings if isinstance(f, FieldDiff)}


def test_a_pair_that_agrees_reports_nothing() -> None:
    assert compare_pair(CONTACTS, *pair(dict(BASE), dict(BASE))) == []


@settings(max_examples=60)
@given(st.fixed_dictionaries({f: text for f in TEXT_FIELDS}))
def test_a_pair_built_equal_never_reports(values: dict[str, Any]) -> None:
    """Whatever the values, a pair whose sides hold the same canonical values is settled,
    whatever the base says (the sync would write nothing)."""
    record = {**BASE, **values}
    assert compare_pair(CONTACTS, *pair(record, dict(record))) == []
    assert compare_pair(CONTACTS, *pair(record, dict(record), base={})) == []


@settings(max_examples=60)
@given(st.sampled_from(TEXT_FIELDS), text, st.sampled_from(list(Side)))
def test_a_changed_mapped_field_always_reports_with_where_it_goes(name: str, new: str, side: Side) -> None:
    old = BASE.get(name)
    changed = {**BASE, name: new}
    crm, cb = (changed, dict(BASE)) if side is Side.CUSTOMCRM else (dict(BASE), changed)
    found = diffs(compare_pair(CONTACTS, *pair(crm, cb)))
    if new == old:
        assert found == {}
        return
    assert list(found) == [name]
    d = found[name]
    assert (d.customcrm, d.chargebee) == (crm[name], cb[name])
    assert d.verdict is (Verdict.TO_CHARGEBEE if side is Side.CUSTOMCRM else Verdict.TO_CUSTOMCRM)


def test_an_edit_without_a_new_version_is_marked_unseen() -> None:
    """Changed behind the sync's back: the Chargebee version is the one the link recorded,
    so no incremental extract reads it; a full sync writes it to Customcrm."""
    cb = {**BASE, "phone": "999"}
    found = diffs(compare_pair(CONTACTS, *pair(dict(BASE), cb, cb_version="7")))
    assert found["phone"].unseen == (Side.CHARGEBEE,)
    assert found["phone"].verdict is Verdict.TO_CUSTOMCRM
    lines = report_lines(_report_of(compare_pair(CONTACTS, *pair(dict(BASE), cb, cb_version="7"))))
    assert any("phone Customcrm '123' ≠ Chargebee '999'" in line and "full_resync" in line for line in lines)


def test_both_sides_changed_names_the_conflict_rule() -> None:
    found = diffs(compare_pair(CONTACTS, *pair({**BASE, "city": "Rome"}, {**BASE, "city": "Bergen"})))
    assert found["city"].verdict is Verdict.TO_CUSTOMCRM  # Chargebee's edit is newer (20 > 10)
    assert "changed on both sides" in found["city"].why


def test_a_one_way_field_the_policy_keeps_is_left_and_says_why() -> None:
    """company_id flows to Customcrm only and its read_only_edits is keep: a Customcrm edit
    stays a difference no run settles."""
    base = {**BASE, "company_id": "C1"}
    found = diffs(compare_pair(CONTACTS, *pair({**base, "company_id": "C2"}, dict(base), base=base)))
    assert found["company_id"].verdict is Verdict.LEFT
    assert "kept on that side" in found["company_id"].why


def test_a_field_a_side_did_not_return_is_unknown_not_a_difference() -> None:
    cb = {k: v for k, v in BASE.items() if k != "phone"}
    assert compare_pair(CONTACTS, *pair({**BASE, "phone": "555"}, cb)) == []


def test_an_invalid_value_reports_the_hold() -> None:
    found = diffs(compare_pair(CONTACTS, *pair({**BASE, "city": "x" * 60}, dict(BASE))))
    assert found["city"].verdict is Verdict.HELD
    assert "holds the pair" in found["city"].why


def test_a_missing_or_deleted_side_is_reported_once() -> None:
    link, crm, cb = pair(dict(BASE), dict(BASE))
    assert compare_pair(CONTACTS, link, crm, None) == [Missing("42", "crm-42", Side.CHARGEBEE, False)]
    gone = SideRecord(Side.CUSTOMCRM, "42", {}, deleted=True)
    assert compare_pair(CONTACTS, link, gone, cb) == [Missing("42", "crm-42", Side.CUSTOMCRM, True)]


def test_unlinked_says_the_quarantines_reason_or_what_the_next_sync_does() -> None:
    held = unlinked(CONTACTS, Side.CUSTOMCRM, "7", "a@x", "ambiguous", "shared email")
    assert (held.why, held.hold_kind) == ("shared email", "ambiguous")
    assert (
        "links it by match key or creates it in Chargebee"
        in unlinked(CONTACTS, Side.CUSTOMCRM, "7", "a@x").why
    )


def test_duplicates_are_one_sides_shared_keys_except_a_one_to_many_flows_many_side() -> None:
    groups = [
        (Side.CUSTOMCRM, "k", ["2", "1"]),
        (Side.CHARGEBEE, "k", ["a", "b"]),
        (Side.CHARGEBEE, "j", ["a"]),
    ]
    found = duplicates(CONTACTS, groups)
    assert [(d.side, d.ids) for d in found] == [(Side.CUSTOMCRM, ("1", "2")), (Side.CHARGEBEE, ("a", "b"))]
    assert [d.side for d in duplicates(USER_ORDER, groups)] == [Side.CUSTOMCRM]


def _report_of(findings: list[FieldDiff | Missing]) -> dict[str, Any]:
    report = Report(CONTACTS)
    report.add_pair(findings)
    return report.as_json()


def test_the_report_counts_everything_and_lists_the_first_items() -> None:
    report = Report(CONTACTS)
    for i in range(5):
        link, crm, cb = pair({**BASE, "phone": f"9{i}"}, dict(BASE))
        report.add_pair(compare_pair(CONTACTS, link, crm, cb))
    report.add_pair(compare_pair(CONTACTS, *pair(dict(BASE), dict(BASE))))
    report.add_unlinked(unlinked(CONTACTS, Side.CHARGEBEE, "cb-9", "z@x"))
    report.add_duplicates(duplicates(CONTACTS, [(Side.CUSTOMCRM, "k", ["1", "2"])]))
    out = report.as_json(limit=2)
    c = out["counts"]
    assert c["linked_pairs"] == 6
    assert c["fields_differing"] == 5
    assert c["by_verdict"]["to_chargebee"] == 5
    assert c["unlinked"] == {"customcrm": 0, "chargebee": 1}
    assert c["duplicate_keys"] == {"customcrm": 1, "chargebee": 0}
    assert len(out["differences"]) == 2
    lines = report_lines(out)
    assert lines[0].startswith("6 linked pairs")
    assert "unlinked Chargebee customer cb-9 (match key 'z@x')" in lines[-2]
    assert lines[-1] == "duplicate Customcrm contacts 1, 2: same match key 'k'"
