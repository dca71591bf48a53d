"""Settle: what a link, quarantine entry and audit row become after a plan row's writes.

Pure: no I/O. ``flows/links.py`` reads a chunk of finished plan rows and the links they
touch, converts them to :class:`FinishedRow` and :class:`CurrentLink`, calls
:func:`settle`, and hands the :class:`Settlement` to the link store in one transaction.

The rules, per pair:

* every planned write done → the link's base becomes the merged record, and each
  side's snapshot becomes what that side now holds (the write's response, or the
  staged record when nothing was written there);
* a write failed or went stale → the base stays as it was (so the next run's merge
  still sees the unsynced edit), the sides that did change get new snapshots, and the
  source record is held with the reason; a create that failed makes no link;
* a record held by the plan (invalid, ambiguous, waiting) goes to quarantine with its
  staged data, so it can be retried without an API call and repaired by a person.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crmsync.engine.assigned import ASSIGNED_ON_CREATE
from crmsync.engine.canonical import content_hash, match_key
from crmsync.engine.plan import Action, Op
from crmsync.engine.status import HoldKind, WriteStatus, hold_kind_of_write
from crmsync.mapping.model import Cardinality, Side
from crmsync.mapping.model import Mapping as FlowMapping

#: Key, in a link's stored base and Chargebee snapshot, of the references that Chargebee
#: set on a record the sync created but that were not linked yet: ``{field: Chargebee id}``.
#: Not a field name (field names start with a letter); never reaches the merge.
#: (flows/refs.py reads and writes it too, from here.)
PENDING_REFS = "~pending_refs"

#: Statuses of a side whose write, if any, landed (None: nothing to write there).
OK = frozenset({None, WriteStatus.DONE})

Json = dict[str, Any]


def dumps(value: Any) -> str:
    """JSON as the link store writes it (``crmsync.store.codec.dumps``: same settings)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


# --- input ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SideWrite:
    """One side of a finished plan row (``crm_*`` or ``cb_*`` columns, JSON decoded
    except ``staged``, which a hold keeps exactly as stored)."""

    id: str | None = None
    op: Op | None = None
    status: WriteStatus | None = None
    result: Json | None = None
    staged: str | None = None
    changes: Json | None = None
    error: str | None = None


@dataclass(frozen=True)
class FinishedRow:
    """The fields of a finished plan row that settle reads."""

    id: int
    action: Action
    crm: SideWrite
    cb: SideWrite
    link_id: int | None = None
    held_side: str | None = None
    hold_kind: HoldKind | None = None
    reason: str | None = None
    detail: Json = field(default_factory=dict)
    merged: Json = field(default_factory=dict)

    def side(self, side: Side) -> SideWrite:
        return self.crm if side is Side.CUSTOMCRM else self.cb


@dataclass(frozen=True)
class CurrentLink:
    """A link as the store holds it before the chunk (JSON columns decoded)."""

    crm_id: str
    cb_id: str
    base: Json
    crm_snapshot: Json
    cb_snapshot: Json
    crm_version: str | None = None
    cb_version: str | None = None
    crm_updated_at: float = 0.0
    cb_updated_at: float = 0.0


# --- output --------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkUpsert:
    crm_id: str
    crm_slot: str
    cb_id: str
    match_key: str | None
    base: str
    crm_snapshot: str
    cb_snapshot: str
    base_hash: str
    crm_version: str | None
    cb_version: str | None
    crm_updated_at: float
    cb_updated_at: float


@dataclass(frozen=True)
class Hold:
    side: str | None
    record_id: str | None
    kind: HoldKind
    reason: str
    staged: str | None
    content_hash: str | None


@dataclass(frozen=True)
class AuditRow:
    kind: str
    crm_id: str | None
    cb_id: str | None
    field: str | None
    detail: str


@dataclass
class Settlement:
    """What the link store does for a chunk, in order (``Repository.apply``)."""

    upserts: list[LinkUpsert] = field(default_factory=list)
    deletes: list[tuple[str | None, str | None]] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)
    releases: list[tuple[str, str]] = field(default_factory=list)
    audits: list[AuditRow] = field(default_factory=list)


@dataclass(frozen=True)
class _SideNow:
    values: Json
    version: Any
    updated_at: float | None


# --- what to read --------------------------------------------------------------------


def _reads_link(row: FinishedRow) -> bool:
    return row.link_id is not None or row.action == Action.RESTORE


def links_to_read(rows: Sequence[FinishedRow]) -> list[str]:
    """Chargebee ids of the links this chunk updates (read before the chunk applies)."""
    wanted = [row.cb.id or (row.cb.result or {}).get("id") for row in rows if _reads_link(row)]
    return [str(i) for i in wanted if i]


