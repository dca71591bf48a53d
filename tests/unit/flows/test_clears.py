"""A clear is an edit (issue 11 item 6), on a real (SQLite) link store: clears are planned
as writes, so a run that would clear a field on many records meets the circuit breaker,
and the merge's notes name each record and field in the run summary."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException
from crmsync.engine.canonical import SideRecord, content_hash, match_key, to_canonical
from crmsync.flows.breaker import _circuit_breaker
from crmsync.flows.transform import build_plan
from crmsync.mapping.model import Mapping, Side, load_mapping
from crmsync.store.repository import Repository
from crmsync.store.schema import link, metadata, plan
from sqlalchemy import create_engine, select

ROOT = Path(__file__).resolve().parents[3]
RUN = "manual__2026-01-01T00:00:00+00:00"
N = 60  # more than 50 links: the fraction limit applies


@pytest.fixture
def m() -> Mapping:
    return load_mapping(ROOT / "include" / "mappings" / "contact_customer.yaml")


def contact(m: Mapping, i: int, phone: str | None) -> SideRecord:
    raw = {f.customcrm: None for f in m.fields}
    raw.update(Email=f"p{i}@example.com", FirstName=f"P{i}", Phone=phone)
    return SideRecord(Side.CUSTOMCRM, f"CON-{i}", to_canonical(m, Side.CUSTOMCRM, raw), 200.0, "2")


def linked_pairs(repo: Repository, m: Mapping, cleared: int) -> None:
    """N linked pairs that agreed on a phone; Customcrm cleared it on the first ``cleared``."""
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    staged = []
    for i in range(N):
        synced = contact(m, i, f"+47 {i}")
        snapshot = json.dumps(synced.values)
        rows.append(
            dict(
                flow=m.flow,
                crm_id=synced.id,
                crm_slot="",
                cb_id=f"crm-{synced.id}",
                match_key=match_key(m, synced.values),
                base=snapshot,
                crm_snapshot=snapshot,
                cb_snapshot=snapshot,
                base_hash=content_hash(synced.values),
                crm_version="1",
                cb_version="1",
                created_at=now,
                synced_at=now,
            )
        )
        if i < cleared:
            rec = contact(m, i, None)
            staged.append((rec, match_key(m, rec.values), content_hash(rec.values)))
    with repo.engine.begin() as conn:
        conn.execute(link.insert(), rows)
    repo.stage(RUN, staged)


def test_mass_clearing_meets_the_circuit_breaker(repo: Repository, m: Mapping) -> None:
    linked_pairs(repo, m, cleared=N)
    build_plan(m, RUN, {}, repo)
    with repo.engine.connect() as conn:
        planned = conn.execute(select(plan.c.cb_changes).where(plan.c.run_id == RUN)).scalars().all()
    assert [json.loads(c) for c in planned] == [{"phone": None}] * N, "each clear is a planned write"
    assert repo.count_plan_writes(RUN) == N
    with pytest.raises(AirflowFailException, match=f"would write {N} records"):
        _circuit_breaker(m, RUN, {}, repo)
    _circuit_breaker(m, RUN, {"approve_large_change": True}, repo)


def test_a_few_clears_pass_the_circuit_breaker(repo: Repository, m: Mapping) -> None:
    linked_pairs(repo, m, cleared=3)
    build_plan(m, RUN, {}, repo)
    assert repo.count_plan_writes(RUN) == 3
    _circuit_breaker(m, RUN, {}, repo)


def test_the_summary_names_the_records_and_fields_cleared_or_kept(repo: Repository, m: Mapping) -> None:
    """Issue 11 item 4(c): "blanks ignored N" named nothing. The summary lists the first 20
    (record and field), the task log shows the first 5 and how many more."""
    from crmsync.flows.summary import build_summary, render_summary

    linked_pairs(repo, m, cleared=7)
    build_plan(m, RUN, {}, repo)
    s = build_summary(m, repo, RUN, dry_run=True)
    assert s["cleared"] == 7 and len(s["cleared_records"]) == 7
    assert s["cleared_records"][0].startswith("Customcrm contact CON-0 ⇄ Chargebee customer crm-CON-0: phone")
    text = render_summary(s)
    assert "cleared 7" in text and "- Customcrm contact CON-4 ⇄" in text and "CON-5 ⇄" not in text
    assert "... 2 more" in text


def test_the_summary_names_blanks_kept_from_overwriting(tmp_path: Path, m: Mapping) -> None:
    from crmsync.flows.summary import build_summary, render_summary
    from crmsync.mapping.model import parse_mapping

    doc = m.model_dump(mode="json", exclude_defaults=True)
    doc["fields"] = [{**f, "empty_overwrites": False} if f["name"] == "phone" else f for f in doc["fields"]]
    protected = parse_mapping(doc)
    engine = create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    metadata.create_all(engine)
    repo = Repository(engine, protected.flow)
    linked_pairs(repo, protected, cleared=25)
    build_plan(protected, RUN, {}, repo)
    s = build_summary(protected, repo, RUN, dry_run=True)
    assert s["blank_ignored"] == 25 and s["cleared"] == 0
    assert len(s["blank_ignored_records"]) == 20, "the first 20, like skipped_records"
    first = s["blank_ignored_records"][0]
    assert "Customcrm contact CON-0" in first and "phone is blank in customcrm" in first
    assert "empty_overwrites: false" in first
    text = render_summary(s)
    assert "blanks ignored 25" in text and "... 20 more" in text


def test_a_reference_not_linked_yet_is_unknown_not_a_clear(repo: Repository, m: Mapping) -> None:
    """Found by the e2e test: a customer's business entity not linked yet read as None, and
    with a clear being an edit that blanked every contact's company. It is left out now."""
    from crmsync.engine.merge import merge
    from crmsync.flows.refs import RefResolver

    cb = SideRecord(
        Side.CHARGEBEE,
        "crm-CON-1",
        to_canonical(m, Side.CHARGEBEE, {"email": "a@example.com", "business_entity_id": "be_x"}),
    )
    resolved, hard, soft = RefResolver(repo.engine, m).canonical_soft(cb)
    assert "company_id" not in resolved.values and hard is None
    assert soft and "company_id (Chargebee business_entity_id be_x) is not linked yet" in soft
    crm = contact(m, 1, None)
    crm_values = {**crm.values, "company_id": "CUS-7"}
    r = merge(m, crm_values, crm_values, {**resolved.values, **{k: crm_values[k] for k in ("email",)}})
    assert "company_id" not in r.to_customcrm and r.merged["company_id"] == "CUS-7"
