"""Values Chargebee assigns when the sync creates a record there (engine/assigned.py), and
the base a found-again created record starts from (engine/plan.made_base)."""

from __future__ import annotations

from pathlib import Path

import pytest
from crmsync.engine.assigned import assigned_on_create
from crmsync.engine.canonical import SideRecord
from crmsync.engine.merge import merge
from crmsync.engine.plan import made_base
from crmsync.mapping.model import Mapping, ReadOnlyEdits, Side, load_mapping
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def orders() -> Mapping:
    return load_mapping(ROOT / "include" / "mappings" / "order_order.yaml")


@pytest.fixture(scope="module")
def contacts() -> Mapping:
    return load_mapping(ROOT / "include" / "mappings" / "contact_customer.yaml")


def test_a_number_chargebee_assigned_is_for_customcrm_to_take(orders: Mapping) -> None:
    sent = {"invoice_id": "INV-1011", "status": "new", "note": "rush"}
    created = {**sent, "number": "5011", "total": 1200, "currency": "EUR", "owner_id": None}
    crm = {**sent, "number": "SO-2025-0103", "total": 1200, "currency": "EUR", "owner_id": "USR-1"}
    found = assigned_on_create(orders, sent, created, crm)
    assert [(a.field, a.customcrm, a.chargebee) for a in found] == [("number", "SO-2025-0103", "5011")]
    message = found[0].message(orders, "crm-ORD-000006")
    assert "assigned by Chargebee when the sync created order crm-ORD-000006" in message
    assert "No one edited it" in message and "SO-2025-0103" in message


def test_sent_kept_blank_or_unreturned_values_are_left_alone(orders: Mapping, contacts: Mapping) -> None:
    # sent: the create set it; owner_id: read_only_edits keep; a blank assigns nothing;
    # a field the response did not carry is unknown
    sent = {"number": "SO-1"}
    created = {"number": "5011", "owner_id": "USR-9", "total": None}
    assert assigned_on_create(orders, sent, created, {"number": "SO-1", "total": 5}) == []
    # a customer's default entity: the contact keeps its company (keep), nothing to write
    assert assigned_on_create(contacts, {"email": "a@b.co"}, {"company_id": "CUS-000001"}, {}) == []


@given(
    number=st.one_of(st.none(), st.text(min_size=1, max_size=12)),
    crm_number=st.one_of(st.none(), st.text(min_size=1, max_size=12)),
    sent=st.booleans(),
)
def test_after_the_assigned_write_the_next_merge_writes_nothing(
    orders: Mapping, number: str | None, crm_number: str | None, sent: bool
) -> None:
    """What update_links records after a create (the created value as the base) and what
    Customcrm holds after the assigned write agree: the next run has nothing to write."""
    changes = {"number": crm_number} if sent else {}
    created = {"number": number if not sent else crm_number}
    crm = {"number": crm_number}
    for a in assigned_on_create(orders, changes, created, crm):
        crm[a.field] = a.chargebee
    base = {"number": created["number"]}
    result = merge(orders, base, {**crm}, {**created})
    assert not result.to_customcrm and not result.to_chargebee, (base, crm, created)


def test_a_found_again_created_record_starts_from_what_its_create_could_not_set(contacts: Mapping) -> None:
    made = SideRecord(Side.CHARGEBEE, "crm-CON-1", {"email": "a@b.co", "company_id": "CUS-000001"})
    assert made_base(contacts, made) == {"company_id": "CUS-000001"}
    # the first-link merge then keeps the contact's missing company, as a clean create does
    crm = {"email": "a@b.co", "company_id": None}
    result = merge(contacts, made_base(contacts, made), crm, made.values)
    assert result.to_customcrm == {}
    assert contacts.field("company_id").read_only_edits is ReadOnlyEdits.KEEP
