"""The task callables of a flow DAG: :func:`run_step` dispatches one step to its module.

One module a step, so a record's path reads in order: :mod:`~crmsync.flows.extract`,
:mod:`~crmsync.flows.breaker` (transform's entry; the plan is
:mod:`~crmsync.flows.transform`), :mod:`~crmsync.flows.upsert` (each row's write:
:mod:`~crmsync.flows.writers`), :mod:`~crmsync.flows.links` (update_links). Here: the
mapping, link store and hooks a step gets, publish_links, and recording a failure
(:mod:`~crmsync.flows.failures`).

Nothing passes through XCom: every task reads and writes the link store, keyed by the
DAG run's ``run_id``, so any task can be cleared and rerun from the UI and the result
is the same as if it had run once:

* extract_* replaces its side's staging rows for the run;
* transform rebuilds the plan unless writes of it were already attempted;
* upsert_* executes only plan rows whose write is not recorded as done (outcomes are
  recorded within a second, see ``crmsync.flows.upsert.OUTCOME_FLUSH_SECONDS``);
* update_links applies only rows not applied yet, then commits the watermarks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crmsync.engine.status import RunStatus
from crmsync.flows.failures import fail
from crmsync.mapping.model import Mapping as FlowMapping
from crmsync.mapping.model import Side, load_mapping

if TYPE_CHECKING:
    from crmsync.flows.operator import Step
    from crmsync.hooks.chargebee import ChargebeeHook
    from crmsync.hooks.customcrm import CustomcrmHook
    from crmsync.store.repository import Repository

log = logging.getLogger("crmsync")


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
        fail(str(exc))
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
        fail(str(exc))
        raise
    return mapping.with_api_key_names(settings.api_key_names)


def run_step(step: Step | str, mapping_file: str, side: Side | str | None = None, **context: Any) -> None:
    """Run one step of a flow (what a :class:`~crmsync.flows.operator.SyncStepOperator`
    executes; tests and benchmarks call it directly). Returns nothing: no data goes
    through XCom."""
    from crmsync.flows.breaker import transform
    from crmsync.flows.extract import extract
    from crmsync.flows.failures import alert_if_blocked, record_failure
    from crmsync.flows.links import update_links
    from crmsync.flows.operator import Step
    from crmsync.flows.upsert import upsert

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
        record_failure(mapping, repo, run_id, params, task, exc, hooks[-1] if hooks else None)
        alert_if_blocked(mapping, run_id, task, exc)
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
