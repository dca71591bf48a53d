"""Raw records of either side ⇄ the flow's canonical record. Pure: no I/O.

The canonical record is a flat ``{field name: value}`` dict in the form the mapping's
transforms produce. Everything the engine compares, hashes, merges and stores as the
merge base is canonical; raw shapes only exist at the edges (extract and upsert).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from crmsync.hooks.chargebee_events import UNLEARNED as _UNLEARNED
from crmsync.mapping.model import FieldMap, Side
from crmsync.mapping.model import Mapping as FlowMapping
from crmsync.mapping.transforms import (
    CHARGEBEE_OUT,
    CUSTOMCRM_OUT,
    TRANSFORMS,
    WRONG_TYPE,
    Canonical,
    check_format,
    check_json_object,
    check_transform,
    has_control_chars,
)

CanonicalRecord = dict[str, Canonical]


@dataclass(frozen=True)
class SideRecord:
    """One record of one side as the engine sees it: identity, versions, canonical values."""

    side: Side
    id: str
    values: CanonicalRecord
    updated_at: float = 0.0  # Unix seconds (Chargebee's unit); 0 when unknown
    version: str | None = None  # Customcrm Version / Chargebee resource_version
    deleted: bool = False
    external_ref: str | None = None  # Customcrm's stored Chargebee id, for crash recovery
    #: values a hold's reason names (``{path: value}`` for the placeholders of a field's
    #: ``ref_missing_fix``, e.g. an order's ``created_by``); never merged or written
    hints: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    """Why a value cannot be written, said so a person can fix it."""

    field: str
    message: str


@dataclass(frozen=True)
class Meta:
    """Where each side keeps a record's identity and version (configurable for Customcrm)."""

    id: str
    updated_at: str
    version: str | None
    deleted: str
    external_ref: str | None = None


CHARGEBEE_META = Meta(id="id", updated_at="updated_at", version="resource_version", deleted="deleted")
CUSTOMCRM_META = Meta(
    id="Id", updated_at="UpdatedAt", version="Version", deleted="Deleted", external_ref="ExternalRef"
)


def get_path(raw: Mapping[str, Any], path: str) -> Any:
    """``get_path({"a": {"b": 1}}, "a.b") == 1``; a missing step gives None."""
    cur: Any = raw
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur


