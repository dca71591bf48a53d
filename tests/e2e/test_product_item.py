"""Product ⇄ Item end to end."""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_contact_customer import writes

pytestmark = pytest.mark.e2e


def items(sb):
    out, offset = [], None
    while True:
        params = {"limit": 100, "status[in]": json.dumps(["active", "archived", "deleted"])}
        if offset:
            params["offset"] = offset
        page = sb.cb("GET", "items", params=params)
        out += [e["item"] for e in page["list"]]
        offset = page.get("next_offset")
        if not offset:
            return out


def products(sb):
    return sb.crm("GET", "products", params={"limit": 100})["items"]


def test_products_and_items_link_by_sku_create_both_ways_and_settle(run_flow, sandboxes, store):
    first = run_flow("product_item")
    assert first.ok, (first.failed_tasks, first.summary)
    s = first.summary
    assert s["linked_by_match"] >= 6, s
    assert s["created"]["chargebee"] >= 1 and s["created"]["customcrm"] >= 1, s
    by_id = {i["id"]: i for i in items(sandboxes)}
    for p in products(sandboxes):
        if p.get("Deleted"):
            continue
        item = by_id.get(p["Sku"].lower())
        assert item is not None, f"product {p['Id']} has no item"
        assert item["name"] == p["Name"]
        assert (item["status"] == "archived") == bool(p["Archived"])
    families = {
        f["id"]
        for f in sandboxes.cb("GET", "item_families", params={"limit": 100})["list"]
        and [e["item_family"] for e in sandboxes.cb("GET", "item_families", params={"limit": 100})["list"]]
    }
    assert "nordpulse-software" in families

    before = writes(sandboxes)
    second = run_flow("product_item")
    assert second.ok and writes(sandboxes) == before, second.summary


def test_archive_in_crm_archives_the_item_and_back(run_flow, sandboxes, store):
    assert run_flow("product_item").ok
    p = next(p for p in products(sandboxes) if not p["Archived"] and not p.get("Deleted"))
    sandboxes.crm("PATCH", f"products/{p['Id']}", json={"Archived": True, "Name": "Renamed in CRM"})
    r = run_flow("product_item")
    assert r.ok, r.summary
    item = sandboxes.cb("GET", f"items/{p['Sku'].lower()}")["item"]
    assert item["status"] == "archived" and item["name"] == "Renamed in CRM"
    sandboxes.cb("POST", f"items/{item['id']}", data={"status": "active", "description": "From Chargebee"})
    assert run_flow("product_item").ok
    again = sandboxes.crm("GET", f"products/{p['Id']}")
    assert again["Archived"] is False and again["Description"] == "From Chargebee"


def test_kind_edit_in_crm_is_restored_from_chargebee(run_flow, sandboxes, store):
    assert run_flow("product_item").ok
    p = next(p for p in products(sandboxes) if p["Kind"] == "plan" and not p.get("Deleted"))
    item_id = p["Sku"].lower()
    if sandboxes.cb("GET", f"items/{item_id}")["item"]["type"] != "plan":
        pytest.skip("seed changed")
    sandboxes.crm("PATCH", f"products/{p['Id']}", json={"Kind": "addon"})
    r = run_flow("product_item")
    assert r.ok and r.summary["reverted_read_only"] == 1, r.summary
    assert sandboxes.crm("GET", f"products/{p['Id']}")["Kind"] == "plan"
