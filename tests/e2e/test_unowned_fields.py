"""A sync write never changes a field the mapping does not own, on either side, in any flow.

One generated test per flow (the flows are the mapping files: a new flow gets its test by
adding its YAML file). After a first sync, each hypothesis example picks a few linked
pairs and, through the public APIs (so every value is one a client can really write):

* puts random values in every writable field of both records that the mapping does not
  own. Chargebee's writable fields are read from the official SDK's update operations
  (``chargebee/models/<resource>/operations.py``: the contract), plus custom fields
  (``cf_*``) where Chargebee takes them; Customcrm's from its contract
  (``sandbox/customcrm/schema.py``, the server-side mirror of ``openapi.yaml``). A
  read-only side (business entities) gets none;
* makes random edits of mapped fields on both sides (disjoint, so there is no conflict;
  the Customcrm edits always reach every Chargebee write route of the flow, e.g. both
  ``POST /customers/{id}`` and ``update_billing_info``);

then runs the flow and checks that every field the mapping does not own is byte for byte
what it was on both records, and that every mapped edit arrived on the other side.

``update_billing_info`` is an assignment (every billing field not sent is removed): a
writer that sends only the mapped address lines wipes the VAT number and the billing
names, which is what this test caught in contact_customer.
"""

from __future__ import annotations

import copy
import json
import string
import typing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, ForwardRef, get_args, get_origin, is_typeddict

import pytest
import requests
from chargebee.models.customer.operations import Customer
from chargebee.models.item.operations import Item
from chargebee.models.order.operations import Order
from crmsync.mapping.capabilities import capability
from crmsync.mapping.model import Mapping, Side, load_mapping
from crmsync.store.schema import link
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from sandbox.customcrm.schema import RESOURCES as CRM_RESOURCES
from sandbox.customcrm.schema import FieldSpec
from tests.e2e.conftest import CB_KEY

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS: dict[str, Mapping] = {
    p.stem: load_mapping(p) for p in sorted((ROOT / "include" / "mappings").glob("*.yaml"))
}
#: flows whose links a flow's records refer to: run (once) before its first sync
NEEDS = {"order_order": ("contact_customer", "user_order")}

