"""What both change triggers share: the poll interval from the connection, the hook a
trigger builds (its requests counted against the shared rate budget), the event payload.

Everything here blocks (a connection lookup, the link store): triggers call it through
``asyncio.to_thread`` so the triggerer's event loop never waits on I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from crmsync.triggers.decide import Seen

#: Seconds between two polls of one site when the connection does not say (4 a minute).
DEFAULT_POLL_SECONDS = 15.0
#: Ids an event names at most (the payload carries ids only, never customer data).
MAX_IDS = 5


def poll_seconds(conn_id: str) -> float:
    """``change_poll_seconds`` from the connection's extra (default 15 s); 0 switches
    this connection's change detection off (its flows keep their time schedule)."""
    from airflow.sdk import BaseHook

    extra = BaseHook.get_connection(conn_id).extra_dejson or {}
    value = extra.get("change_poll_seconds", extra.get(f"extra__{_conn_type(extra)}__change_poll_seconds"))
    if value in (None, ""):
        return DEFAULT_POLL_SECONDS
    seconds = float(value)
    if seconds < 0:
        raise ValueError(f"connection {conn_id!r}: change_poll_seconds must be 0 (off) or more")
    return seconds


def _conn_type(extra: dict[str, Any]) -> str:
    return "chargebee" if any(k.startswith("extra__chargebee__") for k in extra) else "customcrm"


def payload(flow: str, side: str, changed: Sequence[Seen]) -> dict[str, Any]:
    """The TriggerEvent payload: which flow and side, how many records, a few ids."""
    return {"flow": flow, "side": side, "changed": len(changed), "ids": [s.id for s in changed[:MAX_IDS]]}


class Announced:
    """(id, version) pairs a trigger already announced, bounded (oldest forgotten first)."""

    def __init__(self, size: int = 10_000) -> None:
        self._keys: OrderedDict[tuple[str, str | None], None] = OrderedDict()
        self._size = size

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Any:
        return iter(self._keys)

    def add(self, seen: Sequence[Seen]) -> None:
        for rec in seen:
            self._keys[(rec.id, rec.version)] = None
        while len(self._keys) > self._size:
            self._keys.popitem(last=False)


__all__ = ["DEFAULT_POLL_SECONDS", "Announced", "payload", "poll_seconds"]
