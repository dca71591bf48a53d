"""The transform task: staging + links → the plan. This is where records are matched.

Two passes, both streamed in batches so memory stays flat:

1. **Linked pairs** with at least one side staged (changed since the watermark, or
   carried from quarantine): merged three ways against the link's base
   (:func:`crmsync.engine.plan.decide_linked`).
2. **Unlinked records**, read ordered by match key so equal keys arrive together:
   one record per side with the same key → link by match; a key shared by several
   records, or already used by a link → ambiguous (quarantined, never guessed); no
   candidate → create on the other side (:func:`crmsync.engine.plan.decide_new`).
   With ``match.alternatives``, the records no rule matched yet are staged again under
   the next rule's key and matched the same way (:mod:`crmsync.engine.match`), so
   memory stays flat whatever the number of rules.

References to other flows' records are translated on the way in and out (see
:mod:`crmsync.engine.refs`); a record whose reference is not linked yet waits.

This module is orchestration: it reads from the repository, asks the pure engine
(:mod:`crmsync.engine.pairing`, :mod:`crmsync.engine.refs`, :mod:`crmsync.engine.plan`)
and writes the plan rows (:class:`crmsync.store.plan.PlanRow`) through the repository.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

from crmsync.engine import pairing
from crmsync.engine import plan as planner
from crmsync.engine.canonical import SideRecord, content_hash, match_key
from crmsync.engine.pairing import Defer, GroupContext, Step
from crmsync.engine.plan import Action, Decision, SideWrite
from crmsync.engine.refs import Translated, hold_ref_pending
from crmsync.engine.status import WriteStatus
from crmsync.flows.refs import RefResolver
from crmsync.mapping.model import Cardinality, Side
from crmsync.mapping.model import Mapping as FlowMapping
from crmsync.store import approvals
from crmsync.store.plan import PlanRow
from crmsync.store.repository import Repository, dumps, link_state, record_to_json
from crmsync.store.staging import StagedRow

log = logging.getLogger("crmsync")
BATCH = 500


def _detail(
    decision: Decision, held: SideRecord | None = None, pending: Mapping[str, str] | None = None
) -> str | None:
    """The plan row's ``detail`` JSON: conflicts and notes; the staged Chargebee record a
    hold keeps (``held_record``: its references untranslated, for the retry); the
    references a new link keeps pending (``pending_refs``)."""
    detail: dict[str, Any] = {}
    if decision.conflicts or decision.notes:
        detail["conflicts"] = [{**asdict(c), "winner": c.winner.value} for c in decision.conflicts]
        detail["notes"] = [{**asdict(n), "side": n.side.value} for n in decision.notes]
    if held is not None:
        detail["held_record"] = json.loads(record_to_json(held))
    if pending:
        detail["pending_refs"] = dict(pending)
    if decision.decided_by:
        detail["decided_by"] = decision.decided_by  # who approved or rejected a held delete (audited)
    if decision.deleted_on:
        detail["deleted_on"] = [s.value for s in decision.deleted_on]  # audited (settle._audit)
    return dumps(detail) if detail else None


def _write(w: SideWrite | None) -> tuple[str | None, str | None, str | None, str | None]:
    """(op, changes, if_version, status) columns of one side's planned write."""
    if w is None:
        return None, None, None, None
    return w.op.value, dumps(w.changes), w.if_version, WriteStatus.PENDING


def plan_row(
    run_id: str,
    flow: str,
    seq: int,
    decision: Decision,
    crm: SideRecord | None,
    cb: SideRecord | None,
    link_id: int | None,
    *,
    held: SideRecord | None = None,
    pending: Mapping[str, str] | None = None,
) -> PlanRow:
    """One plan table row for a decision (``held``, ``pending``: see :func:`_detail`)."""
    crm_op, crm_changes, crm_if, crm_status = _write(decision.crm_write)
    cb_op, cb_changes, cb_if, cb_status = _write(decision.cb_write)
    return PlanRow(
        run_id=run_id,
        flow=flow,
        seq=seq,
        action=decision.action.value,
        crm_id=decision.crm_id,
        cb_id=decision.cb_id,
        link_id=link_id,
        match_key=None,
        merged=None if decision.merged is None else dumps(decision.merged),
        crm_staged=None if crm is None else record_to_json(crm),
        cb_staged=None if cb is None else record_to_json(cb),
        reason=decision.reason,
        detail=_detail(decision, held, pending),
        held_side=decision.held_side.value if decision.held_side else None,
        hold_kind=decision.hold_kind,
        applied=False,
        crm_op=crm_op,
        crm_changes=crm_changes,
        crm_if_version=crm_if,
        crm_status=crm_status,
        crm_result=None,
        crm_error=None,
        cb_op=cb_op,
        cb_changes=cb_changes,
        cb_if_version=cb_if,
        cb_status=cb_status,
        cb_result=None,
        cb_error=None,
    )


