"""store/links.py: links, quarantine and audit of one flow."""

from __future__ import annotations

from typing import Any

from crmsync.engine.status import HoldKind
from crmsync.mapping.model import Side
from crmsync.store.links import LinkRow, LinkStore
from crmsync.store.plan import PlanStore
from sqlalchemy.engine import Engine

from tests.integration.store.helpers import FLOW, OTHER, link_values

CRM, CB = Side.CUSTOMCRM, Side.CHARGEBEE


def apply(links: LinkStore, run_id: str = "r1", plan_ids: list[int] | None = None, **kw: Any) -> None:
    args: dict[str, Any] = {"upsert_links": [], "delete_links": [], "hold": [], "release": [], "audits": []}
    links.apply(run_id, plan_ids or [], **{**args, **kw})


def test_links_are_upserted_by_chargebee_id_and_read_typed(engine: Engine) -> None:
    links = LinkStore(engine, FLOW)
    apply(links, upsert_links=[link_values("c1", "k1", "a@x"), link_values("c2", "k2", "b@x")])
    row = links.get_link(crm_id="c1")
    assert row is not None and set(row) == set(LinkRow.__annotations__)
    assert (row["cb_id"], row["match_key"], row["last_run_id"], row["flow"]) == ("k1", "a@x", "r1", FLOW)
    created = row["created_at"]
    # the same cb_id twice in one chunk: merged in order; an existing link is updated
    apply(links, "r2", upsert_links=[{"cb_id": "k1", "crm_version": "5"}, {"cb_id": "k1", "cb_version": "6"}])
    again = links.get_link(cb_id="k1")
    assert again is not None and (again["crm_version"], again["cb_version"]) == ("5", "6")
    assert again["last_run_id"] == "r2" and again["created_at"] == created and again["crm_id"] == "c1"
    assert links.get_link(crm_id="c1", cb_id="k2") is None
    assert links.count_links() == 2 and LinkStore(engine, OTHER).count_links() == 0
    assert set(links.get_links_by_cb_id(["k1", "k2", "k9", "k1"])) == {"k1", "k2"}
    assert links.linked_by_match_key(["a@x", "z"]) == {"a@x": ("c1", "k1")}
    assert links.partners(CB, ["k1", "k9"]) == {"k1": "c1"}
    assert links.partners(CRM, ["c2"]) == {"c2": "k2"}
    assert LinkStore(engine, OTHER).partners(CB, ["k1"]) == {}
    apply(links, "r3", delete_links=[("c1", "k1")])
    assert links.get_link(crm_id="c1") is None and links.count_links() == 1


def test_many_links_in_one_apply(engine: Engine) -> None:
    links = LinkStore(engine, FLOW)
    apply(links, upsert_links=[link_values(f"c{i}", f"k{i}") for i in range(1100)])
    assert links.count_links() == 1100
    assert len(links.partners(CRM, [f"c{i}" for i in range(1100)])) == 1100


def test_holds_count_attempts_and_are_released(engine: Engine) -> None:
    links = LinkStore(engine, FLOW)
    hold = {"side": "customcrm", "record_id": "c1", "kind": "waiting", "reason": "later", "staged": None}
    apply(links, hold=[hold, {**hold, "record_id": "c2", "kind": "invalid", "reason": "bad"}])
    apply(links, "r2", hold=[{**hold, "reason": "still later", "content_hash": "h"}])
    assert links.count_held() == 2 and LinkStore(engine, OTHER).count_held() == 0
    first = links.quarantined()[0]
    assert (first["record_id"], first["attempts"], first["reason"], first["run_id"]) == (
        "c1",
        2,
        "still later",
        "r2",
    )
    assert first["content_hash"] == "h"
    assert (first["side"], first["kind"], first["retry_requested"]) == (
        Side.CUSTOMCRM,
        HoldKind.WAITING,
        False,
    )
    apply(links, "r3", release=[("customcrm", "c1"), ("chargebee", "c2")])
    assert [q["record_id"] for q in links.quarantined()] == ["c2"]


def test_audit_says_which_pairs_a_delete_ended(engine: Engine) -> None:
    links = LinkStore(engine, FLOW)
    audits = [
        {"kind": "unlink", "crm_id": "c1", "cb_id": "k1", "detail": '{"reason": "deleted in Customcrm"}'},
        {"kind": "delete", "crm_id": "c2", "cb_id": "k2", "detail": "{}"},
        {"kind": "conflict", "crm_id": "c3", "cb_id": "k3", "field": "email", "detail": "{}"},
    ]
    apply(links, audits=audits)
    assert links.unlinked_survivors(CRM, ["c1", "c2", "c3"]) == {"c1"}
    assert links.ended_by_delete(CB, ["k1", "k2", "k3", "k4"]) == {"k1", "k2"}
    assert sorted(links.chargebee_deletes_audited(["k3", "k2", "k1", "k2"])) == [
        ("k1", "unlink", '{"reason": "deleted in Customcrm"}'),
        ("k2", "delete", "{}"),
    ]
    assert LinkStore(engine, OTHER).ended_by_delete(CB, ["k1"]) == set()


def test_apply_marks_its_plan_rows_applied(engine: Engine) -> None:
    plans, links = PlanStore(engine, FLOW), LinkStore(engine, FLOW)
    plans.insert_plan([{"run_id": "r1", "flow": FLOW, "seq": i, "action": "unchanged"} for i in (1, 2)])
    first, second = [r["id"] for b in plans.iter_unapplied("r1") for r in b]
    apply(links, plan_ids=[first], upsert_links=[link_values("c1", "k1")])
    assert [r["id"] for b in plans.iter_unapplied("r1") for r in b] == [second]