def set_path(target: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    cur = target
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[parts[-1]] = value


UNKNOWN_VALUE = "\x00unknown:"


def _crm_value_key(raw: Any) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return "" if raw is None else str(raw).strip()


def has_path(raw: Mapping[str, Any], path: str) -> bool:
    """Whether every step of ``path`` is present in ``raw`` (a value None counts as present)."""
    cur: Any = raw
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return False
        cur = cur[part]
    return True


def absence_is_unknown(side: Side) -> bool:
    """Whether a field missing from a full record of ``side`` is unknown (not a blank).

    The rule per side, decided here:

    * **Chargebee**: a retrieved or listed resource omits every optional attribute that
      has no value (its JSON has no nulls; the official SDK's models default every
      optional attribute to None for the same reason), so a missing attribute, or a
      missing ``billing_address`` as a whole, *is* the empty value.
    * **Customcrm**: its contract (``sandbox/customcrm/openapi.yaml``) returns every
      field, null when empty; a field missing from a record (a CRM that differs from the
      contract, a projection) says nothing about its value, so it is unknown and the
      merge never reads it as a clear.
    """
    return side is Side.CUSTOMCRM


def to_canonical(mapping: FlowMapping, side: Side, raw: Mapping[str, Any]) -> CanonicalRecord:
    """Map a raw record of ``side`` to canonical values.

    Every mapped field is present, None when empty, except a Customcrm field the record
    does not carry at all: it is left out, so the merge can tell "unknown" from "cleared"
    (see :func:`absence_is_unknown`). A Customcrm value outside a field's value map
    becomes a marker that validation reports ("unknown value ... expected one of ..."),
    never a silent blank. A reference whose ``ref_absent_when`` applies is left out too
    (an order whose created_by names no person, by :mod:`crmsync.mapping.creators` with
    the connection's ``mapping.api_key_names``): the record refers to nothing by design,
    so it has no say over the field.
    """
    out: CanonicalRecord = {}
    unknown_if_absent = absence_is_unknown(side)
    for f in mapping.fields:
        path = mapping.source_path(f, side)
        if unknown_if_absent and not has_path(raw, path):
            continue
        value = get_path(raw, path)
        if (
            side is Side.CHARGEBEE
            and f.ref_absent_when
            and f.ref_absent_when.applies(get_path(raw, f.ref_absent_when.chargebee), mapping.api_key_names)
        ):
            # Nothing to refer to by design: no reference, nothing to wait for, and no
            # say over the field either (unknown, not a clear: an owner set by hand in
            # Customcrm is kept).
            continue
        if f.values is not None and side is Side.CUSTOMCRM and value is not None and value != "":
            key = _crm_value_key(value)
            value = f.values.get(key, f"{UNKNOWN_VALUE}{key}")
        out[f.name] = TRANSFORMS[f.transform](value)
    return out


def _crm_out(f: FieldMap, value: Canonical) -> Any:
    if f.transform in CUSTOMCRM_OUT:
        return CUSTOMCRM_OUT[f.transform](value)
    if f.values is None or value is None:
        return value
    for crm_value, canonical in f.values.items():
        if canonical == value:
            return {"true": True, "false": False}.get(crm_value, crm_value)
    return value


#: What a cleared value is sent as to Chargebee: an empty parameter is how its API clears
#: an optional attribute (the official SDK sends None as ""); a parameter left out
#: changes nothing, so a clear sent as None would never arrive and the field would be
#: copied back from Chargebee in the next run. Customcrm takes JSON null.
CHARGEBEE_CLEAR = ""


def to_side(mapping: FlowMapping, side: Side, values: Mapping[str, Canonical]) -> dict[str, Any]:
    """Canonical values → the nested raw shape ``side`` accepts on write (a clear, None,
    as :data:`CHARGEBEE_CLEAR` for Chargebee and null for Customcrm)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        f = mapping.field(name)
        if side is Side.CHARGEBEE and value is None:
            raw: Any = CHARGEBEE_CLEAR
        elif side is Side.CHARGEBEE:
            raw = CHARGEBEE_OUT[f.transform](value) if f.transform in CHARGEBEE_OUT else value
        else:
            raw = _crm_out(f, value)
        set_path(out, mapping.source_path(f, side), raw)
    return out


def timestamp(value: Any) -> float:
    """Unix seconds of a record's update time as either API returns it (seconds, or an ISO
    8601 string); 0.0 when absent or unreadable (an unknown time sorts oldest)."""
    if value is None or value == "":
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def side_record(mapping: FlowMapping, side: Side, raw: Mapping[str, Any], meta: Meta) -> SideRecord:
    """Build the engine's view of a raw API record."""
    version = raw.get(meta.version) if meta.version else None
    ext = raw.get(meta.external_ref) if meta.external_ref else None
    return SideRecord(
        side=side,
        id=str(raw[meta.id]),
        values=to_canonical(mapping, side, raw),
        updated_at=timestamp(raw.get(meta.updated_at)),
        version=None if version is None else str(version),
        deleted=bool(raw.get(meta.deleted)),
        external_ref=None if ext in (None, "") else str(ext),
        hints=hints(mapping, side, raw),
    )


#: A raw Chargebee record's key (and its hint's) saying why its fields could not be read:
#: a placeholder for a record known only by its id (see ``chargebee_events.iter_known``).
UNLEARNED = _UNLEARNED


def hints(mapping: FlowMapping, side: Side, raw: Mapping[str, Any]) -> dict[str, str]:
    """The values of ``raw`` that the mapping's hold reasons name (Chargebee records only)."""
    if side is not Side.CHARGEBEE:
        return {}
    out: dict[str, str] = {}
    if raw.get(UNLEARNED):
        out[UNLEARNED] = str(raw[UNLEARNED])
    for f in mapping.fields:
        for path in f.hint_paths:
            value = get_path(raw, path)
            if value is not None and value != "":
                out[path] = str(value)[:200]
    return out


def content_hash(values: Mapping[str, Canonical]) -> str:
    """Stable hash of canonical content: equal hashes mean nothing to sync."""
    blob = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def match_key(mapping: FlowMapping, values: Mapping[str, Canonical], rule: int = 0) -> str | None:
    """The value records are matched on before a create; None when any key is blank.

    ``rule`` 0 is ``match.keys``; 1.. are ``match.alternatives`` in order.
    With ``match.normalize`` (the default) keys compare case- and space-insensitively,
    so "Fjordlys AS " matches "fjordlys as" without changing either stored value.
    """
    parts = []
    for key in mapping.match.rules[rule]:
        v = values.get(key)
        if v is None:
            return None
        text = str(v)
        if text.startswith("\x00") or has_control_chars(text):
            # an unknown value, a wrong type or control characters: reported by validation,
            # never matched on (and PostgreSQL cannot store a NUL in the staged key)
            return None
        if mapping.match.normalize:
            text = " ".join(text.casefold().split())
        parts.append(text)
    key = "\x1f".join(parts)
    if len(key) > MATCH_KEY_MAX:
        # The link store keeps keys in a 512-character column (PostgreSQL refuses longer
        # ones and the extract failed): a longer key is kept as its digest, equal for equal keys.
        key = "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()
    return key


