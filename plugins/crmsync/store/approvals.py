"""Deletes held for a person's decision (delete policy ``approve``): list, decide, read back.

A delete under policy ``approve`` is held as a quarantine row of kind ``approval`` on the
*deleted* record (its side and id; its staged copy is the tombstone, so every run stages
it again and plans the held delete again, and an undelete, read live, releases it). A
decision needs no schema change: it turns the row's kind into ``approved`` or
``declined`` (:class:`~crmsync.engine.status.HoldKind` members: the kind *is* the
decision) and records who decided (and when) in the staged record's hints and, for
people, in the reason. The next run reads it (:func:`decisions`) and plans the delete
as ``propagate`` (approved) or ``unlink`` (rejected); ``update_links`` then removes the row.

The Sync page calls :func:`decide_delete`; a person without the page can too::

    from crmsync.store.approvals import decide_delete
    decide_delete(engine, "contact_customer", "customcrm", "CON-42", approve=True, by="alice")
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, delete, exists, or_, select, update
from sqlalchemy.engine import Connection, Engine

from crmsync.engine.canonical import SideRecord, content_hash
from crmsync.engine.plan import DeleteDecision
from crmsync.engine.status import APPROVAL_KINDS, HoldKind
from crmsync.mapping.model import DeletePolicy, Side
from crmsync.mapping.model import Mapping as FlowMapping
from crmsync.store.codec import chunks, dumps, now, record_from_json
from crmsync.store.schema import link, quarantine, staging
from crmsync.store.staging import LinkedPair, StagingStore

#: Quarantine kinds of a held delete: waiting for a decision, approved, rejected (the
#: decision is the kind; the reason only tells a person).
PENDING = HoldKind.APPROVAL
APPROVED = HoldKind.APPROVED
DECLINED = HoldKind.DECLINED
KINDS = APPROVAL_KINDS

#: Keys, in the held record's hints, of who decided and when (not field paths: "~").
DECIDED_BY = "~decided_by"
DECIDED_AT = "~decided_at"


@dataclass(frozen=True)
class HeldDelete:
    """One delete waiting for a decision, as the Sync page lists it."""

    flow: str
    side: str  # the side whose record was deleted
    record_id: str
    reason: str  # what was deleted, what would be deleted on the other side, and the fix
    attempts: int
    first_seen: datetime
    last_seen: datetime


def decide_delete(engine: Engine, flow: str, side: str, record_id: str, approve: bool, by: str) -> bool:
    """Record a person's decision on the delete held for ``side``'s record ``record_id``
    (the deleted record): True when a pending approval was found and decided.

    Only a pending row is decided (a second decision, or one for a delete no longer held,
    returns False): the update is conditional on the kind, so two people deciding at
    once cannot both win. The next run carries the decision out.
    """
    by = " ".join(str(by).split())
    if not by:
        raise ValueError("decide_delete needs `by`: the person who decides (the audit names them)")
    Side(side)  # a typo must not silently decide nothing
    key = and_(
        quarantine.c.flow == flow,
        quarantine.c.side == side,
        quarantine.c.record_id == record_id,
        quarantine.c.kind == PENDING,
    )
    with engine.begin() as conn:
        row = conn.execute(select(quarantine.c.staged, quarantine.c.reason).where(key)).first()
        if row is None:
            return False
        at = now().isoformat(timespec="seconds")
        verb, then = (
            ("approved", "deletes the linked record")
            if approve
            else ("rejected", "ends the link and keeps the linked record")
        )
        values = {
            "kind": APPROVED if approve else DECLINED,
            "reason": f"delete {verb} by {by} at {at}; the next run {then} (held: {row.reason})",
            "staged": _with_decider(row.staged, by, at),
        }
        return bool(conn.execute(update(quarantine).where(key).values(**values)).rowcount)


def _with_decider(staged: str | None, by: str, at: str) -> str | None:
    if staged is None:
        return None
    data = json.loads(staged)
    data["hints"] = {**(data.get("hints") or {}), DECIDED_BY: by, DECIDED_AT: at}
    return dumps(data)


def pending_approvals(engine: Engine, flow: str | None = None) -> list[HeldDelete]:
    """Deletes waiting for a decision (of one flow, or of all), oldest first."""
    cond = [quarantine.c.kind == PENDING]
    if flow is not None:
        cond.append(quarantine.c.flow == flow)
    with engine.connect() as conn:
        rows = conn.execute(
            select(quarantine).where(*cond).order_by(quarantine.c.first_seen, quarantine.c.record_id)
        ).mappings()
        return [
            HeldDelete(
                r["flow"],
                r["side"],
                r["record_id"],
                r["reason"],
                r["attempts"],
                r["first_seen"],
                r["last_seen"],
            )
            for r in rows
        ]


def count_pending(engine: Engine, flow: str) -> int:
    """How many deletes of ``flow`` wait for a decision (the run summary says it)."""
    return len(pending_approvals(engine, flow))


def decisions(
    engine: Engine, flow: str, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], DeleteDecision]:
    """The decisions recorded for these deleted records ``(side, record_id)``; a record
    with no decision yet (or no held delete) is absent."""
    out: dict[tuple[str, str], DeleteDecision] = {}
    wanted = sorted(set(keys))
    with engine.connect() as conn:
        for side in {s for s, _ in wanted}:
            for chunk in chunks([rid for s, rid in wanted if s == side]):
                for rid, kind, staged in conn.execute(
                    select(quarantine.c.record_id, quarantine.c.kind, quarantine.c.staged).where(
                        quarantine.c.flow == flow,
                        quarantine.c.side == side,
                        quarantine.c.kind.in_((APPROVED, DECLINED)),
                        quarantine.c.record_id.in_(chunk),
                    )
                ):
                    out[(side, rid)] = DeleteDecision(kind == APPROVED, _decider(staged))
    return out


def _decider(staged: str | None) -> str:
    hints = (json.loads(staged).get("hints") or {}) if staged else {}
    return str(hints.get(DECIDED_BY) or "(unknown)")


def carry_approvals(
    engine: Engine, flow: str, run_id: str, match_key_of: Callable[[SideRecord], str | None]
) -> int:
    """Stage the deleted records of held deletes not re-read this run, so the run plans
    each again (held, or carried out once decided) without an API call.

    A held delete whose pair has no link any more (deleted on both sides, or ended by
    another path) has nothing left to decide: its row is dropped here.
    """
    with engine.begin() as conn:
        _drop_unlinked(conn, flow)
        held = conn.execute(
            select(quarantine.c.staged).where(
                quarantine.c.flow == flow,
                quarantine.c.kind.in_(KINDS),
                quarantine.c.staged.is_not(None),
                ~exists().where(
                    staging.c.run_id == run_id,
                    staging.c.flow == flow,
                    staging.c.side == quarantine.c.side,
                    staging.c.record_id == quarantine.c.record_id,
                ),
            )
        ).all()
    records = [rec for (blob,) in held if (rec := record_from_json(blob)) is not None]
    store = StagingStore(engine, flow)
    carried = 0
    for side in Side:
        rows = [(r, match_key_of(r), content_hash(r.values)) for r in records if r.side is side]
        for chunk in chunks(rows):
            carried += store.stage(run_id, list(chunk))
    return carried


def _drop_unlinked(conn: Connection, flow: str) -> None:
    linked = or_(
        and_(quarantine.c.side == Side.CUSTOMCRM.value, link.c.crm_id == quarantine.c.record_id),
        and_(quarantine.c.side == Side.CHARGEBEE.value, link.c.cb_id == quarantine.c.record_id),
    )
    conn.execute(
        delete(quarantine).where(
            quarantine.c.flow == flow,
            quarantine.c.kind.in_(KINDS),
            ~exists().where(link.c.flow == flow, linked),
        )
    )


Decisions = dict[tuple[str, str], DeleteDecision]


def touched_decisions(engine: Engine, mapping: FlowMapping, batch: Sequence[LinkedPair]) -> Decisions:
    """The decisions on the deletes of a batch of ``iter_touched_links`` pairs (link,
    Customcrm staged record, Chargebee staged record); empty for a flow without policy approve."""
    if DeletePolicy.APPROVE not in (mapping.delete.on_customcrm_delete, mapping.delete.on_chargebee_delete):
        return {}
    keys = [
        (rec.side.value, rec.id)
        for pair in batch
        for rec in (pair.crm, pair.cb)
        if rec is not None and rec.deleted
    ]
    return decisions(engine, mapping.flow, keys) if keys else {}


def decision_for(decided: Decisions, crm: SideRecord | None, cb: SideRecord | None) -> DeleteDecision | None:
    """The decision on a pair's delete: keyed by its deleted record (None: none recorded)."""
    for rec in (crm, cb):
        if rec is not None and rec.deleted and (rec.side.value, rec.id) in decided:
            return decided[(rec.side.value, rec.id)]
    return None
