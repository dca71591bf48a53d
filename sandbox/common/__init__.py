"""Generic building blocks shared by the sandbox servers.

Everything here is stdlib only and knows nothing about a particular API, so the
Chargebee and Customcrm sandboxes (and tests) can reuse it:

* :mod:`sandbox.common.clock` - wall clock with an adjustable offset (tests jump ahead).
* :mod:`sandbox.common.faults` - seeded, replayable fault injection (errors, 429s, latency,
  hangs, dropped connections, lost responses).
* :mod:`sandbox.common.ratelimit` - per-minute request limit with a block period.
* :mod:`sandbox.common.jsonstore` - atomic JSON persistence (write temp + fsync + rename).
* :mod:`sandbox.common.stats` - thread-safe request counters.
* :mod:`sandbox.common.httpbase` - ``ThreadingHTTPServer`` base with JSON helpers, connection
  dropping, interruptible sleeps and an in-thread runner for tests.
"""

from sandbox.common.clock import Clock
from sandbox.common.faults import FaultConfig, FaultDecision, FaultInjector
from sandbox.common.jsonstore import atomic_write_json, read_json
from sandbox.common.ratelimit import RateLimiter
from sandbox.common.stats import RequestStats

__all__ = [
    "Clock",
    "FaultConfig",
    "FaultDecision",
    "FaultInjector",
    "RateLimiter",
    "RequestStats",
    "atomic_write_json",
    "read_json",
]
