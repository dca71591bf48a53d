"""Reading a Chargebee resource's changes through its events (``GET /events``).

Chargebee's public API has resources whose list cannot be filtered by ``updated_at``
(business entities: the official SDK has no list for them at all); their changes are
published as events (``business_entity_created/updated/deleted``), each carrying a
snapshot of the record in ``content.<object>``. :func:`iter_changed` turns the events
that occurred after a point in time into pages of records, oldest first, so an extract
can stage them like a list page:

* an event type ending in ``_deleted`` marks its record ``deleted`` (whatever the
  snapshot says), so deletes are seen;
* a record that changed several times keeps its newest snapshot (highest
  ``resource_version``, later event on a tie); an older snapshot that arrives after a
  newer one (events of the same second on two pages) is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any


def records_from_events(
    events: Iterable[Mapping[str, Any]], object_key: str, newest: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """The records carried by one page of events (unwrapped ``event`` objects). Pure.

    ``newest`` (record id → resource_version already taken) spans pages; it is updated.
    """
    seen = {} if newest is None else newest
    out: dict[str, dict[str, Any]] = {}
    for event in events:
        content = event.get("content")
        rec = content.get(object_key) if isinstance(content, Mapping) else None
        if not isinstance(rec, Mapping) or rec.get("id") in (None, ""):
            continue
        rec = dict(rec)
        if str(event.get("event_type", "")).endswith("_deleted"):
            rec["deleted"] = True
        rid = str(rec["id"])
        version = _version(rec)
        if rid in seen and version < seen[rid]:
            continue  # an older snapshot than one already taken
        seen[rid] = version
        out.pop(rid, None)  # keep the order of the newest snapshot
        out[rid] = rec
    return list(out.values())


def _version(rec: Mapping[str, Any]) -> int:
    """``resource_version`` (milliseconds), else ``updated_at`` in the same unit, else 0."""
    for key, scale in (("resource_version", 1), ("updated_at", 1000)):
        try:
            value = int(rec.get(key) or 0) * scale
        except (TypeError, ValueError):
            continue
        if value:
            return value
    return 0


def iter_changed(
    hook: Any, resource: str, event_types: Sequence[str], occurred_after: int
) -> Iterator[list[dict[str, Any]]]:
    """Pages of ``resource`` records changed after ``occurred_after`` (Unix seconds), per events."""
    object_key = hook.resource(resource).object_key
    newest: dict[str, int] = {}
    for page in hook.iter_pages(
        "events", updated_after=occurred_after, filters={"event_type[in]": list(event_types)}
    ):
        records = records_from_events(page, object_key, newest)
        if records:
            yield records


__all__ = ["iter_changed", "records_from_events"]
