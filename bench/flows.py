"""Benchmark data for a flow, derived from its mapping file, and the minimum API calls it needs.

The flow is a parameter (``--flow``): field names, sides' resources and match keys come
from ``include/mappings/<flow>.yaml``. Values are generated already in canonical form
(trimmed, lower-case emails, upper-case country codes), so "equal" here means equal to
the sync too, and the minimum number of calls can be computed without the package's code:

* reading ``n`` records costs ``ceil(n / 100)`` list calls (at least one);
* a record new on one side costs one create on the other;
* a pair whose fields differ costs, on each side that must change, one call per endpoint
  that accepts the changed fields (Chargebee takes a customer's ``billing_address`` only
  through ``update_billing_info``: that is a second call, not waste).

The merge rule used for the minimum is the design's: equal → nothing; blank on one side →
the other side's value fills it (blanks never overwrite); different → the newer wins.
Flows whose records reference other flows' records (orders, quotes) need data this
generic generator cannot make; they raise a clear error.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import pages

#: Chargebee endpoints other than ``POST /{resource}/{id}`` that write a nested object.
NESTED_ROUTES: dict[str, dict[str, str]] = {"customers": {"billing_address": "update_billing_info"}}
COUNTRIES = ("NO", "DE", "SE", "GB", "FR", "DK", "NL", "FI")
DAY = 86400


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _set(target: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    cur = target
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[parts[-1]] = value


@dataclass
class Flow:
    """What the benchmarks need to know about one flow."""

    name: str
    mapping_file: Path
    mapping: Any  # crmsync.mapping.model.Mapping

    @classmethod
    def load(cls, name: str, mapping_file: Path) -> Flow:
        from crmsync.mapping.model import load_mapping

        mapping = load_mapping(mapping_file)
        if mapping.flow != name:
            raise ValueError(f"{mapping_file} defines flow {mapping.flow!r}, not {name!r}")
        flow = cls(name, mapping_file, mapping)
        for f in mapping.fields:
            if f.transform == "date" or f.format not in (None, "email", "country_code"):
                raise NotImplementedError(
                    f"flow {name}: field {f.name} ({f.transform}/{f.format}) needs a data profile "
                    "the generic benchmark generator does not have"
                )
        required = [
            f.name for f in mapping.fields if getattr(f, "ref", None) and getattr(f, "ref_required", True)
        ]
        if required:
            raise NotImplementedError(
                f"flow {name}: fields {required} must reference records of another flow; "
                "the generic generator makes records without references"
            )
        return flow

    # -- names ------------------------------------------------------------------------
    @property
    def crm_resource(self) -> str:
        return str(self.mapping.customcrm.resource)

    @property
    def cb_resource(self) -> str:
        return str(self.mapping.chargebee.resource)

    @property
    def crm_prefix(self) -> str:
        from sandbox.customcrm.schema import RESOURCES

        return str(RESOURCES[self.crm_resource].prefix)

    @property
    def crm_paths(self) -> set[str]:
        return {f.customcrm for f in self.mapping.fields}

    def cb_route(self, field_name: str) -> str:
        """The Chargebee endpoint that updates this field (``update`` or an action)."""
        top = self.mapping.field(field_name).chargebee.split(".", 1)[0]
        return NESTED_ROUTES.get(self.cb_resource, {}).get(top, "update")

    def endpoint(self, side: str, op: str) -> str:
        """The kind label :class:`bench.sandboxes.CallCounts` gives a write."""
        if side == "chargebee":
            base = f"/{self.cb_resource}"
            if op == "create":
                return f"write POST {base}"
            if op == "update":
                return f"write POST {base}/{{id}}"
            return f"write POST {base}/{{id}}/{op}"
        base = f"/{self.crm_resource}"
        return {"create": f"write POST {base}", "update": f"write PATCH {base}/{{id}}"}[op]

    # -- values ---------------------------------------------------------------------------
    def value(self, f: Any, i: int, variant: str = "") -> Any:
        name = f.name
        if f.format == "email" or name in self.mapping.match.keys:
            return f"person{i:07d}{variant}@bench.example"
        if f.format == "country_code" or f.transform == "country":
            return COUNTRIES[(i + len(variant)) % len(COUNTRIES)]
        if f.transform == "int":
            return i + len(variant)
        if f.transform == "bool":
            return (i + len(variant)) % 2 == 0
        if "phone" in name:
            text = f"+47 4{i:07d}{(' ' + str(len(variant))) if variant else ''}"
        elif "zip" in name:
            text = f"{1000 + (i + len(variant)) % 9000}"
        else:
            text = f"{name.replace('_', ' ').title()} {i}{(' ' + variant) if variant else ''}"
        if f.transform == "lower":
            text = text.lower()
        elif f.transform == "upper":
            text = text.upper()
        return text[: f.max_length] if f.max_length else text

    def person(self, i: int) -> dict[str, Any]:
        """Canonical values of person ``i``; optional references to other flows stay empty."""
        return {f.name: None if getattr(f, "ref", None) else self.value(f, i) for f in self.mapping.fields}

    def crm_raw(self, rec_id: str, values: dict[str, Any], ts: float) -> dict[str, Any]:
        rec: dict[str, Any] = {"Id": rec_id, "CreatedAt": _iso(ts - DAY), "UpdatedAt": _iso(ts)}
        for f in self.mapping.fields:
            if values.get(f.name) is not None:
                _set(rec, f.customcrm, values[f.name])
        return rec

    def cb_raw(self, rec_id: str, values: dict[str, Any], ts: float) -> dict[str, Any]:
        rec: dict[str, Any] = {"id": rec_id, "created_at": int(ts - DAY), "updated_at": int(ts)}
        for f in self.mapping.fields:
            if values.get(f.name) is not None:
                _set(rec, f.chargebee, values[f.name])
        return rec

    # -- the fields the pair categories vary -------------------------------------------------
    def varied_fields(self) -> dict[str, Any]:
        keys = set(self.mapping.match.keys)
        free = [
            f.name
            for f in self.mapping.fields
            if f.name not in keys and f.direction.value == "both" and not getattr(f, "ref", None)
        ]
        top = [n for n in free if self.cb_route(n) == "update"]
        nested: dict[str, list[str]] = {}
        for n in free:
            if self.cb_route(n) != "update":
                nested.setdefault(self.cb_route(n), []).append(n)
        if not top:
            raise NotImplementedError(f"flow {self.name}: no two-way field Chargebee updates directly")

        def pick(*names: str, default: int = 0) -> str:
            return next((n for n in names if n in top), top[default % len(top)])

        group = next(iter(nested.values()), [top[0]])
        return {
            "fill_cb": pick("phone", default=0),
            "fill_crm": pick("company", default=-1),
            "conflict": pick("last_name", default=1),
            "edit_crm": pick("first_name", default=2),
            "edit_cb": pick("company", "phone", default=-1),
            "nested_group": group,
        }


@dataclass
class Dataset:
    """Both sides' records for ``n`` per side, half of them overlapping by match key."""

    flow: Flow
    n: int
    crm: list[dict[str, Any]] = field(default_factory=list)
    cb: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    categories: Counter[str] = field(default_factory=Counter)
    #: minimum calls of the initial sync: side -> kind -> count
    minimum: dict[str, Counter[str]] = field(default_factory=dict)

    def write_seeds(self, folder: Path) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        cb_path = folder / "chargebee-seed.json"
        crm_path = folder / "customcrm-seed.json"
        cb_path.write_text(json.dumps({self.flow.cb_resource: self.cb}), encoding="utf-8")
        crm_path.write_text(json.dumps({self.flow.crm_resource: self.crm}), encoding="utf-8")
        return cb_path, crm_path

    @property
    def people(self) -> int:
        return len(self.crm) + len(self.cb) - len(self.pairs)


