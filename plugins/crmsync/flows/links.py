"""update_links: finished plan rows → links, quarantine and audit (one transaction per chunk).

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
from typing import Any

from sqlalchemy.engine import RowMapping

from crmsync.engine.assigned import ASSIGNED_ON_CREATE
from crmsync.engine.canonical import content_hash, match_key
from crmsync.engine.plan import Action, Op
from crmsync.engine.status import HoldKind, WriteStatus, hold_kind_of_write
from crmsync.flows.refs import PENDING_REFS
from crmsync.mapping.model import Cardinality, Side
from crmsync.mapping.model import Mapping as FlowMapping
from crmsync.store.repository import Repository, dumps, loads

#: Statuses of a side whose write, if any, landed (None: nothing to write there).
OK = {None, WriteStatus.DONE}


def _side_after(row: RowMapping, prefix: str, old: dict[str, Any] | None) -> dict[str, Any]:
    """Values, version and updated_at a side holds after this run."""
    result = loads(row[f"{prefix}_result"])
    if row[f"{prefix}_status"] == WriteStatus.DONE and result and "values" in result:
        return {
            "values": result["values"],
            "version": result.get("version"),
            "updated_at": result.get("updated_at"),
        }
    staged = loads(row[f"{prefix}_staged"])
    if staged:
        return {
            "values": staged["values"],
            "version": staged.get("version"),
            "updated_at": staged.get("updated_at"),
        }
    assert old is not None
    return old


def _pending_after(row: RowMapping, old: dict[str, str], values: dict[str, Any]) -> dict[str, str]:
    """References of the Chargebee record still waiting for their flow's link after this
    run: those a create's response carried untranslated, else those carried from before;
    a reference that now reads as a value is no longer pending."""
    result = loads(row["cb_result"]) or {}
    pending = result.get("pending_refs") if row["cb_status"] == WriteStatus.DONE and result else None
    return {k: v for k, v in (pending or old).items() if values.get(k) is None}


def _with_pending(values: dict[str, Any], pending: dict[str, str]) -> dict[str, Any]:
    return {**values, PENDING_REFS: pending} if pending else values


def _base_after(
    mapping: FlowMapping,
    row: RowMapping,
    merged: dict[str, Any],
    crm_values: dict[str, Any],
    cb_values: dict[str, Any],
    cb_pending: dict[str, str] | None = None,
    old_base: dict[str, Any] | None = None,
) -> dict[str, Any]:
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
    for prefix, side, values in (("crm", Side.CUSTOMCRM, crm_values), ("cb", Side.CHARGEBEE, cb_values)):
        if row[f"{prefix}_op"] != Op.CREATE or row[f"{prefix}_status"] != WriteStatus.DONE:
            continue
        sent = loads(row[f"{prefix}_changes"]) or {}
        for f in mapping.fields:
            if f.name not in sent and not f.direction.writes(side):
                base[f.name] = values.get(f.name)
                if side is Side.CHARGEBEE and f.name in (cb_pending or {}):
                    pending[f.name] = (cb_pending or {})[f.name]
    for name, raw in ((old_base or {}).get(PENDING_REFS) or {}).items():
        if name in (cb_pending or {}) and not mapping.field(name).direction.writes(Side.CHARGEBEE):
            # Chargebee is the source and still holds the reference not linked yet that the
            # base carries: that stays the base, whatever the merge kept on the Customcrm
            # side (a contact keeps its company while its customer's entity is unknown).
            # Taking the Customcrm value as the base made the entity, once linked, read as
            # an edit made in Chargebee, and its company was copied over the contact's own
            # (contact_customer run twice or more before customer_business_entity ran).
            base[name] = None
        if base.get(name) is None:
            pending.setdefault(name, raw)
    return _with_pending(base, pending)


def apply_plan_rows(mapping: FlowMapping, repo: Repository, run_id: str, rows: list[RowMapping]) -> None:
    upserts: list[dict[str, Any]] = []
    deletes: list[tuple[str, str]] = []
    hold: list[dict[str, Any]] = []
    release: list[tuple[str, str]] = []
    audits: list[dict[str, Any]] = []

    # The links this chunk updates, in one query (the chunk's writes are applied together
    # at the end, so every row sees the links as they were before the chunk).
    wanted = [
        row["cb_id"] or (loads(row["cb_result"]) or {}).get("id")
        for row in rows
        if row["link_id"] is not None or row["action"] == Action.RESTORE
    ]
    known = repo.get_links_by_cb_id([str(i) for i in wanted if i])
    for row in rows:
        action = row["action"]
        detail = loads(row["detail"]) or {}
        for c in detail.get("conflicts", []):
            audits.append(
                {
                    "kind": "conflict",
                    "crm_id": row["crm_id"],
                    "cb_id": row["cb_id"],
                    "field": c["field"],
                    "detail": dumps(c),
                }
            )
        for n in detail.get("notes", []):
            if n["kind"] in ("reverted_read_only", ASSIGNED_ON_CREATE):
                audits.append(
                    {
                        "kind": n["kind"],
                        "crm_id": row["crm_id"],
                        "cb_id": row["cb_id"],
                        "field": n["field"],
                        "detail": dumps(n),
                    }
                )

        if action in (Action.QUARANTINE, Action.WAIT):
            side = row["held_side"]
            staged = _held_record(row, detail)
            rid = row["crm_id"] if side == Side.CUSTOMCRM.value else row["cb_id"]
            hold.append(
                {
                    "side": side,
                    "record_id": rid,
                    "kind": row["hold_kind"] or HoldKind.WAITING,
                    "reason": row["reason"] or "",
                    "staged": staged,
                    "content_hash": content_hash(loads(staged)["values"]) if staged else None,
                }
            )
            continue
        if action == Action.SKIP:
            # Nothing to sync is the record's current state: a hold from an earlier run
            # (e.g. a user whose invalid Email was corrected, who has no order) is over.
            release.extend(
                (s.value, rid)
                for s, rid in ((Side.CUSTOMCRM, row["crm_id"]), (Side.CHARGEBEE, row["cb_id"]))
                if rid
            )
            continue
        if action == Action.UNLINK:
            deletes.append((row["crm_id"], row["cb_id"]))
            audits.append(
                {
                    "kind": "unlink",
                    "crm_id": row["crm_id"],
                    "cb_id": row["cb_id"],
                    "field": None,
                    "detail": dumps({"reason": row["reason"]}),
                }
            )
            continue
        if action == Action.DELETE:
            if row["crm_status"] in OK and row["cb_status"] in OK:
                deletes.append((row["crm_id"], row["cb_id"]))
                audits.append(
                    {
                        "kind": "delete",
                        "crm_id": row["crm_id"],
                        "cb_id": row["cb_id"],
                        "field": None,
                        "detail": dumps({"reason": row["reason"]}),
                    }
                )
            else:
                _hold_failed(row, hold)
            continue

        # create / restore / link_by_match / update / unchanged
        crm_result = loads(row["crm_result"]) or {}
        cb_result = loads(row["cb_result"]) or {}
        crm_id = row["crm_id"] or crm_result.get("id")
        cb_id = row["cb_id"] or cb_result.get("id")
        if not crm_id or not cb_id:
            _hold_failed(row, hold)  # a create failed: no link, the source is retried
            continue
        old = known.get(cb_id) if row["link_id"] is not None or action == Action.RESTORE else None
        if action == Action.RESTORE:
            old_link = repo.get_link(crm_id=row["crm_id"]) if row["crm_id"] else None
            if old_link is not None:
                deletes.append((old_link["crm_id"], old_link["cb_id"]))
            if old is not None:
                deletes.append((old["crm_id"], old["cb_id"]))
            old = None
        all_ok = row["crm_status"] in OK and row["cb_status"] in OK
        old_crm = old_cb = None
        old_pending: dict[str, str] = {}
        if old is not None:
            old_crm = {
                "values": json.loads(old["crm_snapshot"]),
                "version": old["crm_version"],
                "updated_at": old["crm_updated_at"],
            }
            old_cb_values = json.loads(old["cb_snapshot"])
            old_pending = old_cb_values.pop(PENDING_REFS, None) or {}
            old_cb = {
                "values": old_cb_values,
                "version": old["cb_version"],
                "updated_at": old["cb_updated_at"],
            }
        if old is None and detail.get("pending_refs"):
            # a new link whose Chargebee record this sync made in a run that never
            # recorded it: its untranslated references stay pending (transform._claimed_pairs)
            old_pending = dict(detail["pending_refs"])
        crm_now = _side_after(row, "crm", old_crm)
        cb_now = _side_after(row, "cb", old_cb)
        merged = loads(row["merged"]) or {}
        cb_pending = _pending_after(row, old_pending, cb_now["values"])
        if all_ok:
            old_base = json.loads(old["base"]) if old is not None else {PENDING_REFS: old_pending}
            base = _base_after(
                mapping, row, merged, crm_now["values"], cb_now["values"], cb_pending, old_base
            )
        elif old is not None:
            base = json.loads(old["base"])
        else:
            base = {}
        upserts.append(
            {
                "crm_id": crm_id,
                "crm_slot": cb_id if mapping.cardinality is Cardinality.ONE_TO_MANY else "",
                "cb_id": cb_id,
                "match_key": match_key(mapping, merged or crm_now["values"]),
                "base": dumps(base),
                "crm_snapshot": dumps(crm_now["values"]),
                "cb_snapshot": dumps(_with_pending(cb_now["values"], cb_pending)),
                "base_hash": content_hash(base),
                "crm_version": None if crm_now["version"] is None else str(crm_now["version"]),
                "cb_version": None if cb_now["version"] is None else str(cb_now["version"]),
                "crm_updated_at": crm_now["updated_at"] or 0.0,
                "cb_updated_at": cb_now["updated_at"] or 0.0,
            }
        )
        if all_ok:
            release.extend(
                [
                    (s.value, rid)
                    for s, rid in ((Side.CUSTOMCRM, crm_id), (Side.CHARGEBEE, cb_id))
                    if row["held_side"] != s.value
                ]
            )
        else:
            _hold_failed(row, hold)
        if row["held_side"]:  # synced, but a reference still waits: retried next run
            side = row["held_side"]
            # Keep what the side holds *now* (after this run's writes), with the
            # untranslated reference ids of the staged record: a retry from the staged
            # copy alone would re-apply values this run has just replaced.
            now_side = crm_now if side == Side.CUSTOMCRM.value else cb_now
            raw = loads(_held_record(row, detail)) or {}
            values = dict(now_side["values"])
            for f in mapping.refs:
                if f.name in raw.get("values", {}):
                    values[f.name] = raw["values"][f.name]
            staged = dumps(
                {
                    **raw,
                    "values": values,
                    "version": now_side["version"],
                    "updated_at": now_side["updated_at"] or 0.0,
                }
            )
            hold.append(
                {
                    "side": side,
                    "record_id": crm_id if side == Side.CUSTOMCRM.value else cb_id,
                    "kind": row["hold_kind"] or HoldKind.WAITING,
                    "reason": row["reason"] or "",
                    "staged": staged,
                    "content_hash": content_hash(loads(staged)["values"]) if staged else None,
                }
            )
    repo.apply(
        run_id,
        [r["id"] for r in rows],
        upsert_links=upserts,
        delete_links=deletes,
        hold=hold,
        release=release,
        audits=audits,
    )


def _held_record(row: RowMapping, detail: dict[str, Any]) -> str | None:
    """The record to keep for a retry: as staged, before references were translated."""
    if detail.get("held_record"):
        return dumps(detail["held_record"])
    staged: str | None = row["crm_staged"] if row["held_side"] == Side.CUSTOMCRM.value else row["cb_staged"]
    return staged


def _hold_failed(row: RowMapping, hold: list[dict[str, Any]]) -> None:
    """Hold the record whose data a failed write carried (stale writes need no hold)."""
    for prefix, target in (("crm", Side.CUSTOMCRM), ("cb", Side.CHARGEBEE)):
        status = row[f"{prefix}_status"]
        if status in OK or status == WriteStatus.STALE:
            continue
        source = target.other
        src_prefix = "crm" if source is Side.CUSTOMCRM else "cb"
        staged = row[f"{src_prefix}_staged"]
        rid = row[f"{src_prefix}_id"]
        if rid is None:
            continue
        error = row[f"{prefix}_error"] or f"write to {target.value} {status}"
        hold.append(
            {
                "side": source.value,
                "record_id": rid,
                "kind": hold_kind_of_write(status),
                # the held record is named (an update's error names the record written)
                "reason": error if rid in error else f"{source.value} record {rid}: {error}",
                "staged": staged,
                "content_hash": content_hash(loads(staged)["values"]) if staged else None,
            }
        )
