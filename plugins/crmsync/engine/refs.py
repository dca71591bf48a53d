"""Reference translation: fields holding another flow's record id. Pure: no I/O.

Such a field is compared in its Customcrm form: a Chargebee id is translated to the
Customcrm id it is linked to (through the links of the referenced flow) before the
merge, and a value written to Chargebee is translated back. A record whose required
reference is not linked yet waits, with a reason, and is retried by the next run: this
is how flows that depend on each other converge whatever order they run in.

The decisions live here, over :class:`KnownLinks` (the referenced flows' links as read
for a batch); ``flows/refs.py`` reads the links these functions name (``*_lookups``)
and calls them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from crmsync.engine.canonical import SideRecord
from crmsync.engine.merge import Note
from crmsync.engine.plan import NEEDS_A_PERSON, Action, Decision, LinkState, Op, ref_pending_reason, wait
from crmsync.engine.settle import PENDING_REFS
from crmsync.engine.status import HoldKind
from crmsync.mapping.model import FieldMap, Side
from crmsync.mapping.model import Mapping as FlowMapping
from crmsync.mapping.transforms import Canonical

#: (referenced flow, record id)
RefKey = tuple[str, str]


@dataclass(frozen=True)
class KnownLinks:
    """The partners the referenced flows' links give, as read for this batch: a Chargebee
    id → its Customcrm id, and back. An id absent or mapped to None is not linked."""

    cb_to_crm: Mapping[RefKey, str | None] = field(default_factory=dict)
    crm_to_cb: Mapping[RefKey, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Translated:
    """A Chargebee record with its references in Customcrm form (unlinked ones left out:
    unknown, never read as a clear), and why it is not fully synced."""

    record: SideRecord
    #: a required reference is not linked yet: the record waits
    hard: str | None = None
    #: an optional one is not: the record syncs its other fields and is held as ref-pending
    soft: str | None = None


def unresolved(f: FieldMap, cb_value: str, hints: Mapping[str, str]) -> str:
    """Why a Chargebee record's reference ``f`` has no Customcrm record, and what makes it
    resolve: another flow's next run, or (``ref_missing_fix``) a person, named with the
    record's own values (an order's owner: the user its ``created_by`` names)."""
    if f.ref_missing_fix:
        fix = f.ref_missing_fix
        for path in f.hint_paths:
            fix = fix.replace("{" + path + "}", repr(hints[path]) if path in hints else f"(no {path})")
        return f"its {f.customcrm} cannot be set: {fix}{NEEDS_A_PERSON}"
    return (
        f"its {f.name} (Chargebee {f.chargebee} {cb_value}) is not linked yet: flow {f.ref} links it when "
        "it runs (if it stays unlinked, that flow's run summary says why)"
    )


# --- which links a decision needs ------------------------------------------------------


def chargebee_lookups(mapping: FlowMapping, records: Iterable[SideRecord]) -> set[RefKey]:
    """The Chargebee ids the references of these records name (Customcrm records need none:
    their references are in Customcrm form already)."""
    return {
        (f.ref, str(value))
        for rec in records
        if rec.side is Side.CHARGEBEE
        for f in mapping.refs
        if f.ref and (value := rec.values.get(f.name)) is not None
    }


def pending_lookups(mapping: FlowMapping, state: LinkState) -> set[RefKey]:
    """The Chargebee ids a link's pending references name (see :func:`resolve_link`)."""
    refs = {f.name: f for f in mapping.refs}
    out: set[RefKey] = set()
    for values in (state.base, state.cb_snapshot):
        pending = values.get(PENDING_REFS)
        if isinstance(pending, dict):
            out |= {(f.ref, str(raw)) for name, raw in pending.items() if (f := refs.get(name)) and f.ref}
    return out


def customcrm_lookups(mapping: FlowMapping, changes: Mapping[str, Canonical]) -> set[RefKey]:
    """The Customcrm ids in changes bound for Chargebee that need a Chargebee id."""
    return {(f.ref, str(changes[f.name])) for f in mapping.refs if f.ref and changes.get(f.name) is not None}