CATEGORIES = (
    "same",
    "same",
    "same",
    "same",
    "fill_cb",  # Chargebee lacks a field Customcrm has: one Chargebee update
    "fill_cb_nested",  # Chargebee lacks the nested object (billing address): one action call
    "fill_crm",  # Customcrm lacks a field Chargebee has: one Customcrm update
    "conflict_crm_newer",  # both set, differ, Customcrm edited later: Chargebee update
    "conflict_cb_newer",  # both set, differ, Chargebee edited later: Customcrm update
    "fill_both",  # one field missing on each side: one write each
)


def expected_writes(
    flow: Flow, crm: dict[str, Any], cb: dict[str, Any], crm_ts: float, cb_ts: float
) -> tuple[set[str], bool]:
    """(Chargebee endpoints to call, whether Customcrm needs an update) for a matched pair."""
    to_cb: list[str] = []
    to_crm = False
    tie = flow.mapping.conflict.tie_breaker.value
    for f in flow.mapping.fields:
        c, k = crm.get(f.name), cb.get(f.name)
        if c == k:
            continue
        if c is None:
            to_crm = True
        elif k is None or crm_ts > cb_ts or (crm_ts == cb_ts and tie == "customcrm"):
            to_cb.append(f.name)
        else:
            to_crm = True
    return {flow.cb_route(n) for n in to_cb}, to_crm


