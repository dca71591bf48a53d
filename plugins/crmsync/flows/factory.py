"""Mapping file → DAG. Cheap to parse: no network, no database, no heavy imports.

Each flow DAG has the same six tasks; the task callables live in
:mod:`crmsync.flows.tasks` and import hooks, SQLAlchemy and the engine only when they
run. Nothing goes through XCom: tasks share state through the link store, keyed by the
DAG run's id.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pendulum

from crmsync.mapping.model import Mapping as FlowMapping
from crmsync.mapping.model import Side, load_mapping, load_mappings

if TYPE_CHECKING:
    from airflow.sdk import DAG

    from crmsync.flows.operator import Step, SyncStepOperator

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "crmsync",
    # Tests set CRMSYNC_TASK_RETRIES=0 so a failure shows at once instead of after backoff.
    "retries": int(os.environ.get("CRMSYNC_TASK_RETRIES", "2")),
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    # Airflow's backoff counts every earlier try, so a task cleared after two failures
    # waited about 7 minutes; capped, a cleared task retries within a minute (issue 14).
    "max_retry_delay": timedelta(minutes=1),
    "execution_timeout": timedelta(hours=6),
}

_DOC = """\
### {flow}: Customcrm {crm_label} ⇄ Chargebee {cb_label}

{description}

**Tasks.** `extract_customcrm` and `extract_chargebee` stage what changed since each
side's watermark; `transform` matches, merges and writes one plan row per pair;
`upsert_chargebee`, then `upsert_customcrm` execute the plan (Customcrm second, so values
Chargebee assigns to records the sync creates there reach Customcrm in the same run);
`update_links` records links,
quarantines what failed (with the reason), advances watermarks and logs the summary.
Any task can be cleared and rerun: reruns never repeat a write that was done.

**Params.** `full_resync` ignores the watermarks (re-reads everything, writes only
differences); `dry_run` plans and summarises without writing; `approve_large_change`
lets a run past the circuit breaker ({max_writes} writes, or {fraction:.0%} of links);
`reconcile` writes nothing and reports where the two systems disagree: linked pairs whose
mapped fields differ (and what a full sync would do), unlinked records with why, and
records of one side sharing a match key (transform's log, the run summary's
`reconciliation`; watermarks are neither used nor advanced).

**Policies.** Conflicts: `{conflict}` (tie → {tie}). Deletes: Customcrm → `{on_crm}`,
Chargebee → `{on_cb}`. A clear is an edit: a synced value cleared on one side is cleared
on the other (unless the field says `empty_overwrites: false`); a blank never synced
never overwrites.
Match key: {keys}.

**Chargebee limits for this flow.** {limits}

**Field pairs.**

| field | Customcrm | Chargebee | direction |
|---|---|---|---|
{fields}
"""


def doc_md(mapping: FlowMapping) -> str:
    from crmsync.mapping.capabilities import capability

    cap = capability(mapping.chargebee.resource)
    fields = "\n".join(
        f"| {f.name} | `{f.customcrm}` | `{f.chargebee}` | {f.direction.value} |" for f in mapping.fields
    )
    routed = sorted({r for r in cap.update_routes.values() if r != "update"})
    limits = cap.limitation or "Chargebee can create, update and delete this resource."
    if mapping.limitations:
        limits += "\n\n" + "\n".join(f"* {note}" for note in mapping.limitations)
    one_way = [f.name for f in mapping.fields if f.direction.value != "both"]
    if one_way:
        limits += (
            f"\n\nOne-way fields: {', '.join(one_way)}. An edit on the side that is not their "
            f"source is handled by the policy `read_only_edits: {mapping.read_only_edits.value}` "
            "(restore: written back; keep: kept and reported) unless the field sets its own."
        )
    if routed:
        limits += (
            " Some fields are written through dedicated endpoints: "
            + ", ".join(f"`{r}`" for r in routed)
            + "."
        )
    return _DOC.format(
        flow=mapping.flow,
        crm_label=mapping.customcrm.label,
        cb_label=mapping.chargebee.label,
        description=mapping.description.strip(),
        max_writes=mapping.limits.max_writes_per_run,
        fraction=mapping.limits.max_write_fraction,
        conflict=mapping.conflict.policy.value,
        tie=mapping.conflict.tie_breaker.value,
        on_crm=mapping.delete.on_customcrm_delete.value,
        on_cb=mapping.delete.on_chargebee_delete.value,
        keys=", ".join(mapping.match.keys),
        limits=limits,
        fields=fields,
    )


def _params() -> dict[str, Any]:
    """The trigger form of every flow's DAG (Airflow Params: the UI shows a form)."""
    from airflow.sdk import Param

    return {
        "full_resync": Param(False, type="boolean", description="Ignore watermarks and re-read everything."),
        "dry_run": Param(False, type="boolean", description="Plan and summarise without writing."),
        "approve_large_change": Param(
            False, type="boolean", description="Let a run past the circuit breaker."
        ),
        "reconcile": Param(
            False,
            type="boolean",
            description="Write nothing: read both sides in full and report linked pairs whose "
            "fields differ, unlinked records and duplicate match keys (transform's log, run summary).",
        ),
    }


