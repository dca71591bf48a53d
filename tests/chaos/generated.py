"""Hostile input derived from a mapping file: what to plant, what must happen, how to fix.

The generated suite (``test_hostile_generated.py``) runs once per mapping file in
``include/mappings`` and ``tests/chaos/mappings``. Everything flow-specific comes from the
mapping (:mod:`crmsync.mapping.model`): which side a lone record can be planted on (the
other side creates records), the field paths on each side, the match keys, ``required``,
``max_length``, ``format``, ``values`` (an enum) and ``transform``. What is known about a
*resource* rather than a flow (Chargebee's create-only attributes, a nested attribute's
update endpoint) sits in small tables here, so a new flow over existing resources needs
its YAML and nothing else.

Planted bad values per field (exactly one defect per bad record), when the field's value
travels to the other side or is a match key:

* a match key or ``required`` field: missing or blank;
* ``format: email``: malformed addresses; ``format: country_code``: no two-letter code,
  and (only when Chargebee receives it) two letters that are no ISO country;
* ``values``: a value outside the enum; ``transform: json``: not a JSON object;
* plain text: a C0/C1 control character, a list/object/``true`` instead of text, and
  with ``max_length`` a value over it in one- to four-byte units.

Good values: RTL scripts, emoji and ZWJ sequences, combining marks, bidi controls,
blank and missing optional fields, values exactly at ``max_length``, numbers where text
belongs on the Customcrm side (coerced to text), and one record entered on both sides
with its match key in another case and padding (linked by match).
"""

from __future__ import annotations

import itertools
import json
import shutil
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crmsync.mapping.model import FieldMap, Mapping, Side, load_mapping
from hypothesis import strategies as st

from tests.chaos import hostile
from tests.chaos.harness import _path, canon
from tests.chaos.hostile import CB, CRM

ROOT = Path(__file__).resolve().parents[2]
#: the product's flows and the flows defined only by a test mapping
PRODUCT_MAPPINGS = ROOT / "include" / "mappings"
MAPPING_DIRS = (PRODUCT_MAPPINGS, Path(__file__).parent / "mappings")
SIDE_OF = {CRM: Side.CUSTOMCRM, CB: Side.CHARGEBEE}

# -- what is known of a Chargebee resource, not of a flow ------------------------------------

#: attributes Chargebee's public API sets only when the record is created
CB_CREATE_ONLY = {("items", "type")}
#: attributes a Chargebee list filters on (an item list asks for status active, archived or
#: deleted): a record with another value, or none, is never read, so it is no defect to plant
CB_LIST_FILTERED = {("items", "status")}
#: resources with no public update: Chargebee's UI edits them (the admin endpoint here)
CB_NO_PUBLIC_UPDATE = {"business_entities"}


def _external_name_defaults_to_name(view: dict[str, Any]) -> None:
    """Chargebee gives an item without an external name its name as external name."""
    if "external_name" in view and view["external_name"] is None:
        view["external_name"] = view.get("name")


#: per Chargebee resource: how a blank on either side reads in the comparison
CB_QUIRKS = {"items": _external_name_defaults_to_name}

ISO_OK = ["NO", "SE", "DE", "PL", "US", "JP", "ir", " fr "]
BAD_EMAILS = ["bad{n}", "bad{n}@@example.com", "bad{n}@example", "bad {n}@example.com", "@bad{n}.com"]
BAD_COUNTRIES = ["Norway", "N0", "NOR", "1", "no way", "ØY"]
NO_ISO_COUNTRY = ["XX", "ZZ", "qq"]
WRONG_TYPES: list[Any] = [{"name": "Acme"}, ["Oslo", "Bergen"], True, False]
BAD_JSON: list[Any] = ["not json {", "[1, 2]", [1, 2], "tier=gold", 42]
BLANKS: list[Any] = [None, "", "   ", "\t"]


def mapping_files() -> list[Path]:
    return [p for d in MAPPING_DIRS for p in sorted(d.glob("*.yaml"))]


def load(path: Path) -> Flow:
    return Flow(load_mapping(path), path)


def test_mapping_files() -> list[Path]:
    """Flows defined only by a test mapping (``tests/chaos/mappings``)."""
    return [p for p in mapping_files() if p.parent != PRODUCT_MAPPINGS]


