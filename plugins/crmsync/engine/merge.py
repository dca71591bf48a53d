"""Three-way merge of one linked pair, field by field. Pure: no I/O.

With base B (the canonical snapshot both sides agreed on at the last sync), Customcrm
now C and Chargebee now K, for each field:

* C == K: settled, nothing to write (this is also how echoes of our own writes vanish);
* only one side differs from B: that side's edit wins and is written to the other;
* both differ from B (and from each other): a conflict, resolved by the flow's policy
  and reported for the audit.

**A clear is an edit.** A field whose synced value (B) was non-empty and that one side
has cleared while the other still holds B is cleared on the other side too, and
reported (note ``cleared``); a clear on one side against a new value on the other is a
conflict like any other. Three things keep a blank from doing harm:

* a blank that was never synced (B empty, or no base: a first link by match) never
  overwrites: it is no edit, so the other side's value fills it;
* a field *absent* from a record (the key missing from the side's canonical values,
  see :func:`crmsync.engine.canonical.to_canonical`) is unknown, never a clear: it
  reads as unchanged since B, so nothing flows from it and the other side's edit (or,
  with nothing synced, its value) still reaches it;
* ``empty_overwrites: false`` on a field restores the old protection: a blank never
  overwrites there (reported as ``blank_ignored``; the non-empty value stays merged).
  ``true`` lets a blank overwrite even where nothing was synced before (a one-way
  field's blank source restored over an edit). Mass clearing is the circuit breaker's
  job: every clear is a write and counts there.

*Direction*: a field that may only flow one way has its edits on the other side reverted
by writing the source side's value back (``read_only_edits: restore``) or kept and
reported (``keep``); either way the source's value stays the merged value, so a kept
value never becomes a base that the source would later read as cleared.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from crmsync.engine.canonical import CanonicalRecord
from crmsync.mapping.model import ConflictPolicy, FieldMap, ReadOnlyEdits, Side
from crmsync.mapping.model import Mapping as FlowMapping
from crmsync.mapping.transforms import Canonical


@dataclass(frozen=True)
class Conflict:
    """Both sides changed one field to different values; ``winner`` says whose value stays."""

    field: str
    base: Canonical
    customcrm: Canonical
    chargebee: Canonical
    winner: Side
    rule: str  # newest_wins | customcrm_wins | chargebee_wins | tie_breaker | empty_never_overwrites


@dataclass(frozen=True)
class Note:
    """Something the merge did that a person should be able to see in the run summary."""

    field: str
    kind: str  # cleared | blank_ignored | reverted_read_only | kept_read_only_edit
    side: Side
    message: str
    #: the pair it is about ("Customcrm contact CON-1 ⇄ Chargebee customer crm-CON-1"),
    #: filled in by the plan (the merge sees values, not ids): a summary line names it
    record: str = ""


@dataclass
class MergeResult:
    merged: CanonicalRecord
    to_customcrm: dict[str, Canonical] = field(default_factory=dict)
    to_chargebee: dict[str, Canonical] = field(default_factory=dict)
    conflicts: list[Conflict] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)

    @property
    def writes(self) -> bool:
        return bool(self.to_customcrm or self.to_chargebee)

    def changes_for(self, side: Side) -> dict[str, Canonical]:
        return self.to_customcrm if side is Side.CUSTOMCRM else self.to_chargebee


def _resolve(mapping: FlowMapping, crm_updated_at: float, cb_updated_at: float) -> tuple[Side, str]:
    policy = mapping.conflict.policy
    if policy is ConflictPolicy.CUSTOMCRM_WINS:
        return Side.CUSTOMCRM, policy.value
    if policy is ConflictPolicy.CHARGEBEE_WINS:
        return Side.CHARGEBEE, policy.value
    if crm_updated_at > cb_updated_at:
        return Side.CUSTOMCRM, policy.value
    if cb_updated_at > crm_updated_at:
        return Side.CHARGEBEE, policy.value
    return mapping.conflict.tie_breaker, "tie_breaker"


def blank_overwrites(f: FieldMap, base_value: Canonical) -> bool:
    """Whether a blank on one side may replace the other side's value of field ``f``.

    Unset ``empty_overwrites`` (the default): only where the field had a synced
    non-empty value, i.e. the blank is a clear; ``false``: never; ``true``: always.
    """
    if f.empty_overwrites is None:
        return base_value is not None
    return f.empty_overwrites


def _known(name: str, values: Mapping[str, Canonical], base: Mapping[str, Canonical]) -> Canonical:
    """A side's value of a field, or, when the side did not return the field (unknown,
    never a clear), the synced value: read as unchanged, so nothing flows from it and the
    other side's edit (or, with nothing synced, its value) still reaches it."""
    return values[name] if name in values else base.get(name)


