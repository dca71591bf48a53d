"""A failed run says why in its summary: the failing task, the cause and the fix (issue 14, item 4)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_transport_error_names_task_connection_host_and_fix(
    dags: dict[str, Any], sandboxes: Any, store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crmsync.flows.summary import render_failures

    from scripts.runner import run_flow, run_record

    secret = "cb_test_secret_never_shown"
    port = _closed_port()
    monkeypatch.setenv(
        "AIRFLOW_CONN_CHARGEBEE_DEFAULT",
        json.dumps(
            {
                "conn_type": "chargebee",
                "host": "sandbox",
                "password": secret,
                "extra": {
                    "base_url": f"http://127.0.0.1:{port}/api/v2",
                    "max_attempts": 1,
                    "max_retry_wait": 0,
                },
            }
        ),
    )
    r = run_flow(dags["contact_customer"])
    assert not r.ok and "extract_chargebee=failed" in r.failed_tasks
    first = r.failures[0]
    assert first["task"] == "extract_chargebee", r.failures
    assert "chargebee_default" in first["cause"] and f"127.0.0.1:{port}" in first["cause"], first
    assert "chargebee_default" in first["fix"] and "clear extract_chargebee" in first["fix"], first
    # update_links names the failed task instead of pointing at a transform log that does not exist
    later = [f for f in r.failures if f["task"] == "update_links"]
    assert later and "extract_chargebee failed" in later[0]["cause"], r.failures
    assert "see its log" not in json.dumps(r.failures)
    record = run_record(r)
    assert record["state"] == "failed" and record["failures"] == r.failures
    text = render_failures(r.failures)
    assert secret not in json.dumps(record) and secret not in text
    assert "FAILED extract_chargebee" in text


def test_circuit_breaker_stop_shows_its_numbers_and_the_approve_hint(
    dags: dict[str, Any], sandboxes: Any, store: Any, tmp_path: Path
) -> None:
    import yaml
    from crmsync.flows.factory import build_dag

    from scripts.runner import run_flow, run_record

    doc = yaml.safe_load((ROOT / "include/mappings/contact_customer.yaml").read_text())
    doc["limits"] = {"max_writes_per_run": 5}
    path = tmp_path / "contact_customer.yaml"
    path.write_text(yaml.safe_dump(doc))
    r = run_flow(build_dag(path))
    assert not r.ok and "transform=failed" in r.failed_tasks
    stop = next(f for f in r.failures if f["task"] == "transform")
    assert "circuit breaker: this run would write" in stop["cause"]
    assert "limits: 5 per run" in stop["cause"], stop
    assert "approve_large_change=true" in stop["fix"], stop
    assert run_record(r)["failures"][0] == stop
