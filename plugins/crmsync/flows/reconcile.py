"""A reconcile run (the ``reconcile`` Param): read both sides in full, report where they
disagree, write nothing. Orchestration only; the comparison is
:mod:`crmsync.engine.reconcile`, the reads :mod:`crmsync.store.reconcile`.

The run keeps the DAG's six tasks so nothing about scheduling changes:

* extract_* read everything (the watermark is ignored, as with ``full_resync``) into the
  run's staging rows;
* transform computes the report instead of a plan (no plan row, no quarantine row, no
  retry request is consumed), logs it and keeps it on the run row;
* upsert_* write nothing;
* update_links writes no link and commits no watermark: it finishes the run row with the
  summary, whose ``reconciliation`` key holds the counts and the first items.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from crmsync.engine.reconcile import (
    LISTED,
    LOG_MAX,
    Report,
    compare_pair,
    duplicates,
    report_lines,
    unlinked,
)
from crmsync.engine.status import RunStatus
from crmsync.flows.refs import RefResolver
from crmsync.mapping.model import Mapping as FlowMapping
from crmsync.store.reconcile import ReconcileStore
from crmsync.store.repository import Repository, link_state

log = logging.getLogger("crmsync")
#: how many lines of the report update_links repeats in its log (transform's log has them all)
SHOWN = 20


def reconciling(params: dict[str, Any]) -> bool:
    """Whether the run is a reconcile run."""
    return bool(params.get("reconcile"))


def build_report(mapping: FlowMapping, run_id: str, repo: Repository) -> Report:
    """The report of this run's staged records against the links."""
    store = ReconcileStore(repo.engine, mapping.flow)
    refs = RefResolver(repo.engine, mapping)
    report = Report(mapping)
    for batch in store.iter_pairs(run_id):
        refs.prefetch([pair.cb for pair in batch if pair.cb is not None])
        for pair in batch:
            # references compared as the Customcrm ids they are linked to; one not linked
            # yet is left out (unknown), as transform leaves it out of the merge
            cb = refs.canonical_soft(pair.cb)[0] if pair.cb is not None else None
            report.add_pair(compare_pair(mapping, refs.resolve_link(link_state(pair.link)), pair.crm, cb))
    for row in store.iter_unlinked(run_id):
        report.add_unlinked(
            unlinked(mapping, row.side, row.record_id, row.match_key, row.hold_kind, row.hold_reason)
        )
    report.add_duplicates(duplicates(mapping, store.iter_shared_keys(run_id)))
    return report


def reconcile(mapping: FlowMapping, run_id: str, params: dict[str, Any], repo: Repository) -> None:
    """transform's work in a reconcile run: the report, logged and kept on the run row."""
    repo.begin_run(run_id, params)
    report = build_report(mapping, run_id, repo)
    full = report.as_json(LOG_MAX)
    lines = report_lines(full)
    total = len(report.differences) + len(report.missing) + len(report.unlinked) + len(report.duplicates)
    counted = sum(report.counts.get(k, 0) for k in report.counts if not k.startswith(("verdict_", "unseen")))
    more = f"\n  ... {counted - total} more not listed" if counted > total else ""
    log.info(
        "reconcile: nothing is written; the report\n%s%s", "\n".join(f"  {line}" for line in lines), more
    )
    kept = report.as_json(LISTED)
    row = repo.get_run(run_id)
    stored = json.loads(row["summary"]) if row is not None and row["summary"] else {}
    summary = {**stored, "flow": mapping.flow, "run_id": run_id, "reconcile": True, "reconciliation": kept}
    repo.set_run(run_id, status=RunStatus.PLANNED, summary=json.dumps(summary, default=str))


def finish(mapping: FlowMapping, run_id: str, params: dict[str, Any], repo: Repository) -> dict[str, Any]:
    """update_links' work in a reconcile run: the summary with the report; no link, no
    watermark. Fails, as a sync run does, when transform did not finish its report."""
    from crmsync.flows.failures import fail
    from crmsync.flows.summary import build_summary, render_summary

    row = repo.get_run(run_id)
    stored = json.loads(row["summary"]) if row is not None and row["summary"] else {}
    if row is None or row["status"] != RunStatus.PLANNED or "reconciliation" not in stored:
        fail(
            "reconcile: transform did not finish the report (see its failure above); nothing was written",
            fix="clear transform (and the tasks after it) in the Airflow UI, or trigger a new run",
        )
    summary = build_summary(mapping, repo, run_id, dry_run=False)
    summary.update(reconcile=True, reconciliation=stored["reconciliation"])
    if stored.get("failures"):
        summary["failures"] = stored["failures"]
    repo.purge_staging(run_id)
    repo.set_run(
        run_id,
        status=RunStatus.FINISHED,
        finished_at=datetime.now(UTC),
        summary=json.dumps(summary, default=str),
    )
    lines = report_lines(stored["reconciliation"])
    shown = "\n".join(f"  {line}" for line in lines[: SHOWN + 1])
    more = (
        "\n  ... the rest in transform's log and the summary's reconciliation"
        if len(lines) > SHOWN + 1
        else ""
    )
    log.info(
        "run summary (reconcile: nothing was written)\n%s\nreconciliation\n%s%s",
        render_summary(summary),
        shown,
        more,
    )
    return summary
