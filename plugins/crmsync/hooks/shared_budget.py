"""A request budget shared by every worker process of a site, leased from a database.

:class:`~crmsync.hooks.budget.RateBudget` keeps one process under N requests a minute,
but Chargebee's N is per *site*: six flow DAGs running at once on LocalExecutor (or
Celery workers on several machines), each with a thread pool of writers, would send up
to six times N and get the whole site blocked for a minute. :class:`SharedRateBudget`
takes its tokens from a shared store instead (the link store's database, see
:mod:`crmsync.store.rate_budget`, which holds the sliding-window arithmetic and the
guarantee: at most ``cap`` requests reach the server in any ``window`` seconds).

To keep the database cost low, a process does not ask per request. It *leases* a small
block of tokens (at most ``max_lease``: 5 or 5 % of N, whichever is larger), hands them
to its threads without touching the database, and stops using them ``lease_seconds``
after it asked (the window accounting assumes that). The block size adapts: it doubles
while blocks run out before they expire and shrinks to what was used when they do not;
unused tokens are given back with the next lease. When the window is full the database
says when tokens free up, and the process sleeps until then (one caller asks, the
others wait for its answer), so waiting costs about one query per process per
``bucket_seconds``.

``penalise`` (a 429) pauses this process at once and records ``blocked_until`` in the
store, so every other process stops at its next lease, within ``lease_seconds``.

Use :func:`crmsync.hooks.budget.use_shared_budget` to make every hook of a process use
it; nothing in the hooks changes.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, Unpack

from crmsync.engine.lease import LeaseTerms
from crmsync.hooks.budget import RateBudget, RateLimiter

log = logging.getLogger("crmsync.budget")

#: Chargebee counts requests per minute.
DEFAULT_WINDOW_SECONDS = 60.0
#: Stay this fraction below the published limit (clock and latency surprises, other clients).
DEFAULT_MARGIN = 0.05


class LeaseAnswer(Protocol):
    """A store's answer: ``granted`` tokens counted in row ``bucket``, or ``wait`` seconds."""

    @property
    def granted(self) -> int: ...

    @property
    def bucket(self) -> int | None: ...

    @property
    def wait(self) -> float: ...


class LeaseSource(Protocol):
    """Where leases come from (:class:`crmsync.store.rate_budget.RateBudgetStore`)."""

    def lease(self, site: str, **terms: Unpack[LeaseTerms]) -> LeaseAnswer: ...

    def block(self, site: str, seconds: float, give_back: tuple[int, int] | None = None) -> float: ...


