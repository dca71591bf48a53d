"""store/approvals.py: deletes held for a person's decision (delete policy ``approve``),
on the migrated link store (SQLite, or PostgreSQL with CRMSYNC_TEST_DB=postgres)."""

from __future__ import annotations

from typing import Any

import pytest
from crmsync.engine.canonical import SideRecord
from crmsync.engine.plan import DeleteDecision
from crmsync.mapping.model import Side
from crmsync.store import approvals
from crmsync.store.codec import record_to_json
from crmsync.store.links import LinkStore
from crmsync.store.schema import quarantine, staging
from crmsync.store.staging import StagingStore
from sqlalchemy import select
from sqlalchemy.engine import Engine

from tests.integration.store.helpers import FLOW, OTHER, link_values, staged

pytestmark = pytest.mark.integration


def tomb(side: Side, rid: str) -> SideRecord:
    return SideRecord(side, rid, {"email": f"{rid}@example.com"}, 5.0, "2", deleted=True)


def hold_delete(links: LinkStore, rec: SideRecord, kind: str = "approval") -> None:
    hold = {
        "side": rec.side.value,
        "record_id": rec.id,
        "kind": kind,
        "reason": f"{rec.id} was deleted; held for approval",
        "staged": record_to_json(rec),
        "content_hash": None,
    }
    args: dict[str, Any] = {"upsert_links": [], "delete_links": [], "release": [], "audits": []}
    links.apply("r1", [], hold=[hold], **args)


@pytest.fixture
def held(engine: Engine) -> LinkStore:
    """Two linked pairs, each with a delete held: c1 deleted in Customcrm, k2 in Chargebee."""
    links = LinkStore(engine, FLOW)
    links.apply(
        "r1",
        [],
        upsert_links=[link_values("c1", "k1"), link_values("c2", "k2")],
        delete_links=[],
        hold=[],
        release=[],
        audits=[],
    )
    hold_delete(links, tomb(Side.CUSTOMCRM, "c1"))
    hold_delete(links, tomb(Side.CHARGEBEE, "k2"))
    return links


def kinds(engine: Engine) -> dict[tuple[str, str], str]:
    with engine.connect() as conn:
        rows = conn.execute(select(quarantine.c.side, quarantine.c.record_id, quarantine.c.kind)).all()
    return {(s, r): k for s, r, k in rows}


def test_pending_approvals_list_the_held_deletes(engine: Engine, held: LinkStore) -> None:
    pending = approvals.pending_approvals(engine, FLOW)
    assert sorted((p.side, p.record_id) for p in pending) == [("chargebee", "k2"), ("customcrm", "c1")]
    assert all(p.flow == FLOW and "held for approval" in p.reason and p.attempts == 1 for p in pending)
    assert approvals.count_pending(engine, FLOW) == 2
    assert len(approvals.pending_approvals(engine)) == 2 and approvals.pending_approvals(engine, OTHER) == []


def test_a_decision_is_recorded_once_with_who_decided(engine: Engine, held: LinkStore) -> None:
    assert approvals.decide_delete(engine, FLOW, "customcrm", "c1", approve=True, by="alice")
    assert not approvals.decide_delete(engine, FLOW, "customcrm", "c1", approve=False, by="bob")  # decided
    assert not approvals.decide_delete(engine, FLOW, "chargebee", "c1", approve=True, by="bob")  # wrong side
    assert not approvals.decide_delete(engine, OTHER, "chargebee", "k2", approve=True, by="bob")  # other flow
    assert approvals.decide_delete(engine, FLOW, "chargebee", "k2", approve=False, by=" carol ")
    assert kinds(engine) == {("customcrm", "c1"): "approved", ("chargebee", "k2"): "declined"}
    assert approvals.pending_approvals(engine, FLOW) == []
    got = approvals.decisions(engine, FLOW, [("customcrm", "c1"), ("chargebee", "k2"), ("customcrm", "c9")])
    assert got == {
        ("customcrm", "c1"): DeleteDecision(True, "alice"),
        ("chargebee", "k2"): DeleteDecision(False, "carol"),
    }
    with engine.connect() as conn:
        reason = conn.execute(select(quarantine.c.reason).where(quarantine.c.record_id == "c1")).scalar_one()
    assert reason.startswith("delete approved by alice at ") and "c1 was deleted" in reason


