"""Issue 11 item 4(a), on a real (SQLite) link store: a tombstone read again after the run
that ended its link (the extract's overlap window re-reads the last 300 s, a full resync
reads everything) is not reported again as "deleted before it was ever linked"."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from crmsync.engine.canonical import (
    CHARGEBEE_META,
    SideRecord,
    content_hash,
    match_key,
    side_record,
    to_canonical,
)
from crmsync.flows.transform import build_plan
from crmsync.mapping.model import Mapping, Side, load_mapping
from crmsync.store.repository import Repository, record_from_staging
from crmsync.store.schema import audit, metadata, plan, staging
from sqlalchemy import create_engine, select

ROOT = Path(__file__).resolve().parents[3]
RUN = "manual__2026-01-01T00:00:00+00:00"


@pytest.fixture
def m() -> Mapping:
    return load_mapping(ROOT / "include" / "mappings" / "contact_customer.yaml")


def tombstone(m: Mapping, rid: str) -> SideRecord:
    raw = {f.customcrm: None for f in m.fields} | {"Email": f"{rid.lower()}@example.com"}
    return SideRecord(Side.CUSTOMCRM, rid, to_canonical(m, Side.CUSTOMCRM, raw), 1.0, "4", deleted=True)


def ended(repo: Repository, crm_id: str, cb_id: str, kind: str, detail: object = None) -> None:
    with repo.engine.begin() as conn:
        conn.execute(
            audit.insert().values(
                flow=repo.flow,
                run_id="an earlier run",
                at=datetime.now(UTC),
                kind=kind,
                crm_id=crm_id,
                cb_id=cb_id,
                field=None,
                detail=json.dumps(detail or {"reason": "..."}),
            )
        )


def test_a_tombstone_of_an_ended_link_is_not_reported_again(repo: Repository, m: Mapping) -> None:
    ended(repo, "CON-000009", "crm-CON-000009", "unlink")
    ended(repo, "CON-000010", "crm-CON-000010", "delete")  # a delete propagated earlier
    recs = [tombstone(m, rid) for rid in ("CON-000009", "CON-000010", "CON-000011")]
    repo.stage(RUN, [(r, match_key(m, r.values), content_hash(r.values)) for r in recs])
    build_plan(m, RUN, {}, repo)
    with repo.engine.connect() as conn:
        rows = conn.execute(
            select(plan.c.crm_id, plan.c.action, plan.c.reason).where(plan.c.run_id == RUN)
        ).all()
    assert [(r.crm_id, r.action) for r in rows] == [("CON-000011", "skip")], rows
    assert rows[0].reason.startswith(
        "Customcrm contact CON-000011: deleted in Customcrm before it was ever linked"
    )


def test_a_records_hints_survive_staging(tmp_path: Path) -> None:
    """The created_by an order's owner hold names travels through the staging table."""
    orders = load_mapping(ROOT / "include" / "mappings" / "order_order.yaml")
    engine = create_engine(f"sqlite:///{tmp_path / 'o.db'}")
    metadata.create_all(engine)
    repo = Repository(engine, orders.flow)
    rec = side_record(
        orders, Side.CHARGEBEE, {"id": "ord_1", "created_by": "jane@example.com"}, CHARGEBEE_META
    )
    repo.stage(RUN, [(rec, match_key(orders, rec.values), content_hash(rec.values))])
    with engine.connect() as conn:
        row = conn.execute(select(staging)).mappings().one()
    back = record_from_staging(row)
    assert back.hints == {"created_by": "jane@example.com"} and back.values == rec.values


def test_a_handled_chargebee_delete_is_read_from_the_audits_deleted_sides(
    repo: Repository, m: Mapping
) -> None:
    """The extract's "deleted already" comes from the audit's ``deleted_on`` (the plan's
    Decision), whatever the reason's wording; rows audited before it existed are read by
    their reason as before."""
    from crmsync.flows.extract import _deleted_in_chargebee

    ended(repo, "C1", "cb1", "unlink", {"reason": "reworded", "deleted_on": ["chargebee"]})
    ended(repo, "C2", "cb2", "unlink", {"reason": "x was deleted in Chargebee", "deleted_on": ["customcrm"]})
    ended(repo, "C3", "cb3", "unlink", {"reason": "a: deleted on both sides", "deleted_on": []})
    ended(repo, "C4", "cb4", "unlink", {"reason": "p: deleted on both sides; the link is ended"})  # legacy
    ended(repo, "C5", "cb5", "unlink", {"reason": "y was deleted in Customcrm; its link was ended"})
    ended(repo, "C6", "cb6", "delete", {"reason": "anything"})
    ids = [f"cb{i}" for i in range(1, 8)]
    assert _deleted_in_chargebee(repo, ids) == {"cb1", "cb4", "cb6"}