SETTINGS = settings(
    max_examples=3,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- Chargebee's writable fields, from the SDK ------------------------------------------------

#: the update operations of each resource: (SDK class, its params, the route it is)
CB_UPDATE_OPS: dict[str, tuple[tuple[Any, Any, str], ...]] = {
    "customers": (
        (Customer, Customer.UpdateParams, "update"),
        (Customer, Customer.UpdateBillingInfoParams, "update_billing_info"),
    ),
    "items": ((Item, Item.UpdateParams, "update"),),
    "orders": ((Order, Order.UpdateParams, "update"),),
}
#: Chargebee takes custom fields (``cf_<name>``) on these resources' create and update
CB_CUSTOM_FIELDS = {"customers": ("cf_segment", "cf_account_tier"), "items": ("cf_catalog_note",)}
#: params that are no field of the record the test can give a random value
CB_NOT_A_FIELD = {
    "clear_applicable_items": "an instruction, not a stored field",
    "item_family_id": "a reference: a random value names no item family",
    "bundle_configuration": "bundles are not modelled by the sandbox",
}

_ALNUM = string.ascii_letters + string.digits
#: short ASCII words: within every length limit of both sides, and equal in canonical form
WORD = st.text(_ALNUM, min_size=1, max_size=10)
EMAIL = st.builds(
    lambda a, b: f"{a}@{b}.example",
    st.text(string.ascii_lowercase, min_size=1, max_size=8),
    st.text(string.ascii_lowercase, min_size=1, max_size=8),
)
INSTANT = st.integers(1_600_000_000, 1_800_000_000)
JSON_OBJECT = st.dictionaries(
    st.text(string.ascii_lowercase, min_size=1, max_size=6), WORD, min_size=1, max_size=3
)
#: params whose text has a format the API checks (last path segment → strategy)
CB_FORMATS: dict[str, st.SearchStrategy[Any]] = {
    "email": EMAIL,
    "country": st.sampled_from(["NO", "SE", "DE", "FR", "US", "JP"]),
    "preferred_currency_code": st.sampled_from(["EUR", "NOK", "SEK", "GBP"]),
    "locale": st.sampled_from(["en", "fr", "de", "nb-NO"]),
    "redirect_url": st.builds(lambda w: f"https://example.com/{w}", WORD),
    "gift_claim_redirect_url": st.builds(lambda w: f"https://example.com/{w}", WORD),
    "tracking_url": st.builds(lambda w: f"https://track.example.com/{w}", WORD),
    # a client may set safe or fraudulent; "suspicious" is Chargebee's own verdict
    "fraud_flag": st.sampled_from(["safe", "fraudulent"]),
    # the SDK's Taxability enum is shared with other resources; a customer is taxable or exempt
    "taxability": st.sampled_from(["taxable", "exempt"]),
}
CB_INSTANTS = {"shipping_date", "order_date", "cancelled_at", "shipped_at", "delivered_at"}


@dataclass(frozen=True)
class CbParam:
    """One writable field of a Chargebee record: its path, the route that writes it, its type."""

    path: str
    route: str
    type: Any


def _resolve(owner: Any, t: Any) -> Any:
    while get_origin(t) in (typing.NotRequired, typing.Required):
        t = get_args(t)[0]
    if isinstance(t, ForwardRef):
        t = t.__forward_arg__
    if isinstance(t, str):
        t = getattr(owner, t.split(".")[-1])
    return t


def cb_params(resource: str) -> list[CbParam]:
    """Every scalar or JSON param of the resource's update operations (lists of sub-records
    are changed by per-item operations, not stored as one value: not generated)."""
    out = [CbParam(cf, "update", str) for cf in CB_CUSTOM_FIELDS.get(resource, ())]
    for owner, params, route in CB_UPDATE_OPS.get(resource, ()):
        for name, raw in params.__annotations__.items():
            t = _resolve(owner, raw)
            if name in CB_NOT_A_FIELD or name.startswith("bundle_") or get_origin(t) in (list, typing.List):  # noqa: UP006
                continue
            if is_typeddict(t):
                out += [
                    CbParam(f"{name}.{sub}", route, _resolve(owner, s))
                    for sub, s in t.__annotations__.items()
                ]
            else:
                out.append(CbParam(name, route, t))
    return out


def cb_value(p: CbParam) -> st.SearchStrategy[Any]:
    last = p.path.rsplit(".", 1)[-1]
    if last in CB_FORMATS:
        return CB_FORMATS[last]
    if isinstance(p.type, type) and issubclass(p.type, Enum):
        return st.sampled_from([e.value for e in p.type])
    if p.type is bool:
        return st.booleans()
    if p.type is int:
        return INSTANT if last in CB_INSTANTS else st.integers(0, 90)
    if get_origin(p.type) in (dict, typing.Dict) or p.type is dict:  # noqa: UP006
        return JSON_OBJECT
    return WORD


# -- Customcrm's writable fields, from its contract -------------------------------------------

#: the sync's own crash-recovery reference: owned by the sync on every flow
CRM_SYNC_OWNED = {"ExternalRef"}


def crm_fields(resource: str) -> list[FieldSpec]:
    return [f for f in CRM_RESOURCES[resource].fields if f.name not in CRM_SYNC_OWNED]


def crm_value(f: FieldSpec, live: dict[str, list[str]]) -> st.SearchStrategy[Any]:
    kind = f.kind
    if kind == "ref":
        return st.sampled_from(live[f.ref or ""])
    if kind == "email":
        return EMAIL
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(-10_000, 10_000_000)
    if kind == "enum":
        return st.sampled_from(f.choices)
    if kind == "object":
        return JSON_OBJECT
    if kind == "date":
        return st.dates().map(lambda d: d.isoformat())
    if kind == "datetime":
        return INSTANT.map(lambda s: f"20{s % 30 + 10:02d}-0{s % 9 + 1}-1{s % 9}T0{s % 10}:00:00Z")
    if kind == "currency":
        return st.sampled_from(["EUR", "NOK", "USD"])
    return WORD


# -- what a mapping owns ----------------------------------------------------------------------


def owned(m: Mapping, side: Side) -> set[str]:
    return {m.source_path(f, side) for f in m.fields}


def unowned_cb(m: Mapping) -> list[CbParam]:
    mine = owned(m, Side.CHARGEBEE)
    return [
        p for p in cb_params(m.chargebee.resource) if p.path not in mine and p.path.split(".")[0] not in mine
    ]


def unowned_crm(m: Mapping) -> list[FieldSpec]:
    mine = owned(m, Side.CUSTOMCRM)
    return [f for f in crm_fields(m.customcrm.resource) if f.name not in mine]


def editable(m: Mapping, side: Side) -> list[str]:
    """Mapped plain-text fields an edit on ``side`` flows from (canonical names): no
    transform but strip, no vocabulary, no reference; text on both sides; written by an
    API (or, for a resource Chargebee's API cannot write, changed in Chargebee's UI)."""
    cb_types = {p.path: p for p in cb_params(m.chargebee.resource)}
    crm_kinds = {f.name: f.kind for f in CRM_RESOURCES[m.customcrm.resource].fields}
    other = Side.CHARGEBEE if side is Side.CUSTOMCRM else Side.CUSTOMCRM
    out = []
    for f in m.fields:
        if f.transform != "strip" or f.values or f.ref:
            continue
        if not f.direction.writes(other) or crm_kinds.get(f.customcrm) not in ("string", "text"):
            continue
        cb = cb_types.get(f.chargebee)
        if cb is not None and cb.type is not str:
            continue
        if cb is None and (capability(m.chargebee.resource).can_update or side is Side.CUSTOMCRM):
            continue  # no API writes it (a document number), or Chargebee cannot take it
        out.append(f.name)
    return out


# -- writing through the public APIs ----------------------------------------------------------


def _get(raw: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        if not isinstance(raw, dict):
            return None
        raw = raw.get(part)  # type: ignore[assignment]
    return raw


def _form(params: dict[str, Any]) -> dict[str, str]:
    """Flat Chargebee form fields (``billing_address[city]``; JSON for meta_data)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        if isinstance(value, dict) and key not in ("meta_data", "metadata"):
            out.update({f"{key}[{k}]": _scalar(v) for k, v in value.items()})
        else:
            out[key] = _scalar(value)
    return out


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return json.dumps(v)
    return str(v)


def cb_write(sb: Any, resource: str, rid: str, values: dict[str, Any]) -> None:
    """Write ``values`` (path → value) through Chargebee's API, each to its route. An
    assigning route gets every field it covers (the current value where not given), as
    any careful client must send it."""
    params = {p.path: p for p in cb_params(resource)}
    by_route: dict[str, dict[str, Any]] = {}
    for path, value in values.items():
        by_route.setdefault(params[path].route, {})[path] = value
    current = sb.cb("GET", f"{resource}/{rid}")[capability(resource).object_key]
    for route, chosen in by_route.items():
        assignment = capability(resource).assignment(route, list(chosen))
        if assignment is not None:
            chosen = {**{p: _get(current, p) for p in assignment.covered(list(chosen))}, **chosen}
        body: dict[str, Any] = {}
        for path, value in chosen.items():
            if value is None:
                continue
            head, _, sub = path.partition(".")
            if sub:
                body.setdefault(head, {})[sub] = value
            else:
                body[head] = value
        suffix = "" if route == "update" else f"/{route}"
        out = requests.post(
            f"{sb.cb_url}/api/v2/{resource}/{rid}{suffix}", data=_form(body), auth=(CB_KEY, ""), timeout=10
        )
        assert out.ok, f"the test's own write was refused: {out.status_code} {out.text}"


# -- the test ---------------------------------------------------------------------------------


def link_pairs(store: Any, flow: str) -> list[tuple[str, str]]:
    with store.connect() as conn:
        rows = conn.execute(select(link.c.crm_id, link.c.cb_id).where(link.c.flow == flow))
        return sorted((str(a), str(b)) for a, b in rows)


def live_ids(sb: Any) -> dict[str, list[str]]:
    out = {}
    for resource in ("contacts", "customers", "users"):
        recs = requests.get(f"{sb.crm_url}/_sandbox/records/{resource}", timeout=30).json()["records"]
        out[resource] = sorted(r["Id"] for r in recs if not r.get("Deleted"))
    return out


def cb_record(sb: Any, m: Mapping, rid: str) -> dict[str, Any]:
    from crmsync.hooks.chargebee import RESOURCES

    res = m.chargebee.resource
    if res in RESOURCES and not RESOURCES[res].readable:
        # Chargebee documents no retrieve (business entities): the sandbox's admin API shows it
        record = requests.get(f"{sb.cb_url}/_sandbox/records/{res}/{rid}", timeout=10)
        record.raise_for_status()
        return dict(record.json()["record"])
    out: dict[str, Any] = sb.cb("GET", f"{res}/{rid}")[capability(res).object_key]
    return out


def crm_record(sb: Any, m: Mapping, rid: str) -> dict[str, Any]:
    out: dict[str, Any] = sb.crm("GET", f"{m.customcrm.resource}/{rid}")
    return out


#: bookkeeping a write changes by design
VOLATILE = {Side.CHARGEBEE: {"updated_at", "resource_version"}, Side.CUSTOMCRM: {"Version", "UpdatedAt"}}


def unowned_view(m: Mapping, side: Side, raw: dict[str, Any]) -> dict[str, Any]:
    """The record without the fields the mapping owns and the write bookkeeping."""
    out = copy.deepcopy(raw)
    for key in VOLATILE[side]:
        out.pop(key, None)
    for path in owned(m, side):
        head, _, sub = path.partition(".")
        if sub and isinstance(out.get(head), dict):
            out[head].pop(sub, None)
        elif not sub:
            out.pop(head, None)
    return out


@st.composite
def edit_plans(draw: Any, m: Mapping) -> tuple[dict[str, str], dict[str, str]]:
    """(Customcrm edits, Chargebee edits), canonical name → new value, on disjoint fields.
    The Customcrm edits reach every Chargebee route the flow writes through."""
    crm_ok = editable(m, Side.CUSTOMCRM)
    cap = capability(m.chargebee.resource)
    routes: dict[str, list[str]] = {}
    for name in crm_ok:
        routes.setdefault(cap.update_route(m.field(name).chargebee) or "", []).append(name)
    crm_names = {draw(st.sampled_from(sorted(names))) for _, names in sorted(routes.items())}
    crm_names |= set(draw(st.lists(st.sampled_from(crm_ok), max_size=3))) if crm_ok else set()
    cb_ok = [n for n in editable(m, Side.CHARGEBEE) if n not in crm_names]
    cb_names = set(draw(st.lists(st.sampled_from(cb_ok), max_size=3))) if cb_ok else set()
    return (
        {n: "c" + draw(WORD) for n in sorted(crm_names)},
        {n: "k" + draw(WORD) for n in sorted(cb_names)},
    )


def first_sync(flow: str, run_flow: Any, store: Any) -> list[tuple[str, str]]:
    pairs = link_pairs(store, flow)
    if pairs:
        return pairs
    for dep in NEEDS.get(flow, ()):
        assert run_flow(dep).ok
    r = run_flow(flow)
    assert r.ok, (r.failed_tasks, r.summary)
    pairs = link_pairs(store, flow)
    assert pairs, f"{flow}: the first sync linked nothing; the test would prove nothing"
    return pairs


def check_flow(flow: str, run_flow: Any, sb: Any, store: Any, data: Any) -> None:
    m = MAPPINGS[flow]
    pairs = first_sync(flow, run_flow, store)
    chosen = data.draw(st.lists(st.sampled_from(pairs), min_size=1, max_size=3, unique=True), label="pairs")
    live = live_ids(sb)
    crm_res = m.customcrm.resource
    edits: list[tuple[str, str, dict[str, str], dict[str, str]]] = []
    for crm_id, cb_id in chosen:
        cb_plant = {p.path: data.draw(cb_value(p), label=f"cb {p.path}") for p in unowned_cb(m)}
        crm_plant = {f.name: data.draw(crm_value(f, live), label=f"crm {f.name}") for f in unowned_crm(m)}
        crm_edit, cb_edit = data.draw(edit_plans(m), label="mapped edits")
        crm_body = {**crm_plant, **{m.field(n).customcrm: v for n, v in crm_edit.items()}}
        if crm_body:
            sb.crm("PATCH", f"{crm_res}/{crm_id}", json=crm_body)
        cb_body = {**cb_plant, **{m.field(n).chargebee: v for n, v in cb_edit.items()}}
        if capability(m.chargebee.resource).can_update:
            if cb_body:
                cb_write(sb, m.chargebee.resource, cb_id, cb_body)
        elif cb_edit:  # a read-only resource changes in Chargebee's own UI
            body = {"id": cb_id, **{m.field(n).chargebee: v for n, v in cb_edit.items()}}
            requests.post(
                f"{sb.cb_url}/_sandbox/records/{m.chargebee.resource}", json=body, timeout=10
            ).raise_for_status()
        edits.append((crm_id, cb_id, crm_edit, cb_edit))

    before = {
        (crm_id, cb_id): (crm_record(sb, m, crm_id), cb_record(sb, m, cb_id)) for crm_id, cb_id, _, _ in edits
    }
    r = run_flow(flow)
    assert r.ok, (r.failed_tasks, r.summary)

    problems = []
    for crm_id, cb_id, crm_edit, cb_edit in edits:
        crm_before, cb_before = before[(crm_id, cb_id)]
        crm_after, cb_after = crm_record(sb, m, crm_id), cb_record(sb, m, cb_id)
        for side, rid, was, now in (
            (Side.CUSTOMCRM, crm_id, crm_before, crm_after),
            (Side.CHARGEBEE, cb_id, cb_before, cb_after),
        ):
            a, b = unowned_view(m, side, was), unowned_view(m, side, now)
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    problems.append(
                        f"{flow}: {side.value} {rid}.{key} not owned by the mapping changed: "
                        f"{a.get(key)!r} -> {b.get(key)!r}"
                    )
        for name, value in crm_edit.items():
            got = _get(cb_after, m.field(name).chargebee)
            if got != value:
                problems.append(
                    f"{flow}: Customcrm edit {name}={value!r} of {crm_id} did not reach {cb_id}: {got!r}"
                )
        for name, value in cb_edit.items():
            got = crm_after.get(m.field(name).customcrm)
            if got != value:
                problems.append(
                    f"{flow}: Chargebee edit {name}={value!r} of {cb_id} did not reach {crm_id}: {got!r}"
                )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("flow", sorted(MAPPINGS))
@SETTINGS
@given(data=st.data())
def test_a_sync_write_never_changes_a_field_the_mapping_does_not_own(flow, run_flow, sandboxes, store, data):
    check_flow(flow, run_flow, sandboxes, store, data)


def test_every_flow_has_unowned_fields_to_plant() -> None:
    """The generated test proves something only where there is something to wipe."""
    for flow, m in MAPPINGS.items():
        assert unowned_cb(m) or unowned_crm(m), flow
