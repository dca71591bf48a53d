"""customer_business_entity reads entity changes from Chargebee's events feed.

Chargebee documents no list of business entities filtered by ``updated_at`` (the official
SDK cannot list them at all); ``business_entity_created/updated/deleted`` events are the
documented way to see them change. The first run lists every entity; later runs read the
events that occurred since the watermark (minus the overlap)."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from crmsync.store.schema import audit, link
from sqlalchemy import select

from tests.e2e.test_contact_customer import writes

pytestmark = pytest.mark.e2e
FLOW = "customer_business_entity"


def gets(sandboxes: Any) -> dict[str, int]:
    """GET requests per Chargebee path template so far."""
    by_endpoint = sandboxes.stats("chargebee")["by_endpoint"]
    return {
        key.split(" ", 1)[1]: sum(int(n) for n in counts.values())
        for key, counts in by_endpoint.items()
        if key.startswith("GET ")
    }


def entity_links(store: Any) -> dict[str, str]:
    with store.connect() as conn:
        return dict(conn.execute(select(link.c.cb_id, link.c.crm_id).where(link.c.flow == FLOW)).all())


def test_entity_changes_and_deletes_arrive_through_the_events_feed(run_flow, sandboxes, store):
    admin = f"{sandboxes.cb_url}/_sandbox/records/business_entities"
    first = run_flow(FLOW)
    assert first.ok, first.summary
    listed = gets(sandboxes)
    assert listed.get("/api/v2/business_entities", 0) >= 1, "the first run lists every entity"
    pairs = entity_links(store)
    assert len(pairs) >= 3
    renamed, deleted = sorted(pairs)[:2]

    requests.post(admin, json={"id": renamed, "name": "Renamed via events AS"}, timeout=10).raise_for_status()
    requests.post(admin, json={"id": "be_evt_new", "name": "Evented Newco"}, timeout=10).raise_for_status()
    requests.post(f"{admin}/{deleted}/delete", timeout=10).raise_for_status()
    before_gets = gets(sandboxes)

    r = run_flow(FLOW)
    assert r.ok, r.summary
    after_gets = gets(sandboxes)
    assert after_gets.get("/api/v2/events", 0) > before_gets.get("/api/v2/events", 0)
    assert after_gets.get("/api/v2/business_entities", 0) == before_gets.get(
        "/api/v2/business_entities", 0
    ), "an incremental run reads the events, not the undocumented list"
    s = r.summary
    assert s["updated"]["customcrm"] == 1 and s["created"]["customcrm"] == 1, s
    assert s["unlinked"] == 1, s
    assert sandboxes.crm("GET", f"customers/{pairs[renamed]}")["Name"] == "Renamed via events AS"
    names = [c["Name"] for c in sandboxes.crm("GET", "customers", params={"limit": 100})["items"]]
    assert "Evented Newco" in names
    now = entity_links(store)
    assert deleted not in now and renamed in now and "be_evt_new" in now
    assert sandboxes.crm("GET", f"customers/{pairs[deleted]}")["Id"] == pairs[deleted], (
        "unlink keeps the customer"
    )
    with store.connect() as conn:
        assert conn.execute(select(audit).where(audit.c.kind == "unlink", audit.c.cb_id == deleted)).first()
    assert writes(sandboxes)["chargebee"] == 0, "business entities are read only"

    # the events stay in the overlap window: the next run sees them again and writes nothing
    before = writes(sandboxes)
    again = run_flow(FLOW)
    assert again.ok, again.summary
    assert writes(sandboxes) == before
    assert again.summary["created"] == {"customcrm": 0, "chargebee": 0}


def test_full_resync_lists_the_entities_again(run_flow, sandboxes, store):
    assert run_flow(FLOW).ok
    before = gets(sandboxes).get("/api/v2/business_entities", 0)
    r = run_flow(FLOW, full_resync=True)
    assert r.ok, r.summary
    assert gets(sandboxes).get("/api/v2/business_entities", 0) > before
