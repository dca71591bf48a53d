"""Both hooks implement SyncClient with the same requests their own methods send."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from crmsync.hooks.budget import RateBudget
from crmsync.hooks.chargebee import ChargebeeHook
from crmsync.hooks.client import SyncClient
from crmsync.hooks.customcrm import CustomcrmHook
from crmsync.hooks.errors import NotFound
from crmsync.hooks.retry import RetryPolicy

from .conftest import Stub, StubRequest


@pytest.fixture
def cb(stub: Stub, make_conn: Any, fast_policy: RetryPolicy, no_budget: RateBudget) -> ChargebeeHook:
    conn_id = make_conn("chargebee", host=f"{stub.base_url}/api/v2", password="k")
    return ChargebeeHook(conn_id, budget=no_budget, retry_policy=fast_policy)


@pytest.fixture
def crm(stub: Stub, make_conn: Any, fast_policy: RetryPolicy, no_budget: RateBudget) -> CustomcrmHook:
    conn_id = make_conn("customcrm", host=stub.base_url, password="t")
    return CustomcrmHook(conn_id, budget=no_budget, retry_policy=fast_policy)


def _seen(stub: Stub) -> list[tuple[str, str, list[tuple[str, str]]]]:
    out = [(r.method, r.path, sorted(r.query)) for r in stub.requests]
    stub.requests.clear()
    return out


def test_both_hooks_are_sync_clients(cb: ChargebeeHook, crm: CustomcrmHook) -> None:
    clients: list[SyncClient] = [cb, crm]  # mypy checks the structure; this the presence
    for client in clients:
        for name in ("listable", "iter_changed", "get", "create", "update", "delete", "find_own"):
            assert callable(getattr(client, name))


@pytest.mark.parametrize("since", [None, 1700000000.75])
def test_chargebee_iter_changed_sends_what_iter_pages_sends(
    stub: Stub, cb: ChargebeeHook, since: float | None
) -> None:
    stub.respond(lambda req: (200, {}, {"list": [{"item": {"id": "i1"}}]}))
    new = list(cb.iter_changed("items", since))
    new_reqs = _seen(stub)
    old = list(cb.iter_pages("items", updated_after=None if since is None else int(since)))
    assert new == old == [[{"id": "i1"}]]
    assert new_reqs == _seen(stub)
    assert ("updated_at[after]", "1700000000") in new_reqs[0][2] or since is None


@pytest.mark.parametrize("since", [None, 1714557600.5])
def test_customcrm_iter_changed_sends_what_iter_pages_sends(
    stub: Stub, crm: CustomcrmHook, since: float | None
) -> None:
    stub.respond(lambda req: (200, {}, {"items": [], "next_cursor": None}))
    list(crm.iter_changed("contacts", since, include_deleted=False))
    new_reqs = _seen(stub)
    when = None if since is None else datetime.fromtimestamp(since, UTC)
    list(crm.iter_pages("contacts", updated_since=when, include_deleted=False))
    assert new_reqs == _seen(stub)
    assert ("include_deleted", "false") in new_reqs[0][2]


def test_listable(cb: ChargebeeHook, crm: CustomcrmHook) -> None:
    assert cb.listable("customers") and not cb.listable("business_entities")
    assert crm.listable("contacts")


def test_chargebee_get_find_own_and_delete(stub: Stub, cb: ChargebeeHook) -> None:
    def handler(req: StubRequest) -> Any:
        if "/gone" in req.path:
            return 404, {}, {"api_error_code": "resource_not_found", "message": "gone"}
        return 200, {}, {"order": {"id": "o1"}}

    stub.respond(handler)
    assert cb.get("orders", "o1") == {"id": "o1"}
    assert cb.find_own("orders", "o1") == [{"id": "o1"}]
    assert cb.get("orders", "gone") is None and cb.find_own("orders", "gone") == []
    _seen(stub)
    cb.delete("orders", "o1")  # an order's delete action is cancel
    cb.delete("customers", "o1")
    assert [(m, p) for m, p, _ in _seen(stub)] == [
        ("POST", "/api/v2/orders/o1/cancel"),
        ("POST", "/api/v2/customers/o1/delete"),
    ]
    with pytest.raises(NotFound):
        cb.delete("customers", "gone")


def test_chargebee_refuses_a_condition_it_cannot_keep(stub: Stub, cb: ChargebeeHook) -> None:
    with pytest.raises(ValueError, match="no conditional write"):
        cb.update("customers", "c1", {"first_name": "A"}, if_match=3)
    with pytest.raises(ValueError, match="no conditional write"):
        cb.delete("customers", "c1", if_match=3)
    assert stub.requests == []


def test_customcrm_find_own_is_the_external_ref_filter(stub: Stub, crm: CustomcrmHook) -> None:
    stub.respond(lambda req: (200, {}, {"items": [{"Id": "C1", "ExternalRef": "cb_1"}], "next_cursor": None}))
    assert crm.find_own("contacts", "cb_1") == crm.find("contacts", external_ref="cb_1")
    first, second = _seen(stub)
    assert first == second


def test_one_resource_registry() -> None:
    from crmsync.hooks import chargebee
    from crmsync.mapping.capabilities import CAPABILITIES, RESOURCES

    assert chargebee.RESOURCES is RESOURCES  # the hook reads the registry, keeps no list of its own
    assert set(CAPABILITIES) <= set(RESOURCES)
    for name, cap in CAPABILITIES.items():
        assert cap.object_key == RESOURCES[name].object_key
    assert CAPABILITIES["business_entities"].object_key == "business_entity"
