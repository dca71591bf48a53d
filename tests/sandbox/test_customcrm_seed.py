"""The committed seed files are current, deterministic and show what the first run must show.

The first sync on a fresh machine is the product's demo: matches (with email case and
blank differences), creates on both sides, updates and conflicts, two records that must
be quarantined, and the cross-flow references (companies, products, users, quotes and
orders). These tests keep the seed honest about that.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sandbox.customcrm.schema import RESOURCES, validate_body
from sandbox.customcrm.store import Store
from sandbox.seed import generate
from tests.sandbox.conftest_customcrm import REPO_ROOT

SEED_DIR = REPO_ROOT / "sandbox" / "seed"

# Chargebee's documented limits for customer fields the sync writes.
CB_LIMITS = {"first_name": 150, "last_name": 150, "email": 70, "phone": 50, "company": 250}


@pytest.fixture(scope="module")
def crm() -> dict[str, list[dict[str, Any]]]:
    return json.loads((SEED_DIR / "customcrm.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def cb() -> dict[str, list[dict[str, Any]]]:
    return json.loads((SEED_DIR / "chargebee.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _norm(email: str | None) -> str:
    return (email or "").strip().casefold()


def test_committed_files_equal_a_fresh_generation(tmp_path: Path) -> None:
    """Regenerate with `python -m sandbox.seed.generate` after changing the generator."""
    generate.main(tmp_path)
    for name in ("customcrm.json", "chargebee.json"):
        assert (tmp_path / name).read_bytes() == (SEED_DIR / name).read_bytes(), f"{name} is stale"


def test_sizes_match_the_scenario(crm: dict[str, Any], cb: dict[str, Any]) -> None:
    sizes = {f"crm.{k}": len(v) for k, v in crm.items()} | {f"cb.{k}": len(v) for k, v in cb.items()}
    assert sizes == {
        "crm.users": 5,
        "crm.customers": 8,
        "crm.products": 12,
        "crm.contacts": 40,
        "crm.quotes": 6,
        "crm.orders": 6,
        "cb.business_entities": 5,
        "cb.item_families": 2,
        "cb.items": 10,
        "cb.customers": 35,
        "cb.invoices": 11,
        "cb.orders": 10,
    }


def test_contacts_overlap_with_realistic_differences(crm: dict[str, Any], cb: dict[str, Any]) -> None:
    by_email = {_norm(c["email"]): c for c in cb["customers"]}
    pairs = [(c, by_email[_norm(c["Email"])]) for c in crm["contacts"] if _norm(c["Email"]) in by_email]
    assert len(pairs) == 20
    assert len(by_email) == len(cb["customers"])  # Chargebee emails are unique after normalising
    raw_differs = sum(c["Email"] != k["email"] for c, k in pairs)
    phone_differs = sum(bool(c["Phone"] and k.get("phone") and c["Phone"] != k["phone"]) for c, k in pairs)
    city_differs = sum(c["City"] != k["billing_address"]["city"] for c, k in pairs)
    blank_one_side = sum(
        bool(c["Phone"]) != bool(k.get("phone"))
        or bool(c["Company"]) != bool(k.get("company"))
        or bool(c["ZipCode"]) != bool(k["billing_address"].get("zip"))
        for c, k in pairs
    )
    assert (raw_differs, phone_differs, city_differs, blank_one_side) == (4, 4, 3, 3)


def test_exactly_two_deliberately_bad_contacts(crm: dict[str, Any], cb: dict[str, Any]) -> None:
    """One invalid email and one 200-character first name; nothing else breaks a limit."""
    contacts = RESOURCES["contacts"]
    bad = {}
    for record in crm["contacts"]:
        body = {k: v for k, v in record.items() if k in contacts.by_name}
        errors = validate_body(contacts, body, creating=True, ref_exists=lambda r, i: None)
        too_long_for_cb = [k for k in ("FirstName", "LastName") if len(record[k] or "") > 150]
        if errors or too_long_for_cb:
            bad[record["Id"]] = (errors, too_long_for_cb)
    assert sorted(bad.values(), key=str) == [
        ([("Email", "is not a valid email address")], []),
        ([], ["FirstName"]),
    ]
    assert [c["Email"] for c in crm["contacts"] if "@@" in (c["Email"] or "")] == ["maria.lopez@@example"]
    assert [len(c["FirstName"]) for c in crm["contacts"] if len(c["FirstName"]) > 150] == [200]
    for customer in cb["customers"]:
        for key, limit in CB_LIMITS.items():
            assert len(customer.get(key) or "") <= limit, (customer["id"], key)
        assert len(customer["billing_address"]["country"]) == 2
        assert customer["id"].startswith("cust_AzZ") and len(customer["id"]) <= 50


def test_cross_flow_references_hold(crm: dict[str, Any], cb: dict[str, Any]) -> None:
    ids = {name: {r["Id"] for r in records} for name, records in crm.items()}
    for name, records in crm.items():
        spec = RESOURCES[name]
        for record in records:
            for field in spec.fields:
                if field.kind == "ref" and record[field.name] is not None:
                    assert record[field.name] in ids[field.ref], (record["Id"], field.name)
    norm_name = {" ".join(c["Name"].split()).casefold() for c in crm["customers"]}
    assert sum(" ".join(b["name"].split()).casefold() in norm_name for b in cb["business_entities"]) == 4
    skus = {p["Sku"].lower() for p in crm["products"]}
    assert sum(item["id"] in skus for item in cb["items"]) == 8
    assert {item["item_family_id"] for item in cb["items"]} == {f["id"] for f in cb["item_families"]}
    users = {u["Email"] for u in crm["users"]}
    created_by = Counter(o["created_by"] in users for o in cb["orders"])
    assert created_by[True] >= 6 and created_by[False] >= 1
    customers = {c["id"] for c in cb["customers"]}
    invoices = {i["id"] for i in cb["invoices"]}
    assert all(o["customer_id"] in customers and o["invoice_id"] in invoices for o in cb["orders"])
    quote_numbers = {q["Number"] for q in crm["quotes"]}
    referenced = [o["reference_id"] for o in cb["orders"] if o.get("reference_id")]
    assert len(referenced) == 3 and set(referenced) <= quote_numbers
    doc_numbers = {o["document_number"] for o in cb["orders"]}
    assert sum(o["Number"] in doc_numbers for o in crm["orders"]) == 3


def test_crm_seed_loads_with_unique_increasing_timestamps() -> None:
    store = Store(None, SEED_DIR / "customcrm.json")
    stamps = [r["UpdatedAt"] for name in RESOURCES for r in store.all(name)]
    assert len(stamps) == len(set(stamps)) == 77
    created = store.create("contacts", {"FirstName": "New"})
    assert created["Id"] == "CON-000041" and created["UpdatedAt"] > max(stamps)
