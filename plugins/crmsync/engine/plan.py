"""One decision per record pair: what to write where, and why. Pure: no I/O.

The transform task gathers, for each pair, the link (if any), the staged records of
both sides (or the link's last snapshot of a side that did not change) and hands them
to :func:`decide`. The result is one plan row. Upsert tasks execute plan rows; they
never decide anything themselves, so a rerun can only repeat what the plan says.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from crmsync.engine.canonical import UNLEARNED, CanonicalRecord, Problem, SideRecord, validate
from crmsync.engine.merge import Conflict, Note, merge
from crmsync.engine.status import HoldKind
from crmsync.mapping.creators import names_no_person
from crmsync.mapping.model import DeletePolicy, Side
from crmsync.mapping.model import Mapping as FlowMapping
from crmsync.mapping.transforms import Canonical


class Action(StrEnum):
    CREATE = "create"  # a record new on one side is created on the other
    LINK_BY_MATCH = "link_by_match"  # two unlinked records matched on the match keys
    UPDATE = "update"  # a linked pair with changes to write
    UNCHANGED = "unchanged"  # nothing to write (includes echoes of our own writes)
    DELETE = "delete"  # a delete propagated to the other side
    UNLINK = "unlink"  # a delete on one side ends the link, the other side stays
    RESTORE = "restore"  # a deleted record is re-created from the other side
    SKIP = "skip"  # nothing to do and nothing to link (e.g. deleted before ever linked)
    WAIT = "wait"  # cannot proceed yet (a dependency is missing); retried next run
    QUARANTINE = "quarantine"  # bad data or ambiguous match; needs a person


class Op(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True)
class LinkState:
    """What the link store knows of a linked pair."""

    crm_id: str
    cb_id: str
    base: CanonicalRecord
    crm_snapshot: CanonicalRecord
    cb_snapshot: CanonicalRecord
    crm_version: str | None = None
    cb_version: str | None = None
    crm_updated_at: float = 0.0
    cb_updated_at: float = 0.0


@dataclass
class SideWrite:
    op: Op
    changes: dict[str, Canonical]
    #: the version the write is conditional on (Customcrm If-Match); None = unconditional
    if_version: str | None = None


@dataclass
class Decision:
    action: Action
    crm_id: str | None
    cb_id: str | None
    merged: CanonicalRecord | None = None
    crm_write: SideWrite | None = None
    cb_write: SideWrite | None = None
    conflicts: list[Conflict] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    reason: str | None = None
    #: for QUARANTINE/WAIT: which side's record is held, and the kind of hold
    held_side: Side | None = None
    hold_kind: HoldKind | None = None  # invalid | ambiguous | waiting | approval
    #: for a DELETE or UNLINK that carries out a person's decision on a delete held under
    #: policy ``approve``: who decided (the audit row names them)
    decided_by: str | None = None
    #: for a decision on a linked pair one side (or both) of which was deleted: the sides
    #: whose record was deleted. Carried to the plan row's and the audit row's detail
    #: (``deleted_on``), where the extract reads it (flows/extract.py), not the reason text.
    deleted_on: tuple[Side, ...] = ()

    def write_for(self, side: Side) -> SideWrite | None:
        return self.crm_write if side is Side.CUSTOMCRM else self.cb_write


def _label(mapping: FlowMapping, side: Side) -> str:
    return (
        f"Customcrm {mapping.customcrm.label}"
        if side is Side.CUSTOMCRM
        else (f"Chargebee {mapping.chargebee.label}")
    )


#: characters a Chargebee id may hold, and the longest id a create is given
CB_ID_CHARS = re.compile(r"[^A-Za-z0-9_\-.@~]")
CB_CREATE_ID_MAX = 50


def chargebee_create_id(
    mapping: FlowMapping, crm_id: str, values: CanonicalRecord | None = None
) -> str | None:
    """The id a Chargebee create is given (``chargebee.create_id``), or None (Chargebee
    picks one). Deterministic, so a create repeated after a crash finds the first one."""
    template = mapping.chargebee.create_id
    if template is None:
        return None
    fields = {k: ("" if v is None else str(v)) for k, v in (values or {}).items()}
    made = CB_ID_CHARS.sub("_", template.format(**{**fields, "crm_id": crm_id}))[:CB_CREATE_ID_MAX]
    return made if "{crm_id}" in template else made.lower()


def _made_id_parts(mapping: FlowMapping) -> tuple[str, str] | None:
    """(prefix, suffix) of ``create_id: "<prefix>{crm_id}<suffix>"``; None when the
    template has other placeholders (or none)."""
    template = mapping.chargebee.create_id
    if template is None or "{{" in template or "}}" in template:
        return None
    holes = [h for _, h, _, _ in string.Formatter().parse(template) if h]
    if holes != ["crm_id"]:
        return None
    prefix, suffix = template.split("{crm_id}", 1)
    return prefix, suffix


def made_id_prefix(mapping: FlowMapping) -> str | None:
    """What every Chargebee id made from a Customcrm id alone starts with, or None."""
    parts = _made_id_parts(mapping)
    return parts[0] if parts else None


def paired_by_claims(claims: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """(Customcrm id, Chargebee id) pairs that records' own references claim; a record
    named by two different claims is left out (to matching): never guessed."""
    unique = sorted(set(claims))
    crm_n = Counter(c for c, _ in unique)
    cb_n = Counter(k for _, k in unique)
    return [(c, k) for c, k in unique if crm_n[c] == 1 and cb_n[k] == 1]


def made_for(mapping: FlowMapping, cb_id: str) -> str | None:
    """The Customcrm id whose create gave a Chargebee record the id ``cb_id``, or None.

    Only for an id template made from ``{crm_id}`` alone ("crm-{crm_id}"): such an id
    says which Customcrm record it was made for, whatever the record's fields say now.
    Why: a create applied in a run whose link was never recorded (the run failed after
    the write and nobody cleared it) is found again by the next run even when the match
    key was edited in between; matching by key alone would create a second record.
    """
    parts = _made_id_parts(mapping)
    if parts is None:
        return None
    prefix, suffix = parts
    if not (cb_id.startswith(prefix) and cb_id.endswith(suffix) and len(cb_id) > len(prefix) + len(suffix)):
        return None
    crm_id = cb_id[len(prefix) : len(cb_id) - len(suffix)]
    return crm_id if chargebee_create_id(mapping, crm_id) == cb_id else None


def create_id_problem(mapping: FlowMapping, rec: SideRecord) -> Problem | None:
    """A Chargebee id made from a Customcrm field (``create_id: "{sku}"``) that Chargebee
    cannot take as it is: never renamed (the field is written back from the id, so a Sku
    "HP 11" would silently become "hp_11" and two Skus could share one id), but held."""
    template = mapping.chargebee.create_id
    if rec.side is not Side.CUSTOMCRM or template is None or "{crm_id}" in template:
        return None
    holes = [h for _, h, _, _ in string.Formatter().parse(template) if h]
    if any(rec.values.get(h) is None for h in holes):
        return None  # a blank key is reported on its own
    new_id = template.format(**{h: str(rec.values[h]) for h in holes})
    if not CB_ID_CHARS.search(new_id) and len(new_id) <= CB_CREATE_ID_MAX:
        return None
    names = ", ".join(mapping.field(h).customcrm for h in holes)
    shown = new_id if len(new_id) <= 60 else new_id[:57] + "..."
    return Problem(
        holes[0],
        f"{names} gives the Chargebee {mapping.chargebee.label} id {shown!r}, which Chargebee does not "
        f"take: at most {CB_CREATE_ID_MAX} characters, only letters, digits and _ - . @ ~; correct "
        f"{names} in Customcrm",
    )


def ref_pending_reason(mapping: FlowMapping, cb_id: str, why: str) -> str:
    """The reason of a Chargebee record that synced but for an optional reference not
    linked yet (held as ``ref_pending``): retried next run, or waiting on a person."""
    label = f"{_label(mapping, Side.CHARGEBEE)} {cb_id}"
    if needs_a_person(why):
        return f"{label}: {why[: -len(NEEDS_A_PERSON)]}; the other fields are synced{NEEDS_A_PERSON}"
    return f"{label}: {why}; the other fields are synced, this one is retried next run"


def _quarantine(
    mapping: FlowMapping, rec: SideRecord, problems: list[Problem], *, other_id: str | None = None
) -> Decision:
    reason = f"{_label(mapping, rec.side)} {rec.id}: " + "; ".join(p.message for p in problems)
    crm_id, cb_id = (rec.id, other_id) if rec.side is Side.CUSTOMCRM else (other_id, rec.id)
    return Decision(
        Action.QUARANTINE, crm_id, cb_id, reason=reason, held_side=rec.side, hold_kind=HoldKind.INVALID
    )


def _check(
    mapping: FlowMapping,
    changes: dict[str, Canonical],
    source: Side,
    record: SideRecord | None,
    link_id_other: str | None,
) -> Decision | None:
    """Quarantine the *source* record when a value it would send cannot be written."""
    if not changes or record is None:
        return None
    problems = validate(mapping, changes, source=source, target=source.other, clearing=True)
    if problems:
        return _quarantine(mapping, record, problems, other_id=link_id_other)
    return None


def pair_label(mapping: FlowMapping, crm_id: str | None, cb_id: str | None) -> str:
    """How a reason or a summary line names a pair, or the one record of it that exists:
    ``Customcrm contact CON-1 ⇄ Chargebee customer crm-CON-1``."""
    named = [
        f"{_label(mapping, side)} {rid}"
        for side, rid in ((Side.CUSTOMCRM, crm_id), (Side.CHARGEBEE, cb_id))
        if rid is not None
    ]
    return " ⇄ ".join(named) or "(no record)"


def _named(mapping: FlowMapping, notes: list[Note], crm_id: str | None, cb_id: str | None) -> list[Note]:
    """The merge's notes with the pair they are about, so the run summary can name it."""
    label = pair_label(mapping, crm_id, cb_id)
    return [replace(n, record=label) if not n.record else n for n in notes]


