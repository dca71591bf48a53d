"""A customer created from a contact lands under the business entity of the contact's company.

Chargebee fixes a customer's ``business_entity_id`` at creation (an update cannot change
it), and the field otherwise flows only to Customcrm. Found by the all-flows scheduler
test: customers were created under Chargebee's default entity, and the next run copied
that entity's company over every such contact's own company. Now the create carries the
entity linked to the contact's company (``on_create``); a company with no entity gets
Chargebee's default, said in the summary, and the contact keeps its company.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from crmsync.store.schema import TABLES
from sqlalchemy import delete

from tests.e2e.test_contact_customer import writes

pytestmark = pytest.mark.e2e


def cb_customer(sandboxes: Any, customer_id: str) -> dict[str, Any]:
    return dict(sandboxes.cb("GET", f"customers/{customer_id}")["customer"])


def test_created_customers_take_the_entity_of_the_contacts_company(run_flow: Any, sandboxes: Any) -> None:
    assert run_flow("customer_business_entity").ok
    first = run_flow("contact_customer")
    assert first.ok, first

    # CON-000022's company CUS-000002 (Nordvik Maskin AB) is linked to entity be_nordvik.
    assert cb_customer(sandboxes, "crm-CON-000022")["business_entity_id"] == "be_nordvik"
    # CON-000025's company CUS-000005 has no entity: Chargebee's default, reported.
    assert cb_customer(sandboxes, "crm-CON-000025")["business_entity_id"] == "be_fjordlys"
    reasons = [p["reason"] for p in first.summary["problems"] if p["kind"] == "created_with_default"]
    assert any("CON-000025" in r and "CUS-000005" in r for r in reasons), first.summary["problems"]

    before = writes(sandboxes)
    second = run_flow("contact_customer")
    assert second.ok
    assert writes(sandboxes) == before, "the run after the creates wrote (Chargebee's default copied back?)"
    contacts = {c["Id"]: c for c in sandboxes.crm_contacts()}
    assert contacts["CON-000025"]["CustomerId"] == "CUS-000005"
    assert contacts["CON-000022"]["CustomerId"] == "CUS-000002"


def _reset(sandboxes: Any, store: Any) -> None:
    for base in (sandboxes.cb_url, sandboxes.crm_url):
        requests.post(f"{base}/_sandbox/reset", json={}, timeout=30).raise_for_status()
    with store.begin() as conn:
        for table in TABLES:
            conn.execute(delete(table))


def _companies(sandboxes: Any) -> dict[str, Any]:
    """Contact email → the name of its company. Not ids: contacts and companies the sync
    creates get Customcrm ids in the order the writes land, which differs between runs."""
    names = {c["Id"]: c["Name"] for c in sandboxes.crm("GET", "customers", params={"limit": 500})["items"]}
    return {
        str(c["Email"]).strip().lower(): names.get(c["CustomerId"], c["CustomerId"])
        for c in sandboxes.crm_contacts()
        if not c.get("Deleted")
    }


def test_a_contacts_company_does_not_depend_on_which_flow_ran_first(
    run_flow: Any, sandboxes: Any, store: Any
) -> None:
    """contact_customer before customer_business_entity has linked any entity (all DAGs
    unpaused at once on a first sync): customers of company-less contacts are created
    under Chargebee's default entity, which is not linked yet. Once it is, the next run
    must not fill that entity's company into those contacts (before the fix, 7 seed
    contacts got it): the outcome must equal that of running the entity flow first."""
    first = run_flow("contact_customer")
    assert first.ok, first
    created = {c["id"] for c in sandboxes.cb_customers()}
    blank = [
        c["Id"]
        for c in sandboxes.crm_contacts()
        if not c.get("CustomerId") and not c.get("Deleted") and f"crm-{c['Id']}" in created
    ]
    assert blank, "the seed should have company-less contacts that the run created as customers"
    assert all(cb_customer(sandboxes, f"crm-{i}")["business_entity_id"] == "be_fjordlys" for i in blank)
    assert run_flow("customer_business_entity").ok  # links the default entity be_fjordlys
    assert run_flow("contact_customer").ok
    contacts = {c["Id"]: c for c in sandboxes.crm_contacts()}
    filled = {i: contacts[i]["CustomerId"] for i in blank if contacts[i].get("CustomerId")}
    assert not filled, f"the default entity's company was filled into company-less contacts: {filled}"
    before = writes(sandboxes)
    assert run_flow("contact_customer").ok
    assert writes(sandboxes) == before, "not converged"
    entity_last = _companies(sandboxes)

    _reset(sandboxes, store)
    assert run_flow("customer_business_entity").ok
    assert run_flow("contact_customer").ok
    assert run_flow("contact_customer").ok
    entity_first = _companies(sandboxes)
    differ = {k: (v, entity_first.get(k)) for k, v in entity_last.items() if entity_first.get(k) != v}
    assert not differ, f"contact → company (entity flow last, entity flow first): {differ}"
