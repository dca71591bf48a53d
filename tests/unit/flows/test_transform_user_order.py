"""user_order's matching (one user ⇄ many orders) on a real (SQLite) link store. Found by
tests/chaos/test_hostile_input_user_order.py:

* users sharing an Email were held as ambiguous with "its match key is shared", naming
  no field; now the reason names Email (created_by for the orders naming it);
* an Email or created_by that is no email address was matched or skipped as "no match"
  (the mapping had no ``format: email``); now held naming the field; orders Chargebee
  itself made (created_by "system", "api", "import") are skipped by the mapping's
  ``no_partner`` (the shared rule of crmsync.mapping.creators), not held;
* a held user whose Email was corrected but who has no order was planned as a skip, and
  a skip never released the hold: it stayed in quarantine with the stale reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from crmsync.engine.canonical import SideRecord, content_hash, match_key, to_canonical
from crmsync.flows.links import apply_plan_rows
from crmsync.flows.transform import build_plan
from crmsync.mapping.model import Mapping, Side, load_mapping
from crmsync.store.plan import stored_plan_row
from crmsync.store.repository import Repository
from crmsync.store.schema import plan, quarantine
from pydantic import ValidationError
from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[3]
RUN1 = "manual__2026-01-01T00:00:00+00:00"
RUN2 = "manual__2026-01-02T00:00:00+00:00"


@pytest.fixture
def m() -> Mapping:
    return load_mapping(ROOT / "include" / "mappings" / "user_order.yaml")


def stage(repo: Repository, m: Mapping, run: str, side: Side, rows: list[dict[str, Any]]) -> None:
    recs = []
    for raw in rows:
        raw = dict(raw)
        rid = raw.pop("id")
        rec = SideRecord(side, rid, to_canonical(m, side, raw), 100.0, "1")
        recs.append((rec, match_key(m, rec.values), content_hash(rec.values)))
    repo.stage(run, recs)


def decisions(repo: Repository, run: str) -> dict[str, dict[str, Any]]:
    with repo.engine.connect() as conn:
        rows = conn.execute(select(plan).where(plan.c.run_id == run)).mappings().all()
    return {str(r["crm_id"] or r["cb_id"]): dict(r) for r in rows}


def test_users_sharing_an_email_are_ambiguous_naming_the_field(repo: Repository, m: Mapping) -> None:
    stage(
        repo,
        m,
        RUN1,
        Side.CUSTOMCRM,
        [{"id": "USR-1", "Email": "dup@x.example"}, {"id": "USR-2", "Email": " DUP@x.example"}],
    )
    stage(repo, m, RUN1, Side.CHARGEBEE, [{"id": "ord_1", "created_by": "dup@x.example"}])
    assert build_plan(m, RUN1, {}, repo) is not None
    d = decisions(repo, RUN1)
    for rid, name in (("USR-1", "Email"), ("USR-2", "Email"), ("ord_1", "created_by")):
        assert d[rid]["action"] == "quarantine" and d[rid]["hold_kind"] == "ambiguous", d[rid]
        reason = d[rid]["reason"]
        assert f"its {name} " in reason and "USR-1" in reason and "USR-2" in reason, reason
        assert "correct" in reason, reason


def test_orders_chargebee_made_are_skipped_broken_created_by_is_held(repo: Repository, m: Mapping) -> None:
    stage(repo, m, RUN1, Side.CUSTOMCRM, [{"id": "USR-1", "Email": "ada@x.example"}])
    stage(
        repo,
        m,
        RUN1,
        Side.CHARGEBEE,
        [
            {"id": "ord_ok", "created_by": "Ada@X.example "},
            {"id": "ord_sys", "created_by": "system"},
            {"id": "ord_api", "created_by": "api"},
            {"id": "ord_two_at", "created_by": "ada@@x.example"},
            {"id": "ord_space", "created_by": "a da@x.example"},
        ],
    )
    assert build_plan(m, RUN1, {}, repo) is not None
    d = decisions(repo, RUN1)
    assert d["USR-1"]["action"] == "link_by_match" and d["USR-1"]["cb_id"] == "ord_ok"
    for rid in ("ord_sys", "ord_api"):
        assert d[rid]["action"] == "skip" and "names no Customcrm user by design" in d[rid]["reason"], d[rid]
    for rid in ("ord_two_at", "ord_space"):
        assert d[rid]["action"] == "quarantine" and d[rid]["hold_kind"] == "invalid", d[rid]
        assert "created_by" in d[rid]["reason"] and "not a valid email" in d[rid]["reason"]


def test_a_corrected_user_with_no_order_leaves_quarantine(repo: Repository, m: Mapping) -> None:
    stage(repo, m, RUN1, Side.CUSTOMCRM, [{"id": "USR-1", "Email": "ada.x.example"}])
    assert build_plan(m, RUN1, {}, repo) is not None
    with repo.engine.connect() as conn:
        rows = conn.execute(select(plan).where(plan.c.run_id == RUN1)).mappings().all()
    apply_plan_rows(m, repo, RUN1, [stored_plan_row(r) for r in rows])
    with repo.engine.connect() as conn:
        held = conn.execute(select(quarantine.c.record_id, quarantine.c.reason)).all()
    assert [h[0] for h in held] == ["USR-1"] and "Email" in held[0][1]

    stage(repo, m, RUN2, Side.CUSTOMCRM, [{"id": "USR-1", "Email": "ada@x.example"}])
    assert build_plan(m, RUN2, {}, repo) is not None
    with repo.engine.connect() as conn:
        rows = conn.execute(select(plan).where(plan.c.run_id == RUN2)).mappings().all()
    assert [r["action"] for r in rows] == ["skip"]  # no order names the user yet
    apply_plan_rows(m, repo, RUN2, [stored_plan_row(r) for r in rows])
    with repo.engine.connect() as conn:
        assert conn.execute(select(quarantine)).all() == []


def test_no_partner_keys_of_old_mapping_files_say_how_to_migrate(m: Mapping) -> None:
    raw = m.model_dump(mode="json", exclude_none=True)
    raw["chargebee"]["no_partner_keys"] = "[a-z0-9_-]+"
    with pytest.raises(ValidationError, match=r"no_partner_keys .* replaced by `no_partner: created_by`"):
        Mapping.model_validate(raw)