# --- Chargebee → Customcrm -------------------------------------------------------------


def translate_record(mapping: FlowMapping, rec: SideRecord, links: KnownLinks) -> Translated:
    """A Chargebee record's references translated; why it waits (a required one is not
    linked) and why it is held as ref-pending (an optional one is not)."""
    if rec.side is not Side.CHARGEBEE or not mapping.refs:
        return Translated(rec)
    values = dict(rec.values)
    waits: list[str] = []
    soft: list[str] = []
    for f in mapping.refs:
        raw = values.get(f.name)
        if raw is None or not f.ref:
            continue
        crm_id = links.cb_to_crm.get((f.ref, str(raw)))
        if crm_id is None:
            (waits if f.ref_required else soft).append(unresolved(f, str(raw), rec.hints))
            # Not linked yet is unknown, not empty: the merge must not read it as a
            # clear of the Customcrm value (a contact's company, an order's owner).
            del values[f.name]
            continue
        values[f.name] = crm_id
    return Translated(replace(rec, values=values), "; ".join(waits) or None, "; ".join(soft) or None)


def pending_refs(
    mapping: FlowMapping, raw: Mapping[str, Canonical], translated: Mapping[str, Canonical]
) -> dict[str, str]:
    """The references of a record Chargebee returned that had no link to translate to."""
    return {
        f.name: str(raw[f.name])
        for f in mapping.refs
        if raw.get(f.name) is not None and translated.get(f.name) is None
    }


def resolve_link(mapping: FlowMapping, state: LinkState, links: KnownLinks) -> LinkState:
    """A link whose created record carried references not linked at the time, with
    those references translated now that their flow may have linked them.

    Why: a customer created from a company-less contact gets Chargebee's default
    business entity. When that entity was not linked yet, the link's base recorded
    no company; read later, once the entity is linked, the customer's entity would
    look like an edit made in Chargebee and fill the entity's company into the
    contact, so the outcome would depend on which DAG ran first. With the pending
    reference translated, the base holds what the created record held, as it does
    when the entity was linked first. Unresolved ones are left out (unknown: the merge
    never reads them as a clear); the marker itself never reaches the merge
    (update_links carries it forward).
    """
    if PENDING_REFS not in state.base and PENDING_REFS not in state.cb_snapshot:
        return state
    base = _resolve_pending(mapping, state.base, links, unknown=False)
    snapshot = _resolve_pending(mapping, state.cb_snapshot, links, unknown=True)
    return replace(state, base=base, cb_snapshot=snapshot)


def _resolve_pending(
    mapping: FlowMapping, values: Mapping[str, Canonical], links: KnownLinks, *, unknown: bool
) -> dict[str, Canonical]:
    """``values`` with pending references translated; one still not linked reads as
    blank in a base (nothing agreed) and, with ``unknown``, is left out of a snapshot
    (what Chargebee holds there is unknown: never read as a clear)."""
    out = dict(values)
    pending = out.pop(PENDING_REFS, None)
    if not isinstance(pending, dict):
        return out
    by_name = {f.name: f for f in mapping.refs}
    for name, raw in pending.items():
        f = by_name.get(name)
        if f is None or not f.ref or out.get(name) is not None:
            continue
        crm_id = links.cb_to_crm.get((f.ref, str(raw)))
        if crm_id is not None:
            out[name] = crm_id
        elif unknown:
            out.pop(name, None)
        else:
            out[name] = None
    return out


# --- Customcrm → Chargebee -------------------------------------------------------------


def to_chargebee(
    mapping: FlowMapping, changes: Mapping[str, Canonical], links: KnownLinks
) -> tuple[dict[str, Canonical], str | None]:
    """Customcrm ids in changes bound for Chargebee → Chargebee ids (or why not yet)."""
    out = dict(changes)
    waits = []
    for f in mapping.refs:
        if f.name not in changes or changes[f.name] is None or not f.ref:
            continue
        cb_id = links.crm_to_cb.get((f.ref, str(changes[f.name])))
        if cb_id is None:
            waits.append(
                f"its {f.customcrm} {changes[f.name]} is not linked to Chargebee yet: flow {f.ref} "
                "links it when it runs (if it stays unlinked, that flow's run summary says why)"
            )
        out[f.name] = cb_id
    return out, ("; ".join(waits) or None)


