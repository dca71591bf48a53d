"""The upsert task of one side: execute its pending plan rows on the hook's threads.

Each row's write is :mod:`crmsync.flows.writers`' job; here: which rows (a finished,
approved plan; writes not recorded as done), write-ahead of creates, outcomes recorded
in groups as they come, values Chargebee assigned planned for Customcrm, the error budget.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from crmsync.engine.status import WRITE_FAILURES, RunStatus, WriteStatus
from crmsync.flows.failures import fail
from crmsync.flows.progress import Progress, timed_budget
from crmsync.mapping.model import Mapping as FlowMapping
from crmsync.mapping.model import Side

if TYPE_CHECKING:
    from crmsync.flows.writers import ChargebeeWriter, CustomcrmWriter, Outcome
    from crmsync.hooks.chargebee import ChargebeeHook
    from crmsync.hooks.customcrm import CustomcrmHook
    from crmsync.store.plan import StoredPlanRow
    from crmsync.store.repository import Repository, RunRow

log = logging.getLogger("crmsync")

#: Outcomes of writes are recorded in groups (one commit per group, not per record): at
#: most this many rows or seconds of outcomes are lost when a worker is killed. A rerun
#: redoes them safely: a create is in flight (written ahead), so it is looked up before
#: anything is created; an update is sent again (Customcrm's If-Match then answers 412,
#: which the writer recognises as already applied).
OUTCOME_FLUSH_ROWS = 50
OUTCOME_FLUSH_SECONDS = 1.0


def upsert(
    mapping: FlowMapping,
    side: Side,
    run_id: str,
    params: dict[str, Any],
    hook: ChargebeeHook | CustomcrmHook,
    repo: Repository,
) -> dict[str, int]:
    """Execute this side's pending plan rows, recording each outcome as it happens."""
    repo.begin_run(run_id, params)
    if params.get("dry_run") or params.get("reconcile"):
        log.info(
            "upsert %s: %s, nothing is written",
            side.value,
            "reconcile" if params.get("reconcile") else "dry run",
        )
        return {}
    run_row = _executable_run(repo, run_id, side)
    if side is Side.CUSTOMCRM:
        _plan_assigned(mapping, repo, run_id)
    writer = _writer(mapping, side, run_id, hook, repo)
    progress = Progress(f"upsert {side.value}", _pending_writes(repo, run_id, side), timed_budget(hook))
    outcomes, errors, refused = _execute_plan(
        mapping, side, run_id, hook, repo, writer, _reread(mapping, run_row), progress
    )
    progress.log()
    if writer.rereads:
        log.info(
            "upsert %s: %d records re-read before writing (stale-write guard)", side.value, writer.rereads
        )
    log.info("upsert %s: %s", side.value, dict(outcomes))
    if side is Side.CHARGEBEE and refused:
        from crmsync.alerts import writes_refused

        writes_refused(mapping.flow, run_id, refused)
    failed = sum(outcomes[s.value] for s in WRITE_FAILURES)
    if failed > mapping.limits.error_budget:
        shown = "\n".join(f"  - {e}" for e in errors[:20])
        fail(
            f"upsert {side.value}: {failed} records failed, more than the error budget "
            f"({mapping.limits.error_budget}). The others were written. First failures:\n{shown}"
        )
    return dict(outcomes)


def _executable_run(repo: Repository, run_id: str, side: Side) -> RunRow:
    """The run row, if its plan may be executed. upsert_customcrm runs after
    upsert_chargebee whatever its outcome (all_done), so it may be started when transform
    failed or the circuit breaker stopped the run: a plan that was not finished (or not
    approved) is never executed (the task is skipped)."""
    run_row = repo.get_run(run_id)
    if run_row is None or run_row["status"] not in (RunStatus.PLANNED, RunStatus.FINISHED):
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException(f"upsert {side.value}: transform did not finish; nothing is written")
    return run_row


def _writer(
    mapping: FlowMapping, side: Side, run_id: str, hook: ChargebeeHook | CustomcrmHook, repo: Repository
) -> ChargebeeWriter | CustomcrmWriter:
    from crmsync.flows.refs import RefResolver
    from crmsync.flows.writers import ChargebeeWriter, CustomcrmWriter

    if side is Side.CHARGEBEE:
        # crmsync.flows.tasks._hook built a ChargebeeHook for this side (no runtime check)
        chargebee = cast("ChargebeeHook", hook)
        return ChargebeeWriter(mapping, chargebee, run_id, RefResolver(repo.engine, mapping))
    return CustomcrmWriter(mapping, hook, run_id)


def _reread(mapping: FlowMapping, run_row: RunRow) -> bool:
    """Whether the run is old enough that records are re-read before they are written
    (``run.reread_after_seconds``: a rerun hours later must not write over newer edits)."""
    started = run_row["started_at"]
    if started is None:
        return False
    if started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    return bool((datetime.now(UTC) - started).total_seconds() > mapping.run.reread_after_seconds)


