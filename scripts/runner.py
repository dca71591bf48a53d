"""Run flow DAGs once, in this process, and read back their summaries.

Used by ``make run`` / ``make sync`` (scripts/run_flows.py) and the end-to-end tests; not
part of the package (a deployment runs flows through its scheduler). It drives real DAG runs
through Airflow (``dag.test()``: a DagRun in the metadata database, every task
executed), then reads the run's summary from the link store. The scheduler path
(LocalExecutor, where Airflow's ORM ban is enforced) is covered by a separate test.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crmsync.mapping.order import flow_order

if TYPE_CHECKING:
    from airflow.sdk import DAG

#: The flows of the mapping folder, each after the flows whose links it references
#: (the mappings' ``depends_on``; see crmsync.mapping.order).
ORDER = tuple(flow_order())


@dataclass
class FlowRun:
    dag_id: str
    run_id: str
    state: str
    summary: dict[str, Any] | None = None
    failed_tasks: list[str] = field(default_factory=list)
    #: what failed, why and the fix, one per failed task (recorded by the task on its run row)
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.state == "success"


def load_dags(dags_folder: str | Path) -> dict[str, DAG]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dags_folder))
    if bag.import_errors:
        problems = "\n".join(f"{k}:\n{v}" for k, v in bag.import_errors.items())
        raise RuntimeError(f"DAG import errors:\n{problems}")
    return dict(bag.dags)


def ordered(dag_ids: list[str]) -> list[str]:
    rank = {d: i for i, d in enumerate(ORDER)}
    return sorted(dag_ids, key=lambda d: (rank.get(d, len(ORDER)), d))


def read_summary(run_id: str, flow: str, conn_id: str = "crmsync_store") -> dict[str, Any] | None:
    from crmsync.store.engine import store_engine
    from crmsync.store.runs import RunStore

    return RunStore(store_engine(conn_id), flow).read_summary(run_id)


#: Every Param, spelled out on each run: a value must never leak from an earlier run.
DEFAULT_CONF = {"dry_run": False, "full_resync": False, "approve_large_change": False, "reconcile": False}


class _QuietDebug:
    """A logger that drops ``debug`` and passes everything else to ``inner``."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def debug(self, *args: Any, **kw: Any) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@contextmanager
def _no_secret_in_debug_log() -> Iterator[None]:
    """Keep ``dag.test()`` from logging connection passwords at DEBUG.

    Airflow's in-process supervisor (``InProcessSupervisorComms.send``, used only by
    ``dag.test()``) logs every message a task sends at DEBUG, including the
    ``MaskSecret`` that registers a password for masking, so ``make run`` at DEBUG would
    print the API key. A real worker's supervisor does not log that body. While a flow
    runs here, that one message is sent without its debug line; everything else is
    untouched. Without the class (another Airflow version) this does nothing, and
    tests/chaos/test_secrets.py says so. Airflow offers no public switch for it: the
    supervisor's logger has no name, so ``[logging] namespace_levels`` cannot quieten it,
    and the secrets masker does not look inside the message object. This is why the runner
    lives in scripts/, not in the package.
    """
    try:
        from airflow.sdk.execution_time import supervisor
    except ImportError:  # pragma: no cover - Airflow 3 has it
        yield
        return
    comms = getattr(supervisor, "InProcessSupervisorComms", None)
    original = getattr(comms, "send", None)
    if comms is None or original is None:  # pragma: no cover - another Airflow version
        yield
        return

    def send(self: Any, msg: Any) -> Any:
        if type(msg).__name__ != "MaskSecret":
            return original(self, msg)
        log = self.log
        self.log = _QuietDebug(log)
        try:
            return original(self, msg)
        finally:
            self.log = log

    comms.send = send
    try:
        yield
    finally:
        comms.send = original


def run_flow(dag: DAG, conf: dict[str, Any] | None = None) -> FlowRun:
    with _no_secret_in_debug_log():
        dr = dag.test(run_conf={**DEFAULT_CONF, **(conf or {})})
    failed = []
    for ti in dr.get_task_instances():
        if ti.state not in ("success", "skipped"):
            failed.append(f"{ti.task_id}={ti.state}")
    stored = read_summary(dr.run_id, dag.dag_id)
    failures = list((stored or {}).get("failures", []))
    # a run stopped before update_links summarised it has only its failures on the row
    summary = stored if stored is not None and "read" in stored else None
    return FlowRun(dag.dag_id, dr.run_id, str(dr.state), summary, failed, failures)


def run_record(r: FlowRun) -> dict[str, Any]:
    """The run as one JSON object: its summary (if any), its state and what failed, why, and the fix."""
    return {
        **(r.summary or {"flow": r.dag_id, "run_id": r.run_id}),
        "state": r.state,
        "failed_tasks": r.failed_tasks,
        "failures": r.failures,
    }
