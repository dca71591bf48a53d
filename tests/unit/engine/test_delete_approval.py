"""Delete policy ``approve`` (issue 14): a delete is held until a person decides, then
carried out as ``propagate`` (approved) or ``unlink`` (rejected), naming who decided."""

from __future__ import annotations

import json

import pytest
from crmsync.engine import plan
from crmsync.engine.plan import Action, DeleteDecision, Op
from crmsync.engine.settle import FinishedRow, SideWrite, settle
from crmsync.engine.status import HoldKind, WriteStatus
from crmsync.mapping.model import DeletePolicy, Mapping, Side

from tests.unit.engine.test_plan import cb, crm, linked

pytestmark = pytest.mark.unit


def approving(m: Mapping) -> Mapping:
    spec = m.delete.model_copy(
        update={"on_customcrm_delete": DeletePolicy.APPROVE, "on_chargebee_delete": DeletePolicy.APPROVE}
    )
    return m.model_copy(update={"delete": spec})


def test_a_delete_without_a_decision_is_held_on_the_deleted_record_and_writes_nothing(
    contact_mapping: Mapping,
) -> None:
    m = approving(contact_mapping)
    c, k = crm(m), cb(m)
    d = plan.decide_linked(m, linked(m, c, k), crm(m, deleted=True), None)
    assert d.action is Action.QUARANTINE and d.hold_kind is HoldKind.APPROVAL
    assert d.held_side is Side.CUSTOMCRM and (d.crm_id, d.cb_id) == ("CON-1", "cb_1")
    assert d.crm_write is None and d.cb_write is None and d.decided_by is None
    assert d.reason is not None
    # what was deleted, what would be deleted, and the fix
    assert "Customcrm contact CON-1 was deleted in Customcrm" in d.reason
    assert "delete of Chargebee customer cb_1" in d.reason
    assert "Sync page" in d.reason and "crmsync.store.approvals" in d.reason
    assert plan.needs_a_person(d.reason)


def test_a_chargebee_delete_is_held_on_the_chargebee_record(contact_mapping: Mapping) -> None:
    m = approving(contact_mapping)
    c, k = crm(m), cb(m)
    d = plan.decide_linked(m, linked(m, c, k), None, cb(m, deleted=True))
    assert d.action is Action.QUARANTINE and d.held_side is Side.CHARGEBEE
    assert d.reason and "delete of Customcrm contact CON-1" in d.reason


def test_an_approved_delete_propagates_and_names_who_approved(contact_mapping: Mapping) -> None:
    m = approving(contact_mapping)
    c, k = crm(m), cb(m)
    d = plan.decide_linked(m, linked(m, c, k), crm(m, deleted=True), None, DeleteDecision(True, "alice"))
    assert d.action is Action.DELETE and d.decided_by == "alice"
    assert d.cb_write is not None and d.cb_write.op is Op.DELETE and d.crm_write is None
    assert d.reason and "alice approved the delete" in d.reason and "cb_1 is deleted" in d.reason
    # the same write propagate plans
    propagating = contact_mapping.model_copy(
        update={
            "delete": contact_mapping.delete.model_copy(
                update={"on_customcrm_delete": DeletePolicy.PROPAGATE}
            )
        }
    )
    p = plan.decide_linked(propagating, linked(m, c, k), crm(m, deleted=True), None)
    assert (p.action, p.crm_write, p.cb_write) == (d.action, d.crm_write, d.cb_write)


def test_an_approved_chargebee_delete_deletes_the_contact_conditionally(contact_mapping: Mapping) -> None:
    m = approving(contact_mapping)
    c, k = crm(m), cb(m)
    d = plan.decide_linked(m, linked(m, c, k), None, cb(m, deleted=True), DeleteDecision(True, "bob"))
    assert d.action is Action.DELETE and d.crm_write is not None and d.crm_write.op is Op.DELETE
    assert d.crm_write.if_version == "3"


def test_a_rejected_delete_unlinks_and_keeps_the_partner(contact_mapping: Mapping) -> None:
    m = approving(contact_mapping)
    c, k = crm(m), cb(m)
    d = plan.decide_linked(m, linked(m, c, k), crm(m, deleted=True), None, DeleteDecision(False, "carol"))
    assert d.action is Action.UNLINK and d.decided_by == "carol"
    assert d.crm_write is None and d.cb_write is None
    assert (
        d.reason and "carol rejected the delete" in d.reason and "Chargebee customer cb_1 is kept" in d.reason
    )


def test_a_decision_only_applies_under_policy_approve(contact_mapping: Mapping) -> None:
    m = contact_mapping  # ships with unlink
    c, k = crm(m), cb(m)
    d = plan.decide_linked(m, linked(m, c, k), crm(m, deleted=True), None, DeleteDecision(True, "alice"))
    assert d.action is Action.UNLINK and d.decided_by is None


def test_an_undeleted_record_is_synced_as_usual(contact_mapping: Mapping) -> None:
    m = approving(contact_mapping)
    c, k = crm(m), cb(m)
    d = plan.decide_linked(m, linked(m, c, k), crm(m, City="Oslo"), None)
    assert d.action is Action.UPDATE and d.hold_kind is None


