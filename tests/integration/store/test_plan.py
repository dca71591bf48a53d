"""store/plan.py: plan rows and write statuses of one flow's run."""

from __future__ import annotations

from typing import Any

from crmsync.engine.plan import Action
from crmsync.engine.status import HoldKind, WriteStatus
from crmsync.mapping.model import Side
from crmsync.store.plan import PlanStore, write_outcome
from crmsync.store.schema import plan
from sqlalchemy.engine import Engine

from tests.integration.store.helpers import FLOW, OTHER

CRM, CB = Side.CUSTOMCRM, Side.CHARGEBEE


def row(seq: int, action: str, **values: Any) -> dict[str, Any]:
    """A plan row as transform inserts it: every column named (one executemany)."""
    blank = {c.name: None for c in plan.c if c.nullable}
    return {**blank, "run_id": "r1", "flow": FLOW, "seq": seq, "action": action, "applied": False, **values}


def ids(batches: Any) -> list[int]:
    return [r["id"] for batch in batches for r in batch]


def test_writes_go_from_pending_to_done_and_rows_to_applied(engine: Engine) -> None:
    plans = PlanStore(engine, FLOW)
    plans.insert_plan([])
    plans.insert_plan(
        [
            row(1, "create", crm_id="c1", cb_op="create", cb_status="pending", cb_changes="{}"),
            row(2, "update", crm_id="c2", cb_id="k2", crm_op="update", crm_status="pending"),
            row(3, "unchanged", crm_id="c3", cb_id="k3", detail='{"note": 1}'),
            row(4, "skip", crm_id="c4", reason="no partner"),
        ]
    )
    assert plans.count_plan_writes("r1") == 2 and plans.plan_progress("r1") == 0
    assert plans.count_unfinished_writes("r1") == 2
    cb_ids = ids(plans.iter_pending_writes("r1", CB))
    crm_ids = ids(plans.iter_pending_writes("r1", CRM))
    assert len(cb_ids) == 1 and len(crm_ids) == 1
    assert len(ids(plans.iter_unapplied("r1"))) == 2  # the unchanged and the skip
    plans.mark_writes(cb_ids, CB, "in_flight")
    assert ids(plans.iter_pending_writes("r1", CB)) == cb_ids  # in flight at a crash: still to do
    plans.mark_write_results(CB, [(cb_ids[0], "done", {"id": "k1"}, None)])
    plans.mark_write(crm_ids[0], CRM, "failed", error="boom")
    assert plans.count_unfinished_writes("r1") == 0 and plans.plan_progress("r1") == 2
    assert ids(plans.iter_chargebee_creates("r1")) == cb_ids
    by_id = {r["id"]: r for batch in plans.iter_unapplied("r1") for r in batch}
    assert by_id[cb_ids[0]]["cb_result"] == '{"id": "k1"}'
    assert (by_id[crm_ids[0]]["crm_status"], by_id[crm_ids[0]]["crm_error"]) == ("failed", "boom")
    # a None result keeps the stored one
    plans.mark_write_results(CB, [(cb_ids[0], "done", None, None)])
    kept = {r["id"]: r for b in plans.iter_unapplied("r1") for r in b}[cb_ids[0]]
    assert kept["cb_result"] == '{"id": "k1"}'
    assert PlanStore(engine, OTHER).count_plan_writes("r1") == 0


def test_customcrm_updates_are_added_once(engine: Engine) -> None:
    plans = PlanStore(engine, FLOW)
    plans.insert_plan([row(1, "create", cb_op="create", cb_status="done"), row(2, "update", crm_op="update")])
    first, second = ids(plans.iter_unapplied("r1"))
    plans.plan_customcrm_updates([])
    plans.plan_customcrm_updates([(first, '{"x": 1}', "3", "{}"), (second, '{"y": 2}', "4", "{}")])
    (added,) = [r for b in plans.iter_pending_writes("r1", CRM) for r in b]
    assert added["id"] == first and added["crm_status"] == "pending"
    assert (added["crm_op"], added["crm_changes"], added["crm_if_version"]) == ("update", '{"x": 1}', "3")
    (kept,) = [r for b in plans.iter_unapplied("r1") for r in b]
    assert kept["id"] == second and kept["crm_changes"] is None  # had a Customcrm write already
    assert ids(plans.iter_chargebee_creates("r1")) == []


def test_what_the_summary_reads(engine: Engine) -> None:
    plans = PlanStore(engine, FLOW)
    plans.insert_plan(
        [
            row(1, "skip", reason="no partner"),
            row(2, "skip", reason=None),
            row(3, "quarantine", crm_id="c3", reason="bad", held_side="customcrm", hold_kind="invalid"),
            row(
                4,
                "update",
                cb_id="k4",
                cb_op="update",
                cb_status="rejected",
                cb_error="no",
                detail='{"a": 1}',
            ),
            row(5, "unchanged", detail='{"b": 2}'),
        ]
    )
    assert plans.plan_skips("r1") == ["no partner", ""]
    assert [(p["action"], p["crm_id"] or p["cb_id"]) for p in plans.plan_problems("r1")] == [
        ("quarantine", "c3"),
        ("update", "k4"),
    ]
    assert len(plans.plan_problems("r1", limit=1)) == 1
    held, rejected = plans.plan_problems("r1")
    assert (held["action"], held["hold_kind"], held["held_side"]) == (
        Action.QUARANTINE,
        HoldKind.INVALID,
        "customcrm",
    )
    assert write_outcome(held, CRM) == (None, None)
    assert write_outcome(rejected, CB) == (WriteStatus.REJECTED, "no")
    counts = {(c["action"], c["cb_status"]): c["n"] for c in plans.plan_counts("r1")}
    assert counts == {
        ("skip", None): 2,
        ("quarantine", None): 1,
        ("update", "rejected"): 1,
        ("unchanged", None): 1,
    }
    assert sorted(plans.plan_details("r1")) == ['{"a": 1}', '{"b": 2}']
    plans.delete_plan("r1")
    assert plans.plan_counts("r1") == [] and ids(plans.iter_unapplied("r1")) == []


def test_plan_batches_page_through_many_rows(engine: Engine) -> None:
    plans = PlanStore(engine, FLOW)
    plans.insert_plan([row(i, "unchanged") for i in range(1, 1202)])
    batches = list(plans.iter_unapplied("r1"))
    assert [len(b) for b in batches] == [500, 500, 201]
    assert ids(batches) == sorted(ids(batches))