def _ids(rec: SideRecord) -> tuple[str | None, str | None]:
    return (rec.id, None) if rec.side is Side.CUSTOMCRM else (None, rec.id)


#: Ends the reason of a hold that no run resolves by itself (a person must act first, as
#: the reason says): such a reason does not promise that the next run retries it.
NEEDS_A_PERSON = " (until someone does, it stays held; every run checks it again)"


def needs_a_person(why: str) -> bool:
    """Whether a hold's reason waits on a person rather than on another run."""
    return why.endswith(NEEDS_A_PERSON)


def wait(mapping: FlowMapping, rec: SideRecord, why: str, *, other_id: str | None = None) -> Decision:
    """A record that cannot proceed yet; it is held and retried by the next run. When
    ``why`` ends with :data:`NEEDS_A_PERSON`, the reason says so instead of promising a retry."""
    crm_id, cb_id = _ids(rec)
    if other_id is not None:
        crm_id, cb_id = (rec.id, other_id) if rec.side is Side.CUSTOMCRM else (other_id, rec.id)
    tail = "" if needs_a_person(why) else "; it waits and is retried next run"
    return Decision(
        Action.WAIT,
        crm_id,
        cb_id,
        reason=f"{_label(mapping, rec.side)} {rec.id}: {why}{tail}",
        held_side=rec.side,
        hold_kind=HoldKind.WAITING,
    )


