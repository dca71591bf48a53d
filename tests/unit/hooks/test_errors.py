"""Typed errors: what their text says, and what it never says."""

from __future__ import annotations

import pickle

from crmsync.hooks.errors import (
    ApiError,
    Conflict,
    RateLimited,
    TransportError,
    ValidationError,
    short_message,
)


def test_message_names_what_failed() -> None:
    e = ValidationError(
        "chargebee", 400, "param_wrong_value", "email : invalid email format", "email", "POST", "customers"
    )
    assert str(e) == (
        "chargebee POST customers failed: HTTP 400, param_wrong_value, param 'email': "
        "email : invalid email format"
    )
    assert e.field == e.param == "email" and e.errors == [("email", "email : invalid email format")]
    assert not e.retryable


def test_message_is_one_short_line() -> None:
    e = ApiError("customcrm", 500, None, "line1\nline2\r\n\x1b[31mred" + "x" * 1000, None, "GET", "contacts")
    text = str(e)
    assert "\n" not in text and "\r" not in text and "\x1b" not in text
    assert len(e.message) <= 300 and e.message.endswith("…")


def test_short_message() -> None:
    assert short_message(None) == ""
    assert short_message("  a \n b  ") == "a b"
    assert short_message("abcdef", limit=4) == "abc…"


def test_transport_error_text() -> None:
    e = TransportError("chargebee", "connect timeout", method="GET", path="customers/{id}", sent=False)
    assert str(e) == "chargebee GET customers/{id} failed: connect timeout (before the request was sent)"
    assert e.retryable and e.status is None
    assert "no response" in str(TransportError("customcrm", "read timeout"))


def test_errors_pickle() -> None:
    for e in (
        Conflict("chargebee", 400, "duplicate_entry", "exists", "id", "POST", "customers"),
        RateLimited("chargebee", 429, "api_request_limit_exceeded", "slow down", retry_after=60.0),
        ValidationError("customcrm", 422, "validation", "bad", "Email", errors=[("Email", "bad")]),
        TransportError("customcrm", "read timeout", method="GET", path="contacts"),
    ):
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is type(e) and str(back) == str(e) and back.__dict__ == e.__dict__
