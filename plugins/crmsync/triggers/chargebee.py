"""Chargebee change detection: ``GET /events`` since the last seen event, filtered to the
watched event types, one poll per site shared by every flow (:class:`ChargebeeEventTrigger`).

At 150 requests a minute a site can spare at most 4 a minute for detection, whatever the
number of flows. So the flows' triggers do not poll: each subscribes to the module-level
:class:`SitePoller` of its Chargebee connection, which asks for the events of every
subscribed type at most every ``change_poll_seconds`` (connection extra, default 15 s →
4 requests a minute) and hands each trigger the events of its types. Every request is
counted against the shared rate budget (the hook is built with
:func:`crmsync.flows.budgets.task_budget_factory`). The poller lives in the triggerer
process: each triggerer process polls on its own (run one triggerer per deployment, or
budget ``change_poll_seconds`` for several).

A trigger decides nothing while a run of its flow is in progress (the run's writes come
back as events before ``update_links`` records their versions): it holds the events and
decides after the run.

``occurred_at[after]`` is strict and in whole seconds, so the poll asks from one second
before the newest event seen and drops the event ids it already handed out.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from crmsync.mapping.model import Side
from crmsync.triggers.common import Announced, payload, poll_seconds
from crmsync.triggers.decide import Seen, unsynced

log = logging.getLogger("crmsync.triggers")

#: A resource's event types in Chargebee (``EventType`` of the official SDK; a unit test
#: checks each), for flows whose mapping names none (``change_events``/``delete_events``).
RESOURCE_EVENTS: dict[str, tuple[str, ...]] = {
    "customers": ("customer_created", "customer_changed", "customer_deleted"),
    "items": ("item_created", "item_updated", "item_deleted"),
    "orders": ("order_created", "order_updated", "order_cancelled", "order_deleted"),
    "business_entities": ("business_entity_created", "business_entity_updated", "business_entity_deleted"),
}
#: Events one poll reads at most (Chargebee's largest page: one request).
PAGE_SIZE = 100
#: Events a trigger holds at most while a run of its flow is in progress.
HELD_MAX = 1000


def event_types(resource: str, change_events: Collection[str], delete_events: Collection[str]) -> list[str]:
    """The event types that announce a change of ``resource``: the mapping's
    ``change_events`` if any, else the resource's own, plus its ``delete_events``."""
    base = list(change_events) or list(RESOURCE_EVENTS.get(resource, ()))
    return sorted(set(base) | set(delete_events))


class SitePoller:
    """One poll loop per Chargebee site in this process, shared by every flow's trigger."""

    def __init__(self, conn_id: str, store_conn_id: str, interval: float) -> None:
        self.conn_id = conn_id
        self.store_conn_id = store_conn_id
        self.interval = interval
        self.requests = 0
        self.poll_times: list[float] = []
        self._subs: dict[int, tuple[frozenset[str], asyncio.Queue[list[dict[str, Any]]]]] = {}
        self._ids = itertools.count()
        self._cursor: int | None = None
        self._seen: set[str] = set()  # event ids at the cursor's second, already handed out
        self._task: asyncio.Task[None] | None = None
        self._hook: Any = None

    def subscribe(self, types: Collection[str], since: float | None) -> tuple[int, asyncio.Queue[Any]]:
        """Receive the events of ``types`` that occur from ``since`` (or from now) on."""
        start = int(since) if since is not None else int(time.time())
        if self._cursor is None or start < self._cursor:
            self._cursor = start
            self._seen.clear()
        sid = next(self._ids)
        queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
        self._subs[sid] = (frozenset(types), queue)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name=f"crmsync-poll-{self.conn_id}"
            )
        return sid, queue

    def unsubscribe(self, sid: int) -> None:
        self._subs.pop(sid, None)
        if not self._subs and self._task is not None:
            self._task.cancel()
            self._task = None

    async def _loop(self) -> None:
        while self._subs:
            types = sorted(set().union(*(t for t, _ in self._subs.values())))
            try:
                events = await asyncio.to_thread(self.fetch, types)
            except Exception as exc:  # an outage must not end the watchers
                log.warning("Chargebee events poll of %s failed (%s)", self.conn_id, type(exc).__name__)
                events = []
            for sub_types, queue in list(self._subs.values()):
                mine = [e for e in events if e.get("event_type") in sub_types]
                if mine:
                    queue.put_nowait(mine)
            await asyncio.sleep(self.interval)

    def fetch(self, types: list[str]) -> list[dict[str, Any]]:
        """One request (blocking): the events of ``types`` after the cursor, oldest first."""
        if self._hook is None:
            from crmsync.flows.budgets import task_budget_factory
            from crmsync.hooks.chargebee import ChargebeeHook

            self._hook = ChargebeeHook(self.conn_id, budget_factory=task_budget_factory(self.store_conn_id))
        cursor = self._cursor if self._cursor is not None else int(time.time())
        pages = self._hook.iter_pages(
            "events",
            updated_after=cursor - 1,
            include_deleted=False,
            filters={"event_type[in]": types},
            limit=PAGE_SIZE,
        )
        self.requests += 1
        self.poll_times.append(time.monotonic())
        page: list[dict[str, Any]] = next(iter(pages), [])
        pages.close()
        fresh = [e for e in page if str(e.get("id")) not in self._seen]
        if page:
            newest = max(int(e.get("occurred_at") or 0) for e in page)
            if newest > cursor:
                self._seen = set()
            self._cursor = max(cursor, newest)
            self._seen.update(
                str(e.get("id")) for e in page if int(e.get("occurred_at") or 0) == self._cursor
            )
        return fresh


