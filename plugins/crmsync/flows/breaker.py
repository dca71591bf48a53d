"""The transform task's entry: the plan, then the circuit breaker before anything is written.

The plan itself is built in :mod:`crmsync.flows.transform`; a reconcile run reports
instead (:mod:`crmsync.flows.reconcile`). The breaker stops a run that would write far
more than usual (``limits`` of the mapping) until a person approves it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crmsync.engine.status import RunStatus
from crmsync.flows.failures import fail
from crmsync.mapping.model import Mapping as FlowMapping

if TYPE_CHECKING:
    from crmsync.store.repository import Repository


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
        fail(
            f"circuit breaker: this run would write {writes} records "
            f"({links} linked; limits: {limits.max_writes_per_run} per run, "
            f"{limits.max_write_fraction:.0%} of the links). Nothing was written. If this is "
            "expected (an initial sync, a bulk edit), trigger the DAG with the Param "
            "approve_large_change=true; if not, check the mapping and the source data.",
            fix=fix,
        )