def _missing_key(mapping: FlowMapping, rec: SideRecord) -> Problem | None:
    missing = [k for k in mapping.match.keys if rec.values.get(k) is None]
    if not missing:
        return None
    if any(all(rec.values.get(k) is not None for k in rule) for rule in mapping.match.alternatives):
        # another rule's key identifies it (an order Chargebee has not numbered yet, by
        # its invoice): the first key is allowed to be blank
        return None
    return Problem(
        missing[0],
        f"{', '.join(mapping.source_path(mapping.field(k), rec.side) for k in missing)} is "
        f"empty; it is the match key, so the record could be a duplicate; fill it in "
        f"{'Customcrm' if rec.side is Side.CUSTOMCRM else 'Chargebee'}",
    )


def _match_key_problems(mapping: FlowMapping, rec: SideRecord) -> list[Problem]:
    """Why ``rec``'s match key cannot match anything: blank, or not valid text. With
    ``match.alternatives`` a blank first key is normal (another rule may match)."""
    if len(mapping.match.rules) > 1:
        return []
    missing = _missing_key(mapping, rec)
    if missing:
        return [missing]
    keys = list(mapping.match.keys)
    return validate(mapping, {k: rec.values.get(k) for k in keys}, source=rec.side, target=rec.side.other)


def _no_partner(mapping: FlowMapping, rec: SideRecord) -> str | None:
    """Why ``rec`` has no partner by design (the side's ``no_partner`` key names no
    person: an order created_by "system", "import" or an API key's name, by the rule of
    :mod:`crmsync.mapping.creators` with the connection's ``api_key_names``), or None."""
    path = mapping.side(rec.side).no_partner
    if path is None:
        return None
    keys = [k for k in mapping.match.keys if mapping.source_path(mapping.field(k), rec.side) == path]
    value = rec.values.get(keys[0]) if keys else None
    if not names_no_person(value, mapping.api_key_names):
        return None
    other = _label(mapping, rec.side.other)
    return (
        f"{_label(mapping, rec.side)} {rec.id}: {path} {value!r} names no {other} by design "
        "(Chargebee itself, an import or an API key made it: no person did); nothing to link"
    )


