"""Retry policy shared by the Chargebee and Customcrm hooks.

Like the dbt Cloud and HTTP providers we retry with tenacity, but the predicate and
the waits are ours:

* retried: 429 (after the server's ``Retry-After``), 5xx, connection errors and
  timeouts; never other 4xx, which would fail the same way again;
* a write that may already have been applied (5xx, read timeout, dropped connection)
  is replayed only when replaying cannot duplicate it (``replay_safe``): the hooks
  mark a request replay-safe when it carries an idempotency key or is naturally
  idempotent (GET, PATCH with If-Match, update of an existing record);
* full-jitter exponential backoff (AWS architecture blog), so that the threads and
  workers that failed together do not retry together;
* bounded: at most ``max_attempts`` attempts, no single wait over ``max_wait`` and
  at most ``max_total_wait`` seconds asleep per request. A ``Retry-After`` longer than
  ``max_wait`` is not shortened (that would only earn another 429): we give up and
  raise, and the engine retries the record on the next run.

Each retry logs one line (system, method, path template, status/code, attempt,
wait), never a body.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, TypeVar

import requests
import tenacity

from crmsync.hooks.errors import ApiError, RateLimited, TransportError

T = TypeVar("T")

#: ``Retry-After`` values above this are treated as garbage (a misparsed date, an
#: epoch timestamp) rather than honoured for days.
_MAX_SANE_RETRY_AFTER = 24 * 3600.0


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Parse an HTTP ``Retry-After`` header into seconds from now.

    Accepts delta-seconds (``"30"``, also ``"1.5"``) and an HTTP-date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``). A date in the past gives ``0.0``.
    Returns ``None`` when the header is absent or unparseable, so the caller falls
    back to its own backoff instead of failing on a malformed header.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            # RFC 9110 dates are always GMT; parsedate_to_datetime returns naive for "-0000".
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    seconds = max(0.0, seconds)
    if seconds > _MAX_SANE_RETRY_AFTER:
        return None
    return seconds


def classify_requests_exception(exc: BaseException) -> tuple[str, bool]:
    """Name a ``requests`` failure and tell whether the request may have been sent.

    Returns ``(kind, sent)``. Only the exception's class names are used, never its
    text (which holds the URL with its query string).
    """
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect timeout", False
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "read timeout", True
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error", False
    if isinstance(exc, requests.exceptions.ProxyError):
        return "proxy error", False
    if isinstance(exc, requests.exceptions.ConnectionError):
        # requests wraps urllib3's MaxRetryError(reason=NewConnectionError | ProtocolError ...).
        reason = exc.args[0] if exc.args else None
        inner = getattr(reason, "reason", reason)
        name = type(inner).__name__ if inner is not None else type(exc).__name__
        if name in {"NewConnectionError", "NameResolutionError", "ConnectTimeoutError"}:
            return f"connection failed ({name})", False
        return f"connection error ({name})", True
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection dropped mid-response", True
    if isinstance(exc, requests.exceptions.Timeout):
        return "timeout", True
    return f"transport error ({type(exc).__name__})", True


def is_retryable(exc: BaseException, *, replay_safe: bool = True) -> bool:
    """The retry predicate: may the failed request be sent again?

    :param exc: what the attempt raised.
    :param replay_safe: whether applying the request twice is harmless. When False,
        only failures that prove the server did not process it (429, a connection
        that never opened) are retried.
    """
    if isinstance(exc, RateLimited):
        return True
    if isinstance(exc, TransportError):
        return replay_safe or not exc.sent
    if isinstance(exc, ApiError):
        return exc.retryable and replay_safe
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return replay_safe
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a hook tries before giving up on one request.

    :param max_attempts: attempts including the first (contract default 6).
    :param base_wait: backoff base in seconds; attempt ``n`` waits up to ``base * 2**(n-1)``.
    :param max_wait: cap of a single wait; also the longest ``Retry-After`` honoured.
    :param max_total_wait: cap of the time spent asleep for one request.
    :param sleep: injectable for tests.
    :param rng: injectable for tests (returns a float in [0, 1)).
    """

    max_attempts: int = 6
    base_wait: float = 1.0
    max_wait: float = 60.0
    max_total_wait: float = 300.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)
    rng: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.base_wait < 0 or self.max_wait < 0 or self.max_total_wait < 0:
            raise ValueError("retry waits must be >= 0")

    def backoff(self, attempt: int) -> float:
        """Full-jitter wait after failed attempt number ``attempt`` (1-based)."""
        exponent = min(max(0, attempt - 1), 62)
        ceiling = min(self.max_wait, self.base_wait * float(1 << exponent))
        return float(self.rng()) * ceiling

    def wait_for(self, exc: BaseException | None, attempt: int) -> float:
        """Seconds to wait before the next attempt.

        A server-given ``Retry-After`` is honoured exactly plus up to 10 % jitter (so
        threads released by the same 429 do not all fire in the same millisecond);
        otherwise full-jitter backoff.
        """
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int | float) and retry_after >= 0:
            return float(retry_after) * (1.0 + 0.1 * float(self.rng()))
        return self.backoff(attempt)


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, TransportError):
        return exc.kind
    if isinstance(exc, ApiError):
        text = f"HTTP {exc.status}"
        return f"{text} {exc.code}" if exc.code else text
    return type(exc).__name__ if exc is not None else "unknown error"


def build_retrying(
    policy: RetryPolicy,
    *,
    replay_safe: bool,
    what: str,
    logger: logging.Logger | logging.LoggerAdapter[Any] | Any,
) -> tenacity.Retrying:
    """Build the ``tenacity.Retrying`` for one request.

    :param what: ``"<system> <METHOD> <path template>"`` for the retry log line.
    :param logger: any object with ``.warning`` (a hook's ``self.log``).
    """

    def _retry(state: tenacity.RetryCallState) -> bool:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        return exc is not None and is_retryable(exc, replay_safe=replay_safe)

    def _wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        return policy.wait_for(exc, state.attempt_number)

    def _stop(state: tenacity.RetryCallState) -> bool:
        if state.attempt_number >= policy.max_attempts:
            return True
        exc = state.outcome.exception() if state.outcome is not None else None
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int | float) and retry_after > policy.max_wait:
            return True
        upcoming = float(getattr(state, "upcoming_sleep", 0.0) or 0.0)
        return state.idle_for + upcoming > policy.max_total_wait

    def _before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        upcoming = float(getattr(state, "upcoming_sleep", 0.0) or 0.0)
        logger.warning(
            "%s: %s; retry %d/%d in %.1f s",
            what,
            _describe(exc),
            state.attempt_number + 1,
            policy.max_attempts,
            upcoming,
        )

    return tenacity.Retrying(
        retry=_retry,
        wait=_wait,
        stop=_stop,
        before_sleep=_before_sleep,
        sleep=policy.sleep,
        reraise=True,
    )


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    replay_safe: bool,
    what: str,
    logger: Any,
) -> T:
    """Run ``fn`` under :func:`build_retrying`; re-raise the last error when giving up."""
    retrying = build_retrying(policy, replay_safe=replay_safe, what=what, logger=logger)
    return retrying(fn)


__all__ = [
    "RetryPolicy",
    "build_retrying",
    "call_with_retry",
    "classify_requests_exception",
    "is_retryable",
    "parse_retry_after",
]
