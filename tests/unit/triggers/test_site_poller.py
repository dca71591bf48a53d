"""The shared Chargebee poller: one request a poll for every flow's event types, each
event handed out once, the cursor one second before the newest event seen."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from crmsync.triggers.chargebee import SitePoller


class FakeEvents:
    """``iter_pages('events', ...)`` over a list, recording each call's params."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.calls: list[dict[str, Any]] = []

    def iter_pages(self, resource: str, **kw: Any) -> Iterator[list[dict[str, Any]]]:
        self.calls.append({"resource": resource, **kw})
        after = kw["updated_after"]
        types = set(kw["filters"]["event_type[in]"])
        page = [e for e in self.events if e["occurred_at"] > after and e["event_type"] in types]
        if page:
            yield page[: kw["limit"]]


def _event(n: int, at: int, kind: str = "customer_changed") -> dict[str, Any]:
    return {"id": f"ev_{n}", "occurred_at": at, "event_type": kind, "content": {"customer": {"id": f"c{n}"}}}


def test_a_poll_hands_out_each_event_once_and_moves_its_cursor() -> None:
    fake = FakeEvents([_event(1, 100), _event(2, 101)])
    poller = SitePoller("cb", "store", 15)
    poller._hook, poller._cursor = fake, 100
    assert [e["id"] for e in poller.fetch(["customer_changed"])] == ["ev_1", "ev_2"]
    assert fake.calls[-1]["updated_after"] == 99  # strict after: one second back
    fake.events.append(_event(3, 101))  # listed late, same second as the newest seen
    assert [e["id"] for e in poller.fetch(["customer_changed"])] == ["ev_3"]
    assert fake.calls[-1]["updated_after"] == 100
    assert poller.fetch(["customer_changed"]) == []
    assert poller.requests == len(fake.calls) == 3


def test_every_subscriber_gets_its_types_from_one_poll() -> None:
    fake = FakeEvents([_event(1, 100), _event(2, 100, "order_updated")])

    async def scenario() -> tuple[list[str], list[str], int]:
        poller = SitePoller("cb", "store", 0.05)
        poller._hook = fake
        a, qa = poller.subscribe(["customer_changed"], 100)
        b, qb = poller.subscribe(["order_updated"], 100)
        got_a, got_b = await asyncio.wait_for(asyncio.gather(qa.get(), qb.get()), 2)
        poller.unsubscribe(a)
        poller.unsubscribe(b)
        return [e["id"] for e in got_a], [e["id"] for e in got_b], poller.requests

    ids_a, ids_b, requests = asyncio.run(scenario())
    assert (ids_a, ids_b) == (["ev_1"], ["ev_2"])
    assert sorted(fake.calls[0]["filters"]["event_type[in]"]) == ["customer_changed", "order_updated"]
    assert requests >= 1 and all(c["limit"] == 100 for c in fake.calls)