def test_deleted_on_both_sides_needs_no_approval(contact_mapping: Mapping) -> None:
    m = approving(contact_mapping)
    c, k = crm(m), cb(m)
    d = plan.decide_linked(m, linked(m, c, k), crm(m, deleted=True), cb(m, deleted=True))
    assert d.action is Action.UNLINK and d.hold_kind is None


# --- settle: audit and release --------------------------------------------------------


def test_an_approved_delete_is_audited_with_approved_by_and_releases_the_hold(
    contact_mapping: Mapping,
) -> None:
    row = FinishedRow(
        id=1,
        action=Action.DELETE,
        crm=SideWrite(id="CON-1"),
        cb=SideWrite(id="cb_1", op=Op.DELETE, status=WriteStatus.DONE),
        reason="approved",
        detail={"decided_by": "alice"},
    )
    s = settle(contact_mapping, [row], {})
    assert s.deletes == [("CON-1", "cb_1")]
    (audit,) = s.audits
    assert audit.kind == "delete" and json.loads(audit.detail) == {
        "reason": "approved",
        "approved_by": "alice",
    }
    assert sorted(s.releases) == [("chargebee", "cb_1"), ("customcrm", "CON-1")]


def test_a_rejected_delete_is_audited_as_an_unlink_rejected_by(contact_mapping: Mapping) -> None:
    row = FinishedRow(
        id=1,
        action=Action.UNLINK,
        crm=SideWrite(id="CON-1"),
        cb=SideWrite(id="cb_1"),
        reason="rejected",
        detail={"decided_by": "carol"},
    )
    s = settle(contact_mapping, [row], {})
    (audit,) = s.audits
    assert audit.kind == "unlink" and json.loads(audit.detail) == {
        "reason": "rejected",
        "rejected_by": "carol",
    }
    assert len(s.releases) == 2


def test_a_held_delete_is_a_hold_of_kind_approval_with_the_tombstone(contact_mapping: Mapping) -> None:
    tomb = json.dumps({"values": {"email": "a@x"}, "version": "3", "updated_at": 1.0, "deleted": True})
    row = FinishedRow(
        id=1,
        action=Action.QUARANTINE,
        crm=SideWrite(id="CON-1", staged=tomb),
        cb=SideWrite(id="cb_1"),
        held_side="customcrm",
        hold_kind=HoldKind.APPROVAL,
        reason="held",
    )
    s = settle(contact_mapping, [row], {})
    (hold,) = s.holds
    assert (hold.side, hold.record_id, hold.kind, hold.staged) == ("customcrm", "CON-1", "approval", tomb)
    assert s.deletes == [] and s.releases == [] and s.audits == []


def test_the_readable_plan_shows_a_held_delete_and_what_to_do(contact_mapping: Mapping) -> None:
    from crmsync.engine.plan_text import PlanView, describe

    m = approving(contact_mapping)
    c, k = crm(m), cb(m)
    d = plan.decide_linked(m, linked(m, c, k), crm(m, deleted=True), None)
    view = PlanView(
        action=d.action.value,
        crm_id=d.crm_id,
        cb_id=d.cb_id,
        crm_op=None,
        cb_op=None,
        crm_changes=None,
        cb_changes=None,
        crm_before=None,
        cb_before=None,
        reason=d.reason,
        match_key=None,
    )
    (line,) = describe(m, view)
    assert line.startswith("hold Customcrm contact CON-1 ⇄ Chargebee customer cb_1: ")
    assert "holds the delete of Chargebee customer cb_1" in line and "approve it" in line


def test_the_run_summary_says_how_many_deletes_wait_for_approval() -> None:
    from crmsync.flows.summary import render_summary

    sides = {"customcrm": 0, "chargebee": 0}
    s = {
        "flow": "contact_customer",
        "run_id": "r1",
        **{k: dict(sides) for k in ("read", "created", "updated", "deleted", "failed", "stale")},
        **{k: 0 for k in ("linked_by_match", "unchanged", "unlinked", "conflicts", "blank_ignored")},
        **{k: 0 for k in ("reverted_read_only", "quarantined", "waiting")},
        "problems": [],
        "approvals_waiting": 2,
    }
    text = render_summary(s)
    assert "2 deletes wait for approval" in text and "Sync page" in text
    assert "wait for approval" not in render_summary({**s, "approvals_waiting": 0})


def test_an_approved_delete_whose_write_failed_keeps_the_decision(contact_mapping: Mapping) -> None:
    """Held as failed, the row would lose its kind ``approved`` and the next run would ask
    again; left as it is, the next run carries the approved delete out again."""
    row = FinishedRow(
        id=1,
        action=Action.DELETE,
        crm=SideWrite(id="CON-1", staged=json.dumps({"values": {}, "version": "3", "updated_at": 1.0})),
        cb=SideWrite(id="cb_1", op=Op.DELETE, status=WriteStatus.FAILED, error="timeout"),
        reason="approved",
        detail={"decided_by": "alice"},
    )
    s = settle(contact_mapping, [row], {})
    assert s.holds == [] and s.releases == [] and s.deletes == [] and s.audits == []