def test_the_decision_is_the_rows_kind_shared_by_the_engine_and_the_page(
    engine: Engine, held: LinkStore
) -> None:
    """Whatever the reason says, the kind (a HoldKind member) decides; the Sync page lists
    and offers buttons by the same members."""
    from crmsync.engine.status import APPROVAL_KINDS, HoldKind
    from crmsync.store import operator
    from sqlalchemy import update

    assert approvals.decide_delete(engine, FLOW, "customcrm", "c1", approve=True, by="alice")
    with engine.begin() as conn:  # a reason that reads like the other decision changes nothing
        conn.execute(update(quarantine).values(reason="delete rejected by nobody"))
    assert kinds(engine) == {("customcrm", "c1"): HoldKind.APPROVED, ("chargebee", "k2"): HoldKind.APPROVAL}
    got = approvals.decisions(engine, FLOW, [("customcrm", "c1"), ("chargebee", "k2")])
    assert got == {("customcrm", "c1"): DeleteDecision(True, "alice")}
    assert approvals.KINDS == APPROVAL_KINDS
    assert set(operator.APPROVAL_KINDS) == set(APPROVAL_KINDS) and operator.APPROVAL_KIND == HoldKind.APPROVAL


def test_a_decision_needs_a_person_and_a_side(engine: Engine, held: LinkStore) -> None:
    with pytest.raises(ValueError, match="needs `by`"):
        approvals.decide_delete(engine, FLOW, "customcrm", "c1", approve=True, by="  ")
    with pytest.raises(ValueError):
        approvals.decide_delete(engine, FLOW, "crm", "c1", approve=True, by="alice")
    assert kinds(engine)[("customcrm", "c1")] == "approval"


def test_other_holds_are_never_decided(engine: Engine, held: LinkStore) -> None:
    hold_delete(held, tomb(Side.CUSTOMCRM, "c3"), kind="waiting")
    assert not approvals.decide_delete(engine, FLOW, "customcrm", "c3", approve=True, by="alice")
    assert approvals.decisions(engine, FLOW, [("customcrm", "c3")]) == {}


def test_carry_stages_the_tombstones_not_read_again(engine: Engine, held: LinkStore) -> None:
    StagingStore(engine, FLOW).stage("r2", [staged(tomb(Side.CHARGEBEE, "k2"))])  # re-read by the extract
    approvals.decide_delete(engine, FLOW, "customcrm", "c1", approve=True, by="alice")
    assert approvals.carry_approvals(engine, FLOW, "r2", lambda r: r.values.get("email")) == 1
    with engine.connect() as conn:
        rows = conn.execute(
            select(staging.c.side, staging.c.record_id, staging.c.deleted, staging.c.match_key).where(
                staging.c.run_id == "r2"
            )
        ).all()
    assert sorted(rows) == [("chargebee", "k2", True, None), ("customcrm", "c1", True, "c1@example.com")]


def test_carry_drops_a_held_delete_whose_link_is_gone(engine: Engine, held: LinkStore) -> None:
    args: dict[str, Any] = {"upsert_links": [], "hold": [], "release": [], "audits": []}
    held.apply("r2", [], delete_links=[("c1", "k1")], **args)
    assert approvals.carry_approvals(engine, FLOW, "r3", lambda r: None) == 1
    assert kinds(engine) == {("chargebee", "k2"): "approval"}


def test_update_links_does_not_hold_again_a_delete_decided_during_the_run(
    engine: Engine, held: LinkStore
) -> None:
    """transform planned c1's delete as held; alice decided before update_links applied it."""
    from pathlib import Path

    from crmsync.engine.settle import Hold
    from crmsync.engine.status import HoldKind
    from crmsync.flows.links import _undecided
    from crmsync.mapping.model import load_mapping
    from crmsync.store.repository import Repository

    mapping = load_mapping(Path(__file__).resolve().parents[3] / "include/mappings/contact_customer.yaml")
    assert approvals.decide_delete(engine, FLOW, "customcrm", "c1", approve=True, by="alice")
    holds = [
        Hold("customcrm", "c1", HoldKind.APPROVAL, "held", None, None),
        Hold("chargebee", "k2", HoldKind.APPROVAL, "held", None, None),
        Hold("customcrm", "c1", HoldKind.FAILED, "a failed write is never dropped", None, None),
    ]
    kept = _undecided(mapping, Repository(engine, FLOW), holds)
    assert [(h.record_id, h.kind) for h in kept] == [("k2", "approval"), ("c1", "failed")]