def decide_new(mapping: FlowMapping, rec: SideRecord) -> Decision:
    """An unlinked record with no match on the other side: create it there."""
    unlearned = rec.hints.get(UNLEARNED)
    if unlearned:
        # only its id is known (a business entity named by customers but in no event):
        # nothing to match or create from; the reason says what a person can do
        return Decision(Action.SKIP, *_ids(rec), reason=f"{_label(mapping, rec.side)} {rec.id}: {unlearned}")
    if rec.deleted:
        where = "Customcrm" if rec.side is Side.CUSTOMCRM else "Chargebee"
        return Decision(
            Action.SKIP,
            *_ids(rec),
            reason=f"{_label(mapping, rec.side)} {rec.id}: deleted in {where} before it was ever linked; "
            "nothing to do",
        )
    no_partner = _no_partner(mapping, rec)
    if no_partner:
        return Decision(Action.SKIP, *_ids(rec), reason=no_partner)
    if not mapping.side(rec.side.other).create:
        return _not_created(mapping, rec)
    if rec.side is Side.CUSTOMCRM:
        missing_req = [k for k in mapping.chargebee.create_requires if rec.values.get(k) is None]
        if missing_req:
            names = ", ".join(mapping.field(k).customcrm for k in missing_req)
            why = mapping.chargebee.create_requires_reason or (
                f"Chargebee needs {names} to create a {mapping.chargebee.label}"
            )
            return wait(mapping, rec, f"{names} is empty: {why}; fill it in Customcrm{NEEDS_A_PERSON}")
    return _create(mapping, rec)


def _not_created(mapping: FlowMapping, rec: SideRecord) -> Decision:
    """A record without a match, on a side whose partner this flow does not create."""
    target = mapping.side(rec.side.other)
    # No match may be the record's own fault: a blank or broken match key is held
    # with that reason, not reported as a record the other side lacks.
    problems = _match_key_problems(mapping, rec)
    if problems:
        return _quarantine(mapping, rec, problems)
    why = target.create_disabled_reason or f"this flow does not create records in {rec.side.other.value}"
    if not target.create_disabled_waits:
        return Decision(
            Action.SKIP, *_ids(rec), reason=f"{_label(mapping, rec.side)} {rec.id}: no match; {why}"
        )
    # the other side makes the partner itself (an order from its invoice): held for a
    # person until it appears, then linked by a match rule
    lacking = [
        mapping.field(k).customcrm
        for k in (mapping.chargebee.create_requires if rec.side is Side.CUSTOMCRM else ())
        if rec.values.get(k) is None
    ]
    if lacking:
        why = f"{', '.join(lacking)} is empty: {why}; fill it in Customcrm"
    else:
        why = f"no {target.label} matches it yet; {why}"
    return wait(mapping, rec, f"{why}{NEEDS_A_PERSON}")