def deploy(path: Path, folder: Path, monkeypatch: Any) -> Path:
    """Adds a test flow the way a new flow is deployed: its file joins the product's mapping
    files in the folder the DAG file reads (``CRMSYNC_MAPPINGS_DIR``), nothing else.
    Returns the mapping's path there (a shipped flow's own path is returned unchanged)."""
    if path.parent == PRODUCT_MAPPINGS:
        return path
    folder.mkdir(exist_ok=True)
    for p in [*PRODUCT_MAPPINGS.glob("*.yaml"), path]:
        shutil.copy(p, folder / p.name)
    monkeypatch.setenv("CRMSYNC_MAPPINGS_DIR", str(folder))
    return folder / path.name


@dataclass
class Rec:
    side: str
    n: int
    values: dict[str, Any]  # canonical field name → raw value as planted (the side's own form)
    defect: str | None = None  # None = good
    field: str | None = None  # the defective field
    id: str | None = None
    twin: bool = False  # entered on both sides: linked by match


@dataclass
class Flow:
    """One mapping seen as a hostile-input target."""

    mapping: Mapping
    path: Path
    uniq: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def name(self) -> str:
        return self.mapping.flow

    def resource(self, side: str) -> str:
        return self.mapping.side(SIDE_OF[side]).resource

    def plantable(self) -> list[str]:
        """Sides where a lone record syncs: the other side creates records, and no
        reference the record carries across must be linked first."""
        out = []
        for side in (CRM, CB):
            s = SIDE_OF[side]
            if self.mapping.side(s.other).create is not True:
                continue
            if any(f.ref and f.ref_required and f.direction.writes(s.other) for f in self.mapping.fields):
                continue
            out.append(side)
        return out

    def fields(self) -> list[FieldMap]:
        """Fields the suite plants and compares (references are another flow's business)."""
        return [f for f in self.mapping.fields if not f.ref]

    def path_of(self, f: FieldMap, side: str) -> str:
        return f.customcrm if side == CRM else f.chargebee

    def is_key(self, f: FieldMap) -> bool:
        return any(f.name in rule for rule in self.mapping.match.rules)

    def read_only_cb(self) -> bool:
        """The sync never writes to Chargebee: it creates nothing there and no field flows
        into it (business entities, which Chargebee's public API cannot create or change)."""
        writes = any(f.direction.writes(Side.CHARGEBEE) for f in self.mapping.fields)
        return self.mapping.chargebee.create is False and not writes

    def is_id(self, f: FieldMap) -> bool:
        """The Chargebee record's id is this field (an item id is its SKU)."""
        return f.chargebee == "id"


def kind(f: FieldMap) -> str:
    """How the suite treats a field's values."""
    if f.values:
        return "enum"
    if f.format in ("email", "country_code", "currency_code"):
        return f.format
    if f.transform in ("bool", "json", "int", "date", "datetime"):
        return f.transform
    return "text"


# -- good values -------------------------------------------------------------------------------


def _fits(f: FieldMap, value: Any) -> bool:
    c = canon(f.transform, value)
    limit = (f.max_length or 150) - 8
    return c is not None and len(c) <= limit and not any(unicodedata.category(ch) == "Cc" for ch in c)


def enum_raw(f: FieldMap, side: str, key: str) -> Any:
    """The planted form of an enum value: Customcrm holds the key (YAML booleans as bools)."""
    assert f.values is not None
    if side == CB:
        return f.values[key]
    return {"true": True, "false": False}.get(key, key)


@st.composite
def unique_value(draw: Any, flow: Flow, f: FieldMap, side: str, u: int) -> Any:
    """A match key or required value: unique per record (item names are unique too)."""
    if kind(f) == "email":
        return f"good{u}.{side}@example.com"
    if flow.is_id(f):
        return f"G-{u}-{side}"  # an item id Chargebee takes
    tag = f" #{u}"
    limit = (f.max_length or 150) - len(tag)
    if draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(["ŵ", "x", "的", "😀"])) * limit + tag
    return draw(hostile.exotic_text.filter(lambda s: _fits(f, s + tag))) + tag


