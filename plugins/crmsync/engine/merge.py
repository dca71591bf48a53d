"""Three-way merge of one linked pair, field by field. Pure: no I/O.

With base B (the canonical snapshot both sides agreed on at the last sync), Customcrm
now C and Chargebee now K, for each field:

* C == K: settled, nothing to write (this is also how echoes of our own writes vanish);
* only one side differs from B: that side's edit wins and is written to the other;
* both differ from B (and from each other): a conflict, resolved by the flow's policy
  and reported for the audit.

Two rules bend this. *Empty never overwrites*: unless the field says
``empty_overwrites``, a side that blanked a field does not blank the other side (the
blank is reported, and the non-empty value stays the merged value). *Direction*: a
field that may only flow one way has its edits on the other side reverted by writing
the source side's value back, and that is reported per record, never silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from crmsync.engine.canonical import CanonicalRecord
from crmsync.mapping.model import ConflictPolicy, ReadOnlyEdits, Side
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
    kind: str  # blank_ignored | reverted_read_only
    side: Side
    message: str


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


def merge(
    mapping: FlowMapping,
    base: Mapping[str, Canonical] | None,
    crm: Mapping[str, Canonical],
    cb: Mapping[str, Canonical],
    *,
    crm_updated_at: float = 0.0,
    cb_updated_at: float = 0.0,
) -> MergeResult:
    """Merge one pair. ``base`` None means the pair is new (first link by match)."""
    base = base or {}
    result = MergeResult(merged={})
    for f in mapping.fields:
        b, c, k = base.get(f.name), crm.get(f.name), cb.get(f.name)
        if c == k:
            result.merged[f.name] = c
            continue
        c_changed, k_changed = c != b, k != b
        rule: str | None = None
        if c_changed and not k_changed:
            winner = Side.CUSTOMCRM
        elif k_changed and not c_changed:
            winner = Side.CHARGEBEE
        elif c is None and not f.empty_overwrites:
            winner, rule = Side.CHARGEBEE, "empty_never_overwrites"
        elif k is None and not f.empty_overwrites:
            winner, rule = Side.CUSTOMCRM, "empty_never_overwrites"
        else:
            winner, rule = _resolve(mapping, crm_updated_at, cb_updated_at)
        if rule is not None:
            result.conflicts.append(Conflict(f.name, b, c, k, winner, rule))

        value = c if winner is Side.CUSTOMCRM else k
        loser = winner.other
        # A blank on the side a one-way field does not flow from is an edit like any other
        # there: with read_only_edits restore the source's value is written back (below).
        restore_blank = (
            not f.direction.writes(loser)
            and (f.read_only_edits or mapping.read_only_edits) is ReadOnlyEdits.RESTORE
        )
        if value is None and not f.empty_overwrites and not restore_blank:
            # The winner blanked the field: keep the loser's value as the merged value
            # and leave the blanked side as it is.
            kept = k if winner is Side.CUSTOMCRM else c
            result.merged[f.name] = kept
            result.notes.append(
                Note(
                    f.name,
                    "blank_ignored",
                    winner,
                    f"{f.name} was blanked in {winner.value}; the {loser.value} value is kept "
                    "(set empty_overwrites: true on the field to propagate blanks)",
                )
            )
            continue
        if not f.direction.writes(loser):
            # The edit happened on the side that is not a source for this field: the
            # source side's value stands and is written back over the edit (restore),
            # or the edit is kept and reported (keep). A blank source never overwrites.
            source_value = k if winner is Side.CUSTOMCRM else c
            policy = f.read_only_edits or mapping.read_only_edits
            if (source_value is None and not f.empty_overwrites) or policy is ReadOnlyEdits.KEEP:
                result.merged[f.name] = source_value if source_value is not None else value
                result.notes.append(
                    Note(
                        f.name,
                        "kept_read_only_edit" if source_value is not None else "blank_ignored",
                        winner,
                        f"{f.name} was edited in {winner.value}, but it only flows "
                        f"{f.direction.value.replace('_', ' ')} and {loser.value} cannot take it; "
                        "the edit is kept on that side and not synced",
                    )
                )
                continue
            result.merged[f.name] = source_value
            result.changes_for(winner)[f.name] = source_value
            result.notes.append(
                Note(
                    f.name,
                    "reverted_read_only",
                    winner,
                    f"{f.name} was edited in {winner.value}, but it only flows "
                    f"{f.direction.value.replace('_', ' ')}; the {loser.value} value was written back",
                )
            )
            continue
        result.merged[f.name] = value
        result.changes_for(loser)[f.name] = value
    return result
