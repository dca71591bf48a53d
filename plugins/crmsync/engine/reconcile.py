"""The reconciliation report: where the two systems disagree and the sync has not settled
it. Pure: typed values in, typed values out, no I/O.

A reconcile run (the ``reconcile`` Param, ``make reconcile``) reads both sides in full and
writes nothing. Its report says, per flow:

* **differences**: for every linked pair, each mapped field whose canonical values differ
  (compared as the merge compares them: a field a side did not return is unknown, never a
  difference; a reference is compared as the Customcrm id it is linked to). Each says what
  a full sync would do with it, decided by the engine itself
  (:func:`crmsync.engine.plan.decide_linked`): write one side's value to the other, hold
  the pair (with the reason), or leave it (a one-way field whose edit the policy keeps, a
  blank that does not overwrite). A side whose value changed although its version is the
  one the link recorded was changed behind the sync's back: an incremental run does not
  read it (its watermark is past it), only a full resync does;
* **missing**: a linked record a full read of its side did not return, or returned deleted;
* **unlinked** records on each side, with the quarantine's reason when it holds them;
* **duplicates**: records of one side sharing a match key (a one-to-many flow's many side
  shares its key by design and is not reported).

Only the flow's mapped fields are compared: what a flow does not own (a Chargebee field the
writer re-sends untouched, a Customcrm field outside the mapping) is not the sync's to
settle.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from crmsync.engine.canonical import SideRecord
from crmsync.engine.plan import Action, LinkState, decide_linked
from crmsync.engine.plan_text import show
from crmsync.mapping.model import Cardinality, Side
from crmsync.mapping.model import Mapping as FlowMapping
from crmsync.mapping.transforms import Canonical

#: how many items of each list the run summary keeps (the task log shows more, see LOG_MAX)
LISTED = 200
#: the most lines one task log holds (as a dry run's plan)
LOG_MAX = 5000


class Verdict(StrEnum):
    """What a full sync would do with a difference."""

    TO_CUSTOMCRM = "to_customcrm"  # writes the Chargebee value to Customcrm
    TO_CHARGEBEE = "to_chargebee"  # writes the Customcrm value to Chargebee
    HELD = "held"  # holds the pair (invalid value, reference not linked): nothing is written
    LEFT = "left"  # leaves the difference (a policy keeps it): no run settles it


@dataclass(frozen=True)
class FieldDiff:
    """One mapped field of a linked pair whose two sides disagree."""

    crm_id: str
    cb_id: str
    field: str
    customcrm: Canonical
    chargebee: Canonical
    verdict: Verdict
    why: str
    #: sides whose value changed while their version stayed the one the link recorded
    unseen: tuple[Side, ...] = ()


@dataclass(frozen=True)
class Missing:
    """A linked record that a full read of its side did not return, or returned deleted."""

    crm_id: str
    cb_id: str
    side: Side
    deleted: bool


@dataclass(frozen=True)
class Unlinked:
    """A record of one side that no link holds."""

    side: Side
    id: str
    match_key: str | None
    why: str
    hold_kind: str | None = None


@dataclass(frozen=True)
class Duplicate:
    """Records of one side with the same match key."""

    side: Side
    match_key: str
    ids: tuple[str, ...]


def _changed_unseen(link: LinkState, rec: SideRecord, name: str) -> bool:
    """Whether ``rec`` holds a value of ``name`` other than its link snapshot although its
    version is the one the link recorded (an edit no incremental extract reads)."""
    snapshot = link.crm_snapshot if rec.side is Side.CUSTOMCRM else link.cb_snapshot
    version = link.crm_version if rec.side is Side.CUSTOMCRM else link.cb_version
    if name not in snapshot or version is None or rec.version is None:
        return False
    return rec.values.get(name) != snapshot[name] and str(rec.version) == str(version)


def _verdict(name: str, written: dict[Side, set[str]], notes: dict[str, str]) -> tuple[Verdict, str]:
    if name in written[Side.CHARGEBEE]:
        return Verdict.TO_CHARGEBEE, "a full sync writes the Customcrm value to Chargebee"
    if name in written[Side.CUSTOMCRM]:
        return Verdict.TO_CUSTOMCRM, "a full sync writes the Chargebee value to Customcrm"
    why = notes.get(name) or ("the sync leaves it: neither side's value reads as an edit since the last sync")
    return Verdict.LEFT, why


def compare_pair(
    mapping: FlowMapping, link: LinkState, crm: SideRecord | None, cb: SideRecord | None
) -> list[FieldDiff | Missing]:
    """A linked pair as both sides hold it now: nothing when they agree on every mapped
    field both returned; else each difference with what a full sync would do, or the
    side that is missing or deleted."""
    gone = [
        Missing(link.crm_id, link.cb_id, side, rec is not None)
        for side, rec in ((Side.CUSTOMCRM, crm), (Side.CHARGEBEE, cb))
        if rec is None or rec.deleted
    ]
    if gone or crm is None or cb is None:
        return list(gone)
    differing = [
        f.name
        for f in mapping.fields
        if f.name in crm.values and f.name in cb.values and crm.values[f.name] != cb.values[f.name]
    ]
    if not differing:
        return []
    decision = decide_linked(mapping, link, crm, cb)
    held = decision.action in (Action.QUARANTINE, Action.WAIT)
    written = {
        side: set(w.changes) if (w := decision.write_for(side)) is not None else set() for side in Side
    }
    notes = {n.field: n.message for n in decision.notes}
    rules = {
        c.field: f" (changed on both sides: {c.winner.value} wins by {c.rule})" for c in decision.conflicts
    }
    out: list[FieldDiff | Missing] = []
    for name in differing:
        if held:
            verdict, why = Verdict.HELD, f"a full sync holds the pair: {decision.reason or 'see its summary'}"
        else:
            verdict, why = _verdict(name, written, notes)
        unseen = tuple(r.side for r in (crm, cb) if _changed_unseen(link, r, name))
        out.append(
            FieldDiff(
                link.crm_id,
                link.cb_id,
                name,
                crm.values[name],
                cb.values[name],
                verdict,
                why + rules.get(name, ""),
                unseen,
            )
        )
    return out


def unlinked(
    mapping: FlowMapping,
    side: Side,
    rec_id: str,
    match_key: str | None,
    hold_kind: str | None = None,
    hold_reason: str | None = None,
) -> Unlinked:
    """An unlinked record and why: the quarantine's reason when it holds the record, else
    what the next sync does with it."""
    if hold_reason:
        return Unlinked(side, rec_id, match_key, hold_reason, hold_kind)
    other = mapping.side(side.other)
    system = "Chargebee" if side.other is Side.CHARGEBEE else "Customcrm"
    if not other.create:
        why = f"not held; the sync creates no {system} {other.label} records" + (
            f" ({other.create_disabled_reason})" if other.create_disabled_reason else ""
        )
    elif match_key is None:
        why = "not held; it has no match key, so the next sync creates it in " + system
    else:
        why = f"not held; the next sync links it by match key or creates it in {system}"
    return Unlinked(side, rec_id, match_key, why)


def duplicate_sides(mapping: FlowMapping) -> tuple[Side, ...]:
    """The sides where a shared match key is a likely duplicate: both, except the many side
    of a one-to-many flow (a user's orders all carry the user's key)."""
    if mapping.cardinality is Cardinality.ONE_TO_MANY:
        return (Side.CUSTOMCRM,)
    return (Side.CUSTOMCRM, Side.CHARGEBEE)


def duplicates(mapping: FlowMapping, groups: Iterable[tuple[Side, str, Iterable[str]]]) -> list[Duplicate]:
    """``(side, match key, ids)`` groups → the likely duplicates among them (two ids or more,
    on a side where a shared key is one)."""
    sides = duplicate_sides(mapping)
    out = []
    for side, key, ids in groups:
        unique = tuple(sorted(set(ids)))
        if side in sides and len(unique) > 1:
            out.append(Duplicate(side, key, unique))
    return out


@dataclass
class Report:
    """The report of one flow, accumulated as the pairs stream by: every item counted, the
    first :data:`LOG_MAX` of each kind kept (the summary keeps fewer, see :meth:`as_json`)."""

    mapping: FlowMapping
    pairs: int = 0
    differences: list[FieldDiff] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)
    unlinked: list[Unlinked] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    pairs_differing: set[tuple[str, str]] = field(default_factory=set)

    def _count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def add_pair(self, findings: list[FieldDiff | Missing]) -> None:
        self.pairs += 1
        for item in findings:
            if isinstance(item, Missing):
                self._count(f"missing_{item.side.value}")
                if len(self.missing) < LOG_MAX:
                    self.missing.append(item)
                continue
            self.pairs_differing.add((item.crm_id, item.cb_id))
            self._count("fields_differing")
            self._count(f"verdict_{item.verdict.value}")
            self._count("unseen_edits", bool(item.unseen))
            if len(self.differences) < LOG_MAX:
                self.differences.append(item)

    def add_unlinked(self, item: Unlinked) -> None:
        self._count(f"unlinked_{item.side.value}")
        if len(self.unlinked) < LOG_MAX:
            self.unlinked.append(item)

    def add_duplicates(self, items: Iterable[Duplicate]) -> None:
        for item in items:
            self._count(f"duplicates_{item.side.value}")
            if len(self.duplicates) < LOG_MAX:
                self.duplicates.append(item)

    def totals(self) -> dict[str, Any]:
        c = self.counts
        return {
            "linked_pairs": self.pairs,
            "pairs_differing": len(self.pairs_differing),
            "fields_differing": c.get("fields_differing", 0),
            "by_verdict": {v.value: c.get(f"verdict_{v.value}", 0) for v in Verdict},
            "unseen_edits": c.get("unseen_edits", 0),
            "missing": {s.value: c.get(f"missing_{s.value}", 0) for s in Side},
            "unlinked": {s.value: c.get(f"unlinked_{s.value}", 0) for s in Side},
            "duplicate_keys": {s.value: c.get(f"duplicates_{s.value}", 0) for s in Side},
        }

    def as_json(self, limit: int = LISTED) -> dict[str, Any]:
        """The counts and the first ``limit`` items of each list, JSON-ready."""
        return {
            "flow": self.mapping.flow,
            "labels": {s.value: self.mapping.side(s).label for s in Side},
            "counts": self.totals(),
            "differences": [_diff_json(d) for d in self.differences[:limit]],
            "missing": [
                {"crm_id": m.crm_id, "cb_id": m.cb_id, "side": m.side.value, "deleted": m.deleted}
                for m in self.missing[:limit]
            ],
            "unlinked": [
                {
                    "side": u.side.value,
                    "id": u.id,
                    "match_key": u.match_key,
                    "why": u.why,
                    "hold_kind": u.hold_kind,
                }
                for u in self.unlinked[:limit]
            ],
            "duplicates": [
                {"side": d.side.value, "match_key": d.match_key, "ids": list(d.ids)}
                for d in self.duplicates[:limit]
            ],
            "listed": limit,
        }


def _diff_json(d: FieldDiff) -> dict[str, Any]:
    return {
        "crm_id": d.crm_id,
        "cb_id": d.cb_id,
        "field": d.field,
        "customcrm": d.customcrm,
        "chargebee": d.chargebee,
        "verdict": d.verdict.value,
        "why": d.why,
        "unseen": [s.value for s in d.unseen],
    }


_SYSTEM = {"customcrm": "Customcrm", "chargebee": "Chargebee"}


def _who(report: dict[str, Any], side: str, rec_id: str) -> str:
    return f"{_SYSTEM[side]} {report.get('labels', {}).get(side, 'record')} {rec_id}"


def _pair(report: dict[str, Any], crm_id: str, cb_id: str) -> str:
    return f"{_who(report, 'customcrm', crm_id)} ⇄ {_who(report, 'chargebee', cb_id)}"


def _diff_line(report: dict[str, Any], d: dict[str, Any]) -> str:
    unseen = (
        f"; {' and '.join(_SYSTEM[s] for s in d['unseen'])} changed it without a new version "
        "(an incremental run does not read it: run with full_resync)"
        if d.get("unseen")
        else ""
    )
    return (
        f"differs {_pair(report, d['crm_id'], d['cb_id'])}: {d['field']} Customcrm {show(d['customcrm'])} "
        f"≠ Chargebee {show(d['chargebee'])}: {d['why']}{unseen}"
    )


def report_lines(report: dict[str, Any]) -> list[str]:
    """The report (:meth:`Report.as_json`) as a person reads it: the counts, then a line
    per difference, missing record, unlinked record and duplicate key."""
    c = report["counts"]
    lines = [
        f"{c['linked_pairs']} linked pairs, {c['pairs_differing']} differ in {c['fields_differing']} fields "
        f"({', '.join(f'{k}: {v}' for k, v in c['by_verdict'].items() if v) or 'none'}; "
        f"{c['unseen_edits']} changed without a new version); missing: "
        + ", ".join(f"{_SYSTEM[s]} {n}" for s, n in c["missing"].items())
        + "; unlinked: "
        + ", ".join(f"{_SYSTEM[s]} {n}" for s, n in c["unlinked"].items())
        + "; duplicate match keys: "
        + ", ".join(f"{_SYSTEM[s]} {n}" for s, n in c["duplicate_keys"].items())
    ]
    lines += [_diff_line(report, d) for d in report["differences"]]
    for m in report["missing"]:
        rec_id = m["crm_id"] if m["side"] == "customcrm" else m["cb_id"]
        how = "is deleted" if m["deleted"] else "was not found in a full read"
        lines.append(
            f"missing {_pair(report, m['crm_id'], m['cb_id'])}: {_who(report, m['side'], rec_id)} {how}"
        )
    for u in report["unlinked"]:
        key = f" (match key {u['match_key']!r})" if u["match_key"] else ""
        lines.append(f"unlinked {_who(report, u['side'], u['id'])}{key}: {u['why']}")
    for d in report["duplicates"]:
        ids = ", ".join(d["ids"])
        lines.append(
            f"duplicate {_SYSTEM[d['side']]} {report.get('labels', {}).get(d['side'], 'record')}s {ids}: "
            f"same match key {d['match_key']!r}"
        )
    return lines
