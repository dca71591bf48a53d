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

    from scripts.runner import run_flow

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
    from scripts.runner import run_flow

    monkeypatch.delenv("AIRFLOW_CONN_CRMSYNC_ALERTS", raising=False)
    r = run_flow(dags["contact_customer"], {"approve_large_change": True})
    assert r.ok, r.failures


def test_chargebee_429s_after_every_retry_alert_the_site_blocked(
    dags: dict[str, Any], sandboxes: Any, store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scripts.runner import run_flow

    monkeypatch.setenv(
        "AIRFLOW_CONN_CHARGEBEE_DEFAULT",
        json.dumps(
            {
                "conn_type": "chargebee",
                "host": "sandbox",
                "password": "sandbox_api_key",
                "extra": {"base_url": f"{sandboxes.cb_url}/api/v2", "max_attempts": 1, "max_retry_wait": 0},
            }
        ),
    )
    # the first three writes answered 429; with one attempt each, the retry policy gives up
    sandboxes.faults("chargebee", seed=1, rate_429=1.0, methods=["POST"], max_faults=3)
    with webhook() as hook:
        monkeypatch.setenv("AIRFLOW_CONN_CRMSYNC_ALERTS", json.dumps({"conn_type": "http", "host": hook.url}))
        r = run_flow(dags["contact_customer"], {"approve_large_change": True})
    blocked = [body for _, _, body in hook.posts if body["event"] == "chargebee_site_blocked"]
    assert len(blocked) == 1, hook.posts
    assert blocked[0]["run_id"] == r.run_id
    assert blocked[0]["what"] == "3 Chargebee writes were refused with HTTP 429 after every retry", blocked
    assert "rate_limit_per_minute" in blocked[0]["fix"]


def test_quarantine_above_the_flows_threshold_alerts(
    dags: dict[str, Any], sandboxes: Any, store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scripts.runner import run_flow

    with webhook() as hook:
        extra = {"quarantine_threshold": 1000, "quarantine_thresholds": {"contact_customer": 0}}
        monkeypatch.setenv(
            "AIRFLOW_CONN_CRMSYNC_ALERTS", json.dumps({"conn_type": "http", "host": hook.url, "extra": extra})
        )
        r = run_flow(dags["contact_customer"], {"approve_large_change": True})
    assert r.ok and r.summary is not None, r.failures
    held = int(r.summary["held_total"])
    assert held > 0, "the seed is expected to hold some contact in quarantine"
    [body] = [b for _, _, b in hook.posts if b["event"] == "quarantine_above_threshold"]
    assert body["run_id"] == r.run_id
    assert body["what"] == f"{held} records are held in quarantine (threshold 0)"