def _create(mapping: FlowMapping, rec: SideRecord) -> Decision:
    """Create the record on the other side, or hold it with every reason it cannot be.
    A create carries the fields that flow into the other side (and what it requires),
    never a field that side cannot take."""
    target_side = rec.side.other
    required = set(mapping.chargebee.create_requires) if target_side is Side.CHARGEBEE else set()
    values: dict[str, Canonical] = {
        f.name: rec.values[f.name]
        for f in mapping.fields
        if rec.values.get(f.name) is not None
        and (
            f.direction.writes(target_side)
            or f.name in required
            or (f.on_create and target_side is Side.CHARGEBEE)
        )
    }
    problems = validate(mapping, values, source=rec.side, target=target_side)
    missing = _missing_key(mapping, rec)
    if missing:
        problems.insert(0, missing)
    bad_id = create_id_problem(mapping, rec)
    if bad_id:
        problems.append(bad_id)
    if problems:
        return _quarantine(mapping, rec, problems)
    write = SideWrite(Op.CREATE, values)
    if rec.side is Side.CUSTOMCRM:
        return Decision(Action.CREATE, rec.id, None, merged=dict(rec.values), cb_write=write)
    return Decision(Action.CREATE, None, rec.id, merged=dict(rec.values), crm_write=write)


def made_base(mapping: FlowMapping, made: SideRecord) -> CanonicalRecord:
    """The base a pair starts from when ``made`` is a record this sync created from its
    partner, found again after the run that made it failed before recording the link.

    It is the base that run's ``update_links`` would have recorded (``links._base_after``):
    for every field the create could not set (it does not flow into the made record's
    side: a customer's business entity, which Chargebee assigns by default), the made
    record's own value; the other fields have no base and merge as a first link. Without
    it, Chargebee's default entity read as an edit made in Chargebee and its company was
    written into contacts that have none, which a crash-free run never does.
    """
    return {f.name: made.values.get(f.name) for f in mapping.fields if not f.direction.writes(made.side)}


def decide_survivor(mapping: FlowMapping, rec: SideRecord) -> Decision:
    """An unlinked record whose partner was deleted under policy ``unlink`` and that no
    record of the other side matches now: it is not re-created where it was deleted."""
    deleted_in = "Customcrm" if rec.side is Side.CHARGEBEE else "Chargebee"
    keys = ", ".join(mapping.source_path(mapping.field(k), rec.side.other) for k in mapping.match.keys)
    return Decision(
        Action.SKIP,
        *_ids(rec),
        reason=f"{_label(mapping, rec.side)} {rec.id}: its linked {deleted_in} record was deleted and the "
        f"delete policy is unlink, so it is not re-created in {deleted_in}; to sync it again, create a "
        f"{deleted_in} record with the same {keys} (it is linked by match)",
    )


def decide_match(
    mapping: FlowMapping, crm: SideRecord, cb: SideRecord, base: CanonicalRecord | None = None
) -> Decision:
    """Two unlinked records with the same match key (or a record this sync made and its
    source, with :func:`made_base`): link them and merge against ``base`` (none: a first link)."""
    result = merge(
        mapping, base, crm.values, cb.values, crm_updated_at=crm.updated_at, cb_updated_at=cb.updated_at
    )
    for source, changes, rec, other in (
        (Side.CUSTOMCRM, result.to_chargebee, crm, cb.id),
        (Side.CHARGEBEE, result.to_customcrm, cb, crm.id),
    ):
        held = _check(mapping, changes, source, rec, other)
        if held:
            return held
    return Decision(
        Action.LINK_BY_MATCH,
        crm.id,
        cb.id,
        merged=result.merged,
        notes=_named(mapping, result.notes, crm.id, cb.id),
        crm_write=SideWrite(Op.UPDATE, result.to_customcrm, crm.version) if result.to_customcrm else None,
        cb_write=SideWrite(Op.UPDATE, result.to_chargebee, cb.version) if result.to_chargebee else None,
        conflicts=result.conflicts,
    )


@dataclass(frozen=True)
class DeleteDecision:
    """A person's decision on a delete held under policy ``approve`` (read from the
    quarantine by ``crmsync.store.approvals``): approve = propagate, reject = unlink."""

    approve: bool
    by: str


