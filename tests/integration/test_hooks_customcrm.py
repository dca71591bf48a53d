"""CustomcrmHook against the Customcrm reference server (``sandbox.customcrm``), in-process.

Covers keyset paging over hundreds of records, the incremental filter, tombstones,
idempotent creates, If-Match / 412, validation problems, retries on injected faults,
and an authentication failure.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

import pytest

server_mod = pytest.importorskip("sandbox.customcrm.server")

from crmsync.hooks.budget import RateBudget, reset_budgets  # noqa: E402
from crmsync.hooks.customcrm import CustomcrmHook  # noqa: E402
from crmsync.hooks.errors import (  # noqa: E402
    AuthError,
    PreconditionFailed,
    ServerError,
    TransportError,
    ValidationError,
)
from crmsync.hooks.retry import RetryPolicy  # noqa: E402

TOKEN = "sandbox_token"


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
            raw = resp.read()
            return json.loads(raw) if raw else None

    def faults(self, **config: Any) -> None:
        self.admin("POST", "faults", config)

    def stats(self) -> dict[str, Any]:
        return self.admin("GET", "stats")  # type: ignore[no-any-return]

    def insert(self, resource: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        answer = self.admin("POST", f"records/{resource}", records)
        return answer["records"] if "records" in answer else answer["items"]  # type: ignore[no-any-return]

    def edit(self, resource: str, record_id: str, values: dict[str, Any]) -> dict[str, Any]:
        answer = self.admin("PATCH", f"records/{resource}/{record_id}", values)
        return answer.get("record", answer)  # type: ignore[no-any-return]


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with server_mod.serve_in_thread(tmp_path / "customcrm.json", port=0) as (_server, url):
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
) -> Callable[..., CustomcrmHook]:
    counter = iter(range(10_000))

    def make(*, password: str = TOKEN, extra: dict[str, Any] | None = None) -> CustomcrmHook:
        conn_id = f"crm_it_{next(counter)}"
        conn = {"conn_type": "customcrm", "host": sandbox.url, "password": password, "extra": extra or {}}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        return CustomcrmHook(
            conn_id,
            budget=RateBudget(0, sleep=lambda s: None),
            retry_policy=RetryPolicy(sleep=sleeps.append, rng=lambda: 0.5),
        )

    return make


def contacts(n: int, prefix: str = "it") -> list[dict[str, Any]]:
    return [
        {
            "FirstName": f"First{i}",
            "LastName": "Test",
            "Email": f"{prefix}{i}@example.com",
            "ExternalRef": f"cb_{prefix}_{i}",
        }
        for i in range(n)
    ]


def flat(pages: Any) -> list[dict[str, Any]]:
    return [r for p in pages for r in p]


# -------------------------------------------------------------------- paging


def test_paging_over_more_than_250_records(sandbox: Sandbox, make_hook: Callable[..., CustomcrmHook]) -> None:
    sandbox.insert("contacts", contacts(260))
    hook = make_hook()
    pages = list(hook.iter_pages("contacts"))
    assert [len(p) for p in pages] == [100, 100, 60]
    records = flat(pages)
    assert len({r["Id"] for r in records}) == 260
    keys = [(r["UpdatedAt"], r["Id"]) for r in records]
    assert keys == sorted(keys)
    assert hook.calls == {"GET contacts": 3}


def test_edits_during_paging_are_not_skipped(
    sandbox: Sandbox, make_hook: Callable[..., CustomcrmHook]
) -> None:
    made = sandbox.insert("contacts", contacts(250))
    hook = make_hook()
    pages = hook.iter_pages("contacts")
    seen = [r["Id"] for r in next(pages)]
    sandbox.edit("contacts", made[10]["Id"], {"City": "Oslo"})  # already read: moves to the end
    seen += [r["Id"] for r in flat(pages)]
    assert set(seen) == {r["Id"] for r in made}
    assert seen.count(made[10]["Id"]) == 2  # re-read, never lost


def test_incremental_filter(sandbox: Sandbox, make_hook: Callable[..., CustomcrmHook]) -> None:
    made = sandbox.insert("contacts", contacts(120))
    hook = make_hook()
    last = max(
        datetime.fromisoformat(r["UpdatedAt"].replace("Z", "+00:00"))
        for r in flat(hook.iter_pages("contacts"))
    )
    edited = sandbox.edit("contacts", made[5]["Id"], {"City": "Bergen"})
    created = hook.create("contacts", {"FirstName": "New", "Email": "new@example.com"})
    since = flat(hook.iter_pages("contacts", updated_since=last))
    ids = [r["Id"] for r in since]
    # updated_since is inclusive: the record at the watermark itself is read again.
    assert ids[-2:] == [edited["Id"], created["Id"]] and len(ids) == 3


def test_tombstones_and_find(sandbox: Sandbox, make_hook: Callable[..., CustomcrmHook]) -> None:
    made = sandbox.insert("contacts", contacts(3))
    hook = make_hook()
    victim = made[1]
    hook.delete("contacts", victim["Id"], if_match=victim["Version"])
    hook.delete("contacts", victim["Id"])  # deleting a tombstone again is a no-op
    assert hook.get("contacts", victim["Id"]) is None  # 410
    assert hook.get("contacts", "con-does-not-exist") is None  # 404
    every = {r["Id"]: r for r in flat(hook.iter_pages("contacts"))}
    assert every[victim["Id"]]["Deleted"] is True
    live = {r["Id"] for r in flat(hook.iter_pages("contacts", include_deleted=False))}
    assert victim["Id"] not in live and len(live) == 2
    assert [r["Id"] for r in hook.find("contacts", external_ref="cb_it_1")] == [victim["Id"]]
    assert [r["Id"] for r in hook.find("contacts", email="it2@example.com")] == [made[2]["Id"]]
    assert hook.find("contacts", email="nobody@example.com") == []


# -------------------------------------------------------------------- writes


def test_idempotent_create(sandbox: Sandbox, make_hook: Callable[..., CustomcrmHook]) -> None:
    hook = make_hook()
    body = {"FirstName": "Ann", "Email": "ann@example.com", "ExternalRef": "cb_ann"}
    first = hook.create("contacts", body, idempotency_key="flow-create-cb_ann")
    again = hook.create("contacts", body, idempotency_key="flow-create-cb_ann")
    assert again == first and first["Version"] >= 1
    assert len(hook.find("contacts", external_ref="cb_ann")) == 1
    with pytest.raises(ValidationError) as info:
        hook.create("contacts", {**body, "FirstName": "Other"}, idempotency_key="flow-create-cb_ann")
    assert info.value.field == "Idempotency-Key"


def test_update_with_if_match_and_412(sandbox: Sandbox, make_hook: Callable[..., CustomcrmHook]) -> None:
    (record,) = sandbox.insert("contacts", contacts(1))
    hook = make_hook()
    updated = hook.update("contacts", record["Id"], {"City": "Oslo"}, if_match=record["Version"])
    assert updated["City"] == "Oslo" and updated["Version"] == record["Version"] + 1
    with pytest.raises(PreconditionFailed) as info:
        hook.update("contacts", record["Id"], {"City": "Bergen"}, if_match=record["Version"])
    assert info.value.status == 412 and info.value.code == "version-mismatch"
    assert hook.get("contacts", record["Id"])["City"] == "Oslo"  # type: ignore[index]
    assert hook.calls["PATCH contacts/{id}"] == 2  # 412 is not retried


def test_validation_problem_names_fields(sandbox: Sandbox, make_hook: Callable[..., CustomcrmHook]) -> None:
    with pytest.raises(ValidationError) as info:
        make_hook().create("contacts", {"FirstName": "x" * 300, "Email": "not-an-email"})
    e = info.value
    assert {f for f, _ in e.errors} >= {"FirstName", "Email"}
    assert e.status in (400, 422) and "x" * 40 not in str(e)


# ---------------------------------------------------------- faults and auth


def test_retries_injected_faults(
    sandbox: Sandbox, make_hook: Callable[..., CustomcrmHook], sleeps: list[float]
) -> None:
    made = sandbox.insert("contacts", contacts(260))
    sandbox.faults(seed=11, error_rate=0.25, statuses=[500, 502, 503], rate_429=0.1)
    hook = make_hook()
    assert len({r["Id"] for r in flat(hook.iter_pages("contacts"))}) == 260
    for r in made[:10]:
        hook.update("contacts", r["Id"], {"City": "Tromsø"}, if_match=r["Version"])
    for i in range(5):
        hook.create("contacts", {"FirstName": f"Retry{i}", "Email": f"retry{i}@example.com"})
    injected = sandbox.stats()["faults_injected"]
    assert sum(injected.values()) > 0 and sleeps
    sandbox.faults()
    assert all(hook.get("contacts", r["Id"])["City"] == "Tromsø" for r in made[:10])  # type: ignore[index]
    for i in range(5):
        assert len(hook.find("contacts", email=f"retry{i}@example.com")) == 1  # no duplicates


def test_lost_responses(sandbox: Sandbox, make_hook: Callable[..., CustomcrmHook]) -> None:
    """Writes applied by the server whose answer never arrived (500 or dropped connection)."""
    made = sandbox.insert("contacts", contacts(10))
    hook = make_hook()
    sandbox.faults(seed=2, lost_response_rate=0.5)
    created = 0
    for i in range(8):
        try:
            hook.create("contacts", {"FirstName": "Lost", "Email": f"lost{i}@example.com"})
            created += 1
        except (ServerError, TransportError):
            pass  # every attempt lost: possible, but the record must still exist only once
    stale = 0
    for r in made:
        try:
            hook.update("contacts", r["Id"], {"City": "Oslo"}, if_match=r["Version"])
        except PreconditionFailed:
            # The replayed PATCH met the version our own applied attempt created; the
            # engine's re-read then finds its values in place (see PreconditionFailed).
            stale += 1
        except (ServerError, TransportError):
            pass
    sandbox.faults()
    assert created > 0 and stale > 0
    for i in range(8):
        assert len(hook.find("contacts", email=f"lost{i}@example.com")) == 1  # never duplicated
    assert all(hook.get("contacts", r["Id"])["City"] == "Oslo" for r in made)  # type: ignore[index]


def test_auth_failure_is_reported_clearly(sandbox: Sandbox, make_hook: Callable[..., CustomcrmHook]) -> None:
    hook = make_hook(password="wrong_token_XYZ")
    with pytest.raises(AuthError) as info:
        hook.get("contacts", "con-1")
    text = str(info.value)
    assert text.startswith("customcrm GET contacts/{id} failed: HTTP 401, unauthorized")
    assert "wrong_token_XYZ" not in text and hook.calls == {"GET contacts/{id}": 1}
    ok, message = hook.test_connection()
    assert not ok and "401" in message
    assert make_hook().test_connection() == (True, f"Connected to {sandbox.url}")