#: longest match key stored as it is (the link store's match_key columns are String(512))
MATCH_KEY_MAX = 512


def validate(
    mapping: FlowMapping,
    values: Mapping[str, Canonical],
    *,
    source: Side,
    target: Side,
    names: Iterable[str] | None = None,
    clearing: bool = False,
) -> list[Problem]:
    """Check values read on ``source`` before they are written to ``target``.

    The message names the field on the side where a person must fix it, the limit that
    is broken and what to do, e.g. ``Email: 'a@@b' is not a valid email address; fix
    it in Customcrm``. With ``clearing`` (the values are a merge's changes, so a None is
    a clear made on ``source``), a required field that was cleared says that ``target``
    cannot clear it and what a person can do instead.
    """
    problems: list[Problem] = []
    for name in names if names is not None else values.keys():
        f: FieldMap = mapping.field(name)
        value = values.get(name)
        fixer = _Fix(f, source)
        if value is None:
            why = _empty_problem(mapping, f, fixer, target, clearing) if f.required else None
        else:
            why = _value_problem(mapping, f, value, fixer)
        if why:
            problems.append(Problem(name, f"{mapping.source_path(f, source)}{why}"))
    return problems


class _Fix:
    """Where and how a person fixes a field read on ``source``: "fix it in Customcrm", or
    the field's own ``chargebee_fix`` for a value read in Chargebee."""

    def __init__(self, f: FieldMap, source: Side) -> None:
        self.f, self.source = f, source
        self.system = "Customcrm" if source is Side.CUSTOMCRM else "Chargebee"

    def __call__(self, verb: str) -> str:
        if self.source is Side.CHARGEBEE and self.f.chargebee_fix:
            return self.f.chargebee_fix
        return f"{verb} {self.system}"


def _empty_problem(mapping: FlowMapping, f: FieldMap, fix: _Fix, target: Side, clearing: bool) -> str:
    """A required field without a value (the text after the field's name)."""
    if not clearing:
        return f" is empty but required; {fix('fill it in')}"
    to_label = (
        f"Chargebee {mapping.chargebee.label} {f.chargebee}"
        if target is Side.CHARGEBEE
        else f"Customcrm {mapping.customcrm.label} {f.customcrm}"
    )
    return (
        f" was cleared in {fix.system}, but {to_label} cannot be cleared (it "
        f"always has a value); {fix('fill it in again in')}, or set "
        "empty_overwrites: false on the field to keep the other side's value"
    )


def _value_problem(mapping: FlowMapping, f: FieldMap, value: Canonical, fix: _Fix) -> str | None:
    """What is wrong with a present value (the text after the field's name), the first
    check that fails; None when it may be written."""
    if isinstance(value, str) and value.startswith(UNKNOWN_VALUE):
        allowed = ", ".join(repr(k) for k in (f.values or {}))
        return (
            f" has the unknown value {value[len(UNKNOWN_VALUE) :]!r}; "
            f"expected one of {allowed}; {fix('fix it in')} or extend the mapping's value map"
        )
    if isinstance(value, str) and value.startswith(WRONG_TYPE):
        kind = {"dict": "an object", "list": "a list", "bool": "a true/false value"}.get(
            value[len(WRONG_TYPE) :], "a non-text value"
        )
        return f" holds {kind}, not text; {fix('correct it in')}"
    why = check_transform(f.transform, value)
    if why:
        return f": {why}; {fix('fix it in')}"
    if has_control_chars(value):
        return f" contains control characters; {fix('remove them in')}"
    if f.max_length is not None and isinstance(value, str) and len(value) > f.max_length:
        return (
            f" is {len(value)} characters; Chargebee {mapping.chargebee.label} "
            f"{f.chargebee} allows at most {f.max_length}; {fix('shorten it in')}"
        )
    why = check_json_object(value) if f.transform == "json" else check_format(f.format, value)
    return f": {why}; {fix('fix it in')}" if why else None
