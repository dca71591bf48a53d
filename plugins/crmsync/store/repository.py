"""The link store as seen by one flow: one object over its four table families.

Each family is its own class with its own SQL (``store/runs.py``, ``store/staging.py``,
``store/plan.py``, ``store/links.py``); this facade composes them and delegates every
method, so the flows hold one ``repo``. Every method works in batches or streams
(``yield_per``) so memory stays flat with the number of records, and every write that
tasks rely on for reruns is idempotent (delete-then-insert per run, upserts keyed by
natural keys, ``applied`` flags).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy.engine import Engine

from crmsync.engine.canonical import SideRecord
from crmsync.engine.plan_text import PlanView
from crmsync.engine.status import WriteStatus
from crmsync.mapping.model import Side
from crmsync.store.codec import (
    BATCH,
    HINTS,
    dumps,
    link_state,
    loads,
    now,
    record_from_json,
    record_from_staging,
    record_to_json,
)
from crmsync.store.links import LinkRow, LinkStore, QuarantineRow
from crmsync.store.plan import PlanCount, PlanProblem, PlanRow, PlanStore, StoredPlanRow
from crmsync.store.runs import RunRow, RunStore
from crmsync.store.staging import REF_PENDING_TRIES, LinkedPair, StagedRow, StagingStore

__all__ = [
    "BATCH",
    "HINTS",
    "REF_PENDING_TRIES",
    "LinkRow",
    "Repository",
    "RunRow",
    "dumps",
    "link_state",
    "loads",
    "now",
    "record_from_json",
    "record_from_staging",
    "record_to_json",
]


class Repository:
    """The link store as seen by one flow: runs, staging, plan and links in one object."""

    def __init__(self, engine: Engine, flow: str) -> None:
        self.engine = engine
        self.flow = flow
        self.runs = RunStore(engine, flow)
        self.staging = StagingStore(engine, flow)
        self.plan = PlanStore(engine, flow)
        self.links = LinkStore(engine, flow)

    # -- runs (RunStore) ----------------------------------------------------------
    def begin_run(self, run_id: str, params: dict[str, Any]) -> None:
        self.runs.begin_run(run_id, params)

    def get_run(self, run_id: str) -> RunRow | None:
        return self.runs.get_run(run_id)

    def set_run(self, run_id: str, **values: Any) -> None:
        self.runs.set_run(run_id, **values)

    def get_watermark(self, side: Side) -> float | None:
        return self.runs.get_watermark(side)

    def commit_watermarks(self, run_id: str, values: dict[Side, float | None]) -> None:
        self.runs.commit_watermarks(run_id, values)

    def read_summary(self, run_id: str) -> dict[str, Any] | None:
        return self.runs.read_summary(run_id)

    # -- staging (StagingStore) ---------------------------------------------------
    def refresh_statistics(self) -> None:
        self.staging.refresh_statistics()

    def clear_staging(self, run_id: str, side: Side) -> None:
        self.staging.clear_staging(run_id, side)

    def stage(self, run_id: str, rows: Iterable[tuple[SideRecord, str | None, str]]) -> int:
        return self.staging.stage(run_id, rows)

    def stage_deferred(
        self, run_id: str, rule: int, rows: Iterable[tuple[SideRecord, str | None, str]]
    ) -> int:
        return self.staging.stage_deferred(run_id, rule, rows)

    def iter_deferred(self, run_id: str, rule: int) -> Iterator[StagedRow]:
        return self.staging.iter_deferred(run_id, rule)

    def clear_deferred(self, run_id: str) -> None:
        self.staging.clear_deferred(run_id)

    def count_staged(self, run_id: str) -> dict[str, int]:
        return self.staging.count_staged(run_id)

    def carry_quarantined(self, run_id: str, match_key_of: Callable[[SideRecord], str | None]) -> int:
        return self.staging.carry_quarantined(run_id, match_key_of)

    def purge_staging(self, run_id: str) -> None:
        self.staging.purge_staging(run_id)

    def iter_touched_links(self, run_id: str) -> Iterator[list[LinkedPair]]:
        return self.staging.iter_touched_links(run_id)

    def iter_unlinked(self, run_id: str) -> Iterator[StagedRow]:
        return self.staging.iter_unlinked(run_id)

    def unlinked_claims(self, run_id: str, cb_prefix: str | None) -> tuple[list[tuple[str, str]], list[str]]:
        return self.staging.unlinked_claims(run_id, cb_prefix)

    def staged_unlinked(self, run_id: str, side: Side, ids: Sequence[str]) -> dict[str, SideRecord]:
        return self.staging.staged_unlinked(run_id, side, ids)

    # -- plan (PlanStore) ---------------------------------------------------------
    def plan_progress(self, run_id: str) -> int:
        return self.plan.plan_progress(run_id)

    def delete_plan(self, run_id: str) -> None:
        self.plan.delete_plan(run_id)

    def insert_plan(self, rows: Sequence[PlanRow]) -> None:
        self.plan.insert_plan(rows)

    def count_plan_writes(self, run_id: str) -> int:
        return self.plan.count_plan_writes(run_id)

    def iter_pending_writes(self, run_id: str, side: Side) -> Iterator[list[StoredPlanRow]]:
        return self.plan.iter_pending_writes(run_id, side)

    def iter_chargebee_creates(self, run_id: str) -> Iterator[list[StoredPlanRow]]:
        return self.plan.iter_chargebee_creates(run_id)

    def plan_customcrm_updates(self, rows: Sequence[tuple[int, str, str | None, str]]) -> None:
        self.plan.plan_customcrm_updates(rows)

    def mark_write(
        self, plan_id: int, side: Side, status: WriteStatus, *, result: Any = None, error: str | None = None
    ) -> None:
        self.plan.mark_write(plan_id, side, status, result=result, error=error)

    def mark_write_results(
        self, side: Side, results: Sequence[tuple[int, WriteStatus, Any, str | None]]
    ) -> None:
        self.plan.mark_write_results(side, results)

    def mark_writes(self, plan_ids: Sequence[int], side: Side, status: WriteStatus) -> None:
        self.plan.mark_writes(plan_ids, side, status)

    def iter_unapplied(self, run_id: str) -> Iterator[list[StoredPlanRow]]:
        return self.plan.iter_unapplied(run_id)

    def count_unfinished_writes(self, run_id: str) -> int:
        return self.plan.count_unfinished_writes(run_id)

    def plan_counts(self, run_id: str) -> list[PlanCount]:
        return self.plan.plan_counts(run_id)

    def plan_problems(self, run_id: str, limit: int = 50) -> list[PlanProblem]:
        return self.plan.plan_problems(run_id, limit)

    def plan_skips(self, run_id: str, limit: int = 20) -> list[str]:
        return self.plan.plan_skips(run_id, limit)

    def plan_details(self, run_id: str) -> Iterator[str]:
        return self.plan.plan_details(run_id)

    def iter_plan_views(self, run_id: str) -> Iterator[PlanView]:
        return self.plan.iter_plan_views(run_id)

    # -- links (LinkStore) --------------------------------------------------------
    def linked_by_match_key(self, keys: Sequence[str]) -> dict[str, tuple[str, str]]:
        return self.links.linked_by_match_key(keys)

    def count_links(self) -> int:
        return self.links.count_links()

    def get_links_by_cb_id(self, cb_ids: Sequence[str]) -> dict[str, LinkRow]:
        return self.links.get_links_by_cb_id(cb_ids)

    def apply(
        self,
        run_id: str,
        plan_ids: list[int],
        *,
        upsert_links: list[dict[str, Any]],
        delete_links: list[tuple[str, str]],
        hold: list[dict[str, Any]],
        release: list[tuple[str, str]],
        audits: list[dict[str, Any]],
    ) -> None:
        self.links.apply(
            run_id,
            plan_ids,
            upsert_links=upsert_links,
            delete_links=delete_links,
            hold=hold,
            release=release,
            audits=audits,
        )

    def get_link(self, crm_id: str | None = None, cb_id: str | None = None) -> LinkRow | None:
        return self.links.get_link(crm_id, cb_id)

    def unlinked_survivors(self, side: Side, ids: Sequence[str]) -> set[str]:
        return self.links.unlinked_survivors(side, ids)

    def ended_by_delete(self, side: Side, ids: Sequence[str]) -> set[str]:
        return self.links.ended_by_delete(side, ids)

    def count_held(self) -> int:
        return self.links.count_held()

    def quarantined(self) -> list[QuarantineRow]:
        return self.links.quarantined()

    def partners(self, side: Side, ids: Sequence[str]) -> dict[str, str]:
        return self.links.partners(side, ids)

    def chargebee_deletes_audited(self, cb_ids: Sequence[str]) -> list[tuple[str, str, str | None]]:
        return self.links.chargebee_deletes_audited(cb_ids)
