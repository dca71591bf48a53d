"""customer_business_entity learns entities from Chargebee's events feed.

Chargebee documents no list or retrieve of business entities (the official SDK has only
``create_transfers`` and ``get_transfers``); ``business_entity_created/updated/deleted``
events are the documented way to see them. The first run and ``full_resync`` read the
whole event history, then the ids customers and transfers name; later runs read the
events that occurred since the watermark (minus the overlap). The sandbox, like Chargebee,
has no ``GET /business_entities``: it answers 404."""

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
    assert listed.get("/api/v2/events", 0) >= 1, "the first run reads the entity events"
    assert listed.get("/api/v2/business_entities", 0) == 0, "and never the undocumented list"
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
    ), "an incremental run reads the events only"
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


def test_full_resync_reads_the_whole_event_history_again(run_flow, sandboxes, store):
    assert run_flow(FLOW).ok
    links = entity_links(store)
    before = gets(sandboxes)
    r = run_flow(FLOW, full_resync=True)
    assert r.ok, r.summary
    after = gets(sandboxes)
    assert after.get("/api/v2/events", 0) > before.get("/api/v2/events", 0)
    assert after.get("/api/v2/customers", 0) > before.get("/api/v2/customers", 0)
    assert after.get("/api/v2/business_entities", 0) == 0
    assert entity_links(store) == links and r.summary["created"] == {"customcrm": 0, "chargebee": 0}


def norm(name: str) -> str:
    return " ".join(name.split()).casefold()


def test_a_first_run_completes_with_the_business_entity_list_answering_404(run_flow, sandboxes, store):
    """Issue 12: a real site may answer GET /business_entities 404; nothing depends on it."""
    for path in ("business_entities", "business_entities/be_fjordlys"):
        refused = requests.get(f"{sandboxes.cb_url}/api/v2/{path}", auth=("sandbox_api_key", ""), timeout=10)
        assert refused.status_code == 404 and refused.json()["api_error_code"] == "resource_not_found"
    requests.post(f"{sandboxes.cb_url}/_sandbox/stats/reset", timeout=10).raise_for_status()

    r = run_flow(FLOW)
    assert r.ok, (r.failed_tasks, r.summary)
    assert gets(sandboxes).get("/api/v2/business_entities", 0) == 0
    # linked as before: each live entity to the Customcrm customer of the same name, or to
    # the customer the run created for it
    entities = requests.get(f"{sandboxes.cb_url}/_sandbox/records/business_entities", timeout=10).json()
    live = {e["id"]: e["name"] for e in entities["records"] if not e.get("deleted")}
    pairs = entity_links(store)
    assert set(pairs) == set(live)
    for cb_id, crm_id in pairs.items():
        assert norm(sandboxes.crm("GET", f"customers/{crm_id}")["Name"]) == norm(live[cb_id])
    s = r.summary
    assert s["linked_by_match"] >= 3 and s["created"]["customcrm"] >= 1, s
    assert writes(sandboxes)["chargebee"] == 0


def test_an_entity_named_by_a_customer_but_by_no_event_is_skipped_with_a_reason(run_flow, sandboxes, store):
    """Its events are older than Chargebee keeps: the run says so per entity, and a save of
    the entity in Chargebee (a business_entity_updated event) lets the next run link it."""
    admin = f"{sandboxes.cb_url}/_sandbox/records"
    silent = {"id": "be_silent", "name": "Silent Holding AS", "status": "active"}
    requests.post(
        f"{admin}/business_entities", json={"records": [silent], "emit": False}, timeout=10
    ).raise_for_status()
    sandboxes.cb("POST", "customers", data={"id": "cus_silent", "business_entity_id": "be_silent"})

    r = run_flow(FLOW)
    assert r.ok, (r.failed_tasks, r.summary)
    assert "be_silent" not in entity_links(store)
    [why] = [x for x in r.summary["skipped_records"] if "be_silent" in x]
    assert "customer cus_silent" in why and "Settings > Business entities" in why, why
    names = [norm(c["Name"]) for c in sandboxes.crm("GET", "customers", params={"limit": 100})["items"]]
    assert norm(silent["name"]) not in names, "nothing is created from an entity whose name is unknown"

    requests.post(
        f"{admin}/business_entities", json={"id": "be_silent", "name": "Silent Holding AS"}, timeout=10
    )
    again = run_flow(FLOW)
    assert again.ok, again.summary
    assert "be_silent" in entity_links(store)
    assert not any("be_silent" in x for x in again.summary["skipped_records"])