def generate(flow: Flow, n: int, *, overlap: float = 0.5, now: float | None = None) -> Dataset:
    """``n`` records per side; ``overlap`` of each side's records match one on the other side."""
    now = now or datetime.now(UTC).timestamp()
    old = now - 30 * DAY  # older than any watermark overlap: a first run reads everything
    fields = flow.varied_fields()
    by_name = {f.name: f for f in flow.mapping.fields}
    ds = Dataset(flow, n)
    n_pairs = int(n * overlap)
    minimum: dict[str, Counter[str]] = {"customcrm": Counter(), "chargebee": Counter()}
    person = 0
    for p in range(n_pairs):
        person += 1
        cat = CATEGORIES[p % len(CATEGORIES)]
        ds.categories[cat] += 1
        crm_vals = flow.person(person)
        cb_vals = dict(crm_vals)
        crm_ts = cb_ts = old + p
        if cat == "fill_cb":
            cb_vals[fields["fill_cb"]] = None
        elif cat == "fill_cb_nested":
            for name in fields["nested_group"]:
                cb_vals[name] = None
        elif cat == "fill_crm":
            crm_vals[fields["fill_crm"]] = None
        elif cat in ("conflict_crm_newer", "conflict_cb_newer"):
            name = fields["conflict"]
            cb_vals[name] = flow.value(by_name[name], person, "cb")
            if cat == "conflict_crm_newer":
                crm_ts = old + 2 * DAY + p
            else:
                cb_ts = old + 2 * DAY + p
        elif cat == "fill_both":
            cb_vals[fields["fill_cb"]] = None
            crm_vals[fields["fill_crm"]] = None
        crm_id = f"{flow.crm_prefix}-{person:06d}"
        cb_id = f"bench_{person:07d}"
        ds.crm.append(flow.crm_raw(crm_id, crm_vals, crm_ts))
        ds.cb.append(flow.cb_raw(cb_id, cb_vals, cb_ts))
        ds.pairs.append((crm_id, cb_id))
        routes, to_crm = expected_writes(flow, crm_vals, cb_vals, crm_ts, cb_ts)
        for route in routes:
            minimum["chargebee"][flow.endpoint("chargebee", route)] += 1
        if to_crm:
            minimum["customcrm"][flow.endpoint("customcrm", "update")] += 1
    for _ in range(n - n_pairs):  # Customcrm only: one Chargebee create each
        person += 1
        ds.crm.append(flow.crm_raw(f"{flow.crm_prefix}-{person:06d}", flow.person(person), old + person))
        minimum["chargebee"][flow.endpoint("chargebee", "create")] += 1
    for _ in range(n - n_pairs):  # Chargebee only: one Customcrm create each
        person += 1
        ds.cb.append(flow.cb_raw(f"bench_{person:07d}", flow.person(person), old + person))
        minimum["customcrm"][flow.endpoint("customcrm", "create")] += 1
    minimum["customcrm"]["list"] = pages(len(ds.crm))
    minimum["chargebee"]["list"] = pages(len(ds.cb))
    ds.minimum = minimum
    return ds


def edits(flow: Flow, ds: Dataset, fraction: float) -> dict[str, Any]:
    """Edits of ``fraction`` of the linked records on each side, and the calls they need.

    Customcrm edits alternate between a field Chargebee updates directly and one that
    goes through the nested endpoint (billing address); Chargebee edits change a field
    that flows back to Customcrm. The two sets of records are disjoint.
    """
    e = max(1, math.ceil(len(ds.pairs) * 2 * fraction))  # 1% of the records of each side
    fields = flow.varied_fields()
    by_name = {f.name: f for f in flow.mapping.fields}
    nested = fields["nested_group"]
    nested_field = next((n for n in nested if "city" in n), nested[0])
    crm_edits: list[dict[str, Any]] = []
    cb_edits: list[dict[str, Any]] = []
    minimum: dict[str, Counter[str]] = {"customcrm": Counter(), "chargebee": Counter()}
    for j, (crm_id, _cb_id) in enumerate(ds.pairs[:e]):
        name = fields["edit_crm"] if j % 2 == 0 else nested_field
        f = by_name[name]
        crm_edits.append({"Id": crm_id, f.customcrm: flow.value(f, j, "edited")})
        minimum["chargebee"][flow.endpoint("chargebee", flow.cb_route(name))] += 1
    for j, (_crm_id, cb_id) in enumerate(ds.pairs[e : 2 * e]):
        f = by_name[fields["edit_cb"]]
        if "." in f.chargebee:
            raise NotImplementedError("Chargebee-side edits of nested fields are not generated")
        cb_edits.append({"id": cb_id, f.chargebee: flow.value(f, j, "cbedit")})
        minimum["customcrm"][flow.endpoint("customcrm", "update")] += 1
    minimum["customcrm"]["list"] = pages(len(crm_edits))
    minimum["chargebee"]["list"] = pages(len(cb_edits))
    return {"count": e, "crm": crm_edits, "cb": cb_edits, "minimum": minimum}


def crm_only(flow: Flow, n: int, *, start: int = 0, now: float | None = None) -> Dataset:
    """``n`` records in Customcrm only: an initial sync creates each in Chargebee (one call each)."""
    now = now or datetime.now(UTC).timestamp()
    old = now - 30 * DAY
    ds = Dataset(flow, n)
    for k in range(n):
        i = start + k + 1
        ds.crm.append(flow.crm_raw(f"{flow.crm_prefix}-{i:06d}", flow.person(i), old + k))
    ds.minimum = {
        "chargebee": Counter({"list": 1, flow.endpoint("chargebee", "create"): n}),
        "customcrm": Counter({"list": pages(n)}),
    }
    return ds


def mapping_copy(flow: Flow, path: Path, changes: dict[str, Any]) -> Path:
    """Write the flow's mapping with ``changes`` (dotted keys: ``{"run.max_workers": 16}``) to ``path``."""
    import yaml

    data = yaml.safe_load(flow.mapping_file.read_text(encoding="utf-8"))
    for dotted, value in changes.items():
        cur = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            cur = cur.setdefault(part, {})
        cur[parts[-1]] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path