@st.composite
def optional_value(draw: Any, f: FieldMap, side: str) -> Any:
    k = kind(f)
    if k == "enum":
        return enum_raw(f, side, draw(st.sampled_from(sorted(f.values or {}))))
    if k == "country_code":
        return draw(st.one_of(st.none(), st.sampled_from(ISO_OK)))
    if k == "currency_code":
        return draw(st.sampled_from([None, "EUR", "nok"]))
    if k == "bool":
        return draw(st.booleans())
    if k == "json":
        return draw(
            st.one_of(
                st.just({}),
                st.dictionaries(st.sampled_from(["tier", "ключ"]), hostile.exotic_text, max_size=2),
            )
        )
    if k != "text":
        return None
    how = draw(st.sampled_from(["text", "text", "none", "blank", "limit", "number"]))
    if how == "text":
        return draw(hostile.exotic_text.filter(lambda s: _fits(f, s)))
    if how == "blank":
        return draw(st.sampled_from(["", "   ", "\u3000"]))
    if how == "limit" and f.max_length:
        return "ŵ" * f.max_length
    if how == "number" and side == CRM:
        return draw(st.integers(0, 10**6))  # coerced to its text
    return None


@st.composite
def good_values(draw: Any, flow: Flow, side: str, u: int) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in flow.fields():
        if side == CB and flow.is_id(f):
            continue  # the record's id
        if flow.is_key(f) or (f.required and kind(f) in ("text", "email")):
            values[f.name] = draw(unique_value(flow, f, side, u))
        else:
            values[f.name] = draw(optional_value(f, side))
    return values


# -- defects -----------------------------------------------------------------------------------


def defects(flow: Flow, side: str) -> list[tuple[str, str]]:
    """(defect, field) pairs a record planted on ``side`` can carry, from the field specs."""
    out: list[tuple[str, str]] = []
    other = SIDE_OF[side].other
    for f in flow.fields():
        if side == CB and flow.is_id(f):
            continue
        # a field a Chargebee create needs travels with the create even when one-way
        needed = other is Side.CHARGEBEE and f.name in flow.mapping.chargebee.create_requires
        carried = f.direction.writes(other) or needed
        if (flow.is_key(f) or f.required or needed) and can_be_blank(flow, f, side):
            out.append(("blank", f.name))
        if not carried:
            continue
        k = kind(f)
        if k == "email":
            out.append(("bad_email", f.name))
        elif k == "country_code":
            out.append(("bad_country", f.name))
            if other is Side.CHARGEBEE:  # two letters, but no ISO code: only Chargebee says no
                out.append(("no_iso_country", f.name))
        elif k == "enum" and (side == CRM or (flow.resource(CB), f.chargebee) not in CB_LIST_FILTERED):
            out.append(("unknown_value", f.name))
        elif k == "json":
            out.append(("bad_json", f.name))
        elif k == "text":
            out += [("control", f.name), ("wrong_type", f.name)]
        if f.max_length and k in ("text", "email"):
            out.append(("too_long", f.name))
    return out


def can_be_blank(flow: Flow, f: FieldMap, side: str) -> bool:
    """Whether a side can hold no value: a Customcrm boolean reads as false when missing,
    and a Chargebee list never shows a record without its filtered attribute."""
    if kind(f) != "enum":
        return True
    if side == CRM:
        return set(f.values or {}) != {"true", "false"}
    return (flow.resource(CB), f.chargebee) not in CB_LIST_FILTERED


@st.composite
def bad_value(draw: Any, f: FieldMap, defect: str, u: int) -> Any:
    if defect == "blank":
        return draw(st.sampled_from(BLANKS))
    if defect == "bad_email":
        return draw(st.sampled_from(BAD_EMAILS)).format(n=u)
    if defect == "bad_country":
        return draw(st.sampled_from(BAD_COUNTRIES))
    if defect == "no_iso_country":
        return draw(st.sampled_from(NO_ISO_COUNTRY))
    if defect == "unknown_value":
        if set(f.values or {}) == {"true", "false"}:
            return draw(st.sampled_from(["maybe", 2, *sorted((f.values or {}).values())]))
        return draw(st.sampled_from(["bundle", "subscription", "Unknown"]))
    if defect == "bad_json":
        return draw(st.sampled_from(BAD_JSON))
    if defect == "control":
        return f"Bad{draw(st.sampled_from(hostile.CONTROL))}Value{u}"
    if defect == "wrong_type":
        return draw(st.sampled_from(WRONG_TYPES))
    assert defect == "too_long" and f.max_length
    extra = draw(st.integers(1, 300))
    if kind(f) == "email":
        return "l" * (f.max_length + extra - len("@example.com")) + f"{u}@example.com"
    return draw(st.sampled_from(hostile.LONG_UNITS)) * (f.max_length + extra)


@st.composite
def bad_record(draw: Any, flow: Flow, side: str, defect: str, name: str) -> Rec:
    u = next(flow.uniq)
    values = draw(good_values(flow, side, u))
    f = flow.mapping.field(name)
    values[name] = draw(bad_value(f, defect, u))
    return Rec(side, u, values, defect, name)


