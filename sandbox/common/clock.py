"""An adjustable wall clock.

Sandboxes stamp records (``updated_at``), window rate limits and expire blocks by
wall-clock time. Tests must not sleep a minute to see a block expire or an incremental
window move, so every time read goes through a :class:`Clock` whose offset can be moved
forward (``POST /_sandbox/clock``) or whose base function can be replaced entirely.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Clock:
    """Wall clock = ``base() + offset``; thread-safe.

    ``base`` defaults to :func:`time.time`. Pass a custom callable for fully simulated
    time in unit tests.
    """

    def __init__(self, base: Callable[[], float] | None = None, offset: float = 0.0) -> None:
        self._base = base or time.time
        self._offset = float(offset)
        self._lock = threading.Lock()

    def now(self) -> float:
        """Current time in Unix seconds (float)."""
        with self._lock:
            return self._base() + self._offset

    def __call__(self) -> float:
        return self.now()

    @property
    def offset(self) -> float:
        with self._lock:
            return self._offset

    def advance(self, seconds: float) -> float:
        """Move the clock forward (or back, if negative); returns the new offset."""
        with self._lock:
            self._offset += float(seconds)
            return self._offset

    def set_offset(self, seconds: float) -> None:
        with self._lock:
            self._offset = float(seconds)
