"""Customer deletes are scheduled, as Chargebee documents, and purged later.

"Delete a customer": "This operation schedules the customer resource for deletion, and it
is permanently deleted after a few minutes." (apidocs.chargebee.com, customers); the
``customer_deleted`` event is "Triggered when a customer is deleted". Where the docs are
silent the sandbox is strict: nothing shows the pending delete, and the purged customer
is gone from every list, ``include_deleted=true`` too.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.sandbox.conftest import T0, CbSandbox

PURGE = 300


def _customer(sb: CbSandbox, cid: str, **params: Any) -> dict[str, Any]:
    resp = sb.api.post("/customers", data={"id": cid, **params})
    assert resp.status_code == 200, resp.text
    return resp.json()["customer"]  # type: ignore[no-any-return]


def _listed(sb: CbSandbox, **params: Any) -> dict[str, bool]:
    page = sb.api.get("/customers", params={"limit": 100, **params}).json()["list"]
    return {e["customer"]["id"]: e["customer"]["deleted"] for e in page}


def _deleted_events(sb: CbSandbox) -> list[dict[str, Any]]:
    page = sb.api.get(
        "/events", params={"limit": 100, "event_type[in]": json.dumps(["customer_deleted"])}
    ).json()["list"]
    return [e["event"] for e in page]


def test_delete_answers_the_customer_as_it_is_and_changes_nothing_until_the_purge(
    chargebee_sandbox: CbSandbox,
) -> None:
    sb = chargebee_sandbox
    made = _customer(sb, "c1", email="a@example.com")
    _customer(sb, "c2")
    sb.clock.advance(10)
    resp = sb.api.post("/customers/c1/delete")
    assert resp.status_code == 200, resp.text
    answered = resp.json()["customer"]
    assert answered == made, "the delete answers the customer as it is now (nothing shows the schedule)"

    sb.clock.advance(PURGE - 11)
    assert sb.api.get("/customers/c1").json()["customer"] == made
    assert _listed(sb) == {"c1": False, "c2": False}
    assert _listed(sb, include_deleted="true") == {"c1": False, "c2": False}
    assert _deleted_events(sb) == []
    # changed-since reads do not show it either: its versions did not move
    assert _listed(sb, **{"updated_at[after]": int(T0) + 5}) == {}


def test_at_the_purge_the_customer_is_gone_and_one_customer_deleted_event_carries_it(
    chargebee_sandbox: CbSandbox,
) -> None:
    sb = chargebee_sandbox
    _customer(sb, "c1", email="a@example.com")
    _customer(sb, "c2")
    sb.api.post("/customers/c1/delete")
    sb.clock.advance(PURGE)
    resp = sb.api.get("/customers/c1")
    assert resp.status_code == 404 and resp.json()["api_error_code"] == "resource_not_found"
    assert _listed(sb) == {"c2": False}
    assert _listed(sb, include_deleted="true") == {"c2": False}, "a purged customer is gone from lists"
    [event] = _deleted_events(sb)
    assert event["source"] == "scheduled_job"
    assert event["occurred_at"] == int(T0) + PURGE
    assert event["content"]["customer"]["id"] == "c1"
    assert event["content"]["customer"]["email"] == "a@example.com"
    assert event["content"]["customer"]["deleted"] is True
    # touched again: still exactly one event
    sb.clock.advance(PURGE)
    assert len(_deleted_events(sb)) == 1
    assert sb.api.post("/customers/c1", data={"first_name": "x"}).status_code == 404
    assert sb.api.post("/customers/c1/delete").status_code == 404


def test_writes_in_the_window_are_accepted_and_lost_at_the_purge(chargebee_sandbox: CbSandbox) -> None:
    """Docs silent: a scheduled customer takes writes as any other (a refusal would show the
    pending delete), and they vanish with it. A second delete does not postpone the purge."""
    sb = chargebee_sandbox
    _customer(sb, "c1")
    sb.api.post("/customers/c1/delete")
    sb.clock.advance(200)
    edited = sb.api.post("/customers/c1", data={"first_name": "Late"})
    assert edited.status_code == 200 and edited.json()["customer"]["first_name"] == "Late"
    assert sb.api.post("/customers/c1/delete").status_code == 200
    sb.clock.advance(PURGE - 200)
    assert sb.api.get("/customers/c1").status_code == 404
    [event] = _deleted_events(sb)
    assert event["content"]["customer"]["first_name"] == "Late"


def test_the_id_is_taken_until_the_purge_then_free(chargebee_sandbox: CbSandbox) -> None:
    sb = chargebee_sandbox
    _customer(sb, "dup")
    sb.api.post("/customers/dup/delete")
    taken = sb.api.post("/customers", data={"id": "dup"})
    assert taken.status_code == 400 and taken.json()["param"] == "id"
    sb.clock.advance(PURGE)
    again = sb.api.post("/customers", data={"id": "dup", "first_name": "New"})
    assert again.status_code == 200, again.text
    assert sb.api.get("/customers/dup").json()["customer"]["first_name"] == "New"


def test_purge_seconds_is_a_site_setting_and_the_admin_reads_see_the_purge(
    chargebee_sandbox_factory: Any,
) -> None:
    sb = chargebee_sandbox_factory(customer_purge_seconds=60)
    assert sb.admin.get("/config").json()["customer_purge_seconds"] == 60
    _customer(sb, "c1")
    sb.api.post("/customers/c1/delete")
    assert [r["id"] for r in sb.records("customers")] == ["c1"]
    clock = sb.admin.post("/clock", json={"advance": 60})
    assert clock.status_code == 200
    assert sb.records("customers") == [], "the admin read sees the purge"
    assert sb.admin.post("/config", json={"customer_purge_seconds": 5}).json()["customer_purge_seconds"] == 5
    assert sb.admin.post("/config", json={"customer_purge_seconds": -1}).status_code == 400
    sb.admin.post("/reset")
    assert sb.admin.get("/config").json()["customer_purge_seconds"] == 5, "kept by reset"


def test_a_scheduled_purge_survives_a_restart(chargebee_sandbox_factory: Any, tmp_path: Any) -> None:
    from sandbox.common.clock import Clock

    state = tmp_path / "cb.json"
    clock = Clock(base=lambda: T0)
    sb = chargebee_sandbox_factory(state_path=state, clock=clock)
    _customer(sb, "c1")
    sb.api.post("/customers/c1/delete")
    sb.server.stop()
    sb2 = chargebee_sandbox_factory(state_path=state, clock=clock)
    clock.advance(PURGE)
    assert sb2.api.get("/customers/c1").status_code == 404
    assert len(_deleted_events(sb2)) == 1


def test_purge_at_zero_seconds_happens_on_the_next_call(chargebee_sandbox_factory: Any) -> None:
    sb = chargebee_sandbox_factory(customer_purge_seconds=0)
    _customer(sb, "c1")
    assert sb.api.post("/customers/c1/delete").json()["customer"]["deleted"] is False
    assert isinstance(sb.api, httpx.Client)
    assert sb.api.get("/customers/c1").status_code == 404
