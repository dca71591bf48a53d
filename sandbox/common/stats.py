"""Thread-safe request counters for ``GET /_sandbox/stats``.

Tests and benchmarks assert on how many calls a sync made (e.g. "a converged run writes
nothing", "we stayed under the rate budget"), so each sandbox counts requests by
method, path template (``/api/v2/customers/{id}``) and outcome, plus named counters
(injected faults, 429s, idempotent replays).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class RequestStats:
    """Counts requests by ``(method, template, status)`` plus free-form named counters.

    ``status`` is an int HTTP status or a string outcome for requests that never got
    one (``"dropped"``, ``"hang"``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str, str]] = Counter()
        self._counters: Counter[str] = Counter()

    def record(self, method: str, template: str, status: int | str) -> None:
        with self._lock:
            self._requests[(method.upper(), template, str(status))] += 1

    def incr(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[name] += amount

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._counters.clear()

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready view.

        ``requests`` is a list of ``{"method", "path", "status", "count"}``; ``by_endpoint``
        maps ``"METHOD template"`` to ``{status: count}``; ``by_status`` maps status to
        count; ``total`` counts every request; ``counters`` holds the named counters.
        """
        with self._lock:
            items = sorted(self._requests.items())
            counters = dict(self._counters)
        by_endpoint: dict[str, dict[str, int]] = {}
        by_status: Counter[str] = Counter()
        total = 0
        for (method, template, status), count in items:
            by_endpoint.setdefault(f"{method} {template}", {})[status] = count
            by_status[status] += count
            total += count
        return {
            "total": total,
            "requests": [
                {"method": m, "path": t, "status": int(s) if s.isdigit() else s, "count": c}
                for (m, t, s), c in items
            ],
            "by_endpoint": by_endpoint,
            "by_status": dict(by_status),
            "counters": counters,
        }
