"""Client-side request budget, so a site's rate limit is never breached.

Chargebee allows N requests per minute per *site* (150 on test sites) and punishes a
breach by blocking the whole site for about a minute: every flow and worker then
stalls. Backing off after a 429 is therefore not enough; the hooks must stay under
the limit up front. Every request calls :meth:`RateLimiter.acquire` first.

:class:`RateBudget` is the process-local implementation: a token bucket (smooth rate,
bounded burst) combined with a sliding-window log that guarantees at most N
requests in *any* window of ``window_seconds`` (a token bucket alone allows up to
N + burst in a minute). The default window is slightly longer than the server's
minute to absorb network latency jitter around its minute boundary.

Hooks get their limiter from :func:`get_budget`, keyed by site, so every hook
object, thread and flow of one site in this process shares one bucket. That is not
enough when several processes talk to one site (six flow DAGs at once on
LocalExecutor, Celery workers on several machines): inside an Airflow task,
the task's hooks therefore get a
:class:`~crmsync.hooks.shared_budget.SharedRateBudget`, which leases tokens from the
link store's database (connection ``crmsync_store``) so that every task of every flow
on every worker shares one budget per site. Outside a task (unit tests, scripts) the
process-local budget stays the default; :func:`use_shared_budget` opts a process in.
The task, not the hook, decides: it builds its hooks with ``budget_factory=``
:func:`task_budget_factory` (a hook never opens the link store itself).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    pass

#: Chargebee's limit on test sites and the Starter plan (requests per minute).
DEFAULT_RATE_PER_MINUTE = 150
#: Default burst: enough to start a run briskly, small enough to keep the rate smooth.
DEFAULT_BURST = 10
#: One minute plus a second of slack for latency variance at the server's minute boundary.
DEFAULT_WINDOW_SECONDS = 61.0


@runtime_checkable
class RateLimiter(Protocol):
    """What the hooks need from a request budget. Implementations must be thread-safe."""

    def acquire(self, cost: int = 1, timeout: float | None = None) -> float:
        """Block until ``cost`` requests may be sent; return the seconds waited.

        :raises TimeoutError: when the wait would exceed ``timeout`` (nothing is consumed).
        """
        ...

    def penalise(self, retry_after: float) -> None:
        """The server said 429: pause every caller for ``retry_after`` seconds."""
        ...


class RateBudget:
    """Thread-safe, process-local request budget (token bucket + sliding-window cap).

    :param rate_per_minute: requests allowed per window; ``0``/``None`` means no
        client-side limit (``penalise`` still pauses callers after a 429).
    :param burst: bucket size, i.e. how many requests may go back to back.
    :param window_seconds: the sliding window the hard cap applies to.
    :param clock: monotonic clock, injectable for tests.
    :param sleep: injectable for tests.

    Callers reserve a send time under the lock and sleep outside it, so waiting
    callers are served in arrival order and never hold each other up.
    """

    def __init__(
        self,
        rate_per_minute: float | None = DEFAULT_RATE_PER_MINUTE,
        burst: int | None = None,
        *,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_per_minute is not None and rate_per_minute < 0:
            raise ValueError("rate_per_minute must be >= 0")
        if window_seconds <= 0:
            raise ValueError("window_seconds must be > 0")
        self.rate_per_minute = float(rate_per_minute or 0)
        self.limit = int(self.rate_per_minute)
        if self.rate_per_minute and self.limit < 1:
            raise ValueError("rate_per_minute must be >= 1 (or 0 for no limit)")
        default_burst = min(DEFAULT_BURST, self.limit) if self.limit else DEFAULT_BURST
        self.burst = max(1, int(burst if burst is not None else default_burst))
        if self.limit:
            self.burst = min(self.burst, self.limit)
        self.window_seconds = float(window_seconds)
        self._rate_per_second = self.rate_per_minute / 60.0
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(self.burst)
        self._last = clock()
        self._blocked_until = float("-inf")
        self._sent: deque[float] = deque()  # reserved send times, non-decreasing

    @property
    def unlimited(self) -> bool:
        """True when no client-side rate is configured."""
        return self.limit == 0

    def __repr__(self) -> str:
        return f"RateBudget(rate_per_minute={self.rate_per_minute:g}, burst={self.burst})"

    def _plan(self, now: float, cost: int) -> tuple[float, float]:
        """Return ``(send_at, tokens_after_refill)`` without changing state."""
        send_at = max(now, self._blocked_until)
        if self.unlimited:
            return send_at, self._tokens
        tokens = min(float(self.burst), self._tokens + (now - self._last) * self._rate_per_second)
        if tokens < cost:
            send_at = max(send_at, now + (cost - tokens) / self._rate_per_second)
        if self._sent:
            send_at = max(send_at, self._sent[-1])
            # Oldest reservation that would still be inside the window ending at send_at.
            in_window = [t for t in self._sent if t > send_at - self.window_seconds]
            overflow = len(in_window) + cost - self.limit
            if overflow > 0:
                send_at = max(send_at, in_window[overflow - 1] + self.window_seconds)
        return send_at, tokens

    def acquire(self, cost: int = 1, timeout: float | None = None) -> float:
        if cost < 1:
            raise ValueError("cost must be >= 1")
        if self.limit and cost > self.limit:
            raise ValueError(f"cost {cost} exceeds the budget of {self.limit} per window")
        with self._lock:
            now = self._clock()
            send_at, tokens = self._plan(now, cost)
            wait = send_at - now
            if timeout is not None and wait > timeout:
                raise TimeoutError(f"rate budget: next slot in {wait:.1f} s exceeds timeout {timeout:.1f} s")
            if not self.unlimited:
                self._tokens = tokens - cost
                self._last = now
                horizon = send_at - self.window_seconds
                while self._sent and self._sent[0] <= horizon:
                    self._sent.popleft()
                self._sent.extend([send_at] * cost)
        if wait > 0:
            self._sleep(wait)
        return max(0.0, wait)

    def tighten(self, rate_per_minute: float, burst: int | None = None) -> None:
        """Lower the rate (and burst) if the new values are stricter; never loosen."""
        if rate_per_minute < 1:
            return
        with self._lock:
            if self.unlimited or rate_per_minute < self.rate_per_minute:
                self.rate_per_minute = float(rate_per_minute)
                self.limit = int(rate_per_minute)
                self._rate_per_second = self.rate_per_minute / 60.0
            new_burst = min(self.burst, self.limit, burst if burst is not None else self.burst)
            self.burst = max(1, new_burst)
            self._tokens = min(self._tokens, float(self.burst))

    def penalise(self, retry_after: float) -> None:
        with self._lock:
            now = self._clock()
            self._blocked_until = max(self._blocked_until, now + max(0.0, retry_after))
            # The site is blocked: a full bucket must not burst the moment it reopens.
            self._tokens = min(self._tokens, 0.0)
            self._last = now


@runtime_checkable
class _Tightens(Protocol):
    def tighten(self, rate_per_minute: float, burst: int | None = None) -> None: ...


BudgetFactory = Callable[[str, float | None, int | None], RateLimiter]
"""``factory(key, rate_per_minute, burst) -> RateLimiter``."""

log = logging.getLogger("crmsync.budget")


def local_factory(key: str, rate_per_minute: float | None, burst: int | None) -> RateLimiter:
    return RateBudget(rate_per_minute, burst)


_registry_lock = threading.Lock()
#: Limiters by (factory, key): a process that builds hooks both inside and outside a
#: task (``dag.test()`` in a test session) never mixes a shared and a local limiter.
_registry: dict[tuple[object, str], RateLimiter] = {}
_factory: BudgetFactory = local_factory


def set_budget_factory(factory: BudgetFactory | None) -> None:
    """Plug in another limiter implementation; ``None`` restores the default.

    The default is the process-local :class:`RateBudget`; a task's hooks get the shared
    budget through :func:`task_budget_factory` unless one was set here. Limiters already handed out
    stay in use; call :func:`reset_budgets` to drop them.
    """
    global _factory
    with _registry_lock:
        _factory = factory or local_factory


def budget_factory() -> BudgetFactory:
    """The process's factory: the one :func:`set_budget_factory` or :func:`use_shared_budget`
    set, else the process-local :class:`RateBudget`. A hook uses it unless it was given one."""
    with _registry_lock:
        return _factory


def get_budget(
    key: str, rate_per_minute: float | None, burst: int | None = None, *, factory: BudgetFactory | None = None
) -> RateLimiter:
    """Return the limiter for ``key`` (e.g. ``"chargebee:acme-test.chargebee.com/api/v2"``).

    ``factory`` makes it (a task passes :func:`task_budget_factory`'s, which shares it with
    every other task and worker through the link store's database); without one, the
    process's :func:`budget_factory` (process-local unless :func:`use_shared_budget` or
    :func:`set_budget_factory` said otherwise).

    The first caller's settings create it; later callers share it. If a later caller
    asks for a *lower* rate, the shared limiter is tightened in place (never loosened),
    because exceeding a site's limit costs far more than running slower.
    """
    if factory is None:
        factory = budget_factory()
    with _registry_lock:
        existing = _registry.get((factory, key))
        if existing is None:
            existing = factory(key, rate_per_minute, burst)
            _registry[(factory, key)] = existing
        elif isinstance(existing, _Tightens) and rate_per_minute:
            existing.tighten(rate_per_minute, burst)
        return existing


def reset_budgets() -> None:
    """Forget every limiter handed out (tests, or after :func:`set_budget_factory`)."""
    with _registry_lock:
        _registry.clear()


__all__ = [
    "DEFAULT_RATE_PER_MINUTE",
    "BudgetFactory",
    "RateBudget",
    "RateLimiter",
    "budget_factory",
    "get_budget",
    "reset_budgets",
    "set_budget_factory",
]