def restores_to_read(rows: Sequence[FinishedRow]) -> list[str]:
    """Customcrm ids whose current link a restore replaces."""
    return [row.crm.id for row in rows if row.action == Action.RESTORE and row.crm.id]


# --- settle --------------------------------------------------------------------------


def settle(
    mapping: FlowMapping,
    rows: Sequence[FinishedRow],
    by_cb_id: Mapping[str, CurrentLink],
    by_crm_id: Mapping[str, CurrentLink] | None = None,
) -> Settlement:
    """Settle a chunk: every row sees the links as they were before the chunk
    (``by_cb_id`` for :func:`links_to_read`, ``by_crm_id`` for :func:`restores_to_read`)."""
    out = Settlement()
    for row in rows:
        _settle_row(mapping, row, by_cb_id, by_crm_id or {}, out)
    return out


def _settle_row(
    mapping: FlowMapping,
    row: FinishedRow,
    by_cb_id: Mapping[str, CurrentLink],
    by_crm_id: Mapping[str, CurrentLink],
    out: Settlement,
) -> None:
    out.audits.extend(_plan_audits(row))
    action = row.action
    if action in (Action.QUARANTINE, Action.WAIT):
        rid = row.crm.id if row.held_side == Side.CUSTOMCRM.value else row.cb.id
        out.holds.append(_hold(row.held_side, rid, row, held_record(row)))
    elif action == Action.SKIP:
        # Nothing to sync is the record's current state: a hold from an earlier run
        # (e.g. a user whose invalid Email was corrected, who has no order) is over.
        out.releases.extend(
            (s.value, rid) for s, rid in ((Side.CUSTOMCRM, row.crm.id), (Side.CHARGEBEE, row.cb.id)) if rid
        )
    elif action == Action.UNLINK:
        out.deletes.append((row.crm.id, row.cb.id))
        out.audits.append(_audit("unlink", row))
        out.releases.extend(_decided_releases(row))
    elif action == Action.DELETE:
        if row.crm.status in OK and row.cb.status in OK:
            out.deletes.append((row.crm.id, row.cb.id))
            out.audits.append(_audit("delete", row))
            out.releases.extend(_decided_releases(row))
        elif not row.detail.get("decided_by"):
            out.holds.extend(failed_holds(row))
        # else: an approved delete whose write failed is not held as failed (that would
        # overwrite the decision): its row stays approved and the next run tries again
    else:  # create / restore / link_by_match / update / unchanged
        _settle_pair(mapping, row, by_cb_id, by_crm_id, out)


def _plan_audits(row: FinishedRow) -> list[AuditRow]:
    """The plan's conflicts and the notes a person should see (read-only reverts,
    values the created record's system assigned)."""
    audits = [
        AuditRow("conflict", row.crm.id, row.cb.id, c["field"], dumps(c))
        for c in row.detail.get("conflicts", [])
    ]
    audits.extend(
        AuditRow(n["kind"], row.crm.id, row.cb.id, n["field"], dumps(n))
        for n in row.detail.get("notes", [])
        if n["kind"] in ("reverted_read_only", ASSIGNED_ON_CREATE)
    )
    return audits


def _audit(kind: str, row: FinishedRow) -> AuditRow:
    """The audit row of an ended pair: the reason for people, and for the sync the sides
    whose record was deleted (``deleted_on``, from the plan's Decision: the extract reads
    it to keep a handled Chargebee delete from coming back, flows/extract.py)."""
    detail: Json = {"reason": row.reason}
    if row.detail.get("deleted_on"):
        detail["deleted_on"] = list(row.detail["deleted_on"])
    decided_by = row.detail.get("decided_by")
    if decided_by:
        # a delete held under policy approve, carried out as a person decided
        detail["approved_by" if kind == "delete" else "rejected_by"] = decided_by
    return AuditRow(kind, row.crm.id, row.cb.id, None, dumps(detail))


def _decided_releases(row: FinishedRow) -> list[tuple[str, str]]:
    """The held delete a person decided is over once carried out: its quarantine row
    (on either record of the pair; it is keyed by the deleted one) goes."""
    if not row.detail.get("decided_by"):
        return []
    return [(s.value, rid) for s, rid in ((Side.CUSTOMCRM, row.crm.id), (Side.CHARGEBEE, row.cb.id)) if rid]


def _hold(side: str | None, rid: str | None, row: FinishedRow, staged: str | None) -> Hold:
    return Hold(
        side=side,
        record_id=rid,
        kind=row.hold_kind or HoldKind.WAITING,
        reason=row.reason or "",
        staged=staged,
        content_hash=content_hash(json.loads(staged)["values"]) if staged else None,
    )