def decide_linked(
    mapping: FlowMapping,
    link: LinkState,
    crm: SideRecord | None,
    cb: SideRecord | None,
    approval: DeleteDecision | None = None,
) -> Decision:
    """A linked pair where at least one side was staged (changed since the watermark).
    ``approval``: the decision on this pair's delete when it is held under policy
    ``approve`` (None: nobody decided yet, or no delete is held)."""
    crm_deleted = crm is not None and crm.deleted
    cb_deleted = cb is not None and cb.deleted
    if crm_deleted or cb_deleted:
        return _decide_delete(mapping, link, crm, cb, crm_deleted, cb_deleted, approval)

    crm_values = crm.values if crm else link.crm_snapshot
    cb_values = cb.values if cb else link.cb_snapshot
    crm_version = crm.version if crm else link.crm_version
    cb_version = cb.version if cb else link.cb_version
    result = merge(
        mapping,
        link.base,
        crm_values,
        cb_values,
        crm_updated_at=crm.updated_at if crm else link.crm_updated_at,
        cb_updated_at=cb.updated_at if cb else link.cb_updated_at,
    )
    for source, changes, rec, other in (
        (Side.CUSTOMCRM, result.to_chargebee, crm, link.cb_id),
        (Side.CHARGEBEE, result.to_customcrm, cb, link.crm_id),
    ):
        held = _check(mapping, changes, source, rec, other)
        if held:
            return held
    action = Action.UPDATE if result.writes else Action.UNCHANGED
    return Decision(
        action,
        link.crm_id,
        link.cb_id,
        merged=result.merged,
        notes=_named(mapping, result.notes, link.crm_id, link.cb_id),
        crm_write=SideWrite(Op.UPDATE, result.to_customcrm, crm_version) if result.to_customcrm else None,
        cb_write=SideWrite(Op.UPDATE, result.to_chargebee, cb_version) if result.to_chargebee else None,
        conflicts=result.conflicts,
    )


@dataclass(frozen=True)
class _Deleted:
    """A linked pair one side of which was deleted, as the delete reasons name it."""

    link: LinkState
    crm: SideRecord | None
    cb: SideRecord | None
    deleted_on: Side
    gone: str  # "Customcrm contact 42"
    kept: str  # "Chargebee customer crm-42"
    where: str  # "Customcrm"

    @property
    def survivor(self) -> Side:
        return self.deleted_on.other


def _decide_delete(
    mapping: FlowMapping,
    link: LinkState,
    crm: SideRecord | None,
    cb: SideRecord | None,
    crm_deleted: bool,
    cb_deleted: bool,
    approval: DeleteDecision | None = None,
) -> Decision:
    if crm_deleted and cb_deleted:
        pair = pair_label(mapping, link.crm_id, link.cb_id)
        return Decision(
            Action.UNLINK,
            link.crm_id,
            link.cb_id,
            reason=f"{pair}: deleted on both sides; the link is ended",
            deleted_on=(Side.CUSTOMCRM, Side.CHARGEBEE),
        )
    deleted_on = Side.CUSTOMCRM if crm_deleted else Side.CHARGEBEE
    decision = _decide_one_deleted(mapping, link, crm, cb, deleted_on, approval)
    return replace(decision, deleted_on=(deleted_on,))


def _decide_one_deleted(
    mapping: FlowMapping,
    link: LinkState,
    crm: SideRecord | None,
    cb: SideRecord | None,
    deleted_on: Side,
    approval: DeleteDecision | None,
) -> Decision:
    """A linked pair whose ``deleted_on`` record was deleted: the side's delete policy."""
    crm_deleted = deleted_on is Side.CUSTOMCRM
    d = _Deleted(
        link,
        crm,
        cb,
        deleted_on,
        gone=f"{_label(mapping, deleted_on)} {link.crm_id if crm_deleted else link.cb_id}",
        kept=f"{_label(mapping, deleted_on.other)} {link.cb_id if crm_deleted else link.crm_id}",
        where="Customcrm" if deleted_on is Side.CUSTOMCRM else "Chargebee",
    )
    policy = mapping.delete.policy_for(deleted_on)
    if policy is DeletePolicy.APPROVE:
        return decide_approval(mapping, d, approval)
    if policy is DeletePolicy.PROPAGATE:
        return _propagate(
            d, f"{d.gone} was deleted in {d.where}; the delete policy propagate deletes {d.kept}"
        )
    if policy is DeletePolicy.RESTORE:
        return _restore(d)
    return _unlink(mapping, d, f"{d.gone} was deleted in {d.where}; its link was ended by the unlink policy")


