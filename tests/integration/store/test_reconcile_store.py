"""store/reconcile.py: the reads of a reconcile run (every link with its staged rows, the
unlinked records with their quarantine entry, the match keys a side carries twice)."""

from __future__ import annotations

from crmsync.engine.canonical import SideRecord
from crmsync.engine.status import HoldKind
from crmsync.mapping.model import Side
from crmsync.store.links import LinkStore
from crmsync.store.reconcile import ReconcileStore
from crmsync.store.staging import StagingStore
from sqlalchemy.engine import Engine

from tests.integration.store.helpers import FLOW, OTHER, link_values, staged

CRM, CB = Side.CUSTOMCRM, Side.CHARGEBEE


def rec(side: Side, rid: str, email: str, deleted: bool = False) -> SideRecord:
    return SideRecord(side, rid, {"email": email}, 1.0, "1", deleted)


def test_reads_pairs_unlinked_and_shared_keys(engine: Engine) -> None:
    links, st = LinkStore(engine, FLOW), StagingStore(engine, FLOW)
    links.apply(
        "r0",
        [],
        upsert_links=[link_values("c1", "k1", "a@x"), link_values("c2", "k2", "b@x")],
        delete_links=[],
        hold=[{"side": "customcrm", "record_id": "c4", "kind": "ambiguous", "reason": "shares a@x"}],
        release=[],
        audits=[],
    )
    st.stage("r1", [staged(rec(CRM, "c1", "a@x"), "a@x"), staged(rec(CRM, "c4", "a@x"), "a@x")])
    st.stage("r1", [staged(rec(CRM, "c5", "e@x", deleted=True), "e@x"), staged(rec(CRM, "c6", "e@x"), "e@x")])
    st.stage("r1", [staged(rec(CB, "k1", "a@x"), "a@x"), staged(rec(CB, "k9", "z@x"), "z@x")])
    StagingStore(engine, OTHER).stage("r1", [staged(rec(CRM, "c7", "a@x"), "a@x")])  # another flow

    store = ReconcileStore(engine, FLOW)
    pairs = [
        (p.link["crm_id"], p.crm is not None, p.cb is not None)
        for batch in store.iter_pairs("r1")
        for p in batch
    ]
    assert pairs == [("c1", True, True), ("c2", False, False)]  # c2 ⇄ k2: read on neither side
    first = next(iter(store.iter_pairs("r1")))[0]
    assert (first.crm, first.cb) == (rec(CRM, "c1", "a@x"), rec(CB, "k1", "a@x"))  # decoded in store/
    unlinked = {(r.side, r.record_id): (r.hold_kind, r.hold_reason) for r in store.iter_unlinked("r1")}
    assert unlinked == {
        ("customcrm", "c4"): (HoldKind.AMBIGUOUS, "shares a@x"),
        ("customcrm", "c6"): (None, None),  # c5 is a tombstone: not listed
        ("chargebee", "k9"): (None, None),
    }
    # a@x: a linked and an unlinked contact; e@x: one live record (the tombstone does not count)
    assert list(store.iter_shared_keys("r1")) == [(CRM, "a@x", ["c1", "c4"])]
    assert list(store.iter_shared_keys("other-run")) == []
