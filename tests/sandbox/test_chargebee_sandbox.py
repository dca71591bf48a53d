"""Chargebee sandbox over raw HTTP: the behaviour docs/contracts.md section 1 promises."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.chargebee.server import serve_in_thread
from tests.sandbox.conftest import CB_API_KEY, T0, CbSandbox


def create_customer(sb: CbSandbox, **params: Any) -> dict[str, Any]:
    resp = sb.api.post("/customers", data=params)
    assert resp.status_code == 200, resp.text
    return resp.json()["customer"]  # type: ignore[no-any-return]


def error_of(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["http_status_code"] == status
    return body  # type: ignore[no-any-return]


def all_pages(sb: CbSandbox, params: dict[str, Any], path: str = "/customers") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    offset = None
    while True:
        page_params = dict(params)
        if offset:
            page_params["offset"] = offset
        body = sb.api.get(path, params=page_params).json()
        out.extend(body["list"])
        offset = body.get("next_offset")
        if not offset:
            return out


# ============================================================================ customers CRUD


def test_customer_lifecycle(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    created = create_customer(
        sb,
        id="cust-1",
        first_name="Ada",
        last_name="Lovelace",
        email="ada@example.com",
        company="Analytical Engines",
        phone="+44 1",
        meta_data=json.dumps({"crm_id": "42"}),
        **{
            "billing_address[line1]": "1 Street",
            "billing_address[city]": "London",
            "billing_address[country]": "GB",
            "billing_address[zip]": "N1",
        },
    )
    assert created["object"] == "customer"
    assert created["deleted"] is False
    assert created["meta_data"] == {"crm_id": "42"}
    assert created["billing_address"] == {
        "line1": "1 Street",
        "city": "London",
        "country": "GB",
        "zip": "N1",
        "validation_status": "not_validated",
        "object": "billing_address",
    }
    assert created["created_at"] == created["updated_at"] == int(T0)
    for key in (
        "auto_collection",
        "net_term_days",
        "taxability",
        "pii_cleared",
        "channel",
        "preferred_currency_code",
        "resource_version",
    ):
        assert key in created

    got = sb.api.get("/customers/cust-1").json()["customer"]
    assert got == created

    sb.clock.advance(5)
    updated = sb.api.post("/customers/cust-1", data={"company": "Babbage & Co", "phone": ""}).json()[
        "customer"
    ]
    assert updated["company"] == "Babbage & Co"
    assert "phone" not in updated, "an empty value clears the attribute (absent, like Chargebee)"
    assert updated["updated_at"] == int(T0) + 5
    assert updated["resource_version"] > created["resource_version"]
    assert updated["billing_address"] == created["billing_address"]

    # Chargebee schedules the delete and purges a few minutes later (tests/sandbox/test_customer_deletion.py)
    deleted = sb.api.post("/customers/cust-1/delete").json()["customer"]
    assert deleted["deleted"] is False
    sb.clock.advance(300)
    body = error_of(sb.api.get("/customers/cust-1"), 404)
    assert body["api_error_code"] == "resource_not_found"
    error_of(sb.api.post("/customers/cust-1", data={"company": "x"}), 404)

    assert [e["customer"]["id"] for e in sb.api.get("/customers").json()["list"]] == []
    listed = sb.api.get("/customers", params={"include_deleted": "true"}).json()["list"]
    assert listed == [], "a purged customer is gone from lists, include_deleted too"


def test_create_without_id_generates_one(chargebee_sandbox: CbSandbox) -> None:
    a = create_customer(chargebee_sandbox, first_name="A")
    b = create_customer(chargebee_sandbox, first_name="B")
    assert a["id"] and b["id"] and a["id"] != b["id"]
    assert len(a["id"]) <= 50


def test_duplicate_id_is_duplicate_entry(chargebee_sandbox: CbSandbox) -> None:
    create_customer(chargebee_sandbox, id="dup")
    body = error_of(chargebee_sandbox.api.post("/customers", data={"id": "dup"}), 400)
    assert body["api_error_code"] == "duplicate_entry"
    assert body["param"] == "id"
    assert body["type"] == "invalid_request"
    # A deleted customer's id stays taken.
    chargebee_sandbox.api.post("/customers/dup/delete")
    assert error_of(chargebee_sandbox.api.post("/customers", data={"id": "dup"}), 400)["param"] == "id"


def test_plain_update_rejects_billing_address(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    create_customer(sb, id="c")
    body = error_of(
        sb.api.post("/customers/c", data={"first_name": "X", "billing_address[city]": "Oslo"}), 400
    )
    assert body["param"] == "billing_address[city]"
    assert body["api_error_code"] == "param_not_allowed"
    assert body["type"] == "invalid_request"
    assert "update_billing_info" in body["message"]
    assert "first_name" not in sb.api.get("/customers/c").json()["customer"], "rejected call changed nothing"
    body = error_of(sb.api.post("/customers/c", data={"vat_number": "NO123"}), 400)
    assert body["param"] == "vat_number"
    body = error_of(sb.api.post("/customers/c", data={"no_such_param": "1"}), 400)
    assert body["param"] == "no_such_param"


def test_update_billing_info_is_an_assignment(chargebee_sandbox: CbSandbox) -> None:
    """Chargebee drops billing-address attributes (and vat_number) not passed again.

    Its reference lists first/last name, email, phone, the address lines, city, state,
    country, zip and the VAT fields, and also says the operation "works like an
    assignment" for every attribute matching one of its params; the sandbox takes the
    stricter reading, so company (a param of the operation) goes too."""
    sb = chargebee_sandbox
    create_customer(
        sb,
        id="c",
        vat_number="NO1",
        **{
            "billing_address[line1]": "Old street",
            "billing_address[city]": "Oslo",
            "billing_address[country]": "NO",
            "billing_address[company]": "Kept AS",
        },
    )
    resp = sb.api.post("/customers/c/update_billing_info", data={"billing_address[city]": "Bergen"})
    cust = resp.json()["customer"]
    assert cust["billing_address"]["city"] == "Bergen"
    assert "line1" not in cust["billing_address"]
    assert "country" not in cust["billing_address"]
    assert "company" not in cust["billing_address"]
    assert "vat_number" not in cust
    body = error_of(sb.api.post("/customers/c/update_billing_info", data={"first_name": "x"}), 400)
    assert body["param"] == "first_name"


LONG = "x" * 300


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"email": "a b@example.com"}, "email"),
        ({"email": "a" * 60 + "@example.com"}, "email"),
        ({"first_name": "x" * 151}, "first_name"),
        ({"last_name": "x" * 151}, "last_name"),
        ({"company": "x" * 251}, "company"),
        ({"phone": "1" * 51}, "phone"),
        ({"auto_collection": "sometimes"}, "auto_collection"),
        ({"net_term_days": "soon"}, "net_term_days"),
        ({"meta_data": "not json"}, "meta_data"),
        ({"meta_data": "[1,2]"}, "meta_data"),
        ({"id": "x" * 51}, "id"),
        ({"id": "has space"}, "id"),
        ({"billing_address[line1]": LONG[:151]}, "billing_address[line1]"),
        ({"billing_address[line2]": LONG[:151]}, "billing_address[line2]"),
        ({"billing_address[city]": LONG[:51]}, "billing_address[city]"),
        ({"billing_address[zip]": "1" * 21}, "billing_address[zip]"),
        ({"billing_address[country]": "Norway"}, "billing_address[country]"),
        ({"billing_address[country]": "XX"}, "billing_address[country]"),
        ({"billing_address[email]": "nope"}, "billing_address[email]"),
        ({"billing_address[planet]": "Mars"}, "billing_address[planet]"),
    ],
)
def test_create_validation(chargebee_sandbox: CbSandbox, params: dict[str, str], param: str) -> None:
    body = error_of(chargebee_sandbox.api.post("/customers", data=params), 400)
    assert body["param"] == param
    assert body["type"] == "invalid_request"
    assert body["api_error_code"] in ("param_wrong_value", "param_not_allowed")
    assert body["message"].startswith(param)
    assert chargebee_sandbox.records("customers") == []


def test_limits_are_inclusive(chargebee_sandbox: CbSandbox) -> None:
    email = "a" * 58 + "@example.com"
    assert len(email) == 70
    c = create_customer(
        chargebee_sandbox,
        first_name="x" * 150,
        company="y" * 250,
        phone="1" * 50,
        email=email,
        id="i" * 50,
        **{"billing_address[zip]": "z" * 20, "billing_address[country]": "se"},
    )
    assert c["billing_address"]["country"] == "SE"


def test_meta_data_accepts_python_literal_from_sdk(chargebee_sandbox: CbSandbox) -> None:
    c = create_customer(chargebee_sandbox, meta_data="{'k': 'v', 'n': 1}")
    assert c["meta_data"] == {"k": "v", "n": 1}


def test_custom_fields_are_stored(chargebee_sandbox: CbSandbox) -> None:
    c = create_customer(chargebee_sandbox, cf_crm_ref="R-1")
    assert c["cf_crm_ref"] == "R-1"


def test_resource_version_strictly_increases(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    create_customer(sb, id="c")
    versions = [
        sb.api.post("/customers/c", data={"first_name": str(i)}).json()["customer"]["resource_version"]
        for i in range(20)
    ]
    assert versions == sorted(set(versions))
    # Simulated clock does not move: updated_at stays, resource_version still grows.
    assert sb.api.get("/customers/c").json()["customer"]["updated_at"] == int(T0)


def test_concurrent_creates_are_thread_safe(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    errors: list[str] = []

    def worker(n: int) -> None:
        with httpx.Client(base_url=sb.api_url, auth=(CB_API_KEY, "")) as client:
            for i in range(10):
                r = client.post("/customers", data={"id": f"t{n}-{i}"})
                if r.status_code != 200:
                    errors.append(r.text)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    records = sb.records("customers")
    assert len(records) == 80
    assert len({r["resource_version"] for r in records}) == 80


def test_any_host_header_is_accepted(chargebee_sandbox: CbSandbox) -> None:
    resp = chargebee_sandbox.api.get("/customers", headers={"Host": "acme-test.chargebee.com"})
    assert resp.status_code == 200


def test_unknown_path_and_method(chargebee_sandbox: CbSandbox) -> None:
    assert (
        error_of(chargebee_sandbox.api.get("/no_such_resource"), 404)["api_error_code"]
        == "resource_not_found"
    )
    assert chargebee_sandbox.api.delete("/customers/x").status_code == 405


# ============================================================================ auth


@pytest.mark.parametrize(
    "auth",
    [None, ("wrong", ""), ("", CB_API_KEY)],
)
def test_auth_failure(chargebee_sandbox: CbSandbox, auth: Any) -> None:
    resp = httpx.get(chargebee_sandbox.api_url + "/customers", auth=auth)
    body = error_of(resp, 401)
    assert body["api_error_code"] == "api_authentication_failed"
    assert "type" not in body


def test_bearer_token_is_not_basic_auth(chargebee_sandbox: CbSandbox) -> None:
    resp = httpx.get(
        chargebee_sandbox.api_url + "/customers", headers={"Authorization": f"Bearer {CB_API_KEY}"}
    )
    error_of(resp, 401)


def test_custom_api_key(chargebee_sandbox_factory: Any) -> None:
    sb = chargebee_sandbox_factory(api_key="other_key")
    assert sb.api.get("/customers").status_code == 200
    assert httpx.get(sb.api_url + "/customers", auth=(CB_API_KEY, "")).status_code == 401


# ============================================================================ lists, filters, paging


def seed_customers(sb: CbSandbox, n: int) -> list[str]:
    records = [
        {
            "id": f"c{i:04d}",
            "email": f"user{i}@example.com",
            "first_name": f"F{i}",
            "created_at": int(T0) - 10_000 + i,
            "updated_at": int(T0) - 10_000 + i,
        }
        for i in range(n)
    ]
    sb.put_records("customers", records, touch=False, emit=False)
    return [r["id"] for r in records]


def test_limit_bounds(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    seed_customers(sb, 150)
    assert len(sb.api.get("/customers").json()["list"]) == 10, "Chargebee's default page size"
    page = sb.api.get("/customers", params={"limit": 100}).json()
    assert len(page["list"]) == 100 and page["next_offset"]
    for bad in ("101", "0", "ten"):
        body = error_of(sb.api.get("/customers", params={"limit": bad}), 400)
        assert body["api_error_code"] == "param_wrong_value"
        assert body["param"] == "limit"


def test_paging_visits_every_record_once_and_ends_without_next_offset(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    ids = seed_customers(sb, 95)
    for params in (
        {"limit": 10},
        {"limit": 7, "sort_by[asc]": "updated_at"},
        {"limit": 100},
        {"limit": 9, "sort_by[desc]": "created_at"},
    ):
        seen = [e["customer"]["id"] for e in all_pages(sb, params)]
        assert sorted(seen) == ids
    last = sb.api.get("/customers", params={"limit": 100}).json()
    assert "next_offset" not in last


def test_sort_orders(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    ids = seed_customers(sb, 5)
    sb.api.post(f"/customers/{ids[0]}", data={"first_name": "edited"})  # now the newest updated_at
    asc = [
        e["customer"]["id"]
        for e in sb.api.get("/customers", params={"sort_by[asc]": "updated_at"}).json()["list"]
    ]
    assert asc == [*ids[1:], ids[0]]
    default = [e["customer"]["id"] for e in sb.api.get("/customers").json()["list"]]
    assert default == list(reversed(ids)), "default order: created_at descending"
    body = error_of(sb.api.get("/customers", params={"sort_by[asc]": "email"}), 400)
    assert body["param"] == "sort_by[asc]"


def test_filters(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    ids = seed_customers(sb, 20)

    def ids_for(params: dict[str, Any]) -> list[str]:
        return sorted(e["customer"]["id"] for e in all_pages(sb, {"limit": 100, **params}))

    assert ids_for({"email[is]": "user3@example.com"}) == ["c0003"]
    assert ids_for({"email[is]": "USER3@Example.com"}) == ["c0003"], "email filter ignores case"
    assert ids_for({"id[is]": "c0004"}) == ["c0004"]
    assert ids_for({"id[in]": json.dumps(["c0001", "c0002", "nope"])}) == ["c0001", "c0002"]
    assert ids_for({"id[in]": "['c0001', 'c0005']"}) == ["c0001", "c0005"], "Python SDK sends str(list)"
    assert ids_for({"id[not_in]": json.dumps(ids[1:])}) == ["c0000"]
    assert ids_for({"first_name[starts_with]": "F1"}) == sorted(f"c{i:04d}" for i in [1, *range(10, 20)])
    t = int(T0) - 10_000
    assert ids_for({"updated_at[after]": t + 17}) == ["c0018", "c0019"]
    assert ids_for({"updated_at[before]": t + 2}) == ["c0000", "c0001"]
    assert ids_for({"updated_at[between]": json.dumps([t + 5, t + 6])}) == ["c0005", "c0006"]
    assert ids_for({"updated_at[after]": t + 17, "updated_at[before]": t + 19}) == ["c0018"]
    assert ids_for({"email[is_present]": "false"}) == []
    for bad in (
        {"updated_at[after]": "yesterday"},
        {"email[after]": "x"},
        {"id[in]": "a,b"},
        {"nonsense[is]": "x"},
        {"offset": "garbage!"},
    ):
        assert sb.api.get("/customers", params=bad).status_code == 400, bad


def test_include_deleted(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    seed_customers(sb, 3)
    # a record marked deleted at once (admin; the API's customer delete is scheduled and purged)
    sb.admin.post("/records/customers/c0001/delete")
    plain = [e["customer"]["id"] for e in all_pages(sb, {})]
    assert sorted(plain) == ["c0000", "c0002"]
    with_deleted = {
        e["customer"]["id"]: e["customer"]["deleted"] for e in all_pages(sb, {"include_deleted": "true"})
    }
    assert with_deleted == {"c0000": False, "c0001": True, "c0002": False}
    assert sorted(e["customer"]["id"] for e in all_pages(sb, {"include_deleted": "false"})) == sorted(plain)


def test_incremental_read_sees_edits_after_watermark(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    seed_customers(sb, 10)
    sb.clock.advance(100)
    sb.api.post("/customers/c0004", data={"last_name": "changed"})
    sb.admin.post("/records/customers/c0007/delete")  # marked deleted at once (admin)
    params = {"updated_at[after]": int(T0) + 50, "sort_by[asc]": "updated_at", "include_deleted": "true"}
    got = [(e["customer"]["id"], e["customer"]["deleted"]) for e in all_pages(sb, params)]
    assert got == [("c0004", False), ("c0007", True)]


def test_paging_never_skips_records_edited_concurrently(chargebee_sandbox: CbSandbox) -> None:
    """Records edited between pages move behind the cursor: seen again, never skipped."""
    sb = chargebee_sandbox
    ids = seed_customers(sb, 120)
    seen: list[str] = []
    offset = None
    page_no = 0
    while True:
        params: dict[str, Any] = {"limit": 10, "sort_by[asc]": "updated_at", "include_deleted": "true"}
        if offset:
            params["offset"] = offset
        body = sb.api.get("/customers", params=params).json()
        seen += [e["customer"]["id"] for e in body["list"]]
        # Between pages: edit records not yet seen, already seen, and the next one up.
        sb.clock.advance(1)
        for cid in (ids[(page_no * 37) % 120], ids[min(119, len(seen))], ids[(page_no * 11) % 120]):
            assert sb.api.post(f"/customers/{cid}", data={"first_name": f"p{page_no}"}).status_code == 200
        page_no += 1
        offset = body.get("next_offset")
        if not offset:
            break
    assert set(seen) == set(ids)


def test_paging_with_a_real_concurrent_writer(chargebee_sandbox_factory: Any) -> None:
    from sandbox.common.clock import Clock

    sb = chargebee_sandbox_factory(clock=Clock())  # real time: edits get fresh updated_at
    ids = [
        r["id"]
        for r in sb.put_records(
            "customers",
            [{"id": f"w{i:03d}", "updated_at": int(time.time()) - 1000 + i} for i in range(200)],
            touch=False,
            emit=False,
        )
    ]
    stop = threading.Event()

    def writer() -> None:
        with httpx.Client(base_url=sb.api_url, auth=(CB_API_KEY, "")) as client:
            i = 0
            while not stop.is_set():
                client.post(f"/customers/{ids[(i * 7919) % 200]}", data={"last_name": str(i)})
                i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen = [e["customer"]["id"] for e in all_pages(sb, {"limit": 5, "sort_by[asc]": "updated_at"})]
    finally:
        stop.set()
        thread.join()
    assert set(seen) == set(ids)


def test_list_lag_hides_fresh_changes(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    seed_customers(sb, 3)
    sb.faults(list_lag_seconds=60)
    sb.api.post("/customers/c0001", data={"first_name": "fresh"})
    assert sorted(e["customer"]["id"] for e in all_pages(sb, {})) == ["c0000", "c0002"]
    assert sb.api.get("/customers/c0001").status_code == 200, "retrieve is not lagged"
    sb.clock.advance(61)
    assert len(all_pages(sb, {})) == 3


def test_legacy_records_without_updated_at(chargebee_sandbox_factory: Any, tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"customers": [{"id": "legacy", "updated_at": None}, {"id": "new"}]}))
    sb = chargebee_sandbox_factory(seed=seed)
    listed = {e["customer"]["id"]: e["customer"] for e in all_pages(sb, {"sort_by[asc]": "updated_at"})}
    assert set(listed) == {"legacy", "new"}
    assert "updated_at" not in listed["legacy"]
    after = [e["customer"]["id"] for e in all_pages(sb, {"updated_at[after]": 0})]
    assert after == ["new"]


# ============================================================================ idempotency


def test_idempotency_replays_first_response(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    headers = {"chargebee-idempotency-key": "key-1"}
    first = sb.api.post("/customers", data={"first_name": "Once"}, headers=headers)
    assert first.status_code == 200
    assert "chargebee-idempotency-replayed" not in first.headers
    sb.clock.advance(10)
    again = sb.api.post("/customers", data={"first_name": "Once"}, headers=headers)
    assert again.status_code == 200
    assert again.headers["chargebee-idempotency-replayed"] == "true"
    assert again.json() == first.json()
    assert len(sb.records("customers")) == 1
    # Same key, different parameters: refused, nothing written.
    body = error_of(sb.api.post("/customers", data={"first_name": "Twice"}, headers=headers), 400)
    assert body["param"] == "chargebee-idempotency-key"
    assert len(sb.records("customers")) == 1
    # Keys are per endpoint.
    cid = first.json()["customer"]["id"]
    upd = sb.api.post(f"/customers/{cid}", data={"last_name": "L"}, headers=headers)
    assert upd.status_code == 200 and "chargebee-idempotency-replayed" not in upd.headers
    assert sb.stats()["counters"]["idempotent_replays"] == 1


def test_idempotency_does_not_store_errors(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    headers = {"chargebee-idempotency-key": "k"}
    error_of(sb.api.post("/customers/missing", data={"first_name": "x"}, headers=headers), 404)
    create_customer(sb, id="missing")
    assert sb.api.post("/customers/missing", data={"first_name": "x"}, headers=headers).status_code == 200


def test_idempotency_keys_expire(chargebee_sandbox_factory: Any) -> None:
    sb = chargebee_sandbox_factory(idempotency_ttl=60)
    headers = {"chargebee-idempotency-key": "k"}
    sb.api.post("/customers", data={"first_name": "x"}, headers=headers)
    sb.clock.advance(61)
    assert (
        "chargebee-idempotency-replayed"
        not in sb.api.post("/customers", data={"first_name": "x"}, headers=headers).headers
    )
    assert len(sb.records("customers")) == 2


def test_idempotency_key_length(chargebee_sandbox: CbSandbox) -> None:
    resp = chargebee_sandbox.api.post("/customers", headers={"chargebee-idempotency-key": "k" * 101})
    error_of(resp, 400)


# ============================================================================ rate limit


def test_rate_limit_blocks_the_site(chargebee_sandbox_factory: Any) -> None:
    sb = chargebee_sandbox_factory(rate_limit_per_minute=5, block_seconds=30)
    for _ in range(5):
        assert sb.api.get("/customers").status_code == 200
    resp = sb.api.get("/customers")
    body = error_of(resp, 429)
    assert body["api_error_code"] == "api_request_limit_exceeded"
    assert int(resp.headers["Retry-After"]) == 30
    sb.clock.advance(10)
    blocked = sb.api.post("/customers", data={})
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) == 20
    assert httpx.get(sb.api_url + "/customers").status_code == 429, "even unauthenticated calls count"
    assert sb.admin.get("/stats").status_code == 200, "admin endpoints are never limited"
    sb.clock.advance(21)
    assert sb.api.get("/customers").status_code == 200
    stats = sb.stats()
    assert stats["rate_limited"] == 3
    assert stats["rate_limit"]["breaches"] == 1
    assert stats["by_endpoint"]["GET /api/v2/customers"]["429"] == 2


def test_rate_limit_window_resets_each_minute(chargebee_sandbox_factory: Any) -> None:
    sb = chargebee_sandbox_factory(rate_limit_per_minute=3)
    for _ in range(3):
        assert sb.api.get("/customers").status_code == 200
    sb.clock.advance(60)
    for _ in range(3):
        assert sb.api.get("/customers").status_code == 200


def test_rate_limit_configurable_at_runtime(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    cfg = sb.admin.post("/config", json={"rate_limit_per_minute": 1, "block_seconds": 5}).json()
    assert cfg["rate_limit_per_minute"] == 1
    assert sb.api.get("/customers").status_code == 200
    assert sb.api.get("/customers").status_code == 429


# ============================================================================ faults


def test_error_fault(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    sb.faults(seed=1, error_rate=1.0, statuses=[503])
    body = error_of(sb.api.get("/customers"), 503)
    assert body["api_error_code"] == "internal_temporary_error"
    assert error_of(sb.api.post("/customers", data={"id": "x"}), 503)
    sb.faults()
    assert sb.records("customers") == [], "an injected error happens before the write"
    assert sb.stats()["faults_injected"] == {}


def test_faults_replay_from_seed(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox

    def run() -> list[int]:
        sb.faults(seed=7, error_rate=0.3, rate_429=0.2, statuses=[500, 502, 503])
        return [sb.api.get("/customers").status_code for _ in range(40)]

    first, second = run(), run()
    assert first == second
    assert {200, 429} <= set(first) and set(first) - {200, 429}


def test_rate_429_fault_does_not_block(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    sb.faults(rate_429=1.0, max_faults=1)
    resp = sb.api.get("/customers")
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "1"
    assert sb.api.get("/customers").status_code == 200


def test_fault_scope_by_method_and_path(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    sb.faults(error_rate=1.0, methods=["POST"], paths=["/customers"])
    assert sb.api.get("/customers").status_code == 200
    assert sb.api.get("/items").status_code == 200
    assert sb.api.post("/customers", data={}).status_code >= 500


def test_latency_fault(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    sb.faults(latency_ms=300)
    start = time.monotonic()
    assert sb.api.get("/customers").status_code == 200
    assert time.monotonic() - start >= 0.3


def test_hang_fault_outlasts_client_timeout(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    sb.faults(hang_rate=1.0, hang_seconds=1.5, max_faults=1)
    start = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        sb.api.get("/customers", timeout=0.3)
    assert time.monotonic() - start < 1.0
    assert sb.api.get("/customers").status_code == 200, "the server keeps serving others"


def test_drop_fault_closes_without_answer(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    sb.faults(drop_rate=1.0, max_faults=1)
    with pytest.raises(httpx.TransportError):
        sb.api.post("/customers", data={"id": "dropped"})
    assert sb.records("customers") == [], "a dropped request is not applied"
    assert sb.stats()["by_endpoint"]["POST /api/v2/customers"] == {"dropped": 1}


@pytest.mark.parametrize("mode", ["500", "drop"])
def test_lost_response_applies_the_write(chargebee_sandbox: CbSandbox, mode: str) -> None:
    sb = chargebee_sandbox
    sb.faults(lost_response_rate=1.0, lost_response_mode=mode, max_faults=1)
    headers = {"chargebee-idempotency-key": "crash-1"}
    if mode == "500":
        error_of(sb.api.post("/customers", data={"id": "lost"}, headers=headers), 500)
    else:
        with pytest.raises(httpx.TransportError):
            sb.api.post("/customers", data={"id": "lost"}, headers=headers)
    assert [r["id"] for r in sb.records("customers")] == ["lost"], "the write happened"
    retry = sb.api.post("/customers", data={"id": "lost"}, headers=headers)
    assert retry.status_code == 200
    assert retry.headers["chargebee-idempotency-replayed"] == "true"
    assert retry.json()["customer"]["id"] == "lost"
    # Without the key, the retry would have hit duplicate_entry.
    assert (
        error_of(sb.api.post("/customers", data={"id": "lost"}), 400)["api_error_code"] == "duplicate_entry"
    )


def test_lost_response_spares_reads(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    sb.faults(lost_response_rate=1.0)
    assert sb.api.get("/customers").status_code == 200


def test_fault_config_validation(chargebee_sandbox: CbSandbox) -> None:
    assert chargebee_sandbox.admin.post("/faults", json={"error_rate": 2}).status_code == 400
    assert (
        chargebee_sandbox.admin.post("/faults", json={"error_rate": 0.6, "drop_rate": 0.6}).status_code == 400
    )


def test_faults_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from sandbox.chargebee.__main__ import build, parse_args

    monkeypatch.setenv("CB_SANDBOX_FAULTS", json.dumps({"seed": 3, "error_rate": 1.0, "statuses": [502]}))
    monkeypatch.setenv("CB_SANDBOX_RATE_LIMIT", "7")
    args = parse_args(["--port", "0", "--state", str(tmp_path / "s.json"), "--quiet"])
    server = build(args)
    try:
        assert server.faults.config.error_rate == 1.0
        assert server.faults.config.statuses == [502]
        assert server.limiter.per_minute == 7
        server.start_in_thread()
        assert httpx.get(server.api_url + "/customers", auth=(CB_API_KEY, "")).status_code == 502
    finally:
        server.stop()


# ============================================================================ persistence, seed, admin


def test_state_survives_restart(tmp_path: Path) -> None:
    state = tmp_path / "var" / "cb.json"
    # purge at once: the delete is applied on the next call (scheduled purges persist too)
    with serve_in_thread(state, seed={"customers": [{"id": "seeded"}]}, customer_purge_seconds=0) as (_, url):
        api = httpx.Client(base_url=url + "/api/v2", auth=(CB_API_KEY, ""))
        api.post("/customers", data={"id": "made", "email": "m@example.com"})
        api.post("/customers/seeded/delete")
        rv = api.post("/customers/made", data={"first_name": "M"}).json()["customer"]["resource_version"]
    assert json.loads(state.read_text())["resources"]["customers"]["made"]["first_name"] == "M"
    assert [p.name for p in state.parent.iterdir()] == ["cb.json"], "no temp files left behind"
    # Restart with a different seed: the existing state file wins.
    with serve_in_thread(state, seed={"customers": [{"id": "other"}]}) as (_, url):
        api = httpx.Client(base_url=url + "/api/v2", auth=(CB_API_KEY, ""))
        made = api.get("/customers/made").json()["customer"]
        assert made["first_name"] == "M" and made["email"] == "m@example.com"
        assert api.get("/customers/seeded").status_code == 404
        assert api.get("/customers/other").status_code == 404
        rv2 = api.post("/customers/made", data={"first_name": "N"}).json()["customer"]["resource_version"]
        assert rv2 > rv
        # Idempotency keys survive a restart too (crash recovery).
        api.post("/customers", data={"id": "k"}, headers={"chargebee-idempotency-key": "restart"})
    with serve_in_thread(state) as (_, url):
        resp = httpx.post(
            url + "/api/v2/customers",
            data={"id": "k"},
            auth=(CB_API_KEY, ""),
            headers={"chargebee-idempotency-key": "restart"},
        )
        assert resp.headers.get("chargebee-idempotency-replayed") == "true"


def test_serve_in_thread_returns_a_tuple(tmp_path: Path) -> None:
    server, url = serve_in_thread(None)
    try:
        assert url.startswith("http://127.0.0.1:")
        assert server.api_url == url + "/api/v2"
        assert httpx.get(url + "/_sandbox/health").json()["ok"] is True
    finally:
        server.stop()


def test_seed_fills_defaults_and_tolerates_gaps(tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(
        json.dumps(
            {
                "customers": [
                    {"id": "a", "email": "a@example.com", "billing_address": {"city": "Oslo"}},
                    {"first_name": "no id"},
                ],
                "business_entities": [{"id": "be1", "name": "Acme AS"}],
                "item_families": [{"id": "fam", "name": "Family"}],
                "items": [{"id": "plan-1", "name": "Plan", "type": "plan", "item_family_id": "fam"}],
                "unknown_things": [{"id": 1}],
            }
        )
    )
    with serve_in_thread(tmp_path / "state.json", seed_path=seed) as (_, url):
        api = httpx.Client(base_url=url + "/api/v2", auth=(CB_API_KEY, ""))
        customers = [e["customer"] for e in api.get("/customers", params={"limit": 100}).json()["list"]]
        assert len(customers) == 2
        a = api.get("/customers/a").json()["customer"]
        assert a["object"] == "customer" and a["deleted"] is False
        assert a["billing_address"]["object"] == "billing_address"
        assert {"created_at", "updated_at", "resource_version", "auto_collection"} <= set(a)
        item = api.get("/items/plan-1").json()["item"]
        assert item["status"] == "active" and item["external_name"] == "Plan"
        assert api.get("/orders").json() == {"list": []}
    with serve_in_thread(tmp_path / "other.json", seed_path=tmp_path / "missing.json") as (_, url):
        assert httpx.get(url + "/api/v2/customers", auth=(CB_API_KEY, "")).json() == {"list": []}


def test_admin_records_and_reset(chargebee_sandbox_factory: Any) -> None:
    sb = chargebee_sandbox_factory(seed={"customers": [{"id": "s1", "first_name": "Seed"}]})
    before = sb.api.get("/customers/s1").json()["customer"]
    sb.clock.advance(30)
    [edited] = sb.put_records("customers", [{"id": "s1", "first_name": "Edited in UI", "company": None}])
    assert edited["first_name"] == "Edited in UI"
    assert edited["updated_at"] == int(T0) + 30
    assert edited["resource_version"] > before["resource_version"]
    [new] = sb.put_records("customers", [{"id": "ui-made", "email": "ui@example.com"}])
    assert new["auto_collection"] == "on"
    assert sb.admin.get("/records/customers/ui-made").json()["record"]["email"] == "ui@example.com"
    events = [e["event"]["event_type"] for e in sb.api.get("/events", params={"limit": 100}).json()["list"]]
    assert sorted(events) == ["customer_changed", "customer_created"]
    assert sb.admin.post("/records/customers/ui-made/delete").json()["record"]["deleted"] is True
    assert sb.admin.delete("/records/customers/ui-made").json() == {"removed": True}
    sb.api.post("/customers", data={"id": "api-made"})
    reset = sb.admin.post("/reset").json()
    assert reset["counts"]["customers"] == 1
    assert sb.api.get("/customers/s1").json()["customer"]["first_name"] == "Seed"
    assert sb.api.get("/customers/api-made").status_code == 404
    assert sb.api.get("/events").json()["list"] == []
    assert sb.admin.get("/records/nope").status_code == 404


def test_stats_count_by_template_and_status(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    create_customer(sb, id="a")
    sb.api.post("/customers/a", data={"first_name": "x"})
    sb.api.post("/customers/b", data={"first_name": "x"})
    sb.api.get("/customers/a")
    stats = sb.stats()
    assert stats["by_endpoint"]["POST /api/v2/customers/{id}"] == {"200": 1, "404": 1}
    assert stats["by_endpoint"]["GET /api/v2/customers/{id}"] == {"200": 1}
    assert stats["total"] == 4
    sb.admin.post("/stats/reset")
    assert sb.stats()["total"] == 0


def test_clock_admin(chargebee_sandbox: CbSandbox) -> None:
    now = chargebee_sandbox.admin.post("/clock", json={"advance": 120}).json()
    assert now["now"] == T0 + 120
    assert create_customer(chargebee_sandbox)["created_at"] == int(T0) + 120


def test_persist_interval_batches_saves_and_flushes_on_stop(tmp_path: Path) -> None:
    state = tmp_path / "cb.json"
    server, url = serve_in_thread(state, persist_interval=30)
    try:
        httpx.post(url + "/api/v2/customers", data={"id": "late"}, auth=(CB_API_KEY, ""))
        assert "late" not in json.loads(state.read_text())["resources"]["customers"]
    finally:
        server.stop()
    assert "late" in json.loads(state.read_text())["resources"]["customers"]


def test_new_order_numbers_continue_after_seeded_ones(chargebee_sandbox_factory: Any) -> None:
    sb = chargebee_sandbox_factory(
        seed={
            "invoices": [{"id": "I-1", "line_items": [{"amount": 100}]}],
            "orders": [{"id": "o-1", "document_number": "5010", "invoice_id": "I-1"}],
        },
        order_management="legacy",  # the manual create of legacy order management
    )
    order = sb.api.post("/orders", data={"invoice_id": "I-1"}).json()["order"]
    assert order["document_number"] == "5011"


def test_the_event_log_keeps_the_newest_max_events() -> None:
    from sandbox.chargebee.store import ChargebeeState

    state = ChargebeeState(None, max_events=3)
    for i in range(5):
        state.insert("item_families", {"id": f"fam-{i}", "name": f"F{i}", "status": "active"})
    kept = [e["content"]["item_family"]["id"] for e in state.table("events").values()]
    assert kept == ["fam-2", "fam-3", "fam-4"]


def test_a_post_whose_body_never_arrived_is_not_applied(tmp_path: Path) -> None:
    """A worker killed between a request's headers and its body: nothing is created."""
    import socket

    with serve_in_thread(tmp_path / "cb.json", port=0) as (server, url):
        host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
        before = len(server.state.records("customers"))
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(
                b"POST /api/v2/customers HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Basic c2FuZGJveF9hcGlfa2V5Og==\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 40\r\n\r\nfirst_name=Ad"
            )
        time.sleep(0.5)
        assert len(server.state.records("customers")) == before
