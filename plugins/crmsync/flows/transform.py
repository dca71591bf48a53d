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
:mod:`crmsync.flows.refs`); a record whose reference is not linked yet waits.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, replace
from typing import Any

from sqlalchemy.engine import RowMapping

from crmsync.engine import plan as planner
from crmsync.engine.canonical import SideRecord, content_hash, match_key
from crmsync.engine.match import Outcome, decide_group
from crmsync.engine.merge import Note
from crmsync.engine.plan import Action, Decision
from crmsync.engine.status import HoldKind, WriteStatus
from crmsync.flows.refs import RefResolver
from crmsync.mapping.model import Cardinality, Side
from crmsync.mapping.model import Mapping as FlowMapping
from crmsync.store import approvals
from crmsync.store.repository import Repository, dumps, link_state, record_from_staging, record_to_json

log = logging.getLogger("crmsync")
BATCH = 500


def plan_row(
    run_id: str,
    flow: str,
    seq: int,
    decision: Decision,
    crm: SideRecord | None,
    cb: SideRecord | None,
    link_id: int | None,
) -> dict[str, Any]:
    """One plan table row for a decision."""
    detail = None
    if decision.conflicts or decision.notes or decision.decided_by:
        detail = dumps(
            {
                "conflicts": [{**asdict(c), "winner": c.winner.value} for c in decision.conflicts],
                "notes": [{**asdict(n), "side": n.side.value} for n in decision.notes],
                # who approved or rejected a held delete (update_links audits it)
                **({"decided_by": decision.decided_by} if decision.decided_by else {}),
            }
        )
    row: dict[str, Any] = {
        "run_id": run_id,
        "flow": flow,
        "seq": seq,
        "action": decision.action.value,
        "crm_id": decision.crm_id,
        "cb_id": decision.cb_id,
        "link_id": link_id,
        "match_key": None,
        "merged": None if decision.merged is None else dumps(decision.merged),
        "crm_staged": None if crm is None else record_to_json(crm),
        "cb_staged": None if cb is None else record_to_json(cb),
        "reason": decision.reason,
        "detail": detail,
        "held_side": decision.held_side.value if decision.held_side else None,
        "hold_kind": decision.hold_kind,
        "applied": False,
    }
    for side, prefix in ((Side.CUSTOMCRM, "crm"), (Side.CHARGEBEE, "cb")):
        write = decision.write_for(side)
        row[f"{prefix}_op"] = write.op.value if write else None
        row[f"{prefix}_changes"] = dumps(write.changes) if write else None
        row[f"{prefix}_if_version"] = write.if_version if write else None
        row[f"{prefix}_status"] = WriteStatus.PENDING if write else None
        row[f"{prefix}_result"] = None
        row[f"{prefix}_error"] = None
    return row


