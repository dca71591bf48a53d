"""Pairing unlinked records: claims, match-key groups, one-to-many. Pure: no I/O.

The transform task (``flows/transform.py``) reads the unlinked records and what the
store knows about them (staged, ended by a delete, survivors of an ``unlink``, links
using a key), and asks these functions which pairs link, which records are ambiguous,
wait, are deferred to the next match rule, or are new. The answer is a list of
:class:`Emit` (plan one decision) and :class:`Defer` (stage for the next rule) steps,
in the order the plan is written.

* **Claims** come first: a record this sync made names its source (a Customcrm record
  through its ExternalRef, a Chargebee record through an id made from the Customcrm
  id); such a pair links even when its match key was edited since (:func:`decide_claim`).
* **Groups** of records sharing one rule's key: :func:`crmsync.engine.match.decide_group`
  says link / ambiguous / unmatched; :func:`decide_key` turns that into steps.
* **One-to-many** (a user and its orders): one Customcrm record links to every
  Chargebee record with its key (:func:`one_to_many`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from crmsync.engine import plan as planner
from crmsync.engine.canonical import SideRecord
from crmsync.engine.match import Outcome, decide_group
from crmsync.engine.plan import Action, Decision
from crmsync.engine.refs import Translated
from crmsync.mapping.model import Cardinality, Side
from crmsync.mapping.model import Mapping as FlowMapping


@dataclass(frozen=True)
class Emit:
    """Plan one decision for this pair (or lone record)."""

    decision: Decision
    crm: SideRecord | None
    cb: SideRecord | None
    #: why the Chargebee record's optional reference is not synced: the pair links now
    #: and the record is held as ref-pending, retried until the reference is linked
    soft: str | None = None
    #: references of a made Chargebee record kept untranslated with the new link
    pending: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Defer:
    """No partner by this rule: stage the record (as read) for the next rule."""

    side: Side
    id: str


Step = Emit | Defer


def pair_of(rec: SideRecord) -> tuple[SideRecord | None, SideRecord | None]:
    """(crm, cb) of a lone record."""
    return (rec, None) if rec.side is Side.CUSTOMCRM else (None, rec)


def emit_alone(decision: Decision, rec: SideRecord) -> Emit:
    return Emit(decision, *pair_of(rec))


# --- claims ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A pair a record this sync made claims; ``made_side`` is the side of the made record."""

    crm_id: str
    cb_id: str
    made_side: Side


def claims(
    mapping: FlowMapping, ref_claims: Sequence[tuple[str, str]], made_ids: Iterable[str]
) -> list[Claim]:
    """The pairs records claim: Customcrm records by their ExternalRef (``ref_claims``:
    (crm id, cb id)), Chargebee records by an id made from a Customcrm id. A record named
    by two claims is left to matching (never guessed); one-to-many flows claim nothing."""
    if mapping.cardinality is Cardinality.ONE_TO_MANY:
        return []
    made_pairs = [(crm_id, cb_id) for cb_id in made_ids if (crm_id := planner.made_for(mapping, cb_id))]
    made_by = {pair: Side.CHARGEBEE for pair in made_pairs} | {pair: Side.CUSTOMCRM for pair in ref_claims}
    return [Claim(c, k, made_by[(c, k)]) for c, k in planner.paired_by_claims([*ref_claims, *made_pairs])]


def claim_open(
    claim: Claim,
    crm_staged: Collection[str],
    cb_staged: Collection[str],
    ended: Mapping[Side, Collection[str]],
) -> bool:
    """Whether a claimed pair links now: both records read this run and unlinked, and
    neither ended by policy unlink (such a pair is only linked again by match)."""
    if claim.crm_id not in crm_staged or claim.cb_id not in cb_staged:
        return False
    return claim.crm_id not in ended.get(Side.CUSTOMCRM, ()) and claim.cb_id not in ended.get(
        Side.CHARGEBEE, ()
    )


def decide_claim(
    mapping: FlowMapping, claim: Claim, crm: SideRecord, cb_raw: SideRecord, cb: Translated
) -> Emit:
    """Link a claimed pair, merged against the base the failed run would have recorded.

    ``cb_raw`` is the Chargebee record as staged, ``cb`` the same with references
    translated. A reference the made Chargebee record got from Chargebee (its default
    entity) that is not linked yet is kept pending with the link, as a crash-free create
    keeps it (``settle``), not held as ref-pending: it is translated once linked. A
    required reference not linked links now too, held as ref-pending until it is.
    """
    rec = cb.record
    base = planner.made_base(mapping, rec if claim.made_side is Side.CHARGEBEE else crm)
    pending: dict[str, str] = {}
    if claim.made_side is Side.CHARGEBEE:
        pending = {
            f.name: str(cb_raw.values[f.name])
            for f in mapping.refs
            if f.name in base and cb_raw.values.get(f.name) is not None and rec.values.get(f.name) is None
        }
    decision = planner.decide_match(mapping, crm, rec, base)
    if decision.action is Action.LINK_BY_MATCH:
        decision = replace(
            decision,
            reason=f"linked by the id this sync gave it in an earlier run that did not record the link "
            f"(Customcrm {claim.crm_id} ⇄ Chargebee {claim.cb_id})",
        )
    soft = None if pending else (cb.hard or cb.soft)
    return Emit(decision, crm, rec, soft=soft, pending=pending)


