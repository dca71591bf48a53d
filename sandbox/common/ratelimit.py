"""Per-minute request limit with a block period, like Chargebee's per-site limit.

Chargebee counts API requests per site per minute; past the limit it answers 429 and
keeps the whole site blocked for about a minute. :class:`RateLimiter` reproduces that:
a fixed 60-second window anchored at its first request, a breach opens a block of
``block_seconds`` during which every request is refused, and a fresh window starts when
the block ends (so a short test block does not immediately re-trip on the old count).
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RateDecision:
    """Outcome of :meth:`RateLimiter.check`.

    ``allowed`` False means answer 429 with ``Retry-After: retry_after`` (whole seconds,
    at least 1). ``breach`` is True for the request that tripped the limit.
    """

    allowed: bool
    retry_after: int = 0
    breach: bool = False


class RateLimiter:
    """Fixed-window limiter; ``per_minute <= 0`` disables it. Thread-safe."""

    def __init__(
        self,
        per_minute: int = 0,
        block_seconds: float = 60.0,
        clock: Callable[[], float] | None = None,
        window_seconds: float = 60.0,
    ) -> None:
        import time

        self._clock = clock or time.time
        self._lock = threading.Lock()
        self.per_minute = int(per_minute)
        self.block_seconds = float(block_seconds)
        self.window_seconds = float(window_seconds)
        self._window_start: float | None = None
        self._count = 0
        self._blocked_until = 0.0
        self.breaches = 0
        self.refused = 0
        #: Requests let through, per whole second of the clock: what a test or benchmark
        #: needs to measure throughput against the limit (``accepted_per_second``).
        self._accepted: Counter[int] = Counter()

    def configure(self, per_minute: int | None = None, block_seconds: float | None = None) -> None:
        """Change the limit at runtime (admin endpoint); clears the window and any block."""
        with self._lock:
            if per_minute is not None:
                self.per_minute = int(per_minute)
            if block_seconds is not None:
                self.block_seconds = float(block_seconds)
            self._reset_locked()

    def reset(self) -> None:
        with self._lock:
            self._reset_locked()
            self.breaches = 0
            self.refused = 0
            self._accepted.clear()

    def _reset_locked(self) -> None:
        self._window_start = None
        self._count = 0
        self._blocked_until = 0.0

    def check(self) -> RateDecision:
        """Count one request and decide whether it may proceed."""
        with self._lock:
            now = self._clock()
            if self.per_minute <= 0:
                self._accepted[int(now)] += 1
                return RateDecision(True)
            if now < self._blocked_until:
                self.refused += 1
                return RateDecision(False, max(1, math.ceil(self._blocked_until - now)))
            if self._window_start is None or now >= self._window_start + self.window_seconds:
                self._window_start = now
                self._count = 0
            self._count += 1
            if self._count <= self.per_minute:
                self._accepted[int(now)] += 1
                return RateDecision(True)
            self.breaches += 1
            self.refused += 1
            if self.block_seconds > 0:
                self._blocked_until = now + self.block_seconds
                # The next window opens when the block ends.
                self._window_start = self._blocked_until
                self._count = 0
                return RateDecision(False, max(1, math.ceil(self.block_seconds)), breach=True)
            remaining = self._window_start + self.window_seconds - now
            return RateDecision(False, max(1, math.ceil(remaining)), breach=True)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            now = self._clock()
            return {
                "per_minute": self.per_minute,
                "block_seconds": self.block_seconds,
                "count_in_window": self._count,
                "blocked": now < self._blocked_until,
                "blocked_for_seconds": max(0.0, round(self._blocked_until - now, 3)),
                "breaches": self.breaches,
                "refused": self.refused,
                "accepted_per_second": {str(k): v for k, v in sorted(self._accepted.items())},
            }
