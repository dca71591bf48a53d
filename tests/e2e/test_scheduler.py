"""contact_customer through a real scheduler + LocalExecutor (``airflow standalone``).

``dag.test()`` runs tasks in the test process, where the metadata ORM is reachable; a real
worker runs them under the Task SDK, where Airflow 3 forbids it. This test is the proof that
the flow works the way production runs it: DAG parsed by the dag-processor, runs triggered
through the REST API, tasks executed by LocalExecutor workers against both sandboxes, the
link store reached only through the ``crmsync_store`` connection.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from crmsync.store.schema import TABLES, run
from sqlalchemy import create_engine, delete, inspect, select
from sqlalchemy.pool import NullPool

from tests.e2e.conftest import CB_KEY, CRM_TOKEN
from tests.e2e.standalone import Standalone
from tests.e2e.test_contact_customer import writes

pytestmark = [pytest.mark.e2e, pytest.mark.scheduler]

DAG_ID = "contact_customer"
TASKS = {
    "extract_customcrm",
    "extract_chargebee",
    "transform",
    "upsert_chargebee",
    "upsert_customcrm",
    "update_links",
    "publish_links",
}
SECRETS = (CB_KEY, CRM_TOKEN)


def run_summary(db_url: str, run_id: str) -> dict[str, Any]:
    engine = create_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            query = select(run.c.summary).where(run.c.run_id == run_id, run.c.flow == DAG_ID)
            blob = conn.execute(query).scalar()
    finally:
        engine.dispose()
    assert blob, f"no summary in crmsync_run for {run_id}"
    return dict(json.loads(blob))


def link_store_ready(db_url: str) -> None:
    """Our tables exist (standalone migrated through the DB manager); empty them (shared PostgreSQL)."""
    engine = create_engine(db_url, poolclass=NullPool)
    try:
        names = set(inspect(engine).get_table_names())
        missing = [t.name for t in TABLES if t.name not in names]
        assert not missing, f"link store tables not migrated by `airflow standalone`: {missing}"
        with engine.begin() as conn:
            for table in TABLES:
                conn.execute(delete(table))
    finally:
        engine.dispose()


def run_dag(sa: Standalone, timings: dict[str, float], label: str) -> str:
    t0 = time.monotonic()
    run_id = sa.trigger(DAG_ID)
    state = sa.wait_for_run(DAG_ID, run_id)
    timings[label] = time.monotonic() - t0
    tis = sa.task_instances(DAG_ID, run_id)
    failed = {t: s for t, s in tis.items() if s != "success"}
    assert state == "success" and set(tis) == TASKS and not failed, (
        f"run {run_id} {state}; tasks not successful: {failed or tis}\n{sa.task_logs(DAG_ID, run_id)}"
    )
    return run_id


def assert_clean(sa: Standalone, run_id: str) -> None:
    """No secret in any task log, nothing in XCom."""
    logs = sa.log_files(DAG_ID, run_id)
    assert {p.parts[-2].removeprefix("task_id=") for p in logs} >= TASKS, [str(p) for p in logs]
    # the logs are real (INFO, the summary is there), so finding no secret in them means something
    assert any("run summary" in p.read_text() for p in logs if "task_id=update_links" in p.parts), run_id
    # every log under $AIRFLOW_HOME/logs (tasks, dag-processor) and the components' own output
    for path in [*sa.log_files(), sa.output_path]:
        text = path.read_text(errors="replace")
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} in {path}"
    for task_id in sorted(TASKS):
        assert sa.xcom_entries(DAG_ID, run_id, task_id) == [], f"{task_id} pushed XCom"


def test_contact_customer_through_scheduler_and_local_executor(sandboxes, tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    with Standalone(tmp_path / "airflow") as sa:
        timings["healthy"] = time.monotonic() - t0
        link_store_ready(sa.db_url)

        t1 = time.monotonic()
        dag = sa.wait_for_dag(DAG_ID)
        timings["parsed"] = time.monotonic() - t1
        if dag["is_paused"]:  # AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False should spare this
            sa.api("PATCH", f"dags/{DAG_ID}", json={"is_paused": False})
        # nothing else runs the flow (no cron run: AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE=False)
        runs_before = sa.dag_runs(DAG_ID)
        assert all(state in ("success", "failed") for state in runs_before.values()), runs_before

        first = run_dag(sa, timings, "first run")
        s = run_summary(sa.db_url, first)
        assert s["linked_by_match"] >= 15, s
        assert s["created"]["chargebee"] > 0 and s["created"]["customcrm"] > 0, s
        assert s["quarantined"] == 2, s
        assert_clean(sa, first)

        before = writes(sandboxes)
        second = run_dag(sa, timings, "second run")
        s2 = run_summary(sa.db_url, second)
        assert s2["created"] == {"customcrm": 0, "chargebee": 0}, s2
        assert s2["updated"] == {"customcrm": 0, "chargebee": 0}, s2
        assert writes(sandboxes) == before, "an idle rerun must not write"
        assert_clean(sa, second)
        new_runs = set(sa.dag_runs(DAG_ID)) - set(runs_before)
        assert new_runs == {first, second}, f"runs the test did not trigger: {new_runs - {first, second}}"
        t2 = time.monotonic()
    timings["stopped"] = time.monotonic() - t2
    timings["total"] = time.monotonic() - t0
    print("scheduler e2e timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