@st.composite
def twins(draw: Any, flow: Flow) -> list[Rec]:
    """One record entered on both sides, its match key in another case and padding."""
    u = next(flow.uniq)
    crm, cb = draw(good_values(flow, CRM, u)), draw(good_values(flow, CB, u))
    key = flow.mapping.field(flow.mapping.match.keys[0])
    twin_id = None
    if flow.is_id(key):
        crm[key.name], twin_id = f"TW-{u}", f"tw-{u}"
    elif kind(key) == "email":
        crm[key.name], cb[key.name] = f"twin{u}@example.com", f"  TWIN{u}@Example.COM "
    else:
        crm[key.name] = f"Twin {u}"
        cb[key.name] = f"  TWIN  {u} "
    for f in flow.fields():  # unique values (item names) must agree, or the pair clashes
        if f.required and kind(f) == "text" and not flow.is_key(f) and f.name in cb:
            cb[f.name] = crm[f.name]
    return [Rec(CRM, u, crm, twin=True), Rec(CB, u, cb, twin=True, id=twin_id)]


@st.composite
def batches(draw: Any, flow: Flow) -> list[Rec]:
    recs: list[Rec] = []
    sides = flow.plantable()
    for side in sides:
        for _ in range(draw(st.integers(2, 4))):
            u = next(flow.uniq)
            recs.append(Rec(side, u, draw(good_values(flow, side, u))))
    for side in sides:  # every defect, every batch
        for defect, name in draw(st.permutations(defects(flow, side))):
            recs.append(draw(bad_record(flow, side, defect, name)))
    if len(sides) == 2:
        recs += draw(twins(flow))
    return recs


# -- planting and fixing -----------------------------------------------------------------------


def crm_body(flow: Flow, values: dict[str, Any]) -> dict[str, Any]:
    return {flow.mapping.field(k).customcrm: v for k, v in values.items()}


def cb_body(flow: Flow, r: Rec) -> dict[str, Any]:
    body: dict[str, Any] = {**flow.mapping.chargebee.create_defaults, "id": r.id}
    for k, v in r.values.items():
        top, _, leaf = flow.mapping.field(k).chargebee.partition(".")
        if not leaf:
            body[top] = v
        elif v is not None:
            body.setdefault(top, {})[leaf] = v
    return body


def fixed_value(flow: Flow, r: Rec) -> Any:
    """What a person types after reading the reason."""
    assert r.field and r.id
    f = flow.mapping.field(r.field)
    k = kind(f)
    if k == "email":
        return f"fixed.{r.id}@example.com".lower()
    if k == "country_code":
        return "NO"
    if k == "enum":
        return enum_raw(f, r.side, sorted(f.values or {})[0])
    if k == "json":
        return {"fixed": "yes"}
    if flow.is_id(f):
        return f"FIXED-{r.n}-{hostile.fresh_id('s')}"
    return f"Fixed {f.name} #{r.n}"


def fixable(flow: Flow, r: Rec) -> bool:
    if not r.defect or r.side == CRM:
        return bool(r.defect)
    return (flow.resource(CB), flow.mapping.field(r.field or "").chargebee) not in CB_CREATE_ONLY


def cb_fix_request(flow: Flow, r: Rec, value: Any) -> tuple[str, dict[str, Any]]:
    """Chargebee's public API call that sets the field: (path, form data)."""
    assert r.field and r.id
    top, _, leaf = flow.mapping.field(r.field).chargebee.partition(".")
    resource = flow.resource(CB)
    if not leaf:
        return f"{resource}/{r.id}", {top: json.dumps(value) if isinstance(value, dict) else value}
    nested = cb_body(flow, r).get(top, {})
    return f"{resource}/{r.id}/{hostile.CB_NESTED_UPDATE[top]}", {f"{top}[{k}]": v for k, v in nested.items()}


def names_of(flow: Flow, f: FieldMap) -> list[str]:
    """The names a reason may use for a field: either side's, the leaf, the canonical one."""
    top, _, leaf = f.chargebee.partition(".")
    names = [f.customcrm, f.chargebee, f.name, f.name.replace("_", " ")]
    if leaf:
        names += [leaf, f"{top}[{leaf}]"]
    if flow.is_id(f):
        label = flow.mapping.chargebee.label
        names += [f"{label} id", f"{label}_id"]
    return [n.lower() for n in names]


# -- the comparison (independent of the engine) ------------------------------------------------


