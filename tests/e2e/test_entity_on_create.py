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