class Planner:
    """Accumulates decisions and writes them to the plan table in batches."""

    def __init__(self, mapping: FlowMapping, run_id: str, repo: Repository) -> None:
        self.mapping, self.run_id, self.repo = mapping, run_id, repo
        self.refs = RefResolver(repo.engine, mapping)
        self.counts: Counter[str] = Counter()
        self.rows: list[dict[str, Any]] = []
        self.seq = 0
        #: Chargebee record id → why an optional reference is not synced yet
        self.soft: dict[str, str] = {}
        #: Chargebee records as staged, before references were translated: a held record
        #: keeps these ids, so the retry can translate them once the link exists.
        self.raw: dict[str, SideRecord] = {}
        #: records no match rule so far found a partner for, staged for the next rule
        self.deferred: list[tuple[SideRecord, str | None, str]] = []
        self.deferred_rule = 1

    def resolve(self, rec: SideRecord | None) -> tuple[SideRecord | None, str | None]:
        if rec is None:
            return None, None
        resolved, hard, soft = self.refs.canonical_soft(rec)
        if resolved is not rec:
            self.raw[rec.id] = rec
        if soft:
            self.soft[rec.id] = soft
        return resolved, hard

    def emit(
        self,
        decision: Decision,
        crm: SideRecord | None,
        cb: SideRecord | None,
        link_id: int | None = None,
        *,
        pending: dict[str, str] | None = None,
    ) -> None:
        """Plan one decision. ``pending``: references of a new link's Chargebee record kept
        untranslated until their flow links them (update_links stores them with the link)."""
        decision = self._translate_refs(decision, crm, cb)
        if cb is not None and decision.action in (Action.UNLINK, Action.DELETE, Action.SKIP):
            self.soft.pop(cb.id, None)  # nothing syncs: a pending reference must not replace the reason
        if cb is not None and cb.id in self.soft and decision.held_side is None:
            decision = replace(
                decision,
                held_side=Side.CHARGEBEE,
                hold_kind=HoldKind.REF_PENDING,
                reason=planner.ref_pending_reason(self.mapping, cb.id, self.soft.pop(cb.id)),
            )
        self.seq += 1
        self.counts[decision.action.value] += 1
        row = plan_row(self.run_id, self.mapping.flow, self.seq, decision, crm, cb, link_id)
        # The staged copy is needed until the record's decision is out: keeping every one
        # made transform's memory grow with the run (about 2 KB a record).
        raw = self.raw.pop(cb.id, None) if cb is not None else None
        if (decision.held_side is Side.CHARGEBEE and raw is not None) or pending:
            detail = json.loads(row["detail"]) if row["detail"] else {}
            if decision.held_side is Side.CHARGEBEE and raw is not None:
                detail["held_record"] = json.loads(record_to_json(raw))
            if pending:
                detail["pending_refs"] = pending
            row["detail"] = dumps(detail)
        self.rows.append(row)
        if len(self.rows) >= BATCH:
            self.flush()

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

    def _translate_refs(self, d: Decision, crm: SideRecord | None, cb: SideRecord | None) -> Decision:
        """Ids bound for Chargebee become Chargebee ids; without a link yet, the source waits."""
        if d.cb_write is None or not self.refs.active:
            return d
        changes = dict(d.cb_write.changes)
        notes = list(d.notes)
        fixed: dict[str, Any] = {}  # on_create fields, already translated
        if d.cb_write.op is planner.Op.CREATE:
            # A field sent only because Chargebee fixes it at creation (on_create) never
            # holds the create back: without a link it is left out, Chargebee applies its
            # default, and the Customcrm value is kept (update_links takes Chargebee's value
            # as the base, so the next run does not copy the default over it).
            for f in self.mapping.fields:
                if not (f.on_create and f.ref and changes.get(f.name) is not None):
                    continue
                one, missing = self.refs.to_chargebee({f.name: changes.pop(f.name)})
                if missing:
                    notes.append(
                        Note(
                            f.name,
                            "created_with_default",
                            Side.CHARGEBEE,
                            f"Customcrm {self.mapping.customcrm.label} {d.crm_id}: {missing}, so the "
                            f"Chargebee {self.mapping.chargebee.label} is created with Chargebee's default "
                            f"{f.chargebee}, which it fixes at creation; the Customcrm value is kept",
                        )
                    )
                else:
                    fixed[f.name] = one[f.name]
        changes, why = self.refs.to_chargebee(changes)
        changes.update(fixed)
        if why:
            source = crm or SideRecord(Side.CUSTOMCRM, d.crm_id or "?", {})
            return planner.wait(self.mapping, source, why, other_id=d.cb_id)
        return replace(d, cb_write=replace(d.cb_write, changes=changes), notes=notes)


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
        staged_cb = [record_from_staging(k, "k_") for _, _, k in batch if k is not None]
        p.refs.prefetch(staged_cb)
        decided = approvals.touched_decisions(p.repo.engine, p.mapping, batch)
        for link_row, c_row, k_row in batch:
            crm = record_from_staging(c_row, "c_") if c_row is not None else None
            cb, why = p.resolve(record_from_staging(k_row, "k_") if k_row is not None else None)
            if cb is not None and why:
                p.emit(planner.wait(p.mapping, cb, why, other_id=link_row["crm_id"]), crm, cb, link_row["id"])
                continue
            state = p.refs.resolve_link(link_state(link_row))
            approval = approvals.decision_for(decided, crm, cb)
            decision = planner.decide_linked(p.mapping, state, crm, cb, approval)
            p.emit(decision, crm, cb, link_row["id"])


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
    mapping = p.mapping
    if mapping.cardinality is Cardinality.ONE_TO_MANY:
        return set()
    refs, made = p.repo.unlinked_claims(p.run_id, planner.made_id_prefix(mapping))
    made_pairs = [(crm_id, cb_id) for cb_id in made if (crm_id := planner.made_for(mapping, cb_id))]
    pairs = planner.paired_by_claims(refs + made_pairs)
    made_by = {pair: Side.CHARGEBEE for pair in made_pairs} | {pair: Side.CUSTOMCRM for pair in refs}
    if not pairs:
        return set()
    crm_rows = p.repo.staged_unlinked(p.run_id, Side.CUSTOMCRM, [c for c, _ in pairs])
    cb_rows = p.repo.staged_unlinked(p.run_id, Side.CHARGEBEE, [k for _, k in pairs])
    ended = {side: p.repo.unlinked_survivors(side, [i for pair in pairs for i in pair]) for side in Side}
    taken: set[tuple[Side, str]] = set()
    for crm_id, cb_id in pairs:
        if crm_id not in crm_rows or cb_id not in cb_rows:
            continue  # not read this run, already linked, or deleted
        if crm_id in ended[Side.CUSTOMCRM] or cb_id in ended[Side.CHARGEBEE]:
            continue  # a pair ended by policy unlink is only linked again by match
        crm = record_from_staging(crm_rows[crm_id])
        cb_raw = record_from_staging(cb_rows[cb_id])
        cb, why = p.resolve(cb_raw)
        assert cb is not None
        if why:
            p.soft[cb.id] = why  # link now; the reference is retried until it is linked
        # Start from the base the failed run would have recorded: the made record's own
        # values where its create could not set them (see planner.made_base).
        made_side = made_by[(crm_id, cb_id)]
        base = planner.made_base(mapping, cb if made_side is Side.CHARGEBEE else crm)
        pending: dict[str, str] = {}
        if made_side is Side.CHARGEBEE:
            # A reference the made record got from Chargebee (its default entity) that is not
            # linked yet is kept pending with the link, as a crash-free create keeps it
            # (links._base_after), not held as waiting: it is translated once linked.
            pending = {
                f.name: str(cb_raw.values[f.name])
                for f in mapping.refs
                if f.name in base and cb_raw.values.get(f.name) is not None and cb.values.get(f.name) is None
            }
            if pending:
                p.soft.pop(cb.id, None)
        decision = planner.decide_match(mapping, crm, cb, base)
        if decision.action is Action.LINK_BY_MATCH:
            decision = replace(
                decision,
                reason=f"linked by the id this sync gave it in an earlier run that did not record the link "
                f"(Customcrm {crm_id} ⇄ Chargebee {cb_id})",
            )
        p.emit(decision, crm, cb, pending=pending)
        taken |= {(Side.CUSTOMCRM, crm_id), (Side.CHARGEBEE, cb_id)}
    if taken:
        log.info("transform: %d pairs linked by the ids this sync gave them", len(taken) // 2)
    return taken


def _unlinked(p: Planner) -> None:
    rules = len(p.mapping.match.rules)
    taken = _claimed_pairs(p)
    rows = p.repo.iter_unlinked(p.run_id)
    if taken:
        rows = (r for r in rows if (Side(r["side"]), r["record_id"]) not in taken)
    _match_pass(p, 0, rows)
    for rule in range(1, rules):
        p.flush_deferred()
        _match_pass(p, rule, p.repo.iter_deferred(p.run_id, rule))
    if rules > 1:
        p.repo.clear_deferred(p.run_id)


def _match_pass(p: Planner, rule: int, rows: Iterable[RowMapping]) -> None:
    """Group records by the key of ``rule`` (rows arrive ordered by it) and decide each group."""
    groups: list[tuple[str | None, list[SideRecord]]] = []
    current: object = object()
    for row in rows:
        rec = record_from_staging(row)
        key = row["match_key"]
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


def _flush_groups(p: Planner, rule: int, groups: list[tuple[str | None, list[SideRecord]]]) -> None:
    mapping = p.mapping
    last_rule = rule == len(mapping.match.rules) - 1
    taken = p.repo.linked_by_match_key([k for k, _ in groups if k is not None]) if rule == 0 else {}
    p.refs.prefetch([r for _, recs in groups for r in recs if r.side is Side.CHARGEBEE])
    survivors = {
        side: p.repo.unlinked_survivors(side, [r.id for _, recs in groups for r in recs if r.side is side])
        for side in Side
    }
    gone = [r for _, recs in groups for r in recs if r.deleted]
    ended = {side: p.repo.ended_by_delete(side, [r.id for r in gone if r.side is side]) for side in Side}
    for key, recs in groups:
        live: list[SideRecord] = []
        #: the records as staged (before references were translated), to defer them
        staged: dict[tuple[Side, str], SideRecord] = {}
        #: records whose required reference is not linked yet: they still take part in
        #: matching (so their partner is linked, never created twice), but are not created
        waits: dict[str, str] = {}
        for r in recs:
            if r.deleted:
                # A tombstone read again after the run that ended its link (the overlap
                # window, a full resync) was reported then: nothing to do, nothing to say.
                if r.id not in ended[r.side]:
                    p.emit(planner.decide_new(mapping, r), *_pair(r))
                continue
            resolved, why = p.resolve(r)
            assert resolved is not None
            live.append(resolved)
            staged[(r.side, r.id)] = r
            if why:
                waits[resolved.id] = why

        def new(
            r: SideRecord, waits: dict[str, str] = waits, staged: dict[tuple[Side, str], SideRecord] = staged
        ) -> None:
            if r.id in survivors[r.side]:
                p.emit(planner.decide_survivor(mapping, r), *_pair(r))
            elif not last_rule:
                # no partner by this rule: the next rule may find one
                p.defer(rule + 1, staged[(r.side, r.id)])
            elif r.id in waits:
                p.emit(planner.wait(mapping, r, waits[r.id]), *_pair(r))
            else:
                p.emit(planner.decide_new(mapping, r), *_pair(r))

        if key is None:
            for r in live:
                new(r)
            continue
        if mapping.cardinality is Cardinality.ONE_TO_MANY:
            crms = [r for r in live if r.side is Side.CUSTOMCRM]
            cbs = [r for r in live if r.side is Side.CHARGEBEE]
            _one_to_many(p, key, crms, cbs, taken.get(key))
            continue
        group = decide_group(mapping, rule, live, taken.get(key))
        if group.outcome is Outcome.LINK:
            assert group.crm is not None and group.cb is not None
            if group.cb.id in waits:
                # Link now; the reference is retried until its flow links it.
                p.soft[group.cb.id] = waits[group.cb.id]
            p.emit(planner.decide_match(mapping, group.crm, group.cb), group.crm, group.cb)
        elif group.outcome is Outcome.UNMATCHED:
            for r in live:
                new(r)
        else:
            for r in live:
                p.emit(
                    planner.ambiguous(mapping, r, list(group.candidates), group.why or "", group.fix),
                    *_pair(r),
                )


def _one_to_many(
    p: Planner, key: str, crms: list[SideRecord], cbs: list[SideRecord], taken: tuple[str, str] | None
) -> None:
    """One Customcrm record (a user) links to every Chargebee record (order) with its key."""
    mapping = p.mapping
    if len(crms) > 1:
        ids = [f"Customcrm {r.id}" for r in crms]
        many = f"several Customcrm {mapping.customcrm.label}s"
        for r in crms + cbs:
            # the reason names the field a person corrects, on the record's own side
            keys = ", ".join(mapping.source_path(mapping.field(k), r.side) for k in mapping.match.keys)
            why = (
                f"its {keys} is shared by {many}" if r.side is Side.CUSTOMCRM else f"its {keys} names {many}"
            )
            p.emit(planner.ambiguous(mapping, r, ids, why), *_pair(r))
        return
    owner = crms[0] if crms else None
    if owner is None and taken is not None:
        link_row = p.repo.get_link(crm_id=taken[0])
        if link_row is not None:
            state = link_state(link_row)
            owner = SideRecord(
                Side.CUSTOMCRM, state.crm_id, state.crm_snapshot, state.crm_updated_at, state.crm_version
            )
    if owner is None:
        for r in cbs:
            p.emit(planner.decide_new(mapping, r), *_pair(r))
        return
    if not cbs:
        p.emit(planner.decide_new(mapping, owner), *_pair(owner))
        return
    for r in cbs:
        p.emit(planner.decide_match(mapping, owner, r), owner, r)


def _pair(rec: SideRecord) -> tuple[SideRecord | None, SideRecord | None]:
    return (rec, None) if rec.side is Side.CUSTOMCRM else (None, rec)


__all__ = ["Action", "build_plan", "plan_row"]
