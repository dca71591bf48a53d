"""The live stack of ``bench latency``: both sandboxes and a real Airflow, and what the
benchmark asks of them (DAG runs, links, call counts).

Airflow is ``tests/e2e/standalone.py``'s :class:`Standalone` (api-server, scheduler with
LocalExecutor, dag-processor, triggerer, a separate execution API server) in its own
AIRFLOW_HOME and SQLite database, on free ports, with the scheduler's own schedules and
Asset scheduling on, as ``make up`` runs it. The sandboxes are ``bench._sandbox``
processes (in memory, free ports) at Chargebee's 150 requests/minute test-site limit.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import ROOT
from bench.sandboxes import CallCounts, Pair, Sandbox

SEEDS = ROOT / "sandbox" / "seed"
RATE_LIMIT = 150  # Chargebee test sites and Starter
ACTIVE = {"queued", "running"}


@dataclass
class Run:
    """One DAG run as the REST API reports it (times as epoch seconds, None if unset)."""

    dag_id: str
    run_id: str
    state: str
    run_type: str
    queued: float | None
    start: float | None
    end: float | None

    @property
    def seconds(self) -> float | None:
        return None if self.start is None or self.end is None else self.end - self.start


def _epoch(value: str | None) -> float | None:
    return None if not value else datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def start_sandboxes() -> Pair:
    """Both sandboxes, seeded, each at the 150/min limit."""
    cb = Sandbox("chargebee", SEEDS / "chargebee.json", rate_limit=RATE_LIMIT)
    try:
        crm = Sandbox("customcrm", SEEDS / "customcrm.json", rate_limit=RATE_LIMIT)
    except BaseException:
        cb.stop()
        raise
    return Pair(cb, crm)


def connections(sb: Pair) -> dict[str, str]:
    """The two connections (client-side budget 150/min; change_poll_seconds left at its default)."""
    cb = {
        "conn_type": "chargebee",
        "host": "sandbox",
        "password": "sandbox_api_key",
        "extra": {"base_url": f"{sb.cb.url}/api/v2", "rate_limit_per_minute": RATE_LIMIT},
    }
    crm = {
        "conn_type": "customcrm",
        "host": sb.crm.url,
        "password": "sandbox_token",
        "extra": {"rate_limit_per_minute": RATE_LIMIT},
    }
    return {
        "AIRFLOW_CONN_CHARGEBEE_DEFAULT": json.dumps(cb),
        "AIRFLOW_CONN_CUSTOMCRM_DEFAULT": json.dumps(crm),
    }


@contextlib.contextmanager
def airflow(home: Path, sb: Pair) -> Iterator[Any]:
    """A real Airflow stack against ``sb``; stopped (every process, by pid) on exit."""
    from tests.e2e.standalone import Standalone

    env = {
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        # Asset-triggered runs and the clocks need the scheduler's job schedule (make up's default)
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        **connections(sb),
    }
    with Standalone(home, extra_env=env) as sa:
        yield sa


def runs(sa: Any, dag_id: str) -> list[Run]:
    """The DAG's 100 newest runs."""
    body = sa.api("GET", f"dags/{dag_id}/dagRuns", params={"limit": 100, "order_by": "-run_after"})
    return [
        Run(
            dag_id,
            r["dag_run_id"],
            r["state"],
            r.get("run_type") or "",
            _epoch(r.get("queued_at")),
            _epoch(r.get("start_date")),
            _epoch(r.get("end_date")),
        )
        for r in body["dag_runs"]
    ]


def all_runs(sa: Any, flows: list[str]) -> list[Run]:
    return [r for f in flows for r in runs(sa, f)]


def unpause_and_settle(sa: Any, flows: list[str], roots: list[str], timeout: float = 600.0) -> float:
    """Unpause ``flows`` (their first runs: the roots' clock, the others' links Assets), trigger a
    root that did not start within 30 s, and wait until settled; returns the seconds it took."""
    t0 = time.monotonic()
    for dag_id in flows:
        sa.wait_for_dag(dag_id, timeout=180)
    for dag_id in flows:
        sa.api("PATCH", f"dags/{dag_id}", json={"is_paused": False})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(runs(sa, d) for d in roots):
        time.sleep(2)
    for dag_id in roots:
        if not runs(sa, dag_id):
            sa.trigger(dag_id)
    wait_idle(sa, flows, timeout)
    return time.monotonic() - t0


def wait_idle(sa: Any, flows: list[str], timeout: float, polls: int = 3) -> None:
    """Until every flow has a run, none is active, and that stays so for ``polls`` polls 3 s
    apart (an Asset-triggered run is created a scheduler loop after its upstream run)."""
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < polls:
        current = all_runs(sa, flows)
        have = {r.dag_id for r in current}
        active = [f"{r.dag_id} {r.state}" for r in current if r.state in ACTIVE]
        quiet = quiet + 1 if have == set(flows) and not active else 0
        if time.monotonic() > deadline:
            raise RuntimeError(f"not idle after {timeout:.0f} s: active {active}, flows with runs {have}")
        time.sleep(3)
    failed = [r for r in current if r.state == "failed"]
    if failed:
        raise RuntimeError(f"failed runs: {[(r.dag_id, r.run_id) for r in failed]}\n" + sa.output_tail())


def links(db_url: str, flows: list[str]) -> dict[str, list[tuple[str, str]]]:
    """{flow: [(crm_id, cb_id), ...]} from the link store (the standalone's database)."""
    from crmsync.store.schema import link
    from sqlalchemy import create_engine, select
    from sqlalchemy.pool import NullPool

    engine = create_engine(db_url, poolclass=NullPool)
    out: dict[str, list[tuple[str, str]]] = {f: [] for f in flows}
    try:
        with engine.connect() as conn:
            query = select(link.c.flow, link.c.crm_id, link.c.cb_id).order_by(link.c.id)
            for flow, crm_id, cb_id in conn.execute(query):
                if flow in out:
                    out[flow].append((str(crm_id), str(cb_id)))
    finally:
        engine.dispose()
    return out


def call_diff(before: dict[str, Any], after: dict[str, Any]) -> Counter[str]:
    """API requests between two ``/_sandbox/stats`` snapshots, by ``"METHOD template"``."""
    a, b = CallCounts.of(before).by_endpoint, CallCounts.of(after).by_endpoint
    out: Counter[str] = Counter()
    for key, counts in b.items():
        n = sum(counts.values()) - sum(a.get(key, Counter()).values())
        if n:
            out[key] = n
    return out


def task_times(sa: Any, run: Run) -> list[tuple[str, float, float]]:
    """(task_id, start, end) of the run's finished task instances, epoch seconds."""
    from urllib.parse import quote

    body = sa.api("GET", f"dags/{run.dag_id}/dagRuns/{quote(run.run_id, safe='')}/taskInstances")
    out = []
    for ti in body["task_instances"]:
        start, end = _epoch(ti.get("start_date")), _epoch(ti.get("end_date"))
        if start is not None and end is not None:
            out.append((str(ti["task_id"]), start, end))
    return out


def busy_seconds(spans: list[tuple[str, float, float]]) -> float:
    """Seconds in which at least one task ran (the union of the task intervals)."""
    total, reach = 0.0, -math.inf
    for _, start, end in sorted(spans, key=lambda s: s[1]):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total