def merge(
    mapping: FlowMapping,
    base: Mapping[str, Canonical] | None,
    crm: Mapping[str, Canonical],
    cb: Mapping[str, Canonical],
    *,
    crm_updated_at: float = 0.0,
    cb_updated_at: float = 0.0,
) -> MergeResult:
    """Merge one pair. ``base`` None means the pair is new (first link by match).

    A field missing from ``crm`` or ``cb`` (not the value None: the key) is unknown on
    that side and never read as a clear.
    """
    base = base or {}
    result = MergeResult(merged={})
    for f in mapping.fields:
        _merge_field(mapping, f, base, crm, cb, (crm_updated_at, cb_updated_at), result)
    return result


def _merge_field(
    mapping: FlowMapping,
    f: FieldMap,
    base: Mapping[str, Canonical],
    crm: Mapping[str, Canonical],
    cb: Mapping[str, Canonical],
    updated_at: tuple[float, float],
    result: MergeResult,
) -> None:
    """One field of the pair: its merged value, the write to the side that lost (if
    any), and the conflict or note a person should see."""
    b = base.get(f.name)
    if f.name not in crm and f.name not in cb:
        result.merged[f.name] = b
        return
    c, k = _known(f.name, crm, base), _known(f.name, cb, base)
    if c == k:
        result.merged[f.name] = c
        return
    winner = _winner(mapping, f, b, c, k, updated_at, result)
    value, other = (c, k) if winner is Side.CUSTOMCRM else (k, c)
    loser = winner.other
    # A blank on the side a one-way field does not flow from is an edit like any other
    # there: with read_only_edits restore the source's value is written back (below).
    restore_blank = (
        not f.direction.writes(loser)
        and (f.read_only_edits or mapping.read_only_edits) is ReadOnlyEdits.RESTORE
    )
    if value is None and not blank_overwrites(f, b) and not restore_blank:
        _keep_over_blank(f, winner, other, result)
    elif not f.direction.writes(loser):
        _one_way_edit(mapping, f, b, winner, other, result)
    else:
        result.merged[f.name] = value
        result.changes_for(loser)[f.name] = value
        if value is None:
            result.notes.append(
                Note(
                    f.name,
                    "cleared",
                    winner,
                    f"{f.name} was cleared in {winner.value}, so it is cleared in {loser.value} too "
                    "(set empty_overwrites: false on the field to keep the other side's value)",
                )
            )


def _winner(
    mapping: FlowMapping,
    f: FieldMap,
    b: Canonical,
    c: Canonical,
    k: Canonical,
    updated_at: tuple[float, float],
    result: MergeResult,
) -> Side:
    """Whose value of a field that differs stands: the only side that changed it, else
    (both changed: a conflict, recorded) the policy, where a blank that may not
    overwrite loses to a value."""
    c_changed, k_changed = c != b, k != b
    if c_changed and not k_changed:
        return Side.CUSTOMCRM
    if k_changed and not c_changed:
        return Side.CHARGEBEE
    if c is None and not blank_overwrites(f, b):
        winner, rule = Side.CHARGEBEE, "empty_never_overwrites"
    elif k is None and not blank_overwrites(f, b):
        winner, rule = Side.CUSTOMCRM, "empty_never_overwrites"
    else:
        winner, rule = _resolve(mapping, *updated_at)
    result.conflicts.append(Conflict(f.name, b, c, k, winner, rule))
    return winner


def _keep_over_blank(f: FieldMap, winner: Side, kept: Canonical, result: MergeResult) -> None:
    """The winner blanked the field and blanks do not overwrite here: the loser's value
    stays the merged value and the blanked side is left as it is."""
    result.merged[f.name] = kept
    why = (
        "the field says empty_overwrites: false"
        if f.empty_overwrites is False
        else "it was never synced with a value"
    )
    result.notes.append(
        Note(
            f.name,
            "blank_ignored",
            winner,
            f"{f.name} is blank in {winner.value}; the {winner.other.value} value is kept ({why})",
        )
    )


def _one_way_edit(
    mapping: FlowMapping,
    f: FieldMap,
    b: Canonical,
    winner: Side,
    source_value: Canonical,
    result: MergeResult,
) -> None:
    """The edit happened on the side that is not a source for this field: the source
    side's value stands and is written back over the edit (restore), or the edit is kept
    and reported (keep). A blank source overwrites only where blanks do (a clear of a
    synced value). Either way the source's value stays the merged value (the next base),
    so a kept value never becomes a base that the source would later read as cleared."""
    loser = winner.other
    flows = f.direction.value.replace("_", " ")
    result.merged[f.name] = source_value
    policy = f.read_only_edits or mapping.read_only_edits
    if (source_value is None and not blank_overwrites(f, b)) or policy is ReadOnlyEdits.KEEP:
        result.notes.append(
            Note(
                f.name,
                "kept_read_only_edit" if source_value is not None else "blank_ignored",
                winner,
                f"{f.name} was edited in {winner.value}, but it only flows {flows} and "
                f"{loser.value} cannot take it; the edit is kept on that side and not synced",
            )
        )
        return
    result.changes_for(winner)[f.name] = source_value
    result.notes.append(
        Note(
            f.name,
            "reverted_read_only",
            winner,
            f"{f.name} was edited in {winner.value}, but it only flows {flows}: by the mapping's "
            f"policy (read_only_edits: restore) the {loser.value} value was written back",
        )
    )
