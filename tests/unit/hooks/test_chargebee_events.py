"""Records read from Chargebee events (business entities have no documented list by updated_at)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from crmsync.hooks.budget import RateBudget
from crmsync.hooks.chargebee import ChargebeeHook, ChargebeeResource
from crmsync.hooks.chargebee_events import iter_changed, records_from_events
from crmsync.hooks.retry import RetryPolicy


def ev(event_type: str, **be: Any) -> dict[str, Any]:
    return {
        "id": f"ev_{event_type}_{be.get('resource_version')}",
        "event_type": event_type,
        "occurred_at": 1,
        "content": {"business_entity": be},
    }


def test_newest_snapshot_per_record_and_deletes_are_marked() -> None:
    events = [
        ev("business_entity_created", id="be1", name="A", resource_version=1, deleted=False),
        ev("business_entity_updated", id="be2", name="B", resource_version=2, deleted=False),
        ev("business_entity_updated", id="be1", name="A2", resource_version=3, deleted=False),
        ev("business_entity_deleted", id="be2", name="B", resource_version=4),
    ]
    out = records_from_events(events, "business_entity")
    assert [(r["id"], r["name"], r.get("deleted")) for r in out] == [("be1", "A2", False), ("be2", "B", True)]


def test_an_older_snapshot_on_a_later_page_is_dropped_and_junk_is_skipped() -> None:
    newest: dict[str, int] = {}
    first = records_from_events(
        [ev("business_entity_updated", id="be1", name="new", resource_version=9)], "business_entity", newest
    )
    late = records_from_events(
        [
            ev("business_entity_updated", id="be1", name="old", resource_version=5),
            {"event_type": "business_entity_updated", "content": {"customer": {"id": "c1"}}},
            {"event_type": "business_entity_updated", "content": None},
            ev("business_entity_updated", id="", name="no id"),
        ],
        "business_entity",
        newest,
    )
    assert [r["name"] for r in first] == ["new"] and late == []


@pytest.fixture
def hook(stub: Any, make_conn: Any, fast_policy: RetryPolicy, no_budget: RateBudget) -> ChargebeeHook:
    conn_id = make_conn("chargebee", host=f"{stub.base_url}/api/v2", password="test_key")
    return ChargebeeHook(conn_id, budget=no_budget, retry_policy=fast_policy)


class FakeHook:
    def __init__(self, pages: list[list[dict[str, Any]]]) -> None:
        self.pages = pages
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def resource(self, name: str) -> ChargebeeResource:
        return ChargebeeResource(name, "business_entity")

    def iter_pages(self, resource: str, **kw: Any) -> Iterator[list[dict[str, Any]]]:
        self.calls.append((resource, kw))
        yield from self.pages


def test_iter_changed_asks_for_the_event_types_after_the_watermark() -> None:
    hook = FakeHook([[ev("business_entity_updated", id="be1", name="A", resource_version=1)], []])
    types = ["business_entity_created", "business_entity_updated", "business_entity_deleted"]
    pages = list(iter_changed(hook, "business_entities", types, 1700))
    assert pages == [[{"id": "be1", "name": "A", "resource_version": 1}]]
    assert hook.calls == [("events", {"updated_after": 1700, "filters": {"event_type[in]": types}})]


# -- a first run: no documented list of business entities -------------------------------------

TYPES = ["business_entity_created", "business_entity_updated", "business_entity_deleted"]


def sdk_params(model: str, params_class: str) -> set[str]:
    """The params an operation of the official SDK declares: the contract."""
    import importlib

    module = importlib.import_module(f"chargebee.models.{model}.operations")
    owner = next(v for k, v in vars(module).items() if isinstance(v, type) and hasattr(v, params_class))
    return set(getattr(owner, params_class).__annotations__)


def entity_site(req: Any) -> tuple[int, dict[str, str], Any]:
    """Chargebee as documented: events, customers and transfers; no business entity list."""
    if req.path == "/api/v2/events":
        created = {"id": "be_known", "name": "Known AS", "resource_version": 1}
        return 200, {}, {"list": [{"event": ev("business_entity_created", **created)}]}
    if req.path == "/api/v2/customers":
        customers = [
            {"id": "c1", "business_entity_id": "be_known"},
            {"id": "c2", "business_entity_id": "be_old"},
        ]
        return 200, {}, {"list": [{"customer": c} for c in customers]}
    if req.path == "/api/v2/business_entities/transfers":
        transfer = {
            "id": "t1",
            "source_business_entity_id": "be_old",
            "destination_business_entity_id": "be_moved",
        }
        return 200, {}, {"list": [{"business_entity_transfer": transfer}]}
    return (
        404,
        {},
        {"message": "Sorry, we couldn't find that resource", "api_error_code": "resource_not_found"},
    )


def test_a_first_run_reads_only_documented_endpoints_with_declared_params(hook: Any, stub: Any) -> None:
    from crmsync.hooks.chargebee_events import UNLEARNED, iter_known

    stub.respond(entity_site)
    pages = list(iter_known(hook, "business_entities", TYPES, linked=lambda ids: {"be_moved"}))

    # the entity events tell, from the beginning of the history (no occurred_at filter)
    assert pages[0] == [{"id": "be_known", "name": "Known AS", "resource_version": 1}]
    # one named by a customer but by no event: reported with the customer and the fix, not
    # guessed; one already linked keeps its link (nothing staged, nothing read as a clear)
    [placeholder] = pages[1]
    assert placeholder["id"] == "be_old" and set(placeholder) == {"id", UNLEARNED}
    assert "customer c2 (business_entity_id)" in placeholder[UNLEARNED]
    assert "Settings > Business entities" in placeholder[UNLEARNED]

    declared = {
        "/api/v2/events": sdk_params("event", "ListParams"),
        "/api/v2/customers": sdk_params("customer", "ListParams"),
        "/api/v2/business_entities/transfers": sdk_params("business_entity", "GetTransfersParams"),
    }
    assert [r.path for r in stub.requests] == list(declared)
    for req in stub.requests:
        assert req.method == "GET"
        names = {key.split("[", 1)[0] for key, _ in req.query}
        assert names <= declared[req.path], (req.path, names - declared[req.path])
    events = stub.requests[0].params
    assert events["sort_by[asc]"] == "occurred_at" and "occurred_at[after]" not in events
    assert json.loads(events["event_type[in]"]) == TYPES


def test_the_hook_refuses_to_list_or_retrieve_business_entities(hook: Any, stub: Any) -> None:
    """Chargebee documents neither: a real site may answer 404, so nothing may depend on them."""
    with pytest.raises(ValueError, match="documents no list or retrieve of business_entities"):
        next(iter(hook.iter_pages("business_entities")))
    with pytest.raises(ValueError, match="documents no list or retrieve"):
        hook.retrieve("business_entities", "be_1")
    assert stub.requests == []
