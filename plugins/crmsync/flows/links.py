"""The update_links task: finished plan rows → links, quarantine and audit (one transaction
per chunk), then the watermarks and the run summary.

Settling a chunk is orchestration only: read the links a chunk touches, convert the rows to the engine's
typed input, let :func:`crmsync.engine.settle.settle` decide (the rules are there), and
hand the :class:`~crmsync.engine.settle.Settlement` to the link store.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from crmsync.engine.plan import Op
from crmsync.engine.settle import (
    CurrentLink,
    FinishedRow,
    Hold,
    SideWrite,
    base_after,
    links_to_read,
    pending_after,
    restores_to_read,
    settle,
)
from crmsync.engine.status import HoldKind, RunStatus, WriteStatus
from crmsync.flows.failures import fail, recorded_failures
from crmsync.mapping.model import Mapping as FlowMapping
from crmsync.mapping.model import Side
from crmsync.store import approvals
from crmsync.store.links import LinkRow
from crmsync.store.plan import StoredPlanRow
from crmsync.store.repository import Repository, RunRow, loads

log = logging.getLogger("crmsync")


def apply_plan_rows(mapping: FlowMapping, repo: Repository, run_id: str, rows: list[StoredPlanRow]) -> None:
    finished = [finished_row(row) for row in rows]
    # The links this chunk updates, read once before it (the chunk's writes are applied
    # together at the end, so every row sees the links as they were before the chunk).
    by_cb_id = {k: current_link(v) for k, v in repo.get_links_by_cb_id(links_to_read(finished)).items()}
    by_crm_id: dict[str, CurrentLink] = {}
    for crm_id in restores_to_read(finished):
        link = repo.get_link(crm_id=crm_id)
        if link is not None:
            by_crm_id[crm_id] = current_link(link)
    s = settle(mapping, finished, by_cb_id, by_crm_id)
    repo.apply(
        run_id,
        [r["id"] for r in rows],
        upsert_links=[asdict(u) for u in s.upserts],
        delete_links=s.deletes,  # type: ignore[arg-type]  # ids None only where the store ignores them
        hold=[asdict(h) for h in _undecided(mapping, repo, s.holds)],
        release=s.releases,
        audits=[asdict(a) for a in s.audits],
    )


def _undecided(mapping: FlowMapping, repo: Repository, holds: list[Hold]) -> list[Hold]:
    """The holds without those of held deletes a person decided while this run ran (after
    transform planned them as still held): holding again would overwrite the decision."""
    keys = [(h.side, h.record_id) for h in holds if h.kind == HoldKind.APPROVAL and h.side and h.record_id]
    if not keys:
        return holds
    decided = approvals.decisions(repo.engine, mapping.flow, keys)
    return [h for h in holds if h.kind != HoldKind.APPROVAL or (h.side, h.record_id) not in decided]


def side_write(row: StoredPlanRow, side: Side) -> SideWrite:
    """One side's write of a stored plan row (its JSON columns decoded, ``staged`` kept)."""
    if side is Side.CUSTOMCRM:
        op, status, rid, staged = row["crm_op"], row["crm_status"], row["crm_id"], row["crm_staged"]
        result, changes, error = row["crm_result"], row["crm_changes"], row["crm_error"]
    else:
        op, status, rid, staged = row["cb_op"], row["cb_status"], row["cb_id"], row["cb_staged"]
        result, changes, error = row["cb_result"], row["cb_changes"], row["cb_error"]
    return SideWrite(
        id=rid, op=op, status=status, result=loads(result), staged=staged, changes=loads(changes), error=error
    )


def finished_row(row: StoredPlanRow) -> FinishedRow:
    """A plan row as settle reads it."""
    return FinishedRow(
        id=row["id"],
        action=row["action"],
        crm=side_write(row, Side.CUSTOMCRM),
        cb=side_write(row, Side.CHARGEBEE),
        link_id=row["link_id"],
        held_side=row["held_side"],
        hold_kind=row["hold_kind"],
        reason=row["reason"],
        detail=loads(row["detail"]) or {},
        merged=loads(row["merged"]) or {},
    )


def current_link(link: LinkRow) -> CurrentLink:
    return CurrentLink(
        crm_id=link["crm_id"],
        cb_id=link["cb_id"],
        base=json.loads(link["base"]),
        crm_snapshot=json.loads(link["crm_snapshot"]),
        cb_snapshot=json.loads(link["cb_snapshot"]),
        crm_version=link["crm_version"],
        cb_version=link["cb_version"],
        crm_updated_at=link["crm_updated_at"],
        cb_updated_at=link["cb_updated_at"],
    )


# Row-shaped entry points of two settle rules, over partial rows of plain strings (kept for
# tests/unit/flows/test_pending_refs.py; the task reads StoredPlanRow through side_write).


def _side(row: Mapping[str, Any], prefix: str) -> SideWrite:
    op = row.get(f"{prefix}_op")
    status = row.get(f"{prefix}_status")
    return SideWrite(
        id=row.get(f"{prefix}_id"),
        op=None if op is None else Op(op),
        status=None if status is None else WriteStatus(status),
        result=loads(row.get(f"{prefix}_result")),
        staged=row.get(f"{prefix}_staged"),
        changes=loads(row.get(f"{prefix}_changes")),
        error=row.get(f"{prefix}_error"),
    )


def _pending_after(row: Mapping[str, Any], old: dict[str, str], values: dict[str, Any]) -> dict[str, str]:
    return pending_after(_side(row, "cb"), old, values)