def _settle_pair(
    mapping: FlowMapping,
    row: FinishedRow,
    by_cb_id: Mapping[str, CurrentLink],
    by_crm_id: Mapping[str, CurrentLink],
    out: Settlement,
) -> None:
    """The link of a pair whose writes finished (or the holds of the writes that failed)."""
    crm_id = row.crm.id or (row.crm.result or {}).get("id")
    cb_id = row.cb.id or (row.cb.result or {}).get("id")
    if not crm_id or not cb_id:
        out.holds.extend(failed_holds(row))  # a create failed: no link, the source is retried
        return
    old = _previous_link(row, by_cb_id, by_crm_id, out)
    all_ok = row.crm.status in OK and row.cb.status in OK
    old_crm, old_cb, old_pending = _old_sides(row, old)
    crm_now = _side_after(row.crm, old_crm)
    cb_now = _side_after(row.cb, old_cb)
    cb_pending = pending_after(row.cb, old_pending, cb_now.values)
    if all_ok:
        old_base = dict(old.base) if old is not None else {PENDING_REFS: old_pending}
        base = base_after(
            mapping, row.crm, row.cb, row.merged, crm_now.values, cb_now.values, cb_pending, old_base
        )
    else:
        base = dict(old.base) if old is not None else {}
    out.upserts.append(
        LinkUpsert(
            crm_id=crm_id,
            crm_slot=cb_id if mapping.cardinality is Cardinality.ONE_TO_MANY else "",
            cb_id=cb_id,
            match_key=match_key(mapping, row.merged or crm_now.values),
            base=dumps(base),
            crm_snapshot=dumps(crm_now.values),
            cb_snapshot=dumps(with_pending(cb_now.values, cb_pending)),
            base_hash=content_hash(base),
            crm_version=None if crm_now.version is None else str(crm_now.version),
            cb_version=None if cb_now.version is None else str(cb_now.version),
            crm_updated_at=crm_now.updated_at or 0.0,
            cb_updated_at=cb_now.updated_at or 0.0,
        )
    )
    if all_ok:
        out.releases.extend(
            (s.value, rid)
            for s, rid in ((Side.CUSTOMCRM, crm_id), (Side.CHARGEBEE, cb_id))
            if row.held_side != s.value
        )
    else:
        out.holds.extend(failed_holds(row))
    if row.held_side:  # synced, but a reference still waits: retried next run
        out.holds.append(_waiting_hold(mapping, row, crm_id, cb_id, crm_now, cb_now))


def _previous_link(
    row: FinishedRow,
    by_cb_id: Mapping[str, CurrentLink],
    by_crm_id: Mapping[str, CurrentLink],
    out: Settlement,
) -> CurrentLink | None:
    """The link the pair had, if the row reads one; a restore ends the links both
    records had (a re-created record starts a new link)."""
    cb_id = row.cb.id or (row.cb.result or {}).get("id")
    old = by_cb_id.get(cb_id) if cb_id and _reads_link(row) else None
    if row.action != Action.RESTORE:
        return old
    old_link = by_crm_id.get(row.crm.id) if row.crm.id else None
    if old_link is not None:
        out.deletes.append((old_link.crm_id, old_link.cb_id))
    if old is not None:
        out.deletes.append((old.crm_id, old.cb_id))
    return None


def _old_sides(
    row: FinishedRow, old: CurrentLink | None
) -> tuple[_SideNow | None, _SideNow | None, dict[str, str]]:
    """Each side as the link last saw it, and the references still pending on it."""
    if old is None:
        # a new link whose Chargebee record this sync made in a run that never recorded
        # it: its untranslated references stay pending (transform._claimed_pairs)
        return None, None, dict(row.detail.get("pending_refs") or {})
    old_cb_values = dict(old.cb_snapshot)
    old_pending = old_cb_values.pop(PENDING_REFS, None) or {}
    old_crm = _SideNow(dict(old.crm_snapshot), old.crm_version, old.crm_updated_at)
    return old_crm, _SideNow(old_cb_values, old.cb_version, old.cb_updated_at), old_pending


def _waiting_hold(
    mapping: FlowMapping, row: FinishedRow, crm_id: str, cb_id: str, crm_now: _SideNow, cb_now: _SideNow
) -> Hold:
    """The hold of a synced record whose reference still waits.

    Keeps what the side holds *now* (after this run's writes), with the untranslated
    reference ids of the staged record: a retry from the staged copy alone would re-apply
    values this run has just replaced.
    """
    side = row.held_side
    now_side = crm_now if side == Side.CUSTOMCRM.value else cb_now
    held = held_record(row)
    raw = (json.loads(held) if held is not None else None) or {}
    values = dict(now_side.values)
    for f in mapping.refs:
        if f.name in raw.get("values", {}):
            values[f.name] = raw["values"][f.name]
    staged = dumps(
        {**raw, "values": values, "version": now_side.version, "updated_at": now_side.updated_at or 0.0}
    )
    return _hold(side, crm_id if side == Side.CUSTOMCRM.value else cb_id, row, staged)