class Planner:
    """Accumulates decisions and writes them to the plan table in batches."""

    def __init__(self, mapping: FlowMapping, run_id: str, repo: Repository) -> None:
        self.mapping, self.run_id, self.repo = mapping, run_id, repo
        self.refs = RefResolver(repo.engine, mapping)
        self.counts: Counter[str] = Counter()
        self.rows: list[PlanRow] = []
        self.seq = 0
        #: Chargebee record id → why an optional reference is not synced yet
        self.soft: dict[str, str] = {}
        #: Chargebee records as staged, before references were translated: a held record
        #: keeps these ids, so the retry can translate them once the link exists.
        self.raw: dict[str, SideRecord] = {}
        #: records no match rule so far found a partner for, staged for the next rule
        self.deferred: list[tuple[SideRecord, str | None, str]] = []
        self.deferred_rule = 1

    def translate(self, rec: SideRecord) -> Translated:
        """``rec`` with its references translated (:func:`crmsync.engine.refs.translate_record`);
        remembers the staged copy and why an optional reference is not linked."""
        t = self.refs.translated(rec)
        if t.record is not rec:
            self.raw[rec.id] = rec
        if t.soft:
            self.soft[rec.id] = t.soft
        return t

    def resolve(self, rec: SideRecord | None) -> tuple[SideRecord | None, str | None]:
        """As :meth:`translate`: the record and why it waits (a required reference is not linked)."""
        if rec is None:
            return None, None
        t = self.translate(rec)
        return t.record, t.hard

    def emit(
        self,
        decision: Decision,
        crm: SideRecord | None,
        cb: SideRecord | None,
        link_id: int | None = None,
        *,
        pending: Mapping[str, str] | None = None,
    ) -> None:
        """Plan one decision. ``pending``: references of a new link's Chargebee record kept
        untranslated until their flow links them (update_links stores them with the link)."""
        decision = self.refs.translate_decision(decision, crm)
        if cb is not None:
            decision, settled = hold_ref_pending(self.mapping, decision, cb.id, self.soft.get(cb.id))
            if settled:
                self.soft.pop(cb.id, None)
        self.seq += 1
        self.counts[decision.action.value] += 1
        # The staged copy is needed until the record's decision is out: keeping every one
        # made transform's memory grow with the run (about 2 KB a record).
        raw = self.raw.pop(cb.id, None) if cb is not None else None
        held = raw if decision.held_side is Side.CHARGEBEE else None
        row = plan_row(
            self.run_id, self.mapping.flow, self.seq, decision, crm, cb, link_id, held=held, pending=pending
        )
        self.rows.append(row)
        if len(self.rows) >= BATCH:
            self.flush()

    def step(self, step: Step, staged: Mapping[tuple[Side, str], SideRecord], rule: int) -> None:
        """Carry out one step the engine decided (:mod:`crmsync.engine.pairing`)."""
        if isinstance(step, Defer):
            # no partner by this rule: the next rule may find one
            self.defer(rule + 1, staged[(step.side, step.id)])
            return
        if step.cb is not None:
            if step.pending:
                self.soft.pop(step.cb.id, None)
            elif step.soft:
                self.soft[step.cb.id] = step.soft
        self.emit(step.decision, step.crm, step.cb, pending=step.pending)

    def flush(self) -> None:
        if self.rows:
            self.repo.insert_plan(self.rows)
            self.rows = []

    def defer(self, rule: int, rec: SideRecord) -> None:
        """Hand a record no earlier rule matched to the pass of match rule ``rule``."""
        self.deferred.append((rec, match_key(self.mapping, rec.values, rule), content_hash(rec.values)))
        self.deferred_rule = rule
        if len(self.deferred) >= BATCH:
            self.flush_deferred()

    def flush_deferred(self) -> None:
        if self.deferred:
            for side in Side:
                rows = [d for d in self.deferred if d[0].side is side]
                if rows:
                    self.repo.stage_deferred(self.run_id, self.deferred_rule, rows)
            self.deferred = []


