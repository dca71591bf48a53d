"""Retry predicate, Retry-After parsing and the tenacity policy."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import requests
from crmsync.hooks.errors import (
    ApiError,
    AuthError,
    Conflict,
    NotFound,
    PreconditionFailed,
    RateLimited,
    ServerError,
    TransportError,
    ValidationError,
)
from crmsync.hooks.retry import (
    RetryPolicy,
    call_with_retry,
    classify_requests_exception,
    is_retryable,
    parse_retry_after,
)
from urllib3.exceptions import NewConnectionError, ProtocolError

NOW = 1_700_000_000.0


def err(cls: type[ApiError], status: int, **kw: Any) -> ApiError:
    return cls("chargebee", status, "code", "msg", None, "GET", "customers", **kw)


# ------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("30", 30.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("-5", 0.0),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        ("99999999999", None),  # an epoch timestamp, not a delay
    ],
)
def test_parse_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=lambda: NOW) == expected


def test_parse_retry_after_http_date() -> None:
    when = datetime.fromtimestamp(NOW, UTC) + timedelta(seconds=45)
    assert parse_retry_after(format_datetime(when, usegmt=True), now=lambda: NOW) == pytest.approx(45.0)
    # RFC 850 and asctime forms are valid HTTP dates too.
    assert parse_retry_after(when.strftime("%A, %d-%b-%y %H:%M:%S GMT"), now=lambda: NOW) == pytest.approx(45)
    assert parse_retry_after(when.strftime("%a %b %d %H:%M:%S %Y"), now=lambda: NOW) == pytest.approx(45)


def test_parse_retry_after_date_in_the_past_is_zero() -> None:
    past = datetime.fromtimestamp(NOW, UTC) - timedelta(minutes=5)
    assert parse_retry_after(format_datetime(past, usegmt=True), now=lambda: NOW) == 0.0


# --------------------------------------------------------------- predicate


@pytest.mark.parametrize(
    ("exc", "safe", "unsafe"),
    [
        (err(RateLimited, 429), True, True),  # 429: the server did not process it
        (err(ServerError, 500), True, False),  # may have been applied
        (err(ServerError, 503), True, False),
        (TransportError("chargebee", "connect timeout", sent=False), True, True),
        (TransportError("chargebee", "read timeout", sent=True), True, False),
        (err(ValidationError, 400), False, False),
        (err(AuthError, 401), False, False),
        (err(NotFound, 404), False, False),
        (err(Conflict, 400), False, False),
        (err(PreconditionFailed, 412), False, False),
        (err(ApiError, 418), False, False),
        (requests.exceptions.ConnectTimeout(), True, True),
        (requests.exceptions.ReadTimeout(), True, False),
        (requests.exceptions.ConnectionError(), True, False),
        (ValueError("bug"), False, False),
    ],
)
def test_is_retryable(exc: BaseException, safe: bool, unsafe: bool) -> None:
    assert is_retryable(exc, replay_safe=True) is safe
    assert is_retryable(exc, replay_safe=False) is unsafe


def test_retryable_property() -> None:
    assert err(RateLimited, 429).retryable and err(ServerError, 502).retryable
    assert TransportError("customcrm", "x").retryable
    assert not any(e.retryable for e in (err(ValidationError, 422), err(NotFound, 404), err(AuthError, 403)))


def test_classify_requests_exceptions() -> None:
    refused = requests.exceptions.ConnectionError(
        requests.packages.urllib3.exceptions.MaxRetryError(  # type: ignore[attr-defined]
            None,
            "/x",
            NewConnectionError(None, "refused"),  # type: ignore[arg-type]
        )
    )
    assert classify_requests_exception(refused) == ("connection failed (NewConnectionError)", False)
    dropped = requests.exceptions.ConnectionError(ProtocolError("Connection aborted."))
    assert classify_requests_exception(dropped)[1] is True
    assert classify_requests_exception(requests.exceptions.ConnectTimeout()) == ("connect timeout", False)
    assert classify_requests_exception(requests.exceptions.ReadTimeout()) == ("read timeout", True)


# ------------------------------------------------------------------ policy


class Flaky:
    """Raises the given errors in turn, then returns "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def run(fn: Flaky, policy: RetryPolicy, *, replay_safe: bool = True, logger: Any = None) -> str:
    return call_with_retry(
        fn,
        policy,
        replay_safe=replay_safe,
        what="chargebee GET customers",
        logger=logger or logging.getLogger("test"),
    )