def canonical(f: FieldMap, side: str, raw: Any) -> Any:
    k = kind(f)
    if k == "enum":
        if side == CRM:
            key = ("true" if raw else "false") if isinstance(raw, bool) else str(raw)
            return (f.values or {}).get(key)
        return raw
    if k == "bool":
        return bool(raw)
    if k == "json":
        return raw or {}
    return canon(f.transform, raw)


def view(flow: Flow, side: str, record: dict[str, Any]) -> dict[str, Any]:
    """A stored record (or a planted body) in the comparison's form."""
    out = {f.name: canonical(f, side, _path(record, flow.path_of(f, side))) for f in flow.fields()}
    quirk = CB_QUIRKS.get(flow.resource(CB))
    if quirk:
        quirk(out)
    return out


def own_view(flow: Flow, r: Rec) -> dict[str, Any]:
    if r.side == CRM:
        return view(flow, CRM, crm_body(flow, r.values))
    return view(flow, CB, cb_body(flow, r))


# -- the batch: plant, check, fix --------------------------------------------------------------


def wipe(sb: Any, store: Any, flow: Flow) -> None:
    hostile.wipe(sb, store, crm=(flow.resource(CRM),), cb=(flow.resource(CB),))


def plant(sb: Any, flow: Flow, recs: list[Rec]) -> None:
    crm = [r for r in recs if r.side == CRM]
    ids = hostile.plant(sb, CRM, flow.resource(CRM), [crm_body(flow, r.values) for r in crm])
    for r, rid in zip(crm, ids, strict=True):
        r.id = rid
    cb = [r for r in recs if r.side == CB]
    for r in cb:
        r.id = r.id or hostile.fresh_id("gh")  # never reuse an id: idempotency keys derive from it
    hostile.plant(sb, CB, flow.resource(CB), [cb_body(flow, r) for r in cb])


def fix(sb: Any, flow: Flow, r: Rec) -> None:
    """What a person does after reading the reason: correct the one field, in the UI (API)."""
    assert r.field and r.id
    value = fixed_value(flow, r)
    r.values[r.field] = value
    f = flow.mapping.field(r.field)
    if r.side == CRM:
        sb.crm("PATCH", f"{flow.resource(CRM)}/{r.id}", json={f.customcrm: value})
    elif flow.resource(CB) in CB_NO_PUBLIC_UPDATE:  # Chargebee's UI
        hostile.plant(sb, CB, flow.resource(CB), [cb_body(flow, r)])
    else:
        path, data = cb_fix_request(flow, r, value)
        sb.cb("POST", path, data=data)


def _good_problems(flow: Flow, r: Rec, mine: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    problems = [
        f"{k} differs: {r.side}={mine[k]!r} other side={theirs[k]!r}" for k in mine if mine[k] != theirs[k]
    ]
    if not r.twin:
        planted = own_view(flow, r)
        problems += [
            f"{k} changed on its own side: {mine[k]!r} != {want!r}"
            for k, want in planted.items()
            if mine[k] != want
        ]
    return problems


def check_batch(sb: Any, store: Any, flow: Flow, recs: list[Rec], run: Any) -> list[str]:
    problems: list[str] = [] if run.ok else [f"run failed: {run.failed_tasks}"]
    held = hostile.held(store, flow.name)
    links = hostile.links(store, flow.name)
    by_cb = {v: k for k, v in links.items()}
    now = {
        side: {hostile.record_id(side, x): x for x in hostile.admin_records(sb, side, flow.resource(side))}
        for side in (CRM, CB)
    }
    for r in recs:
        assert r.id
        shown = repr(r.values.get(r.field or ""))[:60]
        what = f"{r.side} {r.id} ({r.defect or 'good'} {r.field or ''}: {shown})"
        hold = held.get((r.side, r.id))
        other = links.get(r.id) if r.side == CRM else by_cb.get(r.id)
        if r.defect:
            names = names_of(flow, flow.mapping.field(r.field or ""))
            problems += hostile.bad_record_problems(what, hold, other, r.id, names)
            continue
        problems += hostile.good_record_problems(what, hold)
        if other is None:
            problems.append(f"{what}: a good record was not synced ({hold})")
            continue
        side_of_other = CB if r.side == CRM else CRM
        mine = view(flow, r.side, now[r.side][r.id])
        theirs = view(flow, side_of_other, now[side_of_other][other])
        problems += [f"{what}: {p}" for p in _good_problems(flow, r, mine, theirs)]
    return problems
