"""No API key or token in any log line or table, on the happy path and the unhappy ones.

``dag.test()`` writes no task log files in this suite, and the suite logs at WARNING,
so the flow runs in a subprocess at DEBUG level and everything it prints (task logs,
hook retries, tracebacks) is captured. It runs three times: with faults on (retries,
lost responses, dropped connections logged), clean, and with both APIs refusing the
credentials (the 401 path raises and logs a traceback). Then every captured line, any
file under ``$AIRFLOW_HOME/logs`` and every row of every table in the metadata database
(``crmsync_*`` and Airflow's own: XCom, DAG run conf, rendered fields, ...) is searched
for the key, the token and the Basic-auth encoding of the key.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, select

from tests.e2e.conftest import CB_KEY, CRM_TOKEN, ROOT

pytestmark = pytest.mark.e2e

NEEDLES = [
    CB_KEY,
    CRM_TOKEN,
    base64.b64encode(f"{CB_KEY}:".encode()).decode().rstrip("="),  # Basic auth header value
]

SCRIPT = r"""
import os, requests
from scripts.runner import load_dags, run_flow

cb, crm = os.environ["CHAOS_CB_URL"], os.environ["CHAOS_CRM_URL"]
dag = load_dags(os.environ["CHAOS_DAGS"])["contact_customer"]
faults = {"seed": 5, "error_rate": 0.15, "rate_429": 0.05, "drop_rate": 0.05, "lost_response_rate": 0.1}
for base in (cb, crm):
    requests.post(f"{base}/_sandbox/faults", json=faults, timeout=10).raise_for_status()
print("RUN1", run_flow(dag, {}).state, flush=True)
for base in (cb, crm):
    requests.post(f"{base}/_sandbox/faults", json={}, timeout=10).raise_for_status()
requests.post(f"{crm}/contacts", json={"FirstName": "Sec", "Email": "secret.run@example.com"},
              headers={"Authorization": "Bearer " + os.environ["CHAOS_T"]}, timeout=10).raise_for_status()
print("RUN2", run_flow(dag, {}).state, flush=True)
requests.post(f"{cb}/_sandbox/config", json={"api_key": "rotated-key"}, timeout=10).raise_for_status()
requests.post(f"{crm}/_sandbox/config", json={"token": "rotated-token"}, timeout=10).raise_for_status()
print("RUN3", run_flow(dag, {}).state, flush=True)
"""


def find(text: str) -> list[str]:
    hits = []
    for line in text.splitlines():
        for needle in NEEDLES:
            i = line.find(needle)
            if i >= 0:
                hits.append(f"{needle!r} in …{line[max(0, i - 120) : i + 60]!r}…")
    return hits


def run_script(sandboxes: Any, script: str) -> str:
    """Run ``script`` in a subprocess at DEBUG log level; everything it printed."""
    env = {
        **os.environ,
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "DEBUG",
        "CHAOS_CB_URL": sandboxes.cb_url,
        "CHAOS_CRM_URL": sandboxes.crm_url,
        "CHAOS_DAGS": str(ROOT / "dags"),
        "CHAOS_T": CRM_TOKEN,  # the script's own setup call; it never prints it
    }
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    return out.stdout + out.stderr


def test_the_scanner_finds_what_it_looks_for() -> None:
    assert find(f"Authorization: Basic {base64.b64encode(f'{CB_KEY}:'.encode()).decode()}")
    assert find(f"Bearer {CRM_TOKEN}")


def test_no_secret_in_task_logs_or_any_table(dags: Any, store: Any, sandboxes: Any) -> None:
    logs = run_script(sandboxes, SCRIPT)
    # the runs really happened and really went through the unhappy paths
    assert "RUN1" in logs and "RUN2 success" in logs and "RUN3 failed" in logs, logs[-4000:]
    assert "retry" in logs.lower(), "faults should have caused logged retries"
    assert "401" in logs or "authentication" in logs.lower(), "the 401 path should be logged"
    assert len(logs) > 10_000, "DEBUG logging should have produced a lot of output"

    hits = [f"subprocess output: {h}" for h in find(logs)]
    log_dir = Path(os.environ["AIRFLOW_HOME"]) / "logs"
    for path in log_dir.rglob("*") if log_dir.exists() else []:
        if path.is_file():
            hits += [f"{path}: {h}" for h in find(path.read_text(errors="replace"))]

    meta = MetaData()
    meta.reflect(bind=store)
    assert any(t.startswith("crmsync_") for t in meta.tables) and "xcom" in meta.tables
    rows = 0
    with store.connect() as conn:
        for name, table in meta.tables.items():
            for row in conn.execute(select(table)):
                rows += 1
                text = " ".join(
                    v.decode(errors="replace") if isinstance(v, bytes) else str(v)
                    for v in row
                    if v is not None
                )
                hits += [f"table {name}: {h}" for h in find(text)]
    assert rows > 100
    assert not hits, "secrets found:\n" + "\n".join(hits)


SCRIPT_ONE_RUN = r"""
import os
from scripts.runner import load_dags, run_flow
print("RUN", run_flow(load_dags(os.environ["CHAOS_DAGS"])["contact_customer"], {}).state, flush=True)
"""


def test_the_runner_at_debug_level_prints_no_secret(dags: Any, store: Any, sandboxes: Any) -> None:
    """``dag.test()``'s in-process supervisor logs each message a task sends at DEBUG,
    including the MaskSecret that carries a password; the runner drops that one line."""
    logs = run_script(sandboxes, SCRIPT_ONE_RUN)
    assert "RUN success" in logs, logs[-3000:]
    # DEBUG is on and the supervisor's other messages are still logged
    assert "Sending request" in logs, logs[-3000:]
    hits = find(logs)
    assert not hits, "secrets found:\n" + "\n".join(hits)
