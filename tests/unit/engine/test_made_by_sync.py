"""Records the sync made name their source: the ids and claims used to link them again
when the run that made them never recorded the link (engine/plan.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from crmsync.engine.plan import chargebee_create_id, made_for, made_id_prefix, paired_by_claims
from crmsync.mapping.model import Mapping, load_mapping
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def contacts() -> Mapping:
    return load_mapping(ROOT / "include" / "mappings" / "contact_customer.yaml")


@pytest.fixture(scope="module")
def products() -> Mapping:
    return load_mapping(ROOT / "include" / "mappings" / "product_item.yaml")


def test_an_id_made_from_the_customcrm_id_names_it(contacts: Mapping) -> None:
    assert made_id_prefix(contacts) == "crm-"
    assert chargebee_create_id(contacts, "CON-000055") == "crm-CON-000055"
    assert made_for(contacts, "crm-CON-000055") == "CON-000055"


@pytest.mark.parametrize("cb_id", ["cust_AzZ3mf4R1EF7OkVQ", "crm-", "CRM-CON-1", "xcrm-CON-1"])
def test_other_ids_name_nobody(contacts: Mapping, cb_id: str) -> None:
    assert made_for(contacts, cb_id) is None


def test_an_id_made_from_fields_is_left_to_matching(products: Mapping) -> None:
    """create_id "{sku}": the id is the match key itself, so key matching finds it."""
    assert made_id_prefix(products) is None
    assert made_for(products, "np-growth") is None


def test_a_renamed_id_reads_as_the_id_it_spells(contacts: Mapping) -> None:
    """A Customcrm id with characters Chargebee refuses is renamed by the create, so
    "CON 1" and "CON_1" would share one Chargebee id (a known limit, in docs/contracts.md:
    Customcrm ids are expected to hold only letters, digits and _ - . @ ~)."""
    made = chargebee_create_id(contacts, "CON 1")
    assert made == "crm-CON_1" == chargebee_create_id(contacts, "CON_1")
    assert made_for(contacts, made) == "CON_1"


@given(st.text(alphabet=st.characters(codec="ascii"), min_size=1, max_size=80))
def test_made_for_inverts_the_create_id_whenever_it_answers(crm_id: str) -> None:
    contacts = load_mapping(ROOT / "include" / "mappings" / "contact_customer.yaml")
    made = chargebee_create_id(contacts, crm_id)
    assert made is not None
    back = made_for(contacts, made)
    # whatever it answers makes the same id again (the claim is checked, never guessed)
    assert back is None or chargebee_create_id(contacts, back) == made
    if len(crm_id) <= 46 and crm_id == made.removeprefix("crm-"):
        assert back == crm_id


def test_claims_pair_records_only_when_nobody_else_claims_them() -> None:
    claims = [("C1", "crm-C1"), ("C1", "crm-C1"), ("C2", "K2"), ("C3", "K2"), ("C4", "K4"), ("C4", "crm-C4")]
    assert paired_by_claims(claims) == [("C1", "crm-C1")]
    assert paired_by_claims([]) == []
