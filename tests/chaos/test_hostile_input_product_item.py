"""Hostile input for product_item (Customcrm products ⇄ Chargebee items): bad records are
held with a reason a person can act on, good ones (however exotic their text) sync, and a
fixed record leaves quarantine on the next run.

Each hypothesis example is one batch: products and items are emptied, a generated batch
is planted on both sides through the sandboxes' admin endpoints (no validation, so the
bad data really is in the systems), the flow runs once, then one bad record is fixed
through the public API and the flow runs again.

Defects, derived from include/mappings/product_item.yaml and the Chargebee sandbox's
validation (exactly one per bad record):

* both sides: a text field (name, external name, description, unit) over Chargebee's
  limit in 1-4-byte units, a control character in it, an object/list/true where text
  belongs;
* Customcrm: a Kind outside plan/addon/charge, no Kind (Chargebee needs an item type to
  create an item), a blank Sku (the match key), a Sku Chargebee rejects as an item id
  (spaces, non-ASCII, a control character, over 100 characters), Archived that is
  neither true nor false, Metadata that is not a JSON object, a Name another item already
  has (Chargebee's item names are unique);
* Chargebee: no name (Customcrm requires one), an item type Customcrm has no Kind for,
  metadata that is not a JSON object.

Good: RTL scripts, emoji and ZWJ sequences, combining marks, bidi controls, values
exactly at the limit, blank optional fields, exotic metadata values.
"""

from __future__ import annotations

import itertools
import json
import unicodedata
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.chaos import hostile
from tests.chaos.hostile import (
    CB,
    CONTROL,
    CRM,
    LONG_UNITS,
    PROBLEM_KINDS,
    exotic_text,
    fresh_id,
    reason_problems,
)

pytestmark = pytest.mark.e2e

FLOW = "product_item"
FAMILY = "nordpulse-software"
KINDS = ("plan", "addon", "charge")
#: Chargebee's limits for the text fields (the mapping's max_length); Customcrm allows more
LIMITS = {"name": 100, "external_name": 100, "description": 2000, "unit": 30}
#: canonical name → (Customcrm field, Chargebee attribute)
NAMES = {
    "sku": ("Sku", "id"),
    "name": ("Name", "name"),
    "external_name": ("ExternalName", "external_name"),
    "description": ("Description", "description"),
    "kind": ("Kind", "type"),
    "unit": ("Unit", "unit"),
    "shippable": ("Shippable", "is_shippable"),
    "archived": ("Archived", "status"),
    "metadata": ("Metadata", "metadata"),
}
TEXT = ("name", "external_name", "description", "unit")


@dataclass
class Rec:
    side: str
    n: int
    values: dict[str, Any]  # canonical name → raw value as planted (side's own form)
    defect: str | None = None  # None = good
    field: str | None = None  # canonical name of the defective field
    id: str | None = None
    twin: bool = False


# -- the canonical comparison (independent of the engine) ----------------------------------


def text(v: Any) -> str | None:
    if v is None:
        return None
    s = unicodedata.normalize("NFC", str(v)).strip()
    return s or None


def _external_name_defaults_to_name(view: dict[str, Any]) -> dict[str, Any]:
    """Chargebee gives an item without an external name its name as external name (the
    name shown to customers): a blank ExternalName in Customcrm means the same."""
    if view["external_name"] is None:
        view["external_name"] = view["name"]
    return view


def crm_view(p: dict[str, Any]) -> dict[str, Any]:
    return _external_name_defaults_to_name(
        {
            "sku": (text(p.get("Sku")) or "").lower() or None,
            **{k: text(p.get(NAMES[k][0])) for k in TEXT},
            "kind": p.get("Kind"),
            "shippable": bool(p.get("Shippable")),
            "archived": bool(p.get("Archived")),
            "metadata": p.get("Metadata") or {},
        }
    )


def cb_view(i: dict[str, Any]) -> dict[str, Any]:
    return _external_name_defaults_to_name(
        {
            "sku": str(i["id"]).lower(),
            **{k: text(i.get(k)) for k in TEXT},
            "kind": i.get("type"),
            "shippable": bool(i.get("is_shippable")),
            "archived": i.get("status") == "archived",
            "metadata": i.get("metadata") or {},
        }
    )