def decision_lookups(mapping: FlowMapping, d: Decision) -> set[RefKey]:
    """The Customcrm ids :func:`translate_decision` needs Chargebee ids for."""
    if d.cb_write is None or not mapping.refs:
        return set()
    return customcrm_lookups(mapping, d.cb_write.changes)


def translate_decision(
    mapping: FlowMapping, d: Decision, crm: SideRecord | None, links: KnownLinks
) -> Decision:
    """Ids bound for Chargebee become Chargebee ids; without a link yet, the source waits.

    A field sent only because Chargebee fixes it at creation (on_create) never holds the
    create back: without a link it is left out, Chargebee applies its default, and the
    Customcrm value is kept (update_links takes Chargebee's value as the base, so the
    next run does not copy the default over it).
    """
    if d.cb_write is None or not mapping.refs:
        return d
    changes = dict(d.cb_write.changes)
    notes = list(d.notes)
    fixed: dict[str, Canonical] = {}  # on_create fields, already translated
    if d.cb_write.op is Op.CREATE:
        for f in mapping.fields:
            if not (f.on_create and f.ref and changes.get(f.name) is not None):
                continue
            one, missing = to_chargebee(mapping, {f.name: changes.pop(f.name)}, links)
            if missing:
                notes.append(_created_with_default(mapping, f, d.crm_id, missing))
            else:
                fixed[f.name] = one[f.name]
    changes, why = to_chargebee(mapping, changes, links)
    changes.update(fixed)
    if why:
        source = crm or SideRecord(Side.CUSTOMCRM, d.crm_id or "?", {})
        return wait(mapping, source, why, other_id=d.cb_id)
    return replace(d, cb_write=replace(d.cb_write, changes=changes), notes=notes)


#: Actions after which nothing of the pair syncs: an optional reference has nothing to wait for.
NOTHING_SYNCS = frozenset({Action.UNLINK, Action.DELETE, Action.SKIP})


def hold_ref_pending(
    mapping: FlowMapping, d: Decision, cb_id: str, soft: str | None
) -> tuple[Decision, bool]:
    """The decision for a Chargebee record whose optional reference is not linked
    (``soft``: why): it syncs as decided and is also held as ref-pending, so the next run
    retries the reference without the record having to change. A decision that already
    holds the record keeps its own reason. Returns the decision and whether ``soft`` is
    settled (used, or moot because nothing syncs: it must not replace the reason).
    """
    if d.action in NOTHING_SYNCS:
        return d, True
    if soft is None or d.held_side is not None:
        return d, False
    held = replace(
        d,
        held_side=Side.CHARGEBEE,
        hold_kind=HoldKind.REF_PENDING,
        reason=ref_pending_reason(mapping, cb_id, soft),
    )
    return held, True


def _created_with_default(mapping: FlowMapping, f: FieldMap, crm_id: str | None, missing: str) -> Note:
    return Note(
        f.name,
        "created_with_default",
        Side.CHARGEBEE,
        f"Customcrm {mapping.customcrm.label} {crm_id}: {missing}, so the "
        f"Chargebee {mapping.chargebee.label} is created with Chargebee's default "
        f"{f.chargebee}, which it fixes at creation; the Customcrm value is kept",
    )


__all__ = [
    "NOTHING_SYNCS",
    "KnownLinks",
    "RefKey",
    "Translated",
    "chargebee_lookups",
    "customcrm_lookups",
    "decision_lookups",
    "hold_ref_pending",
    "pending_lookups",
    "pending_refs",
    "resolve_link",
    "to_chargebee",
    "translate_decision",
    "translate_record",
    "unresolved",
]
