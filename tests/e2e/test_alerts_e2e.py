"""A flow run stopped by the circuit breaker alerts a real local webhook twice: the stop, from
the transform task that sees it, and the failed run, from the DAG's on_failure_callback with
the failures the run row holds (issue 14, item 5)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.alert_receivers import webhook

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_circuit_breaker_stop_alerts_the_webhook(
    dags: dict[str, Any], sandboxes: Any, store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml
    from crmsync.flows.factory import build_dag
    from crmsync.flows.runner import run_flow

    doc = yaml.safe_load((ROOT / "include/mappings/contact_customer.yaml").read_text())
    doc["limits"] = {"max_writes_per_run": 5}
    path = tmp_path / "contact_customer.yaml"
    path.write_text(yaml.safe_dump(doc))
    with webhook() as hook:
        monkeypatch.setenv("AIRFLOW_CONN_CRMSYNC_ALERTS", json.dumps({"conn_type": "http", "host": hook.url}))
        r = run_flow(build_dag(path))
    assert not r.ok and "transform=failed" in r.failed_tasks
    by_event = {body["event"]: body for _, _, body in hook.posts}
    assert set(by_event) == {"circuit_breaker", "failed_run"}, hook.posts

    stop = by_event["circuit_breaker"]
    assert stop["flow"] == "contact_customer" and stop["run_id"] == r.run_id
    assert "would write" in stop["what"] and "limits 5 per run" in stop["what"], stop
    assert "approve_large_change=true" in stop["fix"], stop

    failed = by_event["failed_run"]
    assert failed["run_id"] == r.run_id
    assert "transform: circuit breaker: this run would write" in failed["what"], failed
    assert "approve_large_change=true" in failed["fix"], failed
    assert failed["text"].startswith("[crmsync] contact_customer: run failed")


def test_no_alert_connection_no_alert_and_the_run_is_unchanged(
    dags: dict[str, Any], sandboxes: Any, store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crmsync.flows.runner import run_flow

    monkeypatch.delenv("AIRFLOW_CONN_CRMSYNC_ALERTS", raising=False)
    r = run_flow(dags["contact_customer"], {"approve_large_change": True})
    assert r.ok, r.failures
