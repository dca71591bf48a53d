"""Records read from Chargebee events (business entities have no documented list by updated_at)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from crmsync.hooks.chargebee import ChargebeeResource
from crmsync.hooks.chargebee_events import iter_changed, records_from_events


def ev(event_type: str, **be: Any) -> dict[str, Any]:
    return {
        "id": f"ev_{event_type}_{be.get('resource_version')}",
        "event_type": event_type,
        "occurred_at": 1,
        "content": {"business_entity": be},
    }


def test_newest_snapshot_per_record_and_deletes_are_marked() -> None:
    events = [
        ev("business_entity_created", id="be1", name="A", resource_version=1, deleted=False),
        ev("business_entity_updated", id="be2", name="B", resource_version=2, deleted=False),
        ev("business_entity_updated", id="be1", name="A2", resource_version=3, deleted=False),
        ev("business_entity_deleted", id="be2", name="B", resource_version=4),
    ]
    out = records_from_events(events, "business_entity")
    assert [(r["id"], r["name"], r.get("deleted")) for r in out] == [("be1", "A2", False), ("be2", "B", True)]


def test_an_older_snapshot_on_a_later_page_is_dropped_and_junk_is_skipped() -> None:
    newest: dict[str, int] = {}
    first = records_from_events(
        [ev("business_entity_updated", id="be1", name="new", resource_version=9)], "business_entity", newest
    )
    late = records_from_events(
        [
            ev("business_entity_updated", id="be1", name="old", resource_version=5),
            {"event_type": "business_entity_updated", "content": {"customer": {"id": "c1"}}},
            {"event_type": "business_entity_updated", "content": None},
            ev("business_entity_updated", id="", name="no id"),
        ],
        "business_entity",
        newest,
    )
    assert [r["name"] for r in first] == ["new"] and late == []


class FakeHook:
    def __init__(self, pages: list[list[dict[str, Any]]]) -> None:
        self.pages = pages
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def resource(self, name: str) -> ChargebeeResource:
        return ChargebeeResource(name, "business_entity")

    def iter_pages(self, resource: str, **kw: Any) -> Iterator[list[dict[str, Any]]]:
        self.calls.append((resource, kw))
        yield from self.pages


def test_iter_changed_asks_for_the_event_types_after_the_watermark() -> None:
    hook = FakeHook([[ev("business_entity_updated", id="be1", name="A", resource_version=1)], []])
    types = ["business_entity_created", "business_entity_updated", "business_entity_deleted"]
    pages = list(iter_changed(hook, "business_entities", types, 1700))
    assert pages == [[{"id": "be1", "name": "A", "resource_version": 1}]]
    assert hook.calls == [("events", {"updated_after": 1700, "filters": {"event_type[in]": types}})]
