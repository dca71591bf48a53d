"""Fault injection and rate limiting for the sandbox API.

The fault settings use the same JSON as the Chargebee sandbox (``POST /_sandbox/faults``)
so one test helper can break both servers the same way. Every API request draws the
same fixed number of random values from a seeded generator, so a given ``seed`` and
request sequence always produce the same faults: flaky-looking tests stay reproducible.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

FaultAction = Literal["none", "error", "rate_429", "drop", "lost_response"]

_RATES = ("error_rate", "rate_429", "hang_rate", "drop_rate", "lost_response_rate")


@dataclass
class FaultConfig:
    """What to break, as posted to ``/_sandbox/faults``."""

    seed: int | None = None
    error_rate: float = 0.0
    statuses: list[int] = field(default_factory=lambda: [500, 502, 503])
    rate_429: float = 0.0
    latency_ms: int = 0
    hang_rate: float = 0.0
    hang_seconds: float = 30.0
    drop_rate: float = 0.0
    lost_response_rate: float = 0.0

    @classmethod
    def from_json(cls, data: Any) -> FaultConfig:
        """Validate a posted body; raises ``ValueError`` naming the bad key."""
        if not isinstance(data, dict):
            raise ValueError("body: must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown fault setting (known: {', '.join(sorted(known))})")
        config = cls()
        for key, value in data.items():
            if key == "seed":
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                    raise ValueError("seed: must be an integer or null")
            elif key == "statuses":
                if (
                    not isinstance(value, list)
                    or not value
                    or not all(isinstance(s, int) and 400 <= s <= 599 for s in value)
                ):
                    raise ValueError("statuses: must be a non-empty list of HTTP error statuses (400-599)")
            elif key in _RATES:
                if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                    raise ValueError(f"{key}: must be a number between 0 and 1")
            elif key in ("latency_ms", "hang_seconds") and (
                isinstance(value, bool) or not isinstance(value, int | float) or value < 0
            ):
                raise ValueError(f"{key}: must be a non-negative number")
            setattr(config, key, value)
        return config

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FaultDecision:
    """What the server should do to one request."""

    action: FaultAction
    status: int = 0
    hang_seconds: float = 0.0
    latency_seconds: float = 0.0
    lost_as_drop: bool = False  # for "lost_response": close the socket instead of a 500


class FaultInjector:
    """Thread-safe, seeded source of fault decisions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.config = FaultConfig()
        self._rng = random.Random(0)
        self.injected: dict[str, int] = {}

    def configure(self, config: FaultConfig) -> None:
        with self._lock:
            self.config = config
            self._rng = random.Random(config.seed)
            self.injected = {}

    def decide(self) -> FaultDecision:
        """Draw the fate of one API request (always six draws, whatever the settings)."""
        with self._lock:
            cfg = self.config
            draws = [self._rng.random() for _ in range(6)]
            status = self._rng.choice(cfg.statuses) if cfg.statuses else 500
            latency = cfg.latency_ms / 1000.0
            hang = cfg.hang_seconds if draws[3] < cfg.hang_rate else 0.0
            if draws[0] < cfg.drop_rate:
                decision = FaultDecision("drop", hang_seconds=hang, latency_seconds=latency)
            elif draws[1] < cfg.rate_429:
                decision = FaultDecision("rate_429", 429, hang, latency)
            elif draws[2] < cfg.error_rate:
                decision = FaultDecision("error", status, hang, latency)
            elif draws[4] < cfg.lost_response_rate:
                decision = FaultDecision("lost_response", 500, hang, latency, lost_as_drop=draws[5] < 0.5)
            else:
                decision = FaultDecision("none", 0, hang, latency)
            for name, hit in ((decision.action, decision.action != "none"), ("hang", hang > 0)):
                if hit:
                    self.injected[name] = self.injected.get(name, 0) + 1
            return decision


class RateLimiter:
    """Sliding one-minute window over accepted API requests; 0 disables it."""

    def __init__(self, per_minute: int = 0) -> None:
        self.per_minute = per_minute
        self._lock = threading.Lock()
        self._stamps: deque[float] = deque()

    def check(self, now: float | None = None) -> int | None:
        """Count one request; return None if allowed, else the ``Retry-After`` seconds."""
        if self.per_minute <= 0:
            return None
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._stamps and self._stamps[0] <= now - 60.0:
                self._stamps.popleft()
            if len(self._stamps) >= self.per_minute:
                return max(1, math.ceil(self._stamps[0] + 60.0 - now))
            self._stamps.append(now)
            return None

    def reset(self) -> None:
        with self._lock:
            self._stamps.clear()
