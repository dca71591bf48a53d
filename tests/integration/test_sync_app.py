"""The Sync page inside Airflow's own api-server app (``airflow.api_fastapi.app.create_app``):
the plugin is found through the package's entry point and mounted at /crmsync, users are
the simple auth manager's, and the page reads the link store through ``crmsync_store``.

Covers: no data without a login (redirect, 401), a bad token (403), a viewer reads but
cannot act (403, no buttons), an editor releases and asks for a retry (and the next run's
carry stages the held copy once), values are escaped, links are searchable by either id
or the match key, and approve / reject appear only when the approvals module exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from crmsync.engine.canonical import SideRecord
from crmsync.mapping.model import Side
from crmsync.store.codec import record_to_json
from crmsync.store.engine import store_engine
from crmsync.store.schema import TABLES, audit, link, quarantine, run, staging
from crmsync.store.staging import StagingStore
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine

FLOW = "contact_customer"
HOSTILE = "<script>alert(1)</script>"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def engine() -> Engine:
    """The session's metadata DB, migrated by `airflow db migrate` (Airflow's tables: the
    api-server checks revoked tokens there; and, through our DB manager, the link store)."""
    out = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    engine = store_engine()
    return engine


@pytest.fixture
def data(engine: Engine) -> Engine:
    """One run, two links, three holds (invalid, waiting, approval), a conflict and a delete."""
    with engine.begin() as conn:
        for table in TABLES:
            conn.execute(delete(table))
        summary = {"state": "success", "read": {"customcrm": 7, "chargebee": 5}, "quarantined": 1}
        conn.execute(
            insert(run).values(
                run_id="manual__1",
                flow=FLOW,
                started_at=T0,
                finished_at=T0,
                status="finished",
                summary=json.dumps(summary),
            )
        )
        for crm_id, cb_id, key in (("11", "cb-A", "ann@example.com"), ("12", "cb-B", "bob@example.com")):
            conn.execute(
                insert(link).values(
                    flow=FLOW,
                    crm_id=crm_id,
                    crm_slot="",
                    cb_id=cb_id,
                    match_key=key,
                    base="{}",
                    crm_snapshot="{}",
                    cb_snapshot="{}",
                    base_hash="h",
                    created_at=T0,
                    synced_at=T0,
                )
            )
        staged = record_to_json(SideRecord(Side.CUSTOMCRM, "42", {"email": "not an email"}))
        holds = (
            (
                "42",
                "invalid",
                f"Customcrm contact 42: Email: {HOSTILE} is not a valid email address; fix it in Customcrm",
            ),
            ("43", "waiting", "Customcrm contact 43: its company is not linked yet"),
            ("44", "approval", "Customcrm contact 44 was deleted; its Chargebee customer waits for approval"),
        )
        for rid, kind, reason in holds:
            conn.execute(
                insert(quarantine).values(
                    flow=FLOW,
                    side="customcrm",
                    record_id=rid,
                    kind=kind,
                    reason=reason,
                    attempts=2,
                    staged=staged if rid == "42" else None,
                    first_seen=T0,
                    last_seen=T0,
                    run_id="manual__1",
                )
            )
        conn.execute(
            insert(audit).values(
                flow=FLOW,
                run_id="manual__1",
                at=T0,
                kind="conflict",
                crm_id="11",
                cb_id="cb-A",
                field="phone",
                detail=json.dumps(
                    {"field": "phone", "message": "phone edited on both sides; Chargebee's newer"}
                ),
            )
        )
        conn.execute(
            insert(audit).values(
                flow=FLOW,
                run_id="manual__1",
                at=T0,
                kind="delete",
                crm_id="9",
                cb_id="cb-Z",
                detail=json.dumps({"reason": "deleted in Customcrm, deleted in Chargebee"}),
            )
        )
    return engine


@pytest.fixture(scope="module")
def api(engine: Engine) -> Iterator[Any]:
    """Airflow's api-server app (core API + plugins) with a viewer, a user and an admin."""
    mp = pytest.MonkeyPatch()
    mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin,viewer:viewer,editor:user")
    mp.setenv(
        "AIRFLOW__CORE__AUTH_MANAGER",
        "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
    )
    mp.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "x" * 64)
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    with TestClient(create_app(apps="core")) as client:
        yield client
    mp.undo()


