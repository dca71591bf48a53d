"""The failure part of the run summary (task, cause, fix) and the progress line (issue 14, items 4 and 6)."""

from __future__ import annotations

import pytest
from crmsync.flows.summary import (
    failure_of,
    progress_line,
    render_failures,
    render_summary,
    with_failure,
)
from crmsync.hooks.errors import AuthError, TransportError

SECRET = "sk_live_do_not_print"


def test_transport_error_names_the_connection_and_host_never_user_info() -> None:
    exc = TransportError("chargebee", "connection refused", method="GET", path="customers", sent=False)
    f = failure_of(
        "extract_chargebee",
        exc,
        conn_id="chargebee_default",
        base_url=f"http://user:{SECRET}@127.0.0.1:9/api/v2?key={SECRET}",
    )
    assert f["task"] == "extract_chargebee"
    assert "connection refused" in f["cause"]
    assert "'chargebee_default'" in f["cause"] and "127.0.0.1:9" in f["cause"]
    assert (
        "127.0.0.1:9" in f["fix"]
        and "chargebee_default" in f["fix"]
        and "clear extract_chargebee" in f["fix"]
    )
    assert SECRET not in repr(f)


def test_auth_error_points_at_the_api_key_of_the_connection() -> None:
    exc = AuthError("customcrm", 401, "unauthorized", "bad token", method="GET", path="contacts")
    f = failure_of("extract_customcrm", exc, conn_id="customcrm_default", base_url="https://crm.example.com")
    assert "crm.example.com" in f["cause"]
    assert "API key" in f["fix"] and "customcrm_default" in f["fix"]


def test_an_explicit_fix_wins_and_a_plain_error_gets_a_generic_one() -> None:
    assert failure_of("transform", RuntimeError("x"), fix="approve it")["fix"] == "approve it"
    f = failure_of("transform", RuntimeError("boom\nsecond line"))
    assert f["cause"] == "boom second line"  # one line: no forged log lines
    assert "clear transform" in f["fix"]


def test_with_failure_keeps_one_failure_per_task() -> None:
    s = with_failure({"flow": "f", "run_id": "r"}, {"task": "a", "cause": "1", "fix": "x"})
    s = with_failure(s, {"task": "b", "cause": "2", "fix": "y"})
    s = with_failure(s, {"task": "a", "cause": "3", "fix": "z"})
    assert [(f["task"], f["cause"]) for f in s["failures"]] == [("b", "2"), ("a", "3")]
    assert s["flow"] == "f"


def test_render_a_run_stopped_before_its_summary() -> None:
    s = with_failure(
        {"flow": "f", "run_id": "r"}, {"task": "transform", "cause": "circuit breaker", "fix": "approve"}
    )
    text = render_summary(s)
    assert "stopped" in text and "FAILED transform: circuit breaker" in text and "fix: approve" in text
    assert render_failures(s["failures"]) in text


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("upsert chargebee", 50, 200, 30.0, 12.5),
            "upsert chargebee: 50/200 records, 100/min, 30s, waited 12.5s for the rate budget, ~90s left",
        ),
        (
            ("upsert chargebee", 200, 200, 60.0, 0.0),
            "upsert chargebee: 200/200 records, 200/min, 60s, waited 0.0s for the rate budget",
        ),
        (("extract customcrm", 7, None, 2.0, None), "extract customcrm: 7 records, 210/min, 2s"),
        (("upsert customcrm", 0, 0, 0.0, None), "upsert customcrm: 0/0 records, 0/min, 0s"),
    ],
)
def test_progress_line(args: tuple, expected: str) -> None:
    assert progress_line(*args) == expected


def test_progress_logs_every_n_records_and_a_final_line(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from crmsync.flows.progress import Progress

    caplog.set_level(logging.INFO, logger="crmsync.progress")
    p = Progress("upsert chargebee", total=2500)
    for _ in range(2500):
        p.add()
    p.log()
    lines = [r.getMessage() for r in caplog.records if r.name == "crmsync.progress"]
    assert [line.split(" records")[0] for line in lines] == [
        "upsert chargebee: 1000/2500",
        "upsert chargebee: 2000/2500",
        "upsert chargebee: 2500/2500",
    ]