def _side_after(write: SideWrite, old: _SideNow | None) -> _SideNow:
    """Values, version and updated_at a side holds after this run."""
    result = write.result
    if write.status == WriteStatus.DONE and result and "values" in result:
        return _SideNow(result["values"], result.get("version"), result.get("updated_at"))
    staged = json.loads(write.staged) if write.staged is not None else None
    if staged:
        return _SideNow(staged["values"], staged.get("version"), staged.get("updated_at"))
    assert old is not None
    return old


def pending_after(cb: SideWrite, old: Mapping[str, str], values: Mapping[str, Any]) -> dict[str, str]:
    """References of the Chargebee record still waiting for their flow's link after this
    run: those a create's response carried untranslated, else those carried from before;
    a reference that now reads as a value is no longer pending."""
    result = cb.result or {}
    pending = result.get("pending_refs") if cb.status == WriteStatus.DONE and result else None
    return {k: v for k, v in (pending or old).items() if values.get(k) is None}


def with_pending(values: Json, pending: Mapping[str, str]) -> Json:
    return {**values, PENDING_REFS: dict(pending)} if pending else values


def base_after(
    mapping: FlowMapping,
    crm: SideWrite,
    cb: SideWrite,
    merged: Mapping[str, Any],
    crm_values: Mapping[str, Any],
    cb_values: Mapping[str, Any],
    cb_pending: Mapping[str, str] | None = None,
    old_base: Mapping[str, Any] | None = None,
) -> Json:
    """The base a finished pair agrees on: the merged record, except where a create let
    the new record's side choose.

    A create carries only the fields that flow into that side; for a field that does not
    (a customer's business entity, which Chargebee assigns by default), the created
    record's own value is what both sides start from. Otherwise the next run would read
    Chargebee's default as an edit made in Chargebee and copy it over the Customcrm value.
    Such a value that is a reference not linked yet (Chargebee's default entity before
    customer_business_entity first ran) is kept as pending (``refs.resolve_link``), and
    so is one still pending from an earlier run while the merge saw it blank.
    """
    base = dict(merged)
    pending: dict[str, str] = {}
    cb_pending = cb_pending or {}
    for write, side, values in ((crm, Side.CUSTOMCRM, crm_values), (cb, Side.CHARGEBEE, cb_values)):
        if write.op != Op.CREATE or write.status != WriteStatus.DONE:
            continue
        sent = write.changes or {}
        for f in mapping.fields:
            if f.name not in sent and not f.direction.writes(side):
                base[f.name] = values.get(f.name)
                if side is Side.CHARGEBEE and f.name in cb_pending:
                    pending[f.name] = cb_pending[f.name]
    for name, raw in ((old_base or {}).get(PENDING_REFS) or {}).items():
        if name in cb_pending and not mapping.field(name).direction.writes(Side.CHARGEBEE):
            # Chargebee is the source and still holds the reference not linked yet that the
            # base carries: that stays the base, whatever the merge kept on the Customcrm
            # side (a contact keeps its company while its customer's entity is unknown).
            # Taking the Customcrm value as the base made the entity, once linked, read as
            # an edit made in Chargebee, and its company was copied over the contact's own
            # (contact_customer run twice or more before customer_business_entity ran).
            base[name] = None
        if base.get(name) is None:
            pending.setdefault(name, raw)
    return with_pending(base, pending)


def held_record(row: FinishedRow) -> str | None:
    """The record to keep for a retry: as staged, before references were translated."""
    if row.detail.get("held_record"):
        return dumps(row.detail["held_record"])
    return row.crm.staged if row.held_side == Side.CUSTOMCRM.value else row.cb.staged


def failed_holds(row: FinishedRow) -> list[Hold]:
    """Hold the record whose data a failed write carried (stale writes need no hold)."""
    holds: list[Hold] = []
    for target in (Side.CUSTOMCRM, Side.CHARGEBEE):
        write = row.side(target)
        if write.status in OK or write.status == WriteStatus.STALE:
            continue
        source = target.other
        src = row.side(source)
        rid = src.id
        if rid is None:
            continue
        error = write.error or f"write to {target.value} {write.status}"
        holds.append(
            Hold(
                side=source.value,
                record_id=rid,
                kind=hold_kind_of_write(str(write.status)),
                # the held record is named (an update's error names the record written)
                reason=error if rid in error else f"{source.value} record {rid}: {error}",
                staged=src.staged,
                content_hash=content_hash(json.loads(src.staged)["values"]) if src.staged else None,
            )
        )
    return holds
