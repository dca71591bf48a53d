"""docker-compose.yaml's CeleryExecutor topology, without Docker (issue 15, item 4).

PostgreSQL (a scratch database on the suite's server), Redis (Debian's ``redis-server``),
``airflow db migrate``, api-server, scheduler, dag-processor, triggerer and TWO
``airflow celery worker`` processes of two task slots each (see tests/e2e/celery_stack.py).
All six flow DAGs are triggered at once against a Chargebee sandbox that enforces a test
site's 150 requests a minute as Chargebee does (past the limit, 429 and a site block).
Extra Customcrm contacts give the flows more Chargebee work than one minute allows, so
the shared budget is what paces them.

Proves: no run fails; the sandbox answered no 429; no record is duplicated on either
side, no task log shows a deadlock or integrity error, and the link store's uniqueness
holds; every task instance ran once, on one of the workers; tasks ran on both workers, and both workers' tasks
called Chargebee through one budget (one site row in ``crmsync_rate_budget``) while the
busiest minute used most of the limit and never more: per-process budgets would each
allow 150 a minute and get the site blocked.

In CI (``CI`` set) a missing ``redis-server`` or PostgreSQL server fails the test; on a
workstation without them it is skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from crmsync.store.schema import rate_budget
from sqlalchemy import create_engine, select
from sqlalchemy.pool import NullPool

from tests.e2e.celery_stack import CeleryStack, pg_reachable, pg_server_url, redis_server, scratch_pg_database
from tests.e2e.conftest import Sandboxes
from tests.e2e.standalone import ROOT
from tests.e2e.test_all_flows_scheduler import (
    DB_TROUBLE,
    FLOWS,
    LIMIT,
    accepted_per_second,
    add_contacts,
    assert_all_succeeded,
    busiest_window,
    connections,
    limited_sandboxes,  # noqa: F401 (fixture)
    uniqueness_is_enforced_by_the_database,
    wait_all,
)
from tests.e2e.test_scheduler import link_store_ready

pytestmark = [pytest.mark.e2e, pytest.mark.scheduler, pytest.mark.postgres, pytest.mark.one_pass]

#: Each needs one Chargebee create: with the flows' reads, just over a minute of budget.
EXTRA_CONTACTS = 150
#: Tasks that call Chargebee.
CHARGEBEE_TASKS = {"extract_chargebee", "upsert_chargebee"}
WORKLOAD = re.compile(r"Executing workload in Celery: .*?task_id='([^']+)', dag_id='([^']+)'")


def require(ok: bool, what: str) -> None:
    """Skip on a workstation, fail in CI (.ci/run installs both)."""
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"{what} (CI must provide it: see .ci/run)")
        pytest.skip(what)


def workloads(stack: CeleryStack) -> dict[str, Counter[tuple[str, str]]]:
    """{worker: Counter of the (dag_id, task_id) it executed}, from each worker's output."""
    return {
        n: Counter((m.group(2), m.group(1)) for m in WORKLOAD.finditer(stack.output(n)))
        for n in stack.worker_names
    }


def budget_sites(db_url: str) -> set[str]:
    engine = create_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return {str(s) for s in conn.execute(select(rate_budget.c.site).distinct()).scalars()}
    finally:
        engine.dispose()


def no_duplicates(sb: Sandboxes) -> None:
    cb = Counter((c.get("email") or "").lower() for c in sb.cb_customers() if not c.get("deleted"))
    crm = Counter((c.get("Email") or "").lower() for c in sb.crm_contacts() if not c.get("Deleted"))
    assert not {e: n for e, n in cb.items() if e and n > 1}, "duplicate Chargebee customers"
    assert not {e: n for e, n in crm.items() if e and n > 1}, "duplicate Customcrm contacts"
    assert sum(1 for e in cb if e.endswith("@budget.example")) == EXTRA_CONTACTS