def decide_approval(mapping: FlowMapping, d: _Deleted, approval: DeleteDecision | None) -> Decision:
    """A delete under policy ``approve``: held until a person decides, then carried out
    as ``propagate`` (approved) or ``unlink`` (rejected), naming who decided.

    Held, nothing is written and the link stays: the deleted record is held (kind
    ``approval``, on the deleted side, so an undelete re-reads it live and ends the hold)
    and every run holds it again until the decision is recorded.
    """
    if approval is None:
        return Decision(
            Action.QUARANTINE,
            d.link.crm_id,
            d.link.cb_id,
            reason=f"{d.gone} was deleted in {d.where}; the delete policy approve holds the delete of "
            f"{d.kept} for a person's decision (nothing is written, the link stays): approve it "
            f"(deletes {d.kept}) or reject it (keeps {d.kept}, ends the link) in the Sync page, or "
            f"crmsync.store.approvals{NEEDS_A_PERSON}",
            held_side=d.deleted_on,
            hold_kind=HoldKind.APPROVAL,
        )
    if approval.approve:
        why = f"{d.gone} was deleted in {d.where}; {approval.by} approved the delete, so {d.kept} is deleted"
        return replace(_propagate(d, why), decided_by=approval.by)
    why = f"{d.gone} was deleted in {d.where}; {approval.by} rejected the delete, so its link was ended"
    return replace(_unlink(mapping, d, why), decided_by=approval.by)


def _propagate(d: _Deleted, reason: str) -> Decision:
    write = SideWrite(Op.DELETE, {})
    if d.survivor is Side.CUSTOMCRM:
        write.if_version = d.crm.version if d.crm else d.link.crm_version
        return Decision(Action.DELETE, d.link.crm_id, d.link.cb_id, crm_write=write, reason=reason)
    return Decision(Action.DELETE, d.link.crm_id, d.link.cb_id, cb_write=write, reason=reason)


def _restore(d: _Deleted) -> Decision:
    crm, cb, link = d.crm, d.cb, d.link
    survivor_values = (
        (cb.values if cb else link.cb_snapshot)
        if d.survivor is Side.CHARGEBEE
        else (crm.values if crm else link.crm_snapshot)
    )
    values: dict[str, Canonical] = {k: v for k, v in survivor_values.items() if v is not None}
    write = SideWrite(Op.CREATE, values)
    reason = f"{d.gone} was deleted in {d.where}; the delete policy restore re-creates it from {d.kept}"
    if d.deleted_on is Side.CUSTOMCRM:
        return Decision(
            Action.RESTORE, None, link.cb_id, merged=dict(survivor_values), crm_write=write, reason=reason
        )
    return Decision(
        Action.RESTORE, link.crm_id, None, merged=dict(survivor_values), cb_write=write, reason=reason
    )


def _unlink(mapping: FlowMapping, d: _Deleted, why: str) -> Decision:
    keys = ", ".join(mapping.source_path(mapping.field(k), d.deleted_on) for k in mapping.match.keys)
    return Decision(
        Action.UNLINK,
        d.link.crm_id,
        d.link.cb_id,
        reason=f"{why} and {d.kept} is kept (it is not re-created in {d.where}; a new {d.where} record "
        f"with the same {keys} is linked to it by match)",
    )


def ambiguous(
    mapping: FlowMapping, rec: SideRecord, candidates: list[str], why: str, fix: str | None = None
) -> Decision:
    """A record whose match key points at more than one record, or at a linked one."""
    fix = fix or "merge or correct the duplicates so that one record per side carries the match key"
    keys = ", ".join(mapping.source_path(mapping.field(k), rec.side) for k in mapping.match.keys)
    reason = f"{_label(mapping, rec.side)} {rec.id}: {why} ({', '.join(candidates)}); {fix} ({keys})"
    crm_id, cb_id = (rec.id, None) if rec.side is Side.CUSTOMCRM else (None, rec.id)
    return Decision(
        Action.QUARANTINE, crm_id, cb_id, reason=reason, held_side=rec.side, hold_kind=HoldKind.AMBIGUOUS
    )