# --- groups of one match key ---------------------------------------------------------------


@dataclass(frozen=True)
class GroupContext:
    """What the store says about one batch of groups of rule ``rule``."""

    rule: int
    last_rule: bool
    #: ids (per side) whose partner was deleted under policy unlink
    survivors: Mapping[Side, Collection[str]] = field(default_factory=dict)
    #: first rule only: key → (crm id, cb id) of the link already carrying it
    taken: Mapping[str, tuple[str, str]] = field(default_factory=dict)


def tombstone(mapping: FlowMapping, rec: SideRecord, ended: Mapping[Side, Collection[str]]) -> Emit | None:
    """A deleted unlinked record. One read again after the run that ended its link (the
    overlap window, a full resync) was reported then: nothing to do, nothing to say."""
    if rec.id in ended.get(rec.side, ()):
        return None
    return emit_alone(planner.decide_new(mapping, rec), rec)


def unmatched(mapping: FlowMapping, rec: SideRecord, ctx: GroupContext, waits: Mapping[str, str]) -> Step:
    """A record with no partner by this rule: a survivor of an unlink is skipped; else the
    next rule may find one; at the last rule it waits (a required reference is not
    linked: never created) or is new."""
    if rec.id in ctx.survivors.get(rec.side, ()):
        return emit_alone(planner.decide_survivor(mapping, rec), rec)
    if not ctx.last_rule:
        return Defer(rec.side, rec.id)
    if rec.id in waits:
        return emit_alone(planner.wait(mapping, rec, waits[rec.id]), rec)
    return emit_alone(planner.decide_new(mapping, rec), rec)


def needs_linked_owner(
    mapping: FlowMapping, key: str | None, live: Sequence[SideRecord], ctx: GroupContext
) -> bool:
    """Whether :func:`decide_key` needs the Customcrm owner of the link carrying ``key``
    (a one-to-many group with Chargebee records only, whose key is linked already)."""
    return (
        mapping.cardinality is Cardinality.ONE_TO_MANY
        and key is not None
        and key in ctx.taken
        and not any(r.side is Side.CUSTOMCRM for r in live)
    )


def decide_key(
    mapping: FlowMapping,
    key: str | None,
    live: Sequence[SideRecord],
    ctx: GroupContext,
    waits: Mapping[str, str],
    linked_owner: SideRecord | None = None,
) -> list[Step]:
    """The steps for the live (not deleted, references translated) unlinked records
    sharing ``key``. ``waits``: Chargebee id → why its required reference is not linked:
    such records still take part in matching (their partner is linked, never created
    twice) but are not created. ``linked_owner``: see :func:`needs_linked_owner`."""
    if key is None:
        return [unmatched(mapping, r, ctx, waits) for r in live]
    if mapping.cardinality is Cardinality.ONE_TO_MANY:
        crms = [r for r in live if r.side is Side.CUSTOMCRM]
        cbs = [r for r in live if r.side is Side.CHARGEBEE]
        return list(one_to_many(mapping, crms, cbs, linked_owner))
    group = decide_group(mapping, ctx.rule, live, ctx.taken.get(key))
    if group.outcome is Outcome.LINK:
        assert group.crm is not None and group.cb is not None
        # A required reference not linked: link now; it is retried until its flow links it.
        decision = planner.decide_match(mapping, group.crm, group.cb)
        return [Emit(decision, group.crm, group.cb, soft=waits.get(group.cb.id))]
    if group.outcome is Outcome.UNMATCHED:
        return [unmatched(mapping, r, ctx, waits) for r in live]
    return [
        emit_alone(planner.ambiguous(mapping, r, list(group.candidates), group.why or "", group.fix), r)
        for r in live
    ]


def one_to_many(
    mapping: FlowMapping,
    crms: Sequence[SideRecord],
    cbs: Sequence[SideRecord],
    linked_owner: SideRecord | None,
) -> list[Emit]:
    """One Customcrm record (a user) links to every Chargebee record (order) with its key.

    Several Customcrm records with the key: all are ambiguous, with a reason naming the
    field a person corrects on the record's own side. No Customcrm record read: the
    owner is the one already linked with the key (``linked_owner``), else every
    Chargebee record is new.
    """
    if len(crms) > 1:
        ids = [f"Customcrm {r.id}" for r in crms]
        many = f"several Customcrm {mapping.customcrm.label}s"
        out = []
        for r in [*crms, *cbs]:
            keys = ", ".join(mapping.source_path(mapping.field(k), r.side) for k in mapping.match.keys)
            why = (
                f"its {keys} is shared by {many}" if r.side is Side.CUSTOMCRM else f"its {keys} names {many}"
            )
            out.append(emit_alone(planner.ambiguous(mapping, r, ids, why), r))
        return out
    owner = crms[0] if crms else linked_owner
    if owner is None:
        return [emit_alone(planner.decide_new(mapping, r), r) for r in cbs]
    if not cbs:
        return [emit_alone(planner.decide_new(mapping, owner), owner)]
    return [Emit(planner.decide_match(mapping, owner, r), owner, r) for r in cbs]


__all__ = [
    "Claim",
    "Defer",
    "Emit",
    "GroupContext",
    "Step",
    "claim_open",
    "claims",
    "decide_claim",
    "decide_key",
    "needs_linked_owner",
    "one_to_many",
    "pair_of",
    "tombstone",
    "unmatched",
]
