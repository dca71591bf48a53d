"""Matching unlinked records on the flow's match rules. Pure: no I/O.

A mapping's ``match.keys`` is the first rule; ``match.alternatives`` are further rules
tried in order for the records an earlier rule found no partner for (a quote links to
the order whose ``reference_id`` names it, else to the order made from the invoice the
quote names). The transform task groups unlinked records by one rule's key at a time
(streamed from the database, ordered by key) and asks :func:`decide_group` what a group
means:

* one record per side: **link** them, unless a later rule's pair contradicts an
  earlier rule (both sides have that key and it differs): then it is **ambiguous**;
* nobody on the other side: **unmatched** (try the next rule, or create / skip);
* anything else (several candidates, a key already used by a link): **ambiguous**,
  held for a person, never guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from crmsync.engine.canonical import SideRecord, match_key
from crmsync.mapping.model import Direction, Side
from crmsync.mapping.model import Mapping as FlowMapping


class Outcome(StrEnum):
    LINK = "link"
    AMBIGUOUS = "ambiguous"
    UNMATCHED = "unmatched"


@dataclass(frozen=True)
class GroupDecision:
    outcome: Outcome
    crm: SideRecord | None = None
    cb: SideRecord | None = None
    #: for AMBIGUOUS: why, the candidates, and what a person should do
    why: str | None = None
    candidates: tuple[str, ...] = ()
    fix: str | None = None


def rule_label(mapping: FlowMapping, rule: int) -> str:
    """``quote_number`` / ``invoice_id`` / ``a + b``: the fields of one rule, for messages."""
    return " + ".join(mapping.match.rules[rule])


def contradiction(mapping: FlowMapping, rule: int, crm: SideRecord, cb: SideRecord) -> str | None:
    """Why a pair found by ``rule`` must not be linked: an earlier rule's key differs.

    An earlier rule made only of fields that flow from Chargebee only (an order's
    number) contradicts nothing: Customcrm's value there is no claim about the partner,
    Chargebee's replaces it once linked (a Customcrm order numbered in the CRM, naming the
    invoice whose order Chargebee generated with its own number, is that order).
    """
    for earlier in range(rule):
        if all(mapping.field(n).direction is Direction.TO_CUSTOMCRM for n in mapping.match.rules[earlier]):
            continue
        c = match_key(mapping, crm.values, earlier)
        k = match_key(mapping, cb.values, earlier)
        if c is not None and k is not None and c != k:
            names = mapping.match.rules[earlier]
            c_vals = ", ".join(repr(crm.values.get(n)) for n in names)
            k_vals = ", ".join(repr(cb.values.get(n)) for n in names)
            return (
                f"its {rule_label(mapping, rule)} matches, but {rule_label(mapping, earlier)} differs "
                f"(Customcrm {c_vals}, Chargebee {k_vals})"
            )
    return None


def _ids(crms: Sequence[SideRecord], cbs: Sequence[SideRecord]) -> tuple[str, ...]:
    return tuple([f"Customcrm {r.id}" for r in crms] + [f"Chargebee {r.id}" for r in cbs])


def decide_group(
    mapping: FlowMapping,
    rule: int,
    records: Sequence[SideRecord],
    taken: tuple[str, str] | None = None,
) -> GroupDecision:
    """What the live (not deleted) unlinked records sharing one key of ``rule`` mean.

    ``taken`` is the (crm id, cb id) of an existing link carrying the same key (known for
    the first rule only: links store that key).
    """
    crms = [r for r in records if r.side is Side.CUSTOMCRM]
    cbs = [r for r in records if r.side is Side.CHARGEBEE]
    if not records:
        return GroupDecision(Outcome.UNMATCHED)
    if rule == 0:
        if taken is not None:
            return GroupDecision(
                Outcome.AMBIGUOUS,
                why="its match key is already linked to another pair",
                candidates=(f"Customcrm {taken[0]}", f"Chargebee {taken[1]}"),
            )
        if len(crms) == 1 and len(cbs) == 1:
            return GroupDecision(Outcome.LINK, crms[0], cbs[0])
        if len(records) == 1:
            return GroupDecision(Outcome.UNMATCHED)
        return GroupDecision(
            Outcome.AMBIGUOUS, why="its match key is shared by several records", candidates=_ids(crms, cbs)
        )
    # A later rule only looks for a partner: records of one side sharing its key (two
    # orders made from one invoice, and no quote naming it) are simply unmatched here.
    if not crms or not cbs:
        return GroupDecision(Outcome.UNMATCHED)
    if len(crms) == 1 and len(cbs) == 1:
        why = contradiction(mapping, rule, crms[0], cbs[0])
        if why:
            return GroupDecision(
                Outcome.AMBIGUOUS,
                why=why,
                candidates=_ids(crms, cbs),
                fix="correct the record that is wrong so that both rules agree",
            )
        return GroupDecision(Outcome.LINK, crms[0], cbs[0])
    return GroupDecision(
        Outcome.AMBIGUOUS,
        why=f"its {rule_label(mapping, rule)} is shared by several records",
        candidates=_ids(crms, cbs),
        fix=f"correct the records so that one per side carries that {rule_label(mapping, rule)}",
    )


__all__ = ["GroupDecision", "Outcome", "contradiction", "decide_group", "rule_label"]