def build_plan(
    mapping: FlowMapping, run_id: str, params: dict[str, Any], repo: Repository
) -> dict[str, int] | None:
    """Write this run's plan; None when an already-executed plan is kept (a rerun)."""
    repo.begin_run(run_id, params)
    done = repo.plan_progress(run_id)
    if done:
        log.info("transform: %d writes of this run's plan were already attempted; keeping the plan", done)
        return None
    repo.delete_plan(run_id)
    repo.clear_deferred(run_id)
    carried = repo.carry_quarantined(run_id, lambda rec: match_key(mapping, rec.values))
    if carried:
        log.info("transform: retrying %d held records (waiting or failed earlier)", carried)
    held = approvals.carry_approvals(
        repo.engine, mapping.flow, run_id, lambda r: match_key(mapping, r.values)
    )
    if held:
        log.info("transform: %d deletes held for approval planned again", held)

    p = Planner(mapping, run_id, repo)
    _linked_pairs(p)
    _unlinked(p)
    p.flush()
    log.info("transform: plan %s", dict(sorted(p.counts.items())))
    return dict(p.counts)


def _linked_pairs(p: Planner) -> None:
    for batch in p.repo.iter_touched_links(p.run_id):
        p.refs.prefetch([pair.cb for pair in batch if pair.cb is not None])
        decided = approvals.touched_decisions(p.repo.engine, p.mapping, batch)
        for pair in batch:
            crm, link_id = pair.crm, pair.link["id"]
            cb, why = p.resolve(pair.cb)
            if cb is not None and why:
                p.emit(planner.wait(p.mapping, cb, why, other_id=pair.link["crm_id"]), crm, cb, link_id)
                continue
            state = p.refs.resolve_link(link_state(pair.link))
            approval = approvals.decision_for(decided, crm, cb)
            decision = planner.decide_linked(p.mapping, state, crm, cb, approval)
            p.emit(decision, crm, cb, link_id)