def test_six_flows_on_two_celery_workers_share_one_budget(
    limited_sandboxes: tuple[Sandboxes, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    require(shutil.which("redis-server") is not None, "redis-server is not installed (apt-get)")
    server = pg_server_url()
    require(pg_reachable(server), "no PostgreSQL at CRMSYNC_PG_URL (scripts/ci_postgres.sh starts one)")
    sb, cb_server = limited_sandboxes
    add_contacts(sb, EXTRA_CONTACTS)
    with (
        scratch_pg_database(server) as db_url,
        redis_server(tmp_path / "redis") as broker,
        CeleryStack(tmp_path / "airflow", db_url, broker, extra_env=connections(sb)) as stack,
    ):
        link_store_ready(db_url)
        for dag_id in FLOWS:
            if stack.wait_for_dag(dag_id)["is_paused"]:
                stack.api("PATCH", f"dags/{dag_id}", json={"is_paused": False})
        cb_server.limiter.reset()  # count only what the flows send

        t0 = time.monotonic()
        runs = {dag_id: stack.trigger(dag_id) for dag_id in FLOWS}
        assert_all_succeeded(stack, wait_all(stack, {d: [r] for d, r in runs.items()}, timeout=900))
        per_second = accepted_per_second(sb)
        stats = sb.stats("chargebee")
        ran = workloads(stack)
        figures = {
            "seconds": round(time.monotonic() - t0, 1),
            "chargebee_requests": sum(per_second.values()),
            "busiest_minute": busiest_window(per_second),
            "sandbox_429": stats["rate_limited"],
            "site_blocks": stats["rate_limit"]["breaches"],
            "tasks_per_worker": {n: sum(c.values()) for n, c in ran.items()},
            "chargebee_tasks_per_worker": {
                n: sum(k for (_, t), k in c.items() if t in CHARGEBEE_TASKS) for n, c in ran.items()
            },
        }
        print("six flows on two Celery workers:", json.dumps(figures))

        assert stats["rate_limited"] == 0 and stats["rate_limit"]["breaches"] == 0, figures
        assert figures["chargebee_requests"] > LIMIT, figures  # more than one minute's worth
        assert LIMIT >= figures["busiest_minute"] >= 0.8 * LIMIT, figures
        assert all(figures["chargebee_tasks_per_worker"].values()), figures  # both workers called it
        every_ti = Counter((d, t) for d, r in runs.items() for t in stack.task_instances(d, r))
        assert sum(ran.values(), Counter()) == every_ti, figures  # each task once, on a worker
        sites = budget_sites(db_url)
        assert len([s for s in sites if s.startswith("chargebee")]) == 1, sites
        trouble = [str(f) for f in stack.log_files() if DB_TROUBLE.search(f.read_text(errors="replace"))]
        assert not trouble, f"deadlock/integrity errors in task logs: {trouble[:5]}"
        no_duplicates(sb)
        uniqueness_is_enforced_by_the_database(db_url)


def compose_config() -> dict[str, Any]:
    """``docker-compose config`` of the repository's file, parsed (Debian's client)."""
    out = subprocess.run(
        [
            "docker-compose",
            "--project-directory",
            str(ROOT),
            "-f",
            str(ROOT / "docker-compose.yaml"),
            "config",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(yaml.safe_load(out.stdout))


def test_compose_file_is_the_celery_topology() -> None:
    """docker-compose.yaml validates (``config -q``) and has the topology the test above runs."""
    require(shutil.which("docker-compose") is not None, "docker-compose is not installed (apt-get)")
    quiet = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    services = compose_config()["services"]
    core = {
        "postgres",
        "redis",
        "airflow-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
    }
    assert core <= set(services), sorted(services)
    sandboxes = {"chargebee-sandbox", "customcrm-sandbox"}
    # Debian's docker-compose 1.29 lists every service; the profile says which ones start.
    assert all(services[n].get("profiles") == ["demo"] for n in sandboxes), "sandboxes outside demo"
    for name in core - {"postgres", "redis"}:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert not services[name].get("profiles"), f"{name} must start by default"
        # The API connections live in the metadata DB (airflow-init), editable in the UI.
        assert [k for k in env if k.startswith("AIRFLOW_CONN_")] == ["AIRFLOW_CONN_CRMSYNC_STORE"], name
        assert not sandboxes & set(services[name].get("depends_on", {})), name
    worker = services["airflow-worker"]
    assert "container_name" not in worker and "ports" not in worker, "airflow-worker must scale"
    init = services["airflow-init"]
    assert "airflow db migrate" in " ".join(init["command"]), init["command"]
    cb = json.loads(init["environment"]["CRMSYNC_INIT_CHARGEBEE"])
    assert cb["extra"]["rate_limit_per_minute"] == LIMIT, cb
    assert any("/opt/airflow/auth" in str(v) for v in services["airflow-apiserver"]["volumes"])
