"""Progress lines of a step that handles records one by one (extract, upsert).

``done/total, records per minute, seconds waited for the rate budget, time left`` at a
steady cadence, not per record (the wording: crmsync.flows.summary.progress_line).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crmsync.hooks._http import ApiHook

#: the progress lines (a child of ``crmsync``: they are in the task log; ``make run`` prints them)
progress_log = logging.getLogger("crmsync.progress")

#: a progress line every this many seconds or records, whichever comes first (and a final one)
PROGRESS_EVERY_SECONDS = 10.0
PROGRESS_EVERY_RECORDS = 1000


class Progress:
    """Logs ``done/total, records per minute, seconds waited for the rate budget, time
    left`` at a steady cadence, not per record (see crmsync.flows.summary.progress_line)."""

    def __init__(
        self, what: str, total: int | None = None, waited: Callable[[], float] | None = None
    ) -> None:
        self.what, self.total, self.done = what, total, 0
        self.waited = waited
        self.logged = 0
        self.start = self.last = time.monotonic()

    def add(self, n: int = 1) -> None:
        self.done += n
        t = time.monotonic()
        if t - self.last >= PROGRESS_EVERY_SECONDS or self.done - self.logged >= PROGRESS_EVERY_RECORDS:
            self.last, self.logged = t, self.done
            self.log()

    def line(self) -> str:
        from crmsync.flows.summary import progress_line

        waited = self.waited() if self.waited is not None else None
        return progress_line(self.what, self.done, self.total, time.monotonic() - self.start, waited)

    def log(self) -> None:
        progress_log.info("%s", self.line())


def timed_budget(hook: ApiHook) -> Callable[[], float] | None:
    """The seconds ``hook`` has waited for its rate budget since now (the hook counts them
    per request); None for a hook that does not count."""
    start = getattr(hook, "budget_waited", None)
    if start is None:
        return None
    return lambda: float(hook.budget_waited) - start