def own_view(r: Rec) -> dict[str, Any]:
    """What the record holds on its own side, in the comparison's form."""
    v = r.values
    if r.side == CRM:
        return crm_view({NAMES[k][0]: x for k, x in v.items()})
    return cb_view({"id": r.id, **{NAMES[k][1]: x for k, x in v.items() if k != "sku"}})


# -- strategies ----------------------------------------------------------------------------


def _ok_text(limit: int) -> st.SearchStrategy[str]:
    return exotic_text.filter(lambda s: text(s) is not None and len(text(s) or "") <= limit - 8)


@st.composite
def good_values(draw: Any, n: int, side: str) -> dict[str, Any]:
    tag = f" #{n}"  # item names are unique in Chargebee: every name carries its number
    kind = draw(st.sampled_from(["text", "text", "limit"]))
    if kind == "limit":
        name = draw(st.sampled_from(["ŵ", "x", "的", "😀"])) * (LIMITS["name"] - len(tag)) + tag
    else:
        name = draw(_ok_text(LIMITS["name"])) + tag
    values: dict[str, Any] = {"name": name}
    for f in ("external_name", "description", "unit"):
        how = draw(st.sampled_from(["text", "text", "none", "blank", "limit"]))
        if how == "text":
            values[f] = draw(_ok_text(LIMITS[f]))
        elif how == "limit":
            values[f] = draw(st.sampled_from(["ŵ", "x", "的", "😀"])) * LIMITS[f]
        elif how == "blank":
            values[f] = draw(st.sampled_from(["", "   "]))
        else:
            values[f] = None
    values["kind"] = draw(st.sampled_from(KINDS))
    values["shippable"] = draw(st.booleans())
    archived = draw(st.booleans())
    values["archived"] = archived if side == CRM else ("archived" if archived else "active")
    values["metadata"] = draw(
        st.one_of(
            st.just({}),
            st.dictionaries(st.sampled_from(["tier", "note", "ключ"]), exotic_text, min_size=1, max_size=2),
        )
    )
    if side == CRM:
        values["sku"] = draw(st.sampled_from([f"HP-{n}", f"hp.{n}~x", f"HP_{n}@A"]))
    return values


DEFECTS_CRM = [
    "too_long",
    "control",
    "wrong_type",
    "unknown_kind",
    "no_kind",
    "blank_sku",
    "bad_sku",
    "bad_archived",
    "bad_metadata",
    "name_taken",
]
DEFECTS_CB = ["too_long", "control", "wrong_type", "no_name", "unknown_type", "bad_metadata"]


@st.composite
def bad_record(draw: Any, n: int, side: str, taken_name: str, defect: str) -> Rec:
    values = draw(good_values(n, side))
    name: str
    if defect == "too_long":
        name = draw(st.sampled_from(TEXT))
        unit = draw(st.sampled_from(LONG_UNITS))
        values[name] = unit * (LIMITS[name] + draw(st.integers(1, 300)))
    elif defect == "control":
        name = draw(st.sampled_from(TEXT))
        values[name] = f"Bad{draw(st.sampled_from(CONTROL))}Value #{n}"
    elif defect == "wrong_type":
        name = draw(st.sampled_from(TEXT))
        values[name] = draw(st.sampled_from([{"text": "Acme"}, ["a", "b"], True]))
    elif defect == "unknown_kind":
        name = "kind"
        values[name] = draw(st.sampled_from(["bundle", "service", "PLAN", "subscription"]))
    elif defect == "no_kind":
        name = "kind"
        values[name] = draw(st.sampled_from([None, "", "  "]))
    elif defect == "blank_sku":
        name = "sku"
        values[name] = draw(st.sampled_from([None, "", "   "]))
    elif defect == "bad_sku":  # Customcrm takes it; Chargebee does not as an item id
        name = "sku"
        values[name] = draw(
            st.sampled_from(
                [
                    f"HP {n}",
                    f"HP-{n}-Ø",
                    f"HP-{n}-的",
                    f"HP/{n}",
                    f"HP-{n}\x07",
                    f"HP-{n}\x00",
                    f"HP-{n}-" + "x" * 100,
                ]
            )
        )
    elif defect == "bad_archived":
        name = "archived"
        values[name] = draw(st.sampled_from(["maybe", "archived", 2]))
    elif defect == "bad_metadata":
        name = "metadata"
        values[name] = draw(st.sampled_from(["not json {", "[1, 2]", [1, 2], "tier=gold", 42]))
    elif defect == "name_taken":
        name = "name"
        other_case = taken_name.upper()
        same = other_case.lower() == taken_name.lower() and unicodedata.is_normalized("NFC", other_case)
        values[name] = f"  {other_case if same else taken_name} "
    elif defect == "no_name":
        name = "name"
        values[name] = draw(st.sampled_from([None, "", "   "]))
    else:  # unknown_type: an item type Customcrm has no Kind for
        name = "kind"
        values[name] = draw(st.sampled_from(["bundle", "gift"]))
    return Rec(side, n, values, defect, name)


