"""A plan row as a person reads it: what would be created, changed (old → new), deleted
or linked, on which side, and why. Pure: no I/O.

A dry run (the ``dry_run`` Param) stops after transform, and its counts alone
(``updated: 1``) do not let anyone check a plan before it is written. These lines do:
one per write, field by field, in the target system's own field names, e.g.

    update Chargebee customer crm-42 (⇄ Customcrm contact 42): email 'a@x.example' → 'b@x.example'
    create Customcrm contact for Chargebee customer AzZ1: Email='c@x.example', FirstName='Cy'
    link Customcrm contact 7 ⇄ Chargebee customer AzZ2 (match on email)
    wait Customcrm order ORD-4: InvoiceId is empty: ...

Values are shown as the plan would write them (canonical form), shortened to
:data:`VALUE_MAX` characters: the plan is the customer data the run would write, so the
task log of a dry run holds it, as the two systems do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from crmsync.mapping.model import Mapping as FlowMapping
from crmsync.mapping.model import Side

#: longest value shown; the rest is cut with "…"
VALUE_MAX = 60


class PlanView(TypedDict):
    """What rendering needs of a plan row (decoded JSON, no database types)."""

    action: str
    crm_id: str | None
    cb_id: str | None
    crm_op: str | None
    cb_op: str | None
    crm_changes: Mapping[str, Any] | None
    cb_changes: Mapping[str, Any] | None
    #: the target side's values before the write (its staged record), per canonical field
    crm_before: Mapping[str, Any] | None
    cb_before: Mapping[str, Any] | None
    reason: str | None
    match_key: str | None


def show(value: Any) -> str:
    """A value as a person reads it: quoted text, shortened; ``(blank)`` for nothing."""
    if value is None or value == "":
        return "(blank)"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= VALUE_MAX else text[: VALUE_MAX - 1] + "…"


def _label(mapping: FlowMapping, side: Side) -> str:
    spec = mapping.side(side)
    return f"{'Customcrm' if side is Side.CUSTOMCRM else 'Chargebee'} {spec.label}"


def _name(mapping: FlowMapping, field: str, side: Side) -> str:
    """The field as the target system calls it (``Email``, ``billing_address.city``)."""
    try:
        return mapping.source_path(mapping.field(field), side) or field
    except KeyError:
        return field


def _changes(
    mapping: FlowMapping, side: Side, changes: Mapping[str, Any], before: Mapping[str, Any] | None, op: str
) -> str:
    names = sorted(changes)
    if op == "create" or before is None:
        return ", ".join(f"{_name(mapping, k, side)}={show(changes[k])}" for k in names)
    return "; ".join(f"{_name(mapping, k, side)} {show(before.get(k))} → {show(changes[k])}" for k in names)


def _write_line(mapping: FlowMapping, row: PlanView, side: Side) -> str | None:
    op = row["crm_op"] if side is Side.CUSTOMCRM else row["cb_op"]
    if not op:
        return None
    changes = (row["crm_changes"] if side is Side.CUSTOMCRM else row["cb_changes"]) or {}
    before = row["crm_before"] if side is Side.CUSTOMCRM else row["cb_before"]
    target_id = row["crm_id"] if side is Side.CUSTOMCRM else row["cb_id"]
    source_id = row["cb_id"] if side is Side.CUSTOMCRM else row["crm_id"]
    target, source = _label(mapping, side), _label(mapping, side.other)
    if op == "create":
        what = f"create {target} for {source} {source_id}"
        if target_id:  # a deterministic id (crm-42) or a restore
            what += f" (id {target_id})"
        return f"{what}: {_changes(mapping, side, changes, None, op)}" if changes else what
    if op == "delete":
        return f"delete {target} {target_id} (its {source} {source_id} was deleted)"
    pair = f"{target} {target_id} (⇄ {source} {source_id})"
    if not changes:
        return f"{op} {pair}"
    return f"{op} {pair}: {_changes(mapping, side, changes, before, op)}"


def describe(mapping: FlowMapping, row: PlanView) -> list[str]:
    """The lines of one plan row: one per side written, else one for the decision.

    ``unchanged`` rows give no line (a dry run lists what would happen).
    """
    action = row["action"]
    lines = [line for side in Side if (line := _write_line(mapping, row, side))]
    crm, cb = _label(mapping, Side.CUSTOMCRM), _label(mapping, Side.CHARGEBEE)
    if action == "link_by_match":
        key = f" (match on {row['match_key']})" if row["match_key"] else " (match)"
        lines.insert(0, f"link {crm} {row['crm_id']} ⇄ {cb} {row['cb_id']}{key}")
    elif action == "unlink":
        lines.insert(0, f"unlink {crm} {row['crm_id']} ⇄ {cb} {row['cb_id']}: {row['reason'] or 'deleted'}")
    elif action in ("wait", "quarantine", "skip") and not lines:
        ids = " ⇄ ".join(f"{label} {rid}" for label, rid in ((crm, row["crm_id"]), (cb, row["cb_id"])) if rid)
        why = f": {row['reason']}" if row["reason"] else ""
        lines.append(f"{'hold' if action == 'quarantine' else action} {ids}{why}")
    return lines
