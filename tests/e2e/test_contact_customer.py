"""Contact ⇄ Customer end to end: real DAG runs against both sandboxes and the metadata DB."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from crmsync.store.schema import audit, link, quarantine
from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def by_email(records: list[dict[str, Any]], key: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("deleted") or r.get("Deleted"):
            continue
        email = (r.get(key) or "").strip().lower()
        out.setdefault(email, []).append(r)
    return out


def assert_converged(sb: Any, store: Any) -> None:
    """Every linked pair agrees on every mapped field, and nobody exists twice."""
    crm = {c["Id"]: c for c in sb.crm_contacts() if not c.get("Deleted")}
    cb = {c["id"]: c for c in sb.cb_customers() if not c.get("deleted")}
    for email, recs in by_email(list(cb.values()), "email").items():
        assert len(recs) == 1, f"duplicate Chargebee customers for {email}: {[r['id'] for r in recs]}"
    for email, recs in by_email(list(crm.values()), "Email").items():
        assert len(recs) == 1, f"duplicate Customcrm contacts for {email}: {[r['Id'] for r in recs]}"
    with store.connect() as conn:
        links = conn.execute(
            select(link.c.crm_id, link.c.cb_id).where(link.c.flow == "contact_customer")
        ).all()
    assert links
    for crm_id, cb_id in links:
        c, k = crm[crm_id], cb[cb_id]
        assert (c["Email"] or "").strip().lower() == k["email"]
        for crm_f, cb_f in (("FirstName", "first_name"), ("LastName", "last_name"), ("Phone", "phone")):
            if c.get(crm_f) and k.get(cb_f):
                assert c[crm_f].strip() == k[cb_f].strip(), (crm_id, cb_id, crm_f)
        city = (k.get("billing_address") or {}).get("city")
        if c.get("City") and city:
            assert c["City"].strip() == city.strip()


def writes(sb: Any) -> dict[str, int]:
    """POST/PATCH/DELETE requests each sandbox has served so far."""
    out = {}
    for which in ("chargebee", "customcrm"):
        stats = sb.stats(which)
        out[which] = sum(
            int(n) for key, n in _flatten(stats) if key.split(" ")[0] in ("POST", "PATCH", "DELETE")
        )
    return out


def _flatten(stats: Any) -> list[tuple[str, int]]:
    """Accept either {"requests": {"METHOD path status": n}} or a list of rows."""
    req = stats.get("requests", stats)
    if isinstance(req, dict):
        return [(k, v) for k, v in req.items() if isinstance(v, int)]
    return [(f"{r['method']} {r.get('path', '')}", r["count"]) for r in req]


def test_first_run_links_by_email_creates_the_rest_and_second_run_writes_nothing(run_flow, sandboxes, store):
    crm_before = sandboxes.crm_contacts()
    cb_before = sandboxes.cb_customers()
    overlap = set(by_email(crm_before, "Email")) & set(by_email(cb_before, "email"))
    assert len(overlap) >= 10, "the seed must overlap"

    first = run_flow()
    assert first.ok, first.failed_tasks
    s = first.summary
    assert s["linked_by_match"] >= len(overlap) - 2  # at most the deliberately bad ones are held
    assert s["created"]["chargebee"] > 0 and s["created"]["customcrm"] > 0
    assert s["quarantined"] >= 2  # the seed's bad email and 200-character name
    reasons = " | ".join(p["reason"] for p in s["problems"])
    assert "not a valid email address" in reasons and "allows at most 150" in reasons
    assert_converged(sandboxes, store)

    before = writes(sandboxes)
    second = run_flow()
    assert second.ok
    assert writes(sandboxes) == before, "an idle rerun must not write"
    assert second.summary["created"] == {"customcrm": 0, "chargebee": 0}
    assert second.summary["updated"] == {"customcrm": 0, "chargebee": 0}


def _linked_pair(store: Any) -> tuple[str, str]:
    with store.connect() as conn:
        return tuple(
            conn.execute(
                select(link.c.crm_id, link.c.cb_id)
                .where(link.c.flow == "contact_customer")
                .order_by(link.c.id)
            ).first()
        )  # type: ignore[return-value]


def test_edits_flow_both_ways_and_conflicts_are_audited(run_flow, sandboxes, store):
    assert run_flow().ok
    crm_id, cb_id = _linked_pair(store)
    time.sleep(1.1)  # Chargebee timestamps are whole seconds
    # different fields on each side: both survive
    sandboxes.crm("PATCH", f"contacts/{crm_id}", json={"Phone": "+47 400 00 001"})
    sandboxes.cb("POST", f"customers/{cb_id}", data={"company": "Edited in Chargebee AS"})
    r = run_flow()
    assert r.ok, r.failed_tasks
    assert r.summary["updated"] == {"customcrm": 1, "chargebee": 1}
    c = sandboxes.crm("GET", f"contacts/{crm_id}")
    k = sandboxes.cb("GET", f"customers/{cb_id}")["customer"]
    assert k["phone"] == "+47 400 00 001" and c["Company"] == "Edited in Chargebee AS"

    # the same field on both sides: the newer edit wins, and the conflict is audited
    sandboxes.crm("PATCH", f"contacts/{crm_id}", json={"LastName": "FromCrm"})
    time.sleep(1.1)
    sandboxes.cb("POST", f"customers/{cb_id}", data={"last_name": "FromChargebee"})
    r = run_flow()
    assert r.ok and r.summary["conflicts"] == 1
    assert sandboxes.crm("GET", f"contacts/{crm_id}")["LastName"] == "FromChargebee"
    with store.connect() as conn:
        rows = conn.execute(select(audit.c.kind, audit.c.field).where(audit.c.crm_id == crm_id)).all()
    assert ("conflict", "last_name") in rows

    # billing address goes through update_billing_info
    sandboxes.crm("PATCH", f"contacts/{crm_id}", json={"City": "Trondheim"})
    assert run_flow().ok
    k = sandboxes.cb("GET", f"customers/{cb_id}")["customer"]
    assert k["billing_address"]["city"] == "Trondheim"
    assert_converged(sandboxes, store)
    # converged: nothing more to write
    before = writes(sandboxes)
    assert run_flow().ok and writes(sandboxes) == before


def test_deletes_follow_the_policy_unlink(run_flow, sandboxes, store):
    assert run_flow().ok
    crm_id, cb_id = _linked_pair(store)
    sandboxes.cb("POST", f"customers/{cb_id}/delete")
    # Chargebee purges a deleted customer minutes later and publishes customer_deleted then
    # (the pending window itself: tests/e2e/test_customer_deletion.py)
    requests.post(f"{sandboxes.cb_url}/_sandbox/clock", json={"advance": 301}, timeout=10).raise_for_status()
    r = run_flow()
    assert r.ok and r.summary["unlinked"] == 1
    # policy unlink: the Customcrm contact stays, the link is gone, the delete is audited
    assert sandboxes.crm("GET", f"contacts/{crm_id}")["Id"] == crm_id
    with store.connect() as conn:
        assert conn.execute(select(link).where(link.c.cb_id == cb_id)).first() is None
        assert conn.execute(select(audit).where(audit.c.kind == "unlink", audit.c.cb_id == cb_id)).first()


def test_bad_records_are_quarantined_and_leave_once_fixed(run_flow, sandboxes, store):
    r = run_flow()
    assert r.ok
    with store.connect() as conn:
        held = conn.execute(select(quarantine.c.record_id, quarantine.c.reason)).all()
    bad_email = [rid for rid, reason in held if "not a valid email address" in reason]
    assert bad_email, held
    rid = bad_email[0]
    sandboxes.crm("PATCH", f"contacts/{rid}", json={"Email": "fixed.address@example.com"})
    r = run_flow()
    assert r.ok
    with store.connect() as conn:
        assert conn.execute(select(quarantine).where(quarantine.c.record_id == rid)).first() is None
        assert conn.execute(select(link).where(link.c.crm_id == rid)).first() is not None


def test_deletes_propagate_when_the_policy_says_so(dags, sandboxes, store, tmp_path, monkeypatch):
    """A mapping with `propagate` deletes the linked record on the other side."""
    import yaml
    from crmsync.flows.factory import build_dag

    from scripts.runner import run_flow as _run

    doc = yaml.safe_load((ROOT / "include/mappings/contact_customer.yaml").read_text())
    doc["delete"] = {"on_customcrm_delete": "propagate", "on_chargebee_delete": "propagate"}
    path = tmp_path / "contact_customer.yaml"
    path.write_text(yaml.safe_dump(doc))
    dag = build_dag(path)
    assert _run(dag).ok
    crm_id, cb_id = _linked_pair(store)
    sandboxes.crm("DELETE", f"contacts/{crm_id}")
    r = _run(dag)
    assert r.ok and r.summary["deleted"]["chargebee"] == 1
    # scheduled by Chargebee: gone once purged (minutes later)
    requests.post(f"{sandboxes.cb_url}/_sandbox/clock", json={"advance": 301}, timeout=10).raise_for_status()
    assert all(c["id"] != cb_id for c in sandboxes.cb_customers())
    with store.connect() as conn:
        assert conn.execute(select(link).where(link.c.cb_id == cb_id)).first() is None
        assert conn.execute(select(audit).where(audit.c.kind == "delete", audit.c.cb_id == cb_id)).first()


def test_a_record_missing_from_a_page_is_never_treated_as_deleted(run_flow, sandboxes, store, monkeypatch):
    """Only an explicit tombstone / deleted flag deletes: absence from a listing means nothing.

    A real server cannot drop a record from a page on demand, so this edge case wraps the
    hook's pager to hide one record during a full resync.
    """
    from crmsync.hooks.chargebee import ChargebeeHook

    assert run_flow().ok
    crm_id, cb_id = _linked_pair(store)
    original = ChargebeeHook.iter_pages

    def hiding(self, resource, **kw):
        for page in original(self, resource, **kw):
            yield [r for r in page if r.get("id") != cb_id]

    monkeypatch.setattr(ChargebeeHook, "iter_pages", hiding)
    before = writes(sandboxes)
    r = run_flow(full_resync=True)
    assert r.ok and r.summary["unlinked"] == 0 and r.summary["deleted"] == {"customcrm": 0, "chargebee": 0}
    assert writes(sandboxes) == before, json.dumps(r.summary)
    with store.connect() as conn:
        assert conn.execute(select(link).where(link.c.cb_id == cb_id)).first() is not None
    assert sandboxes.crm("GET", f"contacts/{crm_id}")["Id"] == crm_id


def test_dry_run_plans_without_writing_and_keeps_watermarks(run_flow, sandboxes, store):
    from crmsync.store.schema import watermark

    r = run_flow(dry_run=True)
    assert r.ok and r.summary["dry_run"]
    assert writes(sandboxes) == {"chargebee": 0, "customcrm": 0}
    assert r.summary["planned"]["chargebee"].get("created", 0) > 0
    with store.connect() as conn:
        assert conn.execute(select(watermark)).first() is None
        assert conn.execute(select(link)).first() is None


def test_a_dry_run_shows_the_plan_record_by_record_and_field_by_field(run_flow, sandboxes, store):
    """Issue 14 item 2: a dry run lists what would be written (create with values, update
    old → new in each system's field names) in its summary and task log, and writes nothing."""
    first = run_flow(dry_run=True)
    assert first.ok
    plan = first.summary["plan"]
    creates = [line for line in plan if line.startswith("create Chargebee customer for Customcrm contact ")]
    assert len(creates) == first.summary["planned"]["chargebee"]["created"] > 0
    assert first.summary["plan_total"] >= len(plan)
    assert all("email='" in line for line in creates), creates[:3]

    assert run_flow().ok
    crm_id, cb_id = _linked_pair(store)
    old = sandboxes.crm("GET", f"contacts/{crm_id}")
    sandboxes.crm("PATCH", f"contacts/{crm_id}", json={"Phone": "+47 400 12 345", "City": ""})
    before = writes(sandboxes)
    r = run_flow(dry_run=True)
    assert r.ok and writes(sandboxes) == before, "a dry run writes nothing"
    wanted = f"update Chargebee customer {cb_id} (⇄ Customcrm contact {crm_id}): "
    lines = [line for line in r.summary["plan"] if line.startswith(wanted)]
    assert len(lines) == 1, r.summary["plan"]
    assert f"phone {old['Phone']!r} → '+47 400 12 345'" in lines[0]
    if old.get("City"):
        assert f"billing_address.city {old['City']!r} → (blank)" in lines[0]


def test_circuit_breaker_stops_a_run_that_would_write_too_much(dags, sandboxes, store, tmp_path):
    import yaml
    from crmsync.flows.factory import build_dag

    from scripts.runner import run_flow as _run

    doc = yaml.safe_load((ROOT / "include/mappings/contact_customer.yaml").read_text())
    doc["limits"] = {"max_writes_per_run": 5}
    path = tmp_path / "contact_customer.yaml"
    path.write_text(yaml.safe_dump(doc))
    dag = build_dag(path)
    blocked = _run(dag)
    assert not blocked.ok and "transform=failed" in blocked.failed_tasks
    assert writes(sandboxes) == {"chargebee": 0, "customcrm": 0}, "nothing may be written"
    approved = _run(dag, {"approve_large_change": True})
    assert approved.ok and approved.summary["created"]["chargebee"] > 5