_POLLERS: dict[str, SitePoller] = {}


def site_poller(conn_id: str, store_conn_id: str, interval: float) -> SitePoller:
    """The process's poller of the site behind ``conn_id`` (created on first use)."""
    poller = _POLLERS.get(conn_id)
    if poller is None:
        poller = _POLLERS[conn_id] = SitePoller(conn_id, store_conn_id, interval)
    return poller


def seen_in(events: Sequence[Mapping[str, Any]], object_key: str) -> list[Seen]:
    """The records the events carry (id, ``resource_version``, ``occurred_at``)."""
    out = []
    for event in events:
        content = event.get("content")
        rec = content.get(object_key) if isinstance(content, Mapping) else None
        if isinstance(rec, Mapping) and rec.get("id") not in (None, ""):
            version = rec.get("resource_version")
            out.append(
                Seen(
                    str(rec["id"]),
                    None if version is None else str(version),
                    float(event.get("occurred_at") or 0),
                )
            )
    return out


class ChargebeeEventTrigger(BaseEventTrigger):
    """Fires when a Chargebee event of ``event_types`` names a record of the flow changed
    since its last sync, not by the sync. Kwargs are plain values (serialized with the DAG)."""

    def __init__(
        self,
        flow: str,
        object_key: str,
        event_types: list[str],
        conn_id: str,
        store_conn_id: str = "crmsync_store",
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.flow = flow
        self.object_key = object_key
        self.event_types = list(event_types)
        self.conn_id = conn_id
        self.store_conn_id = store_conn_id
        self._announced = Announced()
        self._held: list[dict[str, Any]] = []  # events seen while a run of the flow was in progress

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "flow": self.flow,
                "object_key": self.object_key,
                "event_types": list(self.event_types),
                "conn_id": self.conn_id,
                "store_conn_id": self.store_conn_id,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        interval = await asyncio.to_thread(poll_seconds, self.conn_id)
        if interval <= 0 or not self.event_types:
            log.info("change detection off for %s (connection %s)", self.flow, self.conn_id)
            await asyncio.Event().wait()  # never fires; the flow keeps its time schedule
        since = await asyncio.to_thread(self._watermark)
        poller = site_poller(self.conn_id, self.store_conn_id, interval)
        sid, queue = poller.subscribe(self.event_types, since)
        try:
            while True:
                try:  # events held while a run was in progress are decided after it
                    fresh = await asyncio.wait_for(queue.get(), interval) if self._held else await queue.get()
                except TimeoutError:
                    fresh = []
                changed = await asyncio.to_thread(self.decide, fresh)
                if changed:
                    yield TriggerEvent(payload(self.flow, Side.CHARGEBEE.value, changed))  # type: ignore[no-untyped-call]
        finally:
            poller.unsubscribe(sid)

    def _watermark(self) -> float | None:
        from crmsync.store.changes import flow_watermark
        from crmsync.store.engine import store_engine

        return flow_watermark(store_engine(self.store_conn_id), self.flow, Side.CHARGEBEE)

    def decide(self, events: list[dict[str, Any]]) -> list[Seen]:
        """Blocking (run in a thread): the records of ``events`` changed since the flow's
        last sync, not by the sync; remembered, so each is announced once."""
        from crmsync.store.changes import flow_watermark, linked_versions, run_in_progress
        from crmsync.store.engine import store_engine

        engine = store_engine(self.store_conn_id)
        events = [*self._held, *events]
        self._held = []
        if run_in_progress(engine, self.flow):
            self._held = events[-HELD_MAX:]  # the run's own writes are not in its links yet
            return []
        since = flow_watermark(engine, self.flow, Side.CHARGEBEE)
        seen = seen_in(events, self.object_key)
        linked = linked_versions(engine, self.flow, Side.CHARGEBEE, [s.id for s in seen])
        changed = unsynced(seen, linked, since, self._announced)
        self._announced.add(changed)
        return changed


__all__ = ["RESOURCE_EVENTS", "ChargebeeEventTrigger", "SitePoller", "event_types", "seen_in", "site_poller"]
