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

A first run or a full resync cannot list such a resource either: :func:`iter_known`
reads its events from the beginning of the event history, then the records that refer
to it (customers' ``business_entity_id``, transfers), and reports each record it found
named there but in no event instead of guessing its fields.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crmsync.hooks.chargebee import ChargebeeHook

#: Key of a placeholder record (:func:`iter_known`): why its fields could not be learned.
#: Not a Chargebee field name (those start with a letter); the engine skips such a record
#: with this reason instead of syncing it (``crmsync.engine.plan.decide_new``).
UNLEARNED = "~unlearned"

#: Where the documented API names records of a resource it cannot read: (list, id fields).
REFERENCES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "business_entities": (
        ("customers", ("business_entity_id",)),
        ("business_entities/transfers", ("source_business_entity_id", "destination_business_entity_id")),
    ),
}

#: What a person can do about a record named by others but in no event, per resource.
UNLEARNED_FIX: dict[str, str] = {
    "business_entities": (
        "open it in Chargebee (Settings > Business entities) and save it: the "
        "business_entity_updated event carries its name and the next run links it"
    ),
}


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
    hook: ChargebeeHook, resource: str, event_types: Sequence[str], occurred_after: int
) -> Iterator[list[dict[str, Any]]]:
    """Pages of ``resource`` records changed after ``occurred_after`` (Unix seconds), per events."""
    yield from iter_changed_since(hook, resource, event_types, occurred_after)


def iter_changed_since(
    hook: ChargebeeHook, resource: str, event_types: Sequence[str], occurred_after: int | None
) -> Iterator[list[dict[str, Any]]]:
    """Pages of ``resource`` records per their events; all of them when ``occurred_after`` is None.

    Only what the SDK's event list declares is sent: ``limit``, ``offset``,
    ``sort_by[asc]=occurred_at``, ``event_type[in]`` and, when given, ``occurred_at[after]``.
    """
    object_key = hook.resource(resource).object_key
    newest: dict[str, int] = {}
    for page in hook.iter_pages(
        "events", updated_after=occurred_after, filters={"event_type[in]": list(event_types)}
    ):
        records = records_from_events(page, object_key, newest)
        if records:
            yield records


def iter_known(
    hook: ChargebeeHook,
    resource: str,
    event_types: Sequence[str],
    linked: Callable[[Sequence[str]], Collection[str]],
) -> Iterator[list[dict[str, Any]]]:
    """Pages of every ``resource`` record the documented API lets us know of, for a first
    run or a full resync of a resource Chargebee cannot list:

    1. its events from the beginning of the event history (no ``occurred_at`` filter),
       each record with its newest snapshot, deletes marked;
    2. the ids other records name (:data:`REFERENCES`). One named there but in no event
       (its events are older than Chargebee keeps, or were never published) and not
       ``linked`` already becomes a placeholder ``{"id": ..., UNLEARNED: reason}``, so the
       run reports it instead of failing or inventing its fields. A linked one keeps what
       its link knows (nothing is staged for it, so nothing reads as cleared).
    """
    known: set[str] = set()
    for page in iter_changed_since(hook, resource, event_types, None):
        known.update(str(rec["id"]) for rec in page)
        yield page
    named: dict[str, str] = {}
    for source, fields in REFERENCES.get(resource, ()):
        for page in hook.iter_pages(source, include_deleted=False):
            for rec in page:
                for name in fields:
                    ref = rec.get(name)
                    if ref not in (None, "") and str(ref) not in known:
                        named.setdefault(str(ref), f"{_singular(source)} {rec.get('id')} ({name})")
    missing = sorted(named)
    if not missing:
        return
    already = set(linked(missing))
    label = hook.resource(resource).object_key.replace("_", " ")
    fix = UNLEARNED_FIX.get(resource, "edit it in Chargebee so that an event carries it")
    placeholders = [
        {
            "id": rid,
            UNLEARNED: (
                f"named by {named[rid]} but by no {', '.join(event_types)} event, and Chargebee "
                f"documents no other way to read a {label}, so its fields are unknown; {fix}"
            ),
        }
        for rid in missing
        if rid not in already
    ]
    if placeholders:
        yield placeholders


def _singular(source: str) -> str:
    """``customers`` → ``customer``; ``business_entities/transfers`` → ``transfer``."""
    return source.rsplit("/", 1)[-1].removesuffix("s")


__all__ = [
    "REFERENCES",
    "UNLEARNED",
    "iter_changed",
    "iter_changed_since",
    "iter_known",
    "records_from_events",
]
