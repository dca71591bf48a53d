"""The task callables of a flow DAG (one per step): thin wiring of store, engine and hooks.

Nothing passes through XCom: every task reads and writes the link store, keyed by the
DAG run's ``run_id``, so any task can be cleared and rerun from the UI and the result
is the same as if it had run once:

* extract_* replaces its side's staging rows for the run;
* transform rebuilds the plan unless writes of it were already attempted;
* upsert_* executes only plan rows whose write is not recorded as done (outcomes are
  recorded within a second, see ``OUTCOME_FLUSH_SECONDS``);
* update_links applies only rows not applied yet, then commits the watermarks.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from crmsync.engine.status import WRITE_FAILURES, RunStatus, WriteStatus
from crmsync.mapping.model import Mapping as FlowMapping
from crmsync.mapping.model import Side, load_mapping

if TYPE_CHECKING:
    from crmsync.flows.operator import Step
    from crmsync.flows.writers import ChargebeeWriter, CustomcrmWriter, Outcome
    from crmsync.hooks._http import ApiHook
    from crmsync.hooks.chargebee import ChargebeeHook
    from crmsync.hooks.customcrm import CustomcrmHook
    from crmsync.store.plan import StoredPlanRow
    from crmsync.store.repository import LinkRow, Repository, RunRow

log = logging.getLogger("crmsync")
#: the progress lines (a child of ``crmsync``: they are in the task log; ``make run`` prints them)
progress_log = logging.getLogger("crmsync.progress")

#: a progress line every this many seconds or records, whichever comes first (and a final one)
PROGRESS_EVERY_SECONDS = 10.0
PROGRESS_EVERY_RECORDS = 1000
#: Outcomes of writes are recorded in groups (one commit per group, not per record): at
#: most this many rows or seconds of outcomes are lost when a worker is killed. A rerun
#: redoes them safely: a create is in flight (written ahead), so it is looked up before
#: anything is created; an update is sent again (Customcrm's If-Match then answers 412,
#: which the writer recognises as already applied).
OUTCOME_FLUSH_ROWS = 50
OUTCOME_FLUSH_SECONDS = 1.0


# -- helpers -----------------------------------------------------------------------------


def _fail(message: str, fix: str | None = None) -> None:
    """Fail the task without retries: a person has to act first.

    ``fix`` (what that person does) goes with the cause into the run summary's
    ``failures`` (see :func:`run_step`)."""
    from airflow.sdk.exceptions import AirflowFailException

    exc = AirflowFailException(message)
    exc.crmsync_fix = fix  # type: ignore[attr-defined]
    raise exc


def _context_params(context: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    params = dict(context.get("params") or {})
    return str(context["run_id"]), params


def _repo(mapping: FlowMapping) -> Repository:
    from crmsync.store.engine import store_engine
    from crmsync.store.migrate import StoreNotReady, ensure_at_head
    from crmsync.store.repository import Repository

    engine = store_engine(mapping.connections.store)
    try:
        ensure_at_head(engine)
    except StoreNotReady as exc:
        _fail(str(exc))
    return Repository(engine, mapping.flow)


def _hook(mapping: FlowMapping, side: Side) -> ChargebeeHook | CustomcrmHook:
    """The side's hook, with the rate budget every task and worker shares (the task injects
    it: a hook never opens the link store to find its budget)."""
    from crmsync.flows.budgets import task_budget_factory

    factory = task_budget_factory()
    if side is Side.CHARGEBEE:
        from crmsync.hooks.chargebee import ChargebeeHook

        return ChargebeeHook(chargebee_conn_id=mapping.connections.chargebee, budget_factory=factory)
    from crmsync.hooks.customcrm import CustomcrmHook

    return CustomcrmHook(customcrm_conn_id=mapping.connections.customcrm, budget_factory=factory)


def _chargebee(hook: ChargebeeHook | CustomcrmHook) -> ChargebeeHook:
    """The hook of a task whose side is Chargebee, for what only Chargebee has (its events,
    the writer's record actions); everything else goes through the
    :class:`~crmsync.hooks.client.SyncClient` both hooks implement. :func:`_hook` built it
    for that side, so the side says which class it is (no runtime check, as before)."""
    return cast("ChargebeeHook", hook)


class Progress:
    """Logs ``done/total, records per minute, seconds waited for the rate budget, time
    left`` at a steady cadence, not per record (see crmsync.flows.summary.progress_line)."""

    def __init__(
        self, what: str, total: int | None = None, waited: Callable[[], float] | None = None
    ) -> None:
        self.what, self.total, self.done = what, total, 0
        self.waited = waited
        self.logged = 0
        self.start = self.last = time.monotonic()

    def add(self, n: int = 1) -> None:
        self.done += n
        t = time.monotonic()
        if t - self.last >= PROGRESS_EVERY_SECONDS or self.done - self.logged >= PROGRESS_EVERY_RECORDS:
            self.last, self.logged = t, self.done
            self.log()

    def line(self) -> str:
        from crmsync.flows.summary import progress_line

        waited = self.waited() if self.waited is not None else None
        return progress_line(self.what, self.done, self.total, time.monotonic() - self.start, waited)

    def log(self) -> None:
        progress_log.info("%s", self.line())


def _timed_budget(hook: ApiHook) -> Callable[[], float] | None:
    """The seconds ``hook`` has waited for its rate budget since now (the hook counts them
    per request); None for a hook that does not count."""
    start = getattr(hook, "budget_waited", None)
    if start is None:
        return None
    return lambda: float(hook.budget_waited) - start


# -- extract ----------------------------------------------------------------------------


def _pages(
    mapping: FlowMapping,
    side: Side,
    hook: ChargebeeHook | CustomcrmHook,
    since: float | None,
    repo: Repository,
) -> Iterator[list[dict[str, Any]]]:
    resource = mapping.side(side).resource
    if side is Side.CHARGEBEE and since is not None and mapping.chargebee.change_events:
        # the resource's list cannot be filtered by updated_at: its events say what changed
        from crmsync.hooks.chargebee_events import iter_changed

        yield from iter_changed(_chargebee(hook), resource, mapping.chargebee.change_events, int(since))
    elif not hook.listable(resource):
        # no documented list at all (Chargebee's business entities): the whole event history,
        # then the ids other records name; one known only by its id is reported, not guessed
        from crmsync.hooks.chargebee_events import iter_known

        if not mapping.chargebee.change_events:
            raise ValueError(
                f"Chargebee documents no list of {resource}: the mapping must name the events "
                "that publish them (chargebee.change_events)"
            )

        def linked(ids: Sequence[str]) -> set[str]:
            return set(repo.get_links_by_cb_id(list(ids)))

        yield from iter_known(_chargebee(hook), resource, mapping.chargebee.change_events, linked)
    elif side is Side.CHARGEBEE and mapping.chargebee.delete_events:
        # the list, then the delete events of the same window (a purged record is in no list)
        yield from _with_delete_signals(mapping, _chargebee(hook), repo, since)
    else:
        yield from hook.iter_changed(resource, since)


#: Reasons of an ``unlink`` audited before audit rows named the deleted sides
#: (``deleted_on``): read only for those older rows (:func:`_chargebee_was_deleted`).
_LEGACY_CHARGEBEE_DELETED_REASONS = ("was deleted in Chargebee", "deleted on both sides")


def _with_delete_signals(
    mapping: FlowMapping, hook: ChargebeeHook, repo: Repository, since: float | None
) -> Iterator[list[dict[str, Any]]]:
    """Chargebee pages for a resource whose deletes are scheduled and purged (customers).

    Chargebee answers ``POST /customers/{id}/delete`` by scheduling the purge ("permanently
    deleted after a few minutes"); until then nothing shows the delete and afterwards the
    customer is in no list, ``include_deleted`` included. So deletes are read from the
    mapping's ``delete_events`` (``customer_deleted``) since the same point as the list,
    after it: a record seen alive in a list page and deleted by an event ends staged
    deleted (a record staged twice keeps the later one). A list record with
    ``"deleted": true`` (where a list still shows one) is a delete as before.

    No resurrection: a record listed alive that is not linked and whose delete was already
    handled (an audited ``delete``, or an ``unlink`` whose Chargebee side was the deleted
    one: a customer the sync deleted, or one a person deleted whose event arrived before
    every list dropped it) is staged as the tombstone it is, so it is neither linked by
    match nor re-created in Customcrm nor written to while it waits for its purge (the
    engine says nothing more of a delete it already handled). Its id is not synced again.

    A delete event older than the record now linked under its id (a customer re-created
    with the same id after the purge) is about the record before it and is dropped.
    On a first run or a full resync (``since`` None) the whole event history is read and
    only events about linked records are kept.
    """
    from crmsync.hooks.chargebee_events import iter_changed_since

    resource = mapping.chargebee.resource
    for page in hook.iter_changed(resource, since):
        yield _tombstone_handled_deletes(repo, page)
    for page in iter_changed_since(
        hook, resource, mapping.chargebee.delete_events, None if since is None else int(since)
    ):
        links = repo.get_links_by_cb_id([str(r["id"]) for r in page])
        kept = [
            r
            for r in page
            if (since is not None or str(r["id"]) in links)
            and not _older_than_link(r, links.get(str(r["id"])))
        ]
        if kept:
            yield kept


def _older_than_link(rec: dict[str, Any], link_row: LinkRow | None) -> bool:
    if link_row is None:
        return False
    try:
        return int(rec.get("resource_version") or 0) < int(link_row["cb_version"] or 0)
    except (TypeError, ValueError):
        return False


def _tombstone_handled_deletes(repo: Repository, page: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``page`` with each unlinked live record whose Chargebee delete was handled marked deleted."""
    alive = [str(r["id"]) for r in page if not r.get("deleted")]
    dead = _deleted_in_chargebee(repo, alive)
    if not dead:
        return page
    dead -= set(repo.get_links_by_cb_id(sorted(dead)))
    if dead:
        log.info(
            "extract chargebee: %d records listed alive were deleted already (waiting for their purge): %s",
            len(dead),
            ", ".join(sorted(dead)[:10]),
        )
    return [{**r, "deleted": True} if str(r["id"]) in dead else r for r in page]


def _deleted_in_chargebee(repo: Repository, ids: Sequence[str]) -> set[str]:
    """Those of ``ids`` whose Chargebee record the audit says was deleted."""
    if not ids:
        return set()
    return {
        str(cb_id)
        for cb_id, kind, detail in repo.chargebee_deletes_audited(ids)
        if _chargebee_was_deleted(kind, detail)
    }


def _chargebee_was_deleted(kind: str, detail: str | None) -> bool:
    """Whether an audited end of a pair deleted its Chargebee record.

    An audited ``delete`` always did (deleted by a person, or by the sync under policy
    propagate). An ``unlink`` did when its detail's ``deleted_on`` (the sides the plan's
    Decision found deleted, engine/settle.py) names Chargebee. Audit rows written before
    ``deleted_on`` existed are read by their reason, as they were then.
    """
    if kind == "delete":
        return True
    try:
        data = json.loads(detail or "{}") or {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        return False
    if "deleted_on" in data:
        return Side.CHARGEBEE.value in (data["deleted_on"] or [])
    reason = str(data.get("reason") or "")
    return any(text in reason for text in _LEGACY_CHARGEBEE_DELETED_REASONS)


def _prefetched(pages: Iterator[list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
    """The same pages, the next one fetched by a helper thread while this one is staged.

    At most two pages are held (memory stays flat); an error of the fetch is raised here,
    at the page where it happened.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="extract-prefetch") as pool:
        ahead = pool.submit(next, pages, None)
        while True:
            page = ahead.result()
            if page is None:
                return
            ahead = pool.submit(next, pages, None)
            yield page


def extract(
    mapping: FlowMapping,
    side: Side,
    run_id: str,
    params: dict[str, Any],
    hook: ChargebeeHook | CustomcrmHook,
    repo: Repository,
) -> int:
    """Stage what changed on ``side`` since its watermark (minus the overlap), page by page."""
    from crmsync.engine.canonical import CHARGEBEE_META, CUSTOMCRM_META, content_hash, match_key, side_record

    repo.begin_run(run_id, params)
    # a reconcile run reads everything and never commits the watermark it records
    full = params.get("full_resync") or params.get("reconcile")
    watermark = None if full else repo.get_watermark(side)
    since = None if watermark is None else watermark - mapping.run.overlap_seconds
    started = time.time()
    meta = CHARGEBEE_META if side is Side.CHARGEBEE else CUSTOMCRM_META
    repo.clear_staging(run_id, side)
    progress = Progress(f"extract {side.value}", waited=_timed_budget(hook))
    evented = side is Side.CHARGEBEE and bool(mapping.chargebee.change_events)
    unlistable = side is Side.CHARGEBEE and not hook.listable(mapping.chargebee.resource)
    log.info(
        "extract %s %s: %s",
        side.value,
        mapping.side(side).resource,
        "everything (first run or full resync)" + (" from its whole event history" if unlistable else "")
        if since is None
        else f"changed since {datetime.fromtimestamp(since, UTC).isoformat()}"
        + (" (from its events)" if evented else "")
        + (
            f", then its {', '.join(mapping.chargebee.delete_events)} events"
            if side is Side.CHARGEBEE and mapping.chargebee.delete_events
            else ""
        ),
    )
    # Load the connection and its rate budget here, in the task's thread, not in the fetch thread.
    getattr(hook, "settings", None)
    for page in _prefetched(_pages(mapping, side, hook, since, repo)):
        rows = []
        for raw in page:
            rec = side_record(mapping, side, raw, meta)
            rows.append((rec, match_key(mapping, rec.values), content_hash(rec.values)))
        progress.add(repo.stage(run_id, rows))
    progress.log()
    column = "crm_next_watermark" if side is Side.CUSTOMCRM else "cb_next_watermark"
    repo.set_run(run_id, **{column: started})
    return progress.done


# -- transform ---------------------------------------------------------------------------


def transform(mapping: FlowMapping, run_id: str, params: dict[str, Any], repo: Repository) -> dict[str, int]:
    """Map, match, merge and decide: one plan row per record pair (see flows/transform.py)."""
    from crmsync.flows.transform import build_plan

    repo.refresh_statistics()
    if params.get("reconcile"):  # the report instead of a plan (crmsync.flows.reconcile)
        from crmsync.flows.reconcile import reconcile

        reconcile(mapping, run_id, params, repo)
        return {}
    counts = build_plan(mapping, run_id, params, repo)
    if counts is not None:
        _circuit_breaker(mapping, run_id, params, repo)
    repo.set_run(run_id, status=RunStatus.PLANNED)
    return counts or {}


def _circuit_breaker(mapping: FlowMapping, run_id: str, params: dict[str, Any], repo: Repository) -> None:
    """Stop before writing when a run would write far more than usual."""
    writes = repo.count_plan_writes(run_id)
    links = repo.count_links()
    limits = mapping.limits
    too_many = writes > limits.max_writes_per_run
    too_big = links > 50 and writes > limits.max_write_fraction * links
    if (too_many or too_big) and not params.get("approve_large_change"):
        fix = (
            "if this is expected (an initial sync, a bulk edit), trigger the DAG with the Param "
            "approve_large_change=true (make run ARGS=--approve-large-change); if not, check the "
            "mapping and the source data"
        )
        from crmsync.alerts import Event, send_alert

        send_alert(
            mapping.flow,
            run_id,
            Event.CIRCUIT_BREAKER,
            f"would write {writes} records "
            f"({links} linked; limits {limits.max_writes_per_run} per run, "
            f"{limits.max_write_fraction:.0%} of the links); nothing was written",
            fix,
        )
        _fail(
            f"circuit breaker: this run would write {writes} records "
            f"({links} linked; limits: {limits.max_writes_per_run} per run, "
            f"{limits.max_write_fraction:.0%} of the links). Nothing was written. If this is "
            "expected (an initial sync, a bulk edit), trigger the DAG with the Param "
            "approve_large_change=true; if not, check the mapping and the source data.",
            fix=fix,
        )


# -- upsert -----------------------------------------------------------------------------


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
    progress = Progress(f"upsert {side.value}", _pending_writes(repo, run_id, side), _timed_budget(hook))
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
        _fail(
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
        return ChargebeeWriter(mapping, _chargebee(hook), run_id, RefResolver(repo.engine, mapping))
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


# -- update links -----------------------------------------------------------------------


def update_links(
    mapping: FlowMapping, run_id: str, params: dict[str, Any], repo: Repository
) -> dict[str, Any]:
    """Turn finished plan rows into links, hold what failed, advance watermarks, summarise.

    Runs even when an upsert task failed (trigger rule ``all_done``), so the writes that
    succeeded are linked. Watermarks advance only when the plan was complete and no
    write is left pending: otherwise the next run re-reads the same window.
    """
    from crmsync.flows.links import apply_plan_rows
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
    if _recorded_failures(run_row):
        summary["failures"] = _recorded_failures(run_row)
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
    failures = _recorded_failures(run_row)
    if failures:
        first = failures[0]
        _fail(
            f"{first['task']} failed ({first['cause']}), so the plan was not finished: nothing was "
            "written and the watermarks are unchanged",
            fix=first["fix"],
        )
    _fail(
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
    _fail(
        f"{unfinished} planned writes did not run because an upsert task failed; the writes that "
        "ran are linked. Fix the cause shown in the upsert task's log, then clear the failed "
        "upsert task and this one.",
        fix="fix the cause the failed upsert task reports above, then clear it and update_links",
    )


def _recorded_failures(run_row: RunRow | None) -> list[dict[str, str]]:
    """The failures earlier tasks of the run recorded on its row (see :func:`run_step`)."""
    if run_row is None or not run_row["summary"]:
        return []
    try:
        return list(json.loads(run_row["summary"]).get("failures", []))
    except (ValueError, AttributeError):
        return []


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


# -- entry points for the DAG factory ------------------------------------------------------


def _mapping(mapping_file: str) -> FlowMapping:
    return _with_connection_rules(load_mapping(Path(mapping_file)))


def _with_connection_rules(mapping: FlowMapping) -> FlowMapping:
    """The mapping with what its Chargebee connection says about the site's data: the
    ``api_key_names`` whose created_by names no person (:mod:`crmsync.mapping.creators`),
    for a flow that asks who created a record. The engine reads them from the mapping."""
    if not mapping.reads_creators:
        return mapping
    from crmsync.hooks._http import ConnectionConfigError, normalise_extra, validate_settings
    from crmsync.hooks.chargebee import ChargebeeHook, ChargebeeSettings

    conn_id = mapping.connections.chargebee
    extra = normalise_extra(ChargebeeHook.get_connection(conn_id).extra_dejson or {}, ChargebeeHook.conn_type)
    try:
        settings = validate_settings(ChargebeeSettings, extra, conn_id=conn_id)
    except ConnectionConfigError as exc:
        _fail(str(exc))
        raise
    return mapping.with_api_key_names(settings.api_key_names)


def run_step(step: Step | str, mapping_file: str, side: Side | str | None = None, **context: Any) -> None:
    """Run one step of a flow (what a :class:`~crmsync.flows.operator.SyncStepOperator`
    executes; tests and benchmarks call it directly). Returns nothing: no data goes
    through XCom."""
    from crmsync.flows.operator import Step

    step = Step(step)
    mapping = _mapping(mapping_file)
    run_id, params = _context_params(context)
    repo = _repo(mapping)
    existing = repo.get_run(run_id)
    finished = existing is not None and existing["status"] == RunStatus.FINISHED
    if finished and step not in (Step.UPDATE_LINKS, Step.PUBLISH_LINKS):
        log.info(
            "%s: run %s of %s already finished; nothing to do (trigger a new run to sync again)",
            step.value,
            run_id,
            mapping.flow,
        )
        return
    side_ = Side(side) if side else Side.CUSTOMCRM
    hooks: list[ChargebeeHook | CustomcrmHook] = []

    def hook() -> ChargebeeHook | CustomcrmHook:
        hooks.append(_hook(mapping, side_))
        return hooks[-1]

    steps: dict[Step, Callable[[], Any]] = {
        Step.EXTRACT: lambda: extract(mapping, side_, run_id, params, hook(), repo),
        Step.TRANSFORM: lambda: transform(mapping, run_id, params, repo),
        Step.UPSERT: lambda: upsert(mapping, side_, run_id, params, hook(), repo),
        Step.UPDATE_LINKS: lambda: update_links(mapping, run_id, params, repo),
        Step.PUBLISH_LINKS: lambda: publish_links(mapping, params),
    }
    try:
        steps[step]()
    except Exception as exc:
        ti = context.get("ti")
        task = str(getattr(ti, "task_id", None) or (f"{step.value}_{side_.value}" if side else step.value))
        _record_failure(mapping, repo, run_id, params, task, exc, hooks[-1] if hooks else None)
        _alert_if_blocked(mapping, run_id, task, exc)
        raise


def publish_links(mapping: FlowMapping, params: dict[str, Any]) -> None:
    """Succeed, so Airflow updates the flow's links Asset and runs the flows that
    reference this one (:mod:`crmsync.flows.assets`); skipped for a run that changed no
    link by design (a dry run, a reconciliation): those must not start real runs."""
    from airflow.sdk.exceptions import AirflowSkipException

    for param in ("dry_run", "reconcile"):
        if params.get(param):
            raise AirflowSkipException(
                f"{param}: no link changed, the flows after {mapping.flow} are not run"
            )
    log.info("links of %s updated: the flows that reference them run next", mapping.flow)


def _alert_if_blocked(mapping: FlowMapping, run_id: str, task: str, exc: Exception) -> None:
    """A task stopped by Chargebee's 429 after every retry: the site is blocked (an alert)."""
    from crmsync.hooks.errors import RateLimited

    if isinstance(exc, RateLimited) and exc.system == "chargebee":
        from crmsync.alerts import site_blocked

        site_blocked(mapping.flow, run_id, f"{task} stopped: {exc}")


def _record_failure(
    mapping: FlowMapping,
    repo: Repository,
    run_id: str,
    params: dict[str, Any],
    task: str,
    exc: Exception,
    hook: ChargebeeHook | CustomcrmHook | None,
) -> None:
    """Put the failing task, the cause and the fix on the run row's summary (``failures``),
    where the run summary (``make run``, the JSON line) shows them. A skip is no failure;
    recording never hides the task's own error."""
    from airflow.sdk.exceptions import AirflowSkipException

    from crmsync.flows.summary import failure_of, with_failure

    if isinstance(exc, AirflowSkipException):
        return
    try:
        conn_id = base_url = None
        if hook is not None:
            conn_id = str(getattr(hook, "http_conn_id", "") or "") or None
            # the base URL only once the hook loaded its connection (never a secret: host only)
            base_url = getattr(hook, "base_url", None) if getattr(hook, "_ready", False) else None
            if base_url is None and conn_id:
                conn = type(hook).get_connection(conn_id)
                host = str(getattr(conn, "host", "") or "")
                port = getattr(conn, "port", None)
                base_url = (host if "//" in host else f"http://{host}") + (f":{port}" if port else "")
        failure = failure_of(
            task, exc, conn_id=conn_id, base_url=base_url, fix=getattr(exc, "crmsync_fix", None)
        )
        repo.begin_run(run_id, params)
        row = repo.get_run(run_id)
        stored = json.loads(row["summary"]) if row is not None and row["summary"] else None
        base = stored or {"flow": mapping.flow, "run_id": run_id}
        repo.set_run(run_id, summary=json.dumps(with_failure(base, failure)))
        log.error("%s failed: %s\n  fix: %s", task, failure["cause"], failure["fix"])
    except Exception:  # the task's own error is what matters
        log.warning("could not record the failure of %s on the run row", task, exc_info=True)