def test_retries_5xx_then_succeeds(sleeps: Any) -> None:
    policy = RetryPolicy(sleep=sleeps, rng=lambda: 1.0)
    fn = Flaky(err(ServerError, 500), err(ServerError, 502), err(ServerError, 503))
    assert run(fn, policy) == "ok"
    assert fn.calls == 4
    assert sleeps.calls == [1.0, 2.0, 4.0]  # exponential ceilings; rng=1.0 takes the ceiling


def test_full_jitter_is_bounded_by_ceiling_and_max_wait() -> None:
    policy = RetryPolicy(base_wait=1.0, max_wait=60.0, rng=lambda: 0.999)
    assert [round(policy.backoff(n), 2) for n in (1, 2, 3, 7, 8, 100)] == [1.0, 2.0, 4.0, 59.94, 59.94, 59.94]
    assert RetryPolicy(rng=lambda: 0.0).backoff(5) == 0.0


def test_bounded_attempts(sleeps: Any) -> None:
    policy = RetryPolicy(sleep=sleeps, rng=lambda: 0.1)
    fn = Flaky(*[err(ServerError, 500) for _ in range(10)])
    with pytest.raises(ServerError):
        run(fn, policy)
    assert fn.calls == 6  # contract default
    assert len(sleeps.calls) == 5


def test_bounded_total_wait(sleeps: Any) -> None:
    policy = RetryPolicy(max_attempts=20, max_total_wait=10.0, sleep=sleeps, rng=lambda: 1.0)
    fn = Flaky(*[err(ServerError, 500) for _ in range(30)])
    with pytest.raises(ServerError):
        run(fn, policy)
    assert sum(sleeps.calls) <= 10.0
    assert sleeps.calls == [1.0, 2.0, 4.0]  # the next (8 s) would pass the total


def test_honours_retry_after(sleeps: Any) -> None:
    policy = RetryPolicy(sleep=sleeps, rng=lambda: 0.0)
    fn = Flaky(err(RateLimited, 429, retry_after=17.0), err(ServerError, 503, retry_after=2.0))
    assert run(fn, policy) == "ok"
    assert sleeps.calls == [17.0, 2.0]


def test_retry_after_longer_than_max_wait_gives_up(sleeps: Any) -> None:
    policy = RetryPolicy(max_wait=60.0, sleep=sleeps)
    fn = Flaky(err(RateLimited, 429, retry_after=3600.0))
    with pytest.raises(RateLimited) as info:
        run(fn, policy)
    assert fn.calls == 1 and sleeps.calls == []
    assert info.value.retry_after == 3600.0


def test_4xx_not_retried(sleeps: Any) -> None:
    fn = Flaky(err(ValidationError, 400))
    with pytest.raises(ValidationError):
        run(fn, RetryPolicy(sleep=sleeps))
    assert fn.calls == 1


def test_unsafe_write_not_replayed_after_ambiguous_failure(sleeps: Any) -> None:
    fn = Flaky(err(ServerError, 500))
    with pytest.raises(ServerError):
        run(fn, RetryPolicy(sleep=sleeps), replay_safe=False)
    assert fn.calls == 1
    fn = Flaky(err(RateLimited, 429, retry_after=1.0), TransportError("c", "connect timeout", sent=False))
    assert run(fn, RetryPolicy(sleep=sleeps), replay_safe=False) == "ok"


def test_one_log_line_per_retry_without_body(sleeps: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="test")
    fn = Flaky(err(ServerError, 502), TransportError("chargebee", "read timeout"))
    run(fn, RetryPolicy(sleep=sleeps, rng=lambda: 0.5))
    lines = [r.getMessage() for r in caplog.records if r.name == "test"]
    assert lines == [
        "chargebee GET customers: HTTP 502 code; retry 2/6 in 0.5 s",
        "chargebee GET customers: read timeout; retry 3/6 in 1.0 s",
    ]


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(max_wait=-1)
