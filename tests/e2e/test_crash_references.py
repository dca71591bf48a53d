"""A crash between the Chargebee creates and ``update_links`` ends as a crash-free run does,
for records whose references are unresolved or still pending.

The scenario of issue 11 item 2: new company-less contacts, and contacts whose company has
no business entity, are synced by ``contact_customer``; the run is SIGKILLed while it
creates their Chargebee customers (Chargebee puts each in its default business entity),
nobody clears it, and the next scheduled run finds the customers the killed run made
(``crm-<contact id>``) and links them. Before the fix, that next run read the default
entity of those customers as an edit made in Chargebee and wrote the entity's company
into the contacts (``CustomerId = CUS-000001``), while the contacts whose customers a
clean run created kept no company.

Both orders of a first sync are covered: entities linked before the contacts are synced
(the default entity translates to its company at once), and contacts synced first (the
default entity is not linked yet: the reference is pending until
``customer_business_entity`` links it). Each chain is compared field by field with a
crash-free reference chain on identically seeded sandboxes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import pytest

from tests.e2e.test_crash_every_flow import Worker, World, all_steps, explain, step

pytestmark = pytest.mark.e2e

FLOW = "contact_customer"
#: the kill lands before the 6th write of the Chargebee upsert: five customers made
KILL_AT_WRITE = 6


def _plant(world: World) -> list[str]:
    """New contacts the sync must create customers for: 8 with no company, 3 whose company
    (new in Customcrm) has no business entity in Chargebee. Returns their ids."""
    api = world.api
    ids = []
    for i in range(8):
        c = api.crm(
            "POST",
            "contacts",
            json={"FirstName": "Solo", "LastName": f"Nocompany{i}", "Email": f"solo{i}@crash-refs.example"},
        )
        ids.append(c["Id"])
    company = api.crm("POST", "customers", json={"Name": "Entityless Crash Refs Ltd"})
    world.entityless = company["Id"]  # type: ignore[attr-defined]
    for i in range(3):
        c = api.crm(
            "POST",
            "contacts",
            json={
                "FirstName": "Staff",
                "LastName": f"Entityless{i}",
                "Email": f"staff{i}@crash-refs.example",
                "CustomerId": company["Id"],
            },
        )
        ids.append(c["Id"])
    return ids


def _contacts_sync(world: World, worker: Worker | None, run_id: str) -> None:
    """One contact_customer run: crash-free, or killed mid-create and never cleared."""
    if worker is None:
        all_steps(FLOW, run_id)
        return
    step(FLOW, "extract", run_id, "customcrm")
    step(FLOW, "extract", run_id, "chargebee")
    step(FLOW, "transform", run_id)
    assert worker.run(FLOW, "upsert", "chargebee", run_id, "before_write", KILL_AT_WRITE), (
        "the upsert finished before the kill: nothing was left unrecorded"
    )
    # abandoned: its retries spent, nobody clears it; the next scheduled run takes over


ORDERS: dict[str, Callable[[World, Worker | None], None]] = {}


def _entities_first(world: World, worker: Worker | None) -> None:
    all_steps("customer_business_entity", "scheduled__refs_entities")
    all_steps(FLOW, "scheduled__refs_contacts_0")
    _plant(world)
    _contacts_sync(world, worker, "scheduled__refs_contacts_1")
    all_steps(FLOW, "scheduled__refs_contacts_2")
    all_steps(FLOW, "scheduled__refs_contacts_3")


def _contacts_first(world: World, worker: Worker | None) -> None:
    _plant(world)
    _contacts_sync(world, worker, "scheduled__refs_contacts_1")
    all_steps(FLOW, "scheduled__refs_contacts_2")
    all_steps("customer_business_entity", "scheduled__refs_entities")
    all_steps(FLOW, "scheduled__refs_contacts_3")
    all_steps(FLOW, "scheduled__refs_contacts_4")


ORDERS["entities_first"] = _entities_first
ORDERS["contacts_first"] = _contacts_first


def _chain(order: str, crash: bool, tmp: Any, engine: Any) -> dict[str, Any]:
    with ExitStack() as stack, pytest.MonkeyPatch.context() as mp:
        world = World(stack, tmp, mp, engine)
        worker = None
        if crash:
            worker = Worker()
            stack.callback(worker.close)
        ORDERS[order](world, worker)
        before = world.writes()
        all_steps(FLOW, "scheduled__refs_idle")
        after = world.writes()
        state = world.state()
        state["entityless company"] = [world.entityless]  # type: ignore[attr-defined]
        state["idle writes"] = [json.dumps({k: after[k] - before[k] for k in after}, sort_keys=True)]
        return state


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_a_crash_before_the_links_leaves_the_crash_free_state(order, airflow_db, tmp_path_factory):
    from crmsync.store.engine import store_engine

    engine = store_engine()
    ref = _chain(order, False, tmp_path_factory.mktemp(f"ref-{order}"), engine)
    got = _chain(order, True, tmp_path_factory.mktemp(f"crash-{order}"), engine)

    # Every contact keeps its company (none, or one with no entity), whether the sync
    # created its customer in a clean run or in one killed before recording the link: the
    # customer sits in Chargebee's default entity, whose company is never copied over.
    for chain in (ref, got):
        contacts = [json.loads(c) for c in chain["customcrm/contacts"]]
        planted = [c for c in contacts if (c.get("Email") or "").endswith("@crash-refs.example")]
        solo = Counter(c.get("CustomerId") for c in planted if c["LastName"].startswith("Nocompany"))
        staff = Counter(c.get("CustomerId") for c in planted if c["LastName"].startswith("Entityless"))
        which = "crashed" if chain is got else "reference"
        assert solo == {None: 8}, (which, solo)
        assert staff == {chain["entityless company"][0]: 3}, (which, staff)

    problems = []
    for key in ref:
        missing = list((Counter(ref[key]) - Counter(got[key])).elements())
        extra = list((Counter(got[key]) - Counter(ref[key])).elements())
        if missing or extra:
            problems.append(f"{key}:\n{explain(missing, extra)}")
    assert not problems, f"{order}: the crashed chain differs from the clean one:\n" + "\n".join(problems)
    assert json.loads(ref["idle writes"][0]) == {"chargebee": 0, "customcrm": 0}