def _execute_plan(
    mapping: FlowMapping,
    side: Side,
    run_id: str,
    hook: ChargebeeHook | CustomcrmHook,
    repo: Repository,
    writer: ChargebeeWriter | CustomcrmWriter,
    reread: bool,
    progress: Progress,
) -> tuple[Counter[str], list[str], int]:
    """Every pending write of this side, batch by batch on the hook's threads; outcomes are
    recorded as they come (at most OUTCOME_FLUSH_ROWS / _SECONDS are lost to a kill).
    Returns the outcome counts, the error messages and how many writes the API refused
    for its rate limit after every retry (``Outcome.rate_limited``)."""
    from crmsync.engine.plan import Op
    from crmsync.store.plan import side_write_state

    outcomes: Counter[str] = Counter()
    errors: list[str] = []
    refused = 0

    def run_one(row: StoredPlanRow) -> tuple[StoredPlanRow, Outcome]:
        recovering = side_write_state(row, side)[1] == WriteStatus.IN_FLIGHT
        return row, writer.execute(row, recovering=recovering, reread=reread)

    with ThreadPoolExecutor(
        max_workers=_workers(mapping, hook), thread_name_prefix=f"upsert-{side.value}"
    ) as pool:
        for batch in repo.iter_pending_writes(run_id, side):
            # Write-ahead, one statement per batch: a crash after a remote create leaves
            # "in_flight", and the rerun looks the record up before creating anything.
            ahead = [r["id"] for r in batch if side_write_state(r, side) == (Op.CREATE, WriteStatus.PENDING)]
            if ahead:
                repo.mark_writes(ahead, side, WriteStatus.IN_FLIGHT)
            done: list[tuple[int, Outcome]] = []
            flushed = time.monotonic()
            try:
                for row, outcome in pool.map(run_one, batch):
                    done.append((row["id"], outcome))
                    outcomes[outcome.status.value] += 1
                    if outcome.error and outcome.status is not WriteStatus.STALE:
                        errors.append(outcome.error)
                    refused += int(outcome.rate_limited)
                    progress.add()
                    if len(done) >= OUTCOME_FLUSH_ROWS or time.monotonic() - flushed >= OUTCOME_FLUSH_SECONDS:
                        _record_outcomes(repo, side, done)
                        flushed = time.monotonic()
            finally:
                _record_outcomes(repo, side, done)
    return outcomes, errors, refused


def _plan_assigned(mapping: FlowMapping, repo: Repository, run_id: str) -> None:
    """Plan the Customcrm writes of values Chargebee assigned to the records this run
    created there (an order's number, totals and customer), so they land in this run and
    the next run has nothing to "revert" (see :mod:`crmsync.engine.assigned`)."""
    from crmsync.engine.assigned import ASSIGNED_ON_CREATE, assigned_on_create
    from crmsync.store.repository import dumps, loads

    planned = 0
    for batch in repo.iter_chargebee_creates(run_id):
        rows: list[tuple[int, str, str | None, str]] = []
        for row in batch:
            staged = loads(row["crm_staged"]) or {}
            result = loads(row["cb_result"]) or {}
            if not row["crm_id"] or "values" not in result:
                continue
            found = assigned_on_create(
                mapping, loads(row["cb_changes"]) or {}, result["values"], staged.get("values") or {}
            )
            if not found:
                continue
            cb_id = str(result.get("id") or row["cb_id"])
            detail = loads(row["detail"]) or {}
            detail["notes"] = [
                *detail.get("notes", []),
                *(
                    {
                        "field": a.field,
                        "kind": ASSIGNED_ON_CREATE,
                        "side": "chargebee",
                        "message": a.message(mapping, cb_id),
                    }
                    for a in found
                ),
            ]
            changes = {a.field: a.chargebee for a in found}
            rows.append((row["id"], dumps(changes), staged.get("version"), dumps(detail)))
        repo.plan_customcrm_updates(rows)
        planned += len(rows)
    if planned:
        log.info(
            "upsert customcrm: %d records take values Chargebee assigned when this run created them", planned
        )


def _pending_writes(repo: Repository, run_id: str, side: Side) -> int:
    """How many of this side's planned writes are not done yet (the progress line's total)."""
    from crmsync.store.plan import side_write_state

    return sum(
        row["n"]
        for row in repo.plan_counts(run_id)
        for op, status in [side_write_state(row, side)]
        if op is not None and status in (WriteStatus.PENDING, WriteStatus.IN_FLIGHT)
    )


def _record_outcomes(repo: Repository, side: Side, done: list[tuple[int, Outcome]]) -> None:
    """Record finished writes in one transaction (then forget them)."""
    if done:
        repo.mark_write_results(side, [(pid, o.status, o.result, o.error) for pid, o in done])
        done.clear()


def _workers(mapping: FlowMapping, hook: ChargebeeHook | CustomcrmHook) -> int:
    """Writer threads: the mapping's ``run.max_workers`` when the file sets it, else the hook's.

    The Chargebee hook sizes its default to the site's rate budget (see
    ``ChargebeeHook._max_workers``), so the budget, not the thread pool, bounds the rate.
    """
    if "max_workers" in mapping.run.model_fields_set:
        return int(mapping.run.max_workers)
    workers = getattr(hook, "max_workers", None)
    return workers if isinstance(workers, int) and workers > 0 else int(mapping.run.max_workers)