def _base_after(
    mapping: FlowMapping,
    row: Mapping[str, Any],
    merged: dict[str, Any],
    crm_values: dict[str, Any],
    cb_values: dict[str, Any],
    cb_pending: dict[str, str] | None = None,
    old_base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return base_after(
        mapping, _side(row, "crm"), _side(row, "cb"), merged, crm_values, cb_values, cb_pending, old_base
    )


# -- the update_links task ---------------------------------------------------------------


def update_links(
    mapping: FlowMapping, run_id: str, params: dict[str, Any], repo: Repository
) -> dict[str, Any]:
    """Turn finished plan rows into links, hold what failed, advance watermarks, summarise.

    Runs even when an upsert task failed (trigger rule ``all_done``), so the writes that
    succeeded are linked. Watermarks advance only when the plan was complete and no
    write is left pending: otherwise the next run re-reads the same window.
    """
    from crmsync.flows.summary import build_summary, render_summary

    repo.begin_run(run_id, params)
    dry_run = bool(params.get("dry_run"))
    run_row = repo.get_run(run_id)
    if run_row is not None and run_row["status"] == RunStatus.FINISHED and run_row["summary"]:
        summary = json.loads(run_row["summary"])
        log.info("update_links: run already finished\n%s", render_summary(summary))
        return dict(summary)
    if params.get("reconcile"):  # no link, no watermark: the report (crmsync.flows.reconcile)
        from crmsync.flows.reconcile import finish

        return finish(mapping, run_id, params, repo)
    planned = run_row is not None and run_row["status"] == RunStatus.PLANNED
    if not dry_run:
        for batch in repo.iter_unapplied(run_id):
            apply_plan_rows(mapping, repo, run_id, batch)
    unfinished = 0 if dry_run else repo.count_unfinished_writes(run_id)
    plan = _log_readable_plan(mapping, repo, run_id) if dry_run and planned else None
    summary = build_summary(mapping, repo, run_id, dry_run=dry_run, plan=plan)
    if not planned:
        _fail_unplanned(run_row)
    if recorded_failures(run_row):
        summary["failures"] = recorded_failures(run_row)
    if unfinished:
        _fail_unfinished(repo, run_id, summary, unfinished)
    if not dry_run and run_row is not None:
        repo.commit_watermarks(
            run_id,
            {Side.CUSTOMCRM: run_row["crm_next_watermark"], Side.CHARGEBEE: run_row["cb_next_watermark"]},
        )
    repo.purge_staging(run_id)
    repo.set_run(
        run_id, status=RunStatus.FINISHED, finished_at=datetime.now(UTC), summary=json.dumps(summary)
    )
    if not dry_run:
        from crmsync.alerts import check_quarantine

        check_quarantine(mapping.flow, run_id, int(summary.get("held_total") or 0))
    log.info("run summary\n%s", render_summary(summary))
    return summary


def _fail_unplanned(run_row: RunRow | None) -> None:
    """Fail update_links of a run whose plan was never finished, with the cause an earlier
    task recorded (or the fix when none did): nothing was written, watermarks stay."""
    failures = recorded_failures(run_row)
    if failures:
        first = failures[0]
        fail(
            f"{first['task']} failed ({first['cause']}), so the plan was not finished: nothing was "
            "written and the watermarks are unchanged",
            fix=first["fix"],
        )
    fail(
        "transform did not finish (it did not run, or it was stopped before recording its plan); "
        "nothing was written, watermarks are unchanged",
        fix="clear transform (and the tasks after it) in the Airflow UI, or trigger a new run",
    )


def _fail_unfinished(repo: Repository, run_id: str, summary: dict[str, Any], unfinished: int) -> None:
    """Fail update_links when planned writes did not run (an upsert task failed or was
    killed): the writes that ran are linked, the watermarks stay, the summary says so."""
    from crmsync.flows.summary import render_summary

    summary["unfinished_writes"] = unfinished
    repo.set_run(run_id, summary=json.dumps(summary))
    log.warning(
        "update_links: %d planned writes did not run (an upsert task failed or was killed); "
        "their records are not linked yet and the watermarks stay where they were. Clear the "
        "failed upsert task (and this one) to finish the run.\n%s",
        unfinished,
        render_summary(summary),
    )
    fail(
        f"{unfinished} planned writes did not run because an upsert task failed; the writes that "
        "ran are linked. Fix the cause shown in the upsert task's log, then clear the failed "
        "upsert task and this one.",
        fix="fix the cause the failed upsert task reports above, then clear it and update_links",
    )


#: the most lines of a dry run's plan one task log holds
PLAN_LOG_MAX = 5000


def _log_readable_plan(mapping: FlowMapping, repo: Repository, run_id: str) -> tuple[list[str], int]:
    """A dry run's plan in the task log, a line per write: what to check before running it
    for real. Returned for the summary, which keeps the first lines only."""
    from crmsync.flows.summary import readable_plan

    lines, total = readable_plan(mapping, repo, run_id, PLAN_LOG_MAX)
    more = f"\n  ... {total - len(lines)} more (crmsync_plan rows of this run)" if total > len(lines) else ""
    log.info(
        "dry run: the plan, %d writes and holds (nothing was written)\n%s%s",
        total,
        "\n".join(f"  {line}" for line in lines) or "  (nothing to do)",
        more,
    )
    return lines, total
