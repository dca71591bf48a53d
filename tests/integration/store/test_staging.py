"""store/staging.py: staged records, deferred ones, and transform's reads against links."""

from __future__ import annotations

import json

from crmsync.engine.canonical import SideRecord
from crmsync.mapping.model import Side
from crmsync.store.codec import dumps, record_to_json
from crmsync.store.links import LinkStore
from crmsync.store.plan import PlanStore
from crmsync.store.staging import REF_PENDING_TRIES, StagingStore
from sqlalchemy.engine import Engine

from tests.integration.store.helpers import FLOW, OTHER, link_values, staged

CRM, CB = Side.CUSTOMCRM, Side.CHARGEBEE


def rec(side: Side, rid: str, email: str, **kw: object) -> SideRecord:
    return SideRecord(side, rid, {"email": email}, **kw)  # type: ignore[arg-type]


def test_stage_keeps_the_newest_copy_of_a_record_and_its_hints(engine: Engine) -> None:
    st = StagingStore(engine, FLOW)
    assert st.stage("r1", [staged(rec(CRM, "c1", "a@x"), "a@x"), staged(rec(CRM, "c2", "b@x"), "b@x")]) == 2
    assert st.stage("r1", []) == 0
    newer = SideRecord(CRM, "c1", {"email": "a2@x"}, version="2", hints={"created_by": "u1"})
    st.stage("r1", [staged(newer, "a2@x")])
    st.stage("r1", [staged(rec(CB, "k1", "a@x"), "a@x")])
    assert st.count_staged("r1") == {"customcrm": 2, "chargebee": 1}
    assert StagingStore(engine, OTHER).count_staged("r1") == {}
    rows = {r.record.id: r for r in st.iter_unlinked("r1")}
    back = rows["c1"].record
    assert rows["c1"].match_key == "a2@x"
    assert back.values == {"email": "a2@x"} and back.version == "2" and back.hints == {"created_by": "u1"}
    st.clear_staging("r1", CRM)
    assert st.count_staged("r1") == {"chargebee": 1}


def test_deferred_rows_are_kept_apart_ordered_by_key_and_cleared(engine: Engine) -> None:
    st = StagingStore(engine, FLOW)
    st.stage("r1", [staged(rec(CRM, "c1", "a@x"), "a@x")])
    st.stage_deferred("r1", 1, [staged(rec(CRM, "c2", "z"), "z"), staged(rec(CRM, "c3", "m"), "m")])
    assert [(r.record.id, r.match_key) for r in st.iter_deferred("r1", 1)] == [("c3", "m"), ("c2", "z")]
    assert list(st.iter_deferred("r1", 2)) == []
    assert st.count_staged("r1") == {"customcrm": 1}
    st.clear_deferred("r1")
    assert list(st.iter_deferred("r1", 1)) == []
    assert st.count_staged("r1") == {"customcrm": 1}


def test_reads_against_links(engine: Engine) -> None:
    st, links = StagingStore(engine, FLOW), LinkStore(engine, FLOW)
    links.apply(
        "r0",
        [],
        upsert_links=[link_values("c1", "k1", "a@x")],
        delete_links=[],
        hold=[],
        release=[],
        audits=[],
    )
    st.stage(
        "r1",
        [
            staged(rec(CRM, "c1", "a@x"), "a@x"),
            staged(rec(CRM, "c2", "b@x", external_ref="cb_9"), "b@x"),
            staged(rec(CRM, "c3", "gone@x", deleted=True), "gone@x"),
        ],
    )
    st.stage("r1", [staged(rec(CB, "k1", "a@x"), "a@x"), staged(rec(CB, "cb_7", "b@x"), "b@x")])
    batches = list(st.iter_touched_links("r1"))
    assert len(batches) == 1 and len(batches[0]) == 1
    pair = batches[0][0]
    assert pair.link["crm_id"] == "c1" and pair.crm is not None and pair.cb is not None
    assert (pair.crm.side, pair.crm.id, pair.cb.side, pair.cb.id) == (CRM, "c1", CB, "k1")
    assert pair.crm.values == {"email": "a@x"}
    assert [(r.record.side, r.record.id) for r in st.iter_unlinked("r1")] == [
        ("chargebee", "cb_7"),
        ("customcrm", "c2"),
        ("customcrm", "c3"),
    ]
    assert st.unlinked_claims("r1", "cb_") == ([("c2", "cb_9")], ["cb_7"])
    assert st.unlinked_claims("r1", None) == ([("c2", "cb_9")], [])
    claimed = st.staged_unlinked("r1", CRM, ["c1", "c2", "c3"])
    assert set(claimed) == {"c2"} and claimed["c2"].external_ref == "cb_9"


def test_held_records_are_carried_unless_they_wait_for_a_change(engine: Engine) -> None:
    st, links = StagingStore(engine, FLOW), LinkStore(engine, FLOW)
    held = []
    for rid, kind in [
        ("w", "waiting"),
        ("f", "failed"),
        ("r", "rejected"),
        ("p", "ref_pending"),
        ("s", "waiting"),
    ]:
        held.append(
            {
                "side": "customcrm",
                "record_id": rid,
                "kind": kind,
                "reason": kind,
                "staged": record_to_json(rec(CRM, rid, f"{rid}@x")),
            }
        )
    links.apply("r0", [], upsert_links=[], delete_links=[], hold=held, release=[], audits=[])
    st.stage("r1", [staged(rec(CRM, "s", "s-new@x"), "s-new@x")])  # re-read: not carried
    assert st.carry_quarantined("r1", lambda r: str(r.values["email"])) == 3
    assert {r.record.id: r.match_key for r in st.iter_unlinked("r1")} == {
        "f": "f@x",
        "p": "p@x",
        "s": "s-new@x",
        "w": "w@x",
    }
    # an optional reference is given up after a few tries (still listed as held)
    for _ in range(REF_PENDING_TRIES - 1):
        links.apply("rx", [], upsert_links=[], delete_links=[], hold=[held[3]], release=[], audits=[])
    st.clear_staging("r2", CRM)
    assert st.carry_quarantined("r2", lambda r: None) == 3
    assert "p" not in {r.record.id for r in st.iter_unlinked("r2")}


def test_purge_staging_keeps_what_the_summary_needs(engine: Engine) -> None:
    st, plans = StagingStore(engine, FLOW), PlanStore(engine, FLOW)
    st.stage("r1", [staged(rec(CRM, "c1", "a@x"), "a@x")])
    st.stage_deferred("r1", 1, [staged(rec(CRM, "c1", "a@x"), "a@x")])
    plans.insert_plan(
        [
            {
                "run_id": "r1",
                "flow": FLOW,
                "seq": 1,
                "action": "create",
                "crm_id": "c1",
                "reason": "new",
                "merged": dumps({"email": "a@x"}),
                "crm_staged": "{}",
                "cb_op": "create",
                "cb_changes": "{}",
                "cb_status": "done",
                "cb_result": "{}",
            }
        ]
    )
    st.purge_staging("r1")
    assert st.count_staged("r1") == {} and list(st.iter_deferred("r1", 1)) == []
    (row,) = [r for batch in plans.iter_unapplied("r1") for r in batch]
    assert row["merged"] is None and row["crm_staged"] is None and row["cb_changes"] is None
    assert row["cb_result"] is None
    assert (row["action"], row["crm_id"], row["reason"], row["cb_status"]) == ("create", "c1", "new", "done")
    assert json.loads(dumps({"b": 1, "a": 2})) == {"a": 2, "b": 1}