@st.composite
def batches(draw: Any) -> list[Rec]:
    counter = itertools.count(1)
    recs: list[Rec] = []
    for side in (CB, CRM):  # Chargebee's good items first: a Customcrm name may copy one
        for _ in range(draw(st.integers(2, 4))):
            n = next(counter)
            recs.append(Rec(side, n, draw(good_values(n, side))))
    first_item = next(r for r in recs if r.side == CB)
    # a name Chargebee compares as equal to the one the engine writes (NFC, other case)
    taken = first_item.values["name"] = unicodedata.normalize("NFC", first_item.values["name"])
    for side, defects in ((CRM, DEFECTS_CRM), (CB, DEFECTS_CB)):  # every defect, every batch
        for defect in draw(st.permutations(defects)):
            recs.append(draw(bad_record(next(counter), side, taken, defect)))
    # the same product entered on both sides: linked by SKU (case-insensitive)
    n = next(counter)
    crm, cb = draw(good_values(n, CRM)), draw(good_values(n, CB))
    crm["sku"] = f"TW-{n}"
    cb["name"] = crm["name"]
    recs += [Rec(CRM, n, crm, twin=True), Rec(CB, n, cb, twin=True, id=f"tw-{n}")]
    return recs


# -- planting and fixing ---------------------------------------------------------------------


def crm_body(values: dict[str, Any]) -> dict[str, Any]:
    return {NAMES[k][0]: v for k, v in values.items()}


def cb_body(r: Rec) -> dict[str, Any]:
    body = {NAMES[k][1]: v for k, v in r.values.items() if k != "sku"}
    return {"id": r.id, "item_family_id": FAMILY, **body}


def wipe(sb: Any, store: Any) -> None:
    hostile.wipe(sb, store, crm=("products",), cb=("items",))


def plant(sb: Any, recs: list[Rec]) -> None:
    crm = [r for r in recs if r.side == CRM]
    for r, rid in zip(
        crm, hostile.plant(sb, CRM, "products", [crm_body(r.values) for r in crm]), strict=True
    ):
        r.id = rid
    cb = [r for r in recs if r.side == CB]
    for r in cb:
        r.id = r.id or fresh_id("hi")  # never reuse an id: idempotency keys derive from it
    hostile.plant(sb, CB, "items", [cb_body(r) for r in cb])


def fixed_value(r: Rec) -> Any:
    f = r.field
    if f == "sku":
        return f"FIXED-{r.n}-{fresh_id('s')}"
    if f == "kind":
        return "addon"
    if f == "archived":
        return False
    if f == "metadata":
        return {"fixed": "yes"}
    return f"Fixed {f} #{r.n}"


#: what Chargebee's public API can fix (an item's type is fixed once created)
CB_FIXABLE = {"name", "external_name", "description", "unit", "metadata"}


def fix(sb: Any, r: Rec) -> None:
    """What a person does after reading the reason: correct the one field, in the UI (API)."""
    assert r.field and r.id
    value = fixed_value(r)
    r.values[r.field] = value
    if r.side == CRM:
        sb.crm("PATCH", f"products/{r.id}", json={NAMES[r.field][0]: value})
    else:
        data = {NAMES[r.field][1]: json.dumps(value) if r.field == "metadata" else value}
        sb.cb("POST", f"items/{r.id}", data=data)


# -- checks ----------------------------------------------------------------------------------


def field_names(name: str) -> list[str]:
    crm, cb = NAMES[name]
    return [crm, cb, name.replace("_", " "), name] + (["item id", "item_id"] if name == "sku" else [])


