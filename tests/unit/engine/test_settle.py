"""engine/settle.py: what a link, quarantine entry and audit row become after the writes.

Example tests per branch of settle, and properties over generated rows. End to end the
same rules run in tests/e2e/test_crash_*.py, test_no_phantom_edits.py and the chaos suite.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from crmsync.engine.canonical import content_hash
from crmsync.engine.plan import Action, Op
from crmsync.engine.settle import (
    PENDING_REFS,
    CurrentLink,
    FinishedRow,
    SideWrite,
    dumps,
    links_to_read,
    restores_to_read,
    settle,
)
from crmsync.engine.status import HoldKind, WriteStatus
from crmsync.mapping.model import Mapping, load_mapping
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[3]
CRM, CB = "C1", "crm-C1"
ALICE = {"email": "alice@example.com", "first_name": "Alice", "company_id": "CUS-1"}


@pytest.fixture(scope="module")
def m() -> Mapping:
    return load_mapping(ROOT / "include" / "mappings" / "contact_customer.yaml")


@pytest.fixture(scope="module")
def one_to_many() -> Mapping:
    return load_mapping(ROOT / "include" / "mappings" / "user_order.yaml")


def staged(values: dict[str, Any], version: Any = 1, updated_at: float = 10.0) -> str:
    return json.dumps({"values": values, "version": version, "updated_at": updated_at})


def result(rid: str, values: dict[str, Any], version: Any = 2, updated_at: float = 20.0) -> dict[str, Any]:
    return {"id": rid, "values": values, "version": version, "updated_at": updated_at}


def current(base: dict[str, Any] | None = None, cb_snapshot: dict[str, Any] | None = None) -> CurrentLink:
    return CurrentLink(
        crm_id=CRM,
        cb_id=CB,
        base=dict(base or ALICE),
        crm_snapshot=dict(ALICE),
        cb_snapshot=dict(cb_snapshot or ALICE),
        crm_version="1",
        cb_version="1",
        crm_updated_at=5.0,
        cb_updated_at=5.0,
    )


def update_row(cb_status: WriteStatus | None, error: str | None = None, **kw: Any) -> FinishedRow:
    """A linked pair whose Customcrm first name changed, written to Chargebee."""
    new = {**ALICE, "first_name": "Alicia"}
    fields: dict[str, Any] = {
        "id": 1,
        "action": Action.UPDATE,
        "link_id": 7,
        "crm": SideWrite(id=CRM, staged=staged(new)),
        "cb": SideWrite(
            id=CB,
            op=Op.UPDATE,
            status=cb_status,
            staged=staged(ALICE),
            changes={"first_name": "Alicia"},
            result=result(CB, new) if cb_status == WriteStatus.DONE else None,
            error=error,
        ),
        "merged": new,
    }
    fields.update(kw)
    return FinishedRow(**fields)


def test_pending_refs_key_and_json_match_the_flows_and_the_store() -> None:
    from crmsync.flows.refs import PENDING_REFS as FLOWS_PENDING
    from crmsync.store.codec import dumps as store_dumps

    assert PENDING_REFS == FLOWS_PENDING
    value = {"b": "é", "a": [1, None], "t": Path("x")}
    assert dumps(value) == store_dumps(value)


def test_a_create_done_links_the_pair_with_the_created_records_values(m: Mapping) -> None:
    created = {**ALICE, "company_id": None}
    row = FinishedRow(
        id=1,
        action=Action.CREATE,
        crm=SideWrite(id=CRM, staged=staged(ALICE)),
        cb=SideWrite(
            op=Op.CREATE,
            status=WriteStatus.DONE,
            changes={"email": ALICE["email"]},
            result=result(CB, created),
        ),
        merged=dict(ALICE),
    )
    s = settle(m, [row], {})
    (up,) = s.upserts
    assert (up.crm_id, up.cb_id, up.crm_slot) == (CRM, CB, "")
    assert up.match_key == "alice@example.com"
    # company_id flows to Customcrm only, so the created customer's own value is the base
    assert json.loads(up.base)["company_id"] is None
    assert up.base_hash == content_hash(json.loads(up.base))
    assert json.loads(up.crm_snapshot) == ALICE and json.loads(up.cb_snapshot) == created
    assert (up.crm_version, up.cb_version, up.crm_updated_at, up.cb_updated_at) == ("1", "2", 10.0, 20.0)
    assert s.releases == [("customcrm", CRM), ("chargebee", CB)]
    assert s.holds == [] and s.deletes == [] and s.audits == []


def test_an_update_done_moves_the_base_to_the_merged_record(m: Mapping) -> None:
    row = update_row(WriteStatus.DONE)
    s = settle(m, [row], {CB: current()})
    (up,) = s.upserts
    assert json.loads(up.base) == row.merged
    assert json.loads(up.cb_snapshot)["first_name"] == "Alicia"
    assert up.cb_version == "2"
    assert s.holds == []
    assert links_to_read([row]) == [CB]


@pytest.mark.parametrize(
    ("status", "kind"), [(WriteStatus.REJECTED, HoldKind.REJECTED), (WriteStatus.FAILED, HoldKind.FAILED)]
)
def test_a_failed_write_keeps_the_base_and_holds_the_source_with_its_kind(
    m: Mapping, status: WriteStatus, kind: HoldKind
) -> None:
    row = update_row(status, error="first_name too long")
    s = settle(m, [row], {CB: current()})
    (up,) = s.upserts
    assert json.loads(up.base) == ALICE  # the next run still sees the unsynced edit
    assert json.loads(up.crm_snapshot)["first_name"] == "Alicia"
    (hold,) = s.holds
    assert (hold.side, hold.record_id, hold.kind) == ("customcrm", CRM, kind)
    assert hold.reason == f"customcrm record {CRM}: first_name too long"
    assert hold.staged == row.crm.staged
    assert hold.content_hash == content_hash({**ALICE, "first_name": "Alicia"})
    assert s.releases == []


def test_a_failure_without_an_error_says_which_write_failed(m: Mapping) -> None:
    (hold,) = settle(m, [update_row(WriteStatus.FAILED)], {CB: current()}).holds
    assert hold.reason == f"customcrm record {CRM}: write to chargebee failed"


def test_a_stale_write_keeps_the_base_and_holds_nothing(m: Mapping) -> None:
    s = settle(m, [update_row(WriteStatus.STALE)], {CB: current()})
    (up,) = s.upserts
    assert json.loads(up.base) == ALICE
    assert s.holds == [] and s.releases == []


def test_a_failed_create_makes_no_link_and_holds_the_source(m: Mapping) -> None:
    row = FinishedRow(
        id=1,
        action=Action.CREATE,
        crm=SideWrite(id=CRM, staged=staged(ALICE)),
        cb=SideWrite(op=Op.CREATE, status=WriteStatus.REJECTED, error=f"contact {CRM}: email invalid"),
        merged=dict(ALICE),
    )
    s = settle(m, [row], {})
    assert s.upserts == []
    (hold,) = s.holds
    assert (hold.record_id, hold.kind, hold.reason) == (
        CRM,
        HoldKind.REJECTED,
        f"contact {CRM}: email invalid",
    )


def test_unlink_deletes_the_link_and_audits_it(m: Mapping) -> None:
    row = FinishedRow(
        id=1, action=Action.UNLINK, crm=SideWrite(id=CRM), cb=SideWrite(id=CB), reason="deleted"
    )
    s = settle(m, [row], {})
    assert s.deletes == [(CRM, CB)]
    (audit,) = s.audits
    assert (audit.kind, audit.crm_id, audit.cb_id, audit.field) == ("unlink", CRM, CB, None)
    assert json.loads(audit.detail) == {"reason": "deleted"}


def test_an_ended_pair_audits_the_deleted_sides_the_plan_named(m: Mapping) -> None:
    """``deleted_on`` (the plan's Decision, in the plan row's detail) reaches the audit row,
    where the extract reads it (flows/extract.py ``_deleted_in_chargebee``)."""
    unlink = FinishedRow(
        id=1,
        action=Action.UNLINK,
        crm=SideWrite(id=CRM),
        cb=SideWrite(id=CB),
        reason="any wording",
        detail={"deleted_on": ["chargebee"]},
    )
    delete = FinishedRow(
        id=2,
        action=Action.DELETE,
        crm=SideWrite(id=CRM, op=Op.DELETE, status=WriteStatus.DONE),
        cb=SideWrite(id=CB),
        reason="any wording",
        detail={"deleted_on": ["chargebee"], "decided_by": "alice"},
    )
    s = settle(m, [unlink, delete], {})
    assert [json.loads(a.detail) for a in s.audits] == [
        {"reason": "any wording", "deleted_on": ["chargebee"]},
        {"reason": "any wording", "deleted_on": ["chargebee"], "approved_by": "alice"},
    ]


def test_a_delete_ends_the_link_only_when_it_landed(m: Mapping) -> None:
    done = FinishedRow(
        id=1,
        action=Action.DELETE,
        crm=SideWrite(id=CRM),
        cb=SideWrite(id=CB, op=Op.DELETE, status=WriteStatus.DONE),
        reason="deleted in Customcrm",
    )
    s = settle(m, [done], {})
    assert s.deletes == [(CRM, CB)] and [a.kind for a in s.audits] == ["delete"] and s.holds == []
    failed = FinishedRow(
        id=2,
        action=Action.DELETE,
        crm=SideWrite(id=CRM, staged=staged(ALICE)),
        cb=SideWrite(id=CB, op=Op.DELETE, status=WriteStatus.FAILED, error="timeout"),
    )
    s = settle(m, [failed], {})
    assert s.deletes == [] and s.audits == []
    assert [(h.record_id, h.kind) for h in s.holds] == [(CRM, HoldKind.FAILED)]


def test_quarantine_and_wait_hold_the_record_as_staged(m: Mapping) -> None:
    held = {"values": {"email": "bad"}, "version": 3, "updated_at": 1.0}
    q = FinishedRow(
        id=1,
        action=Action.QUARANTINE,
        crm=SideWrite(id=CRM, staged=staged(ALICE)),
        cb=SideWrite(),
        held_side="customcrm",
        hold_kind=HoldKind.INVALID,
        reason="email invalid",
        detail={"held_record": held},
    )
    w = FinishedRow(
        id=2,
        action=Action.WAIT,
        crm=SideWrite(),
        cb=SideWrite(id=CB, staged=staged(ALICE)),
        held_side="chargebee",
    )
    s = settle(m, [q, w], {})
    assert [(h.side, h.record_id, h.kind, h.reason) for h in s.holds] == [
        ("customcrm", CRM, HoldKind.INVALID, "email invalid"),
        ("chargebee", CB, HoldKind.WAITING, ""),
    ]
    assert json.loads(s.holds[0].staged or "") == held
    assert s.holds[0].content_hash == content_hash({"email": "bad"})
    assert s.holds[1].staged == w.cb.staged
    assert s.upserts == [] and s.releases == []


def test_skip_releases_both_records(m: Mapping) -> None:
    row = FinishedRow(id=1, action=Action.SKIP, crm=SideWrite(id=CRM), cb=SideWrite())
    assert settle(m, [row], {}).releases == [("customcrm", CRM)]


def test_restore_replaces_the_links_of_both_records(m: Mapping) -> None:
    row = FinishedRow(
        id=1,
        action=Action.RESTORE,
        crm=SideWrite(id=CRM, staged=staged(ALICE)),
        cb=SideWrite(op=Op.CREATE, status=WriteStatus.DONE, result=result("crm-C1-2", ALICE)),
        merged=dict(ALICE),
    )
    by_crm = {CRM: current()}
    by_cb = {"crm-C1-2": CurrentLink("C9", "crm-C1-2", {}, {}, {})}
    assert restores_to_read([row]) == [CRM] and links_to_read([row]) == ["crm-C1-2"]
    s = settle(m, [row], by_cb, by_crm)
    assert s.deletes == [(CRM, CB), ("C9", "crm-C1-2")]
    (up,) = s.upserts
    assert (up.crm_id, up.cb_id) == (CRM, "crm-C1-2")
    assert json.loads(up.base) == ALICE  # a new base, not the replaced link's


def test_pending_references_are_kept_while_blank_and_dropped_once_resolved(m: Mapping) -> None:
    blank = {**ALICE, "company_id": None}
    old = current(
        base={**blank, PENDING_REFS: {"company_id": "be_x"}},
        cb_snapshot={**blank, PENDING_REFS: {"company_id": "be_x"}},
    )
    row = FinishedRow(
        id=1,
        action=Action.UNCHANGED,
        link_id=7,
        crm=SideWrite(id=CRM, staged=staged(blank)),
        cb=SideWrite(id=CB, staged=staged(blank)),
        merged=dict(blank),
    )
    (up,) = settle(m, [row], {CB: old}).upserts
    assert json.loads(up.cb_snapshot)[PENDING_REFS] == {"company_id": "be_x"}
    assert json.loads(up.base)[PENDING_REFS] == {"company_id": "be_x"}
    resolved = FinishedRow(
        id=1,
        action=Action.UNCHANGED,
        link_id=7,
        crm=SideWrite(id=CRM, staged=staged(ALICE)),
        cb=SideWrite(id=CB, staged=staged(ALICE)),
        merged=dict(ALICE),
    )
    (up,) = settle(m, [resolved], {CB: old}).upserts
    assert PENDING_REFS not in json.loads(up.cb_snapshot) and PENDING_REFS not in json.loads(up.base)


def test_a_new_link_keeps_the_pending_references_the_plan_carried(m: Mapping) -> None:
    blank = {**ALICE, "company_id": None}
    row = FinishedRow(
        id=1,
        action=Action.LINK_BY_MATCH,
        crm=SideWrite(id=CRM, staged=staged(blank)),
        cb=SideWrite(id=CB, staged=staged(blank)),
        merged=dict(blank),
        detail={"pending_refs": {"company_id": "be_x"}},
    )
    (up,) = settle(m, [row], {}).upserts
    assert json.loads(up.cb_snapshot)[PENDING_REFS] == {"company_id": "be_x"}


def test_read_only_and_assigned_notes_and_conflicts_are_audited(m: Mapping) -> None:
    detail = {
        "conflicts": [{"field": "phone", "winner": "customcrm"}],
        "notes": [
            {"kind": "reverted_read_only", "field": "company_id"},
            {"kind": "assigned_on_create", "field": "company_id"},
            {"kind": "something_else", "field": "email"},
        ],
    }
    s = settle(m, [update_row(WriteStatus.DONE, detail=detail)], {CB: current()})
    assert [(a.kind, a.field) for a in s.audits] == [
        ("conflict", "phone"),
        ("reverted_read_only", "company_id"),
        ("assigned_on_create", "company_id"),
    ]
    assert json.loads(s.audits[0].detail) == detail["conflicts"][0]


def test_a_synced_record_whose_reference_waits_is_held_with_its_current_values(m: Mapping) -> None:
    raw = {"values": {**ALICE, "first_name": "Old", "company_id": "be_raw"}, "version": 1, "updated_at": 1.0}
    row = update_row(
        WriteStatus.DONE,
        held_side="chargebee",
        hold_kind=HoldKind.REF_PENDING,
        reason="entity not linked yet",
    )
    row = FinishedRow(**{**row.__dict__, "cb": SideWrite(**{**row.cb.__dict__, "staged": json.dumps(raw)})})
    s = settle(m, [row], {CB: current()})
    assert s.releases == [("customcrm", CRM)]  # the held side is not released
    (hold,) = s.holds
    assert (hold.side, hold.record_id, hold.kind) == ("chargebee", CB, HoldKind.REF_PENDING)
    kept = json.loads(hold.staged or "")
    # what Chargebee holds now (the write's response), with the untranslated reference
    assert kept["values"] == {**ALICE, "first_name": "Alicia", "company_id": "be_raw"}
    assert (kept["version"], kept["updated_at"]) == (2, 20.0)


def test_a_one_to_many_link_is_slotted_by_the_chargebee_id(one_to_many: Mapping) -> None:
    row = FinishedRow(
        id=1,
        action=Action.CREATE,
        crm=SideWrite(id="U1", staged=staged({})),
        cb=SideWrite(op=Op.CREATE, status=WriteStatus.DONE, result=result("ord-1", {})),
    )
    (up,) = settle(one_to_many, [row], {}).upserts
    assert up.crm_slot == "ord-1"


# --- properties ------------------------------------------------------------------------

STATUSES = [None, *WriteStatus]
PAIR_ACTIONS = [
    Action.CREATE,
    Action.LINK_BY_MATCH,
    Action.UPDATE,
    Action.UNCHANGED,
    Action.DELETE,
    Action.UNLINK,
]


@st.composite
def rows(draw: st.DrawFn) -> FinishedRow:
    action = draw(st.sampled_from(PAIR_ACTIONS))
    sides = {}
    for prefix, rid in (("crm", CRM), ("cb", CB)):
        status = draw(st.sampled_from(STATUSES))
        present = draw(st.booleans()) or action != Action.CREATE
        values = {**ALICE, "first_name": draw(st.sampled_from(["A", "B"]))}
        sides[prefix] = SideWrite(
            id=rid if present else None,
            op=None if status is None else draw(st.sampled_from(list(Op))),
            status=status,
            staged=staged(values),
            result=result(rid, values) if status == WriteStatus.DONE else None,
            error=draw(st.sampled_from([None, "boom", f"record {rid} refused"])),
        )
    return FinishedRow(
        id=1,
        action=action,
        link_id=7 if action != Action.CREATE else None,
        crm=sides["crm"],
        cb=sides["cb"],
        merged=dict(ALICE),
    )


@settings(max_examples=300, deadline=None)
@given(row=rows(), linked=st.booleans())
def test_properties_of_a_settled_row(m: Mapping, row: FinishedRow, linked: bool) -> None:
    s = settle(m, [row], {CB: current()} if linked else {})
    landed = row.crm.status in (None, WriteStatus.DONE) and row.cb.status in (None, WriteStatus.DONE)
    if landed:  # writes all finished "done" never yield a hold
        assert s.holds == []
    # a link is never both upserted and deleted
    assert not {(u.crm_id, u.cb_id) for u in s.upserts} & set(s.deletes)
    # every failed write yields exactly one hold naming the source record
    failed = [
        (w, src)
        for w, src in ((row.crm, row.cb), (row.cb, row.crm))  # (write, source it carried)
        if w.status not in (None, WriteStatus.DONE, WriteStatus.STALE) and src.id is not None
    ]
    if row.action not in (Action.UNLINK,):
        assert len(s.holds) == len(failed)
        for (_, src), hold in zip(failed, s.holds, strict=True):
            assert hold.record_id == src.id and src.id in hold.reason
    # a released record is never held
    assert not {(h.side, h.record_id) for h in s.holds} & set(s.releases)