def _claimed_pairs(p: Planner) -> set[tuple[Side, str]]:
    """Link unlinked records that say whose partner they are, before any key matching.

    A record this sync made names its source: a Customcrm record through its
    ExternalRef, a Chargebee record through an id made from the Customcrm id
    (``create_id: "crm-{crm_id}"``). Normally such a pair is linked by the run that made
    it; when that run failed after the write and was never cleared, the next run finds
    the pair here, even when the match key was edited in between (matching by key would
    create a second record, and the create would reuse its idempotency key with another
    body, which Chargebee refuses). Returns the records linked, to leave out of matching.
    """
    if p.mapping.cardinality is Cardinality.ONE_TO_MANY:
        return set()
    refs, made = p.repo.unlinked_claims(p.run_id, planner.made_id_prefix(p.mapping))
    claims = pairing.claims(p.mapping, refs, made)
    if not claims:
        return set()
    crm_rows = p.repo.staged_unlinked(p.run_id, Side.CUSTOMCRM, [c.crm_id for c in claims])
    cb_rows = p.repo.staged_unlinked(p.run_id, Side.CHARGEBEE, [c.cb_id for c in claims])
    ids = [i for c in claims for i in (c.crm_id, c.cb_id)]
    ended = {side: p.repo.unlinked_survivors(side, ids) for side in Side}
    taken: set[tuple[Side, str]] = set()
    for claim in claims:
        if not pairing.claim_open(claim, crm_rows, cb_rows, ended):
            continue  # not read this run, already linked, deleted, or ended by policy unlink
        crm, cb_raw = crm_rows[claim.crm_id], cb_rows[claim.cb_id]
        step = pairing.decide_claim(p.mapping, claim, crm, cb_raw, p.translate(cb_raw))
        p.step(step, {}, 0)
        taken |= {(Side.CUSTOMCRM, claim.crm_id), (Side.CHARGEBEE, claim.cb_id)}
    if taken:
        log.info("transform: %d pairs linked by the ids this sync gave them", len(taken) // 2)
    return taken


def _unlinked(p: Planner) -> None:
    rules = len(p.mapping.match.rules)
    taken = _claimed_pairs(p)
    rows = p.repo.iter_unlinked(p.run_id)
    if taken:
        rows = (r for r in rows if (r.record.side, r.record.id) not in taken)
    _match_pass(p, 0, rows)
    for rule in range(1, rules):
        p.flush_deferred()
        _match_pass(p, rule, p.repo.iter_deferred(p.run_id, rule))
    if rules > 1:
        p.repo.clear_deferred(p.run_id)


def _match_pass(p: Planner, rule: int, rows: Iterable[StagedRow]) -> None:
    """Group records by the key of ``rule`` (rows arrive ordered by it) and decide each group."""
    groups: list[tuple[str | None, list[SideRecord]]] = []
    current: object = object()
    for row in rows:
        rec, key = row.record, row.match_key
        if key is None or key != current:
            if len(groups) >= BATCH:
                _flush_groups(p, rule, groups)
                groups = []
            groups.append((key, [rec]))
            current = key if key is not None else object()
        else:
            groups[-1][1].append(rec)
    if groups:
        _flush_groups(p, rule, groups)


def _group_context(p: Planner, rule: int, groups: list[tuple[str | None, list[SideRecord]]]) -> GroupContext:
    """What the store knows about a batch of groups: survivors of an unlink, and (first
    rule only: links store that key) the links already carrying a key."""
    taken = p.repo.linked_by_match_key([k for k, _ in groups if k is not None]) if rule == 0 else {}
    survivors = {
        side: p.repo.unlinked_survivors(side, [r.id for _, recs in groups for r in recs if r.side is side])
        for side in Side
    }
    return GroupContext(rule, rule == len(p.mapping.match.rules) - 1, survivors, taken)


def _flush_groups(p: Planner, rule: int, groups: list[tuple[str | None, list[SideRecord]]]) -> None:
    """Decide a batch of key groups: the store's facts are read once for the batch."""
    ctx = _group_context(p, rule, groups)
    p.refs.prefetch([r for _, recs in groups for r in recs if r.side is Side.CHARGEBEE])
    gone = [r for _, recs in groups for r in recs if r.deleted]
    ended = {side: p.repo.ended_by_delete(side, [r.id for r in gone if r.side is side]) for side in Side}
    for key, recs in groups:
        #: the records as staged (before references were translated), to defer them
        staged: dict[tuple[Side, str], SideRecord] = {}
        #: records whose required reference is not linked yet (see pairing.decide_key)
        waits: dict[str, str] = {}
        live: list[SideRecord] = []
        for r in recs:
            if r.deleted:
                if (gone_step := pairing.tombstone(p.mapping, r, ended)) is not None:
                    p.step(gone_step, staged, rule)
                continue
            resolved, why = p.resolve(r)
            assert resolved is not None
            live.append(resolved)
            staged[(r.side, r.id)] = r
            if why:
                waits[resolved.id] = why
        owner = _linked_owner(p, key, live, ctx)
        for planned in pairing.decide_key(p.mapping, key, live, ctx, waits, owner):
            p.step(planned, staged, rule)


def _linked_owner(
    p: Planner, key: str | None, live: list[SideRecord], ctx: GroupContext
) -> SideRecord | None:
    """The Customcrm record of the link already carrying a one-to-many key, as linked,
    when the engine needs it (:func:`crmsync.engine.pairing.needs_linked_owner`)."""
    if key is None or not pairing.needs_linked_owner(p.mapping, key, live, ctx):
        return None
    link_row = p.repo.get_link(crm_id=ctx.taken[key][0])
    if link_row is None:
        return None
    s = link_state(link_row)
    return SideRecord(Side.CUSTOMCRM, s.crm_id, s.crm_snapshot, s.crm_updated_at, s.crm_version)


__all__ = ["Action", "build_plan", "plan_row"]