def token(username: str, role: str) -> dict[str, str]:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    jwt = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=username, role=role))
    return {"Authorization": f"Bearer {jwt}"}


def hold(engine: Engine, rid: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(quarantine).where(quarantine.c.record_id == rid)).mappings().first()


def post(api: Any, action: str, rid: str, headers: dict[str, str] | None = None) -> Any:
    form = {"flow": FLOW, "action": action, "side": "customcrm", "record_id": rid}
    return api.post("/crmsync/action", data=form, headers=headers or {}, follow_redirects=False)


def test_the_plugin_is_registered_by_the_package() -> None:
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="airflow.plugins") if e.name == "crmsync"]
    plugin = ep.load()
    assert plugin.external_views[0]["name"] == "Sync"
    assert plugin.fastapi_apps[0]["url_prefix"] == "/crmsync"


def test_no_data_without_login(api: Any, data: Engine) -> None:
    page = api.get("/crmsync/", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/auth/login")
    assert "ann@example.com" not in page.text
    assert api.get(f"/crmsync/api/flows/{FLOW}").status_code == 401
    assert post(api, "release", "42").status_code == 401
    bad = {"Authorization": "Bearer not-a-token"}
    assert api.get(f"/crmsync/api/flows/{FLOW}", headers=bad).status_code == 403
    assert hold(data, "42") is not None


def test_a_viewer_reads_but_cannot_act(api: Any, data: Engine) -> None:
    viewer = token("viewer", "viewer")
    page = api.get("/crmsync/", params={"flow": FLOW}, headers=viewer)
    assert page.status_code == 200
    assert HOSTILE not in page.text and "&lt;script&gt;" in page.text
    for text in (
        "manual__1",
        "not a valid email address",
        "fix it in Customcrm",
        "its company is not linked yet",
        "phone edited on both sides",
        "deleted in Customcrm",
        "waits for approval",
        "cb-A",
    ):
        assert text in page.text, text
    assert 'value="release"' not in page.text
    assert post(api, "release", "42", viewer).status_code == 403
    assert hold(data, "42") is not None


def test_the_json_splits_field_and_fix(api: Any, data: Engine) -> None:
    body = api.get(f"/crmsync/api/flows/{FLOW}", headers=token("viewer", "viewer")).json()
    (q,) = body["quarantined"]
    assert (q["record_id"], q["field"], q["fix"]) == ("42", "Email", "fix it in Customcrm")
    assert [h["record_id"] for h in body["waiting"]] == ["43"]
    assert [h["record_id"] for h in body["approvals"]] == ["44"]
    assert body["runs"][0]["summary"]["read"] == {"customcrm": 7, "chargebee": 5}


def test_the_last_dry_run_shows_its_plan_record_by_record(api: Any, data: Engine) -> None:
    """Issue 14 item 2: a dry run's readable plan (field by field, old → new) is on the page."""
    plan = [
        "update Chargebee customer cb-A (Customcrm contact 11): phone '+1 555' → '<b>+1 556</b>'",
        "create Customcrm contact for Chargebee customer cb-C: email 'cy@example.com'",
    ]
    summary = {"state": "success", "dry_run": True, "plan": plan, "plan_total": 5}
    with data.begin() as conn:
        conn.execute(
            insert(run).values(
                run_id="manual__dry",
                flow=FLOW,
                started_at=T0 + timedelta(minutes=1),
                finished_at=T0 + timedelta(minutes=1),
                status="finished",
                summary=json.dumps(summary),
            )
        )
    page = api.get("/crmsync/", params={"flow": FLOW}, headers=token("viewer", "viewer")).text
    assert "Plan of the last dry run" in page and "manual__dry" in page and "(dry run)" in page
    assert "phone &#x27;+1 555&#x27; → &#x27;&lt;b&gt;+1 556&lt;/b&gt;&#x27;" in page  # escaped, never markup
    assert "create Customcrm contact for Chargebee customer cb-C" in page
    assert "… 3 more" in page


@pytest.mark.parametrize("search", ["12", "cb-B", "BOB@example"])
def test_links_are_found_by_either_id_or_the_match_key(api: Any, data: Engine, search: str) -> None:
    body = api.get(
        f"/crmsync/api/flows/{FLOW}", params={"q": search}, headers=token("viewer", "viewer")
    ).json()
    assert [(r["crm_id"], r["cb_id"]) for r in body["links"]] == [("12", "cb-B")]
    assert body["links_total"] == 2


def test_an_editor_releases_a_hold(api: Any, data: Engine) -> None:
    editor = token("editor", "user")
    assert 'value="release"' in api.get("/crmsync/", headers=editor).text
    r = post(api, "release", "42", editor)
    assert (
        r.status_code == 303
        and "released" in api.get(r.headers["location"].replace("./", "/crmsync/"), headers=editor).text
    )
    assert hold(data, "42") is None
    # an approval is not released: it is approved or rejected
    assert post(api, "release", "44", editor).status_code == 303
    assert hold(data, "44") is not None


def test_retry_next_run_stages_the_held_copy_once(api: Any, data: Engine) -> None:
    staging_store = StagingStore(data, FLOW)
    assert staging_store.carry_quarantined("run-1", lambda rec: None) == 0  # invalid: not carried alone
    assert post(api, "retry", "42", token("admin", "admin")).status_code == 303
    assert hold(data, "42")["retry_requested"] is True
    assert "retry next run" in api.get("/crmsync/", headers=token("admin", "admin")).text
    assert staging_store.carry_quarantined("run-2", lambda rec: None) == 1
    with data.connect() as conn:
        staged = conn.execute(select(staging.c.record_id).where(staging.c.run_id == "run-2")).scalars().all()
    assert staged == ["42"]
    assert hold(data, "42")["retry_requested"] is False  # once
    assert staging_store.carry_quarantined("run-3", lambda rec: None) == 0


def test_approve_and_reject_only_with_the_approvals_module(
    api: Any, data: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    editor = token("editor", "user")
    if "crmsync.store.approvals" not in sys.modules:
        try:
            import crmsync.store.approvals  # noqa: F401
        except ImportError:
            assert 'value="approve"' not in api.get("/crmsync/", headers=editor).text
    calls: list[tuple[Any, ...]] = []
    fake = types.ModuleType("crmsync.store.approvals")

    def decide_delete(engine: Engine, flow: str, side: str, record_id: str, approve: bool, by: str) -> bool:
        calls.append((flow, side, record_id, approve, by))
        return True

    fake.decide_delete = decide_delete  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "crmsync.store.approvals", fake)
    page = api.get("/crmsync/", headers=editor).text
    assert 'value="approve"' in page and 'value="reject"' in page
    assert post(api, "approve", "44", editor).status_code == 303
    assert post(api, "reject", "44", editor).status_code == 303
    assert calls == [(FLOW, "customcrm", "44", True, "editor"), (FLOW, "customcrm", "44", False, "editor")]
    assert post(api, "approve", "44", token("viewer", "viewer")).status_code == 403


def test_a_decided_delete_is_listed_and_left_to_the_next_run(api: Any, data: Engine) -> None:
    with data.begin() as conn:
        conn.execute(
            update(quarantine)
            .where(quarantine.c.record_id == "44")
            .values(kind="approved", reason="approved by ann")
        )
    editor = token("editor", "user")
    page = api.get("/crmsync/", headers=editor).text
    assert "approved: the next run carries it out" in page and "approved by ann" in page
    assert 'data-record="44"' not in page  # no release, retry, approve or reject for it
    assert post(api, "release", "44", editor).status_code == 303
    assert post(api, "retry", "44", editor).status_code == 303
    row = hold(data, "44")
    assert row is not None and row["kind"] == "approved" and row["retry_requested"] is False


@pytest.mark.parametrize(
    ("reason", "field", "fix"),
    [
        (
            "Customcrm contact 42: Email: 'a@@b' is not a valid email address; fix it in Customcrm",
            "Email",
            "fix it in Customcrm",
        ),
        (
            "Customcrm contact 7: FirstName is 200 characters; Chargebee customer first_name allows "
            "at most 150; shorten it in Customcrm",
            "FirstName",
            "shorten it in Customcrm",
        ),
        ("Chargebee customer c1: its company_id (be_x) is not linked yet", "", ""),
    ],
)
def test_a_reason_names_its_field_and_fix(reason: str, field: str, fix: str) -> None:
    from crmsync.store.operator import split_reason

    assert split_reason(reason) == (field, fix)
