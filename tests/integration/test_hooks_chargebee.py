"""ChargebeeHook against the real Chargebee sandbox (``sandbox.chargebee``), in-process.

Covers what a stub cannot: paging over hundreds of records, the incremental filter,
deletes, idempotent creates, retries on injected 500/429 faults and lost responses,
the real rate limiter, and an authentication failure.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

import pytest

server_mod = pytest.importorskip("sandbox.chargebee.server")

from crmsync.hooks.budget import RateBudget, reset_budgets  # noqa: E402
from crmsync.hooks.chargebee import ChargebeeHook  # noqa: E402
from crmsync.hooks.errors import AuthError, Conflict, ValidationError  # noqa: E402
from crmsync.hooks.retry import RetryPolicy  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sandbox_api_key"


class Sandbox:
    def __init__(self, url: str) -> None:
        self.url = url

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = Request(
            f"{self.url}/_sandbox/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def faults(self, **config: Any) -> None:
        self.admin("POST", "faults", config)

    def stats(self) -> dict[str, Any]:
        return self.admin("GET", "stats")  # type: ignore[no-any-return]

    def insert(self, resource: str, records: list[dict[str, Any]]) -> None:
        self.admin("POST", f"records/{resource}", records)

    def advance(self, seconds: float) -> None:
        self.admin("POST", "clock", {"advance": seconds})


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with server_mod.serve_in_thread(tmp_path / "chargebee.json", port=0) as (_server, url):
        yield Sandbox(url)


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[Sandbox]:
    seed = ROOT / "sandbox" / "seed" / "chargebee.json"
    with server_mod.serve_in_thread(tmp_path / "chargebee.json", port=0, seed=seed) as (_server, url):
        yield Sandbox(url)


@pytest.fixture(autouse=True)
def _fresh_budgets() -> Iterator[None]:
    reset_budgets()
    yield
    reset_budgets()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_hook(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> Callable[..., ChargebeeHook]:
    counter = iter(range(10_000))

    def make(
        *,
        password: str = API_KEY,
        budget: Any = "none",
        policy: RetryPolicy | None = None,
        extra: dict[str, Any] | None = None,
        url: str | None = None,
    ) -> ChargebeeHook:
        conn_id = f"cb_it_{next(counter)}"
        conn = {
            "conn_type": "chargebee",
            "host": f"{url or sandbox.url}/api/v2",
            "password": password,
            "extra": {"rate_limit_per_minute": 0, **(extra or {})},
        }
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        if budget == "none":
            budget = RateBudget(0, sleep=lambda s: None)
        return ChargebeeHook(
            conn_id,
            budget=budget,
            retry_policy=policy or RetryPolicy(sleep=sleeps.append, rng=lambda: 0.5),
        )

    return make


def customers(n: int, prefix: str = "it") -> list[dict[str, Any]]:
    return [
        {
            "id": f"{prefix}_{i:04d}",
            "first_name": f"First{i}",
            "last_name": "Test",
            "email": f"{prefix}{i}@example.com",
        }
        for i in range(n)
    ]


# -------------------------------------------------------------------- paging


def test_paging_over_more_than_250_records(sandbox: Sandbox, make_hook: Callable[..., ChargebeeHook]) -> None:
    sandbox.insert("customers", customers(260))
    hook = make_hook()
    pages = list(hook.iter_pages("customers"))
    assert [len(p) for p in pages] == [100, 100, 60]
    records = [r for p in pages for r in p]
    assert len({r["id"] for r in records}) == 260
    stamps = [r["updated_at"] for r in records]
    assert stamps == sorted(stamps)
    assert hook.calls == {"GET customers": 3}


def test_small_pages(sandbox: Sandbox, make_hook: Callable[..., ChargebeeHook]) -> None:
    sandbox.insert("customers", customers(25))
    pages = list(make_hook().iter_pages("customers", limit=10))
    assert [len(p) for p in pages] == [10, 10, 5]


def test_incremental_filter(sandbox: Sandbox, make_hook: Callable[..., ChargebeeHook]) -> None:
    sandbox.insert("customers", customers(120))
    hook = make_hook()
    watermark = max(r["updated_at"] for p in hook.iter_pages("customers") for r in p)
    sandbox.advance(5)
    sandbox.insert(
        "customers", [{"id": "it_0007", "first_name": "Edited"}, {"id": "it_0099", "phone": "+4712"}]
    )
    hook.create("customers", {"id": "it_new", "email": "new@example.com"})
    changed = [r for p in hook.iter_pages("customers", updated_after=watermark) for r in p]
    assert [r["id"] for r in changed] == ["it_0007", "it_0099", "it_new"]
    assert changed[0]["first_name"] == "Edited"
    assert all(r["updated_at"] > watermark for r in changed)


def test_filters(sandbox: Sandbox, make_hook: Callable[..., ChargebeeHook]) -> None:
    sandbox.insert("customers", customers(5))
    hook = make_hook()
    found = [r for p in hook.iter_pages("customers", filters={"email[is]": "it3@example.com"}) for r in p]
    assert [r["id"] for r in found] == ["it_0003"]
    found = [r for p in hook.iter_pages("customers", filters={"id[in]": ["it_0001", "it_0004"]}) for r in p]
    assert sorted(r["id"] for r in found) == ["it_0001", "it_0004"]


def test_a_customer_delete_is_scheduled_then_purged(
    sandbox: Sandbox, make_hook: Callable[..., ChargebeeHook]
) -> None:
    """Chargebee schedules a customer delete and purges the customer minutes later: until
    then nothing shows it, afterwards it is in no list (include_deleted too); its
    customer_deleted event is the signal (tests/sandbox/test_customer_deletion.py)."""
    sandbox.insert("customers", customers(3))
    hook = make_hook()
    deleted = hook.action("customers", "it_0001", "delete")
    assert deleted["id"] == "it_0001" and deleted.get("deleted") is False
    assert hook.retrieve("customers", "it_0001") is not None
    sandbox.advance(301)
    assert hook.retrieve("customers", "it_0001") is None
    everything = {r["id"]: r for p in hook.iter_pages("customers") for r in p}
    assert set(everything) == {"it_0000", "it_0002"}
    live = {r["id"] for p in hook.iter_pages("customers", include_deleted=False) for r in p}
    assert live == {"it_0000", "it_0002"}
    events = [
        r for p in hook.iter_pages("events", filters={"event_type[in]": ["customer_deleted"]}) for r in p
    ]
    assert [e["content"]["customer"]["id"] for e in events] == ["it_0001"]


def test_deleted_items_are_listed_by_their_status(
    seeded: Sandbox, make_hook: Callable[..., ChargebeeHook]
) -> None:
    """Items have no include_deleted (Item.ListParams): a deleted item is seen through status[in]."""
    hook = make_hook(url=seeded.url)
    ids = [r["id"] for p in hook.iter_pages("items") for r in p]
    assert len(ids) >= 2
    hook.action("items", ids[0], "delete")
    everything = {r["id"]: r for p in hook.iter_pages("items") for r in p}
    assert everything[ids[0]]["deleted"] is True and everything[ids[0]]["status"] == "deleted"
    assert set(everything) == set(ids)
    live = {r["id"] for p in hook.iter_pages("items", include_deleted=False) for r in p}
    assert live == set(ids) - {ids[0]}


def test_seed_resources_unwrap(seeded: Sandbox, make_hook: Callable[..., ChargebeeHook]) -> None:
    hook = make_hook(url=seeded.url)
    for resource in ("customers", "items", "item_families", "orders", "invoices"):
        records = [r for p in hook.iter_pages(resource) for r in p]
        assert records and all(isinstance(r.get("id"), str) for r in records), resource
        assert hook.retrieve(resource, records[0]["id"])["id"] == records[0]["id"]  # type: ignore[index]
    events = [r for p in hook.iter_pages("events") for r in p]
    assert all("event_type" in e for e in events)
    # business entities have no documented list: the seeded ones are in the event history
    created = {
        e["content"]["business_entity"]["id"] for e in events if e["event_type"] == "business_entity_created"
    }
    assert created and all(isinstance(i, str) for i in created)


# -------------------------------------------------------------------- writes


def test_idempotent_create(sandbox: Sandbox, make_hook: Callable[..., ChargebeeHook]) -> None:
    hook = make_hook()
    params = {
        "id": "cust_idem",
        "first_name": "Ann",
        "email": "ann@example.com",
        "meta_data": {"crm_id": "C-1"},
    }
    first = hook.create("customers", params, idempotency_key="flow-create-C-1")
    again = hook.create("customers", params, idempotency_key="flow-create-C-1")
    assert again == first and first["meta_data"] == {"crm_id": "C-1"}
    assert sandbox.stats()["counters"]["idempotent_replays"] == 1
    with pytest.raises(Conflict) as info:
        hook.create("customers", params, idempotency_key="another-key")
    assert info.value.code == "duplicate_entry" and info.value.param == "id"
    ids = [r["id"] for p in hook.iter_pages("customers") for r in p]
    assert ids.count("cust_idem") == 1


def test_update_and_billing_info(sandbox: Sandbox, make_hook: Callable[..., ChargebeeHook]) -> None:
    sandbox.insert("customers", customers(1))
    hook = make_hook()
    before = hook.retrieve("customers", "it_0000")
    assert before is not None
    after = hook.update("customers", "it_0000", {"first_name": "Renamed", "meta_data": {"k": "v"}})
    assert after["first_name"] == "Renamed" and after["meta_data"] == {"k": "v"}
    assert after["resource_version"] > before["resource_version"]
    with pytest.raises(ValidationError) as info:
        hook.update("customers", "it_0000", {"billing_address": {"city": "Oslo"}})
    assert info.value.param and info.value.param.startswith("billing_address")
    billed = hook.action(
        "customers", "it_0000", "update_billing_info", {"billing_address": {"city": "Oslo", "country": "NO"}}
    )
    assert billed["billing_address"]["city"] == "Oslo"


def test_validation_error_names_the_param(sandbox: Sandbox, make_hook: Callable[..., ChargebeeHook]) -> None:
    with pytest.raises(ValidationError) as info:
        make_hook().create("customers", {"email": "not-an-email"})
    assert info.value.param == "email" and info.value.status == 400
    assert "chargebee POST customers failed: HTTP 400" in str(info.value)


# ---------------------------------------------------------- faults and limits


def test_retries_injected_server_errors(
    sandbox: Sandbox, make_hook: Callable[..., ChargebeeHook], sleeps: list[float]
) -> None:
    sandbox.insert("customers", customers(260))
    sandbox.faults(seed=7, error_rate=0.3, statuses=[500, 502, 503])
    hook = make_hook()
    records = [r for p in hook.iter_pages("customers") for r in p]
    assert len({r["id"] for r in records}) == 260
    for i in range(10):
        hook.update("customers", f"it_{i:04d}", {"last_name": "Retried"})
    stats = sandbox.stats()
    assert sum(stats["faults_injected"].values()) > 0 and sleeps
    # Every injected failure cost one extra call, and nothing else did.
    assert sum(hook.calls.values()) == 3 + 10 + sum(stats["faults_injected"].values())
    sandbox.faults()
    for i in range(10):
        assert hook.retrieve("customers", f"it_{i:04d}")["last_name"] == "Retried"  # type: ignore[index]


def test_retries_injected_429(
    sandbox: Sandbox, make_hook: Callable[..., ChargebeeHook], sleeps: list[float]
) -> None:
    sandbox.insert("customers", customers(150))
    sandbox.faults(seed=3, rate_429=0.3)
    penalties: list[float] = []

    class Recording(RateBudget):
        def penalise(self, retry_after: float) -> None:
            penalties.append(retry_after)

    hook = make_hook(budget=Recording(0))
    assert sum(len(p) for p in hook.iter_pages("customers", limit=20)) == 150
    assert penalties and all(p == 1.0 for p in penalties)  # the sandbox's Retry-After
    assert any(s >= 1.0 for s in sleeps)


def test_lost_response_on_create_does_not_duplicate(
    sandbox: Sandbox, make_hook: Callable[..., ChargebeeHook]
) -> None:
    sandbox.faults(seed=1, lost_response_rate=1.0)
    hook = make_hook()
    made = hook.create("customers", {"first_name": "NoId", "email": "lost@example.com"})
    assert made["email"] == "lost@example.com"
    sandbox.faults()
    same = [r for p in hook.iter_pages("customers", filters={"email[is]": "lost@example.com"}) for r in p]
    assert len(same) == 1 and hook.calls["POST customers"] == 2


def test_budget_keeps_under_the_sites_real_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> None:
    with server_mod.serve_in_thread(
        tmp_path / "cb.json", port=0, rate_limit_per_minute=10, block_seconds=1
    ) as (_server, url):
        sb = Sandbox(url)
        conn = {
            "conn_type": "chargebee",
            "host": url,
            "password": API_KEY,
            "extra": {"rate_limit_per_minute": 10, "rate_limit_burst": 10},
        }
        monkeypatch.setenv("AIRFLOW_CONN_CB_LIMITED", json.dumps(conn))
        hook = ChargebeeHook("cb_limited")
        for _ in range(10):
            assert hook.retrieve("customers", "nobody") is None
        with pytest.raises(TimeoutError):
            hook.budget.acquire(timeout=0.5)  # the 11th request would wait ~a minute
        assert sb.stats()["rate_limited"] == 0

        # Another hook of the same site shares that budget, whatever its own extra says...
        monkeypatch.setenv(
            "AIRFLOW_CONN_CB_UNLIMITED", json.dumps({**conn, "extra": {"rate_limit_per_minute": 0}})
        )
        assert ChargebeeHook("cb_unlimited").budget is hook.budget
        # ...and without any budget the 11th request is refused; the hook honours Retry-After.
        unlimited = ChargebeeHook("cb_unlimited", budget=RateBudget(0), retry_policy=RetryPolicy(max_wait=5))
        started = time.monotonic()
        assert unlimited.retrieve("customers", "nobody") is None
        assert time.monotonic() - started >= 1.0
        assert sb.stats()["rate_limited"] == 1
        assert unlimited.calls == {"GET customers/{id}": 2}


def test_auth_failure_is_reported_clearly(sandbox: Sandbox, make_hook: Callable[..., ChargebeeHook]) -> None:
    hook = make_hook(password="wrong_key_ABCDEF")
    with pytest.raises(AuthError) as info:
        list(hook.iter_pages("customers"))
    text = str(info.value)
    assert text.startswith("chargebee GET customers failed: HTTP 401, api_authentication_failed")
    assert "wrong_key_ABCDEF" not in text
    assert hook.calls == {"GET customers": 1}  # never retried
    ok, message = hook.test_connection()
    assert not ok and "401" in message
