"""The change-detection triggers against the real sandboxes (issue 15 item 1).

No event while idle or for the sync's own writes, an event after a person's edit, and
the Chargebee poll shared by every flow of a site within its share of the rate limit.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from crmsync.store.schema import link, run
from crmsync.triggers.chargebee import _POLLERS, ChargebeeEventTrigger, SitePoller, event_types
from crmsync.triggers.customcrm import CustomcrmChangeTrigger
from sqlalchemy import delete, insert, select

from tests.e2e import conftest as e2e

# the e2e fixtures: a migrated metadata DB, the link store, both sandboxes, a flow runner
airflow_db, store, sandboxes, dags, run_flow = (
    e2e.airflow_db,
    e2e.store,
    e2e.sandboxes,
    e2e.dags,
    e2e.run_flow,
)

POLL = 0.5  # seconds between polls in these tests (production default: 15)


def _pair(store: Any, flow: str = "contact_customer") -> tuple[str, str]:
    with store.connect() as conn:
        row = conn.execute(
            select(link.c.crm_id, link.c.cb_id).where(link.c.flow == flow).order_by(link.c.id)
        ).first()
    assert row is not None
    return str(row[0]), str(row[1])


@pytest.fixture
def fast_poll(sandboxes: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both connections poll every POLL seconds (the extra ``change_poll_seconds``)."""
    for var in ("AIRFLOW_CONN_CHARGEBEE_DEFAULT", "AIRFLOW_CONN_CUSTOMCRM_DEFAULT"):
        conn = json.loads(__import__("os").environ[var])
        conn["extra"] = {**conn.get("extra", {}), "change_poll_seconds": POLL}
        monkeypatch.setenv(var, json.dumps(conn))
    _POLLERS.clear()


def _cb_trigger(flow: str, resource: str, obj: str) -> ChargebeeEventTrigger:
    return ChargebeeEventTrigger(
        flow, obj, event_types(resource, [], [f"{obj}_deleted"]), "chargebee_default"
    )


@contextmanager
def _run_in_progress(store: Any, flow: str) -> Iterator[None]:
    """A run row of ``flow`` that has not finished, as during a run's upserts."""
    key = {"run_id": "manual__in_progress", "flow": flow}
    with store.begin() as conn:
        conn.execute(insert(run).values(**key, started_at=datetime.now(UTC), status="running"))
    try:
        yield
    finally:
        with store.begin() as conn:
            conn.execute(delete(run).where(run.c.run_id == key["run_id"]))


def _crm_trigger() -> CustomcrmChangeTrigger:
    return CustomcrmChangeTrigger("contact_customer", "contacts", "customcrm_default")


async def _first_event(trigger: Any, seconds: float) -> Any:
    """The trigger's first event within ``seconds``, else None."""
    agen = trigger.run()
    try:
        return await asyncio.wait_for(agen.__anext__(), seconds)
    except TimeoutError:
        return None
    finally:
        await agen.aclose()


def test_customcrm_trigger_fires_for_an_edit_not_when_idle_nor_for_the_syncs_writes(
    run_flow: Any, sandboxes: Any, store: Any, fast_poll: None
) -> None:
    trigger = _crm_trigger()
    assert trigger.poll_once() == []  # never synced: the schedule starts the first run
    assert run_flow().ok  # the first sync writes to Customcrm (its own writes)
    assert trigger.poll_once() == [], "the sync's own writes must not start a run"
    crm_id, _ = _pair(store)
    sandboxes.crm("PATCH", f"contacts/{crm_id}", json={"Phone": "+47 400 00 009"})
    with _run_in_progress(store, "contact_customer"):
        assert trigger.poll_once() == [], "a run in progress reads the change itself"
    changed = trigger.poll_once()
    assert [s.id for s in changed] == [crm_id]
    assert trigger.poll_once() == [], "an edit is announced once"
    requests = trigger.requests
    assert requests == 3  # one request a poll (none before the first sync)
    event = asyncio.run(
        _first_event(CustomcrmChangeTrigger("contact_customer", "contacts", "customcrm_default"), 5)
    )
    assert event is not None and event.payload["ids"] == [crm_id] and event.payload["side"] == "customcrm"
    assert run_flow().ok  # the edit synced: nothing left to announce
    assert (
        asyncio.run(
            _first_event(CustomcrmChangeTrigger("contact_customer", "contacts", "customcrm_default"), 2)
        )
        is None
    )


def test_chargebee_trigger_fires_for_an_edit_not_for_the_syncs_writes(
    run_flow: Any, sandboxes: Any, store: Any, fast_poll: None
) -> None:
    assert run_flow().ok
    crm_id, cb_id = _pair(store)
    time.sleep(1.1)  # Chargebee timestamps are whole seconds
    sandboxes.crm("PATCH", f"contacts/{crm_id}", json={"Phone": "+47 400 00 010"})
    assert run_flow().ok  # the sync writes the phone to Chargebee: customer_changed, its own write
    trigger = _cb_trigger("contact_customer", "customers", "customer")
    assert asyncio.run(_first_event(trigger, 2)) is None, "the sync's own write must not start a run"
    _POLLERS.clear()
    time.sleep(1.1)
    edited = time.time()
    sandboxes.cb("POST", f"customers/{cb_id}", data={"company": "Edited by a person AS"})
    held = _cb_trigger("contact_customer", "customers", "customer")
    poller = SitePoller("chargebee_default", "crmsync_store", POLL)
    poller._cursor = int(edited) - 1  # the events since the edit
    events = poller.fetch(held.event_types)
    with _run_in_progress(store, "contact_customer"):
        assert held.decide(events) == [], "decided after the run, not during it"
    assert [s.id for s in held.decide([])] == [cb_id]
    event = asyncio.run(_first_event(_cb_trigger("contact_customer", "customers", "customer"), 5))
    assert event is not None and event.payload == {
        "flow": "contact_customer",
        "side": "chargebee",
        "changed": 1,
        "ids": [cb_id],
    }


def test_one_chargebee_poll_per_site_serves_every_flow(
    run_flow: Any, sandboxes: Any, store: Any, fast_poll: None
) -> None:
    """Two flows' triggers share one poll: requests per minute stay within the site's
    share (60 / change_poll_seconds), not once per flow."""
    assert run_flow().ok
    assert run_flow("customer_business_entity").ok
    triggers = [
        _cb_trigger("contact_customer", "customers", "customer"),
        ChargebeeEventTrigger(
            "customer_business_entity",
            "business_entity",
            event_types("business_entities", [], []),
            "chargebee_default",
        ),
    ]
    seconds = 3.0
    before = sandboxes.stats("chargebee")

    async def idle() -> list[Any]:
        return await asyncio.gather(*(_first_event(t, seconds) for t in triggers))

    assert asyncio.run(idle()) == [None, None], "idle: no event"
    poller = _POLLERS["chargebee_default"]
    assert 1 <= poller.requests <= seconds / POLL + 1, poller.requests
    gaps = [b - a for a, b in zip(poller.poll_times, poller.poll_times[1:], strict=False)]
    assert all(g >= POLL * 0.9 for g in gaps), gaps  # at most 60 / POLL a minute, whatever the flows
    sent = _events_requests(sandboxes.stats("chargebee")) - _events_requests(before)
    assert sent == poller.requests, (sent, poller.requests)  # the site saw one poll, not one per flow
    print(f"\n{sent} GET /events in {seconds:g} s for 2 flows (poll every {POLL:g} s)")


def _events_requests(stats: dict[str, Any]) -> int:
    return sum(int(n) for n in stats["by_endpoint"].get("GET /api/v2/events", {}).values())
