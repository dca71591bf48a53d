"""The transform's matching passes on a real (SQLite) link store: the first rule, then
the alternatives, each streamed from staging; deferred rows are cleaned up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from crmsync.engine.canonical import SideRecord, content_hash, match_key, to_canonical
from crmsync.flows.transform import build_plan
from crmsync.mapping.model import Mapping, Side, load_mapping
from crmsync.store.repository import Repository
from crmsync.store.schema import metadata, plan, staging
from sqlalchemy import create_engine, func, select

ROOT = Path(__file__).resolve().parents[3]
RUN = "manual__2026-01-01T00:00:00+00:00"


@pytest.fixture
def m() -> Mapping:
    return load_mapping(ROOT / "include" / "mappings" / "quote_order.yaml")


def stage(repo: Repository, m: Mapping, side: Side, rows: list[dict[str, Any]]) -> None:
    recs = []
    for raw in rows:
        rid = raw.pop("id")
        rec = SideRecord(side, rid, to_canonical(m, side, raw), 100.0, "1")
        recs.append((rec, match_key(m, rec.values), content_hash(rec.values)))
    repo.stage(RUN, recs)


def decisions(repo: Repository) -> dict[str, dict[str, Any]]:
    """Plan rows keyed by the Customcrm id (or Chargebee id when there is none)."""
    with repo.engine.connect() as conn:
        rows = conn.execute(select(plan).where(plan.c.run_id == RUN)).mappings().all()
    return {str(r["crm_id"] or r["cb_id"]): dict(r) for r in rows}


def test_quotes_link_by_reference_then_by_invoice_and_never_guess(repo: Repository, m: Mapping) -> None:
    stage(
        repo,
        m,
        Side.CUSTOMCRM,
        [
            {"id": "QUO-REF", "Number": "Q-1", "InvoiceId": "INV-9"},  # by reference_id
            {"id": "QUO-INV", "Number": "Q-2", "InvoiceId": "INV-2"},  # by invoice
            {"id": "QUO-TWO", "Number": "Q-3", "InvoiceId": "INV-3"},  # two orders of INV-3
            {"id": "QUO-CONTRA", "Number": "Q-4", "InvoiceId": "INV-4"},  # order names Q-OTHER
            {"id": "QUO-NONE", "Number": "Q-5", "InvoiceId": None},  # nothing
        ],
    )
    stage(
        repo,
        m,
        Side.CHARGEBEE,
        [
            {"id": "ord_ref", "reference_id": "Q-1", "invoice_id": "INV-1", "document_number": "1"},
            {"id": "ord_inv", "invoice_id": "INV-2", "document_number": "2", "total": 500},
            {"id": "ord_3a", "invoice_id": "INV-3", "document_number": "3"},
            {"id": "ord_3b", "invoice_id": "INV-3", "document_number": "4"},
            {"id": "ord_contra", "reference_id": "Q-OTHER", "invoice_id": "INV-4", "document_number": "5"},
            {"id": "ord_lone", "invoice_id": "INV-7", "document_number": "6"},
            {"id": "ord_lone2", "invoice_id": "INV-7", "document_number": "7"},
        ],
    )
    counts = build_plan(m, RUN, {}, repo)
    assert counts is not None
    d = decisions(repo)
    assert d["QUO-REF"]["action"] == "link_by_match" and d["QUO-REF"]["cb_id"] == "ord_ref"
    by_invoice = d["QUO-INV"]
    assert by_invoice["action"] == "link_by_match" and by_invoice["cb_id"] == "ord_inv"
    # the quote's number is written into the order's reference_id; the total flows to the quote
    assert json.loads(by_invoice["cb_changes"]) == {"quote_number": "Q-2"}
    assert json.loads(by_invoice["crm_changes"])["amount"] == 500
    for held in ("QUO-TWO", "ord_3a", "ord_3b"):
        assert d[held]["action"] == "quarantine" and d[held]["hold_kind"] == "ambiguous", held
        assert "invoice_id is shared by several records" in d[held]["reason"]
    assert d["QUO-CONTRA"]["action"] == d["ord_contra"]["action"] == "quarantine"
    assert "quote_number differs" in d["QUO-CONTRA"]["reason"] and "'Q-OTHER'" in d["QUO-CONTRA"]["reason"]
    # no partner by any rule: skipped (this flow never creates), not ambiguous
    for skipped in ("QUO-NONE", "ord_lone", "ord_lone2"):
        assert d[skipped]["action"] == "skip", (skipped, d[skipped])
    assert len(d) == 10, "one decision per pair or unpaired record, none twice"
    with repo.engine.connect() as conn:
        leftover = conn.execute(select(func.count()).select_from(staging).where(staging.c.flow != m.flow))
        assert leftover.scalar() == 0, "rows staged for the alternative rule are removed"


def test_a_rebuilt_plan_is_the_same(repo: Repository, m: Mapping) -> None:
    stage(repo, m, Side.CUSTOMCRM, [{"id": "QUO-INV", "Number": "Q-2", "InvoiceId": "INV-2"}])
    stage(repo, m, Side.CHARGEBEE, [{"id": "ord_inv", "invoice_id": "INV-2", "document_number": "2"}])
    # a transform that died after staging the alternative pass left rows behind
    rec = SideRecord(Side.CHARGEBEE, "ord_ghost", {"invoice_id": "INV-2"})
    repo.stage_deferred(RUN, 1, [(rec, "inv-2", content_hash(rec.values))])
    build_plan(m, RUN, {}, repo)
    first = {k: v["action"] for k, v in decisions(repo).items()}
    build_plan(m, RUN, {}, repo)
    assert {k: v["action"] for k, v in decisions(repo).items()} == first == {"QUO-INV": "link_by_match"}


def test_flows_with_one_rule_are_unchanged(tmp_path: Path) -> None:
    m = load_mapping(ROOT / "include" / "mappings" / "contact_customer.yaml")
    engine = create_engine(f"sqlite:///{tmp_path / 'c.db'}")
    metadata.create_all(engine)
    repo = Repository(engine, m.flow)
    stage(repo, m, Side.CUSTOMCRM, [{"id": "CON-1", "Email": "a@example.com", "FirstName": "A"}])
    stage(
        repo,
        m,
        Side.CHARGEBEE,
        [{"id": "cb_1", "email": "A@example.com"}, {"id": "cb_2", "email": "b@example.com"}],
    )
    build_plan(m, RUN, {}, repo)
    d = decisions(repo)
    assert d["CON-1"]["action"] == "link_by_match" and d["cb_2"]["action"] == "create"
