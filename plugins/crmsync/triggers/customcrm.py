"""Customcrm change detection: the flow's list endpoint, ``updated_since`` its watermark,
one small page per poll (:class:`CustomcrmChangeTrigger`).

Each flow reads its own resource, so each flow's trigger polls on its own, every
``change_poll_seconds`` of the Customcrm connection (one request a poll, counted against
the shared rate budget). The sync's own writes come back in the list (they changed after
the watermark) and are skipped by version (:func:`crmsync.triggers.decide.unsynced`);
when a whole page is such records, the next poll starts after them. While a run of the
flow is in progress nothing is polled: its writes are not in its links until
``update_links``, and the run reads the changes itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from crmsync.engine.canonical import timestamp
from crmsync.mapping.model import Side
from crmsync.triggers.common import Announced, payload, poll_seconds
from crmsync.triggers.decide import Seen, unsynced

log = logging.getLogger("crmsync.triggers")

#: Records a poll reads: one request either way; small so an idle poll costs little.
PAGE_SIZE = 10


class CustomcrmChangeTrigger(BaseEventTrigger):
    """Fires when a record of ``resource`` changed in Customcrm since the flow's last sync,
    not by the sync. Kwargs are plain strings (serialized with the DAG)."""

    def __init__(self, flow: str, resource: str, conn_id: str, store_conn_id: str = "crmsync_store") -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.flow = flow
        self.resource = resource
        self.conn_id = conn_id
        self.store_conn_id = store_conn_id
        self._announced = Announced()
        self._cursor: float | None = None  # past a page of the sync's own writes
        self._hook: Any = None
        #: requests sent by this trigger (tests count them)
        self.requests = 0

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "flow": self.flow,
                "resource": self.resource,
                "conn_id": self.conn_id,
                "store_conn_id": self.store_conn_id,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        interval = await asyncio.to_thread(poll_seconds, self.conn_id)
        if interval <= 0:
            log.info("change detection off for %s (connection %s)", self.flow, self.conn_id)
            await asyncio.Event().wait()  # never fires; the flow keeps its time schedule
        while True:
            try:
                changed = await asyncio.to_thread(self.poll_once)
            except Exception as exc:  # an outage must not end the watcher
                log.warning(
                    "%s: Customcrm poll failed (%s); next in %gs", self.flow, type(exc).__name__, interval
                )
                changed = []
            if changed:
                yield TriggerEvent(payload(self.flow, Side.CUSTOMCRM.value, changed))  # type: ignore[no-untyped-call]
            await asyncio.sleep(interval)

    def _client(self) -> Any:
        if self._hook is None:
            from crmsync.flows.budgets import task_budget_factory
            from crmsync.hooks.customcrm import CustomcrmHook

            self._hook = CustomcrmHook(self.conn_id, budget_factory=task_budget_factory(self.store_conn_id))
        return self._hook

    def poll_once(self) -> list[Seen]:
        """One poll (blocking: run it in a thread): the records that changed since the
        flow's last sync, not by the sync; remembered, so each is announced once."""
        from crmsync.store.changes import flow_watermark, linked_versions, run_in_progress
        from crmsync.store.engine import store_engine

        engine = store_engine(self.store_conn_id)
        since = flow_watermark(engine, self.flow, Side.CUSTOMCRM)
        if since is None or run_in_progress(engine, self.flow):
            # never synced: the first run comes from the schedule; a run in progress:
            # its writes are not in its links yet, and it reads the changes itself
            return []
        start = since if self._cursor is None or self._cursor < since else self._cursor
        hook = self._client()
        pages = hook.iter_pages(
            self.resource, updated_since=datetime.fromtimestamp(start, UTC), limit=PAGE_SIZE
        )
        self.requests += 1
        page: list[dict[str, Any]] = next(pages, [])
        pages.close()
        seen = [Seen(str(r["Id"]), _str(r.get("Version")), timestamp(r.get("UpdatedAt"))) for r in page]
        linked = linked_versions(engine, self.flow, Side.CUSTOMCRM, [s.id for s in seen])
        changed = unsynced(seen, linked, since, self._announced)
        self._announced.add(changed)
        if len(page) >= PAGE_SIZE and not changed:
            self._cursor = max(s.changed_at for s in seen)  # a full page of our writes: skip it
        return changed


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


__all__ = ["PAGE_SIZE", "CustomcrmChangeTrigger"]