@dataclass(frozen=True)
class SharedBudgetSettings:
    """Timing of the shared budget; all derived values scale with ``window_seconds``.

    :param window_seconds: the server's window (60 for Chargebee; shorter in tests).
    :param margin: fraction of N kept unused (default 5 %).
    :param slack_seconds: latency variance between sending and the server counting
        (default ``window / 60``, 1 s for a minute).
    :param lease_seconds: how long a process may use a lease (default ``window / 60``).
    :param bucket_seconds: resolution of the shared counts (default ``window / 120``).
    :param max_lease: largest block leased at once (default ``max(5, ceil(5 % of N))``).
    """

    window_seconds: float = DEFAULT_WINDOW_SECONDS
    margin: float = DEFAULT_MARGIN
    slack_seconds: float | None = None
    lease_seconds: float | None = None
    bucket_seconds: float | None = None
    max_lease: int | None = None

    def __post_init__(self) -> None:
        if self.window_seconds <= 0:
            raise ValueError("window_seconds must be > 0")
        if not 0 <= self.margin < 1:
            raise ValueError("margin must be in [0, 1)")
        for name in ("slack_seconds", "lease_seconds", "bucket_seconds"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.max_lease is not None and self.max_lease < 1:
            raise ValueError("max_lease must be >= 1")

    @property
    def slack(self) -> float:
        return self.window_seconds / 60 if self.slack_seconds is None else self.slack_seconds

    @property
    def lease(self) -> float:
        return self.window_seconds / 60 if self.lease_seconds is None else self.lease_seconds

    @property
    def bucket(self) -> float:
        value = self.window_seconds / 120 if self.bucket_seconds is None else self.bucket_seconds
        return max(0.001, value)

    @property
    def span(self) -> float:
        """The sliding window the store enforces: ``window + lease + slack``."""
        return self.window_seconds + self.lease + self.slack

    def cap(self, limit: int) -> int:
        """Tokens allowed per window for a published limit of ``limit``."""
        return max(1, math.floor(limit * (1 - self.margin) + 1e-9))

    def lease_size(self, limit: int, burst: int | None) -> int:
        size = self.max_lease if self.max_lease is not None else max(5, math.ceil(limit * 0.05))
        if burst is not None:
            size = min(size, burst)
        return max(1, min(size, self.cap(limit)))


class SharedRateBudget:
    """Thread-safe limiter for one site whose budget is shared through a :class:`LeaseSource`.

    :param source: the shared store.
    :param site: the budget key (``chargebee:acme-test.chargebee.com/api/v2``).
    :param rate_per_minute: the site's published limit N (per ``settings.window_seconds``).
    :param burst: the connection's ``rate_limit_burst``, which also caps the lease size.
    :param clock: this process's monotonic clock; :param sleep: injectable for tests.
    """

    def __init__(
        self,
        source: LeaseSource,
        site: str,
        rate_per_minute: float,
        *,
        burst: int | None = None,
        settings: SharedBudgetSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_per_minute < 1:
            raise ValueError("a shared budget needs rate_per_minute >= 1")
        self.source = source
        self.site = site
        self.settings = settings or SharedBudgetSettings()
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()  # local state, never held across I/O or sleep
        self._fetch = threading.Lock()  # one database call at a time per process and site
        self._burst = burst
        self._set_limit(int(rate_per_minute))
        self._tokens = 0
        self._lease_size = 0
        self._lease_bucket: int | None = None
        self._expires = float("-inf")
        self._not_before = float("-inf")
        self._next_size = 1
        self._demand = 0
        #: Counters for logs and tests: database calls, tokens leased/handed out/given back.
        self.stats = {"leases": 0, "refusals": 0, "leased": 0, "handed_out": 0, "given_back": 0, "blocks": 0}

    def _set_limit(self, limit: int) -> None:
        self.limit = limit
        self.cap = self.settings.cap(limit)
        self.max_lease = self.settings.lease_size(limit, self._burst)

    def __repr__(self) -> str:
        return (
            f"SharedRateBudget({self.site!r}, limit={self.limit}/{self.settings.window_seconds:g}s, "
            f"cap={self.cap}, source={self.source!r})"
        )

    # ----------------------------------------------------------------- acquire

    def _take_locked(self, now: float, cost: int) -> bool:
        if now < self._not_before or now >= self._expires or self._tokens < cost:
            return False
        self._tokens -= cost
        self.stats["handed_out"] += cost
        return True

    def _retire_locked(self) -> tuple[int, int] | None:
        """End the current lease; return ``(bucket, unused)`` to give back, and adapt the size."""
        if self._lease_bucket is None:
            return None
        left, used = self._tokens, self._lease_size - self._tokens
        # Ran out: ask for more next time; expired with tokens left: ask for what was used.
        self._next_size = min(self.max_lease, max(1, 2 * used if left == 0 else used))
        bucket = self._lease_bucket
        self._tokens, self._lease_size, self._lease_bucket = 0, 0, None
        self._expires = float("-inf")
        if left > 0:
            self.stats["given_back"] += left
            return bucket, left
        return None

    def _wait(self, seconds: float, now: float, deadline: float | None) -> None:
        if deadline is not None and now + seconds > deadline:
            raise TimeoutError(
                f"shared rate budget of {self.site}: next slot in {seconds:.1f} s exceeds the timeout"
            )
        self._sleep(seconds)

    def acquire(self, cost: int = 1, timeout: float | None = None) -> float:
        """Block until ``cost`` requests may be sent; return the seconds waited.

        :raises TimeoutError: when the wait would exceed ``timeout`` (nothing is consumed).
        :raises crmsync.store.rate_budget.SharedBudgetError: the store is unusable.
        """
        if cost < 1:
            raise ValueError("cost must be >= 1")
        if cost > self.cap:
            raise ValueError(f"cost {cost} exceeds the budget of {self.cap} per window")
        start = self._clock()
        deadline = None if timeout is None else start + timeout
        with self._lock:
            if self._take_locked(start, cost):
                return 0.0
            self._demand += cost
        try:
            while True:
                with self._lock:
                    now = self._clock()
                    if self._take_locked(now, cost):
                        return now - start
                    pause = self._not_before - now
                if pause > 0:
                    self._wait(pause, now, deadline)
                    continue
                with self._fetch:
                    with self._lock:
                        asked = self._clock()
                        if self._take_locked(asked, cost):
                            return asked - start
                        if self._not_before > asked:
                            continue  # another caller learnt that we must wait
                        give_back = self._retire_locked()
                        want = max(cost, min(self.max_lease, max(self._next_size, self._demand)))
                    answer = self.source.lease(
                        self.site,
                        want=want,
                        need=cost,
                        cap=self.cap,
                        span=self.settings.span,
                        bucket_seconds=self.settings.bucket,
                        give_back=give_back,
                    )
                    with self._lock:
                        received = self._clock()
                        if answer.granted:
                            self.stats["leases"] += 1
                            self.stats["leased"] += answer.granted
                            self._tokens = self._lease_size = answer.granted
                            self._lease_bucket = answer.bucket
                            # From when we *asked*: the store stamped the lease no earlier.
                            self._expires = asked + self.settings.lease
                        else:
                            self.stats["refusals"] += 1
                            # From when we *received*: the store's clock read no later.
                            self._not_before = max(self._not_before, received + answer.wait)
        finally:
            with self._lock:
                self._demand -= cost

    # ---------------------------------------------------------------- penalise

    def penalise(self, retry_after: float) -> None:
        """The server said 429: pause this process now and every other one at its next lease."""
        seconds = max(0.0, retry_after)
        with self._lock:
            now = self._clock()
            self._not_before = max(self._not_before, now + seconds)
            give_back = self._retire_locked()
            self.stats["blocks"] += 1
        log.warning("%s answered 429: pausing every worker of this site for %.0f s", self.site, seconds)
        try:
            self.source.block(self.site, seconds, give_back)
        except Exception as exc:
            # This process still pauses; the others keep their own budget accounting.
            log.warning("could not share the pause of %s through the store: %s", self.site, exc)

    def tighten(self, rate_per_minute: float, burst: int | None = None) -> None:
        """Lower the limit (and lease size) if the new values are stricter; never loosen."""
        if rate_per_minute < 1:
            return
        with self._lock:
            if burst is not None:
                self._burst = burst if self._burst is None else min(self._burst, burst)
            self._set_limit(min(self.limit, int(rate_per_minute)))


class SharedBudgetFactory:
    """A :data:`~crmsync.hooks.budget.BudgetFactory` handing out :class:`SharedRateBudget` objects.

    A key without a limit (``rate_limit_per_minute: 0``) gets a process-local
    :class:`RateBudget` with no limit: there is nothing to share, so no database cost.
    """

    def __init__(self, source: LeaseSource, settings: SharedBudgetSettings, identity: object) -> None:
        self.source = source
        self.settings = settings
        self.identity = identity

    def __call__(self, key: str, rate_per_minute: float | None, burst: int | None) -> RateLimiter:
        if not rate_per_minute:
            return RateBudget(0)
        return SharedRateBudget(self.source, key, rate_per_minute, burst=burst, settings=self.settings)

    def __repr__(self) -> str:
        return f"SharedBudgetFactory({self.source!r}, {self.settings})"


__all__ = [
    "DEFAULT_MARGIN",
    "DEFAULT_WINDOW_SECONDS",
    "LeaseAnswer",
    "LeaseSource",
    "SharedBudgetFactory",
    "SharedBudgetSettings",
    "SharedRateBudget",
]