def check_batch(sb: Any, store: Any, recs: list[Rec], run: Any) -> list[str]:
    problems: list[str] = []
    if not run.ok:
        problems.append(f"run failed: {run.failed_tasks}")
    held = hostile.held(store, FLOW)
    links = hostile.links(store, FLOW)
    by_cb = {v: k for k, v in links.items()}
    crm_now = {x["Id"]: x for x in hostile.admin_records(sb, CRM, "products")}
    cb_now = {x["id"]: x for x in hostile.admin_records(sb, CB, "items")}
    for r in recs:
        assert r.id
        shown = repr(r.values.get(r.field or "name"))[:60]
        what = f"{r.side} {r.id} ({r.defect or 'good'} {r.field or ''}: {shown})"
        hold = held.get((r.side, r.id))
        other = links.get(r.id) if r.side == CRM else by_cb.get(r.id)
        if r.defect:
            if hold is None:
                problems.append(f"{what}: not quarantined")
            else:
                problems += reason_problems(what, hold[1], r.id, field_names(r.field or ""))
            if other is not None:
                problems.append(f"{what}: a bad record was linked")
            continue
        if hold is not None and hold[0] in PROBLEM_KINDS:
            problems.append(f"{what}: a good record is held: {hold}")
        if other is None:
            problems.append(f"{what}: a good record was not synced ({hold})")
            continue
        crm_rec, cb_rec = (crm_now[r.id], cb_now[other]) if r.side == CRM else (crm_now[other], cb_now[r.id])
        cv, kv = crm_view(crm_rec), cb_view(cb_rec)
        for k in cv:
            if cv[k] != kv[k]:
                problems.append(f"{what}: {k} differs: customcrm={cv[k]!r} chargebee={kv[k]!r}")
        if r.twin:
            continue
        mine = own_view(r)
        now = cv if r.side == CRM else kv
        for k, want in mine.items():
            if now[k] != want:
                problems.append(f"{what}: {k} changed on its own side: {now[k]!r} != {want!r}")
    return problems


# -- the tests -------------------------------------------------------------------------------


@hostile.BATCH_SETTINGS
@given(recs=batches(), pick=st.integers(min_value=0))
def test_hostile_products_and_items_bad_held_with_reasons_good_synced_fixed_released(
    run_flow, sandboxes, store, recs, pick
):
    wipe(sandboxes, store)
    plant(sandboxes, recs)
    first = run_flow(FLOW)
    problems = check_batch(sandboxes, store, recs, first)
    assert not problems, "\n".join(problems)

    fixable = [r for r in recs if r.defect and (r.side == CRM or r.field in CB_FIXABLE)]
    victim = fixable[pick % len(fixable)]
    what = f"{victim.side} {victim.id} ({victim.defect} {victim.field})"
    fix(sandboxes, victim)
    victim.defect = None  # from now on it must behave as a good record
    second = run_flow(FLOW)
    problems = check_batch(sandboxes, store, recs, second)
    assert not problems, f"after fixing {what}:\n" + "\n".join(problems)


def test_wrong_types_on_both_sides_are_held_not_written_as_their_python_repr(run_flow, sandboxes, store):
    def good(n: int, side: str) -> dict[str, Any]:
        v: dict[str, Any] = {"name": f"Typed #{n}", "kind": "plan", "shippable": False}
        v["archived"] = False if side == CRM else "active"
        if side == CRM:
            v["sku"] = f"TY-{n}"
        return v

    recs = [
        Rec(CRM, 1, {**good(1, CRM), "name": {"en": "Acme"}}, "wrong_type", "name"),
        Rec(CRM, 2, {**good(2, CRM), "unit": ["user", "seat"]}, "wrong_type", "unit"),
        Rec(CRM, 3, {**good(3, CRM), "description": True}, "wrong_type", "description"),
        Rec(CRM, 4, {**good(4, CRM), "external_name": {"x": 1}}, "wrong_type", "external_name"),
        Rec(CB, 5, {**good(5, CB), "name": ["Ada"]}, "wrong_type", "name"),
        Rec(CB, 6, {**good(6, CB), "description": {"x": 1}}, "wrong_type", "description"),
        Rec(CB, 7, {**good(7, CB), "unit": False}, "wrong_type", "unit"),
        Rec(CRM, 8, good(8, CRM)),
        Rec(CB, 9, good(9, CB)),
    ]
    wipe(sandboxes, store)
    plant(sandboxes, recs)
    run = run_flow(FLOW)
    problems = check_batch(sandboxes, store, recs, run)
    assert not problems, "\n".join(problems)
