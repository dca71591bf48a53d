"""The crmsync notifier against real local receivers: a webhook (http.server) and an SMTP
server (aiosmtpd) on loopback (issue 14, item 5). No alert connection: nothing sent, nothing fails."""

from __future__ import annotations

import json
import logging

import pytest
from airflow.sdk import DAG
from crmsync.alerts import (
    DEFAULT_QUARANTINE_THRESHOLD,
    Alert,
    CrmsyncNotifier,
    Event,
    check_quarantine,
    quarantine_threshold,
    send_alert,
    writes_refused,
)

from tests.integration.alert_receivers import smtp_server, webhook

pytestmark = pytest.mark.integration

ALERT = Alert(
    "contact_customer",
    "manual__2026-12-03T10:00:00",
    Event.CIRCUIT_BREAKER,
    "would write 900 records (12 linked; limits 500 per run, 20% of the links); nothing was written",
    "trigger the DAG with the Param approve_large_change=true",
)


def _conn(monkeypatch: pytest.MonkeyPatch, **conn: object) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CRMSYNC_ALERTS", json.dumps(conn))


def test_webhook_gets_flow_run_what_and_fix_and_the_url_is_never_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with webhook() as hook:
        _conn(monkeypatch, conn_type="http", host=hook.url, login="ops", password="pw-never-logged")
        assert CrmsyncNotifier().send(ALERT) is True
    [(path, headers, body)] = hook.posts
    assert path == "/hooks/T0KEN-never-logged"
    assert headers["Authorization"].startswith("Basic ")
    assert body["flow"] == "contact_customer" and body["run_id"] == ALERT.run_id
    assert body["event"] == "circuit_breaker"
    assert "would write 900 records" in body["what"] and "approve_large_change" in body["fix"]
    assert body["text"].startswith("[crmsync] contact_customer: circuit breaker stopped the run")
    assert "T0KEN" not in caplog.text and "pw-never-logged" not in caplog.text
    assert "alert sent through connection 'crmsync_alerts' (http)" in caplog.text


def test_smtp_mail_to_the_configured_recipients(monkeypatch: pytest.MonkeyPatch) -> None:
    with smtp_server() as box:
        _conn(
            monkeypatch,
            conn_type="smtp",
            host=box.host,
            port=box.port,
            extra={"to": "ops@example.com, billing@example.com", "from_email": "crmsync@example.com"},
        )
        assert send_alert(ALERT.flow, ALERT.run_id, Event.SITE_BLOCKED, "429 after every retry", "slow down")
    [(sender, rcpts, msg)] = box.mails
    assert sender == "crmsync@example.com"
    assert rcpts == ["ops@example.com", "billing@example.com"]
    assert msg["Subject"] == "[crmsync] contact_customer: Chargebee site blocked (rate limit)"
    body = msg.get_payload()
    assert f"run: {ALERT.run_id}" in body and "429 after every retry" in body and "fix: slow down" in body


def test_without_a_connection_nothing_is_sent_and_nothing_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_CRMSYNC_ALERTS", raising=False)
    assert CrmsyncNotifier().send(ALERT) is False
    assert check_quarantine("contact_customer", "r1", 10_000) is False
    # as a DAG callback, too (the run row cannot even be read here)
    CrmsyncNotifier(store_conn_id="no_such_store")({"dag": DAG("f", schedule=None), "run_id": "r"})


def test_delivery_failures_are_warnings_without_secrets(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with webhook() as hook:
        hook.status = 500
        _conn(monkeypatch, conn_type="http", host=hook.url)
        assert CrmsyncNotifier().send(ALERT) is False
    assert "the webhook answered HTTP 500" in caplog.text
    # a receiver that is down: the error's text (with the URL) is not logged
    _conn(monkeypatch, conn_type="http", host=hook.url)
    assert CrmsyncNotifier().send(ALERT) is False
    _conn(monkeypatch, conn_type="smtp", host="127.0.0.1", port=1)  # no recipient, and closed
    assert CrmsyncNotifier().send(ALERT) is False
    assert "T0KEN" not in caplog.text
    _conn(monkeypatch, conn_type="slack", host="x")
    assert CrmsyncNotifier().send(ALERT) is False
    assert "use http or smtp" in caplog.text


def test_failed_run_callback_falls_back_when_the_run_row_is_unreadable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with webhook() as hook:
        _conn(monkeypatch, conn_type="http", host=hook.url)
        notifier = CrmsyncNotifier(store_conn_id="no_such_store")
        notifier({"dag": DAG("order_order", schedule=None), "run_id": "r9", "reason": "task_failure"})
    [(_, _, body)] = hook.posts
    assert body["event"] == "failed_run" and body["flow"] == "order_order" and body["run_id"] == "r9"
    assert body["what"] == "the run failed (task_failure)" and "failed task's log" in body["fix"]


def test_quarantine_threshold_per_flow_then_for_all(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = {"quarantine_threshold": 20, "quarantine_thresholds": {"order_order": 3}}
    assert quarantine_threshold("order_order", extra) == 3
    assert quarantine_threshold("contact_customer", extra) == 20
    assert quarantine_threshold("contact_customer", {}) == DEFAULT_QUARANTINE_THRESHOLD
    with webhook() as hook:
        _conn(monkeypatch, conn_type="http", host=hook.url, extra=extra)
        assert check_quarantine("order_order", "r1", 3) is False  # at the threshold: no alert
        assert check_quarantine("order_order", "r1", 4) is True
        assert check_quarantine("contact_customer", "r1", 4) is False
    [(_, _, body)] = hook.posts
    assert body["event"] == "quarantine_above_threshold"
    assert body["what"] == "4 records are held in quarantine (threshold 3)"


def test_writes_refused_for_the_rate_limit_alert_the_site_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The count comes from each write's ``Outcome.rate_limited`` (tests/unit/flows/test_writers.py);
    none refused, no alert."""
    with webhook() as hook:
        _conn(monkeypatch, conn_type="http", host=hook.url)
        assert writes_refused("contact_customer", "r1", 0) is False
        assert writes_refused("contact_customer", "r1", 3) is True
    [(_, _, body)] = hook.posts
    assert body["event"] == "chargebee_site_blocked"
    assert body["what"] == "3 Chargebee writes were refused with HTTP 429 after every retry"
