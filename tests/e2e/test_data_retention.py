"""What a finished run keeps of the customer data it read (issue 4, item 6).

Staging rows and the plan's copies of records (staged records, merged values, changes,
write results) are dropped once the run's links are updated. Links keep their
snapshots (the sync's memory), quarantine keeps the staged record a repair and the
retry need, and the plan keeps actions, ids, statuses and reasons for the summary.
"""

from __future__ import annotations

from typing import Any

import pytest
from crmsync.store.schema import plan, quarantine, run, staging
from sqlalchemy import func, select

pytestmark = pytest.mark.e2e

DATA_COLUMNS = ("merged", "crm_staged", "cb_staged", "crm_changes", "cb_changes", "crm_result", "cb_result")


def test_a_finished_run_keeps_only_what_repair_and_the_summary_need(run_flow: Any, store: Any) -> None:
    result = run_flow("contact_customer")
    assert result.ok and result.summary, result
    with store.connect() as conn:
        assert conn.execute(select(func.count()).select_from(staging)).scalar() == 0
        rows = conn.execute(select(plan).where(plan.c.run_id == result.run_id)).mappings().all()
        assert len(rows) > 50
        kept = {c: sum(1 for r in rows if r[c] is not None) for c in DATA_COLUMNS}
        assert kept == dict.fromkeys(DATA_COLUMNS, 0), kept
        # still there: what the summary and "why was this record not synced" need
        assert all(r["action"] for r in rows)
        assert sum(1 for r in rows if r["reason"]) >= 2
        held = conn.execute(select(quarantine.c.kind, quarantine.c.staged)).all()
        assert held and all(staged for _, staged in held), held
        assert conn.execute(select(run.c.summary).where(run.c.run_id == result.run_id)).scalar()

    # the next run works from links and quarantine alone, and writes nothing
    again = run_flow("contact_customer")
    assert again.ok and again.summary
    assert again.summary["created"] == {"customcrm": 0, "chargebee": 0}
    assert again.summary["updated"] == {"customcrm": 0, "chargebee": 0}
