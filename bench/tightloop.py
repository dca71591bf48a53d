"""The floor for benchmark 3: the same HTTP calls as a sync, made by a tight loop.

No Airflow, no database, no retries, no budget: read every page of both sides, match
by the flow's match key, and send exactly the writes the data needs (a create per
unmatched record, one call per endpoint for each side of a pair that differs), one
after the other on a keep-alive session. The decisions follow the same rules as
:func:`bench.flows.expected_writes`; the requests look like the package's (bracket
forms for Chargebee with an idempotency key on creates, JSON with ``If-Match`` for
Customcrm), so the sandboxes do the same work for both.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import requests

from bench.flows import Flow

CB_KEY = "sandbox_api_key"
CRM_TOKEN = "sandbox_token"


def _get(raw: dict[str, Any], path: str) -> Any:
    cur: Any = raw
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return None if cur == "" else cur


def _cb_form(flow: Flow, values: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for name, value in values.items():
        if value is None:
            continue
        parts = flow.mapping.field(name).chargebee.split(".")
        key = parts[0] + "".join(f"[{p}]" for p in parts[1:])
        out.append((key, str(value)))
    return out


def _crm_body(flow: Flow, values: dict[str, Any]) -> dict[str, Any]:
    return {flow.mapping.field(n).customcrm: v for n, v in values.items()}


def _crm_ts(raw: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(raw["UpdatedAt"]).replace("Z", "+00:00")).timestamp()


def tight_loop(flow: Flow, cb_url: str, crm_url: str) -> dict[str, int]:
    """Sync once; returns the calls made per side."""
    m = flow.mapping
    cb = requests.Session()
    cb.auth = (CB_KEY, "")
    crm = requests.Session()
    crm.headers["Authorization"] = f"Bearer {CRM_TOKEN}"
    cb_api = f"{cb_url}/api/v2/{flow.cb_resource}"
    crm_api = f"{crm_url}/{flow.crm_resource}"
    calls = {"chargebee": 0, "customcrm": 0}

    def call(side: str, session: requests.Session, method: str, url: str, **kw: Any) -> Any:
        calls[side] += 1
        r = session.request(method, url, timeout=60, **kw)
        r.raise_for_status()
        return r.json() if r.content else None

    crm_recs: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 100, "include_deleted": "true"}
        if cursor:
            params["cursor"] = cursor
        page = call("customcrm", crm, "GET", crm_api, params=params)
        crm_recs += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    cb_recs: list[dict[str, Any]] = []
    key = m.field(m.match.keys[0])
    offset = None
    while True:
        params = {"limit": 100, "sort_by[asc]": "updated_at", "include_deleted": "true"}
        if offset:
            params["offset"] = offset
        page = call("chargebee", cb, "GET", cb_api, params=params)
        cb_recs += [next(iter(e.values())) for e in page["list"]]
        offset = page.get("next_offset")
        if not offset:
            break

    def canon(raw: dict[str, Any], side: str) -> dict[str, Any]:
        out = {}
        for f in m.fields:
            v = _get(raw, f.customcrm if side == "customcrm" else f.chargebee)
            out[f.name] = v.lower() if isinstance(v, str) and f.transform == "email" else v
        return out

    by_key = {}
    for raw in cb_recs:
        k = _get(raw, key.chargebee)
        if k and not raw.get("deleted"):
            by_key[str(k).lower()] = raw
    template = m.chargebee.create_id or "{crm_id}"
    for raw in crm_recs:
        if raw.get("Deleted"):
            continue
        c = canon(raw, "customcrm")
        other = by_key.pop(str(c[key.name]).lower(), None)
        if other is None:
            form = [("id", template.format(crm_id=raw["Id"])), *_cb_form(flow, c)]
            call(
                "chargebee",
                cb,
                "POST",
                cb_api,
                data=form,
                headers={"chargebee-idempotency-key": uuid.uuid4().hex},
            )
            continue
        k = canon(other, "chargebee")
        crm_newer = _crm_ts(raw) >= float(other.get("updated_at") or 0)
        to_cb: dict[str, Any] = {}
        to_crm: dict[str, Any] = {}
        merged = dict(c)
        for f in m.fields:
            a, b = c[f.name], k[f.name]
            if a == b:
                continue
            if a is None or (b is not None and not crm_newer):
                to_crm[f.name] = merged[f.name] = b
            else:
                to_cb[f.name] = merged[f.name] = a
        routes: dict[str, dict[str, Any]] = {}
        for name, value in to_cb.items():
            routes.setdefault(flow.cb_route(name), {})[name] = value
        for route, fields in routes.items():
            if route == "update":
                call("chargebee", cb, "POST", f"{cb_api}/{other['id']}", data=_cb_form(flow, fields))
            else:  # the whole nested object, as the package sends it
                top = m.field(next(iter(fields))).chargebee.split(".")[0]
                whole = {f.name: merged[f.name] for f in m.fields if f.chargebee.split(".")[0] == top}
                call("chargebee", cb, "POST", f"{cb_api}/{other['id']}/{route}", data=_cb_form(flow, whole))
        if to_crm:
            call(
                "customcrm",
                crm,
                "PATCH",
                f"{crm_api}/{raw['Id']}",
                data=json.dumps(_crm_body(flow, to_crm)),
                headers={"If-Match": f'"{raw["Version"]}"', "Content-Type": "application/json"},
            )
    for raw in by_key.values():  # Chargebee only: create in Customcrm
        body = _crm_body(flow, {n: v for n, v in canon(raw, "chargebee").items() if v is not None})
        body["ExternalRef"] = raw["id"]
        call(
            "customcrm",
            crm,
            "POST",
            crm_api,
            data=json.dumps(body),
            headers={"Idempotency-Key": uuid.uuid4().hex, "Content-Type": "application/json"},
        )
    return calls
