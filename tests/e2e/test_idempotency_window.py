"""Creates stay exactly-once when the rerun comes after the idempotency window (issue 12).

Chargebee keeps an idempotency key for a limited window (its idempotency page states 30
minutes; the sandbox's default, ``idempotency_ttl`` 1800 s). A create whose response was
lost (the upsert SIGKILLed right after the create was applied) and whose task a person
clears days later is sent again with the same key, but Chargebee no longer remembers it:
the key cannot save the day. What must: the writer's recovery (a row left ``in_flight``
is looked up before it is created again: the Chargebee id the sync gives a record,
``crm-<Customcrm id>`` or the SKU, and the Customcrm ``ExternalRef``).

Per flow that creates on both sides (``contact_customer``, ``product_item``), on freshly
seeded sandboxes with a first run done: one new record on each side, then a run whose
Chargebee upsert and Customcrm upsert are each SIGKILLed right after their create was
applied (the crash machinery of ``test_crash_every_flow``: ``Worker``, kill point
``after_write``); both sandbox clocks move 3 days; then (a) the killed tasks rerun with the
same run_id and ``update_links`` finishes it, and (b) a new run follows. Each person or
product exists once on each side, linked once, and the Chargebee sandbox served no
idempotent replay after the clocks moved (its stored key had expired: checked in its state).

The Customcrm sandbox keeps keys with no time limit (its contract names none), so its
side runs on a connection without an idempotency header (``idempotency_header: null``, a
CRM that has none): the rerun's create then has nothing to replay either, exactly as
after an expired window.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import requests
from crmsync.flows.writers import idempotency_key
from crmsync.store.schema import link, plan, quarantine
from sqlalchemy import select

from tests.e2e.test_crash_every_flow import Worker, World, all_steps, sides_with_writes, step

pytestmark = pytest.mark.e2e

DAYS = 3
#: the stored key is gone after the window: Chargebee's documented 30 minutes
CB_WINDOW = 1800


def _post(url: str, body: dict[str, Any]) -> Any:
    resp = requests.post(url, json=body, timeout=10)
    resp.raise_for_status()
    return resp.json()


#: Per flow: the records added before the crashed run (one per side, through each API),
#: how a record is told apart (its "person"), and the Chargebee create path.
NEW = {
    "contact_customer": {
        "customcrm": (
            "contacts",
            {"FirstName": "Wenche", "LastName": "Window", "Email": "wenche.window@late-rerun.example"},
        ),
        "chargebee": (
            "customers",
            {"first_name": "Kari", "last_name": "Kvarter", "email": "kari.kvarter@late-rerun.example"},
        ),
        "crm_key": lambda r: (r.get("Email") or "").lower(),
        "cb_key": lambda r: (r.get("email") or "").lower(),
        "cb_path": "/api/v2/customers",
    },
    "product_item": {
        "customcrm": (
            "products",
            {"Sku": "NP-LATE-RERUN", "Name": "Late Rerun Add-on", "Kind": "addon", "Archived": False},
        ),
        "chargebee": (
            "items",
            {
                "id": "np-window-plan",
                "name": "Window Plan",
                "type": "plan",
                "item_family_id": "nordpulse-software",
            },
        ),
        "crm_key": lambda r: (r.get("Sku") or "").lower(),
        "cb_key": lambda r: (r.get("id") or "").lower(),
        "cb_path": "/api/v2/items",
    },
}


#: the flow's Customcrm resource
RESOURCES = {"contact_customer": "contacts", "product_item": "products"}


class Scene:
    """A World (fresh seeded sandboxes, emptied link store) for one flow."""

    def __init__(self, world: World, flow: str) -> None:
        self.world = world
        self.flow = flow
        self.spec = NEW[flow]
        self.api = world.api

    def live(self, side: str) -> list[dict[str, Any]]:
        """The flow's records on ``side`` that are not deleted."""
        resource = self.spec[side][0] if side == "chargebee" else RESOURCES[self.flow]
        records = self.world._records(side).get(resource, [])
        return [r for r in records if not r.get("Deleted") and not r.get("deleted")]

    def live_ids(self, side: str) -> set[str]:
        return {str(r.get("Id", r.get("id"))) for r in self.live(side)}

    def people(self, side: str) -> Counter[str]:
        key = self.spec["crm_key"] if side == "customcrm" else self.spec["cb_key"]
        return Counter(key(r) for r in self.live(side))

    def add_new_records(self) -> dict[str, str]:
        """One new record on each side, through the API; returns their ids by side."""
        resource, body = self.spec["customcrm"]
        made = self.api.crm("POST", resource, json=body)
        cb_resource, cb_body = self.spec["chargebee"]
        cb_made = self.api.cb("POST", cb_resource, data=cb_body)
        return {"customcrm": made["Id"], "chargebee": next(iter(cb_made.values()))["id"]}

    def links(self) -> list[tuple[str, str]]:
        with self.world.engine.connect() as conn:
            rows = conn.execute(select(link.c.crm_id, link.c.cb_id).where(link.c.flow == self.flow))
            return [(str(a), str(b)) for a, b in rows]

    def planned_ops(self, run_id: str) -> dict[str, list[str]]:
        with self.world.engine.connect() as conn:
            rows = conn.execute(
                select(plan.c.crm_op, plan.c.cb_op, plan.c.crm_id).where(
                    plan.c.flow == self.flow, plan.c.run_id == run_id
                )
            ).all()
        return {
            "customcrm": sorted(op for op, _, _ in rows if op),
            "chargebee": sorted(op for _, op, _ in rows if op),
        }

    def statuses(self, run_id: str) -> dict[str, list[str]]:
        with self.world.engine.connect() as conn:
            rows = conn.execute(
                select(plan.c.crm_op, plan.c.crm_status, plan.c.cb_op, plan.c.cb_status).where(
                    plan.c.flow == self.flow, plan.c.run_id == run_id
                )
            ).all()
        return {
            "customcrm": sorted(str(st) for op, st, _, _ in rows if op),
            "chargebee": sorted(str(st) for _, _, op, st in rows if op),
        }

    def held(self) -> list[tuple[str, str, str]]:
        """What the flow holds, but references waiting for another flow (``ref_pending``:
        contact_customer's company, linked by customer_business_entity, which is not run)."""
        with self.world.engine.connect() as conn:
            cols = (quarantine.c.side, quarantine.c.record_id, quarantine.c.kind)
            rows = conn.execute(select(*cols).where(quarantine.c.flow == self.flow))
            return [tuple(r) for r in rows if r.kind != "ref_pending"]

    def writes_of(self, run_id: str) -> list[dict[str, Any]]:
        """The planned writes of a run (for a failure's message)."""
        cols = (plan.c.action, plan.c.crm_id, plan.c.cb_id, plan.c.crm_op, plan.c.crm_changes)
        cols += (plan.c.cb_op, plan.c.cb_changes, plan.c.reason)
        with self.world.engine.connect() as conn:
            rows = conn.execute(select(*cols).where(plan.c.flow == self.flow, plan.c.run_id == run_id))
            return [dict(r._mapping) for r in rows if r.crm_op or r.cb_op]

    def clock(self, base: str, advance: float) -> None:
        _post(f"{base}/_sandbox/clock", {"advance": advance})


