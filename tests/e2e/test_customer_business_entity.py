"""Customer ⇄ Business entity end to end: Chargebee is read only here."""

from __future__ import annotations

import pytest
import requests
from crmsync.store.schema import link
from sqlalchemy import select

from tests.e2e.test_contact_customer import writes

pytestmark = pytest.mark.e2e


def test_entities_link_by_name_create_crm_customers_and_never_write_chargebee(run_flow, sandboxes, store):
    first = run_flow("customer_business_entity")
    assert first.ok, (first.failed_tasks, first.summary)
    s = first.summary
    assert s["linked_by_match"] >= 3, s
    assert s["created"]["chargebee"] == 0 and s["updated"]["chargebee"] == 0
    assert s["created"]["customcrm"] >= 1
    assert s["skipped"] >= 1 and s["limitations"]
    # which customers were not synced, and why, is in the summary itself
    assert len(s["skipped_records"]) == min(s["skipped"], 20), s
    assert all("CUS-" in r and "Chargebee" in r for r in s["skipped_records"]), s["skipped_records"]
    cb_writes = writes(sandboxes)["chargebee"]
    assert cb_writes == 0, "business entities are read only: nothing may be written to Chargebee"
    before = writes(sandboxes)
    assert run_flow("customer_business_entity").ok and writes(sandboxes) == before


def test_crm_edit_of_a_linked_name_is_restored_and_reported(run_flow, sandboxes, store):
    assert run_flow("customer_business_entity").ok
    with store.connect() as conn:
        crm_id, cb_id = conn.execute(
            select(link.c.crm_id, link.c.cb_id).where(link.c.flow == "customer_business_entity")
        ).first()
    # Chargebee documents no retrieve of an entity: the sandbox's admin API shows it
    entity = requests.get(
        f"{sandboxes.cb_url}/_sandbox/records/business_entities/{cb_id}", timeout=10
    ).json()["record"]
    sandboxes.crm("PATCH", f"customers/{crm_id}", json={"Name": "Renamed in CRM"})
    r = run_flow("customer_business_entity")
    assert r.ok and r.summary["reverted_read_only"] == 1, r.summary
    assert sandboxes.crm("GET", f"customers/{crm_id}")["Name"] == entity["name"]


def test_contact_company_relation_converges_whatever_the_order(run_flow, sandboxes, store):
    """contact_customer first (entities not linked yet), then the entities, then contacts again.

    A customer that was already in Chargebee gives its contact the company linked to its
    entity; a customer the sync created (under Chargebee's default entity, as no entity was
    linked yet) leaves its contact's own company alone, blank or not, as when the entity
    flow runs first (test_entity_on_create.py)."""
    seed_company = {c["Id"]: c.get("CustomerId") for c in sandboxes.crm_contacts()}
    first = run_flow("contact_customer")
    assert first.ok
    assert any(
        "not linked yet: flow customer_business_entity links it" in p["reason"]
        for p in first.summary["problems"]
    )
    assert run_flow("customer_business_entity").ok
    again = run_flow("contact_customer")
    assert again.ok, again.summary
    with store.connect() as conn:
        entity_links = dict(
            conn.execute(
                select(link.c.cb_id, link.c.crm_id).where(link.c.flow == "customer_business_entity")
            ).all()
        )
        contact_links = conn.execute(
            select(link.c.crm_id, link.c.cb_id).where(link.c.flow == "contact_customer")
        ).all()
    checked = kept = 0
    for crm_id, cb_id in contact_links:
        company = sandboxes.crm("GET", f"contacts/{crm_id}")["CustomerId"]
        if cb_id == f"crm-{crm_id}":  # created by the sync
            assert company == seed_company[crm_id], crm_id
            kept += 1
            continue
        be = sandboxes.cb("GET", f"customers/{cb_id}")["customer"].get("business_entity_id")
        if be and be in entity_links:
            assert company == entity_links[be], crm_id
            checked += 1
    assert checked >= 3 and kept >= 3, (checked, kept)
    # and nothing waits any more for that reason
    final = run_flow("contact_customer")
    assert final.ok and not any("customer_business_entity" in p["reason"] for p in final.summary["problems"])


def test_entity_edits_and_new_entities_reach_customcrm(run_flow, sandboxes, store):
    assert run_flow("customer_business_entity").ok
    with store.connect() as conn:
        crm_id, cb_id = conn.execute(
            select(link.c.crm_id, link.c.cb_id).where(link.c.flow == "customer_business_entity")
        ).first()
    admin = f"{sandboxes.cb_url}/_sandbox/records/business_entities"
    requests.post(admin, json={"id": cb_id, "name": "Renamed in Chargebee AS"}, timeout=10).raise_for_status()
    requests.post(
        admin, json={"id": "be_new_co", "name": "Brand New Co", "status": "active"}, timeout=10
    ).raise_for_status()
    r = run_flow("customer_business_entity")
    assert r.ok, r.summary
    assert r.summary["updated"]["customcrm"] == 1 and r.summary["created"]["customcrm"] == 1, r.summary
    assert sandboxes.crm("GET", f"customers/{crm_id}")["Name"] == "Renamed in Chargebee AS"
    names = [c["Name"] for c in sandboxes.crm("GET", "customers", params={"limit": 100})["items"]]
    assert "Brand New Co" in names
