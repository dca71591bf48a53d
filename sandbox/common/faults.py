"""Seeded, replayable fault injection for sandbox HTTP servers.

The sync must survive a flaky network and a flaky API: 5xx answers, surprise 429s,
slow answers, requests that hang past the client's timeout, connections closed with no
answer, and - the nasty one - writes that were applied but whose answer was lost (the
client cannot tell whether to retry). :class:`FaultInjector` decides, per request, which
of these to simulate. Decisions come from ``random.Random(seed)``, one draw per request,
so a sequential client sees the same faults on every run (concurrent clients see the
same multiset, in an order that depends on thread scheduling).

Configuration (JSON, e.g. ``POST /_sandbox/faults`` or an env var such as
``CB_SANDBOX_FAULTS``)::

    {"seed": 1,
     "error_rate": 0.1, "statuses": [500, 502, 503],   # answer one of these instead
     "rate_429": 0.0,                                  # answer 429 (no site block)
     "latency_ms": 0, "latency_jitter_ms": 0,          # added to every matching request
     "hang_rate": 0.0, "hang_seconds": 65,             # sleep, then close with no answer
     "drop_rate": 0.0,                                 # close the socket, no answer
     "lost_response_rate": 0.0,                        # apply the write, then lose the answer
     "lost_response_mode": "mixed",                    # "500" | "drop" | "mixed"
     "methods": null,                                  # e.g. ["POST"]: only these methods
     "paths": null,                                    # e.g. ["/customers"]: path substrings
     "max_faults": null}                               # stop injecting after N faults

Unknown keys are kept in :attr:`FaultConfig.extra` so a server can add its own knobs
(the Chargebee sandbox reads ``list_lag_seconds`` from there).
"""

from __future__ import annotations

import json
import os
import random
import threading
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

FaultKind = Literal["none", "error", "rate_429", "hang", "drop", "lost_response"]

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class FaultConfig:
    """What to inject and how often; rates are probabilities in ``[0, 1]``."""

    seed: int | None = None
    error_rate: float = 0.0
    statuses: list[int] = field(default_factory=lambda: [500, 502, 503])
    rate_429: float = 0.0
    latency_ms: int = 0
    latency_jitter_ms: int = 0
    hang_rate: float = 0.0
    hang_seconds: float = 65.0
    drop_rate: float = 0.0
    lost_response_rate: float = 0.0
    lost_response_mode: str = "mixed"
    methods: list[str] | None = None
    paths: list[str] | None = None
    max_faults: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FaultConfig:
        """Build from JSON; validates types so a typo fails loudly instead of silently."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = dict(data.pop("extra", {}) or {})
        for key, value in data.items():
            if key in known:
                kwargs[key] = value
            else:
                extra[key] = value
        cfg = cls(**kwargs, extra=extra)
        cfg.validate()
        return cfg

    @classmethod
    def from_env(cls, var: str) -> FaultConfig:
        """Parse the JSON in environment variable ``var``; empty/unset -> no faults."""
        raw = os.environ.get(var, "").strip()
        return cls.from_dict(json.loads(raw)) if raw else cls()

    def validate(self) -> None:
        for name in ("error_rate", "rate_429", "hang_rate", "drop_rate", "lost_response_rate"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
            setattr(self, name, value)
        total = self.error_rate + self.rate_429 + self.hang_rate + self.drop_rate + self.lost_response_rate
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault rates add up to {total:.3f} > 1")
        self.statuses = [int(s) for s in (self.statuses or [500])]
        if any(not 400 <= s <= 599 for s in self.statuses):
            raise ValueError("statuses must be HTTP error codes (4xx/5xx)")
        self.latency_ms = int(self.latency_ms)
        self.latency_jitter_ms = int(self.latency_jitter_ms)
        if self.latency_ms < 0 or self.latency_jitter_ms < 0:
            raise ValueError("latency must be >= 0")
        self.hang_seconds = float(self.hang_seconds)
        if self.lost_response_mode not in ("500", "drop", "mixed"):
            raise ValueError("lost_response_mode must be '500', 'drop' or 'mixed'")
        if self.methods is not None:
            self.methods = [m.upper() for m in self.methods]
        if self.max_faults is not None:
            self.max_faults = int(self.max_faults)
        if self.seed is not None:
            self.seed = int(self.seed)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        data.update(extra)
        return data


@dataclass(frozen=True)
class FaultDecision:
    """What to do with one request.

    ``kind``: ``none`` (serve normally), ``error`` (answer ``status``), ``rate_429``,
    ``hang`` (wait ``hang_seconds`` then close), ``drop`` (close now), ``lost_response``
    (serve, then answer 500 or close per ``lost_mode``). ``latency_s`` applies first in
    every case.
    """

    kind: FaultKind = "none"
    status: int = 0
    latency_s: float = 0.0
    hang_seconds: float = 0.0
    lost_mode: str = "500"


class FaultInjector:
    """Applies a :class:`FaultConfig`; one RNG draw per matching request."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._config = FaultConfig()
        self._rng = random.Random(0)
        self._injected = 0
        self.counts: dict[str, int] = {}
        self.configure(config or FaultConfig())

    @property
    def config(self) -> FaultConfig:
        return self._config

    def configure(self, config: FaultConfig | dict[str, Any]) -> FaultConfig:
        """Replace the configuration and re-seed, so the sequence replays from the start."""
        cfg = config if isinstance(config, FaultConfig) else FaultConfig.from_dict(config)
        cfg.validate()
        with self._lock:
            self._config = cfg
            self._rng = random.Random(cfg.seed if cfg.seed is not None else 0)
            self._injected = 0
            self.counts = {}
        return cfg

    def _matches(self, cfg: FaultConfig, method: str, path: str) -> bool:
        if cfg.methods is not None and method.upper() not in cfg.methods:
            return False
        return not (cfg.paths is not None and not any(p in path for p in cfg.paths))

    def decide(self, method: str, path: str) -> FaultDecision:
        """Draw the fault for one request (``path`` without the query string)."""
        with self._lock:
            cfg = self._config
            if not self._matches(cfg, method, path):
                return FaultDecision()
            latency = cfg.latency_ms / 1000.0
            if cfg.latency_jitter_ms:
                latency += self._rng.uniform(0, cfg.latency_jitter_ms) / 1000.0
            if cfg.max_faults is not None and self._injected >= cfg.max_faults:
                return FaultDecision(latency_s=latency)
            u = self._rng.random()
            kind: FaultKind = "none"
            edge = 0.0
            for name, rate in (
                ("hang", cfg.hang_rate),
                ("drop", cfg.drop_rate),
                ("rate_429", cfg.rate_429),
                ("error", cfg.error_rate),
                ("lost_response", cfg.lost_response_rate),
            ):
                edge += rate
                if rate > 0 and u < edge:
                    kind = name  # type: ignore[assignment]
                    break
            if kind == "lost_response" and method.upper() not in WRITE_METHODS:
                kind = "none"  # nothing to lose on a read
            status = 0
            lost_mode = "500"
            if kind == "error":
                status = cfg.statuses[self._rng.randrange(len(cfg.statuses))]
            elif kind == "lost_response":
                lost_mode = cfg.lost_response_mode
                if lost_mode == "mixed":
                    lost_mode = "500" if self._rng.random() < 0.5 else "drop"
            if kind != "none":
                self._injected += 1
                self.counts[kind] = self.counts.get(kind, 0) + 1
            return FaultDecision(kind, status, latency, cfg.hang_seconds, lost_mode)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            data = self._config.to_dict()
            data["injected"] = dict(self.counts)
            return data