@pytest.fixture
def scene_factory(airflow_db: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from crmsync.store.engine import store_engine

    with ExitStack() as stack, pytest.MonkeyPatch.context() as mp:

        def make(flow: str) -> tuple[Scene, Worker]:
            world = World(stack, tmp_path_factory.mktemp(flow), mp, store_engine())
            # Customcrm without an idempotency header: see the module docstring
            crm_conn = json.loads(os.environ["AIRFLOW_CONN_CUSTOMCRM_DEFAULT"])
            crm_conn["extra"] = {**crm_conn.get("extra", {}), "idempotency_header": None}
            mp.setenv("AIRFLOW_CONN_CUSTOMCRM_DEFAULT", json.dumps(crm_conn))
            worker = Worker()
            stack.callback(worker.close)
            return Scene(world, flow), worker

        yield make


@pytest.mark.parametrize("flow", ["contact_customer", "product_item"])
def test_a_create_rerun_days_after_the_window_does_not_create_twice(scene_factory, flow):
    scene, worker = scene_factory(flow)
    world, api = scene.world, scene.api
    assert world.cb.state.idempotency_ttl == CB_WINDOW, "the sandbox's default is Chargebee's window"

    all_steps(flow, f"scheduled__window_{flow}_1")
    before = {side: scene.live_ids(side) for side in ("customcrm", "chargebee")}
    held_before = scene.held()
    new_ids = scene.add_new_records()

    run_id = f"scheduled__window_{flow}_2"
    step(flow, "extract", run_id, "customcrm")
    step(flow, "extract", run_id, "chargebee")
    step(flow, "transform", run_id)
    # exactly one create each way, nothing else: the kill lands right after that create
    assert scene.planned_ops(run_id) == {"customcrm": ["create"], "chargebee": ["create"]}
    assert sides_with_writes(world.engine, flow, run_id) == ["chargebee", "customcrm"]
    people_before = {side: scene.people(side) for side in ("customcrm", "chargebee")}
    for side in ("chargebee", "customcrm"):
        assert worker.run(flow, "upsert", side, run_id, "after_write", 1), f"{side} upsert was not killed"
    # both creates were applied (their responses lost with the process)
    crm_key, cb_key = scene.spec["crm_key"], scene.spec["cb_key"]
    cb_new = {cb_key(r) for r in scene.live("chargebee")} - set(people_before["chargebee"])
    crm_new = {crm_key(r) for r in scene.live("customcrm")} - set(people_before["customcrm"])
    assert len(cb_new) == 1 and len(crm_new) == 1, (cb_new, crm_new)

    # Chargebee stored the create's key; 3 days later it is gone (the window expired)
    cb_flow_key = idempotency_key(flow, "cb-create", new_ids["customcrm"], "")
    scoped = f"{scene.spec['cb_path']}\n{cb_flow_key}"
    with world.cb.state.lock:
        assert world.cb.state.idempotent_lookup(scoped) is not None, "the create carried the flow's key"
    for base in (api.cb_url, api.crm_url):
        scene.clock(base, DAYS * 86400)
    with world.cb.state.lock:
        assert world.cb.state.idempotent_lookup(scoped) is None, "the key outlived Chargebee's window"
    for base in (api.cb_url, api.crm_url):
        _post(f"{base}/_sandbox/stats/reset", {})

    # (a) a person clears the killed tasks days later: same run_id
    step(flow, "upsert", run_id, "chargebee")
    step(flow, "upsert", run_id, "customcrm")
    step(flow, "update_links", run_id)
    # the rerun itself finished both creates (found, not made again, nothing held)
    assert scene.statuses(run_id) == {"customcrm": ["done"], "chargebee": ["done"]}, json.dumps(
        scene.writes_of(run_id), default=str
    )
    assert scene.held() == held_before, "the rerun held a record"
    replays = api.stats("chargebee").get("counters", {}).get("idempotent_replays", 0)
    assert replays == 0, "the rerun got a replay: the window had not expired"
    # (b) the next scheduled run: it creates nothing (it may update: product_item writes
    # one Customcrm update for a product whose item it created, with no crash as well)
    run3 = f"scheduled__window_{flow}_3"
    all_steps(flow, run3)
    ops = scene.planned_ops(run3)
    assert "create" not in ops["customcrm"] + ops["chargebee"], json.dumps(scene.writes_of(run3), default=str)

    # every person once on each side ...
    for side in ("customcrm", "chargebee"):
        twice = {k: n for k, n in scene.people(side).items() if n > 1 and k}
        assert not twice, f"{side} holds these twice: {twice}"
    # ... the new ones on both sides ...
    for key in cb_new | crm_new:
        assert scene.people("customcrm")[key] == 1 and scene.people("chargebee")[key] == 1, key
    # ... and every record made since the first run linked exactly once
    links = scene.links()
    assert not [x for x, n in Counter(c for c, _ in links).items() if n > 1], links
    assert not [x for x, n in Counter(b for _, b in links).items() if n > 1], links
    linked = {"customcrm": {c for c, _ in links}, "chargebee": {b for _, b in links}}
    for side in ("customcrm", "chargebee"):
        made = scene.live_ids(side) - before[side]
        assert len(made) == 2, f"{side}: one record added by hand, one created by the sync: {sorted(made)}"
        assert made <= linked[side], f"{side}: made but not linked: {sorted(made - linked[side])}"
    assert new_ids["customcrm"] in linked["customcrm"] and new_ids["chargebee"] in linked["chargebee"]
