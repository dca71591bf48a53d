"""The triggers' contract with Airflow and Chargebee, without a network."""

from __future__ import annotations

from pathlib import Path

import pytest
from chargebee.models.enums import EventType
from crmsync.mapping.model import load_mappings
from crmsync.triggers.chargebee import RESOURCE_EVENTS, ChargebeeEventTrigger, event_types, seen_in
from crmsync.triggers.customcrm import CustomcrmChangeTrigger


def test_every_event_type_watched_is_one_chargebee_publishes() -> None:
    """The SDK is the contract: an event type it does not declare does not exist."""
    known = {e.value for e in EventType}
    watched = {t for types in RESOURCE_EVENTS.values() for t in types}
    for mapping in load_mappings(Path(__file__).resolve().parents[3] / "include" / "mappings"):
        cb = mapping.chargebee
        watched |= set(event_types(cb.resource, cb.change_events, cb.delete_events))
        assert event_types(cb.resource, cb.change_events, cb.delete_events), mapping.flow
    assert watched <= known, watched - known


@pytest.mark.parametrize(
    "trigger",
    [
        CustomcrmChangeTrigger("contact_customer", "contacts", "customcrm_default"),
        ChargebeeEventTrigger("contact_customer", "customer", ["customer_changed"], "chargebee_default"),
    ],
)
def test_a_trigger_serializes_to_plain_kwargs_that_rebuild_it(trigger: object) -> None:
    import importlib
    import json

    classpath, kwargs = trigger.serialize()  # type: ignore[attr-defined]
    json.dumps(kwargs)
    module, _, name = classpath.rpartition(".")
    again = getattr(importlib.import_module(module), name)(**kwargs)
    assert again.serialize() == (classpath, kwargs)


def test_events_yield_ids_and_versions_only() -> None:
    events = [
        {
            "id": "ev_1",
            "occurred_at": 10,
            "event_type": "customer_changed",
            "content": {"customer": {"id": "c1", "resource_version": 77, "email": "x@y.z"}},
        },
        {"id": "ev_2", "occurred_at": 11, "event_type": "customer_changed", "content": {"card": {"id": "k"}}},
    ]
    seen = seen_in(events, "customer")
    assert [(s.id, s.version, s.changed_at) for s in seen] == [("c1", "77", 10.0)]