def build_dag(
    mapping_file: str | Path,
    known_flows: Collection[str] | None = None,
    *,
    mapping: FlowMapping | None = None,
) -> DAG:
    """One DAG for one mapping file (``mapping``: the file, already loaded).
    ``known_flows``: the flows deployed with it, which order it
    (:mod:`crmsync.flows.assets`); default: the mapping files next to it."""
    from airflow.sdk import DAG

    from crmsync.alerts import CrmsyncNotifier
    from crmsync.flows.assets import links_asset, schedule_for
    from crmsync.flows.operator import Step, SyncStepOperator

    path = str(Path(mapping_file).resolve())
    mapping = mapping or load_mapping(path)
    if known_flows is None:
        known_flows = [m.flow for m in load_mappings(Path(path).parent)]
    with DAG(
        dag_id=mapping.flow,
        description=f"Customcrm {mapping.customcrm.label} ⇄ Chargebee {mapping.chargebee.label}",
        # after the flows whose links it references (their Assets), else the mapping's schedule
        schedule=schedule_for(mapping, known_flows),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["crmsync", *mapping.tags],
        doc_md=doc_md(mapping),
        default_args=DEFAULT_ARGS,
        # a failed run alerts through the crmsync_alerts connection, if any (crmsync.alerts)
        on_failure_callback=CrmsyncNotifier(store_conn_id=mapping.connections.store),
        params=_params(),
    ) as dag:

        def step(task_id: str, name: Step, side: Side | None = None, **extra: Any) -> SyncStepOperator:
            return SyncStepOperator(task_id=task_id, step=name, mapping_file=path, side=side, **extra)

        extract_crm = step("extract_customcrm", Step.EXTRACT, Side.CUSTOMCRM)
        extract_cb = step("extract_chargebee", Step.EXTRACT, Side.CHARGEBEE)
        transform = step("transform", Step.TRANSFORM)
        upsert_cb = step("upsert_chargebee", Step.UPSERT, Side.CHARGEBEE)
        # After upsert_chargebee, whatever its outcome (all_done: a Chargebee failure must
        # not hold back the Customcrm writes): values Chargebee assigns to the records this
        # run creates there (an order's number) reach Customcrm in the same run.
        upsert_crm = step("upsert_customcrm", Step.UPSERT, Side.CUSTOMCRM, trigger_rule="all_done")
        # all_done: the writes that did succeed must become links even when an upsert
        # task failed (error budget), or the next run would not know about them.
        links = step("update_links", Step.UPDATE_LINKS, trigger_rule="all_done")
        # only after update_links succeeded: the flows that reference this one run next
        publish = step("publish_links", Step.PUBLISH_LINKS, outlets=[links_asset(mapping.flow)])
        [extract_crm, extract_cb] >> transform >> upsert_cb >> upsert_crm >> links >> publish
    return dag


def build_dags(folder: str | Path) -> dict[str, DAG]:
    """Every mapping in ``folder`` → {dag_id: DAG}."""
    mappings = {p: load_mapping(p) for p in sorted(Path(folder).glob("*.yaml"))}
    known = [m.flow for m in mappings.values()]
    dags = [build_dag(p, known, mapping=m) for p, m in mappings.items()]
    return {dag.dag_id: dag for dag in dags}
