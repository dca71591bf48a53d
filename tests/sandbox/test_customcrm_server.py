"""The Customcrm reference server keeps the promises of ``sandbox/customcrm/openapi.yaml``.

What the sync relies on is tested here: the change feed never skips a record (even with
edits while paging), tombstones stay visible, If-Match catches stale writes, an
Idempotency-Key makes a retried create safe (also after a lost response or a restart),
errors name the bad fields, and the contract document lists exactly what is served.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox.customcrm.schema import RESOURCES
from sandbox.customcrm.server import ROUTES
from sandbox.customcrm.store import Store, parse_ts
from tests.sandbox.conftest_customcrm import CRM_TOKEN, REPO_ROOT, SEED_PATH, CrmSandbox, running_customcrm

OPENAPI = REPO_ROOT / "sandbox" / "customcrm" / "openapi.yaml"


@pytest.fixture
def crm(tmp_path: Path) -> Iterator[CrmSandbox]:
    """A fresh, empty server: no seed, no rate limit, no faults."""
    with running_customcrm(tmp_path / "customcrm.json") as sandbox:
        yield sandbox


def _contact(n: int, **extra: Any) -> dict[str, Any]:
    return {"FirstName": f"Person{n}", "LastName": "Tester", "Email": f"p{n}@example.com", **extra}


# --------------------------------------------------------------------------- the contract document
def _openapi() -> dict[str, Any]:
    return yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_openapi_lists_exactly_the_served_routes() -> None:
    doc = _openapi()
    assert doc["openapi"].startswith("3.1")
    documented = {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    served = {(route.method, route.template) for route in ROUTES}
    assert documented == served


def test_openapi_refs_resolve_and_fields_match_the_server() -> None:
    doc = _openapi()
    for ref in set(re.findall(r'\$ref: "#/([^"]+)"', OPENAPI.read_text(encoding="utf-8"))):
        node: Any = doc
        for part in ref.split("/"):
            node = node[part]
    schemas = doc["components"]["schemas"]
    for spec in RESOURCES.values():
        props = schemas[f"{spec.singular}Fields"]["properties"]
        assert list(props) == [*spec.field_names, "ExternalRef"], spec.name
        for name, prop in props.items():
            field = spec.by_name[name]
            types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
            assert ("null" in types) == field.nullable, (spec.name, name)
            if field.max_length is not None:
                assert prop.get("maxLength") == field.max_length, (spec.name, name)
            if field.choices:
                assert prop["enum"] == list(field.choices), (spec.name, name)
        list_params = {
            p["$ref"].rsplit("/", 1)[1] for p in doc["paths"][f"/{spec.name}"]["get"]["parameters"]
        }
        names = {doc["components"]["parameters"][p]["name"] for p in list_params}
        assert names == {
            "updated_since",
            "cursor",
            "limit",
            "include_deleted",
            *(f.param for f in spec.filters),
        }


def test_responses_validate_against_the_openapi_schemas(crm: CrmSandbox) -> None:
    """Records, pages and problems as served are what the document describes."""
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    from referencing.jsonschema import DRAFT202012

    doc = _openapi()
    registry = referencing.Registry().with_resource(
        "urn:customcrm", referencing.Resource(contents=doc, specification=DRAFT202012)
    )

    def check(instance: Any, schema_name: str) -> None:
        schema = {"$ref": f"urn:customcrm#/components/schemas/{schema_name}"}
        jsonschema.Draft202012Validator(schema, registry=registry).validate(instance)

    company = crm.api.post("/customers", json={"Name": "Fjordlys AS", "Country": "NO"}).json()
    check(company, "Customer")
    contact = crm.api.post("/contacts", json=_contact(1, CustomerId=company["Id"])).json()
    check(contact, "Contact")
    check(crm.api.get("/contacts").json(), "ContactList")
    product = {"Sku": "NP-1", "Name": "Plan", "Kind": "plan", "Metadata": {"tier": "a"}}
    check(crm.api.post("/products", json=product).json(), "Product")
    check(crm.api.post("/users", json={"Email": "u@example.com"}).json(), "User")
    check(crm.api.post("/quotes", json={"Amount": 100, "Currency": "EUR"}).json(), "Quote")
    order = {"ShippedAt": "2025-01-01T10:00:00Z", "OrderDate": "2025-01-01", "Status": "shipped"}
    check(crm.api.post("/orders", json=order).json(), "Order")
    check(crm.api.post("/contacts", json={"Email": "bad@@x"}).json(), "Problem")
    check(crm.stats(), "SandboxStats")
    check(crm.admin.get("/faults").json(), "Faults")
    with pytest.raises(jsonschema.ValidationError):
        check({**contact, "Surprise": 1}, "Contact")


# --------------------------------------------------------------------------- auth and errors
def test_bearer_token_is_required_but_not_for_admin(crm: CrmSandbox) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {CRM_TOKEN}"}):
        resp = httpx.get(f"{crm.base_url}/contacts", headers=headers)
        assert resp.status_code == 401
        assert resp.headers["Content-Type"] == "application/problem+json"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert resp.json()["status"] == 401
    assert httpx.get(f"{crm.base_url}/_sandbox/health").json()["ok"] is True
    assert httpx.get(f"{crm.base_url}/openapi.yaml").text.startswith("#")


def test_validation_problem_names_every_bad_field(crm: CrmSandbox) -> None:
    body = {
        "FirstName": "x" * 256,
        "Email": "maria.lopez@@example",
        "Phone": 4712345678,
        "Favourite": "blue",
        "Version": 9,
        "CustomerId": "CUS-999999",
    }
    resp = crm.api.post("/contacts", json=body)
    assert resp.status_code == 422
    assert resp.headers["Content-Type"] == "application/problem+json"
    problem = resp.json()
    assert {"type", "title", "status", "detail", "errors"} <= set(problem)
    messages = {e["field"]: e["message"] for e in problem["errors"]}
    assert messages == {
        "FirstName": "must be at most 255 characters, got 256",
        "Email": "is not a valid email address",
        "Phone": "must be a string, got int",
        "Favourite": "unknown field",
        "Version": "is read-only",
        "CustomerId": "no customers record with Id CUS-999999",
    }
    assert crm.records("contacts") == []  # nothing half-written

    required = crm.api.post("/products", json={"Name": "No sku", "Kind": "gadget"}).json()
    assert {e["field"] for e in required["errors"]} == {"Sku", "Kind"}
    assert (
        crm.api.post(
            "/contacts", content=b"{not json", headers={"Content-Type": "application/json"}
        ).status_code
        == 400
    )
    assert crm.api.post("/contacts", json=[1, 2]).status_code == 400
    bad_query = crm.api.get("/contacts", params={"limit": 0, "colour": "red", "updated_since": "yesterday"})
    assert bad_query.status_code == 400
    assert {e["field"] for e in bad_query.json()["errors"]} == {"limit", "colour", "updated_since"}
    assert crm.api.get("/contacts", params={"cursor": "garbage"}).status_code == 400


def test_unique_fields_conflict(crm: CrmSandbox) -> None:
    assert crm.api.post("/users", json={"Email": "sigrid@example.com"}).status_code == 201
    resp = crm.api.post("/users", json={"Email": " SIGRID@example.com"})
    assert resp.status_code == 409
    assert resp.json()["errors"][0]["field"] == "Email"


# --------------------------------------------------------------------------- single records
def test_get_patch_if_match_and_etag(crm: CrmSandbox) -> None:
    created = crm.api.post("/contacts", json=_contact(1))
    assert created.status_code == 201
    record = created.json()
    assert re.fullmatch(r"CON-\d{6}", record["Id"])
    assert created.headers["ETag"] == '"1"'
    assert created.headers["Location"] == f"/contacts/{record['Id']}"
    assert record["Version"] == 1 and record["Deleted"] is False and record["ExternalRef"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", record["UpdatedAt"])

    url = f"/contacts/{record['Id']}"
    assert crm.api.get(url, headers={"If-None-Match": '"1"'}).status_code == 304
    ok = crm.api.patch(url, json={"City": "Bergen"}, headers={"If-Match": '"1"'})
    assert ok.status_code == 200 and ok.json()["Version"] == 2 and ok.headers["ETag"] == '"2"'
    assert ok.json()["UpdatedAt"] > record["UpdatedAt"]

    stale = crm.api.patch(url, json={"City": "Oslo"}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    assert stale.json()["current_version"] == 2 and "version 2" in stale.json()["detail"]
    assert stale.headers["ETag"] == '"2"'
    assert crm.api.get(url).json()["City"] == "Bergen"  # the stale write did not land

    assert crm.api.patch(url, json={"City": "Oslo"}, headers={"If-Match": 'W/"2"'}).json()["Version"] == 3
    assert crm.api.patch(url, json={"ExternalRef": "cust_1"}).json()["Version"] == 4  # If-Match is optional
    assert (
        crm.api.get("/contacts", params={"external_ref": "cust_1"}).json()["items"][0]["Id"] == record["Id"]
    )
    assert crm.api.get("/contacts/CON-999999").status_code == 404


def test_delete_leaves_a_tombstone_in_the_feed(crm: CrmSandbox) -> None:
    keep, gone = (crm.api.post("/contacts", json=_contact(n)).json() for n in (1, 2))
    url = f"/contacts/{gone['Id']}"
    assert crm.api.delete(url, headers={"If-Match": '"7"'}).status_code == 412
    assert crm.api.delete(url).status_code == 204
    assert crm.api.get(url).status_code == 410
    assert crm.api.patch(url, json={"City": "x"}).status_code == 410

    live = [r["Id"] for page in crm.feed("contacts") for r in page]
    assert live == [keep["Id"]]
    everything = {r["Id"]: r for page in crm.feed("contacts", include_deleted="true") for r in page}
    tomb = everything[gone["Id"]]
    assert tomb["Deleted"] is True and tomb["Version"] == 2 and tomb["UpdatedAt"] > gone["UpdatedAt"]

    assert crm.api.delete(url).status_code == 204  # deleting again changes nothing
    assert crm.records("contacts")[1]["Version"] == 2
    restored = crm.api.post(f"{url}/restore")
    assert (
        restored.status_code == 200
        and restored.json()["Deleted"] is False
        and restored.json()["Version"] == 3
    )


# --------------------------------------------------------------------------- the change feed
def test_updated_since_is_inclusive_and_accepts_offsets(crm: CrmSandbox) -> None:
    made = [crm.api.post("/contacts", json=_contact(n)).json() for n in range(5)]
    pivot = made[2]["UpdatedAt"]
    since = [r["Id"] for page in crm.feed("contacts", updated_since=pivot) for r in page]
    assert since == [r["Id"] for r in made[2:]]
    as_oslo = parse_ts(pivot).astimezone(UTC).replace(tzinfo=None)  # naive = UTC
    assert [
        r["Id"]
        for r in crm.api.get("/contacts", params={"updated_since": as_oslo.isoformat()}).json()["items"]
    ] == since
    later = (parse_ts(made[-1]["UpdatedAt"]) + timedelta(seconds=1)).isoformat()
    assert crm.api.get("/contacts", params={"updated_since": later}).json() == {
        "items": [],
        "next_cursor": None,
    }


def test_filters_match_email_case_insensitively(crm: CrmSandbox) -> None:
    crm.api.post("/contacts", json=_contact(1, Email=" Anna.Berg@Example.com "))
    crm.api.post("/contacts", json=_contact(2))
    found = crm.api.get("/contacts", params={"email": "anna.berg@example.com"}).json()["items"]
    assert [r["FirstName"] for r in found] == ["Person1"]
    crm.api.post("/products", json={"Sku": "NP-SSO", "Name": "SSO", "Kind": "addon"})
    assert len(crm.api.get("/products", params={"sku": "np-sso"}).json()["items"]) == 1


def test_paging_with_interleaved_edits_never_skips_and_ends_current(crm: CrmSandbox) -> None:
    """Between every two pages, edit one record already read, one not yet read, and add one.

    An offset-paged feed would skip records here (edited ones move, shifting the rest).
    With the keyset cursor every record is seen and each at its final version.
    """
    ids = [r["Id"] for r in crm.put_records("contacts", [_contact(n) for n in range(60)])]
    seen: dict[str, int] = {}
    keys: list[tuple[str, str]] = []
    cursor: str | None = None
    step = 0
    while True:
        body = crm.api.get("/contacts", params={"limit": 7, **({"cursor": cursor} if cursor else {})}).json()
        for record in body["items"]:
            seen[record["Id"]] = record["Version"]
            keys.append((record["UpdatedAt"], record["Id"]))
        cursor = body["next_cursor"]
        if cursor is None:
            break
        step += 1
        read = [i for i in ids if i in seen]
        unread = [i for i in ids if i not in seen]
        for target in (read[step % len(read)], unread[0] if unread else None):
            if target:
                crm.api.patch(f"/contacts/{target}", json={"City": f"edit {step}"})
        ids.append(crm.api.post("/contacts", json=_contact(1000 + step)).json()["Id"])
    final = {r["Id"]: r["Version"] for r in crm.records("contacts")}
    assert set(seen) == set(final)
    assert seen == final
    assert keys == sorted(keys) and len(set(keys)) == len(keys)  # strictly increasing (UpdatedAt, Id)


def test_paging_while_another_client_edits_concurrently(crm: CrmSandbox) -> None:
    """A real second client edits as fast as it can while the feed is read: nothing is skipped."""
    ids = [r["Id"] for r in crm.put_records("contacts", [_contact(n) for n in range(150)])]
    stop, editing = threading.Event(), threading.Event()
    edits = 0

    def editor() -> None:
        nonlocal edits
        with httpx.Client(base_url=crm.base_url, headers={"Authorization": f"Bearer {CRM_TOKEN}"}) as client:
            while not stop.is_set():
                edits += 1
                client.patch(f"/contacts/{ids[(edits * 37) % len(ids)]}", json={"Phone": str(edits)})
                editing.set()

    thread = threading.Thread(target=editor)
    thread.start()
    try:
        assert editing.wait(5)
        before = edits
        seen = {r["Id"] for page in crm.feed("contacts", limit=9) for r in page}
        during = edits - before
    finally:
        stop.set()
        thread.join()
    assert set(ids) <= seen
    assert during > 0, "the editor did not run while the feed was read"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    initial=st.integers(min_value=0, max_value=25),
    limit=st.integers(min_value=1, max_value=6),
    batches=st.lists(
        st.lists(
            st.tuples(st.sampled_from(["edit", "create", "delete"]), st.integers(0, 10_000)), max_size=4
        ),
        max_size=12,
    ),
)
def test_feed_property_every_change_is_seen_at_its_final_version(
    initial: int, limit: int, batches: list[list[tuple[str, int]]]
) -> None:
    """Whatever edits, creates and deletes happen between pages, the finished feed is current."""
    store = Store(None)
    for n in range(initial):
        store.create("contacts", {"FirstName": f"p{n}"})
    seen: dict[str, int] = {}
    after: tuple[str, str] | None = None
    pending = iter(batches)
    while True:
        page = store.list_page("contacts", updated_since=None, after=after, limit=limit, include_deleted=True)
        for record in page.items:
            seen[record["Id"]] = record["Version"]
            after = (record["UpdatedAt"], record["Id"])
        if page.next_cursor is None:
            break
        for op, pick in next(pending, []):
            ids = [r["Id"] for r in store.all("contacts")]
            if op == "create" or not ids:
                store.create("contacts", {"FirstName": f"new{pick}"})
            elif op == "edit":
                store.update("contacts", ids[pick % len(ids)], {"City": str(pick)})
            else:
                store.update("contacts", ids[pick % len(ids)], {"Deleted": True})
    assert seen == {r["Id"]: r["Version"] for r in store.all("contacts")}


# --------------------------------------------------------------------------- retries
def test_idempotency_key_replays_the_first_response(crm: CrmSandbox) -> None:
    headers = {"Idempotency-Key": "sync-run-1/contact/42"}
    first = crm.api.post("/contacts", json=_contact(1), headers=headers)
    again = crm.api.post("/contacts", json=_contact(1), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotency-Replayed"] == "true"
    assert "Idempotency-Replayed" not in first.headers
    assert len(crm.records("contacts")) == 1
    reused = crm.api.post("/contacts", json=_contact(2), headers=headers)
    assert reused.status_code == 422 and reused.json()["errors"][0]["field"] == "Idempotency-Key"
    failed = crm.api.post("/contacts", json={"Email": "bad@@x"}, headers={"Idempotency-Key": "k2"})
    assert failed.status_code == 422
    fixed = crm.api.post("/contacts", json={"Email": "bad@@x"}, headers={"Idempotency-Key": "k2"})
    assert fixed.status_code == 422  # errors are not remembered: the key is still free
    assert crm.api.post("/contacts", json=_contact(3), headers={"Idempotency-Key": "k3"}).status_code == 201


def test_lost_response_then_retry_with_the_same_key_creates_once(crm: CrmSandbox) -> None:
    crm.faults(seed=7, lost_response_rate=1.0, lost_response_mode="500")
    headers = {"Idempotency-Key": "create-anna"}
    lost = crm.api.post("/contacts", json=_contact(1), headers=headers)
    assert lost.status_code == 500
    assert len(crm.records("contacts")) == 1  # ... but the write was applied
    crm.faults(seed=7, lost_response_rate=1.0, lost_response_mode="drop")
    with pytest.raises(httpx.TransportError):
        crm.api.post("/contacts", json=_contact(1), headers=headers)
    crm.faults()
    retry = crm.api.post("/contacts", json=_contact(1), headers=headers)
    assert retry.status_code == 201 and retry.headers["Idempotency-Replayed"] == "true"
    assert [r["Id"] for r in crm.records("contacts")] == [retry.json()["Id"]]
    assert crm.stats()["faults_injected"] == {}  # configure() restarted the count


def test_injected_errors_hang_and_drop(crm: CrmSandbox) -> None:
    crm.faults(seed=1, error_rate=1.0, statuses=[503])
    resp = crm.api.post("/contacts", json=_contact(1))
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "1"
    assert crm.records("contacts") == []  # an injected error changes nothing
    assert crm.admin.get("/health").status_code == 200  # admin paths are never faulted
    crm.faults(seed=1, drop_rate=1.0)
    with pytest.raises(httpx.TransportError):
        crm.api.get("/contacts")
    crm.faults(seed=1, hang_rate=1.0, hang_seconds=0.3)
    started = time.monotonic()
    with pytest.raises(httpx.TransportError):
        crm.api.get("/contacts")
    assert time.monotonic() - started >= 0.25
    stats = crm.stats()
    assert stats["faults_injected"] == {"hang": 1}
    assert stats["by_endpoint"]["POST /contacts"] == {"503": 1}
    assert stats["by_endpoint"]["GET /contacts"] == {"dropped": 2}


def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    with running_customcrm(tmp_path / "s.json", rate_limit_per_minute=3) as crm:
        assert [crm.api.get("/contacts").status_code for _ in range(3)] == [200, 200, 200]
        limited = crm.api.get("/contacts")
        assert limited.status_code == 429
        assert limited.headers["Content-Type"] == "application/problem+json"
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert crm.admin.get("/stats").json()["rate_limited"] == 1  # admin is not limited
        crm.admin.post("/clock", json={"advance": 61})
        assert crm.api.get("/contacts").status_code == 200  # a new window


# --------------------------------------------------------------------------- state
def test_state_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "customcrm.json"
    with running_customcrm(state) as crm:
        first = crm.api.post("/contacts", json=_contact(1), headers={"Idempotency-Key": "k"}).json()
        crm.api.patch(f"/contacts/{first['Id']}", json={"City": "Tromsø"})
    assert [p.name for p in tmp_path.iterdir()] == ["customcrm.json"]  # no temp files left behind
    assert json.loads(state.read_text(encoding="utf-8"))["format"] == "customcrm-sandbox/1"
    with running_customcrm(state, seed_path=SEED_PATH) as crm:  # the seed is ignored: state exists
        records = crm.records("contacts")
        assert [(r["Id"], r["City"], r["Version"]) for r in records] == [(first["Id"], "Tromsø", 2)]
        replay = crm.api.post("/contacts", json=_contact(1), headers={"Idempotency-Key": "k"})
        assert replay.headers["Idempotency-Replayed"] == "true" and replay.json()["Id"] == first["Id"]
        second = crm.api.post("/contacts", json=_contact(2)).json()
        assert second["Id"] == "CON-000002" and second["UpdatedAt"] > records[0]["UpdatedAt"]


def test_seed_reset_and_admin_edits(tmp_path: Path) -> None:
    with running_customcrm(tmp_path / "s.json", seed_path=SEED_PATH) as crm:
        seeded = {r["Id"]: r for r in crm.records("contacts")}
        assert len(seeded) == 40
        target = next(iter(seeded))
        edited = crm.admin.patch(f"/records/contacts/{target}", json={"Email": "not-an-email"}).json()[
            "record"
        ]
        assert edited["Email"] == "not-an-email"  # admin edits skip validation ...
        assert edited["Version"] == seeded[target]["Version"] + 1  # ... but move like a real edit
        assert edited["UpdatedAt"] > max(r["UpdatedAt"] for r in seeded.values())
        assert crm.admin.patch(f"/records/contacts/{target}", json={"Colour": 1}).status_code == 400
        planted = crm.put_records("contacts", [{"FirstName": "x" * 300}])[0]
        assert crm.api.get(f"/contacts/{planted['Id']}").json()["FirstName"] == "x" * 300
        assert crm.admin.post(f"/records/contacts/{planted['Id']}/delete").json()["record"]["Deleted"] is True
        reset = crm.admin.post("/reset").json()
        assert reset["counts"]["contacts"] == 40
        assert {r["Id"]: r for r in crm.records("contacts")} == seeded


def test_concurrent_creates_get_unique_ids_and_timestamps(crm: CrmSandbox) -> None:
    def worker(n: int) -> list[str]:
        with httpx.Client(base_url=crm.base_url, headers={"Authorization": f"Bearer {CRM_TOKEN}"}) as client:
            return [client.post("/contacts", json=_contact(n * 100 + i)).json()["Id"] for i in range(20)]

    results: list[list[str]] = []
    threads = [threading.Thread(target=lambda n=n: results.append(worker(n))) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = crm.records("contacts")
    assert len({i for chunk in results for i in chunk}) == len(records) == 120
    assert len({r["UpdatedAt"] for r in records}) == 120
    saved = json.loads(crm.state_path.read_text(encoding="utf-8"))
    assert len(saved["records"]["contacts"]) == 120


def test_cli_serves_and_flushes_on_sigterm(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    state = tmp_path / "state.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox.customcrm",
            "--port",
            str(port),
            "--state",
            str(state),
            "--seed",
            str(SEED_PATH),
            "--log-level",
            "WARNING",
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/_sandbox/health", timeout=1).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.05)
        assert health["counts"]["contacts"] == 40
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert len(json.loads(state.read_text(encoding="utf-8"))["records"]["contacts"]) == 40


def test_clock_moves_forward_only(crm: CrmSandbox) -> None:
    a = crm.api.post("/contacts", json=_contact(1)).json()
    crm.admin.post("/clock", json={"advance": -3600})  # a clock step backwards ...
    b = crm.api.post("/contacts", json=_contact(2)).json()
    assert b["UpdatedAt"] > a["UpdatedAt"]  # ... never makes UpdatedAt go back
    assert parse_ts(b["UpdatedAt"]) - parse_ts(a["UpdatedAt"]) < timedelta(seconds=1)
    assert datetime.now(UTC) - parse_ts(a["UpdatedAt"]) < timedelta(minutes=1)
